//! The engine's configuration: endpoints, links, routing, classes and timings.
//!
//! A [`Config`] is built once, validated, and shared by reference (or `Arc`) among any
//! number of producers, so two million simulated devices carry one copy.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::id::{DeviceId, IdError};
use crate::time::Duration;

/// Most endpoints (hubs) a producer can route to.
pub const MAX_ENDPOINTS: usize = 4;
/// Most links (network paths) a producer can use: wired, cellular and satellite. Kept at
/// three so a producer stays under 1 KiB for fleets of millions.
pub const MAX_LINKS: usize = 3;
/// Most transmits in flight at once.
pub const MAX_INFLIGHT: usize = 4;
/// Longest endpoint or link name, in bytes. Longer names are refused with
/// [`ConfigError::NameTooLong`].
pub const MAX_NAME: usize = 32;

/// A short name for an endpoint or link.
pub type Name = heapless::String<MAX_NAME>;

/// Index of an endpoint in [`Config::endpoints`]; the order is the failover priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EndpointId(pub u8);

/// Index of a link in [`Config::links`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LinkId(pub u8);

/// A record's class: it sets eviction order, time to live and which links may carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(u8)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Class {
    /// Alarms: evicted last, allowed on costly links when configured.
    Critical = 0,
    /// Ordinary telemetry.
    Normal = 1,
    /// Bulk data: evicted first.
    Bulk = 2,
}

impl Class {
    /// Every class, most important first.
    pub const ALL: [Class; 3] = [Class::Critical, Class::Normal, Class::Bulk];

    /// Parses `critical`, `normal` or `bulk`.
    pub fn from_name(s: &str) -> Option<Class> {
        match s {
            "critical" => Some(Class::Critical),
            "normal" => Some(Class::Normal),
            "bulk" => Some(Class::Bulk),
            _ => None,
        }
    }

    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Class::Critical => "critical",
            Class::Normal => "normal",
            Class::Bulk => "bulk",
        }
    }
}

/// A set of classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ClassSet(u8);

impl ClassSet {
    /// Every class.
    pub const ALL: ClassSet = ClassSet(0b111);
    /// No class.
    pub const NONE: ClassSet = ClassSet(0);

    /// Just `c`.
    #[inline]
    pub const fn only(c: Class) -> ClassSet {
        ClassSet(1 << c as u8)
    }
    /// `self` plus `c`.
    #[inline]
    pub const fn with(self, c: Class) -> ClassSet {
        ClassSet(self.0 | (1 << c as u8))
    }
    /// Whether `c` is in the set.
    #[inline]
    pub const fn contains(self, c: Class) -> bool {
        self.0 & (1 << c as u8) != 0
    }
}

/// How records are spread over endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Routing {
    /// Everything to the first healthy endpoint in order; fail over down the list.
    #[default]
    ActivePassive,
    /// Spread by weight; a down endpoint's share moves to the healthy ones.
    ActiveActive,
    /// Every record to every endpoint (consumers dedupe by message id).
    Mirror,
}

/// What a link costs; cheaper links are always preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Cost {
    /// Wired or Wi-Fi: no per-byte cost.
    Free,
    /// Cellular with a data plan: used when every free route is down.
    Metered,
    /// Satellite or roaming: used only with a budget, for allowed classes, after `arm_after`.
    Costly,
}

/// What to do when the store is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum OnFull {
    /// Refuse the new record; the caller keeps it.
    Reject,
    /// Evict the oldest record of the lowest class (never a more important one than the new
    /// record, never one in flight); each eviction is counted and evented.
    #[default]
    Evict,
}

/// A byte budget per time window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Budget {
    /// Bytes allowed per window.
    pub bytes: u64,
    /// The window's length; windows are fixed, starting at the producer's creation.
    pub window: Duration,
}

/// One hub the producer can send to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EndpointConfig {
    /// Unique name.
    pub name: Name,
    /// Share in active-active routing (ignored otherwise).
    pub weight: u16,
    /// Largest payload one record may have on this endpoint (bytes).
    pub max_record_bytes: u32,
    /// Largest publication (batch) on this endpoint, counted as payload plus
    /// `record_overhead` per record.
    pub max_batch_bytes: u32,
    /// Most records per transmit.
    pub max_batch_records: u16,
    /// Bytes the transport adds per record on the wire (envelope, ids), counted against
    /// `max_batch_bytes`.
    pub record_overhead: u32,
    // `new` was given a name longer than `MAX_NAME`: refused by `build`, not truncated.
    name_too_long: bool,
}

impl EndpointConfig {
    /// An endpoint with Event Hubs Basic-sized defaults (256 KiB) and batches of 100.
    pub fn new(name: &str) -> Self {
        EndpointConfig {
            name: short_name(name),
            name_too_long: name.len() > MAX_NAME,
            weight: 1,
            max_record_bytes: 256 * 1024 - 1024,
            max_batch_bytes: 256 * 1024,
            max_batch_records: 100,
            record_overhead: 0,
        }
    }
}

/// One network path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LinkConfig {
    /// Unique name.
    pub name: Name,
    /// What it costs.
    pub cost: Cost,
    /// Bytes allowed per window. A costly link without a budget is never used.
    pub budget: Option<Budget>,
    /// Classes allowed on this link.
    pub allow: ClassSet,
    /// For costly links: how long every cheaper route must have been down first.
    pub arm_after: Duration,
    /// Bytes the driver adds per record on this link (framing), charged to the budget.
    pub frame_overhead: u32,
    // As for endpoints: a name over `MAX_NAME` given to `new` is refused by `build`.
    name_too_long: bool,
}

impl LinkConfig {
    /// A link of the given cost. Costly links default to critical records only, no budget
    /// (so unusable until one is set) and `arm_after` of 15 minutes.
    pub fn new(name: &str, cost: Cost) -> Self {
        let costly = cost == Cost::Costly;
        LinkConfig {
            name: short_name(name),
            name_too_long: name.len() > MAX_NAME,
            cost,
            budget: None,
            allow: if costly {
                ClassSet::only(Class::Critical)
            } else {
                ClassSet::ALL
            },
            arm_after: if costly {
                Duration::from_mins(15)
            } else {
                Duration::ZERO
            },
            frame_overhead: 0,
        }
    }

    /// Whether the engine may ever use this link.
    #[inline]
    pub fn usable(&self) -> bool {
        self.cost != Cost::Costly || self.budget.is_some_and(|b| b.bytes > 0)
    }
}

fn short_name(name: &str) -> Name {
    // Over-long names are refused by validation (`name_too_long`); what fits is kept so
    // that `Debug` still shows which one it was.
    let mut n = Name::new();
    for c in name.chars() {
        if n.push(c).is_err() {
            break;
        }
    }
    n
}

/// Health and failover timings. Defaults are DESIGN.md's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Timings {
    /// Consecutive failures that take a route down (3).
    pub trip_failures: u8,
    /// Time with failures or a stalled send and no success that takes a route down (5 s).
    pub trip_after: Duration,
    /// First retry delay on a suspect route; doubles per failure, full jitter (250 ms).
    pub retry_base: Duration,
    /// First probe of a down route; doubles per failed probe, full jitter (1 s).
    pub probe_first: Duration,
    /// Longest probe interval (30 s).
    pub probe_max: Duration,
    /// Consecutive probe successes that bring a route back (3).
    pub failback_probes: u8,
    /// Least time on a fallback endpoint before failing back (30 s).
    pub min_dwell: Duration,
    /// A transmit without an outcome after this is a timeout (10 s).
    pub request_timeout: Duration,
    /// Back-off after a throttle without `retry_after` (4 s, the Event Hubs advice).
    pub throttle_backoff: Duration,
    /// Throttled without a success for this long takes the endpoint down (60 s).
    pub throttle_failover_after: Duration,
    /// Wait this long for more records before sending a partial batch (0).
    pub linger: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            trip_failures: 3,
            trip_after: Duration::from_secs(5),
            retry_base: Duration::from_millis(250),
            probe_first: Duration::from_secs(1),
            probe_max: Duration::from_secs(30),
            failback_probes: 3,
            min_dwell: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            throttle_backoff: Duration::from_secs(4),
            throttle_failover_after: Duration::from_secs(60),
            linger: Duration::ZERO,
        }
    }
}

/// Why a configuration was refused. Each variant names the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ConfigError {
    /// `device_id` is not valid.
    DeviceId(IdError),
    /// No endpoint was given.
    NoEndpoints,
    /// More than [`MAX_ENDPOINTS`] endpoints.
    TooManyEndpoints,
    /// More than [`MAX_LINKS`] links.
    TooManyLinks,
    /// `endpoint[index].field` is invalid.
    Endpoint {
        /// Position in the endpoint list.
        index: usize,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// `link[index].field` is invalid.
    Link {
        /// Position in the link list.
        index: usize,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// `endpoint[index].name` or `link[index].name` is longer than the engine keeps.
    NameTooLong {
        /// `"endpoint"` or `"link"`.
        list: &'static str,
        /// Position in that list.
        index: usize,
        /// The most bytes a name may have ([`MAX_NAME`]).
        limit: usize,
    },
    /// A timing or other top-level field is invalid.
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::DeviceId(e) => write!(f, "device_id: {e}"),
            ConfigError::NoEndpoints => f.write_str("endpoint: at least one endpoint is required"),
            ConfigError::TooManyEndpoints => {
                write!(f, "endpoint: at most {MAX_ENDPOINTS} endpoints")
            }
            ConfigError::TooManyLinks => write!(f, "link: at most {MAX_LINKS} links"),
            ConfigError::Endpoint {
                index,
                field,
                problem,
            } => {
                write!(f, "endpoint[{index}].{field}: {problem}")
            }
            ConfigError::Link {
                index,
                field,
                problem,
            } => write!(f, "link[{index}].{field}: {problem}"),
            ConfigError::NameTooLong { list, index, limit } => {
                write!(f, "{list}[{index}].name: longer than {limit} bytes")
            }
            ConfigError::Field { field, problem } => write!(f, "{field}: {problem}"),
        }
    }
}

impl core::error::Error for ConfigError {}

/// A validated engine configuration. Build it with [`Config::builder`].
#[derive(Debug, Clone)]
pub struct Config {
    device_id: DeviceId,
    routing: Routing,
    endpoints: heapless::Vec<EndpointConfig, MAX_ENDPOINTS>,
    links: heapless::Vec<LinkConfig, MAX_LINKS>,
    ttl: [Duration; 3],
    timings: Timings,
    on_full: OnFull,
    max_inflight: u8,
    hold_partial: bool,
    max_record_bytes: u32,
    order: heapless::Vec<(u8, u8), { MAX_ENDPOINTS * MAX_LINKS }>,
}

impl Config {
    /// Starts a configuration for `device_id`.
    ///
    /// ```
    /// use twinhub_core::{Config, Cost, EndpointConfig, LinkConfig, Budget, Duration};
    /// let mut sat = LinkConfig::new("satellite", Cost::Costly);
    /// sat.budget = Some(Budget { bytes: 2 << 20, window: Duration::from_days(1) });
    /// let config = Config::builder("sensor-0001")
    ///     .endpoint(EndpointConfig::new("primary"))
    ///     .endpoint(EndpointConfig::new("secondary"))
    ///     .link(LinkConfig::new("wan", Cost::Free))
    ///     .link(sat)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.endpoints().len(), 2);
    /// ```
    pub fn builder(device_id: &str) -> ConfigBuilder<'_> {
        ConfigBuilder {
            device_id,
            routing: Routing::default(),
            endpoints: heapless::Vec::new(),
            links: heapless::Vec::new(),
            ttl: [Duration::from_days(30); 3],
            timings: Timings::default(),
            on_full: OnFull::default(),
            max_inflight: MAX_INFLIGHT as u8,
            hold_partial: false,
            overflow: None,
        }
    }

    /// The device id.
    #[inline]
    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }
    /// The routing mode.
    #[inline]
    pub fn routing(&self) -> Routing {
        self.routing
    }
    /// Endpoints, in priority order.
    #[inline]
    pub fn endpoints(&self) -> &[EndpointConfig] {
        &self.endpoints
    }
    /// Links, in the order given.
    #[inline]
    pub fn links(&self) -> &[LinkConfig] {
        &self.links
    }
    /// Time to live of a class.
    #[inline]
    pub fn ttl(&self, class: Class) -> Duration {
        self.ttl[class as usize]
    }
    /// The timings.
    #[inline]
    pub fn timings(&self) -> &Timings {
        &self.timings
    }
    /// The full-store policy.
    #[inline]
    pub fn on_full(&self) -> OnFull {
        self.on_full
    }
    /// Most transmits in flight at once.
    #[inline]
    pub fn max_inflight(&self) -> usize {
        self.max_inflight as usize
    }
    /// Whether a partial batch waits while records are in flight; see
    /// [`ConfigBuilder::hold_partial`].
    #[inline]
    pub fn hold_partial(&self) -> bool {
        self.hold_partial
    }
    /// A full batch for [`hold_partial`](ConfigBuilder::hold_partial): the smallest
    /// `max_batch_records` of the endpoints, so a batch this large is full wherever it goes.
    pub(crate) fn full_batch(&self) -> u16 {
        self.endpoints
            .iter()
            .map(|e| e.max_batch_records)
            .min()
            .unwrap_or(1)
    }
    /// The largest payload every endpoint accepts: records are checked against it at
    /// enqueue, so a record the primary takes also fits the secondary.
    #[inline]
    pub fn max_record_bytes(&self) -> u32 {
        self.max_record_bytes
    }
    /// Every route as (endpoint, link) indices in preference order: cheapest link tier
    /// first, then endpoint priority, then link order. A region outage on a working cheap
    /// link thus moves to the other region over that link, never to a dearer link.
    #[inline]
    pub fn route_order(&self) -> &[(u8, u8)] {
        &self.order
    }

    /// Index of the endpoint called `name`.
    pub fn endpoint_id(&self, name: &str) -> Option<EndpointId> {
        self.endpoints
            .iter()
            .position(|e| e.name == name)
            .map(|i| EndpointId(i as u8))
    }
    /// Index of the link called `name`.
    pub fn link_id(&self, name: &str) -> Option<LinkId> {
        self.links
            .iter()
            .position(|l| l.name == name)
            .map(|i| LinkId(i as u8))
    }
}

/// Builds a [`Config`]; errors surface at [`ConfigBuilder::build`].
#[derive(Debug)]
pub struct ConfigBuilder<'a> {
    device_id: &'a str,
    routing: Routing,
    endpoints: heapless::Vec<EndpointConfig, MAX_ENDPOINTS>,
    links: heapless::Vec<LinkConfig, MAX_LINKS>,
    ttl: [Duration; 3],
    timings: Timings,
    on_full: OnFull,
    max_inflight: u8,
    hold_partial: bool,
    overflow: Option<ConfigError>,
}

impl ConfigBuilder<'_> {
    /// Sets the routing mode (default active-passive).
    pub fn routing(mut self, routing: Routing) -> Self {
        self.routing = routing;
        self
    }
    /// Adds an endpoint; the order is the failover priority.
    pub fn endpoint(mut self, e: EndpointConfig) -> Self {
        if self.endpoints.push(e).is_err() {
            self.overflow.get_or_insert(ConfigError::TooManyEndpoints);
        }
        self
    }
    /// Adds a link. Without any, one free link called `default` is used.
    pub fn link(mut self, l: LinkConfig) -> Self {
        if self.links.push(l).is_err() {
            self.overflow.get_or_insert(ConfigError::TooManyLinks);
        }
        self
    }
    /// Sets a class's time to live (default 30 days).
    pub fn ttl(mut self, class: Class, ttl: Duration) -> Self {
        self.ttl[class as usize] = ttl;
        self
    }
    /// Sets the timings.
    pub fn timings(mut self, t: Timings) -> Self {
        self.timings = t;
        self
    }
    /// Sets the full-store policy (default evict).
    pub fn on_full(mut self, p: OnFull) -> Self {
        self.on_full = p;
        self
    }
    /// Sets the most transmits in flight (1 to [`MAX_INFLIGHT`], default the maximum).
    pub fn max_inflight(mut self, n: u8) -> Self {
        self.max_inflight = n;
        self
    }

    /// Holds partial batches back while records are in flight (default off).
    ///
    /// With it on, [`Engine::poll_transmit`](crate::Engine::poll_transmit) sends
    /// nothing while a transmit awaits its outcome and fewer than a full batch (the
    /// smallest `max_batch_records` of the endpoints) wait behind it. As with Nagle's
    /// algorithm, a burst then leaves in full batches (one request per batch, not a trickle
    /// of small ones), while an idle producer still sends at once: with nothing in flight,
    /// whatever waits goes, as linger allows. Held records go when the transmits in flight
    /// settle (an outcome, their request timeout, or their route going down), at the
    /// latest. It delays sending, never drops or reorders records.
    pub fn hold_partial(mut self, on: bool) -> Self {
        self.hold_partial = on;
        self
    }

    /// Validates and returns the configuration.
    pub fn build(mut self) -> Result<Config, ConfigError> {
        if let Some(e) = self.overflow {
            return Err(e);
        }
        let device_id = DeviceId::new(self.device_id).map_err(ConfigError::DeviceId)?;
        if self.endpoints.is_empty() {
            return Err(ConfigError::NoEndpoints);
        }
        if self.links.is_empty() {
            let _ = self.links.push(LinkConfig::new("default", Cost::Free));
        }
        check_endpoints(&self.endpoints)?;
        if self.routing == Routing::ActiveActive && self.endpoints.iter().all(|e| e.weight == 0) {
            return Err(ConfigError::Endpoint {
                index: 0,
                field: "weight",
                problem: "active-active needs at least one endpoint with a weight above 0",
            });
        }
        check_links(&self.links)?;
        let t = &self.timings;
        let field = |field, problem| ConfigError::Field { field, problem };
        if t.trip_failures == 0 {
            return Err(field("timings.trip_failures", "must be at least 1"));
        }
        if t.failback_probes == 0 {
            return Err(field("timings.failback_probes", "must be at least 1"));
        }
        if t.probe_first == Duration::ZERO || t.probe_max < t.probe_first {
            return Err(field(
                "timings.probe_max",
                "must be at least probe_first, which must be above 0",
            ));
        }
        if t.request_timeout == Duration::ZERO || t.trip_after == Duration::ZERO {
            return Err(field(
                "timings.request_timeout",
                "timeouts must be longer than 0",
            ));
        }
        if self.ttl.contains(&Duration::ZERO) {
            return Err(field("ttl", "must be longer than 0"));
        }
        if self.max_inflight == 0 || self.max_inflight as usize > MAX_INFLIGHT {
            return Err(field("max_inflight", "must be between 1 and 4"));
        }
        let max_record_bytes = self
            .endpoints
            .iter()
            .map(|e| e.max_record_bytes)
            .min()
            .unwrap_or(0);
        let mut order = heapless::Vec::new();
        for tier in [Cost::Free, Cost::Metered, Cost::Costly] {
            for e in 0..self.endpoints.len() {
                for (l, link) in self.links.iter().enumerate() {
                    if link.cost == tier {
                        // Capacity is MAX_ENDPOINTS * MAX_LINKS, the most routes there are.
                        let _ = order.push((e as u8, l as u8));
                    }
                }
            }
        }
        Ok(Config {
            device_id,
            routing: self.routing,
            endpoints: self.endpoints,
            links: self.links,
            ttl: self.ttl,
            timings: self.timings,
            on_full: self.on_full,
            max_inflight: self.max_inflight,
            hold_partial: self.hold_partial,
            max_record_bytes,
            order,
        })
    }
}

/// Checks each endpoint on its own and against the earlier ones.
fn check_endpoints(endpoints: &[EndpointConfig]) -> Result<(), ConfigError> {
    for (index, e) in endpoints.iter().enumerate() {
        let err = |field, problem| ConfigError::Endpoint {
            index,
            field,
            problem,
        };
        if e.name_too_long {
            return Err(ConfigError::NameTooLong {
                list: "endpoint",
                index,
                limit: MAX_NAME,
            });
        }
        if e.name.is_empty() {
            return Err(err("name", "must not be empty"));
        }
        if endpoints[..index].iter().any(|o| o.name == e.name) {
            return Err(err("name", "is used by an earlier endpoint"));
        }
        if e.max_batch_records == 0 {
            return Err(err("max_batch_records", "must be at least 1"));
        }
        if e.max_record_bytes == 0 {
            return Err(err("max_record_bytes", "must be at least 1"));
        }
        if u64::from(e.max_record_bytes) + u64::from(e.record_overhead)
            > u64::from(e.max_batch_bytes)
        {
            return Err(err(
                "max_batch_bytes",
                "must hold one record of max_record_bytes plus record_overhead",
            ));
        }
    }
    Ok(())
}

/// Checks each link on its own and against the earlier ones.
fn check_links(links: &[LinkConfig]) -> Result<(), ConfigError> {
    for (index, l) in links.iter().enumerate() {
        let err = |field, problem| ConfigError::Link {
            index,
            field,
            problem,
        };
        if l.name_too_long {
            return Err(ConfigError::NameTooLong {
                list: "link",
                index,
                limit: MAX_NAME,
            });
        }
        if l.name.is_empty() {
            return Err(err("name", "must not be empty"));
        }
        if links[..index].iter().any(|o| o.name == l.name) {
            return Err(err("name", "is used by an earlier link"));
        }
        if let Some(b) = l.budget
            && b.window == Duration::ZERO
        {
            return Err(err("budget", "window must be longer than 0"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        assert_eq!(
            Config::builder("d").build().unwrap_err(),
            ConfigError::NoEndpoints
        );
        assert!(matches!(
            Config::builder("bad id")
                .endpoint(EndpointConfig::new("a"))
                .build(),
            Err(ConfigError::DeviceId(IdError::BadChar { at: 3 }))
        ));
        let dup = Config::builder("d")
            .endpoint(EndpointConfig::new("a"))
            .endpoint(EndpointConfig::new("a"))
            .build()
            .unwrap_err();
        assert_eq!(
            dup,
            ConfigError::Endpoint {
                index: 1,
                field: "name",
                problem: "is used by an earlier endpoint"
            }
        );
        let mut small = EndpointConfig::new("a");
        small.max_batch_bytes = 10;
        let e = Config::builder("d").endpoint(small).build().unwrap_err();
        assert!(matches!(
            e,
            ConfigError::Endpoint {
                index: 0,
                field: "max_batch_bytes",
                ..
            }
        ));
        let mut b = Config::builder("d");
        for i in 0..5u8 {
            let name = [b'a' + i];
            b = b.endpoint(EndpointConfig::new(core::str::from_utf8(&name).unwrap()));
        }
        assert_eq!(b.build().unwrap_err(), ConfigError::TooManyEndpoints);
    }

    #[test]
    fn over_long_names_are_refused_not_truncated() {
        use core::fmt::Write;
        let bytes = [b'n'; MAX_NAME + 8];
        let name = |len: usize| core::str::from_utf8(&bytes[..len]).unwrap();
        let ok = Config::builder("d")
            .endpoint(EndpointConfig::new(name(MAX_NAME)))
            .link(LinkConfig::new(name(MAX_NAME), Cost::Free))
            .build()
            .unwrap();
        assert_eq!(ok.endpoints()[0].name.as_str(), name(MAX_NAME));
        let e = Config::builder("d")
            .endpoint(EndpointConfig::new("a"))
            .endpoint(EndpointConfig::new(name(MAX_NAME + 1)))
            .build()
            .unwrap_err();
        assert_eq!(
            e,
            ConfigError::NameTooLong {
                list: "endpoint",
                index: 1,
                limit: MAX_NAME
            }
        );
        let mut shown = heapless::String::<64>::new();
        write!(shown, "{e}").unwrap();
        assert_eq!(shown, "endpoint[1].name: longer than 32 bytes");
        // Two links that would be the same once cut are refused for length, not as twins.
        let e = Config::builder("d")
            .endpoint(EndpointConfig::new("a"))
            .link(LinkConfig::new(name(MAX_NAME + 4), Cost::Free))
            .link(LinkConfig::new(name(MAX_NAME + 8), Cost::Metered))
            .build()
            .unwrap_err();
        assert_eq!(
            e,
            ConfigError::NameTooLong {
                list: "link",
                index: 0,
                limit: MAX_NAME
            }
        );
        // Multi-byte characters count by bytes, as the limit does: 17 of them are 34.
        let wide = "ééééééééééééééééé";
        assert!(matches!(
            Config::builder("d")
                .endpoint(EndpointConfig::new(wide))
                .build(),
            Err(ConfigError::NameTooLong { .. })
        ));
    }

    #[test]
    fn defaults_and_smallest_record_limit() {
        let mut small = EndpointConfig::new("b");
        small.max_record_bytes = 1000;
        let c = Config::builder("d")
            .endpoint(EndpointConfig::new("a"))
            .endpoint(small)
            .build()
            .unwrap();
        assert_eq!(c.max_record_bytes(), 1000);
        assert_eq!(c.links().len(), 1);
        assert_eq!(c.links()[0].cost, Cost::Free);
        assert_eq!(c.ttl(Class::Bulk), Duration::from_days(30));
        assert!(!LinkConfig::new("sat", Cost::Costly).usable());
    }
}
