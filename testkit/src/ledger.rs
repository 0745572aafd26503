//! Telling delivered, dropped and lost records apart by id.
//!
//! A record is *lost* when the producer accepted it, no hub received it, and nothing
//! accounts for it by id: neither a drop the producer reported naming that id, nor bytes
//! the test itself removed from the outbox. Counts from the producer never excuse a
//! missing id, so a producer that miscounts cannot hide a loss.

use std::collections::{HashMap, HashSet};

/// What the hubs received: copies per id and arrival times (Unix ms).
#[derive(Debug, Default, Clone)]
pub struct Arrivals {
    /// Copies received per message id.
    pub copies: HashMap<String, u64>,
    /// Arrival time of every copy, Unix ms (sorted by whoever builds it, if needed).
    pub times: Vec<u64>,
}

impl Arrivals {
    /// Records one copy of `id` arriving at `at_ms`.
    pub fn arrive(&mut self, id: impl Into<String>, at_ms: u64) {
        *self.copies.entry(id.into()).or_default() += 1;
        self.times.push(at_ms);
    }

    /// Adds everything `other` received.
    pub fn merge(&mut self, other: &Arrivals) {
        for (id, n) in &other.copies {
            *self.copies.entry(id.clone()).or_default() += n;
        }
        self.times.extend(&other.times);
    }

    /// Whether at least one copy of `id` arrived.
    pub fn contains(&self, id: &str) -> bool {
        self.copies.contains_key(id)
    }
}

/// The ids a producer accepted and the ids it reported dropped, in the producer's words.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    accepted: Vec<String>,
    /// Id -> reason, from the producer's drop events.
    dropped: HashMap<String, String>,
    /// Ids whose bytes the test removed from the outbox on purpose.
    removed: HashSet<String>,
    /// Drop events the producer raised that did not reach us (a lagging event stream):
    /// they cannot excuse any id, so they are only shown.
    missed_drop_reports: u64,
}

/// A ledger checked against what the hubs received.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Records the producer accepted.
    pub sent: u64,
    /// Accepted records that reached a hub (each counted once).
    pub delivered: u64,
    /// Copies beyond the first.
    pub duplicates: u64,
    /// Accepted records that reached no hub and that the producer reported dropped by id.
    pub dropped: u64,
    /// Accepted records that reached no hub because the test removed their bytes.
    pub removed: u64,
    /// Records the test removed that reached a hub anyway: the removal was not what the
    /// test believes it was.
    pub removed_but_delivered: u64,
    /// Accepted records that reached no hub and that nothing accounts for.
    pub lost: u64,
    /// Up to ten of the lost ids, for the report.
    pub lost_examples: Vec<String>,
    /// Drop events raised but not received (shown; they excuse nothing).
    pub missed_drop_reports: u64,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// The producer accepted `id`.
    pub fn accept(&mut self, id: impl Into<String>) {
        self.accepted.push(id.into());
    }

    /// The producer reported `id` dropped for `reason`.
    pub fn dropped(&mut self, id: impl Into<String>, reason: impl Into<String>) {
        self.dropped.insert(id.into(), reason.into());
    }

    /// `n` drop reports were raised but missed.
    pub fn missed_drop_reports(&mut self, n: u64) {
        self.missed_drop_reports += n;
    }

    /// The test removed the bytes of `id` from the outbox.
    pub fn removed_by_test(&mut self, id: impl Into<String>) {
        self.removed.insert(id.into());
    }

    /// Adds everything `other` recorded (another run of the same producer).
    pub fn absorb(&mut self, other: &Ledger) {
        self.accepted.extend(other.accepted.iter().cloned());
        self.dropped
            .extend(other.dropped.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.removed.extend(other.removed.iter().cloned());
        self.missed_drop_reports += other.missed_drop_reports;
    }

    /// Every accepted id, in order of acceptance.
    pub fn accepted(&self) -> &[String] {
        &self.accepted
    }

    /// Checks every accepted id against `arrivals`.
    pub fn tally(&self, arrivals: &Arrivals) -> Tally {
        let mut t = Tally {
            sent: self.accepted.len() as u64,
            missed_drop_reports: self.missed_drop_reports,
            ..Tally::default()
        };
        for id in &self.accepted {
            match arrivals.copies.get(id) {
                Some(n) => {
                    t.delivered += 1;
                    t.duplicates += n - 1;
                    if self.removed.contains(id) {
                        t.removed_but_delivered += 1;
                    }
                }
                None if self.removed.contains(id) => t.removed += 1,
                None if self.dropped.contains_key(id) => t.dropped += 1,
                None => {
                    t.lost += 1;
                    if t.lost_examples.len() < 10 {
                        t.lost_examples.push(id.clone());
                    }
                }
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrivals(ids: &[&str]) -> Arrivals {
        let mut a = Arrivals::default();
        for (i, id) in ids.iter().enumerate() {
            a.arrive(*id, i as u64);
        }
        a
    }

    fn ledger(accepted: &[&str]) -> Ledger {
        let mut l = Ledger::new();
        for id in accepted {
            l.accept(*id);
        }
        l
    }

    #[test]
    fn a_missing_id_is_lost_even_when_a_drop_count_would_cover_it() {
        // Four accepted, two arrived, one reported dropped by id: the fourth is lost, even
        // though "sent - delivered - drop count" would give 1 - a count the producer could
        // have inflated - and here the producer also reported an id it never accepted.
        let mut l = ledger(&["d:1:0", "d:1:1", "d:1:2", "d:1:3"]);
        l.dropped("d:1:2", "expired");
        l.dropped("d:1:99", "evicted");
        let t = l.tally(&arrivals(&["d:1:0", "d:1:1"]));
        assert_eq!((t.sent, t.delivered, t.dropped, t.lost), (4, 2, 1, 1));
        assert_eq!(t.lost_examples, ["d:1:3"]);
    }

    #[test]
    fn missed_drop_reports_excuse_nothing() {
        let mut l = ledger(&["d:1:0", "d:1:1"]);
        l.missed_drop_reports(5);
        let t = l.tally(&arrivals(&["d:1:0"]));
        assert_eq!((t.lost, t.dropped, t.missed_drop_reports), (1, 0, 5));
    }

    #[test]
    fn duplicates_and_drops_that_arrived_anyway() {
        let mut l = ledger(&["d:1:0", "d:1:1"]);
        // Dropped after a copy had left (a timeout that delivered): delivered, not dropped.
        l.dropped("d:1:1", "expired");
        let t = l.tally(&arrivals(&["d:1:0", "d:1:0", "d:1:1", "d:1:0"]));
        assert_eq!((t.delivered, t.duplicates, t.dropped, t.lost), (2, 2, 0, 0));
    }

    #[test]
    fn removed_by_the_test_is_not_lost_but_must_not_arrive() {
        let mut l = ledger(&["d:1:0", "d:1:1", "d:1:2", "d:1:3"]);
        l.removed_by_test("d:1:2");
        l.removed_by_test("d:1:3");
        let t = l.tally(&arrivals(&["d:1:0", "d:1:3"]));
        assert_eq!((t.removed, t.removed_but_delivered, t.lost), (1, 1, 1));
        assert_eq!(t.lost_examples, ["d:1:1"]);
    }
}
