//! The flash outbox's cost per record: append, then acknowledge (remove the oldest) with a
//! window of records held, through `FlashStore`, beside `sequential-storage`'s raw queue
//! pushing and popping the same frame bytes on the same mock flash geometry, in the same run.
//! Prints both rates, their ratio, and page erases per 1,000 records. Then the read side:
//! every record of a full window read oldest first, as the engine fills a transmit
//! (`next_after` then `read`, record by record), beside the raw queue's own iterator.

#[path = "../tests/common/flash_mock.rs"]
#[allow(dead_code)] // The power-cut helpers are for the tests.
mod flash_mock;

use std::hint::black_box;
use std::time::Instant as Clock;

use criterion::{Criterion, criterion_group, criterion_main};
use embedded_storage::nor_flash as nor;
use embedded_storage_async::nor_flash as nb;
use sequential_storage::cache::page_states::CalculatedPageStates;
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::queue::{QueueConfig, QueueStorage};
use twinhub_core::flash::FlashStore;
use twinhub_core::store::{RecordKey, Store};
use twinhub_core::{Class, Instant, RecordMeta, frame};

/// 4 KiB pages, as on most MCU flash: eight for records, two for state.
type Flash = flash_mock::Flash<10, 1024>;
const PAGE: u32 = 4096;
const RECORDS: core::ops::Range<u32> = 0..8 * PAGE;
const STATE: core::ops::Range<u32> = 8 * PAGE..10 * PAGE;
/// Records held while new ones arrive (acknowledged ones leave from the front).
const WINDOW: u64 = 16;
const PAYLOAD: [u8; 64] = [0x5a; 64];
/// Records held for the read benchmark: a few pages' worth.
const HELD: u64 = 128;

type Fs = FlashStore<Flash, 256>;

/// The same blocking-to-async view the store uses, for the raw queue.
struct Async<F>(F);
impl<F: nor::ErrorType> nb::ErrorType for Async<F> {
    type Error = F::Error;
}
impl<F: nor::ReadNorFlash> nb::ReadNorFlash for Async<F> {
    const READ_SIZE: usize = F::READ_SIZE;
    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.0.read(offset, bytes)
    }
    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}
impl<F: nor::NorFlash> nb::NorFlash for Async<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;
    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.0.erase(from, to)
    }
    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.write(offset, bytes)
    }
}
impl<F: nor::MultiwriteNorFlash> nb::MultiwriteNorFlash for Async<F> {}

type Raw = QueueStorage<Async<Flash>, Cache<CalculatedPageStates, Uncached, Uncached>>;

fn meta(seq: u64) -> RecordMeta {
    RecordMeta {
        epoch: 1,
        seq,
        class: Class::Normal,
        enqueued_at: Instant::from_millis(seq),
    }
}

/// The bytes both sides store for record `seq`: its frame.
fn frame_of(seq: u64, out: &mut [u8]) -> usize {
    frame::encode(&meta(seq), &PAYLOAD, out).unwrap()
}

struct Outbox {
    store: Fs,
    seq: u64,
}

impl Outbox {
    fn new() -> Self {
        let mut store = Fs::open(Flash::new(None), RECORDS, STATE).unwrap();
        for seq in 0..WINDOW {
            store.append(&meta(seq), &PAYLOAD).unwrap();
        }
        Outbox { store, seq: WINDOW }
    }
    fn step(&mut self) {
        self.store
            .append(&meta(self.seq), black_box(&PAYLOAD))
            .unwrap();
        let oldest: RecordKey = self.store.next_after(None).unwrap().unwrap().key();
        self.store.remove(oldest).unwrap();
        self.seq += 1;
    }
    fn erases(&mut self) -> u64 {
        self.store.flash().page_erases()
    }
}

struct RawQueue {
    queue: Raw,
    seq: u64,
    buf: Aligned,
}

#[repr(align(4))]
struct Aligned([u8; 256]);

impl RawQueue {
    fn new() -> Self {
        let pages = (RECORDS.len() / PAGE as usize).max(1);
        let queue = QueueStorage::new(
            Async(Flash::new(None)),
            QueueConfig::new(RECORDS),
            Cache::new(CalculatedPageStates::new(pages), Uncached, Uncached),
        );
        let mut q = RawQueue {
            queue,
            seq: 0,
            buf: Aligned([0; 256]),
        };
        for _ in 0..WINDOW {
            q.push();
        }
        q
    }
    fn push(&mut self) {
        let n = frame_of(self.seq, &mut self.buf.0);
        embassy_futures::block_on(self.queue.push(black_box(&self.buf.0[..n]), false)).unwrap();
        self.seq += 1;
    }
    fn step(&mut self) {
        self.push();
        embassy_futures::block_on(self.queue.pop(&mut self.buf.0))
            .unwrap()
            .unwrap();
    }
    fn erases(&mut self) -> u64 {
        self.queue.flash().0.page_erases()
    }
}

/// Reads every record held, oldest first, as the engine does to fill a transmit.
fn read_in_order(s: &mut Fs, buf: &mut [u8]) -> usize {
    let mut after = None;
    let mut bytes = 0;
    while let Some(info) = s.next_after(after).unwrap() {
        bytes += s.read(info.key(), buf).unwrap();
        after = Some(info.key());
    }
    bytes
}

/// The raw queue's walk over the same items.
fn raw_in_order(q: &mut Raw, buf: &mut [u8]) -> usize {
    embassy_futures::block_on(async {
        let mut it = q.iter().await.unwrap();
        let mut bytes = 0;
        while let Some(entry) = it.next(buf).await.unwrap() {
            bytes += entry.len();
        }
        bytes
    })
}

fn held_store() -> Fs {
    let mut s = Fs::open(Flash::new(None), RECORDS, STATE).unwrap();
    for seq in 0..HELD {
        s.append(&meta(seq), &PAYLOAD).unwrap();
    }
    s
}

fn held_raw() -> RawQueue {
    let mut q = RawQueue::new();
    for _ in WINDOW..HELD {
        q.push();
    }
    q
}

/// One outbox under test.
trait Outboxes {
    fn step(&mut self);
    fn erases(&mut self) -> u64;
}

impl Outboxes for Outbox {
    fn step(&mut self) {
        Outbox::step(self)
    }
    fn erases(&mut self) -> u64 {
        Outbox::erases(self)
    }
}

impl Outboxes for RawQueue {
    fn step(&mut self) {
        RawQueue::step(self)
    }
    fn erases(&mut self) -> u64 {
        RawQueue::erases(self)
    }
}

/// Records per second and page erases per 1,000 records over `n` steps.
fn measure(n: u64, o: &mut impl Outboxes) -> (f64, f64) {
    let e0 = o.erases();
    let t = Clock::now();
    for _ in 0..n {
        o.step();
    }
    let secs = t.elapsed().as_secs_f64();
    let e1 = o.erases();
    (n as f64 / secs, (e1 - e0) as f64 * 1000.0 / n as f64)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("flash append+ack");
    let mut outbox = Outbox::new();
    g.bench_function("FlashStore", |b| b.iter(|| outbox.step()));
    let mut raw = RawQueue::new();
    g.bench_function("sequential-storage queue", |b| b.iter(|| raw.step()));
    g.finish();

    let mut g = c.benchmark_group(format!("flash read {HELD} records in order"));
    let mut buf = Aligned([0; 256]);
    let mut store = held_store();
    g.bench_function("FlashStore", |b| {
        b.iter(|| black_box(read_in_order(&mut store, &mut buf.0)))
    });
    let mut raw = held_raw();
    g.bench_function("sequential-storage queue", |b| {
        b.iter(|| black_box(raw_in_order(&mut raw.queue, &mut buf.0)))
    });
    g.finish();

    // The same comparison by hand, so that the ratio and erase counts are printed.
    const N: u64 = 20_000;
    let mut outbox = Outbox::new();
    let mut raw = RawQueue::new();
    let (fs_rate, fs_e) = measure(N, &mut outbox);
    let (raw_rate, raw_e) = measure(N, &mut raw);
    println!(
        "flash outbox, {}-byte frames, 8 x 4 KiB pages, window {WINDOW}:",
        frame::encoded_len(&meta(N), PAYLOAD.len())
    );
    println!("  FlashStore append+remove oldest:     {fs_rate:>10.0} records/s");
    println!("  sequential-storage queue push+pop:   {raw_rate:>10.0} records/s");
    println!(
        "  ratio (raw / FlashStore):            {:>10.2}",
        raw_rate / fs_rate
    );
    println!("  page erases per 1,000 records: FlashStore {fs_e:.1}, raw queue {raw_e:.1}");

    const WALKS: u32 = 200;
    let (mut store, mut raw) = (held_store(), held_raw());
    let t = Clock::now();
    for _ in 0..WALKS {
        black_box(read_in_order(&mut store, &mut buf.0));
    }
    let fs_rate = f64::from(WALKS) * HELD as f64 / t.elapsed().as_secs_f64();
    let t = Clock::now();
    for _ in 0..WALKS {
        black_box(raw_in_order(&mut raw.queue, &mut buf.0));
    }
    let raw_rate = f64::from(WALKS) * HELD as f64 / t.elapsed().as_secs_f64();
    println!("reading {HELD} held records oldest first:");
    println!("  FlashStore next_after + read:        {fs_rate:>10.0} records/s");
    println!("  sequential-storage queue iterator:   {raw_rate:>10.0} records/s");
    println!(
        "  ratio (raw / FlashStore):            {:>10.2}",
        raw_rate / fs_rate
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
