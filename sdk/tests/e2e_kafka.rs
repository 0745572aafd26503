//! End to end over Kafka: a `Producer` built from TOML streams 10,000 records to two
//! librdkafka mock clusters (two regions); the primary goes down mid-stream and comes
//! back; independent `kcat` consumers read what arrived, matched by the `message-id`
//! header. Skipped (with a note) where `kcat` is not installed.

use twinhub_testkit::kafka as kafka_util;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use kafka_util::{Forwarder, MockCluster, Tail, kcat_available};
use twinhub::{Producer, SdkConfig, SendOptions};

const RECORDS: u32 = 10_000;

async fn wait_until(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ok()
}

fn config(primary: &str, secondary: &str) -> SdkConfig {
    SdkConfig::from_toml_str(&format!(
        r#"device_id = "e2e-kafka"
[outbox]
max_bytes = "64MiB"
[timings]
min_dwell = "3s"
[[endpoint]]
name = "primary"
protocol = "kafka"
bootstrap = "{primary}"
topic = "telemetry"
[[endpoint]]
name = "secondary"
protocol = "kafka"
bootstrap = "{secondary}"
topic = "telemetry"
"#
    ))
    .expect("config parses")
}

/// Streams `RECORDS` records at a device's pace, calling `at(i)` before record `i`, then
/// trickles until the producer failed back; returns every id, delivered.
async fn stream(producer: &Producer, mut at: impl AsyncFnMut(u32)) -> Vec<String> {
    let mut tickets = Vec::new();
    for i in 0..RECORDS {
        at(i).await;
        tickets.push(
            producer
                .submit(format!("reading {i}").into_bytes(), SendOptions::default())
                .await
                .expect("accepted"),
        );
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut all = Vec::new();
    for t in tickets {
        all.push(t.await.expect("delivered").to_string());
    }
    // Failback takes probes and the dwell: a device's trickle goes on until it happens.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut extra = 0u32;
    while producer.stats().stats.failbacks == 0 && tokio::time::Instant::now() < deadline {
        let id = producer
            .send(format!("trickle {extra}").into_bytes())
            .await
            .expect("accepted");
        all.push(id.to_string());
        extra += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    producer
        .flush(Duration::from_secs(120))
        .await
        .expect("flushed");
    all
}

/// Checks the union over both regions and prints the tally.
fn check(name: &str, producer: &Producer, all: &[String], copies: &[BTreeMap<String, u32>]) {
    let union: HashSet<&String> = copies.iter().flat_map(|m| m.keys()).collect();
    let missing: Vec<&String> = all.iter().filter(|id| !union.contains(id)).collect();
    let stats = producer.stats().stats;
    assert!(
        missing.is_empty(),
        "{name}: {} of {} ids reached neither cluster, first {:?}; {stats:?}",
        missing.len(),
        all.len(),
        &missing[..missing.len().min(10)]
    );
    let total: u32 = copies.iter().flat_map(|m| m.values()).sum();
    println!(
        "kafka e2e {name}: ids {}, delivered {} (primary {}, secondary {}), copies read {total}, \
         duplicates {}, possible duplicates {}, failovers {}, failbacks {}",
        all.len(),
        stats.delivered,
        stats.delivered_by_endpoint[0],
        stats.delivered_by_endpoint[1],
        total as usize - union.len(),
        stats.possible_duplicates,
        stats.failovers,
        stats.failbacks
    );
    assert_eq!(stats.delivered, all.len() as u64);
    assert_eq!(stats.accepted, stats.delivered);
    assert!(stats.failovers >= 1 && stats.failbacks >= 1, "{stats:?}");
    assert!(
        stats.delivered_by_endpoint[1] > 0,
        "the secondary carried the outage"
    );
}

/// Region down: the primary's cluster is SIGKILLed after 3,000 records and a new one
/// takes its place behind the region's address after 6,000.
///
/// The mock keeps its log in memory, so records die with the process; a real cluster
/// keeps them on disk and replicas. So before the kill, the stream pauses until the
/// independent consumer has read every record the primary acknowledged (waiting on that
/// progress, not on time); the kill then hits a producer that is still streaming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_primary_killed_mid_stream_fails_over_and_back() {
    if !kcat_available() {
        eprintln!("skipped: kcat is not installed (apt-get install kcat)");
        return;
    }
    let mut primary = MockCluster::start("telemetry", 3);
    let secondary = MockCluster::start("telemetry", 3);
    let region = Forwarder::start(Some(primary.first())).await;
    let tail_p = Tail::start(&primary.bootstrap, "telemetry");
    let tail_s = Tail::start(&secondary.bootstrap, "telemetry");
    let producer = Producer::builder(config(&region.addr.to_string(), &secondary.bootstrap))
        .request_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("builds");
    let mut replacement: Option<(MockCluster, Tail)> = None;
    let all = stream(&producer, async |i| {
        if i == 3_000 {
            producer
                .flush(Duration::from_secs(60))
                .await
                .expect("flushed");
            let acked = producer.stats().stats.delivered_by_endpoint[0] as usize;
            assert!(acked > 0, "the primary carried the start");
            let read = wait_until(Duration::from_secs(30), || tail_p.count() >= acked).await;
            assert!(read, "the consumer read {} of {acked}", tail_p.count());
            primary.kill();
            region.point_to(None);
        }
        if i == 6_000 {
            let back = MockCluster::start("telemetry", 3);
            region.point_to(Some(back.first()));
            let tail = Tail::start(&back.bootstrap, "telemetry");
            replacement = Some((back, tail));
        }
    })
    .await;
    let (_back, tail_b) = replacement.expect("the primary came back");
    let tails = [&tail_p, &tail_b, &tail_s];
    let complete = wait_until(Duration::from_secs(30), || {
        let seen: HashSet<String> = tails
            .iter()
            .flat_map(|t| t.seen.lock().unwrap().keys().cloned().collect::<Vec<_>>())
            .collect();
        all.iter().all(|id| seen.contains(id))
    })
    .await;
    let copies: Vec<BTreeMap<String, u32>> = tails
        .iter()
        .map(|t| t.seen.lock().unwrap().clone())
        .collect();
    check("sigkill", &producer, &all, &copies);
    assert!(complete);
    assert!(
        !copies[1].is_empty(),
        "the replacement primary got records after failback"
    );
}

/// Blackhole: the primary is SIGSTOPped mid-stream (connections stay open, nothing
/// answers; batches in flight end ambiguous), stays so until the producer failed over,
/// and is SIGCONTed 3,000 records after it stopped. The
/// stopped cluster then appends what was waiting in its sockets, so duplicates appear;
/// both logs are read to the end afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_blackholed_primary_fails_over_and_back_duplicates_counted() {
    if !kcat_available() {
        eprintln!("skipped: kcat is not installed (apt-get install kcat)");
        return;
    }
    let primary = MockCluster::start("telemetry", 3);
    let secondary = MockCluster::start("telemetry", 3);
    let producer = Producer::builder(config(&primary.bootstrap, &secondary.bootstrap))
        .request_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("builds");
    let all = stream(&producer, async |i| {
        if i == 3_000 {
            primary.stop().expect("SIGSTOP");
        }
        if i == 3_500 {
            // The outage lasts until the producer has noticed it, however long that is.
            let moved = wait_until(Duration::from_secs(60), || {
                producer.stats().stats.failovers >= 1
            })
            .await;
            assert!(moved, "no failover: {:?}", producer.stats().stats);
        }
        if i == 6_000 {
            primary.cont().expect("SIGCONT");
        }
    })
    .await;
    let count = |records: Vec<kafka_util::KafkaRecord>| {
        let mut m: BTreeMap<String, u32> = BTreeMap::new();
        for r in records {
            if let Some(id) = r.id() {
                *m.entry(id.to_string()).or_default() += 1;
            }
        }
        m
    };
    let copies = [count(primary.read_all()), count(secondary.read_all())];
    check("blackhole", &producer, &all, &copies);
}
