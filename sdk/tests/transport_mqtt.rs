//! MQTT (5 and 3.1.1) against a real mosquitto and the emulator's broker; IoT Hub against
//! the emulator's broker.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, Incoming, MqttOptions};
use tokio::sync::mpsc;
use twinhub::Outcome;
use twinhub::spec::{Bind, IotHubSpec, MqttVersion, ProtocolSpec, Secret};
use twinhub::transport::{build, build_with_timeout};
use twinhub_core::sas::{ParsedToken, SasKey};
use twinhub_emulator::{Emulator, EmulatorConfig, Fault};
use twinhub_testkit::*;

const WAIT: Duration = Duration::from_secs(10);

/// Bounds a whole batch of QoS 1 publishes. Generous, since a debug build on a busy machine
/// is slow, and nothing here waits for it: a killed broker ends the connection at once.
const BATCH_TIMEOUT: Duration = Duration::from_secs(15);

/// What a subscriber saw: topic, user properties, payload.
type Seen = (String, Vec<(String, String)>, Vec<u8>);

/// Subscribes to `topic` and forwards every publish; returns once the SUBACK arrived.
async fn subscriber(port: u16, topic: &str) -> (mpsc::UnboundedReceiver<Seen>, AsyncClient) {
    // A client id of its own per subscriber (the broker drops a duplicate's session).
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut o = MqttOptions::new(format!("sub-{}-{n}", std::process::id()), "127.0.0.1", port);
    o.set_max_packet_size(Some(1 << 20));
    let (client, mut el) = AsyncClient::new(o, 10);
    client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready = Some(ready_tx);
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let props = p.properties.map(|p| p.user_properties).unwrap_or_default();
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    if tx.send((topic, props, p.payload.to_vec())).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    tokio::time::timeout(WAIT, ready_rx).await.unwrap().unwrap();
    (rx, client)
}

async fn collect(rx: &mut mpsc::UnboundedReceiver<Seen>, n: usize) -> Vec<Seen> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(s)) => out.push(s),
            _ => panic!("got {} of {n} publishes", out.len()),
        }
    }
    out
}

fn prop<'a>(props: &'a [(String, String)], name: &str) -> Option<&'a str> {
    props
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn mqtt5_to_mosquitto_carries_ids_and_survives_a_restart() {
    let mut broker = Mosquitto::start();
    let (mut rx, _sub) = subscriber(broker.port, "t/#").await;
    let spec = mqtt(broker.addr(), "t/{device_id}", MqttVersion::V5);
    let t = build_with_timeout(&spec, &link(None), &device("dev"), tls(), BATCH_TIMEOUT).unwrap();
    let batch = records("dev", 1, 0, 150, 64);
    assert_eq!(t.send(&batch).await, Outcome::Delivered);
    let seen = collect(&mut rx, 150).await;
    let got: BTreeSet<_> = seen
        .iter()
        .map(|(topic, props, _)| {
            assert_eq!(topic, "t/dev");
            assert_eq!(prop(props, "unit"), Some("C"));
            prop(props, "message-id").unwrap().to_string()
        })
        .collect();
    assert_eq!(got, ids(&batch).into_iter().collect());
    assert_eq!(seen[0].2, batch[0].body);

    // Killed mid-batch: the batch cannot be Delivered.
    let big = records("dev", 1, 1000, 2000, 256);
    let send = t.send(&big);
    let killer = async {
        // Wait until the broker has forwarded some of the batch, then kill it.
        let _ = tokio::time::timeout(WAIT, rx.recv()).await;
        broker.kill();
    };
    let (outcome, ()) = tokio::join!(send, killer);
    assert!(
        matches!(outcome, Outcome::Timeout | Outcome::Unreachable),
        "{outcome:?}"
    );
    // While down: unreachable, quickly.
    assert_eq!(t.send(&batch[..1]).await, Outcome::Unreachable);
    broker.restart();
    let (mut rx, _sub) = subscriber(broker.port, "t/#").await;
    let again = records("dev", 1, 5000, 10, 64);
    assert_eq!(t.send(&again).await, Outcome::Delivered);
    let seen = collect(&mut rx, 10).await;
    let got: BTreeSet<_> = seen
        .iter()
        .map(|(_, p, _)| prop(p, "message-id").unwrap().to_string())
        .collect();
    assert_eq!(got, ids(&again).into_iter().collect());
}

#[tokio::test]
async fn mqtt311_to_mosquitto_uses_the_envelope() {
    let mut broker = Mosquitto::start();
    let (mut rx, _sub) = subscriber(broker.port, "v4/#").await;
    let spec = mqtt(broker.addr(), "v4/{device_id}/up", MqttVersion::V311);
    let t = build_with_timeout(&spec, &link(None), &device("d4"), tls(), BATCH_TIMEOUT).unwrap();
    let batch = records("d4", 7, 0, 120, 100);
    assert_eq!(t.send(&batch).await, Outcome::Delivered);
    let seen = collect(&mut rx, 120).await;
    let mut got = BTreeMap::new();
    for (topic, _, payload) in &seen {
        assert_eq!(topic, "v4/d4/up");
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(v["properties"]["unit"], "C");
        got.insert(v["id"].as_str().unwrap().to_string(), v["body"].clone());
    }
    assert_eq!(got.keys().cloned().collect::<Vec<_>>().len(), 120);
    for r in &batch {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&r.body);
        assert_eq!(got[&r.id.to_string()], b64);
    }
    broker.kill();
    // The idle connection may not have noticed yet (then the publish may have left:
    // Timeout); once it has, or on the next try, nothing can connect.
    let first = t.send(&batch[..2]).await;
    assert!(
        matches!(first, Outcome::Timeout | Outcome::Unreachable),
        "{first:?}"
    );
    assert_eq!(t.send(&batch[..2]).await, Outcome::Unreachable);
    broker.restart();
    assert_eq!(t.send(&batch[..2]).await, Outcome::Delivered);
}

#[tokio::test]
async fn mqtt_unreachable_and_refused() {
    // Held bound but not listening: refused, and no one else can listen there meanwhile.
    let closed = ClosedPort::new();
    let spec = mqtt(closed.addr(), "t", MqttVersion::V5);
    let t = build_with_timeout(
        &spec,
        &link(None),
        &device("dev"),
        tls(),
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(
        t.send(&records("dev", 1, 0, 1, 8)).await,
        Outcome::Unreachable
    );
    // A DNS name that does not resolve.
    let mut spec = spec;
    if let ProtocolSpec::Mqtt(m) = &mut spec.protocol {
        m.host = "no-such-host.invalid".into();
    }
    let t = build_with_timeout(
        &spec,
        &link(None),
        &device("dev"),
        tls(),
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(
        t.send(&records("dev", 1, 0, 1, 8)).await,
        Outcome::Unreachable
    );
}

#[tokio::test]
async fn mqtt_bad_credentials_are_unauthorized() {
    let broker = Mosquitto::start_with("allow_anonymous false\npassword_file /dev/null\n");
    let mut spec = mqtt(broker.addr(), "t", MqttVersion::V311);
    if let ProtocolSpec::Mqtt(m) = &mut spec.protocol {
        m.username = Some("who".into());
        m.password = Some(Secret::new("wrong"));
    }
    let t = build_with_timeout(
        &spec,
        &link(None),
        &device("dev"),
        tls(),
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(
        t.send(&records("dev", 1, 0, 1, 8)).await,
        Outcome::Unauthorized
    );
}

#[tokio::test]
async fn mqtt_both_versions_to_the_emulator() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let r = &emu["primary"];
    for (version, epoch) in [(MqttVersion::V5, 1), (MqttVersion::V311, 2)] {
        let spec = mqtt(r.mqtt_addr(), "telemetry/{device_id}", version);
        // A client id of its own per version: the broker may still be closing the other
        // version's session, and a reused id would race that session takeover.
        let client = format!("emu-{epoch}");
        let t = build(&spec, &link(None), &device(&client), tls()).unwrap();
        // Properties arrive either way: user properties (5) or the envelope's (3.1.1).
        let batch = records("emu", epoch, 0, 40, 32);
        assert_eq!(t.send(&batch).await, Outcome::Delivered, "{version:?}");
        let got = r.wait_for_ids(&ids(&batch), WAIT).await.unwrap();
        let rec = got
            .iter()
            .find(|x| x.message_id.as_deref() == Some(ids(&batch)[0].as_str()))
            .unwrap();
        assert_eq!(rec.body, batch[0].body, "{version:?}");
        for (k, v) in &batch[0].properties {
            assert_eq!(rec.properties.get(k), Some(v), "{version:?}: {k}");
        }
    }
}

fn iot_hub_spec(
    addr: std::net::SocketAddr,
    key: &str,
    ttl: Duration,
) -> twinhub::spec::EndpointSpec {
    endpoint(ProtocolSpec::IotHub(IotHubSpec {
        host: addr.ip().to_string(),
        device_id: "meter-7".into(),
        key: Secret::new(key),
        port: addr.port(),
        tls: false,
        token_ttl: ttl,
        x509: false,
        client_cert: None,
        transport: Default::default(),
    }))
}

#[tokio::test]
async fn iot_hub_to_the_emulator_records_mid() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let r = &emu["primary"];
    let spec = iot_hub_spec(r.mqtt_addr(), "cGFzc3dvcmQ=", Duration::from_secs(3600));
    let t = build(&spec, &link(None), &device("meter-7"), tls()).unwrap();
    let batch = records("meter-7", 1, 0, 30, 48);
    assert_eq!(t.send(&batch).await, Outcome::Delivered);
    let got = r.wait_for_ids(&ids(&batch), WAIT).await.unwrap();
    let rec = got
        .iter()
        .find(|x| x.message_id.as_deref() == Some("meter-7:1:0"))
        .unwrap();
    assert_eq!(rec.body, batch[0].body);
    assert_eq!(
        rec.target,
        "devices/meter-7/messages/events/$.mid=meter-7%3A1%3A0&unit=C"
    );
    // A non-base64 device key is a build error, not a send failure.
    let bad = iot_hub_spec(r.mqtt_addr(), "not base64!", Duration::from_secs(3600));
    assert!(build(&bad, &link(None), &device("meter-7"), tls()).is_err());
}

#[tokio::test]
async fn iot_hub_credentials_and_renewal() {
    // A mosquitto that logs nothing cannot show the password; a tiny fake broker reads
    // the CONNECT packet instead and acknowledges it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut have = 0;
                // Read until the CONNECT packet is complete.
                let connect = loop {
                    let n = s.read(&mut buf[have..]).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    have += n;
                    if let Some(p) = parse_connect(&buf[..have]) {
                        break p;
                    }
                };
                let _ = tx.send(connect);
                s.write_all(&[0x20, 2, 0, 0]).await.unwrap();
                // PUBACK every QoS 1 PUBLISH.
                let mut pending: Vec<u8> = Vec::new();
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    while let Some((kind, body, used)) = packet(&pending) {
                        if kind >> 4 == 3 {
                            let tl = usize::from(u16::from_be_bytes([body[0], body[1]]));
                            let pkid = [body[2 + tl], body[3 + tl]];
                            s.write_all(&[0x40, 2, pkid[0], pkid[1]]).await.unwrap();
                        }
                        pending.drain(..used);
                    }
                }
            });
        }
    });
    let key = "cGFzc3dvcmQ=";
    let spec = iot_hub_spec(addr, key, Duration::from_secs(2));
    let t = build(&spec, &link(None), &device("meter-7"), tls()).unwrap();
    let batch = records("meter-7", 1, 0, 3, 8);
    assert_eq!(t.send(&batch).await, Outcome::Delivered);
    let (client_id, user, password) = rx.recv().await.unwrap();
    assert_eq!(client_id, "meter-7");
    assert_eq!(user, "127.0.0.1/meter-7/?api-version=2021-04-12");
    let token = ParsedToken::parse(&password).unwrap();
    assert_eq!(token.resource, "127.0.0.1%2Fdevices%2Fmeter-7");
    assert_eq!(token.key_name, None);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    token.verify(&SasKey::Base64(key), now).unwrap();
    // Within 80% of the token's life the connection is kept; after it, a new connection
    // with a fresh token is made.
    assert_eq!(t.send(&batch).await, Outcome::Delivered);
    assert!(rx.try_recv().is_err());
    // The connection's age is kept on tokio's clock: move it past 80% of the 2 s life
    // without waiting. Paused only here, with nothing in flight, so no I/O timeout can
    // fire early; a renewal rule that ignored the age would never reconnect below.
    tokio::time::pause();
    tokio::time::advance(Duration::from_millis(1700)).await;
    tokio::time::resume();
    assert_eq!(t.send(&batch).await, Outcome::Delivered);
    let (_, _, renewed) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    let renewed = ParsedToken::parse(&renewed).unwrap();
    renewed.verify(&SasKey::Base64(key), now).unwrap();
    assert!(renewed.expiry >= token.expiry);
}

/// (first byte, body, bytes used) of the first complete MQTT packet in `b`.
fn packet(b: &[u8]) -> Option<(u8, &[u8], usize)> {
    let mut len = 0usize;
    let mut i = 1;
    loop {
        let byte = *b.get(i)?;
        len |= usize::from(byte & 0x7f) << (7 * (i - 1));
        i += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let body = b.get(i..i + len)?;
    Some((b[0], body, i + len))
}

/// Client id, user name and password of a 3.1.1 CONNECT.
fn parse_connect(b: &[u8]) -> Option<(String, String, String)> {
    let (kind, body, _) = packet(b)?;
    assert_eq!(kind, 0x10);
    let mut at = 2 + 4 + 1; // "MQTT", level
    let flags = body[at];
    at += 1 + 2; // flags, keep alive
    let mut field = || {
        let n = usize::from(u16::from_be_bytes([body[at], body[at + 1]]));
        let s = String::from_utf8(body[at + 2..at + 2 + n].to_vec()).unwrap();
        at += 2 + n;
        s
    };
    let client = field();
    assert_eq!(flags & 0x04, 0, "no will");
    let user = field();
    let pass = field();
    Some((client, user, pass))
}

#[tokio::test]
async fn mqtt_link_binding_selects_the_source_address() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let r = &emu["primary"];
    let wan_ip: std::net::IpAddr = "127.0.0.3".parse().unwrap();
    let bound = |spec: &twinhub::spec::EndpointSpec, ip: &str| {
        build_with_timeout(
            spec,
            &link(Some(Bind::Addr(ip.parse().unwrap()))),
            &device("dev"),
            tls(),
            Duration::from_secs(2),
        )
        .unwrap()
    };
    // The region refuses the WAN's source address only.
    r.set_fault_for(wan_ip, Fault::Down);
    for (version, epoch) in [(MqttVersion::V5, 1), (MqttVersion::V311, 2)] {
        let spec = mqtt(r.mqtt_addr(), "telemetry/{device_id}", version);
        let (wan, cell) = (bound(&spec, "127.0.0.3"), bound(&spec, "127.0.0.2"));
        let mut batch = records("dev", epoch, 0, 5, 16);
        batch.iter_mut().for_each(|r| r.properties.clear());
        assert_eq!(wan.send(&batch).await, Outcome::Unreachable, "{version:?}");
        assert_eq!(cell.send(&batch).await, Outcome::Delivered, "{version:?}");
        r.wait_for_ids(&ids(&batch), WAIT).await.unwrap();

        // Healed: the same transport connects again through its tunnel.
        r.set_fault_for(wan_ip, Fault::Up);
        let mut more = records("dev", epoch, 5, 5, 16);
        more.iter_mut().for_each(|r| r.properties.clear());
        assert_eq!(wan.send(&more).await, Outcome::Delivered, "{version:?}");
        r.wait_for_ids(&ids(&more), WAIT).await.unwrap();
        r.set_fault_for(wan_ip, Fault::Down);
    }
    // An address this host does not have: unreachable, never the default route.
    let spec = mqtt(r.mqtt_addr(), "t", MqttVersion::V5);
    let nowhere = bound(&spec, "192.0.2.1");
    assert_eq!(
        nowhere.send(&records("dev", 3, 0, 1, 8)).await,
        Outcome::Unreachable
    );
}

/// A private CA and a broker certificate for `localhost`, made for this run, written to
/// `dir` as `ca.pem`, `broker.pem` and `broker.key`.
fn private_pki(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "twinhub test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let broker_key = KeyPair::generate().unwrap();
    let broker = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let broker_cert = broker
        .signed_by(&broker_key, &Issuer::new(ca, ca_key))
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("broker.pem"), broker_cert.pem()).unwrap();
    std::fs::write(dir.join("broker.key"), broker_key.serialize_pem()).unwrap();
    // mosquitto started as root reads them as its own user.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["ca.pem", "broker.pem", "broker.key"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iot_hub_over_tls_trusts_a_private_broker_only_through_its_ca_file() {
    let pki = tempfile::tempdir().unwrap();
    private_pki(pki.path());
    // TLS on the broker's port; a plain listener for the test's own subscriber.
    let broker = Mosquitto::start_with_second_listener(&format!(
        "allow_anonymous true\ncafile {0}/ca.pem\ncertfile {0}/broker.pem\nkeyfile {0}/broker.key\n",
        pki.path().display()
    ));
    let plain = broker.second_port().expect("a plain listener");
    let (mut rx, _sub) = subscriber(plain, "devices/meter-7/messages/events/#").await;
    let spec = |host: &str| {
        endpoint(ProtocolSpec::IotHub(IotHubSpec {
            host: host.into(),
            device_id: "meter-7".into(),
            key: Secret::new("cGFzc3dvcmQ="),
            port: broker.port,
            tls: true,
            token_ttl: Duration::from_secs(3600),
            x509: false,
            client_cert: None,
            transport: Default::default(),
        }))
    };
    let with_ca = twinhub::transport::tls_config(Some(&pki.path().join("ca.pem"))).unwrap();
    let send = |host: &str, bind: Option<&str>, tls: std::sync::Arc<rustls::ClientConfig>| {
        build_with_timeout(
            &spec(host),
            &link(bind.map(|ip| Bind::Addr(ip.parse().unwrap()))),
            &device("meter-7"),
            tls,
            Duration::from_secs(3),
        )
        .unwrap()
    };

    // Trusted through the CA file, under the certificate's name: delivered.
    let batch = records("meter-7", 1, 0, 5, 24);
    let t = send("localhost", None, with_ca.clone());
    assert_eq!(t.send(&batch).await, Outcome::Delivered);
    // Through a bound local address the tunnel carries TLS end to end, same name.
    let more = records("meter-7", 1, 5, 5, 24);
    let bound = send("localhost", Some("127.0.0.2"), with_ca.clone());
    assert_eq!(bound.send(&more).await, Outcome::Delivered);
    let seen = collect(&mut rx, 10).await;
    let mids: BTreeSet<String> = seen
        .iter()
        .filter_map(|(topic, _, _)| topic.split("$.mid=").nth(1))
        .map(|m| m.split('&').next().unwrap().replace("%3A", ":"))
        .collect();
    let want: BTreeSet<String> = ids(&batch).into_iter().chain(ids(&more)).collect();
    assert_eq!(mids, want);

    // The web PKI alone does not know this CA; an address is not the certified name.
    let untrusted = records("meter-7", 2, 0, 1, 8);
    let web_pki = twinhub::transport::tls_config(None).unwrap();
    assert_ne!(
        send("localhost", None, web_pki).send(&untrusted).await,
        Outcome::Delivered
    );
    assert_ne!(
        send("127.0.0.1", None, with_ca).send(&untrusted).await,
        Outcome::Delivered
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err(),
        "nothing crossed an unverified connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_pipeline_on_one_connection() {
    let broker = Mosquitto::start();
    let (mut rx, _sub) = subscriber(broker.port, "t/#").await;
    for version in [MqttVersion::V5, MqttVersion::V311] {
        let spec = mqtt(broker.addr(), "t/{device_id}", version);
        let t = std::sync::Arc::new(
            build_with_timeout(&spec, &link(None), &device("pipe"), tls(), BATCH_TIMEOUT).unwrap(),
        );
        let epoch = if version == MqttVersion::V5 { 1 } else { 2 };
        let batches: Vec<_> = (0..4)
            .map(|k| records("pipe", epoch, k * 60, 60, 32))
            .collect();
        // Four batches in flight at once, as the engine keeps them.
        let mut set = tokio::task::JoinSet::new();
        for b in batches.clone() {
            let t = std::sync::Arc::clone(&t);
            set.spawn(async move { t.send(&b).await });
        }
        let outcomes = set.join_all().await;
        assert!(
            outcomes.iter().all(|o| *o == Outcome::Delivered),
            "{version:?}: {outcomes:?}"
        );
        let seen = collect(&mut rx, 240).await;
        let want: BTreeSet<String> = batches.iter().flat_map(|b| ids(b)).collect();
        let got: BTreeSet<String> = seen
            .iter()
            .map(|(_, props, payload)| match version {
                MqttVersion::V5 => prop(props, "message-id").unwrap().to_string(),
                MqttVersion::V311 => {
                    let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
                    v["id"].as_str().unwrap().to_string()
                }
            })
            .collect();
        assert_eq!(got, want, "{version:?}");
    }
}
