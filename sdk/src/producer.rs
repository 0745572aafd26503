//! The `Producer` handle and the driver task that owns the engine.
//!
//! One tokio task owns a [`twinhub_core::Producer`]: it accepts records, runs transports,
//! feeds their outcomes and the clock back to the engine, and publishes events and stats.
//! [`Producer`] is a cheap `Clone + Send` handle that talks to it over channels.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use twinhub_core::{
    Class, Config, ControlError, EndpointId, EnqueueError, Event, Instant, LinkId, LinkSpend,
    LinkState, MAX_ENDPOINTS, MAX_LINKS, MessageId, Outcome, RouteHealth, Stats, Store, TransmitId,
};

use crate::record;
use crate::transport::SharedTransport;

/// A store the driver can make durable: group commit calls [`Outbox::sync`] once per group
/// of accepted records, before their `send`s return.
pub trait Outbox: Store + Send + 'static {
    /// Makes everything accepted so far durable (per the store's policy).
    fn sync(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Keeps budgeted links' spend across restarts, if this outbox persists anything.
    fn save_link_spend(&mut self, _spends: &[(&str, LinkSpend)]) -> Result<(), String> {
        Ok(())
    }
    /// The spend a previous run saved, by link name.
    fn load_link_spend(&mut self) -> Vec<(String, LinkSpend)> {
        Vec::new()
    }
}

impl Outbox for crate::memstore::MemStore {}

/// Options for [`Producer::send_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOptions {
    /// The record's class (default normal).
    pub class: Class,
    /// Application properties, carried to the hub (user properties, property bag).
    pub properties: Vec<(String, String)>,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            class: Class::Normal,
            properties: Vec::new(),
        }
    }
}

impl SendOptions {
    /// Options for a class.
    pub fn class(class: Class) -> Self {
        SendOptions {
            class,
            ..Self::default()
        }
    }
    /// Adds a property.
    pub fn property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((name.into(), value.into()));
        self
    }
}

/// Why a record was not accepted. Nothing already accepted is affected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The record (body plus properties) is larger than the smallest endpoint limit.
    #[error("record too large: at most {limit} bytes of body and properties are accepted")]
    TooLarge {
        /// The limit in bytes.
        limit: u32,
    },
    /// The outbox is full and the policy refuses the record.
    #[error("outbox full")]
    Full,
    /// The outbox could not store or sync the record.
    #[error("outbox failed: {0}")]
    Outbox(String),
    /// The producer was shut down.
    #[error("producer is shut down")]
    Closed,
}

/// A submitted record's acceptance: await it for the id (see [`Producer::submit`]).
#[derive(Debug)]
#[must_use = "the record is only known to be accepted once the ticket resolves"]
pub struct SendTicket(oneshot::Receiver<Result<MessageId, SendError>>);

impl Future for SendTicket {
    type Output = Result<MessageId, SendError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(SendError::Closed)))
    }
}

/// Why `flush` or `shutdown` did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlushError {
    /// Records were still pending when the timeout passed; they stay in the outbox.
    #[error("{pending} records still pending after the timeout")]
    Timeout {
        /// Records still pending.
        pending: u64,
    },
    /// The producer was shut down.
    #[error("producer is shut down")]
    Closed,
}

/// A runtime control that could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlFailure {
    /// No endpoint or link with that name.
    #[error("no endpoint or link named `{0}`")]
    NoSuchName(String),
    /// The engine refused it.
    #[error("{0}")]
    Engine(String),
    /// The producer was shut down.
    #[error("producer is shut down")]
    Closed,
}

/// A snapshot of the producer's counters and of the data at risk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The engine's counters (accepted, delivered, pending, dropped by reason, ...).
    pub stats: Stats,
    /// Age of the oldest pending record: how long data has been at risk.
    pub oldest_pending_age: Option<Duration>,
    /// Endpoint names, by index.
    pub endpoints: Vec<String>,
    /// Link names, by index.
    pub links: Vec<String>,
    /// Health of each route: `route_health[endpoint][link]`, by index.
    pub route_health: Vec<Vec<RouteHealth>>,
    /// Bytes charged to each link's budget in its current window, by index; `None` for a
    /// link without a budget.
    pub link_spent: Vec<Option<u64>>,
}

impl Snapshot {
    /// The snapshot as the JSON object `twinhub send` prints.
    pub fn to_json(&self) -> serde_json::Value {
        let s = &self.stats;
        let by_endpoint: serde_json::Map<String, serde_json::Value> = self
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), s.delivered_by_endpoint[i].into()))
            .collect();
        let by_link: serde_json::Map<String, serde_json::Value> = self
            .links
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), s.link_bytes[i].into()))
            .collect();
        let dropped: serde_json::Map<String, serde_json::Value> = twinhub_core::DropReason::ALL
            .iter()
            .map(|r| (r.name().to_string(), s.dropped.get(*r).into()))
            .collect();
        serde_json::json!({
            "accepted": s.accepted,
            "delivered": s.delivered,
            "pending": s.pending,
            "pending_bytes": s.pending_bytes,
            "oldest_pending_ms": self.oldest_pending_age.map(|d| d.as_millis() as u64),
            "dropped": dropped,
            "delivered_by_endpoint": by_endpoint,
            "failovers": s.failovers,
            "failbacks": s.failbacks,
            "link_bytes": by_link,
            "possible_duplicates": s.possible_duplicates,
        })
    }
}

enum Command {
    Send {
        /// The application's body and properties, put into the record envelope by the
        /// driver in one reused buffer (no copy per record on the way in).
        body: Vec<u8>,
        properties: Vec<(String, String)>,
        class: Class,
        reply: oneshot::Sender<Result<MessageId, SendError>>,
    },
    Flush(oneshot::Sender<()>),
    Shutdown(Duration, oneshot::Sender<Snapshot>),
    Link(
        String,
        LinkState,
        oneshot::Sender<Result<(), ControlFailure>>,
    ),
    Weights(Vec<u16>, oneshot::Sender<Result<(), ControlFailure>>),
    Drain(String, bool, oneshot::Sender<Result<(), ControlFailure>>),
}

struct Shared {
    /// The counters, the oldest pending record's age and the routes, as of the driver's
    /// last step (the names are fixed, so the driver's steps copy no strings).
    latest: Mutex<(Stats, Option<Duration>, Routes)>,
    endpoints: Vec<String>,
    links: Vec<String>,
    events: broadcast::Sender<Event>,
    max_body: u32,
}

/// Route health and budget use by index, copied at every driver step into fixed arrays so
/// the step allocates nothing.
#[derive(Clone, Copy)]
struct Routes {
    health: [[RouteHealth; MAX_LINKS]; MAX_ENDPOINTS],
    spent: [Option<u64>; MAX_LINKS],
}

impl Routes {
    const NEW: Routes = Routes {
        health: [[RouteHealth::Healthy; MAX_LINKS]; MAX_ENDPOINTS],
        spent: [None; MAX_LINKS],
    };
}

impl Shared {
    fn snapshot(&self, stats: Stats, oldest_pending_age: Option<Duration>, r: Routes) -> Snapshot {
        let links = self.links.len();
        Snapshot {
            stats,
            oldest_pending_age,
            endpoints: self.endpoints.clone(),
            links: self.links.clone(),
            route_health: r.health[..self.endpoints.len()]
                .iter()
                .map(|row| row[..links].to_vec())
                .collect(),
            link_spent: r.spent[..links].to_vec(),
        }
    }
}

/// The application's handle to a running producer. Cheap to clone; every clone talks to
/// the same driver.
#[derive(Clone)]
pub struct Producer {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("stats", &self.stats().stats)
            .finish_non_exhaustive()
    }
}

/// The parts a producer is made of, for callers that build them themselves (tests, custom
/// transports). Most applications use [`crate::Producer::builder`] from a configuration.
pub struct Parts<S: Outbox> {
    /// The validated engine configuration.
    pub config: Config,
    /// The outbox.
    pub outbox: S,
    /// This start's epoch (persist a counter; the disk outbox does).
    pub epoch: u32,
    /// One transport per route: `transports[endpoint][link]`.
    pub transports: Vec<Vec<SharedTransport>>,
    /// Seed for the engine's jitter.
    pub seed: u64,
}

impl Producer {
    /// Starts the driver task on the current tokio runtime.
    pub fn start<S: Outbox>(parts: Parts<S>) -> Producer {
        let config = Arc::new(parts.config);
        let clock = Clock::new();
        let mut engine = twinhub_core::Producer::new(
            config.clone(),
            parts.outbox,
            clock.now(),
            parts.epoch,
            parts.seed,
        );
        // A restart must not hand a costly link a fresh budget.
        for (name, spend) in engine.store_mut().load_link_spend() {
            if let Some(l) = config.link_id(&name) {
                let _ = engine.restore_link_spend(clock.now(), l, spend);
            }
        }
        let (events, _) = broadcast::channel(1024);
        let max_body = config.max_record_bytes();
        let shared = Arc::new(Shared {
            latest: Mutex::new((engine.stats().clone(), None, Routes::NEW)),
            endpoints: config
                .endpoints()
                .iter()
                .map(|e| e.name.to_string())
                .collect(),
            links: config.links().iter().map(|l| l.name.to_string()).collect(),
            events,
            max_body,
        });
        let (tx, rx) = mpsc::channel(4096);
        let driver = Driver {
            engine,
            transports: parts.transports,
            clock,
            shared: shared.clone(),
            inflight: JoinSet::new(),
            full_batch: config
                .endpoints()
                .iter()
                .map(|e| u64::from(e.max_batch_records))
                .min()
                .unwrap_or(1),
            flushers: Vec::new(),
            buf: vec![0; buffer_len(&config)],
            envelope: Vec::new(),
            spend_dirty: false,
            spend_saved_at: None,
        };
        tokio::spawn(driver.run(rx));
        Producer {
            commands: tx,
            shared,
        }
    }

    /// Accepts a record of class normal; returns once it is in the outbox (durable per the
    /// fsync policy), not once delivered.
    pub async fn send(&self, payload: impl Into<Vec<u8>>) -> Result<MessageId, SendError> {
        self.send_with(payload, SendOptions::default()).await
    }

    /// Accepts a record with a class and properties.
    pub async fn send_with(
        &self,
        payload: impl Into<Vec<u8>>,
        opts: SendOptions,
    ) -> Result<MessageId, SendError> {
        self.submit(payload, opts).await?.await
    }

    /// Queues a record and returns a ticket that resolves like [`Producer::send_with`].
    /// Records are accepted in the order they are submitted, so a caller can keep many in
    /// flight (they share outbox syncs) and still get ids in its own order.
    pub async fn submit(
        &self,
        payload: impl Into<Vec<u8>>,
        opts: SendOptions,
    ) -> Result<SendTicket, SendError> {
        let body = payload.into();
        let overhead = record::overhead(&opts.properties);
        if body.len() + overhead > self.shared.max_body as usize {
            let limit = self.shared.max_body.saturating_sub(overhead as u32);
            return Err(SendError::TooLarge { limit });
        }
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Send {
                body,
                properties: opts.properties,
                class: opts.class,
                reply,
            })
            .await
            .map_err(|_| SendError::Closed)?;
        Ok(SendTicket(rx))
    }

    /// Waits until nothing is pending (everything delivered or dropped by policy).
    pub async fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Flush(reply))
            .await
            .map_err(|_| FlushError::Closed)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(FlushError::Closed),
            Err(_) => Err(FlushError::Timeout {
                pending: self.stats().stats.pending,
            }),
        }
    }

    /// Stops accepting records, delivers what is pending for up to `timeout`, syncs the
    /// outbox and stops the driver. Records still pending stay in a disk outbox for the
    /// next start. When it returns the outbox is closed, so a new producer can open the
    /// same directory at once.
    pub async fn shutdown(&self, timeout: Duration) -> Result<Snapshot, FlushError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Shutdown(timeout, reply))
            .await
            .map_err(|_| FlushError::Closed)?;
        let snap = rx.await.map_err(|_| FlushError::Closed)?;
        if snap.stats.pending > 0 {
            return Err(FlushError::Timeout {
                pending: snap.stats.pending,
            });
        }
        Ok(snap)
    }

    /// A stream of the engine's events (failover, failback, drops, budget, ...). A receiver
    /// that falls more than 1024 events behind misses the oldest; the counters in
    /// [`Producer::stats`] are always complete.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// The counters and the data at risk, as of the driver's last step.
    pub fn stats(&self) -> Snapshot {
        let (stats, oldest, routes) = self
            .shared
            .latest
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        self.shared.snapshot(stats, oldest, routes)
    }

    /// Tells the engine a link is up or down (for example from the modem's status).
    pub async fn set_link_state(&self, link: &str, up: bool) -> Result<(), ControlFailure> {
        let state = if up { LinkState::Up } else { LinkState::Down };
        self.control(|r| Command::Link(link.to_string(), state, r))
            .await
    }

    /// Sets active-active weights, one per endpoint in configuration order.
    pub async fn set_weights(&self, weights: &[u16]) -> Result<(), ControlFailure> {
        self.control(|r| Command::Weights(weights.to_vec(), r))
            .await
    }

    /// Stops sending new records to an endpoint (`drained = true`) or resumes it.
    pub async fn set_drained(&self, endpoint: &str, drained: bool) -> Result<(), ControlFailure> {
        self.control(|r| Command::Drain(endpoint.to_string(), drained, r))
            .await
    }

    async fn control(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), ControlFailure>>) -> Command,
    ) -> Result<(), ControlFailure> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| ControlFailure::Closed)?;
        rx.await.map_err(|_| ControlFailure::Closed)?
    }
}

fn buffer_len(config: &Config) -> usize {
    // Room for the largest batch of any endpoint, in frames.
    config
        .endpoints()
        .iter()
        .map(|e| {
            e.max_batch_bytes as usize
                + e.max_batch_records as usize * (twinhub_core::frame::HEADER_AND_CRC + 32)
        })
        .max()
        .unwrap_or(1 << 20)
}

/// Engine time: milliseconds since the Unix epoch, so ages of recovered records stay true,
/// advanced by tokio's clock (which tests can pause).
struct Clock {
    base_ms: u64,
    start: tokio::time::Instant,
}

impl Clock {
    fn new() -> Self {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            base_ms,
            start: tokio::time::Instant::now(),
        }
    }
    fn now(&self) -> Instant {
        Instant::from_millis(self.base_ms + self.start.elapsed().as_millis() as u64)
    }
    fn deadline(&self, at: Instant) -> tokio::time::Instant {
        self.start + Duration::from_millis(at.as_millis().saturating_sub(self.base_ms))
    }
}

struct Driver<S: Outbox> {
    engine: twinhub_core::Producer<S, Arc<Config>>,
    transports: Vec<Vec<SharedTransport>>,
    clock: Clock,
    shared: Arc<Shared>,
    inflight: JoinSet<(TransmitId, Outcome)>,
    /// The smallest full batch of any endpoint, in records.
    full_batch: u64,
    flushers: Vec<oneshot::Sender<()>>,
    buf: Vec<u8>,
    /// The record envelope being enqueued, reused for every record.
    envelope: Vec<u8>,
    /// A budgeted link was charged since its spend was last stored.
    spend_dirty: bool,
    /// When the spend was last stored: at most once a second for links that are not
    /// costly (a budgeted cellular link may carry a whole outage's traffic).
    spend_saved_at: Option<Instant>,
}

/// The most sends the driver accepts into one group commit (one outbox sync): under load,
/// the commands waiting when it wakes, up to this many, share a single `fdatasync`.
pub const GROUP_COMMIT_MAX: usize = 1024;

impl<S: Outbox> Driver<S> {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut shutdown: Option<(tokio::time::Instant, oneshot::Sender<Snapshot>)> = None;
        loop {
            self.pump();
            let pending = self.engine.stats().pending;
            if pending == 0 {
                for f in self.flushers.drain(..) {
                    let _ = f.send(());
                }
            }
            if let Some((deadline, _)) = &shutdown
                && (pending == 0 || tokio::time::Instant::now() >= *deadline)
            {
                break;
            }
            let timer = self.engine.poll_timeout().map(|t| self.clock.deadline(t));
            let shutdown_at = shutdown.as_ref().map(|s| s.0);
            let wake = [timer, shutdown_at].into_iter().flatten().min();
            tokio::select! {
                cmd = commands.recv(), if shutdown.is_none() => match cmd {
                    Some(Command::Shutdown(timeout, reply)) => {
                        shutdown = Some((tokio::time::Instant::now() + timeout, reply));
                    }
                    Some(cmd) => {
                        // Group commit: take every command already waiting, sync once.
                        let mut batch = vec![cmd];
                        while batch.len() < GROUP_COMMIT_MAX {
                            match commands.try_recv() {
                                Ok(Command::Shutdown(timeout, reply)) => {
                                    shutdown = Some((tokio::time::Instant::now() + timeout, reply));
                                    break;
                                }
                                Ok(c) => batch.push(c),
                                Err(_) => break,
                            }
                        }
                        self.commands(batch);
                    }
                    None => {
                        // Every handle dropped without shutdown: finish what is in flight
                        // and stop; a disk outbox keeps the rest for the next start.
                        let left = self.engine.stats().pending;
                        if left > 0 {
                            tracing::warn!(pending = left, "producer dropped without shutdown");
                        }
                        break;
                    }
                },
                Some(done) = self.inflight.join_next(), if !self.inflight.is_empty() => {
                    if let Ok((id, outcome)) = done {
                        let now = self.clock.now();
                        self.engine.handle_outcome(now, id, outcome);
                    }
                }
                _ = sleep_until(wake), if wake.is_some() => {
                    let now = self.clock.now();
                    self.engine.handle_timeout(now);
                }
            }
        }
        if let Err(e) = self.engine.store_mut().sync() {
            tracing::error!(error = %e, "outbox sync at shutdown failed");
        }
        if self.spend_dirty {
            let now = self.clock.now();
            self.save_link_spend(now);
        }
        self.publish();
        let snapshot = self.snapshot();
        // Close the outbox (and release its lock) before answering, so the caller can
        // reopen the same directory as soon as `shutdown` returns.
        drop(self);
        if let Some((_, reply)) = shutdown {
            let _ = reply.send(snapshot);
        }
    }

    fn commands(&mut self, batch: Vec<Command>) {
        let now = self.clock.now();
        let mut replies = Vec::new();
        for cmd in batch {
            match cmd {
                Command::Send {
                    body,
                    properties,
                    class,
                    reply,
                } => {
                    record::encode_into(&properties, &body, &mut self.envelope);
                    let result =
                        self.engine
                            .enqueue(now, &self.envelope, class)
                            .map_err(|e| match e {
                                EnqueueError::TooLarge { limit } => SendError::TooLarge { limit },
                                EnqueueError::Full => SendError::Full,
                                other => SendError::Outbox(other.to_string()),
                            });
                    replies.push((reply, result));
                }
                Command::Flush(reply) => self.flushers.push(reply),
                Command::Link(name, state, reply) => {
                    let r = match self.engine.config().link_id(&name) {
                        Some(l) => {
                            self.engine.handle_link(now, l, state);
                            Ok(())
                        }
                        None => Err(ControlFailure::NoSuchName(name)),
                    };
                    let _ = reply.send(r);
                }
                Command::Weights(w, reply) => {
                    let _ = reply.send(self.engine.set_weights(&w).map_err(engine_err));
                }
                Command::Drain(name, drained, reply) => {
                    let r = match self.engine.config().endpoint_id(&name) {
                        Some(e) if drained => self.engine.drain(e).map_err(engine_err),
                        Some(e) => self.engine.undrain(e).map_err(engine_err),
                        None => Err(ControlFailure::NoSuchName(name)),
                    };
                    let _ = reply.send(r);
                }
                Command::Shutdown(..) => {}
            }
        }
        // Durable before anyone hears "accepted".
        let sync = if replies.iter().any(|(_, r)| r.is_ok()) {
            self.engine.store_mut().sync()
        } else {
            Ok(())
        };
        for (reply, result) in replies {
            let result = match (&sync, result) {
                (Err(e), Ok(_)) => Err(SendError::Outbox(e.clone())),
                (_, r) => r,
            };
            let _ = reply.send(result);
        }
    }

    /// Whether records not yet sent should wait: while a transmit is in flight and they
    /// would not fill a batch. As with Nagle's algorithm, a burst then leaves in full
    /// batches (one request per batch, not a trickle of small ones), while an idle producer
    /// still sends at once; held records go out when the transmits in flight complete (or
    /// are abandoned with their route), at the latest.
    fn hold_partial(&self) -> bool {
        let in_flight = u64::from(self.engine.inflight_records());
        in_flight > 0 && self.engine.stats().pending.saturating_sub(in_flight) < self.full_batch
    }

    /// Sends everything the engine wants sent, publishes events and the snapshot.
    fn pump(&mut self) {
        let now = self.clock.now();
        let mut urgent = false;
        while !self.hold_partial() {
            let tx = match self.engine.poll_transmit(now, &mut self.buf) {
                Ok(Some(tx)) => tx,
                Ok(None) => break,
                // A record larger than this configuration's batches (accepted under an
                // earlier one with larger limits): grow the buffer to it and go on.
                Err(twinhub_core::TransmitError::BufferTooSmall { needed }) => {
                    self.buf.resize(needed, 0);
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot build a transmit");
                    break;
                }
            };
            let records = record::from_frames(
                self.engine.config().device_id(),
                self.buf.get(..tx.len).unwrap_or(&[]),
            );
            let link = &self.engine.config().links()[usize::from(tx.link.0)];
            if link.budget.is_some() {
                self.spend_dirty = true;
                // What a costly link spends is stored at once.
                urgent |= link.cost == twinhub_core::Cost::Costly;
            }
            let transport = self.transports[tx.endpoint.0 as usize][tx.link.0 as usize].clone();
            match records {
                Ok(records) => {
                    self.inflight.spawn(async move {
                        let outcome = transport.send(&records).await;
                        (tx.id, outcome)
                    });
                }
                Err(e) => {
                    // A record the hub could never take: the engine drops it as malformed.
                    tracing::error!(error = %e, "undecodable record in outbox");
                    self.engine.handle_outcome(
                        now,
                        tx.id,
                        Outcome::Rejected(twinhub_core::RejectReason::Malformed),
                    );
                }
            }
        }
        let due = self
            .spend_saved_at
            .is_none_or(|t| now.saturating_since(t) >= twinhub_core::Duration::from_secs(1));
        if self.spend_dirty && (urgent || due) {
            self.save_link_spend(now);
        }
        self.publish();
    }

    /// Persists budgeted links' spend (after each transmit charged to one: rare, since
    /// budgets guard the costly links).
    fn save_link_spend(&mut self, now: Instant) {
        let owned: Vec<(String, LinkSpend)> = self
            .engine
            .config()
            .links()
            .iter()
            .enumerate()
            .filter_map(|(l, link)| {
                let s = self.engine.link_spend(LinkId(l as u8))?;
                Some((link.name.to_string(), s))
            })
            .collect();
        let spends: Vec<(&str, LinkSpend)> = owned.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        match self.engine.store_mut().save_link_spend(&spends) {
            Ok(()) => {
                self.spend_dirty = false;
                self.spend_saved_at = Some(now);
            }
            Err(e) => tracing::warn!(error = %e, "cannot store the links' budget spend"),
        }
    }

    fn publish(&mut self) {
        while let Some(event) = self.engine.poll_event() {
            if let Event::RouteDown { endpoint, link, .. } = &event {
                // A fresh connection (and DNS lookup) for when it is probed again.
                self.transport(*endpoint, *link).reset();
            }
            tracing::info!(?event, "twinhub event");
            let _ = self.shared.events.send(event);
        }
        let latest = (
            self.engine.stats().clone(),
            self.oldest_pending_age(),
            self.routes(),
        );
        if let Ok(mut s) = self.shared.latest.lock() {
            *s = latest;
        }
    }

    fn transport(&self, e: EndpointId, l: LinkId) -> &SharedTransport {
        &self.transports[e.0 as usize][l.0 as usize]
    }

    fn oldest_pending_age(&mut self) -> Option<Duration> {
        let now = self.clock.now();
        self.engine
            .oldest_pending()
            .map(|t| Duration::from_millis(now.saturating_since(t).as_millis()))
    }

    fn routes(&self) -> Routes {
        let mut r = Routes::NEW;
        let (endpoints, links) = (self.shared.endpoints.len(), self.shared.links.len());
        for (e, row) in r.health.iter_mut().enumerate().take(endpoints) {
            for (l, health) in row.iter_mut().enumerate().take(links) {
                *health = self
                    .engine
                    .route_health(EndpointId(e as u8), LinkId(l as u8));
            }
        }
        for (l, spent) in r.spent.iter_mut().enumerate().take(links) {
            *spent = self.engine.link_spend(LinkId(l as u8)).map(|s| s.spent);
        }
        r
    }

    fn snapshot(&mut self) -> Snapshot {
        let oldest = self.oldest_pending_age();
        let routes = self.routes();
        self.shared
            .snapshot(self.engine.stats().clone(), oldest, routes)
    }
}

fn engine_err(e: ControlError) -> ControlFailure {
    ControlFailure::Engine(e.to_string())
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Names to indices, for callers mapping configuration names.
pub fn index_by_name(names: &[String]) -> HashMap<String, usize> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i))
        .collect()
}
