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

use std::net::SocketAddr;
use std::os::fd::AsFd as _;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
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

/// How long a client may take to send its MQTT CONNECT header before it is dropped.
const CONNECT_PEEK_TIMEOUT: Duration = Duration::from_secs(10);
const CHUNK: usize = 16 * 1024;

pub(crate) fn spawn(
    listener: TcpListener,
    upstream: Upstream,
    switch: FaultSwitch,
    peers: Option<PeerMap>,
) -> JoinHandle<()> {
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
            tokio::spawn(async move {
                handle(client, peer, upstream, switch, peers).await;
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
            match tokio::time::timeout(CONNECT_PEEK_TIMEOUT, read_connect_head(&mut client)).await {
                Ok(Ok((level, head))) => {
                    let target = if level == 5 { v5 } else { v4 };
                    return forward(client, peer, target, head, switch, peers).await;
                }
                _ => return reset(client),
            }
        }
    };
    forward(client, peer, target, first, switch, peers).await
}

/// Reads an MQTT CONNECT's fixed header and variable header up to the protocol level byte.
/// Returns the level (4 = 3.1.1, 5 = 5) and the bytes read, which are forwarded as they are.
async fn read_connect_head(client: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an MQTT CONNECT");
    let mut head = Vec::with_capacity(16);
    let mut byte = [0u8; 1];
    client.read_exact(&mut byte).await?;
    if byte[0] != 0x10 {
        return Err(bad());
    }
    head.push(byte[0]);
    // Remaining length: 1 to 4 bytes, high bit = more.
    for i in 0..4 {
        client.read_exact(&mut byte).await?;
        head.push(byte[0]);
        if byte[0] & 0x80 == 0 {
            break;
        }
        if i == 3 {
            return Err(bad());
        }
    }
    // Protocol name (length-prefixed "MQTT" or "MQIsdp") then the level byte.
    let mut len = [0u8; 2];
    client.read_exact(&mut len).await?;
    head.extend_from_slice(&len);
    let n = usize::from(u16::from_be_bytes(len));
    if n > 6 {
        return Err(bad());
    }
    let mut name = vec![0u8; n];
    client.read_exact(&mut name).await?;
    head.extend_from_slice(&name);
    client.read_exact(&mut byte).await?;
    head.push(byte[0]);
    Ok((byte[0], head))
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
