//! The parts of the SDK's configuration ([`crate::config::SdkConfig`]) as data: what
//! [`crate::config`] reads from TOML and what the outbox, the transports and the engine
//! are built from.
//!
//! Secrets are held in [`Secret`], whose `Debug` never shows them.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::client_cert::ClientCert;
use twinhub_core::{Budget, Class, ClassSet, Cost, OnFull};

/// A secret (key, password, token, connection string). `Debug` and `Display` print
/// `<redacted>`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself: only for building credentials, never for logging.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where and how records wait for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxSpec {
    /// Directory of the disk outbox; `None` keeps records in memory only.
    pub path: Option<PathBuf>,
    /// Memory outbox only (`path` is `None`): a directory holding the epoch counter, so
    /// every start gets a higher epoch than any before it (see [`crate::epoch`]). `None`:
    /// each start draws a random epoch, and ids are unique only with high probability.
    pub state_dir: Option<PathBuf>,
    /// Cap on the outbox's size in bytes.
    pub max_bytes: u64,
    /// What to do when it is full.
    pub on_full: OnFull,
    /// When appended records are made durable.
    pub fsync: Fsync,
}

impl Default for OutboxSpec {
    fn default() -> Self {
        OutboxSpec {
            path: None,
            state_dir: None,
            max_bytes: 64 << 20,
            on_full: OnFull::Evict,
            fsync: Fsync::Batch,
        }
    }
}

/// When the disk outbox calls `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// After every record, before `send` returns.
    Always,
    /// Once per group of records accepted together (group commit), before their `send`s
    /// return. The default.
    #[default]
    Batch,
    /// Never explicitly: the OS writes back when it likes (a power loss may lose records).
    Off,
}

/// One hub.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSpec {
    /// Unique name.
    pub name: String,
    /// Share in active-active routing.
    pub weight: u16,
    /// How to reach it.
    pub protocol: ProtocolSpec,
    /// Largest publication in bytes (the hub's limit); `None` uses the protocol's default.
    pub max_batch_bytes: Option<u32>,
    /// Most records per publication; `None` uses the protocol's default.
    pub max_batch_records: Option<u16>,
}

/// Protocol and its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum ProtocolSpec {
    /// Azure Event Hubs REST batch send over HTTPS.
    EventHubs(EventHubsSpec),
    /// Azure IoT Hub over MQTT (device identity).
    IotHub(IotHubSpec),
    /// Any MQTT broker.
    Mqtt(MqttSpec),
    /// A generic HTTPS endpoint taking JSON batches.
    Http(HttpSpec),
    /// A Kafka cluster, or Event Hubs through its Kafka endpoint.
    Kafka(KafkaSpec),
}

/// Event Hubs, from a connection string
/// `Endpoint=sb://{host}/;SharedAccessKeyName=..;SharedAccessKey=..;EntityPath=..`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventHubsSpec {
    /// Namespace host (and port, for the emulator), e.g. `ns.servicebus.windows.net`.
    pub host: String,
    /// The event hub (entity path).
    pub entity: String,
    /// The SAS policy name (`skn`).
    pub key_name: String,
    /// The SAS key text (used as-is as the HMAC key).
    pub key: Secret,
    /// `UseDevelopmentEmulator=true`: plain HTTP to `host` (only for a local emulator).
    pub development_emulator: bool,
    /// Lifetime of each SAS token.
    pub token_ttl: Duration,
    /// What each event's `PartitionKey` is (default: the device id).
    pub partition_key: PartitionKey,
}

/// How records are keyed for partitioning (`partition_key` in an `event-hubs` or `kafka`
/// endpoint table).
///
/// Keying by device keeps one device's records on one partition, in order, and on the
/// same partition number in every region or cluster with as many partitions (Event Hubs
/// and Kafka both hash the key), which lets a consumer dedupe across regions per
/// partition. Without a key the service spreads records over its partitions (higher
/// availability when a partition is busy, no per-device order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartitionKey {
    /// The device id of the record's message id (`partition_key = "device"`, the default).
    #[default]
    Device,
    /// No key (`partition_key = "none"`).
    None,
}

/// IoT Hub device, from `HostName=..;DeviceId=..;SharedAccessKey=..`.
#[derive(Debug, Clone, PartialEq)]
pub struct IotHubSpec {
    /// `{hub}.azure-devices.net` (or `host:port` for a local broker).
    pub host: String,
    /// The device id registered in the hub.
    pub device_id: String,
    /// The device key, base64 (decoded before signing).
    pub key: Secret,
    /// MQTT port (8883).
    pub port: u16,
    /// TLS on (always for a real hub; off only for a local test broker via
    /// `UseDevelopmentEmulator=true`).
    pub tls: bool,
    /// Lifetime of each SAS token; renewed before it expires.
    pub token_ttl: Duration,
    /// `x509=true` in the connection string: the device authenticates with
    /// [`IotHubSpec::client_cert`] instead of a SAS token (`key` is then empty).
    pub x509: bool,
    /// The device certificate and key for X.509 authentication (endpoint settings
    /// `client_cert` with `client_key` or `client_key_env`).
    pub client_cert: Option<ClientCert>,
    /// MQTT directly (port 8883) or MQTT over WebSockets (port 443).
    pub transport: IotHubTransport,
    /// `GatewayHostName` (IoT Edge): the host connected to instead of `host`, whose name
    /// TLS verifies; `host` stays the identity (user name and SAS scope), as Azure's
    /// device SDKs do. `port` is then the gateway's.
    pub gateway_host: Option<String>,
    /// A record on whose publish the hub closed this many accepted connections in a row is
    /// dropped as rejected (malformed) instead of being resent for ever; 0 never drops.
    /// Default [`DEFAULT_REJECT_AFTER_CLOSES`].
    pub reject_after_closes: u8,
}

/// How MQTT reaches IoT Hub (endpoint setting `transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IotHubTransport {
    /// MQTT over TLS, port 8883 (`transport = "mqtt"`, the default).
    #[default]
    Mqtt,
    /// MQTT over WebSockets over TLS, port 443, path `/$iothub/websocket`, subprotocol
    /// `mqtt` (`transport = "websockets"`), for networks that block 8883.
    WebSockets,
}

/// Default of [`IotHubSpec::reject_after_closes`]: three closes in a row on the same
/// record, each on a fresh accepted connection, make it poison; fewer could blame a record
/// for a hub that happened to drop a connection twice.
pub const DEFAULT_REJECT_AFTER_CLOSES: u8 = 3;

/// MQTT version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MqttVersion {
    /// MQTT 5: the message id travels as the user property `message-id`.
    #[default]
    V5,
    /// MQTT 3.1.1: the payload is the envelope `{"id":"..","body":"<base64>"}`.
    V311,
}

/// A generic MQTT broker.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSpec {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS on (`mqtts://`).
    pub tls: bool,
    /// Topic; `{device_id}` is replaced.
    pub topic: String,
    /// Protocol version.
    pub version: MqttVersion,
    /// Client id; default the device id.
    pub client_id: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Secret>,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// A client certificate for brokers that want mutual TLS (`client_cert` with
    /// `client_key` or `client_key_env`); needs `mqtts://`.
    pub client_cert: Option<ClientCert>,
}

/// A generic HTTPS JSON batch endpoint: `POST {url}` with a JSON array of
/// `{"id","body","body_encoding","properties"}` and an `Idempotency-Key` header.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSpec {
    /// The URL to POST to.
    pub url: String,
    /// Extra headers (for example `Authorization`), values secret.
    pub headers: Vec<(String, Secret)>,
    /// A client certificate for servers that want mutual TLS (`client_cert` with
    /// `client_key` or `client_key_env`); needs `https://`.
    pub client_cert: Option<ClientCert>,
}

/// A Kafka cluster (or Event Hubs' Kafka endpoint): records go to one topic, keyed by
/// device id, with the id in the `message-id` header (see
/// [`crate::transport::kafka`]).
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSpec {
    /// Bootstrap brokers as (host, port); metadata names the rest of the cluster.
    pub bootstrap: Vec<(String, u16)>,
    /// The topic.
    pub topic: String,
    /// TLS on (verification always on; private CAs through the top-level `ca_file`).
    pub tls: bool,
    /// SASL credentials, if the cluster asks for them.
    pub sasl: Option<KafkaSasl>,
    /// Compression of each record batch.
    pub compression: KafkaCompression,
    /// The Kafka client id; default `twinhub-{device_id}`.
    pub client_id: Option<String>,
    /// Event Hubs' Kafka endpoint: Azure's documented producer settings apply (see
    /// [`crate::transport::kafka`]).
    pub event_hubs: bool,
    /// The record key: the device id (default) or none.
    pub partition_key: PartitionKey,
}

/// SASL credentials for Kafka.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSasl {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// The user name (`$ConnectionString` for Event Hubs).
    pub username: String,
    /// The password (for Event Hubs, the connection string itself).
    pub password: Secret,
}

/// A SASL mechanism the Kafka transport speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN`: the password travels as is, so only over TLS (or to a loopback broker).
    Plain,
    /// `SCRAM-SHA-256` (RFC 7677).
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    /// The name brokers know it by, e.g. `SCRAM-SHA-256`.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Compression of a Kafka record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KafkaCompression {
    /// None (the default).
    #[default]
    None,
    /// gzip, the only codec Event Hubs' Kafka endpoint accepts.
    Gzip,
}

/// One network path.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkSpec {
    /// Unique name.
    pub name: String,
    /// What it costs.
    pub cost: Cost,
    /// Bytes per window; a costly link without one is never used.
    pub budget: Option<Budget>,
    /// Classes allowed on it.
    pub allow: ClassSet,
    /// For costly links: how long every cheaper route must have been down first.
    pub arm_after: Duration,
    /// Local address or interface to send from.
    pub bind: Option<Bind>,
}

/// How a link is selected at the socket level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// Bind the local address (e.g. `127.0.0.2`). MQTT and IoT Hub connections reach it
    /// through a loopback CONNECT tunnel of the transport's own (rumqttc binds only
    /// interfaces); TLS still runs end to end with the broker's name.
    Addr(IpAddr),
    /// Bind the interface by name (e.g. `eth1`; Linux `SO_BINDTODEVICE`).
    Interface(String),
}

/// The lower-case names of the classes in a set.
pub fn class_names(set: ClassSet) -> Vec<&'static str> {
    Class::ALL
        .iter()
        .filter(|c| set.contains(**c))
        .map(|c| c.name())
        .collect()
}
