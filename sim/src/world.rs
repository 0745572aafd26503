//! The discrete-event world: one engine per device, regions and links as models (the
//! `network` module), and an independent account of what every region received (the
//! `ledger` module).
//!
//! Time is in milliseconds. Each shard of the fleet has one event queue (the `queue`
//! module) and is run on its own thread; shards never interact, so a report depends only
//! on the scenario (shard count included) and its seed.
//!
//! What keeps two million engines fast: device slots are laid out in the order devices
//! first wake, so the queue walks device memory almost in sequence; a wake-up made useless
//! (an answer came before the engine's deadline) is replaced rather than run; and an answer
//! that nothing else could observe before it arrives is handed to the engine at once, with
//! its arrival time, instead of going through the queue. Engines are sized for the
//! scenario's regions and links (`twinhub_core::Engine<_, _, E, L>`).
//!
//! What the world trusts: only what its regions received, resolved in its ledger.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use twinhub_core::store::{Persist, RecordKey};
use twinhub_core::{
    Config, Cost, DropReason, EnqueueError, Event, Frame, Instant, LinkId, Outcome, Transmit,
    TransmitId, frame,
};

use crate::draw::{mix, salt, unit};
use crate::flash::{SimFlash, synthetic_payload};
use crate::ledger::{Account, Boots, Ledger, Marks, Resolved, TX_MASK, Window};
use crate::network::{Answer, Network, Send};
use crate::plan::{MAX_BATCH_BYTES, Plan};
use crate::queue::{Entry, Kind, Queue};
use crate::report::{Received, Report, ShardTally};
use crate::scenario::MAX_PAYLOAD;

/// An engine, as every device runs it: on a simulated flash outbox, sized for at most `E`
/// regions and `L` links.
pub type Engine<'c, const E: usize, const L: usize> =
    twinhub_core::Engine<SimFlash, &'c Config, E, L>;

/// No time (no deadline, no attempt yet).
const NONE: u32 = u32::MAX;

/// The latest time the queue holds.
const LAST_MS: u64 = (u32::MAX - 1) as u64;

/// One virtual device: its engine and the world's account of it.
struct Device<'c, const E: usize, const L: usize> {
    engine: Engine<'c, E, L>,
    /// Global device number.
    index: u32,
    next_send: u32,
    /// The engine's next deadline, as it last said (`NONE`: none).
    timer: u32,
    /// Its records resolved so far.
    window: Window,
    /// First transmit to the primary after its outage began.
    first_attempt: u32,
    marks: Marks,
    /// Answers to this device waiting in the event queue.
    queued: u16,
}

impl<'c, const E: usize, const L: usize> Device<'c, E, L> {
    /// The device as the ledger sees it.
    fn account(&mut self, slot: u32) -> Account<'_> {
        Account {
            slot,
            window: &mut self.window,
            marks: &mut self.marks,
        }
    }
}

/// Runs one shard: the devices whose number is `shard` modulo the shard count. Engines are
/// sized for two regions and two links when the scenario has no more (a quarter less
/// memory per device), for the configuration's limits otherwise.
pub(crate) fn run_shard(plan: &Plan<'_>, shard: u32, progress: &AtomicU64) -> ShardTally {
    let s = plan.scenario;
    if s.regions.len() <= 2 && s.links.len() <= 2 {
        Shard::<2, 2>::new(plan, shard, progress).run()
    } else {
        Shard::<{ twinhub_core::MAX_ENDPOINTS }, { twinhub_core::MAX_LINKS }>::new(
            plan, shard, progress,
        )
        .run()
    }
}

/// Merges shard tallies into the report's figures.
pub(crate) fn finish(plan: &Plan<'_>, runs: Vec<ShardTally>) -> Report {
    let s = plan.scenario;
    let mut total = ShardTally::new(s.regions.len(), s.links.len(), plan.minutes);
    for r in runs {
        total.absorb(r);
    }
    Report::from_tally(s, total)
}

/// One shard's world while it runs.
struct Shard<'p, const E: usize, const L: usize> {
    plan: &'p Plan<'p>,
    devices: Vec<Device<'p, E, L>>,
    /// The time of each device's queued wake-up that counts (others in the queue are
    /// stale), kept apart from the devices so skipping a stale one touches little memory.
    wakes: Vec<u32>,
    queue: Queue,
    ledger: Ledger,
    network: Network<'p>,
    tally: ShardTally,
    /// Bytes each device sent over each budgeted link (few devices ever do).
    spent: HashMap<(u32, u8), u64>,
    /// The transmit being built.
    buf: Vec<u8>,
    /// Records held by all the shard's engines.
    pending_total: u64,
    /// The next minute whose data at risk is sampled.
    minute_mark: u64,
    progress: &'p AtomicU64,
}

impl<'p, const E: usize, const L: usize> Shard<'p, E, L> {
    /// Builds the shard's devices, each with its first wake-up (and reboot) queued.
    fn new(plan: &'p Plan<'p>, shard: u32, progress: &'p AtomicU64) -> Self {
        let building = std::time::Instant::now();
        let s = plan.scenario;
        let seed = s.seed;
        // Slots in the order devices first wake: the queue then visits device memory
        // almost in sequence (every device keeps its phase), which is what keeps a large
        // fleet out of main-memory latency.
        let mut order: Vec<(u64, u32)> = (shard..s.devices)
            .step_by(s.shards as usize)
            .map(|i| (mix(seed, u64::from(i), salt::PHASE) % plan.interval_ms, i))
            .collect();
        order.sort_unstable();
        let mut world = Shard {
            plan,
            devices: Vec::with_capacity(order.len()),
            wakes: Vec::with_capacity(order.len()),
            queue: Queue::new(),
            ledger: Ledger::default(),
            network: Network::new(seed, &plan.regions, &plan.faults),
            tally: ShardTally::new(s.regions.len(), s.links.len(), plan.minutes),
            spent: HashMap::new(),
            buf: vec![0u8; MAX_BATCH_BYTES as usize + 64],
            pending_total: 0,
            minute_mark: 0,
            progress,
        };
        for (phase, index) in order {
            world.add_device(index, phase);
        }
        world.tally.devices = world.devices.len() as u64;
        world.tally.setup_s = building.elapsed().as_secs_f64();
        world
    }

    fn add_device(&mut self, index: u32, phase: u64) {
        let (plan, seed) = (self.plan, self.plan.scenario.seed);
        let store = SimFlash::new(
            plan.scenario.device.store,
            mix(seed, u64::from(index), salt::PAYLOAD),
        )
        .unwrap_or_else(|e| unreachable!("the scenario's store size was checked: {e}"));
        let engine = boot(
            &plan.config,
            store,
            Instant::ZERO,
            mix(seed, u64::from(index), salt::ENGINE),
        );
        let slot = self.devices.len() as u32;
        self.devices.push(Device {
            engine,
            index,
            next_send: phase as u32,
            timer: NONE,
            window: Window::default(),
            first_attempt: NONE,
            marks: Marks::default(),
            queued: 0,
        });
        self.wakes.push(phase as u32);
        self.queue.push(phase, slot, 0, Kind::Wake);
        if let Some(r) = plan.reboots
            && unit(mix(seed, u64::from(index), salt::REBOOT)) < r.share
        {
            let first = r.every_ms / 2 + mix(seed, u64::from(index), salt::REBOOT + 1) % r.every_ms;
            self.queue.push(first, slot, 0, Kind::Reboot);
        }
    }

    /// Runs every event to the end, then takes the account.
    fn run(mut self) -> ShardTally {
        while let Some(e) = self.queue.pop() {
            let now_ms = u64::from(e.at);
            if now_ms > self.plan.end_ms {
                self.after_end(e);
                continue;
            }
            self.sample_minutes(now_ms);
            self.step(e);
        }
        self.finish()
    }

    /// After the end only answers already on their way are handed over, so the engines'
    /// counts and the regions' agree; nothing new is sent.
    fn after_end(&mut self, e: Entry) {
        if !e.kind.is_answer() {
            return;
        }
        let dev = &mut self.devices[e.slot as usize];
        dev.queued -= 1;
        if self.ledger.stale(dev.marks, e.slot, e.tx) {
            return;
        }
        let before = dev.engine.stats().pending;
        let now = Instant::from_millis(u64::from(e.at));
        dev.engine
            .handle_outcome(now, TransmitId(e.tx & TX_MASK), e.kind.outcome());
        self.drain_events(e.slot);
        let after = self.devices[e.slot as usize].engine.stats().pending;
        self.pending_total = self.pending_total - before + after;
    }

    /// Samples the data at risk at every minute boundary up to `now_ms`.
    fn sample_minutes(&mut self, now_ms: u64) {
        while self.minute_mark * 60_000 <= now_ms {
            let m = self.minute_mark as usize;
            if m < self.plan.minutes {
                self.tally.at_risk[m] = self.pending_total;
            }
            self.minute_mark += 1;
            self.progress
                .store(self.minute_mark * 60_000, Ordering::Relaxed);
        }
    }

    /// One event: the device wakes, reboots or hears an answer; then it sends what its
    /// engine wants to, and its next wake-up is set.
    fn step(&mut self, e: Entry) {
        let slot = e.slot as usize;
        if e.kind == Kind::Wake && self.wakes[slot] != e.at {
            return; // superseded by another wake-up
        }
        let dev = &mut self.devices[slot];
        if e.kind.is_answer() {
            dev.queued -= 1;
            if self.ledger.stale(dev.marks, e.slot, e.tx) {
                return; // answers a transmit of the engine before a reboot
            }
        }
        self.tally.events += 1;
        let now_ms = u64::from(e.at);
        let now = Instant::from_millis(now_ms);
        let before = dev.engine.stats().pending;
        match e.kind {
            Kind::Wake => self.wake(e.slot, now_ms),
            Kind::Reboot => self.reboot(e.slot, now_ms),
            answer => dev
                .engine
                .handle_outcome(now, TransmitId(e.tx & TX_MASK), answer.outcome()),
        }
        let caught_up = self.transmit(e.slot, now_ms);
        self.drain_events(e.slot);
        let after = self.devices[slot].engine.stats().pending;
        // This device's `before` is part of the total, so this never underflows.
        self.pending_total = self.pending_total - before + after;
        self.tally.peak_pending = self.tally.peak_pending.max(after);
        self.schedule(e.slot, now_ms, caught_up, after);
    }

    /// A wake-up: the next record when it is due, the engine's deadline when it is past.
    fn wake(&mut self, slot: u32, now_ms: u64) {
        self.wakes[slot as usize] = NONE;
        let now = Instant::from_millis(now_ms);
        let dev = &self.devices[slot as usize];
        if now_ms >= u64::from(dev.next_send) {
            self.enqueue_record(slot, now);
        }
        let dev = &mut self.devices[slot as usize];
        if dev.timer != NONE && u64::from(dev.timer) <= now_ms {
            dev.engine.handle_timeout(now);
        }
    }

    /// The device's next record: its size, payload and class drawn from the seed.
    fn enqueue_record(&mut self, slot: u32, now: Instant) {
        let s = self.plan.scenario;
        let recovered = self
            .ledger
            .recovered(self.devices[slot as usize].marks, slot);
        let dev = &mut self.devices[slot as usize];
        let n = dev.engine.stats().accepted;
        let [lo, hi] = s.device.payload_bytes;
        let h = mix(
            s.seed,
            u64::from(dev.index),
            n.wrapping_add(salt::SIZE << 40),
        );
        let len = lo as usize + (h % u64::from(hi - lo + 1)) as usize;
        // The record's key is the engine's next one: its epoch, and as many records as it
        // accepted since it started (recovered ones aside).
        let key = RecordKey {
            epoch: dev.engine.epoch(),
            seq: n - recovered,
        };
        let mut payload = [0u8; MAX_PAYLOAD];
        synthetic_payload(dev.engine.store().payload_seed(), key, &mut payload[..len]);
        let u = unit(mix(
            s.seed,
            u64::from(dev.index),
            n.wrapping_add(salt::CLASS << 40),
        ));
        let class = s.device.classes.pick(u);
        match dev.engine.enqueue(now, &payload[..len], class) {
            Ok(_) => self.tally.accepted += 1,
            Err(EnqueueError::Full) => self.tally.refused += 1,
            // The store refuses a payload that is not the record's own (the world
            // predicted the wrong key): must never happen.
            Err(_) => self.tally.store_errors += 1,
        }
        dev.next_send = dev.next_send.saturating_add(self.plan.interval_ms as u32);
    }

    /// A reboot, and the device's next one.
    fn reboot(&mut self, slot: u32, now_ms: u64) {
        let dev = &mut self.devices[slot as usize];
        let boots = self.ledger.boots_mut(slot);
        let now = Instant::from_millis(now_ms);
        reboot_device(dev, boots, self.plan, now, &mut self.tally);
        if let Some(r) = self.plan.reboots {
            self.queue.push(now_ms + r.every_ms, slot, 0, Kind::Reboot);
        }
    }

    /// Everything the engine wants to send now, with each transmit's fate decided by the
    /// network. Returns the arrival time of an answer handed over at once, if one was.
    fn transmit(&mut self, slot: u32, now_ms: u64) -> Option<u64> {
        let now = Instant::from_millis(now_ms);
        loop {
            let dev = &mut self.devices[slot as usize];
            let x = dev
                .engine
                .poll_transmit(now, &mut self.buf)
                .expect("buffer holds a batch")?;
            self.spend(slot, &x);
            let dev = &mut self.devices[slot as usize];
            let region = usize::from(x.endpoint.0);
            if region == 0
                && dev.first_attempt == NONE
                && self
                    .plan
                    .primary_outage
                    .is_some_and(|[from, _]| now_ms >= from)
            {
                dev.first_attempt = now_ms as u32;
            }
            let send = Send {
                device: dev.index,
                region,
                link: usize::from(x.link.0),
                id: x.id.0,
                records: u32::from(x.records),
                now_ms,
            };
            // A dark region: no answer; the engine's request timeout fires.
            let Some(answer) = self.network.answer(&send) else {
                continue;
            };
            match answer.kind {
                Kind::Delivered => self.receive(slot, &x, answer.at),
                Kind::Throttled => self.tally.throttled += 1,
                _ => {}
            }
            if self.hand_over_now(slot, &x, answer, now_ms) {
                let dev = &mut self.devices[slot as usize];
                let at = Instant::from_millis(answer.at);
                dev.engine.handle_outcome(at, x.id, Outcome::Delivered);
                // The engine's clock is now past `now`: no more sends in this event;
                // anything left (a mirrored record owed to another region) waits for a
                // wake-up then.
                return Some(answer.at);
            }
            let dev = &mut self.devices[slot as usize];
            let tx = self.ledger.tag(dev.marks, slot, x.id.0);
            dev.queued += 1;
            self.queue.push(answer.at, slot, tx, answer.kind);
        }
    }

    /// Counts a transmit's bytes on its link; on a budgeted link, saves the spend first.
    fn spend(&mut self, slot: u32, x: &Transmit) {
        let l = usize::from(x.link.0);
        self.tally.link_bytes[l] += x.len as u64;
        if !self.plan.budgeted[l] {
            return;
        }
        let dev = &mut self.devices[slot as usize];
        // As the firmware does: the spend is saved before the bytes go out, so a reboot
        // never hands the link a budget it already spent.
        if let Some(spend) = dev.engine.link_spend(x.link) {
            let _ = dev.engine.store_mut().save_spend(x.link.0, spend);
        }
        *self.spent.entry((dev.index, x.link.0)).or_default() += x.len as u64;
    }

    /// Whether an answer can be handed to the engine at once, at its arrival time, instead
    /// of through the queue: nothing else can see it before it arrives. Every record of
    /// the device is in this transmit, no other answer or wake-up of the device comes
    /// first, the engine has no deadline before it, and the minute's data-at-risk sample
    /// is not crossed. Devices share nothing but region capacity, taken at send time.
    fn hand_over_now(&mut self, slot: u32, x: &Transmit, answer: Answer, now_ms: u64) -> bool {
        let dev = &mut self.devices[slot as usize];
        let done = answer.at;
        answer.kind == Kind::Delivered
            && self.plan.reboots.is_none()
            && dev.queued == 0
            && u64::from(x.records) == dev.engine.stats().pending
            && done <= self.plan.end_ms
            && done / 60_000 == now_ms / 60_000
            && u64::from(self.wakes[slot as usize]) > done
            && dev
                .engine
                .poll_timeout()
                .is_none_or(|d| d.as_millis() > done)
    }

    /// What a region reads from a delivered transmit, into the ledger; then the failover
    /// and failback it shows.
    fn receive(&mut self, slot: u32, x: &Transmit, done: u64) {
        let region = usize::from(x.endpoint.0);
        let minute = (done / 60_000) as usize;
        let dev = &mut self.devices[slot as usize];
        // The frames never left memory: what the region reads is what was built.
        let mut rest = &self.buf[..x.len];
        while !rest.is_empty() {
            let Ok((f, n)) = frame::decode_trusted(rest) else {
                self.tally.corrupt += 1;
                break;
            };
            if self.plan.keep_ids {
                keep_id(&mut self.tally, dev, &rest[..n], &f, region, done);
            }
            rest = &rest[n..];
            let n = self
                .ledger
                .number(dev.marks, slot, f.meta.epoch, f.meta.seq);
            let t = &mut self.tally;
            match self.ledger.resolve(dev.account(slot), n) {
                Resolved::New => {
                    t.resolved += 1;
                    t.delivered[region] += 1;
                    if let Some(m) = t.delivered_per_minute.get_mut(minute) {
                        m[region] += 1;
                    }
                }
                Resolved::Again => t.duplicates += 1,
                Resolved::OutOfWindow => t.out_of_window += 1,
            }
        }
        if self.plan.scenario.links[usize::from(x.link.0)].cost == Cost::Costly
            && let Some(m) = self.tally.costly_bytes_per_minute.get_mut(minute)
        {
            *m += x.len as u64;
        }
        self.measure(slot, region, done);
    }

    /// Failover: the first delivery elsewhere after the primary's outage began; failback:
    /// the first delivery to the primary after it healed.
    fn measure(&mut self, slot: u32, region: usize, done: u64) {
        let dev = &mut self.devices[slot as usize];
        let t = &mut self.tally;
        if region != 0 && dev.first_attempt != NONE && !dev.marks.has(Marks::FAILED_OVER) {
            dev.marks.set(Marks::FAILED_OVER);
            t.failover_ms
                .push((done - u64::from(dev.first_attempt)) as u32);
        }
        if region == 0
            && dev.marks.has(Marks::FAILED_OVER)
            && !dev.marks.has(Marks::FAILED_BACK)
            && let Some([_, healed]) = self.plan.primary_outage
            && done >= healed
        {
            dev.marks.set(Marks::FAILED_BACK);
            t.failback_ms.push((done - healed) as u32);
        }
    }

    /// The next wake-up: the next record or the engine's next deadline. A wake-up that is
    /// no longer needed (an answer came before the engine's deadline) is replaced rather
    /// than kept: waking a device for nothing costs as much as a real event.
    fn schedule(&mut self, slot: u32, now_ms: u64, caught_up: Option<u64>, pending: u64) {
        let dev = &mut self.devices[slot as usize];
        let mut next = u64::from(dev.next_send);
        if let Some(done) = caught_up
            && pending > 0
        {
            next = next.min(done);
        }
        dev.timer = NONE;
        if let Some(d) = dev.engine.poll_timeout() {
            let d = d.as_millis().max(now_ms + 1);
            dev.timer = d.min(LAST_MS) as u32;
            next = next.min(d);
        }
        // Never the millisecond being processed (the queue would clamp it, and the clamped
        // wake-up would then look stale).
        let next = next.max(now_ms + 1).min(LAST_MS) as u32;
        let wake = &mut self.wakes[slot as usize];
        if *wake != next {
            *wake = next;
            self.queue.push(u64::from(next), slot, 0, Kind::Wake);
        }
    }

    /// Takes a device's engine events into the tally; drops resolve their records.
    fn drain_events(&mut self, slot: u32) {
        let dev = &mut self.devices[slot as usize];
        let t = &mut self.tally;
        while let Some(ev) = dev.engine.poll_event() {
            match ev {
                Event::Dropped { id, reason } => {
                    t.dropped[reason_index(reason)] += 1;
                    let n = self.ledger.number(dev.marks, slot, id.epoch, id.seq);
                    match self.ledger.resolve(dev.account(slot), n) {
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

    /// The end: the last minutes sampled, and what the engines still hold (the report
    /// derives `lost` from it).
    fn finish(mut self) -> ShardTally {
        while (self.minute_mark as usize) < self.plan.minutes {
            self.tally.at_risk[self.minute_mark as usize] = self.pending_total;
            self.minute_mark += 1;
        }
        self.progress.store(self.plan.end_ms, Ordering::Relaxed);
        let t = &mut self.tally;
        for dev in &self.devices {
            let stats = dev.engine.stats();
            t.pending_at_end += stats.pending;
            t.engine_delivered += stats.delivered;
            t.engine_dropped += stats.dropped.total();
            t.events_lost += u64::from(stats.events_lost);
        }
        for ((_, l), bytes) in self.spent {
            let m = &mut t.link_max_per_device[usize::from(l)];
            *m = (*m).max(bytes);
        }
        t.device_bytes = size_of::<Device<'_, E, L>>() as u64;
        self.tally
    }
}

/// Keeps the id of a frame a region received, checking its CRC and its payload.
fn keep_id<const E: usize, const L: usize>(
    t: &mut ShardTally,
    dev: &Device<'_, E, L>,
    bytes: &[u8],
    f: &Frame<'_>,
    region: usize,
    at_ms: u64,
) {
    let mut want = [0u8; MAX_PAYLOAD];
    let want = &mut want[..f.payload.len().min(MAX_PAYLOAD)];
    synthetic_payload(dev.engine.store().payload_seed(), f.meta.key(), want);
    if frame::decode(bytes).is_err() || f.payload != &want[..] {
        t.corrupt += 1;
    }
    t.received.push(Received {
        device: dev.index,
        epoch: f.meta.epoch,
        seq: f.meta.seq,
        region: region as u8,
        at_ms,
        boot_epoch: dev.engine.epoch(),
    });
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
    dev.marks.set(Marks::REBOOTED);
    dev.timer = NONE;
    t.reboots += 1;
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
