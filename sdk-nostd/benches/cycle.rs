//! The engine's per-record cost: enqueue -> poll_transmit -> Delivered, beside a raw
//! baseline of what any outbox that hands bytes to a transport must do at least, measured
//! in the same run.
//!
//! Both sides, per record:
//!
//! - baseline: postcard-encode the record (epoch, seq, class, time, payload) into a
//!   heapless slot and push it on a heapless deque; at transmit, copy the queued slots
//!   (one, or all 32 of a batch) back to back into the caller's transmit buffer while they
//!   stay queued; on the acknowledgement, pop them. No checksum, no lookup by key.
//! - engine: the same encoding of the same fields (postcard's), plus a frame header and a
//!   CRC-32C that the receiver checks, written once into the store; at transmit, the store
//!   walked from the oldest record, each record checked against what is in flight and what
//!   the link allows and its frame copied into the caller's buffer; on `Delivered`, the
//!   transmit's records found by key and removed. Beyond the baseline it also routes (health
//!   of each endpoint and link, failover, budgets), expires and evicts by class (retention),
//!   names each record with an id, and keeps the counters of `Stats`.

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

/// The baseline's enqueue: postcard-encode the record into a slot and queue it.
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

/// The baseline's transmit: copy every queued record, back to back, into the transmit buffer
/// (they stay queued until acknowledged), returning the bytes written.
fn raw_transmit(q: &RawQueue, out: &mut [u8]) -> usize {
    let mut len = 0;
    for slot in q {
        out[len..len + slot.len()].copy_from_slice(slot);
        len += slot.len();
    }
    len
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
        let mut buf = [0u8; 4096];
        let mut seq = 0u64;
        b.iter(|| {
            seq += 1;
            raw_push(&mut q, seq);
            let len = raw_transmit(&q, &mut buf);
            black_box(&buf);
            // Acknowledged: the record leaves the queue.
            q.pop_front();
            black_box(len)
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
        let mut buf = [0u8; 8192];
        let mut seq = 0u64;
        b.iter(|| {
            for _ in 0..32 {
                seq += 1;
                raw_push(&mut q, seq);
            }
            let len = raw_transmit(&q, &mut buf);
            black_box(&buf);
            // Acknowledged: the batch leaves the queue.
            while q.pop_front().is_some() {}
            black_box(len)
        });
    });
    g.finish();

    // Memory: the engine state beside the 1,000-byte budget it must stay under.
    let size = size_of::<Engine<RamStore<4096>, &Config>>() - 4096;
    println!("ROW\tEngine size, bytes (excl. 4 KiB arena) vs budget\t{size}\t1000\tB");
}

criterion_group!(benches, cycle);
criterion_main!(benches);
