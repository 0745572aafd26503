//! Transport throughput against raw dependencies on the same servers:
//!
//! * `mqtt_qos1_batch_100`: the MQTT 5 transport sending 100 records of 256 B to a local
//!   mosquitto, against raw rumqttc publishing the same 100 QoS 1 messages (same user
//!   properties) and awaiting their PUBACKs;
//! * `event_hubs_batch_100`: the Event Hubs transport to an emulator region, against raw
//!   reqwest POSTs of an identical body with a precomputed token;
//! * `mqtt_qos1_sdk_1000` and `event_hubs_sdk_1000`: 1,000 records through the whole
//!   `Producer` (memory outbox, group commit, engine, transport) against the raw client
//!   doing the same work: 1,000 QoS 1 publishes awaiting every PUBACK, or 10 batches of
//!   100 records encoded with serde_json over derived structs (what a careful application
//!   writes, and the reference encoding the crate's own tests check its output against)
//!   and POSTed with the engine's 4 requests in flight. The bench first checks that the
//!   baseline's body is byte for byte the SDK's for the same records: the same fields,
//!   the device as partition key, no others;
//! * `event_hubs_sdk_1000_vs_preencoded`: the same, against POSTs of bodies encoded before
//!   the clock starts (the floor: reqwest and the emulator alone).
//!
//! Each whole-SDK comparison is also run with every record sent by
//! `Producer::send_confirmed` and its delivery awaited (one task per record), against the
//! same baseline.
//!
//! The whole-SDK comparisons are also printed as `ROW` lines for `cargo xtask bench`:
//! records per second, each side the median of rounds run in pairs with the other, and
//! the median of the pairs' ratios, so a burst of noise on a shared machine falls on both
//! sides alike.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::{AsyncClient, Event, Incoming, MqttOptions};
use twinhub::Outcome;
use twinhub::spec::MqttVersion;
use twinhub::transport::build;
use twinhub_testkit::*;

const BATCH: usize = 100;
const SIZE: usize = 256;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The raw rumqttc client the MQTT rows compare against: one connection, its event loop in
/// a task that reports every PUBACK.
fn raw_mqtt(
    rt: &tokio::runtime::Runtime,
    port: u16,
    client_id: &str,
    capacity: usize,
) -> (
    AsyncClient,
    tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<()>>,
) {
    rt.block_on(async {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_request_channel_capacity(capacity);
        let (client, mut el) = AsyncClient::new(o, capacity);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Incoming::PubAck(_))) => {
                        if tx.send(()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        (client, tokio::sync::Mutex::new(rx))
    })
}

fn mqtt(c: &mut Criterion) {
    let rt = runtime();
    let broker = Mosquitto::start();
    let batch = records("bench", 1, 0, BATCH, SIZE);
    let spec = twinhub_testkit::mqtt(broker.addr(), "bench/{device_id}", MqttVersion::V5);
    let t = build(&spec, &link(None), &device("bench"), tls()).expect("transport");

    // The raw client: one connection, its event loop in a task that counts PUBACKs.
    let (client, acks) = raw_mqtt(&rt, broker.port, "bench-raw", BATCH);
    let raw: Vec<(String, Vec<u8>, PublishProperties)> = batch
        .iter()
        .map(|r| {
            let mut props = vec![("message-id".to_string(), r.id.to_string())];
            props.extend(r.properties.iter().cloned());
            (
                "bench/bench".to_string(),
                r.body.to_vec(),
                PublishProperties {
                    user_properties: props,
                    ..Default::default()
                },
            )
        })
        .collect();

    let mut g =
        c.benchmark_group("mqtt_qos1_batch_100 (baseline: rumqttc, the same 100 publishes)");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("twinhub", |b| {
        b.iter(|| {
            let o = rt.block_on(t.send(&batch));
            assert_eq!(o, Outcome::Delivered);
        })
    });
    g.bench_function("baseline", |b| {
        b.iter(|| {
            rt.block_on(async {
                for (topic, body, props) in &raw {
                    client
                        .publish_with_properties(
                            topic.clone(),
                            QoS::AtLeastOnce,
                            false,
                            body.clone(),
                            props.clone(),
                        )
                        .await
                        .expect("publish");
                }
                let mut acks = acks.lock().await;
                for _ in 0..BATCH {
                    acks.recv().await.expect("puback");
                }
            })
        })
    });
    g.finish();
}

fn event_hubs(c: &mut Criterion) {
    let rt = runtime();
    let emu = rt
        .block_on(twinhub_emulator::Emulator::start(
            twinhub_emulator::EmulatorConfig::default(),
        ))
        .expect("emulator");
    let region = &emu["primary"];
    let batch = records("bench", 1, 0, BATCH, SIZE);
    let spec = twinhub_testkit::event_hubs(
        &region.http_addr().to_string(),
        region.event_hub(),
        region.key_name(),
        region.key(),
    );
    let t = build(&spec, &link(None), &device("bench"), tls()).expect("transport");

    let url = format!(
        "{}/{}/messages?api-version=2014-01",
        region.http_url(),
        region.event_hub()
    );
    let token = region.sas_token(Duration::from_secs(3600));
    let body = twinhub::transport::eventhubs::encode_batch(&batch).expect("body");
    let raw = reqwest::Client::builder().build().expect("client");

    let mut g = c.benchmark_group("event_hubs_batch_100 (baseline: reqwest POST of the same body)");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("twinhub", |b| {
        b.iter(|| {
            let o = rt.block_on(t.send(&batch));
            assert_eq!(o, Outcome::Delivered);
        })
    });
    g.bench_function("baseline", |b| {
        b.iter(|| {
            rt.block_on(async {
                let resp = raw
                    .post(&url)
                    .header("content-type", "application/vnd.microsoft.servicebus.json")
                    .header("authorization", &token)
                    .body(body.clone())
                    .send()
                    .await
                    .expect("post");
                assert_eq!(resp.status().as_u16(), 201);
                let _ = resp.bytes().await;
            })
        })
    });
    g.finish();
    // The emulator keeps every record; forget them so memory stays flat across groups.
    region.reset();
}

const SDK_RECORDS: usize = 1000;
/// Paired rounds behind each `ROW` line.
const ROUNDS: usize = 61;

/// Both sides of a whole-SDK comparison, from rounds run in pairs.
struct Paired {
    /// Records per second of each side: the median round.
    ours: f64,
    base: f64,
    /// The median over pairs of (baseline round time / our round time).
    ratio: f64,
}

/// Runs `ours` and `base` in [`ROUNDS`] pairs, alternating which goes first. A pair takes
/// tens of milliseconds, so a burst of noise on a shared machine mostly falls on both of
/// its rounds alike; the median of the pairs' ratios is then steadier than the ratio of
/// the two sides' medians.
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

/// Prints a comparison as two `ROW` lines: the rates, and the paired ratio.
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

/// A producer with one endpoint, batches of 100, memory outbox.
fn producer(rt: &tokio::runtime::Runtime, endpoint: &str) -> twinhub::Producer {
    let toml = format!(
        "device_id = \"bench\"\n[outbox]\nmax_bytes = \"64MiB\"\n[[endpoint]]\nname = \"hub\"\nmax_batch_records = 100\n{endpoint}"
    );
    let config = twinhub::SdkConfig::from_toml_str(&toml).expect("config");
    rt.block_on(twinhub::Producer::builder(config).build())
        .expect("producer")
}

/// Sends `SDK_RECORDS` records of `SIZE` bytes through `p` and waits until all are delivered.
fn send_all(rt: &tokio::runtime::Runtime, p: &twinhub::Producer) {
    rt.block_on(async {
        let mut tickets = Vec::with_capacity(SDK_RECORDS);
        for _ in 0..SDK_RECORDS {
            let t = p
                .submit(vec![b'x'; SIZE], twinhub::SendOptions::default())
                .await
                .expect("submit");
            tickets.push(t);
        }
        for t in tickets {
            t.await.expect("accepted");
        }
        p.flush(Duration::from_secs(60)).await.expect("delivered");
    })
}

/// As [`send_all`], each record with [`twinhub::Producer::send_confirmed`] from its own
/// task (as an application awaiting each delivery would), waiting for every confirmation.
fn send_all_confirmed(rt: &tokio::runtime::Runtime, p: &twinhub::Producer) {
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..SDK_RECORDS {
            let p = p.clone();
            set.spawn(async move {
                let ticket = p
                    .send_confirmed(vec![b'x'; SIZE], twinhub::SendOptions::default())
                    .await
                    .expect("accepted");
                ticket.await.expect("delivered");
            });
        }
        while let Some(done) = set.join_next().await {
            done.expect("sender task");
        }
    })
}

fn sdk_mqtt(c: &mut Criterion) {
    let rt = runtime();
    // Without nodelay the broker's last PUBACK of a burst waits for a delayed ACK (~40 ms),
    // which a producer sending batch after batch pays every time.
    let broker = Mosquitto::start_with("allow_anonymous true\nset_tcp_nodelay true\n");
    let p = producer(
        &rt,
        &format!(
            "protocol = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{}\"\ntopic = \"bench/{{device_id}}\"\n",
            broker.port
        ),
    );
    let (client, acks) = raw_mqtt(&rt, broker.port, "bench-raw-sdk", SDK_RECORDS);
    let mut g = c.benchmark_group("mqtt_qos1_sdk_1000 (baseline: rumqttc, 1000 publishes)");
    g.throughput(Throughput::Elements(SDK_RECORDS as u64));
    g.sample_size(10);
    let raw_round = || {
        rt.block_on(async {
            for i in 0..SDK_RECORDS {
                let props = PublishProperties {
                    user_properties: vec![("message-id".into(), format!("bench:1:{i}"))],
                    ..Default::default()
                };
                client
                    .publish_with_properties(
                        "bench/bench",
                        QoS::AtLeastOnce,
                        false,
                        vec![b'x'; SIZE],
                        props,
                    )
                    .await
                    .expect("publish");
            }
            let mut acks = acks.lock().await;
            for _ in 0..SDK_RECORDS {
                acks.recv().await.expect("puback");
            }
        })
    };
    g.bench_function("twinhub", |b| b.iter(|| send_all(&rt, &p)));
    g.bench_function("baseline", |b| b.iter(raw_round));
    g.finish();
    let paired = interleaved(|| send_all(&rt, &p), raw_round);
    rows("MQTT QoS 1 whole SDK vs rumqttc", &paired);
    let paired = interleaved(|| send_all_confirmed(&rt, &p), raw_round);
    rows("MQTT QoS 1 whole SDK, send_confirmed, vs rumqttc", &paired);
    assert_eq!(p.stats().stats.pending, 0);
}

fn sdk_event_hubs(c: &mut Criterion) {
    let rt = runtime();
    let emu = rt
        .block_on(twinhub_emulator::Emulator::start(
            twinhub_emulator::EmulatorConfig::default(),
        ))
        .expect("emulator");
    let region = emu["primary"].clone();
    let p = producer(
        &rt,
        &format!(
            "protocol = \"event-hubs\"\nconnection_string = \"{}\"\n",
            region.event_hubs_connection_string()
        ),
    );
    let url = format!(
        "{}/{}/messages?api-version=2014-01",
        region.http_url(),
        region.event_hub()
    );
    let token = region.sas_token(Duration::from_secs(3600));
    // The records the producer sends: a body of 'x's, no properties.
    let batches: Vec<Vec<(String, Vec<u8>)>> = (0..SDK_RECORDS / BATCH)
        .map(|k| {
            (0..BATCH)
                .map(|i| (format!("bench:1:{}", k * BATCH + i), vec![b'x'; SIZE]))
                .collect()
        })
        .collect();
    // Like for like: the baseline's body is byte for byte what the SDK's encoder writes
    // for the same records (the same fields, the device as partition key).
    let same: Vec<twinhub::record::Record> = batches[0]
        .iter()
        .map(|(id, body)| twinhub::record::Record {
            id: id.parse().expect("id"),
            class: twinhub::Class::Normal,
            properties: Vec::new(),
            body: body.clone().into(),
        })
        .collect();
    assert_eq!(
        raw_batch_body(&batches[0]),
        twinhub::transport::eventhubs::encode_batch(&same).expect("body"),
        "the baseline encodes what the SDK sends"
    );
    let bodies: Vec<Vec<u8>> = batches.iter().map(|b| raw_batch_body(b)).collect();
    let raw = reqwest::Client::builder().build().expect("client");
    // The raw client as an application would write it: each batch encoded with serde_json
    // and POSTed, four requests in flight (as the engine keeps).
    let mut g =
        c.benchmark_group("event_hubs_sdk_1000 (baseline: serde_json derived structs + reqwest)");
    g.throughput(Throughput::Elements(SDK_RECORDS as u64));
    g.sample_size(10);
    g.bench_function("twinhub", |b| {
        b.iter(|| {
            send_all(&rt, &p);
            region.reset();
        })
    });
    let raw_round = || {
        let bodies = batches.iter().map(|b| raw_batch_body(b));
        rt.block_on(raw_posts(&raw, &url, &token, bodies));
        region.reset();
    };
    let sdk_round = || {
        send_all(&rt, &p);
        region.reset();
    };
    g.bench_function("baseline", |b| b.iter(raw_round));
    g.finish();
    let paired = interleaved(sdk_round, raw_round);
    rows(
        "Event Hubs whole SDK vs serde_json derived structs+reqwest",
        &paired,
    );
    let confirmed_round = || {
        send_all_confirmed(&rt, &p);
        region.reset();
    };
    let paired = interleaved(confirmed_round, raw_round);
    rows(
        "Event Hubs whole SDK, send_confirmed, vs serde_json derived structs+reqwest",
        &paired,
    );
    // The floor: the same POSTs with bodies encoded before the clock starts.
    let mut g =
        c.benchmark_group("event_hubs_sdk_1000 (baseline: reqwest POSTs of pre-encoded bodies)");
    g.throughput(Throughput::Elements(SDK_RECORDS as u64));
    g.sample_size(10);
    g.bench_function("twinhub", |b| {
        b.iter(|| {
            send_all(&rt, &p);
            region.reset();
        })
    });
    let floor_round = || {
        rt.block_on(raw_posts(&raw, &url, &token, bodies.iter().cloned()));
        region.reset();
    };
    g.bench_function("baseline", |b| b.iter(floor_round));
    g.finish();
    let paired = interleaved(sdk_round, floor_round);
    rows("Event Hubs whole SDK vs pre-encoded POSTs", &paired);
}

/// One event of an Event Hubs batch body, as derived structs.
#[derive(serde::Serialize)]
struct RawEvent<'a> {
    #[serde(rename = "Body")]
    body: String,
    #[serde(rename = "IsBodyBase64")]
    is_body_base64: bool,
    #[serde(rename = "BrokerProperties")]
    broker: RawBroker<'a>,
    #[serde(rename = "UserProperties")]
    user: RawUser<'a>,
}

#[derive(serde::Serialize)]
struct RawBroker<'a> {
    #[serde(rename = "MessageId")]
    message_id: &'a str,
    /// The device, so one device's records stay in order on one partition.
    #[serde(rename = "PartitionKey")]
    partition_key: &'a str,
}

#[derive(serde::Serialize)]
struct RawUser<'a> {
    #[serde(rename = "message-id")]
    message_id: &'a str,
}

/// An Event Hubs batch body the way an application using serde_json would build it:
/// derived structs (no `json!` values), the body in standard base64.
fn raw_batch_body(batch: &[(String, Vec<u8>)]) -> Vec<u8> {
    use base64::Engine as _;
    let events: Vec<RawEvent<'_>> = batch
        .iter()
        .map(|(id, body)| RawEvent {
            body: base64::engine::general_purpose::STANDARD.encode(body),
            is_body_base64: true,
            broker: RawBroker {
                message_id: id,
                partition_key: "bench",
            },
            user: RawUser { message_id: id },
        })
        .collect();
    serde_json::to_vec(&events).expect("json")
}

/// POSTs every body, four in flight, and checks each was accepted.
async fn raw_posts(
    raw: &reqwest::Client,
    url: &str,
    token: &str,
    bodies: impl Iterator<Item = Vec<u8>>,
) {
    let mut set = tokio::task::JoinSet::new();
    for body in bodies {
        if set.len() >= 4 {
            set.join_next().await;
        }
        let (raw, url, token) = (raw.clone(), url.to_string(), token.to_string());
        set.spawn(async move {
            let resp = raw
                .post(&url)
                .header("content-type", "application/vnd.microsoft.servicebus.json")
                .header("authorization", &token)
                .body(body)
                .send()
                .await
                .expect("post");
            assert_eq!(resp.status().as_u16(), 201);
        });
    }
    while set.join_next().await.is_some() {}
}

criterion_group!(benches, mqtt, event_hubs, sdk_mqtt, sdk_event_hubs);
criterion_main!(benches);
