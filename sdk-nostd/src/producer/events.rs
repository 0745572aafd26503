//! The compact event queue.

use super::*;

/// Events as queued: compact, expanded by `poll_event`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Raw {
    FailedOver(u8, u8),
    FailedBack(u8, u8),
    RouteDown(u8, u8, DownCause),
    RouteUp(u8, u8),
    LinkDown(u8),
    LinkUp(u8),
    LinkArmed(u8),
    LinkDisarmed(u8),
    BudgetExhausted(u8),
    // Sequence split in two words so the queue entry stays 16 bytes.
    Dropped {
        epoch: u32,
        seq_lo: u32,
        seq_hi: u32,
        reason: DropReason,
    },
    AuthFailed(u8),
}

/// Events held until polled; more are counted in [`Stats::events_lost`].
pub(super) const EVENT_QUEUE: usize = 6;

impl<S: Store, C: Deref<Target = Config>, const E: usize, const L: usize> Producer<S, C, E, L> {
    pub(super) fn push_event(&mut self, ev: Raw) {
        if self.events.push_back(ev).is_err() {
            self.ledger.event_lost();
        }
    }
}
