//! The `Producer` handle: what applications call.
//!
//! One tokio task (the driver, in `driver`) owns a [`twinhub_core::Engine`]: it accepts
//! records, runs transports, feeds their outcomes and the clock back to the engine, and
//! publishes events and stats. [`Producer`] is a cheap `Clone + Send` handle that talks to
//! it over channels. The store it drives is an [`Outbox`]; what it reports is a
//! [`Snapshot`].

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use twinhub_core::{Class, Config, EndpointId, Event, LinkId, LinkState, MessageId, Stats};

use crate::builder::BuildError;
use crate::record;
use crate::transport::SharedTransport;

mod clock;
mod confirm;
mod driver;
mod json_report;
mod names;
mod outbox;
mod snapshot;

pub use confirm::{DEFAULT_MAX_CONFIRMATIONS, Delivered, DeliveryTicket, NotDelivered};
pub use driver::GROUP_COMMIT_MAX;
use driver::{Command, Driver};
pub use names::{EndpointRef, LinkRef};
pub use outbox::{Outbox, OutboxFailure};
use snapshot::Routes;
pub use snapshot::Snapshot;

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
    Outbox(#[from] OutboxFailure),
    /// The engine refused the record for a reason this version does not name.
    #[error("record refused: {0}")]
    Refused(twinhub_core::EnqueueError),
    /// The producer was shut down.
    #[error("producer is shut down")]
    Closed,
}

/// A submitted record's acceptance: await it for the id (see [`Producer::submit`]).
#[must_use = "the record is only known to be accepted once the ticket resolves"]
pub struct SendTicket {
    /// The driver answers with the epoch and sequence number only: a whole `MessageId`
    /// (its device id is up to 128 bytes) is built once, here, rather than moved through
    /// the channel.
    answer: oneshot::Receiver<Result<(u32, u64), SendError>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SendTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendTicket")
            .field("device", &self.shared.device)
            .finish_non_exhaustive()
    }
}

impl Future for SendTicket {
    type Output = Result<MessageId, SendError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let answer = std::task::ready!(std::pin::Pin::new(&mut self.answer).poll(cx));
        std::task::Poll::Ready(match answer {
            Ok(Ok((epoch, seq))) => Ok(MessageId {
                device: self.shared.device.clone(),
                epoch,
                seq,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SendError::Closed),
        })
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
#[non_exhaustive]
pub enum ControlFailure {
    /// No endpoint with that name or id in the configuration.
    #[error("no endpoint {0} in the configuration")]
    NoSuchEndpoint(String),
    /// No link with that name or id in the configuration.
    #[error("no link {0} in the configuration")]
    NoSuchLink(String),
    /// The engine refused it (for example weights that are all zero).
    #[error("{0}")]
    Engine(#[from] twinhub_core::ControlError),
    /// The producer was shut down.
    #[error("producer is shut down")]
    Closed,
}

struct Shared {
    /// The counters, the oldest pending record's age and the routes, as of the driver's
    /// last step (the names are fixed, so the driver's steps copy no strings).
    latest: Mutex<(Stats, Option<Duration>, Routes)>,
    endpoints: Vec<String>,
    links: Vec<String>,
    events: broadcast::Sender<Event>,
    /// Every delivered record, while someone subscribes.
    delivered: broadcast::Sender<Delivered>,
    /// One permit per confirmation that may be outstanding.
    confirmations: Arc<Semaphore>,
    max_body: u32,
    /// The device whose ids tickets resolve to.
    device: twinhub_core::DeviceId,
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
    /// The validated engine configuration. It carries the batching rules too: the
    /// builder's configurations turn on [`hold_partial`](twinhub_core::ConfigBuilder::hold_partial),
    /// so a burst leaves in full batches; one built by hand decides for itself.
    pub config: Config,
    /// The outbox.
    pub outbox: S,
    /// This start's epoch (persist a counter; the disk outbox does).
    pub epoch: u32,
    /// One transport per route: `transports[endpoint][link]`, in configuration order,
    /// with one entry per endpoint and one per link in each.
    pub transports: Vec<Vec<SharedTransport>>,
    /// Seed for the engine's jitter.
    pub seed: u64,
    /// The most [`Producer::send_confirmed`] tickets outstanding at once (at least 1;
    /// [`DEFAULT_MAX_CONFIRMATIONS`] is a fine choice). Each takes about a hundred bytes in
    /// the driver until its record settles; when all are taken, `send_confirmed` waits.
    pub max_confirmations: usize,
}

/// Why [`Parts`] do not fit together; checked by [`Producer::start`] before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartsError {
    /// `transports` has a different number of endpoints than the configuration.
    #[error("transports are given for {given} endpoints; the configuration has {configured}")]
    EndpointCount {
        /// Endpoints in the configuration.
        configured: usize,
        /// Entries in `transports`.
        given: usize,
    },
    /// An endpoint's transports have a different number of links than the configuration.
    #[error(
        "endpoint `{endpoint}` has transports for {given} links; the configuration has {configured}"
    )]
    LinkCount {
        /// The endpoint's name.
        endpoint: String,
        /// Links in the configuration.
        configured: usize,
        /// Entries in `transports[endpoint]`.
        given: usize,
    },
    /// `max_confirmations` is 0 (no confirmed send could ever start) or too large.
    #[error("max_confirmations must be between 1 and {max}; {given} was given")]
    MaxConfirmations {
        /// The value given.
        given: usize,
        /// The largest allowed.
        max: usize,
    },
}

impl<S: Outbox> Parts<S> {
    /// Checks that `transports` has exactly one transport per route of `config`, and that
    /// `max_confirmations` is usable.
    pub fn validate(&self) -> Result<(), PartsError> {
        if !(1..=Semaphore::MAX_PERMITS).contains(&self.max_confirmations) {
            return Err(PartsError::MaxConfirmations {
                given: self.max_confirmations,
                max: Semaphore::MAX_PERMITS,
            });
        }
        let endpoints = self.config.endpoints();
        if self.transports.len() != endpoints.len() {
            return Err(PartsError::EndpointCount {
                configured: endpoints.len(),
                given: self.transports.len(),
            });
        }
        let links = self.config.links().len();
        for (endpoint, per_link) in endpoints.iter().zip(&self.transports) {
            if per_link.len() != links {
                return Err(PartsError::LinkCount {
                    endpoint: endpoint.name.to_string(),
                    configured: links,
                    given: per_link.len(),
                });
            }
        }
        Ok(())
    }
}

impl Producer {
    /// Checks the parts ([`Parts::validate`]) and starts the driver task on the current
    /// tokio runtime.
    pub fn start<S: Outbox>(parts: Parts<S>) -> Result<Producer, BuildError> {
        parts.validate()?;
        let (commands, shared) = Driver::spawn(parts);
        Ok(Producer { commands, shared })
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
        self.enqueue(payload.into(), opts, None).await
    }

    /// Accepts a record like [`Producer::send_with`] and returns, once it is accepted, a
    /// ticket that resolves when it is delivered (with the endpoint that acknowledged it)
    /// or dropped (with the reason).
    ///
    /// At most [`Parts::max_confirmations`] tickets are outstanding at once; while they
    /// all are, this waits for one to resolve (or be dropped and its record settle), which
    /// keeps the driver's memory bounded. Plain sends never wait for that and cost nothing
    /// extra.
    ///
    /// ```no_run
    /// # async fn run(producer: twinhub::Producer) -> Result<(), Box<dyn std::error::Error>> {
    /// use twinhub::SendOptions;
    /// let ticket = producer.send_confirmed(b"21.5".to_vec(), SendOptions::default()).await?;
    /// let delivered = ticket.await?;
    /// println!("{} acknowledged by {:?}", delivered.id, producer.endpoint_name(delivered.endpoint));
    /// # Ok(()) }
    /// ```
    pub async fn send_confirmed(
        &self,
        payload: impl Into<Vec<u8>>,
        opts: SendOptions,
    ) -> Result<DeliveryTicket, SendError> {
        let body = payload.into();
        let slot = Arc::clone(&self.shared.confirmations)
            .acquire_owned()
            .await
            .map_err(|_| SendError::Closed)?;
        let (answer, rx) = oneshot::channel();
        let waiter = confirm::Waiter {
            answer,
            _slot: slot,
        };
        let id = self.enqueue(body, opts, Some(waiter)).await?.await?;
        Ok(DeliveryTicket::new(id, rx))
    }

    /// Every delivered record's id and the endpoint that acknowledged it, in delivery
    /// order, from the moment of subscribing. A receiver that falls more than 4096 behind
    /// misses the oldest (`Lagged`); with no receiver, nothing is announced at all.
    pub fn delivered(&self) -> broadcast::Receiver<Delivered> {
        self.shared.delivered.subscribe()
    }

    async fn enqueue(
        &self,
        body: Vec<u8>,
        opts: SendOptions,
        confirm: Option<confirm::Waiter>,
    ) -> Result<SendTicket, SendError> {
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
                confirm,
            })
            .await
            .map_err(|_| SendError::Closed)?;
        Ok(SendTicket {
            answer: rx,
            shared: Arc::clone(&self.shared),
        })
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
    /// [`Producer::stats`] are always complete. Events carry endpoint and link ids, which
    /// controls take as they are and [`Producer::endpoint_name`] / [`Producer::link_name`]
    /// turn into names.
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

    /// The id of the endpoint configured as `name` (what events and confirmations carry).
    pub fn endpoint_id(&self, name: &str) -> Option<EndpointId> {
        EndpointRef::Name(name).resolve(&self.shared.endpoints)
    }

    /// The configured name of an endpoint id, as events and confirmations carry it.
    pub fn endpoint_name(&self, id: EndpointId) -> Option<&str> {
        self.shared
            .endpoints
            .get(usize::from(id.0))
            .map(String::as_str)
    }

    /// The id of the link configured as `name`.
    pub fn link_id(&self, name: &str) -> Option<LinkId> {
        LinkRef::Name(name).resolve(&self.shared.links)
    }

    /// The configured name of a link id, as events carry it.
    pub fn link_name(&self, id: LinkId) -> Option<&str> {
        self.shared.links.get(usize::from(id.0)).map(String::as_str)
    }

    /// Tells the engine a link is up or down (for example from the modem's status). The
    /// link is an id, as in events, or its configured name.
    pub async fn set_link_state(
        &self,
        link: impl Into<LinkRef<'_>>,
        up: bool,
    ) -> Result<(), ControlFailure> {
        let link = link.into();
        let l = link
            .resolve(&self.shared.links)
            .ok_or_else(|| ControlFailure::NoSuchLink(link.to_string()))?;
        let state = if up { LinkState::Up } else { LinkState::Down };
        self.control(|r| Command::Link(l, state, r)).await
    }

    /// Sets active-active weights, one per endpoint in configuration order.
    pub async fn set_weights(&self, weights: &[u16]) -> Result<(), ControlFailure> {
        self.control(|r| Command::Weights(weights.to_vec(), r))
            .await
    }

    /// Stops sending new records to an endpoint (`drained = true`) or resumes it. The
    /// endpoint is an id, as in events, or its configured name.
    pub async fn set_drained(
        &self,
        endpoint: impl Into<EndpointRef<'_>>,
        drained: bool,
    ) -> Result<(), ControlFailure> {
        let endpoint = endpoint.into();
        let e = endpoint
            .resolve(&self.shared.endpoints)
            .ok_or_else(|| ControlFailure::NoSuchEndpoint(endpoint.to_string()))?;
        self.control(|r| Command::Drain(e, drained, r)).await
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
