//! `twinhub send` processes: killed with SIGKILL, starved of disk, their outbox cut.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use twinhub_emulator::Fault;
use twinhub_testkit::Ledger;

use super::Figures;
use super::hub::Hub;
use super::plan::{Action, Scale};
use super::tally::{await_arrivals, longest_gap, now_ms, tally};

/// A line of `twinhub send --echo-ids` output.
pub(super) enum Echo {
    Accepted(String),
    Dropped(String, String),
    Missed(u64),
}

/// A `twinhub send` process writing ids to a channel as it accepts and drops records.
pub(super) struct Sender {
    pub(super) child: Child,
    stdin: Option<std::process::ChildStdin>,
    echoes: mpsc::Receiver<Echo>,
    /// What it reported so far.
    ledger: Ledger,
    reader: Option<std::thread::JoinHandle<Option<serde_json::Value>>>,
}

impl Sender {
    pub(super) fn spawn(config: &Path, drain: &str) -> Result<Sender, String> {
        let mut child = Command::new(twinhub_testkit::twinhub_exe()?)
            .args(["send", "--echo-ids", "--drain-timeout", drain, "--config"])
            .arg(config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting twinhub send: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, echoes) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut stats = None;
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut words = l.split(' ');
                let echo = match words.next() {
                    // accepted <line> <id>
                    Some("accepted") => words.nth(1).map(|id| Echo::Accepted(id.into())),
                    // dropped <id> <reason>
                    Some("dropped") => match (words.next(), words.next()) {
                        (Some(id), Some(reason)) => Some(Echo::Dropped(id.into(), reason.into())),
                        _ => None,
                    },
                    // drop-reports-missed <n>
                    Some("drop-reports-missed") => {
                        words.next().and_then(|n| n.parse().ok()).map(Echo::Missed)
                    }
                    _ => {
                        if l.starts_with('{') {
                            stats = serde_json::from_str(&l).ok();
                        }
                        None
                    }
                };
                if let Some(echo) = echo {
                    let _ = tx.send(echo);
                }
            }
            stats
        });
        Ok(Sender {
            stdin: child.stdin.take(),
            child,
            echoes,
            ledger: Ledger::new(),
            reader: Some(reader),
        })
    }

    pub(super) fn line(&mut self, text: &str) -> bool {
        self.stdin
            .as_mut()
            .is_some_and(|s| writeln!(s, "{text}").is_ok())
    }

    fn note(&mut self, echo: Echo) {
        match echo {
            Echo::Accepted(id) => self.ledger.accept(id),
            Echo::Dropped(id, reason) => self.ledger.dropped(id, reason),
            Echo::Missed(n) => self.ledger.missed_drop_reports(n),
        }
    }

    /// Waits until the process has reported `n` acceptances in all, or `within` has passed
    /// (a slow start under load must not turn kill points into kills before the first record).
    fn await_accepted(&mut self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.ledger.accepted().len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.echoes.recv_timeout(left) {
                Ok(echo) => self.note(echo),
                Err(_) => break,
            }
        }
    }

    /// Closes stdin and waits: the exit code, the final stats and what it reported.
    pub(super) fn finish(mut self) -> (Option<i32>, Option<serde_json::Value>, Ledger) {
        drop(self.stdin.take());
        let code = self.child.wait().ok().and_then(|s| s.code());
        let stats = self.reader.take().and_then(|r| r.join().ok()).flatten();
        while let Ok(echo) = self.echoes.try_recv() {
            self.note(echo);
        }
        (code, stats, self.ledger)
    }

    /// SIGKILL, then what it had reported.
    fn kill(mut self) -> Ledger {
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(self.stdin.take());
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        while let Ok(echo) = self.echoes.try_recv() {
            self.note(echo);
        }
        self.ledger
    }
}

pub(super) fn write_config(
    dir: &Path,
    hub: &Hub,
    outbox: &Path,
    extra: &str,
) -> Result<PathBuf, String> {
    let path = dir.join("chaos.toml");
    let text = format!(
        "device_id = \"chaos-proc\"\n[outbox]\npath = \"{}\"\nfsync = \"batch\"\n{extra}\n{}",
        outbox.display(),
        hub.endpoints_toml()
    );
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path)
}

/// A deterministic xorshift stream: kill points and cut offsets differ run to run, and
/// from one chaos run to the next only if the seed does.
pub(super) struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The producer process killed with SIGKILL at random points, then drained by a last run.
pub(super) fn sigkill(
    protocol: &str,
    scale: Scale,
    rt: &tokio::runtime::Runtime,
) -> Result<Figures, String> {
    let hub = rt.block_on(Hub::start(protocol))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cfg = write_config(dir.path(), &hub, &dir.path().join("outbox"), "")?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut ledger = Ledger::new();
    let started_ms = now_ms();
    let mut line = 0u64;
    for _ in 0..scale.restarts {
        let mut s = Sender::spawn(&cfg, "10s")?;
        let kill_after = 50 + rng.next() % 400;
        for _ in 0..kill_after {
            line += 1;
            if !s.line(&format!("line {line}")) {
                break;
            }
        }
        // The kill point is counted in records, not wall time from spawn: a start slowed by
        // a busy machine would otherwise be killed before it accepted anything.
        let at = 1 + (rng.next() % kill_after) as usize;
        s.await_accepted(at, Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(rng.next() % 60));
        ledger.absorb(&s.kill());
    }
    let last = Sender::spawn(&cfg, "60s")?;
    let (code, _, part) = last.finish();
    ledger.absorb(&part);
    let arrivals = rt.block_on(await_arrivals(
        &hub,
        ledger.accepted(),
        Duration::from_secs(60),
    ));
    let mut f = tally(&ledger, &arrivals);
    f.recover_s = longest_gap(&arrivals.times, started_ms);
    f.note = format!(
        "{} SIGKILLs; the last run drained with exit {}",
        scale.restarts,
        code.map_or("none".into(), |c| c.to_string())
    );
    Ok(f)
}

/// The outbox on a 1 MiB tmpfs while both regions are down: the disk fills, sends are
/// refused (counted), nothing accepted is lost, and after the outage everything drains.
pub(super) fn disk_full(protocol: &str, rt: &tokio::runtime::Runtime) -> Result<Figures, String> {
    let mut hub = rt.block_on(Hub::start(protocol))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mnt = dir.path().join("tmpfs");
    std::fs::create_dir(&mnt).map_err(|e| e.to_string())?;
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        return Ok(Figures {
            note: "not run: mounting a tmpfs needs root".into(),
            ..Figures::default()
        });
    }
    let result = (|| {
        let cfg = write_config(
            dir.path(),
            &hub,
            &mnt.join("outbox"),
            "max_bytes = \"64MiB\"\non_full = \"reject\"\n",
        )?;
        hub.act(Action::Fault(0, Fault::Down))?;
        hub.act(Action::Fault(1, Fault::Down))?;
        let mut s = Sender::spawn(&cfg, "60s")?;
        let body = "x".repeat(200);
        for i in 0..8_000 {
            if !s.line(&format!("{i} {body}")) {
                break;
            }
        }
        // Let it take what fits, then heal and drain.
        std::thread::sleep(Duration::from_secs(2));
        hub.act(Action::Fault(0, Fault::Up))?;
        hub.act(Action::Fault(1, Fault::Up))?;
        let (code, stats, ledger) = s.finish();
        let arrivals = rt.block_on(await_arrivals(
            &hub,
            ledger.accepted(),
            Duration::from_secs(60),
        ));
        let mut f = tally(&ledger, &arrivals);
        f.refused = stats
            .as_ref()
            .and_then(|s| s["refused"].as_u64())
            .unwrap_or(0);
        f.note = format!(
            "1 MiB disk: {} of 8000 refused as full; exit {}",
            f.refused,
            code.map_or("none".into(), |c| c.to_string())
        );
        Ok(f)
    })();
    let _ = Command::new("umount").arg(&mnt).status();
    result
}

/// The ids of the frames in `seg` that a cut at `at` destroys (wholly or in part): the
/// frames are decoded from the segment's start, so the ids come from the bytes themselves.
fn ids_cut(seg: &Path, at: u64, device: &str) -> Result<Vec<String>, String> {
    let bytes = std::fs::read(seg).map_err(|e| format!("reading {}: {e}", seg.display()))?;
    let mut ids = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let (frame, len) = twinhub_core::frame::decode(&bytes[offset..]).map_err(|e| {
            format!(
                "{} holds no whole frame at {offset} before the cut: {e:?}",
                seg.display()
            )
        })?;
        if (offset + len) as u64 > at {
            ids.push(format!("{device}:{}:{}", frame.meta.epoch, frame.meta.seq));
        }
        offset += len;
    }
    Ok(ids)
}

/// Runs with the regions down leave records in the outbox; between runs the newest
/// segment is cut at a random offset inside what the run appended. Every start must
/// succeed; the records missing at the end must be exactly those whose frames were in the
/// bytes cut off (decoded from those bytes before each cut).
pub(super) fn torn_tail(protocol: &str, rt: &tokio::runtime::Runtime) -> Result<Figures, String> {
    const RUNS: usize = 8;
    const LINES: usize = 200;
    let mut hub = rt.block_on(Hub::start(protocol))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let outbox = dir.path().join("outbox");
    let cfg = write_config(dir.path(), &hub, &outbox, "")?;
    hub.act(Action::Fault(0, Fault::Down))?;
    hub.act(Action::Fault(1, Fault::Down))?;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut ledger = Ledger::new();
    let mut cut_bytes = 0u64;
    let mut cuts = 0usize;
    for _ in 0..RUNS {
        let before = newest_segment(&outbox);
        let mut s = Sender::spawn(&cfg, "1s")?;
        for i in 0..LINES {
            s.line(&format!("torn {i}"));
        }
        let (_, _, part) = s.finish();
        if part.accepted().is_empty() {
            return Err("a run accepted nothing: the outbox refused to start".into());
        }
        ledger.absorb(&part);
        let Some((seg, len)) = newest_segment(&outbox) else {
            return Err("no outbox segment after a run".into());
        };
        // Cut inside what this run appended only, so the damage is to its own records.
        let from = match before {
            Some((p, l)) if p == seg => l,
            _ => 0,
        };
        if len > from + 1 {
            let at = from + 1 + rng.next() % (len - from - 1);
            for id in ids_cut(&seg, at, "chaos-proc")? {
                ledger.removed_by_test(id);
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&seg)
                .map_err(|e| e.to_string())?;
            file.set_len(at).map_err(|e| e.to_string())?;
            cut_bytes += len - at;
            cuts += 1;
        }
    }
    hub.act(Action::Fault(0, Fault::Up))?;
    hub.act(Action::Fault(1, Fault::Up))?;
    let last = Sender::spawn(&cfg, "60s")?;
    let (code, _, part) = last.finish();
    ledger.absorb(&part);
    // Everything not cut should arrive; wait for that (a cut record never will).
    let arrivals = rt.block_on(await_arrivals(
        &hub,
        ledger.accepted(),
        Duration::from_secs(20),
    ));
    let mut f = tally(&ledger, &arrivals);
    f.note = format!(
        "{cuts} cuts ({cut_bytes} bytes) held {} records: {} missing as cut, {} arrived anyway; every start succeeded; drain exit {}",
        f.removed + f.removed_but_delivered,
        f.removed,
        f.removed_but_delivered,
        code.map_or("none".into(), |c| c.to_string())
    );
    Ok(f)
}

/// The newest segment file of an outbox directory and its length.
fn newest_segment(dir: &Path) -> Option<(PathBuf, u64)> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segs.sort();
    let last = segs.pop()?;
    let len = std::fs::metadata(&last).ok()?.len();
    Some((last, len))
}
