//! The account of the batches in flight on one connection, kept by the task that polls
//! rumqttc's event loop (see the parent module's docs for the pipelining it supports).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use twinhub_core::Outcome;

use super::refusal::Blame;
use super::{Failure, timeout_outcome, worse};

/// One batch's account.
struct Account {
    /// Records in the batch.
    expected: usize,
    /// Publishes written so far, and PUBACKs counted.
    published: usize,
    acked: usize,
    /// The most serious PUBACK failure seen.
    failure: Option<Outcome>,
    /// Resolved once: (outcome, whether the connection is still clean, what a close by
    /// the hub says about this batch's records).
    done: Option<tokio::sync::oneshot::Sender<Resolution>>,
}

pub(super) type Resolution = (Outcome, bool, Blame);

/// The batches in flight on a connection, as the driver task accounts for them. Several
/// batches may be in flight at once: a batch hands its publishes to rumqttc in one go
/// (under the connection lock), rumqttc writes them in that order and reports each one's
/// packet id as it goes, so the `n`th `Outgoing::Publish` belongs to the batch whose
/// publishes were requested `n`th. rumqttc reuses a packet id only once it is
/// acknowledged, so each id in flight has exactly one owner.
#[derive(Default)]
pub(super) struct Tracker {
    next: u64,
    /// Batches with publishes not yet written, in request order, with how many are left.
    unwritten: VecDeque<(u64, usize)>,
    batches: HashMap<u64, Account>,
    /// The batch of each packet id waiting for its PUBACK, the publish's index in the batch
    /// and its place in write order.
    owner: HashMap<u16, (u64, usize, u64)>,
    /// Publishes written on this connection so far.
    written: u64,
}

impl Tracker {
    /// Opens the account of a batch of `expected` records; returns its number.
    pub(super) fn open(
        &mut self,
        expected: usize,
        done: tokio::sync::oneshot::Sender<Resolution>,
    ) -> u64 {
        let id = self.next;
        self.next += 1;
        self.unwritten.push_back((id, expected));
        self.batches.insert(
            id,
            Account {
                expected,
                published: 0,
                acked: 0,
                failure: None,
                done: Some(done),
            },
        );
        id
    }

    pub(super) fn published(&mut self, pkid: u16) {
        // A publish nobody asked for (none exist today) is ignored, not misattributed.
        let Some((id, left)) = self.unwritten.front_mut() else {
            return;
        };
        let id = *id;
        *left -= 1;
        if *left == 0 {
            self.unwritten.pop_front();
        }
        if let Some(a) = self.batches.get_mut(&id) {
            self.owner.insert(pkid, (id, a.published, self.written));
            self.written += 1;
            a.published += 1;
        }
    }

    pub(super) fn acked(&mut self, pkid: u16, failure: Option<Outcome>) {
        // Only a PUBACK for a publish in flight counts, and only once.
        let Some((id, _, _)) = self.owner.remove(&pkid) else {
            return;
        };
        let Some(a) = self.batches.get_mut(&id) else {
            return;
        };
        a.acked += 1;
        if let Some(o) = failure {
            a.failure = Some(worse(a.failure, o));
        }
        if a.acked == a.expected
            && let Some(a) = self.batches.remove(&id)
            && let Some(done) = a.done
        {
            let _ = done.send((a.failure.unwrap_or(Outcome::Delivered), true, Blame::None));
        }
    }

    /// The connection ended: every batch still open is resolved. When the hub closed an
    /// accepted connection, the oldest publish it left unanswered is the one it closed on
    /// (it answers in order), and its batch learns which record that was.
    pub(super) fn ended(&mut self, f: Failure) {
        let culprit = (f == Failure::Closed)
            .then(|| self.owner.values().min_by_key(|(_, _, seq)| *seq).copied())
            .flatten();
        for (id, a) in self.batches.drain() {
            if let Some(done) = a.done {
                let o = if f == Failure::Unauthorized {
                    Outcome::Unauthorized
                } else {
                    timeout_outcome(a.published)
                };
                let blame = match culprit {
                    Some((batch, index, _)) if batch == id => Blame::Record(index),
                    Some(_) => Blame::Elsewhere,
                    None => Blame::None,
                };
                let _ = done.send((o, false, blame));
            }
        }
        self.unwritten.clear();
        self.owner.clear();
    }

    /// Publishes of batch `id` written so far (0 once it was resolved).
    pub(super) fn published_of(&self, id: u64) -> usize {
        self.batches.get(&id).map_or(0, |a| a.published)
    }

    /// Whether any batch is still open.
    pub(super) fn busy(&self) -> bool {
        !self.batches.is_empty()
    }
}

pub(super) type SharedTracker = Arc<Mutex<Tracker>>;

pub(super) fn lock(t: &SharedTracker) -> std::sync::MutexGuard<'_, Tracker> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use twinhub_core::RejectReason;

    #[test]
    fn pipelined_batches_own_their_packet_ids() {
        let mut t = Tracker::default();
        let (a_tx, mut a) = tokio::sync::oneshot::channel();
        let (b_tx, mut b) = tokio::sync::oneshot::channel();
        let (c_tx, mut c) = tokio::sync::oneshot::channel();
        let ia = t.open(2, a_tx);
        let ib = t.open(3, b_tx);
        // Written in request order: a's two, then b's three.
        for pkid in [7, 8, 9, 1, 2] {
            t.published(pkid);
        }
        assert_eq!((t.published_of(ia), t.published_of(ib)), (2, 3));
        // PUBACKs in any order; a stale or repeated one counts for nobody.
        t.acked(9, None);
        t.acked(9, None);
        t.acked(42, None);
        t.acked(8, None);
        assert!(a.try_recv().is_err() && b.try_recv().is_err());
        t.acked(7, None);
        assert_eq!(
            a.try_recv().unwrap(),
            (Outcome::Delivered, true, Blame::None)
        );
        // b keeps the worst failure of its PUBACKs.
        t.acked(1, Some(Outcome::Rejected(RejectReason::TooLarge)));
        t.acked(2, None);
        assert_eq!(
            b.try_recv().unwrap(),
            (Outcome::Rejected(RejectReason::TooLarge), true, Blame::None)
        );
        // A packet id reused by a later batch belongs to it alone.
        let ic = t.open(2, c_tx);
        t.published(7);
        assert_eq!(t.published_of(ic), 1);
        t.ended(Failure::Lost);
        assert_eq!(
            c.try_recv().unwrap(),
            (Outcome::Timeout, false, Blame::None)
        );
        assert!(!t.busy());
        // A batch that wrote nothing before the end was never sent.
        let (d_tx, mut d) = tokio::sync::oneshot::channel();
        t.open(1, d_tx);
        t.ended(Failure::Lost);
        assert_eq!(
            d.try_recv().unwrap(),
            (Outcome::Unreachable, false, Blame::None)
        );
    }
}
