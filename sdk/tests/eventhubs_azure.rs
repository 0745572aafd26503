//! Event Hubs as Azure documents it, against the emulator: 503 ("server busy") and 403
//! (quota, size, rights) classified as the service means them, and the retries and
//! failovers that follow.

use std::time::Duration;

use twinhub::SdkConfig;
use twinhub::transport::build;
use twinhub::{Outcome, Producer, RejectReason};
use twinhub_emulator::{Emulator, EmulatorConfig, Fault, Forbidden};
use twinhub_testkit::*;

async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator starts")
}

/// Two Event Hubs endpoints, one per region, with `extra` TOML at the top level.
fn two_regions(emu: &Emulator, device: &str, extra: &str) -> SdkConfig {
    let (p, s) = (
        emu["primary"].event_hubs_connection_string(),
        emu["secondary"].event_hubs_connection_string(),
    );
    SdkConfig::from_toml_str(&format!(
        r#"device_id = "{device}"
{extra}
[[endpoint]]
name = "primary"
protocol = "event-hubs"
connection_string = "{p}"
[[endpoint]]
name = "secondary"
protocol = "event-hubs"
connection_string = "{s}"
"#
    ))
    .expect("config")
}

/// Polls `ok` every 50 ms until it holds or `timeout` passes: waits for evidence, not time.
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

#[tokio::test]
async fn forbidden_is_classified_by_its_body() {
    let emu = emulator().await;
    let r = &emu["primary"];
    let spec = event_hubs(
        &r.http_addr().to_string(),
        r.event_hub(),
        r.key_name(),
        r.key(),
    );
    let t = build(&spec, &link(None), &device("dev"), tls()).unwrap();
    let batch = records("dev", 1, 0, 3, 16);
    for (reason, want) in [
        (
            Forbidden::QuotaExceeded,
            Outcome::Throttled { retry_after: None },
        ),
        (
            Forbidden::MessageTooLarge,
            Outcome::Rejected(RejectReason::TooLarge),
        ),
        (Forbidden::Denied, Outcome::Unauthorized),
    ] {
        r.set_fault(Fault::Http403 { reason });
        assert_eq!(t.send(&batch).await, want, "{reason:?}");
    }
    r.set_fault(Fault::Up);
    assert_eq!(t.send(&batch).await, Outcome::Delivered);
}

/// A 503 storm on the primary: the producer backs off there (at least 4 s between tries)
/// and does not fail over while the storm is shorter than `throttle_failover_after`
/// (60 s by default). Before 503 meant "server busy", three 503s took the region down
/// within about a second and every record went to the secondary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_busy_backs_off_on_the_same_region() {
    let emu = emulator().await;
    let p = Producer::builder(two_regions(&emu, "busy-dev", ""))
        .build()
        .await
        .unwrap();
    let switch = emu["primary"].switch().clone();
    emu["primary"].set_fault(Fault::Http503);
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            p.send(format!("r{i}").into_bytes())
                .await
                .unwrap()
                .to_string(),
        );
    }
    assert!(
        wait_until(Duration::from_secs(30), || switch.injected_statuses() >= 1).await,
        "the primary was never asked"
    );
    let first = tokio::time::Instant::now();
    // Three refusals need two back-offs of at least 4 s each.
    assert!(
        wait_until(Duration::from_secs(60), || switch.injected_statuses() >= 3).await,
        "only {} refusals",
        switch.injected_statuses()
    );
    let took = first.elapsed();
    assert!(
        took >= Duration::from_secs(7),
        "three 503s in {took:?}: the back-off is under 4 s"
    );
    assert_eq!(p.stats().stats.failovers, 0, "server busy is not an outage");
    assert!(
        emu["secondary"].ids().is_empty(),
        "nothing went to the secondary"
    );
    emu["primary"].set_fault(Fault::Up);
    p.flush(Duration::from_secs(60)).await.unwrap();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    emu["primary"]
        .wait_for_ids(&refs, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(p.stats().stats.failovers, 0);
}

/// A 503 storm that outlasts `throttle_failover_after` does fail over, and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_busy_past_throttle_failover_after_fails_over() {
    let emu = emulator().await;
    let config = two_regions(
        &emu,
        "busy-long",
        "[timings]\nthrottle_failover_after = \"6s\"",
    );
    let p = Producer::builder(config).build().await.unwrap();
    let switch = emu["primary"].switch().clone();
    emu["primary"].set_fault(Fault::Http503);
    let id = p.send(b"kept".to_vec()).await.unwrap().to_string();
    assert!(wait_until(Duration::from_secs(30), || switch.injected_statuses() >= 1).await);
    let first = tokio::time::Instant::now();
    emu["secondary"]
        .wait_for_ids(&[id.as_str()], Duration::from_secs(60))
        .await
        .unwrap();
    let took = first.elapsed();
    assert!(
        took >= Duration::from_secs(5),
        "failed over {took:?} after the first 503, before throttle_failover_after"
    );
    // The stats snapshot is published after the transmit is handed to its task, so the
    // record can reach the secondary first: wait for the snapshot, not for luck.
    assert!(wait_until(Duration::from_secs(10), || p.stats().stats.failovers >= 1).await);
    assert_eq!(p.stats().stats.failovers, 1);
}

/// Each event carries `PartitionKey` = its device id by default, so Event Hubs keeps a
/// device's events on one partition, the same number in both regions; `partition_key =
/// "none"` leaves it out. Before, no event had a partition key.
#[tokio::test]
async fn partition_key_is_the_device_id_unless_turned_off() {
    let emu = emulator().await;
    let cs = emu["primary"].event_hubs_connection_string();
    for (epoch, (setting, want)) in (1..).zip([
        ("", Some("meter-7")),
        ("partition_key = \"device\"", Some("meter-7")),
        ("partition_key = \"none\"", None),
    ]) {
        let config = SdkConfig::from_toml_str(&format!(
            "device_id = \"meter-7\"\n[[endpoint]]\nname = \"eh\"\nprotocol = \"event-hubs\"\n\
             connection_string = \"{cs}\"\n{setting}\n"
        ))
        .unwrap();
        let twinhub::spec::ProtocolSpec::EventHubs(spec) = &config.endpoints[0].protocol else {
            panic!("event hubs");
        };
        assert_eq!(
            spec.partition_key,
            if want.is_some() {
                twinhub::spec::PartitionKey::Device
            } else {
                twinhub::spec::PartitionKey::None
            }
        );
        let t = build(&config.endpoints[0], &link(None), &device("meter-7"), tls()).unwrap();
        // A new epoch per setting: each round's ids are its own.
        let batch = records("meter-7", epoch, 0, 4, 8);
        assert_eq!(t.send(&batch).await, Outcome::Delivered);
        let got = emu["primary"]
            .wait_for_ids(&ids(&batch), Duration::from_secs(10))
            .await
            .unwrap();
        for r in got
            .iter()
            .filter(|r| ids(&batch).contains(r.message_id.as_ref().unwrap()))
        {
            assert_eq!(r.partition_key.as_deref(), want, "{setting:?}");
        }
    }
    let err = SdkConfig::from_toml_str(&format!(
        "device_id = \"d\"\n[[endpoint]]\nname = \"eh\"\nprotocol = \"event-hubs\"\n\
         connection_string = \"{cs}\"\npartition_key = \"random\"\n"
    ))
    .unwrap_err();
    assert_eq!(err.key.as_deref(), Some("endpoint[0].partition_key"));
    assert!(err.to_string().contains("device | none"), "{err}");
}

/// A namespace-level connection string (a namespace policy's: no `EntityPath`) sends to
/// the hub named beside it. Before, it was refused as "missing EntityPath".
#[tokio::test]
async fn namespace_level_connection_string_with_a_named_hub() {
    let emu = emulator().await;
    let r = &emu["primary"];
    let entity = format!(";EntityPath={}", r.event_hub());
    let cs = r.event_hubs_connection_string();
    assert!(cs.contains(&entity), "{cs}");
    let namespace = cs.replace(&entity, "");
    let toml = |hub: &str| {
        format!(
            "device_id = \"ns-dev\"\n[[endpoint]]\nname = \"eh\"\nprotocol = \"event-hubs\"\n\
             connection_string = \"{namespace}\"\n{hub}\n"
        )
    };
    let config = SdkConfig::from_toml_str(&toml(&format!("hub = \"{}\"", r.event_hub()))).unwrap();
    let t = build(&config.endpoints[0], &link(None), &device("ns-dev"), tls()).unwrap();
    let batch = records("ns-dev", 1, 0, 3, 8);
    assert_eq!(t.send(&batch).await, Outcome::Delivered);
    let got = r
        .wait_for_ids(&ids(&batch), Duration::from_secs(10))
        .await
        .unwrap();
    assert!(got.iter().all(|x| x.target == r.event_hub()));

    // Without `hub`, the message says what is missing and how to name it.
    let err = SdkConfig::from_toml_str(&toml("")).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("endpoint[0].connection_string"));
    let text = err.to_string();
    assert!(
        text.contains("names no event hub") && text.contains("hub = "),
        "{text}"
    );
    assert!(!text.contains(r.key()), "never the key: {text}");
    // A `hub` that contradicts EntityPath is refused.
    let err = SdkConfig::from_toml_str(&format!(
        "device_id = \"d\"\n[[endpoint]]\nname = \"eh\"\nprotocol = \"event-hubs\"\n\
         connection_string = \"{cs}\"\nhub = \"another\"\n"
    ))
    .unwrap_err();
    assert!(
        err.to_string().contains("EntityPath naming another"),
        "{err}"
    );
    // `hub` belongs to Event Hubs (and Kafka on Event Hubs) only.
    let err = SdkConfig::from_toml_str(
        "device_id = \"d\"\n[[endpoint]]\nname = \"m\"\nprotocol = \"mqtt\"\n\
         url = \"mqtt://127.0.0.1:1883\"\ntopic = \"t\"\nhub = \"x\"\n",
    )
    .unwrap_err();
    assert_eq!(err.key.as_deref(), Some("endpoint[0].hub"));
}

/// An IoT Hub `x509=true` device string without its certificate is refused with a message
/// naming the missing `client_cert`, instead of "missing SharedAccessKey".
#[test]
fn x509_connection_strings_without_a_certificate_are_refused_clearly() {
    let err = SdkConfig::from_toml_str(
        "device_id = \"d\"\n[[endpoint]]\nname = \"hub\"\nprotocol = \"iot-hub\"\n\
         connection_string = \"HostName=h.azure-devices.net;DeviceId=d;x509=true\"\n",
    )
    .unwrap_err();
    let text = err.to_string();
    // X.509 needs its certificate: the error names the setting to add.
    assert!(text.contains("client_cert"), "{text}");
    assert!(!text.contains("missing SharedAccessKey"), "{text}");
}

/// A device id whose message ids (`{device}:{epoch}:{seq}`, up to 32 characters after the
/// device) could pass Azure's 128-character `MessageId` limit is refused when the config
/// is read and when a producer is built, naming the problem; 96 characters pass. Before,
/// such ids were sent, and Azure would refuse them once epoch and sequence grew.
#[tokio::test]
async fn device_ids_whose_message_ids_could_pass_128_characters_are_refused() {
    let emu = emulator().await;
    let cs = emu["primary"].event_hubs_connection_string();
    let toml = |dev: &str, protocol: &str| match protocol {
        "event-hubs" => format!(
            "device_id = \"{dev}\"\n[[endpoint]]\nname = \"eh\"\nprotocol = \"event-hubs\"\n\
             connection_string = \"{cs}\"\n"
        ),
        _ => format!(
            "device_id = \"{dev}\"\n[[endpoint]]\nname = \"m\"\nprotocol = \"mqtt\"\n\
             url = \"mqtt://127.0.0.1:1883\"\ntopic = \"t\"\n"
        ),
    };
    let long = "d".repeat(97);
    let err = SdkConfig::from_toml_str(&toml(&long, "event-hubs")).unwrap_err();
    assert_eq!(err.kind, twinhub::config::ErrorKind::Invalid);
    assert_eq!(err.key.as_deref(), Some("device_id"));
    let text = err.to_string();
    assert!(
        text.contains("97 characters") && text.contains("128-character MessageId"),
        "{text}"
    );
    assert!(SdkConfig::from_toml_str(&toml(&"d".repeat(96), "event-hubs")).is_ok());
    // MQTT carries the id in a user property with no such limit.
    let mqtt = SdkConfig::from_toml_str(&toml(&long, "mqtt")).unwrap();

    // A config made in code is checked when the producer is built.
    let mut config = mqtt;
    config.endpoints = SdkConfig::from_toml_str(&toml("d", "event-hubs"))
        .unwrap()
        .endpoints;
    let err = Producer::builder(config).build().await.unwrap_err();
    assert!(err.to_string().contains("128-character MessageId"), "{err}");
}

/// Through a producer: a 403 "message too large" drops the record (counted as too
/// large, health untouched, no failover); a 403 "quota exceeded" keeps it and backs off
/// on the same region until the quota frees up. Before, both were retried as throttling
/// for 60 s and then failed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_size_drops_the_record_and_quota_backs_off() {
    let emu = emulator().await;
    let p = Producer::builder(two_regions(&emu, "forbidden-dev", ""))
        .build()
        .await
        .unwrap();
    let switch = emu["primary"].switch().clone();
    emu["primary"].set_fault(Fault::Http403 {
        reason: Forbidden::MessageTooLarge,
    });
    p.send(b"too large, says the hub".to_vec()).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || p
            .stats()
            .stats
            .dropped
            .too_large
            == 1)
        .await,
        "{:?}",
        p.stats().stats
    );
    assert_eq!(p.stats().stats.failovers, 0);

    let before = switch.injected_statuses();
    emu["primary"].set_fault(Fault::Http403 {
        reason: Forbidden::QuotaExceeded,
    });
    let id = p.send(b"kept".to_vec()).await.unwrap().to_string();
    assert!(
        wait_until(Duration::from_secs(30), || switch.injected_statuses()
            > before)
        .await
    );
    emu["primary"].set_fault(Fault::Up);
    emu["primary"]
        .wait_for_ids(&[id.as_str()], Duration::from_secs(30))
        .await
        .unwrap();
    let stats = p.stats().stats;
    assert_eq!(
        (stats.failovers, stats.dropped.too_large),
        (0, 1),
        "{stats:?}"
    );
    assert!(emu["secondary"].ids().is_empty());
}

/// Kafka on Event Hubs takes the same `hub` beside a namespace-level connection string
/// (the topic) and the same `partition_key`; a plain Kafka cluster has no `hub`.
#[test]
fn kafka_on_event_hubs_takes_hub_and_partition_key() {
    let ns = "Endpoint=sb://ns-east.servicebus.windows.net/;SharedAccessKeyName=send;\
              SharedAccessKey=a2V5";
    let config = SdkConfig::from_toml_str(&format!(
        "device_id = \"d\"\n[[endpoint]]\nname = \"k\"\nprotocol = \"kafka\"\n\
         connection_string = \"{ns}\"\nhub = \"telemetry\"\npartition_key = \"none\"\n"
    ))
    .unwrap();
    let twinhub::spec::ProtocolSpec::Kafka(k) = &config.endpoints[0].protocol else {
        panic!("kafka");
    };
    assert_eq!(k.topic, "telemetry");
    assert_eq!(k.partition_key, twinhub::spec::PartitionKey::None);
    assert!(k.event_hubs);

    let err = SdkConfig::from_toml_str(
        "device_id = \"d\"\n[[endpoint]]\nname = \"k\"\nprotocol = \"kafka\"\n\
         bootstrap = \"127.0.0.1:9092\"\ntopic = \"t\"\nhub = \"x\"\n",
    )
    .unwrap_err();
    assert_eq!(err.key.as_deref(), Some("endpoint[0].hub"));
    assert!(err.to_string().contains("`topic`"), "{err}");
}
