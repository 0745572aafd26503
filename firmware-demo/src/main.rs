//! A sensor's firmware on QEMU's `mps2-an386` (Cortex-M4), with the twinhub engine and no
//! allocator (none is defined, so a dependency that allocates fails to link).
//!
//! SysTick interrupts every millisecond of CPU time; each tick advances the device clock by
//! [`TICK_MS`], a time-lapse so that four minutes of the device's life take seconds. The
//! main loop sleeps until a tick, samples a simulated sensor once per device second
//! (a normal reading; every tenth one is a critical alarm), and drives the engine exactly
//! as a device would: enqueue, hand out transmits, report outcomes and timeouts.
//!
//! Two links reach the gateway: `uart` (free) and `satellite` (costly: critical records
//! only, a small budget, armed only after the UART has been down for a minute). This first
//! stage answers transmits in the firmware itself, with the UART cut from second 30 to 150;
//! the gateway on the far side of real UARTs comes next. At the end it prints the counts
//! over semihosting and exits with failure if a record was lost, a normal record crossed
//! the satellite, or the satellite spent past its budget.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::{debug, hprintln};
use panic_semihosting as _;
use twinhub_core::{
    Budget, Class, ClassSet, Config, Cost, Duration, EndpointConfig, Instant, LinkConfig, Outcome,
    Producer, RamStore, TransmitId,
};

/// Device milliseconds per SysTick interrupt.
const TICK_MS: u64 = 50;
/// The mps2-an386 system clock, and so SysTick's reload for one interrupt per millisecond.
const SYSCLK_HZ: u32 = 25_000_000;
/// How long the device runs.
const RUN_MS: u64 = 240_000;
/// The UART to the gateway is cut over this span.
const UART_CUT: (u64, u64) = (30_000, 150_000);
/// The satellite's budget per day.
const SAT_BUDGET: u64 = 512;
/// The record store's arena.
const ARENA: usize = 4096;

static TICKS: AtomicU32 = AtomicU32::new(0);

/// The engine as this device runs it: a 4 KiB arena, one shared configuration.
type Engine = Producer<RamStore<ARENA>, &'static Config>;

#[exception]
fn SysTick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

/// An answer the (simulated) far side will give at `due`.
#[derive(Clone, Copy)]
struct Pending {
    due: u64,
    tx: TransmitId,
    outcome: Outcome,
}

#[entry]
fn main() -> ! {
    let mut cp = cortex_m::Peripherals::take().unwrap_or_else(|| fail("no core peripherals"));
    cp.SYST.set_clock_source(SystClkSource::Core);
    cp.SYST.set_reload(SYSCLK_HZ / 1000 - 1);
    cp.SYST.clear_current();
    cp.SYST.enable_counter();
    cp.SYST.enable_interrupt();

    let mut satellite = LinkConfig::new("satellite", Cost::Costly);
    satellite.budget = Some(Budget {
        bytes: SAT_BUDGET,
        window: Duration::from_days(1),
    });
    satellite.allow = ClassSet::only(Class::Critical);
    satellite.arm_after = Duration::from_secs(60);
    let config = Config::builder("sensor-7")
        .endpoint(EndpointConfig::new("gateway"))
        .link(LinkConfig::new("uart", Cost::Free))
        .link(satellite)
        .build()
        .unwrap_or_else(|_| fail("config"));
    // The configuration and the engine (with its arena) live in statics, so the image's
    // static RAM shows what the engine really takes.
    let config: &'static Config =
        cortex_m::singleton!(: Config = config).unwrap_or_else(|| fail("config twice"));
    let engine: &'static mut Engine = cortex_m::singleton!(
        : Engine = Producer::new(config, RamStore::new(), Instant::ZERO, 1, 0x5eed)
    )
    .unwrap_or_else(|| fail("engine twice"));
    let uart = config.link_id("uart").unwrap_or_else(|| fail("no uart"));

    let mut buf = [0u8; 1024];
    let mut answers: [Option<Pending>; 8] = [None; 8];
    // Sequence numbers the gateway has received (each record once).
    let mut seen = [false; 512];
    let mut duplicates = 0u32;
    let mut link_bytes = [0u64; 2];
    let mut normal_over_satellite = 0u32;
    let mut critical_over_satellite = 0u32;
    let mut next_sample = 1_000u64;
    let mut samples = 0u32;

    loop {
        cortex_m::asm::wfi();
        let now_ms = u64::from(TICKS.load(Ordering::Relaxed)) * TICK_MS;
        let now = Instant::from_millis(now_ms);

        if now_ms >= next_sample && now_ms < RUN_MS {
            samples += 1;
            let class = if samples.is_multiple_of(10) {
                Class::Critical
            } else {
                Class::Normal
            };
            let reading = sensor(samples);
            if engine.enqueue(now, &reading, class).is_err() {
                fail("enqueue refused");
            }
            next_sample += 1_000;
        }

        for slot in answers.iter_mut() {
            if let Some(a) = *slot
                && a.due <= now_ms
            {
                *slot = None;
                engine.handle_outcome(now, a.tx, a.outcome);
            }
        }
        if engine.poll_timeout().is_some_and(|t| t <= now) {
            engine.handle_timeout(now);
        }

        while let Some(tx) = engine.poll_transmit(now, &mut buf) {
            let on_uart = tx.link == uart;
            let cut = on_uart && (UART_CUT.0..UART_CUT.1).contains(&now_ms);
            link_bytes[usize::from(tx.link.0)] += tx.len as u64;
            let (outcome, after) = if cut {
                (Outcome::Unreachable, 200)
            } else {
                for f in tx.frames(&buf) {
                    let Ok(f) = f else { fail("bad frame") };
                    if !on_uart {
                        if f.meta.class == Class::Critical {
                            critical_over_satellite += 1;
                        } else {
                            normal_over_satellite += 1;
                        }
                    }
                    match seen.get_mut(f.meta.seq as usize) {
                        Some(s) if *s => duplicates += 1,
                        Some(s) => *s = true,
                        None => fail("sequence out of range"),
                    }
                }
                (Outcome::Delivered, if on_uart { 30 } else { 2_000 })
            };
            let free = answers.iter_mut().find(|a| a.is_none());
            let Some(free) = free else {
                fail("more transmits than slots")
            };
            *free = Some(Pending {
                due: now_ms + after,
                tx: tx.id,
                outcome,
            });
        }
        while engine.poll_event().is_some() {}

        let stats = engine.stats();
        if now_ms >= RUN_MS && stats.pending == 0 || now_ms >= RUN_MS + 120_000 {
            let received = seen.iter().filter(|s| **s).count() as u64;
            hprintln!(
                "firmware: samples {} accepted {} delivered {} received {} pending {} dropped {} duplicates {}",
                samples,
                stats.accepted,
                stats.delivered,
                received,
                stats.pending,
                stats.dropped.total(),
                duplicates
            );
            hprintln!(
                "firmware: uart bytes {} satellite bytes {} (budget {}), critical over satellite {}, normal over satellite {}, failovers {}",
                link_bytes[usize::from(uart.0)],
                link_bytes[1 - usize::from(uart.0)],
                SAT_BUDGET,
                critical_over_satellite,
                normal_over_satellite,
                stats.failovers
            );
            let ok = received == stats.accepted
                && stats.pending == 0
                && normal_over_satellite == 0
                && critical_over_satellite > 0
                && link_bytes[1 - usize::from(uart.0)] <= SAT_BUDGET;
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
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
