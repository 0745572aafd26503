//! A heap-backed outbox with a byte cap: the outbox of a producer without a disk path.
//!
//! Records are lost when the process ends; use the disk outbox when they must survive.

use std::collections::VecDeque;

use twinhub_core::frame::{self, RecordMeta};
use twinhub_core::{RecordInfo, RecordKey, Store, StoreError};

/// Per-record bookkeeping besides the frame bytes.
const ENTRY_OVERHEAD: usize = 32;
/// Places of removed records kept beyond as many as there are records held, before they
/// are all dropped at once (amortised: that takes at least as many removals).
const MAX_SLACK: usize = 64;

struct Entry {
    meta: RecordMeta,
    payload_len: u32,
    /// `None` once removed: a record removed from the middle (transmits settle in any
    /// order) leaves its place until every older one is gone too, so no entry ever moves
    /// and none is copied down the deque.
    frame: Option<Box<[u8]>>,
}

/// Records in memory, oldest first, capped at `max_bytes` (frames plus bookkeeping).
pub struct MemStore {
    entries: VecDeque<Entry>,
    /// Entries still held (the rest are places of removed records).
    live: usize,
    used: usize,
    max_bytes: usize,
    /// Entries taken from the front so far: `popped + index` names an entry for as long
    /// as it is in the deque, however many older ones go before it.
    popped: usize,
    /// The entry `next_after` returned last (`popped + index`, key). The engine walks the
    /// store record after record and reads each one it is handed, so both find it here
    /// instead of searching the whole deque once per record.
    cursor: Option<(usize, RecordKey)>,
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStore")
            .field("records", &self.live)
            .field("bytes", &self.used)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl MemStore {
    /// An empty store holding at most `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        MemStore {
            entries: VecDeque::new(),
            live: 0,
            used: 0,
            max_bytes,
            popped: 0,
            cursor: None,
        }
    }
}

impl MemStore {
    /// Where the entry with `key` is, held or removed: the cursor's and the oldest (the
    /// ones the engine reads and removes) without a search.
    fn position(&self, key: RecordKey) -> Option<usize> {
        if let Some((at, k)) = self.cursor
            && k == key
            && let Some(i) = at.checked_sub(self.popped)
            && self.entries.get(i).is_some_and(|e| e.meta.key() == key)
        {
            return Some(i);
        }
        if self.entries.front().is_some_and(|e| e.meta.key() == key) {
            return Some(0);
        }
        let i = self.entries.partition_point(|e| e.meta.key() < key);
        self.entries
            .get(i)
            .is_some_and(|e| e.meta.key() == key)
            .then_some(i)
    }

    /// The held record with `key`: its place and frame.
    fn held(&self, key: RecordKey) -> Result<(usize, &[u8]), StoreError> {
        self.position(key)
            .and_then(|i| Some((i, self.entries[i].frame.as_deref()?)))
            .ok_or(StoreError::NoSuchRecord)
    }

    /// Drops the places of removed records from both ends, so the deque starts and ends
    /// with held records, and all of them once they outnumber the records held: a record
    /// that stays at the front (one no route may carry yet) must not let the places of
    /// every record delivered after it pile up without bound.
    fn trim(&mut self) {
        while self.entries.front().is_some_and(|e| e.frame.is_none()) {
            self.entries.pop_front();
            self.popped += 1;
        }
        while self.entries.back().is_some_and(|e| e.frame.is_none()) {
            self.entries.pop_back();
        }
        if self.entries.len() > 2 * self.live + MAX_SLACK {
            self.entries.retain(|e| e.frame.is_some());
            // Positions moved: the cursor no longer names its entry.
            self.cursor = None;
        }
    }
}

impl Store for MemStore {
    fn len(&self) -> usize {
        self.live
    }

    fn capacity(&self) -> usize {
        self.max_bytes
    }

    fn cost(&self, frame_len: usize) -> usize {
        frame_len + ENTRY_OVERHEAD
    }

    fn fits(&self, frame_len: usize) -> bool {
        self.used + self.cost(frame_len) <= self.max_bytes
    }

    fn append(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<(), StoreError> {
        if self
            .entries
            .back()
            .is_some_and(|last| meta.key() <= last.meta.key())
        {
            return Err(StoreError::OutOfOrder);
        }
        let len = frame::encoded_len(meta, payload.len());
        if !self.fits(len) {
            return Err(StoreError::Full);
        }
        let mut bytes = vec![0u8; len].into_boxed_slice();
        frame::encode(meta, payload, &mut bytes).map_err(StoreError::Corrupt)?;
        self.used += self.cost(len);
        self.live += 1;
        self.entries.push_back(Entry {
            meta: *meta,
            payload_len: payload.len() as u32,
            frame: Some(bytes),
        });
        Ok(())
    }

    fn next_after(&mut self, after: Option<RecordKey>) -> Result<Option<RecordInfo>, StoreError> {
        let mut i = match after {
            None => 0,
            Some(k) => match self.position(k) {
                Some(i) => i + 1,
                // `after` was never here (or left from the front): the first key above it.
                None => self.entries.partition_point(|e| e.meta.key() <= k),
            },
        };
        // Past the places of removed records; the deque ends with a held one.
        while self.entries.get(i).is_some_and(|e| e.frame.is_none()) {
            i += 1;
        }
        let Some(e) = self.entries.get(i) else {
            return Ok(None);
        };
        let frame_len = e.frame.as_ref().map_or(0, |f| f.len()) as u32;
        self.cursor = Some((self.popped + i, e.meta.key()));
        Ok(Some(RecordInfo {
            meta: e.meta,
            payload_len: e.payload_len,
            frame_len,
        }))
    }

    fn read(&mut self, key: RecordKey, out: &mut [u8]) -> Result<usize, StoreError> {
        let (_, f) = self.held(key)?;
        let dst = out
            .get_mut(..f.len())
            .ok_or(StoreError::Corrupt(frame::FrameError::BufferTooSmall))?;
        dst.copy_from_slice(f);
        Ok(f.len())
    }

    fn remove(&mut self, key: RecordKey) -> Result<(), StoreError> {
        let (i, _) = self.held(key)?;
        if let Some(f) = self.entries[i].frame.take() {
            self.used -= f.len() + ENTRY_OVERHEAD;
            self.live -= 1;
        }
        self.trim();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twinhub_core::{Class, Instant};

    #[test]
    fn cap_and_order() {
        let mut s = MemStore::new(300);
        let meta = |seq| RecordMeta {
            epoch: 1,
            seq,
            class: Class::Normal,
            enqueued_at: Instant::ZERO,
        };
        let mut n = 0;
        while s.append(&meta(n), &[0; 50]).is_ok() {
            n += 1;
        }
        assert!(n >= 2);
        assert_eq!(s.append(&meta(n), &[0; 50]), Err(StoreError::Full));
        assert_eq!(s.append(&meta(0), &[0; 5]), Err(StoreError::OutOfOrder));
        s.remove(meta(0).key()).unwrap();
        assert_eq!(s.remove(meta(0).key()), Err(StoreError::NoSuchRecord));
        assert_eq!(s.next_after(None).unwrap().unwrap().meta.seq, 1);
        s.append(&meta(n), &[0; 50]).unwrap();
        let mut buf = [0u8; 128];
        let len = s.read(meta(n).key(), &mut buf).unwrap();
        assert_eq!(frame::decode(&buf[..len]).unwrap().0.meta.seq, n);
        let last = s.next_after(Some(meta(n - 1).key())).unwrap().unwrap();
        assert_eq!(last.meta.seq, n);
        assert_eq!(s.next_after(Some(last.key())).unwrap(), None);
    }

    /// One record that stays at the front while thousands after it are delivered: the
    /// places they leave are dropped, not kept until the first one goes.
    #[test]
    fn a_record_held_at_the_front_does_not_pile_up_places() {
        let mut s = MemStore::new(1 << 20);
        let meta = |seq| RecordMeta {
            epoch: 1,
            seq,
            class: Class::Normal,
            enqueued_at: Instant::ZERO,
        };
        s.append(&meta(0), &[0; 8]).unwrap();
        s.append(&meta(1), &[1; 8]).unwrap();
        // Each delivered record has a newer one behind it, so its place is in the middle.
        for seq in 2..10_000 {
            s.append(&meta(seq), &[1; 8]).unwrap();
            s.remove(meta(seq - 1).key()).unwrap();
        }
        assert_eq!(s.len(), 2);
        assert!(s.entries.len() <= 4 + MAX_SLACK, "{}", s.entries.len());
        assert_eq!(s.next_after(None).unwrap().unwrap().meta.seq, 0);
        let next = s.next_after(Some(meta(0).key())).unwrap().unwrap();
        assert_eq!(next.meta.seq, 9_999);
    }

    proptest::proptest! {
        /// The cursor and the front fast path are shortcuts only: every answer matches a
        /// plain ordered map, whatever mix of appends, walks, reads and removals (oldest
        /// first or from the middle) comes.
        #[test]
        fn matches_an_ordered_map(ops in proptest::collection::vec((0u8..4, 0usize..64), 1..300)) {
            let mut s = MemStore::new(1 << 20);
            let mut model = std::collections::BTreeMap::new();
            let mut next = 0u64;
            let mut walk: Option<RecordKey> = None;
            let meta = |seq| RecordMeta { epoch: 1, seq, class: Class::Normal, enqueued_at: Instant::ZERO };
            for (op, pick) in ops {
                let held: Vec<RecordKey> = model.keys().copied().collect();
                match op {
                    0 => {
                        s.append(&meta(next), &next.to_le_bytes()).unwrap();
                        model.insert(meta(next).key(), next);
                        next += 1 + pick as u64 % 3;
                    }
                    1 => {
                        let want = match walk {
                            None => model.keys().next().copied(),
                            Some(a) => model.range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)).next().map(|(k, _)| *k),
                        };
                        let got = s.next_after(walk).unwrap().map(|i| i.key());
                        proptest::prop_assert_eq!(got, want);
                        walk = got;
                        if let Some(k) = got {
                            let mut buf = [0u8; 64];
                            let n = s.read(k, &mut buf).unwrap();
                            let (f, _) = frame::decode(&buf[..n]).unwrap();
                            proptest::prop_assert_eq!(f.payload, &model[&k].to_le_bytes()[..]);
                        }
                    }
                    2 if !held.is_empty() => {
                        // Mostly the oldest, as deliveries go; sometimes any.
                        let k = if pick % 2 == 0 { held[0] } else { held[pick % held.len()] };
                        s.remove(k).unwrap();
                        model.remove(&k);
                        proptest::prop_assert_eq!(s.remove(k), Err(StoreError::NoSuchRecord));
                    }
                    _ => walk = None,
                }
                proptest::prop_assert_eq!(s.len(), model.len());
                proptest::prop_assert!(s.entries.len() <= 2 * s.live + MAX_SLACK);
            }
            // Emptied in any order, it holds nothing and counts no bytes.
            for k in model.keys().rev() {
                s.remove(*k).unwrap();
            }
            proptest::prop_assert_eq!(s.used, 0);
            proptest::prop_assert!(s.entries.is_empty());
            proptest::prop_assert_eq!(s.next_after(None).unwrap(), None);
        }
    }
}
