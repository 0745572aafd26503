//! The discrete-event world: one engine per device, regions and links as models, and an
//! independent account of what every region received.
//!
//! Time is in milliseconds. Each shard of the fleet has one event queue (a calendar of
//! one-millisecond buckets for device wake-ups and transmit outcomes) and is run on its own thread; shards never
//! interact, so a report depends only on the scenario (shard count included) and its seed.
//!
//! What keeps two million engines fast: device slots are laid out in the order devices
//! first wake, so the queue walks device memory almost in sequence; a wake-up made useless
//! (an answer came before the engine's deadline) is replaced rather than run; and an answer
//! that nothing else could observe before it arrives is handed to the engine at once, with
//! its arrival time, instead of going through the queue. Engines are sized for the
//! scenario's regions and links (`Producer<_, _, E, L>`).
//!
//! What the world trusts: only what its regions received. Each device keeps a window of
//! sequence numbers it has seen resolved (delivered to some region, or reported dropped
//! with a reason): 64 in the device, more in a side table while its outbox holds a deeper
//! backlog; a record neither resolved nor still in the device's store at the end is
//! *lost*.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use twinhub_core::store::{Persist, RecordKey};
use twinhub_core::{
    Class, ClassSet, Config, ConfigError, Cost, DropReason, Duration as EDuration, EndpointConfig,
    EnqueueError, Event, Instant, LinkConfig, LinkId, Outcome, Producer, Timings, TransmitId,
    frame,
};

use crate::flash::{SimFlash, synthetic_payload};
use crate::report::{Report, ShardTally};
use crate::scenario::Scenario;

/// Largest payload a scenario may ask for.
pub const MAX_PAYLOAD: usize = 128;
/// How long a send over a link that is down takes to fail.
const LINK_FAIL_MS: u64 = 2_000;
/// The retry-after a throttling region answers with.
const THROTTLE_RETRY_MS: u64 = 1_000;
/// Largest transmit: the engine is told so, and the world's buffer has this room.
const MAX_BATCH_BYTES: u32 = 4_096;

/// An engine, as every device runs it: on a simulated flash outbox, sized for at most `E`
/// regions and `L` links.
pub type Engine<'c, const E: usize, const L: usize> = Producer<SimFlash, &'c Config, E, L>;

/// Builds the engine configuration every device shares.
pub fn engine_config(s: &Scenario) -> Result<Config, crate::ScenarioError> {
    let mut b = Config::builder("fleet").timings(Timings::default());
    for r in &s.regions {
        let mut e = EndpointConfig::new(&r.name);
        e.max_batch_bytes = MAX_BATCH_BYTES;
        e.max_record_bytes = MAX_BATCH_BYTES / 2;
        b = b.endpoint(e);
    }
    for l in &s.links {
        let mut lc = LinkConfig::new(&l.name, l.cost);
        lc.budget = l.budget;
        if let Some(classes) = &l.classes {
            let mut set = ClassSet::NONE;
            for c in classes {
                if let Some(c) = Class::from_name(c) {
                    set = set.with(c);
                }
            }
            lc.allow = set;
        }
        if let Some(a) = l.arm_after {
            lc.arm_after = EDuration::from_millis(a.as_millis() as u64);
        }
        b = b.link(lc);
    }
    b.build()
        .map_err(|e: ConfigError| crate::ScenarioError::Invalid(format!("engine config: {e}")))
}

/// A 64-bit mix of the seed and some coordinates: every random choice of the world comes
/// from one of these, so nothing depends on the order devices are visited in.
fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Salts for [`mix`], one per kind of choice.
mod salt {
    pub const PHASE: u64 = 1;
    pub const SIZE: u64 = 2;
    pub const CLASS: u64 = 3;
    pub const LATENCY: u64 = 4;
    pub const FAULT: u64 = 5;
    pub const FAULT_PHASE: u64 = 6;
    pub const ENGINE: u64 = 7;
    pub const REBOOT: u64 = 8;
    /// Far from `ENGINE + generation`, which grows with every reboot.
    pub const PAYLOAD: u64 = 1 << 20;
}

const NONE: u32 = u32::MAX;

/// One queued event: (time ms, device slot, transmit id, kind).
type Entry = (u32, u32, u32, u8);

/// Buckets in the calendar: one per millisecond, about a minute ahead.
const BUCKETS: u64 = 1 << 16;

/// An event in a bucket, which says its time: the slot with the kind in its low 3 bits,
/// and the transmit id. Eight bytes, as a large fleet keeps millions queued.
#[derive(Clone, Copy)]
struct Near(u32, u32);

impl Near {
    fn pack(e: Entry) -> Near {
        Near((e.1 << 3) | u32::from(e.3), e.2)
    }
    fn unpack(self, at: u64) -> Entry {
        (at as u32, self.0 >> 3, self.1, (self.0 & 7) as u8)
    }
}

/// A calendar queue: events within [`BUCKETS`] ms of now sit in per-millisecond buckets
/// (O(1) in and out, in insertion order within a millisecond, which is deterministic);
/// later ones wait in a heap until their bucket comes into range.
struct Queue {
    ring: Vec<Vec<Near>>,
    far: BinaryHeap<Reverse<Entry>>,
    /// The millisecond being drained.
    now: u64,
    /// Before the first pop, the bucket `now` is still open for pushes.
    fresh: bool,
    current: Vec<Near>,
    next: usize,
    /// Entries in `ring`.
    near: usize,
}

impl Queue {
    fn new() -> Self {
        Queue {
            ring: (0..BUCKETS).map(|_| Vec::new()).collect(),
            far: BinaryHeap::new(),
            now: 0,
            fresh: true,
            current: Vec::new(),
            next: 0,
            near: 0,
        }
    }

    fn bucket(&mut self, t: u64) -> &mut Vec<Near> {
        &mut self.ring[(t % BUCKETS) as usize]
    }

    fn push(&mut self, mut e: Entry) {
        // Every delay is at least 1 ms; never queue into the millisecond being drained.
        let earliest = if self.fresh { self.now } else { self.now + 1 };
        e.0 = e.0.max(earliest as u32);
        let t = u64::from(e.0);
        if t < self.now + BUCKETS {
            self.bucket(t).push(Near::pack(e));
            self.near += 1;
        } else {
            self.far.push(Reverse(e));
        }
    }

    fn pop(&mut self) -> Option<Entry> {
        loop {
            if let Some(e) = self.current.get(self.next) {
                self.next += 1;
                return Some(e.unpack(self.now));
            }
            self.current.clear();
            self.next = 0;
            if self.near == 0 && self.far.is_empty() {
                return None;
            }
            if !self.fresh {
                self.now += 1;
            }
            self.fresh = false;
            if self.near == 0
                && let Some(Reverse(e)) = self.far.peek()
            {
                // Nothing near: jump to the earliest far event.
                self.now = self.now.max(u64::from(e.0));
            }
            // Far events whose bucket is now in range join it.
            while let Some(Reverse(e)) = self.far.peek() {
                if u64::from(e.0) >= self.now + BUCKETS {
                    break;
                }
                if let Some(Reverse(e)) = self.far.pop() {
                    self.bucket(u64::from(e.0)).push(Near::pack(e));
                    self.near += 1;
                }
            }
            let slot = (self.now % BUCKETS) as usize;
            std::mem::swap(&mut self.ring[slot], &mut self.current);
            self.near -= self.current.len();
        }
    }
}

/// One virtual device: its engine and the world's account of it.
struct Device<'c, const E: usize, const L: usize> {
    engine: Engine<'c, E, L>,
    /// Global device number.
    index: u32,
    next_send: u32,
    /// The engine's next deadline, as it last said (`NONE`: none).
    timer: u32,
    /// Every sequence number below this is resolved (a fresh engine starts at 0).
    base: u64,
    /// Resolved flags for `base..base + 64` (later ones in the shard's [`Wide`] table).
    bits: u64,
    /// First transmit to the primary after its outage began.
    first_attempt: u32,
    /// Whether failover and failback have been measured.
    measured: u8,
    /// Answers to this device waiting in the event queue.
    queued: u16,
}

const FAILED_OVER: u8 = 1;
const FAILED_BACK: u8 = 2;

/// Outcome codes in the event queue; 0 is a device wake-up.
const WAKE: u8 = 0;
const DELIVERED: u8 = 1;
const UNREACHABLE: u8 = 2;
const THROTTLED: u8 = 3;
/// The device restarts its engine.
const REBOOT: u8 = 4;
/// Answers carry the device's boot generation in the transmit id's top bits, so an
/// answer to a transmit made before a reboot is recognised and ignored.
const GEN_SHIFT: u32 = 28;
const TX_MASK: u32 = (1 << GEN_SHIFT) - 1;
/// `Device::measured` flag: it has rebooted (its boots are in the shard's side table).
const REBOOTED: u8 = 4;
/// `Device::measured` flag: its resolved window has words in the shard's [`Wide`] table.
const WIDE: u8 = 8;

/// What a shard keeps about a device that rebooted: rare, so kept aside.
#[derive(Debug, Default)]
struct Boots {
    /// Boot generation (answers tagged with another are stale).
    generation: u32,
    /// Epochs whose records may still be about, with the world's sequence offset of each:
    /// a record `(epoch, seq)` is number `offset + seq` of the device.
    epochs: Vec<(u32, u64)>,
    /// Records the current engine recovered at start (counted in its `accepted`).
    recovered: u64,
}

/// The fixed part of a run, shared by the shards.
pub(crate) struct Plan<'s> {
    pub scenario: &'s Scenario,
    pub config: Config,
    pub end_ms: u64,
    /// Keep every id received (`RunOptions::ledger`).
    pub ledger: bool,
}

/// Runs one shard: the devices whose number is `shard` modulo the shard count. Engines are
/// sized for two regions and two links when the scenario has no more (a quarter less
/// memory per device), for the configuration's limits otherwise.
pub(crate) fn run_shard(plan: &Plan<'_>, shard: u32, progress: &AtomicU64) -> ShardTally {
    let s = plan.scenario;
    if s.regions.len() <= 2 && s.links.len() <= 2 {
        run_sized::<2, 2>(plan, shard, progress)
    } else {
        run_sized::<{ twinhub_core::MAX_ENDPOINTS }, { twinhub_core::MAX_LINKS }>(
            plan, shard, progress,
        )
    }
}

fn run_sized<const E: usize, const L: usize>(
    plan: &Plan<'_>,
    shard: u32,
    progress: &AtomicU64,
) -> ShardTally {
    let building = std::time::Instant::now();
    let s = plan.scenario;
    let shards = s.shards;
    let seed = s.seed;
    let interval = s.device.interval.as_millis() as u64;
    let minutes = plan.end_ms.div_ceil(60_000) as usize + 1;
    let regions = s.regions.len();
    let mut t = ShardTally::new(regions, s.links.len(), minutes);
    // Slots in the order devices first wake: the queue then visits device memory almost
    // in sequence (every device keeps its phase), which is what keeps a large fleet out
    // of main-memory latency.
    let mut order: Vec<(u64, u32)> = (shard..s.devices)
        .step_by(shards as usize)
        .map(|index| (mix(seed, u64::from(index), salt::PHASE) % interval, index))
        .collect();
    order.sort_unstable();
    let mut devices: Vec<Device<'_, E, L>> = Vec::with_capacity(order.len());
    // The time of each device's queued wake-up that counts (others in the queue are
    // stale), kept apart from the devices so skipping a stale one touches little memory.
    let mut wakes: Vec<u32> = Vec::with_capacity(order.len());
    let mut heap = Queue::new();
    let mut boots: std::collections::HashMap<u32, Boots> = std::collections::HashMap::new();
    let mut wide = Wide::new();
    let reboot = s.device.reboot.filter(|r| r.share > 0.0);
    for (phase, index) in order {
        let store = match SimFlash::new(s.device.store, mix(seed, u64::from(index), salt::PAYLOAD))
        {
            Ok(store) => store,
            Err(e) => unreachable!("the scenario's store size was checked: {e}"),
        };
        let engine = boot(
            &plan.config,
            store,
            Instant::ZERO,
            mix(seed, u64::from(index), salt::ENGINE),
        );
        let slot = devices.len() as u32;
        devices.push(Device {
            engine,
            index,
            next_send: phase as u32,
            timer: NONE,
            base: 0,
            bits: 0,
            first_attempt: NONE,
            measured: 0,
            queued: 0,
        });
        wakes.push(phase as u32);
        heap.push((phase as u32, slot, 0, WAKE));
        if let Some(r) = reboot
            && unit(mix(seed, u64::from(index), salt::REBOOT)) < r.share
        {
            let every = r.every.as_millis() as u64;
            let first = every / 2 + mix(seed, u64::from(index), salt::REBOOT + 1) % every;
            heap.push((first.min(u64::from(u32::MAX - 1)) as u32, slot, 0, REBOOT));
        }
    }
    t.devices = devices.len() as u64;
    t.setup_s = building.elapsed().as_secs_f64();

    // Per-region capacity for this shard, as a token bucket refilled every millisecond.
    let capacity: Vec<f64> = s
        .regions
        .iter()
        .map(|r| r.capacity as f64 / f64::from(shards) / 1000.0)
        .collect();
    let mut tokens: Vec<f64> = capacity.iter().map(|c| c * 1000.0).collect();
    let mut refilled = 0u64;
    let primary_outage = s.regions[0].outages.first().copied();
    let faults: Vec<(usize, u64, u64, f64)> = s
        .link_faults
        .iter()
        .map(|f| {
            let link = s.links.iter().position(|l| l.name == f.link).unwrap_or(0);
            (
                link,
                f.up.as_millis() as u64,
                f.down.as_millis() as u64,
                f.share,
            )
        })
        .collect();

    let budgeted: Vec<bool> = plan
        .config
        .links()
        .iter()
        .map(|l| l.budget.is_some())
        .collect();
    // Bytes each device sent over each budgeted link (few devices ever do).
    let mut per_device: std::collections::HashMap<(u32, u8), u64> =
        std::collections::HashMap::new();
    let mut buf = vec![0u8; MAX_BATCH_BYTES as usize + 64];
    let mut payload = [0u8; MAX_PAYLOAD];
    let [plo, phi] = s.device.payload_bytes;
    let mut pending_total: u64 = 0;
    let mut minute_mark = 0u64;

    while let Some((at, slot, tx, kind)) = heap.pop() {
        let now_ms = u64::from(at);
        if now_ms > plan.end_ms {
            if kind != WAKE && kind != REBOOT {
                // After the end only answers already on their way are handed over, so the
                // engines' counts and the regions' agree; nothing new is sent.
                let dev = &mut devices[slot as usize];
                dev.queued -= 1;
                if stale(dev, &boots, slot, tx) {
                    continue;
                }
                let before = dev.engine.stats().pending;
                dev.engine.handle_outcome(
                    Instant::from_millis(now_ms),
                    TransmitId(tx & TX_MASK),
                    outcome_of(kind),
                );
                drain_events(dev, &boots, &mut wide, slot, &mut t);
                pending_total = pending_total - before + dev.engine.stats().pending;
            }
            continue;
        }
        while minute_mark * 60_000 <= now_ms {
            let m = minute_mark as usize;
            if m < minutes {
                t.at_risk[m] = pending_total;
            }
            minute_mark += 1;
            progress.store(minute_mark * 60_000, Ordering::Relaxed);
        }
        if kind == WAKE && wakes[slot as usize] != at {
            continue; // superseded by another wake-up
        }
        let dev = &mut devices[slot as usize];
        if kind != WAKE && kind != REBOOT {
            dev.queued -= 1;
        }
        if kind != WAKE && kind != REBOOT && stale(dev, &boots, slot, tx) {
            continue; // answers a transmit of the engine before a reboot
        }
        t.events += 1;
        let now = Instant::from_millis(now_ms);
        let before = dev.engine.stats().pending;
        match kind {
            WAKE => {
                wakes[slot as usize] = NONE;
                if now_ms >= u64::from(dev.next_send) {
                    let n = dev.engine.stats().accepted;
                    let h = mix(seed, u64::from(dev.index), n.wrapping_add(salt::SIZE << 40));
                    let len = plo as usize + (h % u64::from(phi - plo + 1)) as usize;
                    // The record's key is the engine's next one: its epoch, and as many
                    // records as it accepted since it started (recovered ones aside).
                    let recovered = if dev.measured & REBOOTED == 0 {
                        0
                    } else {
                        boots.get(&slot).map_or(0, |b| b.recovered)
                    };
                    let key = RecordKey {
                        epoch: dev.engine.epoch(),
                        seq: n - recovered,
                    };
                    let payload_seed = dev.engine.store().payload_seed();
                    synthetic_payload(payload_seed, key, &mut payload[..len]);
                    let u = unit(mix(
                        seed,
                        u64::from(dev.index),
                        n.wrapping_add(salt::CLASS << 40),
                    ));
                    let class = s.device.classes.pick(u);
                    match dev.engine.enqueue(now, &payload[..len], class) {
                        Ok(_) => t.accepted += 1,
                        Err(EnqueueError::Full) => t.refused += 1,
                        // The store refuses a payload that is not the record's own (the
                        // world predicted the wrong key): must never happen.
                        Err(_) => t.store_errors += 1,
                    }
                    dev.next_send = dev.next_send.saturating_add(interval as u32);
                }
                if dev.timer != NONE && u64::from(dev.timer) <= now_ms {
                    dev.engine.handle_timeout(now);
                }
            }
            REBOOT => {
                let b = boots.entry(slot).or_default();
                reboot_device(dev, b, plan, now, &mut t);
                if let Some(r) = reboot {
                    let next = now_ms + r.every.as_millis() as u64;
                    heap.push((next.min(u64::from(u32::MAX - 1)) as u32, slot, 0, REBOOT));
                }
            }
            code => dev
                .engine
                .handle_outcome(now, TransmitId(tx & TX_MASK), outcome_of(code)),
        }

        // Everything the engine wants to send now, with each transmit's fate decided.
        let mut caught_up = None;
        while let Some(x) = dev
            .engine
            .poll_transmit(now, &mut buf)
            .expect("buffer holds a batch")
        {
            let e = usize::from(x.endpoint.0);
            let l = usize::from(x.link.0);
            let region = &s.regions[e];
            t.link_bytes[l] += x.len as u64;
            if budgeted[l] {
                // As the firmware does: the spend is saved before the bytes go out, so a
                // reboot never hands the link a budget it already spent.
                if let Some(spend) = dev.engine.link_spend(x.link) {
                    let _ = dev.engine.store_mut().save_spend(x.link.0, spend);
                }
                *per_device.entry((dev.index, x.link.0)).or_default() += x.len as u64;
            }
            let lat = {
                let [lo, hi] = region.latency;
                let (lo, hi) = (lo.as_millis() as u64, hi.as_millis() as u64);
                lo + mix(
                    seed,
                    u64::from(dev.index),
                    now_ms ^ (u64::from(x.id.0) << 32) ^ salt::LATENCY,
                ) % (hi - lo + 1)
            };
            if e == 0
                && dev.first_attempt == NONE
                && primary_outage.is_some_and(|w| now_ms >= w.from.as_millis() as u64)
            {
                dev.first_attempt = at;
            }
            let link_down = faults
                .iter()
                .enumerate()
                .any(|(i, &(fl, up, down, share))| {
                    fl == l && {
                        let who = mix(seed, u64::from(dev.index), salt::FAULT + i as u64);
                        unit(who) < share && {
                            let phase =
                                mix(seed, u64::from(dev.index), salt::FAULT_PHASE + i as u64);
                            (now_ms + phase % (up + down)) % (up + down) >= up
                        }
                    }
                });
            let (code, done) = if link_down {
                (UNREACHABLE, now_ms + LINK_FAIL_MS)
            } else if region.outages.iter().any(|w| w.contains(now_ms)) {
                // A dark region: no answer; the engine's request timeout fires.
                continue;
            } else if region.refusals.iter().any(|w| w.contains(now_ms)) {
                (UNREACHABLE, now_ms + lat)
            } else {
                let n = f64::from(x.records);
                if region.capacity > 0 {
                    let elapsed = now_ms.saturating_sub(refilled);
                    if elapsed > 0 {
                        for (tk, c) in tokens.iter_mut().zip(&capacity) {
                            *tk = (*tk + c * elapsed as f64).min(c * 1000.0);
                        }
                        refilled = now_ms;
                    }
                    if tokens[e] < n {
                        t.throttled += 1;
                        let r = (
                            (now_ms + lat) as u32,
                            slot,
                            tag(dev, &boots, slot, x.id.0),
                            THROTTLED,
                        );
                        dev.queued += 1;
                        heap.push(r);
                        continue;
                    }
                    tokens[e] -= n;
                }
                (DELIVERED, now_ms + lat)
            };
            if code == DELIVERED {
                let minute = (done / 60_000) as usize;
                // The frames never left memory: what the region reads is what was built.
                let mut rest = &buf[..x.len];
                while !rest.is_empty() {
                    let Ok((f, n)) = frame::decode_trusted(rest) else {
                        t.corrupt += 1;
                        break;
                    };
                    if plan.ledger {
                        let frame = &rest[..n];
                        let mut want = [0u8; MAX_PAYLOAD];
                        let want = &mut want[..f.payload.len().min(MAX_PAYLOAD)];
                        synthetic_payload(dev.engine.store().payload_seed(), f.meta.key(), want);
                        if frame::decode(frame).is_err() || f.payload != &want[..] {
                            t.corrupt += 1;
                        }
                        t.received.push(crate::report::Received {
                            device: dev.index,
                            epoch: f.meta.epoch,
                            seq: f.meta.seq,
                            region: e as u8,
                            at_ms: done,
                            boot_epoch: dev.engine.epoch(),
                        });
                    }
                    rest = &rest[n..];
                    let n = number(dev, &boots, slot, f.meta.epoch, f.meta.seq);
                    match resolve(dev, &mut wide, slot, n) {
                        Resolved::New => {
                            t.resolved += 1;
                            t.delivered[e] += 1;
                            if let Some(m) = t.delivered_per_minute.get_mut(minute) {
                                m[e] += 1;
                            }
                        }
                        Resolved::Again => t.duplicates += 1,
                        Resolved::OutOfWindow => t.out_of_window += 1,
                    }
                }
                if s.links[l].cost == Cost::Costly
                    && let Some(m) = t.costly_bytes_per_minute.get_mut(minute)
                {
                    *m += x.len as u64;
                }
                if e != 0 && dev.first_attempt != NONE && dev.measured & FAILED_OVER == 0 {
                    dev.measured |= FAILED_OVER;
                    t.failover_ms
                        .push((done - u64::from(dev.first_attempt)) as u32);
                }
                if e == 0
                    && dev.measured & (FAILED_OVER | FAILED_BACK) == FAILED_OVER
                    && let Some(w) = primary_outage
                {
                    let healed = w.to.as_millis() as u64;
                    if done >= healed {
                        dev.measured |= FAILED_BACK;
                        t.failback_ms.push((done - healed) as u32);
                    }
                }
            }
            // An answer nothing else can see before it arrives is handed over at once, at
            // its arrival time, instead of through the queue: every record of the device is
            // in this transmit, no other answer or wake-up of the device comes first, the
            // engine has no deadline before it, and the minute's data-at-risk sample is not
            // crossed. Devices share nothing but region capacity, taken above at send time.
            if code == DELIVERED
                && reboot.is_none()
                && dev.queued == 0
                && u64::from(x.records) == dev.engine.stats().pending
                && done <= plan.end_ms
                && done / 60_000 == now_ms / 60_000
                && u64::from(wakes[slot as usize]) > done
                && dev
                    .engine
                    .poll_timeout()
                    .is_none_or(|d| d.as_millis() > done)
            {
                dev.engine
                    .handle_outcome(Instant::from_millis(done), x.id, Outcome::Delivered);
                // The engine's clock is now past `now`: no more sends in this event; anything
                // left (a mirrored record owed to another region) waits for a wake-up then.
                caught_up = Some(done);
                break;
            }
            let tx = tag(dev, &boots, slot, x.id.0);
            dev.queued += 1;
            heap.push((done.min(u64::from(u32::MAX - 1)) as u32, slot, tx, code));
        }
        drain_events(dev, &boots, &mut wide, slot, &mut t);
        let after = dev.engine.stats().pending;
        // This device's `before` is part of the total, so this never underflows.
        pending_total = pending_total - before + after;
        t.peak_pending = t.peak_pending.max(after);

        // The next wake-up: the next record or the engine's next deadline.
        let mut next = u64::from(dev.next_send);
        if let Some(done) = caught_up
            && after > 0
        {
            next = next.min(done);
        }
        dev.timer = NONE;
        if let Some(d) = dev.engine.poll_timeout() {
            let d = d.as_millis().max(now_ms + 1);
            dev.timer = d.min(u64::from(u32::MAX - 1)) as u32;
            next = next.min(d);
        }
        // Never the millisecond being processed (the queue would clamp it, and the clamped
        // wake-up would then look stale).
        let next = next.max(now_ms + 1).min(u64::from(u32::MAX - 1)) as u32;
        // A wake-up that is no longer needed (an answer came before the engine's deadline)
        // is replaced rather than kept: waking a device for nothing costs as much as a
        // real event.
        let wake = &mut wakes[slot as usize];
        if *wake != next {
            *wake = next;
            heap.push((next, slot, 0, WAKE));
        }
    }
    while (minute_mark as usize) < minutes {
        t.at_risk[minute_mark as usize] = pending_total;
        minute_mark += 1;
    }
    progress.store(plan.end_ms, Ordering::Relaxed);

    // The end: what the engines still hold (the report derives `lost` from it).
    for dev in &devices {
        let stats = dev.engine.stats();
        t.pending_at_end += stats.pending;
        t.engine_delivered += stats.delivered;
        t.engine_dropped += stats.dropped.total();
        t.events_lost += u64::from(stats.events_lost);
    }
    for ((_, l), bytes) in per_device {
        let m = &mut t.link_max_per_device[usize::from(l)];
        *m = (*m).max(bytes);
    }
    t.device_bytes = size_of::<Device<'_, E, L>>() as u64;
    t
}

/// Boots a device as the firmware does: this start's epoch from the outbox's boot
/// counter, the engine on the records the outbox holds, then each budgeted link's spend as
/// saved last.
fn boot<const E: usize, const L: usize>(
    config: &Config,
    mut store: SimFlash,
    now: Instant,
    seed: u64,
) -> Engine<'_, E, L> {
    // The counter reaches u32::MAX only after four billion boots.
    let epoch = match store.next_epoch() {
        Ok(epoch) => epoch,
        Err(e) => unreachable!("the boot counter ran out: {e}"),
    };
    let mut engine = match Engine::try_new(config, store, now, epoch, seed) {
        Ok(engine) => engine,
        // `run_shard` picks the sizing from the scenario's region and link counts.
        Err(e) => unreachable!("the engine is sized for the scenario: {e}"),
    };
    for (l, link) in config.links().iter().enumerate() {
        if link.budget.is_none() {
            continue;
        }
        if let Ok(Some(spend)) = engine.store_mut().load_spend(l as u8) {
            let _ = engine.restore_link_spend(now, LinkId(l as u8), spend);
        }
    }
    engine
}

fn outcome_of(code: u8) -> Outcome {
    match code {
        DELIVERED => Outcome::Delivered,
        UNREACHABLE => Outcome::Unreachable,
        _ => Outcome::Throttled {
            retry_after: Some(EDuration::from_millis(THROTTLE_RETRY_MS)),
        },
    }
}

/// Takes a device's engine events into the tally; drops resolve their records.
fn drain_events<const E: usize, const L: usize>(
    dev: &mut Device<'_, E, L>,
    boots: &Boots_,
    wide: &mut Wide,
    slot: u32,
    t: &mut ShardTally,
) {
    while let Some(ev) = dev.engine.poll_event() {
        match ev {
            Event::Dropped { id, reason } => {
                t.dropped[reason_index(reason)] += 1;
                let n = number(dev, boots, slot, id.epoch, id.seq);
                match resolve(dev, wide, slot, n) {
                    Resolved::New => t.resolved += 1,
                    Resolved::Again => t.dropped_after_delivery += 1,
                    Resolved::OutOfWindow => t.out_of_window += 1,
                }
            }
            Event::FailedOver { .. } => t.failovers += 1,
            Event::FailedBack { .. } => t.failbacks += 1,
            Event::BudgetExhausted { .. } => t.budget_exhausted += 1,
            _ => {}
        }
    }
}

type Boots_ = std::collections::HashMap<u32, Boots>;

/// The world's number of a device's record `(epoch, seq)`: its sequence across reboots.
fn number<const E: usize, const L: usize>(
    dev: &Device<'_, E, L>,
    boots: &Boots_,
    slot: u32,
    epoch: u32,
    seq: u64,
) -> u64 {
    if dev.measured & REBOOTED == 0 {
        return seq;
    }
    boots
        .get(&slot)
        .and_then(|b| b.epochs.iter().find(|(e, _)| *e == epoch))
        .map_or(seq, |(_, offset)| offset + seq)
}

/// A transmit id as queued: tagged with the device's boot generation.
fn tag<const E: usize, const L: usize>(
    dev: &Device<'_, E, L>,
    boots: &Boots_,
    slot: u32,
    id: u32,
) -> u32 {
    if dev.measured & REBOOTED == 0 {
        return id;
    }
    let generation = boots.get(&slot).map_or(0, |b| b.generation);
    (id & TX_MASK) | ((generation & 0xf) << GEN_SHIFT)
}

/// Whether a queued answer belongs to an engine from before the device's last reboot.
fn stale<const E: usize, const L: usize>(
    dev: &Device<'_, E, L>,
    boots: &Boots_,
    slot: u32,
    tx: u32,
) -> bool {
    let generation = if dev.measured & REBOOTED == 0 {
        0
    } else {
        boots.get(&slot).map_or(0, |b| b.generation)
    };
    tx >> GEN_SHIFT != generation & 0xf
}

/// Reboots a device: its RAM (the engine) is lost, its outbox survives, and it boots as
/// the firmware does ([`boot`]). The old engine's counts go into the tally first.
fn reboot_device<'c, const E: usize, const L: usize>(
    dev: &mut Device<'c, E, L>,
    b: &mut Boots,
    plan: &'c Plan<'_>,
    now: Instant,
    t: &mut ShardTally,
) {
    let old = dev.engine.stats();
    t.engine_delivered += old.delivered;
    t.engine_dropped += old.dropped.total();
    t.events_lost += u64::from(old.events_lost);
    let epoch = dev.engine.epoch();
    if b.epochs.is_empty() {
        b.epochs.push((epoch, 0));
    }
    let offset = b.epochs.last().map_or(0, |(_, o)| *o);
    let used = old.accepted - b.recovered;
    b.generation += 1;
    let seed = mix(
        plan.scenario.seed,
        u64::from(dev.index),
        salt::ENGINE + u64::from(b.generation),
    );
    // An empty stand-in takes the engine's place while the outbox moves to the new one.
    let stand_in = SimFlash::new(plan.scenario.device.store, 0)
        .unwrap_or_else(|e| unreachable!("the scenario's store size was checked: {e}"));
    let stand_in = boot(&plan.config, stand_in, now, seed);
    let store = std::mem::replace(&mut dev.engine, stand_in).into_store();
    dev.engine = boot(&plan.config, store, now, seed);
    debug_assert!(dev.engine.epoch() > epoch, "epochs grow at every boot");
    b.recovered = dev.engine.stats().accepted;
    b.epochs.push((dev.engine.epoch(), offset + used));
    // Epochs with no record left could be forgotten; a device keeps a few at most.
    dev.measured |= REBOOTED;
    dev.timer = NONE;
    t.reboots += 1;
}

enum Resolved {
    New,
    Again,
    OutOfWindow,
}

/// Words of a device's resolved window beyond its first, for devices whose outbox holds
/// more than 64 records unresolved at once (a backlog): kept aside, as few devices have one.
type Wide = std::collections::HashMap<u32, VecDeque<u64>>;

/// The widest window, in words beyond the first: far more records than a 16 MiB outbox
/// holds.
const MAX_WIDE_WORDS: usize = 1 << 12;

/// Marks record `seq` of a device resolved: `Again` if it was.
fn resolve<const E: usize, const L: usize>(
    dev: &mut Device<'_, E, L>,
    wide: &mut Wide,
    slot: u32,
    seq: u64,
) -> Resolved {
    if seq < dev.base {
        return Resolved::Again;
    }
    let off = seq - dev.base;
    if off < 64 {
        let bit = 1u64 << off;
        if dev.bits & bit != 0 {
            return Resolved::Again;
        }
        dev.bits |= bit;
    } else {
        let word = (off / 64 - 1) as usize;
        if word >= MAX_WIDE_WORDS {
            return Resolved::OutOfWindow;
        }
        let words = wide.entry(slot).or_default();
        dev.measured |= WIDE;
        if words.len() <= word {
            words.resize(word + 1, 0);
        }
        let bit = 1u64 << (off % 64);
        if words[word] & bit != 0 {
            return Resolved::Again;
        }
        words[word] |= bit;
    }
    slide(dev, wide, slot);
    Resolved::New
}

/// Slides a device's window past the resolved records at its front.
fn slide<const E: usize, const L: usize>(dev: &mut Device<'_, E, L>, wide: &mut Wide, slot: u32) {
    loop {
        let run = dev.bits.trailing_ones();
        if run == 0 {
            return;
        }
        let words = match wide.get_mut(&slot) {
            Some(words) if dev.measured & WIDE != 0 => words,
            _ => {
                dev.bits = dev.bits.checked_shr(run).unwrap_or(0);
                dev.base += u64::from(run);
                return;
            }
        };
        if run == 64 {
            dev.bits = words.pop_front().unwrap_or(0);
        } else {
            // Every word moves down by `run` bits, taking the low bits of the next.
            let mut next = words.front().copied().unwrap_or(0);
            dev.bits = (dev.bits >> run) | (next << (64 - run));
            for i in 0..words.len() {
                let after = words.get(i + 1).copied().unwrap_or(0);
                words[i] = (next >> run) | (after << (64 - run));
                next = after;
            }
        }
        dev.base += u64::from(run);
        while words.back() == Some(&0) {
            words.pop_back();
        }
        if words.is_empty() {
            wide.remove(&slot);
            dev.measured &= !WIDE;
        }
        // After a partial slide the front record is unresolved; after a whole word the
        // next word's front may be resolved too.
    }
}

fn reason_index(r: DropReason) -> usize {
    match r {
        DropReason::Expired => 0,
        DropReason::Evicted => 1,
        DropReason::TooLarge => 2,
        DropReason::Malformed => 3,
        DropReason::Corrupt => 4,
    }
}

/// Merges shard tallies into the report's figures.
pub(crate) fn finish(plan: &Plan<'_>, runs: Vec<ShardTally>) -> Report {
    let mut total = ShardTally::new(
        plan.scenario.regions.len(),
        plan.scenario.links.len(),
        plan.end_ms.div_ceil(60_000) as usize + 1,
    );
    for r in runs {
        total.absorb(r);
    }
    Report::from_tally(plan.scenario, total)
}
