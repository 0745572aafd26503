//! A region's IoT Hub endpoint: device-to-cloud telemetry over MQTT 3.1.1 and TLS, checked
//! the way IoT Hub checks it (PROTOCOLS.md §4).
//!
//! IoT Hub is not a general MQTT broker, and neither is this: it is a small front end that
//! terminates TLS, decodes packets with a real MQTT codec (rumqttc's `mqttbytes`), checks
//! each one and records accepted telemetry directly in the region's store. No broker sits
//! behind it, so no broker rule (client id characters, one session per id) can refuse a
//! device IoT Hub accepts, and no broker panic can take the region down.
//!
//! ## What is checked, and the answer
//!
//! | check | IoT Hub's rule | answer here |
//! |---|---|---|
//! | protocol | MQTT 3.1.1 (level 4) | CONNACK 1, close |
//! | client id | the device id (`{device}/{module}` for a module): 1 to 128 ASCII letters, digits and `- : . + % _ # * ? ! ( ) , = @ ; $ '` | CONNACK 2, close |
//! | user name | `{host}/{client id}/` optionally followed by `?{query}` (`api-version=...`); the host is compared without case | CONNACK 5, close |
//! | X.509 (no password) | a client certificate from the run's CA (else the TLS handshake fails) whose subject CN is the client id | CONNACK 5, close |
//! | password | a SAS token: `sr` = URL-encoded `{host}/devices/{device}` (plus `/modules/{module}`), no `skn`, HMAC-SHA256 over the `sr` text as sent with the region's base64-decoded key, `se` in the future | CONNACK 5, close |
//! | publish topic | `devices/{device}/messages/events/{property bag}` (module: `devices/{d}/modules/{m}/messages/events/...`) of the authenticated identity | close |
//! | QoS | 0 or 1 | QoS 2: close |
//! | size | body + property bag at most 256 KB | close |
//! | keep-alive | idle for 1.5 × keep-alive, capped at 1767 s (a keep-alive of 0 or above 1177 s gets the cap) | close |
//! | one connection per device | a new connection of the same identity replaces the old one | the old one is closed |
//!
//! Keep-alive: IoT Hub documents 1177 s as the largest keep-alive, but its MQTT adapter caps
//! the idle timeout rather than refusing the connection, and Microsoft's Python device SDK
//! accepts keep-alives up to 1740 s. A larger keep-alive is therefore accepted and capped.
//!
//! Subscriptions to the device's cloud-to-device, twin and method topics are granted (QoS
//! 2 is granted as 1) and never delivered to; any other filter gets the failure code.
//! Publishes to `$iothub/...` (twin and method traffic) are not emulated: the connection is
//! closed, as for any other topic.
//!
//! Recorded: the body as is, the decoded property bag as properties (message id from
//! `$.mid`), plus `iothub-connection-device-id` (and `-module-id`) as IoT Hub stamps them,
//! and `mqtt-retain=true` for a retained publish.
//!
//! What happened to every connection is counted by reason ([`IotHubEvents`]); the admin
//! API reports the counts at `GET /_admin/regions/{name}/iot-hub`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PingResp, PubAck, Publish, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{Error as CodecError, Protocol as MqttLevel, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use twinhub_core::sas::{ParsedToken, SasError, SasKey};

use crate::fault::{Fault, FaultSwitch};
use crate::http::PeerMap;
use crate::mqtt::iot_hub_property_bag;
use crate::store::{Protocol, Record, Store, now_ms};

/// IoT Hub's largest device-to-cloud message: 256 KB.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// IoT Hub's largest documented client keep-alive, in seconds.
pub const MAX_KEEP_ALIVE_S: u16 = 1177;
/// IoT Hub's idle timeout cap (the load balancer's), in seconds: 1.5 × 1178.
pub const MAX_IDLE_S: u64 = 1767;
/// The API version the emulator's connection strings and tokens are made for.
pub const API_VERSION: &str = "2021-04-12";

/// How long a client may take for the TLS handshake and then for its CONNECT.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Room for the packet header and topic around a message of the largest size.
const HEADER_SLACK: usize = 64 * 1024;
/// Largest CONNECT accepted (ids, user name and a SAS token are far smaller).
const MAX_CONNECT_BYTES: usize = 16 * 1024;

/// Counts of what happened to connections, by reason (`connected`, `connack-5-sas-signature`,
/// `closed-qos2`, ...). Cheap to clone; clones share the counts.
#[derive(Clone, Default)]
pub struct IotHubEvents {
    counts: Arc<Mutex<BTreeMap<&'static str, u64>>>,
    // Wakes `wait_for` at every count.
    changed: Arc<Notify>,
}

impl std::fmt::Debug for IotHubEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.snapshot()).finish()
    }
}

impl IotHubEvents {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, u64>> {
        // Counters stay usable even if a holder panicked.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn bump(&self, reason: &'static str) {
        *self.lock().entry(reason).or_insert(0) += 1;
        self.changed.notify_waiters();
    }

    /// Every reason seen so far with its count.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.lock()
            .iter()
            .map(|(k, v)| ((*k).to_string(), *v))
            .collect()
    }

    /// How many connections ended (or were answered) for `reason`. A connection is counted
    /// once the hub is done with it, which may be after the client saw the answer: a test
    /// that acts on the answer waits with [`wait_for`](Self::wait_for).
    pub fn count(&self, reason: &str) -> u64 {
        self.lock().get(reason).copied().unwrap_or(0)
    }

    /// Waits until `reason` was counted at least `n` times, or `timeout` passed; returns
    /// the count either way. For what the client can see before the hub counts it: a
    /// failed TLS handshake's alert reaches the client before the hub's side of the
    /// handshake returns.
    pub async fn wait_for(&self, reason: &str, n: u64, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the count is read, so a bump in between is not missed.
            notified.as_mut().enable();
            let count = self.count(reason);
            if count >= n || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.count(reason);
            }
        }
    }

    pub(crate) fn reset(&self) {
        self.lock().clear();
    }
}

/// One region's IoT Hub endpoint state, shared by its connections.
pub(crate) struct IotHub {
    pub(crate) host: String,
    pub(crate) key: String,
    pub(crate) store: Store,
    pub(crate) switch: FaultSwitch,
    pub(crate) peers: PeerMap,
    pub(crate) max_idle: Duration,
    pub(crate) events: IotHubEvents,
    sessions: Mutex<HashMap<String, (u64, oneshot::Sender<()>)>>,
    next_conn: AtomicU64,
}

impl IotHub {
    pub(crate) fn new(
        host: String,
        key: String,
        store: Store,
        switch: FaultSwitch,
        peers: PeerMap,
        max_idle: Duration,
    ) -> Self {
        IotHub {
            host,
            key,
            store,
            switch,
            peers,
            max_idle,
            events: IotHubEvents::default(),
            sessions: Mutex::default(),
            next_conn: AtomicU64::new(1),
        }
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, (u64, oneshot::Sender<()>)>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The identity a CONNECT authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    device: String,
    module: Option<String>,
}

impl Identity {
    fn client_id(&self) -> String {
        match &self.module {
            Some(m) => format!("{}/{m}", self.device),
            None => self.device.clone(),
        }
    }

    fn topic_prefix(&self) -> String {
        match &self.module {
            Some(m) => format!("devices/{}/modules/{m}/messages/events/", self.device),
            None => format!("devices/{}/messages/events/", self.device),
        }
    }

    fn resource(&self, host: &str) -> String {
        match &self.module {
            Some(m) => format!("{host}/devices/{}/modules/{m}", self.device),
            None => format!("{host}/devices/{}", self.device),
        }
    }
}

/// Why a CONNECT was refused: the CONNACK code and the counted reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    code: ConnectReturnCode,
    reason: &'static str,
}

const fn refuse(code: ConnectReturnCode, reason: &'static str) -> Refusal {
    Refusal { code, reason }
}

/// True for a device or module id IoT Hub accepts: 1 to 128 ASCII letters, digits and
/// `- : . + % _ # * ? ! ( ) , = @ ; $ '`.
pub fn valid_device_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-:.+%_#*?!(),=@;$'".contains(&b))
}

/// Checks a CONNECT as IoT Hub does (see the module docs); `now` is Unix seconds.
#[cfg(test)]
pub(crate) fn check_connect(
    connect: &Connect,
    host: &str,
    key: &str,
    now: u64,
) -> Result<Identity, Refusal> {
    check_connect_with_cert(connect, host, key, now, None)
}

/// [`check_connect`] for a client that presented `client_cn`, the subject CN of a
/// certificate the TLS layer verified against the run's CA. A CONNECT without a password
/// is then X.509 authentication: the CN must be the client id, as IoT Hub requires of
/// CA-signed device certificates.
pub(crate) fn check_connect_with_cert(
    connect: &Connect,
    host: &str,
    key: &str,
    now: u64,
    client_cn: Option<&str>,
) -> Result<Identity, Refusal> {
    use ConnectReturnCode::{BadClientId, NotAuthorized, RefusedProtocolVersion};
    if connect.protocol != MqttLevel::V4 {
        return Err(refuse(RefusedProtocolVersion, "connack-1-protocol"));
    }
    let mut parts = connect.client_id.splitn(2, '/');
    let device = parts.next().unwrap_or_default();
    let module = parts.next();
    if !valid_device_id(device) || module.is_some_and(|m| !valid_device_id(m)) {
        return Err(refuse(BadClientId, "connack-2-client-id"));
    }
    let identity = Identity {
        device: device.to_string(),
        module: module.map(str::to_string),
    };
    let Some(login) = &connect.login else {
        return Err(refuse(NotAuthorized, "connack-5-no-credentials"));
    };
    if !username_ok(&login.username, host, &connect.client_id) {
        return Err(refuse(NotAuthorized, "connack-5-username"));
    }
    if login.password.is_empty() {
        return match client_cn {
            Some(cn) if cn == connect.client_id => Ok(identity),
            Some(_) => Err(refuse(NotAuthorized, "connack-5-x509-cn")),
            None => Err(refuse(NotAuthorized, "connack-5-no-credentials")),
        };
    }
    let token = ParsedToken::parse(&login.password)
        .map_err(|_| refuse(NotAuthorized, "connack-5-sas-malformed"))?;
    if token.key_name.is_some() {
        // A device key signs without a rule name; a named rule is a hub policy this
        // emulator does not have.
        return Err(refuse(NotAuthorized, "connack-5-sas-key-name"));
    }
    let mut buf = vec![0u8; token.resource.len()];
    let scope = token
        .resource_decoded(&mut buf)
        .map_err(|_| refuse(NotAuthorized, "connack-5-sas-scope"))?;
    if !same_resource(scope, &identity.resource(host)) {
        return Err(refuse(NotAuthorized, "connack-5-sas-scope"));
    }
    match token.verify(&SasKey::Base64(key), now) {
        Ok(()) => Ok(identity),
        Err(SasError::Expired { .. }) => Err(refuse(NotAuthorized, "connack-5-sas-expired")),
        Err(_) => Err(refuse(NotAuthorized, "connack-5-sas-signature")),
    }
}

/// `{host}/{client_id}/` or `{host}/{client_id}/?{query}`; the host without case.
fn username_ok(username: &str, host: &str, client_id: &str) -> bool {
    let Some(head) = username.get(..host.len()) else {
        return false;
    };
    if !head.eq_ignore_ascii_case(host) {
        return false;
    }
    let Some(rest) = username[host.len()..]
        .strip_prefix('/')
        .and_then(|r| r.strip_prefix(client_id))
        .and_then(|r| r.strip_prefix('/'))
    else {
        return false;
    };
    rest.is_empty() || rest.starts_with('?')
}

/// The host part compared without case (DNS names are), the path exactly (device ids are
/// case-sensitive).
fn same_resource(got: &str, want: &str) -> bool {
    match (got.split_once('/'), want.split_once('/')) {
        (Some((gh, gp)), Some((wh, wp))) => gh.eq_ignore_ascii_case(wh) && gp == wp,
        _ => false,
    }
}

/// Why a connection ended, counted as `closed-*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    ByClient,
    NotConnect,
    Malformed,
    SecondConnect,
    Qos2,
    Topic,
    Oversize,
    Refused,
    Throttled,
    KeepAlive,
    Replaced,
    Subscribe,
    Io,
}

impl End {
    fn reason(self) -> &'static str {
        match self {
            End::ByClient => "closed-by-client",
            End::NotConnect => "closed-not-connect",
            End::Malformed => "closed-malformed",
            End::SecondConnect => "closed-second-connect",
            End::Qos2 => "closed-qos2",
            End::Topic => "closed-topic",
            End::Oversize => "closed-oversize",
            End::Refused => "closed-refused",
            End::Throttled => "closed-throttled",
            End::KeepAlive => "closed-keep-alive",
            End::Replaced => "closed-replaced",
            End::Subscribe => "closed-subscribe",
            End::Io => "closed-io",
        }
    }
}

/// Serves the endpoint: TLS connections from `listener` (behind the region's fault proxy).
pub(crate) fn spawn(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    hub: Arc<IotHub>,
) -> tokio::task::JoinHandle<()> {
    accept_tls(
        listener,
        tls,
        hub,
        "IoT Hub",
        |tls, local, hub| async move {
            let peer = hub.peer_of(local);
            let cn = crate::tls::client_common_name(tls.get_ref().1);
            serve(tls, peer, &hub, cn.as_deref()).await;
        },
    )
}

/// A TLS stream the endpoint accepted.
pub(crate) type TlsConn = tokio_rustls::server::TlsStream<TcpStream>;

/// Accepts connections from `listener` and runs each, once its TLS handshake is done, as
/// `conn` in a task of its own: a connection that misbehaves (or a bug it finds) ends
/// that task only. `conn` gets the local address the proxy connected from, for
/// [`IotHub::peer_of`]. Shared by MQTT on 8883 and by WebSockets on 443.
pub(crate) fn accept_tls<F, Fut>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    hub: Arc<IotHub>,
    what: &'static str,
    conn: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(TlsConn, SocketAddr, Arc<IotHub>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let conn = Arc::new(conn);
    tokio::spawn(async move {
        loop {
            let (stream, local) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "{what} accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (acceptor, hub, conn) = (acceptor.clone(), hub.clone(), conn.clone());
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => conn(tls, local, hub).await,
                    _ => hub.events.bump("closed-tls"),
                }
            });
        }
    })
}

impl IotHub {
    /// The client's address behind the connection the proxy made from `local`: the proxy
    /// registered it before it forwarded a single byte, so it is known once a handshake
    /// is done. `local` itself when no proxy stands in between.
    pub(crate) fn peer_of(&self, local: SocketAddr) -> SocketAddr {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&local)
            .copied()
            .unwrap_or(local)
    }
}

/// Runs one MQTT connection to its end and counts why it ended. Generic over the stream
/// so the protocol is tested without TLS.
pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    peer: SocketAddr,
    hub: &IotHub,
    client_cn: Option<&str>,
) {
    let mut conn = Conn {
        io,
        buf: BytesMut::with_capacity(4096),
        out: BytesMut::with_capacity(64),
    };
    let reason = match conn.session(peer, hub, client_cn).await {
        Ok(end) | Err(end) => end,
    };
    hub.events.bump(reason);
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.io.shutdown()).await;
}

struct Conn<S> {
    io: S,
    buf: BytesMut,
    out: BytesMut,
}

enum Read {
    Packet(Packet),
    End(End),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Reads the next packet, waiting at most `idle` for more bytes.
    async fn read(&mut self, max: usize, idle: Duration, idle_end: End) -> Read {
        loop {
            match Packet::read(&mut self.buf, max) {
                Ok(p) => return Read::Packet(p),
                Err(CodecError::InsufficientBytes(_)) => {}
                Err(CodecError::PayloadSizeLimitExceeded(_)) => return Read::End(End::Oversize),
                Err(_) => return Read::End(End::Malformed),
            }
            match tokio::time::timeout(idle, self.io.read_buf(&mut self.buf)).await {
                Err(_) => return Read::End(idle_end),
                Ok(Ok(0)) => return Read::End(End::ByClient),
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Read::End(End::Io),
            }
        }
    }

    async fn send(
        &mut self,
        write: impl FnOnce(&mut BytesMut) -> Result<usize, CodecError>,
    ) -> bool {
        self.out.clear();
        if write(&mut self.out).is_err() {
            return false;
        }
        self.io.write_all(&self.out).await.is_ok() && self.io.flush().await.is_ok()
    }

    /// CONNECT, then packets until the end; `Ok` and `Err` both carry the counted reason.
    async fn session(
        &mut self,
        peer: SocketAddr,
        hub: &IotHub,
        client_cn: Option<&str>,
    ) -> Result<&'static str, &'static str> {
        let connect = match self
            .read(MAX_CONNECT_BYTES, HANDSHAKE_TIMEOUT, End::NotConnect)
            .await
        {
            Read::Packet(Packet::Connect(c)) => c,
            Read::Packet(_) => return Err(End::NotConnect.reason()),
            Read::End(End::Malformed) => {
                // A CONNECT of another protocol version does not parse as 3.1.1; answer
                // it the way a 3.1.1 server must, everything else is just closed.
                if looks_like_other_version(&self.buf) {
                    let ack = ConnAck::new(ConnectReturnCode::RefusedProtocolVersion, false);
                    self.send(|b| ack.write(b)).await;
                    return Err("connack-1-protocol");
                }
                return Err(End::NotConnect.reason());
            }
            Read::End(e) => return Err(e.reason()),
        };
        let checked = check_connect_with_cert(&connect, &hub.host, &hub.key, unix_now(), client_cn);
        let identity = match checked {
            Ok(i) => i,
            Err(refusal) => {
                let ack = ConnAck::new(refusal.code, false);
                self.send(|b| ack.write(b)).await;
                return Err(refusal.reason);
            }
        };
        let ack = ConnAck::new(ConnectReturnCode::Success, false);
        if !self.send(|b| ack.write(b)).await {
            return Err(End::Io.reason());
        }
        hub.events.bump("connected");
        let client_id = identity.client_id();
        let conn_id = hub.next_conn.fetch_add(1, Ordering::Relaxed);
        let (kick_tx, mut kick_rx) = oneshot::channel();
        // IoT Hub keeps one connection per device: the newest wins.
        if let Some((_, old)) = hub.sessions().insert(client_id.clone(), (conn_id, kick_tx)) {
            let _ = old.send(());
        }
        let idle = idle_timeout(connect.keep_alive, hub.max_idle);
        let end = tokio::select! {
            end = self.packets(&identity, peer, hub, idle) => end,
            _ = &mut kick_rx => End::Replaced,
        };
        let mut sessions = hub.sessions();
        if sessions
            .get(&client_id)
            .is_some_and(|(id, _)| *id == conn_id)
        {
            sessions.remove(&client_id);
        }
        Ok(end.reason())
    }

    async fn packets(
        &mut self,
        identity: &Identity,
        peer: SocketAddr,
        hub: &IotHub,
        idle: Duration,
    ) -> End {
        let prefix = identity.topic_prefix();
        let max = MAX_MESSAGE_BYTES + HEADER_SLACK;
        let mut throttled_acks = 0u32;
        loop {
            let packet = match self.read(max, idle, End::KeepAlive).await {
                Read::Packet(p) => p,
                Read::End(e) => return e,
            };
            match packet {
                Packet::Publish(p) => {
                    if p.qos == QoS::ExactlyOnce {
                        return End::Qos2;
                    }
                    let Some(bag) = p.topic.strip_prefix(prefix.as_str()) else {
                        return End::Topic;
                    };
                    if p.payload.len() + bag.len() > MAX_MESSAGE_BYTES {
                        return End::Oversize;
                    }
                    let mut delay = None;
                    match hub.switch.iot_hub_fault(peer.ip(), &identity.device) {
                        Fault::IotHubRefuse => return End::Refused,
                        Fault::IotHubThrottle { delay_ms, acks } => {
                            if throttled_acks >= acks {
                                return End::Throttled;
                            }
                            throttled_acks += 1;
                            delay = Some(Duration::from_millis(delay_ms));
                        }
                        _ => {}
                    }
                    hub.store.push_all(vec![record(hub, identity, peer, &p)]);
                    if let Some(d) = delay {
                        tokio::time::sleep(d).await;
                    }
                    if p.qos == QoS::AtLeastOnce {
                        let ack = PubAck::new(p.pkid);
                        if !self.send(|b| ack.write(b)).await {
                            return End::Io;
                        }
                    }
                }
                Packet::PingReq => {
                    if !self.send(|b| PingResp.write(b)).await {
                        return End::Io;
                    }
                }
                Packet::Subscribe(s) => {
                    let codes = s
                        .filters
                        .iter()
                        .map(|f| {
                            if subscribable(&f.path, identity) {
                                // QoS 2 is granted as 1, as IoT Hub does.
                                SubscribeReasonCode::Success(match f.qos {
                                    QoS::AtMostOnce => QoS::AtMostOnce,
                                    _ => QoS::AtLeastOnce,
                                })
                            } else {
                                SubscribeReasonCode::Failure
                            }
                        })
                        .collect();
                    let ack = SubAck::new(s.pkid, codes);
                    if !self.send(|b| ack.write(b)).await {
                        return End::Subscribe;
                    }
                }
                Packet::Unsubscribe(u) => {
                    let ack = UnsubAck::new(u.pkid);
                    if !self.send(|b| ack.write(b)).await {
                        return End::Io;
                    }
                }
                // Acknowledgements of cloud-to-device messages: none are ever sent.
                Packet::PubAck(_) => {}
                Packet::Disconnect => return End::ByClient,
                Packet::Connect(_) => return End::SecondConnect,
                _ => return End::Malformed,
            }
        }
    }
}

/// A CONNECT whose protocol name is MQTT/MQIsdp but whose level is not 4.
fn looks_like_other_version(buf: &[u8]) -> bool {
    if buf.first() != Some(&0x10) {
        return false;
    }
    // Skip the remaining length (1 to 4 bytes).
    let mut i = 1;
    while i < 5 && buf.get(i).is_some_and(|b| b & 0x80 != 0) {
        i += 1;
    }
    let rest = buf.get(i + 1..).unwrap_or_default();
    [&b"\x00\x04MQTT"[..], b"\x00\x06MQIsdp"]
        .iter()
        .find(|name| rest.starts_with(name))
        .and_then(|name| rest.get(name.len()))
        .is_some_and(|level| *level != 4)
}

fn subscribable(filter: &str, identity: &Identity) -> bool {
    let base = match &identity.module {
        Some(m) => format!("devices/{}/modules/{m}/", identity.device),
        None => format!("devices/{}/", identity.device),
    };
    filter == format!("{base}messages/devicebound/#")
        || filter == format!("{base}inputs/#")
        || filter == "$iothub/twin/res/#"
        || filter == "$iothub/twin/PATCH/properties/desired/#"
        || filter == "$iothub/methods/POST/#"
}

fn idle_timeout(keep_alive: u16, cap: Duration) -> Duration {
    if keep_alive == 0 {
        return cap;
    }
    Duration::from_millis(u64::from(keep_alive) * 1500).min(cap)
}

fn record(hub: &IotHub, identity: &Identity, peer: SocketAddr, p: &Publish) -> Record {
    let mut properties = iot_hub_property_bag(&p.topic);
    properties.insert(
        "iothub-connection-device-id".into(),
        identity.device.clone(),
    );
    if let Some(m) = &identity.module {
        properties.insert("iothub-connection-module-id".into(), m.clone());
    }
    if p.retain {
        properties.insert("mqtt-retain".into(), "true".into());
    }
    Record {
        region: hub.store.region().to_string(),
        protocol: Protocol::IotHub,
        target: p.topic.clone(),
        message_id: properties.get("$.mid").filter(|s| !s.is_empty()).cloned(),
        body: p.payload.to_vec(),
        properties,
        partition_key: None,
        peer: Some(peer),
        received_at_ms: now_ms(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Binds `ip:port`, or, with no `ip`, port `port` of a random 127.a.b.c address, trying
/// others while the address is taken (parallel runs each get their own).
pub(crate) async fn bind_loopback(ip: Option<IpAddr>, port: u16) -> std::io::Result<TcpListener> {
    if let Some(ip) = ip {
        return TcpListener::bind(SocketAddr::new(ip, port)).await;
    }
    let mut last = None;
    for attempt in 0..64u64 {
        let ip = random_loopback(attempt);
        match TcpListener::bind(SocketAddr::new(ip, port)).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no loopback address was free")))
}

/// 127.a.b.c with a in 1..=254 and c in 1..=254: never 127.0.x.x, which tests use as
/// client source addresses, nor a network or broadcast-looking address.
fn random_loopback(salt: u64) -> IpAddr {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(salt);
    let r = h.finish().to_le_bytes();
    IpAddr::V4(std::net::Ipv4Addr::new(
        127,
        1 + r[0] % 254,
        r[1],
        1 + r[2] % 254,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4::Login;

    const HOST: &str = "127.9.9.9";
    const KEY: &str = "cGFzc3dvcmQ=";

    fn token(resource: &str, key: &str, expiry: u64) -> String {
        let mut buf = vec![0u8; 512];
        twinhub_core::sas::sign(resource, &SasKey::Base64(key), None, expiry, &mut buf)
            .unwrap()
            .to_string()
    }

    fn connect(client_id: &str, username: &str, password: &str) -> Connect {
        let mut c = Connect::new(client_id);
        c.login = Some(Login {
            username: username.into(),
            password: password.into(),
        });
        c
    }

    fn good(device: &str) -> Connect {
        connect(
            device,
            &format!("{HOST}/{device}/?api-version={API_VERSION}"),
            &token(&format!("{HOST}/devices/{device}"), KEY, unix_now() + 600),
        )
    }

    #[test]
    fn valid_ids_with_every_allowed_character_connect() {
        for id in ["meter$7", "a+b", "a#b", "x;y", "d.e:f-g_h", "(!*?,=@')%"] {
            assert_eq!(
                check_connect(&good(id), HOST, KEY, unix_now())
                    .map(|i| i.device)
                    .map_err(|r| r.reason),
                Ok(id.to_string()),
                "{id}"
            );
        }
        let module = connect(
            "d/m",
            &format!("{HOST}/d/m/?api-version={API_VERSION}"),
            &token(
                &format!("{HOST}/devices/d/modules/m"),
                KEY,
                unix_now() + 600,
            ),
        );
        let id = check_connect(&module, HOST, KEY, unix_now()).unwrap();
        assert_eq!(id.topic_prefix(), "devices/d/modules/m/messages/events/");
    }

    #[test]
    fn refusals_name_their_reason() {
        let now = unix_now();
        let reason = |c: &Connect| check_connect(c, HOST, KEY, now).unwrap_err().reason;
        let user = |d: &str| format!("{HOST}/{d}/?api-version={API_VERSION}");
        let sas = |d: &str| token(&format!("{HOST}/devices/{d}"), KEY, now + 600);
        assert_eq!(reason(&good("a b")), "connack-2-client-id");
        assert_eq!(reason(&good(&"x".repeat(129))), "connack-2-client-id");
        assert_eq!(reason(&Connect::new("d")), "connack-5-no-credentials");
        assert_eq!(
            reason(&connect("d", &user("e"), &sas("d"))),
            "connack-5-username"
        );
        assert_eq!(
            reason(&connect("d", "other/d/", &sas("d"))),
            "connack-5-username"
        );
        assert_eq!(
            reason(&connect("d", &format!("{HOST}/d/api-version=1"), &sas("d"))),
            "connack-5-username"
        );
        assert_eq!(
            reason(&connect("d", &user("d"), "garbage")),
            "connack-5-sas-malformed"
        );
        assert_eq!(
            reason(&connect("d", &user("d"), &sas("e"))),
            "connack-5-sas-scope"
        );
        let other_key = token(&format!("{HOST}/devices/d"), "b3RoZXI=", now + 600);
        assert_eq!(
            reason(&connect("d", &user("d"), &other_key)),
            "connack-5-sas-signature"
        );
        let expired = token(&format!("{HOST}/devices/d"), KEY, now - 1);
        assert_eq!(
            reason(&connect("d", &user("d"), &expired)),
            "connack-5-sas-expired"
        );
        let mut v5 = good("d");
        v5.protocol = MqttLevel::V5;
        assert_eq!(reason(&v5), "connack-1-protocol");
        // The host is compared without case, the device id with.
        let upper = connect(
            "d",
            &user("d")
                .to_uppercase()
                .replace("/D/", "/d/")
                .replace("API-VERSION", "api-version"),
            &sas("d"),
        );
        assert!(check_connect(&upper, HOST, KEY, now).is_ok());
        assert_eq!(
            reason(&connect("D", &user("D"), &sas("d"))),
            "connack-5-sas-scope"
        );
    }

    #[test]
    fn keep_alive_is_capped_not_refused() {
        let cap = Duration::from_secs(MAX_IDLE_S);
        assert_eq!(idle_timeout(60, cap), Duration::from_secs(90));
        assert_eq!(
            idle_timeout(MAX_KEEP_ALIVE_S, cap),
            Duration::from_millis(1_765_500)
        );
        assert_eq!(idle_timeout(3600, cap), cap);
        assert_eq!(idle_timeout(0, cap), cap);
    }

    #[test]
    fn other_protocol_versions_are_recognised() {
        assert!(looks_like_other_version(b"\x10\x20\x00\x04MQTT\x05"));
        assert!(looks_like_other_version(b"\x10\x20\x00\x06MQIsdp\x03"));
        assert!(!looks_like_other_version(b"\x10\x20\x00\x04MQTT\x04"));
        assert!(!looks_like_other_version(b"GET / HTTP/1.1"));
    }

    // Paused time: a wake-up that was lost would show as the clock run on to the timeout.
    #[tokio::test(start_paused = true)]
    async fn wait_for_returns_on_the_count_or_at_the_timeout() {
        let events = IotHubEvents::default();
        let start = tokio::time::Instant::now();
        events.bump("closed-tls");
        let limit = Duration::from_secs(5);
        assert_eq!(events.wait_for("closed-tls", 2, limit).await, 1);
        assert_eq!(start.elapsed(), limit, "not reached: waited the whole time");

        let bumper = events.clone();
        let start = tokio::time::Instant::now();
        let waiter = tokio::spawn(async move { events.wait_for("closed-tls", 2, limit).await });
        tokio::task::yield_now().await;
        bumper.bump("closed-tls");
        assert_eq!(waiter.await.unwrap(), 2);
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "woken by the count, not the timeout"
        );
    }

    #[test]
    fn random_loopback_stays_off_127_0() {
        for salt in 0..200 {
            let IpAddr::V4(ip) = random_loopback(salt) else {
                panic!("v4 only")
            };
            let o = ip.octets();
            assert_eq!(o[0], 127);
            assert_ne!(o[1], 0);
            assert!(o[3] != 0 && o[3] != 255);
        }
    }
}
