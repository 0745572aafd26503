//! Mutual TLS for the generic endpoints: MQTT against a real mosquitto with
//! `require_certificate true`, HTTP against an in-process HTTPS server that requires a
//! client certificate from its CA. The PKI is made per run (`TestPki`). Each test checks
//! that the right certificate delivers, and that no certificate or one from another CA
//! delivers nothing: the server never sees a record.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use twinhub::Outcome;
use twinhub::client_cert::ClientCert;
use twinhub::spec::{HttpSpec, MqttSpec, MqttVersion, ProtocolSpec};
use twinhub::transport::{SharedTransport, build_with_timeout, tls_config};
use twinhub_testkit::{Mosquitto, TestPki, collect_ids, device, endpoint, ids, link, records};

const TIMEOUT: Duration = Duration::from_secs(5);

fn cert(pki: &TestPki, which: Option<&str>) -> Option<ClientCert> {
    which.map(|w| {
        ClientCert::from_files(
            &pki.file(&format!("{w}.pem")),
            &pki.file(&format!("{w}.key")),
        )
        .unwrap()
    })
}

fn build(pki: &TestPki, protocol: ProtocolSpec) -> SharedTransport {
    let tls = tls_config(Some(&pki.file("ca.pem"))).unwrap();
    build_with_timeout(
        &endpoint(protocol),
        &link(None),
        &device("dev"),
        tls,
        TIMEOUT,
    )
    .unwrap()
}

fn mqtt(pki: &TestPki, port: u16, which: Option<&str>) -> SharedTransport {
    build(
        pki,
        ProtocolSpec::Mqtt(MqttSpec {
            host: "localhost".into(),
            port,
            tls: true,
            topic: "telemetry/{device_id}".into(),
            version: MqttVersion::V5,
            client_id: None,
            username: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            client_cert: cert(pki, which),
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_with_a_client_certificate_to_mosquitto_requiring_one() {
    let pki = TestPki::new("dev");
    let broker = Mosquitto::start_mutual_tls(&pki);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    collect_ids(broker.second_port().unwrap(), "mtls", move |id| {
        let _ = tx.send(id);
    })
    .await
    .unwrap();

    // Without a certificate, or with one of another CA, mosquitto ends the handshake:
    // nothing is published.
    for (which, epoch) in [(None, 1), (Some("foreign"), 2)] {
        let out = mqtt(&pki, broker.port, which)
            .send(&records("dev", epoch, 0, 1, 8))
            .await;
        assert_eq!(out, Outcome::Unreachable, "{which:?}");
    }
    let batch = records("dev", 3, 0, 5, 16);
    let t = mqtt(&pki, broker.port, Some("client"));
    assert_eq!(t.send(&batch).await, Outcome::Delivered);
    let mut got = Vec::new();
    while got.len() < batch.len() {
        let id = tokio::time::timeout(TIMEOUT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        got.push(id);
    }
    // Only the accepted connection's records arrived (epochs 1 and 2 never did).
    assert_eq!(got, ids(&batch));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err()
    );
}

/// An HTTPS server that requires a client certificate from `pki`'s CA and answers every
/// request 200; counts the requests it answered.
async fn https_server(pki: &TestPki) -> (u16, Arc<AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.file("ca.pem")).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let chain = vec![CertificateDer::from_pem_file(pki.file("server.pem")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(pki.file("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    while read_request(&mut tls).await {
                        count.fetch_add(1, Ordering::SeqCst);
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if tls.write_all(ok).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    (port, answered)
}

/// Reads one request (headers and a `content-length` body); false at the end.
async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => return false,
        }
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_with_a_client_certificate_to_a_server_requiring_one() {
    let pki = TestPki::new("dev");
    let (port, answered) = https_server(&pki).await;
    let http = |which: Option<&str>| {
        build(
            &pki,
            ProtocolSpec::Http(HttpSpec {
                url: format!("https://localhost:{port}/ingest"),
                headers: Vec::new(),
                client_cert: cert(&pki, which),
            }),
        )
    };
    for which in [None, Some("foreign")] {
        let out = http(which).send(&records("dev", 1, 0, 1, 8)).await;
        assert_ne!(out, Outcome::Delivered, "{which:?}");
    }
    assert_eq!(answered.load(Ordering::SeqCst), 0, "a request got through");
    let t = http(Some("client"));
    assert_eq!(
        t.send(&records("dev", 2, 0, 3, 8)).await,
        Outcome::Delivered
    );
    assert_eq!(
        t.send(&records("dev", 2, 3, 3, 8)).await,
        Outcome::Delivered
    );
    assert_eq!(answered.load(Ordering::SeqCst), 2);
}
