//! Disk outbox appends under group commit, beside the raw floor any durable outbox pays:
//! a `write` per frame of the same bytes and one `fdatasync` per 64 records, to a file on
//! the same filesystem, in the same run.
//!
//! Besides the criterion group it prints a `ROW` line (records per second over a fixed run
//! of 50,000 records) for `cargo xtask bench`.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant as WallClock};

use criterion::{Criterion, criterion_group, criterion_main};
use twinhub::outbox::DiskStore;
use twinhub::spec::Fsync;
use twinhub_core::{Class, Instant, RecordMeta, Store, frame};

const BATCH: usize = 64;
const PAYLOAD: [u8; 256] = [0xa5; 256];
const MAX_BYTES: u64 = 256 << 20;
/// Drain (untimed) once this many bytes are pending, as delivery would.
const DRAIN_AT: u64 = 32 << 20;

fn meta(seq: u64) -> RecordMeta {
    RecordMeta {
        epoch: 1,
        seq,
        class: Class::Normal,
        enqueued_at: Instant::from_millis(seq),
    }
}

/// One group: 64 pushes and one sync.
fn ours_batch(store: &mut DiskStore, seq: &mut u64) {
    for _ in 0..BATCH {
        store.push(&meta(*seq), black_box(&PAYLOAD)).unwrap();
        *seq += 1;
    }
    store.sync().unwrap();
}

fn drain(store: &mut DiskStore) {
    while !store.is_empty() {
        store.remove(0).unwrap();
    }
}

/// The same frames as the store writes, encoded once up front.
fn frames() -> Vec<Vec<u8>> {
    (0..BATCH as u64)
        .map(|i| {
            let m = meta(1_000_000 + i);
            let mut buf = vec![0u8; frame::encoded_len(&m, PAYLOAD.len())];
            frame::encode(&m, &PAYLOAD, &mut buf).unwrap();
            buf
        })
        .collect()
}

fn raw_file(dir: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(dir.join("raw.log"))
        .unwrap()
}

fn raw_batch(file: &mut File, frames: &[Vec<u8>], written: &mut u64) {
    for f in frames {
        file.write_all(black_box(f)).unwrap();
        *written += f.len() as u64;
    }
    file.sync_data().unwrap();
}

fn raw_reset(file: &mut File, written: &mut u64) {
    if *written > DRAIN_AT {
        file.set_len(0).unwrap();
        std::io::Seek::rewind(file).unwrap();
        *written = 0;
    }
}

fn appends(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("outbox_append_256B_fsync_batch");
    g.bench_function("twinhub", |b| {
        let (mut store, _) =
            DiskStore::open(&tmp.path().join("ours"), MAX_BYTES, Fsync::Batch).unwrap();
        let mut seq = 0;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = WallClock::now();
                ours_batch(&mut store, &mut seq);
                total += t.elapsed();
                if store.used() > DRAIN_AT {
                    drain(&mut store);
                }
            }
            total
        });
    });
    g.bench_function("baseline", |b| {
        let frames = frames();
        let mut file = raw_file(tmp.path());
        let mut written = 0;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = WallClock::now();
                raw_batch(&mut file, &frames, &mut written);
                total += t.elapsed();
                raw_reset(&mut file, &mut written);
            }
            total
        });
    });
    g.finish();

    // Records per second over a fixed run, for the summary table.
    const RUN: usize = 50_000;
    let batches = RUN / BATCH;
    let (mut store, _) = DiskStore::open(&tmp.path().join("row"), MAX_BYTES, Fsync::Batch).unwrap();
    let mut seq = 0;
    let mut ours = Duration::ZERO;
    for _ in 0..batches {
        let t = WallClock::now();
        ours_batch(&mut store, &mut seq);
        ours += t.elapsed();
        if store.used() > DRAIN_AT {
            drain(&mut store);
        }
    }
    let frames = frames();
    let mut file = raw_file(tmp.path());
    let mut written = 0;
    let mut base = Duration::ZERO;
    for _ in 0..batches {
        let t = WallClock::now();
        raw_batch(&mut file, &frames, &mut written);
        base += t.elapsed();
        raw_reset(&mut file, &mut written);
    }
    let n = (batches * BATCH) as f64;
    println!(
        "ROW\toutbox appends, records/s (256 B, fsync batch of 64)\t{:.0}\t{:.0}\trec/s",
        n / ours.as_secs_f64(),
        n / base.as_secs_f64()
    );
}

criterion_group!(benches, appends);
criterion_main!(benches);
