//! What the producer reports about itself: counters and the data at risk.

use std::time::Duration;

use twinhub_core::{MAX_ENDPOINTS, MAX_LINKS, RouteHealth, Stats};

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
    /// Health of each route: `route_health[endpoint][link]`, by index.
    pub route_health: Vec<Vec<RouteHealth>>,
    /// Bytes charged to each link's budget in its current window, by index; `None` for a
    /// link without a budget.
    pub link_spent: Vec<Option<u64>>,
}

/// Route health and budget use by index, copied at every driver step into fixed arrays so
/// the step allocates nothing.
#[derive(Clone, Copy)]
pub(super) struct Routes {
    pub(super) health: [[RouteHealth; MAX_LINKS]; MAX_ENDPOINTS],
    pub(super) spent: [Option<u64>; MAX_LINKS],
}

impl Routes {
    pub(super) const NEW: Routes = Routes {
        health: [[RouteHealth::Healthy; MAX_LINKS]; MAX_ENDPOINTS],
        spent: [None; MAX_LINKS],
    };
}
