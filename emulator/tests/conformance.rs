//! Conformance: Microsoft's own clients against the emulator. Where they disagree, the
//! emulator is wrong.
//!
//! The clients run in the Python venv `cargo xtask setup` creates next to the build
//! (`{target}/conformance-venv`, with azure-iot-device and azure-eventhub at the versions
//! pinned in xtask). Without the venv these tests say so and pass, except under `CI=true`,
//! where a missing venv fails them: the suite must not be skipped silently there.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use twinhub_emulator::{Emulator, EmulatorConfig, Protocol, Region};

/// The venv's Python, or `None` (after saying why) when the suite may be skipped.
fn python() -> Option<PathBuf> {
    let path = match std::env::var_os("TWINHUB_CONFORMANCE_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => {
            // The test binary is {target}/{profile}/deps/conformance-*.
            let exe = std::env::current_exe().expect("test binary path");
            let target = exe
                .ancestors()
                .nth(3)
                .expect("test binary inside a target directory");
            target.join("conformance-venv/bin/python")
        }
    };
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "conformance venv not found at {}: run `cargo xtask setup` (or set TWINHUB_CONFORMANCE_PYTHON)",
        path.display()
    );
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{why}; under CI the conformance suite must run"
    );
    eprintln!("SKIPPED: {why}");
    None
}

/// Runs the client script with one JSON request; returns its JSON answer.
async fn client(python: &PathBuf, request: Value) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/conformance/azure_clients.py"
    );
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python client");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(request.to_string().as_bytes())
        .await
        .expect("write the request");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("the Python client finished within 90 s")
        .expect("the Python client ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "client answer is not JSON ({e}): stdout {stdout:?}, stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A send request: through a connection string, or (for ids with `;`, which a connection
/// string cannot hold) through host name, device id and key.
fn send_request(emu: &Emulator, r: &Region, device: &str, messages: Value) -> Value {
    let mut req = json!({"op": "send", "ca_file": emu.ca_file(), "messages": messages});
    if device.contains(';') {
        req["hostname"] = json!(r.iot_hub_host());
        req["device_id"] = json!(device);
        req["key"] = json!(r.iot_hub_key());
    } else {
        req["connection_string"] = json!(r.iot_hub_connection_string_for(device));
    }
    req
}

async fn admin_records(emu: &Emulator, region: &str) -> Vec<Value> {
    let url = format!("{}/_admin/regions/{region}/records", emu.admin_url());
    common::client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json::<Vec<Value>>()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_iot_device_sends_ids_and_properties_through_the_run_ca() {
    let Some(py) = python() else { return };
    let emu = Emulator::start_default().await.unwrap();
    for (region, device) in [
        ("primary", "meter-1"),
        ("primary", "meter$7"),
        ("secondary", "meter$7;a.b:c_d-e"),
    ] {
        r_reset_if_needed(&emu, region);
        let r = &emu[region];
        assert_eq!(r.iot_hub_addr().port(), 8883);
        let messages = json!([
            {"body": "{\"t\":21.5}", "id": format!("{device}:1:0"), "content_type": "application/json",
             "properties": {"unit": "C", "odd key": "a&b=c/d+e%f#g"}},
            {"body": "second", "id": format!("{device}:1:1"), "properties": {}},
        ]);
        let answer = client(&py, send_request(&emu, r, device, messages)).await;
        assert_eq!(answer, json!({"sent": 2}), "{region}: {answer}");

        let ids = [format!("{device}:1:0"), format!("{device}:1:1")];
        r.wait_for_ids(&ids, common::T).await.unwrap();
        // Read back through the admin API, as a consumer would.
        let records = admin_records(&emu, region).await;
        let first = records
            .iter()
            .find(|x| x["message_id"] == ids[0].as_str())
            .unwrap();
        assert_eq!(first["protocol"], "iot-hub");
        assert_eq!(first["properties"]["unit"], "C");
        assert_eq!(first["properties"]["odd key"], "a&b=c/d+e%f#g");
        assert_eq!(first["properties"]["$.ct"], "application/json");
        assert_eq!(first["properties"]["iothub-connection-device-id"], device);
        assert_eq!(
            r.records()
                .iter()
                .find(|x| x.message_id.as_deref() == Some(ids[1].as_str()))
                .map(|x| x.body.clone()),
            Some(b"second".to_vec())
        );
        assert!(r.records().iter().all(|x| x.protocol == Protocol::IotHub));
        assert_eq!(r.stats().by_protocol["iot-hub"].unique_ids, 2);
    }
}

/// Each device's check counts only its own records.
fn r_reset_if_needed(emu: &Emulator, region: &str) {
    emu[region].reset();
}

/// Finding: device ids may hold `+` and `#` (IoT Hub's identity rules), but those are MQTT
/// wildcards, and azure-iot-device puts the id in the topic as is (its documented rule:
/// no URL-encoding of ids in topics), so its MQTT library refuses to publish. Such a
/// device connects but cannot send telemetry over MQTT with Microsoft's Python client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_iot_device_cannot_publish_for_ids_with_mqtt_wildcards() {
    let Some(py) = python() else { return };
    let emu = Emulator::start(EmulatorConfig::with_regions(["primary"]))
        .await
        .unwrap();
    let r = &emu["primary"];
    for device in ["meter+1", "meter#1"] {
        let messages = json!([{"body": "x", "id": format!("{device}:1:0")}]);
        let answer = client(&py, send_request(&emu, r, device, messages)).await;
        assert_eq!(answer["error"], "ClientError", "{device}: {answer}");
        assert_eq!(answer["cause"], "ValueError", "{device}: {answer}");
        assert!(
            answer["cause_message"]
                .as_str()
                .unwrap_or("")
                .contains("wildcards"),
            "{answer}"
        );
    }
    // They did connect: the emulator accepts the ids, as IoT Hub does.
    assert_eq!(r.iot_hub_events().count("connected"), 2);
    assert!(r.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_iot_device_is_refused_with_a_bad_key() {
    let Some(py) = python() else { return };
    let emu = Emulator::start(EmulatorConfig::with_regions(["primary"]))
        .await
        .unwrap();
    let r = &emu["primary"];
    let bad = r.iot_hub_connection_string().replace(
        r.iot_hub_key(),
        "b3RoZXIta2V5LW9mLTMyLWJ5dGVzLWxvbmctZW5vdWdoIQ==",
    );
    let answer = client(
        &py,
        json!({"op": "connect", "connection_string": bad, "ca_file": emu.ca_file()}),
    )
    .await;
    assert_eq!(answer["error"], "CredentialError", "{answer}");
    let refused = r
        .iot_hub_events()
        .wait_for("connack-5-sas-signature", 1, common::T);
    assert_eq!(refused.await, 1);
    assert!(r.is_empty());
    // The right key still works afterwards.
    let ok = client(
        &py,
        json!({"op": "connect", "connection_string": r.iot_hub_connection_string(), "ca_file": emu.ca_file()}),
    )
    .await;
    assert_eq!(ok, json!({"connected": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_eventhub_sas_helper_signs_batches_the_rest_endpoint_accepts() {
    let Some(py) = python() else { return };
    let emu = Emulator::start(EmulatorConfig::with_regions(["primary"]))
        .await
        .unwrap();
    let r = &emu["primary"];
    let request = |key: &str| {
        json!({
            "op": "event-hubs",
            "url": common::messages_url(r),
            // What azure-eventhub signs for a producer: sb://{host}/{hub}.
            "audience": format!("sb://{}/{}", r.http_addr(), r.event_hub()),
            "policy": r.key_name(),
            "key": key,
            "batch": [{"Body": "eh", "UserProperties": {"message-id": "eh:1:0", "unit": "C"}}],
        })
    };
    let answer = client(&py, request(r.key())).await;
    assert_eq!(answer["status"], 201, "{answer}");
    let got = r.wait_for_ids(&["eh:1:0"], common::T).await.unwrap();
    assert_eq!(got[0].properties["unit"], "C");
    let refused = client(&py, request("not-the-key")).await;
    assert_eq!(refused["status"], 401, "{refused}");
    assert_eq!(r.len(), 1);
}

/// A send of one message `{device}:1:0` with Microsoft's client, authenticated with the
/// certificate and key in `cert`/`key`.
fn x509_request(emu: &Emulator, r: &Region, device: &str, cert: &Path, key: &Path) -> Value {
    json!({
        "op": "send",
        "ca_file": emu.ca_file(),
        "hostname": r.iot_hub_host(),
        "device_id": device,
        "x509": {"cert_file": cert, "key_file": key},
        "messages": [{"body": "x509", "id": format!("{device}:1:0")}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_iot_device_authenticates_with_a_ca_signed_device_certificate() {
    let Some(py) = python() else { return };
    let emu = Emulator::start(EmulatorConfig::with_regions(["primary"]))
        .await
        .unwrap();
    let r = &emu["primary"];
    let device = r.iot_hub_device();
    let (cert, key) = (r.iot_hub_device_cert_file(), r.iot_hub_device_key_file());
    let answer = client(&py, x509_request(&emu, r, device, cert, key)).await;
    assert_eq!(answer, json!({"sent": 1}), "{answer}");
    r.wait_for_ids(&[format!("{device}:1:0")], common::T)
        .await
        .unwrap();

    // The same certificate for another device id: CN != client id, refused.
    let answer = client(&py, x509_request(&emu, r, "not-the-cn", cert, key)).await;
    assert_eq!(answer["error"], "CredentialError", "{answer}");
    let refused = r
        .iot_hub_events()
        .wait_for("connack-5-x509-cn", 1, common::T);
    assert_eq!(refused.await, 1);
    assert_eq!(r.records().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_iot_device_sends_over_websockets_with_sas_and_x509() {
    let Some(py) = python() else { return };
    let emu = Emulator::start(EmulatorConfig::with_regions(["primary"]))
        .await
        .unwrap();
    let r = &emu["primary"];
    // Microsoft's client always dials 443 for WebSockets.
    if r.iot_hub_websocket_addr().port() != 443 {
        eprintln!(
            "SKIPPED: the emulator could not bind 443 (got {}), which the client needs",
            r.iot_hub_websocket_addr()
        );
        return;
    }
    let device = r.iot_hub_device();
    let mut sas = send_request(
        &emu,
        r,
        "ws-sas",
        json!([{"body": "ws", "id": "ws-sas:1:0", "properties": {"unit": "C"}}]),
    );
    sas["websockets"] = json!(true);
    assert_eq!(client(&py, sas).await, json!({"sent": 1}));
    let (cert, key) = (r.iot_hub_device_cert_file(), r.iot_hub_device_key_file());
    let mut x509 = x509_request(&emu, r, device, cert, key);
    x509["websockets"] = json!(true);
    assert_eq!(client(&py, x509).await, json!({"sent": 1}));
    let got = r
        .wait_for_ids(
            &["ws-sas:1:0".to_string(), format!("{device}:1:0")],
            common::T,
        )
        .await
        .unwrap();
    assert!(got.iter().all(|x| x.protocol == Protocol::IotHub));
    // Both came through the WebSocket listener, not MQTT on 8883.
    assert_eq!(r.iot_hub_events().count("websocket-upgraded"), 2);
    assert_eq!(r.iot_hub_events().count("closed-websocket-upgrade"), 0);
}
