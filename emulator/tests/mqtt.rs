//! The embedded broker records publishes from plain MQTT 3.1.1 and 5 clients with their ids.

mod common;

use std::time::Duration;

use common::*;
use twinhub_emulator::{Emulator, EmulatorConfig, Protocol};

#[tokio::test]
async fn v5_user_property_v4_envelope_and_iot_hub_topic() {
    let emu = Emulator::start(EmulatorConfig::with_regions(["primary"]))
        .await
        .unwrap();
    let r = &emu["primary"];
    mqtt_v5_publish(
        r.mqtt_addr(),
        "dev-v5",
        "telemetry/dev-v5",
        b"v5 body".to_vec(),
        &[("message-id", "dev-v5:1:0"), ("k", "v")],
        T,
    )
    .await
    .unwrap();
    mqtt_v4_publish(
        r.mqtt_addr(),
        "dev-v4",
        "telemetry/dev-v4",
        envelope("dev-v4:1:0", b"v4 body"),
        T,
    )
    .await
    .unwrap();
    mqtt_v4_publish(
        r.mqtt_addr(),
        "dev-hub",
        "devices/dev-hub/messages/events/%24.mid=dev-hub%3A1%3A0&$.ct=application%2Fjson",
        b"{}".to_vec(),
        T,
    )
    .await
    .unwrap();
    mqtt_v4_publish(r.mqtt_addr(), "dev-none", "t/none", b"no id".to_vec(), T)
        .await
        .unwrap();
    let records = r.wait_for_records(4, T).await.unwrap();
    let by_id = |id: &str| {
        records
            .iter()
            .find(|x| x.message_id.as_deref() == Some(id))
            .unwrap()
            .clone()
    };
    let v5 = by_id("dev-v5:1:0");
    assert_eq!(v5.body, b"v5 body");
    assert_eq!(v5.properties["k"], "v");
    assert_eq!(v5.target, "telemetry/dev-v5");
    assert_eq!(by_id("dev-v4:1:0").body, b"v4 body");
    assert_eq!(by_id("dev-hub:1:0").properties["$.ct"], "application/json");
    assert!(
        records
            .iter()
            .any(|x| x.message_id.is_none() && x.body == b"no id")
    );
    assert!(records.iter().all(|x| x.protocol == Protocol::Mqtt));
    let st = r.stats();
    assert_eq!(st.by_protocol["mqtt"].events, 4);
    assert_eq!(st.by_protocol["mqtt"].unique_ids, 3);
    // A resend of the same id is a duplicate.
    mqtt_v4_publish(
        r.mqtt_addr(),
        "dev-v4",
        "telemetry/dev-v4",
        envelope("dev-v4:1:0", b"v4 body"),
        T,
    )
    .await
    .unwrap();
    r.wait_for_records(5, T).await.unwrap();
    assert_eq!(r.stats().total.duplicates, 1);
    assert_eq!(r.id_count("dev-v4:1:0"), 2);
}

#[tokio::test]
async fn regions_are_independent() {
    let emu = Emulator::start_default().await.unwrap();
    mqtt_v4_publish(
        emu["secondary"].mqtt_addr(),
        "d",
        "t/d",
        envelope("only-secondary", b"x"),
        T,
    )
    .await
    .unwrap();
    emu["secondary"]
        .wait_for_ids(&["only-secondary"], T)
        .await
        .unwrap();
    assert!(emu["primary"].is_empty());
    assert_ne!(emu["primary"].mqtt_addr(), emu["secondary"].mqtt_addr());
}

#[tokio::test]
async fn garbage_on_the_mqtt_port_does_not_stall_the_region() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let emu = Emulator::start(EmulatorConfig::with_regions(["primary"]))
        .await
        .unwrap();
    let r = &emu["primary"];
    // Not MQTT at all, and a CONNECT that never finishes: both are dropped or left alone.
    let mut junk = tokio::net::TcpStream::connect(r.mqtt_addr()).await.unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(T, junk.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "junk gets the connection closed");
    let mut slow = tokio::net::TcpStream::connect(r.mqtt_addr()).await.unwrap();
    slow.write_all(&[0x10]).await.unwrap();
    mqtt_v4_publish(
        r.mqtt_addr(),
        "ok",
        "t/ok",
        envelope("still-works", b"x"),
        T,
    )
    .await
    .unwrap();
    r.wait_for_ids(&["still-works"], T).await.unwrap();
    drop(slow);
}

#[tokio::test]
async fn ids_a_strict_broker_refuses_and_reused_ids_work() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
    let emu = Emulator::start(EmulatorConfig::with_regions(["primary"]))
        .await
        .unwrap();
    let r = &emu["primary"];
    // Valid MQTT (and IoT Hub) ids that rumqttd alone refuses.
    for (i, id) in ["meter$7", "a+b#c", "x/y"].iter().enumerate() {
        mqtt_v4_publish(
            r.mqtt_addr(),
            id,
            "t/x",
            envelope(&format!("odd-{i}"), b"x"),
            T,
        )
        .await
        .unwrap_or_else(|e| panic!("{id}: {e}"));
    }
    // One id, connected again while the first connection is open: the older one is
    // closed (as MQTT requires), the broker does not fall over, the new one publishes.
    let mut opts = MqttOptions::new(
        "twice",
        r.mqtt_addr().ip().to_string(),
        r.mqtt_addr().port(),
    );
    opts.set_keep_alive(Duration::from_secs(30));
    let (_first, mut first_loop) = AsyncClient::new(opts, 10);
    loop {
        match first_loop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => break,
            Ok(_) => {}
            Err(e) => panic!("first connection: {e}"),
        }
    }
    for n in 0..5 {
        mqtt_v4_publish(
            r.mqtt_addr(),
            "twice",
            "t/x",
            envelope(&format!("twice-{n}"), b"x"),
            T,
        )
        .await
        .unwrap();
    }
    let closed = tokio::time::timeout(T, async {
        loop {
            if first_loop.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the older connection of the id was closed");
    r.wait_for_ids(&["odd-0", "odd-1", "odd-2", "twice-4"], T)
        .await
        .unwrap();
}
