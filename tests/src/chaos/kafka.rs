//! Kafka's two regions for the chaos rows: a librdkafka mock cluster per region, behind a
//! forwarder that is the region's stable bootstrap address, read by a `kcat` consumer
//! that notes every `message-id` with its arrival time.
//!
//! Faults are done to the cluster's process: SIGKILL is a region down (`kill`,
//! `both-down`), a new cluster behind the same forwarder is the region back up (the mock
//! cannot be told its ports); SIGSTOP/SIGCONT is a blackhole, and at 1 Hz a flap. The mock
//! keeps its log in memory only, so a killed cluster takes the records it held with it;
//! [`KafkaHub::loses_log`] tells the runner to let the consumer read them first, as a
//! real cluster's disks and replicas would keep them.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use twinhub_emulator::Fault;
use twinhub_testkit::Arrivals;
use twinhub_testkit::kafka::{Forwarder, MockCluster, Tail, kcat_available};

use super::plan::Action;
use super::tally::now_ms;

/// The topic of both regions.
const TOPIC: &str = "telemetry";
/// Brokers per cluster: leaders spread over several, as in a real cluster.
const BROKERS: u32 = 3;
/// The shortest stall of a flap. A stopped process only delays replies, so a stall
/// shorter than the runner's 2 s request timeout fails nothing and the producer never
/// sees the flap; each stall is made long enough to fail the sends it holds.
const FLAP_MIN_MS: u64 = 2_500;

/// One region: the cluster behind its address now, if any, and what its consumers read.
struct Region {
    forwarder: Forwarder,
    cluster: Option<MockCluster>,
    tail: Option<Tail>,
    /// Every id read from this region, across its clusters.
    seen: Arc<Mutex<Arrivals>>,
    flapper: Option<Flapper>,
}

impl Region {
    async fn start() -> Result<Region, String> {
        let forwarder = Forwarder::try_start(None).await?;
        let mut region = Region {
            forwarder,
            cluster: None,
            tail: None,
            seen: Arc::default(),
            flapper: None,
        };
        region.bring_up()?;
        Ok(region)
    }

    /// A new cluster behind the region's address, with a consumer on it.
    fn bring_up(&mut self) -> Result<(), String> {
        let cluster = MockCluster::try_start(TOPIC, BROKERS)?;
        let seen = Arc::clone(&self.seen);
        let tail = Tail::try_start_with(&cluster.bootstrap, TOPIC, move |id| {
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .arrive(id, now_ms());
        })?;
        self.forwarder.point_to(Some(cluster.first()));
        self.cluster = Some(cluster);
        self.tail = Some(tail);
        Ok(())
    }

    /// SIGKILL; new connections to the region's address are closed at once.
    fn kill(&mut self) {
        self.stop_flapping();
        self.forwarder.point_to(None);
        if let Some(mut c) = self.cluster.take() {
            c.kill();
        }
        self.tail = None;
    }

    fn stop_flapping(&mut self) {
        if let Some(f) = self.flapper.take() {
            f.finish();
        }
    }

    /// Whatever the fault was, the region answers again.
    fn up(&mut self) -> Result<(), String> {
        self.stop_flapping();
        match &self.cluster {
            Some(c) => c.cont(),
            None => self.bring_up(),
        }
    }

    fn set(&mut self, fault: Fault) -> Result<(), String> {
        match fault {
            Fault::Up => self.up(),
            Fault::Down => {
                self.kill();
                Ok(())
            }
            Fault::Blackhole => {
                self.stop_flapping();
                self.cluster.as_ref().map_or(Ok(()), MockCluster::stop)
            }
            Fault::Flap { period_ms } => {
                self.stop_flapping();
                if let Some(c) = &self.cluster {
                    self.flapper = Some(Flapper::start(c.pid(), period_ms.max(FLAP_MIN_MS)));
                }
                Ok(())
            }
            other => Err(format!("kafka regions have no {other:?} fault")),
        }
    }
}

/// A thread that stops and continues a cluster's process in turn, starting stopped.
struct Flapper {
    done: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Flapper {
    fn start(pid: u32, period_ms: u64) -> Flapper {
        let (done, rx) = mpsc::channel::<()>();
        let period = Duration::from_millis(period_ms.max(1));
        let thread = std::thread::spawn(move || {
            let signal = |sig: &str| {
                let _ = std::process::Command::new("kill")
                    .args([sig, &pid.to_string()])
                    .status();
            };
            let mut stopped = false;
            loop {
                stopped = !stopped;
                signal(if stopped { "-STOP" } else { "-CONT" });
                // A message or a closed channel ends the flapping.
                if !matches!(
                    rx.recv_timeout(period),
                    Err(mpsc::RecvTimeoutError::Timeout)
                ) {
                    break;
                }
            }
            signal("-CONT");
        });
        Flapper { done, thread }
    }

    /// Ends the flapping with the process running.
    fn finish(self) {
        let _ = self.done.send(());
        let _ = self.thread.join();
    }
}

/// Kafka's two regions.
pub(super) struct KafkaHub {
    regions: Vec<Region>,
    /// What the faults were here, where they differ from the plan's words.
    note: Option<String>,
}

impl KafkaHub {
    /// Two regions, each with its cluster up and its consumer reading.
    pub(super) async fn start(regions: usize) -> Result<KafkaHub, String> {
        if !kcat_available() {
            return Err("kafka rows need kcat (apt-get install kcat)".into());
        }
        let mut out = Vec::new();
        for _ in 0..regions {
            out.push(Region::start().await?);
        }
        Ok(KafkaHub {
            regions: out,
            note: None,
        })
    }

    /// The endpoint settings of region `i` (its stable address, not its brokers').
    pub(super) fn endpoint_toml(&self, i: usize) -> String {
        format!(
            "protocol = \"kafka\"\nbootstrap = \"{}\"\ntopic = \"{TOPIC}\"\n",
            self.regions[i].forwarder.addr
        )
    }

    /// Applies `action`; starting a cluster blocks for about a second, so inside the
    /// runtime it runs where blocking is allowed.
    pub(super) fn act(&mut self, action: Action) -> Result<(), String> {
        if let Action::Fault(_, Fault::Flap { period_ms }) = action {
            self.note = Some(format!(
                "flap: SIGSTOP and SIGCONT every {} ms",
                period_ms.max(FLAP_MIN_MS)
            ));
        }
        let mut apply = || match action {
            Action::Fault(i, f) => self.regions[i].set(f),
            Action::Kill(i) => {
                self.regions[i].kill();
                Ok(())
            }
            Action::Restart(i) => self.regions[i].up(),
            Action::FaultFor(..) => Err("kafka regions cannot single out a source address".into()),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::block_in_place(apply)
        } else {
            apply()
        }
    }

    /// How the faults differed from the plan's words, if they did.
    pub(super) fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Whether `action` destroys a cluster and with it the records only its memory holds.
    pub(super) fn loses_log(action: &Action) -> bool {
        matches!(action, Action::Kill(_) | Action::Fault(_, Fault::Down))
    }

    /// Every id read from every cluster either region had, with arrival times.
    pub(super) fn arrivals(&self) -> Arrivals {
        let mut out = Arrivals::default();
        for r in &self.regions {
            out.merge(&r.seen.lock().unwrap_or_else(|e| e.into_inner()));
        }
        out
    }
}

impl Drop for KafkaHub {
    fn drop(&mut self) {
        for r in &mut self.regions {
            r.stop_flapping();
        }
    }
}
