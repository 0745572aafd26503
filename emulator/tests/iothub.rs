//! The IoT Hub endpoint checks what IoT Hub checks and answers as IoT Hub does.

mod common;

use std::time::Duration;

use common::iothub::*;
use common::*;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    ConnectReturnCode, Packet, Publish, Subscribe, SubscribeFilter, SubscribeReasonCode,
};
use twinhub_emulator::{Emulator, EmulatorConfig, Fault, Protocol, RegionConfig};

async fn one_region() -> Emulator {
    Emulator::start(EmulatorConfig::with_regions(["primary"]))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_device_publishes_with_id_and_properties_on_its_own_address() {
    let emu = Emulator::start_default().await.unwrap();
    let (p, s) = (&emu["primary"], &emu["secondary"]);
    assert_eq!(p.iot_hub_addr().port(), 8883);
    assert_ne!(p.iot_hub_addr().ip(), s.iot_hub_addr().ip());
    assert!(p.iot_hub_addr().ip().is_loopback());
    let info = emu.start_info();
    assert_eq!(info["ca_file"], emu.ca_file().display().to_string());
    assert!(emu.ca_file().exists());
    let cs = info["regions"]["primary"]["iot_hub_connection_string"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        cs,
        format!(
            "HostName={};DeviceId=twinhub-device;SharedAccessKey={}",
            p.iot_hub_host(),
            p.iot_hub_key()
        )
    );

    let mut hub = connected(&emu, p, "meter$7").await;
    let t = topic(
        "meter$7",
        "%24.mid=meter%247%3A1%3A0&$.ct=application%2Fjson&unit=%C2%B0C",
    );
    assert!(hub.publish_acked(&t, b"{\"t\":1}".to_vec()).await);
    // QoS 0 is accepted too, without an acknowledgement; a ping proves it was read.
    hub.send(Packet::Publish(Publish::new(
        topic("meter$7", "$.mid=meter%247%3A1%3A1"),
        QoS::AtMostOnce,
        b"q0".to_vec(),
    )))
    .await;
    hub.send(Packet::PingReq).await;
    assert_eq!(hub.recv().await, Some(Packet::PingResp));
    let got = p
        .wait_for_ids(&["meter$7:1:0", "meter$7:1:1"], T)
        .await
        .unwrap();
    let r = &got[0];
    assert_eq!(r.protocol, Protocol::IotHub);
    assert_eq!(r.body, b"{\"t\":1}");
    assert_eq!(r.properties["$.ct"], "application/json");
    assert_eq!(r.properties["unit"], "\u{b0}C");
    assert_eq!(r.properties["iothub-connection-device-id"], "meter$7");
    assert!(r.peer.is_some_and(|a| a.ip().is_loopback()));
    assert!(s.is_empty(), "regions are independent");
    assert_eq!(p.stats().by_protocol["iot-hub"].unique_ids, 2);
}

#[tokio::test]
async fn bad_credentials_get_connack_5_and_bad_ids_connack_2() {
    let emu = one_region().await;
    let r = &emu["primary"];
    let host = r.iot_hub_host();
    let user = |d: &str| format!("{host}/{d}/?api-version={API}");
    let token = |d: &str| r.iot_hub_sas_token(d, Duration::from_secs(600));
    let mut no_login = good_connect(r, "d");
    no_login.login = None;
    let expired = {
        // Signed correctly, one second ago.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut buf = vec![0u8; 512];
        twinhub_core_sign(
            &format!("{host}/devices/d"),
            r.iot_hub_key(),
            now - 1,
            &mut buf,
        )
    };
    let cases = [
        ("no credentials", no_login, ConnectReturnCode::NotAuthorized),
        (
            "garbage password",
            connect_with("d", &user("d"), "hunter2", 60),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "expired token",
            connect_with("d", &user("d"), &expired, 60),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "another device's token",
            connect_with("d", &user("d"), &token("e"), 60),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "another device's user name",
            connect_with("d", &user("e"), &token("d"), 60),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "another hub's user name",
            connect_with(
                "d",
                "other.azure-devices.net/d/?api-version=1",
                &token("d"),
                60,
            ),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "client id not the device",
            connect_with("e", &user("d"), &token("d"), 60),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "id with a space",
            connect_with("a b", &user("a b"), &token("a b"), 60),
            ConnectReturnCode::BadClientId,
        ),
        (
            "empty id",
            connect_with("", &user(""), &token(""), 60),
            ConnectReturnCode::BadClientId,
        ),
    ];
    for (what, connect, code) in cases {
        let mut hub = Hub::open(&emu, r).await.unwrap();
        assert_eq!(hub.connect(connect).await, Some(code), "{what}");
        assert!(hub.closed().await, "{what}: closed after the refusal");
    }
    let events = r.iot_hub_events();
    assert_eq!(events.count("connack-5-no-credentials"), 1);
    assert_eq!(events.count("connack-5-sas-malformed"), 1);
    assert_eq!(events.count("connack-5-sas-expired"), 1);
    assert_eq!(events.count("connack-5-sas-scope"), 1);
    assert_eq!(events.count("connack-5-username"), 3);
    assert_eq!(events.count("connack-2-client-id"), 2);
    assert_eq!(events.count("connected"), 0);

    // MQTT 5 is not IoT Hub's protocol (outside its preview): CONNACK 1, then closed.
    let mut hub = Hub::open(&emu, r).await.unwrap();
    hub.send_raw(b"\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x03abc")
        .await;
    match hub.recv().await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, ConnectReturnCode::RefusedProtocolVersion),
        other => panic!("expected CONNACK 1, got {other:?}"),
    }
    assert!(hub.closed().await);
}

fn twinhub_core_sign(resource: &str, key: &str, expiry: u64, buf: &mut [u8]) -> String {
    twinhub_core::sas::sign(
        resource,
        &twinhub_core::sas::SasKey::Base64(key),
        None,
        expiry,
        buf,
    )
    .unwrap()
    .to_string()
}

#[tokio::test]
async fn publish_violations_close_the_connection_and_record_nothing() {
    let emu = one_region().await;
    let r = &emu["primary"];
    let oversize = vec![b'x'; 256 * 1024 + 1];
    let cases: [(&str, String, QoS, Vec<u8>, &str); 6] = [
        (
            "another device's topic",
            topic("other", "$.mid=x"),
            QoS::AtLeastOnce,
            b"x".to_vec(),
            "closed-topic",
        ),
        (
            "outside the telemetry topic",
            "telemetry/d".into(),
            QoS::AtLeastOnce,
            b"x".to_vec(),
            "closed-topic",
        ),
        (
            "twin request (not emulated)",
            "$iothub/twin/GET/?$rid=1".into(),
            QoS::AtMostOnce,
            Vec::new(),
            "closed-topic",
        ),
        (
            "QoS 2",
            topic("d", "$.mid=q2"),
            QoS::ExactlyOnce,
            b"x".to_vec(),
            "closed-qos2",
        ),
        (
            "257 KB",
            topic("d", ""),
            QoS::AtLeastOnce,
            oversize,
            "closed-oversize",
        ),
        (
            "256 KB body plus a property bag",
            topic("d", "$.mid=big"),
            QoS::AtLeastOnce,
            vec![b'x'; 256 * 1024],
            "closed-oversize",
        ),
    ];
    for (what, t, qos, payload, reason) in cases {
        let before = r.iot_hub_events().count(reason);
        let mut hub = connected(&emu, r, "d").await;
        let mut p = Publish::new(t, qos, payload);
        p.pkid = if qos == QoS::AtMostOnce { 0 } else { 1 };
        hub.send(Packet::Publish(p)).await;
        assert!(hub.closed().await, "{what}: connection closed, no PUBACK");
        // The count is bumped as the server task ends, right after the close.
        let counted = eventually(T, || async { r.iot_hub_events().count(reason) > before }).await;
        assert!(counted, "{what}: counted as {reason}");
    }
    assert!(r.is_empty());
    // Exactly 256 KB (body and bag together) is accepted.
    let mut hub = connected(&emu, r, "d").await;
    assert!(
        hub.publish_acked(&topic("d", ""), vec![b'x'; 256 * 1024])
            .await
    );
    r.wait_for_records(1, T).await.unwrap();
}

#[tokio::test]
async fn subscriptions_to_device_topics_are_granted_others_refused() {
    let emu = one_region().await;
    let r = &emu["primary"];
    let mut hub = connected(&emu, r, "d").await;
    let sub = Subscribe {
        pkid: 3,
        filters: vec![
            SubscribeFilter::new("devices/d/messages/devicebound/#".into(), QoS::ExactlyOnce),
            SubscribeFilter::new("$iothub/twin/res/#".into(), QoS::AtMostOnce),
            SubscribeFilter::new(
                "devices/other/messages/devicebound/#".into(),
                QoS::AtLeastOnce,
            ),
            SubscribeFilter::new("#".into(), QoS::AtLeastOnce),
        ],
    };
    hub.send(Packet::Subscribe(sub)).await;
    match hub.recv().await {
        Some(Packet::SubAck(a)) => assert_eq!(
            a.return_codes,
            [
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                SubscribeReasonCode::Success(QoS::AtMostOnce),
                SubscribeReasonCode::Failure,
                SubscribeReasonCode::Failure,
            ]
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    assert!(
        hub.publish_acked(&topic("d", ""), b"still fine".to_vec())
            .await
    );
}

#[tokio::test]
async fn keep_alive_above_the_maximum_is_accepted_and_capped() {
    let emu = Emulator::start(
        EmulatorConfig::empty()
            .region(RegionConfig::new("primary").iot_hub_max_idle(Duration::from_millis(300))),
    )
    .await
    .unwrap();
    let r = &emu["primary"];
    let mut hub = Hub::open(&emu, r).await.unwrap();
    let mut c = good_connect(r, "d");
    c.keep_alive = 3600;
    assert_eq!(hub.connect(c).await, Some(ConnectReturnCode::Success));
    // Silence past the cap: the server closes, as IoT Hub does at 1767 s.
    assert!(hub.closed().await);
    assert!(
        eventually(T, || async {
            r.iot_hub_events().count("closed-keep-alive") == 1
        })
        .await
    );
}

#[tokio::test]
async fn a_new_connection_of_the_same_device_replaces_the_old_one() {
    let emu = one_region().await;
    let r = &emu["primary"];
    let mut old = connected(&emu, r, "meter$7").await;
    let mut new = connected(&emu, r, "meter$7").await;
    assert!(
        old.closed().await,
        "IoT Hub keeps one connection per device"
    );
    assert!(
        new.publish_acked(&topic("meter$7", "$.mid=n"), b"n".to_vec())
            .await
    );
    // A storm of reconnects with that id leaves the newest one working.
    let mut storm = Vec::new();
    for _ in 0..10 {
        storm.push(connected(&emu, r, "meter$7").await);
    }
    let mut last = storm.pop().unwrap();
    assert!(
        last.publish_acked(&topic("meter$7", "$.mid=l"), b"l".to_vec())
            .await
    );
    for mut h in storm {
        assert!(h.closed().await);
    }
    r.wait_for_ids(&["n", "l"], T).await.unwrap();
}

#[tokio::test]
async fn fault_switch_refuses_or_throttles_one_device() {
    let emu = one_region().await;
    let r = &emu["primary"];
    r.switch()
        .set_for_device("refused", Fault::IotHubRefuse)
        .unwrap();
    // Refused: the connection is accepted, the publish closes it.
    let mut hub = connected(&emu, r, "refused").await;
    assert!(
        !hub.publish_acked(&topic("refused", "$.mid=r"), b"r".to_vec())
            .await
    );
    // Another device is untouched.
    let mut other = connected(&emu, r, "fine").await;
    assert!(
        other
            .publish_acked(&topic("fine", "$.mid=f"), b"f".to_vec())
            .await
    );

    // Throttled through the admin API: two late PUBACKs, then the close.
    let resp = client()
        .post(format!("{}/_admin/regions/primary/fault", emu.admin_url()))
        .body(r#"{"mode":"iot-hub-throttle","delay_ms":200,"acks":2,"device":"slow"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let state: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(state["devices"]["slow"]["mode"], "iot-hub-throttle");
    let mut slow = connected(&emu, r, "slow").await;
    for i in 0..2 {
        let started = std::time::Instant::now();
        assert!(
            slow.publish_acked(&topic("slow", &format!("$.mid=s{i}")), b"s".to_vec())
                .await
        );
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "PUBACK held back"
        );
    }
    assert!(
        !slow
            .publish_acked(&topic("slow", "$.mid=s2"), b"s".to_vec())
            .await
    );
    let refused = r.iot_hub_events().wait_for("closed-refused", 1, T);
    assert_eq!(refused.await, 1);
    assert!(
        eventually(T, || async {
            r.iot_hub_events().count("closed-throttled") == 1
        })
        .await
    );
    let ids = r.ids();
    assert!(ids.contains(&"f".to_string()) && ids.contains(&"s1".to_string()));
    assert!(!ids.contains(&"r".to_string()) && !ids.contains(&"s2".to_string()));
    let events: serde_json::Value = client()
        .get(format!(
            "{}/_admin/regions/primary/iot-hub",
            emu.admin_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events["events"]["closed-refused"], 1);

    // Region-wide faults of the switch apply to the endpoint too.
    r.set_fault(Fault::Down);
    assert!(
        Hub::open(&emu, r).await.is_err(),
        "a region that is down resets the connection"
    );
    r.clear_faults();
    let mut back = connected(&emu, r, "refused").await;
    assert!(
        back.publish_acked(&topic("refused", "$.mid=r2"), b"r".to_vec())
            .await
    );
}

#[tokio::test]
async fn a_fixed_address_and_port_can_be_configured_and_a_taken_one_is_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err =
        Emulator::start(EmulatorConfig::empty().region(RegionConfig::new("p").iot_hub_addr(addr)))
            .await
            .unwrap_err();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    let emu = Emulator::start(
        EmulatorConfig::empty()
            .region(RegionConfig::new("p").iot_hub_addr("127.0.0.1:0".parse().unwrap())),
    )
    .await
    .unwrap();
    let r = &emu["p"];
    assert_eq!(r.iot_hub_host(), "127.0.0.1");
    let mut hub = connected(&emu, r, "d").await;
    assert!(hub.publish_acked(&topic("d", ""), b"x".to_vec()).await);
}
