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
    // `count` records dropped for `reason`, from sequence number `seq_lo | seq_hi << 32`
    // on: consecutive drops share one entry, so that a page's worth of evictions or a
    // backlog that expires at once is reported whole. The sequence number is split in two
    // words so the entry stays 16 bytes.
    Dropped {
        epoch: u32,
        seq_lo: u32,
        seq_hi: u32,
        count: u16,
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
                ..
            } => Event::Dropped {
                id: message_id(epoch, u64::from(seq_lo) | (u64::from(seq_hi) << 32)),
                reason,
            },
            Raw::AuthFailed(e) => Event::AuthFailed { endpoint: ep(e) },
        }
    }
}

/// Entries held until polled; more are counted in [`Stats::events_lost`]. A run of
/// consecutive drops takes one entry.
pub(super) const EVENT_QUEUE: usize = 6;

/// The event queue: a ring of [`Raw`] entries with one-byte indices (a `heapless::Deque`
/// keeps two `usize`s, 16 bytes of an engine held to a RAM budget).
#[derive(Debug, Clone, Copy)]
pub(super) struct Events {
    ring: [Raw; EVENT_QUEUE],
    head: u8,
    len: u8,
}

impl Events {
    pub(super) const fn new() -> Self {
        Events {
            ring: [Raw::LinkUp(0); EVENT_QUEUE],
            head: 0,
            len: 0,
        }
    }

    fn slot(&self, i: usize) -> usize {
        (usize::from(self.head) + i) % EVENT_QUEUE
    }

    /// Queues `ev`, or folds it into the newest entry when both are drops for one reason
    /// and `ev` continues its run; false when the queue is full.
    pub(super) fn push(&mut self, ev: Raw) -> bool {
        if self.len > 0 {
            let last = self.slot(usize::from(self.len) - 1);
            if let (
                Raw::Dropped {
                    epoch,
                    seq_lo,
                    seq_hi,
                    count,
                    reason,
                },
                Raw::Dropped {
                    epoch: e2,
                    seq_lo: lo2,
                    seq_hi: hi2,
                    reason: r2,
                    ..
                },
            ) = (&mut self.ring[last], ev)
            {
                let next = join(*seq_lo, *seq_hi).checked_add(u64::from(*count));
                if *epoch == e2
                    && *reason == r2
                    && next == Some(join(lo2, hi2))
                    && *count < u16::MAX
                {
                    *count += 1;
                    return true;
                }
            }
        }
        if usize::from(self.len) == EVENT_QUEUE {
            return false;
        }
        let at = self.slot(usize::from(self.len));
        self.ring[at] = ev;
        self.len += 1;
        true
    }

    /// The oldest event; a run of drops yields its records one at a time.
    pub(super) fn pop(&mut self) -> Option<Raw> {
        if self.len == 0 {
            return None;
        }
        let at = usize::from(self.head);
        let ev = self.ring[at];
        if let Raw::Dropped {
            seq_lo,
            seq_hi,
            count,
            ..
        } = &mut self.ring[at]
            && *count > 1
        {
            let next = join(*seq_lo, *seq_hi) + 1;
            (*seq_lo, *seq_hi) = (next as u32, (next >> 32) as u32);
            *count -= 1;
            return Some(ev);
        }
        self.head = ((at + 1) % EVENT_QUEUE) as u8;
        self.len -= 1;
        Some(ev)
    }
}

fn join(lo: u32, hi: u32) -> u64 {
    u64::from(lo) | (u64::from(hi) << 32)
}

impl<S: Store, C: Deref<Target = Config>, const E: usize, const L: usize> Engine<S, C, E, L> {
    pub(super) fn push_event(&mut self, ev: Raw) {
        if !self.events.push(ev) {
            self.ledger.event_lost();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dropped(seq: u64, reason: DropReason) -> Raw {
        Raw::Dropped {
            epoch: 3,
            seq_lo: seq as u32,
            seq_hi: (seq >> 32) as u32,
            count: 1,
            reason,
        }
    }

    fn seqs(q: &mut Events) -> heapless::Vec<(u64, DropReason), 64> {
        let mut out = heapless::Vec::new();
        while let Some(ev) = q.pop() {
            if let Event::Dropped { id, reason } = ev.expand(|epoch, seq| MessageId {
                device: crate::id::DeviceId::new("d").unwrap(),
                epoch,
                seq,
            }) {
                out.push((id.seq, reason)).unwrap();
            }
        }
        out
    }

    #[test]
    fn an_entry_stays_sixteen_bytes() {
        assert_eq!(size_of::<Raw>(), 16);
    }

    #[test]
    fn consecutive_drops_share_an_entry_and_come_out_one_by_one() {
        let mut q = Events::new();
        // Forty evictions across the 32-bit boundary of the sequence number, then an
        // expiry, then a gap: three entries for 43 events.
        let base = u64::from(u32::MAX) - 20;
        for seq in base..base + 40 {
            assert!(q.push(dropped(seq, DropReason::Evicted)));
        }
        assert!(q.push(dropped(base + 40, DropReason::Expired)));
        assert!(q.push(dropped(base + 50, DropReason::Expired)));
        assert!(q.push(dropped(base + 51, DropReason::Expired)));
        assert_eq!(q.len, 3);
        let got = seqs(&mut q);
        assert_eq!(got.len(), 43);
        assert!(
            got[..40]
                .iter()
                .enumerate()
                .all(|(i, &(s, r))| s == base + i as u64 && r == DropReason::Evicted)
        );
        assert_eq!(
            &got[40..],
            &[
                (base + 40, DropReason::Expired),
                (base + 50, DropReason::Expired),
                (base + 51, DropReason::Expired)
            ]
        );
    }

    #[test]
    fn a_run_does_not_swallow_events_queued_after_it() {
        let mut q = Events::new();
        assert!(q.push(dropped(1, DropReason::Evicted)));
        assert!(q.push(Raw::LinkDown(1)));
        // Continues the run's numbers, but after another event: an entry of its own, so
        // the order of events is kept.
        assert!(q.push(dropped(2, DropReason::Evicted)));
        assert_eq!(q.len, 3);
        for _ in 0..3 {
            assert!(q.push(Raw::LinkUp(0)));
        }
        assert!(!q.push(Raw::LinkUp(1)), "six entries is full");
        assert!(matches!(q.pop(), Some(Raw::Dropped { seq_lo: 1, .. })));
        assert!(matches!(q.pop(), Some(Raw::LinkDown(1))));
        assert!(matches!(q.pop(), Some(Raw::Dropped { seq_lo: 2, .. })));
    }
}
