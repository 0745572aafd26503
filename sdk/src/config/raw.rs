//! The TOML file as serde reads it: one field per key, each value with its span so a bad
//! one is reported with its line. [`crate::config::SdkConfigBuilder`] fills the same
//! structures from code (without spans), so a file and a builder go through one conversion
//! and one validation.
//!
//! A new key is a field here, its conversion in [`super::file`], and one builder setter.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::{Spanned, Value};
use twinhub_core::{Cost, OnFull, Routing};

use crate::spec::{Fsync, IotHubTransport, KafkaCompression, SaslMechanism};

pub(crate) type S<T> = Spanned<T>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    pub(crate) device_id: Option<S<String>>,
    pub(crate) routing: Option<S<String>>,
    pub(crate) outbox: Option<RawOutbox>,
    #[serde(default)]
    pub(crate) endpoint: Vec<S<RawEndpoint>>,
    #[serde(default)]
    pub(crate) link: Vec<S<RawLink>>,
    pub(crate) ca_file: Option<S<String>>,
    pub(crate) ttl: Option<RawTtl>,
    pub(crate) timings: Option<RawTimings>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutbox {
    pub(crate) path: Option<S<String>>,
    pub(crate) state_dir: Option<S<String>>,
    pub(crate) max_bytes: Option<S<Value>>,
    pub(crate) on_full: Option<S<String>>,
    pub(crate) fsync: Option<S<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpoint {
    pub(crate) name: Option<S<String>>,
    pub(crate) protocol: Option<S<String>>,
    pub(crate) weight: Option<S<i64>>,
    pub(crate) max_batch_bytes: Option<S<Value>>,
    pub(crate) max_batch_records: Option<S<i64>>,
    pub(crate) connection_string: Option<S<String>>,
    pub(crate) connection_string_env: Option<S<String>>,
    pub(crate) connection_string_file: Option<S<String>>,
    pub(crate) url: Option<S<String>>,
    pub(crate) topic: Option<S<String>>,
    pub(crate) version: Option<S<Value>>,
    pub(crate) client_id: Option<S<String>>,
    pub(crate) username: Option<S<String>>,
    pub(crate) password: Option<S<String>>,
    pub(crate) password_env: Option<S<String>>,
    pub(crate) password_file: Option<S<String>>,
    pub(crate) keep_alive: Option<S<String>>,
    pub(crate) headers: Option<S<BTreeMap<String, S<String>>>>,
    pub(crate) bootstrap: Option<S<String>>,
    pub(crate) security_protocol: Option<S<String>>,
    pub(crate) sasl_mechanism: Option<S<String>>,
    pub(crate) compression: Option<S<String>>,
    // Client certificates and IoT Hub's transport: see `file::client_auth`.
    pub(crate) client_cert: Option<S<String>>,
    pub(crate) client_key: Option<S<String>>,
    pub(crate) client_key_env: Option<S<String>>,
    pub(crate) transport: Option<S<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLink {
    pub(crate) name: Option<S<String>>,
    pub(crate) cost: Option<S<String>>,
    pub(crate) budget: Option<S<String>>,
    pub(crate) allow: Option<S<Vec<String>>>,
    pub(crate) arm_after: Option<S<String>>,
    pub(crate) bind: Option<S<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTtl {
    pub(crate) critical: Option<S<String>>,
    pub(crate) normal: Option<S<String>>,
    pub(crate) bulk: Option<S<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimings {
    pub(crate) trip_failures: Option<S<i64>>,
    pub(crate) trip_after: Option<S<String>>,
    pub(crate) retry_base: Option<S<String>>,
    pub(crate) probe_first: Option<S<String>>,
    pub(crate) probe_max: Option<S<String>>,
    pub(crate) failback_probes: Option<S<i64>>,
    pub(crate) min_dwell: Option<S<String>>,
    pub(crate) request_timeout: Option<S<String>>,
    pub(crate) throttle_backoff: Option<S<String>>,
    pub(crate) throttle_failover_after: Option<S<String>>,
    pub(crate) linger: Option<S<String>>,
}

// The words a file uses for typed values, shared with the builder so both spell them alike.
pub(crate) const ROUTING: &[(&str, Routing)] = &[
    ("active-passive", Routing::ActivePassive),
    ("active-active", Routing::ActiveActive),
    ("mirror", Routing::Mirror),
];
pub(crate) const ON_FULL: &[(&str, OnFull)] =
    &[("evict", OnFull::Evict), ("reject", OnFull::Reject)];
pub(crate) const FSYNC: &[(&str, Fsync)] = &[
    ("always", Fsync::Always),
    ("batch", Fsync::Batch),
    ("off", Fsync::Off),
];
pub(crate) const COST: &[(&str, Cost)] = &[
    ("free", Cost::Free),
    ("metered", Cost::Metered),
    ("costly", Cost::Costly),
];
pub(crate) const IOT_HUB_TRANSPORT: &[(&str, IotHubTransport)] = &[
    ("mqtt", IotHubTransport::Mqtt),
    ("websockets", IotHubTransport::WebSockets),
];
pub(crate) const COMPRESSION: &[(&str, KafkaCompression)] = &[
    ("none", KafkaCompression::None),
    ("gzip", KafkaCompression::Gzip),
];
/// Kafka's `security.protocol` words: (TLS, SASL).
pub(crate) const SECURITY_PROTOCOL: &[(&str, (bool, bool))] = &[
    ("plaintext", (false, false)),
    ("ssl", (true, false)),
    ("sasl_plaintext", (false, true)),
    ("sasl_ssl", (true, true)),
];
pub(crate) const SASL_MECHANISM: &[(&str, SaslMechanism)] = &[
    ("plain", SaslMechanism::Plain),
    ("scram-sha-256", SaslMechanism::ScramSha256),
    ("scram-sha-512", SaslMechanism::ScramSha512),
];

/// The word for `value` in `words` (every value of these types has one).
pub(crate) fn word_for<T: PartialEq>(words: &[(&'static str, T)], value: &T) -> &'static str {
    words
        .iter()
        .find(|(_, v)| v == value)
        .map_or("", |(w, _)| w)
}
