//! [`SdkConfigBuilder`]: the configuration file's settings, set in code.
//!
//! The builder fills the same raw structures serde fills from a TOML file
//! ([`super::raw`]) and hands them to the same conversion and validation, so a setting
//! means the same, and fails with the same [`ConfigError`] (kind and key path, without a
//! line), whichever way it was given.
//!
//! Adding a key: a field in [`super::raw`], its conversion in [`super::file`], and one
//! setter here that stores the value with [`code`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use toml::Value;
use twinhub_core::{Budget, Class, ClassSet, Cost, OnFull, Routing, Timings};

use super::SdkConfig;
use super::azure::PARTITION_KEYS;
use super::raw::{
    COMPRESSION, COST, FSYNC, IOT_HUB_TRANSPORT, ON_FULL, ROUTING, RawEndpoint, RawFile, RawLink,
    RawOutbox, RawTimings, RawTtl, S, SASL_MECHANISM, word_for,
};
use super::{ConfigError, ErrorKind};
use crate::spec::{
    Bind, Fsync, IotHubTransport, KafkaCompression, MqttVersion, PartitionKey, SaslMechanism,
    Secret, class_names,
};

/// A value set in code: it has no place in a file, so its span is empty.
fn code<T>(value: T) -> Option<S<T>> {
    Some(S::new(0..0, value))
}

/// A value that the file format cannot express, kept until `build` reports it.
type Problem = (String, String);

/// A duration as the file writes it. The engine counts milliseconds, so a finer duration
/// is refused rather than silently rounded.
fn duration(key: &str, d: Duration, problem: &mut Option<Problem>) -> String {
    if !d.subsec_nanos().is_multiple_of(1_000_000) && problem.is_none() {
        *problem = Some((
            key.to_owned(),
            format!("{d:?} is finer than the millisecond the engine counts in"),
        ));
    }
    format!("{}ms", d.as_millis())
}

/// A path as the file writes it; the file format holds UTF-8 paths only.
fn path_text(key: &str, p: PathBuf, problem: &mut Option<Problem>) -> String {
    p.into_os_string().into_string().unwrap_or_else(|p| {
        if problem.is_none() {
            *problem = Some((key.to_owned(), "the path is not valid UTF-8".to_owned()));
        }
        p.to_string_lossy().into_owned()
    })
}

/// Where a secret comes from: the value itself, an environment variable read at `build`,
/// or a file read at `build` (its trailing newline dropped) — the file's `X`, `X_env` and
/// `X_file` keys.
///
/// A `&str` or `String` converts to [`SecretSource::Value`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SecretSource {
    /// The secret itself.
    Value(Secret),
    /// The name of an environment variable holding it.
    Env(String),
    /// A file holding it.
    File(PathBuf),
}

impl SecretSource {
    /// The secret from the environment variable `var`, read when the config is built.
    pub fn env(var: impl Into<String>) -> Self {
        SecretSource::Env(var.into())
    }
    /// The secret from the file at `path`, read when the config is built.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        SecretSource::File(path.into())
    }

    /// The file's three keys (`X`, `X_env`, `X_file`); exactly one is set.
    fn raw(self, key: &str, problem: &mut Option<Problem>) -> [Option<S<String>>; 3] {
        match self {
            SecretSource::Value(s) => [code(s.expose().to_owned()), None, None],
            SecretSource::Env(var) => [None, code(var), None],
            SecretSource::File(p) => [None, None, code(path_text(key, p, problem))],
        }
    }
}

impl From<Secret> for SecretSource {
    fn from(s: Secret) -> Self {
        SecretSource::Value(s)
    }
}
impl From<String> for SecretSource {
    fn from(s: String) -> Self {
        SecretSource::Value(Secret::new(s))
    }
}
impl From<&str> for SecretSource {
    fn from(s: &str) -> Self {
        SecretSource::Value(Secret::new(s))
    }
}

/// Kafka's `security.protocol`: whether the connection uses TLS and SASL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KafkaSecurity {
    /// Neither (the default; for a local broker).
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL without TLS (a local broker only: PLAIN would send the password in clear).
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl KafkaSecurity {
    fn word(self) -> &'static str {
        match self {
            KafkaSecurity::Plaintext => "plaintext",
            KafkaSecurity::Ssl => "ssl",
            KafkaSecurity::SaslPlaintext => "sasl_plaintext",
            KafkaSecurity::SaslSsl => "sasl_ssl",
        }
    }
}

/// Builds an [`SdkConfig`] in code: every key of the configuration file (see
/// [`crate::config`]) has a setter, with the file's defaults, and [`build`](Self::build)
/// runs the file's validation, failing with the same [`ConfigError`] (kind and key path
/// such as `endpoint[1].topic`; no line).
///
/// ```
/// use std::time::Duration;
/// use twinhub::config::{EndpointBuilder, LinkBuilder, SecretSource};
/// use twinhub::{Budget, Class, ClassSet, Cost, EngineDuration, SdkConfig};
///
/// let config = SdkConfig::builder("sensor-0001")
///     .outbox_path("/var/lib/twinhub/sensor-0001")
///     .outbox_max_bytes(256 << 20)
///     .endpoint(EndpointBuilder::event_hubs(
///         "primary",
///         "Endpoint=sb://ns-east.servicebus.windows.net/;SharedAccessKeyName=send;\
///          SharedAccessKey=...;EntityPath=telemetry",
///     ))
///     .endpoint(
///         EndpointBuilder::mqtt("secondary", "mqtts://broker.central.example:8883", "telemetry/{device_id}")
///             .password(SecretSource::env("BROKER_PASSWORD")),
///     )
///     .link(LinkBuilder::new("wan", Cost::Free))
///     .link(
///         LinkBuilder::new("satellite", Cost::Costly)
///             .budget(Budget { bytes: 2 << 20, window: EngineDuration::from_days(1) })
///             .allow(ClassSet::only(Class::Critical))
///             .arm_after(Duration::from_secs(15 * 60)),
///     )
///     .build_with_env(|var| (var == "BROKER_PASSWORD").then(|| "s3cret".to_owned()))?;
/// assert_eq!(config.endpoints.len(), 2);
///
/// // The file's checks, the file's errors.
/// let err = SdkConfig::builder("d")
///     .endpoint(EndpointBuilder::mqtt("m", "mqtt://127.0.0.1:1883", "a/#"))
///     .build()
///     .unwrap_err();
/// assert_eq!(err.key.as_deref(), Some("endpoint[0].topic"));
/// # Ok::<(), twinhub::config::ConfigError>(())
/// ```
#[must_use = "a builder does nothing until `build`"]
pub struct SdkConfigBuilder {
    raw: RawFile,
    problem: Option<Problem>,
}

impl fmt::Debug for SdkConfigBuilder {
    // The raw values hold secrets, so only the shape is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdkConfigBuilder")
            .field("endpoints", &self.raw.endpoint.len())
            .field("links", &self.raw.link.len())
            .finish_non_exhaustive()
    }
}

impl SdkConfig {
    /// A builder for a configuration in code, the counterpart of the TOML file: see
    /// [`SdkConfigBuilder`].
    pub fn builder(device_id: impl Into<String>) -> SdkConfigBuilder {
        SdkConfigBuilder {
            raw: RawFile {
                device_id: code(device_id.into()),
                ..RawFile::default()
            },
            problem: None,
        }
    }
}

impl SdkConfigBuilder {
    fn outbox(&mut self) -> &mut RawOutbox {
        self.raw.outbox.get_or_insert_with(RawOutbox::default)
    }

    /// `routing`: how records are spread over endpoints (default active-passive).
    pub fn routing(mut self, routing: Routing) -> Self {
        self.raw.routing = code(word_for(ROUTING, &routing).to_owned());
        self
    }

    /// `ca_file`: extra PEM roots trusted besides the web PKI (verification stays on).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.raw.ca_file = code(path_text("ca_file", path.into(), &mut self.problem));
        self
    }

    /// `outbox.path`: a disk outbox in this directory (default: memory only).
    pub fn outbox_path(mut self, path: impl Into<PathBuf>) -> Self {
        let p = path_text("outbox.path", path.into(), &mut self.problem);
        self.outbox().path = code(p);
        self
    }

    /// `outbox.state_dir`: a memory outbox's epoch counter lives here (see
    /// [`crate::epoch`]); refused together with [`outbox_path`](Self::outbox_path).
    pub fn outbox_state_dir(mut self, path: impl Into<PathBuf>) -> Self {
        let p = path_text("outbox.state_dir", path.into(), &mut self.problem);
        self.outbox().state_dir = code(p);
        self
    }

    /// `outbox.max_bytes`: the outbox's cap in bytes (default 64 MiB).
    pub fn outbox_max_bytes(mut self, bytes: u64) -> Self {
        // A string, so sizes beyond i64 reach the file's range check as they would there.
        self.outbox().max_bytes = code(Value::String(bytes.to_string()));
        self
    }

    /// `outbox.on_full`: what a full outbox does (default evict).
    pub fn outbox_on_full(mut self, policy: OnFull) -> Self {
        self.outbox().on_full = code(word_for(ON_FULL, &policy).to_owned());
        self
    }

    /// `outbox.fsync`: when a disk outbox makes records durable (default batch).
    pub fn outbox_fsync(mut self, fsync: Fsync) -> Self {
        self.outbox().fsync = code(word_for(FSYNC, &fsync).to_owned());
        self
    }

    /// `[ttl]`: how long records of `class` may wait (default 30 days each).
    pub fn ttl(mut self, class: Class, ttl: Duration) -> Self {
        let text = duration(&format!("ttl.{}", class.name()), ttl, &mut self.problem);
        let t = self.raw.ttl.get_or_insert_with(RawTtl::default);
        let slot = match class {
            Class::Critical => &mut t.critical,
            Class::Normal => &mut t.normal,
            Class::Bulk => &mut t.bulk,
        };
        *slot = code(text);
        self
    }

    /// `[timings]`: the engine's timings, all of them (start from `Timings::default()`).
    pub fn timings(mut self, t: Timings) -> Self {
        let ms = |d: twinhub_core::Duration| code(format!("{}ms", d.as_millis()));
        self.raw.timings = Some(RawTimings {
            trip_failures: code(i64::from(t.trip_failures)),
            trip_after: ms(t.trip_after),
            retry_base: ms(t.retry_base),
            probe_first: ms(t.probe_first),
            probe_max: ms(t.probe_max),
            failback_probes: code(i64::from(t.failback_probes)),
            min_dwell: ms(t.min_dwell),
            request_timeout: ms(t.request_timeout),
            throttle_backoff: ms(t.throttle_backoff),
            throttle_failover_after: ms(t.throttle_failover_after),
            linger: ms(t.linger),
        });
        self
    }

    /// `[[endpoint]]`: the next hub, in failover priority order.
    pub fn endpoint(mut self, endpoint: EndpointBuilder) -> Self {
        let index = self.raw.endpoint.len();
        if let (None, Some((key, message))) = (&self.problem, endpoint.problem) {
            self.problem = Some((format!("endpoint[{index}].{key}"), message));
        }
        self.raw.endpoint.push(S::new(0..0, endpoint.raw));
        self
    }

    /// `[[link]]`: the next network path.
    pub fn link(mut self, link: LinkBuilder) -> Self {
        let index = self.raw.link.len();
        if let (None, Some((key, message))) = (&self.problem, link.problem) {
            self.problem = Some((format!("link[{index}].{key}"), message));
        }
        self.raw.link.push(S::new(0..0, link.raw));
        self
    }

    /// Validates and builds the configuration, reading `SecretSource::Env` secrets from the
    /// process environment and `SecretSource::File` ones from their files (relative paths
    /// from the working directory).
    pub fn build(self) -> Result<SdkConfig, ConfigError> {
        self.build_with_env(|var| std::env::var(var).ok())
    }

    /// Like [`build`](Self::build), but environment secrets come from `env`.
    pub fn build_with_env(
        self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<SdkConfig, ConfigError> {
        if let Some((key, message)) = self.problem {
            return Err(ConfigError::new(ErrorKind::Invalid, key, message));
        }
        super::finish(self.raw, None, &env, None)
    }
}

/// One `[[endpoint]]`: a constructor per protocol takes what that protocol requires, and
/// setters the optional keys. A setter for a key the protocol does not take (a `topic` on
/// an `http` endpoint) fails at `build`, as the key would in a file.
#[must_use = "an endpoint does nothing until given to `SdkConfigBuilder::endpoint`"]
pub struct EndpointBuilder {
    raw: RawEndpoint,
    problem: Option<Problem>,
}

impl fmt::Debug for EndpointBuilder {
    // The raw values hold secrets (connection strings, passwords, headers).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |v: &Option<S<String>>| v.as_ref().map(|s| s.get_ref().clone());
        f.debug_struct("EndpointBuilder")
            .field("name", &text(&self.raw.name))
            .field("protocol", &text(&self.raw.protocol))
            .finish_non_exhaustive()
    }
}

impl EndpointBuilder {
    fn new(name: impl Into<String>, protocol: &str) -> Self {
        EndpointBuilder {
            raw: RawEndpoint {
                name: code(name.into()),
                protocol: code(protocol.to_owned()),
                ..RawEndpoint::default()
            },
            problem: None,
        }
    }

    fn with_connection_string(mut self, cs: SecretSource) -> Self {
        let [direct, env, file] = cs.raw("connection_string", &mut self.problem);
        self.raw.connection_string = direct;
        self.raw.connection_string_env = env;
        self.raw.connection_string_file = file;
        self
    }

    /// `protocol = "event-hubs"` with its `connection_string`, as Azure or the emulator
    /// prints it.
    pub fn event_hubs(name: impl Into<String>, connection_string: impl Into<SecretSource>) -> Self {
        Self::new(name, "event-hubs").with_connection_string(connection_string.into())
    }

    /// `protocol = "iot-hub"` with the device's `connection_string`.
    pub fn iot_hub(name: impl Into<String>, connection_string: impl Into<SecretSource>) -> Self {
        Self::new(name, "iot-hub").with_connection_string(connection_string.into())
    }

    /// `protocol = "mqtt"`: `url` (`mqtts://host:8883` or `mqtt://host:1883`) and `topic`
    /// (`{device_id}` is replaced).
    pub fn mqtt(name: impl Into<String>, url: impl Into<String>, topic: impl Into<String>) -> Self {
        let mut e = Self::new(name, "mqtt");
        e.raw.url = code(url.into());
        e.raw.topic = code(topic.into());
        e
    }

    /// `protocol = "http"`: JSON batches POSTed to `url`.
    pub fn http(name: impl Into<String>, url: impl Into<String>) -> Self {
        let mut e = Self::new(name, "http");
        e.raw.url = code(url.into());
        e
    }

    /// `protocol = "kafka"`: `bootstrap` (`"host:port,host:port"`) and `topic`.
    pub fn kafka(
        name: impl Into<String>,
        bootstrap: impl Into<String>,
        topic: impl Into<String>,
    ) -> Self {
        let mut e = Self::new(name, "kafka");
        e.raw.bootstrap = code(bootstrap.into());
        e.raw.topic = code(topic.into());
        e
    }

    /// `protocol = "kafka"` through Event Hubs' Kafka endpoint: host, TLS, SASL and topic
    /// all come from the namespace's `connection_string`.
    pub fn kafka_event_hubs(
        name: impl Into<String>,
        connection_string: impl Into<SecretSource>,
    ) -> Self {
        Self::new(name, "kafka").with_connection_string(connection_string.into())
    }

    /// `weight`: the share in active-active routing (default 1).
    pub fn weight(mut self, weight: u16) -> Self {
        self.raw.weight = code(i64::from(weight));
        self
    }

    /// `max_batch_bytes`: the hub's publication limit in bytes.
    pub fn max_batch_bytes(mut self, bytes: u64) -> Self {
        self.raw.max_batch_bytes = code(Value::String(bytes.to_string()));
        self
    }

    /// `max_batch_records`: most records per publication (1 or more).
    pub fn max_batch_records(mut self, records: u16) -> Self {
        self.raw.max_batch_records = code(i64::from(records));
        self
    }

    /// `version` (mqtt): the MQTT version (default 5).
    pub fn version(mut self, version: MqttVersion) -> Self {
        self.raw.version = code(match version {
            MqttVersion::V5 => Value::Integer(5),
            MqttVersion::V311 => Value::String("3.1.1".to_owned()),
        });
        self
    }

    /// `client_id` (mqtt, kafka): default the device id (kafka: `twinhub-{device_id}`).
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.raw.client_id = code(client_id.into());
        self
    }

    /// `username` (mqtt, kafka SASL).
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.raw.username = code(username.into());
        self
    }

    /// `password` (mqtt, kafka SASL).
    pub fn password(mut self, password: impl Into<SecretSource>) -> Self {
        let [direct, env, file] = password.into().raw("password", &mut self.problem);
        self.raw.password = direct;
        self.raw.password_env = env;
        self.raw.password_file = file;
        self
    }

    /// `keep_alive` (mqtt): whole seconds, 0 for none (default 30 s).
    pub fn keep_alive(mut self, keep_alive: Duration) -> Self {
        self.raw.keep_alive = code(duration("keep_alive", keep_alive, &mut self.problem));
        self
    }

    /// `[endpoint.headers]` (http): one header, e.g. `Authorization`; setting a header
    /// again replaces it.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<SecretSource>) -> Self {
        let name = name.into();
        let key = format!("headers.{name}");
        let values = value.into().raw(&key, &mut self.problem);
        let headers = self
            .raw
            .headers
            .get_or_insert_with(|| S::new(0..0, BTreeMap::new()))
            .get_mut();
        for (suffix, value) in ["", "_env", "_file"].into_iter().zip(values) {
            let k = format!("{name}{suffix}");
            match value {
                Some(v) => headers.insert(k, v),
                None => headers.remove(&k),
            };
        }
        self
    }

    /// `security_protocol` (kafka): TLS and SASL (default plaintext).
    pub fn security_protocol(mut self, security: KafkaSecurity) -> Self {
        self.raw.security_protocol = code(security.word().to_owned());
        self
    }

    /// `sasl_mechanism` (kafka): with [`username`](Self::username) and
    /// [`password`](Self::password).
    pub fn sasl_mechanism(mut self, mechanism: SaslMechanism) -> Self {
        self.raw.sasl_mechanism = code(word_for(SASL_MECHANISM, &mechanism).to_owned());
        self
    }

    /// `compression` (kafka): of each record batch (default none).
    pub fn compression(mut self, compression: KafkaCompression) -> Self {
        self.raw.compression = code(word_for(COMPRESSION, &compression).to_owned());
        self
    }

    /// `client_cert` (iot-hub, mqtt, http): a PEM file with the client certificate, then
    /// any intermediates, for X.509 device authentication or mutual TLS.
    pub fn client_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.raw.client_cert = code(path_text("client_cert", path.into(), &mut self.problem));
        self
    }

    /// `client_key`: a PEM file holding the client certificate's private key.
    pub fn client_key(mut self, path: impl Into<PathBuf>) -> Self {
        self.raw.client_key = code(path_text("client_key", path.into(), &mut self.problem));
        self
    }

    /// `client_key_env`: the environment variable holding the private key's PEM, instead
    /// of [`client_key`](Self::client_key).
    pub fn client_key_env(mut self, var: impl Into<String>) -> Self {
        self.raw.client_key_env = code(var.into());
        self
    }

    /// `hub` (event-hubs, kafka on Event Hubs): the event hub's name, for a namespace-level
    /// connection string that has no `EntityPath`.
    pub fn hub(mut self, hub: impl Into<String>) -> Self {
        self.raw.hub = code(hub.into());
        self
    }

    /// `partition_key` (event-hubs, kafka): the device id (the default, per-device order and
    /// the same partition in both regions) or none.
    pub fn partition_key(mut self, key: PartitionKey) -> Self {
        self.raw.partition_key = code(word_for(&PARTITION_KEYS, &key).to_owned());
        self
    }

    /// `transport` (iot-hub): MQTT on 8883 (the default) or MQTT over WebSockets on 443.
    pub fn transport(mut self, transport: IotHubTransport) -> Self {
        self.raw.transport = code(word_for(IOT_HUB_TRANSPORT, &transport).to_owned());
        self
    }
}

/// One `[[link]]`. Costly links default to critical records only and `arm_after` 15
/// minutes, and stay unused without a [`budget`](Self::budget).
#[must_use = "a link does nothing until given to `SdkConfigBuilder::link`"]
pub struct LinkBuilder {
    raw: RawLink,
    problem: Option<Problem>,
}

impl fmt::Debug for LinkBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkBuilder")
            .field("name", &self.raw.name.as_ref().map(|s| s.get_ref()))
            .finish_non_exhaustive()
    }
}

impl LinkBuilder {
    /// A link named `name` costing `cost` (the file requires `cost`, so a satellite link is
    /// never free by omission).
    pub fn new(name: impl Into<String>, cost: Cost) -> Self {
        LinkBuilder {
            raw: RawLink {
                name: code(name.into()),
                cost: code(word_for(COST, &cost).to_owned()),
                ..RawLink::default()
            },
            problem: None,
        }
    }

    /// `budget`: bytes per window; a costly link without one is never used.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.raw.budget = code(format!("{}/{}ms", budget.bytes, budget.window.as_millis()));
        self
    }

    /// `allow`: the classes this link may carry.
    pub fn allow(mut self, classes: ClassSet) -> Self {
        let names = class_names(classes)
            .into_iter()
            .map(str::to_owned)
            .collect();
        self.raw.allow = code(names);
        self
    }

    /// `arm_after` (costly links): how long every cheaper route must have been down first.
    pub fn arm_after(mut self, after: Duration) -> Self {
        self.raw.arm_after = code(duration("arm_after", after, &mut self.problem));
        self
    }

    /// `bind`: the local address or interface to send from.
    pub fn bind(mut self, bind: Bind) -> Self {
        self.raw.bind = code(match bind {
            Bind::Addr(ip) => ip.to_string(),
            Bind::Interface(name) => name,
        });
        self
    }
}
