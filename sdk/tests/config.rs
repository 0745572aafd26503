//! Configuration files: the documented format parses to the expected values, every mistake
//! is an error naming its key and line, secrets come from the environment or files and
//! never show, and the engine configuration carries the right limits and budgets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use twinhub::SdkConfig;
use twinhub::config::{ConfigError, ErrorKind};
use twinhub::spec::{Bind, Fsync, MqttVersion, ProtocolSpec};
use twinhub::{Budget, Class, ClassSet, Cost, EngineDuration, OnFull, Routing};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config")
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<SdkConfig, ConfigError> {
    SdkConfig::from_toml_str_with_env(text, no_env)
}

fn err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(c) => panic!("expected an error, parsed {c:?}"),
        Err(e) => e,
    }
}

const HEAD: &str = "device_id = \"d1\"\n";
const EH: &str = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0LWtleQ==;EntityPath=telemetry";
const MQTT_ENDPOINT: &str = "[[endpoint]]\nname = \"m\"\nprotocol = \"mqtt\"\nurl = \"mqtt://127.0.0.1:1883\"\ntopic = \"t/{device_id}\"\n";

/// A file with one MQTT endpoint and `extra` appended.
fn with_mqtt(extra: &str) -> String {
    format!("{HEAD}{MQTT_ENDPOINT}{extra}")
}

#[test]
fn design_example_parses_to_the_documented_values() {
    let c = SdkConfig::from_toml_file(&examples().join("design.toml")).unwrap();
    assert_eq!(c.device_id, "sensor-0001");
    assert_eq!(c.routing, Routing::ActivePassive);
    assert_eq!(
        c.outbox.path.as_deref(),
        Some(Path::new("/var/lib/twinhub/sensor-0001"))
    );
    assert_eq!(c.outbox.max_bytes, 256 * 1024 * 1024);
    assert_eq!(c.outbox.on_full, OnFull::Evict);
    assert_eq!(c.outbox.fsync, Fsync::Batch);

    assert_eq!(c.endpoints.len(), 2);
    let primary = &c.endpoints[0];
    assert_eq!((primary.name.as_str(), primary.weight), ("primary", 1));
    let ProtocolSpec::EventHubs(eh) = &primary.protocol else {
        panic!("primary is not event-hubs: {primary:?}")
    };
    assert_eq!(eh.host, "ns-east.servicebus.windows.net");
    assert_eq!(eh.entity, "telemetry");
    assert_eq!(eh.key_name, "send");
    assert_eq!(eh.key.expose(), "...");
    assert!(!eh.development_emulator);

    let ProtocolSpec::Mqtt(m) = &c.endpoints[1].protocol else {
        panic!("secondary is not mqtt")
    };
    assert_eq!(
        (m.host.as_str(), m.port, m.tls),
        ("broker.central.example", 8883, true)
    );
    assert_eq!(m.topic, "telemetry/{device_id}");
    assert_eq!(m.version, MqttVersion::V5);
    assert_eq!(m.keep_alive, Duration::from_secs(30));
    assert!(m.password.is_none() && m.client_id.is_none());

    let [wan, sat] = &c.links[..] else {
        panic!("two links expected")
    };
    assert_eq!((wan.name.as_str(), wan.cost), ("wan", Cost::Free));
    assert_eq!(wan.allow, ClassSet::ALL);
    assert_eq!(wan.budget, None);
    assert_eq!(wan.arm_after, Duration::ZERO);
    assert_eq!((sat.name.as_str(), sat.cost), ("satellite", Cost::Costly));
    assert_eq!(
        sat.budget,
        Some(Budget {
            bytes: 2 * 1024 * 1024,
            window: EngineDuration::from_days(1)
        })
    );
    assert_eq!(sat.allow, ClassSet::only(Class::Critical));
    assert_eq!(sat.arm_after, Duration::from_secs(15 * 60));
    assert_eq!(sat.bind, None);

    assert_eq!(c.ttl, [Duration::from_secs(30 * 86_400); 3]);
    assert_eq!(c.timings, twinhub::Timings::default());
    assert_eq!(c.ca_file, None);
}

#[test]
fn every_example_file_parses() {
    let env = |var: &str| match var {
        "TWINHUB_WEU_CONNECTION_STRING" => {
            Some("HostName=weu.azure-devices.net;DeviceId=gateway-17;SharedAccessKey=a2V5".into())
        }
        "TWINHUB_NEU_CONNECTION_STRING" => {
            Some("HostName=neu.azure-devices.net;DeviceId=gateway-17;SharedAccessKey=a2V5".into())
        }
        "TWINHUB_MQTT_PASSWORD" => Some("hunter2".into()),
        _ => None,
    };
    let read = |name: &str| std::fs::read_to_string(examples().join(name)).unwrap();

    let emu = SdkConfig::from_toml_str_with_env(&read("emulator.toml"), env).unwrap();
    let ProtocolSpec::EventHubs(eh) = &emu.endpoints[1].protocol else {
        panic!()
    };
    assert_eq!(eh.host, "127.0.0.1:7201");
    assert!(eh.development_emulator);
    assert_eq!(emu.timings.trip_after, EngineDuration::from_secs(2));
    assert_eq!(emu.timings.min_dwell, EngineDuration::from_secs(10));
    assert_eq!(emu.timings.probe_max, EngineDuration::from_secs(30));

    let aa = SdkConfig::from_toml_str_with_env(&read("active-active.toml"), env).unwrap();
    assert_eq!(aa.routing, Routing::ActiveActive);
    assert_eq!(aa.outbox.fsync, Fsync::Always);
    assert_eq!(aa.outbox.max_bytes, 1 << 30);
    let ProtocolSpec::IotHub(hub) = &aa.endpoints[0].protocol else {
        panic!()
    };
    assert_eq!(
        (hub.host.as_str(), hub.port, hub.tls),
        ("weu.azure-devices.net", 8883, true)
    );
    assert_eq!(aa.endpoints[1].weight, 50);
    assert_eq!(aa.links[0].bind, Some(Bind::Interface("eth0".into())));
    assert_eq!(
        aa.links[1].allow,
        ClassSet::only(Class::Critical).with(Class::Normal)
    );
    assert_eq!(aa.ttl[Class::Bulk as usize], Duration::from_secs(86_400));
    assert_eq!(
        aa.ttl[Class::Critical as usize],
        Duration::from_secs(30 * 86_400)
    );

    // http.toml reads its token from a file next to it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("http.toml"), read("http.toml")).unwrap();
    std::fs::write(dir.path().join("ingest-token.txt"), "Bearer t0ken\n").unwrap();
    let http = SdkConfig::from_toml_file(&dir.path().join("http.toml"));
    // The MQTT password is read from the real environment here, where it is not set.
    let e = http.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Secret);
    assert_eq!(e.key.as_deref(), Some("endpoint[0].password"));
    let text = read("http.toml").replace(
        "password_env = \"TWINHUB_MQTT_PASSWORD\"",
        "password_file = \"ingest-token.txt\"",
    );
    std::fs::write(dir.path().join("http.toml"), text).unwrap();
    let http = SdkConfig::from_toml_file(&dir.path().join("http.toml")).unwrap();
    let ProtocolSpec::Mqtt(m) = &http.endpoints[0].protocol else {
        panic!()
    };
    assert_eq!(m.version, MqttVersion::V311);
    assert_eq!(m.keep_alive, Duration::from_secs(60));
    assert_eq!(m.username.as_deref(), Some("meter-42"));
    assert_eq!(
        m.password.as_ref().map(|p| p.expose()),
        Some("Bearer t0ken")
    );
    let ProtocolSpec::Http(h) = &http.endpoints[1].protocol else {
        panic!()
    };
    assert_eq!(h.url, "https://ingest.example/v1/batch");
    let headers: Vec<(&str, &str)> = h
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.expose()))
        .collect();
    assert_eq!(
        headers,
        [("Authorization", "Bearer t0ken"), ("X-Tenant", "acme")]
    );
    assert_eq!(http.endpoints[1].max_batch_bytes, Some(1 << 20));
    assert_eq!(http.endpoints[1].max_batch_records, Some(200));
}

fn assert_error(e: &ConfigError, kind: ErrorKind, line: Option<usize>, key: &str, text: &str) {
    let shown = e.to_string();
    assert_eq!(e.kind, kind, "{shown}");
    assert_eq!(e.line, line, "{shown}");
    assert_eq!(e.key.as_deref(), Some(key), "{shown}");
    assert!(shown.contains(text), "{shown:?} lacks {text:?}");
}

#[test]
fn unknown_keys_name_the_key_the_table_and_the_line() {
    let e = err(&format!("{HEAD}routng = \"mirror\"\n{MQTT_ENDPOINT}"));
    assert_error(&e, ErrorKind::UnknownKey, Some(2), "routng", "");
    assert!(
        e.to_string()
            .starts_with("line 2: unknown key `routng` in the top level"),
        "{e}"
    );

    let e = err(&with_mqtt(
        "[outbox]\nmax_bytes = \"1MiB\"\nfsyncc = \"off\"\n",
    ));
    assert_error(&e, ErrorKind::UnknownKey, Some(9), "outbox.fsyncc", "");
    assert!(
        e.to_string()
            .starts_with("line 9: unknown key `fsyncc` in [outbox]"),
        "{e}"
    );

    let e = err(&with_mqtt(
        "[[endpoint]]\nname = \"n\"\nprotocol = \"mqtt\"\ntopik = \"x\"\n",
    ));
    assert_error(
        &e,
        ErrorKind::UnknownKey,
        Some(10),
        "endpoint[1].topik",
        "line 10: unknown key `topik` in [[endpoint]]",
    );

    let e = err(&with_mqtt(
        "\n[[link]]\nname = \"wan\"\ncost = \"free\"\nbudgett = \"1MiB/1d\"\n",
    ));
    assert_error(
        &e,
        ErrorKind::UnknownKey,
        Some(11),
        "link[0].budgett",
        "line 11: unknown key `budgett` in [[link]]",
    );

    let e = err(&with_mqtt("[ttl]\nbluk = \"1d\"\n"));
    assert_error(&e, ErrorKind::UnknownKey, Some(8), "ttl.bluk", "in [ttl]");
    let e = err(&with_mqtt("[timings]\nlinger_ms = 5\n"));
    assert_error(
        &e,
        ErrorKind::UnknownKey,
        Some(8),
        "timings.linger_ms",
        "in [timings]",
    );
}

#[test]
fn key_valid_for_another_protocol_is_an_error() {
    let e = err(&format!(
        "{HEAD}[[endpoint]]\nname = \"p\"\nprotocol = \"event-hubs\"\nconnection_string = \"{EH}\"\ntopic = \"t\"\n"
    ));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(6),
        "endpoint[0].topic",
        "`topic` does not apply to protocol event-hubs",
    );
}

#[test]
fn bad_values_name_the_key_the_line_and_the_fix() {
    let e = err(&with_mqtt("[outbox]\nmax_bytes = \"256XB\"\n"));
    assert_eq!(
        e.to_string(),
        "line 8: outbox.max_bytes: \"256XB\" is not a size (use e.g. 256MiB, 64KB or 1000)"
    );
    let e = err(&with_mqtt("[outbox]\nmax_bytes = -5\n"));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(8),
        "outbox.max_bytes",
        "negative",
    );
    let e = err(&with_mqtt("[outbox]\nmax_bytes = true\n"));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(8),
        "outbox.max_bytes",
        "found a boolean",
    );
    let e = err(&with_mqtt("[outbox]\nfsync = \"sometimes\"\n"));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(8),
        "outbox.fsync",
        "always | batch | off",
    );
    let e = err(&with_mqtt("[outbox]\non_full = \"drop\"\n"));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(8),
        "outbox.on_full",
        "evict | reject",
    );

    let e = err(&format!("{HEAD}routing = \"round-robin\"\n{MQTT_ENDPOINT}"));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(2),
        "routing",
        "\"round-robin\" is not a routing mode (use active-passive | active-active | mirror)",
    );

    let e = err(&format!(
        "{HEAD}\n[[endpoint]]\nname = \"x\"\nprotocol = \"amqp\"\n"
    ));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(5),
        "endpoint[0].protocol",
        "is not a protocol (use event-hubs | iot-hub | mqtt | http | kafka)",
    );

    let link = |body: &str| with_mqtt(&format!("[[link]]\nname = \"l\"\n{body}"));
    let e = err(&link("cost = \"cheap\"\n"));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(9),
        "link[0].cost",
        "\"cheap\" is not a link cost (use free | metered | costly)",
    );
    let e = err(&link("cost = \"costly\"\nbudget = \"2MiB\"\n"));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(10),
        "link[0].budget",
        "\"2MiB\" is not a budget (use e.g. 2MiB/1d)",
    );
    let e = err(&link("cost = \"costly\"\nbudget = \"2MiB/0d\"\n"));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(10),
        "link[0].budget",
        "longer than 0",
    );
    let e = err(&link("cost = \"costly\"\narm_after = \"15 minutes\"\n"));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(10),
        "link[0].arm_after",
        "\"15 minutes\" is not a duration",
    );
    let e = err(&link(
        "cost = \"free\"\nallow = [\"critical\", \"urgent\"]\n",
    ));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(10),
        "link[0].allow",
        "\"urgent\" is not a class (use critical, normal or bulk)",
    );
    let e = err(&link("cost = \"free\"\nbind = \"not an interface\"\n"));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(10),
        "link[0].bind",
        "interface name",
    );
    let e = err(&link("budget = \"1MiB/1d\"\n"));
    assert_error(
        &e,
        ErrorKind::Missing,
        Some(7),
        "link[0].cost",
        "free | metered | costly",
    );

    let e = err(&with_mqtt("[timings]\nprobe_first = \"1\"\n"));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(8),
        "timings.probe_first",
        "is not a duration",
    );
    let e = err(&with_mqtt("[timings]\ntrip_failures = 300\n"));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(8),
        "timings.trip_failures",
        "out of range",
    );
    let e = err(&with_mqtt("[ttl]\nnormal = \"forever\"\n"));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(8),
        "ttl.normal",
        "is not a duration",
    );

    // serde's own type errors get a key and line too.
    let e = err(&with_mqtt("[outbox]\nfsync = 1\n"));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(8),
        "outbox.fsync",
        "invalid type",
    );
    let e = err(&format!("{HEAD}{MQTT_ENDPOINT}weight = \"heavy\"\n"));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(7),
        "endpoint[0].weight",
        "invalid type",
    );
}

#[test]
fn structural_slips_are_explained() {
    let e = err(&format!("{HEAD}[endpoint]\nname = \"x\"\n"));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(2),
        "endpoint",
        "write [[endpoint]] once per entry",
    );
    let e = err(&with_mqtt("[[outbox]]\npath = \"x\"\n"));
    assert_error(&e, ErrorKind::Invalid, Some(7), "outbox", "write [outbox]");
    // A dotted key at the top level belongs to its table.
    let e = err(&with_mqtt("").replace(HEAD, "device_id = \"d1\"\noutbox.fsyncc = \"off\"\n"));
    assert_error(
        &e,
        ErrorKind::UnknownKey,
        Some(2),
        "outbox.fsyncc",
        "unknown key `fsyncc` in [outbox]",
    );
    let e = err(&format!("{HEAD}device_id = \"d2\"\n{MQTT_ENDPOINT}"));
    assert_error(&e, ErrorKind::Syntax, Some(2), "device_id", "duplicate key");
    // A type error on a secret-bearing key does not echo the value.
    let e = err(&with_mqtt("").replace("topic =", "password = 31337\ntopic ="));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(6),
        "endpoint[0].password",
        "must be a string",
    );
    assert!(!e.to_string().contains("31337"), "{e}");
}

#[test]
fn syntax_errors_have_a_line() {
    let e = err("device_id = \"d\"\n[outbox\n");
    assert_eq!(e.kind, ErrorKind::Syntax);
    assert_eq!(e.line, Some(2), "{e}");
}

#[test]
fn missing_and_structural_errors() {
    let e = err(MQTT_ENDPOINT);
    assert_eq!(
        (e.kind, e.key.as_deref()),
        (ErrorKind::Missing, Some("device_id"))
    );
    let e = err(HEAD);
    assert_eq!(
        (e.kind, e.key.as_deref()),
        (ErrorKind::Missing, Some("endpoint"))
    );
    let e = err(&format!("{HEAD}{MQTT_ENDPOINT}{MQTT_ENDPOINT}"));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(8),
        "endpoint[1].name",
        "\"m\" is used by an earlier endpoint",
    );
    let e = err(&format!(
        "{HEAD}[[endpoint]]\nname = \"m\"\nprotocol = \"mqtt\"\nurl = \"mqtt://h\"\n"
    ));
    assert_error(
        &e,
        ErrorKind::Missing,
        Some(2),
        "endpoint[0].topic",
        "needs topic",
    );
    let e = err(&format!(
        "{HEAD}[[endpoint]]\nname = \"m\"\nprotocol = \"mqtt\"\nurl = \"mqtt://user:pw@h\"\ntopic = \"t\"\n"
    ));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(5),
        "endpoint[0].url",
        "credentials",
    );
    assert!(!e.to_string().contains("pw"));
    let e = err(&with_mqtt("").replace("t/{device_id}", "t/#"));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(6),
        "endpoint[0].topic",
        "wildcards",
    );
    let e = err(&with_mqtt("").replace("\"d1\"", "\"bad id\""));
    assert_error(&e, ErrorKind::Engine, Some(1), "device_id", "");
    let many: String = (0..5)
        .map(|i| MQTT_ENDPOINT.replace("\"m\"", &format!("\"m{i}\"")))
        .collect();
    let e = err(&format!("{HEAD}{many}"));
    assert_eq!(
        (e.kind, e.key.as_deref()),
        (ErrorKind::Engine, Some("endpoint"))
    );
    let e = err(&with_mqtt(
        "[timings]\nprobe_first = \"10s\"\nprobe_max = \"1s\"\n",
    ));
    assert_error(
        &e,
        ErrorKind::Engine,
        Some(9),
        "timings.probe_max",
        "probe_first",
    );
    let e = err(&with_mqtt("").replace("name = \"m\"", &format!("name = \"{}\"", "x".repeat(33))));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(3),
        "endpoint[0].name",
        "1 to 32 bytes",
    );
}

fn eh_endpoint(connection: &str) -> String {
    format!("{HEAD}[[endpoint]]\nname = \"p\"\nprotocol = \"event-hubs\"\n{connection}")
}

#[test]
fn connection_strings_as_is_and_their_errors() {
    let e = err(&format!(
        "{HEAD}[[endpoint]]\nname = \"p\"\nprotocol = \"event-hubs\"\n"
    ));
    assert_error(
        &e,
        ErrorKind::Missing,
        Some(2),
        "endpoint[0].connection_string",
        "protocol event-hubs needs connection_string",
    );
    let e = err(&format!(
        "{HEAD}[[endpoint]]\nname = \"h\"\nprotocol = \"iot-hub\"\n"
    ));
    assert_error(
        &e,
        ErrorKind::Missing,
        Some(2),
        "endpoint[0].connection_string",
        "iot-hub",
    );

    let cases: [(&str, &str); 6] = [
        ("just-a-key-c2VjcmV0", "part 1 has no `=`"),
        (
            "Endpoint=sb://ns/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0;;oops",
            "part 5 has no `=`",
        ),
        (
            "Endpoint=sb://ns/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0",
            "names no event hub: a namespace-level connection string (without EntityPath) needs the hub named in the endpoint",
        ),
        (
            "Endpoint=sb://ns/;SharedAccessKey=c2VjcmV0;EntityPath=t",
            "is missing SharedAccessKeyName",
        ),
        (
            "SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0;EntityPath=t",
            "is missing Endpoint",
        ),
        (
            "Endpoint=ns;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0;EntityPath=t",
            "has an invalid Endpoint",
        ),
    ];
    for (cs, want) in cases {
        let e = err(&eh_endpoint(&format!("connection_string = \"{cs}\"\n")));
        assert_error(
            &e,
            ErrorKind::Invalid,
            Some(5),
            "endpoint[0].connection_string",
            &format!("Event Hubs connection string {want}"),
        );
        assert!(!e.to_string().contains("c2VjcmV0"), "key leaked: {e}");
        assert!(!format!("{e:?}").contains("c2VjcmV0"), "key leaked: {e:?}");
    }

    let iot = |cs: &str| {
        format!(
            "{HEAD}[[endpoint]]\nname = \"h\"\nprotocol = \"iot-hub\"\nconnection_string = \"{cs}\"\n"
        )
    };
    let e = err(&iot(
        "HostName=h.azure-devices.net;SharedAccessKey=c2VjcmV0",
    ));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(5),
        "endpoint[0].connection_string",
        "IoT Hub connection string is missing DeviceId",
    );
    let e = err(&iot("HostName=h;DeviceId=d;SharedAccessKey=c2VjcmV0!!"));
    assert!(
        e.to_string().contains("SharedAccessKey: is not base64"),
        "{e}"
    );
    assert!(!e.to_string().contains("c2VjcmV0"));

    let c = parse(&iot(
        "hostname=127.0.0.1:18830;deviceid=d1;sharedaccesskey=c2VjcmV0MQ==;UseDevelopmentEmulator=TRUE",
    ))
    .unwrap();
    let ProtocolSpec::IotHub(h) = &c.endpoints[0].protocol else {
        panic!()
    };
    assert_eq!(
        (h.host.as_str(), h.port, h.tls),
        ("127.0.0.1", 18830, false)
    );
    assert_eq!(
        (h.device_id.as_str(), h.key.expose()),
        ("d1", "c2VjcmV0MQ==")
    );

    // The emulator's own strings.
    let c = parse(&eh_endpoint(
        "connection_string = \"Endpoint=sb://127.0.0.1:7101/;SharedAccessKeyName=send;SharedAccessKey=k=v==;EntityPath=telemetry;UseDevelopmentEmulator=true\"\n",
    ))
    .unwrap();
    let ProtocolSpec::EventHubs(eh) = &c.endpoints[0].protocol else {
        panic!()
    };
    assert_eq!(eh.host, "127.0.0.1:7101");
    assert_eq!(eh.key.expose(), "k=v==");
    assert!(eh.development_emulator);
}

#[test]
fn secrets_from_environment_and_files() {
    let env = |var: &str| (var == "EH_CONN").then(|| EH.to_owned());
    let c = SdkConfig::from_toml_str_with_env(
        &eh_endpoint("connection_string_env = \"EH_CONN\"\n"),
        env,
    )
    .unwrap();
    let ProtocolSpec::EventHubs(eh) = &c.endpoints[0].protocol else {
        panic!()
    };
    assert_eq!(eh.key.expose(), "c2VjcmV0LWtleQ==");

    // from_toml_str reads the real environment; cargo sets CARGO_PKG_NAME for tests.
    let c = SdkConfig::from_toml_str(
        &with_mqtt("").replace("topic =", "password_env = \"CARGO_PKG_NAME\"\ntopic ="),
    )
    .unwrap();
    let ProtocolSpec::Mqtt(m) = &c.endpoints[0].protocol else {
        panic!()
    };
    assert_eq!(m.password.as_ref().map(|p| p.expose()), Some("twinhub"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eh.conn");
    std::fs::write(&path, format!("{EH}\r\n")).unwrap();
    let c = parse(&eh_endpoint(&format!(
        "connection_string_file = {:?}\n",
        path.display().to_string()
    )))
    .unwrap();
    let ProtocolSpec::EventHubs(eh) = &c.endpoints[0].protocol else {
        panic!()
    };
    assert_eq!(eh.entity, "telemetry");

    let e = err(&eh_endpoint(
        "connection_string_env = \"NOT_SET_ANYWHERE\"\n",
    ));
    assert_error(
        &e,
        ErrorKind::Secret,
        Some(5),
        "endpoint[0].connection_string",
        "environment variable `NOT_SET_ANYWHERE`",
    );
    let missing = dir.path().join("absent.conn");
    let e = err(&eh_endpoint(&format!(
        "connection_string_file = {:?}\n",
        missing.display().to_string()
    )));
    assert_error(
        &e,
        ErrorKind::Secret,
        Some(5),
        "endpoint[0].connection_string",
        "cannot read",
    );
    assert!(e.to_string().contains("absent.conn"), "{e}");

    let e = err(&eh_endpoint(&format!(
        "connection_string = \"{EH}\"\nconnection_string_env = \"EH_CONN\"\n"
    )));
    assert_error(
        &e,
        ErrorKind::Secret,
        Some(6),
        "endpoint[0].connection_string",
        "give only one of `connection_string`, `connection_string_env` and `connection_string_file`",
    );
    let e = err(&with_mqtt("").replace(
        "topic =",
        "password = \"pw\"\npassword_file = \"/x\"\ntopic =",
    ));
    assert_error(
        &e,
        ErrorKind::Secret,
        Some(7),
        "endpoint[0].password",
        "give only one of `password`",
    );

    let http = |headers: &str| {
        format!(
            "{HEAD}[[endpoint]]\nname = \"h\"\nprotocol = \"http\"\nurl = \"https://x.example/\"\n[endpoint.headers]\n{headers}"
        )
    };
    let e = err(&http("Authorization = \"a\"\nAuthorization_env = \"B\"\n"));
    assert_error(
        &e,
        ErrorKind::Secret,
        Some(8),
        "endpoint[0].headers.Authorization",
        "give only one of `Authorization`",
    );
    let e = err(&http("Authorization_env = \"NOPE\"\n"));
    assert_error(
        &e,
        ErrorKind::Secret,
        Some(7),
        "endpoint[0].headers.Authorization",
        "`NOPE`",
    );
    let e = err(&http("\"Bad Header\" = \"x\"\n"));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(7),
        "endpoint[0].headers.Bad Header",
        "header name",
    );
}

#[test]
fn debug_output_never_shows_a_secret() {
    let env = |var: &str| match var {
        "P" => Some("mqtt-password-SECRET1".to_owned()),
        _ => None,
    };
    let text = format!(
        "{HEAD}\
[[endpoint]]\nname = \"eh\"\nprotocol = \"event-hubs\"\nconnection_string = \"Endpoint=sb://ns/;SharedAccessKeyName=send;SharedAccessKey=eh-key-SECRET2;EntityPath=t\"\n\
[[endpoint]]\nname = \"hub\"\nprotocol = \"iot-hub\"\nconnection_string = \"HostName=h;DeviceId=d;SharedAccessKey=U0VDUkVUMw==\"\n\
[[endpoint]]\nname = \"m\"\nprotocol = \"mqtt\"\nurl = \"mqtts://h\"\ntopic = \"t\"\npassword_env = \"P\"\n\
[[endpoint]]\nname = \"web\"\nprotocol = \"http\"\nurl = \"https://h/\"\nheaders = {{ Authorization = \"Bearer SECRET4\" }}\n"
    );
    let c = SdkConfig::from_toml_str_with_env(&text, env).unwrap();
    let debug = format!("{c:?} {:#?}", c);
    for secret in ["SECRET1", "SECRET2", "U0VDUkVUMw==", "SECRET4"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(debug.contains("redacted"));
    // The secrets are there for the transports.
    let ProtocolSpec::Http(h) = &c.endpoints[3].protocol else {
        panic!()
    };
    assert_eq!(h.headers[0].1.expose(), "Bearer SECRET4");
}

#[test]
fn engine_config_carries_limits_budgets_and_defaults() {
    let text = format!(
        "device_id = \"gw-1\"\nrouting = \"active-active\"\n\
[outbox]\non_full = \"reject\"\n\
[[endpoint]]\nname = \"eh\"\nprotocol = \"event-hubs\"\nconnection_string = \"{EH}\"\nweight = 3\nmax_batch_bytes = \"1MiB\"\n\
{MQTT_ENDPOINT}max_batch_records = 10\n\
[[link]]\nname = \"wan\"\ncost = \"free\"\nbind = \"127.0.0.2\"\n\
[[link]]\nname = \"cell\"\ncost = \"metered\"\nbudget = \"100MB/30d\"\n\
[[link]]\nname = \"sat\"\ncost = \"costly\"\n\
[ttl]\nbulk = \"12h\"\n\
[timings]\ntrip_failures = 5\nrequest_timeout = \"3s\"\nlinger = \"20ms\"\n"
    );
    let c = parse(&text).unwrap();
    let engine = c.engine_config().unwrap();
    assert_eq!(engine.device_id().as_str(), "gw-1");
    assert_eq!(engine.routing(), Routing::ActiveActive);
    assert_eq!(engine.on_full(), OnFull::Reject);
    // A gateway's bursts leave in full batches.
    assert!(engine.hold_partial());

    let [eh, m] = engine.endpoints() else {
        panic!()
    };
    for (spec, engine) in c.endpoints.iter().zip([eh, m]) {
        let want = twinhub::transport::limits(spec);
        assert_eq!(engine.name.as_str(), spec.name);
        assert_eq!(engine.max_record_bytes, want.max_record_bytes);
        assert_eq!(engine.max_batch_bytes, want.max_batch_bytes);
        assert_eq!(engine.max_batch_records, want.max_batch_records);
        assert_eq!(engine.record_overhead, want.record_overhead);
    }
    assert_eq!(eh.weight, 3);
    // 1 MiB of base64 JSON carries 3/4 of it in payload, minus the envelope allowance.
    assert_eq!(eh.max_batch_bytes, (1 << 20) / 4 * 3 - 512);
    assert_eq!(m.max_batch_records, 10);
    assert_eq!(m.weight, 1);
    assert_eq!(
        engine.max_record_bytes(),
        eh.max_record_bytes.min(m.max_record_bytes)
    );

    let [wan, cell, sat] = engine.links() else {
        panic!()
    };
    assert_eq!(c.links[0].bind, Some(Bind::Addr([127, 0, 0, 2].into())));
    assert_eq!(
        (wan.cost, wan.allow, wan.budget),
        (Cost::Free, ClassSet::ALL, None)
    );
    assert_eq!(
        cell.budget,
        Some(Budget {
            bytes: 100_000_000,
            window: EngineDuration::from_days(30)
        })
    );
    assert_eq!(cell.arm_after, EngineDuration::ZERO);
    // A costly link without a budget is accepted, defaults to critical-only after 15
    // minutes, and is never usable.
    assert_eq!(sat.cost, Cost::Costly);
    assert_eq!(sat.allow, ClassSet::only(Class::Critical));
    assert_eq!(sat.arm_after, EngineDuration::from_mins(15));
    assert_eq!(sat.budget, None);
    assert!(!sat.usable());
    assert!(wan.usable() && cell.usable());

    assert_eq!(engine.ttl(Class::Bulk), EngineDuration::from_hours(12));
    assert_eq!(engine.ttl(Class::Normal), EngineDuration::from_days(30));
    let t = engine.timings();
    assert_eq!(t.trip_failures, 5);
    assert_eq!(t.request_timeout, EngineDuration::from_secs(3));
    assert_eq!(t.linger, EngineDuration::from_millis(20));
    assert_eq!(t.min_dwell, EngineDuration::from_secs(30));
}

#[test]
fn validate_checks_programmatic_configs() {
    let mut c = parse(&with_mqtt("")).unwrap();
    assert_eq!(c.validate(), Ok(()));
    c.endpoints.push(c.endpoints[0].clone());
    let e = c.validate().unwrap_err();
    assert_eq!(e.key.as_deref(), Some("endpoint[1].name"));
    assert_eq!(e.line, None);
    c.endpoints.clear();
    assert_eq!(c.validate().unwrap_err().kind, ErrorKind::Missing);
}

#[test]
fn file_errors_carry_the_path() {
    let e = SdkConfig::from_toml_file(Path::new("/nonexistent/twinhub.toml")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Io);
    assert!(
        e.to_string()
            .starts_with("/nonexistent/twinhub.toml: cannot read"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, with_mqtt("[outbox]\nfsync = \"never\"\n")).unwrap();
    let e = SdkConfig::from_toml_file(&path).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}: line 8: outbox.fsync:", path.display())),
        "{e}"
    );
}

#[test]
fn credentials_in_an_http_url_are_refused_without_echoing_them() {
    let e = err(
        "device_id = \"d\"\n[[endpoint]]\nname = \"h\"\nprotocol = \"http\"\nurl = \"https://ingest:s3cr3t-pw@ingest.example/v1/batch\"\n",
    );
    let text = e.to_string();
    assert!(text.contains("endpoint[0].url"), "{text}");
    assert!(text.contains("must not carry credentials"), "{text}");
    assert!(!text.contains("s3cr3t-pw"), "{text}");
    // An `@` in the path is not a credential.
    parse(
        "device_id = \"d\"\n[[endpoint]]\nname = \"h\"\nprotocol = \"http\"\nurl = \"https://ingest.example/v1/@batch\"\n",
    )
    .unwrap();
}

/// A name longer than the engine keeps (32 bytes) is refused with its key and line, not
/// cut short: two long names that share their first 32 bytes would otherwise become the
/// same route in metrics and events.
#[test]
fn over_long_names_are_refused_with_key_and_line() {
    let long = "n".repeat(33);
    let text = format!(
        "{HEAD}{MQTT_ENDPOINT}\n[[link]]\nname = \"wan\"\ncost = \"free\"\n\n[[link]]\nname = \"{long}\"\ncost = \"metered\"\n"
    );
    let e = err(&text);
    assert_error(&e, ErrorKind::Invalid, Some(13), "link[1].name", "32 bytes");
    let e = err(&format!(
        "{HEAD}[[endpoint]]\nname = \"{long}\"\nprotocol = \"mqtt\"\nurl = \"mqtt://127.0.0.1:1883\"\ntopic = \"t\"\n"
    ));
    assert_error(
        &e,
        ErrorKind::Invalid,
        Some(3),
        "endpoint[0].name",
        "32 bytes",
    );

    // Built in code and handed straight to the engine, the engine's own refusal carries
    // the same key.
    let mut config = parse(&with_mqtt("")).unwrap();
    config.endpoints[0].name = long;
    let e = config.engine_config().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Engine, "{e}");
    assert_eq!(e.key.as_deref(), Some("endpoint[0].name"), "{e}");
    assert!(e.to_string().contains("32 bytes"), "{e}");
}
