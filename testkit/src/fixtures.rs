//! Records and endpoint specs for transport tests and benchmarks.

use std::net::SocketAddr;
use std::time::Duration;

use twinhub::record::Record;
use twinhub::spec::{
    Bind, EndpointSpec, EventHubsSpec, HttpSpec, LinkSpec, MqttSpec, MqttVersion, ProtocolSpec,
    Secret,
};
use twinhub::{Class, ClassSet, Cost, DeviceId, MessageId};

/// A device id that must be valid.
pub fn device(name: &str) -> DeviceId {
    DeviceId::new(name).expect("device id")
}

/// `n` records of `size` bytes from `dev`, epoch `epoch`, sequence from `first`.
pub fn records(dev: &str, epoch: u32, first: u64, n: usize, size: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let seq = first + i as u64;
            let mut body = format!("reading {seq} ").into_bytes();
            body.resize(size.max(body.len()), b'x');
            Record {
                id: MessageId {
                    device: device(dev),
                    epoch,
                    seq,
                },
                class: Class::Normal,
                properties: vec![("unit".into(), "C".into())],
                body: body.into(),
            }
        })
        .collect()
}

/// The text ids of `records`.
pub fn ids(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| r.id.to_string()).collect()
}

/// A free link named `wan`, optionally bound to a source address.
pub fn link(bind: Option<Bind>) -> LinkSpec {
    LinkSpec {
        name: "wan".into(),
        cost: Cost::Free,
        budget: None,
        allow: ClassSet::ALL,
        arm_after: Duration::ZERO,
        bind,
    }
}

/// An endpoint named `hub` with default limits.
pub fn endpoint(protocol: ProtocolSpec) -> EndpointSpec {
    EndpointSpec {
        name: "hub".into(),
        weight: 1,
        protocol,
        max_batch_bytes: None,
        max_batch_records: None,
    }
}

/// An Event Hubs endpoint on a development emulator (plain HTTP).
pub fn event_hubs(host: &str, entity: &str, key_name: &str, key: &str) -> EndpointSpec {
    endpoint(ProtocolSpec::EventHubs(EventHubsSpec {
        host: host.into(),
        entity: entity.into(),
        key_name: key_name.into(),
        key: Secret::new(key),
        development_emulator: true,
        token_ttl: Duration::from_secs(3600),
    }))
}

/// A generic HTTP endpoint.
pub fn http(url: &str) -> EndpointSpec {
    endpoint(ProtocolSpec::Http(HttpSpec {
        url: url.into(),
        headers: vec![("x-api-key".into(), Secret::new("not-checked"))],
        client_cert: None,
    }))
}

/// A plain MQTT endpoint at `addr`.
pub fn mqtt(addr: SocketAddr, topic: &str, version: MqttVersion) -> EndpointSpec {
    endpoint(ProtocolSpec::Mqtt(MqttSpec {
        host: addr.ip().to_string(),
        port: addr.port(),
        tls: false,
        topic: topic.into(),
        version,
        client_id: None,
        username: None,
        password: None,
        keep_alive: Duration::from_secs(30),
        client_cert: None,
    }))
}

/// The SDK's TLS configuration with the public roots.
pub fn tls() -> std::sync::Arc<rustls::ClientConfig> {
    twinhub::transport::tls_config(None).expect("tls config")
}
