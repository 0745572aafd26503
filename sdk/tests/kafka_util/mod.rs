//! Kafka peers nobody here wrote, for tests, examples and benchmarks: librdkafka's mock
//! cluster (started by Debian's `kcat`) as the broker, `kcat` as the independent
//! consumer, and a loopback forwarder standing in for a region's stable address.
//!
//! A mock cluster lives inside a `kcat -P` process whose standard input is held open:
//! `-X test.mock.num.brokers=N` makes librdkafka start N brokers on ephemeral loopback
//! ports and log (level 5, on stderr) "Mock cluster enabled: ... replaced with
//! <bootstrap>". The producer asks for the topic's metadata at start, which creates it
//! (4 partitions, the mock's default). SIGKILL is a region down, SIGSTOP/SIGCONT a
//! blackhole. The mock keeps its log in memory: a killed cluster's records are gone,
//! and a new one starts empty on new ports.
#![allow(dead_code)]

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
    pub topic: String,
}

impl MockCluster {
    /// Starts a cluster of `brokers` brokers with `topic` created; panics with the reason
    /// if it does not come up within 20 s.
    pub fn start(topic: &str, brokers: u32) -> MockCluster {
        let mut child = Command::new("kcat")
            .args(["-P", "-b", "127.0.0.1:1", "-t", topic])
            .arg("-X")
            .arg(format!("test.mock.num.brokers={brokers}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kcat starts (apt-get install kcat)");
        let stderr = child.stderr.take().expect("stderr piped");
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
        let bootstrap = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("kcat printed the mock cluster's bootstrap address");
        let cluster = MockCluster {
            child,
            bootstrap,
            topic: topic.to_string(),
        };
        cluster.wait_topic(Duration::from_secs(20));
        cluster
    }

    /// The first broker's address.
    pub fn first(&self) -> SocketAddr {
        self.bootstrap
            .split(',')
            .next()
            .and_then(|a| a.parse().ok())
            .expect("a broker address")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the topic is listed with its partitions.
    fn wait_topic(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let out = Command::new("kcat")
                .args(["-L", "-b", &self.bootstrap, "-t", &self.topic, "-m", "2"])
                .output()
                .expect("kcat -L runs");
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains("partitions:") && !text.contains("partitions: 0") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "topic {} never appeared: {text}",
                self.topic
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {}", self.child.id());
    }

    /// SIGKILL: the region is gone, with everything in its log.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: connections stay open and nothing answers (a blackhole).
    pub fn stop(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`MockCluster::stop`].
    pub fn cont(&self) {
        self.signal("-CONT");
    }

    /// Every record in the topic, read by a separate `kcat` consumer to the end.
    pub fn read_all(&self) -> Vec<KafkaRecord> {
        read_all(&self.bootstrap, &self.topic)
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
    pub partition: u32,
    pub key: String,
    pub headers: BTreeMap<String, String>,
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
pub fn read_all(bootstrap: &str, topic: &str) -> Vec<KafkaRecord> {
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
        .expect("kcat -C runs");
    assert!(
        out.status.success(),
        "kcat -C failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(parse_line)
        .collect()
}

/// A `kcat -C` that keeps reading `topic` and counts each `message-id` it sees.
pub struct Tail {
    child: Child,
    pub seen: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Tail {
    pub fn start(bootstrap: &str, topic: &str) -> Tail {
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
            .expect("kcat -C starts");
        let out = child.stdout.take().expect("stdout piped");
        let seen: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
        let s = Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(id) = parse_line(&line).and_then(|r| r.id().map(str::to_string)) {
                    *s.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(id)
                        .or_default() += 1;
                }
            }
        });
        Tail { child, seen }
    }

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
    pub addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    pub async fn start(target: Option<SocketAddr>) -> Forwarder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
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
        Forwarder { addr, target, task }
    }

    pub fn point_to(&self, target: Option<SocketAddr>) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
