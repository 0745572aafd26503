//! The JSON report of a [`Snapshot`]: what `twinhub send` prints, and what the end-to-end
//! suites read. Its keys are a stable interface; add keys, never rename them.

use super::Snapshot;

impl Snapshot {
    /// The snapshot as the JSON object `twinhub send` prints.
    pub fn to_json(&self) -> serde_json::Value {
        let s = &self.stats;
        let by_endpoint: serde_json::Map<String, serde_json::Value> = self
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), s.delivered_by_endpoint[i].into()))
            .collect();
        let by_link: serde_json::Map<String, serde_json::Value> = self
            .links
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), s.link_bytes[i].into()))
            .collect();
        let dropped: serde_json::Map<String, serde_json::Value> = twinhub_core::DropReason::ALL
            .iter()
            .map(|r| (r.name().to_string(), s.dropped.get(*r).into()))
            .collect();
        serde_json::json!({
            "accepted": s.accepted,
            "delivered": s.delivered,
            "pending": s.pending,
            "pending_bytes": s.pending_bytes,
            "oldest_pending_ms": self.oldest_pending_age.map(|d| d.as_millis() as u64),
            "dropped": dropped,
            "delivered_by_endpoint": by_endpoint,
            "failovers": s.failovers,
            "failbacks": s.failbacks,
            "link_bytes": by_link,
            "possible_duplicates": s.possible_duplicates,
        })
    }
}
