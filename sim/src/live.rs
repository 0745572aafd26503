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
//! `lost` is computed from the ids the emulator's regions received.

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

/// Per producer: when it failed over and back, relative to the outage's start and end.
#[derive(Default)]
struct Times {
    failover_ms: Option<u32>,
    failback_ms: Option<u32>,
}

/// Runs `producers` real producers through the scenario's outage, compressed.
pub async fn run(s: &Scenario, producers: u32, opts: &RunOptions) -> Result<Report, ScenarioError> {
    if producers == 0 {
        return Err(invalid("at least one producer is needed"));
    }
    let started = std::time::Instant::now();
    // Stretched when the outage would be shorter than MIN_OUTAGE_MS: detection takes up to
    // 5 s without success (2 s request timeouts), and a shorter outage could end before a
    // loaded machine fails over at all.
    let total = s.duration.as_millis() as f64;
    let outage_share = s.regions[0]
        .outages
        .first()
        .map_or(0.25, |w| (w.to - w.from).as_millis() as f64 / total);
    let live_ms = (LIVE_SECONDS * 1000).max((MIN_OUTAGE_MS as f64 / outage_share).ceil() as u64);
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
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .map_err(invalid)?;
    let seed = opts.seed.unwrap_or(s.seed);

    let mut handles = Vec::new();
    let mut all = Vec::new();
    for i in 0..producers {
        let endpoints = if i % 2 == 0 {
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
        };
        let toml = format!("device_id = \"live-{i}\"\n[timings]\nmin_dwell = \"2s\"\n{endpoints}");
        let config = SdkConfig::from_toml_str(&toml).map_err(invalid)?;
        let p = Producer::builder(config)
            .request_timeout(Duration::from_secs(2))
            .seed(seed ^ u64::from(i))
            .build()
            .await
            .map_err(invalid)?;
        all.push(p);
    }

    let t0 = Instant::now();
    // Emulator regions and producers are up: the rest is the run itself.
    let setup_s = started.elapsed().as_secs_f64();
    let times: Arc<Mutex<Vec<Times>>> = Arc::new(Mutex::new(
        (0..producers).map(|_| Times::default()).collect(),
    ));
    for (i, p) in all.iter().enumerate() {
        // Watches the producer's events for its failover and failback.
        let mut events = p.events();
        let times = Arc::clone(&times);
        tokio::spawn(async move {
            while let Ok(e) = events.recv().await {
                let at = t0.elapsed().as_millis() as u64;
                let mut t = times.lock().unwrap_or_else(|e| e.into_inner());
                match e {
                    Event::FailedOver { .. } if at >= out_from && t[i].failover_ms.is_none() => {
                        t[i].failover_ms = Some((at - out_from) as u32);
                    }
                    Event::FailedBack { .. } if at >= out_to && t[i].failback_ms.is_none() => {
                        t[i].failback_ms = Some((at - out_to) as u32);
                    }
                    _ => {}
                }
            }
        });
        let p = p.clone();
        let [lo, hi] = s.device.payload_bytes;
        let phase = interval.mul_f64(i as f64 / f64::from(producers));
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut refused = 0u64;
            let mut next = t0 + phase;
            let mut n = 0u32;
            while next < t0 + Duration::from_millis(live_ms) {
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
        }));
    }

    tokio::time::sleep_until(t0 + Duration::from_millis(out_from)).await;
    emu["primary"].set_fault(Fault::Blackhole);
    tokio::time::sleep_until(t0 + Duration::from_millis(out_to)).await;
    emu["primary"].set_fault(Fault::Up);

    let mut accepted_ids = Vec::new();
    let mut refused = 0;
    for h in handles {
        let (ids, r) = h.await.map_err(invalid)?;
        accepted_ids.extend(ids);
        refused += r;
    }
    // Everything accepted gets its chance to arrive, then each producer stops.
    let mut snapshots = Vec::new();
    for p in &all {
        let _ = p.flush(Duration::from_secs(60)).await;
    }
    for p in all {
        snapshots.push(p.shutdown(Duration::from_secs(5)).await.map_err(invalid)?);
    }

    let primary: HashSet<String> = emu["primary"].ids().into_iter().collect();
    let secondary: HashSet<String> = emu["secondary"].ids().into_iter().collect();
    let arrived = accepted_ids
        .iter()
        .filter(|id| primary.contains(*id) || secondary.contains(*id))
        .count() as u64;
    let in_both = primary.intersection(&secondary).count() as u64;
    let dup_within: u64 = ["primary", "secondary"]
        .iter()
        .map(|r| emu[*r].stats().total.duplicates)
        .sum();
    let mut dropped = Dropped::default();
    let (mut pending, mut failovers, mut failbacks) = (0, 0, 0);
    for snap in &snapshots {
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
    let accepted = accepted_ids.len() as u64;
    let dropped_total = dropped.total();
    let times = std::mem::take(&mut *times.lock().unwrap_or_else(|e| e.into_inner()));
    let fo: Vec<u32> = times.iter().filter_map(|t| t.failover_ms).collect();
    let fb: Vec<u32> = times.iter().filter_map(|t| t.failback_ms).collect();
    let wall = started.elapsed().as_secs_f64();
    Ok(Report {
        scenario: format!("{} (live)", s.name),
        seed,
        devices: u64::from(producers),
        shards: 1,
        simulated_s: live_ms / 1000,
        accepted,
        refused,
        regions: vec!["primary".into(), "secondary".into()],
        delivered: [
            (
                "primary".to_string(),
                accepted_ids
                    .iter()
                    .filter(|id| primary.contains(*id))
                    .count() as u64,
            ),
            (
                "secondary".to_string(),
                accepted_ids
                    .iter()
                    .filter(|id| !primary.contains(*id) && secondary.contains(*id))
                    .count() as u64,
            ),
        ]
        .into_iter()
        .collect(),
        duplicates: in_both + dup_within,
        lost: accepted.saturating_sub(arrived + dropped_total + pending),
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
        wall_s: wall,
        setup_s,
        events_per_s: accepted as f64 / wall,
        records_per_s: accepted as f64 / wall,
        loop_records_per_s: accepted as f64 / (wall - setup_s).max(1e-9),
        peak_rss_bytes: crate::peak_rss(),
        peak_rss_per_device: None,
        timeline: Vec::new(),
        received: Vec::new(),
    })
}
