//! Disk outbox appends under group commit, beside the raw floor any durable outbox pays,
//! grouped the same way: the group's frames (the same bytes, encoded before the clock
//! starts) copied into one buffer, one `write` of it and one `fdatasync` per group, to a
//! file on the same filesystem, in the same run. `DiskStore` also writes each group once,
//! so the baseline is what that costs without the store's index, CRCs and bookkeeping.
//!
//! Two commit intervals: 64 records (a light load) and [`GROUP_COMMIT_MAX`], the largest
//! group the producer's driver commits at once, which is what a busy gateway runs at.
//! Besides the criterion groups it prints `ROW` lines (records per second over a fixed run
//! of 51,200 records) for `cargo xtask bench`.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant as WallClock};

use criterion::{Criterion, criterion_group, criterion_main};
use twinhub::disk::DiskStore;
use twinhub::producer::GROUP_COMMIT_MAX;
use twinhub::spec::Fsync;
use twinhub_core::{Class, Instant, RecordMeta, Store, frame};

const GROUPS: [usize; 2] = [64, GROUP_COMMIT_MAX];
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

/// One group: `n` pushes and one sync.
fn ours_batch(store: &mut DiskStore, seq: &mut u64, n: usize) {
    for _ in 0..n {
        store.append(&meta(*seq), black_box(&PAYLOAD)).unwrap();
        *seq += 1;
    }
    store.sync().unwrap();
}

fn drain(store: &mut DiskStore) {
    while let Some(oldest) = store.next_after(None).unwrap() {
        store.remove(oldest.key()).unwrap();
    }
}

/// The same frames as the store writes, encoded once up front.
fn frames(n: usize) -> Vec<Vec<u8>> {
    (0..n as u64)
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

/// One group, as the store writes it: the frames gathered into one buffer, one `write`,
/// one `fdatasync`.
fn raw_batch(file: &mut File, frames: &[Vec<u8>], buf: &mut Vec<u8>, written: &mut u64) {
    buf.clear();
    for f in frames {
        buf.extend_from_slice(black_box(f));
    }
    file.write_all(buf).unwrap();
    *written += buf.len() as u64;
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
    for n in GROUPS {
        let mut g = c.benchmark_group(format!(
            "outbox_append_256B_fsync_batch_{n} (baseline: one write + fdatasync per group)"
        ));
        g.throughput(criterion::Throughput::Elements(n as u64));
        // Criterion calls the routine more than once (warm-up, measurement): each call
        // gets a new directory, since a reopened store would recover the last call's
        // records and refuse sequence numbers starting from 0 again.
        let mut calls = 0;
        g.bench_function("twinhub", |b| {
            calls += 1;
            let dir = tmp.path().join(format!("ours-{n}-{calls}"));
            let (mut store, _) = DiskStore::open(&dir, MAX_BYTES, Fsync::Batch).unwrap();
            let mut seq = 0;
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = WallClock::now();
                    ours_batch(&mut store, &mut seq, n);
                    total += t.elapsed();
                    if store.used() > DRAIN_AT {
                        drain(&mut store);
                    }
                }
                total
            });
        });
        g.bench_function("baseline", |b| {
            let frames = frames(n);
            let mut file = raw_file(tmp.path());
            let mut buf = Vec::new();
            let mut written = 0;
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = WallClock::now();
                    raw_batch(&mut file, &frames, &mut buf, &mut written);
                    total += t.elapsed();
                    raw_reset(&mut file, &mut written);
                }
                total
            });
        });
        g.finish();
    }

    // Records per second over a fixed run, for the summary table.
    const RUN: usize = 51_200;
    for n in GROUPS {
        let batches = RUN / n;
        let dir = tmp.path().join(format!("row-{n}"));
        let (mut store, _) = DiskStore::open(&dir, MAX_BYTES, Fsync::Batch).unwrap();
        let mut seq = 0;
        let mut ours = Duration::ZERO;
        for _ in 0..batches {
            let t = WallClock::now();
            ours_batch(&mut store, &mut seq, n);
            ours += t.elapsed();
            if store.used() > DRAIN_AT {
                drain(&mut store);
            }
        }
        let frames = frames(n);
        let mut file = raw_file(tmp.path());
        let mut buf = Vec::new();
        let mut written = 0;
        let mut base = Duration::ZERO;
        for _ in 0..batches {
            let t = WallClock::now();
            raw_batch(&mut file, &frames, &mut buf, &mut written);
            base += t.elapsed();
            raw_reset(&mut file, &mut written);
        }
        let total = (batches * n) as f64;
        println!(
            "ROW\toutbox appends, rec/s (256 B, fsync per {n}; baseline: one write+fdatasync per group)\t{:.0}\t{:.0}\trec/s",
            total / ours.as_secs_f64(),
            total / base.as_secs_f64()
        );
    }
}

criterion_group!(benches, appends);
criterion_main!(benches);
