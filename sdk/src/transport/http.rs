//! A generic JSON batch endpoint: `POST {url}` with a JSON array of
//! `{"id","body","body_encoding":"base64","properties"}` and an `Idempotency-Key` header.
//!
//! The key is the SHA-256 (hex) of the batch's ids, and the body is deterministic, so a
//! batch resent after a timeout carries the same key and body and the server can answer
//! it from its idempotency cache instead of storing it twice.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde::ser::SerializeMap;
use sha2::{Digest, Sha256};
use twinhub_core::{Outcome, RejectReason};

use super::common::{
    TransportError, b64, classify_error, classify_status, http_client, plaintext_credentials,
};
use super::{BoxFuture, Transport};
use crate::record::Record;
use crate::spec::{Bind, HttpSpec};

/// Sends batches to one generic HTTP endpoint.
pub struct HttpTransport {
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
    client: RwLock<reqwest::Client>,
    bind: Option<Bind>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may be credentials: only their names are shown.
        f.debug_struct("HttpTransport")
            .field("url", &self.url.as_str())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// A transport for `spec` over a link bound as `bind`; `timeout` bounds each request.
    pub fn new(
        spec: &HttpSpec,
        bind: Option<&Bind>,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        let url = reqwest::Url::parse(&spec.url)
            .map_err(|e| TransportError::InvalidSpec(format!("http url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TransportError::InvalidSpec(format!(
                "http url scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        if url.scheme() == "http" && !spec.headers.is_empty() {
            plaintext_credentials("an http:// URL with headers", url.host_str().unwrap_or(""))?;
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &spec.headers {
            let n = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| TransportError::InvalidSpec(format!("header name {name:?}")))?;
            let mut v = reqwest::header::HeaderValue::from_str(value.expose()).map_err(|_| {
                TransportError::InvalidSpec(format!("value of header {name:?} is not valid"))
            })?;
            v.set_sensitive(true);
            headers.append(n, v);
        }
        if spec.client_cert.is_some() && url.scheme() != "https" {
            return Err(TransportError::InvalidSpec(
                "a client certificate needs an https:// url".into(),
            ));
        }
        // The client certificate joins the shared TLS settings for this endpoint only.
        let tls = crate::client_cert::with_client_cert(&tls, spec.client_cert.as_ref())?;
        let client = http_client(bind, &tls, timeout)?;
        Ok(HttpTransport {
            url,
            headers,
            client: RwLock::new(client),
            bind: bind.cloned(),
            tls,
            timeout,
        })
    }

    async fn send_batch(&self, records: &[Record]) -> Outcome {
        let Ok(body) = encode_batch(records) else {
            return Outcome::Rejected(RejectReason::Malformed);
        };
        let client = self
            .client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let resp = client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", idempotency_key(records))
            .body(body)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(url = %self.url, error = %e, "http request failed");
                return classify_error(&e);
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let _ = resp.bytes().await;
        let outcome = classify_status(status, retry_after.as_deref());
        if outcome != Outcome::Delivered {
            tracing::debug!(url = %self.url, status, ?outcome, "http send not delivered");
        }
        outcome
    }
}

impl Transport for HttpTransport {
    fn send<'a>(&'a self, records: &'a [Record]) -> BoxFuture<'a, Outcome> {
        Box::pin(self.send_batch(records))
    }

    fn reset(&self) {
        match http_client(self.bind.as_ref(), &self.tls, self.timeout) {
            Ok(c) => *self.client.write().unwrap_or_else(|e| e.into_inner()) = c,
            Err(e) => tracing::warn!(error = %e, "http client rebuild failed"),
        }
    }
}

/// The `Idempotency-Key` of a batch: hex SHA-256 of its ids, one per line. The same
/// records always give the same key; any other batch a different one.
pub fn idempotency_key(records: &[Record]) -> String {
    let mut h = Sha256::new();
    for r in records {
        h.update(r.id.to_text().as_bytes());
        h.update(b"\n");
    }
    let digest = h.finalize();
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[derive(Serialize)]
struct Item<'a> {
    id: &'a str,
    body: String,
    body_encoding: &'static str,
    properties: Properties<'a>,
}

struct Properties<'a>(&'a [(String, String)]);

impl Serialize for Properties<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// The JSON array body of a batch (deterministic for the same records).
pub fn encode_batch(records: &[Record]) -> Result<Vec<u8>, serde_json::Error> {
    let ids: Vec<_> = records.iter().map(|r| r.id.to_text()).collect();
    let items: Vec<Item<'_>> = records
        .iter()
        .zip(&ids)
        .map(|(r, id)| Item {
            id,
            body: b64(&r.body),
            body_encoding: "base64",
            properties: Properties(&r.properties),
        })
        .collect();
    serde_json::to_vec(&items)
}
