//! The soak: a `twinhub send` process at a fixed rate, both regions down for the middle
//! third, its resident memory sampled every second.

use std::time::{Duration, Instant};

use twinhub_emulator::Fault;

use super::Figures;
use super::hub::Hub;
use super::plan::Action;
use super::process::{Sender, write_config};
use super::tally::{await_arrivals, longest_gap, now_ms, tally};

/// Resident memory of a process, from /proc, in bytes.
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resident memory the soak allows on top of its level before the outage: a fixed slack
/// plus the RAM index's entry for each record the outage leaves waiting. Holding the
/// records' bodies in memory as well would exceed it once the backlog is large.
pub(super) fn soak_rss_allowance(backlog_records: u64) -> u64 {
    const SLACK: u64 = 8 << 20;
    const INDEX_ENTRY: u64 = 160;
    SLACK + backlog_records * INDEX_ENTRY
}

/// A `twinhub send` process at a fixed rate for `length`, both regions down for the
/// middle third; its resident memory sampled every second must stay flat.
pub(super) fn soak(
    length: Duration,
    protocol: &str,
    rt: &tokio::runtime::Runtime,
) -> Result<Figures, String> {
    const RATE: u64 = 200;
    let mut hub = rt.block_on(Hub::start(protocol))?;
    if hub.loses_log(&Action::Fault(0, Fault::Down)) {
        return Err(format!(
            "no soak over {protocol}: its outage would take the records the hub holds in memory with it"
        ));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cfg = write_config(
        dir.path(),
        &hub,
        &dir.path().join("outbox"),
        "max_bytes = \"256MiB\"\n",
    )?;
    let mut s = Sender::spawn(&cfg, "120s")?;
    let pid = s.child.id();
    let start = Instant::now();
    let started_ms = now_ms();
    let (down, up) = (length / 3, length * 2 / 3);
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut phase = 0;
    let body = "s".repeat(200);
    let mut i = 0u64;
    let mut backlog = 0u64;
    while start.elapsed() < length {
        let due = Duration::from_secs_f64(i as f64 / RATE as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        if phase == 0 && due >= down {
            hub.act(Action::Fault(0, Fault::Down))?;
            hub.act(Action::Fault(1, Fault::Down))?;
            phase = 1;
        }
        if phase == 1 && due >= up {
            hub.act(Action::Fault(0, Fault::Up))?;
            hub.act(Action::Fault(1, Fault::Up))?;
            phase = 2;
        }
        if due >= next_sample {
            if let Some(r) = rss(pid) {
                samples.push((due.as_secs_f64(), r));
            }
            next_sample += Duration::from_secs(1);
        }
        s.line(&format!("{i} {body}"));
        backlog += u64::from(phase == 1);
        i += 1;
    }
    let (code, _, ledger) = s.finish();
    let arrivals = rt.block_on(await_arrivals(
        &hub,
        ledger.accepted(),
        Duration::from_secs(60),
    ));
    let mut f = tally(&ledger, &arrivals);
    f.scenario = "soak".into();
    f.protocol = protocol.into();
    f.recover_s = longest_gap(&arrivals.times, started_ms);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let warm = samples
        .iter()
        .filter(|(t, _)| *t < down.as_secs_f64())
        .map(|s| s.1)
        .max()
        .unwrap_or(0);
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let last = samples.last().map_or(0, |s| s.1);
    let allowed = soak_rss_allowance(backlog);
    f.rss_mib = Some([mib(warm), mib(peak), mib(last)]);
    f.note = format!(
        "{} RSS samples; before the outage ≤ {:.1} MiB, peak {:.1} MiB (allowed +{:.1} MiB for {backlog} waiting records), at the end {:.1} MiB; drain exit {}",
        samples.len(),
        mib(warm),
        mib(peak),
        mib(allowed),
        mib(last),
        code.map_or("none".into(), |c| c.to_string())
    );
    if samples.len() < 3 || peak > warm + allowed {
        f.note
            .insert_str(0, "FAILED: memory grew with the backlog; ");
    }
    Ok(f)
}
