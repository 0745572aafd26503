//! The ledger: the counts of accepted, delivered, pending and dropped records.

use super::*;

impl<S: Store, C: Deref<Target = Config>, const E: usize, const L: usize> Producer<S, C, E, L> {
    /// Takes a record out of the store and out of the pending counts; false when the store
    /// would not remove it (it stays pending).
    pub(super) fn take_out(&mut self, info: &RecordInfo) -> bool {
        if self.store.remove(info.key()).is_err() {
            return false;
        }
        self.stats.pending -= 1;
        self.stats.pending_bytes -= u64::from(info.payload_len);
        self.class_count[info.meta.class as usize] -= 1;
        true
    }

    pub(super) fn drop_record(&mut self, info: &RecordInfo, reason: DropReason) -> bool {
        if !self.take_out(info) {
            return false;
        }
        self.stats.dropped.bump(reason);
        let seq = info.meta.seq;
        self.push_event(Raw::Dropped {
            epoch: info.meta.epoch,
            seq_lo: seq as u32,
            seq_hi: (seq >> 32) as u32,
            reason,
        });
        true
    }

    /// Settles the records of a transmit that `e` acknowledged: delivered, or in mirror
    /// routing delivered once every required endpoint has them.
    pub(super) fn finish(&mut self, f: &InFlight, e: usize) {
        self.stats.delivered_by_endpoint[e] += u64::from(f.records);
        if self.config.routing() == Routing::Mirror {
            // The transmit held every record from the floor up to its last one.
            self.endpoints[e].raise_floor(f.last_key());
            self.sweep_mirror(self.endpoints[e].floor());
            return;
        }
        let mut left = f.records;
        let mut after = f.walk_start();
        let (last, allow) = (f.last_key(), self.config.links()[usize::from(f.link)].allow);
        // The transmit's slot is free already, so `holds` is asked of a live copy.
        let held = InFlight { id: 1, ..*f };
        while left > 0 {
            let Ok(Some(info)) = self.store.next_after(after) else {
                break;
            };
            let key = info.key();
            after = Some(key);
            if key > last {
                break;
            }
            if held.holds(key, info.meta.class, allow) {
                left -= 1;
                if self.take_out(&info) {
                    self.stats.delivered += 1;
                }
            }
        }
    }

    /// Mirror routing: removes, as delivered, the records every required endpoint has
    /// acknowledged (`fallback` is the bound when no endpoint is required).
    pub(super) fn sweep_mirror(&mut self, fallback: Option<RecordKey>) {
        let required = self.mirror_required();
        let mut upto = fallback;
        for e in 0..self.config.endpoints().len() {
            if required & (1 << e) != 0 {
                upto = upto.min(self.endpoints[e].floor());
            }
        }
        let Some(upto) = upto else {
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
            if !self.in_flight(&info) && self.take_out(&info) {
                self.stats.delivered += 1;
            }
        }
    }
}
