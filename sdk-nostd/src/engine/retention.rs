//! What leaves the outbox by policy rather than delivery: eviction on a full store and
//! expiry after the class's time to live.

use super::*;

impl<S: Store, C: Deref<Target = Config>, const E: usize, const L: usize> Engine<S, C, E, L> {
    /// Evicts what a frame of `flen` bytes of `class` needs, or nothing and
    /// [`EnqueueError::Full`] when that cannot be done.
    pub(super) fn make_room(&mut self, flen: usize, class: Class) -> Result<(), EnqueueError> {
        // A store that frees room in whole units says which oldest records must go; each
        // round frees one unit, so the rounds are bounded by the records held.
        let mut rounds = self.store.len();
        while let Some(bound) = self
            .store
            .reclaim_through(flen)
            .map_err(EnqueueError::Store)?
        {
            if !self.evict_through(bound, class) {
                return Err(EnqueueError::Full);
            }
            if self.store.fits(flen) {
                return Ok(());
            }
            rounds = rounds.checked_sub(1).ok_or(EnqueueError::Full)?;
        }
        if self.store.fits(flen) {
            return Ok(());
        }
        if !self.can_evict_for(flen, class) {
            return Err(EnqueueError::Full);
        }
        while !self.store.fits(flen) {
            if !self.evict_one(class) {
                return Err(EnqueueError::Full);
            }
        }
        Ok(())
    }

    /// Evicts every record up to `bound` if each is evictable for a record of `class` (no
    /// more important, not in flight); else evicts nothing. False when nothing was evicted
    /// or the store refused a removal.
    fn evict_through(&mut self, bound: RecordKey, class: Class) -> bool {
        let mut after = None;
        let mut any = false;
        while let Ok(Some(info)) = self.store.next_after(after) {
            if info.key() > bound {
                break;
            }
            if info.meta.class < class || self.in_flight(&info) {
                return false;
            }
            after = Some(info.key());
            any = true;
        }
        if !any {
            return false;
        }
        while let Ok(Some(info)) = self.store.next_after(None) {
            if info.key() > bound || !self.drop_record(&info, DropReason::Evicted) {
                break;
            }
        }
        self.store
            .next_after(None)
            .ok()
            .flatten()
            .is_none_or(|i| i.key() > bound)
    }

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
