//! `twinhub send` with a disk outbox, killed with SIGKILL at random points and restarted:
//! every record it reported accepted reaches the hub. Real process, real files, the
//! emulator as the hub. Also: `--echo-ids` reports an acceptance while stdin is still open.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use twinhub_emulator::{Emulator, EmulatorConfig};
use twinhub_testkit::{twinhub_exe, write_config};

const RUNS: usize = 12;
const LINES_PER_RUN: usize = 400;

fn config(dir: &std::path::Path, conn: String) -> std::path::PathBuf {
    let outbox = "max_bytes = \"16MiB\"\nfsync = \"batch\"";
    write_config(
        dir,
        "twinhub.toml",
        "crash-test",
        outbox,
        &[("primary", conn)],
    )
}

#[test]
fn sigkill_at_random_points_loses_nothing_accepted() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt
        .block_on(Emulator::start(EmulatorConfig::with_regions(["primary"])))
        .unwrap();
    let region = emu["primary"].clone();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), region.event_hubs_connection_string());
    let mut accepted: Vec<String> = Vec::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        // xorshift: deterministic kill points, different each run.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut line = 0usize;
    for run in 0..=RUNS {
        let mut child = Command::new(twinhub_exe().expect("the twinhub binary"))
            .args(["send", "--config"])
            .arg(&cfg)
            .args(["--echo-ids", "--drain-timeout", "20s"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let mut lines = Vec::new();
        let reader = std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        if run == RUNS {
            // Last run: no new lines, just drain what the earlier runs left.
            drop(stdin);
            let status = child.wait().unwrap();
            assert_eq!(status.code(), Some(0), "the final run drains everything");
        } else {
            let kill_after = (next() % LINES_PER_RUN as u64) as usize;
            for i in 0..LINES_PER_RUN {
                line += 1;
                if writeln!(stdin, "{{\"run\":{run},\"line\":{line}}}").is_err() {
                    break;
                }
                if i == kill_after {
                    let _ = stdin.flush();
                    // The kill point is counted in acceptances, not in time from spawn: a
                    // start slowed by a busy machine must still have accepted some.
                    let want = 1 + (next() % (kill_after as u64 + 1)) as usize;
                    let deadline = Instant::now() + Duration::from_secs(30);
                    let mut got = 0;
                    while got < want {
                        let left = deadline.saturating_duration_since(Instant::now());
                        let Ok(l) = rx.recv_timeout(left) else { break };
                        got += usize::from(l.starts_with("accepted "));
                        lines.push(l);
                    }
                    std::thread::sleep(Duration::from_millis(next() % 40));
                    break;
                }
            }
            let _ = child.kill();
            child.wait().unwrap();
            drop(stdin);
        }
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        for l in lines {
            if let Some(rest) = l.strip_prefix("accepted ") {
                let id = rest.split(' ').nth(1).unwrap().to_string();
                accepted.push(id);
            }
        }
    }
    assert!(
        accepted.len() > RUNS * 5,
        "the runs accepted records ({})",
        accepted.len()
    );
    let ids: Vec<&str> = accepted.iter().map(String::as_str).collect();
    rt.block_on(region.wait_for_ids(&ids, Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("accepted records missing at the hub: {e}"));
    // Epochs differ across starts, so ids never repeat between runs.
    let unique: std::collections::HashSet<_> = accepted.iter().collect();
    assert_eq!(unique.len(), accepted.len());
}

#[test]
fn echo_reports_an_acceptance_before_stdin_closes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt
        .block_on(Emulator::start(EmulatorConfig::with_regions(["primary"])))
        .unwrap();
    let region = emu["primary"].clone();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), region.event_hubs_connection_string());
    let mut child = Command::new(twinhub_exe().expect("the twinhub binary"))
        .args(["send", "--config"])
        .arg(&cfg)
        .args(["--echo-ids", "--drain-timeout", "20s"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    // One line, far fewer than the pipeline holds, and stdin left open.
    writeln!(stdin, "just one").unwrap();
    stdin.flush().unwrap();
    let first = rx.recv_timeout(Duration::from_secs(30));
    let accepted = first
        .as_deref()
        .ok()
        .and_then(|l| l.strip_prefix("accepted 1 "));
    let Some(id) = accepted.map(str::to_string) else {
        let _ = child.kill();
        panic!("no acceptance echoed while stdin was open: {first:?}");
    };
    drop(stdin);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    reader.join().unwrap();
    rt.block_on(region.wait_for_ids(&[id.as_str()], Duration::from_secs(30)))
        .unwrap();
}
