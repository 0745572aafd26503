//! `twinhub send` on a memory outbox, run several times in a row: every run's ids are new,
//! through `--state-dir` and through the per-user default state directory. Nothing needs
//! delivering (the endpoint is an address nothing listens on): ids are printed once each
//! record is in the outbox.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const RUNS: usize = 5;
const LINES: usize = 4;

fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("twinhub.toml");
    let text = r#"device_id = "cli-epochs"

[[endpoint]]
name = "nowhere"
protocol = "http"
url = "http://127.0.0.1:9/ingest"
"#;
    std::fs::write(&path, text).unwrap();
    path
}

/// One run of `twinhub send` with `args` and `env`; returns the ids it reported accepted.
fn run(cfg: &Path, args: &[&str], env: &[(&str, &Path)]) -> Vec<String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_twinhub"));
    cmd.args(["send", "--config"])
        .arg(cfg)
        .args(["--echo-ids", "--drain-timeout", "0s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..LINES {
        writeln!(stdin, "{{\"line\":{i}}}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Exit 3: the records are still pending, as nothing can deliver them.
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("accepted "))
        .map(|rest| rest.split(' ').nth(1).unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), LINES, "{stderr}");
    ids
}

fn epoch(id: &str) -> u32 {
    id.split(':').nth(1).unwrap().parse().unwrap()
}

/// Runs `RUNS` times and checks every id is new and epochs grow.
fn check_runs(cfg: &Path, args: &[&str], env: &[(&str, &Path)]) {
    let mut seen = HashSet::new();
    let mut last = None;
    for _ in 0..RUNS {
        let ids = run(cfg, args, env);
        let e = epoch(&ids[0]);
        assert!(last.is_none_or(|l| e > l), "epoch {e} after {last:?}");
        last = Some(e);
        for id in ids {
            assert!(seen.insert(id.clone()), "{id} reused");
        }
    }
    assert_eq!(seen.len(), RUNS * LINES);
}

#[test]
fn quick_reruns_with_state_dir_never_reuse_an_id() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let state = tmp.path().join("state");
    let state_arg = state.to_str().unwrap();
    check_runs(&cfg, &["--state-dir", state_arg], &[]);
    assert!(state.join("epoch").is_file());
}

#[test]
fn quick_reruns_use_the_default_state_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let xdg = tmp.path().join("xdg");
    check_runs(&cfg, &[], &[("XDG_STATE_HOME", &xdg)]);
    assert!(xdg.join("twinhub/device-cli-epochs/epoch").is_file());
}
