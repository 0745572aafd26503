//! Kafka through the whole `Producer` against the raw client, on the same librdkafka mock
//! cluster in the same run:
//!
//! * `kafka_sdk_1000`: 1,000 records of 256 B through the `Producer` (memory outbox,
//!   group commit, engine, the Kafka transport: batches of 100, one Produce request each)
//!   against rskafka producing the same 10 batches of 100 records (same key, same
//!   `message-id` and `class` headers) to the same partition, four requests in flight as
//!   the engine allows, each awaited. rskafka sets no `TCP_NODELAY`, so on loopback its
//!   pipelined requests wait on delayed ACKs; that is the raw client as shipped;
//! * `kafka_sdk_1000_vs_transport`: the same `Producer` against twinhub's Kafka transport
//!   alone sending the same 10 batches, built before the clock starts, four in flight:
//!   what the outbox and the engine cost on top of the wire.
//!
//! Printed as `ROW` lines for `cargo xtask bench`: records per second of each side (the
//! median of rounds run in pairs) and the median of the pairs' ratios (baseline time /
//! our time; ≥ 0.9 is the target). Skipped with a note where `kcat` is not installed.

use twinhub_testkit as transport_util;
use twinhub_testkit::kafka as kafka_util;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rskafka::client::ClientBuilder;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;
use twinhub::Outcome;
use twinhub::transport::Transport;
use twinhub::transport::kafka::{KafkaTransport, partition_for};

const SDK_RECORDS: usize = 1000;
const BATCH: usize = 100;
const SIZE: usize = 256;
const ROUNDS: usize = 31;
const TOPIC: &str = "bench";
const DEVICE: &str = "bench";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn producer(rt: &tokio::runtime::Runtime, bootstrap: &str) -> twinhub::Producer {
    let toml = format!(
        "device_id = \"{DEVICE}\"\n[outbox]\nmax_bytes = \"64MiB\"\n[[endpoint]]\nname = \"hub\"\n\
         max_batch_records = {BATCH}\nprotocol = \"kafka\"\nbootstrap = \"{bootstrap}\"\ntopic = \"{TOPIC}\"\n"
    );
    let config = twinhub::SdkConfig::from_toml_str(&toml).expect("config");
    rt.block_on(twinhub::Producer::builder(config).build())
        .expect("producer")
}

fn send_all(rt: &tokio::runtime::Runtime, p: &twinhub::Producer) {
    rt.block_on(async {
        let mut tickets = Vec::with_capacity(SDK_RECORDS);
        for _ in 0..SDK_RECORDS {
            tickets.push(
                p.submit(vec![b'x'; SIZE], twinhub::SendOptions::default())
                    .await
                    .expect("submit"),
            );
        }
        for t in tickets {
            t.await.expect("accepted");
        }
        p.flush(Duration::from_secs(60)).await.expect("delivered");
    })
}

/// What an application using rskafka directly would send: the same key, value and headers.
fn raw_batches(round: u64) -> Vec<Vec<Record>> {
    (0..SDK_RECORDS / BATCH)
        .map(|b| {
            (0..BATCH)
                .map(|i| {
                    let seq = round * SDK_RECORDS as u64 + (b * BATCH + i) as u64;
                    let headers = BTreeMap::from([
                        (
                            "message-id".to_string(),
                            format!("{DEVICE}:1:{seq}").into_bytes(),
                        ),
                        ("class".to_string(), b"normal".to_vec()),
                    ]);
                    Record {
                        key: Some(DEVICE.as_bytes().to_vec()),
                        value: Some(vec![b'x'; SIZE]),
                        headers,
                        timestamp: now(),
                    }
                })
                .collect()
        })
        .collect()
}

/// Now, as rskafka's timestamp type (its chrono comes without a clock).
fn now() -> rskafka::chrono::DateTime<rskafka::chrono::Utc> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    rskafka::chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Produces every batch, four in flight, each acknowledged.
async fn raw_produce(pc: &Arc<PartitionClient>, batches: Vec<Vec<Record>>) {
    let mut set = tokio::task::JoinSet::new();
    for batch in batches {
        if set.len() >= 4 {
            set.join_next().await;
        }
        let pc = Arc::clone(pc);
        set.spawn(async move {
            pc.produce(batch, Compression::NoCompression)
                .await
                .expect("produced");
        });
    }
    while set.join_next().await.is_some() {}
}

/// Sends every batch through the transport alone, four in flight.
async fn transport_only(t: &Arc<KafkaTransport>, batches: &[Arc<Vec<twinhub::record::Record>>]) {
    let mut set = tokio::task::JoinSet::new();
    for batch in batches {
        if set.len() >= 4 {
            set.join_next().await;
        }
        let (t, batch) = (Arc::clone(t), Arc::clone(batch));
        set.spawn(async move {
            assert_eq!(t.send(&batch).await, Outcome::Delivered);
        });
    }
    while set.join_next().await.is_some() {}
}

struct Paired {
    ours: f64,
    base: f64,
    ratio: f64,
}

/// Rounds in pairs, alternating which side goes first, so noise on a shared machine
/// falls on both sides of a pair alike.
fn interleaved(mut ours: impl FnMut(), mut base: impl FnMut()) -> Paired {
    let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let time = |f: &mut dyn FnMut()| {
        let t = std::time::Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    for round in 0..ROUNDS {
        let (x, y) = if round % 2 == 0 {
            let x = time(&mut ours);
            (x, time(&mut base))
        } else {
            let y = time(&mut base);
            (time(&mut ours), y)
        };
        a.push(x);
        b.push(y);
        ratios.push(y / x);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Paired {
        ours: SDK_RECORDS as f64 / median(a),
        base: SDK_RECORDS as f64 / median(b),
        ratio: median(ratios),
    }
}

fn sdk_kafka(c: &mut Criterion) {
    if !kafka_util::kcat_available() {
        eprintln!("kafka bench skipped: kcat is not installed (apt-get install kcat)");
        return;
    }
    let rt = runtime();
    let cluster = kafka_util::MockCluster::start(TOPIC, 1);
    let p = producer(&rt, &cluster.bootstrap);
    let pc = rt.block_on(async {
        let client = ClientBuilder::new(vec![cluster.bootstrap.clone()])
            .build()
            .await
            .expect("rskafka client");
        // The partition Kafka's default partitioner (and twinhub) picks for the key.
        let partition = partition_for(DEVICE.as_bytes(), 4) as i32;
        Arc::new(
            client
                .partition_client(TOPIC, partition, UnknownTopicHandling::Error)
                .await
                .expect("partition client"),
        )
    });
    let mut round = 0u64;
    let mut raw_round = || {
        round += 1;
        let batches = raw_batches(round);
        rt.block_on(raw_produce(&pc, batches));
    };
    let mut g = c.benchmark_group("kafka_sdk_1000");
    g.throughput(Throughput::Elements(SDK_RECORDS as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("twinhub", |b| b.iter(|| send_all(&rt, &p)));
    g.bench_function("baseline", |b| b.iter(&mut raw_round));
    g.finish();
    let paired = interleaved(|| send_all(&rt, &p), &mut raw_round);
    rows("Kafka whole SDK vs rskafka", &paired);

    let spec = match &twinhub::SdkConfig::from_toml_str(&format!(
        "device_id = \"{DEVICE}\"\n[[endpoint]]\nname = \"hub\"\nprotocol = \"kafka\"\n\
         bootstrap = \"{}\"\ntopic = \"{TOPIC}\"\n",
        cluster.bootstrap
    ))
    .expect("config")
    .endpoints[0]
        .protocol
    {
        twinhub::spec::ProtocolSpec::Kafka(k) => k.clone(),
        _ => unreachable!("a kafka endpoint"),
    };
    let t = Arc::new(
        KafkaTransport::new(
            &spec,
            &transport_util::device(DEVICE),
            None,
            transport_util::tls(),
            Duration::from_secs(10),
        )
        .expect("transport"),
    );
    let batches: Vec<_> = (0..SDK_RECORDS / BATCH)
        .map(|b| {
            Arc::new(transport_util::records(
                DEVICE,
                2,
                (b * BATCH) as u64,
                BATCH,
                SIZE,
            ))
        })
        .collect();
    let floor_round = || rt.block_on(transport_only(&t, &batches));
    let mut g = c.benchmark_group("kafka_sdk_1000_vs_transport");
    g.throughput(Throughput::Elements(SDK_RECORDS as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("twinhub", |b| b.iter(|| send_all(&rt, &p)));
    g.bench_function("baseline", |b| b.iter(floor_round));
    g.finish();
    let paired = interleaved(|| send_all(&rt, &p), floor_round);
    rows("Kafka whole SDK vs its transport alone", &paired);
    assert_eq!(p.stats().stats.pending, 0);
}

fn rows(name: &str, p: &Paired) {
    println!(
        "ROW\t{name}, rec/s (median of {ROUNDS})\t{:.0}\t{:.0}\trec/s",
        p.ours, p.base
    );
    println!(
        "ROW\t{name}, median ratio of {ROUNDS} paired rounds\t{:.3}\t1\tx",
        p.ratio
    );
}

criterion_group!(benches, sdk_kafka);
criterion_main!(benches);
