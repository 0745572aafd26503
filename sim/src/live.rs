//! Live mode: real SDK producers, in one process, against emulator regions on loopback.
//!
//! The scenario's day is compressed into [`LIVE_SECONDS`], or longer so that its first
//! primary outage lasts at least 10 s (failover must be detected inside it, even on a
//! loaded machine): that outage becomes a blackhole on the emulator's primary region
//! (requests get no answer) over the same share of the run, and the send interval shrinks
//! by the same factor (to at least 50 ms). Even
//! producers speak Event Hubs REST, odd ones MQTT 5. Each has a memory outbox and the
//! default failover settings except a 2 s request timeout and a 2 s minimum dwell, so the
//! compressed run can fail back.
//!
//! `lost` is computed from the ids the emulator's regions received: an accepted id that
//! reached neither region, and that its producer did not report dropped, is lost.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use twinhub::{Event, Producer, SdkConfig};
use twinhub_emulator::{Emulator, EmulatorConfig, Fault};

use crate::report::{Dropped, LinkUse, Percentiles, Report};
use crate::{RunOptions, Scenario, ScenarioError};

/// Length of a live run's sending phase (longer when the outage needs it).
pub const LIVE_SECONDS: u64 = 20;
/// The compressed outage lasts at least this long (ms); the whole run is stretched to fit.
const MIN_OUTAGE_MS: u64 = 10_000;

fn invalid(e: impl std::fmt::Display) -> ScenarioError {
    ScenarioError::Invalid(format!("live run: {e}"))
}

/// Per producer: when it failed over and back, relative to the outage's start and end,
/// and the ids it reported dropped.
#[derive(Default)]
struct Watched {
    failover_ms: Option<u32>,
    failback_ms: Option<u32>,
    dropped: Vec<String>,
}

/// The scenario's day compressed into a live run: all in milliseconds from the start.
struct Timing {
    live_ms: u64,
    out_from: u64,
    out_to: u64,
    interval: Duration,
}

impl Timing {
    /// Stretched when the outage would be shorter than MIN_OUTAGE_MS: detection takes up
    /// to 5 s without success (2 s request timeouts), and a shorter outage could end before
    /// a loaded machine fails over at all.
    fn of(s: &Scenario) -> Timing {
        let total = s.duration.as_millis() as f64;
        let outage_share = s.regions[0]
            .outages
            .first()
            .map_or(0.25, |w| (w.to - w.from).as_millis() as f64 / total);
        let live_ms =
            (LIVE_SECONDS * 1000).max((MIN_OUTAGE_MS as f64 / outage_share).ceil() as u64);
        let scale = total / live_ms as f64;
        let (out_from, out_to) = match s.regions[0].outages.first() {
            Some(w) => (
                (w.from.as_millis() as f64 / scale) as u64,
                (w.to.as_millis() as f64 / scale) as u64,
            ),
            None => (live_ms / 4, live_ms / 2),
        };
        let interval =
            Duration::from_millis(((s.device.interval.as_millis() as f64 / scale) as u64).max(50));
        Timing {
            live_ms,
            out_from,
            out_to,
            interval,
        }
    }
}

/// Producer `i`'s two endpoints: even producers speak Event Hubs REST, odd ones MQTT 5.
fn endpoints(emu: &Emulator, i: u32) -> String {
    if i.is_multiple_of(2) {
        format!(
            "[[endpoint]]\nname = \"primary\"\nprotocol = \"event-hubs\"\nconnection_string = \"{}\"\n\
             [[endpoint]]\nname = \"secondary\"\nprotocol = \"event-hubs\"\nconnection_string = \"{}\"\n",
            emu["primary"].event_hubs_connection_string(),
            emu["secondary"].event_hubs_connection_string()
        )
    } else {
        format!(
            "[[endpoint]]\nname = \"primary\"\nprotocol = \"mqtt\"\nurl = \"mqtt://{}\"\ntopic = \"telemetry/{{device_id}}\"\n\
             [[endpoint]]\nname = \"secondary\"\nprotocol = \"mqtt\"\nurl = \"mqtt://{}\"\ntopic = \"telemetry/{{device_id}}\"\n",
            emu["primary"].mqtt_addr(),
            emu["secondary"].mqtt_addr()
        )
    }
}

/// Builds the producers, each on its own seed.
async fn producers(emu: &Emulator, n: u32, seed: u64) -> Result<Vec<Producer>, ScenarioError> {
    let mut all = Vec::new();
    for i in 0..n {
        let toml = format!(
            "device_id = \"live-{i}\"\n[timings]\nmin_dwell = \"2s\"\n{}",
            endpoints(emu, i)
        );
        let config = SdkConfig::from_toml_str(&toml).map_err(invalid)?;
        let p = Producer::builder(config)
            .request_timeout(Duration::from_secs(2))
            .seed(seed ^ u64::from(i))
            .build()
            .await
            .map_err(invalid)?;
        all.push(p);
    }
    Ok(all)
}

/// Watches a producer's events for its failover and failback and the records it drops.
fn watch(p: &Producer, t0: Instant, t: &Timing, into: Arc<Mutex<Watched>>) {
    let mut events = p.events();
    let (out_from, out_to) = (t.out_from, t.out_to);
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            let at = t0.elapsed().as_millis() as u64;
            let mut w = into.lock().unwrap_or_else(|e| e.into_inner());
            match e {
                Event::FailedOver { .. } if at >= out_from && w.failover_ms.is_none() => {
                    w.failover_ms = Some((at - out_from) as u32);
                }
                Event::FailedBack { .. } if at >= out_to && w.failback_ms.is_none() => {
                    w.failback_ms = Some((at - out_to) as u32);
                }
                Event::Dropped { id, .. } => w.dropped.push(id.to_string()),
                _ => {}
            }
        }
    });
}

/// Sends one record every interval (sizes cycling through the scenario's payload range)
/// until the run ends; returns the ids accepted and how many sends were refused.
async fn send_until(
    p: Producer,
    [lo, hi]: [u32; 2],
    start: Instant,
    interval: Duration,
    end: Instant,
) -> (Vec<String>, u64) {
    let mut ids = Vec::new();
    let mut refused = 0u64;
    let mut next = start;
    let mut n = 0u32;
    while next < end {
        tokio::time::sleep_until(next).await;
        let len = (lo + n % (hi - lo + 1)) as usize;
        match p.send(vec![b'0' + (n % 10) as u8; len]).await {
            Ok(id) => ids.push(id.to_string()),
            Err(_) => refused += 1,
        }
        n += 1;
        next += interval;
    }
    (ids, refused)
}

/// What the producers accepted, refused and saw, once every sender is done.
struct Sent {
    accepted: Vec<String>,
    refused: u64,
    watched: Vec<Watched>,
}

/// Runs the senders through the outage (a blackhole on the primary region) and collects
/// what they accepted.
async fn drive(
    emu: &Emulator,
    all: &[Producer],
    s: &Scenario,
    t: &Timing,
) -> Result<Sent, ScenarioError> {
    let t0 = Instant::now();
    let end = t0 + Duration::from_millis(t.live_ms);
    let producers = all.len() as u32;
    let mut handles = Vec::new();
    let mut watched = Vec::new();
    for (i, p) in all.iter().enumerate() {
        let w = Arc::new(Mutex::new(Watched::default()));
        watch(p, t0, t, Arc::clone(&w));
        watched.push(w);
        let phase = t.interval.mul_f64(i as f64 / f64::from(producers));
        handles.push(tokio::spawn(send_until(
            p.clone(),
            s.device.payload_bytes,
            t0 + phase,
            t.interval,
            end,
        )));
    }
    tokio::time::sleep_until(t0 + Duration::from_millis(t.out_from)).await;
    emu["primary"].set_fault(Fault::Blackhole);
    tokio::time::sleep_until(t0 + Duration::from_millis(t.out_to)).await;
    emu["primary"].set_fault(Fault::Up);

    let mut sent = Sent {
        accepted: Vec::new(),
        refused: 0,
        watched: Vec::new(),
    };
    for h in handles {
        let (ids, r) = h.await.map_err(invalid)?;
        sent.accepted.extend(ids);
        sent.refused += r;
    }
    // Everything accepted gets its chance to arrive (and each drop its event) first.
    for p in all {
        let _ = p.flush(Duration::from_secs(60)).await;
    }
    sent.watched = watched
        .iter()
        .map(|w| std::mem::take(&mut *w.lock().unwrap_or_else(|e| e.into_inner())))
        .collect();
    Ok(sent)
}

/// Runs `producers` real producers through the scenario's outage, compressed.
pub async fn run(s: &Scenario, producers: u32, opts: &RunOptions) -> Result<Report, ScenarioError> {
    if producers == 0 {
        return Err(invalid("at least one producer is needed"));
    }
    let started = std::time::Instant::now();
    let timing = Timing::of(s);
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .map_err(invalid)?;
    let seed = opts.seed.unwrap_or(s.seed);
    let all = self::producers(&emu, producers, seed).await?;
    // Emulator regions and producers are up: the rest is the run itself.
    let setup_s = started.elapsed().as_secs_f64();
    let sent = drive(&emu, &all, s, &timing).await?;
    let mut snapshots = Vec::new();
    for p in all {
        snapshots.push(p.shutdown(Duration::from_secs(5)).await.map_err(invalid)?);
    }
    let mut r = tally(&emu, &sent, &snapshots);
    r.scenario = format!("{} (live)", s.name);
    r.seed = seed;
    r.simulated_s = timing.live_ms / 1000;
    r.wall_s = started.elapsed().as_secs_f64();
    r.setup_s = setup_s;
    r.events_per_s = r.accepted as f64 / r.wall_s;
    r.records_per_s = r.events_per_s;
    r.loop_records_per_s = r.accepted as f64 / (r.wall_s - setup_s).max(1e-9);
    Ok(r)
}

/// The report, from the ids the emulator's regions received: an accepted id that reached
/// neither region and that its producer did not report dropped is lost.
fn tally(emu: &Emulator, sent: &Sent, snapshots: &[twinhub::Snapshot]) -> Report {
    let primary: HashSet<String> = emu["primary"].ids().into_iter().collect();
    let secondary: HashSet<String> = emu["secondary"].ids().into_iter().collect();
    let reported: HashSet<&str> = sent
        .watched
        .iter()
        .flat_map(|w| w.dropped.iter().map(String::as_str))
        .collect();
    let (mut at_primary, mut at_secondary, mut missing) = (0u64, 0u64, 0u64);
    for id in &sent.accepted {
        if primary.contains(id) {
            at_primary += 1;
        } else if secondary.contains(id) {
            at_secondary += 1;
        } else if !reported.contains(id.as_str()) {
            missing += 1;
        }
    }
    let in_both = primary.intersection(&secondary).count() as u64;
    let dup_within: u64 = ["primary", "secondary"]
        .iter()
        .map(|r| emu[*r].stats().total.duplicates)
        .sum();
    let mut dropped = Dropped::default();
    let (mut pending, mut failovers, mut failbacks) = (0, 0, 0);
    for snap in snapshots {
        let st = &snap.stats;
        dropped.expired += st.dropped.expired;
        dropped.evicted += st.dropped.evicted;
        dropped.too_large += st.dropped.too_large;
        dropped.malformed += st.dropped.malformed;
        dropped.corrupt += st.dropped.corrupt;
        pending += st.pending;
        failovers += u64::from(st.failovers);
        failbacks += u64::from(st.failbacks);
    }
    let fo: Vec<u32> = sent.watched.iter().filter_map(|t| t.failover_ms).collect();
    let fb: Vec<u32> = sent.watched.iter().filter_map(|t| t.failback_ms).collect();
    let accepted = sent.accepted.len() as u64;
    Report {
        scenario: String::new(),
        seed: 0,
        devices: snapshots.len() as u64,
        shards: 1,
        simulated_s: 0,
        accepted,
        refused: sent.refused,
        regions: vec!["primary".into(), "secondary".into()],
        delivered: [
            ("primary".to_string(), at_primary),
            ("secondary".to_string(), at_secondary),
        ]
        .into_iter()
        .collect(),
        duplicates: in_both + dup_within,
        // Still pending at the end is not lost: the producers say how many remain.
        lost: missing.saturating_sub(pending),
        pending_at_end: pending,
        dropped,
        throttled: 0,
        failovers,
        failbacks,
        reboots: 0,
        failover_time: Percentiles::of(fo),
        failback_time: Percentiles::of(fb),
        links: [(
            "default".to_string(),
            LinkUse {
                bytes: snapshots.iter().map(|s| s.stats.link_bytes[0]).sum(),
                spend: 0.0,
                budget_bytes: None,
                budget_window_s: None,
                max_per_device: 0,
            },
        )]
        .into_iter()
        .collect(),
        budget_exhausted: 0,
        peak_pending_per_device: 0,
        anomalies: 0,
        engines_agree: true,
        events_lost: 0,
        bytes_per_device: 0,
        store_bytes: 0,
        events: accepted,
        wall_s: 0.0,
        setup_s: 0.0,
        events_per_s: 0.0,
        records_per_s: 0.0,
        loop_records_per_s: 0.0,
        peak_rss_bytes: crate::peak_rss(),
        peak_rss_per_device: None,
        timeline: Vec::new(),
        received: Vec::new(),
    }
}
