//! Figures from ids: what the producer accepted against what the hubs' consumers read.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use twinhub_testkit::{Arrivals, Ledger, Tally};

use super::Figures;
use super::hub::Hub;

/// Wall-clock time in Unix ms, the clock arrivals are stamped with.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The longest gap between consecutive arrivals from `from` (Unix ms) on, in seconds:
/// the backlog of an outage that ends with the stream arrives after it, and the gap
/// before that arrival is the outage as the consumer saw it.
pub(super) fn longest_gap(times: &[u64], from: u64) -> f64 {
    let inside: Vec<u64> = times.iter().copied().filter(|t| *t >= from).collect();
    let mut gap = inside.first().map_or(0, |f| f.saturating_sub(from));
    for w in inside.windows(2) {
        gap = gap.max(w[1] - w[0]);
    }
    gap as f64 / 1000.0
}

/// Figures for a ledger against what the hubs received: every figure counts ids.
pub(super) fn tally(ledger: &Ledger, arrivals: &Arrivals) -> Figures {
    let Tally {
        sent,
        delivered,
        duplicates,
        dropped,
        removed,
        removed_but_delivered,
        lost,
        lost_examples,
        missed_drop_reports,
    } = ledger.tally(arrivals);
    Figures {
        sent,
        delivered,
        duplicates,
        policy_drops: dropped,
        removed,
        removed_but_delivered,
        lost,
        lost_examples,
        missed_drop_reports,
        ..Figures::default()
    }
}

/// Waits until every accepted id is at a hub, or `timeout`.
pub(super) async fn await_arrivals(hub: &Hub, accepted: &[String], timeout: Duration) -> Arrivals {
    let deadline = Instant::now() + timeout;
    loop {
        let a = hub.arrivals();
        if Instant::now() >= deadline || accepted.iter().all(|id| a.copies.contains_key(id)) {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
