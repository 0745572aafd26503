//! The reliability scenarios (`cargo xtask chaos`), run against real components
//! (mosquitto brokers behind the emulator's fault proxy for `mqtt`, emulator regions for
//! `event-hubs`, librdkafka mock clusters read back by `kcat` for `kafka`, `twinhub send`
//! processes for crashes and disks), each printing records sent, delivered (unique),
//! lost, duplicates, failovers and time to recover.
//!
//! A row is a scenario over a protocol. The modules: `plan` says what each scenario
//! does along a stream and where a protocol has no counterpart; `hub` starts a
//! protocol's two regions, applies faults and reads back what arrived (one arm per
//! protocol; Kafka's lives in `kafka`); `stream` drives an in-process `Producer`
//! through a plan; `process` runs `twinhub send` processes (SIGKILL, full disk, torn
//! tail); `tally` turns ids into figures; `soak` is the long run.
//!
//! *Lost* is computed by id from what the hubs received, never from the producer's
//! counters: a record the producer accepted that reached no hub, and whose id the
//! producer did not report dropped (its drop events name the ids; see
//! [`twinhub_testkit::Ledger`]). *Time to recover* is the longest gap between consecutive
//! arrivals at the hubs from the start of the stream until the last record arrived: what
//! a consumer waited at worst.
//!
//! `--soak D` runs the soak instead (`cargo xtask soak`): a `twinhub send` process at a
//! fixed rate for `D`, both regions down for the middle third, its resident memory sampled
//! every second.

mod hub;
mod kafka;
mod plan;
mod process;
mod soak;
mod stream;
mod tally;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use plan::{Plan, Scale};

/// Arguments of the chaos runner.
#[derive(clap::Parser, Debug, Default)]
#[command(
    name = "twinhub-chaos",
    about = "twinhub's reliability scenarios and soak, against real brokers and processes"
)]
pub struct ChaosArgs {
    /// The short version (seconds per scenario instead of minutes), as the test suite runs.
    #[arg(long)]
    pub short: bool,
    /// Only these scenarios (comma separated): kill, flap, blackhole, 503, 429, both-down,
    /// wan-down, sigkill, disk-full, torn-tail.
    #[arg(long, value_delimiter = ',')]
    pub only: Option<Vec<String>>,
    /// Only these protocols (comma separated): mqtt, event-hubs, kafka.
    #[arg(long, value_delimiter = ',')]
    pub protocols: Option<Vec<String>>,
    /// Also write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Run the soak for this long instead (e.g. 30m, 2m).
    #[arg(long, value_parser = parse_duration)]
    pub soak: Option<Duration>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    twinhub::config::units::parse_duration(s).map_err(|e| e.to_string())
}

/// Every scenario, in the order they run. A new scenario goes here and either in
/// `plan::Plan::for_scenario` (a stream with faults along it) or as an arm of `run_one`
/// (a driver of its own, as `process.rs` has); where a protocol has no counterpart, in
/// `plan::not_applicable`.
pub const SCENARIOS: [&str; 10] = [
    "kill",
    "flap",
    "blackhole",
    "503",
    "429",
    "both-down",
    "wan-down",
    "sigkill",
    "disk-full",
    "torn-tail",
];

/// Every protocol, in the order each scenario runs over them. A new protocol goes here,
/// in `hub::Hub` (its regions) and, where a scenario has no counterpart for it, in
/// `plan::not_applicable`.
pub const PROTOCOLS: [&str; 3] = ["mqtt", "event-hubs", "kafka"];

/// What one scenario showed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// The scenario.
    pub scenario: String,
    /// One of [`PROTOCOLS`].
    pub protocol: String,
    /// Records the producer accepted.
    pub sent: u64,
    /// Accepted records that reached a hub (each counted once).
    pub delivered: u64,
    /// Accepted records that reached no hub and whose id no drop report named.
    pub lost: u64,
    /// Up to ten lost ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lost_examples: Vec<String>,
    /// Accepted records that reached no hub and that the producer reported dropped by id
    /// under a policy (eviction, expiry).
    pub policy_drops: u64,
    /// Accepted records whose bytes the scenario itself cut from the outbox (torn-tail).
    pub removed: u64,
    /// Of those, records that reached a hub anyway (the cut was not where it was thought).
    pub removed_but_delivered: u64,
    /// Drop events the producer raised that the runner did not receive (they excuse
    /// nothing).
    pub missed_drop_reports: u64,
    /// Sends refused at the door (a full outbox or disk), never accepted.
    pub refused: u64,
    /// Copies beyond the first that reached the hubs.
    pub duplicates: u64,
    /// Failovers the producer reported.
    pub failovers: u64,
    /// Failbacks the producer reported.
    pub failbacks: u64,
    /// Longest gap between consecutive arrivals from the start of the stream, in seconds.
    pub recover_s: f64,
    /// What else the scenario measured or why it did not apply.
    pub note: String,
    /// The soak's resident memory in MiB: the most before the outage, the peak, the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_mib: Option<[f64; 3]>,
}

/// Runs the scenarios (or the soak) and returns their figures, printing the table.
pub fn run(args: &ChaosArgs, rt: &tokio::runtime::Runtime) -> Result<Vec<Figures>, String> {
    if let Some(d) = args.soak {
        let protocol = args
            .protocols
            .as_ref()
            .and_then(|p| p.first().cloned())
            .unwrap_or_else(|| "event-hubs".into());
        let f = soak::soak(d, &protocol, rt)?;
        print_table(std::slice::from_ref(&f));
        write_json(args.json.as_deref(), std::slice::from_ref(&f))?;
        return Ok(vec![f]);
    }
    let scale = Scale::new(args.short);
    let protocols = args
        .protocols
        .clone()
        .unwrap_or_else(|| PROTOCOLS.iter().map(|p| p.to_string()).collect());
    for p in &protocols {
        if !PROTOCOLS.contains(&p.as_str()) {
            return Err(format!(
                "--protocols: `{p}` is not a protocol ({})",
                PROTOCOLS.join(", ")
            ));
        }
    }
    let wanted: Vec<String> = match &args.only {
        Some(only) => {
            for s in only {
                if !SCENARIOS.contains(&s.as_str()) {
                    return Err(format!(
                        "--only: `{s}` is not a scenario ({})",
                        SCENARIOS.join(", ")
                    ));
                }
            }
            only.clone()
        }
        None => SCENARIOS.iter().map(|s| s.to_string()).collect(),
    };
    let mut all = Vec::new();
    for scenario in &wanted {
        for protocol in &protocols {
            eprintln!("chaos: {scenario} over {protocol} ...");
            let f = run_one(scenario, protocol, scale, rt)?;
            eprintln!(
                "chaos: {scenario} over {protocol}: sent {} delivered {} lost {} duplicates {} failovers {} recover {:.1} s {}",
                f.sent, f.delivered, f.lost, f.duplicates, f.failovers, f.recover_s, f.note
            );
            all.push(f);
        }
    }
    print_table(&all);
    write_json(args.json.as_deref(), &all)?;
    Ok(all)
}

fn write_json(path: Option<&Path>, figures: &[Figures]) -> Result<(), String> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(figures).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

fn print_table(figures: &[Figures]) {
    println!(
        "| scenario | protocol | sent | delivered | lost | policy drops | cut by the test | refused | duplicates | failovers | failbacks | recover (s) | note |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for f in figures {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |",
            f.scenario,
            f.protocol,
            f.sent,
            f.delivered,
            f.lost,
            f.policy_drops,
            f.removed,
            f.refused,
            f.duplicates,
            f.failovers,
            f.failbacks,
            f.recover_s,
            f.note
        );
    }
}

fn run_one(
    scenario: &str,
    protocol: &str,
    scale: Scale,
    rt: &tokio::runtime::Runtime,
) -> Result<Figures, String> {
    let mut f = if let Some(note) = plan::not_applicable(scenario, protocol) {
        Figures {
            note,
            ..Figures::default()
        }
    } else {
        match scenario {
            "sigkill" => process::sigkill(protocol, scale, rt)?,
            "disk-full" => process::disk_full(protocol, rt)?,
            "torn-tail" => process::torn_tail(protocol, rt)?,
            _ => {
                let plan = Plan::for_scenario(scenario, scale)
                    .ok_or_else(|| format!("no plan for the scenario `{scenario}`"))?;
                rt.block_on(stream::stream_scenario(protocol, plan, scale))?
            }
        }
    };
    f.scenario = scenario.into();
    f.protocol = protocol.into();
    Ok(f)
}

/// Whether a set of figures passes: nothing lost, and a soak's memory stayed flat.
pub fn passed(figures: &[Figures]) -> bool {
    figures
        .iter()
        .all(|f| f.lost == 0 && f.removed_but_delivered == 0 && !f.note.starts_with("FAILED"))
}

#[cfg(test)]
mod tests {
    use twinhub_testkit::{Arrivals, Ledger};

    use super::soak::soak_rss_allowance;
    use super::tally::tally;
    use super::*;

    /// A fake loss must show: the producer's drop *count* covers the missing record, but no
    /// drop event names its id.
    #[test]
    fn a_loss_hidden_behind_a_drop_count_is_reported() {
        let mut ledger = Ledger::new();
        for seq in 0..3 {
            ledger.accept(format!("chaos:1:{seq}"));
        }
        // One real drop, reported by id; the producer would count 2 if it miscounted.
        ledger.dropped("chaos:1:5", "expired");
        let mut arrivals = Arrivals::default();
        arrivals.arrive("chaos:1:0", 1);
        let f = tally(&ledger, &arrivals);
        assert_eq!((f.sent, f.delivered, f.policy_drops, f.lost), (3, 1, 0, 2));
        assert!(!passed(&[f]));
    }

    /// Every row either has a driver or says why it does not apply, so a scenario added
    /// without one fails here rather than minutes into a run; the Kafka rows run.
    #[test]
    fn every_row_runs_or_says_why_not() {
        let scale = Scale::new(true);
        for protocol in PROTOCOLS {
            for scenario in SCENARIOS {
                let driven = matches!(scenario, "sigkill" | "disk-full" | "torn-tail")
                    || Plan::for_scenario(scenario, scale).is_some();
                assert!(
                    driven || plan::not_applicable(scenario, protocol).is_some(),
                    "{scenario} over {protocol}"
                );
            }
        }
        for scenario in ["kill", "flap", "blackhole", "both-down", "sigkill"] {
            assert_eq!(plan::not_applicable(scenario, "kafka"), None, "{scenario}");
        }
    }

    #[test]
    fn the_soak_allowance_does_not_cover_bodies_held_in_memory() {
        // 30 minutes at 200/s with the middle third down: 120,000 records of about 220 B
        // of body each wait out the outage.
        let backlog = 120_000;
        assert!(soak_rss_allowance(backlog) < backlog * 160 + backlog * 220);
    }
}
