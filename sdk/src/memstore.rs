//! A heap-backed outbox with a byte cap: the outbox of a producer without a disk path.
//!
//! Records are lost when the process ends; use the disk outbox when they must survive.

use std::collections::VecDeque;

use twinhub_core::frame::{self, RecordMeta};
use twinhub_core::{RecordInfo, RecordKey, Store, StoreError};

/// Per-record bookkeeping besides the frame bytes.
const ENTRY_OVERHEAD: usize = 32;

struct Entry {
    meta: RecordMeta,
    payload_len: u32,
    frame: Box<[u8]>,
}

/// Records in memory, oldest first, capped at `max_bytes` (frames plus bookkeeping).
pub struct MemStore {
    entries: VecDeque<Entry>,
    used: usize,
    max_bytes: usize,
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStore")
            .field("records", &self.entries.len())
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
            used: 0,
            max_bytes,
        }
    }
}

impl MemStore {
    /// Where the record with `key` is, or would go.
    fn position(&self, key: RecordKey) -> usize {
        self.entries.partition_point(|e| e.meta.key() < key)
    }

    fn entry(&self, key: RecordKey) -> Result<(usize, &Entry), StoreError> {
        let i = self.position(key);
        match self.entries.get(i) {
            Some(e) if e.meta.key() == key => Ok((i, e)),
            _ => Err(StoreError::NoSuchRecord),
        }
    }
}

impl Store for MemStore {
    fn len(&self) -> usize {
        self.entries.len()
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
        self.entries.push_back(Entry {
            meta: *meta,
            payload_len: payload.len() as u32,
            frame: bytes,
        });
        Ok(())
    }

    fn next_after(&mut self, after: Option<RecordKey>) -> Result<Option<RecordInfo>, StoreError> {
        let i = match after {
            None => 0,
            Some(k) => self.entries.partition_point(|e| e.meta.key() <= k),
        };
        Ok(self.entries.get(i).map(|e| RecordInfo {
            meta: e.meta,
            payload_len: e.payload_len,
            frame_len: e.frame.len() as u32,
        }))
    }

    fn read(&mut self, key: RecordKey, out: &mut [u8]) -> Result<usize, StoreError> {
        let (_, e) = self.entry(key)?;
        let dst = out
            .get_mut(..e.frame.len())
            .ok_or(StoreError::Corrupt(frame::FrameError::BufferTooSmall))?;
        dst.copy_from_slice(&e.frame);
        Ok(e.frame.len())
    }

    fn remove(&mut self, key: RecordKey) -> Result<(), StoreError> {
        let (i, _) = self.entry(key)?;
        if let Some(e) = self.entries.remove(i) {
            self.used -= e.frame.len() + ENTRY_OVERHEAD;
        }
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
}
