//! A heap-backed outbox with a byte cap: the outbox of a producer without a disk path.
//!
//! Records are lost when the process ends; use the disk outbox when they must survive.

use std::collections::VecDeque;

use twinhub_core::frame::{self, RecordMeta};
use twinhub_core::{RecordInfo, RecordPeek, RecordState, Store, StoreError};

/// Per-record bookkeeping besides the frame bytes.
const ENTRY_OVERHEAD: usize = 32;

struct Entry {
    meta: RecordMeta,
    state: RecordState,
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

    fn push(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<(), StoreError> {
        let len = frame::encoded_len(meta, payload.len());
        if !self.fits(len) {
            return Err(StoreError::Full);
        }
        let mut bytes = vec![0u8; len].into_boxed_slice();
        frame::encode(meta, payload, &mut bytes).map_err(StoreError::Corrupt)?;
        self.used += self.cost(len);
        self.entries.push_back(Entry {
            meta: *meta,
            state: RecordState::default(),
            payload_len: payload.len() as u32,
            frame: bytes,
        });
        Ok(())
    }

    fn info(&mut self, index: usize) -> Option<RecordInfo> {
        self.entries.get(index).map(|e| RecordInfo {
            meta: e.meta,
            state: e.state,
            payload_len: e.payload_len,
            frame_len: e.frame.len() as u32,
        })
    }

    fn peek(&mut self, index: usize) -> Option<RecordPeek> {
        self.entries.get(index).map(|e| RecordPeek {
            state: e.state,
            class: e.meta.class,
            payload_len: e.payload_len,
            frame_len: e.frame.len() as u32,
        })
    }

    fn set_state(&mut self, index: usize, state: RecordState) {
        if let Some(e) = self.entries.get_mut(index) {
            e.state = state;
        }
    }

    fn read_frame(&mut self, index: usize, out: &mut [u8]) -> Result<usize, StoreError> {
        let e = self.entries.get(index).ok_or(StoreError::NoSuchRecord)?;
        let dst = out
            .get_mut(..e.frame.len())
            .ok_or(StoreError::Corrupt(frame::FrameError::BufferTooSmall))?;
        dst.copy_from_slice(&e.frame);
        Ok(e.frame.len())
    }

    fn remove(&mut self, index: usize) -> Result<(), StoreError> {
        let e = self.entries.remove(index).ok_or(StoreError::NoSuchRecord)?;
        self.used -= e.frame.len() + ENTRY_OVERHEAD;
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
        while s.push(&meta(n), &[0; 50]).is_ok() {
            n += 1;
        }
        assert!(n >= 2);
        assert_eq!(s.push(&meta(n), &[0; 50]), Err(StoreError::Full));
        s.remove(0).unwrap();
        assert_eq!(s.info(0).unwrap().meta.seq, 1);
        s.push(&meta(n), &[0; 50]).unwrap();
        let mut buf = [0u8; 128];
        let len = s.read_frame(s.len() - 1, &mut buf).unwrap();
        assert_eq!(frame::decode(&buf[..len]).unwrap().0.meta.seq, n);
    }
}
