//! A loopback HTTP CONNECT tunnel whose outgoing connections leave from a chosen local
//! address: how an MQTT link honours `bind = "<ip>"`.
//!
//! rumqttc resolves and connects its own socket and can bind only an interface. Its
//! HTTP-proxy hook is the one place where the outgoing socket can be ours: rumqttc
//! connects to this tunnel on 127.0.0.1 and asks for the broker's `host:port`; the tunnel
//! resolves that name afresh (never a cached address), binds the link's address, connects,
//! answers `200` and then copies bytes both ways. TLS still runs end to end between rumqttc
//! and the broker, under the broker's own name, so verification is unchanged.
//!
//! The tunnel serves only its own transport: it is reachable on loopback only, demands a
//! random per-tunnel credential, and connects only to the one broker it was made for.

use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::AbortHandle;

/// The longest CONNECT request head the tunnel reads.
const MAX_HEAD: usize = 4096;
/// How long a client may take to send its CONNECT request.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A running tunnel; dropping it stops accepting (open relays end with their sockets).
pub(crate) struct Tunnel {
    port: u16,
    user: String,
    password: String,
    accept: AbortHandle,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// What one tunnel connects to, and from where.
#[derive(Clone)]
struct Route {
    local: IpAddr,
    host: String,
    port: u16,
    /// The exact `Proxy-Authorization` value expected.
    authorization: String,
}

impl Tunnel {
    /// Starts a tunnel to `host:port` leaving from `local`. Needs a tokio runtime.
    pub(crate) async fn start(local: IpAddr, host: &str, port: u16) -> io::Result<Tunnel> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let tunnel_port = listener.local_addr()?.port();
        // Not a user secret: it only keeps other local processes from borrowing the link.
        let state = RandomState::new();
        let password = format!(
            "{:016x}{:016x}",
            state.hash_one(tunnel_port),
            state.hash_one(local)
        );
        let user = "twinhub".to_string();
        let route = Route {
            local,
            host: host.to_string(),
            port,
            authorization: format!(
                "Basic {}",
                super::common::b64(format!("{user}:{password}").as_bytes())
            ),
        };
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    // Out of descriptors, most likely: pause rather than spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let route = route.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(client, &route).await {
                        tracing::debug!(local = %route.local, host = %route.host, error = %e, "tunnel connection ended");
                    }
                });
            }
        })
        .abort_handle();
        Ok(Tunnel {
            port: tunnel_port,
            user,
            password,
            accept,
        })
    }

    /// The proxy setting that makes rumqttc go through this tunnel.
    pub(crate) fn proxy(&self) -> rumqttc::Proxy {
        rumqttc::Proxy {
            ty: rumqttc::ProxyType::Http,
            auth: rumqttc::ProxyAuth::Basic {
                username: self.user.clone(),
                password: self.password.clone(),
            },
            addr: Ipv4Addr::LOCALHOST.to_string(),
            port: self.port,
        }
    }
}

/// Why a CONNECT request is refused, with the status line sent back.
#[derive(Debug)]
enum Refusal {
    BadRequest,
    Unauthorized,
    Forbidden,
}

impl Refusal {
    fn status(&self) -> &'static [u8] {
        match self {
            Refusal::BadRequest => b"HTTP/1.1 400 Bad Request\r\n\r\n",
            Refusal::Unauthorized => b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n",
            Refusal::Forbidden => b"HTTP/1.1 403 Forbidden\r\n\r\n",
        }
    }
}

/// Checks a complete request head: `CONNECT host:port`, the right credential, the route's
/// broker. Returns how many bytes the head took.
fn check_head(head: &[u8], route: &Route) -> Result<Option<usize>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(head) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Refusal::BadRequest),
    };
    if req.method != Some("CONNECT") {
        return Err(Refusal::BadRequest);
    }
    let authorized = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("proxy-authorization")
            && h.value == route.authorization.as_bytes()
    });
    if !authorized {
        return Err(Refusal::Unauthorized);
    }
    let target = req.path.unwrap_or_default();
    let wanted = format!("{}:{}", route.host, route.port);
    // rumqttc writes an IPv6 literal host without brackets; accept both spellings.
    let bracketed = format!("[{}]:{}", route.host, route.port);
    if !(target.eq_ignore_ascii_case(&wanted) || target.eq_ignore_ascii_case(&bracketed)) {
        return Err(Refusal::Forbidden);
    }
    Ok(Some(used))
}

/// Serves one client: reads its CONNECT, connects from the route's address, relays.
async fn serve(mut client: TcpStream, route: &Route) -> io::Result<()> {
    client.set_nodelay(true)?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let read_head = async {
        loop {
            let n = client.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            head.extend_from_slice(&chunk[..n]);
            match check_head(&head, route) {
                Ok(Some(used)) => return Ok(Ok(used)),
                Ok(None) if head.len() < MAX_HEAD => {}
                Ok(None) => return Ok(Err(Refusal::BadRequest)),
                Err(r) => return Ok(Err(r)),
            }
        }
    };
    let used = match tokio::time::timeout(HEAD_TIMEOUT, read_head).await {
        Err(_) => return Err(io::Error::from(io::ErrorKind::TimedOut)),
        Ok(r) => r?,
    };
    let used = match used {
        Ok(used) => used,
        Err(refusal) => {
            client.write_all(refusal.status()).await?;
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{refusal:?}"),
            ));
        }
    };
    let mut upstream = match connect_from(route).await {
        Ok(s) => s,
        Err(e) => {
            client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
                .await?;
            return Err(e);
        }
    };
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    // Bytes sent after the head (rumqttc waits for the 200, but a client need not).
    if head.len() > used {
        upstream.write_all(&head[used..]).await?;
    }
    // Either side ending ends both: a half-closed relay to a broker that never answers
    // (a blackhole) would otherwise hold its socket for ever.
    let (mut client_rx, mut client_tx) = client.split();
    let (mut up_rx, mut up_tx) = upstream.split();
    tokio::select! {
        r = tokio::io::copy(&mut client_rx, &mut up_tx) => r.map(drop),
        r = tokio::io::copy(&mut up_rx, &mut client_tx) => r.map(drop),
    }
}

/// Resolves the broker now and connects to the first address that answers, from the
/// route's local address.
async fn connect_from(route: &Route) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((route.host.as_str(), route.port)).await? {
        if addr.is_ipv4() != route.local.is_ipv4() {
            continue;
        }
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(route.local, 0))?;
        socket.set_nodelay(true)?;
        match socket.connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!(
                "{}:{} has no address of the same family as {}",
                route.host, route.port, route.local
            ),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Route {
        Route {
            local: Ipv4Addr::LOCALHOST.into(),
            host: "broker.example".into(),
            port: 8883,
            authorization: "Basic dTpw".into(),
        }
    }

    #[test]
    fn head_checks_method_credential_and_target() {
        let r = route();
        let ok =
            b"CONNECT broker.example:8883 HTTP/1.1\r\nProxy-Authorization: Basic dTpw\r\n\r\nrest";
        assert_eq!(check_head(ok, &r).unwrap(), Some(ok.len() - 4));
        assert!(
            check_head(b"CONNECT broker.example:8883 HTTP/1.1\r\n", &r)
                .unwrap()
                .is_none()
        );
        let no_auth = b"CONNECT broker.example:8883 HTTP/1.1\r\n\r\n";
        assert!(matches!(
            check_head(no_auth, &r),
            Err(Refusal::Unauthorized)
        ));
        let other =
            b"CONNECT elsewhere.example:8883 HTTP/1.1\r\nProxy-Authorization: Basic dTpw\r\n\r\n";
        assert!(matches!(check_head(other, &r), Err(Refusal::Forbidden)));
        let get = b"GET / HTTP/1.1\r\nProxy-Authorization: Basic dTpw\r\n\r\n";
        assert!(matches!(check_head(get, &r), Err(Refusal::BadRequest)));
        assert!(matches!(
            check_head(b"\x00\x01garbage\r\n\r\n", &r),
            Err(Refusal::BadRequest)
        ));
    }
}
