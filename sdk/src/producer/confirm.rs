//! Delivery confirmation: which hub acknowledged a record, or why it was dropped.
//!
//! The engine tells its store how each record it removes was settled
//! ([`Store::settled`]); the driver wraps the application's outbox in [`Confirming`],
//! which answers the records someone waits for and feeds the [`Delivered`] stream. With no
//! ticket outstanding and no stream subscriber, that is one branch per settled record.
//!
//! Memory stays bounded: each outstanding ticket holds a permit of a semaphore sized by
//! [`Parts::max_confirmations`](super::Parts::max_confirmations), so the driver's map of
//! waiters never holds more entries than that, however many sends ask for confirmation.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::{OwnedSemaphorePermit, broadcast, oneshot};
use twinhub_core::{
    DeviceId, DropReason, EndpointId, LinkSpend, MessageId, RecordInfo, RecordKey, RecordMeta,
    Settlement, Store, StoreError,
};

use super::{Outbox, OutboxFailure};

/// The confirmations outstanding at once unless [`Parts`](super::Parts) say otherwise.
pub const DEFAULT_MAX_CONFIRMATIONS: usize = 16_384;

/// A record a hub acknowledged: the item of [`Producer::delivered`](super::Producer::delivered)
/// and what a [`DeliveryTicket`] resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The record.
    pub id: MessageId,
    /// The endpoint whose acknowledgement completed it (in mirror routing, the last of the
    /// endpoints that had to have it). Its name: [`Producer::endpoint_name`](super::Producer::endpoint_name).
    pub endpoint: EndpointId,
}

/// Why a confirmed record will not be reported delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotDelivered {
    /// Dropped by policy (expired, evicted, rejected by the hub, corrupt), as the
    /// [`Event::Dropped`](twinhub_core::Event::Dropped) event with the same id says.
    #[error("record {id} dropped: {}", reason.name())]
    Dropped {
        /// The record.
        id: MessageId,
        /// Why.
        reason: DropReason,
    },
    /// The producer stopped first. The record is still pending: a disk outbox keeps it for
    /// the next start, which delivers it without this ticket.
    #[error("producer stopped before record {id} was delivered")]
    Stopped {
        /// The record.
        id: MessageId,
    },
}

type Answer = Result<Delivered, NotDelivered>;

/// Resolves once the record was delivered (with the endpoint that acknowledged it) or
/// dropped (with the reason); see [`Producer::send_confirmed`](super::Producer::send_confirmed).
/// Dropping the ticket stops waiting and frees its confirmation slot when the record settles.
#[derive(Debug)]
#[must_use = "the ticket resolves on delivery; drop it to stop waiting"]
pub struct DeliveryTicket {
    id: MessageId,
    answer: oneshot::Receiver<Answer>,
}

impl DeliveryTicket {
    pub(super) fn new(id: MessageId, answer: oneshot::Receiver<Answer>) -> Self {
        DeliveryTicket { id, answer }
    }

    /// The record's id, known once it was accepted.
    pub fn id(&self) -> &MessageId {
        &self.id
    }
}

// Both outcomes carry the record's id, inline like every `MessageId` the SDK returns;
// boxing the error would add an allocation per answer and shrink nothing.
#[allow(clippy::result_large_err)]
impl Future for DeliveryTicket {
    type Output = Answer;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        Pin::new(&mut self.answer).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                Err(NotDelivered::Stopped {
                    id: self.id.clone(),
                })
            })
        })
    }
}

/// Who waits for one record: its answer, and the slot it holds until then.
pub(super) struct Waiter {
    pub(super) answer: oneshot::Sender<Answer>,
    pub(super) _slot: OwnedSemaphorePermit,
}

/// The application's outbox, with the confirmations the driver waits for.
pub(super) struct Confirming<S> {
    pub(super) inner: S,
    device: DeviceId,
    waiters: HashMap<RecordKey, Waiter>,
    stream: broadcast::Sender<Delivered>,
    /// Whether the stream has a subscriber, as of the driver's last step (asked once a
    /// step, not once a record).
    pub(super) streaming: bool,
}

impl<S> Confirming<S> {
    pub(super) fn new(inner: S, device: DeviceId, stream: broadcast::Sender<Delivered>) -> Self {
        Confirming {
            inner,
            device,
            waiters: HashMap::new(),
            stream,
            streaming: false,
        }
    }

    /// Answers `waiter` when record `key` settles.
    pub(super) fn watch(&mut self, key: RecordKey, waiter: Waiter) {
        self.waiters.insert(key, waiter);
    }

    /// Stops waiting for record `key` (its send failed, so no ticket was handed out).
    pub(super) fn forget(&mut self, key: RecordKey) {
        self.waiters.remove(&key);
    }

    fn id(&self, key: RecordKey) -> MessageId {
        MessageId {
            device: self.device.clone(),
            epoch: key.epoch,
            seq: key.seq,
        }
    }
}

impl<S: Store> Store for Confirming<S> {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
    fn cost(&self, frame_len: usize) -> usize {
        self.inner.cost(frame_len)
    }
    fn fits(&self, frame_len: usize) -> bool {
        self.inner.fits(frame_len)
    }
    fn append(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<(), StoreError> {
        self.inner.append(meta, payload)
    }
    fn next_after(&mut self, after: Option<RecordKey>) -> Result<Option<RecordInfo>, StoreError> {
        self.inner.next_after(after)
    }
    fn read(&mut self, key: RecordKey, out: &mut [u8]) -> Result<usize, StoreError> {
        self.inner.read(key, out)
    }
    fn remove(&mut self, key: RecordKey) -> Result<(), StoreError> {
        self.inner.remove(key)
    }
    fn settled(&mut self, key: RecordKey, how: Settlement) {
        self.inner.settled(key, how);
        if !self.streaming && self.waiters.is_empty() {
            return;
        }
        let waiter = self.waiters.remove(&key);
        if waiter.is_none() && !self.streaming {
            return;
        }
        let id = self.id(key);
        let answer = match how {
            Settlement::Delivered(endpoint) => {
                let delivered = Delivered { id, endpoint };
                if self.streaming {
                    let _ = self.stream.send(delivered.clone());
                }
                Ok(delivered)
            }
            Settlement::Dropped(reason) => Err(NotDelivered::Dropped { id, reason }),
            // A settlement this version does not know: the record left the outbox, but
            // whether it arrived is not known, so the ticket says the producer let go.
            _ => Err(NotDelivered::Stopped { id }),
        };
        if let Some(w) = waiter {
            let _ = w.answer.send(answer);
        }
    }
}

impl<S: Outbox> Outbox for Confirming<S> {
    fn sync(&mut self) -> Result<(), OutboxFailure> {
        self.inner.sync()
    }
    fn save_link_spend(&mut self, spends: &[(&str, LinkSpend)]) -> Result<(), OutboxFailure> {
        self.inner.save_link_spend(spends)
    }
    fn load_link_spend(&mut self) -> Vec<(String, LinkSpend)> {
        self.inner.load_link_spend()
    }
}
