//! What a run found: counts from the world's own account, latencies, the timeline, cost.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::scenario::Scenario;

/// Counters one shard accumulates; merged into a [`Report`].
#[derive(Debug, Clone, Default)]
pub(crate) struct ShardTally {
    pub devices: u64,
    pub events: u64,
    pub accepted: u64,
    pub refused: u64,
    /// Records resolved: first delivery to any region, or a drop with a reason.
    pub resolved: u64,
    pub delivered: Vec<u64>,
    pub duplicates: u64,
    pub dropped: [u64; 5],
    pub dropped_after_delivery: u64,
    pub out_of_window: u64,
    pub corrupt: u64,
    /// Enqueues a device's store refused for a reason other than room.
    pub store_errors: u64,
    pub throttled: u64,
    pub failovers: u64,
    pub failbacks: u64,
    pub reboots: u64,
    pub budget_exhausted: u64,
    pub link_bytes: Vec<u64>,
    /// Per link: the most bytes one device sent over it (budgeted links only).
    pub link_max_per_device: Vec<u64>,
    pub failover_ms: Vec<u32>,
    pub failback_ms: Vec<u32>,
    pub delivered_per_minute: Vec<Vec<u64>>,
    pub at_risk: Vec<u64>,
    pub costly_bytes_per_minute: Vec<u64>,
    pub peak_pending: u64,
    pub pending_at_end: u64,
    pub engine_delivered: u64,
    pub engine_dropped: u64,
    /// Events the engines could not queue (their queue was full).
    pub events_lost: u64,
    pub device_bytes: u64,
    /// Wall seconds this shard spent building its devices (not part of determinism).
    pub setup_s: f64,
    /// Every id received, with `RunOptions::ledger`.
    pub received: Vec<Received>,
}

impl ShardTally {
    pub fn new(regions: usize, links: usize, minutes: usize) -> Self {
        ShardTally {
            delivered: vec![0; regions],
            link_bytes: vec![0; links],
            link_max_per_device: vec![0; links],
            delivered_per_minute: vec![vec![0; regions]; minutes],
            at_risk: vec![0; minutes],
            costly_bytes_per_minute: vec![0; minutes],
            ..Default::default()
        }
    }

    pub fn absorb(&mut self, o: ShardTally) {
        let add = |a: &mut Vec<u64>, b: &[u64]| {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        };
        self.devices += o.devices;
        // Shards build their devices at the same time: the slowest one is the setup.
        self.setup_s = self.setup_s.max(o.setup_s);
        self.events += o.events;
        self.accepted += o.accepted;
        self.refused += o.refused;
        self.resolved += o.resolved;
        add(&mut self.delivered, &o.delivered);
        self.duplicates += o.duplicates;
        for (a, b) in self.dropped.iter_mut().zip(o.dropped) {
            *a += b;
        }
        self.dropped_after_delivery += o.dropped_after_delivery;
        self.out_of_window += o.out_of_window;
        self.corrupt += o.corrupt;
        self.store_errors += o.store_errors;
        self.throttled += o.throttled;
        self.failovers += o.failovers;
        self.reboots += o.reboots;
        self.failbacks += o.failbacks;
        self.budget_exhausted += o.budget_exhausted;
        add(&mut self.link_bytes, &o.link_bytes);
        for (a, b) in self
            .link_max_per_device
            .iter_mut()
            .zip(&o.link_max_per_device)
        {
            *a = (*a).max(*b);
        }
        self.failover_ms.extend(o.failover_ms);
        self.failback_ms.extend(o.failback_ms);
        for (a, b) in self
            .delivered_per_minute
            .iter_mut()
            .zip(&o.delivered_per_minute)
        {
            add(a, b);
        }
        add(&mut self.at_risk, &o.at_risk);
        add(
            &mut self.costly_bytes_per_minute,
            &o.costly_bytes_per_minute,
        );
        self.peak_pending = self.peak_pending.max(o.peak_pending);
        self.pending_at_end += o.pending_at_end;
        self.engine_delivered += o.engine_delivered;
        self.engine_dropped += o.engine_dropped;
        self.events_lost += o.events_lost;
        self.device_bytes = self.device_bytes.max(o.device_bytes);
        self.received.extend(o.received);
    }
}

/// One record as a region received it (kept with [`RunOptions::ledger`]).
///
/// [`RunOptions::ledger`]: crate::RunOptions::ledger
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Received {
    /// The device's number in the fleet.
    pub device: u32,
    /// The id's epoch.
    pub epoch: u32,
    /// The id's sequence number within its epoch.
    pub seq: u64,
    /// The region (index in scenario order).
    pub region: u8,
    /// When it arrived (simulated ms).
    pub at_ms: u64,
    /// The epoch the device was running when the record arrived: larger than `epoch` for
    /// a record that waited in the outbox across a reboot.
    pub boot_epoch: u32,
}

/// Latency percentiles in milliseconds over the devices measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    /// Devices measured.
    pub count: u64,
    /// Median.
    pub p50_ms: u64,
    /// 99th percentile.
    pub p99_ms: u64,
    /// Largest.
    pub max_ms: u64,
}

impl Percentiles {
    pub(crate) fn of(mut v: Vec<u32>) -> Self {
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_unstable();
        let at = |q: f64| u64::from(v[((v.len() - 1) as f64 * q).round() as usize]);
        Percentiles {
            count: v.len() as u64,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// Records dropped by the engines' policies, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Dropped {
    /// Older than their class's TTL.
    pub expired: u64,
    /// Pushed out of a full store by a record at least as important.
    pub evicted: u64,
    /// Larger than an endpoint accepts.
    pub too_large: u64,
    /// Refused by a hub as malformed.
    pub malformed: u64,
    /// Failed its check when read back from the store.
    pub corrupt: u64,
}

impl Dropped {
    /// All drops.
    pub fn total(&self) -> u64 {
        self.expired + self.evicted + self.too_large + self.malformed + self.corrupt
    }
}

/// Bytes and spend on one link.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkUse {
    /// Bytes sent over it (frames, including failed attempts).
    pub bytes: u64,
    /// `bytes` at the link's price.
    pub spend: f64,
    /// The link's budget per window in bytes, if any.
    pub budget_bytes: Option<u64>,
    /// The budget window in seconds, if any.
    pub budget_window_s: Option<u64>,
    /// The most bytes one device sent over it (counted for links with a budget, else 0):
    /// within one budget window, never above `budget_bytes`.
    pub max_per_device: u64,
}

/// One minute of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Minute {
    /// Minute number from the start.
    pub minute: u64,
    /// Records first delivered this minute, per region (in scenario order).
    pub delivered: Vec<u64>,
    /// Records accepted and not yet resolved at the start of the minute (data at risk).
    pub pending: u64,
    /// Bytes delivered over costly links this minute.
    pub costly_bytes: u64,
}

/// The result of a run, as JSON and as a terminal summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Seed used.
    pub seed: u64,
    /// Devices simulated.
    pub devices: u64,
    /// Shards (threads) the fleet was split into.
    pub shards: u32,
    /// Simulated seconds.
    pub simulated_s: u64,
    /// Records the engines accepted.
    pub accepted: u64,
    /// Records an engine refused at enqueue (store full under `reject`).
    pub refused: u64,
    /// Region names in the scenario's order (the order of each minute's `delivered`).
    pub regions: Vec<String>,
    /// Unique records received, per region name.
    pub delivered: BTreeMap<String, u64>,
    /// Arrivals of a record a region (any region) had already received.
    pub duplicates: u64,
    /// Accepted records that were neither received, dropped with a reason, nor still
    /// pending: computed from what the regions received. Must be 0.
    pub lost: u64,
    /// Records still in a device's store at the end.
    pub pending_at_end: u64,
    /// Drops by reason.
    pub dropped: Dropped,
    /// Requests a region throttled.
    pub throttled: u64,
    /// Failover events over the fleet.
    pub failovers: u64,
    /// Failback events over the fleet.
    pub failbacks: u64,
    /// Device reboots (engines restarted on their stores).
    pub reboots: u64,
    /// Per device: from its first send attempt after the primary's outage began to its
    /// first delivery to another region.
    pub failover_time: Percentiles,
    /// Per failed-over device: from the end of the outage to its first delivery to the
    /// primary again.
    pub failback_time: Percentiles,
    /// Bytes and spend per link name.
    pub links: BTreeMap<String, LinkUse>,
    /// Times some device found a costly link's budget exhausted.
    pub budget_exhausted: u64,
    /// Most records pending in one device at once.
    pub peak_pending_per_device: u64,
    /// Checks that must stay 0: arrivals beyond a device's tracking window, frames that
    /// failed their CRC, drops of already-delivered records, enqueues a store refused for
    /// a reason other than room.
    pub anomalies: u64,
    /// Whether the engines' own counts agree with the world's.
    pub engines_agree: bool,
    /// Events the engines dropped because their queue was full before the world polled
    /// it: a drop whose event is lost is one the world cannot attribute to its record, so
    /// it shows as lost. Must be 0.
    pub events_lost: u64,
    /// Engine and world state per device in bytes (the engine, its store's fixed part, the
    /// account); a store's records take 16 bytes each on top while it holds them.
    pub bytes_per_device: u64,
    /// Each device's flash outbox in bytes.
    pub store_bytes: u64,
    /// Events processed.
    pub events: u64,
    /// Wall time in seconds (not part of determinism).
    pub wall_s: f64,
    /// Of `wall_s`, the seconds spent building the devices' engines before the first
    /// event (the slowest shard's; not part of determinism).
    pub setup_s: f64,
    /// Events per wall second.
    pub events_per_s: f64,
    /// Records through their whole life per wall second, setup included.
    pub records_per_s: f64,
    /// Records through their whole life per wall second of the event loop: `accepted`
    /// over `wall_s - setup_s`.
    pub loop_records_per_s: f64,
    /// Peak resident memory of the process in bytes, where the OS tells.
    pub peak_rss_bytes: Option<u64>,
    /// `peak_rss_bytes` over the devices: what a device costs the whole process.
    pub peak_rss_per_device: Option<u64>,
    /// The timeline, one entry per simulated minute.
    pub timeline: Vec<Minute>,
    /// Every record id the regions received, arrivals in each shard's order, shards one
    /// after another: empty unless the run kept a ledger ([`RunOptions::ledger`]). Not
    /// written to the JSON report.
    ///
    /// [`RunOptions::ledger`]: crate::RunOptions::ledger
    #[serde(skip)]
    pub received: Vec<Received>,
}

impl Report {
    pub(crate) fn from_tally(s: &Scenario, t: ShardTally) -> Report {
        let delivered = s
            .regions
            .iter()
            .zip(&t.delivered)
            .map(|(r, n)| (r.name.clone(), *n))
            .collect();
        let links = s
            .links
            .iter()
            .zip(t.link_bytes.iter().zip(&t.link_max_per_device))
            .map(|(l, (b, max))| {
                (
                    l.name.clone(),
                    LinkUse {
                        bytes: *b,
                        spend: *b as f64 / f64::from(1u32 << 20) * l.price_per_mib,
                        budget_bytes: l.budget.map(|b| b.bytes),
                        budget_window_s: l.budget.map(|b| b.window.as_millis() / 1000),
                        max_per_device: *max,
                    },
                )
            })
            .collect();
        let timeline = (0..t.at_risk.len())
            .map(|m| Minute {
                minute: m as u64,
                delivered: t.delivered_per_minute[m].clone(),
                pending: t.at_risk[m],
                costly_bytes: t.costly_bytes_per_minute[m],
            })
            .collect();
        let world_delivered: u64 = t.delivered.iter().sum();
        let dropped: u64 = t.dropped.iter().sum();
        Report {
            scenario: s.name.clone(),
            seed: s.seed,
            devices: t.devices,
            shards: s.shards,
            simulated_s: s.duration.as_secs(),
            accepted: t.accepted,
            refused: t.refused,
            regions: s.regions.iter().map(|r| r.name.clone()).collect(),
            delivered,
            duplicates: t.duplicates,
            lost: t.accepted.saturating_sub(t.resolved + t.pending_at_end),
            pending_at_end: t.pending_at_end,
            dropped: Dropped {
                expired: t.dropped[0],
                evicted: t.dropped[1],
                too_large: t.dropped[2],
                malformed: t.dropped[3],
                corrupt: t.dropped[4],
            },
            throttled: t.throttled,
            failovers: t.failovers,
            failbacks: t.failbacks,
            reboots: t.reboots,
            failover_time: Percentiles::of(t.failover_ms),
            failback_time: Percentiles::of(t.failback_ms),
            links,
            budget_exhausted: t.budget_exhausted,
            peak_pending_per_device: t.peak_pending,
            anomalies: t.out_of_window + t.corrupt + t.dropped_after_delivery + t.store_errors,
            engines_agree: t.engine_delivered == world_delivered && t.engine_dropped == dropped,
            events_lost: t.events_lost,
            bytes_per_device: t.device_bytes,
            store_bytes: s.device.store,
            events: t.events,
            wall_s: 0.0,
            setup_s: t.setup_s,
            events_per_s: 0.0,
            records_per_s: 0.0,
            loop_records_per_s: 0.0,
            peak_rss_bytes: None,
            peak_rss_per_device: None,
            timeline,
            received: t.received,
        }
    }

    /// The report without its wall-clock fields, for comparing runs.
    pub fn deterministic(&self) -> Report {
        Report {
            wall_s: 0.0,
            setup_s: 0.0,
            events_per_s: 0.0,
            records_per_s: 0.0,
            loop_records_per_s: 0.0,
            peak_rss_bytes: None,
            peak_rss_per_device: None,
            ..self.clone()
        }
    }

    /// A short human summary.
    pub fn summary(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{}: {} devices, {} simulated, seed {}",
            self.scenario,
            self.devices,
            hms(self.simulated_s),
            self.seed
        );
        let regions: Vec<String> = self
            .delivered
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            o,
            "  records: accepted {}, delivered {} ({}), pending {}, duplicates {}",
            self.accepted,
            self.delivered.values().sum::<u64>(),
            regions.join(", "),
            self.pending_at_end,
            self.duplicates
        );
        let d = self.dropped;
        let _ = writeln!(
            o,
            "  LOST {} · dropped: expired {}, evicted {}, too large {}, malformed {}, corrupt {} · refused {}",
            self.lost, d.expired, d.evicted, d.too_large, d.malformed, d.corrupt, self.refused
        );
        if self.anomalies > 0 || self.events_lost > 0 || !self.engines_agree {
            let _ = writeln!(
                o,
                "  ANOMALIES {} · engine events lost {} · engines agree {}",
                self.anomalies, self.events_lost, self.engines_agree
            );
        }
        let f = self.failover_time;
        let b = self.failback_time;
        let _ = writeln!(
            o,
            "  failover per device: p50 {} p99 {} max {} ({} devices) · failback p50 {} p99 {} max {}",
            secs(f.p50_ms),
            secs(f.p99_ms),
            secs(f.max_ms),
            f.count,
            secs(b.p50_ms),
            secs(b.p99_ms),
            secs(b.max_ms)
        );
        if self.reboots > 0 {
            let _ = writeln!(o, "  device reboots {}", self.reboots);
        }
        for (name, l) in &self.links {
            let budget = match (l.budget_bytes, l.budget_window_s) {
                (Some(b), Some(w)) => format!(
                    " (budget {b} B per {} per device; most by one device {} B)",
                    hms(w),
                    l.max_per_device
                ),
                _ => String::new(),
            };
            let _ = writeln!(
                o,
                "  link {name}: {} bytes, spend {:.2}{budget}",
                l.bytes, l.spend
            );
        }
        let _ = writeln!(
            o,
            "  peak pending per device {} · {} events in {:.1} s ({:.2} M events/s, {:.2} M records/s; \
             {:.2} M records/s after {:.1} s building the devices){}",
            self.peak_pending_per_device,
            self.events,
            self.wall_s,
            self.events_per_s / 1e6,
            self.records_per_s / 1e6,
            self.loop_records_per_s / 1e6,
            self.setup_s,
            match self.peak_rss_bytes {
                Some(r) => format!(
                    " · peak RSS {} MiB ({} B per device)",
                    r >> 20,
                    self.peak_rss_per_device.unwrap_or(0)
                ),
                None => String::new(),
            }
        );
        let _ = writeln!(
            o,
            "  device: {} B of engine and account, a {} KiB flash outbox at 16 B of RAM per record held",
            self.bytes_per_device,
            self.store_bytes >> 10
        );
        o
    }
}

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

fn hms(s: u64) -> String {
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}
