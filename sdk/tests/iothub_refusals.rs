//! IoT Hub refuses a message by closing the connection. A record the hub closes on, on
//! every fresh accepted connection, is dropped as rejected (counted and evented) instead of
//! being resent for ever; a region that refuses connections still fails over, and drops
//! nothing.
//!
//! Everything waits for evidence (events, the emulator's counts), never for a time.

use std::time::Duration;

use tokio::sync::broadcast;
use twinhub::{DropReason, Event, MessageId, Producer, SdkConfig, SendOptions, Stats};
use twinhub_emulator::{Emulator, EmulatorConfig, Fault};

/// A bound for hangs only: every wait below ends as soon as its evidence arrives.
const WAIT: Duration = Duration::from_secs(30);

/// Both regions as IoT Hub endpoints (TLS + SAS) for IoT Hub device `hub_device`.
fn config(emu: &Emulator, hub_device: &str) -> SdkConfig {
    let cs = |r: &str| emu[r].iot_hub_connection_string_for(hub_device);
    SdkConfig::from_toml_str(&format!(
        r#"device_id = "refusals"
ca_file = {ca:?}
[[endpoint]]
name = "primary"
protocol = "iot-hub"
connection_string = "{p}"
[[endpoint]]
name = "secondary"
protocol = "iot-hub"
connection_string = "{s}"
"#,
        ca = emu.ca_file(),
        p = cs("primary"),
        s = cs("secondary"),
    ))
    .unwrap()
}

async fn producer(emu: &Emulator, hub_device: &str) -> Producer {
    Producer::builder(config(emu, hub_device))
        .request_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap()
}

/// The producer's counters once `ok` holds for them (they follow the engine's step, so
/// they may trail its events by a moment).
async fn stats_when(p: &Producer, ok: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = p.stats().stats;
        if ok(&s) || tokio::time::Instant::now() >= deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The next `Dropped` event, with its reason.
async fn next_drop(events: &mut broadcast::Receiver<Event>) -> (MessageId, DropReason) {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(Event::Dropped { id, reason }) => return (id, reason),
                Ok(_) => {}
                Err(e) => panic!("event stream: {e}"),
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("a record was dropped")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_hub_closes_on_is_dropped_as_rejected_after_three_closes() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let (primary, secondary) = (&emu["primary"], &emu["secondary"]);
    primary
        .switch()
        .set_for_device("refused", Fault::IotHubRefuse)
        .unwrap();
    let p = producer(&emu, "refused").await;
    let mut events = p.events();
    let id = p.send(b"refused".to_vec()).await.unwrap();

    assert_eq!(
        next_drop(&mut events).await,
        (id, DropReason::Malformed),
        "dropped as rejected"
    );
    let hub = primary.iot_hub_events();
    // Three fresh connections, each accepted, each closed on that record's publish.
    assert_eq!(hub.count("connected"), 3, "{hub:?}");
    assert_eq!(hub.count("closed-refused"), 3, "{hub:?}");
    let stats = stats_when(&p, |s| s.dropped.total() > 0).await;
    assert_eq!(stats.dropped.malformed, 1);
    assert_eq!(stats.dropped.total(), 1);
    assert_eq!(
        stats.failovers, 0,
        "a poison record is not a region failure"
    );
    assert!(primary.is_empty() && secondary.is_empty());

    // The region itself is fine: once the hub takes this device's messages again, the next
    // record is delivered on the primary.
    primary
        .switch()
        .set_for_device("refused", Fault::Up)
        .unwrap();
    let next = p.send(b"accepted".to_vec()).await.unwrap().to_string();
    p.flush(WAIT).await.unwrap();
    primary.wait_for_ids(&[next.as_str()], WAIT).await.unwrap();
    assert_eq!(p.stats().stats.dropped.total(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_record_the_hub_closes_on_is_dropped_among_good_ones() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let primary = &emu["primary"];
    let p = producer(&emu, "meter-9").await;
    let mut events = p.events();
    // IoT Hub counts the property bag in its 256 KB limit, URL-encoded: each space takes
    // three bytes in the topic. The record fits the SDK's limit as stored, and the hub
    // closes the connection on it.
    let poison = SendOptions::default().property("note", " ".repeat(20_000));
    let good1 = p.send(b"before".to_vec()).await.unwrap().to_string();
    let bad = p.send_with(vec![b'x'; 205_000], poison).await.unwrap();
    let good2 = p.send(b"after".to_vec()).await.unwrap().to_string();

    assert_eq!(next_drop(&mut events).await, (bad, DropReason::Malformed));
    p.flush(WAIT).await.unwrap();
    primary
        .wait_for_ids(&[good1.as_str(), good2.as_str()], WAIT)
        .await
        .unwrap();
    let hub = primary.iot_hub_events();
    assert!(hub.count("closed-oversize") >= 3, "{hub:?}");
    let stats = stats_when(&p, |s| s.dropped.total() > 0).await;
    assert_eq!(stats.dropped.malformed, 1);
    assert_eq!(stats.dropped.total(), 1);
    assert_eq!(stats.failovers, 0);
    assert!(emu["secondary"].is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_that_refuses_connections_still_fails_over_and_drops_nothing() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu["primary"].set_fault(Fault::Down);
    let p = producer(&emu, "meter-3").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            p.send(format!("r{i}").into_bytes())
                .await
                .unwrap()
                .to_string(),
        );
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    emu["secondary"].wait_for_ids(&refs, WAIT).await.unwrap();
    let stats = stats_when(&p, |s| s.delivered >= 5).await;
    assert_eq!(stats.failovers, 1);
    assert_eq!(stats.dropped.total(), 0, "an outage drops nothing");
    assert_eq!(emu["primary"].iot_hub_events().count("connected"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_property_bag_exceeds_the_packet_limit_is_dropped_as_too_large() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let p = producer(&emu, "meter-4").await;
    let mut events = p.events();
    // Within the SDK's record limit as stored, but each space takes three bytes in the
    // topic: the PUBLISH would exceed the packet limit, which the MQTT client refuses to
    // write (ending the connection, at every resend).
    let big = SendOptions::default().property("note", " ".repeat(25_000));
    let good = p.send(b"small".to_vec()).await.unwrap().to_string();
    let bad = p.send_with(vec![b'x'; 200_000], big).await.unwrap();
    assert_eq!(next_drop(&mut events).await, (bad, DropReason::TooLarge));
    p.flush(WAIT).await.unwrap();
    emu["primary"]
        .wait_for_ids(&[good.as_str()], WAIT)
        .await
        .unwrap();
    let stats = stats_when(&p, |s| s.dropped.total() > 0).await;
    assert_eq!(stats.dropped.too_large, 1);
    assert_eq!(stats.failovers, 0);
}
