//! A deterministic in-process network for driving the engine in tests: each transmit gets
//! an outcome and a latency from a closure, time jumps from deadline to deadline, and every
//! event and arrival is recorded.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use twinhub_core::*;

/// What the network does with one transmit.
pub enum Reply {
    /// This outcome after this delay.
    After(Outcome, Duration),
    /// Never answered (blackhole).
    Never,
}

/// Decides each transmit's fate; it sees the records (decoded frames) too.
pub type Net<'a> = Box<dyn FnMut(Instant, &Transmit, &[Frame<'_>]) -> Reply + 'a>;

pub struct Harness<'c, 'n> {
    pub p: Engine<RamStore<65536>, &'c Config>,
    pub now: Instant,
    pub net: Net<'n>,
    buf: Vec<u8>,
    replies: Vec<(Instant, TransmitId, Outcome)>,
    /// (time ms, event) in order.
    pub events: Vec<(u64, Event)>,
    /// Sequence numbers each endpoint acknowledged, with arrival counts.
    pub arrivals: BTreeMap<u8, BTreeMap<u64, u32>>,
    /// Every transmit made: (time, endpoint, link, records, probe, bytes).
    pub sent: Vec<(u64, u8, u8, u16, bool, usize)>,
    /// Sequence numbers of records sent per link, with their class.
    pub link_records: BTreeMap<u8, Vec<(u64, Class)>>,
    pub accepted: BTreeSet<u64>,
}

impl<'c, 'n> Harness<'c, 'n> {
    pub fn new(config: &'c Config, net: Net<'n>) -> Self {
        Harness {
            p: Engine::new(config, RamStore::new(), Instant::ZERO, 1, 7),
            now: Instant::ZERO,
            net,
            buf: vec![0; 1 << 20],
            replies: Vec::new(),
            events: Vec::new(),
            arrivals: BTreeMap::new(),
            sent: Vec::new(),
            link_records: BTreeMap::new(),
            accepted: BTreeSet::new(),
        }
    }

    pub fn enqueue(&mut self, payload: &[u8], class: Class) -> MessageId {
        let id = self.p.enqueue(self.now, payload, class).expect("enqueue");
        self.accepted.insert(id.seq);
        self.pump();
        id
    }

    /// Sends whatever the engine wants to send now and collects events.
    pub fn pump(&mut self) {
        while let Some(tx) = self.p.poll_transmit(self.now, &mut self.buf).unwrap() {
            let t = self.now.as_millis();
            self.sent
                .push((t, tx.endpoint.0, tx.link.0, tx.records, tx.probe, tx.len));
            let frames: Vec<Frame<'_>> = tx.frames(&self.buf).map(|f| f.unwrap()).collect();
            let seqs: Vec<(u64, Class)> =
                frames.iter().map(|f| (f.meta.seq, f.meta.class)).collect();
            assert_eq!(seqs.len(), tx.records as usize);
            self.link_records
                .entry(tx.link.0)
                .or_default()
                .extend(seqs.iter().copied());
            match (self.net)(self.now, &tx, &frames) {
                Reply::After(outcome, d) => {
                    if outcome == Outcome::Delivered {
                        let got = self.arrivals.entry(tx.endpoint.0).or_default();
                        for (s, _) in &seqs {
                            *got.entry(*s).or_default() += 1;
                        }
                    }
                    self.replies.push((self.now + d, tx.id, outcome));
                }
                Reply::Never => {}
            }
        }
        while let Some(e) = self.p.poll_event() {
            self.events.push((self.now.as_millis(), e));
        }
    }

    /// Runs the world until `until`, jumping between deadlines.
    pub fn run_until(&mut self, until: Instant) {
        loop {
            self.pump();
            let reply_at = self.replies.iter().map(|r| r.0).min();
            let timer = self.p.poll_timeout();
            let next = [reply_at, timer].into_iter().flatten().min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    let due: Vec<_> = self
                        .replies
                        .iter()
                        .filter(|r| r.0 <= self.now)
                        .cloned()
                        .collect();
                    self.replies.retain(|r| r.0 > self.now);
                    for (_, id, o) in due {
                        self.p.handle_outcome(self.now, id, o);
                        self.pump();
                    }
                    if timer.is_some_and(|t| t <= self.now) {
                        self.p.handle_timeout(self.now);
                    }
                }
                _ => {
                    self.now = self.now.max(until);
                    self.p.handle_timeout(self.now);
                    self.pump();
                    return;
                }
            }
        }
    }

    /// Enqueues one record every `every` until `until`, running the world in between.
    pub fn stream(&mut self, every: Duration, until: Instant, class: impl Fn(u64) -> Class) {
        let mut n = 0;
        while self.now + every <= until {
            let t = self.now + every;
            self.run_until(t);
            self.enqueue(&[n as u8; 32], class(n));
            n += 1;
        }
    }

    pub fn unique_delivered(&self) -> BTreeSet<u64> {
        self.arrivals
            .values()
            .flat_map(|m| m.keys().copied())
            .collect()
    }

    pub fn check_conservation(&self) {
        let s = self.p.stats();
        assert_eq!(
            s.accepted,
            s.delivered + s.pending + s.dropped.total(),
            "{s:?}"
        );
    }

    /// The events as text, one per line, for golden transcripts; `Dropped` is left out.
    pub fn transcript(&self) -> String {
        let mut out = String::new();
        for (t, e) in &self.events {
            if !matches!(e, Event::Dropped { .. }) {
                writeln!(out, "{:>9.3}s {e:?}", *t as f64 / 1000.0).unwrap();
            }
        }
        out
    }
}

/// Compares `actual` with `tests/golden/{name}.txt`; `UPDATE_GOLDEN=1` rewrites it.
pub fn golden(name: &str, actual: &str) {
    let path = format!("{}/tests/golden/{name}.txt", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!("missing golden file {path}; run with UPDATE_GOLDEN=1 and review it")
    });
    assert_eq!(actual, expected, "transcript differs from {path}");
}

pub fn ok(ms: u64) -> Reply {
    Reply::After(Outcome::Delivered, Duration::from_millis(ms))
}

pub fn fail(o: Outcome, ms: u64) -> Reply {
    Reply::After(o, Duration::from_millis(ms))
}

pub fn secs(s: u64) -> Instant {
    Instant::from_millis(s * 1000)
}

pub fn two_regions() -> ConfigBuilder<'static> {
    Config::builder("sensor-1")
        .endpoint(EndpointConfig::new("primary"))
        .endpoint(EndpointConfig::new("secondary"))
}
