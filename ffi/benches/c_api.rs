//! The C API's cost per record beside the Rust engine's, in the same run: one record
//! enqueued, handed out as a transmit, its records read back as a driver does, and
//! delivered. The C API side goes through the `extern "C"` functions with a callback store
//! that does what a C RAM store does (`ffi/c/ram_store.c`: copy the frame in, find it,
//! copy it out); the Rust side is `twinhub_core::Engine<RamStore<4096>>` called directly, as
//! sdk-nostd's cycle bench does. The ratio line also times the Rust engine on the same
//! ring store written as a Rust `Store`, which leaves the C API layer alone in the ratio.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc,
    missing_docs
)]

use std::ffi::c_void;
use std::hint::black_box;
use std::time::Instant as Clock;

use criterion::{Criterion, criterion_group, criterion_main};
use twinhub_core::frame::{self, RecordMeta};
use twinhub_core::{
    Class, Config, EndpointConfig, Instant, Outcome, RamStore, RecordInfo, RecordKey, Store,
    StoreError,
};
use twinhub_ffi::*;

const PAYLOAD: [u8; 64] = [0x5a; 64];
const SLOTS: usize = 64;
const SLOT: usize = 128;

/// A fixed ring of frame slots in key order, as a C store over RAM keeps them.
struct Ring {
    info: [twinhub_record_info; SLOTS],
    live: [bool; SLOTS],
    frames: [[u8; SLOT]; SLOTS],
    head: usize,
    len: usize,
    used: usize,
}

impl Ring {
    fn new() -> Box<Self> {
        Box::new(Ring {
            info: [twinhub_record_info::default(); SLOTS],
            live: [false; SLOTS],
            frames: [[0; SLOT]; SLOTS],
            head: 0,
            len: 0,
            used: 0,
        })
    }

    fn find(&self, key: twinhub_record_key) -> Option<usize> {
        (0..self.len)
            .map(|i| (self.head + i) % SLOTS)
            .find(|&s| self.live[s] && self.info[s].key == key)
    }
}

fn ring<'a>(u: *mut c_void) -> &'a mut Ring {
    unsafe { &mut *u.cast::<Ring>() }
}

fn ok() -> twinhub_result {
    twinhub_result::TWINHUB_OK
}

unsafe extern "C" fn append(
    u: *mut c_void,
    info: *const twinhub_record_info,
    frame: *const u8,
) -> RawResult {
    let r = ring(u);
    let info = unsafe { *info };
    if r.len == SLOTS || info.frame_len as usize > SLOT {
        return twinhub_result::TWINHUB_ERR_FULL.into();
    }
    let s = (r.head + r.len) % SLOTS;
    let n = info.frame_len as usize;
    r.frames[s][..n].copy_from_slice(unsafe { std::slice::from_raw_parts(frame, n) });
    r.info[s] = info;
    r.live[s] = true;
    r.len += 1;
    r.used += SLOT;
    ok().into()
}

unsafe extern "C" fn next_after(
    u: *mut c_void,
    after: *const twinhub_record_key,
    out: *mut twinhub_record_info,
    found: *mut bool,
) -> RawResult {
    let r = ring(u);
    let after = unsafe { after.as_ref() };
    let above = |k: &twinhub_record_key| after.is_none_or(|a| (k.epoch, k.seq) > (a.epoch, a.seq));
    let hit = (0..r.len)
        .map(|i| (r.head + i) % SLOTS)
        .find(|&s| r.live[s] && above(&r.info[s].key));
    unsafe {
        *found = hit.is_some();
        if let Some(s) = hit {
            *out = r.info[s];
        }
    }
    ok().into()
}

unsafe extern "C" fn read(
    u: *mut c_void,
    key: twinhub_record_key,
    out: *mut u8,
    out_len: usize,
    frame_len: *mut usize,
) -> RawResult {
    let r = ring(u);
    let Some(s) = r.find(key) else {
        return twinhub_result::TWINHUB_ERR_NO_SUCH.into();
    };
    let n = r.info[s].frame_len as usize;
    unsafe { *frame_len = n };
    if out_len < n {
        return twinhub_result::TWINHUB_ERR_BUFFER_TOO_SMALL.into();
    }
    unsafe { std::ptr::copy_nonoverlapping(r.frames[s].as_ptr(), out, n) };
    ok().into()
}

unsafe extern "C" fn remove(u: *mut c_void, key: twinhub_record_key) -> RawResult {
    let r = ring(u);
    let Some(s) = r.find(key) else {
        return twinhub_result::TWINHUB_ERR_NO_SUCH.into();
    };
    r.live[s] = false;
    r.used -= SLOT;
    while r.len > 0 && !r.live[r.head] {
        r.head = (r.head + 1) % SLOTS;
        r.len -= 1;
    }
    ok().into()
}

unsafe extern "C" fn len(u: *mut c_void) -> usize {
    ring(u).live.iter().filter(|l| **l).count()
}

unsafe extern "C" fn capacity(_: *mut c_void) -> usize {
    SLOTS * SLOT
}

unsafe extern "C" fn cost(_: *mut c_void, _frame_len: usize) -> usize {
    SLOT
}

unsafe extern "C" fn fits(u: *mut c_void, frame_len: usize) -> bool {
    let r = ring(u);
    frame_len <= SLOT && r.len < SLOTS && r.used + SLOT <= SLOTS * SLOT
}

/// A producer on the C API with a ring store: everything in caller-owned boxes.
struct CApi {
    p: Box<twinhub_producer>,
    _ring: Box<Ring>,
    _frame_buf: Box<[u8; 256]>,
    now: u64,
}

impl CApi {
    fn new() -> Self {
        let mut cfg: Box<twinhub_config> = Box::new(unsafe { std::mem::zeroed() });
        unsafe {
            assert_eq!(
                twinhub_config_init(&mut *cfg, c"bench-device-0001".as_ptr()),
                twinhub_result::TWINHUB_OK
            );
            for name in [c"primary", c"secondary"] {
                let r = twinhub_config_add_endpoint(&mut *cfg, name.as_ptr(), std::ptr::null_mut());
                assert_eq!(r, twinhub_result::TWINHUB_OK);
            }
        }
        let mut ring = Ring::new();
        let mut frame_buf = Box::new([0u8; 256]);
        let table = twinhub_store {
            userdata: (&mut *ring as *mut Ring).cast(),
            frame_buf: frame_buf.as_mut_ptr(),
            frame_buf_len: frame_buf.len(),
            append: Some(append),
            next_after: Some(next_after),
            read: Some(read),
            remove: Some(remove),
            len: Some(len),
            capacity: Some(capacity),
            cost: Some(cost),
            fits: Some(fits),
            next_epoch: None,
            load_spend: None,
            save_spend: None,
        };
        let mut p: Box<twinhub_producer> = Box::new(unsafe { std::mem::zeroed() });
        let r = unsafe { twinhub_producer_init(&mut *p, &*cfg, &table, 0, 1, 1) };
        assert_eq!(r, twinhub_result::TWINHUB_OK);
        CApi {
            p,
            _ring: ring,
            _frame_buf: frame_buf,
            now: 0,
        }
    }

    /// One record through the C API: enqueue, transmit, read its records, deliver.
    fn cycle(&mut self, buf: &mut [u8]) -> u64 {
        self.now += 1;
        let p = &mut *self.p;
        let mut key = twinhub_record_key::default();
        let mut tx = twinhub_transmit::default();
        let mut seen = 0;
        unsafe {
            let payload = black_box(&PAYLOAD);
            let r = twinhub_producer_enqueue(
                p,
                self.now,
                payload.as_ptr(),
                payload.len(),
                RawClass(twinhub_class::TWINHUB_CLASS_NORMAL as u32),
                &mut key,
                std::ptr::null_mut(),
            );
            debug_assert_eq!(r, twinhub_result::TWINHUB_OK);
            let r = twinhub_producer_poll_transmit(
                p,
                self.now,
                buf.as_mut_ptr(),
                buf.len(),
                &mut tx,
                std::ptr::null_mut(),
            );
            debug_assert_eq!(r, twinhub_result::TWINHUB_OK);
            let mut offset = 0usize;
            let mut rec = std::mem::MaybeUninit::<twinhub_record>::uninit();
            while twinhub_transmit_record(buf.as_ptr(), tx.len, &mut offset, rec.as_mut_ptr())
                == twinhub_result::TWINHUB_OK
            {
                seen += rec.assume_init_ref().payload_len;
            }
            twinhub_producer_handle_outcome(
                p,
                self.now,
                tx.id,
                RawOutcome(twinhub_outcome::TWINHUB_OUTCOME_DELIVERED as u32),
                TWINHUB_NO_RETRY_AFTER,
            );
        }
        key.seq + seen as u64
    }
}

/// The ring as a Rust store: the same work without the C API in between.
struct RustRing(Box<Ring>);

impl RustRing {
    fn info(&self, s: usize) -> RecordInfo {
        let i = self.0.info[s];
        RecordInfo {
            meta: RecordMeta {
                epoch: i.key.epoch,
                seq: i.key.seq,
                class: Class::Normal,
                enqueued_at: Instant::from_millis(i.enqueued_at_ms),
            },
            payload_len: i.payload_len,
            frame_len: i.frame_len,
        }
    }

    fn find(&self, key: RecordKey) -> Result<usize, StoreError> {
        self.0
            .find(twinhub_record_key {
                epoch: key.epoch,
                seq: key.seq,
            })
            .ok_or(StoreError::NoSuchRecord)
    }
}

impl Store for RustRing {
    fn len(&self) -> usize {
        self.0.live.iter().filter(|l| **l).count()
    }
    fn capacity(&self) -> usize {
        SLOTS * SLOT
    }
    fn cost(&self, _: usize) -> usize {
        SLOT
    }
    fn fits(&self, frame_len: usize) -> bool {
        frame_len <= SLOT && self.0.len < SLOTS
    }
    fn append(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<(), StoreError> {
        let r = &mut self.0;
        if r.len == SLOTS {
            return Err(StoreError::Full);
        }
        let s = (r.head + r.len) % SLOTS;
        let n = frame::encode(meta, payload, &mut r.frames[s]).map_err(StoreError::Corrupt)?;
        r.info[s] = twinhub_record_info {
            key: twinhub_record_key {
                epoch: meta.epoch,
                seq: meta.seq,
            },
            enqueued_at_ms: meta.enqueued_at.as_millis(),
            record_class: RawClass(meta.class as u32),
            payload_len: payload.len() as u32,
            frame_len: n as u32,
        };
        r.live[s] = true;
        r.len += 1;
        Ok(())
    }
    fn next_after(&mut self, after: Option<RecordKey>) -> Result<Option<RecordInfo>, StoreError> {
        let r = &self.0;
        let hit = (0..r.len).map(|i| (r.head + i) % SLOTS).find(|&s| {
            r.live[s]
                && after.is_none_or(|a| (r.info[s].key.epoch, r.info[s].key.seq) > (a.epoch, a.seq))
        });
        Ok(hit.map(|s| self.info(s)))
    }
    fn read(&mut self, key: RecordKey, out: &mut [u8]) -> Result<usize, StoreError> {
        let s = self.find(key)?;
        let n = self.0.info[s].frame_len as usize;
        out.get_mut(..n)
            .ok_or(StoreError::Corrupt(frame::FrameError::BufferTooSmall))?
            .copy_from_slice(&self.0.frames[s][..n]);
        Ok(n)
    }
    fn remove(&mut self, key: RecordKey) -> Result<(), StoreError> {
        let s = self.find(key)?;
        let r = &mut self.0;
        r.live[s] = false;
        while r.len > 0 && !r.live[r.head] {
            r.head = (r.head + 1) % SLOTS;
            r.len -= 1;
        }
        Ok(())
    }
}

fn config() -> Config {
    Config::builder("bench-device-0001")
        .endpoint(EndpointConfig::new("primary"))
        .endpoint(EndpointConfig::new("secondary"))
        .build()
        .unwrap()
}

/// The Rust engine's cycle: the same steps, called directly.
struct Engine<'c, S: Store> {
    p: twinhub_core::Engine<S, &'c Config>,
    t: u64,
}

impl<S: Store> Engine<'_, S> {
    fn cycle(&mut self, buf: &mut [u8]) -> u64 {
        self.t += 1;
        let now = Instant::from_millis(self.t);
        let id = self
            .p
            .enqueue(now, black_box(&PAYLOAD), Class::Normal)
            .unwrap();
        let tx = self.p.poll_transmit(now, buf).unwrap().unwrap();
        let seen: usize = tx.frames(buf).map(|f| f.unwrap().payload.len()).sum();
        self.p.handle_outcome(now, tx.id, Outcome::Delivered);
        id.seq + seen as u64
    }
}

fn c_api(c: &mut Criterion) {
    let config = config();
    let mut buf = vec![0u8; 4096];
    let mut g = c.benchmark_group("c_api_cycle_per_record");
    g.bench_function("twinhub", |b| {
        let mut api = CApi::new();
        b.iter(|| black_box(api.cycle(&mut buf)));
    });
    g.bench_function("baseline", |b| {
        let mut e = Engine {
            p: twinhub_core::Engine::new(&config, RamStore::<4096>::new(), Instant::ZERO, 1, 1),
            t: 0,
        };
        b.iter(|| black_box(e.cycle(&mut buf)));
    });
    g.finish();

    // The ratio, measured here too (interleaved rounds, best of each), so the run prints it
    // whatever reads criterion's files.
    let mut api = CApi::new();
    let mut e = Engine {
        p: twinhub_core::Engine::new(&config, RamStore::<4096>::new(), Instant::ZERO, 1, 1),
        t: 0,
    };
    let mut same = Engine {
        p: twinhub_core::Engine::new(&config, RustRing(Ring::new()), Instant::ZERO, 1, 1),
        t: 0,
    };
    const N: u32 = 100_000;
    let time = |f: &mut dyn FnMut()| {
        let t = Clock::now();
        for _ in 0..N {
            f();
        }
        t.elapsed().as_nanos() as f64 / f64::from(N)
    };
    let (mut c_ns, mut ram_ns, mut ring_ns) = (f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..5 {
        c_ns = c_ns.min(time(&mut || {
            black_box(api.cycle(&mut buf));
        }));
        ram_ns = ram_ns.min(time(&mut || {
            black_box(e.cycle(&mut buf));
        }));
        ring_ns = ring_ns.min(time(&mut || {
            black_box(same.cycle(&mut buf));
        }));
    }
    println!(
        "c_api: per record (enqueue, transmit, read, deliver): C API {c_ns:.1} ns; Rust engine on RamStore {ram_ns:.1} ns (ratio {:.2}x); Rust engine on the same ring store {ring_ns:.1} ns (ratio {:.2}x)",
        c_ns / ram_ns,
        c_ns / ring_ns
    );
}

criterion_group!(benches, c_api);
criterion_main!(benches);
