//! `SdkConfig::builder()` against the TOML file: every example config built in code equals
//! the parsed file, and a mistake made either way is the same error (kind, key, message).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use twinhub::SdkConfig;
use twinhub::config::{ConfigError, EndpointBuilder, KafkaSecurity, LinkBuilder, SecretSource};
use twinhub::spec::{Bind, Fsync, MqttVersion, SaslMechanism};
use twinhub::{Budget, Class, ClassSet, Cost, EngineDuration, OnFull, Routing, Timings};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config")
}

/// The environment the examples' `_env` secrets come from.
fn env(var: &str) -> Option<String> {
    Some(format!("value of {var}"))
}

const EH_EAST: &str = "Endpoint=sb://ns-east.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=...;EntityPath=telemetry";
const EMU_KEY: &str = "SharedAccessKeyName=send;SharedAccessKey=ZW11bGF0b3Ita2V5;EntityPath=telemetry;UseDevelopmentEmulator=true";

fn design() -> Result<SdkConfig, ConfigError> {
    SdkConfig::builder("sensor-0001")
        .routing(Routing::ActivePassive)
        .outbox_path("/var/lib/twinhub/sensor-0001")
        .outbox_max_bytes(256 << 20)
        .outbox_on_full(OnFull::Evict)
        .outbox_fsync(Fsync::Batch)
        .endpoint(EndpointBuilder::event_hubs("primary", EH_EAST))
        .endpoint(EndpointBuilder::mqtt(
            "secondary",
            "mqtts://broker.central.example:8883",
            "telemetry/{device_id}",
        ))
        .link(LinkBuilder::new("wan", Cost::Free))
        .link(
            LinkBuilder::new("satellite", Cost::Costly)
                .budget(Budget {
                    bytes: 2 << 20,
                    window: EngineDuration::from_days(1),
                })
                .allow(ClassSet::only(Class::Critical))
                .arm_after(Duration::from_secs(15 * 60)),
        )
        .build_with_env(env)
}

fn active_active() -> Result<SdkConfig, ConfigError> {
    let iot =
        |name: &str, var: &str| EndpointBuilder::iot_hub(name, SecretSource::env(var)).weight(50);
    SdkConfig::builder("gateway-17")
        .routing(Routing::ActiveActive)
        .outbox_path("/var/lib/twinhub/gateway-17")
        .outbox_max_bytes(1 << 30)
        .outbox_on_full(OnFull::Evict)
        .outbox_fsync(Fsync::Always)
        .endpoint(iot("weu", "TWINHUB_WEU_CONNECTION_STRING"))
        .endpoint(iot("neu", "TWINHUB_NEU_CONNECTION_STRING"))
        .link(LinkBuilder::new("wired", Cost::Free).bind(Bind::Interface("eth0".into())))
        .link(
            LinkBuilder::new("cell", Cost::Metered)
                .bind(Bind::Interface("wwan0".into()))
                .allow(ClassSet::only(Class::Critical).with(Class::Normal)),
        )
        .ttl(Class::Bulk, Duration::from_secs(86_400))
        // The file's `_env` values are connection strings only in production; here any
        // text would do, but IoT Hub's parser checks them, so supply well-formed ones.
        .build_with_env(iot_env)
}

fn iot_env(var: &str) -> Option<String> {
    Some(format!(
        "HostName={}.azure-devices.net;DeviceId=gateway-17;SharedAccessKey=c2VjcmV0",
        var.to_ascii_lowercase().replace('_', "-")
    ))
}

fn emulator() -> Result<SdkConfig, ConfigError> {
    let timings = Timings {
        trip_after: EngineDuration::from_secs(2),
        min_dwell: EngineDuration::from_secs(10),
        ..Timings::default()
    };
    SdkConfig::builder("dev-0001")
        .routing(Routing::ActivePassive)
        .endpoint(EndpointBuilder::event_hubs(
            "east",
            format!("Endpoint=sb://127.0.0.1:7101/;{EMU_KEY}"),
        ))
        .endpoint(EndpointBuilder::event_hubs(
            "west",
            format!("Endpoint=sb://127.0.0.1:7201/;{EMU_KEY}"),
        ))
        .timings(timings)
        .build_with_env(env)
}

fn http() -> Result<SdkConfig, ConfigError> {
    SdkConfig::builder("meter-42")
        .endpoint(
            EndpointBuilder::mqtt(
                "broker",
                "mqtts://mqtt.example:8883",
                "meters/{device_id}/readings",
            )
            .version(MqttVersion::V311)
            .username("meter-42")
            .password(SecretSource::env("TWINHUB_MQTT_PASSWORD"))
            .keep_alive(Duration::from_secs(60)),
        )
        .endpoint(
            EndpointBuilder::http("ingest", "https://ingest.example/v1/batch")
                .max_batch_bytes(1 << 20)
                .max_batch_records(200)
                .header("Authorization", SecretSource::file("ingest-token.txt"))
                .header("X-Tenant", "acme"),
        )
        .build_with_env(env)
}

/// An example file, its builder twin, and the environment both read secrets from.
type Twin = (
    &'static str,
    fn() -> Result<SdkConfig, ConfigError>,
    fn(&str) -> Option<String>,
);

#[test]
fn every_example_config_built_in_code_equals_the_parsed_file() {
    let built: [Twin; 4] = [
        ("active-active.toml", active_active, iot_env),
        ("design.toml", design, env),
        ("emulator.toml", emulator, env),
        ("http.toml", http, env),
    ];
    // A new example needs its builder twin here.
    let files: BTreeSet<String> = std::fs::read_dir(examples())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    let covered: BTreeSet<String> = built.iter().map(|(f, _, _)| f.to_string()).collect();
    assert_eq!(files, covered, "every example config needs a builder twin");

    // http.toml reads its token from a relative path; both ways resolve it from the working
    // directory (no other test in this binary depends on it).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ingest-token.txt"), "Bearer t0ken\n").unwrap();
    std::env::set_current_dir(dir.path()).unwrap();

    for (file, build, env) in built {
        let text = std::fs::read_to_string(examples().join(file)).unwrap();
        let parsed =
            SdkConfig::from_toml_str_with_env(&text, env).unwrap_or_else(|e| panic!("{file}: {e}"));
        let made = build().unwrap_or_else(|e| panic!("{file} in code: {e}"));
        assert_eq!(made, parsed, "{file}");
    }
}

#[test]
fn defaults_are_the_files_defaults() {
    let file = "device_id = \"d\"\n[[endpoint]]\nname = \"m\"\nprotocol = \"mqtt\"\n\
                url = \"mqtt://127.0.0.1:1883\"\ntopic = \"t\"\n";
    let parsed = SdkConfig::from_toml_str_with_env(file, env).unwrap();
    let made = SdkConfig::builder("d")
        .endpoint(EndpointBuilder::mqtt("m", "mqtt://127.0.0.1:1883", "t"))
        .build()
        .unwrap();
    assert_eq!(made, parsed);
}

/// A file with `device_id = "d"` and `body`.
fn file_err(body: &str) -> ConfigError {
    let text = format!("device_id = \"d\"\n{body}");
    SdkConfig::from_toml_str_with_env(&text, |_| None).expect_err(body)
}

/// The builder's error must be the file's, less the line. (A message quoting a value
/// quotes it as the builder spells it, so the files below spell values that way.)
fn same(body: &str, built: Result<SdkConfig, ConfigError>) {
    let mut from_file = file_err(body);
    let from_code = built.expect_err(body);
    assert!(from_file.line.is_some(), "{from_file}");
    from_file.line = None;
    assert_eq!(from_code, from_file, "{body}");
}

const MQTT: &str = "[[endpoint]]\nname = \"m\"\nprotocol = \"mqtt\"\nurl = \"mqtt://127.0.0.1:1883\"\ntopic = \"t\"\n";

fn mqtt() -> EndpointBuilder {
    EndpointBuilder::mqtt("m", "mqtt://127.0.0.1:1883", "t")
}

#[test]
fn mistakes_are_the_same_errors_either_way() {
    let no_env = |_: &str| None;
    let b = || SdkConfig::builder("d");
    same(
        "[[endpoint]]\nname = \"m\"\nprotocol = \"mqtt\"\nurl = \"mqtt://h\"\ntopic = \"a/#\"\n",
        b().endpoint(EndpointBuilder::mqtt("m", "mqtt://h", "a/#"))
            .build(),
    );
    same(
        "[[endpoint]]\nname = \"m\"\nprotocol = \"mqtt\"\nurl = \"http://h\"\ntopic = \"t\"\n",
        b().endpoint(EndpointBuilder::mqtt("m", "http://h", "t"))
            .build(),
    );
    same(
        &format!("{MQTT}{}", MQTT.replace("\"t\"", "\"u\"")),
        b().endpoint(mqtt())
            .endpoint(EndpointBuilder::mqtt("m", "mqtt://127.0.0.1:1883", "u"))
            .build(),
    );
    same(
        &format!("[outbox]\npath = \"/a\"\nstate_dir = \"/b\"\n{MQTT}"),
        b().outbox_path("/a")
            .outbox_state_dir("/b")
            .endpoint(mqtt())
            .build(),
    );
    same(
        &format!("{MQTT}keep_alive = \"1500ms\"\n"),
        b().endpoint(mqtt().keep_alive(Duration::from_millis(1500)))
            .build(),
    );
    same(
        &format!("{MQTT}max_batch_records = 0\n"),
        b().endpoint(mqtt().max_batch_records(0)).build(),
    );
    same(
        &format!("{MQTT}password_env = \"NOT_SET\"\n"),
        b().endpoint(mqtt().password(SecretSource::env("NOT_SET")))
            .build_with_env(no_env),
    );
    // A key for another protocol.
    same(
        "[[endpoint]]\nname = \"h\"\nprotocol = \"http\"\nurl = \"https://h/x\"\nkeep_alive = \"5s\"\n",
        b().endpoint(EndpointBuilder::http("h", "https://h/x").keep_alive(Duration::from_secs(5)))
            .build(),
    );
    same(
        "[[endpoint]]\nname = \"k\"\nprotocol = \"kafka\"\nbootstrap = \"h:9092\"\ntopic = \"t\"\nsasl_mechanism = \"plain\"\nusername = \"u\"\npassword = \"p\"\n",
        b().endpoint(
            EndpointBuilder::kafka("k", "h:9092", "t")
                .sasl_mechanism(SaslMechanism::Plain)
                .username("u")
                .password("p"),
        )
        .build(),
    );
    same(
        "[[endpoint]]\nname = \"k\"\nprotocol = \"kafka\"\nbootstrap = \"h:9092\"\ntopic = \"t\"\nsecurity_protocol = \"sasl_ssl\"\nusername = \"u\"\n",
        b().endpoint(
            EndpointBuilder::kafka("k", "h:9092", "t")
                .security_protocol(KafkaSecurity::SaslSsl)
                .username("u"),
        )
        .build(),
    );
    same(
        &format!("{MQTT}[[link]]\nname = \"sat\"\ncost = \"costly\"\nbudget = \"1048576/0ms\"\n"),
        b().endpoint(mqtt())
            .link(LinkBuilder::new("sat", Cost::Costly).budget(Budget {
                bytes: 1 << 20,
                window: EngineDuration::from_millis(0),
            }))
            .build(),
    );
    same(
        "[[endpoint]]\nname = \"e\"\nprotocol = \"event-hubs\"\nconnection_string = \"Endpoint=sb://h/\"\n",
        b().endpoint(EndpointBuilder::event_hubs("e", "Endpoint=sb://h/"))
            .build(),
    );
    same(
        &format!(
            "{MQTT}[[endpoint]]\nname = \"h\"\nprotocol = \"http\"\nurl = \"https://h/x\"\n[endpoint.headers]\n\"Bad Name\" = \"v\"\n"
        ),
        b().endpoint(mqtt())
            .endpoint(EndpointBuilder::http("h", "https://h/x").header("Bad Name", "v"))
            .build(),
    );
}

#[test]
fn what_a_file_cannot_say_is_refused_not_rounded() {
    let e = SdkConfig::builder("d")
        .endpoint(mqtt())
        .ttl(Class::Bulk, Duration::from_micros(1500))
        .build()
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("ttl.bulk"));
    let e = SdkConfig::builder("d")
        .endpoint(mqtt())
        .link(LinkBuilder::new("l", Cost::Free).arm_after(Duration::from_nanos(1)))
        .build()
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("link[0].arm_after"));
}

#[test]
fn a_header_set_again_replaces_the_earlier_one_and_secrets_never_show() {
    let c = SdkConfig::builder("d")
        .endpoint(
            EndpointBuilder::http("h", "https://h/x")
                .header("Authorization", SecretSource::env("TOKEN"))
                .header("Authorization", "Bearer inline-secret"),
        )
        .link(LinkBuilder::new("l", Cost::Free).bind(Bind::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST))))
        .build_with_env(|_| None)
        .unwrap();
    let twinhub::spec::ProtocolSpec::Http(h) = &c.endpoints[0].protocol else {
        panic!("{c:?}")
    };
    assert_eq!(h.headers.len(), 1);
    assert_eq!(h.headers[0].1.expose(), "Bearer inline-secret");
    let builder = EndpointBuilder::event_hubs("e", "SharedAccessKey=inline-secret");
    assert!(!format!("{builder:?} {c:?}").contains("inline-secret"));
}
