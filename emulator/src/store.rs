//! What a region received: every record in arrival order, id counts, and per-protocol stats.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::Serialize;
use tokio::sync::Notify;

/// Which ingest a record came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Event Hubs REST send (`POST /{hub}/messages`).
    EventHubs,
    /// Generic JSON batch (`POST /ingest/{name}`).
    Http,
    /// MQTT publish (3.1.1 or 5) to the generic broker.
    Mqtt,
    /// IoT Hub device-to-cloud telemetry (MQTT over TLS, SAS checked).
    IotHub,
}

impl Protocol {
    /// Every protocol, for stats.
    pub const ALL: [Protocol; 4] = [
        Protocol::EventHubs,
        Protocol::Http,
        Protocol::Mqtt,
        Protocol::IotHub,
    ];

    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::EventHubs => "event-hubs",
            Protocol::Http => "http",
            Protocol::Mqtt => "mqtt",
            Protocol::IotHub => "iot-hub",
        }
    }
}

/// One event as a region received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    /// Region name.
    pub region: String,
    /// Ingest it came through.
    pub protocol: Protocol,
    /// Event hub name, generic ingest name, or MQTT topic.
    pub target: String,
    /// The message id, if the sender attached one (see the crate docs for where it is read).
    pub message_id: Option<String>,
    /// The event body (base64-decoded when it was sent as base64 or in the MQTT envelope).
    #[serde(serialize_with = "as_base64")]
    pub body: Vec<u8>,
    /// User properties (Event Hubs `UserProperties`, generic `properties`, MQTT 5 user
    /// properties), values as text.
    pub properties: BTreeMap<String, String>,
    /// Event Hubs: the event's `BrokerProperties.PartitionKey`, if it had one (what an
    /// Event Hubs consumer reads as the event's partition key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_key: Option<String>,
    /// The client's address as seen by the public (proxy) listener; HTTP and IoT Hub only
    /// (the embedded broker does not expose it).
    pub peer: Option<SocketAddr>,
    /// Milliseconds since the Unix epoch when it was recorded.
    pub received_at_ms: u64,
}

fn as_base64<S: serde::Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(body))
}

impl Record {
    /// The body as UTF-8 text, if it is.
    pub fn body_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }
}

/// Counts for one protocol (or all of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Events received.
    pub events: u64,
    /// Distinct message ids among them.
    pub unique_ids: u64,
    /// Events whose id had already been received (in any protocol of this region).
    pub duplicates: u64,
    /// Events that carried no message id.
    pub without_id: u64,
}

/// A region's counters, as `GET /_admin/stats` reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RegionStats {
    /// All protocols together; `unique_ids` counts ids unique across protocols.
    #[serde(flatten)]
    pub total: Counts,
    /// Per protocol; `unique_ids` counts ids first seen through that protocol.
    pub by_protocol: BTreeMap<&'static str, Counts>,
}

#[derive(Default)]
struct Inner {
    records: Vec<Record>,
    ids: HashMap<String, u64>,
    total: Counts,
    by_protocol: BTreeMap<Protocol, Counts>,
    idempotency: HashMap<(String, String), CachedResponse>,
}

/// A response replayed for a repeated `Idempotency-Key`.
#[derive(Debug, Clone)]
pub(crate) struct CachedResponse {
    pub(crate) body_digest: u64,
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// A region's received records; cheap to clone (shared).
#[derive(Clone)]
pub(crate) struct Store {
    region: Arc<str>,
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
    jsonl: Option<Arc<Mutex<File>>>,
}

impl Store {
    pub(crate) fn new(region: &str, jsonl: Option<&Path>) -> std::io::Result<Self> {
        let jsonl = match jsonl {
            Some(p) => Some(Arc::new(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ))),
            None => None,
        };
        Ok(Store {
            region: region.into(),
            inner: Arc::default(),
            notify: Arc::new(Notify::new()),
            jsonl,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock must not take the region down with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn region(&self) -> &str {
        &self.region
    }

    /// Records events; all or nothing for one request.
    pub(crate) fn push_all(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        let mut lines = String::new();
        {
            let mut inner = self.lock();
            for r in records {
                let Inner {
                    ids,
                    total,
                    by_protocol,
                    records,
                    ..
                } = &mut *inner;
                let per = by_protocol.entry(r.protocol).or_default();
                total.events += 1;
                per.events += 1;
                match &r.message_id {
                    None => {
                        total.without_id += 1;
                        per.without_id += 1;
                    }
                    Some(id) => {
                        let seen = ids.entry(id.clone()).or_insert(0);
                        *seen += 1;
                        if *seen == 1 {
                            total.unique_ids += 1;
                            per.unique_ids += 1;
                        } else {
                            total.duplicates += 1;
                            per.duplicates += 1;
                        }
                    }
                }
                if self.jsonl.is_some()
                    && let Ok(line) = serde_json::to_string(&r)
                {
                    lines.push_str(&line);
                    lines.push('\n');
                }
                records.push(r);
            }
        }
        if let Some(file) = &self.jsonl {
            let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = f.write_all(lines.as_bytes()) {
                tracing::warn!(region = %self.region, error = %e, "cannot append to the JSONL file");
            }
        }
        self.notify.notify_waiters();
    }

    pub(crate) fn records(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Ids in first-arrival order, each once.
    pub(crate) fn ids(&self) -> Vec<String> {
        let inner = self.lock();
        let mut seen = std::collections::HashSet::new();
        inner
            .records
            .iter()
            .filter_map(|r| r.message_id.as_ref())
            .filter(|id| seen.insert(id.as_str()))
            .cloned()
            .collect()
    }

    pub(crate) fn id_count(&self, id: &str) -> u64 {
        self.lock().ids.get(id).copied().unwrap_or(0)
    }

    pub(crate) fn stats(&self) -> RegionStats {
        let inner = self.lock();
        let by_protocol = Protocol::ALL
            .iter()
            .map(|p| {
                (
                    p.as_str(),
                    inner.by_protocol.get(p).copied().unwrap_or_default(),
                )
            })
            .collect();
        RegionStats {
            total: inner.total,
            by_protocol,
        }
    }

    pub(crate) fn reset(&self) {
        let mut inner = self.lock();
        *inner = Inner::default();
    }

    pub(crate) fn idempotent(&self, name: &str, key: &str) -> Option<CachedResponse> {
        self.lock()
            .idempotency
            .get(&(name.to_string(), key.to_string()))
            .cloned()
    }

    /// Remembers the response for a key and records the events, atomically, so two racing
    /// requests with one key cannot both record.
    pub(crate) fn remember_and_push(
        &self,
        name: &str,
        key: &str,
        response: CachedResponse,
        records: Vec<Record>,
    ) -> Result<(), CachedResponse> {
        {
            let mut inner = self.lock();
            let k = (name.to_string(), key.to_string());
            if let Some(prev) = inner.idempotency.get(&k) {
                return Err(prev.clone());
            }
            inner.idempotency.insert(k, response);
        }
        self.push_all(records);
        Ok(())
    }

    /// Waits until `pred` holds over the records or `timeout` passes; returns the records
    /// either way, with `Ok` if the predicate held.
    pub(crate) async fn wait_until<F>(
        &self,
        timeout: Duration,
        mut pred: F,
    ) -> Result<Vec<Record>, Vec<Record>>
    where
        F: FnMut(&[Record]) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let inner = self.lock();
                if pred(&inner.records) {
                    return Ok(inner.records.clone());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let records = self.records();
                return if pred(&records) {
                    Ok(records)
                } else {
                    Err(records)
                };
            }
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(p: Protocol, id: Option<&str>) -> Record {
        Record {
            region: "r".into(),
            protocol: p,
            target: "t".into(),
            message_id: id.map(str::to_string),
            body: b"x".to_vec(),
            properties: BTreeMap::new(),
            partition_key: None,
            peer: None,
            received_at_ms: 0,
        }
    }

    #[test]
    fn counts_duplicates_across_protocols() {
        let s = Store::new("r", None).unwrap();
        s.push_all(vec![
            rec(Protocol::EventHubs, Some("a")),
            rec(Protocol::EventHubs, Some("b")),
            rec(Protocol::Mqtt, Some("a")),
            rec(Protocol::Http, None),
        ]);
        let st = s.stats();
        assert_eq!(st.total.events, 4);
        assert_eq!(st.total.unique_ids, 2);
        assert_eq!(st.total.duplicates, 1);
        assert_eq!(st.total.without_id, 1);
        assert_eq!(st.by_protocol["mqtt"].duplicates, 1);
        assert_eq!(st.by_protocol["event-hubs"].unique_ids, 2);
        assert_eq!(s.ids(), ["a", "b"]);
        assert_eq!(s.id_count("a"), 2);
        s.reset();
        assert_eq!(
            s.stats(),
            RegionStats {
                by_protocol: st
                    .by_protocol
                    .keys()
                    .map(|k| (*k, Counts::default()))
                    .collect(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn jsonl_gets_one_line_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let s = Store::new("r", Some(&path)).unwrap();
        s.push_all(vec![
            rec(Protocol::Http, Some("a")),
            rec(Protocol::Http, Some("b")),
        ]);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["message_id"], "b");
        assert_eq!(lines[0]["body"], "eA==");
        assert_eq!(lines[0]["protocol"], "http");
    }
}
