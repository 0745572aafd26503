//! The IoT Hub transport over TLS against the emulator's IoT Hub endpoint, which checks
//! client id, user name, SAS token, topic, QoS and size as IoT Hub does (and which
//! Microsoft's Python device SDK passes: emulator/tests/conformance.rs).

use twinhub_testkit as transport_util;

use std::time::Duration;

use transport_util::*;
use twinhub::Outcome;
use twinhub::spec::{IotHubSpec, ProtocolSpec, Secret};
use twinhub::transport::{build_with_timeout, tls_config};
use twinhub_emulator::{Emulator, EmulatorConfig, Protocol, Region};

const WAIT: Duration = Duration::from_secs(10);

async fn send(emu: &Emulator, r: &Region, dev: &str, key: &str, n: usize) -> Outcome {
    let spec = endpoint(ProtocolSpec::IotHub(IotHubSpec {
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
    }));
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
    assert_eq!(r.iot_hub_events().count("connack-5-sas-signature"), 1);
    assert!(r.is_empty());
}
