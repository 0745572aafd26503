//! The NOR-flash outbox for firmware: [`FlashStore`].
//!
//! Records are kept as engine frames ([`crate::frame`]) in a `sequential-storage` queue, one
//! queue item per frame, oldest first; the boot counter and link spends are kept in a
//! `sequential-storage` map in a second flash range. Both survive power loss at any point:
//! an interrupted write leaves an item whose checksum fails, which is skipped, and damaged
//! page markers are repaired by `sequential-storage` when an operation meets them.

mod adapter;
mod error;
mod pages;
mod state;

use core::fmt;
use core::ops::Range;

use embedded_storage::nor_flash::MultiwriteNorFlash;
use sequential_storage::cache::page_states::CalculatedPageStates;
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::queue::{QueueConfig, QueueConfigError, QueueStorage};

use self::adapter::{Blocking, block_on};
pub use self::error::OpenError;
use self::error::store_err;
use crate::frame::{self, FrameError, RecordMeta};
use crate::store::{RecordInfo, RecordKey, Store, StoreError};

/// The largest flash word `sequential-storage` supports.
const MAX_WORD: usize = 32;

type QueueCache = Cache<CalculatedPageStates, Uncached, Uncached>;
type Queue<F> = QueueStorage<Blocking<F>, QueueCache>;

/// A scratch buffer aligned as flash drivers (and `sequential-storage`) want write buffers.
#[repr(align(4))]
struct Scratch<const N: usize>([u8; N]);

/// A power-loss-safe outbox on NOR flash: the engine's [`Store`] and the device's
/// [`Persist`](crate::store::Persist) (boot counter and link spends) in one.
///
/// It takes two page-aligned ranges of one flash: `records` (at least two pages) holds the
/// records, `state` (at least two pages) the boot counter and the link spends. `N` is the
/// size of its one buffer: the largest frame it accepts (rounded down to the flash word and
/// capped by what one page holds, see [`max_frame_len`](Self::max_frame_len)). Keep `N` from
/// one build to the next: a frame longer than a new build's buffer makes
/// [`open`](Self::open) fail with [`OpenError::FrameTooLarge`].
///
/// The flash must be a [`MultiwriteNorFlash`] (removing a record overwrites its checksum
/// with zeros). The store owns the flash; pass `&mut flash` to keep it, or take it back with
/// [`into_inner`](Self::into_inner).
///
/// # Guarantees
///
/// - [`append`](Store::append) is all or nothing, even if power is cut during it: after a
///   restart the record is either wholly there or absent.
/// - A record whose `append` returned is found again after a restart until it is removed.
///   A record whose [`remove`](Store::remove) was cut by power loss may come back: a
///   duplicate the consumer drops, never a loss.
/// - [`next_epoch`](crate::store::Persist::next_epoch) never repeats a value returned
///   before, after a power cut too, and exceeds the epoch of every record held;
///   [`save_spend`](crate::store::Persist::save_spend) is durable when it returns.
/// - Torn or damaged data is repaired or skipped, never a reason to refuse to start; a frame
///   that does not decode is dropped at [`open`](Self::open) and counted in
///   [`discarded`](Self::discarded).
/// - [`fits`](Store::fits) is exact: an `append` of a frame that fits does not fail with
///   [`StoreError::Full`].
///
/// # Costs
///
/// `len`, `fits`, `cost`, `capacity` and `next_after(None)` read a RAM summary (count, bytes,
/// oldest record, room for the next append) rebuilt at [`open`](Self::open) by one scan.
/// `read` and `next_after(Some(key))` go on from the record looked up last (a cursor kept
/// until the next `append` or `remove`), so reading the records in order, as the engine
/// does to fill a transmit, costs one item a record; a look-up behind the cursor finds its
/// page first. `remove` walks the queue from its oldest record to `key`, which is cheap
/// for the records near the front, where an outbox removes.
/// `next_epoch`, `load_spend` and `save_spend` read the small state range.
///
/// # Example
///
/// ```
/// # use sequential_storage::mock_flash::{MockFlashBase, MockFlashError, WriteCountCheck};
/// # use embedded_storage::nor_flash as nor;
/// # // A blocking view of the crate's in-memory mock flash (8 pages of 1 KiB).
/// # struct DemoFlash(MockFlashBase<8, 4, 256>);
/// # impl nor::ErrorType for DemoFlash { type Error = nor::NorFlashErrorKind; }
/// # fn run<T>(f: impl core::future::Future<Output = Result<T, MockFlashError>>) -> Result<T, nor::NorFlashErrorKind> {
/// #     embassy_futures::block_on(f).map_err(|_| nor::NorFlashErrorKind::Other)
/// # }
/// # impl nor::ReadNorFlash for DemoFlash {
/// #     const READ_SIZE: usize = 4;
/// #     fn read(&mut self, o: u32, b: &mut [u8]) -> Result<(), Self::Error> { run(embedded_storage_async::nor_flash::ReadNorFlash::read(&mut self.0, o, b)) }
/// #     fn capacity(&self) -> usize { 8 * 1024 }
/// # }
/// # impl nor::NorFlash for DemoFlash {
/// #     const WRITE_SIZE: usize = 4;
/// #     const ERASE_SIZE: usize = 1024;
/// #     fn erase(&mut self, f: u32, t: u32) -> Result<(), Self::Error> { run(embedded_storage_async::nor_flash::NorFlash::erase(&mut self.0, f, t)) }
/// #     fn write(&mut self, o: u32, b: &[u8]) -> Result<(), Self::Error> { run(embedded_storage_async::nor_flash::NorFlash::write(&mut self.0, o, b)) }
/// # }
/// # impl nor::MultiwriteNorFlash for DemoFlash {}
/// use twinhub_core::flash::FlashStore;
/// use twinhub_core::store::{Persist, Store};
/// use twinhub_core::{Class, Instant, RecordMeta};
///
/// let mut flash = DemoFlash(MockFlashBase::new(WriteCountCheck::Twice, None, true));
///
/// // At boot: records in pages 0..6, boot counter and link spends in pages 6..8.
/// let mut store = FlashStore::<_, 512>::open(&mut flash, 0..6 * 1024, 6 * 1024..8 * 1024)?;
/// // This start's epoch, durable before it is used in any message id.
/// let epoch = store.next_epoch()?;
///
/// // The engine appends, reads, and removes acknowledged records.
/// let meta = RecordMeta { epoch, seq: 0, class: Class::Normal, enqueued_at: Instant::ZERO };
/// store.append(&meta, b"21.5C")?;
/// let oldest = store.next_after(None)?.expect("one record");
/// assert_eq!(oldest.payload_len, 5);
///
/// // Power is lost; at the next boot the record is still there, and the epoch grows.
/// drop(store);
/// let mut store = FlashStore::<_, 512>::open(&mut flash, 0..6 * 1024, 6 * 1024..8 * 1024)?;
/// assert_eq!(store.len(), 1);
/// assert!(store.next_epoch()? > epoch);
/// store.remove(oldest.key())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FlashStore<F: MultiwriteNorFlash, const N: usize = 1024> {
    queue: Queue<F>,
    pages: usize,
    state: Range<u32>,
    buf: Scratch<N>,
    summary: Summary,
    /// The record looked up last, with its page: where the next look-up starts.
    cursor: Option<(usize, pages::Item)>,
    /// The queue's oldest page when the cursor was placed: where its walks end.
    page_hint: usize,
    /// Whether the summary may be wrong (an operation failed part way); it is rebuilt
    /// before the next operation.
    stale: bool,
    discarded: u32,
}

/// What the store keeps in RAM about the records in flash.
#[derive(Debug, Clone, Copy, Default)]
struct Summary {
    len: usize,
    /// The sum of `cost` over the records held.
    used: usize,
    oldest: Option<RecordInfo>,
    newest: Option<RecordKey>,
    /// The largest epoch of any record held since open.
    max_epoch: u32,
    /// The largest frame an append can take now.
    room: usize,
}

impl<F: MultiwriteNorFlash, const N: usize> fmt::Debug for FlashStore<F, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlashStore")
            .field("records", &self.queue.flash_range())
            .field("state", &self.state)
            .field("len", &self.summary.len)
            .field("used", &self.summary.used)
            .field("room", &self.summary.room)
            .field("discarded", &self.discarded)
            .finish_non_exhaustive()
    }
}

/// The frame a queue item holds, and its length, if it decodes and fills the item exactly.
fn decode_item(item: &[u8]) -> Result<RecordInfo, FrameError> {
    let (f, len) = frame::decode(item)?;
    if len != item.len() {
        return Err(FrameError::Truncated { needed: len });
    }
    Ok(RecordInfo {
        meta: f.meta,
        payload_len: f.payload.len() as u32,
        frame_len: len as u32,
    })
}

impl<F: MultiwriteNorFlash, const N: usize> FlashStore<F, N> {
    /// `sequential-storage`'s flash word: the larger of the read and write units.
    const WORD: usize = if F::READ_SIZE > F::WRITE_SIZE {
        F::READ_SIZE
    } else {
        F::WRITE_SIZE
    };
    /// Bytes of a queue item besides its data (its header, padded to the word).
    const ITEM_OVERHEAD: usize = Queue::<F>::item_overhead_size() as usize;
    /// Bytes of a page that items can use (the page minus its two state words).
    const PAGE_DATA: usize = F::ERASE_SIZE.saturating_sub(2 * Self::WORD);
    /// The largest frame this store accepts: one queue item in one page, read back whole
    /// (padded to the word) into the buffer.
    const MAX_FRAME: usize = {
        let page = Self::PAGE_DATA.saturating_sub(Self::ITEM_OVERHEAD);
        let buf = N / Self::WORD * Self::WORD;
        let m = if page < buf { page } else { buf };
        if m < u16::MAX as usize {
            m
        } else {
            u16::MAX as usize
        }
    };

    /// Opens the store on `flash`: records in `records`, boot counter and link spends in
    /// `state` (each a page-aligned range of at least two pages, not overlapping).
    ///
    /// Scans the records once to rebuild the RAM summary. Data torn by a power cut is
    /// repaired or skipped; frames that do not decode are dropped and counted in
    /// [`discarded`](Self::discarded). Fresh (erased) flash opens as an empty store.
    pub fn open(flash: F, records: Range<u32>, state: Range<u32>) -> Result<Self, OpenError> {
        if Self::WORD > MAX_WORD {
            return Err(OpenError::WordTooLarge);
        }
        // (Checked first: the range checks below subtract start from end.)
        if records.start >= records.end {
            return Err(OpenError::RecordsTooSmall);
        }
        let config = QueueConfig::<Blocking<F>>::try_new(records.clone()).map_err(|e| match e {
            QueueConfigError::RangeTooSmall => OpenError::RecordsTooSmall,
            QueueConfigError::PagesTooSmall => OpenError::TooSmallForFrames {
                max_frame: Self::MAX_FRAME,
            },
            QueueConfigError::WordSizeTooLarge => OpenError::WordTooLarge,
            _ => OpenError::RecordsNotPageAligned,
        })?;
        // One page would work, but then the queue cannot erase a page while holding
        // records: two is the least that makes an outbox.
        let pages = records.len() / F::ERASE_SIZE;
        if pages < 2 {
            return Err(OpenError::RecordsTooSmall);
        }
        state::check_range::<F>(&state)?;
        if records.start < state.end && state.start < records.end {
            return Err(OpenError::RangesOverlap);
        }
        let end = flash.capacity() as u64;
        if u64::from(records.end) > end || u64::from(state.end) > end {
            return Err(OpenError::OutOfBounds);
        }
        // The smallest frame: header, CRC and four one-byte varints.
        if Self::MAX_FRAME < frame::HEADER_AND_CRC + 4 {
            return Err(OpenError::TooSmallForFrames {
                max_frame: Self::MAX_FRAME,
            });
        }
        let cache = Cache::new(CalculatedPageStates::new(pages), Uncached, Uncached);
        let mut store = FlashStore {
            queue: QueueStorage::new(Blocking(flash), config, cache),
            pages,
            state,
            buf: Scratch([0; N]),
            summary: Summary::default(),
            cursor: None,
            page_hint: 0,
            stale: true,
            discarded: 0,
        };
        store.rebuild().map_err(|e| match e {
            sequential_storage::Error::BufferTooSmall(needed) => {
                OpenError::FrameTooLarge { needed }
            }
            _ => OpenError::Io,
        })?;
        // Meet (and repair) whatever a cut left in the state range now rather than later.
        store.stored_epoch().map_err(|_| OpenError::Io)?;
        Ok(store)
    }

    /// Gives the flash back.
    pub fn into_inner(self) -> F {
        self.queue.destroy().0.0
    }

    /// The flash, to look at (a driver's counters, say); writing to it is not offered, as
    /// it would go behind the store's back.
    pub fn flash(&mut self) -> &F {
        &self.queue.flash().0
    }

    /// Frames dropped since [`open`](Self::open) because they did not decode (damaged in
    /// flash after they were written).
    pub fn discarded(&self) -> u32 {
        self.discarded
    }

    /// The largest frame this store accepts: `N` rounded down to the flash word, capped by
    /// what one flash page holds.
    pub const fn max_frame_len(&self) -> usize {
        Self::MAX_FRAME
    }

    /// Rebuilds the RAM summary by scanning every record, dropping frames that do not
    /// decode.
    fn rebuild(&mut self) -> Result<(), sequential_storage::Error<F::Error>> {
        self.cursor = None;
        let mut s = Summary::default();
        let mut discarded = 0;
        let Self { queue, buf, .. } = self;
        let buf = &mut buf.0;
        block_on(async {
            let mut it = queue.iter().await?;
            while let Some(entry) = it.next(buf).await? {
                match decode_item(&entry) {
                    Ok(info) => {
                        let key = info.key();
                        s.len += 1;
                        s.used += Self::item_cost(info.frame_len as usize);
                        s.oldest.get_or_insert(info);
                        s.newest = Some(s.newest.map_or(key, |n| n.max(key)));
                        s.max_epoch = s.max_epoch.max(key.epoch);
                    }
                    Err(_) => {
                        entry.pop().await?;
                        discarded += 1;
                    }
                }
            }
            Ok::<_, sequential_storage::Error<F::Error>>(())
        })?;
        self.discarded += discarded;
        // Epochs of records removed since open still count.
        s.max_epoch = s.max_epoch.max(self.summary.max_epoch);
        self.summary = s;
        self.refresh_room()?;
        self.stale = false;
        Ok(())
    }

    /// Recomputes the room for the next append.
    fn refresh_room(&mut self) -> Result<(), sequential_storage::Error<F::Error>> {
        let fit = block_on(self.queue.find_max_fit())?;
        self.summary.room = fit.map_or(0, |b| (b as usize).min(Self::MAX_FRAME));
        Ok(())
    }

    /// Rebuilds the summary first if an earlier operation failed part way.
    fn settle(&mut self) -> Result<(), StoreError> {
        if self.stale {
            self.rebuild().map_err(store_err)?;
        }
        Ok(())
    }

    /// After a failed flash operation: the summary is rebuilt now if the flash allows, else
    /// before the next operation.
    fn failed(&mut self, e: sequential_storage::Error<F::Error>) -> StoreError {
        self.stale = true;
        self.cursor = None;
        let _ = self.rebuild();
        store_err(e)
    }

    /// Queue bytes a frame of `frame_len` bytes takes: item header plus data padded to the
    /// flash word.
    const fn item_cost(frame_len: usize) -> usize {
        Self::ITEM_OVERHEAD + frame_len.div_ceil(Self::WORD) * Self::WORD
    }

    /// Walks the records from the oldest until `stop` says so; returns what it returned.
    fn scan(
        &mut self,
        mut stop: impl FnMut(&RecordInfo, &[u8]) -> Option<Result<usize, StoreError>>,
    ) -> Result<Option<usize>, StoreError> {
        self.settle()?;
        let Self { queue, buf, .. } = self;
        let buf = &mut buf.0;
        let r = block_on(async {
            let mut it = queue.iter().await?;
            while let Some(entry) = it.next(buf).await? {
                let info = match decode_item(&entry) {
                    Ok(info) => info,
                    Err(e) => return Ok(Err(StoreError::Corrupt(e))),
                };
                if let Some(r) = stop(&info, &entry) {
                    return Ok(r.map(Some));
                }
            }
            Ok(Ok(None))
        });
        match r {
            Ok(r) => r,
            Err(e) => Err(self.failed(e)),
        }
    }
}

impl<F: MultiwriteNorFlash, const N: usize> Store for FlashStore<F, N> {
    fn len(&self) -> usize {
        self.summary.len
    }

    /// Item bytes of every page of the records range. Each page also loses the tail its
    /// last record did not fit in, so the records held never cost this much together;
    /// [`fits`](Store::fits) is the exact test.
    fn capacity(&self) -> usize {
        self.pages * Self::PAGE_DATA
    }

    /// Item header plus the frame padded to the flash word; a frame longer than
    /// [`max_frame_len`](Self::max_frame_len) costs more than the capacity (it never fits).
    fn cost(&self, frame_len: usize) -> usize {
        if frame_len > Self::MAX_FRAME {
            self.capacity() + (frame_len - Self::MAX_FRAME)
        } else {
            Self::item_cost(frame_len)
        }
    }

    fn fits(&self, frame_len: usize) -> bool {
        !self.stale && frame_len <= self.summary.room
    }

    fn append(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<(), StoreError> {
        self.settle()?;
        let key = meta.key();
        if self.summary.newest.is_some_and(|n| key <= n) {
            return Err(StoreError::OutOfOrder);
        }
        let flen = frame::encoded_len(meta, payload.len());
        if !self.fits(flen) {
            return Err(StoreError::Full);
        }
        let len = frame::encode(meta, payload, &mut self.buf.0).map_err(|_| StoreError::Full)?;
        // A push may erase the page the cursor is on.
        self.cursor = None;
        if let Err(e) = block_on(self.queue.push(&self.buf.0[..len], false)) {
            return Err(self.failed(e));
        }
        let s = &mut self.summary;
        s.len += 1;
        s.used += Self::item_cost(len);
        s.oldest.get_or_insert(RecordInfo {
            meta: *meta,
            payload_len: payload.len() as u32,
            frame_len: len as u32,
        });
        s.newest = Some(key);
        s.max_epoch = s.max_epoch.max(key.epoch);
        if let Err(e) = self.refresh_room() {
            return Err(self.failed(e));
        }
        Ok(())
    }

    fn next_after(&mut self, after: Option<RecordKey>) -> Result<Option<RecordInfo>, StoreError> {
        self.settle()?;
        let Some(after) = after else {
            return Ok(self.summary.oldest);
        };
        if self.summary.newest.is_none_or(|n| n <= after) {
            return Ok(None);
        }
        if self.summary.oldest.is_some_and(|o| o.key() > after) {
            return Ok(self.summary.oldest);
        }
        if let Some(info) = self.cursor_next(after)? {
            return Ok(Some(info));
        }
        let mut found = None;
        self.scan(|info, _| {
            (info.key() > after).then(|| {
                found = Some(*info);
                Ok(0)
            })
        })?;
        Ok(found)
    }

    fn read(&mut self, key: RecordKey, out: &mut [u8]) -> Result<usize, StoreError> {
        self.settle()?;
        if !self.may_hold(key) {
            return Err(StoreError::NoSuchRecord);
        }
        if let Some(it) = self.locate(key)?
            && let Some(n) = self.read_item(&it, out)?
        {
            return Ok(n);
        }
        let r = self.scan(|info, item| {
            let k = info.key();
            if k < key {
                return None;
            }
            if k > key {
                return Some(Err(StoreError::NoSuchRecord));
            }
            Some(match out.get_mut(..item.len()) {
                Some(dst) => {
                    dst.copy_from_slice(item);
                    Ok(item.len())
                }
                None => Err(StoreError::Corrupt(FrameError::BufferTooSmall)),
            })
        })?;
        r.ok_or(StoreError::NoSuchRecord)
    }

    /// The newest record on the oldest page: a page is erased, and its room given back,
    /// only once every record on it is gone. (The oldest record alone when the page cannot
    /// be told, so that eviction still goes oldest first, one record at a time.)
    fn reclaim_through(&mut self, frame_len: usize) -> Result<Option<RecordKey>, StoreError> {
        self.settle()?;
        let (Some(oldest), Some(newest)) = (self.summary.oldest, self.summary.newest) else {
            return Ok(None);
        };
        if self.fits(frame_len) {
            return Ok(None);
        }
        let oldest = oldest.key();
        Ok(Some(
            self.newest_on_page_of(oldest, newest)?.unwrap_or(oldest),
        ))
    }

    fn remove(&mut self, key: RecordKey) -> Result<(), StoreError> {
        self.settle()?;
        // Popping may let the queue erase the cursor's page on its next push.
        self.cursor = None;
        if !self.may_hold(key) {
            return Err(StoreError::NoSuchRecord);
        }
        let Self { queue, buf, .. } = self;
        let buf = &mut buf.0;
        let r = block_on(async {
            let mut it = queue.iter().await?;
            let mut before: Option<RecordKey> = None;
            while let Some(entry) = it.next(buf).await? {
                let Ok(info) = decode_item(&entry) else {
                    // Not ours to judge here; a rebuild drops it.
                    continue;
                };
                let k = info.key();
                if k > key {
                    break;
                }
                if k < key {
                    before = Some(k);
                    continue;
                }
                entry.pop().await?;
                // The record after it, if any: the new oldest when the oldest went.
                let after = match it.next(buf).await? {
                    Some(next) => decode_item(&next).ok(),
                    None => None,
                };
                return Ok(Some((info, before, after)));
            }
            Ok(None)
        });
        let (info, before, after) = match r {
            Ok(Some(found)) => found,
            Ok(None) => return Err(StoreError::NoSuchRecord),
            Err(e) => return Err(self.failed(e)),
        };
        let s = &mut self.summary;
        s.len -= 1;
        s.used -= Self::item_cost(info.frame_len as usize);
        if before.is_none() {
            s.oldest = after;
        }
        if s.newest == Some(key) {
            s.newest = before;
        }
        if s.len == 0 {
            s.oldest = None;
            s.newest = None;
        }
        if let Err(e) = self.refresh_room() {
            return Err(self.failed(e));
        }
        Ok(())
    }
}

impl<F: MultiwriteNorFlash, const N: usize> FlashStore<F, N> {
    /// Whether `key` lies within the keys held (so a scan may find it).
    fn may_hold(&self, key: RecordKey) -> bool {
        match (self.summary.oldest, self.summary.newest) {
            (Some(o), Some(n)) => o.key() <= key && key <= n,
            _ => false,
        }
    }
}
