//! The IoT Hub transport over TLS against the emulator's IoT Hub endpoint, which checks
//! client id, user name, SAS token, topic, QoS and size as IoT Hub does (and which
//! Microsoft's Python device SDK passes: emulator/tests/conformance.rs).

use twinhub_testkit as transport_util;

use std::time::Duration;

use transport_util::*;
use twinhub::Outcome;
use twinhub::spec::{IotHubSpec, ProtocolSpec, Secret};
use twinhub::transport::{TransportError, build_with_timeout, tls_config};
use twinhub_emulator::{Emulator, EmulatorConfig, Protocol, Region, RegionConfig};

const WAIT: Duration = Duration::from_secs(10);

fn spec_for(r: &Region, dev: &str, key: &str) -> twinhub::spec::EndpointSpec {
    endpoint(ProtocolSpec::IotHub(IotHubSpec {
        // The endpoint's IP address is its host name: the certificate names it.
        host: r.iot_hub_host(),
        device_id: dev.into(),
        key: Secret::new(key),
        port: r.iot_hub_addr().port(),
        tls: true,
        token_ttl: Duration::from_secs(3600),
        x509: false,
        client_cert: None,
        transport: Default::default(),
        gateway_host: None,
        reject_after_closes: twinhub::spec::DEFAULT_REJECT_AFTER_CLOSES,
    }))
}

async fn send(emu: &Emulator, r: &Region, dev: &str, key: &str, n: usize) -> Outcome {
    let spec = spec_for(r, dev, key);
    let tls = tls_config(Some(emu.ca_file())).unwrap();
    let t = build_with_timeout(
        &spec,
        &link(None),
        &device(dev),
        tls,
        Duration::from_secs(5),
    )
    .unwrap();
    t.send(&records(dev, 1, 0, n, 32)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_over_tls_with_sas_for_ids_with_special_characters() {
    let emu = Emulator::start(EmulatorConfig::with_regions(["primary"]))
        .await
        .unwrap();
    let r = &emu["primary"];
    for dev in ["meter-7", "meter$7", "b.c:d_e-f"] {
        assert_eq!(
            send(&emu, r, dev, r.iot_hub_key(), 3).await,
            Outcome::Delivered,
            "{dev}"
        );
        let want: Vec<String> = (0..3).map(|s| format!("{dev}:1:{s}")).collect();
        let got = r.wait_for_ids(&want, WAIT).await.unwrap();
        assert!(got.iter().all(|x| x.protocol == Protocol::IotHub));
    }
    assert_eq!(r.stats().total.duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_unauthorized() {
    let emu = Emulator::start(EmulatorConfig::with_regions(["primary"]))
        .await
        .unwrap();
    let r = &emu["primary"];
    assert_eq!(
        send(&emu, r, "meter-7", "b3RoZXI=", 1).await,
        Outcome::Unauthorized
    );
    let refused = r
        .iot_hub_events()
        .wait_for("connack-5-sas-signature", 1, WAIT);
    assert_eq!(refused.await, 1);
    assert!(r.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_with_mqtt_wildcards_are_refused_at_build_naming_id_and_character() {
    let emu = Emulator::start(EmulatorConfig::with_regions(["primary"]))
        .await
        .unwrap();
    let r = &emu["primary"];
    let tls = tls_config(Some(emu.ca_file())).unwrap();
    for (dev, wildcard) in [("meter#7", '#'), ("a+b", '+'), ("$y+#", '+')] {
        let Err(err) = build_with_timeout(
            &spec_for(r, dev, r.iot_hub_key()),
            &link(None),
            &device(dev),
            tls.clone(),
            WAIT,
        ) else {
            panic!("{dev}: a transport was built");
        };
        match &err {
            TransportError::WildcardInDeviceId {
                device_id,
                character,
            } => assert_eq!((device_id.as_str(), *character), (dev, wildcard)),
            other => panic!("{dev}: {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains(&format!("{dev:?}")), "{text}");
        assert!(text.contains(&format!("{wildcard:?}")), "{text}");
    }
    // Through the whole SDK: the producer is not built, and says why.
    let toml = format!(
        "device_id = \"gw\"\nca_file = {:?}\n[[endpoint]]\nname = \"hub\"\nprotocol = \"iot-hub\"\n\
         connection_string = \"{}\"\n",
        emu.ca_file(),
        r.iot_hub_connection_string_for("meter#7")
    );
    let config = twinhub::SdkConfig::from_toml_str(&toml).unwrap();
    let Err(err) = twinhub::Producer::builder(config).build().await else {
        panic!("a device id with # built a producer");
    };
    assert!(
        matches!(
            err,
            twinhub::BuildError::Transport(TransportError::WildcardInDeviceId { .. })
        ),
        "{err:?}"
    );
    // The other characters IoT Hub allows still go through (`;` is one the SDK's own
    // device ids do not take, so the records come from another id).
    let t = build_with_timeout(
        &spec_for(r, "x;y", r.iot_hub_key()),
        &link(None),
        &device("gw"),
        tls,
        WAIT,
    )
    .unwrap();
    assert_eq!(
        t.send(&records("gw", 1, 0, 1, 32)).await,
        Outcome::Delivered
    );
    let got = r.wait_for_ids(&["gw:1:0"], WAIT).await.unwrap();
    assert_eq!(got[0].properties["iothub-connection-device-id"], "x;y");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_host_name_is_connected_to_with_the_hub_as_identity() {
    // The region acts as an IoT Edge gateway in front of a hub whose name does not resolve:
    // only a device that connects to the gateway, and signs for the hub, gets through.
    let hub = "hub-that-does-not-resolve.invalid";
    let emu = Emulator::start(EmulatorConfig {
        regions: vec![RegionConfig::new("primary").iot_hub_name(hub)],
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let r = &emu["primary"];
    let cs = r.iot_hub_connection_string_for("edge-leaf");
    assert!(cs.starts_with(&format!("HostName={hub};")), "{cs}");
    assert!(
        cs.ends_with(&format!(";GatewayHostName={}", r.iot_hub_addr().ip())),
        "{cs}"
    );
    let spec = twinhub::config::connstr::parse_iot_hub(&cs).unwrap();
    assert_eq!(spec.port, r.iot_hub_addr().port());
    let t = build_with_timeout(
        &endpoint(ProtocolSpec::IotHub(spec)),
        &link(None),
        &device("edge-leaf"),
        tls_config(Some(emu.ca_file())).unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        t.send(&records("edge-leaf", 1, 0, 2, 32)).await,
        Outcome::Delivered
    );
    let got = r
        .wait_for_ids(&["edge-leaf:1:0", "edge-leaf:1:1"], WAIT)
        .await
        .unwrap();
    assert_eq!(
        got[0].properties["iothub-connection-device-id"],
        "edge-leaf"
    );
    assert_eq!(r.iot_hub_events().count("connected"), 1);
}
