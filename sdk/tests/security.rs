//! Security properties: secrets (SAS keys, the tokens signed from them, MQTT passwords,
//! HTTP header values) never appear in `Debug` output, in errors or in log output, and no
//! configuration key turns TLS verification off.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use twinhub::SdkConfig;
use twinhub::config::connstr::{parse_event_hubs, parse_iot_hub};
use twinhub::config::{ConfigError, ErrorKind};
use twinhub::spec::{ProtocolSpec, Secret};
use twinhub::transport::eventhubs::EventHubsTransport;
use twinhub::transport::http::HttpTransport;
use twinhub::transport::iothub::iot_hub_transport;
use twinhub::transport::kafka::KafkaTransport;
use twinhub::transport::mqtt::MqttTransport;
use twinhub::transport::{TransportError, limits, tls_config};
use twinhub::{DeviceId, Producer};
use twinhub_core::sas::{ParsedToken, SasKey};

/// Event Hubs SAS key (used as text).
const EH_KEY: &str = "ehKeyDoNotLog4b1c9Qx7ZmV5Zm9v";
/// IoT Hub device key (base64 of `IOT_KEY_DECODED`).
const IOT_KEY: &str = "aW90LWRldmljZS1rZXktZG8tbm90LWxvZy03ZjNh";
const IOT_KEY_DECODED: &str = "iot-device-key-do-not-log-7f3a";
const MQTT_PASSWORD: &str = "mqtt-password-do-not-log-51e0";
const HTTP_TOKEN: &str = "http-token-do-not-log-c7d2";
const SECRETS: [&str; 5] = [EH_KEY, IOT_KEY, IOT_KEY_DECODED, MQTT_PASSWORD, HTTP_TOKEN];

/// Panics if `text` (the `what` of something) shows any secret.
fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows the secret {s:?}:\n{text}");
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<SdkConfig, ConfigError> {
    SdkConfig::from_toml_str_with_env(text, no_env)
}

/// A port nothing listens on, held (bound, never listening) for the whole test binary so
/// no other process can start listening there.
fn closed_port() -> u16 {
    static CLOSED: OnceLock<twinhub_testkit::ClosedPort> = OnceLock::new();
    CLOSED.get_or_init(twinhub_testkit::ClosedPort::new).port()
}

/// A configuration with a secret for every protocol: Event Hubs at `eh_port` (plain HTTP,
/// as for the emulator), IoT Hub, MQTT and HTTP at a closed port, and a costly link
/// without a budget (which is logged).
fn config_text(eh_port: u16, closed: u16, outbox: Option<&Path>) -> String {
    let outbox = outbox.map_or_else(String::new, |p| {
        format!(
            "[outbox]\npath = {:?}\nfsync = \"off\"\n",
            p.display().to_string()
        )
    });
    format!(
        r#"device_id = "sec-dev"
routing = "mirror"
{outbox}
[[endpoint]]
name = "eh"
protocol = "event-hubs"
connection_string = "Endpoint=sb://127.0.0.1:{eh_port}/;SharedAccessKeyName=send;SharedAccessKey={EH_KEY};EntityPath=telemetry;UseDevelopmentEmulator=true"

[[endpoint]]
name = "hub"
protocol = "iot-hub"
connection_string = "HostName=127.0.0.1:{closed};DeviceId=sec-dev;SharedAccessKey={IOT_KEY};UseDevelopmentEmulator=true"

[[endpoint]]
name = "broker"
protocol = "mqtt"
url = "mqtt://127.0.0.1:{closed}"
topic = "t/{{device_id}}"
username = "user"
password = "{MQTT_PASSWORD}"

[[endpoint]]
name = "web"
protocol = "http"
url = "http://127.0.0.1:{closed}/ingest"
[endpoint.headers]
Authorization = "Bearer {HTTP_TOKEN}"

[[link]]
name = "wan"
cost = "free"

[[link]]
name = "sat"
cost = "costly"
"#
    )
}

/// Every byte logged through `tracing` by this test binary, from its first use on.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// Installs a process-wide subscriber at TRACE level (global, so the driver's tasks on
/// any thread are captured too) and returns its buffer.
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
        captured
    })
}

/// A minimal HTTP/1.1 server that answers every request `201 Created` and keeps each
/// `Authorization` header it sees: the SAS tokens the producer really sent.
async fn token_catcher() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let seen = tokens.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request: its head, then a body of Content-Length bytes.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                    let mut body_len = 0;
                    for (name, value) in head.lines().filter_map(|l| l.split_once(':')) {
                        if name.eq_ignore_ascii_case("authorization") {
                            seen.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(value.trim().to_owned());
                        } else if name.eq_ignore_ascii_case("content-length") {
                            body_len = value.trim().parse().unwrap_or(0);
                        }
                    }
                    while buf.len() < head_end + body_len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + body_len);
                    let reply = b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n";
                    if sock.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, tokens)
}

#[test]
fn config_and_spec_debug_hide_every_secret() {
    let config = parse(&config_text(1, 2, None)).expect("the config parses");
    // The secrets are really in there.
    let mut exposed = Vec::new();
    for e in &config.endpoints {
        match &e.protocol {
            ProtocolSpec::EventHubs(s) => exposed.push(s.key.expose().to_owned()),
            ProtocolSpec::IotHub(s) => exposed.push(s.key.expose().to_owned()),
            ProtocolSpec::Mqtt(s) => exposed.extend(s.password.as_ref().map(|p| p.expose().into())),
            ProtocolSpec::Http(s) => exposed.extend(s.headers.iter().map(|h| h.1.expose().into())),
            ProtocolSpec::Kafka(s) => {
                exposed.extend(s.sasl.as_ref().map(|a| a.password.expose().into()))
            }
        }
        assert_no_secret("EndpointSpec Debug", &format!("{e:?}"));
        assert_no_secret("ProtocolSpec Debug", &format!("{:#?}", e.protocol));
    }
    assert_eq!(
        exposed,
        [
            EH_KEY,
            IOT_KEY,
            MQTT_PASSWORD,
            &format!("Bearer {HTTP_TOKEN}")
        ]
    );
    assert_no_secret("SdkConfig Debug", &format!("{config:?}"));
    assert_no_secret("SdkConfig pretty Debug", &format!("{config:#?}"));
    assert_no_secret(
        "ProducerBuilder Debug",
        &format!("{:?}", Producer::builder(config)),
    );

    let secret = Secret::new(EH_KEY);
    assert_eq!(format!("{secret}"), "<redacted>");
    assert_no_secret("Secret Debug", &format!("{secret:?}"));
}

#[test]
fn connection_string_types_and_errors_hide_the_key() {
    let eh = parse_event_hubs(&format!(
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey={EH_KEY};EntityPath=t"
    ))
    .expect("parses");
    assert_eq!(eh.key.expose(), EH_KEY);
    assert_no_secret("EventHubsSpec Debug", &format!("{eh:?}"));
    let hub = parse_iot_hub(&format!(
        "HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey={IOT_KEY}"
    ))
    .expect("parses");
    assert_eq!(hub.key.expose(), IOT_KEY);
    assert_no_secret("IotHubSpec Debug", &format!("{hub:?}"));

    // Refused strings holding a key: the error never quotes any part of them.
    let refused = [
        parse_event_hubs(&format!(
            "Endpoint=nonsense;SharedAccessKeyName=n;SharedAccessKey={EH_KEY};EntityPath=t"
        ))
        .err(),
        parse_event_hubs(&format!("SharedAccessKey={EH_KEY}")).err(),
        parse_event_hubs(&format!("SharedAccessKey=x;SharedAccessKey={EH_KEY}")).err(),
        parse_event_hubs(EH_KEY).err(),
        parse_iot_hub(&format!(
            "HostName=h;DeviceId=d;SharedAccessKey=not base64 {IOT_KEY_DECODED}"
        ))
        .err(),
        parse_iot_hub(&format!(
            "HostName=h:99999;DeviceId=d;SharedAccessKey={IOT_KEY}"
        ))
        .err(),
    ];
    for e in refused {
        let e = e.expect("refused");
        assert_no_secret("ConnStrError", &format!("{e} {e:?}"));
    }

    // The same through the config loader, which adds the key path and line.
    let head = "device_id = \"d\"\n[[endpoint]]\nname = \"e\"\n";
    let bad_configs = [
        format!(
            "{head}protocol = \"event-hubs\"\nconnection_string = \"Endpoint=x;SharedAccessKey={EH_KEY}\"\n"
        ),
        format!(
            "{head}protocol = \"iot-hub\"\nconnection_string = \"HostName=h;DeviceId=d;SharedAccessKey={IOT_KEY_DECODED}!\"\n"
        ),
        format!(
            "{head}protocol = \"mqtt\"\nurl = \"mqtts://user:{MQTT_PASSWORD}@broker:8883\"\ntopic = \"t\"\n"
        ),
        format!(
            "{head}protocol = \"mqtt\"\nurl = \"mqtts://b:8883\"\ntopic = \"t\"\npassword = [\"{MQTT_PASSWORD}\"]\n"
        ),
        format!(
            "{head}protocol = \"mqtt\"\nurl = \"mqtts://b:8883\"\ntopic = \"t\"\npassword = \"{MQTT_PASSWORD}\"\npassword_env = \"X\"\n"
        ),
        format!(
            "{head}protocol = \"http\"\nurl = \"https://i.example/\"\n[endpoint.headers]\nAuthorization = \"{HTTP_TOKEN}\\r\\nX: y\"\n"
        ),
        format!("{head}protocol = \"event-hubs\"\nconnection_string = [\"{EH_KEY}\"]\n"),
    ];
    for text in &bad_configs {
        let e = parse(text).expect_err(text);
        assert_no_secret("ConfigError", &format!("{e} {e:?}"));
    }
}

#[tokio::test]
async fn transports_and_producer_debug_hide_every_secret() {
    let config = parse(&config_text(closed_port(), closed_port(), None)).expect("parses");
    let tls = tls_config(None).expect("tls");
    let timeout = Duration::from_secs(2);
    let device = DeviceId::new("sec-dev").expect("device id");
    for e in &config.endpoints {
        let shown = match &e.protocol {
            ProtocolSpec::EventHubs(s) => {
                format!(
                    "{:?}",
                    EventHubsTransport::new(s, None, tls.clone(), timeout).expect("builds")
                )
            }
            ProtocolSpec::IotHub(s) => format!(
                "{:?}",
                iot_hub_transport(s, None, tls.clone(), timeout, limits(e)).expect("builds")
            ),
            ProtocolSpec::Mqtt(s) => format!(
                "{:?}",
                MqttTransport::new(s, &device, None, tls.clone(), timeout, limits(e))
                    .expect("builds")
            ),
            ProtocolSpec::Http(s) => {
                format!(
                    "{:?}",
                    HttpTransport::new(s, None, tls.clone(), timeout).expect("builds")
                )
            }
            ProtocolSpec::Kafka(s) => format!(
                "{:?}",
                KafkaTransport::new(s, &device, None, tls.clone(), timeout).expect("builds")
            ),
        };
        assert_no_secret(&format!("transport of {}", e.name), &shown);
    }
    let producer = Producer::builder(config).build().await.expect("builds");
    assert_no_secret("Producer Debug", &format!("{producer:?}"));
    let _ = producer.shutdown(Duration::from_millis(100)).await;
}

/// Builds the transport of every endpoint in `config`.
fn build_all(config: &SdkConfig) -> Vec<(String, Result<(), TransportError>)> {
    let tls = tls_config(None).expect("tls");
    let timeout = Duration::from_secs(2);
    let device = DeviceId::new("sec-dev").expect("device id");
    config
        .endpoints
        .iter()
        .map(|e| {
            let built = match &e.protocol {
                ProtocolSpec::EventHubs(s) => {
                    EventHubsTransport::new(s, None, tls.clone(), timeout).map(drop)
                }
                ProtocolSpec::IotHub(s) => {
                    iot_hub_transport(s, None, tls.clone(), timeout, limits(e)).map(drop)
                }
                ProtocolSpec::Mqtt(s) => {
                    MqttTransport::new(s, &device, None, tls.clone(), timeout, limits(e)).map(drop)
                }
                ProtocolSpec::Http(s) => {
                    HttpTransport::new(s, None, tls.clone(), timeout).map(drop)
                }
                ProtocolSpec::Kafka(s) => {
                    KafkaTransport::new(s, &device, None, tls.clone(), timeout).map(drop)
                }
            };
            (e.name.clone(), built)
        })
        .collect()
}

#[tokio::test]
async fn credentials_never_go_in_plain_text_off_this_host() {
    // The same endpoints, plain text, on a host that is not this machine.
    let text =
        config_text(closed_port(), closed_port(), None).replace("127.0.0.1", "hub.example.net");
    let config = parse(&text).expect("parses");
    for (name, built) in build_all(&config) {
        let e = built.expect_err(&name);
        assert!(
            matches!(&e, TransportError::PlaintextCredentials { host, .. } if host.starts_with("hub.example.net")),
            "{name}: {e:?}"
        );
        assert!(e.to_string().contains("plain text"), "{e}");
        assert_no_secret("PlaintextCredentials", &format!("{e} {e:?}"));
    }
    // Loopback in every spelling stays allowed: local emulators and brokers.
    for host in ["localhost", "[::1]", "127.0.0.9"] {
        let config =
            parse(&config_text(closed_port(), closed_port(), None).replace("127.0.0.1", host))
                .expect("parses");
        for (name, built) in build_all(&config) {
            assert!(built.is_ok(), "{name} on {host}: {built:?}");
        }
    }
    // Without credentials, or over TLS, any host is fine.
    let open = parse(
        "device_id = \"d\"\n[[endpoint]]\nname = \"m\"\nprotocol = \"mqtt\"\n\
         url = \"mqtt://broker.lan:1883\"\ntopic = \"t\"\n\
         [[endpoint]]\nname = \"h\"\nprotocol = \"http\"\nurl = \"http://collector.lan/in\"\n\
         [[endpoint]]\nname = \"s\"\nprotocol = \"mqtt\"\nurl = \"mqtts://broker.example.net\"\n\
         topic = \"t\"\nusername = \"u\"\npassword = \"p\"\n",
    )
    .expect("parses");
    for (name, built) in build_all(&open) {
        assert!(built.is_ok(), "{name}: {built:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_show_keys_or_signed_tokens() {
    let logs = logs();
    let (eh_port, tokens) = token_catcher().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config =
        parse(&config_text(eh_port, closed_port(), Some(dir.path()))).expect("the config parses");
    let producer = Producer::builder(config)
        .request_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("the producer builds");
    for i in 0..3 {
        producer
            .send(format!("reading {i}"))
            .await
            .expect("accepted");
    }
    // Mirror routing sends every record to every endpoint: Event Hubs delivers (signing a
    // token), the others fail to connect and log it. Wait until the failures are logged.
    const FAILURES: [&str; 2] = ["mqtt connect failed", "http request failed"];
    for _ in 0..100 {
        let text = logs.text();
        let sent = !tokens.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
        if sent && FAILURES.iter().all(|f| text.contains(f)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = producer.shutdown(Duration::from_millis(200)).await;
    drop(producer);

    let text = logs.text();
    // The failure lines, which are where a secret would leak, really were logged: without
    // them the secret check below would pass on logs that never held the risky lines.
    for line in FAILURES {
        assert!(text.contains(line), "no {line:?} in the log:\n{text}");
    }
    // The capture works: the loader's and the builder's own lines are there.
    assert!(text.contains("costly link has no budget"), "{text}");
    assert!(text.contains("outbox recovered"), "{text}");
    assert_no_secret("log output", &text);

    let tokens = tokens.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        !tokens.is_empty(),
        "no request reached the Event Hubs endpoint"
    );
    for token in &tokens {
        let parsed = ParsedToken::parse(token).expect("a SAS token");
        // A real token signed with the key, so its signature is worth stealing.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        parsed
            .verify(&SasKey::Text(EH_KEY), now)
            .expect("signed with the key");
        assert!(parsed.signature.len() >= 40, "{token}");
        assert!(
            !text.contains(parsed.signature),
            "the log shows a token's sig:\n{text}"
        );
        let decoded = parsed
            .signature
            .replace("%2B", "+")
            .replace("%2F", "/")
            .replace("%3D", "=");
        assert!(
            !text.contains(&decoded),
            "the log shows a token's signature:\n{text}"
        );
    }
}

/// Keys people reach for to turn certificate checks off, at every level of the file.
#[test]
fn no_config_key_turns_tls_verification_off() {
    const KEYS: [&str; 8] = [
        "insecure",
        "danger_accept_invalid_certs",
        "accept_invalid_certs",
        "tls_verify",
        "verify_tls",
        "insecure_skip_verify",
        "skip_verify",
        "tls",
    ];
    let endpoint = "[[endpoint]]\nname = \"m\"\nprotocol = \"mqtt\"\nurl = \"mqtts://broker.example:8883\"\ntopic = \"t\"\n";
    for key in KEYS {
        let places = [
            (
                format!("device_id = \"d\"\n{key} = false\n{endpoint}"),
                String::new(),
                2,
            ),
            (
                format!("device_id = \"d\"\n{endpoint}{key} = true\n"),
                "endpoint[0].".into(),
                7,
            ),
            (
                format!(
                    "device_id = \"d\"\n{endpoint}[[link]]\nname = \"l\"\ncost = \"free\"\n{key} = true\n"
                ),
                "link[0].".into(),
                10,
            ),
            (
                format!("device_id = \"d\"\n[outbox]\n{key} = true\n{endpoint}"),
                "outbox.".into(),
                3,
            ),
        ];
        for (text, prefix, line) in places {
            let e = parse(&text).expect_err(&text);
            assert_eq!(e.kind, ErrorKind::UnknownKey, "{text}\n{e}");
            assert_eq!(
                e.key.as_deref(),
                Some(format!("{prefix}{key}").as_str()),
                "{e}"
            );
            assert_eq!(e.line, Some(line), "{text}\n{e}");
            assert!(
                e.to_string().contains(&format!("unknown key `{key}`")),
                "{e}"
            );
        }
    }
    // A whole table is refused the same way.
    let e = parse(&format!(
        "device_id = \"d\"\n{endpoint}[tls]\nverify = false\n"
    ))
    .expect_err("tls table");
    assert_eq!(e.kind, ErrorKind::UnknownKey, "{e}");
    assert!(e.to_string().contains("unknown key `tls`"), "{e}");

    // Connection strings ignore keys twinhub does not use, as Azure's parsers do: such a
    // key changes nothing, so it cannot turn verification off either.
    let iot = format!("HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey={IOT_KEY}");
    let plain = parse_iot_hub(&iot).expect("parses");
    let with = parse_iot_hub(&format!(
        "{iot};TrustServerCertificate=true;SslVerify=false;Insecure=true"
    ))
    .expect("parses");
    assert_eq!(with, plain);
    assert!(with.tls);

    // And the only TLS setting the transports take is extra roots: the signature of
    // `tls_config` has no other knob.
    let _: fn(Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TransportError> = tls_config;
}

#[test]
fn secret_file_and_env_values_stay_hidden_in_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cs");
    std::fs::write(&file, format!("Endpoint=bad;SharedAccessKey={EH_KEY}\n")).expect("write");
    let head = "device_id = \"d\"\n[[endpoint]]\nname = \"e\"\nprotocol = \"event-hubs\"\n";
    let from_file = format!(
        "{head}connection_string_file = {:?}\n",
        file.display().to_string()
    );
    let e = parse(&from_file).expect_err("bad connection string");
    assert_no_secret("ConfigError from a secret file", &format!("{e} {e:?}"));
    let env = |_: &str| Some(format!("Endpoint=bad;SharedAccessKey={EH_KEY}"));
    let e =
        SdkConfig::from_toml_str_with_env(&format!("{head}connection_string_env = \"CS\"\n"), env)
            .expect_err("bad connection string");
    assert_no_secret(
        "ConfigError from an environment variable",
        &format!("{e} {e:?}"),
    );
}
