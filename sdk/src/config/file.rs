//! The conversion of the raw configuration (a TOML file as serde reads it, or what
//! [`SdkConfigBuilder`](super::SdkConfigBuilder) filled in) to [`SdkConfig`].
//!
//! serde with `deny_unknown_fields` catches unknown keys; every value from a file keeps its
//! span so a bad one is reported with its line. Values are checked here (not by serde) so
//! messages can say what a good value looks like, whichever way they were given.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Value;
use twinhub_core::{Class, ClassSet, Cost, LinkConfig, Timings};

use super::SdkConfig;
use super::azure;
use super::connstr::{self, split_host_port};
use super::error::{ConfigError, ErrorKind, line_of};
use super::raw::{
    COMPRESSION, COST, FSYNC, ON_FULL, ROUTING, RawEndpoint, RawFile, RawLink, RawTimings, S,
    SASL_MECHANISM, SECURITY_PROTOCOL,
};
use super::units::{self, UnitError};
use crate::spec::{
    Bind, EndpointSpec, HttpSpec, KafkaSasl, KafkaSpec, MqttSpec, MqttVersion, OutboxSpec,
    ProtocolSpec, Secret,
};

mod client_auth;
pub(crate) use client_auth::client_auth_problem;

/// Why `state_dir` and `path` do not go together.
pub(crate) const STATE_DIR_WITH_PATH: &str = "applies to the memory outbox only; the disk outbox (`path`) keeps its epoch counter in its own directory";

/// Default MQTT keep-alive: short enough to notice a dead broker well inside the failover
/// objective, long enough not to matter on a metered link.
pub(crate) const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Kafka's port when `bootstrap` names none.
const DEFAULT_KAFKA_PORT: u16 = 9092;

/// The protocols, for checking which keys apply.
#[derive(Clone, Copy, PartialEq)]
enum P {
    EventHubs,
    IotHub,
    Mqtt,
    Http,
    Kafka,
}

/// A protocol-specific key: its name, where it was given, and the protocols it applies to.
type KeyUse<'a> = (&'a str, Option<Range<usize>>, &'a [P]);

/// Where secrets and relative paths come from while loading.
pub(crate) struct Loader<'a> {
    /// The TOML text, for lines; `None` for a configuration built in code.
    pub src: Option<&'a str>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Directory relative paths are taken from (the config file's), if any.
    pub base: Option<&'a Path>,
    /// Line of every key seen, so errors found later (by the engine) get a line too.
    pub lines: Vec<(String, usize)>,
}

/// A value as shown in a message: quoted, escaped and cut short.
pub(crate) fn quoted(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() > MAX {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}...")
    } else {
        format!("{s:?}")
    }
}

impl Loader<'_> {
    fn line(&self, span: &Range<usize>) -> Option<usize> {
        self.src.map(|src| line_of(src, span.start))
    }

    /// Remembers the line of `key` and returns it.
    fn seen(&mut self, key: &str, span: &Range<usize>) -> Option<usize> {
        let line = self.line(span)?;
        self.lines.push((key.to_owned(), line));
        Some(line)
    }

    fn invalid(&self, key: &str, span: &Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::new(ErrorKind::Invalid, key, message).at(self.line(span))
    }

    fn unit_error(&self, key: &str, v: &S<String>, e: UnitError) -> ConfigError {
        self.invalid(key, &v.span(), format!("{} {e}", quoted(v.get_ref())))
    }

    fn duration(
        &mut self,
        key: &str,
        v: &Option<S<String>>,
    ) -> Result<Option<Duration>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        self.seen(key, &v.span());
        units::parse_duration(v.get_ref())
            .map(Some)
            .map_err(|e| self.unit_error(key, v, e))
    }

    fn size(&mut self, key: &str, v: &Option<S<Value>>) -> Result<Option<u64>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        self.seen(key, &v.span());
        match v.get_ref() {
            Value::Integer(n) => u64::try_from(*n).map(Some).map_err(|_| {
                self.invalid(
                    key,
                    &v.span(),
                    format!("{n} is not a size (it is negative)"),
                )
            }),
            Value::String(s) => units::parse_size(s)
                .map(Some)
                .map_err(|e| self.invalid(key, &v.span(), format!("{} {e}", quoted(s)))),
            other => Err(self.invalid(
                key,
                &v.span(),
                format!(
                    "expected a size such as \"256MiB\" or 1000, found a {}",
                    other.type_str()
                ),
            )),
        }
    }

    fn int<T: TryFrom<i64>>(
        &mut self,
        key: &str,
        v: &Option<S<i64>>,
        range: &str,
    ) -> Result<Option<T>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        self.seen(key, &v.span());
        T::try_from(*v.get_ref()).map(Some).map_err(|_| {
            self.invalid(
                key,
                &v.span(),
                format!("{} is out of range ({range})", v.get_ref()),
            )
        })
    }

    /// A string from a fixed set of words.
    fn word<T: Copy>(
        &mut self,
        key: &str,
        v: &Option<S<String>>,
        words: &[(&str, T)],
        what: &str,
    ) -> Result<Option<T>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        self.seen(key, &v.span());
        match words.iter().find(|(w, _)| *w == v.get_ref().as_str()) {
            Some((_, t)) => Ok(Some(*t)),
            None => {
                let list: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
                Err(self.invalid(
                    key,
                    &v.span(),
                    format!(
                        "{} is not {what} (use {})",
                        quoted(v.get_ref()),
                        list.join(" | ")
                    ),
                ))
            }
        }
    }

    fn path(&mut self, key: &str, v: &Option<S<String>>) -> Result<Option<PathBuf>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        self.seen(key, &v.span());
        if v.get_ref().is_empty() {
            return Err(self.invalid(key, &v.span(), "must not be empty"));
        }
        Ok(Some(self.resolve(v.get_ref())))
    }

    fn resolve(&self, p: &str) -> PathBuf {
        match self.base {
            Some(base) if Path::new(p).is_relative() => base.join(p),
            _ => PathBuf::from(p),
        }
    }

    /// Reads a secret given as `X`, `X_env` or `X_file` (exactly one of them).
    fn secret(
        &mut self,
        key: &str,
        direct: Option<&S<String>>,
        env: Option<&S<String>>,
        file: Option<&S<String>>,
    ) -> Result<Option<(Secret, Range<usize>)>, ConfigError> {
        let given = [direct, env, file];
        let mut present = given.iter().flatten();
        let Some(first) = present.next() else {
            return Ok(None);
        };
        if let Some(second) = present.next() {
            return Err(ConfigError::new(
                ErrorKind::Secret,
                key,
                format!(
                    "give only one of `{key}`, `{key}_env` and `{key}_file`",
                    key = key.rsplit('.').next().unwrap_or(key)
                ),
            )
            .at(self.line(&second.span())));
        }
        let span = first.span();
        self.seen(key, &span);
        let secret_error = |message: String| {
            ConfigError::new(ErrorKind::Secret, key, message).at(self.line(&span))
        };
        let value = if let Some(v) = direct {
            v.get_ref().clone()
        } else if let Some(var) = env {
            let name = var.get_ref();
            if name.is_empty() {
                return Err(secret_error(format!(
                    "{key}_env: the variable name is empty"
                )));
            }
            (self.env)(name).ok_or_else(|| {
                secret_error(format!(
                    "environment variable `{name}` (from {key}_env) is not set or not UTF-8"
                ))
            })?
        } else if let Some(f) = file {
            let path = self.resolve(f.get_ref());
            let text = std::fs::read_to_string(&path).map_err(|e| {
                secret_error(format!(
                    "cannot read {} (from {key}_file): {e}",
                    path.display()
                ))
            })?;
            // Files written by editors and `echo` end in a newline that is not part of
            // the secret.
            text.trim_end_matches(['\n', '\r']).to_owned()
        } else {
            return Ok(None);
        };
        Ok(Some((Secret::new(value), span)))
    }

    fn required<'v, T>(
        &self,
        key: &str,
        v: &'v Option<T>,
        table: &Range<usize>,
        message: &str,
    ) -> Result<&'v T, ConfigError> {
        v.as_ref()
            .ok_or_else(|| ConfigError::new(ErrorKind::Missing, key, message).at(self.line(table)))
    }

    /// The endpoint's `hub` (the event hub beside a namespace-level connection string).
    fn hub<'e>(&mut self, prefix: &str, e: &'e RawEndpoint) -> Option<&'e str> {
        let h = e.hub.as_ref()?;
        self.seen(&format!("{prefix}.hub"), &h.span());
        Some(h.get_ref().as_str())
    }

    /// Converts the whole file.
    pub(crate) fn convert(&mut self, raw: RawFile) -> Result<SdkConfig, ConfigError> {
        let device_id = raw.device_id.as_ref().ok_or_else(|| {
            ConfigError::new(
                ErrorKind::Missing,
                "device_id",
                "missing: every producer needs a device_id (it is part of every message id)",
            )
        })?;
        self.seen("device_id", &device_id.span());
        let routing = self
            .word("routing", &raw.routing, ROUTING, "a routing mode")?
            .unwrap_or_default();

        let mut outbox = OutboxSpec::default();
        if let Some(o) = &raw.outbox {
            outbox.path = self.path("outbox.path", &o.path)?;
            outbox.state_dir = self.path("outbox.state_dir", &o.state_dir)?;
            if let (Some(_), Some(dir)) = (&outbox.path, &o.state_dir) {
                return Err(self.invalid("outbox.state_dir", &dir.span(), STATE_DIR_WITH_PATH));
            }
            if let Some(n) = self.size("outbox.max_bytes", &o.max_bytes)? {
                outbox.max_bytes = n;
            }
            if let Some(p) = self.word(
                "outbox.on_full",
                &o.on_full,
                ON_FULL,
                "a full-outbox policy",
            )? {
                outbox.on_full = p;
            }
            if let Some(f) = self.word("outbox.fsync", &o.fsync, FSYNC, "an fsync policy")? {
                outbox.fsync = f;
            }
        }

        let mut endpoints = Vec::with_capacity(raw.endpoint.len());
        for (i, e) in raw.endpoint.iter().enumerate() {
            endpoints.push(self.endpoint(i, e)?);
        }
        let mut links = Vec::with_capacity(raw.link.len());
        for (i, l) in raw.link.iter().enumerate() {
            links.push(self.link(i, l)?);
        }

        let mut ttl = [Duration::from_secs(30 * 86_400); 3];
        if let Some(t) = &raw.ttl {
            for (class, v) in [
                (Class::Critical, &t.critical),
                (Class::Normal, &t.normal),
                (Class::Bulk, &t.bulk),
            ] {
                if let Some(d) = self.duration(&format!("ttl.{}", class.name()), v)? {
                    ttl[class as usize] = d;
                }
            }
        }

        let mut timings = Timings::default();
        if let Some(t) = &raw.timings {
            self.timings(t, &mut timings)?;
        }

        Ok(SdkConfig {
            device_id: device_id.get_ref().clone(),
            routing,
            outbox,
            endpoints,
            links,
            ttl,
            timings,
            ca_file: self.path("ca_file", &raw.ca_file)?,
        })
    }

    fn timings(&mut self, t: &RawTimings, out: &mut Timings) -> Result<(), ConfigError> {
        let counts = [
            ("trip_failures", &t.trip_failures, &mut out.trip_failures),
            (
                "failback_probes",
                &t.failback_probes,
                &mut out.failback_probes,
            ),
        ];
        for (name, v, slot) in counts {
            if let Some(n) = self.int::<u8>(&format!("timings.{name}"), v, "0 to 255")? {
                *slot = n;
            }
        }
        let durations = [
            ("trip_after", &t.trip_after, &mut out.trip_after),
            ("retry_base", &t.retry_base, &mut out.retry_base),
            ("probe_first", &t.probe_first, &mut out.probe_first),
            ("probe_max", &t.probe_max, &mut out.probe_max),
            ("min_dwell", &t.min_dwell, &mut out.min_dwell),
            (
                "request_timeout",
                &t.request_timeout,
                &mut out.request_timeout,
            ),
            (
                "throttle_backoff",
                &t.throttle_backoff,
                &mut out.throttle_backoff,
            ),
            (
                "throttle_failover_after",
                &t.throttle_failover_after,
                &mut out.throttle_failover_after,
            ),
            ("linger", &t.linger, &mut out.linger),
        ];
        for (name, v, slot) in durations {
            if let Some(d) = self.duration(&format!("timings.{name}"), v)? {
                *slot = units::to_engine(d);
            }
        }
        Ok(())
    }

    fn endpoint(&mut self, i: usize, e: &S<RawEndpoint>) -> Result<EndpointSpec, ConfigError> {
        let table = e.span();
        let prefix = format!("endpoint[{i}]");
        self.seen(&prefix, &table);
        let key = |k: &str| format!("{prefix}.{k}");
        let e = e.get_ref();
        let name = self.required(
            &key("name"),
            &e.name,
            &table,
            "missing: every endpoint needs a name",
        )?;
        self.seen(&key("name"), &name.span());
        let protocol = self.required(
            &key("protocol"),
            &e.protocol,
            &table,
            "missing: use event-hubs | iot-hub | mqtt | http | kafka",
        )?;
        let p = self
            .word(
                &key("protocol"),
                &e.protocol,
                &[
                    ("event-hubs", P::EventHubs),
                    ("iot-hub", P::IotHub),
                    ("mqtt", P::Mqtt),
                    ("http", P::Http),
                    ("kafka", P::Kafka),
                ],
                "a protocol",
            )?
            .unwrap_or(P::Mqtt);

        // Keys that belong to some protocols only: given for another, they are mistakes.
        const CS: &[P] = &[P::EventHubs, P::IotHub, P::Kafka];
        const MQ_K: &[P] = &[P::Mqtt, P::Kafka];
        const EH_K: &[P] = &[P::EventHubs, P::Kafka];
        let specific: [KeyUse<'_>; 19] = [
            ("hub", e.hub.as_ref().map(S::span), EH_K),
            ("partition_key", e.partition_key.as_ref().map(S::span), EH_K),
            (
                "connection_string",
                e.connection_string.as_ref().map(S::span),
                CS,
            ),
            (
                "connection_string_env",
                e.connection_string_env.as_ref().map(S::span),
                CS,
            ),
            (
                "connection_string_file",
                e.connection_string_file.as_ref().map(S::span),
                CS,
            ),
            ("url", e.url.as_ref().map(S::span), &[P::Mqtt, P::Http]),
            ("topic", e.topic.as_ref().map(S::span), MQ_K),
            ("version", e.version.as_ref().map(S::span), &[P::Mqtt]),
            ("client_id", e.client_id.as_ref().map(S::span), MQ_K),
            ("username", e.username.as_ref().map(S::span), MQ_K),
            ("password", e.password.as_ref().map(S::span), MQ_K),
            ("password_env", e.password_env.as_ref().map(S::span), MQ_K),
            ("password_file", e.password_file.as_ref().map(S::span), MQ_K),
            ("keep_alive", e.keep_alive.as_ref().map(S::span), &[P::Mqtt]),
            ("headers", e.headers.as_ref().map(S::span), &[P::Http]),
            ("bootstrap", e.bootstrap.as_ref().map(S::span), &[P::Kafka]),
            (
                "security_protocol",
                e.security_protocol.as_ref().map(S::span),
                &[P::Kafka],
            ),
            (
                "sasl_mechanism",
                e.sasl_mechanism.as_ref().map(S::span),
                &[P::Kafka],
            ),
            (
                "compression",
                e.compression.as_ref().map(S::span),
                &[P::Kafka],
            ),
        ];
        for (k, span, allowed) in &specific {
            if let Some(span) = span
                && !allowed.contains(&p)
            {
                return Err(self.invalid(
                    &key(k),
                    span,
                    format!("`{k}` does not apply to protocol {}", protocol.get_ref()),
                ));
            }
        }

        self.client_auth_applies(&prefix, e, p, protocol.get_ref())?;
        let protocol = match p {
            P::EventHubs | P::IotHub => {
                let ck = key("connection_string");
                let Some((cs, span)) = self.secret(
                    &ck,
                    e.connection_string.as_ref(),
                    e.connection_string_env.as_ref(),
                    e.connection_string_file.as_ref(),
                )?
                else {
                    return Err(ConfigError::new(
                        ErrorKind::Missing,
                        ck,
                        format!(
                            "missing: protocol {} needs connection_string (or connection_string_env / connection_string_file)",
                            protocol.get_ref()
                        ),
                    )
                    .at(self.line(&table)));
                };
                let what = if p == P::EventHubs {
                    "Event Hubs"
                } else {
                    "IoT Hub"
                };
                let hub = self.hub(&prefix, e);
                let bad = |e: connstr::ConnStrError| {
                    self.invalid(&ck, &span, format!("{what} connection string {e}"))
                };
                if p == P::EventHubs {
                    ProtocolSpec::EventHubs(
                        connstr::parse_event_hubs_with_hub(cs.expose(), hub).map_err(bad)?,
                    )
                } else {
                    let mut spec = connstr::parse_iot_hub(cs.expose()).map_err(bad)?;
                    self.iot_hub_options(&prefix, e, &table, cs.expose(), &mut spec)?;
                    ProtocolSpec::IotHub(spec)
                }
            }
            P::Mqtt => ProtocolSpec::Mqtt(self.mqtt(&prefix, e, &table)?),
            P::Http => ProtocolSpec::Http(self.http(&prefix, e, &table)?),
            P::Kafka => ProtocolSpec::Kafka(self.kafka(&prefix, e, &table)?),
        };
        let mut protocol = protocol;
        if let Some(k) = self.word(
            &key("partition_key"),
            &e.partition_key,
            &azure::PARTITION_KEYS,
            "a partition key",
        )? {
            azure::set_partition_key(&mut protocol, k);
        }

        let weight = self
            .int::<u16>(&key("weight"), &e.weight, "0 to 65535")?
            .unwrap_or(1);
        let max_batch_bytes = match self.size(&key("max_batch_bytes"), &e.max_batch_bytes)? {
            None => None,
            Some(n) => Some(u32::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
                self.invalid(
                    &key("max_batch_bytes"),
                    &e.max_batch_bytes.as_ref().map_or(table.clone(), S::span),
                    "must be from 1 byte to 4GiB - 1",
                )
            })?),
        };
        let max_batch_records = match self.int::<u16>(
            &key("max_batch_records"),
            &e.max_batch_records,
            "1 to 65535",
        )? {
            Some(0) => {
                return Err(self.invalid(
                    &key("max_batch_records"),
                    &e.max_batch_records.as_ref().map_or(table.clone(), S::span),
                    "0 is out of range (1 to 65535)",
                ));
            }
            n => n,
        };
        Ok(EndpointSpec {
            name: name.get_ref().clone(),
            weight,
            protocol,
            max_batch_bytes,
            max_batch_records,
        })
    }

    fn mqtt(
        &mut self,
        prefix: &str,
        e: &RawEndpoint,
        table: &Range<usize>,
    ) -> Result<MqttSpec, ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        let url = self.required(
            &key("url"),
            &e.url,
            table,
            "missing: protocol mqtt needs url, e.g. mqtts://broker.example:8883",
        )?;
        self.seen(&key("url"), &url.span());
        let (host, port, tls) =
            parse_mqtt_url(url.get_ref()).map_err(|m| self.invalid(&key("url"), &url.span(), m))?;
        let topic = self.required(
            &key("topic"),
            &e.topic,
            table,
            "missing: protocol mqtt needs topic, e.g. \"telemetry/{device_id}\"",
        )?;
        self.seen(&key("topic"), &topic.span());
        let version = match &e.version {
            None => MqttVersion::V5,
            Some(v) => {
                self.seen(&key("version"), &v.span());
                match v.get_ref() {
                    Value::Integer(5) => MqttVersion::V5,
                    Value::String(s) if s == "5" || s == "5.0" => MqttVersion::V5,
                    Value::String(s) if s == "3.1.1" => MqttVersion::V311,
                    _ => {
                        return Err(self.invalid(
                            &key("version"),
                            &v.span(),
                            "must be 5 or \"3.1.1\"",
                        ));
                    }
                }
            }
        };
        let password = self
            .secret(
                &key("password"),
                e.password.as_ref(),
                e.password_env.as_ref(),
                e.password_file.as_ref(),
            )?
            .map(|(s, _)| s);
        let keep_alive = self
            .duration(&key("keep_alive"), &e.keep_alive)?
            .unwrap_or(DEFAULT_KEEP_ALIVE);
        let text = |v: &Option<S<String>>| v.as_ref().map(|s| s.get_ref().clone());
        for (k, v) in [("client_id", &e.client_id), ("username", &e.username)] {
            if let Some(v) = v {
                self.seen(&key(k), &v.span());
            }
        }
        Ok(MqttSpec {
            host,
            port,
            tls,
            topic: topic.get_ref().clone(),
            version,
            client_id: text(&e.client_id),
            username: text(&e.username),
            password,
            keep_alive,
            client_cert: self.client_cert(prefix, e, table, tls)?,
        })
    }

    fn kafka(
        &mut self,
        prefix: &str,
        e: &RawEndpoint,
        table: &Range<usize>,
    ) -> Result<KafkaSpec, ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        let compression = self
            .word(
                &key("compression"),
                &e.compression,
                COMPRESSION,
                "a compression",
            )?
            .unwrap_or_default();
        let client_id = e.client_id.as_ref().map(|c| {
            self.seen(&key("client_id"), &c.span());
            c.get_ref().clone()
        });
        let ck = key("connection_string");
        if let Some((cs, span)) = self.secret(
            &ck,
            e.connection_string.as_ref(),
            e.connection_string_env.as_ref(),
            e.connection_string_file.as_ref(),
        )? {
            // Event Hubs: everything comes from the connection string.
            let given = [
                ("bootstrap", e.bootstrap.as_ref().map(S::span)),
                ("topic", e.topic.as_ref().map(S::span)),
                (
                    "security_protocol",
                    e.security_protocol.as_ref().map(S::span),
                ),
                ("sasl_mechanism", e.sasl_mechanism.as_ref().map(S::span)),
                ("username", e.username.as_ref().map(S::span)),
                ("password", e.password.as_ref().map(S::span)),
                ("password_env", e.password_env.as_ref().map(S::span)),
                ("password_file", e.password_file.as_ref().map(S::span)),
            ];
            if let Some((k, Some(span))) = given.into_iter().find(|(_, s)| s.is_some()) {
                return Err(self.invalid(
                    &key(k),
                    &span,
                    format!(
                        "`{k}` does not go with connection_string: Event Hubs' Kafka endpoint takes \
                         host, topic (EntityPath) and credentials from the connection string"
                    ),
                ));
            }
            let hub = self.hub(prefix, e);
            let mut spec =
                connstr::parse_event_hubs_kafka_with_hub(cs.expose(), hub).map_err(|e| {
                    self.invalid(&ck, &span, format!("Event Hubs connection string {e}"))
                })?;
            spec.compression = compression;
            spec.client_id = client_id;
            return Ok(spec);
        }
        if let Some(h) = &e.hub {
            return Err(self.invalid(
                &key("hub"),
                &h.span(),
                "`hub` names the event hub of an Event Hubs connection_string; a Kafka cluster's topic is `topic`",
            ));
        }
        let bootstrap = self.required(
            &key("bootstrap"),
            &e.bootstrap,
            table,
            "missing: protocol kafka needs bootstrap = \"host:port,...\" (or an Event Hubs connection_string)",
        )?;
        self.seen(&key("bootstrap"), &bootstrap.span());
        let mut brokers = Vec::new();
        for part in bootstrap.get_ref().split(',') {
            let part = part.trim();
            let part = part
                .strip_prefix("PLAINTEXT://")
                .or_else(|| part.strip_prefix("SSL://"))
                .unwrap_or(part);
            let (host, port) = split_host_port(part).map_err(|m| {
                self.invalid(
                    &key("bootstrap"),
                    &bootstrap.span(),
                    format!("broker {} {m}", quoted(part)),
                )
            })?;
            brokers.push((host, port.unwrap_or(DEFAULT_KAFKA_PORT)));
        }
        let topic = self.required(
            &key("topic"),
            &e.topic,
            table,
            "missing: protocol kafka needs topic",
        )?;
        self.seen(&key("topic"), &topic.span());
        // Kafka's own rule for topic names.
        let t = topic.get_ref();
        if t.is_empty()
            || t.len() > 249
            || t == "."
            || t == ".."
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(self.invalid(
                &key("topic"),
                &topic.span(),
                "must be 1 to 249 characters of a-z, A-Z, 0-9, `.`, `_` and `-`",
            ));
        }
        // Kafka's own `security.protocol`: (TLS, SASL).
        let (tls, wants_sasl) = self
            .word(
                &key("security_protocol"),
                &e.security_protocol,
                SECURITY_PROTOCOL,
                "a security protocol",
            )?
            .unwrap_or((false, false));
        let mechanism = self.word(
            &key("sasl_mechanism"),
            &e.sasl_mechanism,
            SASL_MECHANISM,
            "a SASL mechanism",
        )?;
        let password = self.secret(
            &key("password"),
            e.password.as_ref(),
            e.password_env.as_ref(),
            e.password_file.as_ref(),
        )?;
        if let Some(u) = &e.username {
            self.seen(&key("username"), &u.span());
        }
        if !wants_sasl
            && let Some(span) = e
                .sasl_mechanism
                .as_ref()
                .or(e.username.as_ref())
                .map(S::span)
        {
            return Err(self.invalid(
                &key("security_protocol"),
                &e.security_protocol.as_ref().map_or(span, S::span),
                "SASL credentials need security_protocol = \"sasl_ssl\" (or \"sasl_plaintext\" for a local broker)",
            ));
        }
        let sasl = match (mechanism, &e.username, password) {
            (None, None, None) if !wants_sasl => None,
            (Some(mechanism), Some(user), Some((password, _))) => Some(KafkaSasl {
                mechanism,
                username: user.get_ref().clone(),
                password,
            }),
            (None, _, _) => {
                return Err(ConfigError::new(
                    ErrorKind::Missing,
                    key("sasl_mechanism"),
                    "missing: SASL needs sasl_mechanism = \"plain\" | \"scram-sha-256\" | \"scram-sha-512\"",
                )
                .at(self.line(table)));
            }
            (Some(_), None, _) => {
                return Err(ConfigError::new(
                    ErrorKind::Missing,
                    key("username"),
                    "missing: sasl_mechanism needs username",
                )
                .at(self.line(table)));
            }
            (Some(_), Some(_), None) => {
                return Err(ConfigError::new(
                    ErrorKind::Missing,
                    key("password"),
                    "missing: sasl_mechanism needs password (or password_env / password_file)",
                )
                .at(self.line(table)));
            }
        };
        Ok(KafkaSpec {
            bootstrap: brokers,
            topic: t.clone(),
            tls,
            sasl,
            compression,
            client_id,
            event_hubs: false,
            partition_key: Default::default(),
        })
    }

    fn http(
        &mut self,
        prefix: &str,
        e: &RawEndpoint,
        table: &Range<usize>,
    ) -> Result<HttpSpec, ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        let url = self.required(
            &key("url"),
            &e.url,
            table,
            "missing: protocol http needs url, e.g. https://ingest.example/v1/batch",
        )?;
        self.seen(&key("url"), &url.span());
        let authority = url.get_ref().split_once("://").map_or("", |(_, rest)| {
            rest.split(['/', '?', '#']).next().unwrap_or("")
        });
        if authority.contains('@') {
            // Never echo it: the part before `@` is a password, and URLs end up in logs.
            return Err(self.invalid(
                &key("url"),
                &url.span(),
                "must not carry credentials; send them in a header (headers.Authorization_env)",
            ));
        }
        let mut headers = Vec::new();
        if let Some(h) = &e.headers {
            // `Name`, `Name_env` or `Name_file`, grouped by header name.
            let mut groups: BTreeMap<&str, [Option<&S<String>>; 3]> = BTreeMap::new();
            for (k, v) in h.get_ref() {
                let (name, slot) = if let Some(n) = k.strip_suffix("_env") {
                    (n, 1)
                } else if let Some(n) = k.strip_suffix("_file") {
                    (n, 2)
                } else {
                    (k.as_str(), 0)
                };
                if let Some(entry) = groups.entry(name).or_default().get_mut(slot) {
                    *entry = Some(v);
                }
            }
            for (name, [direct, env, file]) in groups {
                let hk = key(&format!("headers.{name}"));
                let span = direct.or(env).or(file).map_or(h.span(), S::span);
                if name.is_empty() || !name.bytes().all(is_token_byte) {
                    return Err(self.invalid(&hk, &span, "is not a valid HTTP header name"));
                }
                if let Some((value, _)) = self.secret(&hk, direct, env, file)? {
                    if value.expose().contains(['\r', '\n']) {
                        return Err(self.invalid(&hk, &span, "value must not contain line breaks"));
                    }
                    headers.push((name.to_owned(), value));
                }
            }
        }
        let https = url.get_ref().to_ascii_lowercase().starts_with("https://");
        Ok(HttpSpec {
            url: url.get_ref().clone(),
            headers,
            client_cert: self.client_cert(prefix, e, table, https)?,
        })
    }

    fn link(&mut self, i: usize, l: &S<RawLink>) -> Result<crate::spec::LinkSpec, ConfigError> {
        let table = l.span();
        let prefix = format!("link[{i}]");
        self.seen(&prefix, &table);
        let key = |k: &str| format!("{prefix}.{k}");
        let l = l.get_ref();
        let name = self.required(
            &key("name"),
            &l.name,
            &table,
            "missing: every link needs a name",
        )?;
        self.seen(&key("name"), &name.span());
        // No default cost: a forgotten `cost` on a satellite link must not make it free.
        self.required(
            &key("cost"),
            &l.cost,
            &table,
            "missing: use free | metered | costly",
        )?;
        let cost = self
            .word(&key("cost"), &l.cost, COST, "a link cost")?
            .unwrap_or(Cost::Costly);
        let defaults = LinkConfig::new(name.get_ref(), cost);
        let budget = match &l.budget {
            None => None,
            Some(b) => {
                self.seen(&key("budget"), &b.span());
                Some(
                    units::parse_budget(b.get_ref())
                        .map_err(|e| self.unit_error(&key("budget"), b, e))?,
                )
            }
        };
        let allow = match &l.allow {
            None => defaults.allow,
            Some(list) => {
                self.seen(&key("allow"), &list.span());
                let mut set = ClassSet::NONE;
                for c in list.get_ref() {
                    let class = Class::from_name(c).ok_or_else(|| {
                        self.invalid(
                            &key("allow"),
                            &list.span(),
                            format!(
                                "{} is not a class (use critical, normal or bulk)",
                                quoted(c)
                            ),
                        )
                    })?;
                    set = set.with(class);
                }
                set
            }
        };
        let arm_after = self
            .duration(&key("arm_after"), &l.arm_after)?
            .unwrap_or_else(|| units::from_engine(defaults.arm_after));
        let bind = match &l.bind {
            None => None,
            Some(b) => {
                self.seen(&key("bind"), &b.span());
                Some(
                    parse_bind(b.get_ref())
                        .map_err(|m| self.invalid(&key("bind"), &b.span(), m))?,
                )
            }
        };
        Ok(crate::spec::LinkSpec {
            name: name.get_ref().clone(),
            cost,
            budget,
            allow,
            arm_after,
            bind,
        })
    }
}

/// `mqtt://host[:port]` (plain, 1883) or `mqtts://host[:port]` (TLS, 8883).
pub(crate) fn parse_mqtt_url(url: &str) -> Result<(String, u16, bool), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("must look like mqtts://broker.example:8883 or mqtt://127.0.0.1:1883")?;
    let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "mqtts" | "ssl" => (true, 8883),
        "mqtt" | "tcp" => (false, 1883),
        _ => return Err("scheme must be mqtts:// (TLS) or mqtt:// (plain)".to_owned()),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('@') {
        // Never echo it: the part before `@` is a password.
        return Err("must not carry credentials; use username and password".to_owned());
    }
    if authority.contains('/') {
        return Err("must not have a path; the topic is set with `topic`".to_owned());
    }
    let (host, port) = split_host_port(authority).map_err(|m| format!("host {m}"))?;
    Ok((host, port.unwrap_or(default_port), tls))
}

/// An IP address binds that local address; anything else names an interface.
pub(crate) fn parse_bind(s: &str) -> Result<Bind, &'static str> {
    if let Ok(ip) = s.parse() {
        return Ok(Bind::Addr(ip));
    }
    // Linux interface names are at most 15 bytes (IFNAMSIZ - 1), without `/` or spaces.
    if s.is_empty() || s.len() > 15 || s.contains('/') || s.contains(char::is_whitespace) {
        return Err("must be an IP address (e.g. 192.168.1.20) or an interface name (e.g. eth1)");
    }
    Ok(Bind::Interface(s.to_owned()))
}

/// RFC 9110 token characters, the only ones allowed in a header name.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
