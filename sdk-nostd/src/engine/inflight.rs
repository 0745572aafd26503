//! The transmit slots: what is in flight, as runs of records.

use super::*;

/// A transmit awaiting its outcome.
///
/// Its records are every record from `first` up to `span` sequence numbers later (one
/// epoch) whose class its link allows: `build` never leaves such a record out, so the
/// range and the link say exactly which records are in flight, in a few bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct InFlight {
    pub(super) sent_at: Instant,
    pub(super) first: u64,
    pub(super) epoch: u32,
    pub(super) id: u32,
    pub(super) span: u16,
    pub(super) records: u16,
    pub(super) endpoint: u8,
    pub(super) link: u8,
    pub(super) probe: bool,
}

impl InFlight {
    pub(super) fn first_key(&self) -> RecordKey {
        RecordKey {
            epoch: self.epoch,
            seq: self.first,
        }
    }

    pub(super) fn last_key(&self) -> RecordKey {
        RecordKey {
            epoch: self.epoch,
            seq: self.first + u64::from(self.span),
        }
    }

    /// Whether `key` (of class `class`) is one of this transmit's records, given what its
    /// link allows.
    pub(super) fn holds(&self, key: RecordKey, class: Class, allow: ClassSet) -> bool {
        self.id != 0
            && key.epoch == self.epoch
            && key.seq >= self.first
            && key.seq - self.first <= u64::from(self.span)
            && allow.contains(class)
    }

    /// Where a store walk over the records starts: the key just before the first (`None`,
    /// from the oldest record, when the first has sequence number 0).
    pub(super) fn walk_start(&self) -> Option<RecordKey> {
        match self.first.checked_sub(1) {
            Some(seq) => Some(RecordKey {
                epoch: self.epoch,
                seq,
            }),
            // No record of the previous epoch can have a larger sequence number.
            None => Some(RecordKey {
                epoch: self.epoch.checked_sub(1)?,
                seq: u64::MAX,
            }),
        }
    }
}

impl<S: Store, C: Deref<Target = Config>, const E: usize, const L: usize> Engine<S, C, E, L> {
    /// Whether a transmit awaiting its outcome holds the record.
    pub(super) fn in_flight(&self, info: &RecordInfo) -> bool {
        let (key, class) = (info.key(), info.meta.class);
        // Free slots first, so the link's classes are looked up only for live ones.
        self.inflight.iter().any(|f| {
            f.id != 0 && f.holds(key, class, self.config.links()[usize::from(f.link)].allow)
        })
    }

    /// Ends `slot`'s transmit without a delivery: its records are pending again.
    pub(super) fn release_slot(&mut self, slot: usize, ambiguous: bool) {
        let f = &mut self.inflight[slot];
        f.id = 0;
        if ambiguous {
            self.ledger.possible_duplicates(f.records);
        }
        if self.config.routing() == Routing::Mirror {
            // Records held back only by this transmit (to an endpoint drained since) may
            // now have every acknowledgement they need.
            self.sweep_mirror(None, None);
        }
    }
}
