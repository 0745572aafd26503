//! A raw MQTT 3.1.1 client over TLS for the IoT Hub endpoint's tests: it sends exactly the
//! packets a test builds, hostile ones included, and reports exactly what came back.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Login, Packet, Publish};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use twinhub_emulator::{Emulator, Region};

use super::T;

/// The API version in test user names.
pub const API: &str = "2021-04-12";

/// A client configuration trusting only the run's CA.
pub fn tls_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM"))
        .expect("CA accepted");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// [`tls_config`] presenting a client certificate (X.509 device authentication).
pub fn tls_config_with_cert(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::PrivateKeyDer;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM"))
        .expect("CA accepted");
    let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert PEM")];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("client certificate accepted"),
    )
}

/// One connection to a region's IoT Hub endpoint.
pub struct Hub {
    io: TlsStream<TcpStream>,
    buf: BytesMut,
}

impl Hub {
    /// TCP + TLS to the region's endpoint, verifying its certificate by IP address.
    pub async fn open(emu: &Emulator, r: &Region) -> std::io::Result<Hub> {
        Hub::open_with(r, tls_config(emu.ca_pem())).await
    }

    /// [`Hub::open`] with the given TLS settings (a client certificate, say).
    pub async fn open_with(r: &Region, tls: Arc<rustls::ClientConfig>) -> std::io::Result<Hub> {
        let addr = r.iot_hub_addr();
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::IpAddress(addr.ip().into());
        let io = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await?;
        Ok(Hub {
            io,
            buf: BytesMut::new(),
        })
    }

    /// Writes one packet (errors ignored: the server may already have closed).
    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet
            .write(&mut out, usize::MAX)
            .expect("encodable packet");
        self.send_raw(&out).await;
    }

    /// Writes bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.io.write_all(bytes).await;
        let _ = self.io.flush().await;
    }

    /// The next packet, or `None` once the server closed the connection. Panics if
    /// nothing happens within [`T`].
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(T, async {
            loop {
                match Packet::read(&mut self.buf, 1 << 20) {
                    Ok(p) => return Some(p),
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => panic!("server sent a malformed packet: {e}"),
                }
                match self.io.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the server answered or closed within the test timeout")
    }

    /// True if the server closes the connection before sending anything else.
    pub async fn closed(&mut self) -> bool {
        self.recv().await.is_none()
    }

    /// Sends `connect`; returns the CONNACK code, or `None` if the server just closed.
    pub async fn connect(&mut self, connect: Connect) -> Option<ConnectReturnCode> {
        self.send(Packet::Connect(connect)).await;
        match self.recv().await {
            Some(Packet::ConnAck(a)) => Some(a.code),
            None => None,
            Some(other) => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Publishes QoS 1 and returns whether a PUBACK for it came back (`false`: closed).
    pub async fn publish_acked(&mut self, topic: &str, payload: Vec<u8>) -> bool {
        let mut p = Publish::new(topic, QoS::AtLeastOnce, payload);
        p.pkid = 7;
        self.send(Packet::Publish(p)).await;
        match self.recv().await {
            Some(Packet::PubAck(a)) => {
                assert_eq!(a.pkid, 7);
                true
            }
            None => false,
            Some(other) => panic!("expected PUBACK, got {other:?}"),
        }
    }
}

/// A CONNECT with the given fields (clean session off, like the Azure SDKs).
pub fn connect_with(client_id: &str, username: &str, password: &str, keep_alive: u16) -> Connect {
    let mut c = Connect::new(client_id);
    c.clean_session = false;
    c.keep_alive = keep_alive;
    c.login = Some(Login {
        username: username.into(),
        password: password.into(),
    });
    c
}

/// The CONNECT a correct client sends for `device`.
pub fn good_connect(r: &Region, device: &str) -> Connect {
    connect_with(
        device,
        &format!("{}/{device}/?api-version={API}", r.iot_hub_host()),
        &r.iot_hub_sas_token(device, Duration::from_secs(600)),
        60,
    )
}

/// The telemetry topic of `device` with a property bag.
pub fn topic(device: &str, bag: &str) -> String {
    format!("devices/{device}/messages/events/{bag}")
}

/// A connection of `device`, accepted; panics otherwise.
pub async fn connected(emu: &Emulator, r: &Region, device: &str) -> Hub {
    let mut hub = Hub::open(emu, r)
        .await
        .expect("TLS to the IoT Hub endpoint");
    assert_eq!(
        hub.connect(good_connect(r, device)).await,
        Some(ConnectReturnCode::Success),
        "{device} connects"
    );
    hub
}
