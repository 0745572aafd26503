//! Where pending records live: the [`Store`] trait, the [`Persist`] trait for what a device
//! keeps across restarts, and the fixed-arena [`RamStore`].

use core::fmt;

use crate::config::EndpointId;
use crate::engine::LinkSpend;
use crate::event::DropReason;
use crate::frame::{self, RecordMeta};

/// Names one record in a store: the epoch it was accepted in and its number within it.
/// Keys order records as they were accepted (epoch first, then sequence number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RecordKey {
    /// The producer start count when the record was accepted.
    pub epoch: u32,
    /// The record's number within its epoch.
    pub seq: u64,
}

impl RecordKey {
    /// Epoch then sequence number as one number: the order of the two fields, in one
    /// comparison rather than the derived one's two with a branch between.
    #[inline]
    fn ordinal(self) -> u128 {
        (u128::from(self.epoch) << 64) | u128::from(self.seq)
    }
}

impl Ord for RecordKey {
    #[inline]
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.ordinal().cmp(&other.ordinal())
    }
}

impl PartialOrd for RecordKey {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// What a store knows about one record without reading its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RecordInfo {
    /// The record's metadata.
    pub meta: RecordMeta,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// Encoded frame length in bytes ([`frame::encoded_len`] of the metadata and payload).
    pub frame_len: u32,
}

impl RecordInfo {
    /// The record's key.
    pub fn key(&self) -> RecordKey {
        self.meta.key()
    }
}

/// How a record that left the store was settled; see [`Store::settled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Settlement {
    /// Acknowledged. The endpoint is the one whose acknowledgement completed it (in mirror
    /// routing, the last required endpoint to acknowledge, as far as the engine knows).
    Delivered(EndpointId),
    /// Dropped by policy, for this reason (also raised as [`crate::Event::Dropped`]).
    Dropped(DropReason),
}

/// Why a store operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StoreError {
    /// No room for the record; nothing was written.
    Full,
    /// No record with that key.
    NoSuchRecord,
    /// A frame read back does not decode, or the buffer given for it is too small
    /// (`Corrupt(FrameError::BufferTooSmall)`).
    Corrupt(frame::FrameError),
    /// A record appended with a key not above every key held; nothing was written.
    OutOfOrder,
    /// The medium failed.
    Io,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Full => f.write_str("store is full"),
            StoreError::NoSuchRecord => f.write_str("no record with that key"),
            StoreError::Corrupt(e) => write!(f, "stored frame is corrupt: {e}"),
            StoreError::OutOfOrder => {
                f.write_str("record key is not above every key held (records go in key order)")
            }
            StoreError::Io => f.write_str("store I/O failed"),
        }
    }
}

impl core::error::Error for StoreError {}

/// Where pending records live, addressed by [`RecordKey`].
///
/// Records are appended in key order and any of them can be removed. A store keeps no
/// bookkeeping of the engine's (which records are in flight, which endpoints acknowledged
/// them): the engine keeps that itself, so a store is only this, and a device can put one
/// in its own flash in about a hundred lines.
///
/// A store that survives restarts hands every record it still holds back to the next
/// engine, which counts them as pending. A store that is also [`Persist`] gives the driver
/// the epoch for each start.
pub trait Store {
    /// Records held.
    fn len(&self) -> usize;
    /// Whether no record is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Total capacity in bytes, as counted by [`cost`](Store::cost).
    fn capacity(&self) -> usize;
    /// Bytes a frame of `frame_len` bytes takes in this store.
    fn cost(&self, frame_len: usize) -> usize;
    /// Whether a frame of `frame_len` bytes can be appended now.
    fn fits(&self, frame_len: usize) -> bool;
    /// Appends a record: all of it or, with an error, nothing (a durable store must keep
    /// that promise across power loss too). Its key must be above every key held, or
    /// [`StoreError::OutOfOrder`].
    fn append(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<(), StoreError>;
    /// The oldest record whose key is above `after`; with `None`, the oldest of all.
    fn next_after(&mut self, after: Option<RecordKey>) -> Result<Option<RecordInfo>, StoreError>;
    /// Copies the frame of record `key` into `out` and returns its length.
    fn read(&mut self, key: RecordKey, out: &mut [u8]) -> Result<usize, StoreError>;
    /// Removes record `key` (any record, not only the oldest).
    fn remove(&mut self, key: RecordKey) -> Result<(), StoreError>;
    /// Told, right after the engine removed record `key`, how it was settled. Every
    /// record the engine takes out goes through here once, whatever the call that settled
    /// it, so a driver can confirm deliveries per record without the event queue (which
    /// holds a few events, not one per record). The default does nothing and costs
    /// nothing; stores that only store need not implement it.
    #[inline]
    fn settled(&mut self, _key: RecordKey, _how: Settlement) {}

    /// Removes a run of records, settled as `how`: oldest first, among the records with
    /// keys above `after` and not above `last`, each that `pick` chooses, until `max` are
    /// chosen. Each record removed goes to `removed`, then to [`settled`](Store::settled).
    /// A record the store fails to remove counts as chosen but is left, and a failed walk
    /// ends the run.
    ///
    /// The default does it with [`next_after`](Store::next_after) and
    /// [`remove`](Store::remove), record by record. A store can do it in one pass: the
    /// engine settles every delivered transmit through here.
    fn remove_run(
        &mut self,
        after: Option<RecordKey>,
        last: RecordKey,
        max: u16,
        how: Settlement,
        mut pick: impl FnMut(&RecordInfo) -> bool,
        mut removed: impl FnMut(&RecordInfo),
    ) where
        Self: Sized,
    {
        let (mut after, mut left) = (after, max);
        while left > 0 {
            // Borrowed where the store returned it, not copied out.
            let next = self.next_after(after);
            let Ok(Some(info)) = &next else {
                break;
            };
            let key = info.key();
            after = Some(key);
            if key > last {
                break;
            }
            if pick(info) {
                left -= 1;
                if self.remove(key).is_ok() {
                    removed(info);
                    self.settled(key, how);
                }
            }
        }
    }

    /// For a store that gets room back only in whole units, oldest first (flash pages,
    /// erased whole): the newest record that must go, with every record older than it,
    /// before a frame of `frame_len` bytes fits. The engine then evicts exactly those, or
    /// nothing when one of them may not be evicted.
    ///
    /// `Ok(None)`, the default, says that removing any record frees its
    /// [`cost`](Store::cost) at once, as in RAM: the engine then evicts record by record.
    fn reclaim_through(&mut self, frame_len: usize) -> Result<Option<RecordKey>, StoreError> {
        let _ = frame_len;
        Ok(None)
    }
}

/// What a device keeps across restarts besides its records: the epoch counter and the
/// spend of its budgeted links.
///
/// The engine never calls it; the driver does, once at start ([`next_epoch`], then
/// [`load_spend`] for each budgeted link, handed to
/// [`Engine::restore_link_spend`](crate::Engine::restore_link_spend)) and after each
/// transmit on a budgeted link ([`save_spend`], before the bytes go out, so a reboot
/// never hands the link a budget it already spent).
///
/// [`next_epoch`]: Persist::next_epoch
/// [`load_spend`]: Persist::load_spend
/// [`save_spend`]: Persist::save_spend
pub trait Persist {
    /// Takes this start's epoch: larger than every epoch taken before on this device, and
    /// durable before it returns. A reused epoch repeats message ids, which a deduping
    /// consumer discards: silent loss.
    fn next_epoch(&mut self) -> Result<u32, StoreError>;
    /// The spend of link index `link` saved last, if any.
    fn load_spend(&mut self, link: u8) -> Result<Option<LinkSpend>, StoreError>;
    /// Saves the spend of link index `link`, durably before it returns.
    fn save_spend(&mut self, link: u8, spend: LinkSpend) -> Result<(), StoreError>;
}

/// Bytes of bookkeeping before each frame in a [`RamStore`]: the live flag.
const SLOT_HEADER: usize = 1;

/// No slot: for the cursor, the next look-up starts at the oldest record.
const NO_SLOT: u32 = u32::MAX;

/// A [`RecordKey`] in 4-byte words: it packs beside the store's `u32` fields without the
/// padding a `u64` would bring, which matters in an engine held to a RAM budget.
#[derive(Debug, Clone, Copy)]
struct PackedKey([u32; 3]);

impl PackedKey {
    const ZERO: PackedKey = PackedKey([0; 3]);

    fn get(self) -> RecordKey {
        RecordKey {
            epoch: self.0[0],
            seq: u64::from(self.0[1]) | (u64::from(self.0[2]) << 32),
        }
    }
}

impl From<RecordKey> for PackedKey {
    fn from(k: RecordKey) -> Self {
        PackedKey([k.epoch, k.seq as u32, (k.seq >> 32) as u32])
    }
}

/// A store in a fixed byte arena of `N` bytes: no allocation, sized at compile time.
///
/// Each record takes its frame length plus one byte. Removing the oldest record frees its
/// space at once; removing another leaves a hole that is reclaimed by compaction when an
/// append needs the room. Look-ups walk from the last record looked up, whose key is kept
/// beside it, so the engine's walks (oldest to newest, each record looked up, read and
/// removed in turn) decode one frame header a record.
///
/// ```
/// use twinhub_core::{RamStore, Store, RecordMeta, Class, Instant};
/// let mut store = RamStore::<256>::new();
/// let meta = RecordMeta { epoch: 1, seq: 0, class: Class::Normal, enqueued_at: Instant::ZERO };
/// store.append(&meta, b"21.5C").unwrap();
/// let oldest = store.next_after(None).unwrap().unwrap();
/// assert_eq!((oldest.key(), oldest.payload_len), (meta.key(), 5));
/// ```
pub struct RamStore<const N: usize> {
    arena: [u8; N],
    // Offsets and counts are u32 to keep the store small beside millions of others.
    head: u32,
    tail: u32,
    live: u32,
    live_bytes: u32,
    // The slot looked up last (live or not; `NO_SLOT` for none), and its key: walks go on
    // from there, and a look-up of that key needs no decoding.
    cursor: u32,
    cursor_key: PackedKey,
    // The key appended last (meaningful while a record is held), which the next append
    // must pass.
    newest: PackedKey,
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
    const FITS_U32: () = assert!(N < u32::MAX as usize, "RamStore arena must be under 4 GiB");

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
            cursor: NO_SLOT,
            cursor_key: PackedKey::ZERO,
            newest: PackedKey::ZERO,
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

    // Inlined whole, decoding included, into the walks: the engine's hot loops call them
    // once a record, and the frame's parts need not come back through memory.
    #[inline(always)]
    fn info_at(&self, off: usize) -> Result<RecordInfo, StoreError> {
        // Only the metadata is decoded: the version and length were written by `append`
        // (which refuses a body over `MAX_BODY`), so checking them again finds nothing.
        let len = self.slot_len(off) - SLOT_HEADER;
        let body = &self.arena[off + SLOT_HEADER + 5..off + SLOT_HEADER + len - 4];
        let (meta, n) =
            frame::get_meta(body).ok_or(StoreError::Corrupt(frame::FrameError::Meta))?;
        Ok(RecordInfo {
            meta,
            payload_len: (body.len() - n) as u32,
            frame_len: len as u32,
        })
    }

    fn set_cursor(&mut self, off: usize, key: RecordKey) {
        self.cursor = off as u32;
        self.cursor_key = key.into();
    }

    /// The first live slot whose key passes `keep`; moves the cursor to it. Its info comes
    /// along when the walk had to decode it (not when it is the cursor's own slot).
    ///
    /// The walk starts at the cursor when its key is not past `bound` (keys below `bound`
    /// are the ones `keep` skips), else at the oldest slot. The engine's look-ups mostly
    /// land on the cursor or the slot after it.
    fn walk(
        &mut self,
        bound: Option<RecordKey>,
        keep: impl Fn(RecordKey) -> Walk,
    ) -> Result<Option<(usize, Option<RecordInfo>)>, StoreError> {
        let mut off = self.head as usize;
        if let (Some(b), true) = (bound, self.cursor != NO_SLOT) {
            let (at, key) = (self.cursor as usize, self.cursor_key.get());
            if key <= b {
                match keep(key) {
                    Walk::Stop => return Ok(None),
                    Walk::Take if self.is_live(at) => return Ok(Some((at, None))),
                    _ => off = at + self.slot_len(at),
                }
            }
        }
        while off < self.tail as usize {
            let info = self.info_at(off)?;
            let key = info.key();
            match keep(key) {
                Walk::Stop => break,
                Walk::Take if self.is_live(off) => {
                    self.set_cursor(off, key);
                    return Ok(Some((off, Some(info))));
                }
                _ => off += self.slot_len(off),
            }
        }
        Ok(None)
    }

    /// The offset of live record `key`.
    #[inline]
    fn find(&mut self, key: RecordKey) -> Result<usize, StoreError> {
        // The engine reads and removes the record it just looked up: answer that first,
        // inline, and leave the walk out of line.
        let at = self.cursor as usize;
        if self.cursor != NO_SLOT && self.cursor_key.get() == key && self.is_live(at) {
            return Ok(at);
        }
        self.find_by_walk(key)
    }

    #[inline(never)]
    fn find_by_walk(&mut self, key: RecordKey) -> Result<usize, StoreError> {
        self.walk(Some(key), |k| match k.cmp(&key) {
            core::cmp::Ordering::Less => Walk::Skip,
            core::cmp::Ordering::Equal => Walk::Take,
            core::cmp::Ordering::Greater => Walk::Stop,
        })?
        .map(|(off, _)| off)
        .ok_or(StoreError::NoSuchRecord)
    }

    /// Where a walk for the records above `after` starts: past the cursor when its key is
    /// not above `after` (as in `next_after`), else at the oldest slot.
    fn run_start(&self, after: Option<RecordKey>) -> usize {
        match after {
            Some(a) if self.cursor != NO_SLOT && self.cursor_key.get() <= a => {
                self.cursor as usize + self.slot_len(self.cursor as usize)
            }
            _ => self.head as usize,
        }
    }

    /// After removals that may have left the front dead: empties the arena when nothing is
    /// held, else moves the head to the first live slot; as `remove` leaves them.
    fn reclaim_front(&mut self) {
        if self.live == 0 {
            self.head = 0;
            self.tail = 0;
            self.cursor = NO_SLOT;
            return;
        }
        let mut head = self.head as usize;
        while head < self.tail as usize && !self.is_live(head) {
            head += self.slot_len(head);
        }
        self.head = head as u32;
        if self.cursor != NO_SLOT && self.cursor < self.head {
            self.cursor = NO_SLOT;
        }
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
        self.cursor = NO_SLOT;
    }
}

/// What a walk does with the slot it is on.
enum Walk {
    Skip,
    Take,
    Stop,
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

    fn append(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<(), StoreError> {
        if self.live > 0 && meta.key() <= self.newest.get() {
            return Err(StoreError::OutOfOrder);
        }
        // The metadata's length once, for the room check and the encoding.
        let m = frame::meta_len(meta);
        let need = SLOT_HEADER + frame::HEADER_AND_CRC + m + payload.len();
        if self.live_bytes as usize + need > N {
            return Err(StoreError::Full);
        }
        if self.tail as usize + need > N {
            self.compact();
        }
        let off = self.tail as usize;
        frame::encode_sized(
            meta,
            m,
            payload,
            &mut self.arena[off + SLOT_HEADER..off + need],
        )
        .map_err(StoreError::Corrupt)?;
        self.arena[off] = 1;
        self.tail += need as u32;
        self.live += 1;
        self.live_bytes += need as u32;
        self.newest = meta.key().into();
        Ok(())
    }

    fn next_after(&mut self, after: Option<RecordKey>) -> Result<Option<RecordInfo>, StoreError> {
        let mut off = self.head as usize;
        if let (Some(a), true) = (after, self.cursor != NO_SLOT) {
            let (at, key) = (self.cursor as usize, self.cursor_key.get());
            // Walks ask for the record after the one looked up last: go on from there.
            if key <= a {
                off = at + self.slot_len(at);
            }
        }
        // Slots hold keys in ascending order, so the first live one above `after` is it.
        while off < self.tail as usize {
            if self.is_live(off) {
                let info = self.info_at(off)?;
                let key = info.key();
                if after.is_none_or(|a| key > a) {
                    self.set_cursor(off, key);
                    return Ok(Some(info));
                }
            }
            off += self.slot_len(off);
        }
        Ok(None)
    }

    // Inlined into the engine's batch loop, where the record is the cursor's.
    #[inline]
    fn read(&mut self, key: RecordKey, out: &mut [u8]) -> Result<usize, StoreError> {
        let off = self.find(key)?;
        let len = self.slot_len(off) - SLOT_HEADER;
        let dst = out
            .get_mut(..len)
            .ok_or(StoreError::Corrupt(frame::FrameError::BufferTooSmall))?;
        dst.copy_from_slice(&self.arena[off + SLOT_HEADER..off + SLOT_HEADER + len]);
        Ok(len)
    }

    fn remove(&mut self, key: RecordKey) -> Result<(), StoreError> {
        let off = self.find(key)?;
        let len = self.slot_len(off);
        self.arena[off] = 0;
        self.live -= 1;
        self.live_bytes -= len as u32;
        if self.live == 0 {
            self.head = 0;
            self.tail = 0;
            self.cursor = NO_SLOT;
            return Ok(());
        }
        // Reclaim holes at the front at once; the rest wait for compaction. A cursor on a
        // hole stays usable (its frame is intact) until the hole is reclaimed. The head is
        // live while records are held, so only removing it opens holes at the front.
        if off == self.head as usize {
            let mut head = off + len;
            while head < self.tail as usize && !self.is_live(head) {
                head += self.slot_len(head);
            }
            self.head = head as u32;
            if self.cursor != NO_SLOT && self.cursor < self.head {
                self.cursor = NO_SLOT;
            }
        }
        Ok(())
    }

    // One pass over the slots: each record is decoded once and removed where it lies,
    // with no look-up by key, and the head is moved once at the end.
    fn remove_run(
        &mut self,
        after: Option<RecordKey>,
        last: RecordKey,
        max: u16,
        how: Settlement,
        mut pick: impl FnMut(&RecordInfo) -> bool,
        mut removed: impl FnMut(&RecordInfo),
    ) {
        let mut off = self.run_start(after);
        let mut left = max;
        while left > 0 && off < self.tail as usize {
            let len = self.slot_len(off);
            if self.is_live(off) {
                let Ok(info) = self.info_at(off) else {
                    break;
                };
                let key = info.key();
                if after.is_none_or(|a| key > a) {
                    if key > last {
                        break;
                    }
                    if pick(&info) {
                        left -= 1;
                        self.arena[off] = 0;
                        self.live -= 1;
                        self.live_bytes -= len as u32;
                        removed(&info);
                        self.settled(key, how);
                    }
                }
            }
            off += len;
        }
        self.reclaim_front();
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

    fn keys<const N: usize>(s: &mut RamStore<N>) -> heapless::Vec<u64, 32> {
        let mut out = heapless::Vec::new();
        let mut after = None;
        while let Some(info) = s.next_after(after).unwrap() {
            out.push(info.meta.seq).unwrap();
            after = Some(info.key());
        }
        out
    }

    #[test]
    fn append_read_remove_compact() {
        let mut s = RamStore::<128>::new();
        let mut n = 0;
        while s.append(&meta(n), &[n as u8; 10]).is_ok() {
            n += 1;
        }
        assert!(n >= 4, "{n}");
        assert_eq!(s.len(), n as usize);
        assert_eq!(s.append(&meta(99), &[0; 10]), Err(StoreError::Full));
        assert_eq!(s.len(), n as usize, "a refused append changes nothing");
        // Remove a middle record, then the oldest: room comes back and order is kept.
        s.remove(meta(1).key()).unwrap();
        s.remove(meta(0).key()).unwrap();
        assert_eq!(s.next_after(None).unwrap().unwrap().meta.seq, 2);
        s.append(&meta(100), &[7; 10]).unwrap();
        let seqs = keys(&mut s);
        assert_eq!(seqs.first(), Some(&2));
        assert_eq!(seqs.last(), Some(&100));
        let mut buf = [0u8; 64];
        let len = s.read(meta(100).key(), &mut buf).unwrap();
        let (f, _) = frame::decode(&buf[..len]).unwrap();
        assert_eq!(f.payload, &[7; 10]);
        assert_eq!(s.remove(meta(99).key()), Err(StoreError::NoSuchRecord));
        assert_eq!(s.remove(meta(1).key()), Err(StoreError::NoSuchRecord));
        assert_eq!(
            s.read(meta(100).key(), &mut [0u8; 4]),
            Err(StoreError::Corrupt(frame::FrameError::BufferTooSmall))
        );
    }

    #[test]
    fn appends_must_go_in_key_order() {
        let mut s = RamStore::<256>::new();
        s.append(&meta(5), b"a").unwrap();
        assert_eq!(s.append(&meta(5), b"b"), Err(StoreError::OutOfOrder));
        assert_eq!(s.append(&meta(4), b"b"), Err(StoreError::OutOfOrder));
        let later_epoch = RecordMeta {
            epoch: 2,
            seq: 0,
            ..meta(0)
        };
        s.append(&later_epoch, b"c").unwrap();
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn look_ups_before_the_cursor_find_their_record() {
        let mut s = RamStore::<512>::new();
        for n in 0..10 {
            s.append(&meta(n), &[n as u8; 3]).unwrap();
        }
        let mut buf = [0u8; 64];
        s.read(meta(8).key(), &mut buf).unwrap();
        // Behind the cursor, and a removed record in the middle.
        s.remove(meta(3).key()).unwrap();
        assert_eq!(
            s.next_after(Some(meta(2).key())).unwrap().unwrap().meta.seq,
            4
        );
        s.read(meta(1).key(), &mut buf).unwrap();
        assert_eq!(s.next_after(Some(meta(9).key())).unwrap(), None);
        assert_eq!(keys(&mut s).len(), 9);
    }

    /// A `RamStore` that takes the trait's own `remove_run`, record by record.
    struct ByRecord(RamStore<512>);

    impl Store for ByRecord {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn capacity(&self) -> usize {
            self.0.capacity()
        }
        fn cost(&self, frame_len: usize) -> usize {
            self.0.cost(frame_len)
        }
        fn fits(&self, frame_len: usize) -> bool {
            self.0.fits(frame_len)
        }
        fn append(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<(), StoreError> {
            self.0.append(meta, payload)
        }
        fn next_after(
            &mut self,
            after: Option<RecordKey>,
        ) -> Result<Option<RecordInfo>, StoreError> {
            self.0.next_after(after)
        }
        fn read(&mut self, key: RecordKey, out: &mut [u8]) -> Result<usize, StoreError> {
            self.0.read(key, out)
        }
        fn remove(&mut self, key: RecordKey) -> Result<(), StoreError> {
            self.0.remove(key)
        }
    }

    /// The one-pass `remove_run` removes what the record-by-record one does and leaves
    /// the store as it leaves it, from any holes and cursor.
    #[test]
    fn remove_run_is_the_record_by_record_one() {
        let mut rng = fastrand::Rng::with_seed(16);
        for _ in 0..2_000 {
            let (mut fast, mut slow) = (RamStore::<512>::new(), ByRecord(RamStore::new()));
            let n = rng.u64(0..24);
            for seq in 0..n {
                let m = RecordMeta {
                    class: Class::ALL[rng.usize(0..3)],
                    ..meta(seq)
                };
                let payload = [seq as u8; 9];
                let ok = fast.append(&m, &payload).is_ok();
                assert_eq!(ok, slow.append(&m, &payload).is_ok());
            }
            let mut buf = [0u8; 64];
            for _ in 0..rng.usize(0..8) {
                let key = meta(rng.u64(0..n.max(1))).key();
                match rng.u8(0..3) {
                    0 => assert_eq!(fast.remove(key), slow.remove(key)),
                    1 => assert_eq!(fast.read(key, &mut buf), slow.read(key, &mut buf)),
                    _ => assert_eq!(fast.next_after(Some(key)), slow.next_after(Some(key))),
                }
            }
            let after = rng.bool().then(|| meta(rng.u64(0..n.max(1))).key());
            let last = meta(rng.u64(0..n.max(1) + 2)).key();
            let max = rng.u16(0..n as u16 + 2);
            let skip = Class::ALL[rng.usize(0..3)];
            let how = Settlement::Delivered(EndpointId(0));
            let (mut a, mut b) = (heapless::Vec::<_, 32>::new(), heapless::Vec::<_, 32>::new());
            let pick = |i: &RecordInfo| i.meta.class != skip;
            fast.remove_run(after, last, max, how, pick, |i| a.push(*i).unwrap());
            slow.remove_run(after, last, max, how, pick, |i| b.push(*i).unwrap());
            assert_eq!(a, b, "{after:?} {last:?} {max}");
            assert_eq!((fast.len(), fast.used()), (slow.len(), slow.0.used()));
            assert_eq!(keys(&mut fast), keys(&mut slow.0));
            // What comes after runs the same: appends (compaction included) and walks.
            for seq in n..n + 12 {
                let ok = fast.append(&meta(seq), &[1; 30]).is_ok();
                assert_eq!(ok, slow.append(&meta(seq), &[1; 30]).is_ok());
            }
            assert_eq!(keys(&mut fast), keys(&mut slow.0));
        }
    }
}
