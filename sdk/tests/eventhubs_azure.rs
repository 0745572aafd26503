//! Event Hubs as Azure documents it, against the emulator: 503 ("server busy") and 403
//! (quota, size, rights) classified as the service means them, and the retries and
//! failovers that follow.

use std::time::Duration;

use twinhub::SdkConfig;
use twinhub::transport::build;
use twinhub::{Outcome, Producer, RejectReason};
use twinhub_emulator::{Emulator, EmulatorConfig, Fault, Forbidden};
use twinhub_testkit::*;

async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator starts")
}

/// Two Event Hubs endpoints, one per region, with `extra` TOML at the top level.
fn two_regions(emu: &Emulator, device: &str, extra: &str) -> SdkConfig {
    let (p, s) = (
        emu["primary"].event_hubs_connection_string(),
        emu["secondary"].event_hubs_connection_string(),
    );
    SdkConfig::from_toml_str(&format!(
        r#"device_id = "{device}"
{extra}
[[endpoint]]
name = "primary"
protocol = "event-hubs"
connection_string = "{p}"
[[endpoint]]
name = "secondary"
protocol = "event-hubs"
connection_string = "{s}"
"#
    ))
    .expect("config")
}

/// Polls `ok` every 50 ms until it holds or `timeout` passes: waits for evidence, not time.
async fn wait_until(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ok()
}

#[tokio::test]
async fn forbidden_is_classified_by_its_body() {
    let emu = emulator().await;
    let r = &emu["primary"];
    let spec = event_hubs(
        &r.http_addr().to_string(),
        r.event_hub(),
        r.key_name(),
        r.key(),
    );
    let t = build(&spec, &link(None), &device("dev"), tls()).unwrap();
    let batch = records("dev", 1, 0, 3, 16);
    for (reason, want) in [
        (
            Forbidden::QuotaExceeded,
            Outcome::Throttled { retry_after: None },
        ),
        (
            Forbidden::MessageTooLarge,
            Outcome::Rejected(RejectReason::TooLarge),
        ),
        (Forbidden::Denied, Outcome::Unauthorized),
    ] {
        r.set_fault(Fault::Http403 { reason });
        assert_eq!(t.send(&batch).await, want, "{reason:?}");
    }
    r.set_fault(Fault::Up);
    assert_eq!(t.send(&batch).await, Outcome::Delivered);
}

/// A 503 storm on the primary: the producer backs off there (at least 4 s between tries)
/// and does not fail over while the storm is shorter than `throttle_failover_after`
/// (60 s by default). Before 503 meant "server busy", three 503s took the region down
/// within about a second and every record went to the secondary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_busy_backs_off_on_the_same_region() {
    let emu = emulator().await;
    let p = Producer::builder(two_regions(&emu, "busy-dev", ""))
        .build()
        .await
        .unwrap();
    let switch = emu["primary"].switch().clone();
    emu["primary"].set_fault(Fault::Http503);
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            p.send(format!("r{i}").into_bytes())
                .await
                .unwrap()
                .to_string(),
        );
    }
    assert!(
        wait_until(Duration::from_secs(30), || switch.injected_statuses() >= 1).await,
        "the primary was never asked"
    );
    let first = tokio::time::Instant::now();
    // Three refusals need two back-offs of at least 4 s each.
    assert!(
        wait_until(Duration::from_secs(60), || switch.injected_statuses() >= 3).await,
        "only {} refusals",
        switch.injected_statuses()
    );
    let took = first.elapsed();
    assert!(
        took >= Duration::from_secs(7),
        "three 503s in {took:?}: the back-off is under 4 s"
    );
    assert_eq!(p.stats().stats.failovers, 0, "server busy is not an outage");
    assert!(
        emu["secondary"].ids().is_empty(),
        "nothing went to the secondary"
    );
    emu["primary"].set_fault(Fault::Up);
    p.flush(Duration::from_secs(60)).await.unwrap();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    emu["primary"]
        .wait_for_ids(&refs, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(p.stats().stats.failovers, 0);
}

/// A 503 storm that outlasts `throttle_failover_after` does fail over, and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_busy_past_throttle_failover_after_fails_over() {
    let emu = emulator().await;
    let config = two_regions(
        &emu,
        "busy-long",
        "[timings]\nthrottle_failover_after = \"6s\"",
    );
    let p = Producer::builder(config).build().await.unwrap();
    let switch = emu["primary"].switch().clone();
    emu["primary"].set_fault(Fault::Http503);
    let id = p.send(b"kept".to_vec()).await.unwrap().to_string();
    assert!(wait_until(Duration::from_secs(30), || switch.injected_statuses() >= 1).await);
    let first = tokio::time::Instant::now();
    emu["secondary"]
        .wait_for_ids(&[id.as_str()], Duration::from_secs(60))
        .await
        .unwrap();
    let took = first.elapsed();
    assert!(
        took >= Duration::from_secs(5),
        "failed over {took:?} after the first 503, before throttle_failover_after"
    );
    assert_eq!(p.stats().stats.failovers, 1);
}
