//! The outbox as a table of C callbacks, adapted to the engine's `Store` and `Persist`.
//!
//! The store keeps each record as an opaque frame (the engine's encoding, with its own
//! CRC) under its key. What comes back from C is checked before the engine trusts it: a
//! walk that does not move forward, a frame that fails its CRC or is another record's, or a
//! class outside the enum is an error of the store, never a loop or a wrong delivery.

use core::ffi::c_void;

use twinhub_core::frame::{self, FrameError, HEADER_AND_CRC, MAX_META, RecordMeta};
use twinhub_core::{
    Duration, Instant, LinkSpend, Persist, RecordInfo, RecordKey, Store, StoreError,
};

use crate::types::*;

/// Most bytes a frame adds to its payload: a store's staging buffer of
/// `payload + TWINHUB_FRAME_OVERHEAD_MAX` bytes holds any record of that payload.
pub const TWINHUB_FRAME_OVERHEAD_MAX: usize = 35;

const _: () = assert!(TWINHUB_FRAME_OVERHEAD_MAX == HEADER_AND_CRC + MAX_META);

/// What a store knows about one record without reading its frame.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct twinhub_record_info {
    /// The record's key.
    pub key: twinhub_record_key,
    /// When the record was accepted (the producer's clock, ms).
    pub enqueued_at_ms: u64,
    /// The record's class (a `twinhub_class`).
    pub record_class: RawClass,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// Frame length in bytes: what `append` was given and `read` must give back.
    pub frame_len: u32,
}

/// A budgeted link's use of its current window, kept across restarts so a reboot never
/// hands a costly link a fresh budget.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct twinhub_link_spend {
    /// Bytes charged in the current window.
    pub spent: u64,
    /// How much of the window had passed, in ms.
    pub window_elapsed_ms: u64,
}

impl From<LinkSpend> for twinhub_link_spend {
    fn from(s: LinkSpend) -> Self {
        twinhub_link_spend {
            spent: s.spent,
            window_elapsed_ms: s.window_elapsed.as_millis(),
        }
    }
}

/// Appends a record: store `frame_len` bytes of `frame` under `info->key`, all or nothing
/// (a durable store keeps that promise across power loss). Keys arrive in increasing order;
/// return `TWINHUB_ERR_OUT_OF_ORDER` for one not above every key held, `TWINHUB_ERR_FULL`
/// when there is no room. `info` and `frame` are valid only during the call.
pub type twinhub_store_append_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        info: *const twinhub_record_info,
        frame: *const u8,
    ) -> RawResult,
>;

/// Finds the oldest record whose key is above `*after` (`after` NULL: the oldest of all).
/// Fill `*out` with what `append` was given for it and set `*found`; set `*found` to false
/// when there is none. Return `TWINHUB_OK` either way.
pub type twinhub_store_next_after_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        after: *const twinhub_record_key,
        out: *mut twinhub_record_info,
        found: *mut bool,
    ) -> RawResult,
>;

/// Copies the frame of record `key` into `out` (room for `out_len` bytes) and sets
/// `*frame_len`. When `out_len` is too small return `TWINHUB_ERR_BUFFER_TOO_SMALL` with
/// `*frame_len` set to the size needed; `TWINHUB_ERR_NO_SUCH` for an unknown key.
pub type twinhub_store_read_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        key: twinhub_record_key,
        out: *mut u8,
        out_len: usize,
        frame_len: *mut usize,
    ) -> RawResult,
>;

/// Removes record `key` (any record, not only the oldest); `TWINHUB_ERR_NO_SUCH` for an
/// unknown key.
pub type twinhub_store_remove_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, key: twinhub_record_key) -> RawResult>;

/// A count from the store: records held (`len`) or total capacity in bytes (`capacity`,
/// as counted by `cost`).
pub type twinhub_store_size_fn = Option<unsafe extern "C" fn(userdata: *mut c_void) -> usize>;

/// Bytes a frame of `frame_len` bytes takes in the store, bookkeeping included.
pub type twinhub_store_cost_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, frame_len: usize) -> usize>;

/// Whether a frame of `frame_len` bytes can be appended now.
pub type twinhub_store_fits_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, frame_len: usize) -> bool>;

/// Optional. Takes this start's epoch: larger than every epoch taken before on this device
/// and durable before it returns (a flash boot counter). A reused epoch repeats message
/// ids, which deduping consumers discard: silent loss.
pub type twinhub_store_next_epoch_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, epoch: *mut u32) -> RawResult>;

/// Optional. The spend of link `link` saved last: fill `*out` and set `*found`, or set
/// `*found` to false when nothing was saved.
pub type twinhub_store_load_spend_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        link: u8,
        out: *mut twinhub_link_spend,
        found: *mut bool,
    ) -> RawResult,
>;

/// Optional. Saves the spend of link `link`, durably before it returns. Called after each
/// transmit on a budgeted link is handed out, before its bytes go on the line.
pub type twinhub_store_save_spend_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        link: u8,
        spend: *const twinhub_link_spend,
    ) -> RawResult,
>;

/// Where the producer keeps pending records: a table of callbacks over the caller's
/// medium (RAM, NOR flash, a file), with `userdata` handed to each.
///
/// The producer copies this table at init; `userdata` and `frame_buf` must stay valid,
/// and used by nothing else, until the producer is deinitialised. Callbacks run inside
/// producer calls, on the caller's thread; they must not call the producer (that returns
/// `TWINHUB_ERR_BUSY`). Callbacks return `TWINHUB_OK` or an error status; any status not
/// listed for a callback is taken as `TWINHUB_ERR_STORE_IO`.
///
/// Every callback is required except the three persist ones (NULL: the epoch comes from
/// `twinhub_producer_init`'s argument and link spend is not kept across restarts).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct twinhub_store {
    /// Handed to every callback as is.
    pub userdata: *mut c_void,
    /// Staging buffer the producer encodes each record's frame into before `append`:
    /// records up to `frame_buf_len - TWINHUB_FRAME_OVERHEAD_MAX` bytes of payload fit.
    pub frame_buf: *mut u8,
    /// Bytes of `frame_buf`.
    pub frame_buf_len: usize,
    /// See `twinhub_store_append_fn`.
    pub append: twinhub_store_append_fn,
    /// See `twinhub_store_next_after_fn`.
    pub next_after: twinhub_store_next_after_fn,
    /// See `twinhub_store_read_fn`.
    pub read: twinhub_store_read_fn,
    /// See `twinhub_store_remove_fn`.
    pub remove: twinhub_store_remove_fn,
    /// Records held.
    pub len: twinhub_store_size_fn,
    /// Total capacity in bytes, as counted by `cost`.
    pub capacity: twinhub_store_size_fn,
    /// See `twinhub_store_cost_fn`.
    pub cost: twinhub_store_cost_fn,
    /// See `twinhub_store_fits_fn`.
    pub fits: twinhub_store_fits_fn,
    /// Optional; see `twinhub_store_next_epoch_fn`.
    pub next_epoch: twinhub_store_next_epoch_fn,
    /// Optional; see `twinhub_store_load_spend_fn`.
    pub load_spend: twinhub_store_load_spend_fn,
    /// Optional; see `twinhub_store_save_spend_fn`.
    pub save_spend: twinhub_store_save_spend_fn,
}

/// The C store as the engine sees it: required callbacks checked present once, at init.
pub(crate) struct CStore {
    userdata: *mut c_void,
    frame_buf: *mut u8,
    pub(crate) frame_buf_len: usize,
    append: unsafe extern "C" fn(*mut c_void, *const twinhub_record_info, *const u8) -> RawResult,
    next_after: unsafe extern "C" fn(
        *mut c_void,
        *const twinhub_record_key,
        *mut twinhub_record_info,
        *mut bool,
    ) -> RawResult,
    read: unsafe extern "C" fn(
        *mut c_void,
        twinhub_record_key,
        *mut u8,
        usize,
        *mut usize,
    ) -> RawResult,
    remove: unsafe extern "C" fn(*mut c_void, twinhub_record_key) -> RawResult,
    len: unsafe extern "C" fn(*mut c_void) -> usize,
    capacity: unsafe extern "C" fn(*mut c_void) -> usize,
    cost: unsafe extern "C" fn(*mut c_void, usize) -> usize,
    fits: unsafe extern "C" fn(*mut c_void, usize) -> bool,
    next_epoch: twinhub_store_next_epoch_fn,
    load_spend: twinhub_store_load_spend_fn,
    save_spend: twinhub_store_save_spend_fn,
}

impl CStore {
    /// Checks the table: every required callback and the staging buffer present.
    pub(crate) fn new(t: &twinhub_store) -> Result<Self, twinhub_result> {
        let need = TWINHUB_ERR_NULL_POINTER;
        if t.frame_buf.is_null() {
            return Err(need);
        }
        if t.frame_buf_len > isize::MAX as usize {
            return Err(TWINHUB_ERR_INVALID_ARGUMENT);
        }
        Ok(CStore {
            userdata: t.userdata,
            frame_buf: t.frame_buf,
            frame_buf_len: t.frame_buf_len,
            append: t.append.ok_or(need)?,
            next_after: t.next_after.ok_or(need)?,
            read: t.read.ok_or(need)?,
            remove: t.remove.ok_or(need)?,
            len: t.len.ok_or(need)?,
            capacity: t.capacity.ok_or(need)?,
            cost: t.cost.ok_or(need)?,
            fits: t.fits.ok_or(need)?,
            next_epoch: t.next_epoch,
            load_spend: t.load_spend,
            save_spend: t.save_spend,
        })
    }

    pub(crate) fn has_next_epoch(&self) -> bool {
        self.next_epoch.is_some()
    }

    pub(crate) fn has_load_spend(&self) -> bool {
        self.load_spend.is_some()
    }

    pub(crate) fn has_save_spend(&self) -> bool {
        self.save_spend.is_some()
    }
}

/// A store callback's status as the engine's error.
fn store_result(r: RawResult) -> Result<(), StoreError> {
    match twinhub_result::from_raw(r) {
        Some(TWINHUB_OK) => Ok(()),
        Some(TWINHUB_ERR_FULL) => Err(StoreError::Full),
        Some(TWINHUB_ERR_NO_SUCH) => Err(StoreError::NoSuchRecord),
        Some(TWINHUB_ERR_CORRUPT) => Err(StoreError::Corrupt(FrameError::Crc)),
        Some(TWINHUB_ERR_OUT_OF_ORDER) => Err(StoreError::OutOfOrder),
        Some(TWINHUB_ERR_BUFFER_TOO_SMALL) => Err(StoreError::Corrupt(FrameError::BufferTooSmall)),
        _ => Err(StoreError::Io),
    }
}

/// The engine's store error as the status C sees.
pub(crate) fn store_status(e: StoreError) -> twinhub_result {
    match e {
        StoreError::Full => TWINHUB_ERR_FULL,
        StoreError::NoSuchRecord => TWINHUB_ERR_NO_SUCH,
        StoreError::Corrupt(FrameError::BufferTooSmall) => TWINHUB_ERR_BUFFER_TOO_SMALL,
        StoreError::Corrupt(_) => TWINHUB_ERR_CORRUPT,
        StoreError::OutOfOrder => TWINHUB_ERR_OUT_OF_ORDER,
        _ => TWINHUB_ERR_STORE_IO,
    }
}

/// What C handed back about a record, checked.
fn checked_info(info: &twinhub_record_info) -> Result<RecordInfo, StoreError> {
    let bad = StoreError::Corrupt(FrameError::Meta);
    let class = info.record_class.get().map_err(|_| bad)?;
    let meta = RecordMeta {
        epoch: info.key.epoch,
        seq: info.key.seq,
        class,
        enqueued_at: Instant::from_millis(info.enqueued_at_ms),
    };
    // The frame length follows from the rest: a store that mixed records up shows here.
    if frame::encoded_len(&meta, info.payload_len as usize) != info.frame_len as usize {
        return Err(bad);
    }
    Ok(RecordInfo {
        meta,
        payload_len: info.payload_len,
        frame_len: info.frame_len,
    })
}

impl Store for CStore {
    fn len(&self) -> usize {
        // SAFETY: a callback of the table the caller gave `twinhub_producer_init`, with the
        // `userdata` it goes with; the caller keeps both valid while the producer lives.
        unsafe { (self.len)(self.userdata) }
    }

    fn capacity(&self) -> usize {
        // SAFETY: as in `len`.
        unsafe { (self.capacity)(self.userdata) }
    }

    fn cost(&self, frame_len: usize) -> usize {
        // SAFETY: as in `len`.
        unsafe { (self.cost)(self.userdata, frame_len) }
    }

    fn fits(&self, frame_len: usize) -> bool {
        // A frame larger than the staging buffer can never be appended, whatever the
        // medium says.
        // SAFETY: as in `len`.
        frame_len <= self.frame_buf_len && unsafe { (self.fits)(self.userdata, frame_len) }
    }

    fn append(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<(), StoreError> {
        // SAFETY: the staging buffer the caller gave at init, valid and ours alone while the
        // producer lives (the init contract); it was checked not NULL and `frame_buf_len`
        // in range.
        let buf = unsafe { core::slice::from_raw_parts_mut(self.frame_buf, self.frame_buf_len) };
        // Refused before the engine gets here (the enqueue check), so only a bug lands here.
        let n = frame::encode(meta, payload, buf).map_err(|_| StoreError::Io)?;
        let info = twinhub_record_info {
            key: meta.key().into(),
            enqueued_at_ms: meta.enqueued_at.as_millis(),
            record_class: twinhub_class::from(meta.class).into(),
            payload_len: u32::try_from(payload.len()).map_err(|_| StoreError::Io)?,
            frame_len: u32::try_from(n).map_err(|_| StoreError::Io)?,
        };
        // SAFETY: as in `len`; `info` and the `n` bytes of the frame are valid for the call.
        store_result(unsafe { (self.append)(self.userdata, &info, buf.as_ptr()) })
    }

    fn next_after(&mut self, after: Option<RecordKey>) -> Result<Option<RecordInfo>, StoreError> {
        let key = after.map(twinhub_record_key::from);
        let key_ptr = key.as_ref().map_or(core::ptr::null(), |k| k as *const _);
        let mut out = twinhub_record_info::default();
        // Read back as a byte: a C `bool` is 0 or 1, but a store that writes anything else
        // through the pointer must not make this undefined.
        let mut found: u8 = 0;
        // SAFETY: as in `len`; `key_ptr` is NULL or points to `key`, `out` and `found` are
        // writable locals (`found` is a byte, as `bool` is).
        let r = unsafe {
            (self.next_after)(
                self.userdata,
                key_ptr,
                &mut out,
                (&raw mut found).cast::<bool>(),
            )
        };
        store_result(r)?;
        if found == 0 {
            return Ok(None);
        }
        let info = checked_info(&out)?;
        // A walk that does not move forward would never end.
        if after.is_some_and(|a| info.key() <= a) {
            return Err(StoreError::Corrupt(FrameError::Meta));
        }
        Ok(Some(info))
    }

    fn read(&mut self, key: RecordKey, out: &mut [u8]) -> Result<usize, StoreError> {
        let mut n = 0usize;
        // SAFETY: as in `len`; `out` is writable for `out.len()` bytes and `n` is a local.
        let r = unsafe {
            (self.read)(
                self.userdata,
                key.into(),
                out.as_mut_ptr(),
                out.len(),
                &mut n,
            )
        };
        store_result(r)?;
        let bytes = out
            .get(..n)
            .ok_or(StoreError::Corrupt(FrameError::Truncated { needed: n }))?;
        // The frame's CRC catches a medium that rotted; its key, a store that mixed
        // records up.
        let (f, len) = frame::decode(bytes).map_err(StoreError::Corrupt)?;
        if f.meta.key() != key || len != n {
            return Err(StoreError::Corrupt(FrameError::Meta));
        }
        Ok(n)
    }

    fn remove(&mut self, key: RecordKey) -> Result<(), StoreError> {
        // SAFETY: as in `len`.
        store_result(unsafe { (self.remove)(self.userdata, key.into()) })
    }
}

impl Persist for CStore {
    fn next_epoch(&mut self) -> Result<u32, StoreError> {
        let f = self.next_epoch.ok_or(StoreError::Io)?;
        let mut epoch = 0u32;
        // SAFETY: as in `Store::len`; `epoch` is a writable local.
        store_result(unsafe { f(self.userdata, &mut epoch) })?;
        Ok(epoch)
    }

    fn load_spend(&mut self, link: u8) -> Result<Option<LinkSpend>, StoreError> {
        let Some(f) = self.load_spend else {
            return Ok(None);
        };
        let mut out = twinhub_link_spend::default();
        let mut found: u8 = 0;
        // SAFETY: as in `Store::len`; `out` and `found` are writable locals.
        store_result(unsafe {
            f(
                self.userdata,
                link,
                &mut out,
                (&raw mut found).cast::<bool>(),
            )
        })?;
        Ok((found != 0).then(|| LinkSpend {
            spent: out.spent,
            window_elapsed: Duration::from_millis(out.window_elapsed_ms),
        }))
    }

    fn save_spend(&mut self, link: u8, spend: LinkSpend) -> Result<(), StoreError> {
        let Some(f) = self.save_spend else {
            return Ok(());
        };
        let spend = twinhub_link_spend::from(spend);
        // SAFETY: as in `Store::len`; `spend` is a local valid for the call.
        store_result(unsafe { f(self.userdata, link, &spend) })
    }
}
