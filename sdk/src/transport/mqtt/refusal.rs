//! A hub that refuses a message by closing the connection (IoT Hub over MQTT: "AMQP returns
//! errors for many conditions, while MQTT terminates the connection").
//!
//! Without a reason code, one close proves nothing: networks drop connections and regions
//! fail. A record is blamed only on evidence that it, not the region, is the problem: the
//! hub accepted a fresh connection (CONNACK 0) and then closed it while that record's
//! publish was the oldest one left unanswered (a hub answers publishes in order, so that is
//! the publish it closed on), `limit` connections in a row. The batch holding it is then
//! answered [`Outcome::Rejected`]: the engine drops a lone record as malformed (counted and
//! evented) and resends a larger batch one record at a time, so the record is judged alone
//! before it is dropped.
//!
//! The row breaks when no connection can be made (refused, timed out, bad credentials: a
//! region outage, which fails over as before), when a batch times out without a close, when
//! the hub closes on another record, and when the suspect is delivered.
//!
//! A record whose IoT Hub PUBLISH (property bag included) exceeds the packet limit never
//! reaches the hub: the client would refuse to write it and end the connection at every
//! resend. It is answered [`RejectReason::TooLarge`] before it is handed over.

use std::sync::MutexGuard;

use twinhub_core::{MessageId, Outcome, RejectReason};

use super::{Framing, MqttTransport, iot_hub_topic};
use crate::record::Record;

/// What a connection's end says about one batch's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Blame {
    /// Nothing: the batch was answered, or the connection ended for another reason.
    None,
    /// The hub closed the accepted connection on the publish of the batch's record at this
    /// index.
    Record(usize),
    /// The hub closed the connection on another batch's publish.
    Elsewhere,
}

/// Closes by the hub on one record's publish, counted in a row.
#[derive(Debug)]
pub(super) struct CloseWatch {
    limit: u8,
    suspect: Option<(MessageId, u8)>,
}

impl CloseWatch {
    /// Blames a record after `limit` closes in a row; 0 never blames.
    pub(super) fn new(limit: u8) -> Self {
        CloseWatch {
            limit,
            suspect: None,
        }
    }

    /// Something other than a close on a publish happened: the row is broken.
    pub(super) fn reset(&mut self) {
        self.suspect = None;
    }

    /// The hub closed an accepted connection on `id`'s publish: closes on it in a row.
    fn closed_on(&mut self, id: &MessageId) -> u8 {
        match &mut self.suspect {
            Some((s, n)) if s == id => {
                *n = n.saturating_add(1);
                *n
            }
            _ => {
                self.suspect = Some((id.clone(), 1));
                1
            }
        }
    }

    /// These records were delivered: if the suspect is among them, it was innocent.
    fn delivered(&mut self, records: &[Record]) {
        if let Some((s, _)) = &self.suspect
            && records.iter().any(|r| &r.id == s)
        {
            self.suspect = None;
        }
    }
}

impl MqttTransport {
    pub(super) fn closes(&self) -> MutexGuard<'_, CloseWatch> {
        self.closes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The batch's outcome once the close evidence is weighed (see the module docs).
    pub(super) fn weigh(&self, records: &[Record], outcome: Outcome, blame: Blame) -> Outcome {
        let mut watch = self.closes();
        if watch.limit == 0 {
            return outcome;
        }
        match blame {
            Blame::Record(i) => {
                let Some(r) = records.get(i) else {
                    return outcome;
                };
                let closes = watch.closed_on(&r.id);
                if closes < watch.limit {
                    return outcome;
                }
                tracing::warn!(
                    host = %self.cfg.host,
                    id = %r.id,
                    closes,
                    "the hub closed every new connection on this record's publish: rejected"
                );
                Outcome::Rejected(RejectReason::Malformed)
            }
            Blame::Elsewhere => outcome,
            Blame::None => {
                match outcome {
                    Outcome::Delivered => watch.delivered(records),
                    Outcome::Timeout | Outcome::Unreachable | Outcome::Unauthorized => {
                        watch.reset();
                    }
                    _ => {}
                }
                outcome
            }
        }
    }
}

/// Bytes of a PUBLISH besides its topic and body: fixed header, lengths and packet id.
const PUBLISH_OVERHEAD: usize = 16;

impl MqttTransport {
    /// IoT Hub framing puts the properties in the topic, URL-encoded, so a record within
    /// the engine's size limit can still make a PUBLISH larger than the packet limit.
    /// rumqttc would refuse to write it and end the connection, again at every resend: such
    /// a batch is answered [`RejectReason::TooLarge`] before anything is handed over (the
    /// engine then judges its records one at a time).
    pub(super) fn refuse_oversized(&self, records: &[Record]) -> Option<Outcome> {
        let Framing::IotHub { device } = &self.cfg.framing else {
            return None;
        };
        let r = records.iter().find(|r| {
            let topic = iot_hub_topic(device, &r.id.to_text(), &r.properties);
            topic.len() + r.body.len() + PUBLISH_OVERHEAD > self.cfg.max_packet
        })?;
        tracing::warn!(
            host = %self.cfg.host,
            id = %r.id,
            limit = self.cfg.max_packet,
            "a record's publish, property bag included, exceeds the packet limit: rejected"
        );
        Some(Outcome::Rejected(RejectReason::TooLarge))
    }
}

/// Whether an MQTT 3.1.1 event loop's error is the peer ending the connection (EOF, reset),
/// as opposed to our own timeouts, refusals or protocol errors.
pub(super) fn closed_by_peer_v4(e: &rumqttc::ConnectionError) -> bool {
    use rumqttc::{ConnectionError as C, StateError as S};
    matches!(
        e,
        C::Io(_) | C::Tls(_) | C::MqttState(S::Io(_) | S::ConnectionAborted)
    )
}

/// [`closed_by_peer_v4`] for MQTT 5.
pub(super) fn closed_by_peer_v5(e: &rumqttc::v5::ConnectionError) -> bool {
    use rumqttc::v5::{ConnectionError as C, StateError as S};
    matches!(
        e,
        C::Io(_) | C::Tls(_) | C::MqttState(S::Io(_) | S::ConnectionAborted)
    )
}

#[cfg(test)]
mod tests {
    use super::super::Failure;
    use super::super::tracker::Tracker;
    use super::*;

    fn id(seq: u64) -> MessageId {
        format!("d:1:{seq}").parse().unwrap()
    }

    #[test]
    fn a_close_blames_the_oldest_unanswered_publish_only() {
        let mut t = Tracker::default();
        let (a_tx, mut a) = tokio::sync::oneshot::channel();
        let (b_tx, mut b) = tokio::sync::oneshot::channel();
        t.open(3, a_tx);
        t.open(2, b_tx);
        // a's three, then b's two; a's first is answered, its second is the one closed on.
        for pkid in [1, 2, 3, 4, 5] {
            t.published(pkid);
        }
        t.acked(1, None);
        t.acked(4, None);
        t.ended(Failure::Closed);
        assert_eq!(
            a.try_recv().unwrap(),
            (Outcome::Timeout, false, Blame::Record(1))
        );
        assert_eq!(
            b.try_recv().unwrap(),
            (Outcome::Timeout, false, Blame::Elsewhere)
        );
        // A connection lost otherwise (our timeout, a dropped session) blames nobody.
        let (c_tx, mut c) = tokio::sync::oneshot::channel();
        t.open(1, c_tx);
        t.published(9);
        t.ended(Failure::Lost);
        assert_eq!(
            c.try_recv().unwrap(),
            (Outcome::Timeout, false, Blame::None)
        );
    }

    #[test]
    fn closes_count_in_a_row_for_one_record() {
        let mut w = CloseWatch::new(3);
        assert_eq!(w.closed_on(&id(1)), 1);
        assert_eq!(w.closed_on(&id(1)), 2);
        // Another record closed on: the row starts again, for it.
        assert_eq!(w.closed_on(&id(2)), 1);
        assert_eq!(w.closed_on(&id(1)), 1);
        w.reset();
        assert_eq!(w.closed_on(&id(1)), 1);
        assert_eq!(w.closed_on(&id(1)), 2);
        assert_eq!(w.closed_on(&id(1)), 3);
    }
}
