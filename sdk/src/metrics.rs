//! A producer as Prometheus metrics (feature `metrics`, on the `prometheus-client` crate):
//! the data at risk, deliveries and drops, failovers, route health and link spend.
//!
//! [`ProducerMetrics`] is a [`Collector`]: each scrape reads [`Producer::stats`] afresh, so
//! there is nothing to update and nothing runs between scrapes. `twinhub gateway --metrics`
//! serves it; an application serving its own registry registers it the same way:
//!
//! ```
//! use prometheus_client::registry::Registry;
//! use twinhub::config::EndpointBuilder;
//! use twinhub::metrics::ProducerMetrics;
//! use twinhub::{Producer, SdkConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = SdkConfig::builder("gateway-01")
//!     .endpoint(EndpointBuilder::mqtt("broker", "mqtt://127.0.0.1:1", "t/{device_id}"))
//!     .build()?;
//! let producer = Producer::builder(config.clone()).build().await?;
//! let mut registry = Registry::default();
//! ProducerMetrics::new(producer.clone(), &config).register(&mut registry);
//!
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry)?;
//! assert!(text.contains("twinhub_pending_records 0"));
//! assert!(text.contains(
//!     "messaging_client_sent_messages_total{messaging_system=\"mqtt\",\
//!      messaging_destination_name=\"t/gateway-01\",messaging_operation_name=\"send\",\
//!      endpoint=\"broker\"} 0"
//! ));
//! # Ok(())
//! # }
//! ```
//!
//! # Metrics
//!
//! OpenTelemetry's messaging conventions name the one metric they define for a producer;
//! the rest are `twinhub_*`. Counters end in `_total` in the text format.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `messaging_client_sent_messages_total` | counter | `messaging_system`, `messaging_destination_name`, `messaging_operation_name="send"`, `endpoint` | records acknowledged by each endpoint (a mirrored record counts at each) |
//! | `twinhub_records_accepted_total` | counter | | records taken into the outbox |
//! | `twinhub_records_delivered_total` | counter | | records fully delivered |
//! | `twinhub_records_dropped_total` | counter | `reason` | records dropped, by reason (every reason, zeros too) |
//! | `twinhub_pending_records` | gauge | | records in the outbox, in flight or not |
//! | `twinhub_pending_bytes` | gauge | | their payload bytes |
//! | `twinhub_oldest_pending_age_seconds` | gauge | | how long the oldest of them has waited (0 when none) |
//! | `twinhub_possible_duplicates_total` | counter | | records whose outcome was ambiguous (may arrive twice) |
//! | `twinhub_failovers_total`, `twinhub_failbacks_total` | counter | | moves to a fallback endpoint and back |
//! | `twinhub_route_health` | gauge | `endpoint`, `link`, `state` | 1 for the route's state (`healthy`, `suspect`, `down`, `probing`), 0 for the others |
//! | `twinhub_link_bytes_total` | counter | `link` | bytes sent over each link (what budgets are charged) |
//! | `twinhub_link_budget_bytes` | gauge | `link` | a budgeted link's bytes per window |
//! | `twinhub_link_budget_window_seconds` | gauge | `link` | its window |
//! | `twinhub_link_budget_spent_bytes` | gauge | `link` | bytes charged in its current window |
//!
//! `messaging_system` is `eventhubs` and `kafka` (OpenTelemetry's names), `iothub`, `mqtt`
//! or `http`; `messaging_destination_name` is the event hub, topic, IoT Hub device topic or
//! URL path (never the query, which may hold a token). Values are as of the producer's
//! last step.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use twinhub_core::{Budget, DropReason, RouteHealth};

use crate::config::SdkConfig;
use crate::spec::ProtocolSpec;
use crate::{Producer, Snapshot};

/// The route states, as the `state` label of `twinhub_route_health` spells them.
const ROUTE_STATES: [(RouteHealth, &str); 4] = [
    (RouteHealth::Healthy, "healthy"),
    (RouteHealth::Suspect, "suspect"),
    (RouteHealth::Down, "down"),
    (RouteHealth::Probing, "probing"),
];

/// A [`Producer`]'s metrics, read at every scrape (see the [module docs](self) for the
/// list).
pub struct ProducerMetrics {
    producer: Producer,
    /// Per endpoint: `messaging.system` and `messaging.destination.name`.
    endpoints: Vec<(&'static str, String)>,
    /// Per link: its budget, if it has one.
    budgets: Vec<Option<Budget>>,
}

impl fmt::Debug for ProducerMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerMetrics")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl ProducerMetrics {
    /// The metrics of `producer`, which was built from `config` (whose endpoints give the
    /// messaging labels and whose links give the budgets).
    pub fn new(producer: Producer, config: &SdkConfig) -> Self {
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| destination(&e.protocol, &config.device_id))
            .collect();
        let budgets = config.links.iter().map(|l| l.budget).collect();
        ProducerMetrics {
            producer,
            endpoints,
            budgets,
        }
    }

    /// Registers these metrics in `registry`.
    pub fn register(self, registry: &mut Registry) {
        registry.register_collector(Box::new(self));
    }
}

/// `messaging.system` and `messaging.destination.name` of an endpoint.
fn destination(protocol: &ProtocolSpec, device_id: &str) -> (&'static str, String) {
    match protocol {
        ProtocolSpec::EventHubs(eh) => ("eventhubs", eh.entity.clone()),
        ProtocolSpec::Kafka(k) => ("kafka", k.topic.clone()),
        ProtocolSpec::IotHub(h) => ("iothub", format!("devices/{}/messages/events", h.device_id)),
        ProtocolSpec::Mqtt(m) => ("mqtt", m.topic.replace("{device_id}", device_id)),
        ProtocolSpec::Http(h) => {
            // Scheme, host and path: a query may carry an access token.
            let end = h.url.find(['?', '#']).unwrap_or(h.url.len());
            ("http", h.url[..end].to_owned())
        }
    }
}

impl Collector for ProducerMetrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let snap = self.producer.stats();
        let s = &snap.stats;
        let sent = snap.endpoints.iter().zip(&self.endpoints).enumerate();
        family(
            &mut enc,
            "messaging_client_sent_messages",
            "Records acknowledged by each endpoint (a mirrored record counts at each).",
            MetricType::Counter,
            sent.map(|(i, (name, (system, dest)))| {
                let labels = [
                    ("messaging_system", system.to_string()),
                    ("messaging_destination_name", dest.clone()),
                    ("messaging_operation_name", "send".to_owned()),
                    ("endpoint", name.clone()),
                ];
                (labels, ConstCounter::new(s.delivered_by_endpoint[i]))
            }),
        )?;
        totals(&mut enc, &snap)?;
        family(
            &mut enc,
            "twinhub_records_dropped",
            "Records dropped, by reason.",
            MetricType::Counter,
            DropReason::ALL
                .iter()
                .map(|r| ([("reason", r.name())], ConstCounter::new(s.dropped.get(*r)))),
        )?;
        routes(&mut enc, &snap)?;
        self.links(&mut enc, &snap)
    }
}

/// The producer-wide counters and gauges.
fn totals(enc: &mut DescriptorEncoder<'_>, snap: &Snapshot) -> fmt::Result {
    let s = &snap.stats;
    let counters = [
        (
            "twinhub_records_accepted",
            "Records taken into the outbox.",
            s.accepted,
        ),
        (
            "twinhub_records_delivered",
            "Records fully delivered.",
            s.delivered,
        ),
        (
            "twinhub_possible_duplicates",
            "Records whose outcome was ambiguous: each may reach a hub twice.",
            s.possible_duplicates,
        ),
        (
            "twinhub_failovers",
            "Moves to a fallback endpoint.",
            u64::from(s.failovers),
        ),
        (
            "twinhub_failbacks",
            "Moves back to a preferred endpoint.",
            u64::from(s.failbacks),
        ),
    ];
    for (name, help, value) in counters {
        let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        ConstCounter::new(value).encode(m)?;
    }
    let gauges = [
        (
            "twinhub_pending_records",
            "Records in the outbox, in flight or not: data at risk.",
            s.pending,
        ),
        (
            "twinhub_pending_bytes",
            "Payload bytes of the pending records.",
            s.pending_bytes,
        ),
    ];
    for (name, help, value) in gauges {
        let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(value).encode(m)?;
    }
    let m = enc.encode_descriptor(
        "twinhub_oldest_pending_age_seconds",
        "How long the oldest pending record has waited (0 when none).",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(snap.oldest_pending_age.map_or(0.0, |d| d.as_secs_f64())).encode(m)
}

/// `twinhub_route_health`: one series per endpoint, link and state.
fn routes(enc: &mut DescriptorEncoder<'_>, snap: &Snapshot) -> fmt::Result {
    let mut series = Vec::new();
    for (e, row) in snap.route_health.iter().enumerate() {
        for (l, health) in row.iter().enumerate() {
            for (state, word) in ROUTE_STATES {
                let labels = [
                    ("endpoint", snap.endpoints[e].as_str()),
                    ("link", snap.links[l].as_str()),
                    ("state", word),
                ];
                series.push((labels, ConstGauge::new(i64::from(*health == state))));
            }
        }
    }
    family(
        enc,
        "twinhub_route_health",
        "1 for each route's (endpoint over link) current state, 0 for the others.",
        MetricType::Gauge,
        series,
    )
}

impl ProducerMetrics {
    /// Bytes per link, and budgets with what is spent of them.
    fn links(&self, enc: &mut DescriptorEncoder<'_>, snap: &Snapshot) -> fmt::Result {
        let link = |l: usize| [("link", snap.links[l].as_str())];
        family(
            enc,
            "twinhub_link_bytes",
            "Bytes sent over each link (what its budget is charged).",
            MetricType::Counter,
            (0..snap.links.len()).map(|l| (link(l), ConstCounter::new(snap.stats.link_bytes[l]))),
        )?;
        let budgeted: Vec<(usize, Budget)> = self
            .budgets
            .iter()
            .enumerate()
            .filter_map(|(l, b)| Some((l, (*b)?)))
            .filter(|(l, _)| *l < snap.links.len())
            .collect();
        family(
            enc,
            "twinhub_link_budget_bytes",
            "A budgeted link's bytes per window.",
            MetricType::Gauge,
            budgeted
                .iter()
                .map(|(l, b)| (link(*l), ConstGauge::new(b.bytes))),
        )?;
        family(
            enc,
            "twinhub_link_budget_window_seconds",
            "A budgeted link's window.",
            MetricType::Gauge,
            budgeted.iter().map(|(l, b)| {
                let secs = b.window.as_millis() as f64 / 1000.0;
                (link(*l), ConstGauge::new(secs))
            }),
        )?;
        family(
            enc,
            "twinhub_link_budget_spent_bytes",
            "Bytes charged to a budgeted link in its current window.",
            MetricType::Gauge,
            budgeted.iter().map(|(l, _)| {
                let spent = snap.link_spent.get(*l).copied().flatten().unwrap_or(0);
                (link(*l), ConstGauge::new(spent))
            }),
        )
    }
}

/// One metric family: a descriptor and a series per label set.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    enc: &mut DescriptorEncoder<'_>,
    name: &'static str,
    help: &str,
    metric_type: MetricType,
    series: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, metric_type)?;
    for (labels, metric) in series {
        metric.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EndpointBuilder;

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[tokio::test]
    async fn a_url_query_never_reaches_a_label_and_every_endpoint_and_route_has_series() {
        let config = SdkConfig::builder("d")
            .endpoint(EndpointBuilder::http(
                "fn",
                "https://h.example/api?code=s3cret#x",
            ))
            .endpoint(EndpointBuilder::kafka("k", "127.0.0.1:1", "telemetry"))
            .link(crate::config::LinkBuilder::new(
                "wan",
                twinhub_core::Cost::Free,
            ))
            .link(crate::config::LinkBuilder::new(
                "cell",
                twinhub_core::Cost::Metered,
            ))
            .build()
            .unwrap();
        let producer = Producer::builder(config.clone()).build().await.unwrap();
        let mut registry = Registry::default();
        ProducerMetrics::new(producer.clone(), &config).register(&mut registry);
        let text = scrape(&registry);
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("messaging_destination_name=\"https://h.example/api\""));
        assert!(
            text.contains("messaging_system=\"kafka\",messaging_destination_name=\"telemetry\"")
        );
        // 2 endpoints x 2 links x 4 states; no budgets, so no budget series.
        assert_eq!(text.matches("twinhub_route_health{").count(), 16, "{text}");
        assert!(
            text.contains("twinhub_route_health{endpoint=\"k\",link=\"cell\",state=\"healthy\"} 1")
        );
        assert!(!text.contains("twinhub_link_budget_bytes{"));
        assert_eq!(
            text.matches("twinhub_records_dropped_total{").count(),
            DropReason::ALL.len()
        );
        producer
            .shutdown(std::time::Duration::from_millis(100))
            .await
            .ok();
    }
}
