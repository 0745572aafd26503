//! Small seeded worlds: what the fleet simulator promises about the engine it runs.

use twinhub_sim::{Report, RunOptions, Scenario, run};

/// Two regions, a free WAN and a satellite for critical records; `extra` is appended.
fn scenario(devices: u32, duration: &str, extra: &str) -> Scenario {
    Scenario::from_toml_str(&format!(
        r#"
name = "test"
seed = 11
devices = {devices}
duration = "{duration}"
[device]
interval = "30s"
payload_bytes = [32, 64]
classes = {{ critical = 0.1, normal = 0.8, bulk = 0.1 }}
[[region]]
name = "primary"
latency = ["20ms", "80ms"]
outages = [{{ from = "10m", to = "25m" }}]
[[region]]
name = "secondary"
latency = ["30ms", "120ms"]
[[link]]
name = "wan"
cost = "free"
[[link]]
name = "satellite"
cost = "costly"
budget = "2KiB/1d"
classes = ["critical"]
arm_after = "2m"
price_per_mib = 10.0
{extra}
"#
    ))
    .unwrap()
}

/// 1,000 devices for 40 minutes whose WAN goes down after 5 minutes for 30, with a
/// satellite budget small enough to run out (256 bytes a day per device); `extra` first.
fn dead_wan(extra: &str) -> Scenario {
    let faults = "[[link_fault]]\nlink = \"wan\"\nshare = 1.0\nup = \"5m\"\ndown = \"30m\"\n";
    let mut s = scenario(1_000, "40m", &format!("{extra}{faults}"));
    s.links[1].budget = Some(twinhub_core::Budget {
        bytes: 256,
        window: twinhub_core::Duration::from_days(1),
    });
    s
}

fn quiet() -> RunOptions {
    RunOptions::default()
}

fn sane(r: &Report) {
    assert_eq!(r.lost, 0, "{}", r.summary());
    assert_eq!(r.anomalies, 0, "{}", r.summary());
    assert_eq!(r.events_lost, 0, "{}", r.summary());
    assert!(r.engines_agree, "{}", r.summary());
    let delivered: u64 = r.delivered.values().sum();
    let d = r.dropped;
    assert_eq!(
        r.accepted,
        delivered + r.pending_at_end + d.total(),
        "{}",
        r.summary()
    );
}

#[test]
fn dark_primary_fails_over_fast_loses_nothing_and_never_touches_the_satellite() {
    let r = run(&scenario(3_000, "45m", ""), &quiet()).unwrap();
    sane(&r);
    println!("{}", r.summary());
    assert_eq!(r.accepted, 3_000 * 90);
    assert!(r.delivered["secondary"] > 0);
    assert!(r.delivered["primary"] > r.delivered["secondary"]);
    assert_eq!(r.failover_time.count, 3_000, "every device failed over");
    assert!(r.failover_time.p99_ms <= 15_000, "{:?}", r.failover_time);
    assert!(r.failback_time.count > 0, "{:?}", r.failback_time);
    assert_eq!(r.links["satellite"].bytes, 0, "the WAN worked throughout");
    assert_eq!(r.dropped.evicted, 0);
    // During the outage some records wait for the failover; afterwards none.
    assert!(r.timeline[15].pending > 0 || r.timeline[11].pending > 0);
    assert_eq!(r.timeline.last().unwrap().pending, r.pending_at_end);
}

#[test]
fn dead_wan_arms_the_satellite_for_critical_records_within_budget() {
    let s = dead_wan("");
    let r = run(&s, &quiet()).unwrap();
    sane(&r);
    println!("{}", r.summary());
    let sat = &r.links["satellite"];
    assert!(sat.bytes > 0, "critical records took the satellite");
    assert!(
        sat.bytes <= 1_000 * 256,
        "never past the daily budget: {} bytes",
        sat.bytes
    );
    assert!(r.budget_exhausted > 0, "the small budget ran out");
    assert!(sat.spend > 0.0);
    assert!(
        sat.max_per_device > 0 && sat.max_per_device <= 256,
        "no device past its own budget: {}",
        sat.max_per_device
    );
}

#[test]
fn same_seed_same_report_other_seed_other_report() {
    let s = scenario(
        500,
        "30m",
        "[[link_fault]]\nlink = \"wan\"\nshare = 0.2\nup = \"4m\"\ndown = \"3m\"\n",
    );
    let full = run(&s, &quiet()).unwrap();
    // Setup is part of the wall time, so the event loop's rate is the higher one.
    assert!(full.setup_s > 0.0 && full.setup_s < full.wall_s, "{full:?}");
    assert!(full.loop_records_per_s > full.records_per_s);
    let a = full.deterministic();
    let b = run(&s, &quiet()).unwrap().deterministic();
    assert_eq!(a, b);
    let c = run(
        &s,
        &RunOptions {
            seed: Some(12),
            ..quiet()
        },
    )
    .unwrap()
    .deterministic();
    assert_ne!(a, c);
    assert_eq!(
        a.accepted + a.refused,
        c.accepted + c.refused,
        "the load does not depend on the seed"
    );
}

#[test]
fn device_count_can_be_overridden() {
    let s = scenario(10, "5m", "");
    let r = run(
        &s,
        &RunOptions {
            devices: Some(40),
            ..quiet()
        },
    )
    .unwrap();
    assert_eq!(r.devices, 40);
    assert!(
        run(
            &s,
            &RunOptions {
                devices: Some(0),
                ..quiet()
            }
        )
        .is_err()
    );
}

#[test]
fn scenario_errors_name_the_problem() {
    let base = "devices = 1\nduration = \"1m\"\n[[region]]\nname = \"a\"\n[[link]]\nname = \"w\"\ncost = \"free\"\n";
    assert!(Scenario::from_toml_str(base).is_ok());
    let e = Scenario::from_toml_str(&format!("{base}colour = 3\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("colour") && e.contains("line"), "{e}");
    let e = Scenario::from_toml_str(&base.replace("\"1m\"", "\"1 fortnight\""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("1 fortnight"), "{e}");
    let e = Scenario::from_toml_str(&base.replace("\"free\"", "\"cheap\""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cheap"), "{e}");
    let e = Scenario::from_toml_str(&base.replace("devices = 1", "devices = 0"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("devices"), "{e}");
    let e = Scenario::from_toml_str(&format!(
        "{base}[[link_fault]]\nlink = \"x\"\nshare = 0.1\nup = \"1m\"\ndown = \"1m\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("\"x\""), "{e}");
    let e = Scenario::from_toml_str(&base.replace(
        "name = \"w\"\ncost = \"free\"",
        "name = \"s\"\ncost = \"costly\"\nclasses = [\"urgent\"]",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("urgent"), "{e}");
    let e = Scenario::from_toml_str(&format!(
        "{base}[device.reboot]\nshare = 1.5\nevery = \"1h\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("device.reboot"), "{e}");
    for size in ["5000B", "4KiB", "1GiB", "lots"] {
        let e = Scenario::from_toml_str(&format!("{base}[device]\nstore = \"{size}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("store") && e.contains(size) && e.contains("line"),
            "{e}"
        );
    }
    let e = Scenario::from_toml_str(&base.replace("devices = 1", "devices = 200000000"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("devices = 200000000") && e.contains("100000000"),
        "{e}"
    );
    let big = RunOptions {
        devices: Some(200_000_000),
        ..quiet()
    };
    let e = run(&Scenario::from_toml_str(base).unwrap(), &big)
        .unwrap_err()
        .to_string();
    assert!(e.contains("devices"), "{e}");
}

/// Engines are sized for two regions and two links when a scenario fits, for the full
/// limits otherwise: both worlds keep every promise, and the small one takes less memory.
#[test]
fn three_regions_and_three_links_run_on_full_size_engines() {
    let small = run(&scenario(300, "30m", ""), &quiet()).unwrap();
    sane(&small);
    let mut s = scenario(
        300,
        "30m",
        "[[region]]\nname = \"tertiary\"\nlatency = [\"50ms\", \"150ms\"]\n\
         [[link]]\nname = \"cell\"\ncost = \"metered\"\n",
    );
    s.name = "three".into();
    let big = run(&s, &quiet()).unwrap();
    sane(&big);
    assert_eq!(big.delivered.len(), 3, "{}", big.summary());
    assert!(big.failovers > 0, "{}", big.summary());
    assert!(
        big.bytes_per_device >= small.bytes_per_device + 250,
        "{} vs {}",
        big.bytes_per_device,
        small.bytes_per_device
    );
}

#[test]
fn the_shipped_fabrikam_scenario_parses_and_runs_scaled_down() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/fabrikam.toml");
    let s = Scenario::from_file(std::path::Path::new(path)).unwrap();
    assert_eq!(s.devices, 800_000);
    assert_eq!(s.duration.as_secs(), 7_200);
    let r = run(
        &s,
        &RunOptions {
            devices: Some(2_000),
            ..quiet()
        },
    )
    .unwrap();
    sane(&r);
    assert!(r.failover_time.p99_ms <= 15_000, "{:?}", r.failover_time);
    let sat = &r.links["satellite"];
    assert!(sat.max_per_device <= sat.budget_bytes.unwrap());
    // The real outbox (64 KiB) holds a flaky WAN's five-minute gaps.
    assert_eq!(r.store_bytes, 64 * 1024);
    assert_eq!(r.dropped.evicted, 0, "{}", r.summary());
    assert_eq!(r.refused, 0, "{}", r.summary());
}

/// The 2,000,000-device fabrikam is the same fleet with regions grown to match: the same
/// per-device load on its regions.
#[test]
fn the_two_million_device_fabrikam_is_the_same_fleet_grown() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/");
    let small = Scenario::from_file(&std::path::Path::new(dir).join("fabrikam.toml")).unwrap();
    let big = Scenario::from_file(&std::path::Path::new(dir).join("fabrikam-2m.toml")).unwrap();
    assert_eq!(big.devices, 2_000_000);
    let per_device = |s: &Scenario, i: usize| s.regions[i].capacity as f64 / f64::from(s.devices);
    for i in 0..2 {
        assert!((per_device(&small, i) - per_device(&big, i)).abs() < 1e-9);
    }
    let (mut a, mut b) = (small.clone(), big.clone());
    a.name = String::new();
    b.name = String::new();
    a.devices = 0;
    b.devices = 0;
    for r in a.regions.iter_mut().chain(b.regions.iter_mut()) {
        r.capacity = 0;
    }
    assert_eq!(format!("{a:?}"), format!("{b:?}"), "nothing else differs");
}

#[test]
fn reboots_lose_nothing_and_never_refill_the_satellite_budget() {
    // Every device reboots every 5 minutes while its WAN is down and the satellite armed.
    let s = dead_wan("[device.reboot]\nshare = 1.0\nevery = \"5m\"\n");
    let r = run(&s, &quiet()).unwrap();
    sane(&r);
    println!("{}", r.summary());
    assert!(r.reboots >= 6_000, "{}", r.reboots);
    let sat = &r.links["satellite"];
    assert!(sat.bytes > 0, "critical records took the satellite");
    // Per device, not the fleet's sum: one device that refilled its budget at a reboot
    // would hide among others that spent less.
    assert!(
        sat.max_per_device <= 256,
        "reboots never refill a device's daily budget: {} bytes",
        sat.max_per_device
    );
    assert!(r.budget_exhausted > 0, "the small budget ran out");
    // Same seed, same world, reboots included.
    assert_eq!(
        run(&s, &quiet()).unwrap().deterministic(),
        r.deterministic()
    );
}

#[test]
fn a_share_of_devices_rebooting_through_an_outage_loses_nothing() {
    let extra = "[device.reboot]\nshare = 0.3\nevery = \"7m\"\n";
    let r = run(&scenario(2_000, "45m", extra), &quiet()).unwrap();
    sane(&r);
    assert!(r.reboots > 0);
    assert!(r.delivered["secondary"] > 0, "{}", r.summary());
}

/// Every device reboots every 4 minutes while its WAN is down: the records it holds at
/// each reboot stay in its outbox and are delivered later under the ids they were
/// accepted with, and no id is ever given to two records (each boot's epoch is above all
/// before it). The ids are the ones the regions received.
#[test]
fn a_reboot_keeps_pending_records_and_never_repeats_an_id() {
    let mut s = dead_wan("[device.reboot]\nshare = 1.0\nevery = \"4m\"\n");
    s.devices = 300;
    let r = run(
        &s,
        &RunOptions {
            ledger: true,
            ..quiet()
        },
    )
    .unwrap();
    sane(&r);
    assert!(r.reboots >= 300 * 9, "{}", r.reboots);
    let delivered: u64 = r.delivered.values().sum();
    assert_eq!(r.received.len() as u64, delivered + r.duplicates);
    let ids: std::collections::HashSet<_> = r
        .received
        .iter()
        .map(|x| (x.device, x.epoch, x.seq))
        .collect();
    assert_eq!(
        ids.len() as u64,
        delivered,
        "one id per record, across epochs"
    );
    let kept = r.received.iter().filter(|x| x.epoch < x.boot_epoch).count();
    assert!(
        kept > 300 * 10,
        "records pending at a reboot are delivered after it: {kept}"
    );
    let mut epochs: std::collections::HashMap<u32, std::collections::BTreeSet<u32>> =
        std::collections::HashMap::new();
    for x in &r.received {
        epochs.entry(x.device).or_default().insert(x.epoch);
    }
    // Each device's WAN comes back at its own phase, some only near the end.
    let mut spans: Vec<usize> = epochs.values().map(|e| e.len()).collect();
    spans.sort_unstable();
    assert_eq!(spans.len(), 300);
    assert!(
        spans[0] >= 2 && spans[150] >= 5,
        "ids span the boots: {spans:?}"
    );
}

/// A small outbox (two 4 KiB pages) through long WAN outages: it fills, and the engine
/// evicts as it would on the shipped flash store, where a removed record frees room only
/// once its whole page is empty. No device ever holds more than two pages of records, and
/// the same fleet with the default 64 KiB evicts nothing.
///
/// What it also shows about the engine on flash: one enqueue into a full outbox evicts
/// records until the oldest page is empty, a page's worth (about 48 here), more drops
/// than the engine's event queue has entries. Consecutive drops share an entry, so every
/// one is still reported and the world accounts for every record: nothing is lost.
#[test]
fn a_full_outbox_evicts_as_the_flash_store_would() {
    let fleet = |store: &str| {
        Scenario::from_toml_str(&format!(
            r#"
devices = 200
duration = "2h"
seed = 5
[device]
interval = "30s"
payload_bytes = [32, 64]
classes = {{ normal = 1.0 }}
store = "{store}"
[[region]]
name = "primary"
[[link]]
name = "wan"
cost = "free"
[[link_fault]]
link = "wan"
share = 1.0
up = "5m"
down = "100m"
"#
        ))
        .unwrap()
    };
    let small = run(&fleet("8KiB"), &quiet()).unwrap();
    println!("{}", small.summary());
    assert_eq!(small.anomalies, 0, "{}", small.summary());
    assert!(small.dropped.evicted > 0, "{}", small.summary());
    // Items of 56 to 88 bytes (8-byte header, frame padded to 4), 4,088 bytes a page.
    let (most, least) = (2 * (4088 / 56), 2 * (4088 / 88));
    assert!(
        (least..=most).contains(&(small.peak_pending_per_device as usize)),
        "the outbox held two pages of records: {}",
        small.peak_pending_per_device
    );
    assert_eq!(
        small.events_lost,
        0,
        "a page of evictions is reported whole: {}",
        small.summary()
    );
    assert_eq!(small.lost, 0, "{}", small.summary());
    let big = run(&fleet("64KiB"), &quiet()).unwrap();
    sane(&big);
    assert_eq!(big.dropped.evicted, 0, "{}", big.summary());
    assert_eq!((big.refused, big.events_lost), (0, 0));
    assert_eq!(big.accepted + big.refused, small.accepted + small.refused);
}
