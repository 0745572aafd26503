//! End to end, the Rust firmware (firmware-demo): booted in QEMU, wired to `twinhub
//! gateway` and two emulator regions through the harness of [`twinhub_tests::firmware`].
//!
//! - `device_records_cross_the_gateway_through_a_cut_and_a_region_loss`: one boot on fresh
//!   flash ([`cut_then_region_loss`]).
//! - `device_killed_at_random_points_loses_nothing_and_spends_one_budget`: the device is
//!   killed (SIGKILL of QEMU) at seeded random points, with the UART up, then cut, then
//!   healed, and booted again each time on the same flash file, then runs to its end.
//!
//! In both, every record the device accepted must reach a region under its own id, no
//! normal record may cross the satellite, and the satellite's bytes must stay within the
//! device's budget.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use twinhub_tests::firmware::{Firmware, Rig, SAT_BUDGET, cut_then_region_loss, field, summary};

#[test]
fn device_records_cross_the_gateway_through_a_cut_and_a_region_loss() {
    let mut rig = Rig::start(Firmware::rust());
    let report = cut_then_region_loss(&mut rig);
    assert!(
        report.starts_with("firmware: boot epoch 1 recovered 0 "),
        "fresh flash: the first epoch, nothing recovered:\n{}",
        summary(&report)
    );
}

/// SplitMix64: the kill points come from a seed, printed so a failing run can be replayed
/// (`FIRMWARE_KILL_SEED=...`).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `range`.
    fn within(&mut self, range: std::ops::RangeInclusive<usize>) -> usize {
        range.start() + (self.next() % (range.end() - range.start() + 1) as u64) as usize
    }
}

/// What one boot of the device printed: its epoch, what it recovered, the ids it accepted.
struct Boot {
    epoch: u32,
    recovered: u64,
    /// Records in flash that did not decode at open (none expected: torn writes are
    /// skipped by the store before they get there).
    discarded: u64,
    accepted: Vec<(u32, u64)>,
}

/// Reads a boot's console: `firmware: boot epoch E recovered R ...` and every
/// `firmware: accepted E:S`.
fn parse_boot(console: &str) -> Option<Boot> {
    let first = console.lines().find(|l| l.starts_with("firmware: boot "))?;
    let accepted = console
        .lines()
        .filter_map(|l| l.strip_prefix("firmware: accepted "))
        .map(|id| {
            let (e, s) = id.split_once(':').unwrap();
            (e.parse().unwrap(), s.parse().unwrap())
        })
        .collect();
    Some(Boot {
        epoch: field(first, "epoch") as u32,
        recovered: field(first, "recovered"),
        discarded: field(first, "discarded"),
        accepted,
    })
}

/// The `epoch` and `seq` of an origin id `device:epoch:seq`.
fn id_key(id: &str) -> (u32, u64) {
    let mut parts = id.rsplitn(3, ':');
    let seq = parts.next().unwrap().parse().unwrap();
    let epoch = parts.next().unwrap().parse().unwrap();
    (epoch, seq)
}

/// How the test treats the UART during a boot it will kill.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Up: records are acked within milliseconds, so a kill mostly catches the newest.
    Up,
    /// Cut: normal records pile up in flash, critical ones take the satellite once it is
    /// armed (about 35 readings after a boot), as far as the budget lets them.
    Cut,
    /// Healed: the backlog goes out over the UART while the device is killed again.
    Healed,
}

/// Boots the device with the UART as `phase` wants it and kills it (SIGKILL of QEMU) at a
/// point drawn from `rng`; returns what the boot printed and the satellite bytes it spent.
fn killed_boot(rig: &Rig, rng: &mut SplitMix, i: usize, phase: Phase) -> (Boot, u64) {
    rig.uart.set_cut(phase == Phase::Cut);
    // How many readings the device accepts in this boot before it dies. In a cut: enough
    // for the satellite to arm (about 35), and few enough (at most 12 critical ones, some
    // 350 bytes) that one boot cannot use up the budget, so a later one meets a budget an
    // earlier boot spent.
    let readings = match phase {
        Phase::Cut => rng.within(45..=60),
        Phase::Up | Phase::Healed => rng.within(1..=25),
    };
    let sat_before = rig.satellite.device_bytes();
    let crit_before = rig.satellite.critical();
    let (mut qemu, console) = rig.boot();
    console.wait_quietly("readings before the kill", || {
        console.count("firmware: accepted ") >= readings
    });
    // A few milliseconds more, drawn from the seed: the kill lands anywhere in the
    // transmit, ack and flash removal that follow a reading, not only right after it.
    std::thread::sleep(Duration::from_millis(rng.within(0..=40) as u64));
    // SIGKILL: no chance to finish a flash write or say goodbye.
    qemu.0.kill().unwrap();
    qemu.0.wait().unwrap();
    console.wait_quietly("the console to close", || console.closed());
    let text = console.text();
    let boot = parse_boot(&text)
        .unwrap_or_else(|| panic!("boot {i} printed no boot line:\n{}", summary(&text)));
    let sat = rig.satellite.device_bytes() - sat_before;
    let crit = rig.satellite.critical() - crit_before;
    eprintln!(
        "firmware_reboot: boot {i} ({phase:?}): epoch {} recovered {} accepted {} (killed after {readings}), satellite +{sat} B ({crit} critical records)",
        boot.epoch,
        boot.recovered,
        boot.accepted.len(),
    );
    (boot, sat)
}

/// The last boot runs its course on the healed UART, drains and checks itself.
fn last_boot(rig: &Rig) -> Boot {
    rig.uart.set_cut(false);
    let (mut qemu, console) = rig.boot();
    console.wait("the last boot to finish", || console.closed());
    let status = qemu.0.wait().unwrap();
    let report = console.text();
    println!("{}", summary(&report));
    assert!(
        status.success(),
        "the firmware's own checks pass:\n{}",
        summary(&report)
    );
    let last = parse_boot(&report).expect("the last boot's line");
    assert!(last.accepted.len() >= 100, "the device ran its course");
    last
}

/// Every id the boots accepted, having checked that epochs strictly grow from boot to boot
/// and that no id was accepted twice.
fn accepted_once(boots: &[Boot]) -> BTreeSet<(u32, u64)> {
    for pair in boots.windows(2) {
        assert!(
            pair[1].epoch > pair[0].epoch,
            "epoch {} after {}",
            pair[1].epoch,
            pair[0].epoch
        );
    }
    let mut accepted = BTreeSet::new();
    for b in boots {
        for &(epoch, seq) in &b.accepted {
            assert_eq!(epoch, b.epoch, "an accepted id of another epoch");
            assert!(
                accepted.insert((epoch, seq)),
                "id {epoch}:{seq} accepted twice"
            );
        }
    }
    accepted
}

/// Checks that every accepted record is at a region under its id, and that nothing else
/// arrived but what a kill may catch; returns the distinct ids and the copies beyond them.
fn check_arrivals(rig: &Rig, boots: &[Boot], accepted: &BTreeSet<(u32, u64)>) -> (usize, usize) {
    let want: BTreeSet<String> = accepted
        .iter()
        .map(|(e, s)| format!("{}:{e}:{s}", rig.firmware.device))
        .collect();
    let missing = rig.await_ids(&want);
    assert!(
        missing.is_empty(),
        "{} accepted records missing at both regions: {missing:?}",
        missing.len()
    );
    let received = rig.received();
    let mut copies: BTreeMap<(u32, u64), usize> = BTreeMap::new();
    for id in &received {
        *copies.entry(id_key(id)).or_default() += 1;
    }
    // Besides the accepted records, a region may hold only what a boot appended in the
    // instant between the append and its line: that boot's next id.
    let last_seq: BTreeMap<u32, Option<u64>> = boots
        .iter()
        .map(|b| (b.epoch, b.accepted.iter().map(|k| k.1).max()))
        .collect();
    for key in copies.keys().filter(|k| !accepted.contains(k)) {
        let next = last_seq.get(&key.0).map(|last| last.map_or(0, |s| s + 1));
        assert_eq!(
            next,
            Some(key.1),
            "a record {}:{} nobody accepted reached a region",
            key.0,
            key.1
        );
    }
    (copies.len(), received.len() - copies.len())
}

#[test]
fn device_killed_at_random_points_loses_nothing_and_spends_one_budget() {
    let seed = std::env::var("FIRMWARE_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("firmware_reboot: seed {seed} (FIRMWARE_KILL_SEED={seed} replays its kill points)");
    let mut rng = SplitMix(seed);
    let began = Instant::now();
    let mut rig = Rig::start(Firmware::rust());
    let plan = [
        [Phase::Up; 4].as_slice(),
        &[Phase::Cut; 5],
        &[Phase::Healed; 3],
    ]
    .concat();

    let mut boots: Vec<Boot> = Vec::new();
    let mut satellite_boots = 0;
    let mut first_satellite_boot = None;
    for (i, &phase) in plan.iter().enumerate() {
        let (boot, sat) = killed_boot(&rig, &mut rng, i, phase);
        if sat > 0 {
            satellite_boots += 1;
            first_satellite_boot.get_or_insert(i);
        }
        boots.push(boot);
    }
    boots.push(last_boot(&rig));
    let accepted = accepted_once(&boots);
    let recovered: u64 = boots.iter().map(|b| b.recovered).sum();
    let discarded: u64 = boots.iter().map(|b| b.discarded).sum();
    assert!(recovered > 0, "some kills caught records pending");
    let (delivered, duplicates) = check_arrivals(&rig, &boots, &accepted);

    // The satellite: critical records only, and one budget for every boot together.
    assert_eq!(rig.satellite.normal(), 0);
    let sat_bytes = rig.satellite.device_bytes();
    assert!(
        sat_bytes <= SAT_BUDGET,
        "satellite bytes {sat_bytes} over all boots within the one budget {SAT_BUDGET}"
    );
    // Cut boots after the satellite's first use meet the spend it left: with a budget of
    // their own each would carry its critical records (at least nine a boot) again.
    let first = first_satellite_boot.expect("the satellite carried records in some cut boot");
    let cut_after = plan[first + 1..]
        .iter()
        .filter(|p| **p == Phase::Cut)
        .count();
    assert!(
        cut_after >= 2,
        "the satellite first carried records in boot {first}: too few cut boots after it"
    );

    let stats = rig.stop_gateway();
    eprintln!(
        "firmware_reboot: seed {seed}: {} kills, {} boots, {} records accepted, {} recovered at boots, {delivered} delivered ids ({} not printed before a kill), {duplicates} duplicates at the regions, {} resent by the device and absorbed by the gateway, {discarded} discarded at open, satellite {sat_bytes} B of {SAT_BUDGET} in {satellite_boots} boots ({} critical records), {:.0} s",
        plan.len(),
        boots.len(),
        accepted.len(),
        recovered,
        delivered - accepted.len(),
        stats["device_resent"],
        rig.satellite.critical(),
        began.elapsed().as_secs_f64()
    );
}
