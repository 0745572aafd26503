//! Fleet simulator: the real twinhub engine, one instance per virtual device, in a seeded
//! discrete-event world with modelled regions, links and faults.
//!
//! It answers the operator's question: *if the primary region goes dark with the whole
//! fleet online, what happens, and what does it cost?* The world keeps its own account
//! of what every region received, so `lost` is never taken from the engines.
//!
//! ```
//! use twinhub_sim::{RunOptions, Scenario, run};
//!
//! let scenario = Scenario::from_toml_str(r#"
//! name = "doc"
//! devices = 200
//! duration = "20m"
//! shards = 1
//! [device]
//! interval = "30s"
//! payload_bytes = [32, 64]
//! classes = { normal = 1.0 }
//! [[region]]
//! name = "primary"
//! outages = [{ from = "5m", to = "10m" }]
//! [[region]]
//! name = "secondary"
//! [[link]]
//! name = "wan"
//! cost = "free"
//! "#).unwrap();
//! let report = run(&scenario, &RunOptions::default()).unwrap();
//! assert_eq!(report.lost, 0);
//! assert!(report.delivered["secondary"] > 0);
//! assert!(report.failover_time.p99_ms <= 15_000);
//! ```
#![forbid(unsafe_code)]

// Dependencies flow one way: `scenario` (plain data) ← `network` ← `plan` ← `world`,
// which also uses `queue`, `ledger` and `report`; `report` reads only the scenario.
mod draw;
pub mod flash;
mod ledger;
pub mod live;
mod network;
pub mod plan;
pub mod plot;
mod queue;
pub mod report;
pub mod scenario;
pub mod world;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant as WallClock};

pub use report::{Received, Report};
pub use scenario::{Scenario, ScenarioError};

/// How to run a scenario.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Replace the scenario's device count.
    pub devices: Option<u32>,
    /// Replace the scenario's seed.
    pub seed: Option<u64>,
    /// Draw a progress bar on the terminal.
    pub progress: bool,
    /// Keep every record id the regions received in [`Report::received`], checking each
    /// frame's CRC and payload on arrival (for tests: memory grows with every delivery).
    pub ledger: bool,
}

/// Runs a scenario to its end and reports.
pub fn run(scenario: &Scenario, opts: &RunOptions) -> Result<Report, ScenarioError> {
    let mut s = scenario.clone();
    if let Some(d) = opts.devices {
        s.devices = d;
    }
    if let Some(seed) = opts.seed {
        s.seed = seed;
    }
    let plan = plan::Plan::new(&s, opts.ledger)?;
    let started = WallClock::now();
    let clocks: Vec<AtomicU64> = (0..s.shards).map(|_| AtomicU64::new(0)).collect();
    let runs = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..s.shards)
            .map(|shard| {
                let (plan, clock) = (&plan, &clocks[shard as usize]);
                scope.spawn(move || world::run_shard(plan, shard, clock))
            })
            .collect();
        if opts.progress {
            draw_progress(&clocks, plan.end_ms, &handles);
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Vec<_>>()
    });
    let mut report = world::finish(&plan, runs);
    let wall = started.elapsed().as_secs_f64();
    report.wall_s = wall;
    report.events_per_s = report.events as f64 / wall;
    report.records_per_s = report.accepted as f64 / wall;
    report.loop_records_per_s = report.accepted as f64 / (wall - report.setup_s).max(1e-9);
    report.peak_rss_bytes = peak_rss();
    report.peak_rss_per_device = report.peak_rss_bytes.map(|r| r / report.devices.max(1));
    Ok(report)
}

fn draw_progress<T>(
    clocks: &[AtomicU64],
    end_ms: u64,
    handles: &[std::thread::ScopedJoinHandle<'_, T>],
) {
    let bar = indicatif::ProgressBar::new(end_ms / 1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} simulated {pos}/{len} s [{bar:40}] {per_sec} · {elapsed} wall",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    while handles.iter().any(|h| !h.is_finished()) {
        let t = clocks
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0);
        bar.set_position(t.min(end_ms) / 1000);
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
}

/// The process's peak resident set, from `/proc` (Linux only).
pub(crate) fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
