//! HTTP transports (Event Hubs, generic JSON), TLS settings and link binding, against the
//! emulator.

use std::time::{Duration, Instant};

use twinhub::spec::Bind;
use twinhub::transport::{TransportError, build, build_with_timeout, http::idempotency_key};
use twinhub::{Outcome, RejectReason};
use twinhub_emulator::{Emulator, EmulatorConfig, Fault};
use twinhub_testkit::*;

const WAIT: Duration = Duration::from_secs(10);

async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator starts")
}

fn eh_of(emu: &Emulator, key: &str) -> twinhub::spec::EndpointSpec {
    let r = &emu["primary"];
    event_hubs(&r.http_addr().to_string(), r.event_hub(), r.key_name(), key)
}

#[tokio::test]
async fn event_hubs_delivers_every_id() {
    let emu = emulator().await;
    let r = &emu["primary"];
    let t = build(&eh_of(&emu, r.key()), &link(None), &device("dev"), tls()).unwrap();
    let batch = records("dev", 1, 0, 50, 64);
    assert_eq!(t.send(&batch).await, Outcome::Delivered);
    let got = r.wait_for_ids(&ids(&batch), WAIT).await.unwrap();
    let first = got
        .iter()
        .find(|x| x.message_id.as_deref() == Some("dev:1:0"))
        .unwrap();
    assert_eq!(first.body, batch[0].body);
    assert_eq!(first.properties.get("unit").map(String::as_str), Some("C"));
    assert_eq!(
        first.properties.get("message-id").map(String::as_str),
        Some("dev:1:0")
    );
    // A second batch reuses the pooled connection and the cached token.
    let batch2 = records("dev", 1, 50, 10, 64);
    assert_eq!(t.send(&batch2).await, Outcome::Delivered);
    r.wait_for_ids(&ids(&batch2), WAIT).await.unwrap();
}

#[tokio::test]
async fn event_hubs_status_mapping() {
    let emu = emulator().await;
    let r = &emu["primary"];
    let dev = device("dev");
    let batch = records("dev", 1, 0, 3, 16);

    let wrong = build(&eh_of(&emu, "not-the-key"), &link(None), &dev, tls()).unwrap();
    assert_eq!(wrong.send(&batch).await, Outcome::Unauthorized);

    let t = build_with_timeout(
        &eh_of(&emu, r.key()),
        &link(None),
        &dev,
        tls(),
        Duration::from_millis(500),
    )
    .unwrap();
    let big = records("dev", 1, 100, 1, r.max_publication_bytes() + 1);
    assert_eq!(
        t.send(&big).await,
        Outcome::Rejected(RejectReason::TooLarge)
    );

    // 503 is Event Hubs' "server busy": throttling, not a failed region.
    r.set_fault(Fault::Http503);
    assert_eq!(
        t.send(&batch).await,
        Outcome::Throttled { retry_after: None }
    );
    r.set_fault(Fault::Http429 { retry_after_s: 2 });
    assert_eq!(
        t.send(&batch).await,
        Outcome::Throttled {
            retry_after: Some(twinhub::EngineDuration::from_secs(2))
        }
    );
    r.set_fault(Fault::Down);
    t.reset();
    assert_eq!(t.send(&batch).await, Outcome::Unreachable);
    r.set_fault(Fault::Blackhole);
    let start = Instant::now();
    assert_eq!(t.send(&batch).await, Outcome::Timeout);
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(2000),
        "timed out after {took:?}"
    );
    r.set_fault(Fault::Up);
    t.reset();
    assert_eq!(t.send(&batch).await, Outcome::Delivered);
    r.wait_for_ids(&ids(&batch), WAIT).await.unwrap();
}

#[tokio::test]
async fn event_hubs_unknown_entity_is_a_server_error() {
    let emu = emulator().await;
    let r = &emu["primary"];
    let spec = event_hubs(&r.http_addr().to_string(), "nope", r.key_name(), r.key());
    let t = build(&spec, &link(None), &device("dev"), tls()).unwrap();
    assert_eq!(
        t.send(&records("dev", 1, 0, 1, 8)).await,
        Outcome::ServerError
    );
}

#[tokio::test]
async fn event_hubs_refused_connection_is_unreachable() {
    // Held bound but not listening: refused, and no one else can listen there meanwhile.
    let closed = ClosedPort::new();
    let spec = event_hubs(&closed.addr().to_string(), "hub", "rule", "key");
    let t = build(&spec, &link(None), &device("dev"), tls()).unwrap();
    assert_eq!(
        t.send(&records("dev", 1, 0, 1, 8)).await,
        Outcome::Unreachable
    );
    // A name that does not resolve, over TLS (plain text is for loopback hosts only).
    let mut spec = event_hubs("no-such-host.invalid:443", "hub", "rule", "key");
    if let twinhub::spec::ProtocolSpec::EventHubs(e) = &mut spec.protocol {
        e.development_emulator = false;
    }
    let t = build(&spec, &link(None), &device("dev"), tls()).unwrap();
    assert_eq!(
        t.send(&records("dev", 1, 0, 1, 8)).await,
        Outcome::Unreachable
    );
}

#[tokio::test]
async fn http_resend_is_idempotent() {
    let emu = emulator().await;
    let r = &emu["primary"];
    let url = format!("{}/ingest/telemetry", r.http_url());
    let t = build(&http(&url), &link(None), &device("dev"), tls()).unwrap();
    let batch = records("dev", 2, 0, 20, 32);
    assert_eq!(t.send(&batch).await, Outcome::Delivered);
    let got = r.wait_for_ids(&ids(&batch), WAIT).await.unwrap();
    assert_eq!(got.len(), 20);
    assert_eq!(got[0].body, batch[0].body);
    // The same batch again (as after a timeout): same key, same body, not stored twice.
    assert_eq!(idempotency_key(&batch), idempotency_key(&batch.clone()));
    assert_ne!(idempotency_key(&batch), idempotency_key(&batch[1..]));
    assert_eq!(t.send(&batch).await, Outcome::Delivered);
    assert_eq!(r.len(), 20);
    for id in ids(&batch) {
        assert_eq!(r.id_count(&id), 1, "{id}");
    }
    r.set_fault(Fault::Http503);
    assert_eq!(t.send(&batch).await, Outcome::ServerError);
}

#[tokio::test]
async fn link_binding_selects_the_path() {
    let emu = emulator().await;
    let r = &emu["primary"];
    let url = format!("{}/ingest/telemetry", r.http_url());
    let dev = device("dev");
    let bound = |ip: &str| {
        build_with_timeout(
            &http(&url),
            &link(Some(Bind::Addr(ip.parse().unwrap()))),
            &dev,
            tls(),
            Duration::from_secs(2),
        )
        .unwrap()
    };
    let wan = bound("127.0.0.3");
    let cell = bound("127.0.0.2");
    let eh_wan = build_with_timeout(
        &eh_of(&emu, r.key()),
        &link(Some(Bind::Addr("127.0.0.3".parse().unwrap()))),
        &dev,
        tls(),
        Duration::from_secs(2),
    )
    .unwrap();
    let a = records("dev", 3, 0, 2, 8);
    assert_eq!(wan.send(&a).await, Outcome::Delivered);
    let got = r.wait_for_ids(&ids(&a), WAIT).await.unwrap();
    assert!(
        got.iter()
            .all(|x| x.peer.map(|p| p.ip().to_string()) == Some("127.0.0.3".into()))
    );

    r.set_fault_for("127.0.0.3".parse().unwrap(), Fault::Down);
    wan.reset();
    let b = records("dev", 3, 2, 2, 8);
    assert_eq!(wan.send(&b).await, Outcome::Unreachable);
    assert_eq!(eh_wan.send(&b).await, Outcome::Unreachable);
    assert_eq!(cell.send(&b).await, Outcome::Delivered);
    let got = r.wait_for_ids(&ids(&b), WAIT).await.unwrap();
    let from: Vec<_> = got
        .iter()
        .filter(|x| ids(&b).contains(x.message_id.as_ref().unwrap()))
        .map(|x| x.peer.unwrap().ip().to_string())
        .collect();
    assert_eq!(from, ["127.0.0.2", "127.0.0.2"]);
}

#[test]
fn tls_config_loads_a_ca_file_and_refuses_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ca.pem");
    std::fs::write(&pem, TEST_CA).unwrap();
    let with = twinhub::transport::tls_config(Some(&pem)).unwrap();
    let without = twinhub::transport::tls_config(None).unwrap();
    assert!(with.alpn_protocols.is_empty());
    drop(without);

    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "this is not a certificate\n").unwrap();
    match twinhub::transport::tls_config(Some(&junk)) {
        Err(TransportError::CaFileInvalid { path, reason }) => {
            assert_eq!(path, junk);
            assert!(reason.contains("no PEM certificate"), "{reason}");
        }
        other => panic!("expected CaFileInvalid, got {other:?}"),
    }
    let missing = dir.path().join("missing.pem");
    assert!(matches!(
        twinhub::transport::tls_config(Some(&missing)),
        Err(TransportError::CaFileRead { .. })
    ));
    // The only knob is the CA file: `tls_config` takes nothing else, `build` takes the
    // config it returns, and no verifier can be swapped in through this crate.
}

#[tokio::test]
async fn tls_verification_is_on() {
    // The emulator speaks plain HTTP; a TLS client talking to it fails the handshake and
    // never falls back to plain text.
    let emu = emulator().await;
    let r = &emu["primary"];
    let mut spec = eh_of(&emu, r.key());
    if let twinhub::spec::ProtocolSpec::EventHubs(e) = &mut spec.protocol {
        e.development_emulator = false;
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
    assert!(r.is_empty());
}

#[test]
fn secrets_stay_out_of_debug() {
    let spec = event_hubs("localhost:1", "hub", "rule", "super-secret-key");
    assert!(!format!("{spec:?}").contains("super-secret-key"));
    let t = twinhub::transport::eventhubs::EventHubsTransport::new(
        match &spec.protocol {
            twinhub::spec::ProtocolSpec::EventHubs(e) => e,
            _ => unreachable!(),
        },
        None,
        tls(),
        Duration::from_secs(1),
    )
    .unwrap();
    assert!(!format!("{t:?}").contains("super-secret-key"));
}

/// A self-signed CA certificate (test only; its private key was discarded).
const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBizCCATGgAwIBAgIUahVRyGwMaVnlVlCjS9zpkh8dmhgwCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPdHdpbmh1YiB0ZXN0IENBMCAXDTI2MTEyMjE3MjkyMloYDzIx
MjYxMDI5MTcyOTIyWjAaMRgwFgYDVQQDDA90d2luaHViIHRlc3QgQ0EwWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAAQSbdZ4Jdjv9MJpCmzBpDJ13dcgeXySUkF4VD2I
89twXKlnG2UHPd4Io/vZ4wPizml7PrCxHR8RejQwcAfBJBsSo1MwUTAdBgNVHQ4E
FgQUEXjFRDTw1R/pTJ0K+j6JLy6BwnwwHwYDVR0jBBgwFoAUEXjFRDTw1R/pTJ0K
+j6JLy6BwnwwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEAj9Dy
vcGO8uIhR9g2g0cTjZgHUmsHqzuWEZEFP99fDqsCIBo5HcLvp/cGoEclW/k9KfYR
g1FSdrXV6f7PPkOzU9HU
-----END CERTIFICATE-----
";
