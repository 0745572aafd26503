//! Kafka: one engine transmit is one Produce request carrying one record batch to the
//! partition of the device's key. Also Event Hubs through its Kafka endpoint.
//!
//! # Records
//!
//! * key = the device id, so one device stays on one partition (per-device order, and the
//!   same partition in every cluster for consumers that dedupe). The partition is Kafka's
//!   default partitioner's, `toPositive(murmur2(key)) % partitions` ([`partition_for`]),
//!   so other producers and consumers agree on it. With `partition_key = "none"` records
//!   carry no key, and the partition moves on (round robin) at every metadata refresh,
//!   as Kafka's sticky partitioner spreads keyless records;
//! * value = the payload;
//! * headers: `message-id` = the twinhub id, `class` = `critical` | `normal` | `bulk`,
//!   then the record's properties (a property named `message-id` or `class` is skipped:
//!   it must not override the id).
//!
//! # Outcomes
//!
//! The client is this module's own, deliberately small: it never retries, never queues
//! and never backs off, so batching, retries, backoff and failover stay the engine's. It
//! opens a connection per concurrent send (idle ones are reused), asks the cluster for
//! the topic's metadata (kept up to 180 s) and sends the batch to the partition's leader
//! with `acks = all`.
//!
//! | Kafka says | Outcome |
//! |---|---|
//! | no error | `Delivered` |
//! | `MESSAGE_TOO_LARGE`, `RECORD_LIST_TOO_LARGE` | `Rejected(TooLarge)` |
//! | `CORRUPT_MESSAGE`, `INVALID_RECORD`, `INVALID_TIMESTAMP` | `Rejected(Malformed)` |
//! | `*_AUTHORIZATION_FAILED`, SASL refused | `Unauthorized` |
//! | `THROTTLING_QUOTA_EXCEEDED` | `Throttled` (for `throttle_time_ms`) |
//! | `REQUEST_TIMED_OUT`, `NOT_ENOUGH_REPLICAS_AFTER_APPEND` (may be written) | `Timeout` |
//! | `NOT_LEADER_OR_FOLLOWER`, `LEADER_NOT_AVAILABLE`, unknown topic, other errors | `ServerError` (metadata is refreshed) |
//! | no connection to any bootstrap broker or to the leader | `Unreachable` |
//! | the connection failed or stalled after the Produce request was written | `Timeout` |
//!
//! A response with `throttle_time_ms > 0` still reports its own records as the error code
//! says (a throttled broker has appended them; resending would duplicate), and the
//! transport then answers `Throttled { retry_after }` without touching the wire until the
//! broker's delay has passed, so the engine backs off on the same cluster.
//!
//! # Event Hubs
//!
//! `protocol = "kafka"` with an Event Hubs `connection_string` follows Azure's Kafka
//! documentation ([Event Hubs for Apache Kafka](https://learn.microsoft.com/azure/event-hubs/azure-event-hubs-kafka-overview),
//! [recommended configurations](https://learn.microsoft.com/azure/event-hubs/apache-kafka-configurations)):
//! bootstrap `<namespace>:9093`, SASL_SSL with PLAIN, user `$ConnectionString` and the
//! connection string as password, the topic from `EntityPath`; requests wait at least
//! 60 s (`request.timeout.ms` 60000), requests stay under 1,046,528 bytes (default
//! 1,000,000, `max.request.size`), gzip is the only compression accepted, and
//! connections idle for 180 s are closed and re-made (`connections.max.idle.ms` 180000,
//! below the 240 s after which Azure drops idle connections without notice).

mod sasl;
mod wire;

use std::io;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use twinhub_core::{DeviceId, Outcome, RejectReason};

use super::common::{TransportError, plaintext_credentials, push_id};
use super::{BoxFuture, Transport};
use crate::record::Record;
use crate::spec::{Bind, KafkaSpec, PartitionKey, SaslMechanism, Secret};
pub use wire::{murmur2, partition_for};

/// Azure's limit: Event Hubs closes the connection on a request of this many bytes or more.
pub const EVENT_HUBS_MAX_REQUEST: u32 = 1_046_528;
/// Default largest request: Azure's recommended `max.request.size`, also under the
/// default broker limit (`message.max.bytes`, 1 MiB + 12).
pub const DEFAULT_MAX_REQUEST: u32 = 1_000_000;
/// Event Hubs: the shortest request timeout Azure recommends.
pub const EVENT_HUBS_MIN_TIMEOUT: Duration = Duration::from_secs(60);
/// A connection unused this long is closed before the next send (Azure drops idle
/// connections after 240 s; `connections.max.idle.ms` 180000).
pub const MAX_IDLE: Duration = Duration::from_secs(180);
/// Metadata older than this is fetched again (`metadata.max.age.ms` 180000).
pub const METADATA_MAX_AGE: Duration = Duration::from_secs(180);
/// Largest response accepted; a produce or metadata answer is far smaller.
const MAX_RESPONSE: usize = 16 << 20;
/// Idle connections kept per transport.
const MAX_IDLE_CONNS: usize = 8;

/// Kafka error codes this transport tells apart.
mod code {
    pub const NONE: i16 = 0;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const RECORD_LIST_TOO_LARGE: i16 = 18;
    pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    pub const INVALID_TIMESTAMP: i16 = 32;
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
    pub const INVALID_RECORD: i16 = 87;
    pub const THROTTLING_QUOTA_EXCEEDED: i16 = 89;
}

/// The outcome of a Produce response's error code (`throttle_time_ms` is handled apart).
pub fn produce_outcome(error: i16, throttle_ms: i32) -> Outcome {
    use code::*;
    match error {
        NONE => Outcome::Delivered,
        MESSAGE_TOO_LARGE | RECORD_LIST_TOO_LARGE => Outcome::Rejected(RejectReason::TooLarge),
        CORRUPT_MESSAGE | INVALID_RECORD | INVALID_TIMESTAMP => {
            Outcome::Rejected(RejectReason::Malformed)
        }
        TOPIC_AUTHORIZATION_FAILED
        | CLUSTER_AUTHORIZATION_FAILED
        | TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        | SASL_AUTHENTICATION_FAILED => Outcome::Unauthorized,
        THROTTLING_QUOTA_EXCEEDED => Outcome::Throttled {
            retry_after: throttle(throttle_ms),
        },
        // The leader may have appended the batch before the replicas fell behind.
        REQUEST_TIMED_OUT | NOT_ENOUGH_REPLICAS_AFTER_APPEND => Outcome::Timeout,
        // Not leader, leader not available, unknown topic, storage errors, anything
        // unknown: nothing was appended and this cluster cannot take it now.
        _ => Outcome::ServerError,
    }
}

fn throttle(ms: i32) -> Option<twinhub_core::Duration> {
    u64::try_from(ms)
        .ok()
        .filter(|ms| *ms > 0)
        .map(twinhub_core::Duration::from_millis)
}

/// Everything fixed at build time.
struct Settings {
    bootstrap: Vec<(String, u16)>,
    topic: String,
    /// The record key; `None` sends keyless records.
    key: Option<Vec<u8>>,
    tls: Option<tokio_rustls::TlsConnector>,
    sasl: Option<(SaslMechanism, String, Secret)>,
    compression: wire::Compression,
    client_id: String,
    bind: Option<Bind>,
    timeout: Duration,
    produce_timeout_ms: i32,
}

/// Where this device's records go, from metadata.
#[derive(Debug, Clone)]
struct Route {
    partition: i32,
    leader: (String, u16),
    fetched: Instant,
}

#[derive(Default)]
struct State {
    route: Option<Route>,
    idle: Vec<Conn>,
    throttled_until: Option<Instant>,
    /// Keyless records only: advanced at each metadata refresh.
    next_partition: u32,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One broker connection, owned by one send at a time.
struct Conn {
    addr: (String, u16),
    io: Box<dyn Io>,
    correlation: i32,
    produce_v: i16,
    metadata_v: i16,
    last_used: Instant,
}

/// Why a request on an open connection failed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("{0}")]
    Io(io::Error),
    #[error("{0}")]
    Wire(wire::WireError),
}

impl Conn {
    async fn call(
        &mut self,
        client_id: &str,
        key: i16,
        version: i16,
        body: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        self.correlation = self.correlation.wrapping_add(1);
        let frame = wire::frame(key, version, self.correlation, client_id, body);
        self.io.write_all(&frame).await.map_err(CallError::Io)?;
        self.io.flush().await.map_err(CallError::Io)?;
        let mut size = [0u8; 4];
        self.io.read_exact(&mut size).await.map_err(CallError::Io)?;
        let size = usize::try_from(i32::from_be_bytes(size))
            .ok()
            .filter(|n| (4..=MAX_RESPONSE).contains(n))
            .ok_or(CallError::Wire(wire::WireError::Malformed("response size")))?;
        let mut resp = vec![0u8; size];
        self.io.read_exact(&mut resp).await.map_err(CallError::Io)?;
        // Responses come in request order on a connection; another id means confusion.
        if resp[..4] != self.correlation.to_be_bytes() {
            return Err(CallError::Wire(wire::WireError::Malformed(
                "correlation id",
            )));
        }
        self.last_used = Instant::now();
        resp.drain(..4);
        Ok(resp)
    }
}

/// Sends batches to one topic of one Kafka cluster.
pub struct KafkaTransport {
    s: Settings,
    state: Mutex<State>,
}

impl std::fmt::Debug for KafkaTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTransport")
            .field("bootstrap", &self.s.bootstrap)
            .field("topic", &self.s.topic)
            .field("tls", &self.s.tls.is_some())
            .field("sasl", &self.s.sasl.as_ref().map(|(m, u, _)| (m.name(), u)))
            .field("timeout", &self.s.timeout)
            .finish_non_exhaustive()
    }
}

impl KafkaTransport {
    /// A transport for `spec` sending `device`'s records over a link bound as `bind`;
    /// `timeout` bounds each send (raised to 60 s for Event Hubs, as Azure recommends).
    pub fn new(
        spec: &KafkaSpec,
        device: &DeviceId,
        bind: Option<&Bind>,
        tls: std::sync::Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        if spec.bootstrap.is_empty() || spec.bootstrap.iter().any(|(h, _)| h.is_empty()) {
            return Err(TransportError::InvalidSpec(
                "kafka bootstrap needs at least one host:port".into(),
            ));
        }
        if spec.topic.is_empty() || spec.topic.len() > 249 {
            return Err(TransportError::InvalidSpec(
                "kafka topic must be 1 to 249 bytes".into(),
            ));
        }
        if spec.sasl.is_some() && !spec.tls {
            // A password (PLAIN) or a crackable exchange (SCRAM) must not cross a network
            // in the clear; a broker on this machine is fine.
            for (host, _) in &spec.bootstrap {
                plaintext_credentials("SASL without TLS", host)?;
            }
        }
        #[cfg(not(any(target_os = "android", target_os = "fuchsia", target_os = "linux")))]
        if let Some(Bind::Interface(name)) = bind {
            return Err(TransportError::BindUnsupported {
                transport: "Kafka",
                bind: format!("interface {name} on this OS"),
            });
        }
        let timeout = if spec.event_hubs {
            timeout.max(EVENT_HUBS_MIN_TIMEOUT)
        } else {
            timeout
        };
        Ok(KafkaTransport {
            s: Settings {
                bootstrap: spec.bootstrap.clone(),
                topic: spec.topic.clone(),
                key: match spec.partition_key {
                    PartitionKey::Device => Some(device.as_str().as_bytes().to_vec()),
                    PartitionKey::None => None,
                },
                tls: spec.tls.then(|| tokio_rustls::TlsConnector::from(tls)),
                sasl: spec
                    .sasl
                    .as_ref()
                    .map(|s| (s.mechanism, s.username.clone(), s.password.clone())),
                compression: spec.compression,
                client_id: spec
                    .client_id
                    .clone()
                    .unwrap_or_else(|| format!("twinhub-{}", device.as_str())),
                bind: bind.cloned(),
                timeout,
                produce_timeout_ms: i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX),
            },
            // Keyless devices start at different partitions (a hash of the device id).
            state: Mutex::new(State {
                next_partition: partition_for(device.as_str().as_bytes(), u32::MAX),
                ..State::default()
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the route, so the next send asks the cluster again.
    fn invalidate(&self) {
        self.state().route = None;
    }

    async fn send_batch(&self, records: &[Record]) -> Outcome {
        if records.is_empty() {
            return Outcome::Delivered;
        }
        let now = Instant::now();
        if let Some(until) = self.state().throttled_until.filter(|u| *u > now) {
            return Outcome::Throttled {
                retry_after: Some(twinhub_core::Duration::from_millis(
                    u64::try_from((until - now).as_millis()).unwrap_or(u64::MAX),
                )),
            };
        }
        let batch = match self.encode(records) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "kafka batch could not be encoded");
                return Outcome::Rejected(RejectReason::Malformed);
            }
        };
        let written = std::sync::atomic::AtomicBool::new(false);
        match tokio::time::timeout(self.s.timeout, self.attempt(&batch, &written)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                self.invalidate();
                tracing::debug!(topic = %self.s.topic, "kafka send timed out");
                if written.load(std::sync::atomic::Ordering::Relaxed) {
                    Outcome::Timeout
                } else {
                    Outcome::Unreachable
                }
            }
        }
    }

    fn encode(&self, records: &[Record]) -> io::Result<Vec<u8>> {
        // Every id's text in one buffer, and every record's headers in one list, each
        // record's a run of it: a few allocations for the batch, none per record.
        let mut texts = Vec::with_capacity(records.len() * 32);
        let ids: Vec<_> = records
            .iter()
            .map(|r| {
                let from = texts.len();
                push_id(&mut texts, &r.id);
                from..texts.len()
            })
            .collect();
        let mut headers = Vec::with_capacity(2 * records.len());
        let mut runs = Vec::with_capacity(records.len());
        for (r, id) in records.iter().zip(ids) {
            let from = headers.len();
            headers.push(("message-id", &texts[id]));
            headers.push(("class", r.class.name().as_bytes()));
            for (k, v) in &r.properties {
                if k != "message-id" && k != "class" {
                    headers.push((k.as_str(), v.as_bytes()));
                }
            }
            runs.push(from..headers.len());
        }
        let out: Vec<wire::OutRecord<'_>> = records
            .iter()
            .zip(runs)
            .map(|(r, run)| wire::OutRecord {
                key: self.s.key.as_deref(),
                value: &r.body,
                headers: &headers[run],
            })
            .collect();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let batch = wire::encode_batch(&out, now_ms, self.s.compression)?;
        Ok(batch)
    }

    async fn attempt(&self, batch: &[u8], written: &std::sync::atomic::AtomicBool) -> Outcome {
        let route = match self.route().await {
            Ok(r) => r,
            Err(o) => return o,
        };
        let mut conn = match self.conn(&route.leader).await {
            Ok(c) => c,
            Err(o) => {
                self.invalidate();
                return o;
            }
        };
        let body = wire::encode_produce(
            &self.s.topic,
            route.partition,
            self.s.produce_timeout_ms,
            batch,
        );
        written.store(true, std::sync::atomic::Ordering::Relaxed);
        let version = conn.produce_v;
        let resp = match conn
            .call(&self.s.client_id, wire::PRODUCE, version, &body)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(leader = ?route.leader, error = %e, "kafka produce failed");
                self.invalidate();
                return Outcome::Timeout;
            }
        };
        let result = match wire::decode_produce(version, &self.s.topic, route.partition, &resp) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "kafka produce response unreadable");
                self.invalidate();
                return Outcome::Timeout;
            }
        };
        self.put_back(conn);
        let outcome = produce_outcome(result.error, result.throttle_ms);
        if result.throttle_ms > 0 {
            let until = Instant::now() + Duration::from_millis(result.throttle_ms as u64);
            self.state().throttled_until = Some(until);
        }
        if !matches!(
            outcome,
            Outcome::Delivered | Outcome::Rejected(_) | Outcome::Throttled { .. }
        ) {
            tracing::debug!(topic = %self.s.topic, error = result.error, ?outcome, "kafka produce not delivered");
            self.invalidate();
        }
        outcome
    }

    /// The partition and its leader, from cached metadata or a fresh Metadata request to
    /// the bootstrap brokers (tried in order).
    async fn route(&self) -> Result<Route, Outcome> {
        if let Some(r) = self.state().route.clone()
            && r.fetched.elapsed() < METADATA_MAX_AGE
        {
            return Ok(r);
        }
        let mut failure = Outcome::Unreachable;
        for addr in &self.s.bootstrap {
            let mut conn = match self.conn(addr).await {
                Ok(c) => c,
                Err(o) => {
                    failure = worse(failure, o);
                    continue;
                }
            };
            let body = wire::encode_metadata(conn.metadata_v, &self.s.topic);
            let version = conn.metadata_v;
            let meta = match conn
                .call(&self.s.client_id, wire::METADATA, version, &body)
                .await
            {
                Ok(resp) => wire::decode_metadata(version, &self.s.topic, &resp),
                Err(e) => {
                    tracing::debug!(broker = ?addr, error = %e, "kafka metadata failed");
                    continue;
                }
            };
            self.put_back(conn);
            let meta = match meta {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(broker = ?addr, error = %e, "kafka metadata unreadable");
                    failure = worse(failure, Outcome::ServerError);
                    continue;
                }
            };
            let route = self.pick(&meta)?;
            self.state().route = Some(route.clone());
            return Ok(route);
        }
        Err(failure)
    }

    fn pick(&self, meta: &wire::Metadata) -> Result<Route, Outcome> {
        let topic = meta.topic.as_ref().ok_or(Outcome::ServerError)?;
        match topic.error {
            code::NONE => {}
            code::TOPIC_AUTHORIZATION_FAILED => return Err(Outcome::Unauthorized),
            e => {
                // Unknown topic (3), leader not available while it is created (5), ...:
                // this cluster cannot take the records now.
                tracing::debug!(topic = %self.s.topic, error = e, unknown = e == code::UNKNOWN_TOPIC_OR_PARTITION, "kafka topic not usable");
                return Err(Outcome::ServerError);
            }
        }
        let count = u32::try_from(topic.partitions.len()).unwrap_or(0);
        if count == 0 {
            return Err(Outcome::ServerError);
        }
        let p = match &self.s.key {
            Some(key) => partition_for(key, count),
            None => {
                // Keyless: the next partition at each refresh, so keyless devices spread.
                let mut state = self.state();
                state.next_partition = state.next_partition.wrapping_add(1);
                state.next_partition % count
            }
        } as usize;
        let (_, index, leader) = topic.partitions[p];
        // Partitions are numbered 0..count; a gap would put the key elsewhere than other
        // producers put it.
        if index != p as i32 || leader < 0 {
            return Err(Outcome::ServerError);
        }
        let broker = meta
            .brokers
            .iter()
            .find(|b| b.node == leader)
            .ok_or(Outcome::ServerError)?;
        Ok(Route {
            partition: index,
            leader: (broker.host.clone(), broker.port),
            fetched: Instant::now(),
        })
    }

    /// An idle connection to `addr` not idle too long, else a new one.
    async fn conn(&self, addr: &(String, u16)) -> Result<Conn, Outcome> {
        loop {
            let found = {
                let mut st = self.state();
                st.idle
                    .iter()
                    .position(|c| c.addr == *addr)
                    .map(|i| st.idle.swap_remove(i))
            };
            match found {
                Some(c) if c.last_used.elapsed() < MAX_IDLE => return Ok(c),
                Some(_) => continue, // dropped: Azure may have cut it silently
                None => break,
            }
        }
        self.open(addr).await
    }

    fn put_back(&self, conn: Conn) {
        let mut st = self.state();
        if st.idle.len() < MAX_IDLE_CONNS {
            st.idle.push(conn);
        }
    }

    async fn open(&self, addr: &(String, u16)) -> Result<Conn, Outcome> {
        let tcp = connect_tcp(&addr.0, addr.1, self.s.bind.as_ref())
            .await
            .map_err(|e| {
                tracing::debug!(broker = ?addr, error = %e, "kafka connect failed");
                Outcome::Unreachable
            })?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.s.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(addr.0.clone())
                    .map_err(|_| Outcome::Unreachable)?;
                Box::new(tls.connect(name, tcp).await.map_err(|e| {
                    tracing::debug!(broker = ?addr, error = %e, "kafka TLS handshake failed");
                    Outcome::Unreachable
                })?)
            }
        };
        let mut conn = Conn {
            addr: addr.clone(),
            io,
            correlation: 0,
            produce_v: 3,
            metadata_v: 1,
            last_used: Instant::now(),
        };
        let versions = conn
            .call(&self.s.client_id, wire::API_VERSIONS, 0, &[])
            .await
            .ok()
            .and_then(|b| wire::decode_api_versions(&b).ok())
            .ok_or(Outcome::Unreachable)?;
        let (Some(produce), Some(metadata)) = (
            versions.pick(wire::PRODUCE, 3..=7),
            versions.pick(wire::METADATA, 1..=4),
        ) else {
            tracing::warn!(broker = ?addr, "kafka broker lacks Produce v3+ or Metadata v1+");
            return Err(Outcome::ServerError);
        };
        conn.produce_v = produce;
        conn.metadata_v = metadata;
        if let Some((mechanism, user, password)) = &self.s.sasl {
            self.authenticate(&mut conn, *mechanism, user, password)
                .await?;
        }
        Ok(conn)
    }

    async fn authenticate(
        &self,
        conn: &mut Conn,
        mechanism: SaslMechanism,
        user: &str,
        password: &Secret,
    ) -> Result<(), Outcome> {
        let id = &self.s.client_id;
        let lost = |e: CallError| {
            tracing::debug!(error = %e, "kafka SASL exchange failed");
            Outcome::Unreachable
        };
        let mut w = wire::Writer::default();
        w.string(mechanism.name());
        let resp = conn
            .call(id, wire::SASL_HANDSHAKE, 1, &w.buf)
            .await
            .map_err(lost)?;
        let (error, offered) =
            wire::decode_sasl_handshake(&resp).map_err(|_| Outcome::ServerError)?;
        if error != code::NONE {
            tracing::warn!(
                mechanism = mechanism.name(),
                ?offered,
                "kafka broker refused the SASL mechanism"
            );
            return Err(Outcome::Unauthorized);
        }
        let mut step = async |bytes: &[u8]| -> Result<Vec<u8>, Outcome> {
            let mut w = wire::Writer::default();
            w.bytes(bytes);
            let resp = conn
                .call(id, wire::SASL_AUTHENTICATE, 0, &w.buf)
                .await
                .map_err(lost)?;
            let (error, message, data) =
                wire::decode_sasl_authenticate(&resp).map_err(|_| Outcome::ServerError)?;
            if error != code::NONE {
                // The broker's message names the reason, never our secret.
                tracing::warn!(
                    error,
                    message = message.as_deref().unwrap_or(""),
                    "kafka SASL authentication failed"
                );
                return Err(Outcome::Unauthorized);
            }
            Ok(data)
        };
        match mechanism {
            SaslMechanism::Plain => {
                step(&sasl::plain(user, password.expose())).await?;
            }
            SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
                let nonce = sasl::Scram::random_nonce().map_err(|_| Outcome::Unreachable)?;
                let mut scram = sasl::Scram::new(mechanism, user, nonce);
                let server_first = step(&scram.client_first()).await?;
                let fin = scram
                    .client_final(&server_first, password.expose())
                    .map_err(|e| {
                        tracing::warn!(error = %e, "kafka SCRAM exchange refused");
                        Outcome::Unauthorized
                    })?;
                let server_final = step(&fin).await?;
                scram.verify_server(&server_final).map_err(|e| {
                    tracing::warn!(error = %e, "kafka SCRAM server not verified");
                    Outcome::Unauthorized
                })?;
            }
        }
        Ok(())
    }
}

/// The more telling of two connection failures: credentials beat a broken cluster, which
/// beats an unreachable one.
fn worse(a: Outcome, b: Outcome) -> Outcome {
    let rank = |o: &Outcome| match o {
        Outcome::Unauthorized => 2,
        Outcome::ServerError => 1,
        _ => 0,
    };
    if rank(&b) > rank(&a) { b } else { a }
}

/// Resolves `host` afresh (never a cached address) and connects from the link's binding.
async fn connect_tcp(host: &str, port: u16, bind: Option<&Bind>) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        match bind {
            None => {}
            Some(Bind::Addr(ip)) => {
                if ip.is_ipv4() != addr.is_ipv4() {
                    continue;
                }
                socket.bind(std::net::SocketAddr::new(*ip, 0))?;
            }
            #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
            Some(Bind::Interface(name)) => socket.bind_device(Some(name.as_bytes()))?,
            #[cfg(not(any(target_os = "android", target_os = "fuchsia", target_os = "linux")))]
            Some(Bind::Interface(_)) => {
                return Err(io::Error::new(io::ErrorKind::Unsupported, "bind interface"));
            }
        }
        match socket.connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "no address of the link's family")
    }))
}

impl Transport for KafkaTransport {
    fn send<'a>(&'a self, records: &'a [Record]) -> BoxFuture<'a, Outcome> {
        Box::pin(self.send_batch(records))
    }

    fn reset(&self) {
        // Dropped connections and metadata: the next send resolves and connects anew.
        let mut st = self.state();
        st.route = None;
        st.idle.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_map_to_outcomes() {
        use Outcome::*;
        let cases = [
            (0, Delivered),
            (10, Rejected(RejectReason::TooLarge)),
            (18, Rejected(RejectReason::TooLarge)),
            (2, Rejected(RejectReason::Malformed)),
            (87, Rejected(RejectReason::Malformed)),
            (29, Unauthorized),
            (31, Unauthorized),
            (7, Timeout),
            (20, Timeout),
            (6, ServerError),
            (5, ServerError),
            (3, ServerError),
            (19, ServerError),
            (-1, ServerError),
            (1234, ServerError),
        ];
        for (code, want) in cases {
            assert_eq!(produce_outcome(code, 0), want, "error {code}");
        }
        assert_eq!(
            produce_outcome(89, 1500),
            Throttled {
                retry_after: Some(twinhub_core::Duration::from_millis(1500))
            }
        );
        assert_eq!(produce_outcome(89, 0), Throttled { retry_after: None });
        // A throttled success is still a success: the records were appended.
        assert_eq!(produce_outcome(0, 1500), Delivered);
    }

    #[test]
    fn metadata_picks_the_keys_partition_or_says_why_not() {
        let spec = KafkaSpec {
            bootstrap: vec![("127.0.0.1".into(), 9092)],
            topic: "t".into(),
            tls: false,
            sasl: None,
            compression: wire::Compression::None,
            client_id: None,
            event_hubs: false,
            partition_key: Default::default(),
        };
        let device = DeviceId::new("foobar").unwrap();
        let tls = crate::transport::tls_config(None).unwrap();
        let t = KafkaTransport::new(&spec, &device, None, tls, Duration::from_secs(1)).unwrap();
        let broker = |node| wire::Broker {
            node,
            host: format!("b{node}"),
            port: 9092,
        };
        let meta = |error, partitions: Vec<(i16, i32, i32)>| wire::Metadata {
            brokers: vec![broker(1), broker(2)],
            topic: Some(wire::TopicMetadata { error, partitions }),
        };
        // murmur2("foobar") puts it on partition 6 of 10 (Kafka's own arithmetic).
        let ten: Vec<_> = (0..10).map(|i| (0, i, 1 + i % 2)).collect();
        let r = t.pick(&meta(0, ten.clone())).unwrap();
        assert_eq!((r.partition, r.leader.0.as_str()), (6, "b1"));
        assert_eq!(t.pick(&meta(3, vec![])).unwrap_err(), Outcome::ServerError);
        assert_eq!(
            t.pick(&meta(5, ten.clone())).unwrap_err(),
            Outcome::ServerError
        );
        assert_eq!(
            t.pick(&meta(29, vec![])).unwrap_err(),
            Outcome::Unauthorized
        );
        let mut leaderless = ten.clone();
        leaderless[6].2 = -1;
        assert_eq!(
            t.pick(&meta(0, leaderless)).unwrap_err(),
            Outcome::ServerError
        );
        let mut unknown_broker = ten;
        unknown_broker[6].2 = 9;
        assert_eq!(
            t.pick(&meta(0, unknown_broker)).unwrap_err(),
            Outcome::ServerError
        );
        let none = wire::Metadata {
            brokers: vec![],
            topic: None,
        };
        assert_eq!(t.pick(&none).unwrap_err(), Outcome::ServerError);
    }

    #[test]
    fn failures_rank() {
        use Outcome::*;
        assert_eq!(worse(Unreachable, ServerError), ServerError);
        assert_eq!(worse(Unauthorized, ServerError), Unauthorized);
        assert_eq!(worse(Unreachable, Unreachable), Unreachable);
    }
}
