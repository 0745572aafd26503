//! The simulated outbox against the shipped one: `SimFlash` and `FlashStore` (on a RAM
//! NOR flash of the same geometry) given the same operations must answer the same, so a
//! simulated device fills up, refuses, frees room and names what to evict to make room
//! exactly when a real one would.

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashErrorKind, ReadNorFlash,
};
use proptest::prelude::*;
use twinhub_core::flash::FlashStore;
use twinhub_core::store::{Persist, RecordKey, Store, StoreError};
use twinhub_core::{Class, Duration, Instant, LinkSpend, RecordMeta, frame};
use twinhub_sim::flash::{MAX_FRAME, PAGE_BYTES, SimFlash, synthetic_payload};

/// NOR flash in RAM: 4-byte words, 4 KiB pages, writes only clear bits.
struct Ram(Vec<u8>);

impl ErrorType for Ram {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for Ram {
    const READ_SIZE: usize = 4;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let at = offset as usize;
        bytes.copy_from_slice(&self.0[at..at + bytes.len()]);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.0.len()
    }
}

impl NorFlash for Ram {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = PAGE_BYTES as usize;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.0[from as usize..to as usize].fill(0xff);
        Ok(())
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        for (d, s) in self.0[offset as usize..].iter_mut().zip(bytes) {
            *d &= *s;
        }
        Ok(())
    }
}

impl MultiwriteNorFlash for Ram {}

type Real = FlashStore<Ram, 1024>;

const SEED: u64 = 0x5eed;

/// A real store of `pages` record pages (and two state pages) and a simulated one.
fn pair(pages: u32) -> (Real, SimFlash) {
    let records = pages * PAGE_BYTES;
    let flash = Ram(vec![0xff; (records + 2 * PAGE_BYTES) as usize]);
    let real = Real::open(flash, 0..records, records..records + 2 * PAGE_BYTES).unwrap();
    let sim = SimFlash::new(u64::from(records), SEED).unwrap();
    (real, sim)
}

fn reopen(real: Real, pages: u32) -> Real {
    let records = pages * PAGE_BYTES;
    Real::open(
        real.into_inner(),
        0..records,
        records..records + 2 * PAGE_BYTES,
    )
    .unwrap()
}

fn meta(epoch: u32, seq: u64, class: Class) -> RecordMeta {
    RecordMeta {
        epoch,
        seq,
        class,
        enqueued_at: Instant::from_millis(seq * 30_000 + u64::from(epoch)),
    }
}

fn payload(key: RecordKey, len: usize) -> Vec<u8> {
    let mut p = vec![0; len];
    synthetic_payload(SEED, key, &mut p);
    p
}

/// Every answer a caller can see without changing the stores is the same.
fn same(real: &mut Real, sim: &mut SimFlash) {
    quick(real, sim);
    let (mut a, mut b) = (
        real.next_after(None).unwrap(),
        sim.next_after(None).unwrap(),
    );
    let (mut ra, mut rb) = ([0u8; 1024], [0u8; 1024]);
    while let (Some(x), Some(y)) = (a, b) {
        assert_eq!(x, y);
        let (n, m) = (
            real.read(x.key(), &mut ra).unwrap(),
            sim.read(y.key(), &mut rb).unwrap(),
        );
        assert_eq!(ra[..n], rb[..m], "the frames are the same bytes");
        (a, b) = (
            real.next_after(Some(x.key())).unwrap(),
            sim.next_after(Some(y.key())).unwrap(),
        );
    }
    assert_eq!(a, b);
}

/// The answers that cost the flash store no walk: length, room, the oldest record.
fn quick(real: &mut Real, sim: &mut SimFlash) {
    assert_eq!(real.len(), sim.len());
    assert_eq!(real.capacity(), sim.capacity());
    for f in [13, 40, 77, 100, 161, 500, MAX_FRAME, MAX_FRAME + 1] {
        assert_eq!(real.cost(f), sim.cost(f), "cost({f})");
        assert_eq!(real.fits(f), sim.fits(f), "fits({f}) with {sim:?}");
        assert_eq!(
            real.reclaim_through(f),
            sim.reclaim_through(f),
            "reclaim_through({f}) with {sim:?}"
        );
    }
    assert_eq!(real.next_after(None), sim.next_after(None));
}

#[derive(Debug, Clone)]
enum Op {
    /// Append a record with this payload length and class.
    Append(usize, usize),
    /// Remove the record at this share of the way through the records held.
    Remove(f64),
    RemoveOldest,
    Reboot,
    SaveSpend(u8, u64),
}

/// Operations, appends `appends` times as likely as before others' weights.
fn op(appends: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        appends => (1usize..=140, 0usize..3).prop_map(|(l, c)| Op::Append(l, c)),
        1 => (1usize..=900, 0usize..3).prop_map(|(l, c)| Op::Append(l, c)),
        3 => (0.0f64..1.0).prop_map(Op::Remove),
        5 => Just(Op::RemoveOldest),
        1 => Just(Op::Reboot),
        1 => (0u8..3, 0u64..5000).prop_map(|(l, b)| Op::SaveSpend(l, b)),
    ]
}

/// Runs `ops` on both stores, comparing after each; returns the appends refused.
fn run(pages: u32, ops: &[Op]) -> u32 {
    let (mut real, mut sim) = pair(pages);
    let mut epoch = real.next_epoch().unwrap();
    assert_eq!(sim.next_epoch().unwrap(), epoch);
    let mut seq = 0;
    let mut saved = [None; 3];
    let mut refused = 0;
    for (n, op) in ops.iter().enumerate() {
        match *op {
            Op::Append(len, class) => {
                let m = meta(epoch, seq, Class::ALL[class]);
                let p = payload(m.key(), len);
                let (a, b) = (real.append(&m, &p), sim.append(&m, &p));
                assert_eq!(a, b, "append of {len} bytes to {sim:?}");
                match a {
                    Ok(()) => seq += 1,
                    Err(_) => refused += 1,
                }
            }
            Op::Remove(_) if real.is_empty() => {}
            Op::Remove(at) => {
                let mut keys = Vec::new();
                let mut after = None;
                while let Some(i) = sim.next_after(after).unwrap() {
                    keys.push(i.key());
                    after = Some(i.key());
                }
                let key = keys[((keys.len() as f64) * at) as usize];
                assert_eq!(real.remove(key), sim.remove(key));
                assert_eq!(sim.remove(key), Err(StoreError::NoSuchRecord));
            }
            Op::RemoveOldest => {
                if let Some(i) = real.next_after(None).unwrap() {
                    assert_eq!(real.remove(i.key()), sim.remove(i.key()));
                }
            }
            Op::Reboot => {
                real = reopen(real, pages);
                let e = real.next_epoch().unwrap();
                assert_eq!(sim.next_epoch().unwrap(), e);
                assert!(e > epoch);
                for (l, s) in saved.iter().enumerate() {
                    assert_eq!(real.load_spend(l as u8).unwrap(), *s);
                    assert_eq!(sim.load_spend(l as u8).unwrap(), *s);
                }
                (epoch, seq) = (e, 0);
            }
            Op::SaveSpend(l, spent) => {
                let s = LinkSpend {
                    spent,
                    window_elapsed: Duration::from_millis(spent * 7),
                };
                real.save_spend(l, s).unwrap();
                sim.save_spend(l, s).unwrap();
                saved[usize::from(l)] = Some(s);
            }
        }
        // Every record compared (a walk of the flash per record) now and then.
        if n % 64 == 63 || n + 1 == ops.len() {
            same(&mut real, &mut sim);
        } else {
            quick(&mut real, &mut sim);
        }
    }
    refused
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Three pages fill within a few hundred operations: refusals, page turns and
    /// reuse come often.
    #[test]
    fn three_pages_answer_as_the_flash_store(ops in prop::collection::vec(op(12), 1..500)) {
        run(3, &ops);
    }

    /// Five pages, filled (appends outnumber removals) and turned over too.
    #[test]
    fn five_pages_answer_as_the_flash_store(ops in prop::collection::vec(op(30), 400..800)) {
        let refused = run(5, &ops);
        prop_assert!(ops.len() < 600 || refused > 0, "long runs fill the store");
    }
}

/// A full outbox refuses, and removing a record frees room only once its page holds no
/// record: the oldest page must empty before anything new fits, as on flash.
#[test]
fn a_full_outbox_frees_room_only_when_its_oldest_page_empties() {
    let (mut real, mut sim) = pair(2);
    let mut seq = 0;
    loop {
        let m = meta(1, seq, Class::Normal);
        let p = payload(m.key(), 60);
        let r = sim.append(&m, &p);
        assert_eq!(real.append(&m, &p), r);
        if r.is_err() {
            assert_eq!(r, Err(StoreError::Full));
            break;
        }
        seq += 1;
    }
    // 60-byte payloads make 73-byte frames: 8 + 76 = 84 bytes an item, 48 in a page.
    assert_eq!(sim.len(), 96);
    assert_eq!(sim.cost(73), 84);
    let first_page: Vec<_> = (0..48).map(|s| meta(1, s, Class::Normal).key()).collect();
    // Every record of the first page but its oldest: still no room.
    for k in &first_page[1..] {
        assert_eq!(real.remove(*k), sim.remove(*k));
        assert!(!sim.fits(73));
        same(&mut real, &mut sim);
    }
    assert_eq!(sim.used(), 2 * 4088 - 4088 % 84);
    // The last one empties the page: a whole page is free.
    assert_eq!(real.remove(first_page[0]), sim.remove(first_page[0]));
    assert!(sim.fits(73) && sim.fits(MAX_FRAME));
    same(&mut real, &mut sim);
    let m = meta(1, seq, Class::Normal);
    let p = payload(m.key(), 60);
    assert_eq!(real.append(&m, &p), Ok(()));
    assert_eq!(sim.append(&m, &p), Ok(()));
    same(&mut real, &mut sim);
}

/// The frames it hands out are real frames: they decode, CRC and all, to the record.
#[test]
fn reads_are_real_frames_of_the_synthetic_payload() {
    let mut sim = SimFlash::new(64 * 1024, SEED).unwrap();
    let m = meta(3, 7, Class::Critical);
    let p = payload(m.key(), 50);
    sim.append(&m, &p).unwrap();
    let mut buf = [0u8; 256];
    let n = sim.read(m.key(), &mut buf).unwrap();
    let (f, len) = frame::decode(&buf[..n]).unwrap();
    assert_eq!((f.meta, f.payload, len), (m, &p[..], n));
    assert_eq!(
        sim.read(m.key(), &mut [0u8; 8]),
        Err(StoreError::Corrupt(frame::FrameError::BufferTooSmall))
    );
    // Only the record's own synthetic payload is held: other bytes could not be read back.
    let other = meta(3, 8, Class::Normal);
    assert_eq!(sim.append(&other, &p), Err(StoreError::Io));
    assert_eq!(sim.append(&m, &p), Err(StoreError::OutOfOrder));
    assert_eq!(sim.len(), 1);
}

#[test]
fn sizes_must_be_whole_pages_two_at_least() {
    assert!(SimFlash::new(64 * 1024, 0).is_ok());
    assert!(SimFlash::new(8 * 1024, 0).is_ok());
    assert!(SimFlash::new(4 * 1024, 0).is_err());
    assert!(SimFlash::new(10_000, 0).is_err());
    assert!(SimFlash::new(1 << 30, 0).is_err());
}
