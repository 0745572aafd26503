//! The engine: a sans-IO producer that routes records over endpoints and links.

use core::ops::Deref;

use crate::config::{
    Class, ClassSet, Config, ConfigError, Cost, EndpointId, LinkId, MAX_ENDPOINTS, MAX_INFLIGHT,
    MAX_LINKS, OnFull, Routing,
};
use crate::event::{DownCause, DropReason, Event, Stats};
use crate::frame::{self, FrameError, Frames, RecordMeta};
use crate::id::MessageId;
use crate::store::{RecordInfo, RecordKey, Store, StoreError};
use crate::time::{Duration, Instant};

/// Identifies one transmit until its outcome is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransmitId(pub u32);

/// A batch of records the driver must send, written by [`Producer::poll_transmit`] into the
/// caller's buffer as back-to-back frames (see [`crate::frame`]).
#[must_use = "a transmit must be sent and its outcome handed back"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Pass this back to [`Producer::handle_outcome`].
    pub id: TransmitId,
    /// The hub to send to.
    pub endpoint: EndpointId,
    /// The network path to use.
    pub link: LinkId,
    /// Bytes of the buffer holding the frames.
    pub len: usize,
    /// Records in the batch.
    pub records: u16,
    /// Whether this tests a down route: its outcome decides whether the route recovers.
    pub probe: bool,
}

impl Transmit {
    /// The records of this transmit, read from the buffer it was written into.
    pub fn frames<'b>(&self, buf: &'b [u8]) -> Frames<'b> {
        Frames::new(buf.get(..self.len).unwrap_or(&[]))
    }
}

/// What became of a transmit. The driver maps its protocol's results onto these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The hub acknowledged every record.
    Delivered,
    /// No answer in time after the bytes may have left: the records may have arrived, so
    /// resending them may duplicate (counted in [`Stats::possible_duplicates`]).
    Timeout,
    /// No connection could be made (refused, DNS, no route): nothing arrived.
    Unreachable,
    /// The hub failed (HTTP 5xx other than throttling).
    ServerError,
    /// The hub is throttling; retry the same endpoint after the delay.
    Throttled {
        /// The hub's requested delay, if it gave one.
        retry_after: Option<Duration>,
    },
    /// The hub refused our credentials: the endpoint is unusable until they change.
    Unauthorized,
    /// The hub refused the records themselves: dropped, never retried, health untouched.
    Rejected(RejectReason),
}

/// Why a hub refused records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Over the hub's size limit.
    TooLarge,
    /// Not acceptable to the hub.
    Malformed,
}

/// A link's state as the application sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// The link can carry traffic (it may still fail; the engine will find out).
    Up,
    /// The link is known to be down: do not use it, do not probe it.
    Down,
}

/// Why a record was not accepted. The record was not stored and nothing stored was harmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnqueueError {
    /// The payload is larger than the smallest limit of the endpoints, or than the store.
    TooLarge {
        /// The largest payload accepted, in bytes.
        limit: u32,
    },
    /// The store is full and the policy (or the classes present) forbids eviction.
    Full,
    /// The store failed.
    Store(StoreError),
}

impl core::fmt::Display for EnqueueError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EnqueueError::TooLarge { limit } => {
                write!(f, "record too large: the limit is {limit} bytes of payload")
            }
            EnqueueError::Full => f.write_str("outbox full"),
            EnqueueError::Store(e) => write!(f, "outbox failed: {e}"),
        }
    }
}

impl core::error::Error for EnqueueError {}

/// Why a runtime control call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlError {
    /// No endpoint or link with that index.
    NoSuch,
    /// Weights must name every endpoint and not all be zero.
    BadWeights,
}

impl core::fmt::Display for ControlError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ControlError::NoSuch => f.write_str("no endpoint or link with that index"),
            ControlError::BadWeights => {
                f.write_str("weights must give one value per endpoint, not all zero")
            }
        }
    }
}

impl core::error::Error for ControlError {}

/// The health of one route (endpoint over link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteHealth {
    /// Working, or not yet tried.
    Healthy,
    /// Failed recently; retried after a short back-off, not yet given up on.
    Suspect,
    /// Given up on: only probes go there.
    Down,
    /// A probe is in flight.
    Probing,
}

/// An [`Instant`] kept in two 32-bit halves: aligned to 4 bytes, it packs beside small
/// fields without padding, which saves 4 bytes in each of the many route entries.
#[derive(Debug, Clone, Copy)]
struct Stamp([u32; 2]);

impl Stamp {
    fn get(self) -> Instant {
        Instant::from_millis(u64::from(self.0[0]) | (u64::from(self.0[1]) << 32))
    }
}

impl From<Instant> for Stamp {
    fn from(t: Instant) -> Self {
        let ms = t.as_millis();
        Stamp([ms as u32, (ms >> 32) as u32])
    }
}

#[derive(Debug, Clone, Copy)]
struct Route {
    health: RouteHealth,
    fails: u8,
    probe_ok: u8,
    attempt: u8,
    retry_at: Stamp,
    trouble_since: Stamp,
}

#[derive(Debug, Clone, Copy)]
struct EndpointRt {
    throttled_until: Instant,
    throttled_since: Instant,
    left_at: Instant,
    wrr: i32,
    weight: u16,
    isolate: u16,
    throttles: u8,
    drained: bool,
    // Mirror routing: every record up to this key was acknowledged here (when `has_floor`).
    floor_epoch: u32,
    floor_seq: u64,
    has_floor: bool,
}

impl EndpointRt {
    fn floor(&self) -> Option<RecordKey> {
        self.has_floor.then_some(RecordKey {
            epoch: self.floor_epoch,
            seq: self.floor_seq,
        })
    }

    fn raise_floor(&mut self, key: RecordKey) {
        if self.floor() < Some(key) {
            (self.floor_epoch, self.floor_seq, self.has_floor) = (key.epoch, key.seq, true);
        }
    }
}

/// A link's budget use in its current window, as carried across a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkSpend {
    /// Bytes charged in the current window.
    pub spent: u64,
    /// How much of the current window had passed.
    pub window_elapsed: Duration,
}

#[derive(Debug, Clone, Copy)]
struct LinkRt {
    window_start: Stamp,
    spent: u64,
    app_down: bool,
    armed: bool,
    exhausted: bool,
}

/// A transmit awaiting its outcome.
///
/// Its records are every record from `first` up to `span` sequence numbers later (one
/// epoch) whose class its link allows: `build` never leaves such a record out, so the
/// range and the link say exactly which records are in flight, in a few bytes.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    sent_at: Instant,
    first: u64,
    epoch: u32,
    id: u32,
    span: u16,
    records: u16,
    endpoint: u8,
    link: u8,
    probe: bool,
}

impl InFlight {
    fn first_key(&self) -> RecordKey {
        RecordKey {
            epoch: self.epoch,
            seq: self.first,
        }
    }

    fn last_key(&self) -> RecordKey {
        RecordKey {
            epoch: self.epoch,
            seq: self.first + u64::from(self.span),
        }
    }

    /// Whether `key` (of class `class`) is one of this transmit's records, given what its
    /// link allows.
    fn holds(&self, key: RecordKey, class: Class, allow: ClassSet) -> bool {
        self.id != 0
            && key.epoch == self.epoch
            && key.seq >= self.first
            && key.seq - self.first <= u64::from(self.span)
            && allow.contains(class)
    }

    /// Where a store walk over the records starts: a key just below the first, above
    /// every earlier record's (`None`, from the oldest record, only for the very first key).
    fn walk_start(&self) -> Option<RecordKey> {
        match self.first.checked_sub(1) {
            Some(seq) => Some(RecordKey {
                epoch: self.epoch,
                seq,
            }),
            // No record of the previous epoch can have a larger sequence number.
            None => Some(RecordKey {
                epoch: self.epoch.checked_sub(1)?,
                seq: u64::MAX,
            }),
        }
    }
}

/// Events as queued: compact, expanded by `poll_event`.
#[derive(Debug, Clone, Copy)]
enum Raw {
    FailedOver(u8, u8),
    FailedBack(u8, u8),
    RouteDown(u8, u8, DownCause),
    RouteUp(u8, u8),
    LinkDown(u8),
    LinkUp(u8),
    LinkArmed(u8),
    LinkDisarmed(u8),
    BudgetExhausted(u8),
    // Sequence split in two words so the queue entry stays 16 bytes.
    Dropped {
        epoch: u32,
        seq_lo: u32,
        seq_hi: u32,
        reason: DropReason,
    },
    AuthFailed(u8),
}

/// Events held until polled; more are counted in [`Stats::events_lost`].
const EVENT_QUEUE: usize = 6;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Dead,
    Wait,
    Ready,
}

const TIERS: [Cost; 3] = [Cost::Free, Cost::Metered, Cost::Costly];

/// The engine for one device: an outbox, route health, failover and cost control.
///
/// It does no I/O, reads no clock and draws no system randomness: time comes in as `now`,
/// randomness from the seed. That is what lets the same code run in firmware, under tokio,
/// and two million times in a simulator.
///
/// # Driving contract
///
/// 1. Hand it records with [`enqueue`](Self::enqueue). A record is then pending until it is
///    delivered or dropped by an explicit policy.
/// 2. Call [`poll_transmit`](Self::poll_transmit) until it returns `None`. Send each
///    [`Transmit`] to its endpoint over its link, then report what happened with
///    [`handle_outcome`](Self::handle_outcome), exactly once per transmit. Records are only
///    removed on [`Outcome::Delivered`].
/// 3. Call [`handle_timeout`](Self::handle_timeout) when the time from
///    [`poll_timeout`](Self::poll_timeout) is reached, and report link changes the
///    application knows of with [`handle_link`](Self::handle_link).
/// 4. After every call above, drain [`poll_event`](Self::poll_event) and call
///    `poll_transmit` again: any of them may make records sendable.
///
/// `now` must not go backwards; an earlier `now` is treated as the latest seen.
///
/// ```
/// use twinhub_core::*;
///
/// let config = Config::builder("sensor-1")
///     .endpoint(EndpointConfig::new("primary"))
///     .endpoint(EndpointConfig::new("secondary"))
///     .build()
///     .unwrap();
/// let mut p = Producer::new(&config, RamStore::<4096>::new(), Instant::ZERO, 1, 42);
/// let id = p.enqueue(Instant::ZERO, b"21.5", Class::Normal).unwrap();
/// assert_eq!(id.to_string(), "sensor-1:1:0");
///
/// let mut buf = [0u8; 1024];
/// let tx = p.poll_transmit(Instant::ZERO, &mut buf).unwrap();
/// assert_eq!(tx.endpoint, EndpointId(0));
/// let record = tx.frames(&buf).next().unwrap().unwrap();
/// assert_eq!(record.payload, b"21.5");
///
/// // The primary is unreachable: after three failures (with short back-offs between) the
/// // route is down and the same record goes to the secondary.
/// let mut now = Instant::ZERO;
/// let mut tx = tx;
/// while tx.endpoint == EndpointId(0) {
///     p.handle_outcome(now, tx.id, Outcome::Unreachable);
///     tx = match p.poll_transmit(now, &mut buf) {
///         Some(tx) => tx,
///         None => {
///             now = p.poll_timeout().unwrap(); // sleep until then
///             p.handle_timeout(now);
///             p.poll_transmit(now, &mut buf).unwrap()
///         }
///     };
/// }
/// assert_eq!(tx.endpoint, EndpointId(1));
/// assert!(now < Instant::from_millis(5_000));
/// p.handle_outcome(now, tx.id, Outcome::Delivered);
/// assert_eq!(p.stats().delivered, 1);
/// assert!(core::iter::from_fn(|| p.poll_event())
///     .any(|e| e == Event::FailedOver { from: EndpointId(0), to: EndpointId(1) }));
/// ```
///
/// # Sizing
///
/// `E` and `L` are the most endpoints and links this engine can take (the configuration's
/// own limits, [`MAX_ENDPOINTS`] and [`MAX_LINKS`], by default). A device that knows it has
/// two endpoints and two links saves a third of the engine's RAM with
/// `Producer<S, C, 2, 2>`, built with [`try_new`](Self::try_new):
///
/// ```
/// use twinhub_core::*;
///
/// let config = Config::builder("sensor-1")
///     .endpoint(EndpointConfig::new("primary"))
///     .endpoint(EndpointConfig::new("secondary"))
///     .build()
///     .unwrap();
/// let small = Producer::<_, _, 2, 1>::try_new(&config, RamStore::<512>::new(), Instant::ZERO, 1, 7)
///     .unwrap();
/// assert!(size_of_val(&small) < size_of::<Producer<RamStore<512>, &Config>>());
/// // A configuration larger than the engine is refused, naming what is over.
/// let one = Producer::<_, _, 1, 1>::try_new(&config, RamStore::<512>::new(), Instant::ZERO, 1, 7);
/// assert_eq!(one.err(), Some(ConfigError::TooManyEndpoints));
/// ```
pub struct Producer<
    S: Store,
    C: Deref<Target = Config> = &'static Config,
    const E: usize = MAX_ENDPOINTS,
    const L: usize = MAX_LINKS,
> {
    config: C,
    store: S,
    routes: [[Route; L]; E],
    endpoints: [EndpointRt; E],
    links: [LinkRt; L],
    inflight: [InFlight; MAX_INFLIGHT],
    events: heapless::Deque<Raw, EVENT_QUEUE>,
    stats: Stats,
    rng: fastrand::Rng,
    next_seq: u64,
    now: Instant,
    active_since: Instant,
    cheap_down_since: Instant,
    next_expiry: Instant,
    class_count: [u32; 3],
    epoch: u32,
    next_tx: u32,
    active: u8,
    aa_mask: u8,
    mirror_next: u8,
    // Facts of the (immutable) config that `touch` needs on every call.
    has_budget: bool,
    has_costly: bool,
}

impl<S: Store, C: Deref<Target = Config>, const E: usize, const L: usize> core::fmt::Debug
    for Producer<S, C, E, L>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Producer")
            .field("device", self.config.device_id())
            .field("epoch", &self.epoch)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<S: Store, C: Deref<Target = Config>> Producer<S, C> {
    /// Starts the engine.
    ///
    /// `epoch` must be larger than at any earlier start of this device (persist a counter);
    /// if the store holds records from a later epoch, the epoch is raised past them.
    /// Records already in `store` (a recovered outbox) become pending and count as accepted.
    /// `seed` drives the back-off jitter.
    pub fn new(config: C, store: S, now: Instant, epoch: u32, seed: u64) -> Self {
        // A built `Config` never exceeds these limits, which are this engine's size.
        Self::start(config, store, now, epoch, seed)
    }
}

impl<S: Store, C: Deref<Target = Config>, const E: usize, const L: usize> Producer<S, C, E, L> {
    /// Starts an engine sized for at most `E` endpoints and `L` links, as
    /// [`new`](Producer::new) does; fails with [`ConfigError::TooManyEndpoints`] or
    /// [`ConfigError::TooManyLinks`] when the configuration has more.
    pub fn try_new(
        config: C,
        store: S,
        now: Instant,
        epoch: u32,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        if config.endpoints().len() > E {
            return Err(ConfigError::TooManyEndpoints);
        }
        if config.links().len() > L {
            return Err(ConfigError::TooManyLinks);
        }
        Ok(Self::start(config, store, now, epoch, seed))
    }

    fn start(config: C, mut store: S, now: Instant, epoch: u32, seed: u64) -> Self {
        let mut stats = Stats::default();
        let mut class_count = [0u32; 3];
        let mut epoch = epoch;
        let mut next_expiry = Instant::NEVER;
        let mut after = None;
        // A store that fails mid-walk keeps the rest uncounted: they are not handed out.
        while let Ok(Some(info)) = store.next_after(after) {
            after = Some(info.key());
            stats.pending += 1;
            stats.pending_bytes += u64::from(info.payload_len);
            class_count[info.meta.class as usize] += 1;
            epoch = epoch.max(info.meta.epoch.saturating_add(1));
            next_expiry = next_expiry.min(info.meta.enqueued_at + config.ttl(info.meta.class));
        }
        stats.accepted = stats.pending;
        let route = Route {
            health: RouteHealth::Healthy,
            fails: 0,
            probe_ok: 0,
            attempt: 0,
            retry_at: now.into(),
            trouble_since: Instant::NEVER.into(),
        };
        let mut endpoints = [EndpointRt {
            throttled_until: now,
            throttled_since: Instant::NEVER,
            left_at: now,
            wrr: 0,
            weight: 0,
            isolate: 0,
            throttles: 0,
            drained: false,
            floor_epoch: 0,
            floor_seq: 0,
            has_floor: false,
        }; E];
        let mut aa_mask = 0;
        for (i, e) in config.endpoints().iter().enumerate() {
            endpoints[i].weight = e.weight;
            if e.weight > 0 {
                aa_mask |= 1 << i;
            }
        }
        let mut p = Producer {
            routes: [[route; L]; E],
            endpoints,
            links: [LinkRt {
                window_start: now.into(),
                spent: 0,
                app_down: false,
                armed: false,
                exhausted: false,
            }; L],
            inflight: [InFlight {
                sent_at: now,
                id: 0,
                records: 0,
                endpoint: 0,
                link: 0,
                probe: false,
                first: 0,
                epoch: 0,
                span: 0,
            }; MAX_INFLIGHT],
            events: heapless::Deque::new(),
            stats,
            rng: fastrand::Rng::with_seed(seed),
            next_seq: 0,
            now,
            active_since: now,
            cheap_down_since: Instant::NEVER,
            next_expiry,
            class_count,
            epoch,
            next_tx: 1,
            active: 0,
            aa_mask,
            mirror_next: 0,
            has_budget: config.links().iter().any(|l| l.budget.is_some()),
            has_costly: config
                .links()
                .iter()
                .any(|l| l.cost == Cost::Costly && l.usable()),
            config,
            store,
        };
        // A configuration whose cheap links are all unusable starts with them down.
        p.refresh_arming();
        p
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// This start's epoch (part of every new message id).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }
    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }
    /// The store, for drivers that need to maintain it (for example to sync a disk store).
    /// Adding or removing records through it breaks the engine's counts.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }
    /// Ends this engine and hands back its store, for example to restart on the same
    /// records (what a reboot does).
    pub fn into_store(self) -> S {
        self.store
    }

    /// The health of one route (`Down` for a route this engine does not have).
    pub fn route_health(&self, endpoint: EndpointId, link: LinkId) -> RouteHealth {
        self.routes
            .get(usize::from(endpoint.0))
            .and_then(|r| r.get(usize::from(link.0)))
            .map_or(RouteHealth::Down, |r| r.health)
    }
    /// Whether a costly link is armed.
    pub fn link_armed(&self, link: LinkId) -> bool {
        self.links.get(link.0 as usize).is_some_and(|l| l.armed)
    }
    /// The endpoint active-passive routing currently sends to.
    pub fn active_endpoint(&self) -> EndpointId {
        EndpointId(self.active)
    }
    /// When the oldest pending record was accepted.
    pub fn oldest_pending(&mut self) -> Option<Instant> {
        self.store
            .next_after(None)
            .ok()
            .flatten()
            .map(|i| i.meta.enqueued_at)
    }
    /// The full message id of a record of this device.
    pub fn message_id(&self, epoch: u32, seq: u64) -> MessageId {
        MessageId {
            device: self.config.device_id().clone(),
            epoch,
            seq,
        }
    }

    /// Accepts a record into the outbox and returns its id.
    ///
    /// Fails with [`EnqueueError::TooLarge`] when the payload exceeds the smallest limit of
    /// the endpoints, and with [`EnqueueError::Full`] when the store has no room and the
    /// policy forbids eviction; in both cases nothing stored changes.
    pub fn enqueue(
        &mut self,
        now: Instant,
        payload: &[u8],
        class: Class,
    ) -> Result<MessageId, EnqueueError> {
        self.touch(now);
        let limit = self.config.max_record_bytes();
        if payload.len() > limit as usize {
            return Err(EnqueueError::TooLarge { limit });
        }
        let meta = RecordMeta {
            epoch: self.epoch,
            seq: self.next_seq,
            class,
            enqueued_at: self.now,
        };
        let flen = frame::encoded_len(&meta, payload.len());
        let need = self.store.cost(flen);
        if need > self.store.capacity() {
            let overhead = need - payload.len();
            return Err(EnqueueError::TooLarge {
                limit: self.store.capacity().saturating_sub(overhead) as u32,
            });
        }
        if !self.store.fits(flen) {
            if self.config.on_full() == OnFull::Reject || !self.can_evict_for(flen, class) {
                return Err(EnqueueError::Full);
            }
            while !self.store.fits(flen) {
                if !self.evict_one(class) {
                    return Err(EnqueueError::Full);
                }
            }
        }
        self.store.append(&meta, payload).map_err(|e| match e {
            // The medium itself is full (a disk): refused as a full outbox is. Evicting
            // would not help, as it frees no space on a disk until whole segments die.
            StoreError::Full => EnqueueError::Full,
            e => EnqueueError::Store(e),
        })?;
        self.next_seq += 1;
        self.stats.accepted += 1;
        self.stats.pending += 1;
        self.stats.pending_bytes += payload.len() as u64;
        self.class_count[class as usize] += 1;
        self.next_expiry = self.next_expiry.min(self.now + self.config.ttl(class));
        Ok(self.message_id(meta.epoch, meta.seq))
    }

    /// Whether evicting records no more important than `class` makes room for `flen`.
    fn can_evict_for(&mut self, flen: usize, class: Class) -> bool {
        let mut free = self.store.capacity();
        let mut evictable = 0;
        let mut after = None;
        while let Ok(Some(info)) = self.store.next_after(after) {
            after = Some(info.key());
            let cost = self.store.cost(info.frame_len as usize);
            free = free.saturating_sub(cost);
            if info.meta.class >= class && !self.in_flight(&info) {
                evictable += cost;
            }
        }
        free + evictable >= self.store.cost(flen)
    }

    /// Evicts the oldest record of the lowest class present that is not more important
    /// than `class` and not in flight.
    fn evict_one(&mut self, class: Class) -> bool {
        for victim in [Class::Bulk, Class::Normal, Class::Critical] {
            if victim < class || self.class_count[victim as usize] == 0 {
                continue;
            }
            let mut after = None;
            while let Ok(Some(info)) = self.store.next_after(after) {
                after = Some(info.key());
                if info.meta.class == victim && !self.in_flight(&info) {
                    return self.drop_record(&info, DropReason::Evicted);
                }
            }
        }
        false
    }

    /// Whether a transmit awaiting its outcome holds the record.
    fn in_flight(&self, info: &RecordInfo) -> bool {
        let (key, class) = (info.key(), info.meta.class);
        self.inflight
            .iter()
            .any(|f| f.holds(key, class, self.config.links()[usize::from(f.link)].allow))
    }

    /// Takes a record out of the store and out of the pending counts; false when the store
    /// would not remove it (it stays pending).
    fn take_out(&mut self, info: &RecordInfo) -> bool {
        if self.store.remove(info.key()).is_err() {
            return false;
        }
        self.stats.pending -= 1;
        self.stats.pending_bytes -= u64::from(info.payload_len);
        self.class_count[info.meta.class as usize] -= 1;
        true
    }

    fn drop_record(&mut self, info: &RecordInfo, reason: DropReason) -> bool {
        if !self.take_out(info) {
            return false;
        }
        self.stats.dropped.bump(reason);
        let seq = info.meta.seq;
        self.push_event(Raw::Dropped {
            epoch: info.meta.epoch,
            seq_lo: seq as u32,
            seq_hi: (seq >> 32) as u32,
            reason,
        });
        true
    }

    /// Writes the next batch to send into `buf` and describes it, or returns `None` when
    /// nothing should be sent now (nothing pending, every slot in flight, a back-off or
    /// linger running, no allowed route).
    ///
    /// `buf` should hold at least the largest `max_batch_bytes` plus frame overhead; a
    /// smaller buffer makes smaller batches.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.touch(now);
        let slot = self.inflight[..self.config.max_inflight()]
            .iter()
            .position(|f| f.id == 0)?;
        if self.stats.pending <= u64::from(self.inflight_records())
            && self.config.routing() != Routing::Mirror
        {
            return None;
        }
        let (ne, nl) = (self.config.endpoints().len(), self.config.links().len());
        // Probes first: they are how a down route comes back.
        for e in 0..ne {
            for l in 0..nl {
                let r = self.routes[e][l];
                if r.health == RouteHealth::Down
                    && r.retry_at.get() <= self.now
                    && self.probeable(e, l)
                    && self.worth_probing(e, l)
                    && let Some(tx) = self.build(buf, slot, e, l, true)
                {
                    self.routes[e][l].health = RouteHealth::Probing;
                    return Some(tx);
                }
            }
        }
        match self.config.routing() {
            Routing::ActivePassive => {
                let (e, l) = self.choose_active_passive()?;
                let tx = self.build(buf, slot, e, l, false)?;
                self.note_active(e);
                Some(tx)
            }
            Routing::ActiveActive => {
                let (e, l) = self.choose_active_active()?;
                self.build(buf, slot, e, l, false)
            }
            Routing::Mirror => {
                for k in 0..ne {
                    let e = (self.mirror_next as usize + k) % ne;
                    if self.endpoints[e].drained {
                        continue;
                    }
                    if let Some((l, Status::Ready)) = self.best_route(e, None)
                        && let Some(tx) = self.build(buf, slot, e, l, false)
                    {
                        self.mirror_next = ((e + 1) % ne) as u8;
                        return Some(tx);
                    }
                }
                None
            }
        }
    }

    /// Records in transmits awaiting an outcome (not counting transmits abandoned when
    /// their route went down).
    pub fn inflight_records(&self) -> u32 {
        self.inflight
            .iter()
            .filter(|f| f.id != 0)
            .map(|f| u32::from(f.records))
            .sum()
    }

    fn probeable(&self, e: usize, l: usize) -> bool {
        let link = &self.config.links()[l];
        !self.endpoints[e].drained
            && !self.links[l].app_down
            && link.usable()
            && (link.cost != Cost::Costly || self.links[l].armed)
            && self.endpoints[e].throttled_until <= self.now
    }

    /// Whether a down route could be chosen if it recovered: only then is a probe (which
    /// costs bytes on a metered link) worth sending. Active-passive never uses a route
    /// ranked after the first live one; otherwise an endpoint uses its cheapest live route.
    fn worth_probing(&self, e: usize, l: usize) -> bool {
        let order = self.config.route_order();
        match self.config.routing() {
            Routing::ActivePassive => {
                let first_live = order
                    .iter()
                    .position(|&(oe, ol)| self.status(oe as usize, ol as usize) != Status::Dead);
                let me = order
                    .iter()
                    .position(|&(oe, ol)| (oe as usize, ol as usize) == (e, l));
                match (first_live, me) {
                    (Some(live), Some(me)) => me < live,
                    _ => true,
                }
            }
            _ => {
                let cost = self.config.links()[l].cost;
                !self.config.links().iter().enumerate().any(|(ol, link)| {
                    ol != l && link.cost <= cost && self.status(e, ol) != Status::Dead
                })
            }
        }
    }

    fn status(&self, e: usize, l: usize) -> Status {
        let link = &self.config.links()[l];
        if self.endpoints[e].drained
            || self.links[l].app_down
            || !link.usable()
            || (link.cost == Cost::Costly && !self.links[l].armed)
        {
            return Status::Dead;
        }
        let r = &self.routes[e][l];
        let st = match r.health {
            RouteHealth::Down | RouteHealth::Probing => return Status::Dead,
            RouteHealth::Healthy => Status::Ready,
            RouteHealth::Suspect if r.retry_at.get() <= self.now => Status::Ready,
            RouteHealth::Suspect => Status::Wait,
        };
        if self.endpoints[e].throttled_until > self.now {
            Status::Wait
        } else {
            st
        }
    }

    /// The cheapest live route of endpoint `e`, optionally only within one cost tier.
    fn best_route(&self, e: usize, tier: Option<Cost>) -> Option<(usize, Status)> {
        for t in TIERS {
            if tier.is_some_and(|x| x != t) {
                continue;
            }
            for (l, link) in self.config.links().iter().enumerate() {
                if link.cost == t {
                    let s = self.status(e, l);
                    if s != Status::Dead {
                        return Some((l, s));
                    }
                }
            }
        }
        None
    }

    fn choose_active_passive(&mut self) -> Option<(usize, usize)> {
        let pick = self.config.route_order().iter().find_map(|&(e, l)| {
            let (e, l) = (e as usize, l as usize);
            let s = self.status(e, l);
            (s != Status::Dead).then_some((e, l, s))
        });
        let (mut e, mut l, mut s) = pick?;
        let a = self.active as usize;
        // Failback waits for the minimum dwell on the fallback, if the fallback still works.
        if e < a
            && self.now.saturating_since(self.active_since) < self.config.timings().min_dwell
            && let Some((al, as_)) = self.best_route(a, None)
        {
            (e, l, s) = (a, al, as_);
        }
        (s == Status::Ready).then_some((e, l))
    }

    fn note_active(&mut self, e: usize) {
        let a = self.active as usize;
        if e == a {
            return;
        }
        if e < a {
            self.stats.failbacks += 1;
            self.push_event(Raw::FailedBack(a as u8, e as u8));
        } else {
            self.stats.failovers += 1;
            self.push_event(Raw::FailedOver(a as u8, e as u8));
        }
        self.active = e as u8;
        self.active_since = self.now;
    }

    fn choose_active_active(&mut self) -> Option<(usize, usize)> {
        let ne = self.config.endpoints().len();
        let dwell = self.config.timings().min_dwell;
        // Which endpoints take a share now; a returning one waits out the dwell.
        let mut mask = 0u8;
        for e in 0..ne {
            let was = self.aa_mask & (1 << e) != 0;
            let alive = self.endpoints[e].weight > 0 && self.best_route(e, None).is_some();
            if alive && (was || self.now.saturating_since(self.endpoints[e].left_at) >= dwell) {
                mask |= 1 << e;
            }
        }
        if mask != self.aa_mask {
            let first = |m: u8| (0..ne).find(|&i| m & (1 << i) != 0);
            for e in 0..ne {
                let bit = 1 << e;
                if self.aa_mask & bit != 0 && mask & bit == 0 {
                    self.endpoints[e].left_at = self.now;
                    if let Some(to) = first(mask) {
                        self.stats.failovers += 1;
                        self.push_event(Raw::FailedOver(e as u8, to as u8));
                    }
                } else if self.aa_mask & bit == 0 && mask & bit != 0 {
                    let from = first(mask & !bit).unwrap_or(e);
                    self.stats.failbacks += 1;
                    self.push_event(Raw::FailedBack(from as u8, e as u8));
                }
            }
            self.aa_mask = mask;
            for ep in &mut self.endpoints {
                ep.wrr = 0;
            }
        }
        for t in TIERS {
            let mut any = false;
            let mut best: Option<(usize, usize)> = None;
            let mut total = 0i32;
            for e in 0..ne {
                if mask & (1 << e) == 0 {
                    continue;
                }
                let Some((l, s)) = self.best_route(e, Some(t)) else {
                    continue;
                };
                any = true;
                if s != Status::Ready {
                    continue;
                }
                let w = i32::from(self.endpoints[e].weight);
                total += w;
                self.endpoints[e].wrr += w;
                if best.is_none_or(|(b, _)| self.endpoints[e].wrr > self.endpoints[b].wrr) {
                    best = Some((e, l));
                }
            }
            if any {
                // Smooth weighted round robin: exact shares, no memory of past outages.
                let (e, l) = best?;
                self.endpoints[e].wrr -= total;
                return Some((e, l));
            }
        }
        None
    }

    /// Selects records for `(e, l)`, copies their frames into `buf` and marks them in flight.
    fn build(
        &mut self,
        buf: &mut [u8],
        slot: usize,
        e: usize,
        l: usize,
        probe: bool,
    ) -> Option<Transmit> {
        let ep = &self.config.endpoints()[e];
        let link = &self.config.links()[l];
        let mirror = self.config.routing() == Routing::Mirror;
        // Mirror routing sends each endpoint its records in order, one transmit at a time,
        // so what an endpoint acknowledged is always everything up to its floor.
        if mirror
            && self
                .inflight
                .iter()
                .any(|f| f.id != 0 && usize::from(f.endpoint) == e)
        {
            return None;
        }
        let max_records = if probe || self.endpoints[e].isolate > 0 {
            1
        } else {
            ep.max_batch_records
        };
        let budget_left = link
            .budget
            .map_or(u64::MAX, |b| b.bytes.saturating_sub(self.links[l].spent));
        // Copied out: dropping a rotted record below needs `self` mutably.
        let (record_overhead, max_batch_bytes) = (ep.record_overhead, ep.max_batch_bytes);
        let (allow, frame_overhead) = (link.allow, link.frame_overhead);
        let (mut len, mut count, mut wire, mut charged) = (0usize, 0u16, 0u64, 0u64);
        // The first record taken, and the span up to the last.
        let mut first: Option<RecordKey> = None;
        let mut span = 0u16;
        let mut first_at = Instant::NEVER;
        let mut full = false;
        let mut over_budget = false;
        let mut after = if mirror {
            self.endpoints[e].floor()
        } else {
            None
        };
        // Expired records were dropped by `touch` before we got here.
        while count < max_records {
            let info = match self.store.next_after(after) {
                Ok(Some(info)) => info,
                // The end, or a store that cannot be walked now: send what we have.
                _ => break,
            };
            let key = info.key();
            after = Some(key);
            if !mirror && self.in_flight(&info) {
                if first.is_some() {
                    // The records of a transmit are a run with no gap: stop at another's.
                    full = true;
                    break;
                }
                continue;
            }
            if !allow.contains(info.meta.class) {
                if mirror {
                    // In order or not at all: the floor cannot pass a record left behind.
                    full = true;
                    break;
                }
                continue;
            }
            let w = u64::from(info.payload_len) + u64::from(record_overhead);
            let cost = u64::from(info.frame_len) + u64::from(frame_overhead);
            if wire + w > u64::from(max_batch_bytes) || len + info.frame_len as usize > buf.len() {
                full = true;
                break;
            }
            if charged + cost > budget_left {
                over_budget = true;
                break;
            }
            let offset = match first {
                None => Some(0),
                Some(f) if f.epoch == key.epoch => u16::try_from(key.seq - f.seq).ok(),
                Some(_) => None,
            };
            let Some(offset) = offset else {
                // Another epoch, or past what one transmit can span: the next transmit.
                full = true;
                break;
            };
            let n = match self.store.read(key, &mut buf[len..]) {
                Ok(n) => n,
                // A frame that fails its check can never be sent as it was accepted: drop
                // it, counted, rather than keep it pending for ever.
                Err(StoreError::Corrupt(err)) if err != FrameError::BufferTooSmall => {
                    self.drop_record(&info, DropReason::Corrupt);
                    continue;
                }
                // A read that failed for now (I/O): try again with the next transmit, which
                // must then not span this record.
                Err(_) => {
                    full = true;
                    break;
                }
            };
            first.get_or_insert(key);
            span = offset;
            first_at = first_at.min(info.meta.enqueued_at);
            len += n;
            count += 1;
            wire += w;
            charged += cost;
        }
        if count == 0 {
            if over_budget && !self.links[l].exhausted {
                self.links[l].exhausted = true;
                self.push_event(Raw::BudgetExhausted(l as u8));
            }
            return None;
        }
        let linger = self.config.timings().linger;
        let young = linger > Duration::ZERO && first_at + linger > self.now;
        if !probe && !full && count < max_records && young {
            // Wait for more records: nothing was marked yet.
            return None;
        }
        self.links[l].spent += charged;
        self.stats.link_bytes[l] += charged;
        let id = self.next_tx;
        self.next_tx = self.next_tx.wrapping_add(1).max(1);
        self.inflight[slot] = InFlight {
            sent_at: self.now,
            id,
            records: count,
            endpoint: e as u8,
            link: l as u8,
            probe,
            first: first.map_or(0, |k| k.seq),
            epoch: first.map_or(0, |k| k.epoch),
            span,
        };
        if !probe {
            self.endpoints[e].isolate = self.endpoints[e].isolate.saturating_sub(1);
        }
        Some(Transmit {
            id: TransmitId(id),
            endpoint: EndpointId(e as u8),
            link: LinkId(l as u8),
            len,
            records: count,
            probe,
        })
    }

    /// Ends `slot`'s transmit without a delivery: its records are pending again.
    fn release_slot(&mut self, slot: usize, ambiguous: bool) {
        let f = &mut self.inflight[slot];
        f.id = 0;
        if ambiguous {
            self.stats.possible_duplicates += u64::from(f.records);
        }
        if self.config.routing() == Routing::Mirror {
            // Records held back only by this transmit (to an endpoint drained since) may
            // now have every acknowledgement they need.
            self.sweep_mirror(None);
        }
    }

    /// Reports what became of a transmit. Unknown or already-handled ids are ignored (a
    /// transmit abandoned when its route went down may still report late).
    pub fn handle_outcome(&mut self, now: Instant, tx: TransmitId, outcome: Outcome) {
        self.touch(now);
        let Some(slot) = self.inflight.iter().position(|f| f.id != 0 && f.id == tx.0) else {
            return;
        };
        self.complete(slot, outcome);
        self.refresh_arming();
    }

    fn complete(&mut self, slot: usize, outcome: Outcome) {
        let f = self.inflight[slot];
        self.inflight[slot].id = 0;
        let (e, l) = (f.endpoint as usize, f.link as usize);
        match outcome {
            Outcome::Delivered => {
                self.finish(&f, e);
                self.endpoints[e].throttled_since = Instant::NEVER;
                self.endpoints[e].throttles = 0;
                self.route_ok(e, l, f.probe);
            }
            Outcome::Timeout => {
                self.release_slot(slot, true);
                self.route_fail(e, l, f.probe);
            }
            Outcome::Unreachable | Outcome::ServerError => {
                self.release_slot(slot, false);
                self.route_fail(e, l, f.probe);
            }
            Outcome::Throttled { retry_after } => {
                self.release_slot(slot, false);
                self.throttle(e, l, retry_after, f.probe);
            }
            Outcome::Unauthorized => {
                self.release_slot(slot, false);
                if f.probe {
                    self.route_fail(e, l, true);
                } else {
                    self.push_event(Raw::AuthFailed(e as u8));
                    for l in 0..self.config.links().len() {
                        self.trip(e, l, DownCause::Auth);
                    }
                }
            }
            Outcome::Rejected(reason) => {
                if f.records == 1 {
                    if let Ok(Some(info)) = self.store.next_after(f.walk_start())
                        && info.key() == f.first_key()
                    {
                        let reason = match reason {
                            RejectReason::TooLarge => DropReason::TooLarge,
                            RejectReason::Malformed => DropReason::Malformed,
                        };
                        self.drop_record(&info, reason);
                    }
                } else {
                    // Which record is poison is unknown: resend them one at a time.
                    self.release_slot(slot, false);
                    self.endpoints[e].isolate = f.records;
                }
                if f.probe {
                    // A rejection says nothing about health: the route stays down and may
                    // be probed again at once with another record.
                    self.routes[e][l].health = RouteHealth::Down;
                    self.routes[e][l].retry_at = Stamp::from(self.now);
                }
            }
        }
    }

    /// Settles the records of a transmit that `e` acknowledged: delivered, or in mirror
    /// routing delivered once every required endpoint has them.
    fn finish(&mut self, f: &InFlight, e: usize) {
        self.stats.delivered_by_endpoint[e] += u64::from(f.records);
        if self.config.routing() == Routing::Mirror {
            // The transmit held every record from the floor up to its last one.
            self.endpoints[e].raise_floor(f.last_key());
            self.sweep_mirror(self.endpoints[e].floor());
            return;
        }
        let mut left = f.records;
        let mut after = f.walk_start();
        let (last, allow) = (f.last_key(), self.config.links()[usize::from(f.link)].allow);
        // The transmit's slot is free already, so `holds` is asked of a live copy.
        let held = InFlight { id: 1, ..*f };
        while left > 0 {
            let Ok(Some(info)) = self.store.next_after(after) else {
                break;
            };
            let key = info.key();
            after = Some(key);
            if key > last {
                break;
            }
            if held.holds(key, info.meta.class, allow) {
                left -= 1;
                if self.take_out(&info) {
                    self.stats.delivered += 1;
                }
            }
        }
    }

    /// Mirror routing: removes, as delivered, the records every required endpoint has
    /// acknowledged (`fallback` is the bound when no endpoint is required).
    fn sweep_mirror(&mut self, fallback: Option<RecordKey>) {
        let required = self.mirror_required();
        let mut bound = None;
        for e in (0..self.config.endpoints().len()).filter(|e| required & (1 << e) != 0) {
            // An endpoint that acknowledged nothing yet holds every record back.
            let floor = self.endpoints[e].floor();
            bound = Some(bound.map_or(floor, |b: Option<RecordKey>| b.min(floor)));
        }
        let Some(upto) = bound.unwrap_or(fallback) else {
            return;
        };
        let mut after = None;
        while let Ok(Some(info)) = self.store.next_after(after) {
            let key = info.key();
            if key > upto {
                break;
            }
            after = Some(key);
            // A drained endpoint's transmit may still hold it; its outcome settles it.
            if !self.in_flight(&info) && self.take_out(&info) {
                self.stats.delivered += 1;
            }
        }
    }

    fn mirror_required(&self) -> u8 {
        (0..self.config.endpoints().len())
            .filter(|&e| !self.endpoints[e].drained)
            .fold(0, |m, e| m | (1 << e))
    }

    fn backoff(&mut self, base: Duration, attempt: u8, cap: Duration) -> Duration {
        // Full jitter: uniform in [1 ms, min(cap, base * 2^attempt)].
        let ceiling = base
            .saturating_pow2(u32::from(attempt))
            .min(cap)
            .as_millis()
            .max(1);
        Duration::from_millis(self.rng.u64(1..=ceiling))
    }

    fn route_ok(&mut self, e: usize, l: usize, probe: bool) {
        let t = *self.config.timings();
        let r = &mut self.routes[e][l];
        if probe {
            r.probe_ok += 1;
            if r.probe_ok >= t.failback_probes {
                *r = Route {
                    health: RouteHealth::Healthy,
                    fails: 0,
                    probe_ok: 0,
                    trouble_since: Instant::NEVER.into(),
                    ..*r
                };
                self.push_event(Raw::RouteUp(e as u8, l as u8));
            } else {
                r.health = RouteHealth::Down;
                r.retry_at = Stamp::from(self.now + t.probe_first);
            }
        } else if r.health != RouteHealth::Down && r.health != RouteHealth::Probing {
            r.health = RouteHealth::Healthy;
            r.fails = 0;
            r.trouble_since = Stamp::from(Instant::NEVER);
            r.attempt = r.attempt.saturating_sub(1);
        }
    }

    fn route_fail(&mut self, e: usize, l: usize, probe: bool) {
        let t = *self.config.timings();
        if probe {
            let attempt = self.routes[e][l].attempt;
            let wait = self.backoff(t.probe_first, attempt, t.probe_max);
            let r = &mut self.routes[e][l];
            r.health = RouteHealth::Down;
            r.probe_ok = 0;
            r.attempt = attempt.saturating_add(1).min(20);
            r.retry_at = Stamp::from(self.now + wait);
            return;
        }
        let r = &mut self.routes[e][l];
        if matches!(r.health, RouteHealth::Down | RouteHealth::Probing) {
            return;
        }
        r.fails = r.fails.saturating_add(1);
        r.trouble_since = Stamp::from(r.trouble_since.get().min(self.now));
        let (fails, since) = (r.fails, r.trouble_since.get());
        if fails >= t.trip_failures || self.now.saturating_since(since) >= t.trip_after {
            let cause = self.classify(e, l);
            self.trip_with_cause(e, l, cause);
        } else {
            let wait = self.backoff(t.retry_base, fails - 1, t.trip_after);
            let r = &mut self.routes[e][l];
            r.health = RouteHealth::Suspect;
            r.retry_at = Stamp::from(self.now + wait);
        }
    }

    /// A region problem if another endpoint works over the same link; a link problem if
    /// every other endpoint fails there too; unknown (`None`) with no other endpoint.
    fn classify(&self, e: usize, l: usize) -> Option<DownCause> {
        let mut others = (0..self.config.endpoints().len())
            .filter(|&o| o != e && !self.endpoints[o].drained)
            .peekable();
        others.peek()?;
        if others.any(|o| self.routes[o][l].health == RouteHealth::Healthy) {
            Some(DownCause::Region)
        } else {
            Some(DownCause::Link)
        }
    }

    fn trip_with_cause(&mut self, e: usize, l: usize, cause: Option<DownCause>) {
        match cause {
            Some(DownCause::Link) => {
                self.push_event(Raw::LinkDown(l as u8));
                for o in 0..self.config.endpoints().len() {
                    self.trip(o, l, DownCause::Link);
                }
            }
            Some(DownCause::Region) => {
                // The region is dark whatever the path: every route to it goes down (and is
                // probed back), so a later link loss does not lead back to it.
                self.trip(e, l, DownCause::Region);
                for o in 0..self.config.links().len() {
                    self.trip(e, o, DownCause::Region);
                }
            }
            // One endpoint only: no evidence either way, so only this route goes down.
            _ => self.trip(e, l, DownCause::Region),
        }
    }

    /// Takes a route down and abandons its transmits in flight (their records may have
    /// arrived: counted as possible duplicates and sent again elsewhere).
    fn trip(&mut self, e: usize, l: usize, cause: DownCause) {
        let t = *self.config.timings();
        if matches!(
            self.routes[e][l].health,
            RouteHealth::Down | RouteHealth::Probing
        ) {
            return;
        }
        let attempt = self.routes[e][l].attempt;
        let wait = self.backoff(t.probe_first, attempt, t.probe_max);
        self.routes[e][l] = Route {
            health: RouteHealth::Down,
            fails: 0,
            probe_ok: 0,
            attempt: attempt.saturating_add(1).min(20),
            retry_at: (self.now + wait).into(),
            trouble_since: Instant::NEVER.into(),
        };
        self.push_event(Raw::RouteDown(e as u8, l as u8, cause));
        for slot in 0..MAX_INFLIGHT {
            let f = self.inflight[slot];
            if f.id != 0 && f.endpoint as usize == e && f.link as usize == l {
                self.inflight[slot].id = 0;
                self.release_slot(slot, true);
            }
        }
    }

    fn throttle(&mut self, e: usize, l: usize, retry_after: Option<Duration>, probe: bool) {
        let t = *self.config.timings();
        let throttles = self.endpoints[e].throttles;
        let wait = match retry_after {
            Some(d) => d,
            None => t.throttle_backoff + self.backoff(t.throttle_backoff, throttles, t.probe_max),
        };
        let ep = &mut self.endpoints[e];
        ep.throttles = throttles.saturating_add(1).min(20);
        ep.throttled_since = ep.throttled_since.min(self.now);
        ep.throttled_until = self.now + wait;
        let since = ep.throttled_since;
        if probe {
            let r = &mut self.routes[e][l];
            r.health = RouteHealth::Down;
            r.retry_at = Stamp::from(r.retry_at.get().max(self.now + wait));
        }
        if self.now.saturating_since(since) >= t.throttle_failover_after {
            for l in 0..self.config.links().len() {
                self.trip(e, l, DownCause::Throttled);
            }
        }
    }

    /// Tells the engine what the application knows of a link. `Down` takes every route over
    /// it down and stops probes there; `Up` lets them be probed at once.
    pub fn handle_link(&mut self, now: Instant, link: LinkId, state: LinkState) {
        self.touch(now);
        let l = link.0 as usize;
        if l >= self.config.links().len() {
            return;
        }
        match state {
            LinkState::Down if !self.links[l].app_down => {
                self.links[l].app_down = true;
                self.push_event(Raw::LinkDown(l as u8));
                for e in 0..self.config.endpoints().len() {
                    self.trip(e, l, DownCause::Link);
                }
            }
            LinkState::Up if self.links[l].app_down => {
                self.links[l].app_down = false;
                self.push_event(Raw::LinkUp(l as u8));
                for e in 0..self.config.endpoints().len() {
                    let r = &mut self.routes[e][l];
                    r.attempt = 0;
                    r.retry_at = Stamp::from(self.now);
                }
            }
            _ => {}
        }
        self.refresh_arming();
    }

    /// Advances timers: request timeouts, stalled sends, expiry, budgets, arming.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.touch(now);
        let t = *self.config.timings();
        for slot in 0..MAX_INFLIGHT {
            let f = self.inflight[slot];
            if f.id == 0 {
                continue;
            }
            if self.now >= f.sent_at + t.request_timeout {
                self.complete(slot, Outcome::Timeout);
            } else if !f.probe && self.now >= f.sent_at + t.trip_after {
                // A send stalled for `trip_after` without any success: the route is down.
                let (e, l) = (f.endpoint as usize, f.link as usize);
                let r = &mut self.routes[e][l];
                r.trouble_since = Stamp::from(r.trouble_since.get().min(f.sent_at));
                if self.now.saturating_since(r.trouble_since.get()) >= t.trip_after {
                    let cause = self.classify(e, l);
                    self.trip_with_cause(e, l, cause);
                }
            }
        }
        self.refresh_arming();
    }

    /// The next time [`handle_timeout`](Self::handle_timeout) has work, if any.
    ///
    /// A transmit's deadline that another call already moved the clock past (a reading
    /// enqueued, or an answer handled, at or after it) is due at once: this returns the
    /// latest `now` seen, and `handle_timeout` then settles it. Every other time returned is
    /// later than the latest `now` (what else is due now, the next `poll_transmit` does).
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let t = *self.config.timings();
        let now = self.now;
        let mut next = Instant::NEVER;
        for f in self.inflight.iter().filter(|f| f.id != 0) {
            // Only deadlines `handle_timeout` clears may be reported as due, or a caller
            // would spin: a request timeout always; a stall only while its route can trip.
            let trips = !matches!(
                self.routes[usize::from(f.endpoint)][usize::from(f.link)].health,
                RouteHealth::Down | RouteHealth::Probing
            );
            let deadlines = [
                Some(f.sent_at + t.request_timeout),
                (!f.probe && trips).then(|| f.sent_at + t.trip_after),
            ];
            for d in deadlines.into_iter().flatten() {
                next = next.min(d.max(now));
            }
        }
        let mut at = |x: Instant| {
            if x > now && x < next {
                next = x;
            }
        };
        if self.stats.pending > u64::from(self.inflight_records())
            || self.config.routing() == Routing::Mirror
        {
            for e in 0..self.config.endpoints().len() {
                for l in 0..self.config.links().len() {
                    let r = &self.routes[e][l];
                    let waits = match r.health {
                        RouteHealth::Suspect => true,
                        RouteHealth::Down => self.probeable_later(e, l),
                        _ => false,
                    };
                    if waits {
                        at(r.retry_at.get().max(self.endpoints[e].throttled_until));
                    }
                }
                at(self.endpoints[e].throttled_until);
            }
            if self.cheap_down_since != Instant::NEVER {
                for (l, link) in self.config.links().iter().enumerate() {
                    if link.cost == Cost::Costly && link.usable() && !self.links[l].armed {
                        at(self.cheap_down_since + link.arm_after);
                    }
                }
            }
            for (l, link) in self.config.links().iter().enumerate() {
                if let (Some(b), true) = (link.budget, self.links[l].exhausted) {
                    at(self.links[l].window_start.get() + b.window);
                }
            }
            if t.linger > Duration::ZERO
                && let Ok(Some(oldest)) = self.store.next_after(None)
            {
                at(oldest.meta.enqueued_at + t.linger);
            }
        }
        if self.stats.pending > 0 {
            at(self.next_expiry);
        }
        (next != Instant::NEVER).then_some(next)
    }

    fn probeable_later(&self, e: usize, l: usize) -> bool {
        let link = &self.config.links()[l];
        !self.endpoints[e].drained
            && !self.links[l].app_down
            && link.usable()
            && (link.cost != Cost::Costly || self.links[l].armed)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front()?;
        let ep = |i: u8| EndpointId(i);
        let ln = |i: u8| LinkId(i);
        Some(match ev {
            Raw::FailedOver(a, b) => Event::FailedOver {
                from: ep(a),
                to: ep(b),
            },
            Raw::FailedBack(a, b) => Event::FailedBack {
                from: ep(a),
                to: ep(b),
            },
            Raw::RouteDown(e, l, cause) => Event::RouteDown {
                endpoint: ep(e),
                link: ln(l),
                cause,
            },
            Raw::RouteUp(e, l) => Event::RouteUp {
                endpoint: ep(e),
                link: ln(l),
            },
            Raw::LinkDown(l) => Event::LinkDown { link: ln(l) },
            Raw::LinkUp(l) => Event::LinkUp { link: ln(l) },
            Raw::LinkArmed(l) => Event::LinkArmed { link: ln(l) },
            Raw::LinkDisarmed(l) => Event::LinkDisarmed { link: ln(l) },
            Raw::BudgetExhausted(l) => Event::BudgetExhausted { link: ln(l) },
            Raw::Dropped {
                epoch,
                seq_lo,
                seq_hi,
                reason,
            } => Event::Dropped {
                id: self.message_id(epoch, u64::from(seq_lo) | (u64::from(seq_hi) << 32)),
                reason,
            },
            Raw::AuthFailed(e) => Event::AuthFailed { endpoint: ep(e) },
        })
    }

    fn push_event(&mut self, ev: Raw) {
        if self.events.push_back(ev).is_err() {
            self.stats.events_lost = self.stats.events_lost.saturating_add(1);
        }
    }

    /// The budget use of `link` in its current window, for the application to keep across
    /// a restart: a device that reboots must not hand its costly link a fresh budget.
    /// `None` for an unknown link or one without a budget.
    pub fn link_spend(&self, link: LinkId) -> Option<LinkSpend> {
        let l = usize::from(link.0);
        self.config.links().get(l)?.budget?;
        let rt = &self.links[l];
        Some(LinkSpend {
            spent: rt.spent,
            window_elapsed: self.now.saturating_since(rt.window_start.get()),
        })
    }

    /// Carries a link's budget use over from before a restart (see
    /// [`link_spend`](Self::link_spend)); call it right after [`new`](Self::new). What was
    /// spent stays spent, and the window ends when it would have: at `now` plus what was
    /// left of it, or later when the clock restarted below the time already passed (so
    /// the budget is never exceeded, at worst it lasts longer). It never lowers what this
    /// engine has already spent.
    pub fn restore_link_spend(
        &mut self,
        now: Instant,
        link: LinkId,
        spend: LinkSpend,
    ) -> Result<(), ControlError> {
        let l = usize::from(link.0);
        let Some(budget) = self.config.links().get(l).and_then(|c| c.budget) else {
            return Err(ControlError::NoSuch);
        };
        self.now = self.now.max(now);
        let elapsed = spend
            .window_elapsed
            .as_millis()
            .min(budget.window.as_millis());
        let rt = &mut self.links[l];
        rt.window_start = Stamp::from(Instant::from_millis(
            self.now.as_millis().saturating_sub(elapsed),
        ));
        rt.spent = rt.spent.max(spend.spent);
        rt.exhausted = rt.spent >= budget.bytes;
        Ok(())
    }

    /// Sets active-active weights at runtime (blue-green, canary): one per endpoint, in
    /// endpoint order, not all zero.
    pub fn set_weights(&mut self, weights: &[u16]) -> Result<(), ControlError> {
        if weights.len() != self.config.endpoints().len() || weights.iter().all(|&w| w == 0) {
            return Err(ControlError::BadWeights);
        }
        for (ep, &w) in self.endpoints.iter_mut().zip(weights) {
            ep.weight = w;
            ep.wrr = 0;
        }
        Ok(())
    }

    /// Stops sending new records to an endpoint (transmits in flight finish). In mirror
    /// routing a drained endpoint is no longer required for delivery.
    pub fn drain(&mut self, endpoint: EndpointId) -> Result<(), ControlError> {
        self.set_drained(endpoint, true)
    }

    /// Undoes [`drain`](Self::drain).
    pub fn undrain(&mut self, endpoint: EndpointId) -> Result<(), ControlError> {
        self.set_drained(endpoint, false)
    }

    fn set_drained(&mut self, endpoint: EndpointId, drained: bool) -> Result<(), ControlError> {
        let e = endpoint.0 as usize;
        if e >= self.config.endpoints().len() {
            return Err(ControlError::NoSuch);
        }
        self.endpoints[e].drained = drained;
        self.refresh_arming();
        if drained && self.config.routing() == Routing::Mirror {
            // Records that now have every required acknowledgement are complete.
            self.sweep_mirror(None);
        }
        Ok(())
    }

    /// Brings time forward and does what time alone decides: budget windows, expiry, arming.
    fn touch(&mut self, now: Instant) {
        if now <= self.now && self.now < self.next_expiry {
            // Time has not moved: windows, expiry and arming are as they were (every call
            // that changes a route or link refreshes the arming before it returns).
            return;
        }
        self.now = self.now.max(now);
        let links = if self.has_budget {
            self.config.links()
        } else {
            &[]
        };
        for (l, link) in links.iter().enumerate() {
            if let Some(b) = link.budget {
                let rt = &mut self.links[l];
                let elapsed = self.now.saturating_since(rt.window_start.get()).as_millis();
                if elapsed >= b.window.as_millis() {
                    let windows = elapsed / b.window.as_millis();
                    rt.window_start = Stamp::from(
                        rt.window_start.get()
                            + Duration::from_millis(windows * b.window.as_millis()),
                    );
                    rt.spent = 0;
                    rt.exhausted = false;
                }
            }
        }
        if self.now >= self.next_expiry {
            self.expire();
        }
        // Time alone can only arm a costly link once every cheap route is down; while one
        // is up, arming changes only with route health, which the calls that change it
        // refresh themselves.
        if self.cheap_down_since != Instant::NEVER {
            self.refresh_arming();
        }
    }

    fn expire(&mut self) {
        let mut next = Instant::NEVER;
        let present = (0..3)
            .filter(|&c| self.class_count[c] > 0)
            .fold(0u8, |m, c| m | (1 << c));
        let mut seen = 0u8;
        let mut after = None;
        // Records of one class are in acceptance order, so the first live one of each class
        // bounds the rest.
        while seen != present {
            let Ok(Some(info)) = self.store.next_after(after) else {
                break;
            };
            after = Some(info.key());
            let at = info.meta.enqueued_at + self.config.ttl(info.meta.class);
            if at > self.now {
                next = next.min(at);
                seen |= 1 << info.meta.class as u8;
            } else if !self.in_flight(&info) {
                self.drop_record(&info, DropReason::Expired);
            } else {
                // In flight: decided by its outcome; look again shortly.
                next = next.min(self.now + Duration::from_secs(1));
            }
        }
        self.next_expiry = next;
    }

    fn refresh_arming(&mut self) {
        let (ne, links) = (self.config.endpoints().len(), self.config.links());
        // Arming only matters where a costly link could ever be used.
        if !self.has_costly {
            return;
        }
        let cheap_up = (0..ne).any(|e| {
            links
                .iter()
                .enumerate()
                .any(|(l, link)| link.cost != Cost::Costly && self.status(e, l) != Status::Dead)
        });
        if cheap_up {
            self.cheap_down_since = Instant::NEVER;
            for l in 0..links.len() {
                if self.links[l].armed {
                    self.links[l].armed = false;
                    self.push_event(Raw::LinkDisarmed(l as u8));
                }
            }
            return;
        }
        self.cheap_down_since = self.cheap_down_since.min(self.now);
        for l in 0..links.len() {
            let link = &self.config.links()[l];
            let arm = link.cost == Cost::Costly
                && link.usable()
                && !self.links[l].armed
                && !self.links[l].app_down
                && self.now.saturating_since(self.cheap_down_since) >= link.arm_after;
            if arm {
                self.links[l].armed = true;
                self.push_event(Raw::LinkArmed(l as u8));
            }
        }
    }
}
