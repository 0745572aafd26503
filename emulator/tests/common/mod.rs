//! Helpers shared by the emulator's integration tests: plain clients, no twinhub code.
#![allow(dead_code)]

pub mod iothub;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use twinhub_emulator::Region;

pub const BATCH: &str = "application/vnd.microsoft.servicebus.json";
pub const SINGLE: &str = "application/atom+xml;type=entry;charset=utf-8";
pub const T: Duration = Duration::from_secs(10);

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A client whose sockets are bound to `ip` (127.0.0.2, 127.0.0.3, ...) and that never
/// reuses a pooled connection, so each request is a fresh link from that address.
pub fn client_from(ip: IpAddr, timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip)
        .timeout(timeout)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

pub fn messages_url(r: &Region) -> String {
    format!(
        "{}/{}/messages?timeout=60&api-version=2014-01",
        r.http_url(),
        r.event_hub()
    )
}

/// Posts a batch with a valid token; returns the status.
pub async fn send_batch(
    c: &reqwest::Client,
    r: &Region,
    body: &str,
) -> Result<u16, reqwest::Error> {
    c.post(messages_url(r))
        .header("Authorization", r.sas_token(Duration::from_secs(600)))
        .header("Content-Type", BATCH)
        .body(body.to_string())
        .send()
        .await
        .map(|resp| resp.status().as_u16())
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Connects with rumqttc (MQTT 3.1.1), publishes one QoS 1 message and waits for its PUBACK.
pub async fn mqtt_v4_publish(
    addr: SocketAddr,
    client_id: &str,
    topic: &str,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<(), String> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut opts = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(opts, 10);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .map_err(|e| e.to_string())?;
    let run = async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let r = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| "timed out".to_string())?;
    let _ = client.try_disconnect();
    r
}

/// Same with MQTT 5 and user properties.
pub async fn mqtt_v5_publish(
    addr: SocketAddr,
    client_id: &str,
    topic: &str,
    payload: Vec<u8>,
    user: &[(&str, &str)],
    timeout: Duration,
) -> Result<(), String> {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut opts = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(opts, 10);
    let props = PublishProperties {
        user_properties: user
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    client
        .publish_with_properties(topic, QoS::AtLeastOnce, false, payload, props)
        .await
        .map_err(|e| e.to_string())?;
    let run = async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let r = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| "timed out".to_string())?;
    let _ = client.try_disconnect();
    r
}

fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

fn mqtt_str(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A hand-written MQTT 3.1.1 client on a socket bound to `from`: CONNECT, wait CONNACK,
/// PUBLISH QoS 1, wait PUBACK. (rumqttc cannot bind a source address.)
pub async fn raw_mqtt_publish(
    addr: SocketAddr,
    from: IpAddr,
    client_id: &str,
    topic: &str,
    payload: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    let run = async {
        let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        sock.bind(SocketAddr::new(from, 0))
            .map_err(|e| e.to_string())?;
        let mut s = sock
            .connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut var = Vec::new();
        mqtt_str("MQTT", &mut var);
        var.extend_from_slice(&[4, 0x02, 0, 30]);
        mqtt_str(client_id, &mut var);
        let mut pkt = vec![0x10];
        remaining_length(var.len(), &mut pkt);
        pkt.extend_from_slice(&var);
        s.write_all(&pkt)
            .await
            .map_err(|e| format!("write connect: {e}"))?;
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack)
            .await
            .map_err(|e| format!("read connack: {e}"))?;
        if ack != [0x20, 2, 0, 0] {
            return Err(format!("bad connack {ack:?}"));
        }
        let mut var = Vec::new();
        mqtt_str(topic, &mut var);
        var.extend_from_slice(&[0, 1]);
        var.extend_from_slice(payload);
        let mut pkt = vec![0x32];
        remaining_length(var.len(), &mut pkt);
        pkt.extend_from_slice(&var);
        s.write_all(&pkt)
            .await
            .map_err(|e| format!("write publish: {e}"))?;
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack)
            .await
            .map_err(|e| format!("read puback: {e}"))?;
        if ack != [0x40, 2, 0, 1] {
            return Err(format!("bad puback {ack:?}"));
        }
        Ok(())
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// `{"id":...,"body":base64}`: the documented MQTT 3.1.1 envelope.
pub fn envelope(id: &str, body: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    serde_json::json!({"id": id, "body": base64::engine::general_purpose::STANDARD.encode(body)})
        .to_string()
        .into_bytes()
}
