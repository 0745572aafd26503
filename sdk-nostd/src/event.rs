//! What the engine reports: events and counters.

use crate::config::{EndpointId, LinkId, MAX_ENDPOINTS, MAX_LINKS};
use crate::id::MessageId;

/// Why a record left the outbox without being delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DropReason {
    /// Its class's time to live passed.
    Expired,
    /// Evicted to make room under the `evict` policy.
    Evicted,
    /// A hub rejected it as too large.
    TooLarge,
    /// A hub rejected it as malformed.
    Malformed,
    /// Its stored frame failed its CRC when read for sending (the medium rotted after it
    /// was written and recovered): the bytes can no longer be trusted.
    Corrupt,
}

impl DropReason {
    /// Every reason, in the order of [`DropCounts`]'s fields.
    pub const ALL: [DropReason; 5] = [
        DropReason::Expired,
        DropReason::Evicted,
        DropReason::TooLarge,
        DropReason::Malformed,
        DropReason::Corrupt,
    ];

    /// The snake-case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Expired => "expired",
            DropReason::Evicted => "evicted",
            DropReason::TooLarge => "too_large",
            DropReason::Malformed => "malformed",
            DropReason::Corrupt => "corrupt",
        }
    }
}

/// Why a route was taken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DownCause {
    /// The endpoint fails on a link where another endpoint works: a region problem.
    Region,
    /// Every endpoint fails on this link, or the application said the link is down.
    Link,
    /// The endpoint refused our credentials.
    Auth,
    /// The endpoint kept throttling past `throttle_failover_after`.
    Throttled,
}

/// Something the application may want to log, alert on or count.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event {
    /// Traffic moved from a preferred endpoint to a fallback.
    FailedOver {
        /// The endpoint left.
        from: EndpointId,
        /// The endpoint now used.
        to: EndpointId,
    },
    /// Traffic moved back to a preferred endpoint.
    FailedBack {
        /// The fallback left.
        from: EndpointId,
        /// The preferred endpoint.
        to: EndpointId,
    },
    /// A route (endpoint over link) stopped being used except for probes.
    RouteDown {
        /// The endpoint.
        endpoint: EndpointId,
        /// The link.
        link: LinkId,
        /// Why.
        cause: DownCause,
    },
    /// A route passed its probes and is used again.
    RouteUp {
        /// The endpoint.
        endpoint: EndpointId,
        /// The link.
        link: LinkId,
    },
    /// A link was found or reported down.
    LinkDown {
        /// The link.
        link: LinkId,
    },
    /// The application reported a link up again.
    LinkUp {
        /// The link.
        link: LinkId,
    },
    /// A costly link may now carry its allowed classes.
    LinkArmed {
        /// The link.
        link: LinkId,
    },
    /// A cheaper route works again; the costly link is idle.
    LinkDisarmed {
        /// The link.
        link: LinkId,
    },
    /// A link's budget has no room for the next record in this window.
    BudgetExhausted {
        /// The link.
        link: LinkId,
    },
    /// A record was dropped by policy.
    Dropped {
        /// The record.
        id: MessageId,
        /// Why.
        reason: DropReason,
    },
    /// An endpoint refused our credentials.
    AuthFailed {
        /// The endpoint.
        endpoint: EndpointId,
    },
}

/// Records dropped, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DropCounts {
    /// TTL passed.
    pub expired: u64,
    /// Evicted on a full store.
    pub evicted: u64,
    /// Rejected by a hub as too large.
    pub too_large: u64,
    /// Rejected by a hub as malformed.
    pub malformed: u64,
    /// Rotted in the store after it was written.
    pub corrupt: u64,
}

impl DropCounts {
    /// All drops.
    pub fn total(&self) -> u64 {
        self.expired + self.evicted + self.too_large + self.malformed + self.corrupt
    }

    /// The count for one reason.
    pub fn get(&self, r: DropReason) -> u64 {
        match r {
            DropReason::Expired => self.expired,
            DropReason::Evicted => self.evicted,
            DropReason::TooLarge => self.too_large,
            DropReason::Malformed => self.malformed,
            DropReason::Corrupt => self.corrupt,
        }
    }

    pub(crate) fn bump(&mut self, r: DropReason) {
        match r {
            DropReason::Expired => self.expired += 1,
            DropReason::Evicted => self.evicted += 1,
            DropReason::TooLarge => self.too_large += 1,
            DropReason::Malformed => self.malformed += 1,
            DropReason::Corrupt => self.corrupt += 1,
        }
    }
}

/// The engine's counters. `accepted == delivered + pending + dropped.total()` always holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stats {
    /// Records accepted by `enqueue` (plus those recovered from the store at start).
    pub accepted: u64,
    /// Records fully delivered (in mirror routing: to every endpoint).
    pub delivered: u64,
    /// Acknowledgements per endpoint (a mirrored record counts at each).
    pub delivered_by_endpoint: [u64; MAX_ENDPOINTS],
    /// Records in the store, in flight or not.
    pub pending: u64,
    /// Payload bytes in the store.
    pub pending_bytes: u64,
    /// Records dropped, by reason.
    pub dropped: DropCounts,
    /// Moves to a fallback endpoint.
    pub failovers: u32,
    /// Moves back to a preferred endpoint.
    pub failbacks: u32,
    /// Bytes handed to the driver per link (what the budget is charged).
    pub link_bytes: [u64; MAX_LINKS],
    /// Records whose outcome was ambiguous (a timeout after the bytes left): each may
    /// reach a hub twice.
    pub possible_duplicates: u64,
    /// Events lost because the application did not drain `poll_event` in time.
    pub events_lost: u32,
}
