//! MQTT (rumqttc) at QoS 1, versions 5 and 3.1.1; also the engine of the IoT Hub transport.
//!
//! One PUBLISH per record. A batch is [`Outcome::Delivered`] only when every record's
//! PUBACK arrived. Batches are pipelined on one connection: each hands all its publishes to
//! rumqttc at once (under the connection lock) and then waits for its PUBACKs while the
//! next batch publishes. The task polling rumqttc's event loop keeps one account per batch:
//! the `n`th `Outgoing::Publish(pkid)` belongs to the batch that requested the `n`th publish
//! (rumqttc writes requests in order, and reuses a packet id only once it is acknowledged),
//! each PUBACK counts once, for the batch owning its packet id, and a batch is woken once,
//! when its last PUBACK arrives or the connection ends.
//!
//! Connections are made on the first send, with a clean session, by a driver task that
//! polls rumqttc's event loop and stops at the first error: rumqttc's own reconnect (which
//! would replay unacknowledged publishes under old packet ids) is never used. A send that
//! sees its connection fail resolves [`Outcome::Timeout`] (or [`Outcome::Unreachable`] if
//! nothing was written yet), and the next send connects afresh (resolving DNS again), so a
//! stale packet id can never be confused with a new one.
//!
//! Wire formats:
//! * MQTT 5: the body as payload, the user property `message-id` = the record's id, then
//!   the record's properties as user properties.
//! * MQTT 3.1.1: the payload is the JSON envelope `{"id":"<id>","body":"<base64>"}`, with
//!   `"properties":{..}` added when the record has properties.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode as ReturnCode5, PubAckReason, PublishProperties,
};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use twinhub_core::{DeviceId, Outcome, RejectReason};

use super::common::{TokenCache, TransportError, b64, plaintext_credentials};
use super::tunnel::Tunnel;
use super::{BoxFuture, Limits, Transport};
use crate::record::Record;
use crate::spec::{Bind, MqttSpec, MqttVersion, Secret};

/// Most QoS 1 publishes in flight on one connection (MQTT 5; 3.1.1 uses rumqttc's 100).
const INFLIGHT_LIMIT: u16 = 512;

/// How records are turned into topics and payloads.
#[derive(Debug, Clone)]
pub(crate) enum Framing {
    /// A generic broker: a fixed topic; v5 user properties or the 3.1.1 envelope.
    Generic {
        /// The topic, `{device_id}` already replaced.
        topic: String,
    },
    /// IoT Hub device telemetry: the body as payload, the id and properties in the topic's
    /// property bag.
    IotHub {
        /// The device id.
        device: String,
    },
}

/// Where the CONNECT credentials come from.
pub(crate) enum Credentials {
    /// None.
    None,
    /// A fixed user name and optional password.
    Static(String, Option<Secret>),
    /// A user name and a SAS token signed anew for every connection.
    Sas(String, TokenCache),
}

/// Everything a connection is made from.
pub(crate) struct MqttConfig {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) client_id: String,
    pub(crate) credentials: Credentials,
    pub(crate) version: MqttVersion,
    pub(crate) framing: Framing,
    pub(crate) keep_alive: Duration,
    pub(crate) bind: Option<Bind>,
    /// Reconnect once a connection is this old (IoT Hub: before its token expires).
    pub(crate) max_age: Option<Duration>,
    pub(crate) max_packet: usize,
    pub(crate) max_batch: usize,
    /// MQTT over WebSockets: the URL path of the upgrade request (IoT Hub's
    /// `/$iothub/websocket`); `None` for MQTT directly over TCP (or TLS).
    pub(crate) websocket_path: Option<String>,
}

/// What the driver task reports besides batch results: the connection's life.
#[derive(Debug)]
enum Ev {
    ConnAck,
    /// The connection ended: refused for credentials, or lost.
    Failed(Failure),
}

/// One batch's account.
struct Account {
    /// Records in the batch.
    expected: usize,
    /// Publishes written so far, and PUBACKs counted.
    published: usize,
    acked: usize,
    /// The most serious PUBACK failure seen.
    failure: Option<Outcome>,
    /// Resolved once: (outcome, whether the connection is still clean).
    done: Option<tokio::sync::oneshot::Sender<(Outcome, bool)>>,
}

/// The batches in flight on a connection, as the driver task accounts for them. Several
/// batches may be in flight at once: a batch hands its publishes to rumqttc in one go
/// (under the connection lock), rumqttc writes them in that order and reports each one's
/// packet id as it goes, so the `n`th `Outgoing::Publish` belongs to the batch whose
/// publishes were requested `n`th. rumqttc reuses a packet id only once it is
/// acknowledged, so each id in flight has exactly one owner.
#[derive(Default)]
struct Tracker {
    next: u64,
    /// Batches with publishes not yet written, in request order, with how many are left.
    unwritten: VecDeque<(u64, usize)>,
    batches: HashMap<u64, Account>,
    /// The batch of each packet id waiting for its PUBACK.
    owner: HashMap<u16, u64>,
}

impl Tracker {
    /// Opens the account of a batch of `expected` records; returns its number.
    fn open(
        &mut self,
        expected: usize,
        done: tokio::sync::oneshot::Sender<(Outcome, bool)>,
    ) -> u64 {
        let id = self.next;
        self.next += 1;
        self.unwritten.push_back((id, expected));
        self.batches.insert(
            id,
            Account {
                expected,
                published: 0,
                acked: 0,
                failure: None,
                done: Some(done),
            },
        );
        id
    }

    fn published(&mut self, pkid: u16) {
        // A publish nobody asked for (none exist today) is ignored, not misattributed.
        let Some((id, left)) = self.unwritten.front_mut() else {
            return;
        };
        let id = *id;
        *left -= 1;
        if *left == 0 {
            self.unwritten.pop_front();
        }
        if let Some(a) = self.batches.get_mut(&id) {
            a.published += 1;
            self.owner.insert(pkid, id);
        }
    }

    fn acked(&mut self, pkid: u16, failure: Option<Outcome>) {
        // Only a PUBACK for a publish in flight counts, and only once.
        let Some(id) = self.owner.remove(&pkid) else {
            return;
        };
        let Some(a) = self.batches.get_mut(&id) else {
            return;
        };
        a.acked += 1;
        if let Some(o) = failure {
            a.failure = Some(worse(a.failure, o));
        }
        if a.acked == a.expected
            && let Some(a) = self.batches.remove(&id)
            && let Some(done) = a.done
        {
            let _ = done.send((a.failure.unwrap_or(Outcome::Delivered), true));
        }
    }

    /// The connection ended: every batch still open is resolved.
    fn ended(&mut self, f: Failure) {
        for (_, a) in self.batches.drain() {
            if let Some(done) = a.done {
                let o = if f == Failure::Unauthorized {
                    Outcome::Unauthorized
                } else {
                    timeout_outcome(a.published)
                };
                let _ = done.send((o, false));
            }
        }
        self.unwritten.clear();
        self.owner.clear();
    }

    /// Publishes of batch `id` written so far (0 once it was resolved).
    fn published_of(&self, id: u64) -> usize {
        self.batches.get(&id).map_or(0, |a| a.published)
    }

    /// Whether any batch is still open.
    fn busy(&self) -> bool {
        !self.batches.is_empty()
    }
}

type SharedTracker = Arc<Mutex<Tracker>>;

fn lock(t: &SharedTracker) -> std::sync::MutexGuard<'_, Tracker> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Unauthorized,
    Lost,
}

enum Client {
    V5(rumqttc::v5::AsyncClient),
    V4(rumqttc::AsyncClient),
}

struct Conn {
    client: Client,
    events: mpsc::UnboundedReceiver<Ev>,
    tracker: SharedTracker,
    task: AbortHandle,
    born: Instant,
    generation: u64,
    /// Tells this connection from its successors.
    serial: u64,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Dropping the event loop closes the socket; batches still waiting on it learn so
        // now rather than at their deadline.
        self.task.abort();
        lock(&self.tracker).ended(Failure::Lost);
    }
}

/// Sends batches to an MQTT broker (or IoT Hub) at QoS 1.
pub struct MqttTransport {
    cfg: MqttConfig,
    timeout: Duration,
    conn: tokio::sync::Mutex<Option<Conn>>,
    generation: AtomicU64,
    live: Mutex<Option<AbortHandle>>,
    /// Connections replaced for their age while batches were still in flight on them:
    /// kept until those batches are answered.
    retiring: Mutex<Vec<Conn>>,
    serial: AtomicU64,
    /// For `bind = "<ip>"`: the loopback tunnel rumqttc connects through, started on the
    /// first connect.
    tunnel: tokio::sync::OnceCell<Tunnel>,
}

impl std::fmt::Debug for MqttTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttTransport")
            .field("host", &self.cfg.host)
            .field("port", &self.cfg.port)
            .field("tls", &self.cfg.tls.is_some())
            .field("version", &self.cfg.version)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl MqttTransport {
    /// A transport for a generic broker. `timeout` bounds each send (connect included).
    pub fn new(
        spec: &MqttSpec,
        device: &DeviceId,
        bind: Option<&Bind>,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
        limits: Limits,
    ) -> Result<Self, TransportError> {
        if spec.host.is_empty() {
            return Err(TransportError::InvalidSpec("mqtt host is empty".into()));
        }
        let topic = spec.topic.replace("{device_id}", device.as_str());
        if topic.is_empty() || topic.contains(['+', '#']) {
            return Err(TransportError::InvalidSpec(format!(
                "mqtt topic {topic:?} must be non-empty and without wildcards"
            )));
        }
        if !spec.tls && spec.password.is_some() {
            plaintext_credentials("an mqtt:// URL with a password", &spec.host)?;
        }
        if spec.client_cert.is_some() && !spec.tls {
            return Err(TransportError::InvalidSpec(
                "a client certificate needs an mqtts:// url".into(),
            ));
        }
        // The client certificate joins the shared TLS settings for this endpoint only.
        let tls = crate::client_cert::with_client_cert(&tls, spec.client_cert.as_ref())?;
        let credentials = match &spec.username {
            Some(u) => Credentials::Static(u.clone(), spec.password.clone()),
            None if spec.password.is_some() => {
                return Err(TransportError::InvalidSpec(
                    "mqtt password given without a username".into(),
                ));
            }
            None => Credentials::None,
        };
        Self::from_config(
            MqttConfig {
                host: spec.host.clone(),
                port: spec.port,
                tls: spec.tls.then_some(tls),
                client_id: spec
                    .client_id
                    .clone()
                    .unwrap_or_else(|| device.as_str().to_string()),
                credentials,
                version: spec.version,
                framing: Framing::Generic { topic },
                keep_alive: spec.keep_alive,
                bind: bind.cloned(),
                max_age: None,
                max_packet: packet_limit(limits),
                max_batch: usize::from(limits.max_batch_records),
                websocket_path: None,
            },
            timeout,
        )
    }

    pub(crate) fn from_config(cfg: MqttConfig, timeout: Duration) -> Result<Self, TransportError> {
        #[cfg(not(any(target_os = "android", target_os = "fuchsia", target_os = "linux")))]
        if let Some(Bind::Interface(name)) = &cfg.bind {
            return Err(TransportError::BindUnsupported {
                transport: "MQTT",
                bind: format!("interface {name} on this OS"),
            });
        }
        Ok(MqttTransport {
            cfg,
            timeout,
            conn: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            live: Mutex::new(None),
            retiring: Mutex::new(Vec::new()),
            serial: AtomicU64::new(0),
            tunnel: tokio::sync::OnceCell::new(),
        })
    }

    async fn send_batch(&self, records: &[Record]) -> Outcome {
        if records.is_empty() {
            return Outcome::Delivered;
        }
        let deadline = Instant::now() + self.timeout;
        self.retiring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| lock(&c.tracker).busy());
        // Under the connection lock: connect if needed, open the batch's account and hand
        // every publish to rumqttc, so publishes of different batches never interleave.
        let (result, tracker, serial, id) = {
            let mut guard = match tokio::time::timeout_at(deadline, self.conn.lock()).await {
                Ok(g) => g,
                Err(_) => return Outcome::Unreachable,
            };
            let generation = self.generation.load(Ordering::Acquire);
            if let Some(c) = guard.as_mut() {
                let too_old = self.cfg.max_age.is_some_and(|age| c.born.elapsed() >= age);
                // Only the connection's end is ever queued here; one seen now means it
                // died: replace it.
                let mut died = c.task.is_finished();
                while let Ok(ev) = c.events.try_recv() {
                    died |= matches!(ev, Ev::Failed(_));
                }
                if c.generation != generation || died {
                    *guard = None;
                } else if too_old && let Some(old) = guard.take() {
                    // Its batches in flight finish on it; new ones go to a fresh one.
                    self.retiring
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(old);
                }
            }
            if guard.is_none() {
                match self.connect(deadline, generation).await {
                    Ok(c) => *guard = Some(c),
                    Err(o) => return o,
                }
            }
            let Some(conn) = guard.as_mut() else {
                return Outcome::Unreachable;
            };
            let (done, result) = tokio::sync::oneshot::channel();
            let id = lock(&conn.tracker).open(records.len(), done);
            for r in records {
                match tokio::time::timeout_at(deadline, self.publish(&conn.client, r)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(())) => break, // the event loop ended; the tracker says how
                    Err(_) => {
                        // Stuck handing publishes over: this session can't be trusted.
                        let published = lock(&conn.tracker).published_of(id);
                        *guard = None;
                        return timeout_outcome(published);
                    }
                }
            }
            (result, Arc::clone(&conn.tracker), conn.serial, id)
        };
        // Lock released: later batches publish while this one waits for its PUBACKs.
        let (outcome, healthy) = match tokio::time::timeout_at(deadline, result).await {
            Ok(Ok(r)) => r,
            // The account was dropped unanswered: nothing more will come.
            Ok(Err(_)) => (timeout_outcome(lock(&tracker).published_of(id)), false),
            Err(_) => {
                let published = lock(&tracker).published_of(id);
                tracing::debug!(host = %self.cfg.host, published, "mqtt batch timed out");
                (timeout_outcome(published), false)
            }
        };
        if !healthy {
            // Unanswered publishes may still be acked later: never reuse this session.
            let mut guard = self.conn.lock().await;
            if guard.as_ref().is_some_and(|c| c.serial == serial) {
                *guard = None;
            }
        }
        outcome
    }

    async fn connect(&self, deadline: Instant, generation: u64) -> Result<Conn, Outcome> {
        let (tx, mut events) = mpsc::unbounded_channel();
        let tracker = SharedTracker::default();
        let secs = self.timeout.as_secs_f64().ceil().max(1.0) as u64;
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(secs);
        #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
        if let Some(Bind::Interface(name)) = &self.cfg.bind {
            net.set_bind_device(name);
        }
        // rumqttc can only bind an interface; a local address goes through our tunnel.
        let proxy = match &self.cfg.bind {
            Some(Bind::Addr(ip)) => {
                let started = self
                    .tunnel
                    .get_or_try_init(|| Tunnel::start(*ip, &self.cfg.host, self.cfg.port))
                    .await;
                match started {
                    Ok(t) => Some(t.proxy()),
                    Err(e) => {
                        tracing::warn!(bind = %ip, error = %e, "mqtt: cannot start the local-address tunnel");
                        return Err(Outcome::Unreachable);
                    }
                }
            }
            _ => None,
        };
        let credentials = match &self.cfg.credentials {
            Credentials::None => None,
            Credentials::Static(u, p) => Some((
                u.clone(),
                p.as_ref()
                    .map(|p| p.expose().to_string())
                    .unwrap_or_default(),
            )),
            Credentials::Sas(u, tokens) => match tokens.sign_now() {
                Ok(t) => Some((u.clone(), t)),
                Err(_) => return Err(Outcome::Unauthorized),
            },
        };
        let (transport, broker) = self.transport();
        // Room for every batch the engine may have in flight: a batch handing over its
        // publishes then never waits for the event loop to drain the channel (a wake-up
        // per publish otherwise, about 5% of the rate to a local broker).
        let capacity = (self.cfg.max_batch * twinhub_core::MAX_INFLIGHT)
            .clamp(16, usize::from(INFLIGHT_LIMIT));
        let keep_alive = self.cfg.keep_alive.max(Duration::from_secs(5));
        let task = match self.cfg.version {
            MqttVersion::V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(
                    self.cfg.client_id.clone(),
                    broker,
                    self.cfg.port,
                );
                // rumqttc sizes its table of unacknowledged publishes by this limit and
                // defaults it to 65,535 entries (about 14 MB per connection); the broker's
                // receive maximum still lowers it further.
                o.set_outgoing_inflight_upper_limit(INFLIGHT_LIMIT);
                o.set_keep_alive(keep_alive)
                    .set_clean_start(true)
                    .set_request_channel_capacity(capacity)
                    .set_connection_timeout(secs)
                    .set_max_packet_size(Some(64 << 10))
                    .set_transport(transport)
                    .set_network_options(net);
                if let Some(p) = proxy {
                    o.set_proxy(p);
                }
                if let Some((u, p)) = credentials {
                    o.set_credentials(u, p);
                }
                let (client, el) = rumqttc::v5::AsyncClient::new(o, capacity);
                let task = tokio::spawn(drive_v5(el, tx, Arc::clone(&tracker))).abort_handle();
                (Client::V5(client), task)
            }
            MqttVersion::V311 => {
                let mut o =
                    rumqttc::MqttOptions::new(self.cfg.client_id.clone(), broker, self.cfg.port);
                o.set_keep_alive(keep_alive)
                    .set_clean_session(true)
                    .set_request_channel_capacity(capacity)
                    .set_max_packet_size(64 << 10, self.cfg.max_packet)
                    .set_transport(transport);
                if let Some(p) = proxy {
                    o.set_proxy(p);
                }
                if let Some((u, p)) = credentials {
                    o.set_credentials(u, p);
                }
                let (client, mut el) = rumqttc::AsyncClient::new(o, capacity);
                el.set_network_options(net);
                let task = tokio::spawn(drive_v4(el, tx, Arc::clone(&tracker))).abort_handle();
                (Client::V4(client), task)
            }
        };
        let (client, task) = task;
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.clone());
        // The first word from the driver task is the CONNACK or the failure.
        let failed = match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Ev::ConnAck)) => None,
            Ok(Some(Ev::Failed(Failure::Unauthorized))) => Some(Outcome::Unauthorized),
            Ok(Some(Ev::Failed(Failure::Lost)) | None) => Some(Outcome::Unreachable),
            // No CONNACK in time: no record was written, so nothing can have arrived.
            Err(_) => Some(Outcome::Unreachable),
        };
        if let Some(o) = failed {
            task.abort();
            tracing::debug!(host = %self.cfg.host, port = self.cfg.port, outcome = ?o, "mqtt connect failed");
            return Err(o);
        }
        Ok(Conn {
            client,
            events,
            tracker,
            task,
            born: Instant::now(),
            generation,
            serial: self.serial.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// rumqttc's transport and broker address: the host for MQTT over TCP or TLS, the
    /// whole URL for WebSockets (rumqttc takes host, port and path from it then).
    fn transport(&self) -> (rumqttc::Transport, String) {
        let tls = self
            .cfg
            .tls
            .as_ref()
            .map(|t| rumqttc::TlsConfiguration::Rustls(Arc::clone(t)));
        match (&self.cfg.websocket_path, tls) {
            (None, Some(tls)) => (
                rumqttc::Transport::tls_with_config(tls),
                self.cfg.host.clone(),
            ),
            (None, None) => (rumqttc::Transport::tcp(), self.cfg.host.clone()),
            (Some(path), tls) => {
                let host = if self.cfg.host.contains(':') {
                    format!("[{}]", self.cfg.host)
                } else {
                    self.cfg.host.clone()
                };
                let (scheme, transport) = match tls {
                    Some(tls) => ("wss", rumqttc::Transport::wss_with_config(tls)),
                    None => ("ws", rumqttc::Transport::Ws),
                };
                let url = format!("{scheme}://{host}:{}{path}", self.cfg.port);
                (transport, url)
            }
        }
    }

    async fn publish(&self, client: &Client, r: &Record) -> Result<(), ()> {
        let id = r.id.to_text();
        let topic = match &self.cfg.framing {
            Framing::Generic { topic } => topic.clone(),
            Framing::IotHub { device } => iot_hub_topic(device, &id, &r.properties),
        };
        match client {
            Client::V5(c) => {
                let mut user_properties = Vec::with_capacity(1 + r.properties.len());
                user_properties.push(("message-id".to_string(), id.to_string()));
                user_properties.extend(
                    r.properties
                        .iter()
                        .filter(|(k, _)| k != "message-id")
                        .cloned(),
                );
                let props = PublishProperties {
                    user_properties,
                    ..Default::default()
                };
                c.publish_with_properties(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    r.body.clone(),
                    props,
                )
                .await
                .map_err(|_| ())
            }
            Client::V4(c) => {
                let payload = match &self.cfg.framing {
                    Framing::IotHub { .. } => r.body.to_vec(),
                    Framing::Generic { .. } => envelope(&id, r),
                };
                c.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                    .await
                    .map_err(|_| ())
            }
        }
    }
}

fn timeout_outcome(published: usize) -> Outcome {
    if published == 0 {
        Outcome::Unreachable
    } else {
        Outcome::Timeout
    }
}

/// The more serious of two PUBACK failures: credentials, then throttling, then rejects.
fn worse(a: Option<Outcome>, b: Outcome) -> Outcome {
    let rank = |o: &Outcome| match o {
        Outcome::Unauthorized => 3,
        Outcome::Throttled { .. } => 2,
        _ => 1,
    };
    match a {
        Some(a) if rank(&a) >= rank(&b) => a,
        _ => b,
    }
}

impl Transport for MqttTransport {
    fn send<'a>(&'a self, records: &'a [Record]) -> BoxFuture<'a, Outcome> {
        Box::pin(self.send_batch(records))
    }

    fn reset(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(task) = self.live.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

/// Largest outgoing packet: a record at the endpoint's limit, base64-framed, plus headers.
fn packet_limit(limits: Limits) -> usize {
    let record = usize::try_from(limits.max_record_bytes).unwrap_or(usize::MAX / 2);
    record.saturating_mul(4) / 3 + 8192
}

/// MQTT 3.1.1 payload: `{"id":"..","body":"<base64>"}` (+ `"properties"` when any).
pub fn envelope(id: &str, r: &Record) -> Vec<u8> {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), id.into());
    m.insert("body".into(), b64(&r.body).into());
    if !r.properties.is_empty() {
        let props: serde_json::Map<String, serde_json::Value> = r
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        m.insert("properties".into(), props.into());
    }
    serde_json::to_vec(&m).unwrap_or_default()
}

/// Escapes everything but RFC 3986 unreserved characters, as a query string component.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `devices/{device}/messages/events/$.mid={id}&{name}={value}...`, URL-encoded.
pub fn iot_hub_topic(device: &str, id: &str, properties: &[(String, String)]) -> String {
    use percent_encoding::utf8_percent_encode as enc;
    let mut t = format!(
        "devices/{device}/messages/events/$.mid={}",
        enc(id, COMPONENT)
    );
    for (k, v) in properties {
        if k == "$.mid" {
            continue;
        }
        t.push('&');
        t.extend(enc(k, COMPONENT));
        t.push('=');
        t.extend(enc(v, COMPONENT));
    }
    t
}

fn pub_ack_failure(reason: PubAckReason) -> Option<Outcome> {
    match reason {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
        PubAckReason::NotAuthorized => Some(Outcome::Unauthorized),
        PubAckReason::QuotaExceeded => Some(Outcome::Throttled { retry_after: None }),
        // 0x95 (packet too large) is not decodable by rumqttc 0.25: such a PUBACK ends the
        // connection, and the batch resolves as a timeout.
        _ => Some(Outcome::Rejected(RejectReason::Malformed)),
    }
}

/// The event loop failed: resolve the batch in flight, then tell the transport.
fn connection_ended(
    tracker: &SharedTracker,
    tx: &mpsc::UnboundedSender<Ev>,
    f: Failure,
    e: &dyn std::fmt::Display,
) {
    tracing::debug!(error = %e, "mqtt connection ended");
    lock(tracker).ended(f);
    let _ = tx.send(Ev::Failed(f));
}

async fn drive_v5(
    mut el: rumqttc::v5::EventLoop,
    tx: mpsc::UnboundedSender<Ev>,
    tracker: SharedTracker,
) {
    use rumqttc::v5::{ConnectionError, Event, Incoming};
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                if tx.send(Ev::ConnAck).is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Incoming::PubAck(a))) => {
                lock(&tracker).acked(a.pkid, pub_ack_failure(a.reason));
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => lock(&tracker).published(pkid),
            Ok(_) => {}
            Err(e) => {
                let f = match &e {
                    ConnectionError::ConnectionRefused(
                        ReturnCode5::BadUserNamePassword
                        | ReturnCode5::NotAuthorized
                        | ReturnCode5::BadAuthenticationMethod
                        | ReturnCode5::Banned,
                    ) => Failure::Unauthorized,
                    _ => Failure::Lost,
                };
                return connection_ended(&tracker, &tx, f, &e);
            }
        }
    }
}

async fn drive_v4(
    mut el: rumqttc::EventLoop,
    tx: mpsc::UnboundedSender<Ev>,
    tracker: SharedTracker,
) {
    use rumqttc::{ConnectReturnCode, ConnectionError, Event, Packet};
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if tx.send(Ev::ConnAck).is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::PubAck(a))) => lock(&tracker).acked(a.pkid, None),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => lock(&tracker).published(pkid),
            Ok(_) => {}
            Err(e) => {
                let f = match &e {
                    ConnectionError::ConnectionRefused(
                        ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
                    ) => Failure::Unauthorized,
                    _ => Failure::Lost,
                };
                return connection_ended(&tracker, &tx, f, &e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_batches_own_their_packet_ids() {
        let mut t = Tracker::default();
        let (a_tx, mut a) = tokio::sync::oneshot::channel();
        let (b_tx, mut b) = tokio::sync::oneshot::channel();
        let (c_tx, mut c) = tokio::sync::oneshot::channel();
        let ia = t.open(2, a_tx);
        let ib = t.open(3, b_tx);
        // Written in request order: a's two, then b's three.
        for pkid in [7, 8, 9, 1, 2] {
            t.published(pkid);
        }
        assert_eq!((t.published_of(ia), t.published_of(ib)), (2, 3));
        // PUBACKs in any order; a stale or repeated one counts for nobody.
        t.acked(9, None);
        t.acked(9, None);
        t.acked(42, None);
        t.acked(8, None);
        assert!(a.try_recv().is_err() && b.try_recv().is_err());
        t.acked(7, None);
        assert_eq!(a.try_recv().unwrap(), (Outcome::Delivered, true));
        // b keeps the worst failure of its PUBACKs.
        t.acked(1, Some(Outcome::Rejected(RejectReason::TooLarge)));
        t.acked(2, None);
        assert_eq!(
            b.try_recv().unwrap(),
            (Outcome::Rejected(RejectReason::TooLarge), true)
        );
        // A packet id reused by a later batch belongs to it alone.
        let ic = t.open(2, c_tx);
        t.published(7);
        assert_eq!(t.published_of(ic), 1);
        t.ended(Failure::Lost);
        assert_eq!(c.try_recv().unwrap(), (Outcome::Timeout, false));
        assert!(!t.busy());
        // A batch that wrote nothing before the end was never sent.
        let (d_tx, mut d) = tokio::sync::oneshot::channel();
        t.open(1, d_tx);
        t.ended(Failure::Lost);
        assert_eq!(d.try_recv().unwrap(), (Outcome::Unreachable, false));
    }

    #[test]
    fn iot_hub_topic_encodes() {
        let t = iot_hub_topic("d1", "d1:0:5", &[("unit".into(), "°C & x".into())]);
        assert_eq!(
            t,
            "devices/d1/messages/events/$.mid=d1%3A0%3A5&unit=%C2%B0C%20%26%20x"
        );
    }

    #[test]
    fn worst_failure_wins() {
        let t = Outcome::Throttled { retry_after: None };
        let m = Outcome::Rejected(RejectReason::Malformed);
        assert_eq!(worse(Some(m), t), t);
        assert_eq!(worse(Some(t), m), t);
        assert_eq!(worse(None, Outcome::Unauthorized), Outcome::Unauthorized);
    }
}
