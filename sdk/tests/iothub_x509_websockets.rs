//! IoT Hub with X.509 device certificates and over WebSockets, through the emulator's IoT
//! Hub endpoints, configured from TOML the way a user would. The emulator verifies client
//! certificates against its per-run CA and requires the subject CN to be the device id,
//! as IoT Hub's CA-signed device authentication does.

use std::path::Path;
use std::time::Duration;

use twinhub::Outcome;
use twinhub::SdkConfig;
use twinhub::spec::{Bind, IotHubTransport, ProtocolSpec};
use twinhub::transport::{build_with_timeout, tls_config};
use twinhub_emulator::{Emulator, EmulatorConfig, Protocol, Region};
use twinhub_testkit::{device, link, records};

const WAIT: Duration = Duration::from_secs(10);

/// How the device authenticates in a test.
enum Auth<'a> {
    Sas,
    X509 { cert: &'a Path, key: &'a Path },
}

/// The TOML of one IoT Hub endpoint for `dev` on region `r`.
fn config(emu: &Emulator, r: &Region, dev: &str, auth: &Auth<'_>, websockets: bool) -> String {
    // Over WebSockets the connection string names the port only when the emulator could
    // not bind IoT Hub's 443: without one the SDK must pick 443 itself.
    let host = match websockets {
        true if r.iot_hub_websocket_addr().port() != 443 => r.iot_hub_websocket_addr().to_string(),
        true => r.iot_hub_host(),
        false => r.iot_hub_addr().to_string(),
    };
    let (cs, extra) = match auth {
        Auth::Sas => (
            format!(
                "HostName={host};DeviceId={dev};SharedAccessKey={}",
                r.iot_hub_key()
            ),
            String::new(),
        ),
        Auth::X509 { cert, key } => (
            format!("HostName={host};DeviceId={dev};x509=true"),
            format!(
                "client_cert = {:?}\nclient_key = {:?}\n",
                cert.display().to_string(),
                key.display().to_string()
            ),
        ),
    };
    let transport = if websockets {
        "transport = \"websockets\"\n"
    } else {
        ""
    };
    format!(
        "device_id = {dev:?}\nca_file = {:?}\n\n[[endpoint]]\nname = \"hub\"\nprotocol = \"iot-hub\"\n\
         connection_string = {cs:?}\n{extra}{transport}",
        emu.ca_file().display().to_string()
    )
}

async fn send(toml: &str, dev: &str, n: usize) -> Outcome {
    send_over(toml, dev, n, None).await
}

/// [`send`] over a link bound to the local address `bind`.
async fn send_over(toml: &str, dev: &str, n: usize, bind: Option<&str>) -> Outcome {
    let cfg = SdkConfig::from_toml_str(toml).unwrap();
    let tls = tls_config(cfg.ca_file.as_deref()).unwrap();
    let t = build_with_timeout(
        &cfg.endpoints[0],
        &link(bind.map(|ip| Bind::Addr(ip.parse().unwrap()))),
        &device(dev),
        tls,
        Duration::from_secs(5),
    )
    .unwrap();
    t.send(&records(dev, 1, 0, n, 32)).await
}

async fn delivered(r: &Region, dev: &str, n: usize) {
    let want: Vec<String> = (0..n).map(|s| format!("{dev}:1:{s}")).collect();
    let got = r.wait_for_ids(&want, WAIT).await.unwrap();
    assert!(got.iter().all(|x| x.protocol == Protocol::IotHub));
}

async fn start() -> Emulator {
    Emulator::start(EmulatorConfig::with_regions(["primary"]))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_certificate_from_the_hubs_ca_is_accepted() {
    let emu = start().await;
    let r = &emu["primary"];
    let dev = r.iot_hub_device().to_string();
    let auth = Auth::X509 {
        cert: r.iot_hub_device_cert_file(),
        key: r.iot_hub_device_key_file(),
    };
    let toml = config(&emu, r, &dev, &auth, false);
    assert_eq!(send(&toml, &dev, 3).await, Outcome::Delivered);
    delivered(r, &dev, 3).await;
    assert_eq!(r.iot_hub_events().count("connected"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_device_is_refused_with_connack_5() {
    let emu = start().await;
    let r = &emu["primary"];
    let dir = tempfile::tempdir().unwrap();
    // Issued by the hub's own CA, but for another id: CN must equal the client id.
    let other = emu.issue_device_cert("someone-else").unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, &other.cert_pem).unwrap();
    std::fs::write(&key, &other.key_pem).unwrap();
    let auth = Auth::X509 {
        cert: &cert,
        key: &key,
    };
    let toml = config(&emu, r, "meter-9", &auth, false);
    assert_eq!(send(&toml, "meter-9", 1).await, Outcome::Unauthorized);
    assert_eq!(
        r.iot_hub_events()
            .wait_for("connack-5-x509-cn", 1, WAIT)
            .await,
        1
    );
    assert!(r.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_fails_the_handshake() {
    let emu = start().await;
    let r = &emu["primary"];
    let dev = r.iot_hub_device().to_string();
    let dir = tempfile::tempdir().unwrap();
    // Right CN, wrong issuer: a self-signed certificate the hub never trusted.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, dev.as_str());
    let cert = params.self_signed(&key).unwrap();
    let (cert_file, key_file) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let auth = Auth::X509 {
        cert: &cert_file,
        key: &key_file,
    };
    let toml = config(&emu, r, &dev, &auth, false);
    // Nothing was written: the connection never got past TLS.
    assert_eq!(send(&toml, &dev, 1).await, Outcome::Unreachable);
    // The client sees the hub's alert before the hub's handshake returns and counts it.
    let closed = r.iot_hub_events().wait_for("closed-tls", 1, WAIT);
    assert_eq!(closed.await, 1);
    assert_eq!(r.iot_hub_events().count("connected"), 0);
    assert!(r.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_deliver_with_sas_and_with_x509() {
    let emu = start().await;
    let r = &emu["primary"];
    eprintln!(
        "IoT Hub WebSockets endpoint: {}",
        r.iot_hub_websocket_addr()
    );
    let toml = config(&emu, r, "ws-sas", &Auth::Sas, true);
    let cfg = SdkConfig::from_toml_str(&toml).unwrap();
    let ProtocolSpec::IotHub(spec) = &cfg.endpoints[0].protocol else {
        panic!("not IoT Hub")
    };
    assert_eq!(spec.transport, IotHubTransport::WebSockets);
    assert_eq!(spec.port, r.iot_hub_websocket_addr().port());
    assert_eq!(send(&toml, "ws-sas", 2).await, Outcome::Delivered);
    delivered(r, "ws-sas", 2).await;

    let dev = r.iot_hub_device().to_string();
    let auth = Auth::X509 {
        cert: r.iot_hub_device_cert_file(),
        key: r.iot_hub_device_key_file(),
    };
    let toml = config(&emu, r, &dev, &auth, true);
    assert_eq!(send(&toml, &dev, 2).await, Outcome::Delivered);
    delivered(r, &dev, 2).await;
    assert_eq!(r.iot_hub_events().count("connected"), 2);
    // Both came through the WebSocket listener.
    assert_eq!(r.iot_hub_events().count("websocket-upgraded"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_check_credentials_like_mqtt() {
    let emu = start().await;
    let r = &emu["primary"];
    let toml = config(&emu, r, "ws-sas", &Auth::Sas, true).replace(r.iot_hub_key(), "b3RoZXI=");
    assert_eq!(send(&toml, "ws-sas", 1).await, Outcome::Unauthorized);
    let refused = r
        .iot_hub_events()
        .wait_for("connack-5-sas-signature", 1, WAIT);
    assert_eq!(refused.await, 1);
    assert!(r.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_with_x509_over_a_bound_source_address() {
    let emu = start().await;
    let r = &emu["primary"];
    let dev = r.iot_hub_device().to_string();
    let auth = Auth::X509 {
        cert: r.iot_hub_device_cert_file(),
        key: r.iot_hub_device_key_file(),
    };
    let toml = config(&emu, r, &dev, &auth, true);
    // The link's local address goes through the transport's tunnel; TLS and the
    // WebSocket run end to end inside it.
    r.set_fault_for("127.0.0.3".parse().unwrap(), twinhub_emulator::Fault::Down);
    assert_eq!(
        send_over(&toml, &dev, 1, Some("127.0.0.3")).await,
        Outcome::Unreachable
    );
    assert_eq!(
        send_over(&toml, &dev, 2, Some("127.0.0.2")).await,
        Outcome::Delivered
    );
    delivered(r, &dev, 2).await;
    assert_eq!(r.iot_hub_events().count("websocket-upgraded"), 1);
}
