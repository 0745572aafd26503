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

impl Raw {
    /// The event as the application sees it; `message_id` makes a dropped record's id.
    pub(super) fn expand(self, message_id: impl FnOnce(u32, u64) -> MessageId) -> Event {
        let ep = |i: u8| EndpointId(i);
        let ln = |i: u8| LinkId(i);
        match self {
            Raw::FailedOver(a, b) => Event::FailedOver {
                from: ep(a),
                to: ep(b),
            },
            Raw::FailedBack(a, b) => Event::FailedBack {
                from: ep(a),
                to: ep(b),
            },
            Raw::RouteDown(e, l, cause) => Event::RouteDown {
                endpoint: ep(e),
                link: ln(l),
                cause,
            },
            Raw::RouteUp(e, l) => Event::RouteUp {
                endpoint: ep(e),
                link: ln(l),
            },
            Raw::LinkDown(l) => Event::LinkDown { link: ln(l) },
            Raw::LinkUp(l) => Event::LinkUp { link: ln(l) },
            Raw::LinkArmed(l) => Event::LinkArmed { link: ln(l) },
            Raw::LinkDisarmed(l) => Event::LinkDisarmed { link: ln(l) },
            Raw::BudgetExhausted(l) => Event::BudgetExhausted { link: ln(l) },
            Raw::Dropped {
                epoch,
                seq_lo,
                seq_hi,
                reason,
            } => Event::Dropped {
                id: message_id(epoch, u64::from(seq_lo) | (u64::from(seq_hi) << 32)),
                reason,
            },
            Raw::AuthFailed(e) => Event::AuthFailed { endpoint: ep(e) },
        }
    }
}

/// Events held until polled; more are counted in [`Stats::events_lost`].
pub(super) const EVENT_QUEUE: usize = 6;

impl<S: Store, C: Deref<Target = Config>, const E: usize, const L: usize> Engine<S, C, E, L> {
    pub(super) fn push_event(&mut self, ev: Raw) {
        if self.events.push_back(ev).is_err() {
            self.ledger.event_lost();
        }
    }
}
