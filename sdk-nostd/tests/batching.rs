//! Batching rules the engine applies itself, so every driver (the std SDK, the firmware,
//! the simulator) gets the same: `hold_partial` holds a partial batch behind transmits in
//! flight, and lets it go when they settle.

use twinhub_core::*;

const PAYLOAD: &[u8] = b"{\"t\":1}";

fn config(hold: bool) -> Config {
    let mut primary = EndpointConfig::new("primary");
    primary.max_batch_records = 4;
    Config::builder("sensor-1")
        .endpoint(primary)
        .max_inflight(2)
        .hold_partial(hold)
        .build()
        .unwrap()
}

fn enqueue(p: &mut Engine<RamStore<4096>, &Config>, n: usize) {
    for _ in 0..n {
        p.enqueue(Instant::ZERO, PAYLOAD, Class::Normal).unwrap();
    }
}

#[test]
fn a_partial_batch_waits_behind_a_transmit_in_flight_until_it_is_full_or_settled() {
    let config = config(true);
    let mut p = Engine::new(&config, RamStore::<4096>::new(), Instant::ZERO, 1, 7);
    let mut buf = [0u8; 4096];
    let now = Instant::ZERO;

    // Idle: one record goes at once.
    enqueue(&mut p, 1);
    let first = p
        .poll_transmit(now, &mut buf)
        .unwrap()
        .expect("an idle engine sends");
    assert_eq!(first.records, 1);

    // Three wait behind it: fewer than a full batch of four, so they are held.
    enqueue(&mut p, 3);
    assert!(p.poll_transmit(now, &mut buf).unwrap().is_none(), "held");

    // A fourth fills the batch: it leaves whole, with the first still in flight.
    enqueue(&mut p, 1);
    let full = p
        .poll_transmit(now, &mut buf)
        .unwrap()
        .expect("a full batch goes");
    assert_eq!(full.records, 4);

    // Two more are held until both transmits settle, then go together.
    enqueue(&mut p, 2);
    p.handle_outcome(now, first.id, Outcome::Delivered);
    // One settled, one still in flight: still held.
    assert!(p.poll_transmit(now, &mut buf).unwrap().is_none());
    p.handle_outcome(now, full.id, Outcome::Delivered);
    let rest = p.poll_transmit(now, &mut buf).unwrap().expect("released");
    assert_eq!(rest.records, 2);
    p.handle_outcome(now, rest.id, Outcome::Delivered);
    assert_eq!((p.stats().delivered, p.stats().pending), (7, 0));
}

#[test]
fn a_held_batch_goes_when_the_transmit_ahead_of_it_times_out() {
    let config = config(true);
    let mut p = Engine::new(&config, RamStore::<4096>::new(), Instant::ZERO, 1, 7);
    let mut buf = [0u8; 4096];
    enqueue(&mut p, 1);
    let first = p.poll_transmit(Instant::ZERO, &mut buf).unwrap().unwrap();
    enqueue(&mut p, 1);
    assert!(p.poll_transmit(Instant::ZERO, &mut buf).unwrap().is_none());
    // Nobody answers: the request timeout settles the first transmit, and both records
    // become sendable; nothing is lost.
    let mut now = Instant::ZERO;
    while p.inflight_records() > 0 {
        now = p.poll_timeout().expect("a request deadline is pending");
        p.handle_timeout(now);
    }
    let mut sent = 0;
    while sent < 2 {
        match p.poll_transmit(now, &mut buf).unwrap() {
            Some(tx) => {
                assert_ne!(tx.id, first.id);
                sent += tx.records;
                p.handle_outcome(now, tx.id, Outcome::Delivered);
            }
            None => {
                now = p.poll_timeout().expect("a retry is scheduled");
                p.handle_timeout(now);
            }
        }
    }
    assert_eq!((p.stats().delivered, p.stats().pending), (2, 0));
}

#[test]
fn without_hold_partial_records_go_as_soon_as_a_slot_is_free() {
    let config = config(false);
    let mut p = Engine::new(&config, RamStore::<4096>::new(), Instant::ZERO, 1, 7);
    let mut buf = [0u8; 4096];
    enqueue(&mut p, 1);
    let first = p.poll_transmit(Instant::ZERO, &mut buf).unwrap();
    assert!(first.is_some());
    enqueue(&mut p, 1);
    let second = p.poll_transmit(Instant::ZERO, &mut buf).unwrap();
    assert_eq!(second.map(|t| t.records), Some(1));
}
