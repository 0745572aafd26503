//! The IoT Hub endpoint's X.509 device authentication and its WebSocket front door, with
//! raw clients: a certificate from the run's CA whose CN is the client id connects without
//! a password; without a certificate, or with another id, CONNACK 5; a WebSocket upgrade
//! to another path or without the `mqtt` subprotocol is refused before any MQTT.

mod common;

use common::iothub::*;
use rumqttc::mqttbytes::v4::ConnectReturnCode;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use twinhub_emulator::{Emulator, EmulatorConfig, Region};

async fn one_region() -> Emulator {
    Emulator::start(EmulatorConfig::with_regions(["primary"]))
        .await
        .unwrap()
}

fn user(r: &Region, device: &str) -> String {
    format!("{}/{device}/?api-version={API}", r.iot_hub_host())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_whose_cn_is_the_client_id_needs_no_password() {
    let emu = one_region().await;
    let r = &emu["primary"];
    let cert = emu.issue_device_cert("meter-5").unwrap();
    let tls = tls_config_with_cert(emu.ca_pem(), &cert.cert_pem, &cert.key_pem);
    let cases = [
        ("meter-5", ConnectReturnCode::Success),
        ("meter-6", ConnectReturnCode::NotAuthorized),
    ];
    for (client_id, want) in cases {
        let mut hub = Hub::open_with(r, tls.clone()).await.unwrap();
        let code = hub
            .connect(connect_with(client_id, &user(r, client_id), "", 60))
            .await;
        assert_eq!(code, Some(want), "{client_id}");
    }
    let refused = r
        .iot_hub_events()
        .wait_for("connack-5-x509-cn", 1, common::T);
    assert_eq!(refused.await, 1);

    // A certificate and a SAS token: the token is checked, as IoT Hub checks what the
    // CONNECT claims, so a bad one is refused even with a good certificate.
    let mut hub = Hub::open_with(r, tls.clone()).await.unwrap();
    let code = hub
        .connect(connect_with("meter-5", &user(r, "meter-5"), "junk", 60))
        .await;
    assert_eq!(code, Some(ConnectReturnCode::NotAuthorized));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_and_no_certificate_is_connack_5() {
    let emu = one_region().await;
    let r = &emu["primary"];
    let mut hub = Hub::open(&emu, r).await.unwrap();
    let code = hub
        .connect(connect_with("meter-5", &user(r, "meter-5"), "", 60))
        .await;
    assert_eq!(code, Some(ConnectReturnCode::NotAuthorized));
    let refused = r
        .iot_hub_events()
        .wait_for("connack-5-no-credentials", 1, common::T);
    assert_eq!(refused.await, 1);
    assert_eq!(r.iot_hub_events().count("connected"), 0);
}

/// Sends one WebSocket upgrade request for `path` (offering `protocol`, if any) over TLS
/// to the region's WebSocket endpoint; returns the response's status line.
async fn upgrade(emu: &Emulator, r: &Region, path: &str, protocol: Option<&str>) -> String {
    let addr = r.iot_hub_websocket_addr();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = tokio_rustls::TlsConnector::from(tls_config(emu.ca_pem()))
        .connect(name, tcp)
        .await
        .unwrap();
    let offer = protocol.map_or(String::new(), |p| {
        format!("Sec-WebSocket-Protocol: {p}\r\n")
    });
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{offer}\r\n"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 512];
    while !response.windows(2).any(|w| w == b"\r\n") {
        match tokio::time::timeout(common::T, tls.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => response.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&response);
    text.lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_need_iot_hubs_path_and_the_mqtt_subprotocol() {
    let emu = one_region().await;
    let r = &emu["primary"];
    let path = twinhub_emulator::iothub_ws::WEBSOCKET_PATH;
    let status = upgrade(&emu, r, "/mqtt", Some("mqtt")).await;
    assert!(status.contains(" 404"), "{status}");
    let status = upgrade(&emu, r, path, None).await;
    assert!(status.contains(" 400"), "{status}");
    let status = upgrade(&emu, r, path, Some("chat, superchat")).await;
    assert!(status.contains(" 400"), "{status}");
    let refused = r
        .iot_hub_events()
        .wait_for("closed-websocket-upgrade", 3, common::T);
    assert_eq!(refused.await, 3);
    let status = upgrade(&emu, r, path, Some("mqtt")).await;
    assert!(status.contains(" 101"), "{status}");
    let upgraded = r
        .iot_hub_events()
        .wait_for("websocket-upgraded", 1, common::T);
    assert_eq!(upgraded.await, 1);
}
