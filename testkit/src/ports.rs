//! Ports for tests without the bind-then-drop race: a listener is handed over bound, and a
//! port that must refuse connections stays reserved by a socket that never listens.

use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Socket, Type};

/// A listener on an ephemeral port of 127.0.0.1, bound and listening: pass it (or its
/// tokio form) to the server under test instead of a port number, so no other process can
/// take the port in between.
pub fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port")
}

/// A port of 127.0.0.1 held by a bound socket that never listens: connecting to it is
/// refused for as long as this value lives, and nothing else can bind it meanwhile.
#[derive(Debug)]
pub struct ClosedPort {
    socket: Socket,
    addr: SocketAddr,
}

impl ClosedPort {
    /// Reserves an ephemeral port.
    pub fn new() -> ClosedPort {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        socket.bind(&any.into()).expect("bind");
        let addr = socket
            .local_addr()
            .expect("local address")
            .as_socket()
            .expect("an IP address");
        ClosedPort { socket, addr }
    }

    /// The reserved port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The reserved address.
    pub fn addr(&self) -> SocketAddr {
        let _ = &self.socket;
        self.addr
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        ClosedPort::new()
    }
}

/// A port that was free a moment ago, for a server that must bind by itself (mosquitto
/// takes its port from a configuration file). Another process may take it before the
/// server does: callers must detect that and retry with a new port, as
/// [`crate::Mosquitto`] does.
pub fn unused_port() -> u16 {
    listener()
        .local_addr()
        .map(|a| a.port())
        .expect("free port")
}
