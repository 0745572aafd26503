//! `Store::settled`: the engine tells its store how every record it removes was settled,
//! so a driver can confirm deliveries without one event per record.

use twinhub_core::*;

/// A `RamStore` that records what it is told.
#[derive(Default)]
struct Recording {
    inner: RamStore<8192>,
    told: Vec<(u64, Settlement)>,
}

impl Store for Recording {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
    fn cost(&self, n: usize) -> usize {
        self.inner.cost(n)
    }
    fn fits(&self, n: usize) -> bool {
        self.inner.fits(n)
    }
    fn append(&mut self, m: &RecordMeta, p: &[u8]) -> Result<(), StoreError> {
        self.inner.append(m, p)
    }
    fn next_after(&mut self, k: Option<RecordKey>) -> Result<Option<RecordInfo>, StoreError> {
        self.inner.next_after(k)
    }
    fn read(&mut self, k: RecordKey, o: &mut [u8]) -> Result<usize, StoreError> {
        self.inner.read(k, o)
    }
    fn remove(&mut self, k: RecordKey) -> Result<(), StoreError> {
        self.inner.remove(k)
    }
    fn settled(&mut self, key: RecordKey, how: Settlement) {
        self.told.push((key.seq, how));
    }
}

fn config(routing: Routing) -> Config {
    Config::builder("dev")
        .endpoint(EndpointConfig::new("a"))
        .endpoint(EndpointConfig::new("b"))
        .routing(routing)
        .build()
        .unwrap()
}

/// Sends everything the engine wants and answers each transmit with `answer(endpoint)`.
fn answer_all(p: &mut Engine<Recording, &Config>, now: Instant, answer: impl Fn(u8) -> Outcome) {
    let mut buf = vec![0; 1 << 16];
    let mut sent = Vec::new();
    while let Some(tx) = p.poll_transmit(now, &mut buf).unwrap() {
        sent.push(tx);
    }
    for tx in sent {
        p.handle_outcome(now, tx.id, answer(tx.endpoint.0));
    }
}

#[test]
fn each_delivered_record_is_settled_once_naming_the_acking_endpoint() {
    let config = config(Routing::ActivePassive);
    let now = Instant::from_millis(1_000);
    let mut p = Engine::new(&config, Recording::default(), now, 1, 7);
    for i in 0..3u8 {
        p.enqueue(now, &[i], Class::Normal).unwrap();
    }
    answer_all(&mut p, now, |_| Outcome::Delivered);
    let ep = Settlement::Delivered(EndpointId(0));
    assert_eq!(p.store().told, [(0, ep), (1, ep), (2, ep)]);
    assert_eq!(p.stats().delivered, 3);
}

#[test]
fn a_rejected_record_is_settled_as_dropped_with_the_reason() {
    let config = config(Routing::ActivePassive);
    let now = Instant::from_millis(1_000);
    let mut p = Engine::new(&config, Recording::default(), now, 1, 7);
    p.enqueue(now, b"poison", Class::Normal).unwrap();
    answer_all(&mut p, now, |_| Outcome::Rejected(RejectReason::Malformed));
    assert_eq!(
        p.store().told,
        [(0, Settlement::Dropped(DropReason::Malformed))]
    );
}

#[test]
fn in_mirror_routing_a_record_settles_when_the_last_endpoint_acks() {
    let config = config(Routing::Mirror);
    let now = Instant::from_millis(1_000);
    let mut p = Engine::new(&config, Recording::default(), now, 1, 7);
    p.enqueue(now, b"x", Class::Normal).unwrap();
    // Only `a` acknowledges: not delivered yet.
    answer_all(&mut p, now, |e| {
        if e == 0 {
            Outcome::Delivered
        } else {
            Outcome::Unreachable
        }
    });
    assert!(p.store().told.is_empty());
    // `b` acknowledges on its retry: settled, credited to `b`.
    let later = Instant::from_millis(120_000);
    p.handle_timeout(later);
    answer_all(&mut p, later, |_| Outcome::Delivered);
    assert_eq!(p.store().told, [(0, Settlement::Delivered(EndpointId(1)))]);
}
