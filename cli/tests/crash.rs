//! `twinhub send` with a disk outbox, killed with SIGKILL at random points and restarted:
//! every record it reported accepted reaches the hub. Real process, real files, the
//! emulator as the hub.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use twinhub_emulator::{Emulator, EmulatorConfig};

const RUNS: usize = 12;
const LINES_PER_RUN: usize = 400;

fn config(dir: &std::path::Path, conn: &str) -> std::path::PathBuf {
    let path = dir.join("twinhub.toml");
    let text = format!(
        r#"device_id = "crash-test"

[outbox]
path = "{}"
max_bytes = "16MiB"
fsync = "batch"

[[endpoint]]
name = "primary"
protocol = "event-hubs"
connection_string = "{conn}"
"#,
        dir.join("outbox").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn sigkill_at_random_points_loses_nothing_accepted() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt
        .block_on(Emulator::start(EmulatorConfig::with_regions(["primary"])))
        .unwrap();
    let region = emu["primary"].clone();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &region.event_hubs_connection_string());
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_twinhub"))
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
        let (tx, rx) = mpsc::channel();
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
                    // Let some of the lines be accepted, then kill without warning.
                    std::thread::sleep(Duration::from_millis(next() % 40));
                    break;
                }
            }
            let _ = child.kill();
            child.wait().unwrap();
            drop(stdin);
        }
        reader.join().unwrap();
        for l in rx.try_iter() {
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
