//! Regions and links as models that answer a send: what a transmit meets on its way, and
//! when its answer comes back.

use crate::draw::{mix, salt, unit};
use crate::queue::Kind;
use crate::scenario::{LinkFault, LinkSpec, RegionSpec, Window};

/// How long a send over a link that is down takes to fail.
const LINK_FAIL_MS: u64 = 2_000;

/// One region as the world models it.
#[derive(Debug, Clone)]
pub(crate) struct Region {
    /// Round trip in ms, drawn uniformly from this inclusive range.
    latency: [u64; 2],
    /// When it is dark: no answer at all.
    outages: Vec<Window>,
    /// When it refuses connections: a fast failure.
    refusals: Vec<Window>,
    /// Records per millisecond it takes from one shard, when it has a capacity.
    per_ms: Option<f64>,
}

impl Region {
    /// The model of `spec` for one of `shards` shards, each of which gets an equal share
    /// of the region's capacity.
    pub fn of(spec: &RegionSpec, shards: u32) -> Region {
        let [lo, hi] = spec.latency;
        Region {
            latency: [lo.as_millis() as u64, hi.as_millis() as u64],
            outages: spec.outages.clone(),
            refusals: spec.refusals.clone(),
            per_ms: (spec.capacity > 0).then(|| spec.capacity as f64 / f64::from(shards) / 1000.0),
        }
    }
}

/// A link fault as the world models it: the devices it hits, and when.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    /// Its place in the scenario's list, which salts its draws.
    index: u64,
    link: usize,
    share: f64,
    up: u64,
    down: u64,
}

impl Fault {
    /// The model of the scenario's `index`th link fault.
    pub fn of(index: usize, f: &LinkFault, links: &[LinkSpec]) -> Fault {
        Fault {
            index: index as u64,
            // A plan is only built once every fault names a link.
            link: links.iter().position(|l| l.name == f.link).unwrap_or(0),
            share: f.share,
            up: f.up.as_millis() as u64,
            down: f.down.as_millis() as u64,
        }
    }

    /// Whether this fault has `link` down for `device` at `now_ms`: a device it hits is
    /// up, then down, at its own phase in the cycle.
    fn holds(&self, seed: u64, device: u32, link: usize, now_ms: u64) -> bool {
        if self.link != link {
            return false;
        }
        let who = mix(seed, u64::from(device), salt::FAULT + self.index);
        if unit(who) >= self.share {
            return false;
        }
        let phase = mix(seed, u64::from(device), salt::FAULT_PHASE + self.index);
        let cycle = self.up + self.down;
        (now_ms + phase % cycle) % cycle >= self.up
    }
}

/// A transmit as the network sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Send {
    /// The device's number in the fleet.
    pub device: u32,
    /// The region it is addressed to.
    pub region: usize,
    /// The link it goes over.
    pub link: usize,
    /// The engine's transmit id.
    pub id: u32,
    /// Records in it.
    pub records: u32,
    /// When it leaves, ms.
    pub now_ms: u64,
}

/// The network's answer to a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answer {
    /// Delivered, unreachable or throttled.
    pub kind: Kind,
    /// When the device hears it, ms.
    pub at: u64,
}

/// The network one shard sees: the plan's models, and the shard's share of each region's
/// capacity as a token bucket refilled every millisecond.
pub(crate) struct Network<'p> {
    seed: u64,
    regions: &'p [Region],
    faults: &'p [Fault],
    tokens: Vec<f64>,
    refilled: u64,
}

impl<'p> Network<'p> {
    /// A network whose buckets start full.
    pub fn new(seed: u64, regions: &'p [Region], faults: &'p [Fault]) -> Self {
        let tokens = regions
            .iter()
            .map(|r| r.per_ms.unwrap_or(0.0) * 1000.0)
            .collect();
        Network {
            seed,
            regions,
            faults,
            tokens,
            refilled: 0,
        }
    }

    /// How `send` fares: `None` when its region is dark (no answer ever comes; the
    /// engine's request timeout fires).
    pub fn answer(&mut self, send: &Send) -> Option<Answer> {
        let now = send.now_ms;
        let region = &self.regions[send.region];
        let downs = |f: &Fault| f.holds(self.seed, send.device, send.link, now);
        if self.faults.iter().any(downs) {
            return Some(Answer {
                kind: Kind::Unreachable,
                at: now + LINK_FAIL_MS,
            });
        }
        if region.outages.iter().any(|w| w.contains(now)) {
            return None;
        }
        let at = now + self.latency(send);
        let kind = if region.refusals.iter().any(|w| w.contains(now)) {
            Kind::Unreachable
        } else if self.take(send.region, send.records, now) {
            Kind::Delivered
        } else {
            Kind::Throttled
        };
        Some(Answer { kind, at })
    }

    /// The round trip of a send, drawn from its region's range.
    fn latency(&self, send: &Send) -> u64 {
        let [lo, hi] = self.regions[send.region].latency;
        let coordinate = send.now_ms ^ (u64::from(send.id) << 32) ^ salt::LATENCY;
        lo + mix(self.seed, u64::from(send.device), coordinate) % (hi - lo + 1)
    }

    /// Takes room for `records` from a region's bucket: false when it has too little
    /// (the region throttles). Regions without a capacity always have room.
    fn take(&mut self, region: usize, records: u32, now: u64) -> bool {
        if self.regions[region].per_ms.is_none() {
            return true;
        }
        let elapsed = now.saturating_sub(self.refilled);
        if elapsed > 0 {
            for (tokens, r) in self.tokens.iter_mut().zip(self.regions) {
                let c = r.per_ms.unwrap_or(0.0);
                *tokens = (*tokens + c * elapsed as f64).min(c * 1000.0);
            }
            self.refilled = now;
        }
        let n = f64::from(records);
        if self.tokens[region] < n {
            return false;
        }
        self.tokens[region] -= n;
        true
    }
}
