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

mod batch;
mod budget;
mod events;
mod health;
mod inflight;
mod ledger;
mod outcome;
mod retention;
mod routing;
mod timers;

pub use budget::LinkSpend;
pub use health::RouteHealth;

use budget::LinkRt;
use events::{Events, Raw};
use health::{Route, Stamp};
use inflight::InFlight;
use ledger::Ledger;
use routing::{EndpointRt, Status};

/// Identifies one transmit until its outcome is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TransmitId(pub u32);

/// A batch of records the driver must send, written by [`Engine::poll_transmit`] into the
/// caller's buffer as back-to-back frames (see [`crate::frame`]).
#[must_use = "a transmit must be sent and its outcome handed back"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Transmit {
    /// Pass this back to [`Engine::handle_outcome`].
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
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
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
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RejectReason {
    /// Over the hub's size limit.
    TooLarge,
    /// Not acceptable to the hub.
    Malformed,
}

/// A link's state as the application sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LinkState {
    /// The link can carry traffic (it may still fail; the engine will find out).
    Up,
    /// The link is known to be down: do not use it, do not probe it.
    Down,
}

/// Why a record was not accepted. The record was not stored and nothing stored was harmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
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
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
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

/// Why [`Engine::poll_transmit`] could not write a transmit. Nothing was marked in
/// flight: the same call with a large enough buffer succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TransmitError {
    /// The buffer cannot hold the next record's frame.
    BufferTooSmall {
        /// Bytes the next record's frame needs.
        needed: usize,
    },
}

impl core::fmt::Display for TransmitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TransmitError::BufferTooSmall { needed } => write!(
                f,
                "transmit buffer too small: the next record needs {needed} bytes"
            ),
        }
    }
}

impl core::error::Error for TransmitError {}

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
/// 2. Call [`poll_transmit`](Self::poll_transmit) until it returns `Ok(None)`. Send each
///    [`Transmit`] to its endpoint over its link, then report what happened with
///    [`handle_outcome`](Self::handle_outcome), exactly once per transmit. Records are only
///    removed on [`Outcome::Delivered`]. It fails only with
///    [`TransmitError::BufferTooSmall`], when the buffer given cannot hold the next record:
///    give it one of the size named.
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
/// let mut p = Engine::new(&config, RamStore::<4096>::new(), Instant::ZERO, 1, 42);
/// let id = p.enqueue(Instant::ZERO, b"21.5", Class::Normal).unwrap();
/// assert_eq!(id.to_string(), "sensor-1:1:0");
///
/// let mut buf = [0u8; 1024];
/// let tx = p.poll_transmit(Instant::ZERO, &mut buf)?.unwrap();
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
///     tx = match p.poll_transmit(now, &mut buf)? {
///         Some(tx) => tx,
///         None => {
///             now = p.poll_timeout().unwrap(); // sleep until then
///             p.handle_timeout(now);
///             p.poll_transmit(now, &mut buf)?.unwrap()
///         }
///     };
/// }
/// assert_eq!(tx.endpoint, EndpointId(1));
/// assert!(now < Instant::from_millis(5_000));
/// p.handle_outcome(now, tx.id, Outcome::Delivered);
/// assert_eq!(p.stats().delivered, 1);
/// assert!(core::iter::from_fn(|| p.poll_event())
///     .any(|e| e == Event::FailedOver { from: EndpointId(0), to: EndpointId(1) }));
///
/// // A buffer too small for the next record is an error that names the size needed.
/// p.enqueue(now, &[0; 100], Class::Normal).unwrap();
/// let mut small = [0u8; 64];
/// let Err(TransmitError::BufferTooSmall { needed }) = p.poll_transmit(now, &mut small) else {
///     panic!("a 100-byte record does not fit 64 bytes");
/// };
/// assert!(p.poll_transmit(now, &mut buf[..needed])?.is_some());
/// # Ok::<(), TransmitError>(())
/// ```
///
/// # Sizing
///
/// `E` and `L` are the most endpoints and links this engine can take (the configuration's
/// own limits, [`MAX_ENDPOINTS`] and [`MAX_LINKS`], by default). A device that knows it has
/// two endpoints and two links saves a third of the engine's RAM with
/// `Engine<S, C, 2, 2>`, built with [`try_new`](Self::try_new):
///
/// ```
/// use twinhub_core::*;
///
/// let config = Config::builder("sensor-1")
///     .endpoint(EndpointConfig::new("primary"))
///     .endpoint(EndpointConfig::new("secondary"))
///     .build()
///     .unwrap();
/// let small = Engine::<_, _, 2, 1>::try_new(&config, RamStore::<512>::new(), Instant::ZERO, 1, 7)
///     .unwrap();
/// assert!(size_of_val(&small) < size_of::<Engine<RamStore<512>, &Config>>());
/// // A configuration larger than the engine is refused, naming what is over.
/// let one = Engine::<_, _, 1, 1>::try_new(&config, RamStore::<512>::new(), Instant::ZERO, 1, 7);
/// assert_eq!(one.err(), Some(ConfigError::TooManyEndpoints));
/// ```
pub struct Engine<
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
    events: Events,
    ledger: Ledger,
    rng: fastrand::Rng,
    next_seq: u64,
    now: Instant,
    active_since: Instant,
    cheap_down_since: Instant,
    next_expiry: Instant,
    epoch: u32,
    next_tx: u32,
    active: u8,
    aa_mask: u8,
    mirror_next: u8,
    // Facts of the (immutable) config that `touch` needs on every call: `HAS_BUDGET`,
    // `HAS_COSTLY` (bits of one byte, as the engine is held to a RAM budget).
    facts: u8,
}

/// A link has a budget.
const HAS_BUDGET: u8 = 1;
/// A costly link is usable.
const HAS_COSTLY: u8 = 2;

impl<S: Store, C: Deref<Target = Config>, const E: usize, const L: usize> core::fmt::Debug
    for Engine<S, C, E, L>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Engine")
            .field("device", self.config.device_id())
            .field("epoch", &self.epoch)
            .field("stats", self.ledger.stats())
            .finish_non_exhaustive()
    }
}

impl<S: Store, C: Deref<Target = Config>> Engine<S, C> {
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

impl<S: Store, C: Deref<Target = Config>, const E: usize, const L: usize> Engine<S, C, E, L> {
    /// Starts an engine sized for at most `E` endpoints and `L` links, as
    /// [`new`](Engine::new) does; fails with [`ConfigError::TooManyEndpoints`] or
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
        let mut ledger = Ledger::new();
        let mut epoch = epoch;
        let mut next_expiry = Instant::NEVER;
        let mut after = None;
        // A store that fails mid-walk keeps the rest uncounted: they are not handed out.
        while let Ok(Some(info)) = store.next_after(after) {
            after = Some(info.key());
            ledger.recovered(&info);
            epoch = epoch.max(info.meta.epoch.saturating_add(1));
            next_expiry = next_expiry.min(info.meta.enqueued_at + config.ttl(info.meta.class));
        }
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
        let mut p = Engine {
            routes: [[route; L]; E],
            endpoints,
            links: [LinkRt {
                window_start: now.into(),
                spent: 0.into(),
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
            events: Events::new(),
            ledger,
            rng: fastrand::Rng::with_seed(seed),
            next_seq: 0,
            now,
            active_since: now,
            cheap_down_since: Instant::NEVER,
            next_expiry,
            epoch,
            next_tx: 1,
            active: 0,
            aa_mask,
            mirror_next: 0,
            facts: if config.links().iter().any(|l| l.budget.is_some()) {
                HAS_BUDGET
            } else {
                0
            } | if config
                .links()
                .iter()
                .any(|l| l.cost == Cost::Costly && l.usable())
            {
                HAS_COSTLY
            } else {
                0
            },
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
        self.ledger.stats()
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
    // Inlined, with the clone, so `enqueue` builds the id in its result rather than
    // copying 150 bytes out of a temporary.
    #[inline]
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
    // Inlined, around `accept`, so that the id (150 bytes, mostly the device id) is built
    // where the caller keeps it: returned from `accept`'s frame it was copied twice, and the
    // second copy stalled on reading the first (about 4 ns a record), or not at all where
    // the caller uses only its number.
    #[inline]
    pub fn enqueue(
        &mut self,
        now: Instant,
        payload: &[u8],
        class: Class,
    ) -> Result<MessageId, EnqueueError> {
        let seq = self.accept(now, payload, class)?;
        Ok(self.message_id(self.epoch, seq))
    }

    /// `enqueue` up to the id: stores the record and returns its sequence number.
    fn accept(&mut self, now: Instant, payload: &[u8], class: Class) -> Result<u64, EnqueueError> {
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
            if self.config.on_full() == OnFull::Reject {
                return Err(EnqueueError::Full);
            }
            self.make_room(flen, class)?;
        }
        self.store.append(&meta, payload).map_err(|e| match e {
            // The medium itself is full (a disk): refused as a full outbox is. Evicting
            // would not help, as it frees no space on a disk until whole segments die.
            StoreError::Full => EnqueueError::Full,
            e => EnqueueError::Store(e),
        })?;
        self.next_seq += 1;
        self.ledger.accepted(class, payload.len() as u64);
        self.next_expiry = self.next_expiry.min(self.now + self.config.ttl(class));
        Ok(meta.seq)
    }

    /// Writes the next batch to send into `buf` and describes it, or returns `Ok(None)`
    /// when nothing should be sent now (nothing pending, every slot in flight, a back-off
    /// or linger running, no allowed route, a partial batch
    /// [held](crate::ConfigBuilder::hold_partial) behind transmits in flight).
    ///
    /// `buf` should hold at least the largest `max_batch_bytes` plus frame overhead; a
    /// smaller buffer makes smaller batches. A buffer too small for even the next record
    /// is an error, [`TransmitError::BufferTooSmall`], naming the bytes that record needs:
    /// nothing is marked in flight, and the call succeeds again with a buffer that large.
    /// (Without it the record would wait, unsent, until its time to live ran out.)
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, TransmitError> {
        self.touch(now);
        let Some(slot) = self.inflight[..self.config.max_inflight()]
            .iter()
            .position(|f| f.id == 0)
        else {
            return Ok(None);
        };
        let in_flight = u64::from(self.inflight_records());
        let waiting = self.ledger.pending().saturating_sub(in_flight);
        if waiting == 0 && self.config.routing() != Routing::Mirror {
            return Ok(None);
        }
        // Nagle's rule (see `ConfigBuilder::hold_partial`): a partial batch waits for the
        // transmits in flight.
        if self.config.hold_partial()
            && in_flight > 0
            && waiting < u64::from(self.config.full_batch())
        {
            return Ok(None);
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
                    && let Some(tx) = self.build(buf, slot, e, l, true)?
                {
                    self.routes[e][l].health = RouteHealth::Probing;
                    return Ok(Some(tx));
                }
            }
        }
        match self.config.routing() {
            Routing::ActivePassive => {
                let Some((e, l)) = self.choose_active_passive() else {
                    return Ok(None);
                };
                // Passed on as built, not unpacked by `?` and packed again: the repacking
                // read the result back in pieces that stalled on its stores.
                let tx = self.build(buf, slot, e, l, false);
                if let Ok(Some(_)) = tx {
                    self.note_active(e);
                }
                tx
            }
            Routing::ActiveActive => match self.choose_active_active() {
                Some((e, l)) => self.build(buf, slot, e, l, false),
                None => Ok(None),
            },
            Routing::Mirror => {
                for k in 0..ne {
                    let e = (self.mirror_next as usize + k) % ne;
                    if self.endpoints[e].drained {
                        continue;
                    }
                    if let Some((l, Status::Ready)) = self.best_route(e, None)
                        && let Some(tx) = self.build(buf, slot, e, l, false)?
                    {
                        self.mirror_next = ((e + 1) % ne) as u8;
                        return Ok(Some(tx));
                    }
                }
                Ok(None)
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

    /// Tells the engine what the application knows of a link. `Down` takes every route over
    /// it down and stops probes there; `Up` lets them be probed at once.
    pub fn handle_link(&mut self, now: Instant, link: LinkId, state: LinkState) {
        self.touch(now);
        self.link_reported(link, state);
        self.refresh_arming();
    }

    /// Advances timers: request timeouts, stalled sends, expiry, budgets, arming.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.touch(now);
        self.settle_deadlines();
        self.refresh_arming();
    }

    /// The next time [`handle_timeout`](Self::handle_timeout) has work, if any.
    ///
    /// A transmit's deadline that another call already moved the clock past (a reading
    /// enqueued, or an answer handled, at or after it) is due at once: this returns the
    /// latest `now` seen, and `handle_timeout` then settles it. Every other time returned is
    /// later than the latest `now` (what else is due now, the next `poll_transmit` does).
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.next_deadline()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop()?;
        Some(ev.expand(|epoch, seq| self.message_id(epoch, seq)))
    }

    /// The budget use of `link` in its current window, for the application to keep across
    /// a restart: a device that reboots must not hand its costly link a fresh budget.
    /// `None` for an unknown link or one without a budget.
    pub fn link_spend(&self, link: LinkId) -> Option<LinkSpend> {
        let l = usize::from(link.0);
        self.config.links().get(l)?.budget?;
        let rt = &self.links[l];
        Some(LinkSpend {
            spent: rt.spent.get(),
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
        rt.spent = rt.spent.get().max(spend.spent).into();
        rt.exhausted = rt.spent.get() >= budget.bytes;
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
            self.sweep_mirror(None, None);
        }
        Ok(())
    }
}
