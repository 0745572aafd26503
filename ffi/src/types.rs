//! Statuses, enums and the pointer checks every entry point shares.
//!
//! Every enum crosses the ABI as a `uint32_t`. Values that come from C (arguments and
//! callback returns) arrive as a `Raw*` newtype, which cbindgen prints under the enum's
//! name, and are checked before use: an out-of-range value is an error, not undefined
//! behaviour.

use core::ffi::c_char;
use core::fmt;

use twinhub_core::{Class, Cost, OnFull, RecordKey, Routing};

/// The status every function returns. `TWINHUB_OK` (0) is success and `TWINHUB_NONE` (1)
/// "nothing to hand out now" (no transmit, event, timer or message); every other value is
/// an error and nothing was changed unless the function says otherwise.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum twinhub_result {
    /// Success.
    TWINHUB_OK = 0,
    /// Nothing to hand out now; not an error.
    TWINHUB_NONE = 1,
    /// A required pointer was NULL.
    TWINHUB_ERR_NULL_POINTER = 100,
    /// An argument is out of range: an unknown enum value, a misaligned struct, a name too
    /// long or not UTF-8, an epoch of 0.
    TWINHUB_ERR_INVALID_ARGUMENT = 101,
    /// The producer, configuration or receiver was not initialised (or was deinitialised).
    TWINHUB_ERR_NOT_INITIALIZED = 102,
    /// The producer was called from inside one of its own store callbacks.
    TWINHUB_ERR_BUSY = 103,
    /// A caller's buffer is too small; the function reports the size needed.
    TWINHUB_ERR_BUFFER_TOO_SMALL = 104,
    /// The configuration is invalid; `twinhub_config_check` says which field and why.
    TWINHUB_ERR_CONFIG = 110,
    /// The device id is empty, longer than 128 bytes or has a character IoT Hub refuses.
    TWINHUB_ERR_DEVICE_ID = 111,
    /// More endpoints or links than `TWINHUB_MAX_ENDPOINTS` / `TWINHUB_MAX_LINKS`.
    TWINHUB_ERR_TOO_MANY = 112,
    /// The record is larger than the endpoints, the store or the store's staging buffer
    /// allow; the limit is reported. Nothing was stored.
    TWINHUB_ERR_TOO_LARGE = 120,
    /// The outbox is full and the policy forbids eviction. Nothing was stored. (Also what a
    /// store callback returns when it has no room.)
    TWINHUB_ERR_FULL = 121,
    /// No endpoint, link or record with that index or key.
    TWINHUB_ERR_NO_SUCH = 122,
    /// Weights must give one value per endpoint and not all be zero.
    TWINHUB_ERR_BAD_WEIGHTS = 123,
    /// The store's medium failed (a store callback's error for anything else).
    TWINHUB_ERR_STORE_IO = 130,
    /// Stored bytes do not check out (a frame's CRC, or a record other than the one asked).
    TWINHUB_ERR_CORRUPT = 131,
    /// A record was appended with a key not above every key held (store callbacks).
    TWINHUB_ERR_OUT_OF_ORDER = 132,
    /// A wire message ran past the receiver's buffer before its zero; it was dropped.
    TWINHUB_ERR_WIRE_TOO_LONG = 140,
    /// A wire message's COBS framing is broken.
    TWINHUB_ERR_WIRE_FRAMING = 141,
    /// A wire message's checksum does not match: bytes were corrupted on the line.
    TWINHUB_ERR_WIRE_CRC = 142,
    /// A wire message checks out but is not a message this side understands.
    TWINHUB_ERR_WIRE_DECODE = 143,
}

impl twinhub_result {
    const ALL: [twinhub_result; 21] = [
        Self::TWINHUB_OK,
        Self::TWINHUB_NONE,
        Self::TWINHUB_ERR_NULL_POINTER,
        Self::TWINHUB_ERR_INVALID_ARGUMENT,
        Self::TWINHUB_ERR_NOT_INITIALIZED,
        Self::TWINHUB_ERR_BUSY,
        Self::TWINHUB_ERR_BUFFER_TOO_SMALL,
        Self::TWINHUB_ERR_CONFIG,
        Self::TWINHUB_ERR_DEVICE_ID,
        Self::TWINHUB_ERR_TOO_MANY,
        Self::TWINHUB_ERR_TOO_LARGE,
        Self::TWINHUB_ERR_FULL,
        Self::TWINHUB_ERR_NO_SUCH,
        Self::TWINHUB_ERR_BAD_WEIGHTS,
        Self::TWINHUB_ERR_STORE_IO,
        Self::TWINHUB_ERR_CORRUPT,
        Self::TWINHUB_ERR_OUT_OF_ORDER,
        Self::TWINHUB_ERR_WIRE_TOO_LONG,
        Self::TWINHUB_ERR_WIRE_FRAMING,
        Self::TWINHUB_ERR_WIRE_CRC,
        Self::TWINHUB_ERR_WIRE_DECODE,
    ];

    /// The status named by a raw value, if any.
    pub fn from_raw(raw: RawResult) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as u32 == raw.0)
    }

    /// The constant's name, NUL-terminated.
    pub(crate) fn name(self) -> &'static core::ffi::CStr {
        match self {
            Self::TWINHUB_OK => c"TWINHUB_OK",
            Self::TWINHUB_NONE => c"TWINHUB_NONE",
            Self::TWINHUB_ERR_NULL_POINTER => c"TWINHUB_ERR_NULL_POINTER",
            Self::TWINHUB_ERR_INVALID_ARGUMENT => c"TWINHUB_ERR_INVALID_ARGUMENT",
            Self::TWINHUB_ERR_NOT_INITIALIZED => c"TWINHUB_ERR_NOT_INITIALIZED",
            Self::TWINHUB_ERR_BUSY => c"TWINHUB_ERR_BUSY",
            Self::TWINHUB_ERR_BUFFER_TOO_SMALL => c"TWINHUB_ERR_BUFFER_TOO_SMALL",
            Self::TWINHUB_ERR_CONFIG => c"TWINHUB_ERR_CONFIG",
            Self::TWINHUB_ERR_DEVICE_ID => c"TWINHUB_ERR_DEVICE_ID",
            Self::TWINHUB_ERR_TOO_MANY => c"TWINHUB_ERR_TOO_MANY",
            Self::TWINHUB_ERR_TOO_LARGE => c"TWINHUB_ERR_TOO_LARGE",
            Self::TWINHUB_ERR_FULL => c"TWINHUB_ERR_FULL",
            Self::TWINHUB_ERR_NO_SUCH => c"TWINHUB_ERR_NO_SUCH",
            Self::TWINHUB_ERR_BAD_WEIGHTS => c"TWINHUB_ERR_BAD_WEIGHTS",
            Self::TWINHUB_ERR_STORE_IO => c"TWINHUB_ERR_STORE_IO",
            Self::TWINHUB_ERR_CORRUPT => c"TWINHUB_ERR_CORRUPT",
            Self::TWINHUB_ERR_OUT_OF_ORDER => c"TWINHUB_ERR_OUT_OF_ORDER",
            Self::TWINHUB_ERR_WIRE_TOO_LONG => c"TWINHUB_ERR_WIRE_TOO_LONG",
            Self::TWINHUB_ERR_WIRE_FRAMING => c"TWINHUB_ERR_WIRE_FRAMING",
            Self::TWINHUB_ERR_WIRE_CRC => c"TWINHUB_ERR_WIRE_CRC",
            Self::TWINHUB_ERR_WIRE_DECODE => c"TWINHUB_ERR_WIRE_DECODE",
        }
    }
}

pub(crate) use twinhub_result::*;

/// The name of a status (`"TWINHUB_ERR_FULL"`), for logs: a static, NUL-terminated string,
/// `"TWINHUB_UNKNOWN"` for a value that is not a status. Never NULL. May be called from
/// an interrupt.
#[unsafe(no_mangle)]
pub extern "C" fn twinhub_result_name(result: RawResult) -> *const c_char {
    twinhub_result::from_raw(result)
        .map_or(c"TWINHUB_UNKNOWN", twinhub_result::name)
        .as_ptr()
}

/// A [`twinhub_result`] as received from C (a callback's return): any value.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawResult(pub u32);

impl From<twinhub_result> for RawResult {
    fn from(r: twinhub_result) -> Self {
        RawResult(r as u32)
    }
}

/// A record's class: it sets eviction order, time to live and the links it may use.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum twinhub_class {
    /// Alarms: evicted last; the only class a costly link carries by default.
    TWINHUB_CLASS_CRITICAL = 0,
    /// Ordinary telemetry.
    TWINHUB_CLASS_NORMAL = 1,
    /// Bulk data: evicted first.
    TWINHUB_CLASS_BULK = 2,
}

/// A [`twinhub_class`] as received from C.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawClass(pub u32);

impl RawClass {
    pub(crate) fn get(self) -> Result<Class, twinhub_result> {
        Class::ALL
            .get(self.0 as usize)
            .copied()
            .ok_or(TWINHUB_ERR_INVALID_ARGUMENT)
    }
}

impl From<Class> for twinhub_class {
    fn from(c: Class) -> Self {
        match c {
            Class::Critical => twinhub_class::TWINHUB_CLASS_CRITICAL,
            Class::Normal => twinhub_class::TWINHUB_CLASS_NORMAL,
            Class::Bulk => twinhub_class::TWINHUB_CLASS_BULK,
        }
    }
}

impl From<twinhub_class> for RawClass {
    fn from(c: twinhub_class) -> Self {
        RawClass(c as u32)
    }
}

/// Bit of [`twinhub_class::TWINHUB_CLASS_CRITICAL`] in a class mask.
pub const TWINHUB_CLASSES_CRITICAL: u32 = 1;
/// Bit of [`twinhub_class::TWINHUB_CLASS_NORMAL`] in a class mask.
pub const TWINHUB_CLASSES_NORMAL: u32 = 2;
/// Bit of [`twinhub_class::TWINHUB_CLASS_BULK`] in a class mask.
pub const TWINHUB_CLASSES_BULK: u32 = 4;
/// Every class.
pub const TWINHUB_CLASSES_ALL: u32 = 7;

/// How records are spread over endpoints.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum twinhub_routing {
    /// Everything to the first healthy endpoint in order; fail over down the list (default).
    TWINHUB_ROUTING_ACTIVE_PASSIVE = 0,
    /// Spread by weight; a down endpoint's share moves to the healthy ones.
    TWINHUB_ROUTING_ACTIVE_ACTIVE = 1,
    /// Every record to every endpoint (consumers dedupe by message id).
    TWINHUB_ROUTING_MIRROR = 2,
}

/// A [`twinhub_routing`] as received from C.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRouting(pub u32);

impl RawRouting {
    pub(crate) fn get(self) -> Result<Routing, twinhub_result> {
        match self.0 {
            0 => Ok(Routing::ActivePassive),
            1 => Ok(Routing::ActiveActive),
            2 => Ok(Routing::Mirror),
            _ => Err(TWINHUB_ERR_INVALID_ARGUMENT),
        }
    }
}

/// What a link costs; cheaper links are always preferred.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum twinhub_cost {
    /// Wired or Wi-Fi: no per-byte cost.
    TWINHUB_COST_FREE = 0,
    /// Cellular with a data plan: used when every free route is down.
    TWINHUB_COST_METERED = 1,
    /// Satellite or roaming: used only with a budget, for allowed classes, after
    /// `arm_after` without any cheaper route.
    TWINHUB_COST_COSTLY = 2,
}

/// A [`twinhub_cost`] as received from C.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawCost(pub u32);

impl RawCost {
    pub(crate) fn get(self) -> Result<Cost, twinhub_result> {
        match self.0 {
            0 => Ok(Cost::Free),
            1 => Ok(Cost::Metered),
            2 => Ok(Cost::Costly),
            _ => Err(TWINHUB_ERR_INVALID_ARGUMENT),
        }
    }
}

/// What to do when the outbox is full.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum twinhub_on_full {
    /// Evict the oldest record of the lowest class, never a more important one (default).
    TWINHUB_ON_FULL_EVICT = 0,
    /// Refuse the new record (`TWINHUB_ERR_FULL`); the caller keeps it.
    TWINHUB_ON_FULL_REJECT = 1,
}

/// A [`twinhub_on_full`] as received from C.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawOnFull(pub u32);

impl RawOnFull {
    pub(crate) fn get(self) -> Result<OnFull, twinhub_result> {
        match self.0 {
            0 => Ok(OnFull::Evict),
            1 => Ok(OnFull::Reject),
            _ => Err(TWINHUB_ERR_INVALID_ARGUMENT),
        }
    }
}

/// Names one record: the epoch it was accepted in and its number within it. Its message id
/// is `{device_id}:{epoch}:{seq}`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct twinhub_record_key {
    /// The producer's start count when the record was accepted.
    pub epoch: u32,
    /// The record's number within its epoch.
    pub seq: u64,
}

impl From<RecordKey> for twinhub_record_key {
    fn from(k: RecordKey) -> Self {
        twinhub_record_key {
            epoch: k.epoch,
            seq: k.seq,
        }
    }
}

impl From<twinhub_record_key> for RecordKey {
    fn from(k: twinhub_record_key) -> Self {
        RecordKey {
            epoch: k.epoch,
            seq: k.seq,
        }
    }
}

/// `Ok(())` or the error, as every entry point returns it.
pub(crate) type Status = Result<(), twinhub_result>;

/// The status C sees.
pub(crate) fn status(r: Status) -> twinhub_result {
    match r {
        Ok(()) => TWINHUB_OK,
        Err(e) => e,
    }
}

/// A reference from a pointer that must not be NULL.
///
/// # Safety
///
/// `p` is NULL or valid for reads of a `T` for `'a`, with no writer during `'a`.
pub(crate) unsafe fn arg<'a, T>(p: *const T) -> Result<&'a T, twinhub_result> {
    // SAFETY: the caller's contract.
    unsafe { p.as_ref() }.ok_or(TWINHUB_ERR_NULL_POINTER)
}

/// Writes `value` through `p` when `p` is not NULL (optional out-parameters).
///
/// # Safety
///
/// `p` is NULL or valid for a write of a `T`.
pub(crate) unsafe fn put<T>(p: *mut T, value: T) {
    if !p.is_null() {
        // SAFETY: the caller's contract; `write` does not read or drop the old value, which
        // may be uninitialised C memory.
        unsafe { p.write(value) }
    }
}

/// Writes `value` through `p`, which must not be NULL (required out-parameters).
///
/// # Safety
///
/// As for [`put`].
pub(crate) unsafe fn put_req<T>(p: *mut T, value: T) -> Status {
    if p.is_null() {
        return Err(TWINHUB_ERR_NULL_POINTER);
    }
    // SAFETY: the caller's contract, and `p` is not NULL.
    unsafe { put(p, value) };
    Ok(())
}

/// `len` bytes at `p`; NULL is allowed only when `len` is 0.
///
/// # Safety
///
/// When `len > 0`, `p` is valid for reads of `len` bytes for `'a`, unchanged meanwhile.
pub(crate) unsafe fn bytes<'a>(p: *const u8, len: usize) -> Result<&'a [u8], twinhub_result> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(TWINHUB_ERR_NULL_POINTER);
    }
    if len > isize::MAX as usize {
        return Err(TWINHUB_ERR_INVALID_ARGUMENT);
    }
    // SAFETY: `p` is not NULL, `len` is in range, and the caller vouches for the bytes.
    Ok(unsafe { core::slice::from_raw_parts(p, len) })
}

/// `len` writable bytes at `p`; NULL is allowed only when `len` is 0.
///
/// # Safety
///
/// When `len > 0`, `p` is valid for reads and writes of `len` bytes for `'a`, and nothing
/// else reads or writes them meanwhile.
pub(crate) unsafe fn bytes_mut<'a>(p: *mut u8, len: usize) -> Result<&'a mut [u8], twinhub_result> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(TWINHUB_ERR_NULL_POINTER);
    }
    if len > isize::MAX as usize {
        return Err(TWINHUB_ERR_INVALID_ARGUMENT);
    }
    // SAFETY: `p` is not NULL, `len` is in range, and the caller vouches for the bytes.
    Ok(unsafe { core::slice::from_raw_parts_mut(p, len) })
}

/// A NUL-terminated UTF-8 string of at most `max` bytes. The scan stops after `max + 1`
/// bytes, so a missing terminator is reported rather than read past for ever.
///
/// # Safety
///
/// `p` is NULL or points to a NUL-terminated string (or to at least `max + 1` readable
/// bytes), unchanged for `'a`.
pub(crate) unsafe fn text<'a>(p: *const c_char, max: usize) -> Result<&'a str, twinhub_result> {
    if p.is_null() {
        return Err(TWINHUB_ERR_NULL_POINTER);
    }
    let mut len = 0usize;
    loop {
        // SAFETY: every byte up to the terminator is readable (the caller's contract), and
        // the scan stops at the first NUL or after `max + 1` bytes.
        let b = unsafe { p.cast::<u8>().add(len).read() };
        if b == 0 {
            break;
        }
        if len >= max {
            return Err(TWINHUB_ERR_INVALID_ARGUMENT);
        }
        len = len.saturating_add(1);
    }
    // SAFETY: the `len` bytes before the terminator were just read.
    let raw = unsafe { core::slice::from_raw_parts(p.cast::<u8>(), len) };
    core::str::from_utf8(raw).map_err(|_| TWINHUB_ERR_INVALID_ARGUMENT)
}

/// Formats into a C buffer, NUL-terminated and truncated to fit, counting the full length.
pub(crate) struct CText<'a> {
    out: &'a mut [u8],
    /// Bytes the whole text takes, without the terminator.
    pub(crate) len: usize,
}

impl<'a> CText<'a> {
    pub(crate) fn new(out: &'a mut [u8]) -> Self {
        CText { out, len: 0 }
    }

    /// Terminates the text and returns the bytes it needs with its terminator, and whether
    /// all of it fitted.
    pub(crate) fn finish(self) -> (usize, bool) {
        let needed = self.len.saturating_add(1);
        let end = self.len.min(self.out.len().saturating_sub(1));
        if let Some(b) = self.out.get_mut(end) {
            *b = 0;
        }
        (needed, needed <= self.out.len())
    }
}

impl fmt::Write for CText<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Keep the last byte for the terminator.
        let room = self.out.len().saturating_sub(1);
        for (i, b) in s.bytes().enumerate() {
            let at = self.len.saturating_add(i);
            if at < room
                && let Some(slot) = self.out.get_mut(at)
            {
                *slot = b;
            }
        }
        self.len = self.len.saturating_add(s.len());
        Ok(())
    }
}

/// Copies formatted text into a C buffer: `TWINHUB_OK`, or `TWINHUB_ERR_BUFFER_TOO_SMALL`
/// with the text truncated. `*len_out` gets the bytes needed with the terminator.
///
/// # Safety
///
/// `out` is valid for `out_len` bytes (NULL when 0); `len_out` is NULL or writable.
pub(crate) unsafe fn write_text(
    out: *mut c_char,
    out_len: usize,
    len_out: *mut usize,
    f: impl FnOnce(&mut CText<'_>) -> fmt::Result,
) -> Status {
    // SAFETY: the caller's contract.
    let buf = unsafe { bytes_mut(out.cast::<u8>(), out_len) }?;
    let mut w = CText::new(buf);
    // `CText` never fails; the text's own formatting cannot either.
    let _ = f(&mut w);
    let (needed, fitted) = w.finish();
    // SAFETY: the caller's contract.
    unsafe { put(len_out, needed) };
    if fitted {
        Ok(())
    } else {
        Err(TWINHUB_ERR_BUFFER_TOO_SMALL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write as _;

    #[test]
    fn every_status_round_trips_and_has_a_name() {
        for r in twinhub_result::ALL {
            assert_eq!(twinhub_result::from_raw(RawResult(r as u32)), Some(r));
            let name = r.name().to_str().unwrap();
            assert!(name.starts_with("TWINHUB_"), "{name}");
        }
        assert_eq!(twinhub_result::from_raw(RawResult(7)), None);
    }

    #[test]
    fn text_is_truncated_terminated_and_measured() {
        let mut buf = [0xffu8; 6];
        let mut w = CText::new(&mut buf);
        write!(w, "sensor-{}", 7).unwrap();
        assert_eq!(w.finish(), (9, false));
        assert_eq!(&buf, b"senso\0");
        let mut big = [0u8; 9];
        let mut w = CText::new(&mut big);
        write!(w, "sensor-{}", 7).unwrap();
        assert_eq!(w.finish(), (9, true));
        assert_eq!(&big, b"sensor-7\0");
        let mut w = CText::new(&mut []);
        w.write_str("abc").unwrap();
        assert_eq!(w.finish(), (4, false));
    }

    #[test]
    fn strings_are_bounded() {
        let s = c"sensor-7";
        unsafe {
            assert_eq!(text(s.as_ptr(), 8), Ok("sensor-7"));
            assert_eq!(text(s.as_ptr(), 7), Err(TWINHUB_ERR_INVALID_ARGUMENT));
            assert_eq!(text(core::ptr::null(), 7), Err(TWINHUB_ERR_NULL_POINTER));
            assert_eq!(text(c"\xff".as_ptr(), 7), Err(TWINHUB_ERR_INVALID_ARGUMENT));
        }
    }
}
