//! Every fault mode, seen by plain clients (reqwest, rumqttc, hand-written MQTT), including
//! per-source-address faults and the admin API that sets them.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::sync::oneshot;
use twinhub_emulator::{Emulator, EmulatorConfig, Fault, Region};

const ONE: &str = r#"[{"Body":"x","UserProperties":{"message-id":"f:1"}}]"#;
const DOT2: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
const DOT3: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig::with_regions(["primary", "secondary"]))
        .await
        .unwrap()
}

/// Fresh connection per request, so each call observes the fault for new connections.
async fn fresh_send(r: &Region, timeout: Duration) -> Result<u16, reqwest::Error> {
    send_batch(
        &client_from(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), timeout),
        r,
        ONE,
    )
    .await
}

/// A connected rumqttc client whose event loop runs in a task; the receiver fires with the
/// first error after the CONNACK.
async fn connected_mqtt(r: &Region, id: &str) -> oneshot::Receiver<String> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
    let mut opts = MqttOptions::new(id, "127.0.0.1", r.mqtt_addr().port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut el) = AsyncClient::new(opts, 10);
    let (connected_tx, connected_rx) = oneshot::channel();
    let (err_tx, err_rx) = oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        let mut connected_tx = Some(connected_tx);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Some(tx) = connected_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = err_tx.send(e.to_string());
                    return;
                }
            }
        }
    });
    tokio::time::timeout(T, connected_rx)
        .await
        .unwrap()
        .unwrap();
    err_rx
}

#[tokio::test]
async fn down_refuses_new_connections_and_cuts_open_ones() {
    let emu = emulator().await;
    let r = &emu["primary"];
    assert_eq!(fresh_send(r, T).await.unwrap(), 201);
    let cut = connected_mqtt(r, "held-open").await;
    r.set_fault(Fault::Down);
    let err = tokio::time::timeout(T, cut)
        .await
        .expect("open MQTT connection is cut")
        .unwrap();
    assert!(!err.is_empty());
    let e = fresh_send(r, T).await.unwrap_err();
    assert!(!e.is_timeout(), "down answers at once: {e}");
    assert!(
        mqtt_v4_publish(r.mqtt_addr(), "new", "t", envelope("m", b"x"), T)
            .await
            .is_err()
    );
    // The other region is untouched.
    assert_eq!(fresh_send(&emu["secondary"], T).await.unwrap(), 201);
    r.set_fault(Fault::Up);
    assert_eq!(fresh_send(r, T).await.unwrap(), 201);
    mqtt_v4_publish(r.mqtt_addr(), "new", "t", envelope("m", b"x"), T)
        .await
        .unwrap();
    assert_eq!(r.stats().total.events, 3);
}

#[tokio::test]
async fn blackhole_accepts_and_never_answers() {
    let emu = emulator().await;
    let r = &emu["primary"];
    r.set_fault(Fault::Blackhole);
    // The TCP connection is accepted...
    tokio::net::TcpStream::connect(r.http_addr()).await.unwrap();
    // ...but nothing ever comes back.
    let e = fresh_send(r, Duration::from_millis(400)).await.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    let e = mqtt_v4_publish(
        r.mqtt_addr(),
        "bh",
        "t",
        envelope("m", b"x"),
        Duration::from_millis(400),
    )
    .await
    .unwrap_err();
    assert_eq!(e, "timed out");
    assert!(r.is_empty());
    r.set_fault(Fault::Up);
    assert_eq!(fresh_send(r, T).await.unwrap(), 201);
}

#[tokio::test]
async fn http_status_faults_only_hit_http() {
    let emu = emulator().await;
    let r = &emu["primary"];
    let c = client();
    assert_eq!(send_batch(&c, r, ONE).await.unwrap(), 201);
    // Applies to the next request on an already-open keep-alive connection too.
    r.set_fault(Fault::Http503);
    assert_eq!(send_batch(&c, r, ONE).await.unwrap(), 503);
    r.set_fault(Fault::Http429 { retry_after_s: 2 });
    let resp = c
        .post(messages_url(r))
        .header("Authorization", r.sas_token(Duration::from_secs(60)))
        .header("Content-Type", BATCH)
        .body(ONE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    // Even the generic ingest and unknown paths get it: the fault is the region's.
    let resp = c
        .post(format!("{}/ingest/x", r.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    // MQTT is not HTTP: it passes.
    mqtt_v4_publish(r.mqtt_addr(), "m", "t", envelope("mqtt-ok", b"x"), T)
        .await
        .unwrap();
    r.wait_for_ids(&["mqtt-ok"], T).await.unwrap();
    assert_eq!(
        r.stats().by_protocol["event-hubs"].events,
        1,
        "refused requests are not recorded"
    );
}

#[tokio::test]
async fn latency_delays_http_and_mqtt() {
    let emu = emulator().await;
    let r = &emu["primary"];
    r.set_fault(Fault::Latency { ms: 300 });
    let t0 = Instant::now();
    assert_eq!(fresh_send(r, T).await.unwrap(), 201);
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    let t0 = Instant::now();
    mqtt_v4_publish(r.mqtt_addr(), "slow", "t", envelope("slow", b"x"), T)
        .await
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(r.stats().total.events, 2);
}

#[tokio::test]
async fn flap_alternates_down_and_up() {
    let emu = emulator().await;
    let r = &emu["primary"];
    r.set_fault(Fault::Flap { period_ms: 300 });
    let (mut ok, mut failed) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while (ok == 0 || failed == 0) && Instant::now() < deadline {
        match fresh_send(r, Duration::from_secs(2)).await {
            Ok(201) => ok += 1,
            _ => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen_both = ok > 0 && failed > 0;
    assert!(seen_both, "ok {ok}, failed {failed}");
}

#[tokio::test]
async fn per_source_faults_cut_one_link_only() {
    let emu = emulator().await;
    let r = &emu["primary"];
    r.set_fault_for(DOT3, Fault::Down);
    let from3 = send_batch(&client_from(DOT3, T), r, ONE).await;
    assert!(from3.is_err(), "{from3:?}");
    assert_eq!(
        send_batch(&client_from(DOT2, T), r, ONE).await.unwrap(),
        201
    );
    assert!(
        raw_mqtt_publish(r.mqtt_addr(), DOT3, "c3", "t", &envelope("from3", b"x"), T)
            .await
            .is_err()
    );
    raw_mqtt_publish(r.mqtt_addr(), DOT2, "c2", "t", &envelope("from2", b"x"), T)
        .await
        .unwrap();
    r.wait_for_ids(&["from2"], T).await.unwrap();
    assert_eq!(r.records()[0].peer.unwrap().ip(), DOT2);
    // Status faults per source too; the region-wide setting does not touch the override.
    r.set_fault_for(DOT2, Fault::Http503);
    assert_eq!(
        send_batch(&client_from(DOT2, T), r, ONE).await.unwrap(),
        503
    );
    assert!(send_batch(&client_from(DOT3, T), r, ONE).await.is_err());
    assert_eq!(fresh_send(r, T).await.unwrap(), 201);
    // Clearing one source leaves the other.
    r.set_fault_for(DOT3, Fault::Up);
    assert_eq!(
        send_batch(&client_from(DOT3, T), r, ONE).await.unwrap(),
        201
    );
    assert_eq!(
        send_batch(&client_from(DOT2, T), r, ONE).await.unwrap(),
        503
    );
    r.clear_faults();
    assert_eq!(
        send_batch(&client_from(DOT2, T), r, ONE).await.unwrap(),
        201
    );
}

#[tokio::test]
async fn admin_api_sets_faults_and_reports() {
    let emu = emulator().await;
    let admin = emu.admin_url();
    let c = client();
    let post = |path: &str, body: &'static str| c.post(format!("{admin}{path}")).body(body).send();
    let resp = post(
        "/_admin/regions/primary/fault",
        r#"{"mode":"down","source":"127.0.0.3"}"#,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let state: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(state["sources"]["127.0.0.3"]["mode"], "down");
    assert_eq!(emu["primary"].switch().effective(DOT3), Fault::Down);
    let resp = post(
        "/_admin/regions/primary/fault",
        r#"{"mode":"latency","ms":5}"#,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        emu["primary"].switch().region_fault(),
        Fault::Latency { ms: 5 }
    );
    for (body, status) in [
        (r#"{"mode":"nope"}"#, 400),
        (r#"{"mode":"flap"}"#, 400),
        ("", 400),
    ] {
        assert_eq!(
            post("/_admin/regions/primary/fault", body)
                .await
                .unwrap()
                .status(),
            status,
            "{body}"
        );
    }
    assert_eq!(
        post("/_admin/regions/mars/fault", r#"{"mode":"down"}"#)
            .await
            .unwrap()
            .status(),
        404
    );
    let resp = post(
        "/_admin/regions/primary/fault",
        r#"{"mode":"http-429","retry_after_s":3}"#,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let got: serde_json::Value = c
        .get(format!("{admin}/_admin/regions/primary/fault"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        got["fault"],
        serde_json::json!({"mode":"http-429","retry_after_s":3})
    );
    post("/_admin/regions/primary/fault", r#"{"mode":"up"}"#)
        .await
        .unwrap();

    let r = &emu["secondary"];
    assert_eq!(send_batch(&c, r, ONE).await.unwrap(), 201);
    assert_eq!(send_batch(&c, r, ONE).await.unwrap(), 201);
    mqtt_v4_publish(r.mqtt_addr(), "a", "t", envelope("m:2", b"x"), T)
        .await
        .unwrap();
    r.wait_for_records(3, T).await.unwrap();
    let stats: serde_json::Value = c
        .get(format!("{admin}/_admin/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let s = &stats["regions"]["secondary"];
    assert_eq!(
        (
            s["events"].as_u64(),
            s["unique_ids"].as_u64(),
            s["duplicates"].as_u64()
        ),
        (Some(3), Some(2), Some(1))
    );
    assert_eq!(s["by_protocol"]["event-hubs"]["events"], 2);
    assert_eq!(s["by_protocol"]["mqtt"]["unique_ids"], 1);
    assert_eq!(stats["regions"]["primary"]["events"], 0);
    let ids: serde_json::Value = c
        .get(format!("{admin}/_admin/regions/secondary/ids"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids["ids"], serde_json::json!(["f:1", "m:2"]));
    assert_eq!(ids["duplicates"]["f:1"], 2);
    let records: serde_json::Value = c
        .get(format!("{admin}/_admin/regions/secondary/records"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(records.as_array().unwrap().len(), 3);
    assert_eq!(records[2]["protocol"], "mqtt");
    assert_eq!(
        c.get(format!("{admin}/_admin/regions/mars/ids"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    emu["primary"].set_fault(Fault::Down);
    assert_eq!(post("/_admin/reset", "").await.unwrap().status(), 200);
    assert!(r.is_empty());
    assert_eq!(emu["primary"].switch().region_fault(), Fault::Up);
}
