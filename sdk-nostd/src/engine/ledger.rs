//! The ledger: the only code that changes the record counts (`accepted`, `delivered`,
//! `pending`, `pending_bytes`, `dropped`) and the per-class counts, so that
//! `accepted == delivered + pending + dropped` is kept in one place.
//!
//! Every record that leaves the store is counted here once, with its fate: through
//! [`Ledger::remove`], or [`Ledger::removed`] for the runs a store removes itself.

use super::*;
use crate::store::Settlement;

/// What became of a record taken out of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Acknowledged by every endpoint that had to have it; the last one is named.
    Delivered(EndpointId),
    /// Dropped by policy, counted by reason.
    Dropped(DropReason),
}

/// The engine's counters and the records present per class (which eviction and expiry
/// use to skip classes that have none).
#[derive(Debug, Clone)]
pub(super) struct Ledger {
    stats: Stats,
    class_count: [u32; 3],
}

impl Ledger {
    pub(super) fn new() -> Self {
        Ledger {
            stats: Stats::default(),
            class_count: [0; 3],
        }
    }

    pub(super) fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Records of `class` in the store.
    #[inline]
    pub(super) fn class_count(&self, class: usize) -> u32 {
        self.class_count[class]
    }

    /// Records in the store, in flight or not.
    #[inline]
    pub(super) fn pending(&self) -> u64 {
        self.stats.pending
    }

    /// A record that was in the store at start: pending, and accepted by this engine.
    pub(super) fn recovered(&mut self, info: &RecordInfo) {
        self.accepted(info.meta.class, info.payload_len.into());
    }

    /// A record appended to the store.
    pub(super) fn accepted(&mut self, class: Class, payload_len: u64) {
        self.stats.accepted += 1;
        self.stats.pending += 1;
        self.stats.pending_bytes += payload_len;
        self.class_count[class as usize] += 1;
    }

    /// Takes a record out of the store and settles it as `fate`; false when the store would
    /// not remove it (it stays pending, nothing is counted).
    pub(super) fn remove<S: Store>(
        &mut self,
        store: &mut S,
        info: &RecordInfo,
        fate: Fate,
    ) -> bool {
        if store.remove(info.key()).is_err() {
            return false;
        }
        let how = self.removed(info, fate);
        store.settled(info.key(), how);
        true
    }

    /// Counts a record the store has just removed as settled by `fate`, and says how, for
    /// [`Store::settled`]: the half of [`remove`](Self::remove) after the store's part.
    #[inline]
    pub(super) fn removed(&mut self, info: &RecordInfo, fate: Fate) -> Settlement {
        self.stats.pending -= 1;
        self.stats.pending_bytes -= u64::from(info.payload_len);
        self.class_count[info.meta.class as usize] -= 1;
        match fate {
            Fate::Delivered(endpoint) => {
                self.stats.delivered += 1;
                Settlement::Delivered(endpoint)
            }
            Fate::Dropped(reason) => {
                self.stats.dropped.bump(reason);
                Settlement::Dropped(reason)
            }
        }
    }

    // Counters that are not record counts: kept here so that `Stats` has one owner.

    pub(super) fn acknowledged(&mut self, e: usize, records: u16) {
        self.stats.delivered_by_endpoint[e] += u64::from(records);
    }

    pub(super) fn charged(&mut self, l: usize, bytes: u64) {
        self.stats.link_bytes[l] += bytes;
    }

    pub(super) fn possible_duplicates(&mut self, records: u16) {
        self.stats.possible_duplicates += u64::from(records);
    }

    pub(super) fn failed_over(&mut self) {
        self.stats.failovers += 1;
    }

    pub(super) fn failed_back(&mut self) {
        self.stats.failbacks += 1;
    }

    pub(super) fn event_lost(&mut self) {
        self.stats.events_lost = self.stats.events_lost.saturating_add(1);
    }
}

impl<S: Store, C: Deref<Target = Config>, const E: usize, const L: usize> Engine<S, C, E, L> {
    /// Drops a record by policy: counted by reason and evented. False when the store would
    /// not remove it.
    pub(super) fn drop_record(&mut self, info: &RecordInfo, reason: DropReason) -> bool {
        if !self
            .ledger
            .remove(&mut self.store, info, Fate::Dropped(reason))
        {
            return false;
        }
        let seq = info.meta.seq;
        self.push_event(Raw::Dropped {
            epoch: info.meta.epoch,
            seq_lo: seq as u32,
            seq_hi: (seq >> 32) as u32,
            count: 1,
            reason,
        });
        true
    }

    /// Settles the records of a transmit that `e` acknowledged: delivered, or in mirror
    /// routing delivered once every required endpoint has them.
    pub(super) fn finish(&mut self, f: &InFlight, e: usize) {
        self.ledger.acknowledged(e, f.records);
        if self.config.routing() == Routing::Mirror {
            // The transmit held every record from the floor up to its last one.
            self.endpoints[e].raise_floor(f.last_key());
            self.sweep_mirror(self.endpoints[e].floor(), Some(e));
            return;
        }
        let allow = self.config.links()[usize::from(f.link)].allow;
        // The transmit's slot is free already, so `holds` is asked of a live copy.
        let held = InFlight { id: 1, ..*f };
        let by = EndpointId(e as u8);
        let ledger = &mut self.ledger;
        self.store.remove_run(
            f.walk_start(),
            f.last_key(),
            f.records,
            Settlement::Delivered(by),
            |info| held.holds(info.key(), info.meta.class, allow),
            |info| {
                ledger.removed(info, Fate::Delivered(by));
            },
        );
    }

    /// Mirror routing: removes, as delivered, the records every required endpoint has
    /// acknowledged (`fallback` is the bound when no endpoint is required). `by` is the
    /// endpoint whose acknowledgement prompted the sweep; without one, the records are
    /// credited to the first required endpoint, which has acknowledged them too.
    pub(super) fn sweep_mirror(&mut self, fallback: Option<RecordKey>, by: Option<usize>) {
        let required = self.mirror_required();
        let by = by
            .or_else(|| (0..self.config.endpoints().len()).find(|e| required & (1 << e) != 0))
            .unwrap_or(0);
        let by = Fate::Delivered(EndpointId(by as u8));
        let mut bound = None;
        for e in (0..self.config.endpoints().len()).filter(|e| required & (1 << e) != 0) {
            // An endpoint that acknowledged nothing yet holds every record back.
            let floor = self.endpoints[e].floor();
            bound = Some(bound.map_or(floor, |b: Option<RecordKey>| b.min(floor)));
        }
        let Some(upto) = bound.unwrap_or(fallback) else {
            return;
        };
        let mut after = None;
        while let Ok(Some(info)) = self.store.next_after(after) {
            let key = info.key();
            if key > upto {
                break;
            }
            after = Some(key);
            // A drained endpoint's transmit may still hold it; its outcome settles it.
            if !self.in_flight(&info) {
                self.ledger.remove(&mut self.store, &info, by);
            }
        }
    }
}
