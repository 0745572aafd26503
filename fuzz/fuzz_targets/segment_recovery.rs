#![no_main]
//! Disk outbox recovery on any segment file: opening never panics and never fails, every
//! record it replays is a frame that was in the file, in file order, intact; every frame
//! before the first damaged byte comes back unless acked; opening again gives the same
//! records and finds nothing more to cut; and the outbox takes new records afterwards.
//!
//! Input: a flags byte, then either raw segment bytes (flag bit 0 clear) or records that
//! are framed, acked, damaged and cut as the header bytes say.
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use twinhub::disk::{DiskStore, Recovery};
use twinhub::spec::Fsync;
use twinhub_core::frame::{self, RecordMeta};
use twinhub_core::{Class, Instant, Store};

const LOG: &str = "seg-00000000000000000003-0000000000.log";
const ACK: &str = "seg-00000000000000000003-0000000000.ack";
const MAX_BYTES: u64 = 1 << 20;

/// One directory per process, emptied for every input: a fresh temporary directory per
/// input would cost more than the recovery under test. In memory (`/dev/shm`) where there
/// is one: on a disk the file system, not recovery, sets the pace (about 8 times slower).
fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        base.join(format!("twinhub-fuzz-segment-{}", std::process::id()))
    })
}

/// An ack log entry as the outbox writes it: offset and its CRC-32C, little-endian.
fn ack_entry(off: u32) -> [u8; 8] {
    let o = off.to_le_bytes();
    let c = crc32c(&o).to_le_bytes();
    [o[0], o[1], o[2], o[3], c[0], c[1], c[2], c[3]]
}

/// Bitwise CRC-32C: small and independent of the outbox's own table.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Every record of an open store, as (metadata, frame bytes).
fn records(store: &mut DiskStore) -> Vec<(RecordMeta, Vec<u8>)> {
    let mut out = Vec::new();
    let mut after = None;
    while let Some(info) = store.next_after(after).expect("the index walks") {
        after = Some(info.key());
        let mut buf = vec![0u8; info.frame_len as usize];
        let n = store
            .read(info.key(), &mut buf)
            .expect("a replayed record reads back");
        assert_eq!(n, buf.len());
        let (f, m) = frame::decode(&buf).expect("a replayed record decodes");
        assert_eq!(m, n);
        assert_eq!(f.meta, info.meta);
        assert_eq!(f.payload.len(), info.payload_len as usize);
        out.push((info.meta, buf));
    }
    out
}

fn open(dir: &Path) -> (DiskStore, Recovery) {
    DiskStore::open(dir, MAX_BYTES, Fsync::Off).expect("the outbox always opens")
}

/// Frames built from the input: `[len][class][payload; len]` repeated. Returns the
/// segment bytes and each frame's (offset, bytes).
fn build(mut rest: &[u8]) -> (Vec<u8>, Vec<(usize, Vec<u8>)>) {
    let mut seg = Vec::new();
    let mut frames = Vec::new();
    let mut seq = 0;
    while let [len, class, tail @ ..] = rest {
        let (payload, tail) = tail.split_at(tail.len().min(usize::from(*len)));
        let meta = RecordMeta {
            epoch: 1,
            seq,
            class: Class::ALL[usize::from(*class % 3)],
            enqueued_at: Instant::from_millis(u64::from(*class) * 1000),
        };
        let mut buf = vec![0u8; frame::encoded_len(&meta, payload.len())];
        let n = frame::encode(&meta, payload, &mut buf).expect("a small frame encodes");
        frames.push((seg.len(), buf[..n].to_vec()));
        seg.extend_from_slice(&buf[..n]);
        seq += 1;
        rest = tail;
    }
    (seg, frames)
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).expect("the fuzz directory can be created");

    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // Frames that must come back: all of them before the first damaged byte, unless acked.
    let mut expected: Vec<Vec<u8>> = Vec::new();
    let mut undamaged = false;
    let seg = if flags & 1 == 0 {
        rest.to_vec()
    } else {
        let [acks, at_lo, at_hi, xor, cut_lo, cut_hi, records @ ..] = rest else {
            return;
        };
        let (mut seg, frames) = build(records);
        let mut ack = Vec::new();
        for (i, (off, _)) in frames.iter().enumerate().take(8) {
            if acks & (1 << i) != 0 {
                ack.extend_from_slice(&ack_entry(*off as u32));
            }
        }
        if flags & 2 != 0 {
            // A torn last ack entry, as a crash mid-append leaves it.
            ack.extend_from_slice(&[*xor, *at_lo, *at_hi]);
        }
        if !ack.is_empty() {
            fs::write(dir.join(ACK), &ack).expect("ack log written");
        }
        let mut intact = seg.len();
        if *xor != 0 && !seg.is_empty() {
            let at = usize::from(u16::from_le_bytes([*at_lo, *at_hi])) % seg.len();
            seg[at] ^= *xor;
            intact = at;
        }
        if flags & 4 != 0 {
            let cut = usize::from(u16::from_le_bytes([*cut_lo, *cut_hi])) % (seg.len() + 1);
            seg.truncate(cut);
            intact = intact.min(cut);
        }
        undamaged =
            intact == seg.len() && seg.len() == frames.iter().map(|f| f.1.len()).sum::<usize>();
        for (i, (off, bytes)) in frames.iter().enumerate() {
            let acked = i < 8 && acks & (1 << i) != 0;
            if off + bytes.len() <= intact && !acked {
                expected.push(bytes.clone());
            }
        }
        seg
    };
    fs::write(dir.join(LOG), &seg).expect("segment written");

    let (mut store, rec) = open(dir);
    assert_eq!(rec.segments, 1);
    assert_eq!(rec.records, store.len() as u64);
    assert!(rec.truncated_bytes <= seg.len() as u64);
    let got = records(&mut store);
    if rec.segments_moved_aside == 1 {
        assert!(got.is_empty());
        assert!(dir.join(format!("{LOG}.bad")).exists());
        assert!(!dir.join(LOG).exists());
    } else {
        assert_eq!(rec.segments_moved_aside, 0);
        // What remains on disk is the file up to the end of its last good frame.
        if let Ok(m) = fs::metadata(dir.join(LOG)) {
            assert_eq!(m.len(), seg.len() as u64 - rec.truncated_bytes);
        } else {
            assert!(got.is_empty(), "a segment holding live records was deleted");
        }
    }
    // Replayed frames are byte-for-byte frames of the file, in file order, not overlapping.
    let mut pos = 0;
    for (_, bytes) in &got {
        let at = seg[pos..]
            .windows(bytes.len())
            .position(|w| w == &bytes[..])
            .expect("a replayed frame is in the file, after the previous one");
        pos += at + bytes.len();
    }
    assert!(pos <= seg.len() - rec.truncated_bytes as usize);
    // Recovery resynchronises on whole frames: each record, acked record and skipped
    // region takes at least a header.
    let min = frame::HEADER_AND_CRC as u64;
    assert!((rec.records + rec.acked) * min <= seg.len() as u64);
    assert!(rec.corrupt_frames * min <= seg.len() as u64);
    // Sequential decoding reaches every intact frame before the first damage.
    let got_bytes: Vec<&Vec<u8>> = got.iter().map(|(_, b)| b).collect();
    assert!(got_bytes.len() >= expected.len());
    assert_eq!(
        &got_bytes[..expected.len()],
        &expected.iter().collect::<Vec<_>>()[..]
    );
    if undamaged {
        assert_eq!(
            got_bytes.len(),
            expected.len(),
            "an undamaged segment comes back whole"
        );
        assert_eq!((rec.corrupt_frames, rec.truncated_bytes), (0, 0));
    }

    // Opening again is a no-op on what the first open repaired.
    drop(store);
    let (mut store, again) = open(dir);
    assert_eq!(
        again.truncated_bytes, 0,
        "the first open left a tail to cut"
    );
    assert_eq!(again.segments_moved_aside, 0);
    assert_eq!(records(&mut store), got);

    // And the outbox still takes records.
    let meta = RecordMeta {
        epoch: 9,
        seq: 0,
        class: Class::Normal,
        enqueued_at: Instant::ZERO,
    };
    store
        .append(&meta, b"after recovery")
        .expect("a recovered outbox takes records");
    let last = records(&mut store).pop().expect("the new record is there");
    assert_eq!(last.0, meta);
});
