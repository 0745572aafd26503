//! The Kafka transport against librdkafka's mock cluster, read back by `kcat`: records,
//! keys, headers and partitions as an independent consumer sees them, and how failures
//! map to outcomes. Skipped (with a note) where `kcat` is not installed.

use twinhub_testkit as transport_util;
use twinhub_testkit::kafka as kafka_util;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use kafka_util::{MockCluster, kcat_available};
use twinhub::config::ErrorKind;
use twinhub::spec::{KafkaCompression, KafkaSasl, KafkaSpec, ProtocolSpec, SaslMechanism, Secret};
use twinhub::transport::kafka::{KafkaTransport, partition_for};
use twinhub::transport::{Transport, TransportError};
use twinhub::{Outcome, SdkConfig};

fn spec(bootstrap: &str, topic: &str) -> KafkaSpec {
    KafkaSpec {
        bootstrap: bootstrap
            .split(',')
            .map(|a| {
                let (h, p) = a.rsplit_once(':').expect("host:port");
                (h.to_string(), p.parse().expect("port"))
            })
            .collect(),
        topic: topic.into(),
        tls: false,
        sasl: None,
        compression: KafkaCompression::None,
        client_id: None,
        event_hubs: false,
    }
}

fn transport(spec: &KafkaSpec, device: &str, timeout: Duration) -> KafkaTransport {
    KafkaTransport::new(
        spec,
        &transport_util::device(device),
        None,
        transport_util::tls(),
        timeout,
    )
    .expect("builds")
}

macro_rules! need_kcat {
    () => {
        if !kcat_available() {
            eprintln!("skipped: kcat is not installed (apt-get install kcat)");
            return;
        }
    };
}

#[tokio::test]
async fn records_arrive_keyed_with_id_class_and_properties_on_the_kafka_partition() {
    need_kcat!();
    for compression in [KafkaCompression::None, KafkaCompression::Gzip] {
        let cluster = MockCluster::start("telemetry", 3);
        let mut s = spec(&cluster.bootstrap, "telemetry");
        s.compression = compression;
        let t = transport(&s, "sensor-0001", Duration::from_secs(5));
        let mut sent = Vec::new();
        for batch in 0..5u64 {
            let records = transport_util::records("sensor-0001", 7, batch * 100, 100, 64);
            assert_eq!(t.send(&records).await, Outcome::Delivered);
            sent.extend(transport_util::ids(&records));
        }
        let got = cluster.read_all();
        assert_eq!(got.len(), sent.len(), "{compression:?}");
        let want_partition = partition_for(b"sensor-0001", 4);
        for r in &got {
            assert_eq!(r.key, "sensor-0001");
            assert_eq!(r.partition, want_partition);
            assert_eq!(r.headers.get("class").map(String::as_str), Some("normal"));
            assert_eq!(r.headers.get("unit").map(String::as_str), Some("C"));
            assert!(r.value.starts_with("reading "), "{r:?}");
        }
        // In order, each once: one transmit is one batch, appended whole.
        let ids: Vec<&str> = got.iter().filter_map(|r| r.id()).collect();
        assert_eq!(ids, sent.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

/// librdkafka's `murmur2` partitioner is Java-compatible: keys it places must land where
/// ours would.
#[test]
fn partitions_agree_with_librdkafkas_murmur2_partitioner() {
    need_kcat!();
    let cluster = MockCluster::start("placement", 1);
    let keys: Vec<String> = (0..40).map(|i| format!("sensor-{i:04}")).collect();
    let mut child = Command::new("kcat")
        .args([
            "-P",
            "-b",
            &cluster.bootstrap,
            "-t",
            "placement",
            "-K",
            "\t",
        ])
        .args(["-X", "partitioner=murmur2"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat -P");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        for k in &keys {
            writeln!(stdin, "{k}\tv").expect("write");
        }
    }
    assert!(child.wait().expect("kcat -P ends").success());
    let got = cluster.read_all();
    assert_eq!(got.len(), keys.len());
    let mut partitions = BTreeSet::new();
    for r in got {
        assert_eq!(r.partition, partition_for(r.key.as_bytes(), 4), "{}", r.key);
        partitions.insert(r.partition);
    }
    assert!(partitions.len() > 1, "the keys spread over partitions");
}

#[tokio::test]
async fn failures_map_to_outcomes() {
    need_kcat!();
    let records = transport_util::records("dev-f", 1, 0, 3, 16);
    let mut cluster = MockCluster::start("telemetry", 1);

    // (A topic the cluster lacks would be a ServerError, but the mock cluster creates any
    // topic it is asked about, whatever the request says; unit tests cover that mapping.)

    // Blackholed (SIGSTOP) after the connection is up: the request was written, no
    // answer came: ambiguous.
    let t = transport(
        &spec(&cluster.bootstrap, "telemetry"),
        "dev-f",
        Duration::from_millis(800),
    );
    assert_eq!(t.send(&records).await, Outcome::Delivered);
    cluster.stop().expect("SIGSTOP");
    // Only the transport's own request timeout can end this send: a bound far above it
    // catches a send that hangs, without timing the machine.
    let blackholed = tokio::time::timeout(Duration::from_secs(60), t.send(&records)).await;
    assert_eq!(
        blackholed,
        Ok(Outcome::Timeout),
        "the request timeout ends the send"
    );
    // A fresh transport cannot even finish its handshake: nothing left, unreachable.
    let fresh = transport(
        &spec(&cluster.bootstrap, "telemetry"),
        "dev-f",
        Duration::from_millis(800),
    );
    assert_eq!(fresh.send(&records).await, Outcome::Unreachable);
    cluster.cont().expect("SIGCONT");

    // Killed: connections are refused.
    cluster.kill();
    assert_eq!(t.send(&records).await, Outcome::Unreachable);
    t.reset();
    assert_eq!(t.send(&records).await, Outcome::Unreachable);
    assert_eq!(t.send(&[]).await, Outcome::Delivered);
}

#[test]
fn sasl_and_tls_settings_are_checked_and_secrets_hidden() {
    let mut s = spec("kafka.example.net:9092", "telemetry");
    s.sasl = Some(KafkaSasl {
        mechanism: SaslMechanism::ScramSha512,
        username: "fleet".into(),
        password: Secret::new("hunter2-secret"),
    });
    let device = transport_util::device("d");
    // SASL in plain text off this machine is refused; with TLS it builds.
    let e = KafkaTransport::new(
        &s,
        &device,
        None,
        transport_util::tls(),
        Duration::from_secs(1),
    )
    .expect_err("plain text SASL");
    assert!(
        matches!(e, TransportError::PlaintextCredentials { .. }),
        "{e}"
    );
    s.tls = true;
    let t = KafkaTransport::new(
        &s,
        &device,
        None,
        transport_util::tls(),
        Duration::from_secs(1),
    )
    .expect("TLS SASL builds");
    let shown = format!("{t:?} {s:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("SCRAM-SHA-512"), "{shown}");
    // A loopback broker may take SASL without TLS (a local test broker).
    let mut local = s.clone();
    local.tls = false;
    local.bootstrap = vec![("127.0.0.1".into(), 9092)];
    assert!(
        KafkaTransport::new(
            &local,
            &device,
            None,
            transport_util::tls(),
            Duration::from_secs(1)
        )
        .is_ok()
    );
}

/// TLS with verification: a broker whose certificate no root vouches for is unreachable,
/// never trusted.
#[tokio::test]
async fn tls_to_an_unverified_broker_is_unreachable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        // Answers the TLS hello with garbage, as a plain-text broker would.
        while let Ok((mut s, _)) = listener.accept().await {
            use tokio::io::AsyncWriteExt as _;
            let _ = s.write_all(&[0, 0, 0, 4, 0, 0, 0, 1]).await;
        }
    });
    let mut s = spec(&format!("localhost:{port}"), "telemetry");
    s.tls = true;
    let t = transport(&s, "dev-tls", Duration::from_secs(2));
    let records = transport_util::records("dev-tls", 1, 0, 1, 8);
    assert_eq!(t.send(&records).await, Outcome::Unreachable);
}

#[test]
fn config_reads_kafka_endpoints_and_names_mistakes() {
    let base = r#"device_id = "d"
[[endpoint]]
name = "east"
protocol = "kafka"
bootstrap = "k1.example:9093, k2.example"
topic = "telemetry"
security_protocol = "sasl_ssl"
sasl_mechanism = "scram-sha-256"
username = "fleet"
password_env = "KAFKA_PW"
compression = "gzip"
"#;
    let env = |v: &str| (v == "KAFKA_PW").then(|| "s3cret".to_string());
    let c = SdkConfig::from_toml_str_with_env(base, env).expect("parses");
    let ProtocolSpec::Kafka(k) = &c.endpoints[0].protocol else {
        panic!("kafka")
    };
    assert_eq!(
        k.bootstrap,
        [
            ("k1.example".to_string(), 9093),
            ("k2.example".to_string(), 9092)
        ]
    );
    assert!(k.tls && !k.event_hubs);
    assert_eq!(k.compression, KafkaCompression::Gzip);
    let sasl = k.sasl.as_ref().expect("sasl");
    assert_eq!(sasl.mechanism, SaslMechanism::ScramSha256);
    assert_eq!(sasl.password.expose(), "s3cret");
    assert!(!format!("{c:?}").contains("s3cret"));

    let eh = r#"device_id = "d"
[[endpoint]]
name = "eh"
protocol = "kafka"
connection_string = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=s;SharedAccessKey=k=;EntityPath=tele"
"#;
    let c = SdkConfig::from_toml_str(eh).expect("parses");
    let ProtocolSpec::Kafka(k) = &c.endpoints[0].protocol else {
        panic!("kafka")
    };
    assert_eq!(
        k.bootstrap[0],
        ("ns.servicebus.windows.net".to_string(), 9093)
    );
    assert_eq!(k.topic, "tele");
    assert!(k.event_hubs && k.tls);

    let err = |text: &str| SdkConfig::from_toml_str_with_env(text, env).expect_err("refused");
    let e = err(&base.replace("topic = \"telemetry\"\n", ""));
    assert_eq!(
        (e.kind, e.key.as_deref()),
        (ErrorKind::Missing, Some("endpoint[0].topic"))
    );
    let e = err(&base.replace("\"telemetry\"", "\"bad topic!\""));
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("endpoint[0].topic"), Some(6))
    );
    let e = err(&base.replace("scram-sha-256", "gssapi"));
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("endpoint[0].sasl_mechanism"), Some(8))
    );
    assert!(
        e.message.contains("plain | scram-sha-256 | scram-sha-512"),
        "{e}"
    );
    let e = err(&base.replace("k2.example", "k2.example:99999"));
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("endpoint[0].bootstrap"), Some(5))
    );
    let e = err(&base.replace("username = \"fleet\"\n", ""));
    assert_eq!(e.key.as_deref(), Some("endpoint[0].username"));
    // SASL credentials without a SASL security protocol, and the reverse.
    let e = err(&base.replace("\"sasl_ssl\"", "\"ssl\""));
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("endpoint[0].security_protocol"), Some(7))
    );
    let e = err(&base.replace("security_protocol = \"sasl_ssl\"\n", ""));
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("endpoint[0].security_protocol"), Some(7))
    );
    let e = err(&base.replace("sasl_mechanism = \"scram-sha-256\"\n", ""));
    assert_eq!(
        (e.kind, e.key.as_deref()),
        (ErrorKind::Missing, Some("endpoint[0].sasl_mechanism"))
    );
    let e = err(&base.replace("\"sasl_ssl\"", "\"tls\""));
    assert!(
        e.message
            .contains("plaintext | ssl | sasl_plaintext | sasl_ssl"),
        "{e}"
    );
    let e = err(&format!("{base}weird = 1\n"));
    assert_eq!((e.kind, e.line), (ErrorKind::UnknownKey, Some(12)));
    let e = err(&base.replace("compression = \"gzip\"", "compression = \"zstd\""));
    assert_eq!(e.key.as_deref(), Some("endpoint[0].compression"));
    // Event Hubs takes everything from the connection string, and its size limit holds.
    let e = err(&format!("{eh}topic = \"other\"\n"));
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("endpoint[0].topic"), Some(6))
    );
    let e = err(&format!("{eh}max_batch_bytes = 1046528\n"));
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("endpoint[0].max_batch_bytes"), Some(6))
    );
    assert!(SdkConfig::from_toml_str(&format!("{eh}max_batch_bytes = 1046527\n")).is_ok());
    // Kafka keys on another protocol are mistakes.
    let e = err(
        "device_id = \"d\"\n[[endpoint]]\nname = \"m\"\nprotocol = \"mqtt\"\nurl = \"mqtt://h\"\ntopic = \"t\"\nbootstrap = \"h:1\"\n",
    );
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("endpoint[0].bootstrap"), Some(7))
    );
}
