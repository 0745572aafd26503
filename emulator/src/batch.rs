//! Parsers for request bodies: the Event Hubs REST batch and the generic JSON batch.
//!
//! Both take untrusted bytes and return a typed error naming the first problem (with the
//! event's index); neither panics on any input (property-tested and fuzzed).
//!
//! ## Event Hubs batch (`application/vnd.microsoft.servicebus.json`)
//!
//! A JSON array of objects with the fields `Body` (string, required), `IsBodyBase64` (bool;
//! when true `Body` is standard base64 and is decoded), `UserProperties` (object of
//! scalars) and `BrokerProperties` (object). Unknown fields are ignored, as the service does.
//!
//! **Partition key**: `BrokerProperties.PartitionKey`, kept on the event. `MessageId` and
//! `PartitionKey` may be at most 128 characters, as Azure's SDKs enforce.
//!
//! **Message id**: `BrokerProperties.MessageId` first, else `UserProperties["message-id"]`.
//! The twinhub SDK writes both; consumers of the real service see the user property.
//!
//! ## Generic batch (`POST /ingest/{name}`, `application/json`)
//!
//! A JSON array of `{"id": "...", "body": <any JSON>, "body_encoding": "base64",
//! "properties": {...}}`. `id` is a required non-empty string. `body` is required: a string
//! is recorded as its UTF-8 bytes (or, with `"body_encoding": "base64"`, decoded), any other
//! JSON value as its compact JSON text. `properties` is an optional object of scalars.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

/// The user property (Event Hubs `UserProperties`) that carries the message id.
pub const MESSAGE_ID_PROPERTY: &str = "message-id";

/// One event of a batch, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEvent {
    /// The body bytes.
    pub body: Vec<u8>,
    /// The message id, if any (see the module docs for the lookup order).
    pub message_id: Option<String>,
    /// User properties, values as text.
    pub properties: BTreeMap<String, String>,
    /// `BrokerProperties.PartitionKey`, if the sender set one.
    pub partition_key: Option<String>,
}

/// Why a batch body was refused (the emulator answers 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Not JSON at all.
    #[error("body is not valid JSON: {0}")]
    Json(String),
    /// JSON, but not an array.
    #[error("batch must be a JSON array of events")]
    NotArray,
    /// An empty array.
    #[error("batch is empty")]
    Empty,
    /// One event is malformed.
    #[error("event {index}: {reason}")]
    Event {
        /// Zero-based position in the array.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}

fn event_err(index: usize, reason: impl Into<String>) -> BatchError {
    BatchError::Event {
        index,
        reason: reason.into(),
    }
}

fn array(body: &[u8]) -> Result<Vec<Value>, BatchError> {
    // serde_json limits nesting depth (128), so hostile nesting cannot overflow the stack.
    let value: Value = serde_json::from_slice(body).map_err(|e| BatchError::Json(e.to_string()))?;
    match value {
        Value::Array(items) if items.is_empty() => Err(BatchError::Empty),
        Value::Array(items) => Ok(items),
        _ => Err(BatchError::NotArray),
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

fn properties(
    index: usize,
    field: &str,
    v: Option<&Value>,
) -> Result<BTreeMap<String, String>, BatchError> {
    let mut out = BTreeMap::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let text = scalar_text(v)
                    .ok_or_else(|| event_err(index, format!("{field}.{k} must be a scalar")))?;
                out.insert(k.clone(), text);
            }
        }
        Some(_) => return Err(event_err(index, format!("{field} must be an object"))),
    }
    Ok(out)
}

fn object(index: usize, item: &Value) -> Result<&Map<String, Value>, BatchError> {
    item.as_object()
        .ok_or_else(|| event_err(index, "must be a JSON object"))
}

fn decode_base64(index: usize, field: &str, text: &str) -> Result<Vec<u8>, BatchError> {
    STANDARD
        .decode(text)
        .map_err(|e| event_err(index, format!("{field} is not valid base64: {e}")))
}

fn id_text(index: usize, field: &str, v: &Value) -> Result<String, BatchError> {
    match v {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::String(_) => Err(event_err(index, format!("{field} is empty"))),
        _ => Err(event_err(index, format!("{field} must be a string"))),
    }
}

/// Parses an Event Hubs REST batch body.
pub fn parse_event_hubs_batch(body: &[u8]) -> Result<Vec<BatchEvent>, BatchError> {
    let items = array(body)?;
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let obj = object(index, item)?;
        let base64 = match obj.get("IsBodyBase64") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(event_err(index, "IsBodyBase64 must be a boolean")),
        };
        let body = match obj.get("Body") {
            Some(Value::String(s)) if base64 => decode_base64(index, "Body", s)?,
            Some(Value::String(s)) => s.clone().into_bytes(),
            Some(_) => return Err(event_err(index, "Body must be a string")),
            None => return Err(event_err(index, "has no Body")),
        };
        let properties = properties(index, "UserProperties", obj.get("UserProperties"))?;
        let (broker_id, partition_key) = match obj.get("BrokerProperties") {
            None | Some(Value::Null) => (None, None),
            Some(Value::Object(b)) => (
                broker_text(index, b, "MessageId")?,
                broker_text(index, b, "PartitionKey")?,
            ),
            Some(_) => return Err(event_err(index, "BrokerProperties must be an object")),
        };
        let message_id = broker_id.or_else(|| {
            properties
                .get(MESSAGE_ID_PROPERTY)
                .filter(|s| !s.is_empty())
                .cloned()
        });
        out.push(BatchEvent {
            body,
            message_id,
            properties,
            partition_key,
        });
    }
    Ok(out)
}

/// Longest `MessageId` and `PartitionKey` Service Bus and Event Hubs accept, in
/// characters (Azure.Messaging.ServiceBus: `MaxMessageIdLength`, `MaxPartitionKeyLength`).
pub const MAX_BROKER_ID_CHARS: usize = 128;

/// A string field of `BrokerProperties`: absent, or 1 to 128 characters.
fn broker_text(
    index: usize,
    broker: &Map<String, Value>,
    field: &str,
) -> Result<Option<String>, BatchError> {
    match broker.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let text = id_text(index, &format!("BrokerProperties.{field}"), v)?;
            let chars = text.encode_utf16().count();
            if chars > MAX_BROKER_ID_CHARS {
                return Err(event_err(
                    index,
                    format!(
                        "BrokerProperties.{field} is {chars} characters; at most {MAX_BROKER_ID_CHARS} are allowed"
                    ),
                ));
            }
            Ok(Some(text))
        }
    }
}

/// Parses a generic JSON batch body (`POST /ingest/{name}`).
pub fn parse_generic_batch(body: &[u8]) -> Result<Vec<BatchEvent>, BatchError> {
    let items = array(body)?;
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let obj = object(index, item)?;
        let id = match obj.get("id") {
            Some(v) => id_text(index, "id", v)?,
            None => return Err(event_err(index, "has no id")),
        };
        let base64 = match obj.get("body_encoding") {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) if s == "base64" => true,
            Some(Value::String(s)) if s == "utf8" => false,
            Some(_) => {
                return Err(event_err(
                    index,
                    "body_encoding must be \"base64\" or \"utf8\"",
                ));
            }
        };
        let body = match obj.get("body") {
            None => return Err(event_err(index, "has no body")),
            Some(Value::String(s)) if base64 => decode_base64(index, "body", s)?,
            Some(_) if base64 => return Err(event_err(index, "a base64 body must be a string")),
            Some(Value::String(s)) => s.clone().into_bytes(),
            Some(other) => other.to_string().into_bytes(),
        };
        let properties = properties(index, "properties", obj.get("properties"))?;
        out.push(BatchEvent {
            body,
            message_id: Some(id),
            properties,
            partition_key: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn event_hubs_documented_shapes() {
        let v = parse_event_hubs_batch(
            br#"[{"Body":"Message1"},{"Body":"Message2","UserProperties":{"Alert":"Strong Wind","n":3}}]"#,
        )
        .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].body, b"Message1");
        assert_eq!(v[0].message_id, None);
        assert_eq!(v[1].properties["Alert"], "Strong Wind");
        assert_eq!(v[1].properties["n"], "3");
    }

    #[test]
    fn message_id_prefers_broker_properties() {
        let v = parse_event_hubs_batch(
            br#"[{"Body":"aGk=","IsBodyBase64":true,"BrokerProperties":{"MessageId":"b"},"UserProperties":{"message-id":"u"}},
                 {"Body":"x","UserProperties":{"message-id":"u2"}}]"#,
        )
        .unwrap();
        assert_eq!(v[0].body, b"hi");
        assert_eq!(v[0].message_id.as_deref(), Some("b"));
        assert_eq!(v[1].message_id.as_deref(), Some("u2"));
    }

    #[test]
    fn partition_key_is_read_and_ids_are_limited_to_128_characters() {
        let v = parse_event_hubs_batch(
            br#"[{"Body":"a","BrokerProperties":{"MessageId":"d:1:0","PartitionKey":"d"}},{"Body":"b"}]"#,
        )
        .unwrap();
        assert_eq!(v[0].partition_key.as_deref(), Some("d"));
        assert_eq!(v[1].partition_key, None);
        for field in ["MessageId", "PartitionKey"] {
            let ok = format!(
                r#"[{{"Body":"a","BrokerProperties":{{"{field}":"{}"}}}}]"#,
                "x".repeat(128)
            );
            assert!(parse_event_hubs_batch(ok.as_bytes()).is_ok(), "{field}");
            let long = format!(
                r#"[{{"Body":"a","BrokerProperties":{{"{field}":"{}"}}}}]"#,
                "x".repeat(129)
            );
            let e = parse_event_hubs_batch(long.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains("129 characters"), "{e}");
        }
    }

    #[test]
    fn event_hubs_errors_name_the_problem() {
        let cases: &[(&[u8], &str)] = &[
            (b"{", "not valid JSON"),
            (b"{}", "array"),
            (b"[]", "empty"),
            (b"[1]", "event 0: must be a JSON object"),
            (br#"[{"Body":"a"},{}]"#, "event 1: has no Body"),
            (br#"[{"Body":1}]"#, "Body must be a string"),
            (br#"[{"Body":"!!","IsBodyBase64":true}]"#, "base64"),
            (
                br#"[{"Body":"a","UserProperties":{"x":[1]}}]"#,
                "UserProperties.x",
            ),
            (
                br#"[{"Body":"a","BrokerProperties":{"MessageId":5}}]"#,
                "MessageId must be a string",
            ),
            (br#"[{"Body":"a","IsBodyBase64":"yes"}]"#, "IsBodyBase64"),
        ];
        for (body, want) in cases {
            let e = parse_event_hubs_batch(body).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }

    #[test]
    fn generic_shapes_and_errors() {
        let v = parse_generic_batch(
            br#"[{"id":"a","body":"text"},{"id":"b","body":{"t":1}},{"id":"c","body":"aGk=","body_encoding":"base64","properties":{"k":"v"}}]"#,
        )
        .unwrap();
        assert_eq!(v[0].body, b"text");
        assert_eq!(v[1].body, br#"{"t":1}"#);
        assert_eq!(v[2].body, b"hi");
        assert_eq!(v[2].message_id.as_deref(), Some("c"));
        assert_eq!(v[2].properties["k"], "v");
        for (body, want) in [
            (&br#"[{"body":"x"}]"#[..], "has no id"),
            (br#"[{"id":"","body":"x"}]"#, "id is empty"),
            (br#"[{"id":"a"}]"#, "has no body"),
            (
                br#"[{"id":"a","body":1,"body_encoding":"base64"}]"#,
                "base64 body",
            ),
            (
                br#"[{"id":"a","body":"x","body_encoding":"rot13"}]"#,
                "body_encoding",
            ),
        ] {
            let e = parse_generic_batch(body).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert!(matches!(
            parse_event_hubs_batch(deep.as_bytes()),
            Err(BatchError::Json(_))
        ));
        assert!(matches!(
            parse_generic_batch(deep.as_bytes()),
            Err(BatchError::Json(_))
        ));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
            prop_oneof![
                Just("Body"),
                Just("IsBodyBase64"),
                Just("UserProperties"),
                Just("BrokerProperties"),
                Just("MessageId"),
                Just("message-id"),
                Just("id"),
                Just("body"),
                Just("aGk=")
            ]
            .prop_map(|s| Value::String(s.into())),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("Body".to_string()),
                        Just("IsBodyBase64".to_string()),
                        Just("UserProperties".to_string()),
                        Just("BrokerProperties".to_string()),
                        Just("MessageId".to_string()),
                        Just("message-id".to_string()),
                        Just("id".to_string()),
                        Just("body".to_string()),
                        Just("body_encoding".to_string()),
                        Just("properties".to_string()),
                        ".{0,6}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_event_hubs_batch(&bytes);
            let _ = parse_generic_batch(&bytes);
        }

        #[test]
        fn never_panics_on_json_shaped_input(v in json_value()) {
            let text = v.to_string();
            let _ = parse_event_hubs_batch(text.as_bytes());
            let _ = parse_generic_batch(text.as_bytes());
        }

        #[test]
        fn well_formed_batches_round_trip(events in prop::collection::vec((".{0,20}", prop::option::of("[a-z0-9:]{1,12}"), any::<bool>()), 1..8)) {
            let items: Vec<Value> = events.iter().map(|(body, id, b64)| {
                let mut o = Map::new();
                if *b64 {
                    o.insert("Body".into(), Value::String(STANDARD.encode(body)));
                    o.insert("IsBodyBase64".into(), Value::Bool(true));
                } else {
                    o.insert("Body".into(), Value::String(body.clone()));
                }
                if let Some(id) = id {
                    o.insert("UserProperties".into(), serde_json::json!({"message-id": id}));
                }
                Value::Object(o)
            }).collect();
            let parsed = parse_event_hubs_batch(Value::Array(items).to_string().as_bytes()).unwrap();
            prop_assert_eq!(parsed.len(), events.len());
            for (p, (body, id, _)) in parsed.iter().zip(&events) {
                prop_assert_eq!(&p.body, body.as_bytes());
                prop_assert_eq!(&p.message_id, id);
            }
        }
    }
}
