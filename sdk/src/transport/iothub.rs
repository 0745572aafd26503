//! Azure IoT Hub device telemetry over MQTT 3.1.1 (PROTOCOLS.md §4).
//!
//! * client id = device id; user name `{host}/{device}/?api-version=2021-04-12`;
//! * password: a SAS token for `{host}/devices/{device}` signed with the base64-decoded
//!   device key (no key name), signed anew for every connection; a connection is replaced
//!   once 80% of `token_ttl` has passed, so the hub never sees an expired token;
//! * topic `devices/{device}/messages/events/$.mid={id}&{properties}`, URL-encoded; the
//!   payload is the body as is;
//! * TLS on (port 8883) unless the spec turns it off for a local test broker.
//! * X.509 (`x509=true`): the same user name, no password; the device certificate is the
//!   credential, presented in the TLS handshake ([`crate::client_cert`]).
//! * WebSockets (`transport = "websockets"`): the same MQTT inside a WebSocket with
//!   subprotocol `mqtt` at `wss://{host}:443/$iothub/websocket`.

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
    if !spec.tls {
        plaintext_credentials("UseDevelopmentEmulator=true", &spec.host)?;
    }
    // `host` may carry a port for a local broker; the identity uses the host name only.
    let (name, port) = match spec.host.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_string(), p.parse().unwrap_or(spec.port)),
        _ => (spec.host.clone(), spec.port),
    };
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
            host: name.clone(),
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
