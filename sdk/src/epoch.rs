//! Where a start's epoch comes from: a durable counter file, or a random draw.
//!
//! Message ids are `device:epoch:seq` and `seq` restarts at every start, so an epoch used
//! twice by one device makes consumers drop the second run's records as duplicates.
//!
//! * [`next_epoch`] takes the next value of a counter kept in a state directory (the
//!   memory outbox's `[outbox] state_dir`). The disk outbox keeps the same counter file in
//!   its own directory. Each call reads the file, adds one and writes the result durably
//!   (temporary file, `fsync`, rename, `fsync` of the directory) before returning, so a
//!   power loss at any point never hands the same value out twice.
//! * [`unpersisted`] is the fallback when there is nowhere to keep a counter: a random
//!   32-bit value from the operating system's generator. Ids are then unique only with
//!   high probability, and epochs do not grow from one start to the next.
//!
//! # The counter file
//!
//! `epoch` holds the last epoch handed out as decimal text. The counter never goes back:
//!
//! * missing (a fresh directory): a state directory starts above the wall clock in
//!   seconds, so a device that used to take its epoch from the clock (or whose state
//!   directory was wiped while its clock is right) stays above the epochs it used before.
//!   A disk outbox starts at 1, raised past any recovered record's epoch.
//! * garbage or unreadable: a warning is logged and the counter restarts at
//!   [`RECOVERY_MARGIN`] above the larger of the wall clock in seconds and the caller's
//!   floor. That repeats no earlier epoch as long as the clock is right and the device has
//!   started fewer than `RECOVERY_MARGIN` times more than seconds have passed since the
//!   counter was last set from the clock. Nothing better is possible once the stored
//!   value is lost; the file is only ever replaced by an atomic rename, so this takes an
//!   outside edit or a damaged disk.

use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

/// The counter file's name inside its directory.
pub const FILE: &str = "epoch";
/// Where the next value is written before it is renamed over [`FILE`].
const TMP: &str = "epoch.tmp";
/// Held while a state directory's counter is advanced, so two processes sharing the
/// directory never read the same value.
const LOCK: &str = "epoch.lock";

/// How far above the wall clock (in seconds) a counter restarts when its file is garbage:
/// room for about a million starts faster than one a second before the loss.
pub const RECOVERY_MARGIN: u32 = 1 << 20;

/// Clock readings are capped here so a clock far in the future cannot use up the counter.
const CLOCK_CAP: u32 = u32::MAX / 2;

/// Why no epoch could be taken from a counter file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EpochError {
    /// The state directory or the counter file could not be created or written.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done (for example `create directory`).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The counter reached `u32::MAX`: another start would reuse an epoch.
    #[error("the epoch counter in {} has no values left", path.display())]
    Exhausted {
        /// The counter file.
        path: PathBuf,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> EpochError + 'a {
    move |source| EpochError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Where a counter without a file starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fresh {
    /// At 1 (the disk outbox: its recovered records raise it further).
    One,
    /// Just above the wall clock in seconds.
    AboveClock,
}

/// Takes this start's epoch from the counter in the state directory `dir`, creating the
/// directory if needed: higher than every epoch the directory handed out before, and
/// durable before it is returned.
///
/// Processes sharing `dir` take turns (a file lock held for the update only), so each
/// gets its own epoch. See the [module documentation](self) for a missing or garbage file.
pub fn next_epoch(dir: &Path) -> Result<u32, EpochError> {
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let lock_path = dir.join(LOCK);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err("open", &lock_path))?;
    lock.lock().map_err(io_err("lock", &lock_path))?;
    // The lock is released when `lock` is dropped, after the new value is durable.
    advance(dir, 0, Fresh::AboveClock)
}

/// Reads the counter in `dir`, raises it past `floor` and by one, and stores the result
/// durably. The caller makes sure no one else updates `dir` meanwhile.
pub(crate) fn advance(dir: &Path, floor: u32, fresh: Fresh) -> Result<u32, EpochError> {
    let path = dir.join(FILE);
    let exhausted = || EpochError::Exhausted { path: path.clone() };
    let base = match fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(stored) => stored.max(floor),
            Err(_) => recover(&path, floor, "it does not hold a number")?,
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => match fresh {
            Fresh::One => floor,
            Fresh::AboveClock => clock_secs().max(floor),
        },
        Err(e) => recover(&path, floor, &e.to_string())?,
    };
    let next = base.checked_add(1).ok_or_else(exhausted)?;
    let tmp = dir.join(TMP);
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(format!("{next}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_err("write", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))?;
    Ok(next)
}

/// The base a counter restarts from when its stored value is lost.
fn recover(path: &Path, floor: u32, why: &str) -> Result<u32, EpochError> {
    let base = clock_secs()
        .max(floor)
        .checked_add(RECOVERY_MARGIN)
        .ok_or_else(|| EpochError::Exhausted {
            path: path.to_path_buf(),
        })?;
    tracing::warn!(
        path = %path.display(),
        why,
        restart_at = base + 1,
        "epoch counter file unreadable; restarting it above the wall clock"
    );
    Ok(base)
}

/// The wall clock in whole seconds since 1970 (0 before it), capped at [`CLOCK_CAP`].
fn clock_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().min(u64::from(CLOCK_CAP)) as u32)
}

/// An epoch for a start with nowhere to keep a counter: 32 random bits from the operating
/// system's generator, so two starts share an epoch with probability 2^-32 whatever the
/// clock says (fast restarts, a clock back at 1970 after power loss).
///
/// Epochs drawn this way do not grow from one start to the next, so a consumer must not
/// order them ([`Dedup`](crate::dedup::Dedup) does not: it forgets the epoch it used least
/// recently). The first call in a process logs a warning.
pub fn unpersisted() -> u32 {
    static WARN: Once = Once::new();
    WARN.call_once(|| {
        tracing::warn!(
            "no [outbox] state_dir: message ids are unique only with high probability \
             (a random epoch per start); set state_dir to persist an epoch counter"
        );
    });
    getrandom::u32().unwrap_or_else(|e| {
        // Without the OS generator: std's per-process random hash keys, the clock and the
        // process id, which still differ between starts.
        tracing::warn!(error = %e, "OS random generator unavailable; epoch from hash keys");
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        let v = h.finish();
        (v ^ (v >> 32)) as u32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_state_directory_starts_above_the_clock_and_counts_up() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let before = clock_secs();
        let first = next_epoch(&dir).unwrap();
        assert!(first > before);
        assert_eq!(next_epoch(&dir).unwrap(), first + 1);
        assert_eq!(
            fs::read_to_string(dir.join(FILE)).unwrap(),
            format!("{}\n", first + 1)
        );
    }

    #[test]
    fn a_disk_counter_starts_at_one_and_respects_its_floor() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(advance(tmp.path(), 0, Fresh::One).unwrap(), 1);
        assert_eq!(advance(tmp.path(), 0, Fresh::One).unwrap(), 2);
        assert_eq!(advance(tmp.path(), 40, Fresh::One).unwrap(), 41);
    }

    #[test]
    fn garbage_restarts_above_the_clock_and_the_floor() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(FILE), b"\xff\xfe not a number").unwrap();
        let before = clock_secs();
        let e = advance(tmp.path(), 0, Fresh::One).unwrap();
        assert!(e > before.saturating_add(RECOVERY_MARGIN));
        let floor = CLOCK_CAP + 7;
        for garbage in ["12x", "", "-3", "99999999999", "0x10"] {
            fs::write(tmp.path().join(FILE), garbage).unwrap();
            assert_eq!(
                advance(tmp.path(), floor, Fresh::One).unwrap(),
                floor + RECOVERY_MARGIN + 1,
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn an_exhausted_counter_is_an_error_not_a_repeat() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(FILE), format!("{}\n", u32::MAX)).unwrap();
        let err = next_epoch(tmp.path()).unwrap_err();
        assert!(matches!(err, EpochError::Exhausted { .. }), "{err}");
        assert!(err.to_string().contains(&tmp.path().display().to_string()));
    }

    #[test]
    fn a_state_directory_that_cannot_be_created_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a-file");
        fs::write(&file, b"").unwrap();
        let err = next_epoch(&file.join("state")).unwrap_err();
        assert!(
            matches!(
                err,
                EpochError::Io {
                    op: "create directory",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("a-file/state"), "{err}");
    }
}
