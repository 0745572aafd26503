//! What leaves the outbox by policy rather than delivery: eviction on a full store and
//! expiry after the class's time to live.

use super::*;

impl<S: Store, C: Deref<Target = Config>, const E: usize, const L: usize> Engine<S, C, E, L> {
    /// Whether evicting records no more important than `class` makes room for `flen`.
    pub(super) fn can_evict_for(&mut self, flen: usize, class: Class) -> bool {
        let mut free = self.store.capacity();
        let mut evictable = 0;
        let mut after = None;
        while let Ok(Some(info)) = self.store.next_after(after) {
            after = Some(info.key());
            let cost = self.store.cost(info.frame_len as usize);
            free = free.saturating_sub(cost);
            if info.meta.class >= class && !self.in_flight(&info) {
                evictable += cost;
            }
        }
        free + evictable >= self.store.cost(flen)
    }

    /// Evicts the oldest record of the lowest class present that is not more important
    /// than `class` and not in flight.
    pub(super) fn evict_one(&mut self, class: Class) -> bool {
        for victim in [Class::Bulk, Class::Normal, Class::Critical] {
            if victim < class || self.ledger.class_count(victim as usize) == 0 {
                continue;
            }
            let mut after = None;
            while let Ok(Some(info)) = self.store.next_after(after) {
                after = Some(info.key());
                if info.meta.class == victim && !self.in_flight(&info) {
                    return self.drop_record(&info, DropReason::Evicted);
                }
            }
        }
        false
    }

    pub(super) fn expire(&mut self) {
        let mut next = Instant::NEVER;
        let present = (0..3)
            .filter(|&c| self.ledger.class_count(c) > 0)
            .fold(0u8, |m, c| m | (1 << c));
        let mut seen = 0u8;
        let mut after = None;
        // Records of one class are in acceptance order, so the first live one of each class
        // bounds the rest.
        while seen != present {
            let Ok(Some(info)) = self.store.next_after(after) else {
                break;
            };
            after = Some(info.key());
            let at = info.meta.enqueued_at + self.config.ttl(info.meta.class);
            if at > self.now {
                next = next.min(at);
                seen |= 1 << info.meta.class as u8;
            } else if !self.in_flight(&info) {
                self.drop_record(&info, DropReason::Expired);
            } else {
                // In flight: decided by its outcome; look again shortly.
                next = next.min(self.now + Duration::from_secs(1));
            }
        }
        self.next_expiry = next;
    }
}
