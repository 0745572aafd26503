//! A sensor's firmware on QEMU's `mps2-an386` (Cortex-M4), with the twinhub engine and no
//! allocator (none is defined, so a dependency that allocates fails to link).
//!
//! SysTick interrupts every millisecond; each tick advances the device clock by
//! [`TICK_MS`], a time-lapse so that minutes of the device's life take seconds. The main
//! loop sleeps until an interrupt (a tick or a received byte), samples a simulated sensor
//! every [`SAMPLE_MS`] (a normal reading; every [`CRITICAL_EVERY`]th one is a critical
//! alarm), and drives the engine exactly as a device would: enqueue, hand out transmits,
//! report outcomes; the engine times out transmits that get no answer.
//!
//! Two links reach the gateway, both real UARTs of the board (CMSDK APB UART, which QEMU
//! connects to TCP sockets with `-serial`): UART0 `uart` (free) and UART1 `satellite`
//! (costly: critical records only, a small daily budget, armed only after the UART has
//! been down for a minute). Every message on them is postcard + CRC-32C + COBS
//! ([`twinhub_core::wire`]); the gateway acks each record once it is durable, and only a
//! full set of acks delivers a transmit and frees its records.
//!
//! The outbox and what the device keeps across boots live in NOR flash
//! ([`flash::FileFlash`], a host file over semihosting, `twinhub-flash.bin` in QEMU's
//! working directory), through the engine's power-loss-safe [`FlashStore`]:
//!
//! - Each boot takes a new epoch from the store ([`Persist::next_epoch`]), so message ids
//!   never repeat across reboots, and prints `firmware: boot epoch E recovered R ...`.
//! - Records left in flash by an earlier boot are pending again and go out under their
//!   original ids.
//! - A record is durable once `enqueue` returns; the device then prints
//!   `firmware: accepted E:S` (its id without the device name), so whoever watches the
//!   console knows every record it must find delivered, even if the device dies next.
//! - The satellite's spend is saved after each transmit on it, before its bytes go out,
//!   and restored at boot: reboots never hand the link a new budget. The line's own
//!   messages (hellos) are charged to the same spend, so the budget bounds every byte the
//!   device puts on the satellite, across boots; a boot says hello there only before its
//!   first record on it.
//!
//! Kill QEMU at any point and boot it again on the same file: nothing accepted is lost.
//! The device clock starts again at zero at every boot (there is no clock to persist), so
//! a recovered record's age, and so its time to live, counts from a clock that restarted:
//! it lives longer, never shorter.
//!
//! After [`RUN_MS`] it stops sampling, waits for its outbox to drain, prints its counts over
//! semihosting and exits; it fails (exit status 1) if a record was dropped, a normal record
//! crossed the satellite, the satellite carried more bytes than its budget in this boot, or
//! it was used before the UART had delivered nothing for `arm_after`.
#![no_std]
#![no_main]

mod flash;

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::{debug, hprintln};
use panic_semihosting as _;
use twinhub_core::wire::{self, Accumulator, Downlink, Uplink};
use twinhub_core::{
    Budget, Class, ClassSet, Config, Cost, Duration, EndpointConfig, FlashStore, Instant,
    LinkConfig, LinkId, Outcome, Persist, RecordKey, StoreError, Timings, TransmitId,
};

use crate::flash::{FileFlash, PAGE, PAGES};

/// Device milliseconds per SysTick interrupt (one per millisecond of QEMU's clock).
const TICK_MS: u64 = 20;
/// The mps2-an386 system clock, and so SysTick's reload for one interrupt per millisecond.
const SYSCLK_HZ: u32 = 25_000_000;
/// How long the device samples.
const RUN_MS: u64 = 600_000;
/// Longest wait for the outbox to drain after sampling stops.
const DRAIN_MS: u64 = 300_000;
/// Device time between sensor readings.
const SAMPLE_MS: u64 = 2_000;
/// Device time between progress lines on the console: what lets a test tell a slow run
/// (a loaded host delivers fewer ticks) from a stuck one.
const BEAT_MS: u64 = 30_000;
/// Every this many readings is a critical alarm.
const CRITICAL_EVERY: u32 = 5;
/// Bytes the satellite may carry per day, everything included, across reboots.
const SAT_BUDGET: u64 = 512;
/// The engine may charge records up to `SAT_BUDGET` less this. A hello is charged to the
/// link's spend too, and is sent only while the spend stays within `SAT_BUDGET`; the
/// reserve leaves room for the hello that must precede the first record of a boot. A record
/// costs no more on the line than the engine charges for it (see
/// `Uplink::BUDGET_EXACT_PAYLOAD`), so the line stays within `SAT_BUDGET`.
const SAT_LINE_RESERVE: u64 = 32;
/// The satellite is armed only after the UART has been down this long.
const ARM_AFTER_MS: u64 = 60_000;
/// The flash store's buffer: the largest record frame it takes (a reading's is ~30 bytes).
const FRAME_BUF: usize = 256;
/// Flash pages of the state (boot counter, link spend), at the end of the flash; the
/// records take the rest: 16 pages, room for well over a thousand readings.
const STATE_PAGES: usize = 2;
const RECORDS: core::ops::Range<u32> = 0..((PAGES - STATE_PAGES) * PAGE) as u32;
const STATE: core::ops::Range<u32> = RECORDS.end..(PAGES * PAGE) as u32;
/// The device's id.
const DEVICE: &str = "sensor-7";

/// Records one transmit may carry (the endpoint's batch limit).
const BATCH: usize = 8;
/// Transmits in flight at once (the engine's limit is larger; the table bounds it here).
const SLOTS: usize = 4;

static TICKS: AtomicU32 = AtomicU32::new(0);

/// The engine as this device runs it: the flash outbox, one shared configuration.
type Engine = twinhub_core::Engine<FlashStore<FileFlash, FRAME_BUF>, &'static Config>;

#[exception]
fn SysTick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

/// A fault is reported and fails the run at once, rather than looping unseen until the
/// test's patience runs out.
#[exception]
unsafe fn HardFault(frame: &cortex_m_rt::ExceptionFrame) -> ! {
    hprintln!("firmware: FAILED: hard fault at pc {:#010x}", frame.pc());
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

/// Any other interrupt is a UART's receive interrupt: clear it so it does not fire again;
/// the main loop, woken by it, reads the byte.
#[exception]
unsafe fn DefaultHandler(_irqn: i16) {
    UART0.clear_interrupts();
    UART1.clear_interrupts();
}

/// A CMSDK APB UART of the board.
#[derive(Clone, Copy)]
struct Uart(usize);

const UART0: Uart = Uart(0x4000_4000);
const UART1: Uart = Uart(0x4000_5000);

/// The UART receive interrupts (NVIC lines) of the board: UART0 RX is 0, UART1 RX is 2.
#[derive(Clone, Copy)]
enum Irq {
    Uart0Rx = 0,
    Uart1Rx = 2,
}

// SAFETY: the numbers are the board's interrupt lines, all below the 240 cortex-m-rt supports.
unsafe impl cortex_m::interrupt::InterruptNumber for Irq {
    fn number(self) -> u16 {
        self as u16
    }
}

impl Uart {
    const DATA: usize = 0x00;
    const STATE: usize = 0x04;
    const CTRL: usize = 0x08;
    const INTSTATUS: usize = 0x0c;
    const BAUDDIV: usize = 0x10;
    const TX_FULL: u32 = 1;
    const RX_FULL: u32 = 2;

    fn read(self, reg: usize) -> u32 {
        // SAFETY: a device register of the board's memory map, read as the word it is.
        unsafe { core::ptr::read_volatile((self.0 + reg) as *const u32) }
    }

    fn write(self, reg: usize, value: u32) {
        // SAFETY: as in `read`; the registers written here have no memory effects.
        unsafe { core::ptr::write_volatile((self.0 + reg) as *mut u32, value) }
    }

    /// Enables transmit, receive and the receive interrupt. The divider only has to be
    /// legal (≥ 16): the line's speed is whatever QEMU's socket gives.
    fn init(self) {
        self.write(Self::BAUDDIV, 16);
        self.write(Self::CTRL, 0b1011);
    }

    fn clear_interrupts(self) {
        self.write(Self::INTSTATUS, 0xf);
    }

    fn read_byte(self) -> Option<u8> {
        (self.read(Self::STATE) & Self::RX_FULL != 0).then(|| self.read(Self::DATA) as u8)
    }

    fn write_all(self, bytes: &[u8]) {
        for &b in bytes {
            while self.read(Self::STATE) & Self::TX_FULL != 0 {}
            self.write(Self::DATA, u32::from(b));
        }
    }
}

/// A transmit on the line, waiting for the gateway's acks.
#[derive(Clone, Copy)]
struct InFlight {
    tx: TransmitId,
    link: LinkId,
    /// The records' keys: acks name epoch and sequence number, and records recovered from
    /// flash carry an earlier boot's epoch.
    keys: [RecordKey; BATCH],
    acked: [bool; BATCH],
    len: usize,
    rejected: bool,
    /// After this the engine has timed the transmit out itself: forget it.
    forget_at: u64,
}

/// What the device counts of its own lines.
#[derive(Default)]
struct Lines {
    bytes: [u64; 2],
    critical_over_satellite: u32,
    normal_over_satellite: u32,
    /// When a transmit on the UART was last delivered (all its records acked): when the
    /// engine last learned the UART works. A single ack is not that: the rest of its batch
    /// may still be on the way, and until then the engine rightly sees the UART down.
    last_uart_ack_ms: u64,
    early_satellite: u32,
    acks: u32,
    /// Whether this boot's satellite connection has heard the device's hello.
    satellite_hello: bool,
    /// Transmits not sent because their spend could not be saved first.
    held_back: u32,
}

#[entry]
fn main() -> ! {
    let mut cp = cortex_m::Peripherals::take().unwrap_or_else(|| fail("no core peripherals"));
    cp.SYST.set_clock_source(SystClkSource::Core);
    cp.SYST.set_reload(SYSCLK_HZ / 1000 - 1);
    cp.SYST.clear_current();
    cp.SYST.enable_counter();
    cp.SYST.enable_interrupt();
    for uart in [UART0, UART1] {
        uart.init();
    }
    // SAFETY: the handler only clears UART interrupt flags; no critical section relies on
    // these lines being masked.
    unsafe {
        cortex_m::peripheral::NVIC::unmask(Irq::Uart0Rx);
        cortex_m::peripheral::NVIC::unmask(Irq::Uart1Rx);
    }

    let config = device_config();
    let uart = config.link_id("uart").unwrap_or_else(|| fail("no uart"));
    let satellite = config
        .link_id("satellite")
        .unwrap_or_else(|| fail("no satellite"));
    // The outbox, boot counter and satellite spend, as the last boot (or power cut) left
    // them. Torn writes are repaired or skipped by the store, never a reason to stop.
    let flash = FileFlash::open().unwrap_or_else(|e| fail_because("flash file", e));
    let mut store = FlashStore::<_, FRAME_BUF>::open(flash, RECORDS, STATE)
        .unwrap_or_else(|e| fail_because("flash store", e));
    // Saved before it returns, so even a boot killed at once never hands its epoch on.
    let epoch = store
        .next_epoch()
        .unwrap_or_else(|e| fail_because("epoch", e));
    let spend = store
        .load_spend(satellite.0)
        .unwrap_or_else(|e| fail_because("satellite spend", e));
    // The configuration and the engine (with its store) live in statics, so the image's
    // static RAM shows what the engine really takes.
    let config: &'static Config =
        cortex_m::singleton!(: Config = config).unwrap_or_else(|| fail("config twice"));
    let seed = 0x5eed ^ u64::from(epoch);
    let engine: &'static mut Engine =
        cortex_m::singleton!(: Engine = Engine::new(config, store, Instant::ZERO, epoch, seed))
            .unwrap_or_else(|| fail("engine twice"));
    if let Some(spend) = spend
        && engine
            .restore_link_spend(Instant::ZERO, satellite, spend)
            .is_err()
    {
        fail("satellite has no budget");
    }
    let recovered = engine.stats().pending;
    hprintln!(
        "firmware: boot epoch {} recovered {} satellite spent {} discarded {}",
        epoch,
        recovered,
        spend.map_or(0, |s| s.spent),
        engine.store().discarded()
    );
    let request_timeout_ms = config.timings().request_timeout.as_millis();

    let mut lines = Lines::default();
    let mut buf = [0u8; 512];
    let mut out = [0u8; 256];
    let mut rx = [Accumulator::<256>::new(), Accumulator::<256>::new()];
    let mut inflight: [Option<InFlight>; SLOTS] = [None; SLOTS];
    // The free line hears who we are at once; the satellite only before its first record
    // (see `satellite_hello`), as a hello there costs budget.
    hello(usize::from(uart.0), &mut out, &mut lines);
    let mut next_sample = SAMPLE_MS;
    let mut next_beat = BEAT_MS;
    let mut samples = 0u32;
    // Whether the engine may have something new to send. Asking it only after something
    // changed (a reading, an outcome, a timeout, a free slot) matters with a flash outbox:
    // looking for what a link may carry walks the records in flash, and with the UART down
    // every critical-only look for the satellite walks past the whole normal backlog. Done
    // on every byte received, that slowed the loop until answers came too late.
    let mut changed = true;

    loop {
        cortex_m::asm::wfi();
        let now_ms = u64::from(TICKS.load(Ordering::Relaxed)) * TICK_MS;
        let now = Instant::from_millis(now_ms);

        if now_ms >= next_sample && now_ms < RUN_MS {
            samples += 1;
            let class = if samples.is_multiple_of(CRITICAL_EVERY) {
                Class::Critical
            } else {
                Class::Normal
            };
            match engine.enqueue(now, &sensor(samples), class) {
                // In flash now: only after this line may a watcher count on the record.
                Ok(id) => hprintln!("firmware: accepted {}:{}", id.epoch, id.seq),
                Err(e) => fail_because("enqueue refused", e),
            }
            next_sample += SAMPLE_MS;
            changed = true;
        }

        // Answers from the gateway, on either line.
        for (link, acc) in rx.iter_mut().enumerate() {
            let port = if link == 0 { UART0 } else { UART1 };
            while let Some(byte) = port.read_byte() {
                let Some(Ok(frame)) = acc.push(byte) else {
                    continue; // mid-message, or line noise the next zero resynchronises
                };
                match wire::decode::<Downlink>(frame) {
                    Ok(Downlink::Ack { epoch, seq }) => {
                        lines.acks += 1;
                        mark(&mut inflight, RecordKey { epoch, seq }, false);
                    }
                    Ok(Downlink::Reject { epoch, seq }) => {
                        mark(&mut inflight, RecordKey { epoch, seq }, true);
                    }
                    Ok(Downlink::Identify) if link == usize::from(satellite.0) => {
                        lines.satellite_hello = false;
                        satellite_hello(engine, now, satellite, &mut out, &mut lines);
                    }
                    Ok(Downlink::Identify) => hello(link, &mut out, &mut lines),
                    // A corrupted message: the transmit it belonged to times out and is
                    // sent again.
                    Err(_) => {}
                }
            }
        }
        for slot in inflight.iter_mut() {
            let Some(f) = slot else { continue };
            if f.rejected {
                engine.handle_outcome(
                    now,
                    f.tx,
                    Outcome::Rejected(twinhub_core::RejectReason::Malformed),
                );
                *slot = None;
                changed = true;
            } else if f.acked[..f.len].iter().all(|a| *a) {
                engine.handle_outcome(now, f.tx, Outcome::Delivered);
                if f.link == uart {
                    lines.last_uart_ack_ms = now_ms;
                }
                *slot = None;
                changed = true;
            } else if now_ms >= f.forget_at {
                *slot = None;
                changed = true;
            }
        }
        if engine.poll_timeout().is_some_and(|t| t <= now) {
            engine.handle_timeout(now);
            changed = true;
        }

        while changed && let Some(slot) = inflight.iter().position(Option::is_none) {
            let tx = match engine.poll_transmit(now, &mut buf) {
                Ok(Some(tx)) => tx,
                // Nothing to send until something changes.
                Ok(None) => {
                    changed = false;
                    break;
                }
                // A record larger than the transmit buffer: a build mistake, never silent.
                Err(e) => fail_because("transmit buffer", e),
            };
            let link = usize::from(tx.link.0);
            let port = if link == 0 { UART0 } else { UART1 };
            // The spend is in flash before the bytes are on the line: a reboot right after
            // never gives the link back budget it used. If it cannot be saved, the bytes
            // stay here and the engine times the transmit out.
            if let Some(spend) = engine.link_spend(tx.link) {
                if let Err(e) = engine.store_mut().save_spend(tx.link.0, spend) {
                    hprintln!("firmware: spend not saved ({}): transmit held back", e);
                    lines.held_back += 1;
                    continue;
                }
                if !lines.satellite_hello {
                    satellite_hello(engine, now, tx.link, &mut out, &mut lines);
                }
            }
            let mut f = InFlight {
                tx: tx.id,
                link: tx.link,
                keys: [RecordKey { epoch: 0, seq: 0 }; BATCH],
                acked: [false; BATCH],
                len: 0,
                rejected: false,
                forget_at: now_ms + request_timeout_ms + 1_000,
            };
            if tx.link != uart && now_ms < lines.last_uart_ack_ms + ARM_AFTER_MS {
                lines.early_satellite += 1;
            }
            for frame in tx.frames(&buf) {
                let Ok(frame) = frame else { fail("bad frame") };
                let Some(key) = f.keys.get_mut(f.len) else {
                    fail("transmit larger than its batch limit")
                };
                *key = frame.meta.key();
                f.len += 1;
                if tx.link != uart {
                    if frame.meta.class == Class::Critical {
                        lines.critical_over_satellite += 1;
                    } else {
                        lines.normal_over_satellite += 1;
                    }
                }
                let msg = Uplink::Record {
                    epoch: frame.meta.epoch,
                    seq: frame.meta.seq,
                    class: frame.meta.class,
                    payload: frame.payload,
                };
                let n = wire::encode(&msg, &mut out).unwrap_or_else(|_| fail("encode"));
                port.write_all(&out[..n]);
                lines.bytes[link] += n as u64;
            }
            inflight[slot] = Some(f);
        }
        while engine.poll_event().is_some() {}

        let stats = engine.stats();
        if now_ms >= next_beat {
            hprintln!(
                "firmware: t {} accepted {} delivered {} pending {} acks {}",
                now_ms,
                stats.accepted,
                stats.delivered,
                stats.pending,
                lines.acks
            );
            next_beat = now_ms + BEAT_MS;
        }
        let drained = now_ms >= RUN_MS && stats.pending == 0;
        if drained || now_ms >= RUN_MS + DRAIN_MS {
            report(engine, &lines, uart, samples, recovered);
        }
    }
}

/// The device's configuration: one endpoint (the gateway) over two links.
fn device_config() -> Config {
    let mut satellite = LinkConfig::new("satellite", Cost::Costly);
    satellite.budget = Some(Budget {
        bytes: SAT_BUDGET - SAT_LINE_RESERVE,
        window: Duration::from_days(1),
    });
    satellite.allow = ClassSet::only(Class::Critical);
    satellite.arm_after = Duration::from_millis(ARM_AFTER_MS);
    let mut gateway = EndpointConfig::new("gateway");
    gateway.max_batch_records = BATCH as u16;
    let timings = Timings {
        request_timeout: Duration::from_secs(5),
        // One probe delivered over the UART brings it back, so the satellite stops at once:
        // it costs money, and the flapping guard of several probes is for failing back
        // between regions, which this one-endpoint device does not do.
        failback_probes: 1,
        ..Timings::default()
    };
    Config::builder(DEVICE)
        .endpoint(gateway)
        .link(LinkConfig::new("uart", Cost::Free))
        .link(satellite)
        .timings(timings)
        .build()
        .unwrap_or_else(|_| fail("config"))
}

/// Says who is on `link`; the bytes count against the line.
fn hello(link: usize, out: &mut [u8], lines: &mut Lines) {
    let n = wire::encode(&Uplink::Hello { device: DEVICE }, out).unwrap_or_else(|_| fail("hello"));
    let port = if link == 0 { UART0 } else { UART1 };
    port.write_all(&out[..n]);
    lines.bytes[link] += n as u64;
}

/// Says who is on the satellite, if the line's budget has room for it: the hello's bytes
/// are charged to the link's spend, which is saved before they go out.
fn satellite_hello(
    engine: &mut Engine,
    now: Instant,
    link: LinkId,
    out: &mut [u8],
    lines: &mut Lines,
) {
    let n = wire::encode(&Uplink::Hello { device: DEVICE }, out).unwrap_or_else(|_| fail("hello"));
    match charge(engine, now, link, n as u64) {
        Ok(true) => {}
        // No room (or the spend could not be saved): the gateway asks again with the next
        // record that reaches it.
        Ok(false) => return,
        Err(e) => {
            hprintln!("firmware: spend not saved ({}): no hello", e);
            return;
        }
    }
    let port = if link.0 == 0 { UART0 } else { UART1 };
    port.write_all(&out[..n]);
    lines.bytes[usize::from(link.0)] += n as u64;
    lines.satellite_hello = true;
}

/// Adds `bytes` the engine did not send itself to `link`'s spend and saves it; `Ok(false)`
/// if that would take the line past `SAT_BUDGET`.
fn charge(engine: &mut Engine, now: Instant, link: LinkId, bytes: u64) -> Result<bool, StoreError> {
    let Some(mut spend) = engine.link_spend(link) else {
        return Ok(true); // no budget on this link
    };
    if spend.spent + bytes > SAT_BUDGET {
        return Ok(false);
    }
    spend.spent += bytes;
    // Spend only ever grows here, so this cannot lower it; the window is kept as it is.
    if engine.restore_link_spend(now, link, spend).is_err() {
        return Ok(false);
    }
    engine.store_mut().save_spend(link.0, spend)?;
    Ok(true)
}

/// Marks the record `key` acked (or rejected) in whichever transmit holds it.
fn mark(inflight: &mut [Option<InFlight>], key: RecordKey, rejected: bool) {
    for f in inflight.iter_mut().flatten() {
        if let Some(i) = f.keys[..f.len].iter().position(|k| *k == key) {
            f.acked[i] = true;
            f.rejected |= rejected;
        }
    }
}

/// Prints the device's counts and exits: success only if every promise held.
fn report(engine: &Engine, lines: &Lines, uart: LinkId, samples: u32, recovered: u64) -> ! {
    let stats = engine.stats();
    let sat = lines.bytes[1 - usize::from(uart.0)];
    hprintln!(
        "firmware: device {} epoch {} recovered {} samples {} accepted {} delivered {} pending {} dropped {} acks {}",
        DEVICE,
        engine.epoch(),
        recovered,
        samples,
        stats.accepted,
        stats.delivered,
        stats.pending,
        stats.dropped.total(),
        lines.acks
    );
    hprintln!(
        "firmware: uart bytes {} satellite bytes {} budget {} critical over satellite {} normal over satellite {} early satellite {} held back {} failovers {}",
        lines.bytes[usize::from(uart.0)],
        sat,
        SAT_BUDGET,
        lines.critical_over_satellite,
        lines.normal_over_satellite,
        lines.early_satellite,
        lines.held_back,
        stats.failovers
    );
    let ok = stats.pending == 0
        && stats.dropped.total() == 0
        // Recovered records count as accepted again in this boot.
        && stats.accepted == recovered + u64::from(samples)
        && lines.normal_over_satellite == 0
        && lines.early_satellite == 0
        && sat <= SAT_BUDGET;
    if ok {
        hprintln!("firmware: ok");
        debug::exit(debug::EXIT_SUCCESS);
    } else {
        hprintln!("firmware: FAILED");
        debug::exit(debug::EXIT_FAILURE);
    }
    loop {
        cortex_m::asm::wfi();
    }
}

/// A reading of the simulated sensor: sample number and a temperature in centi-degrees.
fn sensor(n: u32) -> [u8; 8] {
    let centi = 2_000 + (n.wrapping_mul(37) % 500) as i32;
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&n.to_le_bytes());
    out[4..].copy_from_slice(&centi.to_le_bytes());
    out
}

fn fail(why: &str) -> ! {
    hprintln!("firmware: FAILED: {}", why);
    exit_failure()
}

/// Fails naming what failed and the typed error it gave.
fn fail_because(what: &str, error: impl core::fmt::Display) -> ! {
    hprintln!("firmware: FAILED: {}: {}", what, error);
    exit_failure()
}

fn exit_failure() -> ! {
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
