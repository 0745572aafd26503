//! The short chaos run: every scenario over MQTT and Event Hubs, real brokers, emulator regions
//! and `twinhub send` processes. Nothing accepted may be lost (counted by id), and each
//! scenario must have done what it claims (failed over, refused on a full disk, cut tails).

use twinhub_tests::chaos::{self, ChaosArgs, Figures};

#[test]
fn every_scenario_loses_nothing_accepted() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Kafka's rows run in `cargo xtask chaos` only: their mock clusters would add minutes
    // to every test run.
    let args = ChaosArgs {
        short: true,
        protocols: Some(vec!["mqtt".into(), "event-hubs".into()]),
        ..ChaosArgs::default()
    };
    let figures = chaos::run(&args, &rt).unwrap_or_else(|e| panic!("chaos failed: {e}"));
    let get = |scenario: &str, protocol: &str| -> &Figures {
        figures
            .iter()
            .find(|f| f.scenario == scenario && f.protocol == protocol)
            .unwrap_or_else(|| panic!("no figures for {scenario} over {protocol}"))
    };
    for f in &figures {
        assert_eq!(f.lost, 0, "{f:?}");
        assert_eq!(f.missed_drop_reports, 0, "{f:?}");
        if !f.note.starts_with("n/a") && !f.note.starts_with("not run") {
            assert!(f.sent > 0, "{f:?}");
        }
    }
    assert!(chaos::passed(&figures));
    for protocol in ["mqtt", "event-hubs"] {
        for scenario in ["kill", "flap", "both-down"] {
            let f = get(scenario, protocol);
            assert_eq!(f.delivered, f.sent, "{f:?}");
            assert!(f.failovers >= 1, "{f:?}");
        }
        let f = get("sigkill", protocol);
        assert_eq!(f.delivered, f.sent, "{f:?}");
        // The cuts removed records, and exactly the records decoded from the cut bytes are
        // the ones missing: every other accepted record arrived, none of the cut ones did.
        let f = get("torn-tail", protocol);
        assert!(f.removed > 0 && f.delivered > 0, "{f:?}");
        assert_eq!(f.removed_but_delivered, 0, "{f:?}");
        assert_eq!(f.delivered + f.removed, f.sent, "{f:?}");
    }
    // Status storms: 503 fails over, 429 backs off on the same region.
    assert!(get("503", "event-hubs").failovers >= 1);
    assert_eq!(get("429", "event-hubs").failovers, 0);
    // The WAN down, cellular left: the metered link carried the outage, over both protocols.
    for protocol in ["mqtt", "event-hubs"] {
        let wan = get("wan-down", protocol);
        assert_eq!(wan.delivered, wan.sent, "{wan:?}");
        assert!(wan.note.starts_with("cell bytes"), "{wan:?}");
        assert!(!wan.note.starts_with("cell bytes 0,"), "{wan:?}");
    }
    // The full disk: records refused at the door, everything accepted delivered.
    let root = is_root();
    for protocol in ["mqtt", "event-hubs"] {
        let f = get("disk-full", protocol);
        if root {
            assert!(f.refused > 0, "{f:?}");
            assert_eq!(f.delivered, f.sent, "{f:?}");
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
