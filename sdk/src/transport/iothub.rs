//! Azure IoT Hub device telemetry over MQTT 3.1.1 (PROTOCOLS.md §4).
//!
//! * client id = device id; user name `{host}/{device}/?api-version=2021-04-12`;
//! * password: a SAS token for `{host}/devices/{device}` signed with the base64-decoded
//!   device key (no key name), signed anew for every connection; a connection is replaced
//!   once 80% of `token_ttl` has passed, so the hub never sees an expired token;
//! * topic `devices/{device}/messages/events/$.mid={id}&{properties}`, URL-encoded; the
//!   payload is the body as is;
//! * X.509 (`x509=true`): the same user name, no password; the device certificate is the
//!   credential, presented in the TLS handshake ([`crate::client_cert`]).
//! * WebSockets (`transport = "websockets"`): the same MQTT inside a WebSocket with
//!   subprotocol `mqtt` at `wss://{host}:443/$iothub/websocket`;
//! * TLS on (port 8883) unless the spec turns it off for a local test broker;
//! * with `GatewayHostName` (IoT Edge) the connection goes to the gateway, whose name TLS
//!   verifies, while the user name and SAS scope keep naming the hub (as Azure's SDKs do);
//! * a device id with `#` or `+` is refused when the transport is built
//!   ([`TransportError::WildcardInDeviceId`]): the id goes into the publish topic as is,
//!   where MQTT forbids wildcards. Azure's own SDKs put it there unencoded too
//!   (azure-sdk-for-c copies it; azure-iot-sdk-python stopped URL-encoding it because the
//!   hub does not decode ids in topics), so no encoding would reach the right device;
//! * a record on whose publish the hub closed `reject_after_closes` accepted connections in
//!   a row is answered [`Outcome::Rejected`](twinhub_core::Outcome::Rejected) (see
//!   `mqtt::refusal`).

use std::sync::Arc;
use std::time::Duration;

use super::Limits;
use super::common::{TokenCache, TransportError, plaintext_credentials};
use super::mqtt::{Credentials, Framing, MqttConfig, MqttTransport};
use crate::spec::{Bind, IotHubSpec, IotHubTransport, MqttVersion};

/// The API version the device MQTT documentation recommends in the user name.
pub const API_VERSION: &str = "2021-04-12";

/// The URL path of IoT Hub's MQTT-over-WebSockets endpoint.
pub const WEBSOCKET_PATH: &str = "/$iothub/websocket";

/// Keep-alive well under the hub's 1177 s maximum, like the Azure SDKs.
const KEEP_ALIVE: Duration = Duration::from_secs(60);

/// The IoT Hub transport: [`MqttTransport`] with IoT Hub's identity, credentials and topic.
pub fn iot_hub_transport(
    spec: &IotHubSpec,
    bind: Option<&Bind>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    limits: Limits,
) -> Result<MqttTransport, TransportError> {
    if spec.host.is_empty() || spec.device_id.is_empty() {
        return Err(TransportError::InvalidSpec(
            "iot hub host and device id must be set".into(),
        ));
    }
    if let Some(character) = spec.device_id.chars().find(|c| matches!(c, '#' | '+')) {
        return Err(TransportError::WildcardInDeviceId {
            device_id: spec.device_id.clone(),
            character,
        });
    }
    // `host` may carry a port for a local broker; the identity uses the host name only.
    // An IPv6 literal has colons of its own: only `[addr]:port` or `name:port` split.
    let (name, port) = match spec.host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') && h.ends_with(']') => {
            match p.parse::<u16>() {
                Ok(port) => (h.to_string(), port),
                Err(_) => (spec.host.clone(), spec.port),
            }
        }
        _ => (spec.host.clone(), spec.port),
    };
    // The host actually connected to: an IoT Edge gateway when there is one.
    let (connect_to, port) = match spec.gateway_host.as_deref() {
        Some(g) if !g.is_empty() => (g.to_string(), spec.port),
        _ => (name.clone(), port),
    };
    if !spec.tls {
        plaintext_credentials("UseDevelopmentEmulator=true", &connect_to)?;
    }
    let username = format!("{name}/{}/?api-version={API_VERSION}", spec.device_id);
    let (credentials, tls, max_age) = if spec.x509 {
        let (credentials, tls) = x509_auth(spec, username, &tls)?;
        // No token to expire: a connection lives until it fails.
        (credentials, tls, None)
    } else {
        let tokens = TokenCache::new(
            format!("{name}/devices/{}", spec.device_id),
            spec.key.clone(),
            None,
            true,
            spec.token_ttl,
        )?;
        let max_age = tokens.renew_after();
        (Credentials::Sas(username, tokens), tls, Some(max_age))
    };
    let record = usize::try_from(limits.max_record_bytes).unwrap_or(usize::MAX / 2);
    MqttTransport::from_config(
        MqttConfig {
            host: connect_to,
            port,
            tls: spec.tls.then_some(tls),
            client_id: spec.device_id.clone(),
            credentials,
            version: MqttVersion::V311,
            framing: Framing::IotHub {
                device: spec.device_id.clone(),
            },
            keep_alive: KEEP_ALIVE,
            bind: bind.cloned(),
            max_age,
            max_packet: record.saturating_add(8192),
            max_batch: usize::from(limits.max_batch_records),
            websocket_path: (spec.transport == IotHubTransport::WebSockets)
                .then(|| WEBSOCKET_PATH.to_string()),
            reject_after_closes: spec.reject_after_closes,
        },
        timeout,
    )
}

/// X.509 device authentication (IoT Hub's CA-signed or self-signed device certificates):
/// CONNECT carries the usual user name and no password, as Microsoft's device SDKs send
/// it, and the TLS settings present the device certificate.
fn x509_auth(
    spec: &IotHubSpec,
    username: String,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<(Credentials, Arc<rustls::ClientConfig>), TransportError> {
    let Some(cert) = spec.client_cert.as_ref() else {
        return Err(TransportError::InvalidSpec(
            "x509=true needs a client certificate (client_cert and client_key)".into(),
        ));
    };
    if !spec.tls {
        return Err(TransportError::InvalidSpec(
            "X.509 authentication needs TLS (not UseDevelopmentEmulator=true)".into(),
        ));
    }
    let tls = crate::client_cert::with_client_cert(tls, Some(cert))?;
    Ok((Credentials::Static(username, None), tls))
}
