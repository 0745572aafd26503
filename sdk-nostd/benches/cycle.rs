//! The engine's per-record cost: enqueue -> poll_transmit -> Delivered, beside a raw
//! baseline of what any outbox must do at least (a heapless deque push and pop plus a
//! postcard encode of the same record), measured in the same run.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde::Serialize;
use twinhub_core::*;

const PAYLOAD: [u8; 64] = [0x5a; 64];

#[derive(Serialize)]
struct RawRecord<'a> {
    epoch: u32,
    seq: u64,
    class: u8,
    enqueued_at: u64,
    payload: &'a [u8],
}

type RawQueue = heapless::Deque<heapless::Vec<u8, 128>, 32>;

/// The baseline's work per record: postcard-encode it into a slot and queue it.
fn raw_push(q: &mut RawQueue, seq: u64) {
    let rec = RawRecord {
        epoch: 1,
        seq,
        class: 1,
        enqueued_at: seq,
        payload: black_box(&PAYLOAD),
    };
    let mut slot = heapless::Vec::<u8, 128>::new();
    slot.resize_default(128).unwrap();
    let n = postcard::to_slice(&rec, &mut slot).unwrap().len();
    slot.truncate(n);
    q.push_back(slot).unwrap();
}

fn config() -> Config {
    Config::builder("bench-device-0001")
        .endpoint(EndpointConfig::new("primary"))
        .endpoint(EndpointConfig::new("secondary"))
        .build()
        .unwrap()
}

fn cycle(c: &mut Criterion) {
    let config = config();
    let mut g = c.benchmark_group("engine_cycle_per_record");
    g.bench_function("twinhub", |b| {
        let mut p = Engine::new(&config, RamStore::<4096>::new(), Instant::ZERO, 1, 1);
        let mut buf = [0u8; 4096];
        let mut t = 0u64;
        b.iter(|| {
            t += 1;
            let now = Instant::from_millis(t);
            let id = p.enqueue(now, black_box(&PAYLOAD), Class::Normal).unwrap();
            let tx = p.poll_transmit(now, &mut buf).unwrap().unwrap();
            p.handle_outcome(now, tx.id, Outcome::Delivered);
            black_box(id.seq)
        });
        assert_eq!(p.stats().pending, 0);
    });
    g.bench_function("baseline", |b| {
        let mut q = RawQueue::new();
        let mut seq = 0u64;
        b.iter(|| {
            seq += 1;
            raw_push(&mut q, seq);
            black_box(q.pop_front().unwrap().len())
        });
    });
    g.finish();

    // Batched: 32 records per transmit, the shape a busy gateway sees.
    let mut g = c.benchmark_group("engine_cycle_batch_of_32");
    g.bench_function("twinhub", |b| {
        let mut p = Engine::new(&config, RamStore::<8192>::new(), Instant::ZERO, 1, 1);
        let mut buf = [0u8; 8192];
        let mut t = 0u64;
        b.iter(|| {
            t += 1;
            let now = Instant::from_millis(t);
            for _ in 0..32 {
                p.enqueue(now, black_box(&PAYLOAD), Class::Normal).unwrap();
            }
            let tx = p.poll_transmit(now, &mut buf).unwrap().unwrap();
            p.handle_outcome(now, tx.id, Outcome::Delivered);
            black_box(tx.records)
        });
        assert_eq!(p.stats().pending, 0);
    });
    g.bench_function("baseline", |b| {
        let mut q = RawQueue::new();
        let mut seq = 0u64;
        b.iter(|| {
            for _ in 0..32 {
                seq += 1;
                raw_push(&mut q, seq);
            }
            let mut total = 0;
            while let Some(s) = q.pop_front() {
                total += s.len();
            }
            black_box(total)
        });
    });
    g.finish();

    // Memory: the engine state beside the 1,000-byte budget it must stay under.
    let size = size_of::<Engine<RamStore<4096>, &Config>>() - 4096;
    println!("ROW\tEngine size, bytes (excl. 4 KiB arena) vs budget\t{size}\t1000\tB");
}

criterion_group!(benches, cycle);
criterion_main!(benches);
