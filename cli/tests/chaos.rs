//! The short chaos run (`twinhub chaos --short`): every scenario over both protocols, real
//! brokers, emulator regions and producer processes. Nothing accepted may be lost, and each
//! scenario must have done what it claims (failed over, refused on a full disk, cut tails).

use std::process::Command;

#[test]
fn every_scenario_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("chaos.json");
    let out = Command::new(env!("CARGO_BIN_EXE_twinhub"))
        .args(["chaos", "--short", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    println!("{table}");
    assert!(
        out.status.success(),
        "chaos failed: {}\n{table}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let get = |scenario: &str, protocol: &str| {
        figures
            .iter()
            .find(|f| f["scenario"] == scenario && f["protocol"] == protocol)
            .unwrap_or_else(|| panic!("no figures for {scenario} over {protocol}"))
            .clone()
    };
    let n = |f: &serde_json::Value, k: &str| f[k].as_u64().unwrap();
    for f in &figures {
        assert_eq!(n(f, "lost"), 0, "{f}");
        if !f["note"].as_str().unwrap().starts_with("n/a") {
            assert!(n(f, "sent") > 0, "{f}");
        }
    }
    for protocol in ["mqtt", "event-hubs"] {
        for scenario in ["kill", "flap", "both-down"] {
            let f = get(scenario, protocol);
            assert_eq!(n(&f, "delivered"), n(&f, "sent"), "{f}");
            assert!(n(&f, "failovers") >= 1, "{f}");
        }
        let f = get("sigkill", protocol);
        assert_eq!(n(&f, "delivered"), n(&f, "sent"), "{f}");
        let f = get("torn-tail", protocol);
        assert!(
            n(&f, "delivered") > 0 && n(&f, "delivered") < n(&f, "sent"),
            "{f}"
        );
    }
    // Status storms: 503 fails over, 429 backs off on the same region.
    assert!(n(&get("503", "event-hubs"), "failovers") >= 1);
    assert_eq!(n(&get("429", "event-hubs"), "failovers"), 0);
    // The WAN down, cellular left: the metered link carried the outage, over both protocols.
    for protocol in ["mqtt", "event-hubs"] {
        let wan = get("wan-down", protocol);
        assert_eq!(n(&wan, "delivered"), n(&wan, "sent"), "{wan}");
        assert!(
            wan["note"].as_str().unwrap().starts_with("cell bytes"),
            "{wan}"
        );
        assert!(
            !wan["note"].as_str().unwrap().starts_with("cell bytes 0,"),
            "{wan}"
        );
    }
    // The full disk: records refused at the door, everything accepted delivered.
    let root = is_root();
    for protocol in ["mqtt", "event-hubs"] {
        let f = get("disk-full", protocol);
        if root {
            assert!(n(&f, "refused") > 0, "{f}");
            assert_eq!(n(&f, "delivered"), n(&f, "sent"), "{f}");
        }
    }
}

/// Whether this process runs as root (mounting the small tmpfs needs it).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
