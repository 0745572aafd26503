//! The driver task: one tokio task that owns the engine, runs the transports, feeds their
//! outcomes and the clock back to it, and publishes events and stats.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use twinhub_core::{
    Class, Config, EndpointId, EnqueueError, Event, Instant, LinkId, LinkSpend, LinkState, Outcome,
    RecordKey, TransmitId,
};

use super::clock::Clock;
use super::confirm::{Confirming, Waiter};
use super::snapshot::Routes;
use super::{ControlFailure, Outbox, Parts, SendError, Shared, Snapshot};
use crate::record;
use crate::transport::SharedTransport;

/// What a handle asks of the driver.
pub(super) enum Command {
    Send {
        /// The application's body and properties, put into the record envelope by the
        /// driver in one reused buffer (no copy per record on the way in).
        body: Vec<u8>,
        properties: Vec<(String, String)>,
        class: Class,
        /// Answered with the accepted record's epoch and sequence number.
        reply: oneshot::Sender<Result<(u32, u64), SendError>>,
        /// Who waits for the record's delivery, if anyone (`send_confirmed`).
        confirm: Option<Waiter>,
    },
    Flush(oneshot::Sender<()>),
    Shutdown(Duration, oneshot::Sender<Snapshot>),
    /// Controls carry ids: the handle resolved names already.
    Link(
        LinkId,
        LinkState,
        oneshot::Sender<Result<(), ControlFailure>>,
    ),
    Weights(Vec<u16>, oneshot::Sender<Result<(), ControlFailure>>),
    Drain(
        EndpointId,
        bool,
        oneshot::Sender<Result<(), ControlFailure>>,
    ),
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

/// The state of the driver task; see [`Driver::run`].
pub(super) struct Driver<S: Outbox> {
    engine: twinhub_core::Engine<Confirming<S>, Arc<Config>>,
    transports: Vec<Vec<SharedTransport>>,
    clock: Clock,
    shared: Arc<Shared>,
    inflight: JoinSet<(TransmitId, Outcome)>,
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
    /// Makes the engine from `parts` and starts the driver task on the current runtime.
    pub(super) fn spawn(parts: Parts<S>) -> (mpsc::Sender<Command>, Arc<Shared>) {
        let config = Arc::new(parts.config);
        let clock = Clock::new();
        let (delivered, _) = broadcast::channel(4096);
        let outbox = Confirming::new(parts.outbox, config.device_id().clone(), delivered.clone());
        let mut engine =
            twinhub_core::Engine::new(config.clone(), outbox, clock.now(), parts.epoch, parts.seed);
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
            delivered,
            confirmations: Arc::new(Semaphore::new(parts.max_confirmations)),
            max_body,
            device: config.device_id().clone(),
        });
        let (tx, rx) = mpsc::channel(4096);
        let driver = Driver {
            engine,
            transports: parts.transports,
            clock,
            shared: shared.clone(),
            inflight: JoinSet::new(),
            flushers: Vec::new(),
            buf: vec![0; buffer_len(&config)],
            envelope: Vec::new(),
            spend_dirty: false,
            spend_saved_at: None,
        };
        tokio::spawn(driver.run(rx));
        (tx, shared)
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut shutdown: Option<(tokio::time::Instant, oneshot::Sender<Snapshot>)> = None;
        loop {
            // Once a step, not once a record: whether delivered ids need announcing.
            self.engine.store_mut().streaming = self.shared.delivered.receiver_count() > 0;
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
        // No confirmation can be answered any more: waiting senders hear `Closed`.
        self.shared.confirmations.close();
        // Close the outbox (and release its lock) before answering, so the caller can
        // reopen the same directory as soon as `shutdown` returns. Outstanding delivery
        // tickets resolve `Stopped` as their waiters drop with it.
        drop(self);
        if let Some((_, reply)) = shutdown {
            let _ = reply.send(snapshot);
        }
    }

    fn commands(&mut self, batch: Vec<Command>) {
        let now = self.clock.now();
        let mut replies = Vec::new();
        let mut watched = Vec::new();
        for cmd in batch {
            match cmd {
                Command::Send {
                    body,
                    properties,
                    class,
                    reply,
                    confirm,
                } => {
                    record::encode_into(&properties, &body, &mut self.envelope);
                    let result =
                        self.engine
                            .enqueue(now, &self.envelope, class)
                            .map_err(|e| match e {
                                EnqueueError::TooLarge { limit } => SendError::TooLarge { limit },
                                EnqueueError::Full => SendError::Full,
                                EnqueueError::Store(e) => SendError::Outbox(e.into()),
                                other => SendError::Refused(other),
                            });
                    // Watched at once: a later record of this group may evict it.
                    if let (Ok(id), Some(waiter)) = (&result, confirm) {
                        let key = RecordKey {
                            epoch: id.epoch,
                            seq: id.seq,
                        };
                        self.engine.store_mut().watch(key, waiter);
                        watched.push(key);
                    }
                    replies.push((reply, result.map(|id| (id.epoch, id.seq))));
                }
                Command::Flush(reply) => self.flushers.push(reply),
                Command::Link(l, state, reply) => {
                    self.engine.handle_link(now, l, state);
                    let _ = reply.send(Ok(()));
                }
                Command::Weights(w, reply) => {
                    let _ = reply.send(self.engine.set_weights(&w).map_err(ControlFailure::Engine));
                }
                Command::Drain(e, drained, reply) => {
                    let r = if drained {
                        self.engine.drain(e)
                    } else {
                        self.engine.undrain(e)
                    };
                    let _ = reply.send(r.map_err(ControlFailure::Engine));
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
        if sync.is_err() {
            // Those sends fail, so no ticket was handed out for them.
            for key in watched {
                self.engine.store_mut().forget(key);
            }
        }
        for (reply, result) in replies {
            let result = match (&sync, result) {
                (Err(e), Ok(_)) => Err(SendError::Outbox(e.clone())),
                (_, r) => r,
            };
            let _ = reply.send(result);
        }
    }

    /// Sends everything the engine wants sent, publishes events and the snapshot.
    fn pump(&mut self) {
        let now = self.clock.now();
        let mut urgent = false;
        loop {
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

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
