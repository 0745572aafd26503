//! A scenario validated into the plan a run follows: the engine configuration every device
//! shares, the region and link models, and the limits of the run.
//!
//! Loading a scenario ([`Scenario::from_toml_str`]) builds its plan once to check it; a
//! run builds it again after applying its options (device count, seed).

use std::path::Path;
use std::time::Duration;

use twinhub_core::{
    Class, ClassSet, Config, Duration as EDuration, EndpointConfig, LinkConfig, Timings,
};

use crate::network::{Fault, Region};
use crate::scenario::{MAX_DEVICES, MAX_PAYLOAD, Scenario, ScenarioError};

/// Largest transmit: the engine is told so, and the world's buffer has this room.
pub(crate) const MAX_BATCH_BYTES: u32 = 4_096;

/// The longest run a scenario may ask for.
const MAX_DURATION: Duration = Duration::from_secs(40 * 86_400);

/// Reboots as the plan follows them: a share of the devices, each every `every_ms`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reboots {
    /// Share of devices that reboot, in `(0, 1]`.
    pub share: f64,
    /// Time between two reboots of a device.
    pub every_ms: u64,
}

/// The fixed part of a run, shared by the shards.
pub(crate) struct Plan<'s> {
    /// The scenario, as validated.
    pub scenario: &'s Scenario,
    /// The engine configuration every device shares.
    pub config: Config,
    /// Simulated time, ms.
    pub end_ms: u64,
    /// Entries in the per-minute timeline.
    pub minutes: usize,
    /// Keep every id received (`RunOptions::ledger`).
    pub keep_ids: bool,
    /// Time between a device's records, ms.
    pub interval_ms: u64,
    /// Reboots, when any device reboots.
    pub reboots: Option<Reboots>,
    /// The regions, in failover order.
    pub regions: Vec<Region>,
    /// The link faults, in scenario order.
    pub faults: Vec<Fault>,
    /// Per link: whether it has a budget.
    pub budgeted: Vec<bool>,
    /// The primary region's first outage `[from, to)` in ms, where failover and failback
    /// are measured from.
    pub primary_outage: Option<[u64; 2]>,
}

impl<'s> Plan<'s> {
    /// Validates a scenario into its plan; `keep_ids` keeps every id received.
    pub fn new(scenario: &'s Scenario, keep_ids: bool) -> Result<Self, ScenarioError> {
        check(scenario)?;
        let s = scenario;
        let end_ms = s.duration.as_millis() as u64;
        let config = engine_config(s)?;
        let budgeted = config.links().iter().map(|l| l.budget.is_some()).collect();
        Ok(Plan {
            scenario,
            config,
            end_ms,
            minutes: end_ms.div_ceil(60_000) as usize + 1,
            keep_ids,
            interval_ms: s.device.interval.as_millis() as u64,
            reboots: s.device.reboot.filter(|r| r.share > 0.0).map(|r| Reboots {
                share: r.share,
                every_ms: r.every.as_millis() as u64,
            }),
            regions: s.regions.iter().map(|r| Region::of(r, s.shards)).collect(),
            faults: (s.link_faults.iter().enumerate())
                .map(|(i, f)| Fault::of(i, f, &s.links))
                .collect(),
            budgeted,
            primary_outage: s.regions[0]
                .outages
                .first()
                .map(|w| [w.from.as_millis() as u64, w.to.as_millis() as u64]),
        })
    }
}

impl Scenario {
    /// Parses and validates a scenario.
    pub fn from_toml_str(text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text)?;
        Plan::new(&s, false)?;
        Ok(s)
    }

    /// Reads, parses and validates a scenario file.
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text)
    }
}

/// Builds the engine configuration every device shares.
pub fn engine_config(s: &Scenario) -> Result<Config, ScenarioError> {
    let mut b = Config::builder("fleet").timings(Timings::default());
    for r in &s.regions {
        let mut e = EndpointConfig::new(&r.name);
        e.max_batch_bytes = MAX_BATCH_BYTES;
        e.max_record_bytes = MAX_BATCH_BYTES / 2;
        b = b.endpoint(e);
    }
    for l in &s.links {
        let mut lc = LinkConfig::new(&l.name, l.cost);
        lc.budget = l.budget;
        if let Some(classes) = &l.classes {
            let mut set = ClassSet::NONE;
            for c in classes {
                if let Some(c) = Class::from_name(c) {
                    set = set.with(c);
                }
            }
            lc.allow = set;
        }
        if let Some(a) = l.arm_after {
            lc.arm_after = EDuration::from_millis(a.as_millis() as u64);
        }
        b = b.link(lc);
    }
    b.build()
        .map_err(|e| ScenarioError::Invalid(format!("engine config: {e}")))
}

/// A refusal that names the problem.
fn bad(m: String) -> Result<(), ScenarioError> {
    Err(ScenarioError::Invalid(m))
}

/// The scenario's own checks; the engine's (names, budgets) run in [`engine_config`].
fn check(s: &Scenario) -> Result<(), ScenarioError> {
    if s.devices == 0 || s.devices > MAX_DEVICES {
        return bad(format!(
            "devices = {} must be within 1..={MAX_DEVICES}",
            s.devices
        ));
    }
    if s.shards == 0 || s.shards > 64 {
        return bad(format!("shards = {} must be within 1..=64", s.shards));
    }
    if s.duration.is_zero() || s.duration > MAX_DURATION {
        return bad("duration must be within (0, 40d]".into());
    }
    if s.regions.is_empty() || s.regions.len() > twinhub_core::MAX_ENDPOINTS {
        return bad(format!(
            "between 1 and {} regions are needed",
            twinhub_core::MAX_ENDPOINTS
        ));
    }
    if s.links.is_empty() || s.links.len() > twinhub_core::MAX_LINKS {
        return bad(format!(
            "between 1 and {} links are needed",
            twinhub_core::MAX_LINKS
        ));
    }
    check_device(s)?;
    check_network(s)
}

fn check_device(s: &Scenario) -> Result<(), ScenarioError> {
    let d = &s.device;
    if d.interval < Duration::from_millis(10) {
        return bad("device.interval must be at least 10ms".into());
    }
    let [lo, hi] = d.payload_bytes;
    if lo == 0 || lo > hi || hi > MAX_PAYLOAD as u32 {
        return bad(format!(
            "device.payload_bytes must be 1 ≤ min ≤ max ≤ {MAX_PAYLOAD}"
        ));
    }
    let c = d.classes;
    let shares = [c.critical, c.normal, c.bulk];
    if shares.iter().any(|s| !s.is_finite() || *s < 0.0) || shares.iter().sum::<f64>() <= 0.0 {
        return bad("device.classes must be non-negative and not all 0".into());
    }
    if let Some(r) = d.reboot
        && (!(0.0..=1.0).contains(&r.share) || r.every < Duration::from_secs(1))
    {
        return bad("device.reboot: share must be in [0, 1] and every at least 1s".into());
    }
    Ok(())
}

fn check_network(s: &Scenario) -> Result<(), ScenarioError> {
    for r in &s.regions {
        if r.latency[0] > r.latency[1] {
            return bad(format!("region {}: latency min > max", r.name));
        }
        for w in r.outages.iter().chain(&r.refusals) {
            if w.from >= w.to {
                return bad(format!("region {}: a window ends before it starts", r.name));
            }
        }
    }
    for l in &s.links {
        for c in l.classes.iter().flatten() {
            if Class::from_name(c).is_none() {
                return bad(format!("link {}: unknown class {c:?}", l.name));
            }
        }
    }
    for f in &s.link_faults {
        if !s.links.iter().any(|l| l.name == f.link) {
            return bad(format!("link_fault: no link named {:?}", f.link));
        }
        if !(0.0..=1.0).contains(&f.share) {
            return bad(format!("link_fault {}: share must be in [0, 1]", f.link));
        }
        if f.up.is_zero() || f.down.is_zero() {
            return bad(format!("link_fault {}: up and down must be > 0", f.link));
        }
    }
    Ok(())
}
