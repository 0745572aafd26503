//! Disk outbox appends under group commit, beside the raw floor any durable outbox pays:
//! a `write` per frame of the same bytes and one `fdatasync` per group, to a file on the
//! same filesystem, in the same run.
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
use twinhub::outbox::DiskStore;
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
    for n in GROUPS {
        let mut g = c.benchmark_group(format!("outbox_append_256B_fsync_batch_{n}"));
        g.throughput(criterion::Throughput::Elements(n as u64));
        g.bench_function("twinhub", |b| {
            let dir = tmp.path().join(format!("ours-{n}"));
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
        let mut written = 0;
        let mut base = Duration::ZERO;
        for _ in 0..batches {
            let t = WallClock::now();
            raw_batch(&mut file, &frames, &mut written);
            base += t.elapsed();
            raw_reset(&mut file, &mut written);
        }
        let total = (batches * n) as f64;
        println!(
            "ROW\toutbox appends, records/s (256 B, fsync per {n})\t{:.0}\t{:.0}\trec/s",
            total / ours.as_secs_f64(),
            total / base.as_secs_f64()
        );
    }
}

criterion_group!(benches, appends);
criterion_main!(benches);
