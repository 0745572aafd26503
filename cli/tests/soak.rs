//! The two-minute soak (`twinhub chaos --soak 2m`): a producer process at a fixed rate,
//! both regions down for the middle third. Its resident memory, sampled every second,
//! stays flat: the backlog lives in the disk outbox, not in memory.

use std::process::Command;

#[test]
fn resident_memory_stays_flat_through_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("soak.json");
    let out = Command::new(env!("CARGO_BIN_EXE_twinhub"))
        .args(["chaos", "--soak", "2m", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let f = &figures[0];
    assert_eq!(f["lost"], 0, "{f}");
    assert_eq!(f["delivered"], f["sent"], "{f}");
    assert!(f["sent"].as_u64().unwrap() >= 20_000, "{f}");
    let rss: Vec<f64> = f["rss_mib"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let (before, peak) = (rss[0], rss[1]);
    // 8,000 records wait out the outage: their index entries are about a megabyte.
    assert!(
        peak <= before + 8.0,
        "resident memory grew from {before:.1} to {peak:.1} MiB"
    );
}
