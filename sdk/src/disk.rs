//! The durable disk outbox: [`DiskStore`], a [`Store`] that keeps pending records in
//! append-only segment files so they survive a crash or power loss.
//!
//! # Layout of the directory
//!
//! ```text
//! seg-{id:020}-{gen:010}.log   frames back to back, in the engine's frame format
//! seg-{id:020}-{gen:010}.ack   removed records of that segment: (offset u32 LE, CRC-32C u32 LE)
//! epoch                        the last epoch handed out, as decimal text
//! links                        budgeted links' spend in their window: name, bytes, ms
//! *.tmp                        half-written files, deleted on open
//! *.bad                        segments that could not be read, moved aside for inspection
//! ```
//!
//! Segments are numbered in append order, so records are kept in id order across them.
//! A RAM index, in key order, holds every live record's segment, offset, metadata and
//! lengths: [`Store::next_after`] never touches the disk, and [`Store::read`] is one
//! positioned read (the frame's CRC is checked on the way out).
//!
//! # Durability
//!
//! Each frame carries a CRC-32C over its header and body; recovery trusts nothing else.
//! With [`Fsync::Batch`] (group commit) [`Store::append`] reserves the frame's disk space
//! (`fallocate`, the file's size unchanged, so a full disk still refuses the record at
//! once) and holds the frame in memory; [`DiskStore::sync`] writes everything held with one
//! call and makes it durable with one `fdatasync` per touched file. The driver calls it
//! once per group of accepted records, before their `send`s return, so a group costs one
//! write, not one per record. [`Fsync::Always`] writes and syncs inside every push and
//! removal; [`Fsync::Off`] writes at each sync but never syncs (the OS writes back when it
//! likes; a process crash loses nothing acknowledged, a power loss may). Where the file
//! system cannot reserve space, frames are written as they are pushed. Reserved space runs
//! at most 256 KiB ahead of the active segment's end.
//!
//! Removing a record (delivered, or dropped by a policy) appends its offset to the
//! segment's ack log under the same policy. An ack lost in a crash only brings a delivered
//! record back as a *duplicate* after restart, which consumers drop by its `MessageId`;
//! it never loses one. A segment whose records are all removed is deleted with its ack log
//! (the active segment once it has rolled).
//!
//! # Recovery
//!
//! [`DiskStore::open`] never refuses to start because of damaged data: a torn tail is
//! truncated, a corrupt frame in the middle is skipped (the scan resynchronises on the next
//! offset whose header and CRC check out), a segment that cannot be read or holds no frame
//! at all is renamed to `*.bad`; each is counted in [`Recovery`]. It fails only when the
//! directory itself cannot be created or listed.
//!
//! # Byte cap
//!
//! Every record costs its frame length plus the 8 bytes its ack entry will take, so the
//! files of the outbox stay within `max_bytes` (the engine applies `on_full` when
//! [`Store::fits`] says no). Space held by removed records is reclaimed when a push needs
//! it: a segment with dead frames is rewritten as its next generation with only its live
//! frames (written to a temporary file, synced, renamed), which for a moment takes one
//! segment's worth of extra space.
//!
//! One process at a time may open a directory.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crc::{CRC_32_ISCSI, Crc};
use twinhub_core::frame::{self, RecordMeta};
use twinhub_core::{LinkSpend, RecordInfo, RecordKey, Store, StoreError};

use crate::epoch::{self, EpochError};
use crate::spec::Fsync;

/// The same CRC as frames use, for ack entries.
const CASTAGNOLI: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);
/// Bytes of one ack entry: offset and its CRC.
const ACK_ENTRY: usize = 8;
/// Largest segment before rolling (a single larger frame gets a segment of its own).
const MAX_SEGMENT: u64 = 8 << 20;
/// Smallest roll size, so a tiny cap does not mean a file per record.
const MIN_SEGMENT: u64 = 4 << 10;
/// Frames held for one write at the next sync: more are written at once.
const WRITE_BEHIND_MAX: usize = 1 << 20;
/// Disk space reserved ahead of the active segment's end at a time.
const RESERVE_STEP: u64 = 256 << 10;
/// No segment we write is larger than this (a full segment plus one maximal frame); a
/// larger file is not ours and is moved aside rather than read into memory.
const MAX_SEGMENT_FILE: u64 = MAX_SEGMENT + frame::MAX_BODY as u64 + 64;
/// Budgeted links' spend in their current window, one `name<TAB>bytes<TAB>ms` line each.
const LINKS_FILE: &str = "links";

/// Why the outbox failed: an I/O error on a named path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// An operation on a file or the directory failed.
    #[error("outbox: cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done (for example `create directory`).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Another producer (this process or another) has the outbox open: two writers would
    /// interleave their segments and acks.
    #[error("outbox: {} is in use by another producer", dir.display())]
    Locked {
        /// The outbox directory.
        dir: PathBuf,
    },
    /// The epoch counter could not be advanced.
    #[error("outbox: {0}")]
    Epoch(#[from] EpochError),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> OutboxError + 'a {
    move |source| OutboxError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What [`DiskStore::open`] found and repaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Pending records recovered (they keep their original epoch and sequence number).
    pub records: u64,
    /// Records found removed in an ack log, not recovered.
    pub acked: u64,
    /// Segment files read.
    pub segments: u32,
    /// Bytes cut from torn or corrupt segment tails.
    pub truncated_bytes: u64,
    /// Corrupt frames skipped in the middle of segments.
    pub corrupt_frames: u64,
    /// Segments that could not be read or held no frame, renamed to `*.bad`.
    pub segments_moved_aside: u32,
}

/// One live record in the RAM index.
#[derive(Clone, Copy)]
struct Entry {
    seg: u64,
    off: u32,
    frame_len: u32,
    payload_len: u32,
    meta: RecordMeta,
}

/// One segment file and its ack log.
struct Segment {
    generation: u32,
    file: File,
    /// Bytes of frames in the file (the append offset).
    size: u64,
    live: u32,
    live_bytes: u64,
    ack: Option<File>,
    ack_len: u64,
    dirty: bool,
    ack_dirty: bool,
    /// Bytes of the file's space already reserved (`fallocate`, size kept), from 0.
    reserved: u64,
}

/// A [`Store`] in append-only segment files with a RAM index; see the [module
/// documentation](self) for the format, durability and recovery.
///
/// Driving it: open it, take an epoch with [`next_epoch`](Self::next_epoch), hand it to
/// the engine, and after each group of accepted records call [`sync`](Self::sync) (through
/// `Engine::store_mut`) before telling their callers they are stored. Removals made by
/// the engine become durable at the same syncs.
///
/// ```
/// use twinhub::disk::DiskStore;
/// use twinhub::spec::Fsync;
/// use twinhub_core::{Class, Instant, RecordMeta, Store};
///
/// let dir = tempfile::tempdir().unwrap();
/// let (mut store, recovery) = DiskStore::open(dir.path(), 1 << 20, Fsync::Batch).unwrap();
/// assert_eq!(recovery.records, 0);
/// let epoch = store.next_epoch().unwrap();
/// let meta = RecordMeta { epoch, seq: 0, class: Class::Normal, enqueued_at: Instant::ZERO };
/// store.append(&meta, b"21.5C").unwrap();
/// store.sync().unwrap(); // now durable
/// drop(store);
/// let (store, recovery) = DiskStore::open(dir.path(), 1 << 20, Fsync::Batch).unwrap();
/// assert_eq!((store.len(), recovery.records), (1, 1));
/// ```
pub struct DiskStore {
    dir: PathBuf,
    max_bytes: u64,
    roll_at: u64,
    fsync: Fsync,
    index: VecDeque<Entry>,
    segments: BTreeMap<u64, Segment>,
    active: Option<u64>,
    next_id: u64,
    /// Sum of `cost` over live records.
    live_cost: u64,
    /// Bytes of all segment files and ack logs.
    disk_bytes: u64,
    /// A file was created or deleted since the directory was last synced.
    dir_dirty: bool,
    /// Highest epoch seen in a record or handed out, so epochs only grow.
    max_epoch: u32,
    /// Removals whose ack entry could not be written (a full disk): written later. Until
    /// then a restart would replay those records, a duplicate and never a loss.
    unwritten_acks: Vec<(u64, u32)>,
    /// An append found the disk full: empty segments are deleted even when active, so
    /// delivering records gives the space back.
    disk_full: bool,
    buf: Vec<u8>,
    /// Frames appended to the active segment but not yet written (`batch` and `off`):
    /// written with one call at the next sync, so a group costs one write, not one per
    /// record. Its space on disk is reserved at append time, so a full disk still refuses
    /// the record at the door.
    behind: Vec<u8>,
    /// Where `behind` starts in the active segment: the bytes already written.
    behind_at: u64,
    /// Whether the file system reserves space (`fallocate`); without it frames are
    /// written at once, as under `always`.
    can_reserve: bool,
    /// Holds the directory's advisory lock for as long as the store lives. Only held, and
    /// read only by the crash simulation, so release builds see it as unread.
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    lock: Option<File>,
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        // Frames held back are written as a clean close writes them; only a sync makes
        // them durable, and only synced records were ever reported stored.
        let _ = self.write_behind();
    }
}

impl fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskStore")
            .field("dir", &self.dir)
            .field("records", &self.index.len())
            .field("live_bytes", &self.live_cost)
            .field("disk_bytes", &self.disk_bytes)
            .field("max_bytes", &self.max_bytes)
            .field("segments", &self.segments.len())
            .field("fsync", &self.fsync)
            .finish()
    }
}

/// What a file name in the directory is.
enum Name {
    Log(u64, u32),
    Ack(u64, u32),
    Tmp,
    /// Another file of ours (moved aside) whose id must not be reused.
    Other(u64),
}

fn parse_name(name: &str) -> Option<Name> {
    if name == "epoch.tmp" || name == "links.tmp" {
        return Some(Name::Tmp);
    }
    let rest = name.strip_prefix("seg-")?;
    let (stem, ext) = rest.split_once('.')?;
    let (id, generation) = stem.split_once('-')?;
    let id: u64 = id.parse().ok()?;
    let generation: u32 = generation.parse().ok()?;
    Some(match ext {
        "log" => Name::Log(id, generation),
        "ack" => Name::Ack(id, generation),
        "tmp" => Name::Tmp,
        _ => Name::Other(id),
    })
}

fn file_name(id: u64, generation: u32, ext: &str) -> String {
    format!("seg-{id:020}-{generation:010}.{ext}")
}

fn ack_entry(off: u32) -> [u8; ACK_ENTRY] {
    let o = off.to_le_bytes();
    let c = CASTAGNOLI.checksum(&o).to_le_bytes();
    [o[0], o[1], o[2], o[3], c[0], c[1], c[2], c[3]]
}

/// Offsets named by an ack log, skipping torn or corrupt entries (resynchronising byte by
/// byte, so one torn entry does not misalign the rest).
fn parse_acks(bytes: &[u8]) -> Vec<u32> {
    let mut out = Vec::with_capacity(bytes.len() / ACK_ENTRY);
    let mut pos = 0;
    while let Some(e) = bytes.get(pos..pos + ACK_ENTRY) {
        let off = [e[0], e[1], e[2], e[3]];
        if CASTAGNOLI.checksum(&off).to_le_bytes() == [e[4], e[5], e[6], e[7]] {
            out.push(u32::from_le_bytes(off));
            pos += ACK_ENTRY;
        } else {
            pos += 1;
        }
    }
    out.sort_unstable();
    out
}

/// A frame found by the recovery scan: offset, length, metadata, payload length.
type Found = (usize, usize, RecordMeta, usize);

/// Scans segment bytes: the frames found, corrupt regions skipped, and where the valid
/// data ends (anything after it is a torn or corrupt tail).
fn scan(data: &[u8]) -> (Vec<Found>, u64, usize) {
    let mut found = Vec::new();
    let mut corrupt = 0;
    let mut pos = 0;
    while pos < data.len() {
        match frame::decode(&data[pos..]) {
            Ok((f, n)) => {
                found.push((pos, n, f.meta, f.payload.len()));
                pos += n;
            }
            Err(_) => {
                let next = (pos + 1..data.len())
                    .find(|&q| data[q] == frame::VERSION && frame::decode(&data[q..]).is_ok());
                match next {
                    Some(q) => {
                        corrupt += 1;
                        pos = q;
                    }
                    None => return (found, corrupt, pos),
                }
            }
        }
    }
    (found, corrupt, pos)
}

/// Whether `data` (holding no valid frame) looks like the start of a frame cut short, as a
/// crash during the first write to a segment leaves it.
fn is_torn_first_frame(data: &[u8]) -> bool {
    match frame::peek_len(data) {
        Ok(len) => len > data.len(),
        Err(frame::FrameError::Truncated { .. }) => {
            data.first().is_none_or(|&v| v == frame::VERSION)
        }
        Err(_) => false,
    }
}

fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl DiskStore {
    /// Opens (creating if needed) the outbox in `dir`, capped at `max_bytes` of files, and
    /// recovers what it holds.
    ///
    /// Damaged data never makes this fail (see [`Recovery`]); only an I/O error on the
    /// directory itself does.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        fsync: Fsync,
    ) -> Result<(DiskStore, Recovery), OutboxError> {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(OutboxError::Locked {
                    dir: dir.to_path_buf(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &lock_path)(e)),
        }
        let mut logs: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        let mut acks: Vec<(u64, u32)> = Vec::new();
        let mut max_id = None;
        for entry in fs::read_dir(dir).map_err(io_err("list directory", dir))? {
            let entry = entry.map_err(io_err("list directory", dir))?;
            let Some(name) = entry.file_name().to_str().and_then(parse_name) else {
                continue;
            };
            let id = match name {
                Name::Log(id, generation) => {
                    logs.entry(id).or_default().push(generation);
                    id
                }
                Name::Ack(id, generation) => {
                    acks.push((id, generation));
                    id
                }
                Name::Other(id) => id,
                Name::Tmp => {
                    // A compaction or epoch write that did not finish; the original stands.
                    let _ = fs::remove_file(entry.path());
                    continue;
                }
            };
            max_id = max_id.max(Some(id));
        }

        let mut store = DiskStore {
            dir: dir.to_path_buf(),
            max_bytes,
            roll_at: (max_bytes / 4).clamp(MIN_SEGMENT, MAX_SEGMENT),
            fsync,
            index: VecDeque::new(),
            segments: BTreeMap::new(),
            active: None,
            next_id: max_id.map_or(0, |m: u64| m.saturating_add(1)),
            live_cost: 0,
            disk_bytes: 0,
            dir_dirty: false,
            unwritten_acks: Vec::new(),
            disk_full: false,
            lock: Some(lock),
            max_epoch: 0,
            buf: Vec::new(),
            behind: Vec::new(),
            behind_at: 0,
            can_reserve: cfg!(any(target_os = "linux", target_os = "android")),
        };
        let mut rec = Recovery::default();
        for (id, mut generations) in logs {
            generations.sort_unstable();
            let Some(&generation) = generations.last() else {
                continue;
            };
            // A later generation is complete (it was synced before being renamed into
            // place), so earlier ones are leftovers of an interrupted compaction.
            for &old in &generations[..generations.len() - 1] {
                let _ = fs::remove_file(dir.join(file_name(id, old, "log")));
                let _ = fs::remove_file(dir.join(file_name(id, old, "ack")));
                store.dir_dirty = true;
            }
            store.recover_segment(id, generation, &mut rec);
        }
        for (id, generation) in acks {
            if store
                .segments
                .get(&id)
                .is_none_or(|s| s.generation != generation)
            {
                // An ack log whose segment is gone (deleted, superseded or moved aside).
                let _ = fs::remove_file(dir.join(file_name(id, generation, "ack")));
                store.dir_dirty = true;
            }
        }
        if store.fsync != Fsync::Off && store.dir_dirty {
            store.sync_dir_now()?;
        }
        rec.records = store.index.len() as u64;
        Ok((store, rec))
    }

    /// Reads one segment into the index, repairing or moving it aside as needed.
    fn recover_segment(&mut self, id: u64, generation: u32, rec: &mut Recovery) {
        let path = self.dir.join(file_name(id, generation, "log"));
        let read = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .and_then(|mut f| {
                let len = f.metadata()?.len();
                if len > MAX_SEGMENT_FILE {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "larger than any segment",
                    ));
                }
                let mut data = Vec::with_capacity(len as usize);
                f.read_to_end(&mut data)?;
                Ok((f, data))
            });
        rec.segments += 1;
        let (file, data) = match read {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "outbox segment unreadable");
                self.move_aside(id, generation, rec);
                return;
            }
        };
        let (found, corrupt, end) = scan(&data);
        if found.is_empty() && !data.is_empty() && !is_torn_first_frame(&data) {
            tracing::warn!(path = %path.display(), "outbox segment holds no frame");
            self.move_aside(id, generation, rec);
            return;
        }
        rec.corrupt_frames += corrupt;
        let torn = (data.len() - end) as u64;
        if torn > 0 {
            tracing::warn!(path = %path.display(), bytes = torn, "outbox: truncating torn tail");
            rec.truncated_bytes += torn;
            if let Err(e) = file.set_len(end as u64) {
                tracing::warn!(path = %path.display(), error = %e, "outbox: truncation failed");
            }
        }
        if corrupt > 0 {
            tracing::warn!(path = %path.display(), frames = corrupt, "outbox: skipped corrupt frames");
        }
        let ack_path = self.dir.join(file_name(id, generation, "ack"));
        let ack_bytes = match fs::read(&ack_path) {
            Ok(b) => b,
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    // Without it, delivered records come back as duplicates, never lost.
                    tracing::warn!(path = %ack_path.display(), error = %e, "outbox ack log unreadable");
                }
                Vec::new()
            }
        };
        let acked = parse_acks(&ack_bytes);
        let mut seg = Segment {
            generation,
            file,
            size: end as u64,
            live: 0,
            live_bytes: 0,
            ack: None,
            ack_len: ack_bytes.len() as u64,
            dirty: false,
            ack_dirty: false,
            reserved: 0,
        };
        for (off, len, meta, payload_len) in found {
            if acked.binary_search(&(off as u32)).is_ok() {
                rec.acked += 1;
                continue;
            }
            // The index is in key order, as the outbox writes. A frame whose key is not
            // above the last one's was not written in its place: after damage, resyncing
            // can land on a frame carried inside another record's payload.
            if self
                .index
                .back()
                .is_some_and(|last| last.meta.key() >= meta.key())
            {
                tracing::warn!(path = %path.display(), offset = off, "outbox: skipped a frame out of key order");
                rec.corrupt_frames += 1;
                continue;
            }
            seg.live += 1;
            seg.live_bytes += len as u64;
            self.live_cost += (len + ACK_ENTRY) as u64;
            self.max_epoch = self.max_epoch.max(meta.epoch);
            self.index.push_back(Entry {
                seg: id,
                off: off as u32,
                frame_len: len as u32,
                payload_len: payload_len as u32,
                meta,
            });
        }
        self.disk_bytes += seg.size + seg.ack_len;
        self.segments.insert(id, seg);
        if self.segments.get(&id).is_some_and(|s| s.live == 0) {
            let _ = self.delete_segment(id);
        }
    }

    fn move_aside(&mut self, id: u64, generation: u32, rec: &mut Recovery) {
        rec.segments_moved_aside += 1;
        for ext in ["log", "ack"] {
            let from = self.dir.join(file_name(id, generation, ext));
            let to = self
                .dir
                .join(format!("{}.bad", file_name(id, generation, ext)));
            if let Err(e) = fs::rename(&from, &to)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %from.display(), error = %e, "outbox: cannot move aside");
            }
        }
        self.dir_dirty = true;
    }

    /// Stores what budgeted links have spent in their current windows, so a restart does
    /// not hand a costly link a fresh budget. Written to a temporary file, synced (unless
    /// fsync is `off`) and renamed into place. `spends` is `(link name, spend)`.
    pub fn save_link_spend(&mut self, spends: &[(&str, LinkSpend)]) -> Result<(), OutboxError> {
        let mut text = String::new();
        for (name, s) in spends {
            text.push_str(&format!(
                "{name}\t{}\t{}\n",
                s.spent,
                s.window_elapsed.as_millis()
            ));
        }
        let path = self.dir.join(LINKS_FILE);
        let tmp = self.dir.join("links.tmp");
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        io::Write::write_all(&mut f, text.as_bytes())
            .and_then(|()| {
                if self.fsync == Fsync::Off {
                    Ok(())
                } else {
                    f.sync_all()
                }
            })
            .map_err(io_err("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
        if self.fsync != Fsync::Off {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// What [`save_link_spend`](Self::save_link_spend) stored, by link name. A missing
    /// file is no spend; lines that do not parse are skipped (and logged).
    pub fn load_link_spend(&self) -> Vec<(String, LinkSpend)> {
        let path = self.dir.join(LINKS_FILE);
        let Ok(text) = fs::read_to_string(&path) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let mut f = line.split('\t');
            let parsed = (|| {
                let name = f.next()?;
                let spent = f.next()?.parse().ok()?;
                let ms = f.next()?.parse().ok()?;
                f.next().is_none().then(|| {
                    (
                        name.to_string(),
                        LinkSpend {
                            spent,
                            window_elapsed: twinhub_core::Duration::from_millis(ms),
                        },
                    )
                })
            })();
            match parsed {
                Some(p) => out.push(p),
                None => {
                    tracing::warn!(path = %path.display(), "outbox: skipping a bad line of the links file")
                }
            }
        }
        out
    }

    /// Reads, increments and durably stores the epoch counter: every start of a producer
    /// on this outbox gets a higher epoch than any before it, and than any recovered
    /// record's.
    ///
    /// The counter is written to a temporary file, synced, renamed into place and the
    /// directory synced, whatever the fsync policy, since a reused epoch would make
    /// consumers drop new records as duplicates. A fresh outbox starts at 1. If the
    /// counter file is unreadable or garbage, the counter restarts above the current Unix
    /// time in seconds, which is above any count of starts (see [`crate::epoch`]).
    pub fn next_epoch(&mut self) -> Result<u32, OutboxError> {
        // The directory lock held since `open` keeps other writers out.
        let next = epoch::advance(&self.dir, self.max_epoch, epoch::Fresh::One)?;
        self.max_epoch = next;
        Ok(next)
    }

    /// Makes every record pushed and every removal made since the last call durable: one
    /// `fdatasync` per file written (usually one segment and one ack log), and the
    /// directory if files were created or deleted. Does nothing under [`Fsync::Off`].
    pub fn sync(&mut self) -> Result<(), OutboxError> {
        if let Err(e) = self.write_behind() {
            let id = self.active.unwrap_or_default();
            return Err(OutboxError::Io {
                op: "write",
                path: self.path(id, "log"),
                source: e,
            });
        }
        self.retry_acks();
        if self.fsync == Fsync::Off {
            return Ok(());
        }
        let dir = &self.dir;
        for (&id, seg) in self.segments.iter_mut() {
            if seg.dirty {
                seg.file.sync_data().map_err(|e| OutboxError::Io {
                    op: "sync",
                    path: dir.join(file_name(id, seg.generation, "log")),
                    source: e,
                })?;
                seg.dirty = false;
            }
            if seg.ack_dirty
                && let Some(ack) = &seg.ack
            {
                ack.sync_data().map_err(|e| OutboxError::Io {
                    op: "sync",
                    path: dir.join(file_name(id, seg.generation, "ack")),
                    source: e,
                })?;
                seg.ack_dirty = false;
            }
        }
        if self.dir_dirty {
            self.sync_dir_now()?;
        }
        Ok(())
    }

    fn sync_dir_now(&mut self) -> Result<(), OutboxError> {
        sync_dir(&self.dir)?;
        self.dir_dirty = false;
        Ok(())
    }

    /// Leaves the files as a killed process would (nothing synced or closed) but releases
    /// the directory lock, as the operating system does for a dead process: for crash
    /// tests in one process. Only with the `test-hooks` feature, which no product enables.
    #[cfg(feature = "test-hooks")]
    pub fn simulate_crash(self) {
        let mut this = std::mem::ManuallyDrop::new(self);
        // Only the lock is dropped; every other handle is leaked.
        drop(this.lock.take());
    }

    /// The outbox directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of segment files and ack logs on disk, including space held by removed
    /// records that is not reclaimed yet.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// Bytes charged to live records ([`Store::cost`] summed).
    pub fn used(&self) -> u64 {
        self.live_cost
    }

    /// Segment files held.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    fn path(&self, id: u64, ext: &str) -> PathBuf {
        let generation = self.segments.get(&id).map_or(0, |s| s.generation);
        self.dir.join(file_name(id, generation, ext))
    }

    /// The segment to append a frame of `flen` bytes to, rolling or creating one.
    fn writable_segment(&mut self, flen: u64) -> Result<u64, StoreError> {
        if let Some(id) = self.active
            && let Some(seg) = self.segments.get(&id)
            && seg.size > 0
            && seg.size + flen > self.roll_at
        {
            self.seal_active();
        }
        if let Some(id) = self.active {
            return Ok(id);
        }
        let id = self.next_id;
        let path = self.dir.join(file_name(id, 0, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| {
                tracing::warn!(path = %path.display(), error = %e, "outbox: cannot create segment");
                StoreError::Io
            })?;
        self.next_id += 1;
        self.dir_dirty = true;
        if self.fsync == Fsync::Always && self.sync_dir_now().is_err() {
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(StoreError::Io);
        }
        self.segments.insert(
            id,
            Segment {
                generation: 0,
                file,
                size: 0,
                live: 0,
                live_bytes: 0,
                ack: None,
                ack_len: 0,
                dirty: false,
                ack_dirty: false,
                reserved: 0,
            },
        );
        self.active = Some(id);
        Ok(id)
    }

    /// Stops appending to the active segment; deletes it if nothing in it is live.
    fn seal_active(&mut self) {
        // A segment is left only complete on disk; until then appends stay in it.
        if self.write_behind().is_err() {
            return;
        }
        if let Some(id) = self.active.take()
            && self.segments.get(&id).is_some_and(|s| s.live == 0)
        {
            let _ = self.delete_segment(id);
        }
    }

    /// Deletes a segment and its ack log. On failure the segment stays (and is retried
    /// when space is needed).
    fn delete_segment(&mut self, id: u64) -> io::Result<()> {
        let log = self.path(id, "log");
        let ack = self.path(id, "ack");
        // The segment goes first: an ack log left alone is deleted at the next open, while
        // a segment left without its ack log would bring delivered records back.
        remove_if_exists(&log)?;
        let _ = remove_if_exists(&ack);
        if let Some(seg) = self.segments.remove(&id) {
            self.disk_bytes -= seg.size + seg.ack_len;
        }
        if self.active == Some(id) {
            // Nothing in it was live, so neither was anything not yet written.
            self.active = None;
            self.behind.clear();
            self.behind_at = 0;
        }
        self.dir_dirty = true;
        if self.fsync == Fsync::Always {
            // Only duplicates are at stake, so a failed directory sync is not an error.
            let _ = self.sync_dir_now();
        }
        Ok(())
    }

    /// Bytes on disk plus the ack entries live records will need when removed: the
    /// figure kept under the cap, so a removal never takes the files over it.
    fn committed(&self) -> u64 {
        self.disk_bytes + (ACK_ENTRY * self.index.len()) as u64
    }

    /// Frees space held by removed records until `need` more bytes fit under the cap.
    fn reclaim(&mut self, need: u64) -> Result<(), StoreError> {
        while self.committed() + need > self.max_bytes {
            let dead = |s: &Segment| s.size - s.live_bytes + s.ack_len;
            let victim = self
                .segments
                .iter()
                .filter(|(id, s)| Some(**id) != self.active && dead(s) > 0)
                .max_by_key(|(_, s)| dead(s))
                .map(|(id, _)| *id);
            match victim {
                Some(id) => self.compact(id)?,
                None => {
                    let active_dead = self
                        .active
                        .and_then(|id| self.segments.get(&id))
                        .is_some_and(|s| dead(s) > 0);
                    if !active_dead {
                        return Err(StoreError::Full);
                    }
                    self.seal_active();
                }
            }
        }
        Ok(())
    }

    /// Rewrites a segment as its next generation holding only its live frames.
    fn compact(&mut self, id: u64) -> Result<(), StoreError> {
        let Some(seg) = self.segments.get(&id) else {
            return Ok(());
        };
        if seg.live == 0 {
            return self.delete_segment(id).map_err(|_| StoreError::Io);
        }
        let generation = seg.generation + 1;
        let start = self.index.partition_point(|e| e.seg < id);
        let end = self.index.partition_point(|e| e.seg <= id);
        let tmp = self.dir.join(file_name(id, generation, "tmp"));
        let fin = self.dir.join(file_name(id, generation, "log"));
        let result = (|| -> io::Result<(File, Vec<u32>, u64)> {
            let out = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            let mut offs = Vec::with_capacity(end - start);
            let mut pos = 0u64;
            for e in self.index.range(start..end) {
                self.buf.resize(e.frame_len as usize, 0);
                seg.file.read_exact_at(&mut self.buf, u64::from(e.off))?;
                out.write_all_at(&self.buf, pos)?;
                offs.push(pos as u32);
                pos += u64::from(e.frame_len);
            }
            out.sync_data()?;
            fs::rename(&tmp, &fin)?;
            Ok((out, offs, pos))
        })();
        let (file, offs, size) = match result {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(path = %tmp.display(), error = %e, "outbox: compaction failed");
                let _ = fs::remove_file(&tmp);
                return Err(StoreError::Io);
            }
        };
        // The new generation must be in the directory before the old one goes.
        if self.sync_dir_now().is_err() {
            // Keep the old generation in use; the new one must not win at the next open.
            let _ = fs::remove_file(&fin);
            return Err(StoreError::Io);
        }
        let old_log = self.path(id, "log");
        let old_ack = self.path(id, "ack");
        let _ = fs::remove_file(&old_log);
        let _ = remove_if_exists(&old_ack);
        self.dir_dirty = true;
        for (e, off) in self.index.range_mut(start..end).zip(offs) {
            e.off = off;
        }
        if let Some(seg) = self.segments.get_mut(&id) {
            self.disk_bytes -= seg.size + seg.ack_len;
            self.disk_bytes += size;
            *seg = Segment {
                generation,
                file,
                size,
                live: seg.live,
                live_bytes: seg.live_bytes,
                ack: None,
                ack_len: 0,
                dirty: false,
                ack_dirty: false,
                reserved: 0,
            };
        }
        Ok(())
    }

    /// Appends the removal of the frame at `off` to its segment's ack log.
    /// Writes the acks a full disk held back, as far as it now allows.
    fn retry_acks(&mut self) {
        while let Some(&(seg, off)) = self.unwritten_acks.last() {
            // A deleted segment needs no ack any more.
            if self.segments.contains_key(&seg) && self.write_ack(seg, off).is_err() {
                return;
            }
            self.unwritten_acks.pop();
        }
    }

    fn write_ack(&mut self, id: u64, off: u32) -> Result<(), StoreError> {
        let dir = &self.dir;
        let Some(seg) = self.segments.get_mut(&id) else {
            return Err(StoreError::Io);
        };
        // The path is made only when needed: this runs once per delivered record.
        if seg.ack.is_none() {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join(file_name(id, seg.generation, "ack")))
                .map_err(|_| StoreError::Io)?;
            seg.ack = Some(f);
            self.dir_dirty = true;
        }
        let Some(ack) = &seg.ack else {
            return Err(StoreError::Io);
        };
        if let Err(e) = ack.write_all_at(&ack_entry(off), seg.ack_len) {
            let path = dir.join(file_name(id, seg.generation, "ack"));
            tracing::warn!(path = %path.display(), error = %e, "outbox: cannot append ack");
            // A torn entry is skipped when read, so a failed undo harms nothing.
            let _ = ack.set_len(seg.ack_len);
            return Err(StoreError::Io);
        }
        seg.ack_len += ACK_ENTRY as u64;
        self.disk_bytes += ACK_ENTRY as u64;
        match self.fsync {
            Fsync::Always => {
                // The removal happened; a failed sync only risks a duplicate.
                let _ = ack.sync_data();
                if self.dir_dirty {
                    let _ = self.sync_dir_now();
                }
            }
            Fsync::Batch => seg.ack_dirty = true,
            Fsync::Off => {}
        }
        Ok(())
    }
}

impl Store for DiskStore {
    fn len(&self) -> usize {
        self.index.len()
    }

    fn capacity(&self) -> usize {
        usize::try_from(self.max_bytes).unwrap_or(usize::MAX)
    }

    fn cost(&self, frame_len: usize) -> usize {
        frame_len + ACK_ENTRY
    }

    fn fits(&self, frame_len: usize) -> bool {
        self.live_cost + self.cost(frame_len) as u64 <= self.max_bytes
    }

    fn append(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<(), StoreError> {
        if self
            .index
            .back()
            .is_some_and(|last| meta.key() <= last.meta.key())
        {
            return Err(StoreError::OutOfOrder);
        }
        let flen = frame::encoded_len(meta, payload.len());
        if !self.fits(flen) {
            return Err(StoreError::Full);
        }
        let cost = self.cost(flen) as u64;
        if self.committed() + cost > self.max_bytes {
            self.reclaim(cost)?;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(flen, 0);
        let encoded = frame::encode(meta, payload, &mut buf);
        let result = match encoded {
            Ok(_) => self.write_frame(meta, &buf, payload.len()),
            Err(_) => Err(StoreError::Full),
        };
        self.buf = buf;
        result
    }

    fn next_after(&mut self, after: Option<RecordKey>) -> Result<Option<RecordInfo>, StoreError> {
        let i = match after {
            None => 0,
            Some(k) => self.index.partition_point(|e| e.meta.key() <= k),
        };
        Ok(self.index.get(i).map(|e| RecordInfo {
            meta: e.meta,
            payload_len: e.payload_len,
            frame_len: e.frame_len,
        }))
    }

    fn read(&mut self, key: RecordKey, out: &mut [u8]) -> Result<usize, StoreError> {
        let e = &self.index[self.position(key)?];
        let len = e.frame_len as usize;
        let dst = out
            .get_mut(..len)
            .ok_or(StoreError::Corrupt(frame::FrameError::BufferTooSmall))?;
        let off = u64::from(e.off);
        if !self.behind.is_empty() && self.active == Some(e.seg) && off >= self.behind_at {
            let from = (off - self.behind_at) as usize;
            let src = self.behind.get(from..from + len).ok_or(StoreError::Io)?;
            dst.copy_from_slice(src);
        } else {
            let seg = self.segments.get(&e.seg).ok_or(StoreError::Io)?;
            seg.file
                .read_exact_at(dst, off)
                .map_err(|_| StoreError::Io)?;
        }
        // The disk may have rotted since recovery: never hand out a frame that fails its CRC.
        frame::decode(dst).map_err(StoreError::Corrupt)?;
        Ok(len)
    }

    fn remove(&mut self, key: RecordKey) -> Result<(), StoreError> {
        let index = self.position(key)?;
        let e = self.index[index];
        self.retry_acks();
        if self.write_ack(e.seg, e.off).is_err() {
            // The record was delivered: forget it now and write its ack when the disk
            // allows, rather than resend it for as long as the disk is full.
            self.unwritten_acks.push((e.seg, e.off));
        }
        self.index.remove(index);
        self.live_cost -= (e.frame_len as usize + ACK_ENTRY) as u64;
        if let Some(seg) = self.segments.get_mut(&e.seg) {
            seg.live -= 1;
            seg.live_bytes -= u64::from(e.frame_len);
            if seg.live == 0 && (self.active != Some(e.seg) || self.disk_full) {
                // Failure leaves an empty segment that a later reclaim retries.
                if self.delete_segment(e.seg).is_ok() {
                    self.disk_full = false;
                    self.unwritten_acks.retain(|(s, _)| *s != e.seg);
                }
            }
        }
        Ok(())
    }
}

impl DiskStore {
    /// The index position of the record with `key`.
    fn position(&self, key: RecordKey) -> Result<usize, StoreError> {
        let i = self.index.partition_point(|e| e.meta.key() < key);
        match self.index.get(i) {
            Some(e) if e.meta.key() == key => Ok(i),
            _ => Err(StoreError::NoSuchRecord),
        }
    }

    /// Writes an encoded frame to the active segment and indexes it; on failure the file is
    /// cut back so nothing is half-written.
    fn write_frame(
        &mut self,
        meta: &RecordMeta,
        bytes: &[u8],
        payload_len: usize,
    ) -> Result<(), StoreError> {
        let flen = bytes.len() as u64;
        let id = self.writable_segment(flen)?;
        let off = match self.segments.get(&id) {
            Some(seg) => seg.size,
            None => return Err(StoreError::Io),
        };
        if self.fsync != Fsync::Always && self.can_reserve {
            match self.reserve(id, off + flen) {
                Ok(()) => {
                    if self.behind.is_empty() {
                        self.behind_at = off;
                    }
                    self.behind.extend_from_slice(bytes);
                    if self.behind.len() >= WRITE_BEHIND_MAX {
                        // The space is reserved; a failure here is retried at the sync.
                        let _ = self.write_behind();
                    }
                    return self.appended(id, meta, off, flen, payload_len);
                }
                Err(e) if e.kind() == io::ErrorKind::StorageFull => {
                    self.disk_full = true;
                    return Err(StoreError::Full);
                }
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    // Written at once from now on; what is held goes first, in order.
                    tracing::debug!(error = %e, "outbox: no space reservation here");
                    self.can_reserve = false;
                    self.write_behind().map_err(|_| StoreError::Io)?;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox: cannot reserve space");
                    return Err(StoreError::Io);
                }
            }
        }
        let Some(seg) = self.segments.get_mut(&id) else {
            return Err(StoreError::Io);
        };
        let written = seg.file.write_all_at(bytes, off).and_then(|()| {
            if self.fsync == Fsync::Always {
                seg.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            tracing::warn!(error = %e, "outbox: append failed");
            if seg.file.set_len(off).is_err() {
                // Never append after bytes we could not remove; recovery skips them.
                self.active = None;
            }
            // A full disk refuses the record like a full outbox does (the caller hears
            // `Full`); anything else is a failing medium.
            return Err(if e.kind() == io::ErrorKind::StorageFull {
                self.disk_full = true;
                StoreError::Full
            } else {
                StoreError::Io
            });
        }
        seg.dirty |= self.fsync == Fsync::Batch;
        self.appended(id, meta, off, flen, payload_len)
    }

    /// Writes the frames held back, with one call. On failure the file is cut back to
    /// what was written before and the frames stay held, for the next sync to retry.
    fn write_behind(&mut self) -> io::Result<()> {
        if self.behind.is_empty() {
            return Ok(());
        }
        let Some(seg) = self.active.and_then(|id| self.segments.get_mut(&id)) else {
            // Its segment is gone, which happens only once nothing in it was live.
            self.behind.clear();
            return Ok(());
        };
        if let Err(e) = seg.file.write_all_at(&self.behind, self.behind_at) {
            tracing::warn!(error = %e, "outbox: write failed");
            let _ = seg.file.set_len(self.behind_at);
            // Cutting the file may have released the reservation too.
            seg.reserved = self.behind_at;
            return Err(e);
        }
        self.behind_at += self.behind.len() as u64;
        self.behind.clear();
        seg.dirty |= self.fsync == Fsync::Batch;
        Ok(())
    }

    /// Makes sure disk space is reserved for segment `id` up to `end` (a step ahead when
    /// the disk allows), without changing the file's size.
    fn reserve(&mut self, id: u64, end: u64) -> io::Result<()> {
        let roll_at = self.roll_at;
        let Some(seg) = self.segments.get_mut(&id) else {
            return Err(io::Error::other("no such segment"));
        };
        if end <= seg.reserved {
            return Ok(());
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use rustix::fs::{FallocateFlags, fallocate};
            use rustix::io::Errno;
            let from = seg.reserved;
            let ahead = (end + RESERVE_STEP).min(roll_at.max(end));
            let to = |to: u64| fallocate(&seg.file, FallocateFlags::KEEP_SIZE, from, to - from);
            let got = match to(ahead) {
                Ok(()) => Ok(ahead),
                // Nearly full: only what this frame needs.
                Err(Errno::NOSPC) if ahead > end => to(end).map(|()| end),
                Err(e) => Err(e),
            };
            match got {
                Ok(reserved) => {
                    seg.reserved = reserved;
                    Ok(())
                }
                Err(Errno::NOSPC) => Err(io::Error::new(io::ErrorKind::StorageFull, "disk full")),
                Err(e @ (Errno::OPNOTSUPP | Errno::NOSYS)) => {
                    Err(io::Error::new(io::ErrorKind::Unsupported, e))
                }
                Err(e) => Err(e.into()),
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = roll_at;
            Err(io::ErrorKind::Unsupported.into())
        }
    }

    /// Accounts for a frame of `flen` bytes appended at `off` of segment `id`.
    fn appended(
        &mut self,
        id: u64,
        meta: &RecordMeta,
        off: u64,
        flen: u64,
        payload_len: usize,
    ) -> Result<(), StoreError> {
        let Some(seg) = self.segments.get_mut(&id) else {
            return Err(StoreError::Io);
        };
        seg.size += flen;
        seg.live += 1;
        seg.live_bytes += flen;
        self.disk_bytes += flen;
        self.live_cost += flen + ACK_ENTRY as u64;
        self.max_epoch = self.max_epoch.max(meta.epoch);
        self.index.push_back(Entry {
            seg: id,
            off: off as u32,
            frame_len: flen as u32,
            payload_len: payload_len as u32,
            meta: *meta,
        });
        Ok(())
    }
}
