//! `twinhub sim`: a scenario file in, a summary and a JSON report out, exit code by loss.

use std::process::Command;

const SCENARIO: &str = r#"
name = "cli"
devices = 300
duration = "20m"
[[region]]
name = "primary"
outages = [{ from = "5m", to = "10m" }]
[[region]]
name = "secondary"
[[link]]
name = "wan"
cost = "free"
"#;

#[test]
fn runs_a_scenario_and_writes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let json = dir.path().join("report.json");
    let plot = dir.path().join("timeline.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_twinhub"))
        .args([
            "sim",
            "--quiet",
            "--devices",
            "200",
            "--seed",
            "5",
            "--scenario",
        ])
        .arg(&scenario)
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&plot)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("cli: 200 devices"), "{stdout}");
    assert!(stdout.contains("LOST 0"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["devices"], 200);
    assert_eq!(report["seed"], 5);
    assert_eq!(report["lost"], 0);
    assert_eq!(report["accepted"], 200 * 40);
    assert!(report["delivered"]["secondary"].as_u64().unwrap() > 0);
    assert_eq!(report["timeline"].as_array().unwrap().len(), 21);
    assert_eq!(
        report["regions"],
        serde_json::json!(["primary", "secondary"])
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
    assert!(svg.contains("records delivered per minute") && svg.contains("secondary"));
    assert!(
        svg.matches("<polyline").count() >= 4,
        "two regions, backlog, costly bytes"
    );
}

#[test]
fn a_bad_scenario_is_refused_with_its_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("bad.toml");
    std::fs::write(&scenario, format!("{SCENARIO}\nspeed = 3\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_twinhub"))
        .args(["sim", "--quiet", "--scenario"])
        .arg(&scenario)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("speed") && stderr.contains("line"),
        "{stderr}"
    );
}
