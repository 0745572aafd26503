//! The driver and the `Producer` handle, with in-process transports and tokio's paused
//! clock. Real brokers and the emulator are exercised in the transport and end-to-end
//! suites; here the point is the driver's own logic: group commit, failover wiring, flush,
//! shutdown, errors.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use twinhub::memstore::MemStore;
use twinhub::producer::GROUP_COMMIT_MAX;
use twinhub::transport::{BoxFuture, Transport};
use twinhub::{
    BuildError, Class, Event, FlushError, NotDelivered, Outbox, Outcome, Parts, PartsError,
    Producer, SendError, SendOptions,
};
use twinhub_core::{
    Config, DropReason, EndpointConfig, EndpointId, MessageId, OnFull, RecordInfo, RecordKey,
    RecordMeta, Store, StoreError,
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Deliver,
    Fail(Outcome),
    Hang,
}

/// What a fake hub received: id, properties, body.
type Received = Vec<(MessageId, Vec<(String, String)>, Vec<u8>)>;

#[derive(Clone)]
struct Fake {
    mode: Arc<Mutex<Mode>>,
    got: Arc<Mutex<Received>>,
    /// Records per delivered batch, in order.
    batches: Arc<Mutex<Vec<usize>>>,
}

impl Fake {
    fn new() -> Self {
        Fake {
            mode: Arc::new(Mutex::new(Mode::Deliver)),
            got: Arc::default(),
            batches: Arc::default(),
        }
    }
    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }
    fn ids(&self) -> Vec<MessageId> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|g| g.0.clone())
            .collect()
    }
}

impl Transport for Fake {
    fn send<'a>(&'a self, records: &'a [twinhub::record::Record]) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let mode = *self.mode.lock().unwrap();
            match mode {
                Mode::Deliver => {
                    self.batches.lock().unwrap().push(records.len());
                    let mut got = self.got.lock().unwrap();
                    got.extend(
                        records
                            .iter()
                            .map(|r| (r.id.clone(), r.properties.clone(), r.body.to_vec())),
                    );
                    Outcome::Delivered
                }
                Mode::Fail(o) => o,
                Mode::Hang => std::future::pending().await,
            }
        })
    }
}

/// A memory outbox that counts syncs and how many records each one covered.
struct Counted {
    inner: MemStore,
    syncs: Arc<AtomicUsize>,
    /// Records appended since the last sync.
    unsynced: usize,
    /// Records each sync made durable, in order.
    groups: Arc<Mutex<Vec<usize>>>,
}

impl Store for Counted {
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
        self.unsynced += 1;
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
}

impl Outbox for Counted {
    fn sync(&mut self) -> Result<(), twinhub::OutboxFailure> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        self.groups
            .lock()
            .unwrap()
            .push(std::mem::take(&mut self.unsynced));
        Ok(())
    }
}

fn config(max_record: u32, on_full: OnFull) -> Config {
    let mut a = EndpointConfig::new("primary");
    a.max_record_bytes = max_record;
    Config::builder("dev-1")
        .endpoint(a)
        .endpoint(EndpointConfig::new("secondary"))
        .on_full(on_full)
        // As the SDK's builder sets it.
        .hold_partial(true)
        .build()
        .unwrap()
}

fn start(primary: &Fake, secondary: &Fake, max_bytes: usize) -> (Producer, Arc<AtomicUsize>) {
    let (p, syncs, _) = start_counted(primary, secondary, max_bytes, OnFull::Evict);
    (p, syncs)
}

fn start_with(
    primary: &Fake,
    secondary: &Fake,
    max_bytes: usize,
    on_full: OnFull,
) -> (Producer, Arc<AtomicUsize>) {
    let (p, syncs, _) = start_counted(primary, secondary, max_bytes, on_full);
    (p, syncs)
}

/// A producer whose outbox reports its syncs and the records each sync covered.
fn start_counted(
    primary: &Fake,
    secondary: &Fake,
    max_bytes: usize,
    on_full: OnFull,
) -> (Producer, Arc<AtomicUsize>, Arc<Mutex<Vec<usize>>>) {
    let syncs = Arc::new(AtomicUsize::new(0));
    let groups = Arc::default();
    let outbox = Counted {
        inner: MemStore::new(max_bytes),
        syncs: syncs.clone(),
        unsynced: 0,
        groups: Arc::clone(&groups),
    };
    let p = Producer::start(Parts {
        config: config(4096, on_full),
        outbox,
        epoch: 3,
        transports: vec![
            vec![Arc::new(primary.clone())],
            vec![Arc::new(secondary.clone())],
        ],
        seed: 1,
        max_confirmations: 4,
    })
    .unwrap();
    (p, syncs, groups)
}

#[tokio::test(start_paused = true)]
async fn sends_are_delivered_with_ids_and_properties() {
    let (a, b) = (Fake::new(), Fake::new());
    let (p, _) = start(&a, &b, 1 << 20);
    let id = p
        .send_with(
            b"21.5".to_vec(),
            SendOptions::class(Class::Critical).property("unit", "C"),
        )
        .await
        .unwrap();
    assert_eq!(id.to_string(), "dev-1:3:0");
    p.flush(Duration::from_secs(5)).await.unwrap();
    let got = a.got.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![(id, vec![("unit".into(), "C".into())], b"21.5".to_vec())]
    );
    let s = p.stats();
    assert_eq!(
        (s.stats.accepted, s.stats.delivered, s.stats.pending),
        (1, 1, 0)
    );
    assert_eq!(s.to_json()["delivered_by_endpoint"]["primary"], 1);
}

/// Group commit's rule: every send already waiting when the driver wakes, up to
/// `GROUP_COMMIT_MAX`, is made durable by one sync. On this single-threaded runtime all
/// the spawned sends queue their commands before the driver runs again, so the groups are
/// exactly known: full groups of `GROUP_COMMIT_MAX`, then the rest.
#[tokio::test(start_paused = true)]
async fn concurrent_sends_share_one_sync() {
    for n in [200, GROUP_COMMIT_MAX + 176] {
        let (a, b) = (Fake::new(), Fake::new());
        let (p, syncs, groups) = start_counted(&a, &b, 1 << 20, OnFull::Evict);
        let sends: Vec<_> = (0..n)
            .map(|i| {
                let p = p.clone();
                tokio::spawn(async move { p.send(vec![i as u8; 10]).await })
            })
            .collect();
        for s in sends {
            s.await.unwrap().unwrap();
        }
        let want: Vec<usize> = (0..n)
            .step_by(GROUP_COMMIT_MAX)
            .map(|first| (n - first).min(GROUP_COMMIT_MAX))
            .collect();
        assert_eq!(
            *groups.lock().unwrap(),
            want,
            "records per sync for {n} concurrent sends"
        );
        assert_eq!(syncs.load(Ordering::SeqCst), want.len());
        p.flush(Duration::from_secs(5)).await.unwrap();
        assert_eq!(a.ids().len(), n);
    }
}

#[tokio::test(start_paused = true)]
async fn primary_failure_fails_over_and_back() {
    let (a, b) = (Fake::new(), Fake::new());
    let (p, _) = start(&a, &b, 1 << 20);
    let mut events = p.events();
    a.set(Mode::Fail(Outcome::Unreachable));
    for i in 0..20 {
        p.send(vec![i]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    p.flush(Duration::from_secs(30)).await.unwrap();
    assert_eq!(b.ids().len(), 20, "everything reached the secondary");
    a.set(Mode::Deliver);
    for i in 0..120 {
        p.send(vec![i]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    p.flush(Duration::from_secs(30)).await.unwrap();
    let s = p.stats().stats;
    assert_eq!((s.failovers, s.failbacks), (1, 1));
    assert_eq!(s.delivered, 140);
    let mut seen = vec![];
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    assert!(seen.contains(&Event::FailedOver {
        from: EndpointId(0),
        to: EndpointId(1)
    }));
    assert!(seen.contains(&Event::FailedBack {
        from: EndpointId(1),
        to: EndpointId(0)
    }));
}

/// Events and controls name endpoints the same way: the id an event carries drains that
/// endpoint, and the handle maps it to and from the configured name.
#[tokio::test(start_paused = true)]
async fn an_events_endpoint_id_drives_controls_and_maps_to_its_name() {
    let (a, b) = (Fake::new(), Fake::new());
    let (p, _) = start(&a, &b, 1 << 20);
    let mut events = p.events();
    a.set(Mode::Fail(Outcome::Unreachable));
    let left = loop {
        p.send(vec![1]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(Event::FailedOver { from, .. }) = events.try_recv() {
            break from;
        }
    };
    assert_eq!(p.endpoint_name(left), Some("primary"));
    assert_eq!(p.endpoint_id("primary"), Some(left));
    assert_eq!(p.endpoint_name(EndpointId(9)), None);
    assert_eq!(p.link_id("default"), Some(twinhub::LinkId(0)));
    assert_eq!(p.link_name(twinhub::LinkId(0)), Some("default"));
    // Draining the secondary by name and the primary by the event's id both apply.
    p.set_drained(left, true).await.unwrap();
    p.set_drained("secondary", true).await.unwrap();
    p.set_drained(left, false).await.unwrap();
    a.set(Mode::Deliver);
    let id = p.send(vec![2]).await.unwrap();
    p.flush(Duration::from_secs(120)).await.unwrap();
    assert!(
        a.ids().contains(&id),
        "the undrained primary carries new records"
    );
    assert!(!b.ids().contains(&id), "the drained secondary carries none");
}

#[tokio::test(start_paused = true)]
async fn bad_input_and_full_outbox_are_typed_errors() {
    let (a, b) = (Fake::new(), Fake::new());
    a.set(Mode::Hang);
    b.set(Mode::Hang);
    let (p, _) = start_with(&a, &b, 2000, OnFull::Reject);
    assert!(matches!(
        p.send(vec![0; 5000]).await,
        Err(SendError::TooLarge { .. })
    ));
    let mut accepted = 0;
    let err = loop {
        match p.send(vec![1; 100]).await {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 100, "the outbox never filled");
    };
    assert_eq!(err, SendError::Full);
    assert!(accepted > 3);
    assert_eq!(
        p.stats().stats.accepted,
        accepted,
        "refusals harm nothing accepted"
    );
    assert!(matches!(
        p.flush(Duration::from_secs(2)).await,
        Err(FlushError::Timeout { .. })
    ));
    assert!(matches!(
        p.set_link_state("nope", false).await,
        Err(twinhub::ControlFailure::NoSuchLink(name)) if name == "named `nope`"
    ));
    assert!(matches!(
        p.set_drained(EndpointId(2), true).await,
        Err(twinhub::ControlFailure::NoSuchEndpoint(id)) if id == "with id 2"
    ));
}

#[tokio::test(start_paused = true)]
async fn full_outbox_evicts_oldest_of_lowest_class_and_says_so() {
    let (a, b) = (Fake::new(), Fake::new());
    a.set(Mode::Fail(Outcome::Unreachable));
    b.set(Mode::Fail(Outcome::Unreachable));
    let (p, _) = start(&a, &b, 2000);
    let mut events = p.events();
    let first_bulk = p
        .send_with(vec![1; 100], SendOptions::class(Class::Bulk))
        .await
        .unwrap();
    let mut refused = 0;
    for _ in 0..40 {
        match p
            .send_with(vec![2; 100], SendOptions::class(Class::Normal))
            .await
        {
            Ok(_) => {}
            // Eviction never takes a record in flight: while a retry carries every stored
            // record, a send is refused rather than harm one.
            Err(SendError::Full) => refused += 1,
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = p.stats().stats;
    assert!(refused < 10, "refused {refused} of 40");
    assert_eq!(s.accepted, 41 - refused);
    assert!(s.dropped.evicted > 0);
    assert_eq!(s.accepted, s.delivered + s.pending + s.dropped.total());
    let mut first_drop = None;
    while let Ok(e) = events.try_recv() {
        if let Event::Dropped {
            id,
            reason: DropReason::Evicted,
        } = e
        {
            first_drop.get_or_insert(id);
        }
    }
    assert_eq!(first_drop, Some(first_bulk), "the bulk record goes first");
}

#[tokio::test(start_paused = true)]
async fn a_lone_record_leaves_at_once_and_a_burst_in_full_batches() {
    let (a, b) = (Fake::new(), Fake::new());
    let (p, _) = start(&a, &b, 1 << 24);
    let t0 = tokio::time::Instant::now();
    p.send(b"lone".to_vec()).await.unwrap();
    p.flush(Duration::from_secs(5)).await.unwrap();
    // The fake hub answers in 5 ms of the paused clock: nothing waited before the send.
    assert_eq!(t0.elapsed(), Duration::from_millis(5));
    assert_eq!(*a.batches.lock().unwrap(), [1]);

    let full = EndpointConfig::new("x").max_batch_records as usize;
    let n = 10 * full;
    let mut tickets = Vec::new();
    for i in 0..n {
        let t = p
            .submit(i.to_le_bytes().to_vec(), SendOptions::default())
            .await
            .unwrap();
        tickets.push(t);
    }
    for t in tickets {
        t.await.unwrap();
    }
    p.flush(Duration::from_secs(5)).await.unwrap();
    let batches = a.batches.lock().unwrap()[1..].to_vec();
    assert_eq!(batches.iter().sum::<usize>(), n);
    // While a batch is in flight the rest wait for a full one: at most the first and the
    // last are partial.
    let partial = batches.iter().filter(|b| **b < full).count();
    assert!(partial <= 2, "batches {batches:?}");
    assert!(batches.len() <= n / full + 2, "batches {batches:?}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_then_refuses() {
    let (a, b) = (Fake::new(), Fake::new());
    let (p, _) = start(&a, &b, 1 << 20);
    for i in 0..50 {
        p.send(vec![i]).await.unwrap();
    }
    let snap = p.shutdown(Duration::from_secs(10)).await.unwrap();
    assert_eq!((snap.stats.delivered, snap.stats.pending), (50, 0));
    assert_eq!(p.send(vec![1]).await, Err(SendError::Closed));
    assert_eq!(a.ids().len(), 50);
}

/// Transports that do not match the configuration's routes are refused when the producer
/// starts, with the mismatch named. (Before this was checked, the driver task panicked at
/// the first transmit to the missing route, and every later `send` returned `Closed`.)
#[tokio::test(start_paused = true)]
async fn mismatched_transports_are_a_build_error_not_a_dead_driver() {
    let a = Fake::new();
    let parts = |transports| Parts {
        config: config(4096, OnFull::Reject),
        outbox: MemStore::new(1 << 20),
        epoch: 1,
        transports,
        seed: 1,
        max_confirmations: 4,
    };
    let one: Vec<Vec<twinhub::transport::SharedTransport>> = vec![vec![Arc::new(a.clone())]];
    match Producer::start(parts(one)) {
        Err(BuildError::Parts(PartsError::EndpointCount {
            configured: 2,
            given: 1,
        })) => {}
        other => panic!("expected an endpoint count error, got {other:?}"),
    }
    let ragged: Vec<Vec<twinhub::transport::SharedTransport>> =
        vec![vec![Arc::new(a.clone())], vec![]];
    let err = Producer::start(parts(ragged)).unwrap_err();
    assert!(
        matches!(
            &err,
            BuildError::Parts(PartsError::LinkCount { endpoint, configured: 1, given: 0 })
                if endpoint == "secondary"
        ),
        "{err}"
    );
    assert!(err.to_string().contains("`secondary`"), "{err}");
}

/// A confirmed record resolves with the endpoint whose acknowledgement completed it: the
/// primary while it works, the secondary after a failover.
#[tokio::test(start_paused = true)]
async fn a_confirmation_names_the_endpoint_that_acked_after_a_failover() {
    let (a, b) = (Fake::new(), Fake::new());
    let (p, _) = start(&a, &b, 1 << 20);
    let before = p
        .send_confirmed(b"one".to_vec(), SendOptions::default())
        .await
        .unwrap();
    let id = before.id().clone();
    let got = before.await.unwrap();
    assert_eq!((got.id, got.endpoint), (id, EndpointId(0)));

    a.set(Mode::Fail(Outcome::Unreachable));
    let after = p
        .send_confirmed(b"two".to_vec(), SendOptions::default())
        .await
        .unwrap();
    let id = after.id().clone();
    let got = tokio::time::timeout(Duration::from_secs(60), after)
        .await
        .expect("the confirmation resolves")
        .unwrap();
    assert_eq!((&got.id, got.endpoint), (&id, EndpointId(1)));
    assert_eq!(p.endpoint_name(got.endpoint), Some("secondary"));
    assert!(b.ids().contains(&id) && !a.ids().contains(&id));
    assert_eq!(p.stats().stats.failovers, 1);
}

/// A record the hubs reject is dropped, and its ticket says so with the reason; a record
/// still pending when the producer stops resolves `Stopped`.
#[tokio::test(start_paused = true)]
async fn a_dropped_or_abandoned_record_resolves_its_ticket_with_why() {
    let (a, b) = (Fake::new(), Fake::new());
    let (p, _) = start(&a, &b, 1 << 20);
    a.set(Mode::Fail(Outcome::Rejected(
        twinhub::RejectReason::TooLarge,
    )));
    let ticket = p
        .send_confirmed(b"poison".to_vec(), SendOptions::default())
        .await
        .unwrap();
    let id = ticket.id().clone();
    let got = tokio::time::timeout(Duration::from_secs(60), ticket)
        .await
        .expect("the confirmation resolves");
    assert_eq!(
        got,
        Err(NotDelivered::Dropped {
            id,
            reason: DropReason::TooLarge
        })
    );

    a.set(Mode::Hang);
    b.set(Mode::Hang);
    let ticket = p
        .send_confirmed(b"stuck".to_vec(), SendOptions::default())
        .await
        .unwrap();
    let id = ticket.id().clone();
    assert!(matches!(
        p.shutdown(Duration::from_secs(1)).await,
        Err(FlushError::Timeout { pending: 1 })
    ));
    assert_eq!(ticket.await, Err(NotDelivered::Stopped { id }));
}

/// The driver holds at most `max_confirmations` (4 here) waiters: a fifth confirmed send
/// waits, without being accepted, until one resolves. Plain sends are never held back.
#[tokio::test(start_paused = true)]
async fn outstanding_confirmations_are_bounded_and_the_next_one_waits() {
    let (a, b) = (Fake::new(), Fake::new());
    a.set(Mode::Fail(Outcome::Unreachable));
    b.set(Mode::Fail(Outcome::Unreachable));
    let (p, _) = start(&a, &b, 1 << 20);
    let mut tickets = Vec::new();
    for i in 0..4u8 {
        let t = p.send_confirmed(vec![i], SendOptions::default()).await;
        tickets.push(t.unwrap());
    }
    let fifth = tokio::time::timeout(
        Duration::from_secs(30),
        p.send_confirmed(vec![4], SendOptions::default()),
    )
    .await;
    assert!(fifth.is_err(), "a fifth confirmation waits for a slot");
    assert_eq!(
        p.stats().stats.accepted,
        4,
        "and its record is not accepted yet"
    );
    p.send(vec![9]).await.expect("plain sends do not wait");

    a.set(Mode::Deliver);
    let fifth = tokio::time::timeout(
        Duration::from_secs(120),
        p.send_confirmed(vec![4], SendOptions::default()),
    )
    .await
    .expect("a slot frees once the outage ends")
    .unwrap();
    tickets.push(fifth);
    for t in tickets {
        let got = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("every confirmation resolves")
            .unwrap();
        assert_eq!(got.endpoint, EndpointId(0));
    }
}

/// The `delivered` stream lists every acknowledged record once, in order, with its endpoint.
#[tokio::test(start_paused = true)]
async fn the_delivered_stream_lists_acked_ids() {
    let (a, b) = (Fake::new(), Fake::new());
    let (p, _) = start(&a, &b, 1 << 20);
    let mut delivered = p.delivered();
    let mut ids = Vec::new();
    for i in 0..50u8 {
        ids.push(p.send(vec![i]).await.unwrap());
    }
    p.flush(Duration::from_secs(10)).await.unwrap();
    let mut seen = Vec::new();
    while let Ok(d) = delivered.try_recv() {
        assert_eq!(d.endpoint, EndpointId(0));
        seen.push(d.id);
    }
    assert_eq!(seen, ids);
}
