//! A region's IoT Hub endpoint over WebSockets: the same MQTT, checked the same way
//! ([`crate::iothub`]), carried in WebSocket binary frames inside TLS, as IoT Hub serves it
//! on port 443 for networks that block 8883.
//!
//! The upgrade must be a `GET` of `/$iothub/websocket` offering the subprotocol `mqtt`;
//! the answer then names `mqtt`. Anything else is refused with an HTTP error before any
//! MQTT is read, and counted as `closed-websocket-upgrade`; an accepted upgrade is
//! counted as `websocket-upgraded`. A client certificate works
//! here too (X.509 device authentication), checked by the same TLS settings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio::net::TcpListener;

use crate::iothub::{IotHub, TlsConn, accept_tls, serve};
use crate::tls::client_common_name;

/// The path IoT Hub serves MQTT over WebSockets on.
pub const WEBSOCKET_PATH: &str = "/$iothub/websocket";

/// How long a client may take for the WebSocket upgrade.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves WebSocket connections from `listener` (behind the region's fault proxy).
pub(crate) fn spawn(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    hub: Arc<IotHub>,
) -> tokio::task::JoinHandle<()> {
    accept_tls(listener, tls, hub, "IoT Hub WebSocket", handle)
}

async fn handle(tls: TlsConn, local: SocketAddr, hub: Arc<IotHub>) {
    let cn = client_common_name(tls.get_ref().1);
    let upgrade = async_tungstenite::tokio::accept_hdr_async(tls, check_upgrade);
    let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, upgrade).await {
        Ok(Ok(ws)) => ws,
        _ => {
            hub.events.bump("closed-websocket-upgrade");
            return;
        }
    };
    // Counted apart from `connected`, so it shows which listener a device came through.
    hub.events.bump("websocket-upgraded");
    serve(
        ws_stream_tungstenite::WsStream::new(ws),
        hub.peer_of(local),
        &hub,
        cn.as_deref(),
    )
    .await;
}

/// Accepts only IoT Hub's path with the `mqtt` subprotocol, and answers with it.
// The signature is tungstenite's handshake callback's; its error type is not ours to box.
#[allow(clippy::result_large_err)]
fn check_upgrade(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let refuse = |status: StatusCode, why: &str| {
        let mut r = ErrorResponse::new(Some(why.to_string()));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != WEBSOCKET_PATH {
        return Err(refuse(StatusCode::NOT_FOUND, "no such path"));
    }
    let offers_mqtt = req
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == "mqtt");
    if !offers_mqtt {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "the WebSocket subprotocol must be mqtt",
        ));
    }
    resp.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    Ok(resp)
}
