//! Configuration files: TOML in, [`SdkConfig`] and the engine's [`twinhub_core::Config`]
//! out. The same settings in code, with the same checks and errors:
//! [`SdkConfig::builder`].
//!
//! The format (shared by the SDK, the CLI, the gateway and the simulator):
//!
//! ```
//! use twinhub::config::{ConfigError, SdkConfig};
//! use twinhub::spec::{Fsync, ProtocolSpec};
//! use twinhub::{Cost, OnFull, Routing};
//!
//! let text = r#"
//! device_id = "sensor-0001"
//! routing = "active-passive"          # active-passive | active-active | mirror
//!
//! [outbox]
//! path = "/var/lib/twinhub/sensor-0001"   # absent: memory only
//! ## state_dir = "/var/lib/twinhub/state"  # memory outbox only: its epoch counter
//! max_bytes = "256MiB"
//! on_full = "evict"                        # evict | reject
//! fsync = "batch"                          # always | batch | off
//!
//! [[endpoint]]
//! name = "primary"
//! protocol = "event-hubs"                  # event-hubs | iot-hub | mqtt | http | kafka
//! connection_string = "Endpoint=sb://ns-east.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=...;EntityPath=telemetry"
//!
//! [[endpoint]]
//! name = "secondary"
//! protocol = "mqtt"
//! url = "mqtts://broker.central.example:8883"
//! topic = "telemetry/{device_id}"
//!
//! [[link]]
//! name = "wan"
//! cost = "free"
//!
//! [[link]]
//! name = "satellite"
//! cost = "costly"
//! budget = "2MiB/1d"
//! allow = ["critical"]
//! arm_after = "15m"
//! "#;
//!
//! let config = SdkConfig::from_toml_str(text)?;
//! assert_eq!(config.routing, Routing::ActivePassive);
//! assert_eq!(config.outbox.max_bytes, 256 << 20);
//! assert_eq!((config.outbox.on_full, config.outbox.fsync), (OnFull::Evict, Fsync::Batch));
//! let ProtocolSpec::EventHubs(eh) = &config.endpoints[0].protocol else { panic!() };
//! assert_eq!((eh.host.as_str(), eh.entity.as_str()), ("ns-east.servicebus.windows.net", "telemetry"));
//! assert_eq!(config.links[1].cost, Cost::Costly);
//! // Secrets never show in Debug output.
//! assert!(!format!("{config:?}").contains("SharedAccessKey=..."));
//!
//! // The engine's view: limits per endpoint, budgets, classes.
//! let engine = config.engine_config()?;
//! assert_eq!(engine.endpoints().len(), 2);
//! assert!(engine.links()[1].usable());
//!
//! // Mistakes name the key and the line.
//! let err = SdkConfig::from_toml_str("device_id = \"d\"\n[outbox]\nfsyncc = \"off\"\n").unwrap_err();
//! assert!(err.to_string().starts_with("line 3: unknown key `fsyncc` in [outbox]"));
//! # Ok::<(), ConfigError>(())
//! ```
//!
//! # Keys
//!
//! * Top level: `device_id` (required), `routing` (default `active-passive`), `ca_file`
//!   (extra PEM roots; TLS verification is always on).
//! * `[outbox]`: `path` (absent: memory only), `max_bytes` (default 64MiB), `on_full`
//!   (`evict` | `reject`), `fsync` (`always` | `batch` | `off`), `state_dir` (memory
//!   outbox only). A disk outbox keeps an epoch counter in `path`; a memory outbox keeps
//!   it in `state_dir`, so every start gets a higher epoch than any before it, across fast
//!   restarts, reboots, power loss and a clock that jumps back. Without `state_dir` a
//!   memory outbox draws a random 32-bit epoch per start: two starts repeat ids with
//!   probability 2^-32, epochs do not grow, and a warning says so (see [`crate::epoch`]).
//!   `state_dir` together with `path` is an error.
//! * `[[endpoint]]`, in failover priority order: `name`, `protocol`, optional `weight`
//!   (active-active share, default 1), `max_batch_bytes` (the hub's publication limit) and
//!   `max_batch_records`; then per protocol:
//!   * `event-hubs`, `iot-hub`: `connection_string`, exactly as Azure or the emulator prints
//!     it (see [`connstr`]); for `event-hubs` also `hub` (the event hub, required with a
//!     namespace-level connection string, which has no `EntityPath`) and `partition_key`
//!     (`device`, the default: each event's `PartitionKey` is its device id; or `none`);
//!   * `mqtt`: `url` (`mqtts://host:8883` or `mqtt://host:1883`), `topic` (`{device_id}` is
//!     replaced), optional `version` (`5` or `"3.1.1"`), `client_id`, `username`,
//!     `password`, `keep_alive` (default 30s);
//!   * `http`: `url` and an optional `[endpoint.headers]` table;
//!   * `kafka`: either `bootstrap` (`"host:port,host:port"`, port default 9092) and
//!     `topic`, with optional `security_protocol` (as Kafka's `security.protocol`:
//!     `plaintext` (default) | `ssl` | `sasl_plaintext` | `sasl_ssl`), for SASL
//!     `sasl_mechanism` (`plain` | `scram-sha-256` | `scram-sha-512`), `username` and
//!     `password`, and `client_id`; or an Event Hubs `connection_string`, which gives the host (port
//!     9093), TLS, SASL PLAIN and the topic (`EntityPath`, or `hub` beside a
//!     namespace-level string). Both take `compression` (`none` | `gzip`) and
//!     `partition_key` (`device`, the default: the record key is the device id; or `none`).
//!     See [`crate::transport::kafka`].
//!
//! With an `event-hubs` or `iot-hub` endpoint (or Kafka on Event Hubs), `device_id` may
//! be at most 96 characters, so that every message id fits Azure's 128-character
//! `MessageId` ([`azure::check_message_id`]).
//! * `[[link]]`: `name`, `cost` (`free` | `metered` | `costly`, required so a satellite link
//!   is never free by omission), `budget` (`SIZE/DURATION`), `allow` (classes), `arm_after`,
//!   `bind` (an IP address, else an interface name). Costly links default to critical
//!   records only and `arm_after = "15m"`. **A costly link without a budget is accepted but
//!   inert: the engine never uses it.**
//! * `[ttl]`: `critical`, `normal`, `bulk` (default 30d each).
//! * `[timings]`: the engine's [`Timings`](twinhub_core::Timings): `trip_failures`,
//!   `failback_probes` (counts) and `trip_after`, `retry_base`, `probe_first`, `probe_max`,
//!   `min_dwell`, `request_timeout`, `throttle_backoff`, `throttle_failover_after`,
//!   `linger` (durations).
//!
//! Sizes are `B`, `KB`/`MB`/`GB` (1000-based), `KiB`/`MiB`/`GiB` (1024-based) or plain
//! integers; durations use `ms`, `s`, `m`, `h`, `d`; see [`units`].
//!
//! # Secrets
//!
//! Every secret-bearing key `X` (`connection_string`, `password`, each header value) may
//! instead be given as `X_env = "VAR"` (read from the environment) or `X_file = "/path"`
//! (read from a file, trailing newline dropped), exactly one of the three. Secrets are held
//! in [`Secret`](crate::spec::Secret) and never appear in `Debug` output or errors.
//!
//! Relative paths (`outbox.path`, `outbox.state_dir`, `ca_file`, `X_file`) are taken from the config file's
//! directory when loaded with [`SdkConfig::from_toml_file`], else from the working
//! directory.

pub mod azure;
mod builder;
pub mod connstr;
mod error;
mod file;
mod raw;
mod sdk_config;
pub mod units;

use std::path::Path;

use twinhub_core::config::MAX_NAME;
use twinhub_core::{Class, EndpointConfig, LinkConfig};

pub use builder::{EndpointBuilder, KafkaSecurity, LinkBuilder, SdkConfigBuilder, SecretSource};
pub use error::{ConfigError, ErrorKind};
pub(crate) use file::STATE_DIR_WITH_PATH;
pub use sdk_config::SdkConfig;

use crate::spec::ProtocolSpec;

impl SdkConfig {
    /// Reads a configuration from TOML text, taking `X_env` secrets from the process
    /// environment. The result is validated (including by the engine).
    pub fn from_toml_str(text: &str) -> Result<SdkConfig, ConfigError> {
        Self::from_toml_str_with_env(text, |var| std::env::var(var).ok())
    }

    /// Like [`SdkConfig::from_toml_str`], but `X_env` secrets come from `env` (for tests,
    /// or secrets held by the application rather than the environment).
    pub fn from_toml_str_with_env(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<SdkConfig, ConfigError> {
        load(text, &env, None)
    }

    /// Reads a configuration file. Errors carry the file's path; relative paths inside it
    /// are taken from its directory.
    pub fn from_toml_file(path: &Path) -> Result<SdkConfig, ConfigError> {
        let with_file = |mut e: ConfigError| {
            e.file = Some(path.to_path_buf());
            e
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            with_file(ConfigError {
                kind: ErrorKind::Io,
                file: None,
                line: None,
                key: None,
                message: format!("cannot read the config file: {e}"),
            })
        })?;
        let env = |var: &str| std::env::var(var).ok();
        load(&text, &env, path.parent()).map_err(with_file)
    }

    /// Checks what the types cannot: at least one endpoint, unique names that fit the
    /// engine (at most 32 bytes), protocol settings the transports can use, and everything
    /// the engine checks (see [`SdkConfig::engine_config`]).
    ///
    /// A costly link without a budget passes: it is inert (never used), which is the safe
    /// reading of an incomplete satellite setup.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use error::ErrorKind::{Invalid, Missing};
        if self.endpoints.is_empty() {
            return Err(ConfigError::new(
                Missing,
                "endpoint",
                "at least one [[endpoint]] is required",
            ));
        }
        let names = self
            .endpoints
            .iter()
            .map(|e| ("endpoint", e.name.as_str()))
            .enumerate()
            .chain(
                self.links
                    .iter()
                    .map(|l| ("link", l.name.as_str()))
                    .enumerate(),
            );
        for (i, (table, name)) in names {
            let key = format!("{table}[{i}].name");
            if name.is_empty() || name.len() > MAX_NAME {
                return Err(ConfigError::new(
                    Invalid,
                    key,
                    format!("must be 1 to {MAX_NAME} bytes long"),
                ));
            }
            let earlier = if table == "endpoint" {
                self.endpoints[..i].iter().any(|e| e.name == name)
            } else {
                self.links[..i].iter().any(|l| l.name == name)
            };
            if earlier {
                return Err(ConfigError::new(
                    Invalid,
                    key,
                    format!("{} is used by an earlier {table}", file::quoted(name)),
                ));
            }
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            let key = |k: &str| format!("endpoint[{i}].{k}");
            if let Some((kind, k, message)) = file::client_auth_problem(&e.protocol) {
                return Err(ConfigError::new(kind, key(k), message));
            }
            match &e.protocol {
                ProtocolSpec::Mqtt(m) => {
                    if m.topic.is_empty() || m.topic.contains(['+', '#']) {
                        return Err(ConfigError::new(
                            Invalid,
                            key("topic"),
                            "must be a topic name without the wildcards + and #",
                        ));
                    }
                    // MQTT carries keep-alive as whole seconds in 16 bits; 0 turns it off.
                    let ka = m.keep_alive;
                    if !ka.is_zero()
                        && (ka.subsec_nanos() != 0 || ka.as_secs() == 0 || ka.as_secs() > 65_535)
                    {
                        return Err(ConfigError::new(
                            Invalid,
                            key("keep_alive"),
                            "must be whole seconds from 1s to 65535s (or 0s for none)",
                        ));
                    }
                }
                ProtocolSpec::Http(h) => {
                    let lower = h.url.to_ascii_lowercase();
                    let rest = lower
                        .strip_prefix("https://")
                        .or_else(|| lower.strip_prefix("http://"));
                    if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                        return Err(ConfigError::new(
                            Invalid,
                            key("url"),
                            "must be an https:// URL (http:// only for local tests)",
                        ));
                    }
                }
                ProtocolSpec::Kafka(k) => {
                    let limit = crate::transport::kafka::EVENT_HUBS_MAX_REQUEST;
                    if k.event_hubs && e.max_batch_bytes.is_some_and(|n| n >= limit) {
                        return Err(ConfigError::new(
                            Invalid,
                            key("max_batch_bytes"),
                            format!(
                                "must be under {limit} bytes for Event Hubs' Kafka endpoint, \
                                 which closes the connection on larger requests"
                            ),
                        ));
                    }
                }
                ProtocolSpec::EventHubs(_) | ProtocolSpec::IotHub(_) => {}
            }
        }
        self.engine_config().map(|_| ())
    }

    /// Builds the engine's configuration: each endpoint's limits come from its protocol
    /// ([`crate::transport::limits`]), links keep their cost, budget, classes and
    /// `arm_after`, and routing, TTLs, timings and the full-outbox policy carry over.
    ///
    /// Errors name the field as a key path (`endpoint[1].max_batch_bytes`).
    pub fn engine_config(&self) -> Result<twinhub_core::Config, ConfigError> {
        // Before the engine: an id the hub would refuse must stop a build, not a send.
        for (i, e) in self.endpoints.iter().enumerate() {
            azure::check_message_id(&self.device_id, &e.protocol).map_err(|err| {
                ConfigError::new(
                    ErrorKind::Invalid,
                    "device_id",
                    format!("{err} (endpoint[{i}] {:?})", e.name),
                )
            })?;
        }
        let mut b = twinhub_core::Config::builder(&self.device_id)
            .routing(self.routing)
            .on_full(self.outbox.on_full)
            .timings(self.timings)
            // A gateway's bursts leave in full batches, one request each.
            .hold_partial(true);
        for (class, ttl) in Class::ALL.iter().zip(self.ttl) {
            b = b.ttl(*class, units::to_engine(ttl));
        }
        for e in &self.endpoints {
            let limits = crate::transport::limits(e);
            let mut ec = EndpointConfig::new(&e.name);
            ec.weight = e.weight;
            ec.max_record_bytes = limits.max_record_bytes;
            ec.max_batch_bytes = limits.max_batch_bytes;
            ec.max_batch_records = limits.max_batch_records;
            ec.record_overhead = limits.record_overhead;
            b = b.endpoint(ec);
        }
        for l in &self.links {
            let mut lc = LinkConfig::new(&l.name, l.cost);
            lc.budget = l.budget;
            lc.allow = l.allow;
            lc.arm_after = units::to_engine(l.arm_after);
            b = b.link(lc);
        }
        b.build().map_err(from_engine)
    }
}

/// Parses, converts and validates, giving every error a line where one is known.
fn load(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    base: Option<&Path>,
) -> Result<SdkConfig, ConfigError> {
    let raw: raw::RawFile = toml::from_str(text).map_err(|e| error::from_toml(text, &e))?;
    finish(raw, Some(text), env, base)
}

/// Converts and validates a raw configuration, from a file (`src` is its text, for lines)
/// or from [`SdkConfigBuilder`] (`src` is `None`): one path, so the two cannot drift.
fn finish(
    raw: raw::RawFile,
    src: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    base: Option<&Path>,
) -> Result<SdkConfig, ConfigError> {
    let mut loader = file::Loader {
        src,
        env,
        base,
        lines: Vec::new(),
    };
    let config = loader.convert(raw)?;
    config.validate().map_err(|e| {
        // The longest recorded key that the error's key starts with gives the line.
        let line = e.key.as_deref().and_then(|key| {
            loader
                .lines
                .iter()
                .filter(|(k, _)| {
                    key == k
                        || key
                            .strip_prefix(k.as_str())
                            .is_some_and(|r| r.starts_with('.'))
                })
                .max_by_key(|(k, _)| k.len())
                .map(|(_, line)| *line)
        });
        e.at(line)
    })?;
    if let Some(l) = config
        .links
        .iter()
        .find(|l| l.cost == twinhub_core::Cost::Costly && l.budget.is_none_or(|b| b.bytes == 0))
    {
        tracing::warn!(link = %l.name, "costly link has no budget, so it will never be used");
    }
    Ok(config)
}

/// Maps the engine's refusal to a key path.
fn from_engine(e: twinhub_core::ConfigError) -> ConfigError {
    use twinhub_core::ConfigError as E;
    let (key, message) = match e {
        E::DeviceId(id) => ("device_id".to_owned(), id.to_string()),
        E::NoEndpoints => (
            "endpoint".to_owned(),
            "at least one [[endpoint]] is required".to_owned(),
        ),
        E::TooManyEndpoints => (
            "endpoint".to_owned(),
            format!("at most {} endpoints", twinhub_core::MAX_ENDPOINTS),
        ),
        E::TooManyLinks => (
            "link".to_owned(),
            format!("at most {} links", twinhub_core::MAX_LINKS),
        ),
        // The engine's record limit is derived from max_batch_bytes, the key users set.
        E::Endpoint {
            index,
            field: "max_record_bytes",
            ..
        } => (
            format!("endpoint[{index}].max_batch_bytes"),
            "is too small to hold one record with its envelope".to_owned(),
        ),
        E::Endpoint {
            index,
            field,
            problem,
        } => (format!("endpoint[{index}].{field}"), problem.to_owned()),
        E::Link {
            index,
            field,
            problem,
        } => (format!("link[{index}].{field}"), problem.to_owned()),
        E::NameTooLong { list, index, limit } => (
            format!("{list}[{index}].name"),
            format!("must be 1 to {limit} bytes long"),
        ),
        E::Field { field, problem } => (field.to_owned(), problem.to_owned()),
        other => (String::from("config"), other.to_string()),
    };
    ConfigError::new(ErrorKind::Engine, key, message)
}
