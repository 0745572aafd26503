//! Client certificate and IoT Hub transport settings in TOML: what they parse to, and a
//! typed error naming the setting for every mistake (missing file, bad PEM, a key of
//! another certificate, settings that do not go together). Certificates are made per run.

use std::path::{Path, PathBuf};

use twinhub::SdkConfig;
use twinhub::config::{ConfigError, ErrorKind};
use twinhub::spec::{IotHubTransport, ProtocolSpec};

/// A directory with `cert.pem`/`key.pem` (a pair) and `other-key.pem` (another key).
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "d1");
        let cert = p.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("other-key.pem"), other.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("junk.pem"), "not a pem file\n").unwrap();
        Files { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn key_pem(&self) -> String {
        std::fs::read_to_string(self.path("key.pem")).unwrap()
    }
}

fn parse_with(text: &str, env: &[(&str, String)]) -> Result<SdkConfig, ConfigError> {
    SdkConfig::from_toml_str_with_env(text, |var| {
        env.iter().find(|(k, _)| *k == var).map(|(_, v)| v.clone())
    })
}

fn err(text: &str) -> ConfigError {
    match parse_with(text, &[]) {
        Ok(c) => panic!("expected an error, parsed {c:?}"),
        Err(e) => e,
    }
}

fn q(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

const HUB: &str = "HostName=h.azure-devices.net;DeviceId=d1";

fn iot_hub(cs: &str, extra: &str) -> String {
    format!(
        "device_id = \"d1\"\n[[endpoint]]\nname = \"hub\"\nprotocol = \"iot-hub\"\n\
         connection_string = \"{cs}\"\n{extra}"
    )
}

fn mqtt(url: &str, extra: &str) -> String {
    format!(
        "device_id = \"d1\"\n[[endpoint]]\nname = \"m\"\nprotocol = \"mqtt\"\nurl = \"{url}\"\n\
         topic = \"t\"\n{extra}"
    )
}

fn http(url: &str, extra: &str) -> String {
    format!(
        "device_id = \"d1\"\n[[endpoint]]\nname = \"h\"\nprotocol = \"http\"\nurl = \"{url}\"\n{extra}"
    )
}

fn cert_and_key(f: &Files, cert: &str, key: &str) -> String {
    format!(
        "client_cert = {}\nclient_key = {}\n",
        q(&f.path(cert)),
        q(&f.path(key))
    )
}

fn assert_err(e: &ConfigError, kind: ErrorKind, key: &str, says: &str) {
    assert_eq!(e.kind, kind, "{e}");
    assert_eq!(e.key.as_deref(), Some(key), "{e}");
    assert!(e.message.contains(says), "{e} lacks {says:?}");
    assert!(e.line.is_some(), "{e}");
}

#[test]
fn x509_connection_string_with_a_certificate_parses() {
    let f = Files::new();
    let text = iot_hub(
        &format!("{HUB};x509=true"),
        &cert_and_key(&f, "cert.pem", "key.pem"),
    );
    let c = parse_with(&text, &[]).unwrap();
    let ProtocolSpec::IotHub(h) = &c.endpoints[0].protocol else {
        panic!("not IoT Hub")
    };
    assert!(h.x509 && h.client_cert.is_some() && h.key.expose().is_empty());
    assert_eq!((h.port, h.transport), (8883, IotHubTransport::Mqtt));
    // The key never shows.
    assert!(!format!("{c:?}").contains("PRIVATE KEY"));
}

#[test]
fn the_key_may_come_from_the_environment() {
    let f = Files::new();
    let extra = format!(
        "client_cert = {}\nclient_key_env = \"DEVICE_KEY\"\n",
        q(&f.path("cert.pem"))
    );
    let text = iot_hub(&format!("{HUB};x509=true"), &extra);
    parse_with(&text, &[("DEVICE_KEY", f.key_pem())]).unwrap();
    let e = err(&text);
    assert_err(
        &e,
        ErrorKind::Secret,
        "endpoint[0].client_key_env",
        "DEVICE_KEY",
    );
}

#[test]
fn certificate_problems_name_the_setting_and_the_file() {
    let f = Files::new();
    let x509 = format!("{HUB};x509=true");
    let e = err(&iot_hub(&x509, &cert_and_key(&f, "missing.pem", "key.pem")));
    assert_err(
        &e,
        ErrorKind::Invalid,
        "endpoint[0].client_cert",
        "missing.pem",
    );
    let e = err(&iot_hub(&x509, &cert_and_key(&f, "junk.pem", "key.pem")));
    assert_err(
        &e,
        ErrorKind::Invalid,
        "endpoint[0].client_cert",
        "no PEM CERTIFICATE",
    );
    let e = err(&iot_hub(&x509, &cert_and_key(&f, "cert.pem", "junk.pem")));
    assert_err(&e, ErrorKind::Invalid, "endpoint[0].client_key", "junk.pem");
    let e = err(&iot_hub(
        &x509,
        &cert_and_key(&f, "cert.pem", "other-key.pem"),
    ));
    assert_err(
        &e,
        ErrorKind::Invalid,
        "endpoint[0].client_key",
        "does not match",
    );
}

#[test]
fn settings_that_do_not_go_together_are_refused() {
    let f = Files::new();
    let pair = cert_and_key(&f, "cert.pem", "key.pem");
    // x509=true without a certificate, and a certificate with a SAS key.
    let e = err(&iot_hub(&format!("{HUB};x509=true"), ""));
    assert_err(
        &e,
        ErrorKind::Missing,
        "endpoint[0].client_cert",
        "x509=true",
    );
    let e = err(&iot_hub(&format!("{HUB};SharedAccessKey=a2V5"), &pair));
    assert_err(
        &e,
        ErrorKind::Invalid,
        "endpoint[0].client_cert",
        "x509=true",
    );
    // x509=true with a key in the string.
    let e = err(&iot_hub(
        &format!("{HUB};SharedAccessKey=a2V5;x509=true"),
        &pair,
    ));
    assert_err(
        &e,
        ErrorKind::Invalid,
        "endpoint[0].connection_string",
        "x509",
    );
    // A key without a certificate, a certificate without a key, both kinds of key.
    let key_only = format!("client_key = {}\n", q(&f.path("key.pem")));
    let e = err(&mqtt("mqtts://b:8883", &key_only));
    assert_err(
        &e,
        ErrorKind::Missing,
        "endpoint[0].client_cert",
        "client_cert",
    );
    let cert_only = format!("client_cert = {}\n", q(&f.path("cert.pem")));
    let e = err(&mqtt("mqtts://b:8883", &cert_only));
    assert_err(
        &e,
        ErrorKind::Missing,
        "endpoint[0].client_key",
        "client_key_env",
    );
    let both = format!("{pair}client_key_env = \"K\"\n");
    let e = err(&mqtt("mqtts://b:8883", &both));
    assert_err(&e, ErrorKind::Secret, "endpoint[0].client_key", "only one");
    // A certificate without TLS.
    let e = err(&mqtt("mqtt://127.0.0.1:1883", &pair));
    assert_err(
        &e,
        ErrorKind::Invalid,
        "endpoint[0].client_cert",
        "needs TLS",
    );
    let e = err(&http("http://127.0.0.1:8080/in", &pair));
    assert_err(
        &e,
        ErrorKind::Invalid,
        "endpoint[0].client_cert",
        "needs TLS",
    );
    // Settings on protocols they do not apply to.
    let eh = "device_id = \"d1\"\n[[endpoint]]\nname = \"e\"\nprotocol = \"event-hubs\"\n\
              connection_string = \"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=s;SharedAccessKey=k;EntityPath=t\"\n";
    let e = err(&format!("{eh}{pair}"));
    assert_err(
        &e,
        ErrorKind::Invalid,
        "endpoint[0].client_cert",
        "does not apply",
    );
    let e = err(&mqtt("mqtts://b:8883", "transport = \"websockets\"\n"));
    assert_err(
        &e,
        ErrorKind::Invalid,
        "endpoint[0].transport",
        "does not apply",
    );
    let e = err(&iot_hub(
        &format!("{HUB};SharedAccessKey=a2V5"),
        "transport = \"ws\"\n",
    ));
    assert_err(
        &e,
        ErrorKind::Invalid,
        "endpoint[0].transport",
        "websockets",
    );
}

#[test]
fn mutual_tls_for_mqtt_and_http_parses() {
    let f = Files::new();
    let pair = cert_and_key(&f, "cert.pem", "key.pem");
    let c = parse_with(&mqtt("mqtts://b:8883", &pair), &[]).unwrap();
    let ProtocolSpec::Mqtt(m) = &c.endpoints[0].protocol else {
        panic!("not MQTT")
    };
    assert!(m.client_cert.is_some());
    let c = parse_with(&http("https://ingest.example/in", &pair), &[]).unwrap();
    let ProtocolSpec::Http(h) = &c.endpoints[0].protocol else {
        panic!("not HTTP")
    };
    assert!(h.client_cert.is_some());
}

#[test]
fn websockets_use_443_unless_the_host_names_a_port() {
    let sas = format!("{HUB};SharedAccessKey=a2V5");
    let c = parse_with(&iot_hub(&sas, "transport = \"websockets\"\n"), &[]).unwrap();
    let ProtocolSpec::IotHub(h) = &c.endpoints[0].protocol else {
        panic!("not IoT Hub")
    };
    assert_eq!((h.port, h.transport), (443, IotHubTransport::WebSockets));
    let named = "HostName=h.azure-devices.net:8443;DeviceId=d1;SharedAccessKey=a2V5";
    let c = parse_with(&iot_hub(named, "transport = \"websockets\"\n"), &[]).unwrap();
    let ProtocolSpec::IotHub(h) = &c.endpoints[0].protocol else {
        panic!("not IoT Hub")
    };
    assert_eq!(h.port, 8443);
}

#[test]
fn a_spec_built_in_code_is_checked_too() {
    let f = Files::new();
    let text = iot_hub(
        &format!("{HUB};x509=true"),
        &cert_and_key(&f, "cert.pem", "key.pem"),
    );
    let mut c = parse_with(&text, &[]).unwrap();
    let ProtocolSpec::IotHub(h) = &mut c.endpoints[0].protocol else {
        panic!("not IoT Hub")
    };
    h.client_cert = None;
    let e = c.validate().unwrap_err();
    assert_eq!(e.key.as_deref(), Some("endpoint[0].client_cert"), "{e}");
}
