//! The consumer side of two Kafka regions: read both regions' topics and drop duplicates
//! by the `message-id` header with [`twinhub::dedup::Dedup`].
//!
//! A producer in `mirror` mode writes every record to both clusters (the active-active
//! case where mirrored and failover copies meet); the consumer reads every partition of
//! both topics with rskafka, an independent Kafka client, and keeps each id once.
//!
//! ```text
//! cargo run -p twinhub --example kafka_consumer
//! KAFKA_EAST=host:9092 KAFKA_WEST=host:9092 cargo run -p twinhub --example kafka_consumer
//! ```
//!
//! Without `KAFKA_EAST`/`KAFKA_WEST` it starts two librdkafka mock clusters with `kcat`
//! (Debian package `kcat`), or says how to run it.

use twinhub_testkit::kafka as kafka_util;

use std::time::Duration;

use rskafka::client::ClientBuilder;
use rskafka::client::partition::UnknownTopicHandling;
use twinhub::config::EndpointBuilder;
use twinhub::dedup::{Dedup, Verdict};
use twinhub::{MessageId, Producer, Routing, SdkConfig};

const TOPIC: &str = "telemetry";

/// The two regions' bootstrap addresses, and the mock clusters if we started them.
fn regions() -> Option<(String, String, Vec<kafka_util::MockCluster>)> {
    if let (Ok(east), Ok(west)) = (std::env::var("KAFKA_EAST"), std::env::var("KAFKA_WEST")) {
        return Some((east, west, Vec::new()));
    }
    if !kafka_util::kcat_available() {
        println!(
            "This example needs two Kafka clusters with a `{TOPIC}` topic:\n  \
             KAFKA_EAST=host:port KAFKA_WEST=host:port cargo run -p twinhub --example kafka_consumer\n\
             or install kcat (apt-get install kcat) and it starts two librdkafka mock clusters itself."
        );
        return None;
    }
    let east = kafka_util::MockCluster::start(TOPIC, 3);
    let west = kafka_util::MockCluster::start(TOPIC, 3);
    Some((
        east.bootstrap.clone(),
        west.bootstrap.clone(),
        vec![east, west],
    ))
}

/// Every record of `topic` in the cluster at `bootstrap`, from every partition.
async fn read_region(
    bootstrap: &str,
    dedup: &mut Dedup,
) -> Result<(usize, usize), Box<dyn std::error::Error>> {
    let brokers = bootstrap.split(',').map(str::to_string).collect();
    let client = ClientBuilder::new(brokers).build().await?;
    let partitions = client
        .list_topics()
        .await?
        .into_iter()
        .find(|t| t.name == TOPIC)
        .map(|t| t.partitions)
        .unwrap_or_default();
    let (mut new, mut duplicates) = (0, 0);
    for p in partitions {
        let pc = client
            .partition_client(TOPIC, p, UnknownTopicHandling::Error)
            .await?;
        let mut offset = 0;
        loop {
            let (records, high_watermark) = pc.fetch_records(offset, 1..1_000_000, 100).await?;
            for r in &records {
                let id = r
                    .record
                    .headers
                    .get("message-id")
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|s| s.parse::<MessageId>().ok());
                // A record without a twinhub id is someone else's: not ours to dedupe.
                let Some(id) = id else { continue };
                match dedup.check(&id) {
                    Verdict::New => new += 1,
                    Verdict::Duplicate | Verdict::TooOld => duplicates += 1,
                }
                offset = r.offset + 1;
            }
            if records.is_empty() || offset >= high_watermark {
                break;
            }
        }
    }
    Ok((new, duplicates))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some((east, west, _clusters)) = regions() else {
        return Ok(());
    };
    // Mirror: every record goes to both regions, so every id arrives twice.
    let config = SdkConfig::builder("gateway-7")
        .routing(Routing::Mirror)
        .endpoint(EndpointBuilder::kafka("east", east.as_str(), TOPIC))
        .endpoint(EndpointBuilder::kafka("west", west.as_str(), TOPIC))
        .build()?;
    let producer = Producer::builder(config).build().await?;
    for i in 0..1_000 {
        producer.send(format!("reading {i}").into_bytes()).await?;
    }
    producer.flush(Duration::from_secs(30)).await?;
    producer.shutdown(Duration::from_secs(5)).await?;

    let mut dedup = Dedup::new(4096);
    let (east_new, east_dup) = read_region(&east, &mut dedup).await?;
    let (west_new, west_dup) = read_region(&west, &mut dedup).await?;
    println!("east: {east_new} new, {east_dup} duplicates");
    println!("west: {west_new} new, {west_dup} duplicates");
    println!(
        "unique records: {} (each mirrored copy was dropped once)",
        east_new + west_new
    );
    Ok(())
}
