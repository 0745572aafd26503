//! Where pending records live: the [`Store`] trait and the fixed-arena [`RamStore`].

use core::fmt;

use crate::config::Class;
use crate::frame::{self, RecordMeta};

/// The engine's per-record bookkeeping, kept beside each record by the store.
///
/// It is volatile: a store that survives restarts need not persist it, and the engine resets
/// it when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordState {
    /// 0 when not in flight, else the transmit slot plus one.
    pub inflight: u8,
    /// Bit `e` is set once endpoint `e` acknowledged the record (mirror routing).
    pub delivered: u8,
}

/// What a store knows about one record without reading its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo {
    /// The record's metadata.
    pub meta: RecordMeta,
    /// The engine's bookkeeping.
    pub state: RecordState,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// Encoded frame length in bytes.
    pub frame_len: u32,
}

/// The part of [`RecordInfo`] the engine reads on its hot path, cheap for a store to give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPeek {
    /// The engine's bookkeeping.
    pub state: RecordState,
    /// The record's class.
    pub class: Class,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// Encoded frame length in bytes.
    pub frame_len: u32,
}

/// Why a store operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// No room for the record; nothing was written.
    Full,
    /// No record at that index.
    NoSuchRecord,
    /// A frame read back does not decode.
    Corrupt(frame::FrameError),
    /// The medium failed (disk stores).
    Io,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Full => f.write_str("store is full"),
            StoreError::NoSuchRecord => f.write_str("no record at that index"),
            StoreError::Corrupt(e) => write!(f, "stored frame is corrupt: {e}"),
            StoreError::Io => f.write_str("store I/O failed"),
        }
    }
}

impl core::error::Error for StoreError {}

/// An ordered collection of pending records, oldest first.
///
/// Records are addressed by their position (0 is the oldest); removing one shifts the
/// positions of those after it. Records are appended in id order and must be kept in that
/// order. Implementations must never half-write a record: `push` either stores all of it or
/// returns an error and changes nothing.
pub trait Store {
    /// Records held.
    fn len(&self) -> usize;
    /// Whether no record is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Total capacity in bytes, as counted by [`Store::cost`].
    fn capacity(&self) -> usize;
    /// Bytes a frame of `frame_len` bytes takes in this store.
    fn cost(&self, frame_len: usize) -> usize;
    /// Whether a frame of `frame_len` bytes fits now.
    fn fits(&self, frame_len: usize) -> bool;
    /// Appends a record.
    fn push(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<(), StoreError>;
    /// The record at `index`.
    fn info(&mut self, index: usize) -> Option<RecordInfo>;
    /// State, class and lengths of the record at `index`, without its full metadata.
    fn peek(&mut self, index: usize) -> Option<RecordPeek> {
        self.info(index).map(|i| RecordPeek {
            state: i.state,
            class: i.meta.class,
            payload_len: i.payload_len,
            frame_len: i.frame_len,
        })
    }
    /// Sets the bookkeeping of the record at `index`.
    fn set_state(&mut self, index: usize, state: RecordState);
    /// Copies the frame of the record at `index` into `out`; returns its length.
    fn read_frame(&mut self, index: usize, out: &mut [u8]) -> Result<usize, StoreError>;
    /// Removes the record at `index`.
    fn remove(&mut self, index: usize) -> Result<(), StoreError>;
    /// [`read_frame`](Store::read_frame) then [`set_state`](Store::set_state) in one call,
    /// which a store can do with one look-up.
    fn read_and_mark(
        &mut self,
        index: usize,
        out: &mut [u8],
        state: RecordState,
    ) -> Result<usize, StoreError> {
        let n = self.read_frame(index, out)?;
        self.set_state(index, state);
        Ok(n)
    }
}

/// Bytes of bookkeeping before each frame in a [`RamStore`]: live flag, in-flight slot,
/// delivered mask, class and metadata length (so `peek` needs no decoding).
const SLOT_HEADER: usize = 5;

/// A store in a fixed byte arena of `N` bytes: no allocation, sized at compile time.
///
/// Each record takes its frame length plus 5 bytes. Removing the oldest record frees its
/// space at once; removing another leaves a hole that is reclaimed by compaction when an
/// append needs the room.
///
/// ```
/// use twinhub_core::{RamStore, Store, RecordMeta, Class, Instant};
/// let mut store = RamStore::<256>::new();
/// let meta = RecordMeta { epoch: 1, seq: 0, class: Class::Normal, enqueued_at: Instant::ZERO };
/// store.push(&meta, b"21.5C").unwrap();
/// assert_eq!(store.info(0).unwrap().payload_len, 5);
/// ```
pub struct RamStore<const N: usize> {
    arena: [u8; N],
    // Offsets and counts are u32 to keep the store small beside millions of others.
    head: u32,
    tail: u32,
    live: u32,
    live_bytes: u32,
    // Last position looked up and its offset: sequential scans walk from here.
    cursor: (u32, u32),
}

impl<const N: usize> Default for RamStore<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for RamStore<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RamStore")
            .field("capacity", &N)
            .field("records", &self.live)
            .field("bytes", &self.live_bytes)
            .finish()
    }
}

impl<const N: usize> RamStore<N> {
    // Offsets are kept in u32; larger arenas are refused at compile time.
    const FITS_U32: () = assert!(N <= u32::MAX as usize, "RamStore arena must be under 4 GiB");

    /// An empty store.
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::FITS_U32;
        RamStore {
            arena: [0; N],
            head: 0,
            tail: 0,
            live: 0,
            live_bytes: 0,
            cursor: (0, 0),
        }
    }

    /// Bytes used by live records (frames plus bookkeeping).
    pub fn used(&self) -> usize {
        self.live_bytes as usize
    }

    fn slot_len(&self, off: usize) -> usize {
        // Offsets come from our own walk over frames we wrote, so the header is valid.
        let b = &self.arena[off + SLOT_HEADER + 1..off + SLOT_HEADER + 5];
        SLOT_HEADER + frame::HEADER_AND_CRC + u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
    }

    fn is_live(&self, off: usize) -> bool {
        self.arena[off] == 1
    }

    /// Offset of the live record at `index`.
    fn offset(&mut self, index: usize) -> Option<usize> {
        if index >= self.live as usize {
            return None;
        }
        let (head, tail) = (self.head as usize, self.tail as usize);
        let (ci, co) = (self.cursor.0 as usize, self.cursor.1 as usize);
        let (mut i, mut off) = if ci <= index && co >= head {
            (ci, co)
        } else {
            (0, head)
        };
        // Skip holes before the starting record.
        while off < tail && !self.is_live(off) {
            off += self.slot_len(off);
        }
        while i < index {
            off += self.slot_len(off);
            while off < tail && !self.is_live(off) {
                off += self.slot_len(off);
            }
            i += 1;
        }
        self.cursor = (index as u32, off as u32);
        Some(off)
    }

    fn compact(&mut self) {
        let mut write = 0;
        let mut read = self.head as usize;
        while read < self.tail as usize {
            let len = self.slot_len(read);
            if self.is_live(read) {
                self.arena.copy_within(read..read + len, write);
                write += len;
            }
            read += len;
        }
        self.head = 0;
        self.tail = write as u32;
        self.cursor = (0, 0);
    }
}

impl<const N: usize> Store for RamStore<N> {
    fn len(&self) -> usize {
        self.live as usize
    }

    fn capacity(&self) -> usize {
        N
    }

    fn cost(&self, frame_len: usize) -> usize {
        SLOT_HEADER + frame_len
    }

    fn fits(&self, frame_len: usize) -> bool {
        self.live_bytes as usize + SLOT_HEADER + frame_len <= N
    }

    fn push(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<(), StoreError> {
        let need = SLOT_HEADER + frame::encoded_len(meta, payload.len());
        if self.live_bytes as usize + need > N {
            return Err(StoreError::Full);
        }
        if self.tail as usize + need > N {
            self.compact();
        }
        let off = self.tail as usize;
        frame::encode(
            meta,
            payload,
            &mut self.arena[off + SLOT_HEADER..off + need],
        )
        .map_err(|_| StoreError::Full)?;
        let meta_len = need - SLOT_HEADER - frame::HEADER_AND_CRC - payload.len();
        self.arena[off..off + SLOT_HEADER].copy_from_slice(&[
            1,
            0,
            0,
            meta.class as u8,
            meta_len as u8,
        ]);
        self.tail += need as u32;
        self.live += 1;
        self.live_bytes += need as u32;
        Ok(())
    }

    fn info(&mut self, index: usize) -> Option<RecordInfo> {
        let off = self.offset(index)?;
        let len = self.slot_len(off);
        let (f, _) = frame::decode_trusted(&self.arena[off + SLOT_HEADER..off + len]).ok()?;
        Some(RecordInfo {
            meta: f.meta,
            state: RecordState {
                inflight: self.arena[off + 1],
                delivered: self.arena[off + 2],
            },
            payload_len: f.payload.len() as u32,
            frame_len: (len - SLOT_HEADER) as u32,
        })
    }

    fn peek(&mut self, index: usize) -> Option<RecordPeek> {
        let off = self.offset(index)?;
        let frame_len = self.slot_len(off) - SLOT_HEADER;
        let h = &self.arena[off..off + SLOT_HEADER];
        Some(RecordPeek {
            state: RecordState {
                inflight: h[1],
                delivered: h[2],
            },
            class: *Class::ALL.get(h[3] as usize)?,
            payload_len: (frame_len - frame::HEADER_AND_CRC - h[4] as usize) as u32,
            frame_len: frame_len as u32,
        })
    }

    fn set_state(&mut self, index: usize, state: RecordState) {
        if let Some(off) = self.offset(index) {
            self.arena[off + 1] = state.inflight;
            self.arena[off + 2] = state.delivered;
        }
    }

    fn read_frame(&mut self, index: usize, out: &mut [u8]) -> Result<usize, StoreError> {
        let off = self.offset(index).ok_or(StoreError::NoSuchRecord)?;
        let len = self.slot_len(off) - SLOT_HEADER;
        let dst = out
            .get_mut(..len)
            .ok_or(StoreError::Corrupt(frame::FrameError::BufferTooSmall))?;
        dst.copy_from_slice(&self.arena[off + SLOT_HEADER..off + SLOT_HEADER + len]);
        Ok(len)
    }

    fn read_and_mark(
        &mut self,
        index: usize,
        out: &mut [u8],
        state: RecordState,
    ) -> Result<usize, StoreError> {
        let off = self.offset(index).ok_or(StoreError::NoSuchRecord)?;
        let len = self.slot_len(off) - SLOT_HEADER;
        let dst = out
            .get_mut(..len)
            .ok_or(StoreError::Corrupt(frame::FrameError::BufferTooSmall))?;
        dst.copy_from_slice(&self.arena[off + SLOT_HEADER..off + SLOT_HEADER + len]);
        self.arena[off + 1] = state.inflight;
        self.arena[off + 2] = state.delivered;
        Ok(len)
    }

    fn remove(&mut self, index: usize) -> Result<(), StoreError> {
        let off = self.offset(index).ok_or(StoreError::NoSuchRecord)?;
        let len = self.slot_len(off);
        self.arena[off] = 0;
        self.live -= 1;
        self.live_bytes -= len as u32;
        // Reclaim holes at the front at once; the rest wait for compaction.
        while self.head < self.tail && !self.is_live(self.head as usize) {
            self.head += self.slot_len(self.head as usize) as u32;
        }
        if self.live == 0 {
            self.head = 0;
            self.tail = 0;
            self.cursor = (0, 0);
            return Ok(());
        }
        // Records before `index` keep their positions and offsets; a cursor at `index` now
        // rests on a hole, which the next walk skips to the record that took its place.
        if self.cursor.0 as usize > index {
            self.cursor = (0, self.head);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Class, Instant};

    fn meta(seq: u64) -> RecordMeta {
        RecordMeta {
            epoch: 1,
            seq,
            class: Class::Normal,
            enqueued_at: Instant::from_millis(seq),
        }
    }

    #[test]
    fn push_read_remove_compact() {
        let mut s = RamStore::<128>::new();
        let mut n = 0;
        while s.push(&meta(n), &[n as u8; 10]).is_ok() {
            n += 1;
        }
        assert!(n >= 4, "{n}");
        assert_eq!(s.len(), n as usize);
        assert_eq!(s.push(&meta(99), &[0; 10]), Err(StoreError::Full));
        assert_eq!(s.len(), n as usize, "a refused push changes nothing");
        // Remove a middle record, then the head: room comes back and order is kept.
        s.remove(1).unwrap();
        s.remove(0).unwrap();
        assert_eq!(s.info(0).unwrap().meta.seq, 2);
        s.push(&meta(100), &[7; 10]).unwrap();
        let seqs: heapless::Vec<u64, 16> =
            (0..s.len()).map(|i| s.info(i).unwrap().meta.seq).collect();
        assert_eq!(seqs.last(), Some(&100));
        let mut buf = [0u8; 64];
        let len = s.read_frame(s.len() - 1, &mut buf).unwrap();
        let (f, _) = frame::decode(&buf[..len]).unwrap();
        assert_eq!(f.payload, &[7; 10]);
        s.set_state(
            0,
            RecordState {
                inflight: 2,
                delivered: 1,
            },
        );
        assert_eq!(
            s.info(0).unwrap().state,
            RecordState {
                inflight: 2,
                delivered: 1
            }
        );
        assert_eq!(s.remove(99), Err(StoreError::NoSuchRecord));
    }
}
