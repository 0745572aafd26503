//! A simulated device's flash outbox: [`SimFlash`], the shipped `FlashStore`'s accounting
//! (twinhub-core's `flash` feature) without its bytes.
//!
//! The firmware keeps its records in a `sequential-storage` queue on NOR flash: a ring of
//! erase pages, each item an 8-byte header plus its frame padded to the flash word, a page
//! reused only once every record in it is gone. A simulated device has the same outbox
//! with the same capacity, so it fills up when a real one would, but holds no payload
//! bytes: the world's payloads are synthetic ([`synthetic_payload`]), so the store keeps
//! 16 bytes per record (key, class, time, length, page) and writes the frame again when the
//! engine reads it.

use std::collections::VecDeque;
use std::fmt;

use twinhub_core::frame::{self, RecordMeta};
use twinhub_core::store::{Persist, RecordInfo, RecordKey, Store, StoreError};
use twinhub_core::{Class, Instant, LinkSpend, MAX_LINKS};

/// Bytes of one flash page (erase block): 4 KiB, as on most microcontrollers' internal
/// flash (nRF52, STM32F4's small sectors, RP2040's external flash).
pub const PAGE_BYTES: u32 = 4096;
/// The flash word (read and write unit) in bytes.
pub const WORD: u32 = 4;
/// The outbox of a device unless the scenario says otherwise: 16 pages.
pub const DEFAULT_STORE_BYTES: u64 = 64 * 1024;
/// The largest outbox a scenario may give a device (pages are counted in 16 bits).
pub const MAX_STORE_BYTES: u64 = 16 << 20;
/// `sequential-storage`'s item header (data CRC, length, length CRC), padded to the word.
const ITEM_HEADER: u32 = 8u32.next_multiple_of(WORD);
/// Bytes of a page that items can use: the page minus its two state words.
const PAGE_DATA: u32 = PAGE_BYTES - 2 * WORD;
/// The shipped store's read buffer (`FlashStore`'s default `N`).
const FLASH_BUFFER: u32 = 1024;
/// The largest frame the outbox takes: one item in one page, read back whole into the
/// buffer (as `FlashStore::max_frame_len`).
pub const MAX_FRAME: usize = {
    let page = PAGE_DATA - ITEM_HEADER;
    let buf = FLASH_BUFFER / WORD * WORD;
    (if page < buf { page } else { buf }) as usize
};

/// Fills `out` with the synthetic payload of record `key` of the device whose payloads
/// derive from `seed`. The world enqueues exactly these bytes, so a store can write them
/// again instead of keeping them.
pub fn synthetic_payload(seed: u64, key: RecordKey, out: &mut [u8]) {
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&payload_word(seed, key, i)[..chunk.len()]);
    }
}

/// Bytes `8 * i..8 * i + 8` of a synthetic payload: splitmix64, cheap, and every byte
/// differs from record to record.
fn payload_word(seed: u64, key: RecordKey, i: usize) -> [u8; 8] {
    let mut z = (seed ^ (u64::from(key.epoch) << 40) ^ key.seq.wrapping_mul(0x9E37_79B9))
        .wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).to_le_bytes()
}

/// Whether `payload` is record `key`'s synthetic payload.
fn is_synthetic(seed: u64, key: RecordKey, payload: &[u8]) -> bool {
    payload
        .chunks(8)
        .enumerate()
        .all(|(i, chunk)| chunk == &payload_word(seed, key, i)[..chunk.len()])
}

/// Queue bytes a frame of `frame_len` bytes takes: item header plus the frame padded to
/// the word.
const fn item_cost(frame_len: u32) -> u32 {
    ITEM_HEADER + frame_len.next_multiple_of(WORD)
}

/// The largest frame an item can carry in `free` bytes of a page, if any.
const fn item_room(free: u32) -> Option<u32> {
    (free / WORD * WORD).checked_sub(ITEM_HEADER)
}

/// One record as the simulated outbox keeps it: 16 bytes.
#[derive(Debug, Clone, Copy)]
struct Rec {
    epoch: u32,
    /// Sequence number within the epoch (the world's scenarios stay far below 2^32).
    seq: u32,
    /// `enqueued_at` in ms (scenarios last at most 40 days, under 2^32 ms).
    at: u32,
    /// The page the record's item sits in.
    page: u16,
    /// Payload length in the low 14 bits, class in the top two.
    len_class: u16,
}

const LEN_BITS: u32 = 14;
const LEN_MASK: u16 = (1 << LEN_BITS) - 1;

impl Rec {
    fn key(&self) -> RecordKey {
        RecordKey {
            epoch: self.epoch,
            seq: u64::from(self.seq),
        }
    }

    fn payload_len(&self) -> usize {
        usize::from(self.len_class & LEN_MASK)
    }

    fn meta(&self) -> RecordMeta {
        RecordMeta {
            epoch: self.epoch,
            seq: u64::from(self.seq),
            class: Class::ALL[usize::from(self.len_class >> LEN_BITS)],
            enqueued_at: Instant::from_millis(u64::from(self.at)),
        }
    }

    fn info(&self) -> RecordInfo {
        let meta = self.meta();
        let len = self.payload_len();
        RecordInfo {
            meta,
            payload_len: len as u32,
            frame_len: frame::encoded_len(&meta, len) as u32,
        }
    }
}

/// Records kept without a backlog: the steady state of a device that delivers as it goes.
const KEEP_RECORDS: usize = 4;

/// A simulated flash outbox: the engine's [`Store`] and the device's [`Persist`] with the
/// shipped `FlashStore`'s semantics, in 16 bytes of RAM per record held.
///
/// - **Capacity and cost** are `FlashStore`'s: [`capacity`](Store::capacity) is the item
///   bytes of every page, [`cost`](Store::cost) an 8-byte item header plus the frame padded
///   to the 4-byte word, and [`fits`](Store::fits) is exact for the modelled queue: the
///   youngest page takes an item while it has room; otherwise the next page in the ring
///   must hold no record (a page is reused only once every record in it was removed), so a
///   removed record frees its bytes only when its whole page is free, as on flash.
/// - **Appends** are all or nothing, in key order ([`StoreError::OutOfOrder`]), and refused
///   with [`StoreError::Full`] when the frame does not fit; frames longer than
///   [`MAX_FRAME`] never fit.
/// - **Any record can be removed**; [`read`](Store::read) writes the record's frame with
///   [`frame::encode`], its payload made again by [`synthetic_payload`].
/// - **What survives a reboot**: the store is kept across engine restarts like flash.
///   [`next_epoch`](Persist::next_epoch) takes the boot counter past every epoch taken
///   before and every record held; link spends saved with
///   [`save_spend`](Persist::save_spend) come back from [`load_spend`](Persist::load_spend).
///
/// It holds only synthetic payloads: [`append`](Store::append) refuses, with
/// [`StoreError::Io`], a payload other than the record's [`synthetic_payload`], a sequence
/// number or time past 32 bits, or a payload past 14 bits of length (none of which a
/// validated scenario produces).
///
/// Memory: a few dozen bytes per device plus 16 bytes per record held, on the heap only
/// while records are held; after a backlog drains the buffer shrinks back to a few
/// records.
pub struct SimFlash {
    recs: VecDeque<Rec>,
    /// Seed of this device's payloads.
    seed: u64,
    /// Saved link spends, made on the first save (few devices ever spend).
    spends: Option<Box<[Option<LinkSpend>; MAX_LINKS]>>,
    /// The boot counter as saved last.
    boot: u32,
    /// The largest epoch of any record appended.
    max_epoch: u32,
    pages: u16,
    /// The page items are being written to.
    young: u16,
    /// Bytes written in the youngest page.
    fill: u16,
}

impl fmt::Debug for SimFlash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFlash")
            .field("pages", &self.pages)
            .field("records", &self.recs.len())
            .field("young", &self.young)
            .field("fill", &self.fill)
            .field("boot", &self.boot)
            .finish_non_exhaustive()
    }
}

/// Why a simulated outbox cannot be built with the size asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SizeError {
    /// Not a whole number of 4 KiB pages.
    #[error("{0} bytes is not a whole number of {PAGE_BYTES}-byte flash pages")]
    NotPages(u64),
    /// Fewer than two pages (a queue cannot erase a page while holding records in it) or
    /// more than [`MAX_STORE_BYTES`].
    #[error("{0} bytes is outside {min}..={MAX_STORE_BYTES} (two pages at least)", min = 2 * PAGE_BYTES)]
    OutOfRange(u64),
}

impl SimFlash {
    /// Checks an outbox size: whole pages, at least two, at most [`MAX_STORE_BYTES`].
    pub fn check_size(bytes: u64) -> Result<u16, SizeError> {
        if !(2 * u64::from(PAGE_BYTES)..=MAX_STORE_BYTES).contains(&bytes) {
            return Err(SizeError::OutOfRange(bytes));
        }
        if !bytes.is_multiple_of(u64::from(PAGE_BYTES)) {
            return Err(SizeError::NotPages(bytes));
        }
        Ok((bytes / u64::from(PAGE_BYTES)) as u16)
    }

    /// Erased flash of `bytes` bytes for a device whose payloads derive from `seed`.
    pub fn new(bytes: u64, seed: u64) -> Result<Self, SizeError> {
        Ok(SimFlash {
            recs: VecDeque::new(),
            seed,
            spends: None,
            boot: 0,
            max_epoch: 0,
            pages: Self::check_size(bytes)?,
            young: 0,
            fill: 0,
        })
    }

    /// The seed this device's payloads derive from (see [`synthetic_payload`]).
    pub fn payload_seed(&self) -> u64 {
        self.seed
    }

    /// Bytes of the queue in use: items written to pages not yet reusable, the tails of
    /// closed pages included (what flash cannot take back yet).
    pub fn used(&self) -> usize {
        let Some(front) = self.recs.front() else {
            return 0;
        };
        let closed = (self.young + self.pages - front.page) % self.pages;
        usize::from(closed) * PAGE_DATA as usize + usize::from(self.fill)
    }

    /// Whether the page after the youngest can be erased and written: it holds no record.
    /// Records sit in ring order from the oldest's page to the youngest, so only the
    /// oldest record can be in it.
    fn next_page_free(&self) -> bool {
        let next = (self.young + 1) % self.pages;
        self.recs.front().is_none_or(|r| r.page != next)
    }

    /// The largest frame an append can take now (`FlashStore`'s room).
    fn room(&self) -> usize {
        let r = if self.next_page_free() {
            PAGE_DATA
        } else {
            item_room(PAGE_DATA - u32::from(self.fill)).unwrap_or(0)
        };
        (r as usize).min(MAX_FRAME)
    }

    fn find(&self, key: RecordKey) -> Result<usize, StoreError> {
        self.recs
            .binary_search_by(|r| r.key().cmp(&key))
            .map_err(|_| StoreError::NoSuchRecord)
    }

    fn spends(&mut self) -> &mut [Option<LinkSpend>; MAX_LINKS] {
        self.spends
            .get_or_insert_with(|| Box::new([None; MAX_LINKS]))
    }
}

impl Store for SimFlash {
    fn len(&self) -> usize {
        self.recs.len()
    }

    fn capacity(&self) -> usize {
        usize::from(self.pages) * PAGE_DATA as usize
    }

    fn cost(&self, frame_len: usize) -> usize {
        if frame_len > MAX_FRAME {
            self.capacity() + (frame_len - MAX_FRAME)
        } else {
            item_cost(frame_len as u32) as usize
        }
    }

    fn fits(&self, frame_len: usize) -> bool {
        frame_len <= self.room()
    }

    fn append(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<(), StoreError> {
        let key = meta.key();
        if self.recs.back().is_some_and(|r| key <= r.key()) {
            return Err(StoreError::OutOfOrder);
        }
        let flen = frame::encoded_len(meta, payload.len());
        if !self.fits(flen) {
            return Err(StoreError::Full);
        }
        let (Ok(seq), Ok(at), Ok(len)) = (
            u32::try_from(meta.seq),
            u32::try_from(meta.enqueued_at.as_millis()),
            u16::try_from(payload.len()),
        ) else {
            return Err(StoreError::Io);
        };
        if len > LEN_MASK || !is_synthetic(self.seed, key, payload) {
            return Err(StoreError::Io);
        }
        let cost = item_cost(flen as u32);
        if item_room(PAGE_DATA - u32::from(self.fill)).is_none_or(|r| r < flen as u32) {
            // `fits` said the next page is free: the queue closes this one and erases it.
            self.young = (self.young + 1) % self.pages;
            self.fill = 0;
        }
        self.fill += cost as u16;
        self.recs.push_back(Rec {
            epoch: meta.epoch,
            seq,
            at,
            page: self.young,
            len_class: len | ((meta.class as u16) << LEN_BITS),
        });
        self.max_epoch = self.max_epoch.max(meta.epoch);
        Ok(())
    }

    fn next_after(&mut self, after: Option<RecordKey>) -> Result<Option<RecordInfo>, StoreError> {
        let i = match after {
            None => 0,
            Some(a) => self.recs.partition_point(|r| r.key() <= a),
        };
        Ok(self.recs.get(i).map(Rec::info))
    }

    fn read(&mut self, key: RecordKey, out: &mut [u8]) -> Result<usize, StoreError> {
        let rec = self.recs[self.find(key)?];
        let len = rec.payload_len();
        // The world's payloads are small: most frames are built from a small buffer.
        let mut small = [0u8; 128];
        let mut large;
        let payload = if len <= small.len() {
            &mut small[..len]
        } else {
            large = vec![0u8; len];
            &mut large[..]
        };
        synthetic_payload(self.seed, key, payload);
        frame::encode(&rec.meta(), payload, out).map_err(StoreError::Corrupt)
    }

    /// As `FlashStore`: when a frame does not fit, the newest record on the oldest
    /// record's page, since only erasing that whole page gives room back.
    fn reclaim_through(&mut self, frame_len: usize) -> Result<Option<RecordKey>, StoreError> {
        let Some(oldest) = self.recs.front() else {
            return Ok(None);
        };
        if self.fits(frame_len) {
            return Ok(None);
        }
        // Records sit in ring order, so the oldest page's are the first ones.
        let page = oldest.page;
        let n = self.recs.partition_point(|r| r.page == page);
        Ok(Some(self.recs[n - 1].key()))
    }

    fn remove(&mut self, key: RecordKey) -> Result<(), StoreError> {
        let i = self.find(key)?;
        self.recs.remove(i);
        // Bounded memory: a drained backlog gives its buffer back, down to a few records.
        let cap = self.recs.capacity();
        if cap > KEEP_RECORDS && self.recs.len() * 4 <= cap {
            self.recs.shrink_to((self.recs.len() * 2).max(KEEP_RECORDS));
        }
        Ok(())
    }
}

impl Persist for SimFlash {
    /// One more than the larger of the counter saved last and the largest epoch of any
    /// record appended, saved before it returns; [`StoreError::Full`] once the counter is
    /// at `u32::MAX` (as the flash store).
    fn next_epoch(&mut self) -> Result<u32, StoreError> {
        let next = self
            .boot
            .max(self.max_epoch)
            .checked_add(1)
            .ok_or(StoreError::Full)?;
        self.boot = next;
        Ok(next)
    }

    fn load_spend(&mut self, link: u8) -> Result<Option<LinkSpend>, StoreError> {
        Ok(self
            .spends
            .as_ref()
            .and_then(|s| s.get(usize::from(link)).copied().flatten()))
    }

    fn save_spend(&mut self, link: u8, spend: LinkSpend) -> Result<(), StoreError> {
        let slot = self
            .spends()
            .get_mut(usize::from(link))
            .ok_or(StoreError::Io)?;
        *slot = Some(spend);
        Ok(())
    }
}
