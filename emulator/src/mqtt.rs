//! A region's MQTT broker: rumqttd, embedded, with a recorder subscribed to everything.
//!
//! rumqttd serves MQTT 3.1.1 and MQTT 5 on separate listeners; both bind internal loopback
//! ports and the region's public MQTT proxy routes each connection by the protocol level
//! of its CONNECT packet, so clients of either version use one address. Anonymous clients
//! are accepted (credentials are not checked). The proxy also gives the broker an id of
//! its own for every connection, because rumqttd refuses valid ids (`meter$7`) and panics
//! on a reused one (see [`crate::proxy`]). QoS 0 and 1 publishes are acknowledged by
//! rumqttd and recorded here.
//!
//! ## Where the message id is read (first match wins)
//!
//! 1. MQTT 5: the user property `message-id` (rumqttd keeps publish properties, so the
//!    recorder sees them).
//! 2. MQTT 3.1.1 envelope: a payload that is exactly a JSON object
//!    `{"id":"<message id>","body":"<base64 of the record>"}`, optionally with
//!    `"properties":{"<name>":"<value>",..}`; the recorded body is the decoded `body` and
//!    the properties are recorded as the record's properties.
//! 3. IoT Hub style: the topic's property bag,
//!    `devices/{device}/messages/events/$.mid={id}&...` (also `%24.mid`), as the Azure
//!    device SDKs write it.
//!
//! A publish with none of these is recorded without an id.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use percent_encoding::percent_decode_str;
use rumqttd::local::LinkBuilder;
use rumqttd::protocol::PublishProperties;
use rumqttd::{
    ConnectionSettings, LinkType, Notification, Router, RouterConfig, Server, ServerSettings,
};

use crate::batch::MESSAGE_ID_PROPERTY;
use crate::store::{Protocol, Record, Store, now_ms};

/// The internal listeners of one region's broker.
pub(crate) struct Broker {
    pub(crate) v4: SocketAddr,
    pub(crate) v5: SocketAddr,
}

/// Why the broker did not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BrokerError {
    #[error("cannot reserve a loopback port: {0}")]
    Port(#[from] std::io::Error),
    #[error("cannot attach the recorder to the broker: {0}")]
    Link(String),
    #[error("the broker's listener on {0} did not come up")]
    NotListening(SocketAddr),
}

/// Binds port 0 and frees it. rumqttd binds its listeners itself from a fixed address, so
/// this is the only way to give it an ephemeral port; the bind is then verified.
fn free_port() -> std::io::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    l.local_addr()
}

fn settings(name: &str, listen: SocketAddr, max_payload: usize) -> ServerSettings {
    ServerSettings {
        name: name.to_string(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            // Room for the MQTT header around a publication of the tier's limit.
            max_payload_size: max_payload + 64 * 1024,
            max_inflight_count: 256,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    }
}

/// Starts the router (its own thread), the v4 and v5 listeners and the recorder (tasks on
/// the current runtime).
pub(crate) async fn start(store: Store, max_payload: usize) -> Result<Broker, BrokerError> {
    let router = Router::new(
        0,
        RouterConfig {
            max_connections: 1024,
            max_outgoing_packet_count: 200,
            max_segment_size: 4 * 1024 * 1024,
            max_segment_count: 16,
            ..RouterConfig::default()
        },
    );
    let router_tx = router.spawn();
    let v4 = free_port()?;
    let v5 = free_port()?;
    let mut s4 = Server::new(
        settings("v4", v4, max_payload),
        router_tx.clone(),
        rumqttd::protocol::v4::V4,
    );
    let mut s5 = Server::new(
        settings("v5", v5, max_payload),
        router_tx.clone(),
        rumqttd::protocol::v5::V5,
    );
    tokio::spawn(async move {
        if let Err(e) = s4.start(LinkType::Remote).await {
            tracing::error!(error = ?e, "MQTT 3.1.1 listener stopped");
        }
    });
    tokio::spawn(async move {
        if let Err(e) = s5.start(LinkType::Remote).await {
            tracing::error!(error = ?e, "MQTT 5 listener stopped");
        }
    });
    // Building a local link blocks until the router answers.
    let (mut link_tx, mut link_rx, _) = tokio::task::spawn_blocking(move || {
        LinkBuilder::new("twinhub-emulator-recorder", router_tx)
            .dynamic_filters(true)
            .build()
            // rumqttd's error is large; only its text is kept.
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| BrokerError::Link(e.to_string()))?
    .map_err(BrokerError::Link)?;
    link_tx
        .subscribe("#")
        .map_err(|e| BrokerError::Link(e.to_string()))?;
    tokio::spawn(async move {
        // The link must stay alive as long as the recorder runs.
        let _link_tx = link_tx;
        loop {
            match link_rx.next().await {
                Ok(Some(Notification::Forward(f))) => {
                    let record = record_publish(
                        &store,
                        &f.publish.topic,
                        &f.publish.payload,
                        f.properties.as_ref(),
                    );
                    store.push_all(vec![record]);
                }
                Ok(Some(Notification::Unschedule)) => {
                    if link_rx.wake().await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "MQTT recorder lost the broker");
                    return;
                }
            }
        }
    });
    for addr in [v4, v5] {
        wait_listening(addr).await?;
    }
    Ok(Broker { v4, v5 })
}

async fn wait_listening(addr: SocketAddr) -> Result<(), BrokerError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BrokerError::NotListening(addr));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn record_publish(
    store: &Store,
    topic: &[u8],
    payload: &[u8],
    props: Option<&PublishProperties>,
) -> Record {
    let topic = String::from_utf8_lossy(topic).into_owned();
    let parsed = parse_publish(&topic, payload, props);
    Record {
        region: store.region().to_string(),
        protocol: Protocol::Mqtt,
        target: topic,
        message_id: parsed.message_id,
        body: parsed.body,
        properties: parsed.properties,
        partition_key: None,
        peer: None,
        received_at_ms: now_ms(),
    }
}

/// A publish decoded per the rules in the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedPublish {
    /// The id, if found.
    pub message_id: Option<String>,
    /// The record body (decoded from the envelope when there is one).
    pub body: Vec<u8>,
    /// MQTT 5 user properties and IoT Hub property-bag entries, decoded.
    pub properties: BTreeMap<String, String>,
}

/// Finds the message id of a publish: user property, then envelope, then `$.mid`.
pub fn parse_publish(
    topic: &str,
    payload: &[u8],
    props: Option<&PublishProperties>,
) -> ParsedPublish {
    let mut properties = BTreeMap::new();
    let mut message_id = None;
    if let Some(p) = props {
        for (k, v) in &p.user_properties {
            if k == MESSAGE_ID_PROPERTY && message_id.is_none() && !v.is_empty() {
                message_id = Some(v.clone());
            }
            properties.insert(k.clone(), v.clone());
        }
    }
    let bag = iot_hub_property_bag(topic);
    let mut body = payload.to_vec();
    if message_id.is_none()
        && let Some((id, decoded, props)) = envelope(payload)
    {
        message_id = Some(id);
        body = decoded;
        for (k, v) in props {
            properties.entry(k).or_insert(v);
        }
    }
    if message_id.is_none() {
        message_id = bag.get("$.mid").filter(|s| !s.is_empty()).cloned();
    }
    for (k, v) in bag {
        properties.entry(k).or_insert(v);
    }
    ParsedPublish {
        message_id,
        body,
        properties,
    }
}

/// `{"id":"...","body":"<base64>"}`, optionally with `"properties":{"name":"value",..}`
/// (string values), and nothing else.
fn envelope(payload: &[u8]) -> Option<(String, Vec<u8>, BTreeMap<String, String>)> {
    if payload.first() != Some(&b'{') {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let obj = v.as_object()?;
    let mut properties = BTreeMap::new();
    let expected = match obj.get("properties") {
        None => 2,
        Some(p) => {
            for (k, v) in p.as_object()? {
                properties.insert(k.clone(), v.as_str()?.to_string());
            }
            3
        }
    };
    if obj.len() != expected {
        return None;
    }
    let id = obj.get("id")?.as_str().filter(|s| !s.is_empty())?;
    let body = base64::engine::general_purpose::STANDARD
        .decode(obj.get("body")?.as_str()?)
        .ok()?;
    Some((id.to_string(), body, properties))
}

/// The decoded property bag of an IoT Hub telemetry topic
/// (`devices/{d}/messages/events/{bag}` or `devices/{d}/modules/{m}/messages/events/{bag}`).
pub(crate) fn iot_hub_property_bag(topic: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if !topic.starts_with("devices/") {
        return out;
    }
    let Some((_, bag)) = topic.split_once("/messages/events/") else {
        return out;
    };
    for pair in bag.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode_str(k).decode_utf8_lossy().into_owned();
        let v = percent_decode_str(v).decode_utf8_lossy().into_owned();
        out.insert(k, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> PublishProperties {
        PublishProperties {
            user_properties: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..PublishProperties::default()
        }
    }

    #[test]
    fn user_property_wins() {
        let p = parse_publish(
            "devices/d/messages/events/$.mid=bag",
            br#"{"id":"env","body":"aGk="}"#,
            Some(&props(&[("message-id", "up"), ("k", "v")])),
        );
        assert_eq!(p.message_id.as_deref(), Some("up"));
        assert_eq!(p.body, br#"{"id":"env","body":"aGk="}"#);
        assert_eq!(p.properties["k"], "v");
    }

    #[test]
    fn envelope_then_bag() {
        let p = parse_publish("t/x", br#"{"id":"env","body":"aGk="}"#, None);
        assert_eq!(p.message_id.as_deref(), Some("env"));
        assert_eq!(p.body, b"hi");
        let p = parse_publish(
            "t/x",
            br#"{"id":"env","body":"aGk=","properties":{"unit":"C","n":"2"}}"#,
            None,
        );
        assert_eq!(p.message_id.as_deref(), Some("env"));
        assert_eq!(
            (p.properties["unit"].as_str(), p.properties["n"].as_str()),
            ("C", "2")
        );
        let p = parse_publish(
            "devices/d1/messages/events/%24.mid=m%3A1&$.ct=application%2Fjson",
            b"raw",
            None,
        );
        assert_eq!(p.message_id.as_deref(), Some("m:1"));
        assert_eq!(p.body, b"raw");
        assert_eq!(p.properties["$.ct"], "application/json");
        let p = parse_publish("devices/d1/modules/m/messages/events/$.mid=z", b"raw", None);
        assert_eq!(p.message_id.as_deref(), Some("z"));
    }

    #[test]
    fn no_id_and_near_misses() {
        for (topic, payload) in [
            ("t", &b"plain"[..]),
            ("t", br#"{"id":"a","body":"!!"}"#),
            ("t", br#"{"id":"a","body":"aGk=","x":1}"#),
            ("t", br#"{"id":"a","body":"aGk=","properties":{"k":1}}"#),
            ("t", br#"{"id":"a","body":"aGk=","properties":[]}"#),
            ("t", br#"{"id":5,"body":"aGk="}"#),
            ("other/messages/events/$.mid=x", b""),
            ("devices/d/messages/events/", b""),
        ] {
            assert_eq!(
                parse_publish(topic, payload, None).message_id,
                None,
                "{topic} {payload:?}"
            );
        }
    }
}
