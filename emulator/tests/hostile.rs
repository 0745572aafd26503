//! A hundred hostile connections per region, then every region still serves.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::iothub::*;
use common::*;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, Publish};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use twinhub_emulator::{Emulator, Region};

/// Ids IoT Hub accepts, special characters included.
const IDS: [&str; 6] = ["meter$7", "a+b", "c#d", "e;f", "g.h:i-j_k", "(!*?,=@')%"];

/// One hostile IoT Hub client, picked by `i`; returns once the server dealt with it.
async fn hostile_iot_hub(emu: &Emulator, r: &Region, i: usize) {
    // Distinct ids: IoT Hub keeps one connection per device, and only the storm shares one.
    let id = &format!("{}{i}", IDS[i % IDS.len()]);
    let Ok(mut hub) = Hub::open(emu, r).await else {
        return;
    };
    let user = format!("{}/{id}/?api-version={API}", r.iot_hub_host());
    let good = r.iot_hub_sas_token(id, Duration::from_secs(600));
    match i % 10 {
        // Garbage instead of a CONNECT.
        0 => hub.send_raw(b"\x10\xff\xff\xff\xff\x0fgarbage").await,
        // A CONNECT cut short, then the client leaves.
        1 => {
            hub.send_raw(b"\x10\x20\x00\x04MQ").await;
            return;
        }
        // Wrong password.
        2 => {
            hub.connect(connect_with(
                id,
                &user,
                "SharedAccessSignature sr=x&sig=y&se=1",
                60,
            ))
            .await;
        }
        // Another device's topic.
        3 => {
            hub.connect(connect_with(id, &user, &good, 60)).await;
            hub.publish_acked(&topic("victim", "$.mid=stolen"), b"x".to_vec())
                .await;
        }
        // QoS 2.
        4 => {
            hub.connect(connect_with(id, &user, &good, 60)).await;
            let mut p = Publish::new(topic(id, ""), QoS::ExactlyOnce, b"x".to_vec());
            p.pkid = 1;
            hub.send(Packet::Publish(p)).await;
        }
        // Oversize.
        5 => {
            hub.connect(connect_with(id, &user, &good, 60)).await;
            hub.publish_acked(&topic(id, ""), vec![0u8; 300 * 1024])
                .await;
        }
        // Huge keep-alive, then a valid publish.
        6 => {
            hub.connect(connect_with(id, &user, &good, u16::MAX)).await;
            hub.publish_acked(&topic(id, &format!("$.mid=ok-{i}")), b"x".to_vec())
                .await;
        }
        // Reconnect storm with one id, all at once.
        7 => {
            hub.connect(connect_with(
                "storm$1",
                &format!("{}/storm$1/", r.iot_hub_host()),
                &r.iot_hub_sas_token("storm$1", Duration::from_secs(600)),
                30,
            ))
            .await;
        }
        // A second CONNECT on an accepted connection.
        8 => {
            hub.connect(connect_with(id, &user, &good, 60)).await;
            hub.send(Packet::Connect(connect_with(id, &user, &good, 60)))
                .await;
        }
        // Not even TLS: plain bytes to the TLS port (on a new socket).
        _ => {
            drop(hub);
            if let Ok(mut raw) = tokio::net::TcpStream::connect(r.iot_hub_addr()).await {
                let _ = raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
                let mut buf = [0u8; 64];
                let _ = tokio::time::timeout(T, raw.read(&mut buf)).await;
            }
            return;
        }
    }
    // Whatever the server answered, it ends these connections (the keep-alive one and
    // the storm's survivor are closed by dropping).
    if i % 10 != 6 && i % 10 != 7 {
        let _ = tokio::time::timeout(T, hub.closed()).await;
    }
}

/// One hostile client of the generic MQTT broker: ids a strict broker may refuse, the
/// same id reconnecting, keep-alive 0.
async fn hostile_mqtt(r: &Region, i: usize) {
    let id = match i % 4 {
        0 => IDS[i % IDS.len()].to_string(),
        1 => "same-id".to_string(),
        2 => "x/y#+$".to_string(),
        _ => format!("plain-{i}"),
    };
    let _ = mqtt_v4_publish(
        r.mqtt_addr(),
        &id,
        &format!("t/{i}"),
        envelope(&format!("m-{}-{i}", r.name()), b"x"),
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_region_serves_after_a_hundred_hostile_connections() {
    let emu = Arc::new(Emulator::start_default().await.unwrap());
    // All at once: 100 IoT Hub and 40 generic MQTT connections per region.
    let mut set = tokio::task::JoinSet::new();
    for r in emu.regions() {
        for i in 0..100 {
            let (emu, r) = (emu.clone(), r.clone());
            set.spawn(async move { hostile_iot_hub(&emu, &r, i).await });
        }
        for i in 0..40 {
            let r = r.clone();
            set.spawn(async move { hostile_mqtt(&r, i).await });
        }
    }
    while let Some(done) = set.join_next().await {
        done.expect("a hostile client task");
    }
    for r in emu.regions() {
        // Nothing a hostile client sent was recorded, except the valid publishes.
        assert!(
            r.records()
                .iter()
                .filter(|x| x.protocol == twinhub_emulator::Protocol::IotHub)
                .all(|x| x
                    .message_id
                    .as_deref()
                    .is_some_and(|m| m.starts_with("ok-"))),
            "{}: {:?}",
            r.name(),
            r.records()
        );
        let events = r.iot_hub_events();
        assert!(events.count("connack-5-sas-scope") >= 10, "{events:?}");
        assert!(events.count("closed-tls") >= 10, "{events:?}");
        assert!(events.count("closed-topic") >= 10, "{events:?}");
        assert!(events.count("closed-qos2") >= 10, "{events:?}");
        assert!(events.count("closed-oversize") >= 10, "{events:?}");
        assert!(events.count("closed-second-connect") >= 10, "{events:?}");
        // A valid device still connects and publishes, on IoT Hub and the generic broker.
        let mut hub = connected(&emu, r, "after$storm").await;
        assert!(
            hub.publish_acked(&topic("after$storm", "$.mid=after"), b"ok".to_vec())
                .await,
            "{} IoT Hub serves",
            r.name()
        );
        mqtt_v4_publish(
            r.mqtt_addr(),
            "after",
            "t/after",
            envelope("after-mqtt", b"x"),
            T,
        )
        .await
        .unwrap_or_else(|e| panic!("{}: generic MQTT serves: {e}", r.name()));
        r.wait_for_ids(&["after", "after-mqtt"], T).await.unwrap();
    }
}
