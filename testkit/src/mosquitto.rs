//! A real mosquitto broker on 127.0.0.1, and a subscriber that collects message ids.
//!
//! mosquitto binds its port itself (from its configuration file), so it cannot be handed
//! a bound listener. Instead a start picks a free port and reads the broker's own log:
//! only its `running` line proves that *this* process holds the port. If the port was
//! taken in between (`Address already in use`, the broker exits), a fresh start tries a
//! new port; a restart, which must keep its port, tries the same one again.

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::unused_port;

/// A mosquitto broker on 127.0.0.1, killed on drop.
pub struct Mosquitto {
    child: Option<Child>,
    /// The port it listens on (kept across restarts).
    pub port: u16,
    /// A second, plain listener after the `extra` lines, if asked for.
    second: Option<u16>,
    dir: tempfile::TempDir,
    extra: String,
}

impl std::fmt::Debug for Mosquitto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mosquitto")
            .field("port", &self.port)
            .field("running", &self.child.is_some())
            .finish_non_exhaustive()
    }
}

/// The mosquitto binary: on `PATH`, else where Debian installs it.
fn mosquitto_binary() -> Option<PathBuf> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| PathBuf::from(dir).join("mosquitto"))
        .chain([PathBuf::from("/usr/sbin/mosquitto")])
        .find(|p| p.is_file())
}

/// How a single attempt to start the broker ended.
enum Attempt {
    Running(Child),
    /// It exited; the log says why.
    Exited(String),
}

impl Mosquitto {
    /// Starts a broker on a free port; panics if it cannot (tests).
    pub fn start() -> Mosquitto {
        Self::start_with("allow_anonymous true\n")
    }

    /// Starts a broker with `extra` configuration lines; panics if it cannot (tests).
    pub fn start_with(extra: &str) -> Mosquitto {
        Self::try_start_with(extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a broker with `extra` configuration lines.
    pub fn try_start_with(extra: &str) -> Result<Mosquitto, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        Self::launch(dir, extra.to_string(), false)
    }

    /// Starts a broker whose `extra` lines configure its main listener (TLS, say), with a
    /// second, plain, anonymous listener on another port: see [`Self::second_port`].
    pub fn start_with_second_listener(extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::launch(dir, extra.to_string(), true).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a broker whose main listener is TLS with a server certificate from `pki`
    /// and *requires* a client certificate issued by its CA (`require_certificate`), plus
    /// a plain, anonymous second listener for the test's own subscriber.
    pub fn start_mutual_tls(pki: &crate::TestPki) -> Mosquitto {
        Self::start_with_second_listener(&pki.mosquitto_mutual_tls())
    }

    /// The second listener's port ([`Self::start_with_second_listener`]).
    pub fn second_port(&self) -> Option<u16> {
        self.second
    }

    /// Starts a broker that saves its sessions and queued messages on SIGTERM and loads
    /// them on restart, so a durable subscriber misses nothing across [`Self::terminate`].
    pub fn start_persistent() -> Mosquitto {
        Self::try_start_persistent().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::start_persistent`], reporting failure as an error.
    pub fn try_start_persistent() -> Result<Mosquitto, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let db = dir.path().join("db");
        std::fs::create_dir(&db).map_err(|e| e.to_string())?;
        // Started as root, mosquitto drops to its own user: the store must be writable by it.
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| e.to_string())?;
        let extra = format!(
            "allow_anonymous true\npersistence true\npersistence_location {}/\n",
            db.display()
        );
        Self::launch(dir, extra, false)
    }

    /// A first start: on a port taken meanwhile by someone else, again on new ports.
    fn launch(dir: tempfile::TempDir, extra: String, second: bool) -> Result<Mosquitto, String> {
        let mut m = Mosquitto {
            child: None,
            port: 0,
            second: None,
            dir,
            extra,
        };
        let mut why = String::new();
        for _ in 0..20 {
            m.port = unused_port();
            m.second = second.then(unused_port);
            match m.attempt()? {
                Attempt::Running(child) => {
                    m.child = Some(child);
                    return Ok(m);
                }
                Attempt::Exited(log) if log.contains("Address already in use") => why = log,
                Attempt::Exited(log) => return Err(format!("mosquitto exited:\n{log}")),
            }
        }
        Err(format!("mosquitto found no free port:\n{why}"))
    }

    /// Whether the persistence file exists (after a [`Self::terminate`] of a persistent broker).
    pub fn saved(&self) -> bool {
        self.dir.path().join("db").join("mosquitto.db").is_file()
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts again on the same port, retrying while it is still held (a killed broker's
    /// port in TIME_WAIT); panics after 10 s.
    pub fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.attempt() {
                Ok(Attempt::Running(child)) => {
                    self.child = Some(child);
                    return;
                }
                Ok(Attempt::Exited(log)) => {
                    assert!(
                        Instant::now() < deadline,
                        "mosquitto did not restart:\n{log}"
                    );
                }
                Err(e) => panic!("{e}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One start on `self.port`: waits for the broker's `running` line or its exit.
    fn attempt(&self) -> Result<Attempt, String> {
        let binary = mosquitto_binary()
            .ok_or("mosquitto is not installed (`cargo xtask setup` installs it)")?;
        let conf = self.dir.path().join("mosquitto.conf");
        let second = self
            .second
            .map_or_else(String::new, |p| format!("\nlistener {p} 127.0.0.1\n"));
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\npersistence false\nmax_queued_messages 100000\n\
                 log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n{}{second}",
                self.port, self.extra
            ),
        )
        .map_err(|e| format!("writing {}: {e}", conf.display()))?;
        // The log goes to a file this process opened, so the broker can write it after it
        // drops to its own user.
        let log_path = self.dir.path().join("mosquitto.log");
        let log = File::create(&log_path).map_err(|e| e.to_string())?;
        let mut child = Command::new(&binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = read(&log_path);
            // Logged (at level information) once every listener is open.
            if text.contains(" running") {
                return Ok(Attempt::Running(child));
            }
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(Attempt::Exited(read(&log_path)));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("mosquitto did not start in 10 s:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(10));
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

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_taken_by_someone_else_is_detected_not_mistaken_for_the_broker() {
        // Something else listens on the port: a connect would succeed, but the broker's
        // own log says it could not bind, so the start is not taken as ready.
        let other = crate::ports::listener();
        let port = other.local_addr().unwrap().port();
        let m = Mosquitto {
            child: None,
            port,
            second: None,
            dir: tempfile::tempdir().unwrap(),
            extra: "allow_anonymous true\n".into(),
        };
        match m.attempt().unwrap() {
            Attempt::Exited(log) => assert!(log.contains("Address already in use"), "{log}"),
            Attempt::Running(mut c) => {
                let _ = c.kill();
                panic!("taken as running on a port it could not bind");
            }
        }
        // A fresh start picks another port and runs.
        let m = Mosquitto::start();
        assert_ne!(m.port, port);
        assert!(std::net::TcpStream::connect(m.addr()).is_ok());
    }
}
