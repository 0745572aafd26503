//! End to end through the public SDK: a `Producer` built from TOML, real transports, real
//! brokers (two mosquittos) and the emulator's regions with faults injected.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use twinhub::SdkConfig;
use twinhub::{Class, Event, Producer, SendError, SendOptions};
use twinhub_emulator::{Emulator, EmulatorConfig, Fault};
use twinhub_testkit::Mosquitto;

/// Counts every `message-id` the broker at `port` delivers.
async fn collect(port: u16, name: &str, seen: Arc<Mutex<BTreeMap<String, u32>>>) {
    twinhub_testkit::collect_ids(port, name, move |id| {
        *seen.lock().unwrap().entry(id).or_default() += 1;
    })
    .await
    .expect("collector subscribed");
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_primary_killed_mid_stream_loses_nothing() {
    // The primary keeps the collector's session across its restart: whatever it acked
    // before the SIGTERM, or receives before the collector is back, still reaches it.
    let mut primary = Mosquitto::start_persistent();
    let secondary = Mosquitto::start();
    let (seen_p, seen_s) = (Arc::default(), Arc::default());
    collect(primary.port, "p", Arc::clone(&seen_p)).await;
    collect(secondary.port, "s", Arc::clone(&seen_s)).await;
    let toml = format!(
        r#"device_id = "e2e-mqtt"
[outbox]
max_bytes = "64MiB"
[timings]
min_dwell = "3s"
[[endpoint]]
name = "primary"
protocol = "mqtt"
url = "mqtt://127.0.0.1:{}"
topic = "telemetry/{{device_id}}"
[[endpoint]]
name = "secondary"
protocol = "mqtt"
url = "mqtt://127.0.0.1:{}"
topic = "telemetry/{{device_id}}"
"#,
        primary.port, secondary.port
    );
    let config = SdkConfig::from_toml_str(&toml).unwrap();
    let producer = Producer::builder(config)
        .request_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..10_000u32 {
        if i == 3_000 {
            primary.terminate();
            assert!(primary.saved(), "the primary saved its sessions");
        }
        if i == 6_000 {
            primary.restart();
        }
        let t = producer
            .submit(format!("reading {i}").into_bytes(), SendOptions::default())
            .await
            .unwrap();
        ids.push(t);
        if i % 100 == 99 {
            // A device's pace, so the outage spans real time.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut all = Vec::new();
    for t in ids {
        all.push(t.await.unwrap().to_string());
    }
    // Failback takes probes and the dwell: keep a device's trickle going until it happens.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut extra = 0u32;
    while producer.stats().stats.failbacks == 0 && tokio::time::Instant::now() < deadline {
        all.push(
            producer
                .send(format!("trickle {extra}").into_bytes())
                .await
                .unwrap()
                .to_string(),
        );
        extra += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    producer.flush(Duration::from_secs(120)).await.unwrap();
    let complete = wait_until(Duration::from_secs(30), || {
        let (p, s) = (seen_p.lock().unwrap(), seen_s.lock().unwrap());
        all.iter()
            .all(|id| p.contains_key(id) || s.contains_key(id))
    })
    .await;
    let (p, s) = (
        seen_p.lock().unwrap().clone(),
        seen_s.lock().unwrap().clone(),
    );
    let union: HashSet<&String> = p.keys().chain(s.keys()).collect();
    let missing = all.iter().filter(|id| !union.contains(id)).count();
    let first_missing: Vec<&String> = all
        .iter()
        .filter(|id| !union.contains(id))
        .take(10)
        .collect();
    assert!(
        complete,
        "{missing} of {} ids reached neither broker, first {first_missing:?}; {:?}",
        all.len(),
        producer.stats().stats
    );
    let copies: u32 = p.values().chain(s.values()).sum();
    let stats = producer.stats().stats;
    println!(
        "mqtt e2e: delivered {} (primary {}, secondary {}), copies {copies}, duplicates {}, possible duplicates {}, failovers {}, failbacks {}",
        stats.delivered,
        stats.delivered_by_endpoint[0],
        stats.delivered_by_endpoint[1],
        copies as usize - union.len(),
        stats.possible_duplicates,
        stats.failovers,
        stats.failbacks
    );
    assert_eq!(stats.delivered, all.len() as u64);
    assert_eq!(stats.accepted, stats.delivered);
    assert!(stats.failovers >= 1 && stats.failbacks >= 1, "{stats:?}");
    assert!(
        stats.delivered_by_endpoint[1] > 0,
        "the secondary carried the outage"
    );
}

fn eh_config(emu: &Emulator, primary_key: Option<&str>, extra: &str) -> SdkConfig {
    let mut p = emu["primary"].event_hubs_connection_string();
    if let Some(k) = primary_key {
        let good = emu["primary"].key().to_string();
        p = p.replace(&good, k);
    }
    let s = emu["secondary"].event_hubs_connection_string();
    SdkConfig::from_toml_str(&format!(
        r#"device_id = "e2e-eh"
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
    .unwrap()
}

/// Sends `n` records one every `gap`, then flushes; returns the ids.
async fn stream(p: &Producer, n: usize, gap: Duration) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            p.send(format!("r{i}").into_bytes())
                .await
                .unwrap()
                .to_string(),
        );
        tokio::time::sleep(gap).await;
    }
    p.flush(Duration::from_secs(60)).await.unwrap();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_hubs_429_storm_backs_off_without_failover() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let p = Producer::builder(eh_config(&emu, None, ""))
        .build()
        .await
        .unwrap();
    emu["primary"].set_fault(Fault::Http429 { retry_after_s: 1 });
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            p.send(format!("t{i}").into_bytes())
                .await
                .unwrap()
                .to_string(),
        );
    }
    // Wait for evidence, not for a time: the primary has throttled more requests than the
    // consecutive failures that take a region down (3 by default), each retried after
    // Retry-After, and still no failover.
    const REFUSALS: u64 = 5;
    let throttled = wait_until(Duration::from_secs(30), || {
        emu["primary"].switch().injected_statuses() >= REFUSALS
    })
    .await;
    assert!(
        throttled,
        "the primary refused only {} requests",
        emu["primary"].switch().injected_statuses()
    );
    assert_eq!(
        p.stats().stats.failovers,
        0,
        "throttling backs off on the same region"
    );
    assert!(
        emu["secondary"].ids().is_empty(),
        "nothing went to the secondary"
    );
    emu["primary"].set_fault(Fault::Up);
    p.flush(Duration::from_secs(30)).await.unwrap();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    emu["primary"]
        .wait_for_ids(&refs, Duration::from_secs(30))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_hubs_unauthorized_primary_fails_over_with_auth_failed() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let p = Producer::builder(eh_config(&emu, Some("d3JvbmcK"), ""))
        .build()
        .await
        .unwrap();
    let mut events = p.events();
    let ids = stream(&p, 10, Duration::from_millis(50)).await;
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    emu["secondary"]
        .wait_for_ids(&refs, Duration::from_secs(30))
        .await
        .unwrap();
    let mut auth = false;
    while let Ok(e) = events.try_recv() {
        auth |= matches!(e, Event::AuthFailed { .. });
    }
    assert!(auth, "AuthFailed raised");
    assert_eq!(p.stats().stats.failovers, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_hubs_blackhole_times_out_and_fails_over_within_rto() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let p = Producer::builder(eh_config(&emu, None, ""))
        .build()
        .await
        .unwrap();
    stream(&p, 3, Duration::from_millis(10)).await;
    emu["primary"].set_fault(Fault::Blackhole);
    let started = tokio::time::Instant::now();
    let id = p.send(b"into the void".to_vec()).await.unwrap().to_string();
    emu["secondary"]
        .wait_for_ids(&[id.as_str()], Duration::from_secs(15))
        .await
        .unwrap();
    let took = started.elapsed();
    println!("blackhole failover took {took:?}");
    // Promise 4: with default settings, delivered by the secondary within 15 s of the
    // first send that stalls.
    assert!(
        took <= Duration::from_secs(15),
        "failover took {took:?}, beyond the 15 s objective"
    );
    assert_eq!(p.stats().stats.failovers, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_record_is_refused_at_send() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let p = Producer::builder(eh_config(&emu, None, ""))
        .build()
        .await
        .unwrap();
    let err = p.send(vec![b'x'; 400 * 1024]).await.unwrap_err();
    assert!(matches!(err, SendError::TooLarge { .. }), "{err}");
    assert_eq!(p.stats().stats.accepted, 0);
    p.send_with(b"fine".to_vec(), SendOptions::class(Class::Critical))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_cut_on_wan_goes_to_secondary_over_wan_never_dearer() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let extra = r#"
[[link]]
name = "wan"
cost = "free"
bind = "127.0.0.2"
[[link]]
name = "cell"
cost = "metered"
bind = "127.0.0.3"
[[link]]
name = "satellite"
cost = "costly"
bind = "127.0.0.4"
allow = ["critical"]
"#;
    let p = Producer::builder(eh_config(&emu, None, extra))
        .build()
        .await
        .unwrap();
    // The primary is unreachable through the WAN only; cellular would still reach it.
    emu["primary"].set_fault_for("127.0.0.2".parse().unwrap(), Fault::Down);
    let mut ids = Vec::new();
    for i in 0..20 {
        let class = if i % 4 == 0 {
            Class::Critical
        } else {
            Class::Normal
        };
        ids.push(
            p.send_with(format!("r{i}").into_bytes(), SendOptions::class(class))
                .await
                .unwrap()
                .to_string(),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.flush(Duration::from_secs(60)).await.unwrap();
    let mut got: HashSet<String> = emu["primary"].ids().into_iter().collect();
    got.extend(emu["secondary"].ids());
    assert!(
        ids.iter().all(|i| got.contains(i)),
        "every record reached a region"
    );
    let json = p.stats().to_json();
    // A region outage while the cheap link works is answered over the cheap link.
    assert_eq!(json["link_bytes"]["cell"], 0, "{json}");
    assert_eq!(
        json["link_bytes"]["satellite"], 0,
        "a costly link without a budget is never used"
    );
    let peers: HashSet<String> = emu["secondary"]
        .records()
        .iter()
        .filter_map(|r| r.peer.map(|p| p.ip().to_string()))
        .collect();
    assert_eq!(
        peers,
        HashSet::from(["127.0.0.2".to_string()]),
        "secondary reached over the WAN"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_refill_a_costly_links_budget() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        r#"[outbox]
path = {:?}
[[link]]
name = "satellite"
cost = "costly"
budget = "700B/1d"
allow = ["critical"]
arm_after = "0s"
"#,
        dir.path().display().to_string()
    );
    // One run: a producer on the outbox sends 20 critical records of about 100 bytes on
    // the line (the budget carries a handful) and returns with its satellite bytes.
    let run = || async {
        let p = Producer::builder(eh_config(&emu, None, &extra))
            .build()
            .await
            .unwrap();
        for i in 0..20 {
            p.send_with(vec![i; 64], SendOptions::class(Class::Critical))
                .await
                .unwrap();
        }
        let _ = p.flush(Duration::from_secs(3)).await;
        let bytes = p.stats().to_json()["link_bytes"]["satellite"]
            .as_u64()
            .unwrap();
        (p, bytes)
    };
    let (first, spent) = run().await;
    assert!(spent > 0 && spent <= 700, "{spent}");
    assert!(first.stats().stats.pending > 0, "the budget ran out first");
    let _ = first.shutdown(Duration::from_millis(200)).await;
    assert!(dir.path().join("links").is_file());

    // The next run starts from what was spent, not from a full budget.
    let (_second, again) = run().await;
    assert!(
        spent + again <= 700,
        "{spent} bytes before the restart and {again} after, of 700"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_reopens_as_soon_as_shutdown_returns() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("[outbox]\npath = {:?}\n", dir.path().display().to_string());
    // A restart right after `shutdown` (a gateway's supervisor, `twinhub send` run again)
    // must never find the outbox still held by the old driver. The driver once answered
    // before closing it, which a second worker thread could see as `Locked`.
    for round in 0..40 {
        let p = Producer::builder(eh_config(&emu, None, &extra))
            .build()
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        p.send(format!("r{round}").into_bytes()).await.unwrap();
        let _ = p.shutdown(Duration::ZERO).await;
    }
    // While one is open, a second is refused with an error that names the directory once.
    let open = Producer::builder(eh_config(&emu, None, &extra))
        .build()
        .await
        .unwrap();
    let Err(err) = Producer::builder(eh_config(&emu, None, &extra))
        .build()
        .await
    else {
        panic!("two producers opened one outbox");
    };
    assert_eq!(
        err.to_string(),
        format!(
            "outbox: {} is in use by another producer",
            dir.path().display()
        )
    );
    let _ = open.shutdown(Duration::ZERO).await;
}

/// Delivery confirmation through real brokers: a confirmed record resolves with the broker
/// that acknowledged it, the primary while it runs, then the secondary once the primary is
/// killed, and the secondary really has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_confirmation_names_the_broker_that_acked_after_a_failover() {
    let mut primary = Mosquitto::start();
    let secondary = Mosquitto::start();
    let seen_s = Arc::default();
    collect(secondary.port, "s", Arc::clone(&seen_s)).await;
    let toml = format!(
        r#"device_id = "e2e-confirm"
[[endpoint]]
name = "primary"
protocol = "mqtt"
url = "mqtt://127.0.0.1:{}"
topic = "telemetry/{{device_id}}"
[[endpoint]]
name = "secondary"
protocol = "mqtt"
url = "mqtt://127.0.0.1:{}"
topic = "telemetry/{{device_id}}"
"#,
        primary.port, secondary.port
    );
    let producer = Producer::builder(SdkConfig::from_toml_str(&toml).unwrap())
        .request_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let confirmed = |body: &'static [u8]| producer.send_confirmed(body, SendOptions::default());
    let before = confirmed(b"before").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), before)
        .await
        .expect("the primary acknowledges")
        .unwrap();
    assert_eq!(producer.endpoint_name(got.endpoint), Some("primary"));

    primary.kill();
    let after = confirmed(b"after").await.unwrap();
    let id = after.id().to_string();
    let got = tokio::time::timeout(Duration::from_secs(60), after)
        .await
        .expect("the secondary acknowledges within the failover time")
        .unwrap();
    assert_eq!(producer.endpoint_name(got.endpoint), Some("secondary"));
    assert_eq!(got.id.to_string(), id);
    assert!(
        wait_until(Duration::from_secs(10), || seen_s
            .lock()
            .unwrap()
            .contains_key(&id))
        .await,
        "the secondary broker has the confirmed record"
    );
    assert!(producer.stats().stats.failovers >= 1);
}
