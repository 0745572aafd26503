//! The seam between the driver and the wire: one [`Transport`] per route (endpoint over
//! link), built from the endpoint's [`ProtocolSpec`](crate::spec::ProtocolSpec).
//!
//! A transport sends one batch and tells the engine what happened as a
//! [`twinhub_core::Outcome`]. It owns its connections, reconnects on the next send after a
//! failure (resolving DNS again, never caching an address), and never turns TLS
//! verification off.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use twinhub_core::{DeviceId, Outcome};

use crate::record::Record;
use crate::spec::LinkSpec;

mod common;
pub mod eventhubs;
pub mod http;
pub mod iothub;
pub mod kafka;
pub mod mqtt;
mod tunnel;

pub use common::{DEFAULT_REQUEST_TIMEOUT, TransportError, tls_config};

/// Builds the transport of `endpoint` over `link` for `device`, with the default request
/// timeout ([`DEFAULT_REQUEST_TIMEOUT`]).
///
/// Nothing is connected here: connections are made on the first send and re-made (with a
/// fresh DNS lookup) after every failure. `tls` comes from [`tls_config`].
pub fn build(
    endpoint: &crate::spec::EndpointSpec,
    link: &LinkSpec,
    device: &DeviceId,
    tls: Arc<rustls::ClientConfig>,
) -> Result<SharedTransport, TransportError> {
    build_with_timeout(endpoint, link, device, tls, DEFAULT_REQUEST_TIMEOUT)
}

/// [`build`] with an explicit request timeout: how long one send may wait for the hub's
/// answer (connect included) before it resolves [`Outcome::Timeout`] or
/// [`Outcome::Unreachable`].
pub fn build_with_timeout(
    endpoint: &crate::spec::EndpointSpec,
    link: &LinkSpec,
    device: &DeviceId,
    tls: Arc<rustls::ClientConfig>,
    request_timeout: Duration,
) -> Result<SharedTransport, TransportError> {
    use crate::spec::ProtocolSpec as P;
    let bind = link.bind.as_ref();
    Ok(match &endpoint.protocol {
        P::EventHubs(spec) => Arc::new(eventhubs::EventHubsTransport::new(
            spec,
            bind,
            tls,
            request_timeout,
        )?),
        P::Http(spec) => Arc::new(http::HttpTransport::new(spec, bind, tls, request_timeout)?),
        P::Mqtt(spec) => Arc::new(mqtt::MqttTransport::new(
            spec,
            device,
            bind,
            tls,
            request_timeout,
            limits(endpoint),
        )?),
        P::Kafka(spec) => Arc::new(kafka::KafkaTransport::new(
            spec,
            device,
            bind,
            tls,
            request_timeout,
        )?),
        P::IotHub(spec) => Arc::new(iothub::iot_hub_transport(
            spec,
            bind,
            tls,
            request_timeout,
            limits(endpoint),
        )?),
    })
}

/// A boxed future, as transports return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sends batches to one endpoint over one link.
pub trait Transport: Send + Sync + 'static {
    /// Sends `records` as one publication and resolves once the hub answered for all of
    /// them or the attempt failed. It must resolve: a transport enforces its own request
    /// timeout (and the engine has its own as a backstop).
    ///
    /// Map failures carefully: [`Outcome::Timeout`] only when bytes may have reached the
    /// hub (a duplicate is possible), [`Outcome::Unreachable`] when they certainly did not.
    fn send<'a>(&'a self, records: &'a [Record]) -> BoxFuture<'a, Outcome>;

    /// Drops open connections, for example after the engine took this route down, so the
    /// next send connects (and resolves) anew.
    fn reset(&self) {}
}

/// A shareable transport.
pub type SharedTransport = Arc<dyn Transport>;

/// The engine limits of an endpoint, in stored-payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest stored payload of one record.
    pub max_record_bytes: u32,
    /// Largest batch, counted as stored payload plus `record_overhead` per record.
    pub max_batch_bytes: u32,
    /// Most records per batch.
    pub max_batch_records: u16,
    /// Bytes the transport adds per record, in stored-payload units.
    pub record_overhead: u32,
}

/// Per-record allowance for ids, JSON and property framing on the wire (a message id is at
/// most 128 + 32 bytes and appears twice in an Event Hubs item).
const ENVELOPE_ALLOWANCE: u32 = 512;

/// How an endpoint's wire limit maps to engine limits.
///
/// * Event Hubs and HTTP send one JSON array per batch with base64 bodies: the publication
///   limit (`max_batch_bytes`, default 256 KiB, the Basic tier; Standard is 1 MiB) is scaled
///   by 3/4 for base64, with `ENVELOPE_ALLOWANCE` (512 bytes) per record.
/// * MQTT and IoT Hub send one PUBLISH per record: each record must fit the broker's packet
///   limit (default 256 KiB, IoT Hub's device-to-cloud limit); a batch is a burst of
///   publishes. MQTT 3.1.1 wraps bodies in a base64 JSON envelope, so its limit is scaled too.
/// * Kafka sends one Produce request per batch, bodies as they are: the request limit
///   (default 1,000,000 bytes, Azure's recommended `max.request.size`) less 1 KiB for the
///   request and batch headers, with `ENVELOPE_ALLOWANCE` per record for key, id and
///   headers.
pub fn limits(endpoint: &crate::spec::EndpointSpec) -> Limits {
    use crate::spec::{MqttVersion, ProtocolSpec};
    let base64 = |n: u32| n / 4 * 3;
    match &endpoint.protocol {
        ProtocolSpec::EventHubs(_) | ProtocolSpec::Http(_) => {
            let default = if matches!(endpoint.protocol, ProtocolSpec::Http(_)) {
                1 << 20
            } else {
                256 << 10
            };
            let wire = endpoint.max_batch_bytes.unwrap_or(default);
            let batch = base64(wire).saturating_sub(ENVELOPE_ALLOWANCE);
            Limits {
                max_record_bytes: batch.saturating_sub(ENVELOPE_ALLOWANCE),
                max_batch_bytes: batch,
                max_batch_records: endpoint.max_batch_records.unwrap_or(500),
                record_overhead: ENVELOPE_ALLOWANCE,
            }
        }
        ProtocolSpec::Kafka(_) => {
            let wire = endpoint
                .max_batch_bytes
                .unwrap_or(kafka::DEFAULT_MAX_REQUEST);
            let batch = wire.saturating_sub(1024);
            Limits {
                max_record_bytes: batch.saturating_sub(ENVELOPE_ALLOWANCE),
                max_batch_bytes: batch,
                max_batch_records: endpoint.max_batch_records.unwrap_or(500),
                record_overhead: ENVELOPE_ALLOWANCE,
            }
        }
        ProtocolSpec::Mqtt(_) | ProtocolSpec::IotHub(_) => {
            let packet = endpoint.max_batch_bytes.unwrap_or(256 << 10);
            let v311 = matches!(&endpoint.protocol, ProtocolSpec::Mqtt(m) if m.version == MqttVersion::V311);
            let per_record =
                if v311 { base64(packet) } else { packet }.saturating_sub(ENVELOPE_ALLOWANCE);
            let records = endpoint.max_batch_records.unwrap_or(100);
            Limits {
                max_record_bytes: per_record,
                max_batch_bytes: per_record
                    .saturating_mul(u32::from(records).min(16))
                    .max(per_record + ENVELOPE_ALLOWANCE),
                max_batch_records: records,
                record_overhead: ENVELOPE_ALLOWANCE,
            }
        }
    }
}
