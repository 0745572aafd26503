//! Helpers shared by the transport tests and benchmarks: records, specs, a mosquitto
//! started on a free port.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use twinhub::record::Record;
use twinhub::spec::{
    Bind, EndpointSpec, EventHubsSpec, HttpSpec, LinkSpec, MqttSpec, MqttVersion, ProtocolSpec,
    Secret,
};
use twinhub::{Class, ClassSet, Cost, DeviceId, MessageId};

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

pub fn ids(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| r.id.to_string()).collect()
}

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

pub fn endpoint(protocol: ProtocolSpec) -> EndpointSpec {
    EndpointSpec {
        name: "hub".into(),
        weight: 1,
        protocol,
        max_batch_bytes: None,
        max_batch_records: None,
    }
}

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

pub fn http(url: &str) -> EndpointSpec {
    endpoint(ProtocolSpec::Http(HttpSpec {
        url: url.into(),
        headers: vec![("x-api-key".into(), Secret::new("not-checked"))],
    }))
}

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
    }))
}

pub fn tls() -> std::sync::Arc<rustls::ClientConfig> {
    twinhub::transport::tls_config(None).expect("tls config")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A mosquitto broker on 127.0.0.1, killed on drop.
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: String,
}

fn mosquitto_binary() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = PathBuf::from(dir).join("mosquitto");
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from("/usr/sbin/mosquitto")
}

impl Mosquitto {
    /// Starts a broker on a free port and waits until it accepts connections.
    pub fn start() -> Mosquitto {
        Self::start_with("allow_anonymous true\n")
    }

    /// Starts a broker with `extra` configuration lines.
    pub fn start_with(extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = Mosquitto {
            child: None,
            port: free_port(),
            dir,
            extra: extra.to_string(),
        };
        m.restart();
        m
    }

    /// Starts a broker that saves its sessions and queued messages on SIGTERM and loads
    /// them on restart, so a durable subscriber misses nothing across [`Self::terminate`].
    pub fn start_persistent() -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("db");
        std::fs::create_dir(&db).expect("db dir");
        // Started as root, mosquitto drops to its own user: the store must be writable by it.
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let mut m = Mosquitto {
            child: None,
            port: free_port(),
            dir,
            extra: format!(
                "allow_anonymous true\npersistence true\npersistence_location {}/\n",
                db.display()
            ),
        };
        m.restart();
        m
    }

    /// Whether the persistence file exists (after a [`Self::terminate`] of a persistent broker).
    pub fn saved(&self) -> bool {
        self.dir.path().join("db").join("mosquitto.db").is_file()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts (again) on the same port.
    pub fn restart(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\npersistence false\nmax_queued_messages 100000\n{}",
                self.port, self.extra
            ),
        )
        .expect("write conf");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut child = Command::new(mosquitto_binary())
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("mosquitto runs");
            // Ready once it accepts a connection (or it exited: the port may still be in
            // TIME_WAIT after a kill; try again).
            loop {
                if TcpStream::connect(self.addr()).is_ok() {
                    self.child = Some(child);
                    return;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                assert!(Instant::now() < deadline, "mosquitto did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the broker with SIGTERM (it saves its persistence file) and waits for it.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    /// Kills the broker (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Subscribes to `telemetry/#` on the broker at `port` with a persistent session (a broker
/// restarted with its sessions delivers what it queued meanwhile) and calls `on_id` with
/// the `message-id` user property of every publish. Returns once the first subscription
/// is acknowledged; the subscriber keeps running (and reconnecting) on the runtime.
pub async fn collect_ids(
    port: u16,
    name: &str,
    mut on_id: impl FnMut(String) + Send + 'static,
) -> Result<(), String> {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut opts = MqttOptions::new(format!("collector-{name}"), "127.0.0.1", port);
    opts.set_clean_start(false);
    opts.set_session_expiry_interval(Some(3600));
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(opts, 1024);
    let (subscribed, ready) = tokio::sync::oneshot::channel();
    let mut subscribed = Some(subscribed);
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.subscribe("telemetry/#", QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let id = p.properties.as_ref().and_then(|props| {
                        props
                            .user_properties
                            .iter()
                            .find(|(k, _)| k == "message-id")
                            .map(|(_, v)| v.clone())
                    });
                    if let Some(id) = id {
                        on_id(id);
                    }
                }
                Ok(_) => {}
                // The broker is down (a test stopped it): try again shortly.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .map_err(|_| format!("the {name} collector did not subscribe in time"))?
        .map_err(|_| format!("the {name} collector stopped"))
}
