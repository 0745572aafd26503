//! What the producer reports about itself: counters and the data at risk.

use std::time::Duration;

use twinhub_core::Stats;

/// A snapshot of the producer's counters and of the data at risk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The engine's counters (accepted, delivered, pending, dropped by reason, ...).
    pub stats: Stats,
    /// Age of the oldest pending record: how long data has been at risk.
    pub oldest_pending_age: Option<Duration>,
    /// Endpoint names, by index.
    pub endpoints: Vec<String>,
    /// Link names, by index.
    pub links: Vec<String>,
}
