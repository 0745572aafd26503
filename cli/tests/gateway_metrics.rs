//! `twinhub gateway --metrics` as a real process against two emulator regions, scraped with
//! a plain HTTP client: a primary outage shows as a failover and a down route, an outage of
//! both regions as a growing backlog, and recovery as the backlog draining to zero.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use twinhub_emulator::{Emulator, EmulatorConfig, Fault, Region};

struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(dir: &Path, primary: &Region, secondary: &Region) -> PathBuf {
    let path = dir.join("gateway.toml");
    let text = format!(
        r#"device_id = "gateway-m"

[outbox]
path = "{}"

[[endpoint]]
name = "primary"
protocol = "event-hubs"
connection_string = "{}"

[[endpoint]]
name = "secondary"
protocol = "event-hubs"
connection_string = "{}"

[[link]]
name = "wan"
cost = "free"

[[link]]
name = "sat"
cost = "costly"
budget = "1MiB/1d"
arm_after = "1h"

[timings]
trip_after = "1s"
probe_first = "100ms"
probe_max = "500ms"
min_dwell = "1s"
"#,
        dir.join("outbox").display(),
        primary.event_hubs_connection_string(),
        secondary.event_hubs_connection_string()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// One scrape: `GET /metrics` over a bare TCP connection, the body parsed into series
/// (`name{labels}`) and values.
fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("no series {series} in {m:#?}"))
}

fn sent(m: &BTreeMap<String, f64>, endpoint: &str) -> f64 {
    get(
        m,
        &format!(
            "messaging_client_sent_messages_total{{messaging_system=\"eventhubs\",\
             messaging_destination_name=\"telemetry\",messaging_operation_name=\"send\",\
             endpoint=\"{endpoint}\"}}"
        ),
    )
}

fn route(m: &BTreeMap<String, f64>, endpoint: &str, state: &str) -> f64 {
    get(
        m,
        &format!("twinhub_route_health{{endpoint=\"{endpoint}\",link=\"wan\",state=\"{state}\"}}"),
    )
}

/// Scrapes until `done` holds. The deadline only catches a hang: each step is a few
/// request timeouts at most.
fn wait_for(
    addr: &str,
    what: &str,
    done: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = scrape(addr);
        if done(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {what}; last scrape {m:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn feed(stdin: &mut ChildStdin, from: u32, n: u32) {
    for i in from..from + n {
        writeln!(stdin, "{{\"reading\":{i}}}").unwrap();
    }
    stdin.flush().unwrap();
}

#[test]
fn metrics_show_the_backlog_grow_in_an_outage_and_drain_after_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt
        .block_on(Emulator::start(EmulatorConfig::default()))
        .unwrap();
    let (primary, secondary) = (emu["primary"].clone(), emu["secondary"].clone());
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Reap(
        Command::new(env!("CARGO_BIN_EXE_twinhub"))
            .args(["gateway", "--config"])
            .arg(config(dir.path(), &primary, &secondary))
            .args(["--stdin", "--metrics", "127.0.0.1:0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(gw.0.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let line: serde_json::Value = serde_json::from_str(&first).unwrap();
    let addr = line["metrics"].as_str().unwrap().to_owned();
    let mut stdin = gw.0.stdin.take().unwrap();

    // Before anything: every series is there, at zero, and the budget as configured.
    let m = scrape(&addr);
    assert_eq!(get(&m, "twinhub_pending_records"), 0.0);
    assert_eq!(sent(&m, "primary"), 0.0);
    assert_eq!(route(&m, "primary", "healthy"), 1.0);
    assert_eq!(
        get(&m, "twinhub_link_budget_bytes{link=\"sat\"}"),
        1048576.0
    );
    assert_eq!(
        get(&m, "twinhub_link_budget_window_seconds{link=\"sat\"}"),
        86400.0
    );
    assert!(!m.contains_key("twinhub_link_budget_bytes{link=\"wan\"}"));

    feed(&mut stdin, 0, 5);
    let m = wait_for(&addr, "5 records delivered to the primary", |m| {
        sent(m, "primary") == 5.0 && get(m, "twinhub_pending_records") == 0.0
    });
    assert!(get(&m, "twinhub_link_bytes_total{link=\"wan\"}") > 0.0);

    // The primary goes dark: the route goes down and the gateway fails over.
    primary.set_fault(Fault::Down);
    feed(&mut stdin, 5, 5);
    let m = wait_for(&addr, "a failover to the secondary", |m| {
        sent(m, "secondary") == 5.0 && get(m, "twinhub_failovers_total") >= 1.0
    });
    assert_eq!(route(&m, "primary", "healthy"), 0.0);
    assert_eq!(get(&m, "twinhub_pending_records"), 0.0);

    // Both regions dark: nothing can leave, the backlog grows and ages.
    secondary.set_fault(Fault::Down);
    feed(&mut stdin, 10, 20);
    let m = wait_for(&addr, "a backlog of 20 records a second old", |m| {
        get(m, "twinhub_pending_records") == 20.0
            && get(m, "twinhub_oldest_pending_age_seconds") >= 1.0
    });
    assert!(get(&m, "twinhub_pending_bytes") >= 20.0 * "{\"reading\":10}".len() as f64);
    assert_eq!(sent(&m, "primary") + sent(&m, "secondary"), 10.0);
    assert_eq!(route(&m, "secondary", "healthy"), 0.0);

    // Recovery: the backlog drains, nothing dropped.
    primary.set_fault(Fault::Up);
    secondary.set_fault(Fault::Up);
    let m = wait_for(&addr, "the backlog drained", |m| {
        get(m, "twinhub_pending_records") == 0.0
            && get(m, "twinhub_records_delivered_total") == 30.0
    });
    assert_eq!(get(&m, "twinhub_oldest_pending_age_seconds"), 0.0);
    assert_eq!(get(&m, "twinhub_records_accepted_total"), 30.0);
    let dropped: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("twinhub_records_dropped_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(dropped, 0.0);
    assert!(m.contains_key("twinhub_records_dropped_total{reason=\"expired\"}"));

    // End of input: the gateway drains and exits 0.
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = gw.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the gateway did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let ids = primary.ids().len() + secondary.ids().len();
    assert!(ids >= 30, "regions received {ids} ids");
}
