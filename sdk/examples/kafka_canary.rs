//! Active-active across two Kafka clusters with a canary: 90/10, then 50/50, then the
//! first cluster drained (blue-green). Each device stays on one partition per cluster
//! (key = device id), so consumers that dedupe find its records in the same place.
//!
//! ```text
//! cargo run -p twinhub --example kafka_canary
//! KAFKA_BLUE=host:9092 KAFKA_GREEN=host:9092 cargo run -p twinhub --example kafka_canary
//! ```
//!
//! Without `KAFKA_BLUE`/`KAFKA_GREEN` it starts two librdkafka mock clusters with `kcat`
//! (Debian package `kcat`), or says how to run it.

use twinhub_testkit::kafka as kafka_util;

use std::time::Duration;

use twinhub::config::EndpointBuilder;
use twinhub::{EngineDuration, Producer, Routing, SdkConfig, Timings};

const TOPIC: &str = "telemetry";

async fn burst(producer: &Producer, n: u32, label: &str) -> Result<(), Box<dyn std::error::Error>> {
    let before = producer.stats().stats.delivered_by_endpoint;
    for i in 0..n {
        producer.send(format!("{label} {i}").into_bytes()).await?;
        if i % 50 == 49 {
            // A device's pace: batches go out between sends.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    producer.flush(Duration::from_secs(30)).await?;
    let after = producer.stats().stats.delivered_by_endpoint;
    println!(
        "{label:>10}: blue {:>4}  green {:>4}",
        after[0] - before[0],
        after[1] - before[1]
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut clusters = Vec::new();
    let (blue, green) = match (std::env::var("KAFKA_BLUE"), std::env::var("KAFKA_GREEN")) {
        (Ok(b), Ok(g)) => (b, g),
        _ if kafka_util::kcat_available() => {
            clusters.push(kafka_util::MockCluster::start(TOPIC, 3));
            clusters.push(kafka_util::MockCluster::start(TOPIC, 3));
            (clusters[0].bootstrap.clone(), clusters[1].bootstrap.clone())
        }
        _ => {
            println!(
                "This example needs two Kafka clusters with a `{TOPIC}` topic:\n  \
                 KAFKA_BLUE=host:port KAFKA_GREEN=host:port cargo run -p twinhub --example kafka_canary\n\
                 or install kcat (apt-get install kcat) and it starts two librdkafka mock clusters itself."
            );
            return Ok(());
        }
    };
    let config = SdkConfig::builder("gateway-7")
        .routing(Routing::ActiveActive)
        .timings(Timings {
            linger: EngineDuration::from_millis(5),
            ..Timings::default()
        })
        .endpoint(EndpointBuilder::kafka("blue", blue.as_str(), TOPIC).max_batch_records(20))
        .endpoint(EndpointBuilder::kafka("green", green.as_str(), TOPIC).max_batch_records(20))
        .build()?;
    let producer = Producer::builder(config).build().await?;
    producer.set_weights(&[9, 1]).await?; // green is the canary
    burst(&producer, 1_000, "canary").await?;
    producer.set_weights(&[1, 1]).await?;
    burst(&producer, 1_000, "50/50").await?;
    producer.set_drained("blue", true).await?; // green takes over
    burst(&producer, 500, "drained").await?;
    producer.shutdown(Duration::from_secs(5)).await?;
    if clusters.len() == 2 {
        read_back(&clusters)?;
    }
    Ok(())
}

/// What an independent consumer (`kcat`) finds in each cluster, per phase: the split
/// above is the producer's own count, this one is the clusters'.
fn read_back(clusters: &[kafka_util::MockCluster]) -> Result<(), Box<dyn std::error::Error>> {
    let mut per_cluster = Vec::new();
    for c in clusters {
        let records = kafka_util::read_all(&c.bootstrap, TOPIC)?;
        per_cluster.push(records);
    }
    println!("read back by kcat:");
    for label in ["canary", "50/50", "drained"] {
        let count = |records: &[kafka_util::KafkaRecord]| {
            records
                .iter()
                .filter(|r| r.value.split_once(' ').is_some_and(|(l, _)| l == label))
                .count()
        };
        println!(
            "{label:>10}: blue {:>4}  green {:>4}",
            count(&per_cluster[0]),
            count(&per_cluster[1])
        );
    }
    Ok(())
}
