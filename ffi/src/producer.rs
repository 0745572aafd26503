//! The producer in caller-provided storage, and its driving calls.

use core::ffi::c_char;
use core::fmt::Write as _;
use core::ops::Deref;

use twinhub_core::Engine as CoreEngine;
use twinhub_core::frame;
use twinhub_core::{
    Config, DownCause, DropReason, Duration, EndpointId, EnqueueError, Event, Instant, LinkId,
    LinkState, Outcome, Persist, RejectReason, RouteHealth, Transmit, TransmitError, TransmitId,
};

use crate::config::{self, TWINHUB_MAX_ENDPOINTS, TWINHUB_MAX_LINKS, twinhub_config};
use crate::store::{
    CStore, TWINHUB_FRAME_OVERHEAD_MAX, store_status, twinhub_link_spend, twinhub_store,
};
use crate::types::*;

/// `uint64_t` words of a [`twinhub_producer`].
pub const TWINHUB_PRODUCER_WORDS: usize = 256;
/// Bytes of a [`twinhub_producer`]: the engine (routes, links, transmits in flight,
/// events, counters), its configuration and the store table. The same on every target.
pub const TWINHUB_PRODUCER_SIZE: usize = TWINHUB_PRODUCER_WORDS * 8;
/// Alignment of a [`twinhub_producer`] (that of `uint64_t`).
pub const TWINHUB_PRODUCER_ALIGN: usize = 8;

/// A producer: caller-owned storage, typically `static` (zeroed storage is recognised as
/// not initialised). Opaque: use the `twinhub_producer_*` functions.
///
/// # Threads and interrupts
///
/// A producer is driven from one thread or task at a time, never from an interrupt: an
/// interrupt handler should only note that something happened (a byte arrived, a tick
/// passed) and let the main loop call the producer. Calls from inside the producer's own
/// store callbacks are refused with `TWINHUB_ERR_BUSY`.
///
/// # Driving loop
///
/// 1. `twinhub_producer_enqueue` each reading. It is then pending until delivered or
///    dropped by an explicit policy (expiry, eviction, a hub's rejection), each counted.
/// 2. `twinhub_producer_poll_transmit` until it returns `TWINHUB_NONE`; send each
///    transmit's records (`twinhub_transmit_record`) to its endpoint over its link, and
///    report what became of it with `twinhub_producer_handle_outcome`, exactly once.
///    Records leave the store only on `TWINHUB_OUTCOME_DELIVERED`.
/// 3. Call `twinhub_producer_handle_timeout` when the time from
///    `twinhub_producer_poll_timeout` is reached (a transmit that gets no answer times out
///    there), and report link changes the device knows of with
///    `twinhub_producer_handle_link`.
/// 4. After each of these, drain `twinhub_producer_poll_event` and poll for transmits
///    again: any call may make records sendable.
///
/// `now_ms` comes from any monotonic millisecond clock; a `now_ms` earlier than one seen
/// before is taken as the latest seen.
#[repr(C)]
pub struct twinhub_producer {
    _opaque: [u64; TWINHUB_PRODUCER_WORDS],
}

/// The configuration, owned by the producer.
struct OwnedConfig(Config);

impl Deref for OwnedConfig {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.0
    }
}

type Engine = CoreEngine<CStore, OwnedConfig>;

/// Marks initialised storage: calls on zeroed (`static`) storage are refused.
const MAGIC: u32 = 0x7457_5052; // "tWPR"

struct Slot {
    magic: u32,
    // Non-zero while a call is inside the engine (and so maybe inside a store callback).
    busy: u32,
    engine: Engine,
}

const _: () = assert!(
    size_of::<Slot>() <= size_of::<twinhub_producer>()
        && align_of::<Slot>() <= TWINHUB_PRODUCER_ALIGN
        && align_of::<twinhub_producer>() == TWINHUB_PRODUCER_ALIGN,
    "TWINHUB_PRODUCER_SIZE is too small for the engine on this target"
);

/// Bytes of a producer's state: at most `TWINHUB_PRODUCER_SIZE`, which is what to reserve.
/// May be called from an interrupt.
#[unsafe(no_mangle)]
pub extern "C" fn twinhub_producer_size() -> usize {
    size_of::<Slot>()
}

/// Runs `f` on the engine in `p`.
///
/// Only the header words are touched through the raw pointer; the engine is borrowed on
/// its own, so a re-entrant call (from a store callback) reads `busy` without aliasing the
/// engine borrowed by the outer call, and is refused.
///
/// # Safety
///
/// `p` is NULL or points to `TWINHUB_PRODUCER_SIZE` bytes the caller owns, initialised by
/// `twinhub_producer_init` or zeroed.
unsafe fn with<R>(
    p: *mut twinhub_producer,
    f: impl FnOnce(&mut Engine) -> Result<R, twinhub_result>,
) -> Result<R, twinhub_result> {
    let slot = p.cast::<Slot>();
    if slot.is_null() {
        return Err(TWINHUB_ERR_NULL_POINTER);
    }
    if !slot.is_aligned() {
        return Err(TWINHUB_ERR_INVALID_ARGUMENT);
    }
    // SAFETY: aligned, not NULL, and large enough for a `Slot` (the caller's contract and
    // the size assert); the header words are plain integers read and written on their own.
    let (magic, busy) = unsafe {
        (
            core::ptr::addr_of_mut!((*slot).magic),
            core::ptr::addr_of_mut!((*slot).busy),
        )
    };
    // SAFETY: as above.
    if unsafe { magic.read() } != MAGIC {
        return Err(TWINHUB_ERR_NOT_INITIALIZED);
    }
    // SAFETY: as above.
    if unsafe { busy.read() } != 0 {
        return Err(TWINHUB_ERR_BUSY);
    }
    // SAFETY: as above.
    unsafe { busy.write(1) };
    // SAFETY: the magic word says `twinhub_producer_init` wrote an engine here, and `busy`
    // keeps any other call from borrowing it until this one ends.
    let engine = unsafe { &mut *core::ptr::addr_of_mut!((*slot).engine) };
    let r = f(engine);
    // SAFETY: as above.
    unsafe { busy.write(0) };
    r
}

/// Starts a producer in `p` from the configuration `cfg` (read, not kept: it may be
/// discarded after) and the store table `store` (copied; its `userdata` and `frame_buf`
/// must outlive the producer). Records the store already holds (after a reboot) become
/// pending and count as accepted.
///
/// `epoch` is this start's epoch when the store has no `next_epoch` callback: it must be
/// above every epoch this device used before (message ids are `device:epoch:seq`) and not
/// 0. With a `next_epoch` callback it is ignored and the store's is used. A store with
/// `load_spend` has each budgeted link's saved spend restored. `seed` drives the back-off
/// jitter (give each device its own).
///
/// Returns `TWINHUB_ERR_CONFIG` for an invalid configuration (`twinhub_config_check` says
/// why), `TWINHUB_ERR_NULL_POINTER` for a missing required callback or staging buffer, a
/// store error if the store failed. On error `p` is left not initialised.
///
/// # Safety
///
/// `p` is NULL or points to `TWINHUB_PRODUCER_SIZE` writable bytes aligned to
/// `TWINHUB_PRODUCER_ALIGN`, not in use by a running call; `cfg` is NULL or initialised;
/// `store` is NULL or readable, and its callbacks and buffers are valid as documented on
/// `twinhub_store`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_producer_init(
    p: *mut twinhub_producer,
    cfg: *const twinhub_config,
    store: *const twinhub_store,
    now_ms: u64,
    epoch: u32,
    seed: u64,
) -> twinhub_result {
    let slot = p.cast::<Slot>();
    if slot.is_null() {
        return TWINHUB_ERR_NULL_POINTER;
    }
    if !slot.is_aligned() {
        return TWINHUB_ERR_INVALID_ARGUMENT;
    }
    // SAFETY: aligned, not NULL and large enough for a `Slot`: the header words are read
    // and written on their own.
    let (magic, busy) = unsafe {
        (
            core::ptr::addr_of_mut!((*slot).magic),
            core::ptr::addr_of_mut!((*slot).busy),
        )
    };
    // SAFETY: as above.
    if unsafe { magic.read() == MAGIC && busy.read() != 0 } {
        return TWINHUB_ERR_BUSY;
    }
    // Not initialised until the end: a failure below leaves it so.
    // SAFETY: as above.
    unsafe { magic.write(0) };
    let start = || -> Result<Engine, twinhub_result> {
        // SAFETY: the caller's contract.
        let config = unsafe { config::parts(cfg) }?
            .build()
            .map_err(|_| TWINHUB_ERR_CONFIG)?;
        // SAFETY: the caller's contract.
        let mut store = CStore::new(unsafe { arg(store) }?)?;
        let epoch = if store.has_next_epoch() {
            store.next_epoch().map_err(store_status)?
        } else if epoch == 0 {
            return Err(TWINHUB_ERR_INVALID_ARGUMENT);
        } else {
            epoch
        };
        let now = Instant::from_millis(now_ms);
        let mut engine = Engine::new(OwnedConfig(config), store, now, epoch, seed);
        if engine.store().has_load_spend() {
            let links = engine.config().links().len();
            for l in (0..links).filter_map(|l| u8::try_from(l).ok()) {
                if engine.link_spend(LinkId(l)).is_none() {
                    continue; // no budget
                }
                if let Some(spend) = engine.store_mut().load_spend(l).map_err(store_status)? {
                    engine
                        .restore_link_spend(now, LinkId(l), spend)
                        .map_err(|_| TWINHUB_ERR_NO_SUCH)?;
                }
            }
        }
        Ok(engine)
    };
    let engine = match start() {
        Ok(e) => e,
        Err(e) => return e,
    };
    // SAFETY: `slot` is aligned and large enough; `write` does not read or drop the old
    // bytes (uninitialised or a previous engine, which owns nothing to release).
    unsafe {
        slot.write(Slot {
            magic: MAGIC,
            busy: 0,
            engine,
        })
    };
    TWINHUB_OK
}

/// Ends the producer: `p` is not initialised afterwards and may be reused. The store keeps
/// every pending record, for the next `twinhub_producer_init`.
///
/// # Safety
///
/// `p` is NULL or a producer's storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_producer_deinit(p: *mut twinhub_producer) -> twinhub_result {
    // SAFETY: the caller's contract; the engine is checked idle by `with`.
    let r = unsafe { with(p, |_| Ok(())) };
    if let Err(e) = r {
        return e;
    }
    // SAFETY: `with` checked `p` is an aligned, initialised, idle `Slot`.
    unsafe { core::ptr::addr_of_mut!((*p.cast::<Slot>()).magic).write(0) };
    TWINHUB_OK
}

/// Accepts a record into the outbox: `payload_len` bytes at `payload` (copied into the
/// store; NULL allowed when 0) of class `record_class`. `*key_out`, if not NULL, gets the
/// record's key: its message id is `device:epoch:seq`.
///
/// Returns `TWINHUB_ERR_TOO_LARGE` when the payload exceeds the smallest endpoint limit,
/// the store's capacity or its staging buffer (`*limit_out`, if not NULL, gets the largest
/// payload accepted), `TWINHUB_ERR_FULL` when the store is full and the policy forbids
/// eviction, or the store's error. On error nothing was stored and nothing stored changed.
///
/// # Safety
///
/// `p` is NULL or a producer's storage; `payload` is valid for `payload_len` bytes;
/// `key_out` and `limit_out` are NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_producer_enqueue(
    p: *mut twinhub_producer,
    now_ms: u64,
    payload: *const u8,
    payload_len: usize,
    record_class: RawClass,
    key_out: *mut twinhub_record_key,
    limit_out: *mut u32,
) -> twinhub_result {
    let r = (|| {
        // SAFETY: the caller's contract.
        let payload = unsafe { bytes(payload, payload_len) }?;
        let class = record_class.get()?;
        // SAFETY: the caller's contract.
        let outcome = unsafe {
            with(p, |e| {
                // The staging buffer bounds what the store can be handed.
                let room = e
                    .store()
                    .frame_buf_len
                    .saturating_sub(TWINHUB_FRAME_OVERHEAD_MAX);
                let staged = u32::try_from(room).unwrap_or(u32::MAX);
                if payload.len() > room {
                    let limit = staged.min(e.config().max_record_bytes());
                    return Ok(Err((TWINHUB_ERR_TOO_LARGE, limit)));
                }
                Ok(
                    match e.enqueue(Instant::from_millis(now_ms), payload, class) {
                        Ok(id) => Ok(twinhub_record_key {
                            epoch: id.epoch,
                            seq: id.seq,
                        }),
                        Err(EnqueueError::TooLarge { limit }) => {
                            Err((TWINHUB_ERR_TOO_LARGE, limit.min(staged)))
                        }
                        Err(EnqueueError::Full) => Err((TWINHUB_ERR_FULL, 0)),
                        Err(EnqueueError::Store(s)) => Err((store_status(s), 0)),
                        Err(_) => Err((TWINHUB_ERR_STORE_IO, 0)),
                    },
                )
            })
        }?;
        outcome.map_err(|(status, limit)| {
            if status == TWINHUB_ERR_TOO_LARGE {
                // SAFETY: the caller's contract.
                unsafe { put(limit_out, limit) };
            }
            status
        })
    })();
    match r {
        Ok(key) => {
            // SAFETY: the caller's contract.
            unsafe { put(key_out, key) };
            TWINHUB_OK
        }
        Err(e) => e,
    }
}

/// A batch of records to send, written by `twinhub_producer_poll_transmit` into the
/// caller's buffer as back-to-back frames (read them with `twinhub_transmit_record`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct twinhub_transmit {
    /// Bytes of the buffer holding the frames.
    pub len: usize,
    /// Pass this to `twinhub_producer_handle_outcome`.
    pub id: u32,
    /// Records in the batch.
    pub records: u16,
    /// The endpoint to send to (its index in the configuration).
    pub endpoint: u8,
    /// The link to send over (its index in the configuration).
    pub link: u8,
    /// Whether this tests a down route: its outcome decides whether the route recovers.
    pub probe: bool,
}

impl From<Transmit> for twinhub_transmit {
    fn from(t: Transmit) -> Self {
        twinhub_transmit {
            len: t.len,
            id: t.id.0,
            records: t.records,
            endpoint: t.endpoint.0,
            link: t.link.0,
            probe: t.probe,
        }
    }
}

/// The engine's next transmit into `buf`, or the size a buffer needs for it.
///
/// The next transmit, or `Err(needed)` when `buf` cannot hold even the next record.
fn next_transmit(e: &mut Engine, now: Instant, buf: &mut [u8]) -> Result<Option<Transmit>, usize> {
    e.poll_transmit(now, buf).map_err(|err| match err {
        TransmitError::BufferTooSmall { needed } => needed,
        // A kind of error this layer does not know yet: report the whole buffer as short
        // by one byte rather than nothing to send, so the caller sees a failure.
        _ => buf.len().saturating_add(1),
    })
}

/// Writes the next batch to send into `buf` and describes it in `*tx_out`: `TWINHUB_OK`, or
/// `TWINHUB_NONE` when nothing should be sent now (nothing pending, every slot in flight,
/// a back-off running, no allowed route). `buf` should hold the largest batch an endpoint
/// takes plus `TWINHUB_FRAME_OVERHEAD_MAX` per record; a smaller one makes smaller batches,
/// and one too small for the next record gives `TWINHUB_ERR_BUFFER_TOO_SMALL` with
/// `*needed_out` (if not NULL) set to the size needed.
///
/// The records stay in the store until their transmit is delivered. Every transmit handed
/// out must get exactly one `twinhub_producer_handle_outcome` (or time out by itself).
/// On a link with a budget, the store's `save_spend` runs before this returns; if it
/// fails, the transmit is reported unreachable and `TWINHUB_ERR_STORE_IO` is returned, so
/// no byte goes out that a reboot could forget.
///
/// # Safety
///
/// `p` is NULL or a producer's storage; `buf` is valid for `buf_len` writable bytes;
/// `tx_out` is NULL or writable; `needed_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_producer_poll_transmit(
    p: *mut twinhub_producer,
    now_ms: u64,
    buf: *mut u8,
    buf_len: usize,
    tx_out: *mut twinhub_transmit,
    needed_out: *mut usize,
) -> twinhub_result {
    if tx_out.is_null() {
        return TWINHUB_ERR_NULL_POINTER;
    }
    let r = (|| {
        // SAFETY: the caller's contract.
        let buf = unsafe { bytes_mut(buf, buf_len) }?;
        // SAFETY: the caller's contract.
        unsafe {
            with(p, |e| {
                let now = Instant::from_millis(now_ms);
                let tx = match next_transmit(e, now, buf) {
                    Ok(Some(tx)) => tx,
                    Ok(None) => return Ok(None),
                    Err(needed) => {
                        // SAFETY: the caller's contract.
                        put(needed_out, needed);
                        return Err(TWINHUB_ERR_BUFFER_TOO_SMALL);
                    }
                };
                if let Some(spend) = e.link_spend(tx.link)
                    && e.store().has_save_spend()
                    && e.store_mut().save_spend(tx.link.0, spend).is_err()
                {
                    // Nothing left the device: the records go back to pending.
                    e.handle_outcome(now, tx.id, Outcome::Unreachable);
                    return Err(TWINHUB_ERR_STORE_IO);
                }
                Ok(Some(tx))
            })
        }
    })();
    match r {
        Ok(Some(tx)) => {
            // SAFETY: the caller's contract; checked not NULL above.
            unsafe { tx_out.write(tx.into()) };
            TWINHUB_OK
        }
        Ok(None) => TWINHUB_NONE,
        Err(e) => e,
    }
}

/// A record of a transmit, borrowed from the transmit's buffer.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct twinhub_record {
    /// The record's key (its message id is `device:epoch:seq`).
    pub key: twinhub_record_key,
    /// When it was accepted (ms).
    pub enqueued_at_ms: u64,
    /// The payload, inside the transmit's buffer: valid while the buffer is unchanged.
    pub payload: *const u8,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Its class (a `twinhub_class`).
    pub record_class: RawClass,
}

/// Reads the record at `*offset` of a transmit's buffer (`buf`, `len` = the transmit's
/// `len`) into `*record` and moves `*offset` past it. Start with `*offset = 0`; returns
/// `TWINHUB_NONE` at the end, `TWINHUB_ERR_CORRUPT` for bytes that are not a frame (and
/// then moves `*offset` to the end). Each frame's CRC is checked. May be called from an
/// interrupt.
///
/// # Safety
///
/// `buf` is valid for `len` bytes; `offset` and `record` are NULL or writable (`offset`
/// readable too).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_transmit_record(
    buf: *const u8,
    len: usize,
    offset: *mut usize,
    record: *mut twinhub_record,
) -> twinhub_result {
    status((|| {
        if offset.is_null() || record.is_null() {
            return Err(TWINHUB_ERR_NULL_POINTER);
        }
        // SAFETY: the caller's contract.
        let buf = unsafe { bytes(buf, len) }?;
        // SAFETY: the caller's contract; not NULL.
        let at = unsafe { offset.read() };
        let rest = buf.get(at..).ok_or(TWINHUB_ERR_INVALID_ARGUMENT)?;
        if rest.is_empty() {
            return Err(TWINHUB_NONE);
        }
        let (f, n) = match frame::decode(rest) {
            Ok(ok) => ok,
            Err(_) => {
                // SAFETY: as above.
                unsafe { offset.write(len) };
                return Err(TWINHUB_ERR_CORRUPT);
            }
        };
        let r = twinhub_record {
            key: f.meta.key().into(),
            enqueued_at_ms: f.meta.enqueued_at.as_millis(),
            payload: f.payload.as_ptr(),
            payload_len: f.payload.len(),
            record_class: twinhub_class::from(f.meta.class).into(),
        };
        // SAFETY: as above; `n` is within `rest`, so the sum is at most `len`.
        unsafe {
            offset.write(at.saturating_add(n));
            record.write(r);
        }
        Ok(())
    })())
}

/// What became of a transmit. The driver maps its protocol's results onto these.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum twinhub_outcome {
    /// The hub acknowledged every record.
    TWINHUB_OUTCOME_DELIVERED = 0,
    /// No answer in time after the bytes may have left: resending may duplicate (counted).
    TWINHUB_OUTCOME_TIMEOUT = 1,
    /// No connection could be made: nothing arrived.
    TWINHUB_OUTCOME_UNREACHABLE = 2,
    /// The hub failed (5xx other than throttling).
    TWINHUB_OUTCOME_SERVER_ERROR = 3,
    /// The hub is throttling; give `retry_after_ms` if it said.
    TWINHUB_OUTCOME_THROTTLED = 4,
    /// The hub refused the credentials: the endpoint is unusable until they change.
    TWINHUB_OUTCOME_UNAUTHORIZED = 5,
    /// The hub refused the records as too large: dropped, counted, health untouched.
    TWINHUB_OUTCOME_REJECTED_TOO_LARGE = 6,
    /// The hub refused the records as malformed: dropped, counted, health untouched.
    TWINHUB_OUTCOME_REJECTED_MALFORMED = 7,
}

/// A [`twinhub_outcome`] as received from C.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawOutcome(pub u32);

/// `retry_after_ms` for a throttle that gave no delay.
pub const TWINHUB_NO_RETRY_AFTER: u64 = u64::MAX;

impl RawOutcome {
    fn get(self, retry_after_ms: u64) -> Result<Outcome, twinhub_result> {
        Ok(match self.0 {
            0 => Outcome::Delivered,
            1 => Outcome::Timeout,
            2 => Outcome::Unreachable,
            3 => Outcome::ServerError,
            4 => Outcome::Throttled {
                retry_after: (retry_after_ms != TWINHUB_NO_RETRY_AFTER)
                    .then(|| Duration::from_millis(retry_after_ms)),
            },
            5 => Outcome::Unauthorized,
            6 => Outcome::Rejected(RejectReason::TooLarge),
            7 => Outcome::Rejected(RejectReason::Malformed),
            _ => return Err(TWINHUB_ERR_INVALID_ARGUMENT),
        })
    }
}

/// Reports what became of transmit `tx_id`. `retry_after_ms` is read for
/// `TWINHUB_OUTCOME_THROTTLED` only (`TWINHUB_NO_RETRY_AFTER` when the hub gave none). An
/// unknown or already-handled id is ignored (a transmit abandoned when its route went down
/// may still report late).
///
/// # Safety
///
/// `p` is NULL or a producer's storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_producer_handle_outcome(
    p: *mut twinhub_producer,
    now_ms: u64,
    tx_id: u32,
    outcome: RawOutcome,
    retry_after_ms: u64,
) -> twinhub_result {
    status((|| {
        let outcome = outcome.get(retry_after_ms)?;
        // SAFETY: the caller's contract.
        unsafe {
            with(p, |e| {
                e.handle_outcome(Instant::from_millis(now_ms), TransmitId(tx_id), outcome);
                Ok(())
            })
        }
    })())
}

/// A link's state as the device knows it.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum twinhub_link_state {
    /// The link can carry traffic (it may still fail; the engine will find out).
    TWINHUB_LINK_UP = 0,
    /// The link is known to be down: do not use it, do not probe it.
    TWINHUB_LINK_DOWN = 1,
}

/// A [`twinhub_link_state`] as received from C.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLinkState(pub u32);

/// Tells the producer what the device knows of link `link` (a modem lost its carrier, a
/// cable came back). `TWINHUB_ERR_NO_SUCH` for a link the configuration does not have.
///
/// # Safety
///
/// `p` is NULL or a producer's storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_producer_handle_link(
    p: *mut twinhub_producer,
    now_ms: u64,
    link: u8,
    state: RawLinkState,
) -> twinhub_result {
    status((|| {
        let state = match state.0 {
            0 => LinkState::Up,
            1 => LinkState::Down,
            _ => return Err(TWINHUB_ERR_INVALID_ARGUMENT),
        };
        // SAFETY: the caller's contract.
        unsafe {
            with(p, |e| {
                if usize::from(link) >= e.config().links().len() {
                    return Err(TWINHUB_ERR_NO_SUCH);
                }
                e.handle_link(Instant::from_millis(now_ms), LinkId(link), state);
                Ok(())
            })
        }
    })())
}

/// Advances the producer's timers: transmits that got no answer in time, stalled sends,
/// expiry, budget windows, arming of costly links. Call it when the time from
/// `twinhub_producer_poll_timeout` is reached (calling it earlier or more often is harmless).
///
/// # Safety
///
/// `p` is NULL or a producer's storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_producer_handle_timeout(
    p: *mut twinhub_producer,
    now_ms: u64,
) -> twinhub_result {
    // SAFETY: the caller's contract.
    status(unsafe {
        with(p, |e| {
            e.handle_timeout(Instant::from_millis(now_ms));
            Ok(())
        })
    })
}

/// When `twinhub_producer_handle_timeout` next has work: `TWINHUB_OK` with `*at_ms` set, or
/// `TWINHUB_NONE` when no timer runs. A time at or before the latest `now_ms` is due now.
///
/// # Safety
///
/// `p` is NULL or a producer's storage; `at_ms` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_producer_poll_timeout(
    p: *mut twinhub_producer,
    at_ms: *mut u64,
) -> twinhub_result {
    if at_ms.is_null() {
        return TWINHUB_ERR_NULL_POINTER;
    }
    // SAFETY: the caller's contract.
    match unsafe { with(p, |e| Ok(e.poll_timeout())) } {
        Ok(Some(t)) => {
            // SAFETY: the caller's contract; not NULL.
            unsafe { at_ms.write(t.as_millis()) };
            TWINHUB_OK
        }
        Ok(None) => TWINHUB_NONE,
        Err(e) => e,
    }
}

/// What an event is about.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum twinhub_event_kind {
    /// Traffic moved from `endpoint` to the fallback `to_endpoint`.
    TWINHUB_EVENT_FAILED_OVER = 0,
    /// Traffic moved back from `endpoint` to the preferred `to_endpoint`.
    TWINHUB_EVENT_FAILED_BACK = 1,
    /// The route `endpoint` over `link` is down (`cause`); only probes go there.
    TWINHUB_EVENT_ROUTE_DOWN = 2,
    /// The route `endpoint` over `link` passed its probes and is used again.
    TWINHUB_EVENT_ROUTE_UP = 3,
    /// `link` was found or reported down.
    TWINHUB_EVENT_LINK_DOWN = 4,
    /// `link` was reported up again.
    TWINHUB_EVENT_LINK_UP = 5,
    /// The costly `link` may now carry its allowed classes.
    TWINHUB_EVENT_LINK_ARMED = 6,
    /// A cheaper route works again; the costly `link` is idle.
    TWINHUB_EVENT_LINK_DISARMED = 7,
    /// `link`'s budget has no room for the next record in this window.
    TWINHUB_EVENT_BUDGET_EXHAUSTED = 8,
    /// Record `record` was dropped (`reason`).
    TWINHUB_EVENT_DROPPED = 9,
    /// `endpoint` refused the credentials.
    TWINHUB_EVENT_AUTH_FAILED = 10,
    /// An event this version of the header does not name.
    TWINHUB_EVENT_OTHER = 255,
}

/// Why a route went down.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum twinhub_down_cause {
    /// Not a route-down event.
    TWINHUB_DOWN_CAUSE_NONE = 0,
    /// The endpoint fails on a link where another endpoint works: a region problem.
    TWINHUB_DOWN_CAUSE_REGION = 1,
    /// Every endpoint fails on this link, or the device said it is down.
    TWINHUB_DOWN_CAUSE_LINK = 2,
    /// The endpoint refused the credentials.
    TWINHUB_DOWN_CAUSE_AUTH = 3,
    /// The endpoint kept throttling.
    TWINHUB_DOWN_CAUSE_THROTTLED = 4,
}

/// Why a record left the outbox without being delivered.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum twinhub_drop_reason {
    /// Not a drop event.
    TWINHUB_DROP_NONE = 0,
    /// Its class's time to live passed.
    TWINHUB_DROP_EXPIRED = 1,
    /// Evicted to make room.
    TWINHUB_DROP_EVICTED = 2,
    /// A hub rejected it as too large.
    TWINHUB_DROP_TOO_LARGE = 3,
    /// A hub rejected it as malformed.
    TWINHUB_DROP_MALFORMED = 4,
    /// Its stored frame failed its CRC when read for sending.
    TWINHUB_DROP_CORRUPT = 5,
}

/// Something to log, alert on or count. Fields that do not apply to `kind` are 0.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct twinhub_event {
    /// What happened.
    pub kind: twinhub_event_kind,
    /// Why a route went down (`TWINHUB_EVENT_ROUTE_DOWN`).
    pub cause: twinhub_down_cause,
    /// Why a record was dropped (`TWINHUB_EVENT_DROPPED`).
    pub reason: twinhub_drop_reason,
    /// The endpoint concerned (failover and failback: the one left).
    pub endpoint: u8,
    /// Failover and failback: the endpoint now used.
    pub to_endpoint: u8,
    /// The link concerned.
    pub link: u8,
    /// The record dropped (`TWINHUB_EVENT_DROPPED`).
    pub record: twinhub_record_key,
}

impl From<Event> for twinhub_event {
    fn from(ev: Event) -> Self {
        use twinhub_event_kind::*;
        let mut out = twinhub_event {
            kind: TWINHUB_EVENT_OTHER,
            cause: twinhub_down_cause::TWINHUB_DOWN_CAUSE_NONE,
            reason: twinhub_drop_reason::TWINHUB_DROP_NONE,
            endpoint: 0,
            to_endpoint: 0,
            link: 0,
            record: twinhub_record_key::default(),
        };
        match ev {
            Event::FailedOver { from, to } | Event::FailedBack { from, to } => {
                out.kind = if matches!(ev, Event::FailedOver { .. }) {
                    TWINHUB_EVENT_FAILED_OVER
                } else {
                    TWINHUB_EVENT_FAILED_BACK
                };
                (out.endpoint, out.to_endpoint) = (from.0, to.0);
            }
            Event::RouteDown {
                endpoint,
                link,
                cause,
            } => {
                out.kind = TWINHUB_EVENT_ROUTE_DOWN;
                (out.endpoint, out.link) = (endpoint.0, link.0);
                out.cause = match cause {
                    DownCause::Region => twinhub_down_cause::TWINHUB_DOWN_CAUSE_REGION,
                    DownCause::Link => twinhub_down_cause::TWINHUB_DOWN_CAUSE_LINK,
                    DownCause::Auth => twinhub_down_cause::TWINHUB_DOWN_CAUSE_AUTH,
                    DownCause::Throttled => twinhub_down_cause::TWINHUB_DOWN_CAUSE_THROTTLED,
                };
            }
            Event::RouteUp { endpoint, link } => {
                out.kind = TWINHUB_EVENT_ROUTE_UP;
                (out.endpoint, out.link) = (endpoint.0, link.0);
            }
            Event::LinkDown { link } => (out.kind, out.link) = (TWINHUB_EVENT_LINK_DOWN, link.0),
            Event::LinkUp { link } => (out.kind, out.link) = (TWINHUB_EVENT_LINK_UP, link.0),
            Event::LinkArmed { link } => (out.kind, out.link) = (TWINHUB_EVENT_LINK_ARMED, link.0),
            Event::LinkDisarmed { link } => {
                (out.kind, out.link) = (TWINHUB_EVENT_LINK_DISARMED, link.0)
            }
            Event::BudgetExhausted { link } => {
                (out.kind, out.link) = (TWINHUB_EVENT_BUDGET_EXHAUSTED, link.0)
            }
            Event::Dropped { id, reason } => {
                out.kind = TWINHUB_EVENT_DROPPED;
                out.record = twinhub_record_key {
                    epoch: id.epoch,
                    seq: id.seq,
                };
                out.reason = match reason {
                    DropReason::Expired => twinhub_drop_reason::TWINHUB_DROP_EXPIRED,
                    DropReason::Evicted => twinhub_drop_reason::TWINHUB_DROP_EVICTED,
                    DropReason::TooLarge => twinhub_drop_reason::TWINHUB_DROP_TOO_LARGE,
                    DropReason::Malformed => twinhub_drop_reason::TWINHUB_DROP_MALFORMED,
                    DropReason::Corrupt => twinhub_drop_reason::TWINHUB_DROP_CORRUPT,
                };
            }
            Event::AuthFailed { endpoint } => {
                (out.kind, out.endpoint) = (TWINHUB_EVENT_AUTH_FAILED, endpoint.0)
            }
            _ => {}
        }
        out
    }
}

/// The next event into `*event`: `TWINHUB_OK`, or `TWINHUB_NONE` when there is none. The
/// producer holds a few events; drain them after every call (more are counted lost).
///
/// # Safety
///
/// `p` is NULL or a producer's storage; `event` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_producer_poll_event(
    p: *mut twinhub_producer,
    event: *mut twinhub_event,
) -> twinhub_result {
    if event.is_null() {
        return TWINHUB_ERR_NULL_POINTER;
    }
    // SAFETY: the caller's contract.
    match unsafe { with(p, |e| Ok(e.poll_event())) } {
        Ok(Some(ev)) => {
            // SAFETY: the caller's contract; not NULL.
            unsafe { event.write(ev.into()) };
            TWINHUB_OK
        }
        Ok(None) => TWINHUB_NONE,
        Err(e) => e,
    }
}

/// The producer's counters. `accepted == delivered + pending + dropped` always holds.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct twinhub_stats {
    /// Records accepted (plus those recovered from the store at init).
    pub accepted: u64,
    /// Records delivered (mirror routing: to every endpoint).
    pub delivered: u64,
    /// Records in the store, in flight or not.
    pub pending: u64,
    /// Payload bytes in the store.
    pub pending_bytes: u64,
    /// Records dropped, every reason.
    pub dropped: u64,
    /// Dropped: time to live passed.
    pub dropped_expired: u64,
    /// Dropped: evicted on a full store.
    pub dropped_evicted: u64,
    /// Dropped: rejected by a hub as too large.
    pub dropped_too_large: u64,
    /// Dropped: rejected by a hub as malformed.
    pub dropped_malformed: u64,
    /// Dropped: rotted in the store.
    pub dropped_corrupt: u64,
    /// Records whose outcome was ambiguous (a timeout): each may arrive twice.
    pub possible_duplicates: u64,
    /// Acknowledgements per endpoint.
    pub delivered_by_endpoint: [u64; TWINHUB_MAX_ENDPOINTS],
    /// Bytes handed out per link (what budgets are charged).
    pub link_bytes: [u64; TWINHUB_MAX_LINKS],
    /// Moves to a fallback endpoint.
    pub failovers: u32,
    /// Moves back to a preferred endpoint.
    pub failbacks: u32,
    /// Events lost because `twinhub_producer_poll_event` was not drained in time.
    pub events_lost: u32,
}

/// Copies the counters into `*out`.
///
/// # Safety
///
/// `p` is NULL or a producer's storage; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_producer_stats(
    p: *mut twinhub_producer,
    out: *mut twinhub_stats,
) -> twinhub_result {
    if out.is_null() {
        return TWINHUB_ERR_NULL_POINTER;
    }
    // SAFETY: the caller's contract.
    let s = match unsafe { with(p, |e| Ok(e.stats().clone())) } {
        Ok(s) => s,
        Err(e) => return e,
    };
    let d = s.dropped;
    let stats = twinhub_stats {
        accepted: s.accepted,
        delivered: s.delivered,
        pending: s.pending,
        pending_bytes: s.pending_bytes,
        dropped: d.total(),
        dropped_expired: d.expired,
        dropped_evicted: d.evicted,
        dropped_too_large: d.too_large,
        dropped_malformed: d.malformed,
        dropped_corrupt: d.corrupt,
        possible_duplicates: s.possible_duplicates,
        delivered_by_endpoint: s.delivered_by_endpoint,
        link_bytes: s.link_bytes,
        failovers: s.failovers,
        failbacks: s.failbacks,
        events_lost: s.events_lost,
    };
    // SAFETY: the caller's contract; not NULL.
    unsafe { out.write(stats) };
    TWINHUB_OK
}

/// This start's epoch into `*epoch` (part of every new message id).
///
/// # Safety
///
/// `p` is NULL or a producer's storage; `epoch` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_producer_epoch(
    p: *mut twinhub_producer,
    epoch: *mut u32,
) -> twinhub_result {
    // SAFETY: the caller's contract.
    status(unsafe { with(p, |e| put_req(epoch, e.epoch())) })
}

/// Writes the message id of record `key`, `device:epoch:seq`, NUL-terminated into `out`.
/// `*len_out`, if not NULL, gets its size with the terminator; `TWINHUB_ERR_BUFFER_TOO_SMALL`
/// (text truncated) when `out_len` is less. At most `TWINHUB_MAX_DEVICE_ID + 32` bytes.
///
/// # Safety
///
/// `p` is NULL or a producer's storage; `out` is valid for `out_len` bytes; `len_out` is
/// NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_producer_message_id(
    p: *mut twinhub_producer,
    key: twinhub_record_key,
    out: *mut c_char,
    out_len: usize,
    len_out: *mut usize,
) -> twinhub_result {
    // SAFETY: the caller's contract.
    status(unsafe {
        with(p, |e| {
            let device = e.config().device_id();
            // SAFETY: the caller's contract.
            write_text(out, out_len, len_out, |w| {
                write!(w, "{device}:{}:{}", key.epoch, key.seq)
            })
        })
    })
}

/// The health of a route.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum twinhub_route_health {
    /// Working, or not yet tried.
    TWINHUB_ROUTE_HEALTHY = 0,
    /// Failed recently; retried after a short back-off.
    TWINHUB_ROUTE_SUSPECT = 1,
    /// Given up on: only probes go there.
    TWINHUB_ROUTE_DOWN = 2,
    /// A probe is in flight.
    TWINHUB_ROUTE_PROBING = 3,
}

/// The health of the route `endpoint` over `link` into `*out`; `TWINHUB_ERR_NO_SUCH` for a
/// route the configuration does not have.
///
/// # Safety
///
/// `p` is NULL or a producer's storage; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_producer_route_health(
    p: *mut twinhub_producer,
    endpoint: u8,
    link: u8,
    out: *mut twinhub_route_health,
) -> twinhub_result {
    // SAFETY: the caller's contract.
    status(unsafe {
        with(p, |e| {
            if usize::from(endpoint) >= e.config().endpoints().len()
                || usize::from(link) >= e.config().links().len()
            {
                return Err(TWINHUB_ERR_NO_SUCH);
            }
            let h = match e.route_health(EndpointId(endpoint), LinkId(link)) {
                RouteHealth::Healthy => twinhub_route_health::TWINHUB_ROUTE_HEALTHY,
                RouteHealth::Suspect => twinhub_route_health::TWINHUB_ROUTE_SUSPECT,
                RouteHealth::Down => twinhub_route_health::TWINHUB_ROUTE_DOWN,
                RouteHealth::Probing => twinhub_route_health::TWINHUB_ROUTE_PROBING,
            };
            // SAFETY: the caller's contract.
            put_req(out, h)
        })
    })
}

/// The endpoint active-passive routing sends to now, into `*endpoint`.
///
/// # Safety
///
/// `p` is NULL or a producer's storage; `endpoint` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_producer_active_endpoint(
    p: *mut twinhub_producer,
    endpoint: *mut u8,
) -> twinhub_result {
    // SAFETY: the caller's contract.
    status(unsafe { with(p, |e| put_req(endpoint, e.active_endpoint().0)) })
}

/// Whether costly link `link` is armed, into `*armed`.
///
/// # Safety
///
/// `p` is NULL or a producer's storage; `armed` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_producer_link_armed(
    p: *mut twinhub_producer,
    link: u8,
    armed: *mut bool,
) -> twinhub_result {
    // SAFETY: the caller's contract.
    status(unsafe {
        with(p, |e| {
            if usize::from(link) >= e.config().links().len() {
                return Err(TWINHUB_ERR_NO_SUCH);
            }
            put_req(armed, e.link_armed(LinkId(link)))
        })
    })
}

/// A budgeted link's use of its current window into `*out`, for stores that keep it
/// themselves; `TWINHUB_ERR_NO_SUCH` for a link without a budget.
///
/// # Safety
///
/// `p` is NULL or a producer's storage; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_producer_link_spend(
    p: *mut twinhub_producer,
    link: u8,
    out: *mut twinhub_link_spend,
) -> twinhub_result {
    // SAFETY: the caller's contract.
    status(unsafe {
        with(p, |e| {
            let spend = e.link_spend(LinkId(link)).ok_or(TWINHUB_ERR_NO_SUCH)?;
            put_req(out, spend.into())
        })
    })
}

/// Sets active-active weights at runtime (blue-green, canary): `count` values, one per
/// endpoint in order, not all zero (`TWINHUB_ERR_BAD_WEIGHTS` otherwise).
///
/// # Safety
///
/// `p` is NULL or a producer's storage; `weights` is valid for `count` values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_producer_set_weights(
    p: *mut twinhub_producer,
    weights: *const u16,
    count: usize,
) -> twinhub_result {
    status((|| {
        if count > 0 && weights.is_null() {
            return Err(TWINHUB_ERR_NULL_POINTER);
        }
        if count > TWINHUB_MAX_ENDPOINTS {
            return Err(TWINHUB_ERR_BAD_WEIGHTS);
        }
        let w: &[u16] = if count == 0 {
            &[]
        } else {
            // SAFETY: not NULL, at most four values, which the caller vouches for.
            unsafe { core::slice::from_raw_parts(weights, count) }
        };
        // SAFETY: the caller's contract.
        unsafe { with(p, |e| e.set_weights(w).map_err(|_| TWINHUB_ERR_BAD_WEIGHTS)) }
    })())
}

/// Stops sending new records to `endpoint` (transmits in flight finish): for blue-green
/// switches and maintenance. `TWINHUB_ERR_NO_SUCH` for an unknown endpoint.
///
/// # Safety
///
/// `p` is NULL or a producer's storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_producer_drain(
    p: *mut twinhub_producer,
    endpoint: u8,
) -> twinhub_result {
    // SAFETY: the caller's contract.
    status(unsafe {
        with(p, |e| {
            e.drain(EndpointId(endpoint))
                .map_err(|_| TWINHUB_ERR_NO_SUCH)
        })
    })
}

/// Undoes `twinhub_producer_drain`.
///
/// # Safety
///
/// `p` is NULL or a producer's storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_producer_undrain(
    p: *mut twinhub_producer,
    endpoint: u8,
) -> twinhub_result {
    // SAFETY: the caller's contract.
    status(unsafe {
        with(p, |e| {
            e.undrain(EndpointId(endpoint))
                .map_err(|_| TWINHUB_ERR_NO_SUCH)
        })
    })
}
