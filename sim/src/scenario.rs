//! Scenario files: the fleet, its regions, links and faults, in TOML.
//!
//! Durations, sizes and budgets are written as in the SDK's config (`30s`, `64KiB`,
//! `64KiB/1d`). Unknown keys are errors that name the key and the line. A scenario is
//! plain data: [`Scenario::from_toml_str`] parses it and checks it by building the
//! [plan](crate::plan) a run follows.
//!
//! ```
//! let s = twinhub_sim::Scenario::from_toml_str(r#"
//! name = "tiny"
//! devices = 100
//! duration = "10m"
//!
//! [device]
//! interval = "30s"
//! reboot = { share = 0.01, every = "6h" }
//! store = "128KiB"
//!
//! [[region]]
//! name = "primary"
//! outages = [{ from = "2m", to = "5m" }]
//!
//! [[region]]
//! name = "secondary"
//!
//! [[link]]
//! name = "wan"
//! cost = "free"
//! "#).unwrap();
//! assert_eq!(s.devices, 100);
//! assert_eq!(s.device.reboot.unwrap().every.as_secs(), 6 * 3600);
//! assert_eq!(s.device.store, 128 * 1024);
//! assert_eq!(s.regions[0].outages[0].from.as_secs(), 120);
//! ```

use std::time::Duration;

use serde::{Deserialize, Deserializer};
use twinhub::config::units::{parse_budget, parse_duration, parse_size};
use twinhub_core::{Budget, Class, Cost};

/// Why a scenario was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key or a bad value; the message names the key and line.
    #[error("scenario: {0}")]
    Parse(#[from] toml::de::Error),
    /// Valid TOML that describes no runnable world.
    #[error("scenario: {0}")]
    Invalid(String),
}

/// A whole simulated world.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A name for reports.
    #[serde(default = "default_name")]
    pub name: String,
    /// The seed every random choice derives from; same seed, same report.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Virtual devices, each running its own engine.
    pub devices: u32,
    /// Simulated time.
    #[serde(deserialize_with = "duration")]
    pub duration: Duration,
    /// Independent partitions of the fleet, run on threads. Each gets `1/shards` of every
    /// region's capacity, so the report depends on this number, not on the machine.
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// How every device behaves.
    #[serde(default)]
    pub device: DeviceSpec,
    /// Regions in failover order: the first is the primary.
    #[serde(rename = "region")]
    pub regions: Vec<RegionSpec>,
    /// Links every device has, cheapest first.
    #[serde(rename = "link")]
    pub links: Vec<LinkSpec>,
    /// Link faults that hit a share of the devices.
    #[serde(default, rename = "link_fault")]
    pub link_faults: Vec<LinkFault>,
}

fn default_name() -> String {
    "scenario".into()
}
fn default_seed() -> u64 {
    1
}
fn default_shards() -> u32 {
    2
}

/// Device behaviour; each key defaults as in [`DeviceSpec::default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceSpec {
    /// Time between records (30 s); each device starts at a random phase within it.
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// Payload sizes, drawn uniformly from this inclusive range of bytes (48 to 96).
    pub payload_bytes: [u32; 2],
    /// Share of records per class (normalised; missing classes get 0; default 5% critical,
    /// 90% normal, 5% bulk).
    pub classes: ClassMix,
    /// Devices that reboot now and then (none by default).
    pub reboot: Option<Reboot>,
    /// Each device's flash outbox in bytes, like `64KiB` (the default): whole 4 KiB pages,
    /// at least two. The device holds records as the shipped flash store would, so a
    /// backlog fills it when it would fill a real device's.
    #[serde(deserialize_with = "store_size")]
    pub store: u64,
}

/// Largest payload a scenario may ask for.
pub const MAX_PAYLOAD: usize = 128;

/// The most devices a scenario may have (far beyond what fits in memory; the world packs
/// a device's slot into 29 bits).
pub const MAX_DEVICES: u32 = 100_000_000;

/// Reboots of a share of the devices: each affected device restarts its engine every
/// `every` (at its own phase), as the shipped firmware boots: the flash outbox survives
/// with its records, the epoch comes from the outbox's boot counter, and the budgeted
/// links' spend saved after each of their transmits is restored. Everything else the
/// engine had in RAM is gone: what was in flight is sent again (answers to it are
/// ignored).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reboot {
    /// Share of devices that reboot, in `[0, 1]`.
    pub share: f64,
    /// Time between reboots of one device.
    #[serde(deserialize_with = "duration")]
    pub every: Duration,
}

impl Default for DeviceSpec {
    fn default() -> Self {
        DeviceSpec {
            interval: Duration::from_secs(30),
            payload_bytes: [48, 96],
            classes: ClassMix::default(),
            reboot: None,
            store: crate::flash::DEFAULT_STORE_BYTES,
        }
    }
}

/// Share of records per class.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassMix {
    /// Critical records.
    #[serde(default)]
    pub critical: f64,
    /// Normal records.
    #[serde(default)]
    pub normal: f64,
    /// Bulk records.
    #[serde(default)]
    pub bulk: f64,
}

impl Default for ClassMix {
    fn default() -> Self {
        ClassMix {
            critical: 0.05,
            normal: 0.9,
            bulk: 0.05,
        }
    }
}

impl ClassMix {
    /// The class for a uniform draw in `[0, 1)`.
    pub fn pick(&self, u: f64) -> Class {
        let total = self.critical + self.normal + self.bulk;
        let u = u * total;
        if u < self.critical {
            Class::Critical
        } else if u < self.critical + self.normal {
            Class::Normal
        } else {
            Class::Bulk
        }
    }
}

/// One cloud region with one hub.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSpec {
    /// Name, used in reports.
    pub name: String,
    /// Round-trip time of a request, drawn uniformly from this range.
    #[serde(default = "default_latency", deserialize_with = "duration_pair")]
    pub latency: [Duration; 2],
    /// Records per second the hub takes from the whole fleet before it throttles (0: no
    /// limit).
    #[serde(default)]
    pub capacity: u64,
    /// When the region is dark: requests get no answer and time out.
    #[serde(default)]
    pub outages: Vec<Window>,
    /// When the region refuses connections: requests fail fast.
    #[serde(default)]
    pub refusals: Vec<Window>,
}

fn default_latency() -> [Duration; 2] {
    [Duration::from_millis(30), Duration::from_millis(120)]
}

/// A span of simulated time.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Start, from the beginning of the run.
    #[serde(deserialize_with = "duration")]
    pub from: Duration,
    /// End (exclusive).
    #[serde(deserialize_with = "duration")]
    pub to: Duration,
}

impl Window {
    /// Whether `ms` falls inside.
    pub fn contains(&self, ms: u64) -> bool {
        ms >= self.from.as_millis() as u64 && ms < self.to.as_millis() as u64
    }
}

/// A network path every device has.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// Name.
    pub name: String,
    /// `free`, `metered` or `costly`.
    #[serde(deserialize_with = "cost")]
    pub cost: Cost,
    /// Bytes per window, like `64KiB/1d`; a costly link without one is never used.
    #[serde(default, deserialize_with = "budget")]
    pub budget: Option<Budget>,
    /// Classes allowed (default: all; costly links: critical).
    #[serde(default)]
    pub classes: Option<Vec<String>>,
    /// For costly links: how long every cheaper route must be down first.
    #[serde(default, deserialize_with = "opt_duration")]
    pub arm_after: Option<Duration>,
    /// Price per MiB, for the spend in the report.
    #[serde(default)]
    pub price_per_mib: f64,
}

/// A link that fails for a share of the devices.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkFault {
    /// The link's name.
    pub link: String,
    /// Share of devices affected, in `[0, 1]`.
    pub share: f64,
    /// Time up, then time down, repeating (each device at its own phase).
    #[serde(deserialize_with = "duration")]
    pub up: Duration,
    /// Time down in each cycle.
    #[serde(deserialize_with = "duration")]
    pub down: Duration,
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?} {e}")))
}

fn store_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    let bytes = parse_size(&s).map_err(|e| serde::de::Error::custom(format!("{s:?} {e}")))?;
    crate::flash::SimFlash::check_size(bytes)
        .map(|_| bytes)
        .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn duration_pair<'de, D: Deserializer<'de>>(d: D) -> Result<[Duration; 2], D::Error> {
    let [a, b] = <[String; 2]>::deserialize(d)?;
    let p = |s: &str| parse_duration(s).map_err(|e| serde::de::Error::custom(format!("{s:?} {e}")));
    Ok([p(&a)?, p(&b)?])
}

fn cost<'de, D: Deserializer<'de>>(d: D) -> Result<Cost, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "free" => Ok(Cost::Free),
        "metered" => Ok(Cost::Metered),
        "costly" => Ok(Cost::Costly),
        _ => Err(serde::de::Error::custom(format!(
            "{s:?} is not a cost (free, metered or costly)"
        ))),
    }
}

fn budget<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Budget>, D::Error> {
    let s = String::deserialize(d)?;
    parse_budget(&s)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{s:?} {e}")))
}

/// Parses a size like `256MiB` (for command-line flags).
pub fn size(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| format!("{s:?} {e}"))
}
