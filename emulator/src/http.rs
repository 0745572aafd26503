//! A region's HTTP ingest: the Event Hubs REST send API and the generic JSON batch.
//!
//! Status codes (the Event Hubs ones beyond 201/401 are not documented by the service; these
//! are the emulator's documented choices, see PROTOCOLS.md §1.4):
//!
//! | status | when |
//! |---|---|
//! | 201 | accepted (Event Hubs: empty body; generic: `{"accepted":N}`) |
//! | 400 | malformed batch (the body names the event and the reason) |
//! | 401 | Event Hubs: missing, malformed, wrong-key, wrong-scope or expired SAS token |
//! | 404 | unknown event hub or path |
//! | 408 | the body did not arrive within 30 s |
//! | 413 | the request body exceeds the tier's publication limit (Basic 256 KB, Standard 1 MB) |
//! | 415 | wrong or missing `Content-Type` |
//! | 422 | generic: an `Idempotency-Key` reused with a different body |
//! | 403 / 429 / 503 | injected by the fault switch (`Retry-After` on 429; a 403's detail names quota, size or rights) |
//!
//! Event Hubs errors carry the service's XML shape `<Error><Code>..</Code><Detail>..</Detail></Error>`;
//! generic ones carry `{"error": "..."}`.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use twinhub_core::sas::{ParsedToken, SasKey};

use crate::batch::{self, BatchEvent, MESSAGE_ID_PROPERTY};
use crate::fault::{Fault, FaultSwitch};
use crate::store::{CachedResponse, Protocol, Record, Store, now_ms};

/// Maps the proxy's outbound address (what the HTTP server sees) to the client's address
/// (what the proxy saw), so per-source faults and records name the real client.
pub(crate) type PeerMap = Arc<Mutex<HashMap<SocketAddr, SocketAddr>>>;

/// How long a client may take to send its body before it gets 408.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct HttpRegion {
    pub(crate) store: Store,
    pub(crate) key: String,
    pub(crate) key_name: String,
    pub(crate) hubs: Vec<String>,
    pub(crate) limit: usize,
    pub(crate) switch: FaultSwitch,
    pub(crate) peers: PeerMap,
    /// Host names (`host:port`, lower case) a token's `sr` may name besides the request's
    /// `Host` header.
    pub(crate) hosts: Vec<String>,
}

type Shared = Arc<HttpRegion>;

pub(crate) fn router(region: Shared) -> Router {
    Router::new()
        .route("/ingest/{name}", post(generic))
        .route("/{hub}/messages", post(eh_send))
        .route("/{hub}/partitions/{p}/messages", post(eh_send_sub))
        .route("/{hub}/publishers/{p}/messages", post(eh_send_sub))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            region.clone(),
            status_faults,
        ))
        .with_state(region)
}

fn peer_of(region: &HttpRegion, req: &Request) -> Option<SocketAddr> {
    let local = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)?;
    let peers = region.peers.lock().unwrap_or_else(|e| e.into_inner());
    Some(peers.get(&local).copied().unwrap_or(local))
}

/// Answers 503/429 when the switch says so for this client, before any other processing.
async fn status_faults(State(region): State<Shared>, req: Request, next: Next) -> Response {
    let peer = peer_of(&region, &req);
    let fault = peer
        .map(|p| region.switch.effective(p.ip()))
        .unwrap_or_else(|| region.switch.region_fault());
    if matches!(
        fault,
        Fault::Http503 | Fault::Http429 { .. } | Fault::Http403 { .. }
    ) {
        region.switch.count_injected_status();
    }
    match fault {
        Fault::Http503 => eh_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "injected fault: server busy",
        ),
        Fault::Http403 { reason } => eh_error(StatusCode::FORBIDDEN, reason.detail()),
        Fault::Http429 { retry_after_s } => {
            let mut r = eh_error(StatusCode::TOO_MANY_REQUESTS, "injected fault: throttled");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
            r
        }
        _ => next.run(req).await,
    }
}

async fn not_found() -> Response {
    eh_error(StatusCode::NOT_FOUND, "no such entity or path")
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn eh_error(status: StatusCode, detail: &str) -> Response {
    let body = format!(
        "<Error><Code>{}</Code><Detail>{}</Detail></Error>",
        status.as_u16(),
        xml_escape(detail)
    );
    (
        status,
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

fn json_error(status: StatusCode, detail: &str) -> (StatusCode, String) {
    (status, serde_json::json!({ "error": detail }).to_string())
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Bodies up to this size are read in full even when over the limit, so the client
/// finishes writing and reads the 413 instead of a broken pipe; larger ones are cut.
const DRAIN_MAX: usize = 8 * 1024 * 1024;

/// Reads the body and enforces the size limit (on the declared length and on the bytes).
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, (StatusCode, String)> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = |n: String| {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("publication of {n} bytes exceeds this tier's limit of {limit} bytes"),
        )
    };
    let cap = DRAIN_MAX.max(limit);
    if let Some(n) = declared
        && n > cap as u64
    {
        return Err(too_large(n.to_string()));
    }
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, cap)).await {
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            "body not received in time".into(),
        )),
        Ok(Ok(b)) if b.len() > limit => Err(too_large(b.len().to_string())),
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
            // to_bytes fails either on the cap or on a broken connection.
            let msg = e.to_string();
            if msg.contains("length limit") {
                Err(too_large(format!("more than {cap}")))
            } else {
                Err((StatusCode::BAD_REQUEST, format!("cannot read body: {msg}")))
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `sb://Host:1/hub/` → (`host:1`, `hub`): scheme removed, host lower-cased, slashes trimmed.
fn split_resource(sr: &str) -> (String, String) {
    let lower = sr.to_ascii_lowercase();
    let rest = ["sb://", "http://", "https://", "amqps://"]
        .iter()
        .find_map(|s| lower.strip_prefix(s))
        .unwrap_or(&lower);
    let rest = rest.trim_end_matches('/');
    match rest.split_once('/') {
        Some((host, path)) => (host.to_string(), path.trim_matches('/').to_string()),
        None => (rest.to_string(), String::new()),
    }
}

/// Checks the SAS token: signature with the region's key, expiry, rule name, and that its
/// `sr` names this namespace or a prefix of the requested entity path.
fn check_sas(region: &HttpRegion, headers: &HeaderMap, entity_path: &str) -> Result<(), String> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .ok_or("missing Authorization header")?
        .to_str()
        .map_err(|_| "Authorization header is not text")?;
    let token = ParsedToken::parse(auth.trim()).map_err(|e| e.to_string())?;
    if token.key_name != Some(region.key_name.as_str()) {
        return Err(format!(
            "token's skn {:?} is not this namespace's rule {:?}",
            token.key_name.unwrap_or(""),
            region.key_name
        ));
    }
    token
        .verify(&SasKey::Text(&region.key), unix_now())
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; token.resource.len()];
    let sr = token
        .resource_decoded(&mut buf)
        .map_err(|e| e.to_string())?;
    let (host, path) = split_resource(sr);
    let host_header = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase);
    let host_ok = host_header.as_deref() == Some(host.as_str()) || region.hosts.contains(&host);
    if !host_ok {
        return Err(format!(
            "token's sr names host {host:?}, not this namespace"
        ));
    }
    let entity = entity_path.to_ascii_lowercase();
    let covered = path.is_empty() || entity == path || entity.starts_with(&format!("{path}/"));
    if !covered {
        return Err(format!(
            "token's sr path {path:?} does not cover {entity:?}"
        ));
    }
    Ok(())
}

async fn eh_send(State(region): State<Shared>, Path(hub): Path<String>, req: Request) -> Response {
    let path = hub.clone();
    eh_handle(region, hub, path, req).await
}

async fn eh_send_sub(
    State(region): State<Shared>,
    Path((hub, sub)): Path<(String, String)>,
    req: Request,
) -> Response {
    // The segment name (`partitions` or `publishers`) is part of the entity path.
    let kind = req
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .nth(1)
        .unwrap_or("")
        .to_string();
    let path = format!("{hub}/{kind}/{sub}");
    eh_handle(region, hub, path, req).await
}

async fn eh_handle(region: Shared, hub: String, entity_path: String, req: Request) -> Response {
    let peer = peer_of(&region, &req);
    let (parts, body) = req.into_parts();
    if let Err(why) = check_sas(&region, &parts.headers, &entity_path) {
        return eh_error(StatusCode::UNAUTHORIZED, &why);
    }
    let Some(hub) = region
        .hubs
        .iter()
        .find(|h| h.eq_ignore_ascii_case(&hub))
        .cloned()
    else {
        return eh_error(
            StatusCode::NOT_FOUND,
            &format!("event hub {hub:?} does not exist"),
        );
    };
    let batch = match media_type(&parts.headers).as_deref() {
        Some("application/vnd.microsoft.servicebus.json") => true,
        Some("application/atom+xml") => false,
        other => {
            return eh_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!(
                    "Content-Type {:?} is neither application/atom+xml;type=entry;charset=utf-8 \
                     nor application/vnd.microsoft.servicebus.json",
                    other.unwrap_or("")
                ),
            );
        }
    };
    let bytes = match read_body(body, &parts.headers, region.limit).await {
        Ok(b) => b,
        Err((status, why)) => return eh_error(status, &why),
    };
    let events = if batch {
        match batch::parse_event_hubs_batch(&bytes) {
            Ok(v) => v,
            Err(e) => return eh_error(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    } else {
        match single_event(&parts.headers, &bytes) {
            Ok(e) => vec![e],
            Err(why) => return eh_error(StatusCode::BAD_REQUEST, &why),
        }
    };
    region.store.push_all(to_records(
        &region.store,
        Protocol::EventHubs,
        &hub,
        peer,
        events,
    ));
    (StatusCode::CREATED, [(header::CONTENT_LENGTH, "0")]).into_response()
}

/// A single event: the body as is; the id from the `BrokerProperties` header's `MessageId`,
/// else a `message-id` header.
fn single_event(headers: &HeaderMap, body: &[u8]) -> Result<BatchEvent, String> {
    let mut message_id = None;
    if let Some(bp) = headers.get("brokerproperties") {
        let v: serde_json::Value = serde_json::from_slice(bp.as_bytes())
            .map_err(|e| format!("BrokerProperties header is not JSON: {e}"))?;
        match v.get("MessageId") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(s)) if !s.is_empty() => message_id = Some(s.clone()),
            Some(_) => return Err("BrokerProperties.MessageId must be a non-empty string".into()),
        }
    }
    let mut properties = BTreeMap::new();
    if let Some(id) = headers
        .get(MESSAGE_ID_PROPERTY)
        .and_then(|v| v.to_str().ok())
    {
        properties.insert(MESSAGE_ID_PROPERTY.to_string(), id.to_string());
        if message_id.is_none() && !id.is_empty() {
            message_id = Some(id.to_string());
        }
    }
    Ok(BatchEvent {
        body: body.to_vec(),
        message_id,
        properties,
        partition_key: None,
    })
}

fn to_records(
    store: &Store,
    protocol: Protocol,
    target: &str,
    peer: Option<SocketAddr>,
    events: Vec<BatchEvent>,
) -> Vec<Record> {
    let at = now_ms();
    events
        .into_iter()
        .map(|e| Record {
            region: store.region().to_string(),
            protocol,
            target: target.to_string(),
            message_id: e.message_id,
            body: e.body,
            properties: e.properties,
            partition_key: e.partition_key,
            peer,
            received_at_ms: at,
        })
        .collect()
}

fn json_response(status: u16, body: String, replayed: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if replayed {
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    r
}

/// `POST /ingest/{name}`: the generic JSON batch, honouring `Idempotency-Key`.
async fn generic(State(region): State<Shared>, Path(name): Path<String>, req: Request) -> Response {
    let peer = peer_of(&region, &req);
    let (parts, body) = req.into_parts();
    if media_type(&parts.headers).as_deref() != Some("application/json") {
        let (s, b) = json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        );
        return json_response(s.as_u16(), b, false);
    }
    let key = match parts.headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) if !k.is_empty() && k.len() <= 255 => Some(k.to_string()),
        Some(_) => {
            let (s, b) = json_error(
                StatusCode::BAD_REQUEST,
                "Idempotency-Key must be 1 to 255 visible characters",
            );
            return json_response(s.as_u16(), b, false);
        }
    };
    let bytes = match read_body(body, &parts.headers, region.limit).await {
        Ok(b) => b,
        Err((s, why)) => {
            let (s, b) = json_error(s, &why);
            return json_response(s.as_u16(), b, false);
        }
    };
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    let digest = h.finish();
    let check_replay = |prev: CachedResponse| {
        if prev.body_digest == digest {
            json_response(prev.status, prev.body, true)
        } else {
            let (s, b) = json_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Idempotency-Key was already used with a different body",
            );
            json_response(s.as_u16(), b, false)
        }
    };
    if let Some(k) = &key
        && let Some(prev) = region.store.idempotent(&name, k)
    {
        return check_replay(prev);
    }
    let (status, body, records) = match batch::parse_generic_batch(&bytes) {
        Ok(events) => {
            let n = events.len();
            let records = to_records(&region.store, Protocol::Http, &name, peer, events);
            (
                201,
                serde_json::json!({ "accepted": n }).to_string(),
                records,
            )
        }
        Err(e) => {
            let (s, b) = json_error(StatusCode::BAD_REQUEST, &e.to_string());
            (s.as_u16(), b, Vec::new())
        }
    };
    match key {
        Some(k) => {
            let cached = CachedResponse {
                body_digest: digest,
                status,
                body: body.clone(),
            };
            match region.store.remember_and_push(&name, &k, cached, records) {
                Ok(()) => json_response(status, body, false),
                Err(prev) => check_replay(prev),
            }
        }
        None => {
            region.store.push_all(records);
            json_response(status, body, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_split() {
        assert_eq!(
            split_resource("sb://Host:1/Hub/"),
            ("host:1".into(), "hub".into())
        );
        assert_eq!(split_resource("https://h/"), ("h".into(), "".into()));
        assert_eq!(split_resource("h"), ("h".into(), "".into()));
        assert_eq!(
            split_resource("http://h/a/publishers/p"),
            ("h".into(), "a/publishers/p".into())
        );
    }
}
