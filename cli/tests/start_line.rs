//! `twinhub emulator` prints one JSON line with working addresses, then serves until killed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Kills the child even when an assertion fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn prints_one_json_line_with_working_addresses() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_twinhub"))
            .args(["emulator", "--regions", "primary,secondary"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        }),
    )
    .await
    .expect("start line within 30 s")
    .unwrap()
    .unwrap();
    let info: serde_json::Value = serde_json::from_str(&line).unwrap();
    let admin = info["admin"].as_str().unwrap();
    let ca_file = info["ca_file"].as_str().unwrap();
    assert!(
        std::fs::read_to_string(ca_file)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"),
        "ca_file names the run's CA"
    );
    for region in ["primary", "secondary"] {
        let r = &info["regions"][region];
        // IoT Hub: port 8883 of the region's own loopback address, whose IP is the host
        // name of the ready connection string.
        let iot_hub: std::net::SocketAddr = r["iot_hub"].as_str().unwrap().parse().unwrap();
        assert!(
            iot_hub.ip().is_loopback() && iot_hub.port() == 8883,
            "{iot_hub}"
        );
        let iot_cs = r["iot_hub_connection_string"].as_str().unwrap();
        assert!(
            iot_cs.starts_with(&format!(
                "HostName={};DeviceId=twinhub-device;SharedAccessKey=",
                iot_hub.ip()
            )),
            "{iot_cs}"
        );
        assert!(tokio::net::TcpStream::connect(iot_hub).await.is_ok());
        // MQTT over WebSockets on the same address (443, or ephemeral if 443 was refused),
        // and the X.509 device: its connection string, certificate and key files.
        let ws: std::net::SocketAddr = r["iot_hub_websocket"].as_str().unwrap().parse().unwrap();
        assert_eq!(ws.ip(), iot_hub.ip());
        assert!(tokio::net::TcpStream::connect(ws).await.is_ok());
        assert_eq!(
            r["iot_hub_x509_connection_string"],
            format!(
                "HostName={};DeviceId=twinhub-device;x509=true",
                iot_hub.ip()
            )
        );
        for (key, begins) in [
            ("iot_hub_device_cert", "-----BEGIN CERTIFICATE-----"),
            ("iot_hub_device_key", "-----BEGIN PRIVATE KEY-----"),
        ] {
            let file = r[key].as_str().unwrap();
            let pem = std::fs::read_to_string(file).unwrap();
            assert!(pem.starts_with(begins), "{key}: {file}");
        }
        let http = r["http"].as_str().unwrap();
        assert!(r["mqtt"].as_str().unwrap().starts_with("127.0.0.1:"));
        let cs = r["event_hubs_connection_string"].as_str().unwrap();
        assert!(
            cs.starts_with(&format!(
                "Endpoint=sb://{http}/;SharedAccessKeyName=send;SharedAccessKey="
            )),
            "{cs}"
        );
        assert!(
            cs.ends_with(";EntityPath=telemetry;UseDevelopmentEmulator=true"),
            "{cs}"
        );
        // The ingest answers (401 without a token proves it is the real handler).
        let resp = reqwest::Client::new()
            .post(format!("http://{http}/telemetry/messages"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
    let c = reqwest::Client::new();
    let resp = c
        .post(format!("http://{admin}/_admin/regions/primary/fault"))
        .body(r#"{"mode":"http-503"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let http = info["regions"]["primary"]["http"].as_str().unwrap();
    let resp = c
        .post(format!("http://{http}/telemetry/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let stats: serde_json::Value = c
        .get(format!("http://{admin}/_admin/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["regions"]["secondary"]["events"], 0);
}

#[test]
fn bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("emu.toml");
    std::fs::write(&path, "[[region]]\nname = \"p\"\nhttp_prot = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_twinhub"))
        .args(["emulator", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http_prot"), "{err}");
    assert!(out.stdout.is_empty());
}
