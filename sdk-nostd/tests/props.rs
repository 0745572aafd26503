//! Property tests: random operation sequences with random time steps, checking the
//! promises of the design after every step.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use proptest::prelude::*;
use twinhub_core::frame;
use twinhub_core::*;

#[derive(Debug, Clone)]
enum Op {
    Enqueue { class: u8, len: usize },
    Poll,
    Answer { pick: usize, kind: u8 },
    Link { link: u8, up: bool },
    Advance { ms: u64 },
    Timeout,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, 0usize..300).prop_map(|(class, len)| Op::Enqueue { class, len }),
        4 => Just(Op::Poll),
        5 => (any::<usize>(), 0u8..10).prop_map(|(pick, kind)| Op::Answer { pick, kind }),
        1 => (0u8..3, any::<bool>()).prop_map(|(link, up)| Op::Link { link, up }),
        3 => (0u64..20_000).prop_map(|ms| Op::Advance { ms }),
        2 => Just(Op::Timeout),
    ]
}

/// How often the runs reached the interesting paths: sat sends, probes, rejections, arming.
static REACHED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

const SAT_BUDGET: u64 = 700;
const SAT_WINDOW: u64 = 600_000;
const ARM_AFTER: u64 = 60_000;

fn config(routing: Routing) -> Config {
    let mut sat = LinkConfig::new("sat", Cost::Costly);
    sat.budget = Some(Budget {
        bytes: SAT_BUDGET,
        window: Duration::from_millis(SAT_WINDOW),
    });
    sat.arm_after = Duration::from_millis(ARM_AFTER);
    Config::builder("prop-device")
        .routing(routing)
        .endpoint(EndpointConfig::new("a"))
        .endpoint(EndpointConfig::new("b"))
        .link(LinkConfig::new("wan", Cost::Free))
        .link(LinkConfig::new("cell", Cost::Metered))
        .link(sat)
        .build()
        .unwrap()
}

fn outcome(kind: u8) -> Outcome {
    match kind {
        0..=3 => Outcome::Delivered,
        4 => Outcome::Timeout,
        5 => Outcome::Unreachable,
        6 => Outcome::ServerError,
        7 => Outcome::Throttled {
            retry_after: Some(Duration::from_millis(1500)),
        },
        8 => Outcome::Unauthorized,
        _ => Outcome::Rejected(RejectReason::Malformed),
    }
}

fn healths(p: &Engine<RamStore<2048>, &Config>) -> Vec<RouteHealth> {
    (0..2)
        .flat_map(|e| (0..3).map(move |l| (e, l)))
        .map(|(e, l)| p.route_health(EndpointId(e), LinkId(l)))
        .collect()
}

fn dead(h: RouteHealth) -> bool {
    matches!(h, RouteHealth::Down | RouteHealth::Probing)
}

fn run(routing: Routing, seed: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let config = config(routing);
    let mut p = Engine::new(&config, RamStore::<2048>::new(), Instant::ZERO, 1, seed);
    let mut now = Instant::ZERO;
    let mut buf = vec![0u8; 1 << 19];
    let mut outstanding: Vec<Transmit> = Vec::new();
    let mut app_down = [false; 3];
    let mut cheap_dead_since: Option<Instant> = None;
    let mut sat_spend: BTreeMap<u64, u64> = BTreeMap::new();
    // The latest time handed to the engine (Advance alone does not tell it).
    let mut seen = Instant::ZERO;
    for op in ops {
        let engine_called = match op {
            Op::Advance { .. } => false,
            Op::Answer { .. } => !outstanding.is_empty(),
            _ => true,
        };
        if engine_called {
            seen = now;
        }
        match op {
            Op::Enqueue { class, len } => {
                let class = Class::ALL[class as usize];
                let before = p.stats().clone();
                match p.enqueue(now, &vec![0xAB; len], class) {
                    Ok(_) => prop_assert_eq!(p.stats().accepted, before.accepted + 1),
                    Err(_) => {
                        prop_assert_eq!(p.stats().accepted, before.accepted);
                        prop_assert_eq!(
                            p.stats().pending,
                            before.pending,
                            "a refused record harms nothing"
                        );
                    }
                }
            }
            Op::Poll => {
                while let Some(tx) = p.poll_transmit(now, &mut buf).unwrap() {
                    let h = p.route_health(tx.endpoint, tx.link);
                    if tx.probe {
                        prop_assert_eq!(h, RouteHealth::Probing);
                    } else {
                        prop_assert!(
                            matches!(h, RouteHealth::Healthy | RouteHealth::Suspect),
                            "sent on a {h:?} route"
                        );
                    }
                    prop_assert_eq!(tx.frames(&buf).count(), tx.records as usize);
                    if tx.probe {
                        REACHED[1].fetch_add(1, Relaxed);
                    }
                    if tx.link == LinkId(2) {
                        REACHED[0].fetch_add(1, Relaxed);
                        // Costly: only when every cheaper route has been down for arm_after,
                        // only critical records, within the window's budget.
                        let since =
                            cheap_dead_since.expect("costly link used while a cheaper route works");
                        prop_assert!(
                            now.saturating_since(since) >= Duration::from_millis(ARM_AFTER)
                        );
                        for f in tx.frames(&buf) {
                            prop_assert_eq!(f.unwrap().meta.class, Class::Critical);
                        }
                        let spent = sat_spend.entry(now.as_millis() / SAT_WINDOW).or_default();
                        *spent += tx.len as u64;
                        prop_assert!(*spent <= SAT_BUDGET, "spend {} over budget", spent);
                    }
                    outstanding.push(tx);
                }
            }
            Op::Answer { pick, kind } => {
                if outstanding.is_empty() {
                    continue;
                }
                let tx = outstanding.remove(pick % outstanding.len());
                let o = outcome(kind);
                let before = healths(&p);
                p.handle_outcome(now, tx.id, o);
                if let Outcome::Rejected(_) = o {
                    REACHED[2].fetch_add(1, Relaxed);
                    let after = healths(&p);
                    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
                        let this = i == tx.endpoint.0 as usize * 3 + tx.link.0 as usize;
                        if this && tx.probe && *b == RouteHealth::Probing {
                            // Restored to Down, or unchanged when the answer was stale (the
                            // probe had timed out and a newer one is in flight).
                            prop_assert!(
                                *a == RouteHealth::Down || a == b,
                                "rejected probe left {a:?}"
                            );
                        } else {
                            prop_assert_eq!(b, a, "a rejection changed route health");
                        }
                    }
                }
            }
            Op::Link { link, up } => {
                app_down[link as usize] = !up;
                p.handle_link(
                    now,
                    LinkId(link),
                    if up { LinkState::Up } else { LinkState::Down },
                );
            }
            Op::Advance { ms } => now = now + Duration::from_millis(ms),
            Op::Timeout => p.handle_timeout(now),
        }
        while let Some(e) = p.poll_event() {
            if matches!(e, Event::LinkArmed { .. }) {
                REACHED[3].fetch_add(1, Relaxed);
            }
        }
        let s = p.stats();
        prop_assert_eq!(
            s.accepted,
            s.delivered + s.pending + s.dropped.total(),
            "{:?}",
            s
        );
        prop_assert_eq!(s.pending, p.store().len() as u64);
        if let Some(t) = p.poll_timeout() {
            prop_assert!(
                t >= seen,
                "poll_timeout {t:?} before the engine's now {seen:?}"
            );
            if t == seen {
                // Due now (a transmit's deadline another call passed): handling it settles
                // it, so a driver never spins on the same instant.
                p.handle_timeout(seen);
                while p.poll_event().is_some() {}
                prop_assert!(
                    p.poll_timeout().is_none_or(|t| t > seen),
                    "still due at {seen:?} after handle_timeout"
                );
            }
        }
        let h = healths(&p);
        let cheap_dead = (0..2).all(|e| (0..2).all(|l| app_down[l] || dead(h[e * 3 + l])));
        cheap_dead_since = if cheap_dead {
            Some(cheap_dead_since.unwrap_or(now))
        } else {
            None
        };
    }
    heal_and_drain(&mut p, now, outstanding, &mut buf)
}

/// Liveness: once every link is up and every hub acknowledges, nothing stays pending: each
/// record is delivered, or dropped by a policy, within its time to live.
fn heal_and_drain(
    p: &mut Engine<RamStore<2048>, &Config>,
    mut now: Instant,
    outstanding: Vec<Transmit>,
    buf: &mut [u8],
) -> Result<(), TestCaseError> {
    for l in 0..3 {
        p.handle_link(now, LinkId(l), LinkState::Up);
    }
    for tx in outstanding {
        p.handle_outcome(now, tx.id, Outcome::Delivered);
    }
    for _ in 0..100_000 {
        while let Some(tx) = p.poll_transmit(now, buf).unwrap() {
            p.handle_outcome(now, tx.id, Outcome::Delivered);
        }
        while p.poll_event().is_some() {}
        if p.stats().pending == 0 {
            break;
        }
        let Some(t) = p.poll_timeout() else { break };
        now = now.max(t);
        p.handle_timeout(now);
    }
    let s = p.stats();
    prop_assert_eq!(s.pending, 0, "stuck after healing: {:?}", s);
    prop_assert_eq!(s.accepted, s.delivered + s.dropped.total());
    Ok(())
}

/// Drives a default-sized engine and one sized for exactly this configuration (two
/// endpoints, three links) with the same operations: they must agree on every transmit,
/// its bytes, every event and the final counts.
fn sized_engine_agrees(routing: Routing, seed: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let config = config(routing);
    let mut full = Engine::new(&config, RamStore::<2048>::new(), Instant::ZERO, 1, seed);
    let mut small =
        Engine::<_, _, 2, 3>::try_new(&config, RamStore::<2048>::new(), Instant::ZERO, 1, seed)
            .expect("the configuration fits");
    let (mut a, mut b) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut now = Instant::ZERO;
    let mut outstanding: Vec<TransmitId> = Vec::new();
    for op in ops {
        match op {
            Op::Enqueue { class, len } => {
                let class = Class::ALL[class as usize];
                let payload = vec![0x5A; len];
                prop_assert_eq!(
                    full.enqueue(now, &payload, class),
                    small.enqueue(now, &payload, class)
                );
            }
            Op::Poll => loop {
                let (x, y) = (
                    full.poll_transmit(now, &mut a),
                    small.poll_transmit(now, &mut b),
                );
                prop_assert_eq!(x, y);
                let Some(x) = x.unwrap() else { break };
                prop_assert_eq!(&a[..x.len], &b[..x.len]);
                outstanding.push(x.id);
            },
            Op::Answer { pick, kind } if !outstanding.is_empty() => {
                let id = outstanding.swap_remove(pick % outstanding.len());
                full.handle_outcome(now, id, outcome(kind));
                small.handle_outcome(now, id, outcome(kind));
            }
            Op::Answer { .. } => {}
            Op::Link { link, up } => {
                let state = if up { LinkState::Up } else { LinkState::Down };
                full.handle_link(now, LinkId(link), state);
                small.handle_link(now, LinkId(link), state);
            }
            Op::Advance { ms } => now = now + Duration::from_millis(ms),
            Op::Timeout => {
                full.handle_timeout(now);
                small.handle_timeout(now);
            }
        }
        prop_assert_eq!(full.poll_timeout(), small.poll_timeout());
        loop {
            let (x, y) = (full.poll_event(), small.poll_event());
            prop_assert_eq!(&x, &y);
            if x.is_none() {
                break;
            }
        }
    }
    prop_assert_eq!(full.stats(), small.stats());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_sized_engine_behaves_as_the_full_one(
        routing in prop_oneof![Just(Routing::ActivePassive), Just(Routing::ActiveActive), Just(Routing::Mirror)],
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..300),
    ) {
        sized_engine_agrees(routing, seed, ops)?;
    }

    #[test]
    fn promises_hold_active_passive(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..300)) {
        run(Routing::ActivePassive, seed, ops)?;
    }

    #[test]
    fn promises_hold_active_active(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..300)) {
        run(Routing::ActiveActive, seed, ops)?;
    }

    #[test]
    fn promises_hold_mirror(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..300)) {
        run(Routing::Mirror, seed, ops)?;
    }

    /// The arena store behaves like a queue with removal anywhere, addressed by key.
    #[test]
    fn ram_store_matches_a_model(ops in prop::collection::vec((any::<bool>(), 0usize..120, any::<usize>()), 1..400)) {
        let mut store = RamStore::<1024>::new();
        let mut model: VecDeque<(u64, usize)> = VecDeque::new();
        let mut seq = 0u64;
        let key = |seq| RecordKey { epoch: 1, seq };
        for (push, len, pick) in ops {
            if push || model.is_empty() {
                let meta = RecordMeta { epoch: 1, seq, class: Class::Normal, enqueued_at: Instant::ZERO };
                let payload = vec![seq as u8; len];
                let fits = store.fits(frame::encoded_len(&meta, len));
                match store.append(&meta, &payload) {
                    Ok(()) => { prop_assert!(fits); model.push_back((seq, len)); }
                    Err(StoreError::Full) => prop_assert!(!fits),
                    Err(e) => prop_assert!(false, "{e:?}"),
                }
                seq += 1;
            } else {
                let i = pick % model.len();
                store.remove(key(model[i].0)).unwrap();
                prop_assert_eq!(store.remove(key(model[i].0)), Err(StoreError::NoSuchRecord));
                model.remove(i);
            }
            prop_assert_eq!(store.len(), model.len());
            let mut after = None;
            for (s, len) in &model {
                let info = store.next_after(after).unwrap().unwrap();
                prop_assert_eq!((info.meta.seq, info.payload_len as usize), (*s, *len));
                prop_assert_eq!(info.frame_len as usize, frame::encoded_len(&info.meta, *len));
                after = Some(info.key());
            }
            prop_assert_eq!(store.next_after(after).unwrap(), None);
            let mut out = vec![0u8; 1024];
            if let Some(&(s, _)) = model.get(pick % model.len().max(1)) {
                let n = store.read(key(s), &mut out).unwrap();
                let (f, _) = frame::decode(&out[..n]).unwrap();
                prop_assert_eq!(f.meta.seq, s);
                prop_assert!(f.payload.iter().all(|&b| b == s as u8));
            }
        }
    }

    /// Frame decoding never panics on any bytes.
    #[test]
    fn frame_decode_total(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = frame::decode(&bytes);
        let _ = frame::Frames::new(&bytes).count();
    }

    /// A frame with any one bit flipped, or cut short, is refused: never read as a record.
    #[test]
    fn altered_frames_are_rejected(
        payload in prop::collection::vec(any::<u8>(), 0..120),
        seq in any::<u64>(),
        flip in any::<usize>(),
        cut in any::<usize>(),
    ) {
        let meta = RecordMeta { epoch: 7, seq, class: Class::Bulk, enqueued_at: Instant::from_millis(99) };
        let mut bytes = vec![0u8; frame::encoded_len(&meta, payload.len())];
        let n = frame::encode(&meta, &payload, &mut bytes).unwrap();
        prop_assert!(frame::decode(&bytes[..n]).is_ok());
        let bit = flip % (n * 8);
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(frame::decode(&flipped).is_err(), "bit {} flipped was accepted", bit);
        let short = cut % n;
        prop_assert!(frame::decode(&bytes[..short]).is_err(), "cut at {} was accepted", short);
    }
}

/// The properties above are only worth something if the random runs reach the costly link,
/// probes, rejections and arming: check that on a fixed, deterministic set of cases.
#[test]
fn random_runs_reach_the_interesting_paths() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (any::<u64>(), prop::collection::vec(op(), 1..300));
    for _ in 0..200 {
        let (seed, ops) = strategy.new_tree(&mut runner).unwrap().current();
        run(Routing::ActivePassive, seed, ops).unwrap();
    }
    let reached: Vec<u64> = REACHED.iter().map(|a| a.load(Relaxed)).collect();
    assert!(
        reached.iter().all(|&n| n > 0),
        "sat sends, probes, rejections, armings: {reached:?}"
    );
}
