//! The parts of a region's IoT Hub that go beyond SAS over MQTT on 8883: the
//! MQTT-over-WebSockets listener and the X.509 device certificate issued per run.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;

use super::{Region, StartError, bind, local};
use crate::config::RegionConfig;
use crate::fault::FaultSwitch;
use crate::http::PeerMap;
use crate::iothub::IotHub;
use crate::iothub_ws;
use crate::proxy::{self, Upstream};
use crate::tls::{CaFile, DeviceCert, RunCa};

/// IoT Hub's MQTT-over-WebSockets port.
const WEBSOCKET_PORT: u16 = 443;

/// What [`start`] made: the WebSocket endpoint's public address and the device
/// certificate and key files.
pub(super) struct DeviceAuth {
    pub(super) websocket: SocketAddr,
    pub(super) cert_file: PathBuf,
    pub(super) key_file: PathBuf,
}

/// Starts the region's WebSocket endpoint on `ip` (behind the region's fault switch, like
/// the MQTT one) and writes a device certificate for the region's device beside the CA
/// file (`region{index}-device.pem` and `-device-key.pem`).
#[allow(clippy::too_many_arguments)]
pub(super) async fn start(
    index: usize,
    rc: &RegionConfig,
    ip: IpAddr,
    tls: Arc<rustls::ServerConfig>,
    hub: Arc<IotHub>,
    switch: &FaultSwitch,
    peers: &PeerMap,
    ca: &RunCa,
    ca_file: &mut CaFile,
) -> Result<DeviceAuth, StartError> {
    let public = bind_websocket(ip, rc.iot_hub_websocket_port).await?;
    let websocket = local(&public, SocketAddr::new(ip, WEBSOCKET_PORT))?;
    let internal_asked = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);
    let internal = bind(internal_asked).await?;
    let internal_addr = local(&internal, internal_asked)?;
    iothub_ws::spawn(internal, tls, hub);
    proxy::spawn(
        public,
        Upstream::Fixed(internal_addr),
        switch.clone(),
        Some(peers.clone()),
    );
    let DeviceCert { cert_pem, key_pem } = ca.device_cert(&rc.iot_hub_device)?;
    let cert_file = ca_file.write_beside(&format!("region{index}-device.pem"), &cert_pem)?;
    let key_file = ca_file.write_beside(&format!("region{index}-device-key.pem"), &key_pem)?;
    Ok(DeviceAuth {
        websocket,
        cert_file,
        key_file,
    })
}

/// 443 unless configured; if 443 is refused (not privileged, or taken), an ephemeral
/// port, which the start line and [`Region::iot_hub_websocket_addr`] report.
async fn bind_websocket(ip: IpAddr, configured: Option<u16>) -> Result<TcpListener, StartError> {
    if let Some(port) = configured {
        return bind(SocketAddr::new(ip, port)).await;
    }
    match TcpListener::bind(SocketAddr::new(ip, WEBSOCKET_PORT)).await {
        Ok(l) => Ok(l),
        Err(e) => {
            tracing::warn!(error = %e, %ip, "IoT Hub WebSockets: port 443 unavailable, using an ephemeral port");
            bind(SocketAddr::new(ip, 0)).await
        }
    }
}

impl Region {
    /// Address of the IoT Hub MQTT-over-WebSockets endpoint (`wss://{addr}/$iothub/websocket`,
    /// subprotocol `mqtt`): port 443 when the emulator could bind it, else ephemeral.
    pub fn iot_hub_websocket_addr(&self) -> SocketAddr {
        self.iot_hub_ws
    }

    /// `HostName={ip};DeviceId={device};x509=true`: the X.509 form of the connection
    /// string, for the certificate in [`Region::iot_hub_device_cert_file`].
    pub fn iot_hub_x509_connection_string(&self) -> String {
        format!(
            "HostName={};DeviceId={};x509=true",
            self.iot_hub_host(),
            self.iot_hub_device
        )
    }

    /// The PEM certificate of the region's device (subject CN = its id), issued by the
    /// run's CA; removed when the emulator stops.
    pub fn iot_hub_device_cert_file(&self) -> &Path {
        &self.iot_hub_cert_file
    }

    /// The private key (PEM) of [`Region::iot_hub_device_cert_file`].
    pub fn iot_hub_device_key_file(&self) -> &Path {
        &self.iot_hub_key_file
    }
}
