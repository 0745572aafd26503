//! Event Hubs REST batch send: `POST {host}/{entity}/messages?api-version=2014-01` with a
//! JSON array body (`application/vnd.microsoft.servicebus.json`) and a SAS token.
//!
//! Each event carries the record's id twice: `BrokerProperties.MessageId` (the service's
//! own field) and the user property `message-id` (what consumers of the real service
//! see), and by default `BrokerProperties.PartitionKey` = the record's device id, so a
//! device's events stay on one partition in order ([`PartitionKey`]). Bodies are base64
//! with `IsBodyBase64`, so any bytes survive.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use twinhub_core::{Outcome, RejectReason};

use super::common::{
    TokenCache, TransportError, classify_error, classify_status, http_client, parse_retry_after,
    plaintext_credentials, push_id,
};
use super::{BoxFuture, Transport};
use crate::record::Record;
use crate::spec::{Bind, EventHubsSpec, PartitionKey};

/// The API version the REST send pages document.
const API_VERSION: &str = "2014-01";
const CONTENT_TYPE: &str = "application/vnd.microsoft.servicebus.json";

/// Sends batches to one event hub.
pub struct EventHubsTransport {
    url: String,
    tokens: TokenCache,
    client: RwLock<reqwest::Client>,
    bind: Option<Bind>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    partition_key: PartitionKey,
}

impl std::fmt::Debug for EventHubsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHubsTransport")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl EventHubsTransport {
    /// A transport for `spec` over a link bound as `bind`; `timeout` bounds each request.
    pub fn new(
        spec: &EventHubsSpec,
        bind: Option<&Bind>,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        if spec.host.is_empty() || spec.host.contains('/') {
            return Err(TransportError::InvalidSpec(format!(
                "event hubs host {:?} must be a host name (and port)",
                spec.host
            )));
        }
        if spec.entity.is_empty() {
            return Err(TransportError::InvalidSpec(
                "event hubs entity path is empty".into(),
            ));
        }
        let scheme = if spec.development_emulator {
            plaintext_credentials("UseDevelopmentEmulator=true", &spec.host)?;
            "http"
        } else {
            "https"
        };
        let url = format!(
            "{scheme}://{}/{}/messages?api-version={API_VERSION}",
            spec.host, spec.entity
        );
        // The token covers the entity; the service (and the emulator) accept any scheme.
        let resource = format!("https://{}/{}", spec.host, spec.entity);
        let tokens = TokenCache::new(
            resource,
            spec.key.clone(),
            Some(spec.key_name.clone()),
            false,
            spec.token_ttl,
        )?;
        let client = http_client(bind, &tls, timeout)?;
        Ok(EventHubsTransport {
            url,
            tokens,
            client: RwLock::new(client),
            bind: bind.cloned(),
            tls,
            timeout,
            partition_key: spec.partition_key,
        })
    }

    fn client(&self) -> reqwest::Client {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn post(&self, token: &str, body: bytes::Bytes) -> Result<Reply, Outcome> {
        let resp = self
            .client()
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(reqwest::header::AUTHORIZATION, sensitive(token)?)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                tracing::debug!(url = %self.url, error = %e, "event hubs request failed");
                classify_error(&e)
            })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Reading the (empty or small) body lets the connection be reused; a 403 is
        // classified by what it says.
        let body = resp.bytes().await.unwrap_or_default();
        let reply = Reply {
            status,
            retry_after,
            detail: (status == 403).then(|| error_detail(&body)),
        };
        Ok(reply)
    }

    async fn send_batch(&self, records: &[Record]) -> Outcome {
        // `Bytes`: the one retry below shares the buffer instead of copying it.
        let body = match encode_batch_keyed(records, self.partition_key) {
            Ok(b) => bytes::Bytes::from(b),
            Err(_) => return Outcome::Rejected(RejectReason::Malformed),
        };
        let Ok(token) = self.tokens.get() else {
            return Outcome::Unauthorized;
        };
        let reply = match self.post(&token, body.clone()).await {
            Ok(r) => r,
            Err(o) => return o,
        };
        if reply.status != 401 {
            return self.finish(&reply);
        }
        // The cached token may have expired in flight or the clock jumped: one fresh try.
        let Ok(token) = self.tokens.refresh() else {
            return Outcome::Unauthorized;
        };
        match self.post(&token, body).await {
            Ok(reply) => self.finish(&reply),
            Err(o) => o,
        }
    }

    fn finish(&self, reply: &Reply) -> Outcome {
        let outcome = classify(reply);
        if outcome != Outcome::Delivered {
            tracing::debug!(url = %self.url, status = reply.status, detail = ?reply.detail, ?outcome, "event hubs send not delivered");
        }
        outcome
    }
}

/// What the service answered: the status, `Retry-After`, and for a 403 the error text.
#[derive(Debug)]
struct Reply {
    status: u16,
    retry_after: Option<String>,
    detail: Option<String>,
}

/// The shortest back-off Event Hubs asks for when it is busy ("wait at least 4 seconds",
/// the server-busy error's own text): a shorter `Retry-After` on a 503 is not trusted.
pub const SERVER_BUSY_MIN_WAIT: twinhub_core::Duration = twinhub_core::Duration::from_secs(4);

/// How Event Hubs' answers map to outcomes. Beyond [`classify_status`]:
///
/// * 503 is the service's "server busy" (throttling; the AMQP path calls it
///   `ServerBusyException`, error 50002): back off on the same namespace. With no usable
///   `Retry-After` (or one under 4 s) the engine's own throttle back-off applies
///   (`throttle_backoff`, 4 s, plus jitter); it fails over only once throttling has lasted
///   `throttle_failover_after`.
/// * 403 is "quota exceeded or message too large" (the REST batch send's documented
///   meaning), told apart by its error text, see [`classify_forbidden`].
fn classify(reply: &Reply) -> Outcome {
    match reply.status {
        503 => Outcome::Throttled {
            retry_after: reply
                .retry_after
                .as_deref()
                .and_then(parse_retry_after)
                .filter(|d| *d >= SERVER_BUSY_MIN_WAIT),
        },
        403 => classify_forbidden(reply.detail.as_deref().unwrap_or("")),
        status => classify_status(status, reply.retry_after.as_deref()),
    }
}

/// Why a 403 came back, from its error text (case-insensitive):
///
/// * a quota or throttling message (`quota`, `entity size`, `throttl`, `server busy`,
///   error codes 50002 / 50008): the namespace is full or over its throughput for now, so
///   [`Outcome::Throttled`] (back off, fail over only if it persists);
/// * a size message (`too large`, `message size`, `MessageSizeExceeded`, `exceeds the
///   limit`, `exceeds the maximum`): the batch is over the publication limit, so
///   [`Outcome::Rejected`] with [`RejectReason::TooLarge`] (the engine resends a batch's
///   records one by one and drops only a record that is too large alone);
/// * anything else (a rule without `Send` rights, a network rule refusing this client):
///   [`Outcome::Unauthorized`], the endpoint is unusable with these credentials.
pub fn classify_forbidden(detail: &str) -> Outcome {
    let d = detail.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| d.contains(w));
    if has(&[
        "quota",
        "entity size",
        "throttl",
        "server busy",
        "50002",
        "50008",
    ]) {
        Outcome::Throttled { retry_after: None }
    } else if has(&[
        "too large",
        "message size",
        "messagesizeexceeded",
        "exceeds the limit",
        "exceeds the maximum",
    ]) {
        Outcome::Rejected(RejectReason::TooLarge)
    } else {
        Outcome::Unauthorized
    }
}

/// The text of an error body: the `<Detail>` of the service's XML error
/// (`<Error><Code>403</Code><Detail>..</Detail></Error>`) when there is one, else the body
/// itself, cut to 1 KiB (it only goes into a classification and a debug log).
fn error_detail(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned();
    match text.split_once("<Detail>") {
        Some((_, rest)) => rest.split("</Detail>").next().unwrap_or(rest).to_string(),
        None => text,
    }
}

/// Marks the Authorization value sensitive so hyper never logs it.
fn sensitive(token: &str) -> Result<reqwest::header::HeaderValue, Outcome> {
    let mut v = reqwest::header::HeaderValue::from_str(token).map_err(|_| Outcome::Unauthorized)?;
    v.set_sensitive(true);
    Ok(v)
}

impl Transport for EventHubsTransport {
    fn send<'a>(&'a self, records: &'a [Record]) -> BoxFuture<'a, Outcome> {
        Box::pin(self.send_batch(records))
    }

    fn reset(&self) {
        // A new client has an empty pool: the next send connects and resolves anew.
        match http_client(self.bind.as_ref(), &self.tls, self.timeout) {
            Ok(c) => *self.client.write().unwrap_or_else(|e| e.into_inner()) = c,
            Err(e) => tracing::warn!(error = %e, "event hubs client rebuild failed"),
        }
    }
}

/// The JSON array body of a batch, keyed by device ([`encode_batch_keyed`] with
/// [`PartitionKey::Device`]).
pub fn encode_batch(records: &[Record]) -> Result<Vec<u8>, serde_json::Error> {
    encode_batch_keyed(records, PartitionKey::Device)
}

/// The JSON array body of a batch:
/// `[{"Body":"<base64>","IsBodyBase64":true,"BrokerProperties":{"MessageId":"..",
/// "PartitionKey":"<device>"},"UserProperties":{"message-id":"..",..}},..]`
/// (`PartitionKey` left out with [`PartitionKey::None`]).
///
/// Written straight into one buffer: the body is base64-encoded in place with SIMD where
/// the CPU has it, and ids are written as they are (neither base64's alphabet nor a device
/// id's characters need JSON escaping); properties go through serde_json, which escapes
/// them. A property test holds the bytes to serde_json's encoding of derived structs.
pub fn encode_batch_keyed(
    records: &[Record],
    key: PartitionKey,
) -> Result<Vec<u8>, serde_json::Error> {
    let b64 = &base64_simd::STANDARD;
    let guess: usize = records.iter().map(|r| r.body.len() / 3 * 4 + 160).sum();
    let mut out = Vec::with_capacity(guess + 2);
    out.push(b'[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"Body\":\"");
        let start = out.len();
        out.resize(start + b64.encoded_length(r.body.len()), 0);
        let written = b64
            .encode(&r.body, base64_simd::Out::from_slice(&mut out[start..]))
            .len();
        out.truncate(start + written);
        out.extend_from_slice(b"\",\"IsBodyBase64\":true,\"BrokerProperties\":{\"MessageId\":\"");
        push_id(&mut out, &r.id);
        if key == PartitionKey::Device {
            out.extend_from_slice(b"\",\"PartitionKey\":\"");
            out.extend_from_slice(r.id.device.as_str().as_bytes());
        }
        out.extend_from_slice(b"\"},\"UserProperties\":{\"message-id\":\"");
        push_id(&mut out, &r.id);
        out.push(b'"');
        for (k, v) in &r.properties {
            // The id must not be overridden.
            if k != "message-id" {
                out.push(b',');
                serde_json::to_writer(&mut out, k)?;
                out.push(b':');
                serde_json::to_writer(&mut out, v)?;
            }
        }
        out.extend_from_slice(b"}}");
    }
    out.push(b']');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::Serialize;
    use serde::ser::SerializeMap;
    use twinhub_core::{Class, DeviceId, MessageId};

    use super::super::common::b64;
    use super::*;

    #[derive(Serialize)]
    struct Broker<'a> {
        #[serde(rename = "MessageId")]
        message_id: &'a str,
        #[serde(rename = "PartitionKey", skip_serializing_if = "Option::is_none")]
        partition_key: Option<&'a str>,
    }

    /// `message-id` first, then the record's properties (a property of that name is skipped:
    /// the id must not be overridden).
    struct UserProperties<'a> {
        id: &'a str,
        properties: &'a [(String, String)],
    }

    impl Serialize for UserProperties<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(None)?;
            m.serialize_entry("message-id", self.id)?;
            for (k, v) in self.properties {
                if k != "message-id" {
                    m.serialize_entry(k, v)?;
                }
            }
            m.end()
        }
    }

    /// The reference encoding: serde_json over a struct per event.
    #[derive(Serialize)]
    struct Event<'a> {
        #[serde(rename = "Body")]
        body: String,
        #[serde(rename = "IsBodyBase64")]
        is_body_base64: bool,
        #[serde(rename = "BrokerProperties")]
        broker: Broker<'a>,
        #[serde(rename = "UserProperties")]
        user: UserProperties<'a>,
    }

    fn reference(records: &[Record], key: PartitionKey) -> Vec<u8> {
        let ids: Vec<_> = records.iter().map(|r| r.id.to_text()).collect();
        let events: Vec<Event<'_>> = records
            .iter()
            .zip(&ids)
            .map(|(r, id)| Event {
                body: b64(&r.body),
                is_body_base64: true,
                broker: Broker {
                    message_id: id,
                    partition_key: (key == PartitionKey::Device).then(|| r.id.device.as_str()),
                },
                user: UserProperties {
                    id,
                    properties: &r.properties,
                },
            })
            .collect();
        serde_json::to_vec(&events).unwrap()
    }

    fn reply(status: u16, retry_after: Option<&str>, body: &str) -> Outcome {
        classify(&Reply {
            status,
            retry_after: retry_after.map(str::to_string),
            detail: (status == 403).then(|| error_detail(body.as_bytes())),
        })
    }

    #[test]
    fn server_busy_backs_off_at_least_four_seconds() {
        let engine_backoff = Outcome::Throttled { retry_after: None };
        assert_eq!(reply(503, None, ""), engine_backoff);
        // Shorter than the service's own advice, or a date: the engine's jittered >= 4 s.
        assert_eq!(reply(503, Some("1"), ""), engine_backoff);
        assert_eq!(
            reply(503, Some("Wed, 21 Oct 2015 07:28:00 GMT"), ""),
            engine_backoff
        );
        assert_eq!(
            reply(503, Some("9"), ""),
            Outcome::Throttled {
                retry_after: Some(twinhub_core::Duration::from_secs(9))
            }
        );
        // 500 stays a server error: it says nothing about load.
        assert_eq!(reply(500, None, ""), Outcome::ServerError);
    }

    #[test]
    fn forbidden_is_classified_by_its_text() {
        let xml = |d: &str| format!("<Error><Code>403</Code><Detail>{d}</Detail></Error>");
        for quota in [
            "SubCode=40300. QuotaExceeded: the namespace is over its quota.",
            "The maximum entity size has been reached or exceeded for Topic: 'x'.",
            "The request was terminated because the entity is being throttled. Error code : 50002.",
        ] {
            assert_eq!(
                reply(403, None, &xml(quota)),
                Outcome::Throttled { retry_after: None },
                "{quota}"
            );
        }
        for size in [
            "The received message (size: 1048700 bytes) exceeds the limit (1048576 bytes).",
            "MessageSizeExceeded: batch too large",
            "Message size exceeds the maximum allowed.",
        ] {
            assert_eq!(
                reply(403, None, &xml(size)),
                Outcome::Rejected(RejectReason::TooLarge),
                "{size}"
            );
        }
        for other in [
            "Unauthorized access. 'Send' claim(s) are required to perform this operation.",
            "Ip has been prevented to connect to the endpoint.",
            "",
        ] {
            assert_eq!(
                reply(403, None, &xml(other)),
                Outcome::Unauthorized,
                "{other}"
            );
        }
        // A body that is not the XML shape is read as it is.
        assert_eq!(
            reply(403, None, "quota exceeded"),
            Outcome::Throttled { retry_after: None }
        );
    }

    proptest! {
        #[test]
        fn forbidden_text_never_panics(body in prop::collection::vec(any::<u8>(), 0..2048)) {
            let _ = classify_forbidden(&error_detail(&body));
        }

        #[test]
        fn encoding_matches_serde_json(
            device in "[a-zA-Z0-9:.@$'()*!=,%_+#?-]{1,20}",
            epoch in any::<u32>(),
            first in any::<u64>(),
            bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
            props in prop::collection::vec(("\\PC{0,8}", "\\PC{0,12}"), 0..4),
        ) {
            let device = DeviceId::new(&device).unwrap();
            let records: Vec<Record> = bodies
                .into_iter()
                .enumerate()
                .map(|(i, body)| Record {
                    id: MessageId { device: device.clone(), epoch, seq: first.wrapping_add(i as u64) },
                    class: Class::Normal,
                    properties: props.clone(),
                    body: body.into(),
                })
                .collect();
            prop_assert_eq!(encode_batch(&records).unwrap(), reference(&records, PartitionKey::Device));
            prop_assert_eq!(
                encode_batch_keyed(&records, PartitionKey::None).unwrap(),
                reference(&records, PartitionKey::None)
            );
        }
    }
}
