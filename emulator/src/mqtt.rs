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
    #[error("cannot find a loopback port: {0}")]
    Port(#[from] std::io::Error),
    #[error("cannot attach the recorder to the broker: {0}")]
    Link(String),
    #[error(
        "the broker's {name} listener could not bind in {attempts} attempts, last on {addr}: {reason}"
    )]
    Bind {
        name: &'static str,
        attempts: usize,
        addr: SocketAddr,
        reason: String,
    },
    #[error("the broker's listener on {0} did not come up")]
    NotListening(SocketAddr),
}

/// Ports a listener is offered before the broker gives up: each is taken from under it
/// only if another process binds it in the instant after [`free_port`] let it go.
const BIND_ATTEMPTS: usize = 8;

/// Binds port 0 and lets it go, for rumqttd to bind. rumqttd 0.20 cannot be handed a
/// listener, nor asked which port it bound: `Server::start` binds `ServerSettings::listen`
/// itself, its connection handler is private, and the bound address goes only to a log
/// line. So the port is chosen here, and [`listen`] tries another when it was taken.
fn free_port() -> std::io::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    l.local_addr()
}

/// Starts a rumqttd listener (`server` builds it for an address) on a port from `ports`,
/// and returns the address once it is listening. rumqttd binds at the first poll of
/// `Server::start` (tokio binds a `SocketAddr` without yielding) and returns from it only
/// if that bind fails: a port taken in between is seen as that error, before any connect
/// could reach the process that took it, and the next port is tried.
async fn listen<P>(
    name: &'static str,
    mut ports: impl FnMut() -> std::io::Result<SocketAddr>,
    server: impl Fn(SocketAddr) -> Server<P>,
) -> Result<SocketAddr, BrokerError>
where
    P: rumqttd::protocol::Protocol + Clone + Send + Sync + 'static,
{
    let mut last = None;
    for _ in 0..BIND_ATTEMPTS {
        let addr = ports()?;
        let mut server = server(addr);
        let mut serving = Box::pin(async move { server.start(LinkType::Remote).await });
        let failed = tokio::select! {
            biased;
            // Only a failed bind ends `start`; it never returns `Ok`.
            r = &mut serving => r.err().map_or_else(|| "stopped".to_string(), |e| format!("{e:?}")),
            up = wait_listening(addr) => {
                up?;
                tokio::spawn(async move {
                    if let Err(e) = serving.await {
                        tracing::error!(error = ?e, listener = name, "MQTT listener stopped");
                    }
                });
                return Ok(addr);
            }
        };
        tracing::debug!(listener = name, %addr, reason = %failed, "port taken; trying another");
        last = Some((addr, failed));
    }
    let (addr, reason) =
        last.unwrap_or_else(|| (SocketAddr::from(([127, 0, 0, 1], 0)), String::new()));
    Err(BrokerError::Bind {
        name,
        attempts: BIND_ATTEMPTS,
        addr,
        reason,
    })
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
    let v4 = listen("MQTT 3.1.1", free_port, |addr| {
        let settings = settings("v4", addr, max_payload);
        Server::new(settings, router_tx.clone(), rumqttd::protocol::v4::V4)
    })
    .await?;
    let v5 = listen("MQTT 5", free_port, |addr| {
        let settings = settings("v5", addr, max_payload);
        Server::new(settings, router_tx.clone(), rumqttd::protocol::v5::V5)
    })
    .await?;
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

/// The listener start-up: a port taken before rumqttd binds it is given up for another.
#[cfg(test)]
mod listen_tests {
    use super::*;

    fn server(addr: SocketAddr) -> Server<rumqttd::protocol::v4::V4> {
        let router = Router::new(0, RouterConfig::default());
        Server::new(
            settings("t", addr, 1024),
            router.spawn(),
            rumqttd::protocol::v4::V4,
        )
    }

    #[tokio::test]
    async fn a_taken_port_is_given_up_for_the_next() {
        // Another process's listener holds the first port offered.
        let thief = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = thief.local_addr().unwrap();
        let mut offered = Vec::new();
        let addr = listen(
            "test",
            || {
                let next = if offered.is_empty() {
                    taken
                } else {
                    free_port()?
                };
                offered.push(next);
                Ok(next)
            },
            server,
        )
        .await
        .unwrap();
        assert_eq!(offered.len(), 2, "one port refused, the next one bound");
        assert_eq!(addr, offered[1]);
        // The thief still has its port, and the broker answers on its own.
        assert_eq!(thief.local_addr().unwrap(), taken);
        tokio::net::TcpStream::connect(addr).await.unwrap();
    }

    #[tokio::test]
    async fn only_taken_ports_give_an_error_that_names_the_last() {
        let thief = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = thief.local_addr().unwrap();
        let mut offers = 0;
        let e = listen(
            "test",
            || {
                offers += 1;
                Ok(taken)
            },
            server,
        )
        .await
        .unwrap_err();
        assert_eq!(offers, BIND_ATTEMPTS);
        let text = e.to_string();
        assert!(
            text.contains(&taken.to_string()) && text.contains("8 attempts"),
            "{text}"
        );
    }
}
