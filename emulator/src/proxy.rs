//! The TCP layer that applies a [`FaultSwitch`] to real connections.
//!
//! Every public address of the emulator is one of these proxies; the real listeners bind
//! internal loopback ports behind them. The same proxy, started with
//! [`FaultProxy::start`], fronts any external TCP service (a mosquitto started by a test),
//! so tests against real brokers get the same faults.
//!
//! Per connection: the source address picks the fault. `down` resets new connections right
//! after accept and resets open ones; `blackhole` reads and drops everything and never
//! answers; `latency` delays every forwarded chunk in each direction; `flap` alternates
//! down and up. HTTP status faults are applied by the HTTP layer, not here.
//!
//! In front of the embedded broker the proxy also guards it. rumqttd refuses client ids
//! with `$ + # /` (valid MQTT, and valid IoT Hub device ids) and panics when an id
//! reconnects while its previous session is still being torn down, after which a
//! poisoned lock fails every later connection. So the proxy decodes each CONNECT (with
//! rumqttc's codec), gives the broker a fresh id of its own (`twinhub-{n}`) and a non-zero
//! keep-alive, and itself does what a broker must for a reused id: it closes the older
//! connection of that id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsFd as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::fault::{Action, FaultSwitch};
use crate::http::PeerMap;

/// Where a proxy forwards to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Upstream {
    /// One address.
    Fixed(SocketAddr),
    /// An MQTT broker with separate 3.1.1 and 5 listeners: the CONNECT packet's protocol
    /// level picks one, so clients of both versions share one public port.
    Mqtt {
        /// MQTT 3.1.1 listener.
        v4: SocketAddr,
        /// MQTT 5 listener.
        v5: SocketAddr,
    },
}

/// How long a client may take to send its MQTT CONNECT before it is dropped.
const CONNECT_PEEK_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest CONNECT the guard reads (ids, credentials and a will fit easily).
const MAX_CONNECT_BYTES: usize = 64 * 1024;

/// Live broker connections by the client's own id, to close the older one of a reused id.
type ClientIds = Arc<Mutex<HashMap<String, (u64, oneshot::Sender<()>)>>>;

/// Numbers the ids the broker sees, so no two connections ever share one.
static NEXT_BROKER_ID: AtomicU64 = AtomicU64::new(1);
const CHUNK: usize = 16 * 1024;

pub(crate) fn spawn(
    listener: TcpListener,
    upstream: Upstream,
    switch: FaultSwitch,
    peers: Option<PeerMap>,
) -> JoinHandle<()> {
    let ids = ClientIds::default();
    tokio::spawn(async move {
        loop {
            let (client, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = client.set_nodelay(true);
            let switch = switch.clone();
            let peers = peers.clone();
            let ids = ids.clone();
            tokio::spawn(async move {
                handle(client, peer, upstream, switch, peers, ids).await;
            });
        }
    })
}

/// Closes with a reset (SO_LINGER 0) instead of an orderly FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn handle(
    client: TcpStream,
    peer: SocketAddr,
    upstream: Upstream,
    switch: FaultSwitch,
    peers: Option<PeerMap>,
    ids: ClientIds,
) {
    match switch.action(peer.ip()).0 {
        Action::Cut => return reset(client),
        Action::Blackhole => return blackhole(client, peer, switch).await,
        Action::Pass(_) => {}
    }
    let (target, first) = match upstream {
        Upstream::Fixed(a) => (a, Vec::new()),
        Upstream::Mqtt { v4, v5 } => {
            let mut client = client;
            let connect =
                match tokio::time::timeout(CONNECT_PEEK_TIMEOUT, read_connect(&mut client)).await {
                    Ok(Ok(c)) => c,
                    _ => return reset(client),
                };
            let target = if connect.level == 5 { v5 } else { v4 };
            let Some(own_id) = connect.client_id else {
                return forward(client, peer, target, connect.bytes, switch, peers, None).await;
            };
            // The newest connection of an id wins; the older one is closed.
            let conn = NEXT_BROKER_ID.fetch_add(1, Ordering::Relaxed);
            let (kick_tx, kick_rx) = oneshot::channel();
            let older = ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(own_id.clone(), (conn, kick_tx));
            if let Some((_, older)) = older {
                let _ = older.send(());
            }
            forward(
                client,
                peer,
                target,
                connect.bytes,
                switch,
                peers,
                Some(kick_rx),
            )
            .await;
            let mut ids = ids.lock().unwrap_or_else(|e| e.into_inner());
            if ids.get(&own_id).is_some_and(|(c, _)| *c == conn) {
                ids.remove(&own_id);
            }
            return;
        }
    };
    forward(client, peer, target, first, switch, peers, None).await
}

/// A CONNECT as the broker will see it.
struct BrokerConnect {
    /// Protocol level (4 = 3.1.1, 5 = 5).
    level: u8,
    /// The packet to forward, with the broker's id in place of the client's.
    bytes: Vec<u8>,
    /// The client's own id; `None` when it was empty (the broker assigns one) or the
    /// packet is of a version the codec does not know (the broker refuses it).
    client_id: Option<String>,
}

/// Reads one whole CONNECT and rewrites it for the broker (see the module docs).
async fn read_connect(client: &mut TcpStream) -> std::io::Result<BrokerConnect> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an MQTT CONNECT");
    let mut packet = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    client.read_exact(&mut byte).await?;
    if byte[0] != 0x10 {
        return Err(bad());
    }
    packet.push(byte[0]);
    // Remaining length: 1 to 4 bytes, high bit = more.
    let mut remaining = 0usize;
    for i in 0..4 {
        client.read_exact(&mut byte).await?;
        packet.push(byte[0]);
        remaining |= usize::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            break;
        }
        if i == 3 {
            return Err(bad());
        }
    }
    if remaining > MAX_CONNECT_BYTES {
        return Err(bad());
    }
    let start = packet.len();
    packet.resize(start + remaining, 0);
    client.read_exact(&mut packet[start..]).await?;
    // Protocol name (length-prefixed "MQTT" or "MQIsdp") then the level byte.
    let name_len = packet
        .get(start..start + 2)
        .map_or(0, |l| usize::from(u16::from_be_bytes([l[0], l[1]])));
    let level = *packet.get(start + 2 + name_len).ok_or_else(bad)?;
    let broker_id = format!("twinhub-{}", NEXT_BROKER_ID.fetch_add(1, Ordering::Relaxed));
    Ok(rewrite_connect(level, packet, &broker_id))
}

/// Puts `broker_id` in place of a non-empty client id and turns keep-alive 0 (valid MQTT,
/// refused by rumqttd) into the longest one. Anything the codec cannot decode is
/// forwarded as it is, for the broker to refuse.
fn rewrite_connect(level: u8, packet: Vec<u8>, broker_id: &str) -> BrokerConnect {
    let as_is = |packet: Vec<u8>| BrokerConnect {
        level,
        bytes: packet,
        client_id: None,
    };
    let mut buf = BytesMut::from(&packet[..]);
    let mut out = BytesMut::new();
    let own_id = match level {
        4 => {
            use rumqttc::mqttbytes::v4::Packet;
            let Ok(Packet::Connect(mut c)) = Packet::read(&mut buf, MAX_CONNECT_BYTES) else {
                return as_is(packet);
            };
            if c.client_id.is_empty() {
                return as_is(packet);
            }
            let own = std::mem::replace(&mut c.client_id, broker_id.to_string());
            if c.keep_alive == 0 {
                c.keep_alive = u16::MAX;
            }
            if c.write(&mut out).is_err() {
                return as_is(packet);
            }
            own
        }
        5 => {
            use rumqttc::v5::mqttbytes::v5::Packet;
            let Ok(Packet::Connect(mut c, will, login)) = Packet::read(&mut buf, None) else {
                return as_is(packet);
            };
            if c.client_id.is_empty() {
                return as_is(packet);
            }
            let own = std::mem::replace(&mut c.client_id, broker_id.to_string());
            if c.keep_alive == 0 {
                c.keep_alive = u16::MAX;
            }
            if Packet::Connect(c, will, login)
                .write(&mut out, None)
                .is_err()
            {
                return as_is(packet);
            }
            own
        }
        _ => return as_is(packet),
    };
    BrokerConnect {
        level,
        bytes: out.to_vec(),
        client_id: Some(own_id),
    }
}

/// Accepts, reads and drops; answers nothing. Ends when the client leaves or the switch
/// says to cut.
async fn blackhole(mut client: TcpStream, peer: SocketAddr, switch: FaultSwitch) {
    let mut rx = switch.subscribe();
    let mut buf = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            r = client.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            changed = rx.changed() => {
                if changed.is_err() || switch.action(peer.ip()).0 == Action::Cut {
                    return reset(client);
                }
            }
        }
    }
}

async fn forward(
    client: TcpStream,
    peer: SocketAddr,
    target: SocketAddr,
    first: Vec<u8>,
    switch: FaultSwitch,
    peers: Option<PeerMap>,
    kick: Option<oneshot::Receiver<()>>,
) {
    let upstream = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%target, error = %e, "upstream refused");
            return reset(client);
        }
    };
    let _ = upstream.set_nodelay(true);
    let local = upstream.local_addr().ok();
    if let (Some(map), Some(local)) = (&peers, local) {
        map.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(local, peer);
    }
    // Duplicates of the descriptors, kept to reset both sockets if the switch cuts.
    let client_fd = client
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(socket2::Socket::from);
    let upstream_fd = upstream
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(socket2::Socket::from);
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let ip = peer.ip();
    let mut up = tokio::spawn(pump(cr, uw, first, switch.clone(), ip));
    let mut down = tokio::spawn(pump(ur, cw, Vec::new(), switch.clone(), ip));
    let mut rx = switch.subscribe();
    // Fires only when a newer connection of the same client id takes over; a dropped
    // sender (the registry forgot the id) is not a kick.
    let kicked = async {
        let fired = match kick {
            Some(rx) => rx.await.is_ok(),
            None => false,
        };
        if !fired {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(kicked);
    let (mut up_done, mut down_done) = (false, false);
    let cut = loop {
        let (action, flap_next) = switch.action(ip);
        if action == Action::Cut {
            break true;
        }
        let flap = async {
            match flap_next {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { break true },
            () = &mut kicked => break true,
            () = flap => {}
            _ = &mut up, if !up_done => up_done = true,
            _ = &mut down, if !down_done => down_done = true,
        }
        if up_done && down_done {
            break false;
        }
    };
    if cut {
        for s in [&client_fd, &upstream_fd].into_iter().flatten() {
            let _ = s.set_linger(Some(Duration::ZERO));
        }
        up.abort();
        down.abort();
        // A pump that already finished was awaited by the loop: polling it again panics.
        if !up_done {
            let _ = up.await;
        }
        if !down_done {
            let _ = down.await;
        }
    }
    drop(client_fd);
    drop(upstream_fd);
    if let (Some(map), Some(local)) = (&peers, local) {
        map.lock().unwrap_or_else(|e| e.into_inner()).remove(&local);
    }
}

/// Copies one direction, applying the switch to every chunk. Dropping the write half at
/// the end passes the EOF on.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    first: Vec<u8>,
    switch: FaultSwitch,
    ip: std::net::IpAddr,
) {
    let mut buf = vec![0u8; CHUNK];
    let mut pending = first;
    loop {
        if pending.is_empty() {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        match switch.action(ip).0 {
            Action::Cut => return,
            Action::Blackhole => {}
            Action::Pass(delay) => {
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                if to.write_all(&pending).await.is_err() {
                    return;
                }
            }
        }
        pending.clear();
    }
}

/// A fault switch in front of an external TCP service, for tests against real brokers.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use twinhub_emulator::{Fault, FaultProxy};
/// let proxy = FaultProxy::start("127.0.0.1:0".parse().unwrap(), "127.0.0.1:1883".parse().unwrap()).await?;
/// // point the client at proxy.addr() instead of the broker
/// proxy.switch().set(Fault::Down);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    switch: FaultSwitch,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on `listen` (port 0 = ephemeral) and forwards to `upstream`. Runs on the
    /// caller's tokio runtime until dropped.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<Self> {
        Self::start_with(listen, upstream, FaultSwitch::new()).await
    }

    pub(crate) async fn start_with(
        listen: SocketAddr,
        upstream: SocketAddr,
        switch: FaultSwitch,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let task = spawn(listener, Upstream::Fixed(upstream), switch.clone(), None);
        Ok(FaultProxy {
            addr,
            upstream,
            switch,
            task,
        })
    }

    /// The public address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The service behind it.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// The fault switch (shared; set it at any time).
    pub fn switch(&self) -> &FaultSwitch {
        &self.switch
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4::{Connect, Login, Packet};

    #[test]
    fn connect_gets_the_broker_id_and_a_keep_alive() {
        let mut c = Connect::new("meter$7/#+");
        c.keep_alive = 0;
        c.login = Some(Login::new("u", "p"));
        let mut b = BytesMut::new();
        c.write(&mut b).unwrap();
        let out = rewrite_connect(4, b.to_vec(), "twinhub-9");
        assert_eq!(out.client_id.as_deref(), Some("meter$7/#+"));
        let mut buf = BytesMut::from(&out.bytes[..]);
        let Ok(Packet::Connect(back)) = Packet::read(&mut buf, 1 << 16) else {
            panic!("rewritten CONNECT decodes")
        };
        assert_eq!(back.client_id, "twinhub-9");
        assert_eq!(back.keep_alive, u16::MAX);
        assert_eq!(back.login, Some(Login::new("u", "p")));
        // Empty ids and undecodable packets pass unchanged.
        let mut b = BytesMut::new();
        Connect::new("").write(&mut b).unwrap();
        let out = rewrite_connect(4, b.to_vec(), "x");
        assert_eq!((out.client_id, out.bytes), (None, b.to_vec()));
        let out = rewrite_connect(3, vec![0x10, 0], "x");
        assert_eq!(out.client_id, None);
    }
}
