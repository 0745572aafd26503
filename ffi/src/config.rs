//! Building a configuration by calls that return statuses.

use core::ffi::c_char;
use core::fmt::Write as _;

use twinhub_core::config::MAX_NAME;
use twinhub_core::id::MAX_DEVICE_ID;
use twinhub_core::{
    Budget, Class, ClassSet, Config, ConfigError, DeviceId, Duration, EndpointConfig, LinkConfig,
    MAX_ENDPOINTS, MAX_INFLIGHT, MAX_LINKS, OnFull, Routing, Timings,
};

use crate::types::*;

/// Most endpoints (hubs) a producer can route to.
pub const TWINHUB_MAX_ENDPOINTS: usize = 4;
/// Most links (network paths) a producer can use.
pub const TWINHUB_MAX_LINKS: usize = 3;
/// Longest endpoint or link name, in bytes.
pub const TWINHUB_MAX_NAME: usize = 32;
/// Longest device id, in bytes.
pub const TWINHUB_MAX_DEVICE_ID: usize = 128;

const _: () = assert!(TWINHUB_MAX_ENDPOINTS == MAX_ENDPOINTS && TWINHUB_MAX_LINKS == MAX_LINKS);
const _: () = assert!(TWINHUB_MAX_NAME == MAX_NAME && TWINHUB_MAX_DEVICE_ID == MAX_DEVICE_ID);

/// `uint64_t` words of a [`twinhub_config`].
pub const TWINHUB_CONFIG_WORDS: usize = 128;
/// Bytes of a [`twinhub_config`].
pub const TWINHUB_CONFIG_SIZE: usize = TWINHUB_CONFIG_WORDS * 8;

/// A configuration being built: caller-owned storage (it may live on the stack; the
/// producer copies what it needs at `twinhub_producer_init`). Opaque: use the
/// `twinhub_config_*` functions. Not for use from interrupts.
#[repr(C)]
pub struct twinhub_config {
    _opaque: [u64; TWINHUB_CONFIG_WORDS],
}

/// Health and failover timings, in milliseconds. Start from `twinhub_timings_default`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct twinhub_timings {
    /// Time with failures or a stalled send and no success that takes a route down (5 s).
    pub trip_after_ms: u64,
    /// First retry delay on a suspect route; doubles per failure, full jitter (250 ms).
    pub retry_base_ms: u64,
    /// First probe of a down route; doubles per failed probe, full jitter (1 s).
    pub probe_first_ms: u64,
    /// Longest probe interval (30 s).
    pub probe_max_ms: u64,
    /// Least time on a fallback endpoint before failing back (30 s).
    pub min_dwell_ms: u64,
    /// A transmit without an outcome after this is a timeout (10 s).
    pub request_timeout_ms: u64,
    /// Back-off after a throttle without a retry-after (4 s).
    pub throttle_backoff_ms: u64,
    /// Throttled without a success for this long takes the endpoint down (60 s).
    pub throttle_failover_after_ms: u64,
    /// Wait this long for more records before sending a partial batch (0).
    pub linger_ms: u64,
    /// Consecutive failures that take a route down (3).
    pub trip_failures: u8,
    /// Consecutive probe successes that bring a route back (3).
    pub failback_probes: u8,
}

impl From<&Timings> for twinhub_timings {
    fn from(t: &Timings) -> Self {
        twinhub_timings {
            trip_after_ms: t.trip_after.as_millis(),
            retry_base_ms: t.retry_base.as_millis(),
            probe_first_ms: t.probe_first.as_millis(),
            probe_max_ms: t.probe_max.as_millis(),
            min_dwell_ms: t.min_dwell.as_millis(),
            request_timeout_ms: t.request_timeout.as_millis(),
            throttle_backoff_ms: t.throttle_backoff.as_millis(),
            throttle_failover_after_ms: t.throttle_failover_after.as_millis(),
            linger_ms: t.linger.as_millis(),
            trip_failures: t.trip_failures,
            failback_probes: t.failback_probes,
        }
    }
}

impl From<&twinhub_timings> for Timings {
    fn from(t: &twinhub_timings) -> Self {
        let ms = Duration::from_millis;
        Timings {
            trip_failures: t.trip_failures,
            trip_after: ms(t.trip_after_ms),
            retry_base: ms(t.retry_base_ms),
            probe_first: ms(t.probe_first_ms),
            probe_max: ms(t.probe_max_ms),
            failback_probes: t.failback_probes,
            min_dwell: ms(t.min_dwell_ms),
            request_timeout: ms(t.request_timeout_ms),
            throttle_backoff: ms(t.throttle_backoff_ms),
            throttle_failover_after: ms(t.throttle_failover_after_ms),
            linger: ms(t.linger_ms),
        }
    }
}

/// Marks initialised storage: calls on zeroed (`static`) storage are refused.
const MAGIC: u32 = 0x7457_4346; // "tWCF"

/// What the calls collect; validated as a whole by [`Config::builder`].
pub(crate) struct Parts {
    device: heapless::String<MAX_DEVICE_ID>,
    routing: Routing,
    endpoints: heapless::Vec<EndpointConfig, MAX_ENDPOINTS>,
    links: heapless::Vec<LinkConfig, MAX_LINKS>,
    ttl: [Duration; 3],
    timings: Timings,
    on_full: OnFull,
    max_inflight: u8,
}

impl Parts {
    pub(crate) fn build(&self) -> Result<Config, ConfigError> {
        let mut b = Config::builder(&self.device)
            .routing(self.routing)
            .timings(self.timings)
            .on_full(self.on_full)
            .max_inflight(self.max_inflight);
        for e in &self.endpoints {
            b = b.endpoint(e.clone());
        }
        for l in &self.links {
            b = b.link(l.clone());
        }
        for (class, ttl) in Class::ALL.into_iter().zip(self.ttl) {
            b = b.ttl(class, ttl);
        }
        b.build()
    }
}

struct Slot {
    magic: u32,
    parts: Parts,
}

const _: () = assert!(
    size_of::<Slot>() <= size_of::<twinhub_config>()
        && align_of::<Slot>() <= align_of::<twinhub_config>(),
    "TWINHUB_CONFIG_SIZE is too small for the configuration on this target"
);

/// The collected parts of an initialised configuration.
///
/// # Safety
///
/// `cfg` is NULL or points to a `twinhub_config` the caller owns, not used by anything
/// else for `'a`.
pub(crate) unsafe fn parts<'a>(cfg: *const twinhub_config) -> Result<&'a Parts, twinhub_result> {
    let slot = cfg.cast::<Slot>();
    if slot.is_null() {
        return Err(TWINHUB_ERR_NULL_POINTER);
    }
    if !slot.is_aligned() {
        return Err(TWINHUB_ERR_INVALID_ARGUMENT);
    }
    // SAFETY: aligned, not NULL and at least `size_of::<Slot>()` bytes (the assert above);
    // the magic word is read on its own before anything else is trusted.
    if unsafe { core::ptr::addr_of!((*slot).magic).read() } != MAGIC {
        return Err(TWINHUB_ERR_NOT_INITIALIZED);
    }
    // SAFETY: the magic word says `twinhub_config_init` wrote a whole `Slot` here.
    Ok(unsafe { &(*slot).parts })
}

/// As [`parts`], for changes.
///
/// # Safety
///
/// As for [`parts`].
unsafe fn parts_mut<'a>(cfg: *mut twinhub_config) -> Result<&'a mut Parts, twinhub_result> {
    // SAFETY: the caller's contract; the storage is the caller's to change.
    unsafe { parts(cfg) }?;
    // SAFETY: `parts` checked it is an initialised, aligned `Slot`.
    Ok(unsafe { &mut (*cfg.cast::<Slot>()).parts })
}

fn endpoint_mut(p: &mut Parts, index: u8) -> Result<&mut EndpointConfig, twinhub_result> {
    p.endpoints
        .get_mut(usize::from(index))
        .ok_or(TWINHUB_ERR_NO_SUCH)
}

fn link_mut(p: &mut Parts, index: u8) -> Result<&mut LinkConfig, twinhub_result> {
    p.links
        .get_mut(usize::from(index))
        .ok_or(TWINHUB_ERR_NO_SUCH)
}

/// Starts a configuration for `device_id` (NUL-terminated, 1 to 128 bytes from IoT Hub's
/// set: letters, digits and `-.+%_#*?!(),:=@$'`), with the engine's defaults: active-passive
/// routing, evict on full, 30 days' time to live, the default timings, no endpoint and no
/// link (one free link called `default` is added at init if none is). The string is copied.
///
/// Returns `TWINHUB_ERR_DEVICE_ID` for an id IoT Hub would refuse.
///
/// # Safety
///
/// `cfg` is NULL or points to `TWINHUB_CONFIG_SIZE` writable bytes aligned as
/// `twinhub_config`; `device_id` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_config_init(
    cfg: *mut twinhub_config,
    device_id: *const c_char,
) -> twinhub_result {
    let slot = cfg.cast::<Slot>();
    if slot.is_null() {
        return TWINHUB_ERR_NULL_POINTER;
    }
    if !slot.is_aligned() {
        return TWINHUB_ERR_INVALID_ARGUMENT;
    }
    // SAFETY: the caller's contract.
    let id = match unsafe { text(device_id, MAX_DEVICE_ID) } {
        Ok(id) => id,
        Err(TWINHUB_ERR_INVALID_ARGUMENT) => return TWINHUB_ERR_DEVICE_ID,
        Err(e) => return e,
    };
    if DeviceId::new(id).is_err() {
        return TWINHUB_ERR_DEVICE_ID;
    }
    let mut device = heapless::String::new();
    if device.push_str(id).is_err() {
        return TWINHUB_ERR_DEVICE_ID;
    }
    // The engine's defaults (`Config::builder` keeps its own private).
    let parts = Parts {
        device,
        routing: Routing::default(),
        endpoints: heapless::Vec::new(),
        links: heapless::Vec::new(),
        ttl: [Duration::from_days(30); 3],
        timings: Timings::default(),
        on_full: OnFull::default(),
        max_inflight: MAX_INFLIGHT as u8,
    };
    // SAFETY: `slot` is aligned, not NULL and has room for a `Slot` (the caller's
    // contract and the assert above); `write` does not read the old, possibly
    // uninitialised, bytes.
    unsafe {
        slot.write(Slot {
            magic: MAGIC,
            parts,
        })
    };
    TWINHUB_OK
}

/// Sets the routing mode (default active-passive).
///
/// # Safety
///
/// `cfg` is NULL or a configuration initialised by `twinhub_config_init`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_config_set_routing(
    cfg: *mut twinhub_config,
    routing: RawRouting,
) -> twinhub_result {
    status((|| {
        let routing = routing.get()?;
        // SAFETY: the caller's contract.
        unsafe { parts_mut(cfg) }?.routing = routing;
        Ok(())
    })())
}

/// Adds an endpoint (a hub) with Event Hubs-sized defaults (records up to 255 KiB, batches
/// up to 256 KiB and 100 records, weight 1); the order of calls is the failover priority.
/// `name` (NUL-terminated, 1 to 32 bytes, unique) is copied. `*index_out`, if not NULL,
/// gets the endpoint's index, as transmits and events name it.
///
/// # Safety
///
/// `cfg` is NULL or initialised; `name` is NULL or NUL-terminated; `index_out` is NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_config_add_endpoint(
    cfg: *mut twinhub_config,
    name: *const c_char,
    index_out: *mut u8,
) -> twinhub_result {
    status((|| {
        // SAFETY: the caller's contract.
        let p = unsafe { parts_mut(cfg) }?;
        // SAFETY: the caller's contract.
        let name = unsafe { text(name, MAX_NAME) }?;
        let index = p.endpoints.len() as u8;
        p.endpoints
            .push(EndpointConfig::new(name))
            .map_err(|_| TWINHUB_ERR_TOO_MANY)?;
        // SAFETY: the caller's contract.
        unsafe { put(index_out, index) };
        Ok(())
    })())
}

/// Sets an endpoint's limits: the largest record payload, the largest batch (payloads plus
/// `record_overhead` per record), the most records per transmit, and the bytes the
/// transport adds per record. Checked as a whole at `twinhub_config_check` and init.
///
/// # Safety
///
/// `cfg` is NULL or initialised.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_config_set_endpoint_limits(
    cfg: *mut twinhub_config,
    endpoint: u8,
    max_record_bytes: u32,
    max_batch_bytes: u32,
    max_batch_records: u16,
    record_overhead: u32,
) -> twinhub_result {
    status((|| {
        // SAFETY: the caller's contract.
        let e = endpoint_mut(unsafe { parts_mut(cfg) }?, endpoint)?;
        e.max_record_bytes = max_record_bytes;
        e.max_batch_bytes = max_batch_bytes;
        e.max_batch_records = max_batch_records;
        e.record_overhead = record_overhead;
        Ok(())
    })())
}

/// Sets an endpoint's share in active-active routing (default 1; ignored otherwise).
///
/// # Safety
///
/// `cfg` is NULL or initialised.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_config_set_endpoint_weight(
    cfg: *mut twinhub_config,
    endpoint: u8,
    weight: u16,
) -> twinhub_result {
    status((|| {
        // SAFETY: the caller's contract.
        endpoint_mut(unsafe { parts_mut(cfg) }?, endpoint)?.weight = weight;
        Ok(())
    })())
}

/// Adds a link (a network path) of the given cost. A costly link starts unusable: it
/// carries only critical records, has no budget (set one with
/// `twinhub_config_set_link_budget`) and arms only after every cheaper route has been down
/// for 15 minutes. `name` (NUL-terminated, 1 to 32 bytes, unique) is copied; `*index_out`,
/// if not NULL, gets the link's index.
///
/// # Safety
///
/// `cfg` is NULL or initialised; `name` is NULL or NUL-terminated; `index_out` is NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_config_add_link(
    cfg: *mut twinhub_config,
    name: *const c_char,
    cost: RawCost,
    index_out: *mut u8,
) -> twinhub_result {
    status((|| {
        let cost = cost.get()?;
        // SAFETY: the caller's contract.
        let p = unsafe { parts_mut(cfg) }?;
        // SAFETY: the caller's contract.
        let name = unsafe { text(name, MAX_NAME) }?;
        let index = p.links.len() as u8;
        p.links
            .push(LinkConfig::new(name, cost))
            .map_err(|_| TWINHUB_ERR_TOO_MANY)?;
        // SAFETY: the caller's contract.
        unsafe { put(index_out, index) };
        Ok(())
    })())
}

/// Gives a link a budget: `bytes` per window of `window_ms` (fixed windows from the
/// producer's start). Spend never exceeds it. `bytes` of 0 removes the budget, which makes
/// a costly link unusable again.
///
/// # Safety
///
/// `cfg` is NULL or initialised.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_config_set_link_budget(
    cfg: *mut twinhub_config,
    link_index: u8,
    bytes: u64,
    window_ms: u64,
) -> twinhub_result {
    status((|| {
        // SAFETY: the caller's contract.
        let l = link_mut(unsafe { parts_mut(cfg) }?, link_index)?;
        l.budget = (bytes > 0).then_some(Budget {
            bytes,
            window: Duration::from_millis(window_ms),
        });
        Ok(())
    })())
}

/// Sets the classes a link may carry, as a mask of `TWINHUB_CLASSES_*` bits.
///
/// # Safety
///
/// `cfg` is NULL or initialised.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_config_set_link_allow(
    cfg: *mut twinhub_config,
    link_index: u8,
    classes: u32,
) -> twinhub_result {
    status((|| {
        if classes & !TWINHUB_CLASSES_ALL != 0 {
            return Err(TWINHUB_ERR_INVALID_ARGUMENT);
        }
        let mut set = ClassSet::NONE;
        for (bit, class) in Class::ALL.into_iter().enumerate() {
            if classes & (1 << bit) != 0 {
                set = set.with(class);
            }
        }
        // SAFETY: the caller's contract.
        link_mut(unsafe { parts_mut(cfg) }?, link_index)?.allow = set;
        Ok(())
    })())
}

/// Sets how long every cheaper route must have been down before a costly link is armed.
///
/// # Safety
///
/// `cfg` is NULL or initialised.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_config_set_link_arm_after(
    cfg: *mut twinhub_config,
    link_index: u8,
    arm_after_ms: u64,
) -> twinhub_result {
    status((|| {
        // SAFETY: the caller's contract.
        link_mut(unsafe { parts_mut(cfg) }?, link_index)?.arm_after =
            Duration::from_millis(arm_after_ms);
        Ok(())
    })())
}

/// Sets the bytes the driver adds per record on a link (its framing), charged to the
/// link's budget with each record's frame.
///
/// # Safety
///
/// `cfg` is NULL or initialised.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_config_set_link_frame_overhead(
    cfg: *mut twinhub_config,
    link_index: u8,
    bytes: u32,
) -> twinhub_result {
    status((|| {
        // SAFETY: the caller's contract.
        link_mut(unsafe { parts_mut(cfg) }?, link_index)?.frame_overhead = bytes;
        Ok(())
    })())
}

/// Sets a class's time to live (default 30 days); a record older than it is dropped,
/// counted and evented.
///
/// # Safety
///
/// `cfg` is NULL or initialised.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_config_set_ttl(
    cfg: *mut twinhub_config,
    class: RawClass,
    ttl_ms: u64,
) -> twinhub_result {
    status((|| {
        let class = class.get()?;
        // SAFETY: the caller's contract.
        let p = unsafe { parts_mut(cfg) }?;
        if let Some(t) = p.ttl.get_mut(class as usize) {
            *t = Duration::from_millis(ttl_ms);
        }
        Ok(())
    })())
}

/// Sets what a full outbox does (default evict).
///
/// # Safety
///
/// `cfg` is NULL or initialised.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_config_set_on_full(
    cfg: *mut twinhub_config,
    on_full: RawOnFull,
) -> twinhub_result {
    status((|| {
        let on_full = on_full.get()?;
        // SAFETY: the caller's contract.
        unsafe { parts_mut(cfg) }?.on_full = on_full;
        Ok(())
    })())
}

/// Sets the most transmits in flight at once (1 to 4, default 4).
///
/// # Safety
///
/// `cfg` is NULL or initialised.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_config_set_max_inflight(
    cfg: *mut twinhub_config,
    max_inflight: u8,
) -> twinhub_result {
    status((|| {
        // SAFETY: the caller's contract.
        unsafe { parts_mut(cfg) }?.max_inflight = max_inflight;
        Ok(())
    })())
}

/// Writes the default timings into `*out`. May be called from an interrupt.
///
/// # Safety
///
/// `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_timings_default(out: *mut twinhub_timings) -> twinhub_result {
    // SAFETY: the caller's contract.
    status(unsafe { put_req(out, twinhub_timings::from(&Timings::default())) })
}

/// Sets the timings (copied). Checked as a whole at `twinhub_config_check` and init.
///
/// # Safety
///
/// `cfg` is NULL or initialised; `timings` is NULL or readable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_config_set_timings(
    cfg: *mut twinhub_config,
    timings: *const twinhub_timings,
) -> twinhub_result {
    status((|| {
        // SAFETY: the caller's contract.
        let t = Timings::from(unsafe { arg(timings) }?);
        // SAFETY: the caller's contract.
        unsafe { parts_mut(cfg) }?.timings = t;
        Ok(())
    })())
}

/// Checks the configuration as `twinhub_producer_init` will. On `TWINHUB_ERR_CONFIG` it
/// writes why into `msg` (NUL-terminated, truncated to `msg_len`; e.g.
/// `endpoint[1].name: is used by an earlier endpoint`), and `*msg_len_out`, if not NULL,
/// gets the message's full size with its terminator. `msg` may be NULL when `msg_len` is 0.
///
/// # Safety
///
/// `cfg` is NULL or initialised; `msg` is valid for `msg_len` bytes; `msg_len_out` is NULL
/// or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_config_check(
    cfg: *const twinhub_config,
    msg: *mut c_char,
    msg_len: usize,
    msg_len_out: *mut usize,
) -> twinhub_result {
    // SAFETY: the caller's contract.
    let p = match unsafe { parts(cfg) } {
        Ok(p) => p,
        Err(e) => return e,
    };
    match p.build() {
        Ok(_) => {
            // SAFETY: the caller's contract.
            unsafe { put(msg_len_out, 0) };
            TWINHUB_OK
        }
        Err(e) => {
            // SAFETY: the caller's contract. A message that does not fit is truncated:
            // the status stays the configuration's.
            let _ = unsafe { write_text(msg, msg_len, msg_len_out, |w| write!(w, "{e}")) };
            TWINHUB_ERR_CONFIG
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> twinhub_config {
        twinhub_config {
            _opaque: [0; TWINHUB_CONFIG_WORDS],
        }
    }

    #[test]
    fn calls_build_and_check_a_configuration() {
        let mut c = cfg();
        let mut i = 9u8;
        unsafe {
            assert_eq!(
                twinhub_config_add_endpoint(&mut c, c"a".as_ptr(), &mut i),
                TWINHUB_ERR_NOT_INITIALIZED
            );
            assert_eq!(
                twinhub_config_init(&mut c, c"bad id".as_ptr()),
                TWINHUB_ERR_DEVICE_ID
            );
            assert_eq!(
                twinhub_config_init(&mut c, c"sensor-1".as_ptr()),
                TWINHUB_OK
            );
            assert_eq!(
                twinhub_config_add_endpoint(&mut c, c"primary".as_ptr(), &mut i),
                TWINHUB_OK
            );
            assert_eq!(i, 0);
            assert_eq!(
                twinhub_config_add_endpoint(&mut c, c"primary".as_ptr(), &mut i),
                TWINHUB_OK
            );
            assert_eq!(i, 1);
            assert_eq!(
                twinhub_config_set_routing(&mut c, RawRouting(9)),
                TWINHUB_ERR_INVALID_ARGUMENT
            );
            assert_eq!(
                twinhub_config_set_link_budget(&mut c, 0, 1, 1),
                TWINHUB_ERR_NO_SUCH
            );
            assert_eq!(
                twinhub_config_add_link(&mut c, c"sat".as_ptr(), RawCost(2), &mut i),
                TWINHUB_OK
            );
            assert_eq!(
                twinhub_config_set_link_allow(&mut c, 0, 8),
                TWINHUB_ERR_INVALID_ARGUMENT
            );
            let mut msg = [0 as c_char; 16];
            let mut need = 0usize;
            assert_eq!(
                twinhub_config_check(&c, msg.as_mut_ptr(), msg.len(), &mut need),
                TWINHUB_ERR_CONFIG
            );
            let full = "endpoint[1].name: is used by an earlier endpoint";
            assert_eq!(need, full.len() + 1);
            let mut msg = [0 as c_char; 64];
            twinhub_config_check(&c, msg.as_mut_ptr(), msg.len(), &mut need);
            let got = core::ffi::CStr::from_ptr(msg.as_ptr()).to_str().unwrap();
            assert_eq!(got, full);
            assert_eq!(
                twinhub_config_check(core::ptr::null(), core::ptr::null_mut(), 0, &mut need),
                TWINHUB_ERR_NULL_POINTER
            );
        }
    }
}
