//! Simulated records per second through their whole life (enqueue, transmit, outcome),
//! for the world with 20,000 devices, beside the bare engine doing the same cycle for the
//! same number of records with no world around it (one device, outcomes handed straight
//! back). The ratio is what the world costs: event queue, region models, accounting.
//!
//! Besides the criterion group it prints a `ROW` line for `cargo xtask bench`.

use std::hint::black_box;
use std::time::Instant as WallClock;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use twinhub_core::store::RecordKey;
use twinhub_core::{Class, Config, EndpointConfig, Engine, Instant, Outcome};
use twinhub_sim::flash::{DEFAULT_STORE_BYTES, SimFlash, synthetic_payload};
use twinhub_sim::{RunOptions, Scenario, run};

const DEVICES: u32 = 20_000;

fn scenario() -> Scenario {
    Scenario::from_toml_str(&format!(
        r#"
devices = {DEVICES}
duration = "10m"
shards = 1
[device]
interval = "30s"
payload_bytes = [32, 64]
[[region]]
name = "primary"
outages = [{{ from = "3m", to = "6m" }}]
[[region]]
name = "secondary"
[[link]]
name = "wan"
cost = "free"
"#
    ))
    .expect("scenario")
}

/// The bare engine on the devices' simulated outbox: `n` records, each enqueued,
/// transmitted and acknowledged.
fn bare(config: &Config, n: u64) {
    let store = SimFlash::new(DEFAULT_STORE_BYTES, 1).expect("store");
    let mut p: Engine<SimFlash, &Config> = Engine::new(config, store, Instant::ZERO, 1, 1);
    let mut buf = [0u8; 4096];
    let mut payload = [0u8; 48];
    for i in 0..n {
        let now = Instant::from_millis(i * 30);
        synthetic_payload(1, RecordKey { epoch: 1, seq: i }, &mut payload);
        p.enqueue(now, black_box(&payload), Class::Normal)
            .expect("enqueue");
        while let Some(tx) = p.poll_transmit(now, &mut buf).expect("buffer") {
            p.handle_outcome(now, tx.id, Outcome::Delivered);
        }
    }
    black_box(p.stats().delivered);
}

fn fleet(c: &mut Criterion) {
    let s = scenario();
    let records = u64::from(DEVICES) * 20;
    let config = Config::builder("bench")
        .endpoint(EndpointConfig::new("primary"))
        .build()
        .expect("config");
    let mut g = c.benchmark_group("sim_records_20k_devices");
    g.throughput(Throughput::Elements(records));
    g.sample_size(10);
    g.bench_function("twinhub", |b| {
        b.iter(|| {
            let r = run(&s, &RunOptions::default()).expect("run");
            assert_eq!(r.lost, 0);
            black_box(r.accepted)
        })
    });
    g.bench_function("baseline", |b| b.iter(|| bare(&config, records)));
    g.finish();

    let t = WallClock::now();
    let r = run(&s, &RunOptions::default()).expect("run");
    let ours = r.accepted as f64 / t.elapsed().as_secs_f64();
    let t = WallClock::now();
    bare(&config, records);
    let base = records as f64 / t.elapsed().as_secs_f64();
    println!("ROW\tsimulated records/s (20k devices, 1 thread)\t{ours:.0}\t{base:.0}\trec/s");
    whole_fleet(&config);
}

/// The shipped fabrikam fleet (800,000 devices, two threads) for its first 20 simulated
/// minutes, beside the bare engine cycle on two threads for as many records.
fn whole_fleet(config: &Config) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/fabrikam.toml");
    let mut s = Scenario::from_file(std::path::Path::new(path)).expect("fabrikam");
    s.duration = std::time::Duration::from_secs(20 * 60);
    let t = WallClock::now();
    let r = run(&s, &RunOptions::default()).expect("run");
    let ours = r.accepted as f64 / t.elapsed().as_secs_f64();
    assert_eq!(r.lost, 0);
    let t = WallClock::now();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| bare(config, r.accepted / 2));
        }
    });
    let base = r.accepted as f64 / t.elapsed().as_secs_f64();
    let rss = r.peak_rss_bytes.unwrap_or(0) as f64 / f64::from(s.devices);
    println!(
        "ROW\tsimulated records/s (fabrikam 800k devices, 2 threads; peak RSS {rss:.0} B/device)\t{ours:.0}\t{base:.0}\trec/s"
    );
    // The same run without the second or so spent building 800,000 engines before the
    // first record: the rate records move through their life once the fleet is up.
    println!(
        "ROW\tsimulated records/s, event loop only (fabrikam 800k, 2 threads; setup {:.1} s)\t{:.0}\t{base:.0}\trec/s",
        r.setup_s, r.loop_records_per_s
    );
}

criterion_group!(benches, fleet);
criterion_main!(benches);
