//! Kafka peers nobody here wrote, for tests, examples, benchmarks and the chaos runner:
//! librdkafka's mock cluster (started by Debian's `kcat`) as the broker, `kcat` as the
//! independent consumer, and a loopback forwarder standing in for a region's stable
//! address.
//!
//! A mock cluster lives inside a `kcat -P` process whose standard input is held open:
//! `-X test.mock.num.brokers=N` makes librdkafka start N brokers on ephemeral loopback
//! ports and log (level 5, on stderr) "Mock cluster enabled: ... replaced with
//! `<bootstrap>`". The producer asks for the topic's metadata at start, which creates it
//! (4 partitions, the mock's default). SIGKILL is a region down, SIGSTOP/SIGCONT a
//! blackhole. The mock keeps its log in memory: a killed cluster's records are gone,
//! and a new one starts empty on new ports (the mock has no setting for its ports, so a
//! [`Forwarder`] gives a region one address across replacements).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whether `kcat` is installed (`cargo xtask test` installs it; Debian package `kcat`).
pub fn kcat_available() -> bool {
    Command::new("kcat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A librdkafka mock cluster in a `kcat` process.
pub struct MockCluster {
    child: Child,
    /// `host:port,host:port,...` of its brokers.
    pub bootstrap: String,
    /// The topic created at start.
    pub topic: String,
}

impl MockCluster {
    /// Starts a cluster of `brokers` brokers with `topic` created; panics with the reason
    /// if it does not come up within 20 s.
    pub fn start(topic: &str, brokers: u32) -> MockCluster {
        MockCluster::try_start(topic, brokers).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a cluster of `brokers` brokers with `topic` created, or says why not
    /// within 20 s.
    pub fn try_start(topic: &str, brokers: u32) -> Result<MockCluster, String> {
        let mut child = Command::new("kcat")
            .args(["-P", "-b", "127.0.0.1:1", "-t", topic])
            .arg("-X")
            .arg(format!("test.mock.num.brokers={brokers}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("kcat does not start ({e}): apt-get install kcat"))?;
        let stderr = child.stderr.take().ok_or("kcat's stderr is not piped")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            // Keeps draining stderr so the process never blocks on it.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("replaced with ").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        // Owned from here on, so an early return still kills the process.
        let mut cluster = MockCluster {
            child,
            bootstrap: String::new(),
            topic: topic.to_string(),
        };
        cluster.bootstrap = rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| "kcat never printed the mock cluster's bootstrap address")?;
        cluster.wait_topic(Duration::from_secs(20))?;
        Ok(cluster)
    }

    /// The first broker's address.
    pub fn first(&self) -> SocketAddr {
        self.bootstrap
            .split(',')
            .next()
            .and_then(|a| a.parse().ok())
            .expect("a broker address")
    }

    /// The `kcat` process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the topic is listed with its partitions.
    fn wait_topic(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = Command::new("kcat")
                .args(["-L", "-b", &self.bootstrap, "-t", &self.topic, "-m", "2"])
                .output()
                .map_err(|e| format!("kcat -L: {e}"))?;
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains("partitions:") && !text.contains("partitions: 0") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("topic {} never appeared: {text}", self.topic));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, sig: &str) -> Result<(), String> {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            Ok(())
        } else {
            Err(format!("kill {sig} {} failed", self.child.id()))
        }
    }

    /// SIGKILL: the region is gone, with everything in its log.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: connections stay open and nothing answers (a blackhole). Returns once the
    /// process is seen stopped, so nothing sent after it can be answered.
    pub fn stop(&self) -> Result<(), String> {
        self.signal("-STOP")?;
        self.wait_state(true)
    }

    /// SIGCONT after [`MockCluster::stop`]; returns once the process runs again.
    pub fn cont(&self) -> Result<(), String> {
        self.signal("-CONT")?;
        self.wait_state(false)
    }

    /// Waits (at most 10 s) until `/proc` shows the process stopped, or not.
    fn wait_state(&self, stopped: bool) -> Result<(), String> {
        let path = format!("/proc/{}/stat", self.child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The state is the field after the command name, which is in parentheses.
            let stat = std::fs::read_to_string(&path).unwrap_or_default();
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            if state.is_some_and(|c| (c == 'T') == stopped) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "kcat {} never showed {}: {stat}",
                    self.child.id(),
                    if stopped { "stopped" } else { "running" }
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Every record in the topic, read by a separate `kcat` consumer to the end; panics
    /// if `kcat` fails.
    pub fn read_all(&self) -> Vec<KafkaRecord> {
        read_all(&self.bootstrap, &self.topic).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for MockCluster {
    fn drop(&mut self) {
        // A stopped process must be continued to die promptly; errors mean it is gone.
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A record as `kcat -C` printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    /// The partition it was read from.
    pub partition: u32,
    /// Its key.
    pub key: String,
    /// Its headers (a repeated name keeps the last value).
    pub headers: BTreeMap<String, String>,
    /// Its value.
    pub value: String,
}

impl KafkaRecord {
    /// The `message-id` header.
    pub fn id(&self) -> Option<&str> {
        self.headers.get("message-id").map(String::as_str)
    }
}

/// The consumer's output format: fields separated by a unit separator, one per line.
const FORMAT: &str = "%p\x1f%k\x1f%h\x1f%s\n";

fn parse_line(line: &str) -> Option<KafkaRecord> {
    let mut f = line.splitn(4, '\x1f');
    let partition = f.next()?.parse().ok()?;
    let key = f.next()?.to_string();
    let headers = f
        .next()?
        .split(',')
        .filter_map(|h| h.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let value = f.next()?.to_string();
    Some(KafkaRecord {
        partition,
        key,
        headers,
        value,
    })
}

/// Reads `topic` from the beginning to its current end with `kcat -C -e`.
pub fn read_all(bootstrap: &str, topic: &str) -> Result<Vec<KafkaRecord>, String> {
    let out = Command::new("kcat")
        .args([
            "-C",
            "-b",
            bootstrap,
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
        ])
        .args(["-f", FORMAT])
        .output()
        .map_err(|e| format!("kcat -C does not run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "kcat -C failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(parse_line)
        .collect())
}

/// A `kcat -C` that keeps reading `topic` and counts each `message-id` it sees.
pub struct Tail {
    child: Child,
    /// Copies read per `message-id`.
    pub seen: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Tail {
    /// Starts reading from the beginning; panics if `kcat` does not start.
    pub fn start(bootstrap: &str, topic: &str) -> Tail {
        let seen: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
        let s = Arc::clone(&seen);
        Tail::try_start_with(bootstrap, topic, move |id| {
            *s.lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(id)
                .or_default() += 1;
        })
        .map(|mut t| {
            t.seen = seen;
            t
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts reading from the beginning and calls `on_id` with the `message-id` of each
    /// record as it is read (`seen` stays empty).
    pub fn try_start_with(
        bootstrap: &str,
        topic: &str,
        mut on_id: impl FnMut(String) + Send + 'static,
    ) -> Result<Tail, String> {
        let mut child = Command::new("kcat")
            .args([
                "-C",
                "-b",
                bootstrap,
                "-t",
                topic,
                "-o",
                "beginning",
                "-u",
                "-q",
            ])
            .args(["-X", "fetch.wait.max.ms=10", "-f", FORMAT])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("kcat -C does not start: {e}"))?;
        let Some(out) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("kcat's stdout is not piped".into());
        };
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(id) = parse_line(&line).and_then(|r| r.id().map(str::to_string)) {
                    on_id(id);
                }
            }
        });
        Ok(Tail {
            child,
            seen: Arc::default(),
        })
    }

    /// Distinct ids read so far.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A region's stable address: a loopback forwarder to whichever cluster is behind it now.
/// Only the bootstrap connection goes through it; metadata then names the cluster's own
/// brokers, as a region's DNS name does when the cluster behind it is replaced.
pub struct Forwarder {
    /// The address clients bootstrap from.
    pub addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    /// Starts forwarding to `target` (none: connections are closed at once); needs a
    /// tokio runtime. Panics if it cannot bind.
    pub async fn start(target: Option<SocketAddr>) -> Forwarder {
        Forwarder::try_start(target)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts forwarding to `target`, or says why it cannot listen.
    pub async fn try_start(target: Option<SocketAddr>) -> Result<Forwarder, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("forwarder bind: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("forwarder address: {e}"))?;
        let target = Arc::new(Mutex::new(target));
        let t = Arc::clone(&target);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = *t.lock().unwrap_or_else(|e| e.into_inner());
                tokio::spawn(async move {
                    // No cluster behind it: the connection is closed at once.
                    let Some(to) = to else { return };
                    if let Ok(mut out) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Ok(Forwarder { addr, target, task })
    }

    /// Points new connections at `target` (none: closed at once).
    pub fn point_to(&self, target: Option<SocketAddr>) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
