//! Scenario tests: whole stories driven through the engine, checked against golden event
//! transcripts and against what each endpoint received.

mod common;

use common::*;
use twinhub_core::*;

const P: u8 = 0;
const S: u8 = 1;

#[test]
fn primary_outage_fails_over_then_back() {
    let config = two_regions().build().unwrap();
    let outage = (secs(20), secs(80));
    let first_fail = std::cell::Cell::new(None::<u64>);
    let ff = &first_fail;
    let mut h = Harness::new(
        &config,
        Box::new(move |now, tx, _| {
            let down = now >= outage.0 && now < outage.1;
            if tx.endpoint.0 == P && down {
                if ff.get().is_none() {
                    ff.set(Some(now.as_millis()));
                }
                fail(Outcome::Unreachable, 5)
            } else {
                ok(20)
            }
        }),
    );
    h.stream(Duration::from_secs(1), secs(200), |_| Class::Normal);
    h.run_until(secs(230));
    h.check_conservation();
    let s = h.p.stats().clone();
    assert_eq!(s.pending, 0);
    assert_eq!(
        h.unique_delivered(),
        h.accepted,
        "every record reached a region"
    );
    assert_eq!((s.failovers, s.failbacks), (1, 1));
    // Failover inside the recovery-time objective: first delivery to the secondary within
    // 15 s of the first failed send.
    let first_secondary = h.sent.iter().find(|x| x.1 == S).unwrap().0;
    let first_fail = first_fail.get().unwrap();
    assert!(
        first_secondary - first_fail <= 15_000,
        "{first_fail} -> {first_secondary}"
    );
    // No flapping back before the outage ends, and failback after it.
    let back = h
        .events
        .iter()
        .find(|e| matches!(e.1, Event::FailedBack { .. }))
        .unwrap()
        .0;
    assert!(
        (80_000..=80_000 + 30_000 + 31_000).contains(&back),
        "failback at {back}"
    );
    golden("primary_outage", &h.transcript());
}

#[test]
fn link_loss_uses_metered_then_arms_costly_for_critical_only() {
    let mut sat = LinkConfig::new("satellite", Cost::Costly);
    sat.budget = Some(Budget {
        bytes: 600,
        window: Duration::from_days(1),
    });
    sat.arm_after = Duration::from_mins(15);
    let config = two_regions()
        .link(LinkConfig::new("wan", Cost::Free))
        .link(LinkConfig::new("cell", Cost::Metered))
        .link(sat)
        .build()
        .unwrap();
    let (wan, cell, satl) = (LinkId(0), LinkId(1), LinkId(2));
    let mut h = Harness::new(&config, Box::new(|_, _, _| ok(50)));
    // Every 10th record is a critical alarm.
    let class = |n: u64| {
        if n.is_multiple_of(10) {
            Class::Critical
        } else {
            Class::Normal
        }
    };
    h.stream(Duration::from_secs(10), secs(600), class);
    h.p.handle_link(h.now, wan, LinkState::Down);
    h.stream(Duration::from_secs(10), secs(1200), class);
    assert!(
        h.link_records.get(&cell.0).is_some_and(|v| !v.is_empty()),
        "metered carried the traffic"
    );
    assert!(
        !h.link_records.contains_key(&satl.0),
        "satellite untouched while metered works"
    );
    let cell_down_at = h.now;
    h.p.handle_link(h.now, cell, LinkState::Down);
    h.stream(Duration::from_secs(10), secs(1200 + 1800), class);
    let armed_at = h
        .events
        .iter()
        .find(|e| matches!(e.1, Event::LinkArmed { .. }))
        .unwrap()
        .0;
    assert_eq!(
        armed_at,
        (cell_down_at + Duration::from_mins(15)).as_millis()
    );
    let over_sat = &h.link_records[&satl.0];
    assert!(!over_sat.is_empty());
    assert!(
        over_sat.iter().all(|(_, c)| *c == Class::Critical),
        "only critical over the satellite"
    );
    assert!(
        h.sent
            .iter()
            .filter(|x| x.2 == satl.0)
            .all(|x| x.0 >= armed_at)
    );
    assert!(
        h.p.stats().link_bytes[2] <= 600,
        "budget kept: {}",
        h.p.stats().link_bytes[2]
    );
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e.1, Event::BudgetExhausted { .. }))
    );
    h.p.handle_link(h.now, wan, LinkState::Up);
    h.run_until(h.now + Duration::from_secs(120));
    h.check_conservation();
    assert_eq!(
        h.p.stats().pending,
        0,
        "everything delivered once the WAN is back"
    );
    assert_eq!(h.unique_delivered(), h.accepted);
    golden("link_loss_costly", &h.transcript());
}

#[test]
fn active_active_splits_evenly_and_moves_share_on_failure() {
    let config = two_regions()
        .routing(Routing::ActiveActive)
        .build()
        .unwrap();
    let fail_from = secs(10_100);
    let mut h = Harness::new(
        &config,
        Box::new(move |now, tx, _| {
            if tx.endpoint.0 == S && now >= fail_from && now < fail_from + Duration::from_secs(60) {
                fail(Outcome::ServerError, 5)
            } else {
                ok(10)
            }
        }),
    );
    for _ in 0..10_000 {
        let t = h.now + Duration::from_secs(1);
        h.run_until(t);
        h.enqueue(b"x", Class::Normal);
    }
    h.run_until(h.now + Duration::from_secs(5));
    let by = h.p.stats().delivered_by_endpoint;
    let share = by[0] as f64 / (by[0] + by[1]) as f64;
    assert!((share - 0.5).abs() <= 0.02, "primary share {share}");
    // Secondary fails: its share moves to the primary.
    h.stream(Duration::from_secs(1), fail_from, |_| Class::Normal);
    let before = h.p.stats().delivered_by_endpoint;
    h.stream(
        Duration::from_secs(1),
        fail_from + Duration::from_secs(50),
        |_| Class::Normal,
    );
    let after = h.p.stats().delivered_by_endpoint;
    let during = (after[0] - before[0], after[1] - before[1]);
    assert!(
        during.0 > 40 * during.1.max(1) / 2,
        "share moved to the primary: {during:?}"
    );
    assert_eq!(h.p.stats().failovers, 1);
    h.stream(
        Duration::from_secs(1),
        fail_from + Duration::from_secs(300),
        |_| Class::Normal,
    );
    h.check_conservation();
    assert_eq!(h.p.stats().failbacks, 1);
    let end = h.p.stats().delivered_by_endpoint;
    assert!(end[1] > after[1] + 50, "secondary takes its share again");
}

#[test]
fn canary_weights_and_drain() {
    let config = two_regions()
        .routing(Routing::ActiveActive)
        .build()
        .unwrap();
    let mut h = Harness::new(&config, Box::new(|_, _, _| ok(10)));
    h.p.set_weights(&[9, 1]).unwrap();
    for _ in 0..1000 {
        h.enqueue(b"x", Class::Normal);
        let t = h.now + Duration::from_millis(100);
        h.run_until(t);
    }
    assert_eq!(h.p.stats().delivered_by_endpoint, [900, 100, 0, 0]);
    h.p.drain(EndpointId(0)).unwrap();
    for _ in 0..100 {
        h.enqueue(b"x", Class::Normal);
        let t = h.now + Duration::from_millis(100);
        h.run_until(t);
    }
    assert_eq!(h.p.stats().delivered_by_endpoint, [900, 200, 0, 0]);
    assert_eq!(h.p.set_weights(&[0, 0]), Err(ControlError::BadWeights));
    assert_eq!(h.p.set_weights(&[1]), Err(ControlError::BadWeights));
    assert_eq!(h.p.drain(EndpointId(3)), Err(ControlError::NoSuch));
}

#[test]
fn throttling_backs_off_without_failover() {
    let config = two_regions().build().unwrap();
    let mut h = Harness::new(
        &config,
        Box::new(|now, tx, _| {
            if tx.endpoint.0 == P && now >= secs(10) && now < secs(40) {
                fail(
                    Outcome::Throttled {
                        retry_after: Some(Duration::from_secs(3)),
                    },
                    5,
                )
            } else {
                ok(10)
            }
        }),
    );
    h.stream(Duration::from_secs(1), secs(60), |_| Class::Normal);
    h.run_until(secs(70));
    h.check_conservation();
    assert_eq!(h.p.stats().failovers, 0, "{:?}", h.events);
    assert!(
        h.sent.iter().all(|x| x.1 == P),
        "nothing went to the secondary"
    );
    // While throttled, sends to the primary are spaced by at least retry_after.
    let times: Vec<u64> = h
        .sent
        .iter()
        .filter(|x| x.0 >= 10_000 && x.0 < 40_000)
        .map(|x| x.0)
        .collect();
    assert!(times.windows(2).all(|w| w[1] - w[0] >= 3_000), "{times:?}");
    assert_eq!(h.p.stats().pending, 0);
    assert_eq!(h.unique_delivered(), h.accepted);
}

#[test]
fn persistent_throttling_eventually_fails_over() {
    let config = two_regions().build().unwrap();
    let mut h = Harness::new(
        &config,
        Box::new(|_, tx, _| {
            if tx.endpoint.0 == P {
                fail(Outcome::Throttled { retry_after: None }, 5)
            } else {
                ok(10)
            }
        }),
    );
    h.stream(Duration::from_secs(1), secs(120), |_| Class::Normal);
    let down = h
        .events
        .iter()
        .find(|e| {
            matches!(
                e.1,
                Event::RouteDown {
                    cause: DownCause::Throttled,
                    ..
                }
            )
        })
        .expect("throttled route taken down");
    assert!(
        down.0 >= 60_000,
        "not before throttle_failover_after: {}",
        down.0
    );
    assert_eq!(h.p.stats().failovers, 1);
}

#[test]
fn unauthorized_primary_fails_over_and_raises_auth_failed() {
    let config = two_regions().build().unwrap();
    let mut h = Harness::new(
        &config,
        Box::new(|_, tx, _| {
            if tx.endpoint.0 == P {
                fail(Outcome::Unauthorized, 5)
            } else {
                ok(10)
            }
        }),
    );
    h.stream(Duration::from_secs(1), secs(30), |_| Class::Normal);
    h.run_until(secs(35));
    h.check_conservation();
    assert_eq!(h.p.stats().pending, 0);
    assert_eq!(h.unique_delivered(), h.accepted);
    golden("unauthorized", &h.transcript());
}

#[test]
fn blackhole_stall_fails_over_within_rto() {
    let config = two_regions().build().unwrap();
    let mut h = Harness::new(
        &config,
        Box::new(|now, tx, _| {
            if tx.endpoint.0 == P && now >= secs(10) {
                Reply::Never
            } else {
                ok(10)
            }
        }),
    );
    h.stream(Duration::from_secs(1), secs(60), |_| Class::Normal);
    h.run_until(secs(80));
    h.check_conservation();
    let first_stalled = h.sent.iter().find(|x| x.1 == P && x.0 >= 10_000).unwrap().0;
    let first_secondary = h.sent.iter().find(|x| x.1 == S).unwrap().0;
    assert!(
        first_secondary - first_stalled <= 15_000,
        "{first_stalled} -> {first_secondary}"
    );
    assert_eq!(h.unique_delivered(), h.accepted);
    assert!(
        h.p.stats().possible_duplicates > 0,
        "abandoned sends are counted as possible duplicates"
    );
}

#[test]
fn poison_record_is_dropped_without_touching_health() {
    let config = two_regions().build().unwrap();
    // The hub refuses any publication holding a payload that starts with 0xEE: a batch as
    // malformed, a lone record as too large.
    let mut h = Harness::new(
        &config,
        Box::new(|_, tx, frames| {
            if frames.iter().any(|f| f.payload.first() == Some(&0xEE)) {
                let reason = if tx.records == 1 {
                    RejectReason::TooLarge
                } else {
                    RejectReason::Malformed
                };
                fail(Outcome::Rejected(reason), 5)
            } else {
                ok(10)
            }
        }),
    );
    // Three records in one batch, the middle one poison: the batch is rejected, the records
    // are resent one at a time, the poison one is dropped and the others delivered.
    h.p.enqueue(h.now, &[1; 10], Class::Normal).unwrap();
    let poison = h.p.enqueue(h.now, &[0xEE; 40], Class::Normal).unwrap();
    h.p.enqueue(h.now, &[3; 10], Class::Normal).unwrap();
    let health = |h: &Harness<'_, '_>| -> Vec<RouteHealth> {
        (0..2)
            .map(|e| h.p.route_health(EndpointId(e), LinkId(0)))
            .collect()
    };
    let before = health(&h);
    h.run_until(secs(5));
    assert_eq!(before, health(&h), "health untouched");
    assert_eq!(h.sent[0].3, 3, "first transmit was the whole batch");
    h.check_conservation();
    let s = h.p.stats();
    assert_eq!((s.delivered, s.dropped.too_large, s.failovers), (2, 1, 0));
    assert!(h.events.iter().any(|e| e.1
        == Event::Dropped {
            id: poison.clone(),
            reason: DropReason::TooLarge
        }));
}

#[test]
fn expired_records_are_dropped_and_counted() {
    let config = two_regions()
        .ttl(Class::Bulk, Duration::from_secs(60))
        .build()
        .unwrap();
    let mut h = Harness::new(&config, Box::new(|_, _, _| fail(Outcome::Unreachable, 5)));
    h.enqueue(b"bulk", Class::Bulk);
    h.enqueue(b"normal", Class::Normal);
    h.run_until(secs(120));
    h.check_conservation();
    let s = h.p.stats();
    assert_eq!((s.dropped.expired, s.pending), (1, 1));
    assert!(h.events.iter().any(|e| matches!(
        e.1,
        Event::Dropped {
            reason: DropReason::Expired,
            ..
        }
    )));
}

#[test]
fn full_store_evicts_lowest_class_or_rejects() {
    let config = two_regions().build().unwrap();
    let mut p = Engine::new(&config, RamStore::<512>::new(), Instant::ZERO, 1, 1);
    let crit = p
        .enqueue(Instant::ZERO, &[0; 100], Class::Critical)
        .unwrap();
    let mut bulk = vec![];
    while let Ok(id) = p.enqueue(Instant::ZERO, &[1; 100], Class::Bulk) {
        bulk.push(id);
        if p.stats().dropped.evicted > 0 {
            break;
        }
    }
    assert_eq!(p.stats().dropped.evicted, 1);
    let ev = std::iter::from_fn(|| p.poll_event()).collect::<Vec<_>>();
    assert_eq!(
        ev,
        vec![Event::Dropped {
            id: bulk[0].clone(),
            reason: DropReason::Evicted
        }]
    );
    // A critical record evicts bulk ones, never the other way round.
    p.enqueue(Instant::ZERO, &[2; 300], Class::Critical)
        .unwrap();
    assert!(p.stats().dropped.evicted >= 2);
    let s = p.stats().clone();
    assert_eq!(s.accepted, s.delivered + s.pending + s.dropped.total());
    assert_eq!(
        p.enqueue(Instant::ZERO, &[9; 300], Class::Bulk),
        Err(EnqueueError::Full)
    );
    assert_eq!(
        p.stats().accepted,
        s.accepted,
        "a refused record changes nothing"
    );
    let _ = crit;

    let reject = two_regions().on_full(OnFull::Reject).build().unwrap();
    let mut p = Engine::new(&reject, RamStore::<256>::new(), Instant::ZERO, 1, 1);
    while p.enqueue(Instant::ZERO, &[1; 50], Class::Bulk).is_ok() {}
    assert_eq!(
        p.enqueue(Instant::ZERO, &[1; 50], Class::Critical),
        Err(EnqueueError::Full)
    );
    assert_eq!(p.stats().dropped.total(), 0);
}

#[test]
fn oversized_records_are_refused_at_enqueue_by_the_smallest_endpoint() {
    let mut small = EndpointConfig::new("secondary");
    small.max_record_bytes = 1000;
    let config = Config::builder("d")
        .endpoint(EndpointConfig::new("primary"))
        .endpoint(small)
        .build()
        .unwrap();
    let mut p = Engine::new(&config, RamStore::<4096>::new(), Instant::ZERO, 1, 1);
    assert_eq!(
        p.enqueue(Instant::ZERO, &[0; 1001], Class::Normal),
        Err(EnqueueError::TooLarge { limit: 1000 })
    );
    p.enqueue(Instant::ZERO, &[0; 1000], Class::Normal).unwrap();
    let big = two_regions().build().unwrap();
    let mut p = Engine::new(&big, RamStore::<512>::new(), Instant::ZERO, 1, 1);
    assert!(matches!(
        p.enqueue(Instant::ZERO, &[0; 600], Class::Normal),
        Err(EnqueueError::TooLarge { .. })
    ));
    assert_eq!(p.stats().accepted, 0);
}

#[test]
fn mirror_sends_every_record_to_every_endpoint() {
    let config = two_regions().routing(Routing::Mirror).build().unwrap();
    let mut h = Harness::new(
        &config,
        Box::new(|now, tx, _| {
            if tx.endpoint.0 == S && now >= secs(10) && now < secs(30) {
                fail(Outcome::Unreachable, 5)
            } else {
                ok(10)
            }
        }),
    );
    h.stream(Duration::from_secs(1), secs(60), |_| Class::Normal);
    h.run_until(secs(200));
    h.check_conservation();
    assert_eq!(h.p.stats().pending, 0);
    assert_eq!(
        h.arrivals[&P]
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        h.accepted
    );
    assert_eq!(
        h.arrivals[&S]
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        h.accepted
    );
    assert_eq!(h.p.stats().delivered, h.accepted.len() as u64);
}

#[test]
fn primary_flapping_at_1hz_does_not_flap_producers() {
    let config = two_regions().build().unwrap();
    let mut h = Harness::new(
        &config,
        Box::new(|now, tx, _| {
            let t = now.as_millis();
            let flapping = (10_000..70_000).contains(&t);
            if tx.endpoint.0 == P && flapping && (t / 500) % 2 == 1 {
                fail(Outcome::Unreachable, 5)
            } else {
                ok(10)
            }
        }),
    );
    h.stream(Duration::from_millis(200), secs(70), |_| Class::Normal);
    let s = h.p.stats();
    assert!(
        s.failovers + s.failbacks <= 6,
        "{} failovers, {} failbacks in 60 s of 1 Hz flapping",
        s.failovers,
        s.failbacks
    );
    h.run_until(secs(120));
    h.check_conservation();
    assert_eq!(h.unique_delivered(), h.accepted);
}

#[test]
fn app_reported_link_down_stops_probes_until_up() {
    let config = two_regions()
        .link(LinkConfig::new("wan", Cost::Free))
        .build()
        .unwrap();
    let mut h = Harness::new(&config, Box::new(|_, _, _| ok(10)));
    h.p.handle_link(h.now, LinkId(0), LinkState::Down);
    h.stream(Duration::from_secs(1), secs(100), |_| Class::Normal);
    assert!(h.sent.is_empty(), "nothing sent over a link reported down");
    assert_eq!(h.p.stats().pending, h.accepted.len() as u64);
    h.p.handle_link(h.now, LinkId(0), LinkState::Up);
    h.run_until(secs(130));
    assert_eq!(h.p.stats().pending, 0);
    h.check_conservation();
}

#[test]
fn recovered_store_records_keep_their_ids_and_epoch_moves_on() {
    let config = two_regions().build().unwrap();
    let mut store = RamStore::<4096>::new();
    let meta = RecordMeta {
        epoch: 5,
        seq: 9,
        class: Class::Normal,
        enqueued_at: Instant::ZERO,
    };
    store.append(&meta, b"old").unwrap();
    let mut p = Engine::new(&config, store, Instant::from_millis(10), 3, 1);
    assert_eq!(p.epoch(), 6, "epoch raised past the recovered records");
    assert_eq!(p.stats().accepted, 1);
    let mut buf = [0u8; 1024];
    let tx = p
        .poll_transmit(Instant::from_millis(10), &mut buf)
        .unwrap()
        .unwrap();
    let f = tx.frames(&buf).next().unwrap().unwrap();
    assert_eq!((f.meta.epoch, f.meta.seq, f.payload), (5, 9, &b"old"[..]));
    let id = p
        .enqueue(Instant::from_millis(10), b"new", Class::Normal)
        .unwrap();
    assert_eq!((id.epoch, id.seq), (6, 0));
}

#[test]
fn no_metered_probes_while_a_free_route_to_the_other_region_works() {
    let config = two_regions()
        .link(LinkConfig::new("wan", Cost::Free))
        .link(LinkConfig::new("cell", Cost::Metered))
        .build()
        .unwrap();
    // The primary fails over the WAN only; cellular would reach it, but the secondary over
    // the WAN is cheaper, so the primary's cellular route is never worth a byte.
    let mut h = Harness::new(
        &config,
        Box::new(|_, tx, _| {
            if tx.endpoint.0 == P && tx.link.0 == 0 {
                fail(Outcome::Unreachable, 5)
            } else {
                ok(10)
            }
        }),
    );
    h.stream(Duration::from_secs(1), secs(300), |_| Class::Normal);
    h.run_until(secs(320));
    h.check_conservation();
    assert_eq!(h.unique_delivered(), h.accepted);
    assert!(
        !h.link_records.contains_key(&1),
        "metered link used: {:?}",
        h.link_records.get(&1).map(Vec::len)
    );
    assert_eq!(h.p.stats().link_bytes[1], 0);
}

/// A reboot does not hand a costly link a fresh budget: the spend carried over with
/// `link_spend` / `restore_link_spend` holds the new engine to what was left of it.
#[test]
fn budget_spent_before_a_reboot_stays_spent() {
    let mut sat = LinkConfig::new("satellite", Cost::Costly);
    sat.budget = Some(Budget {
        bytes: 300,
        window: Duration::from_hours(1),
    });
    sat.arm_after = Duration::ZERO;
    let config = Config::builder("sensor-9")
        .endpoint(EndpointConfig::new("hub"))
        .link(sat)
        .build()
        .unwrap();
    let link = LinkId(0);
    let mut buf = vec![0u8; 1 << 16];
    // Sends one critical record a minute from `from` to `to` and delivers whatever goes;
    // returns the times (ms) at which something went out.
    let run = |p: &mut Engine<RamStore<8192>, &Config>, from: u64, to: u64, buf: &mut [u8]| {
        let mut went = Vec::new();
        for m in from..to {
            let now = Instant::from_millis(m * 60_000);
            p.handle_timeout(now);
            let _ = p.enqueue(now, &[7; 40], Class::Critical);
            while let Some(tx) = p.poll_transmit(now, buf).unwrap() {
                went.push(now.as_millis());
                p.handle_outcome(now, tx.id, Outcome::Delivered);
            }
        }
        went
    };
    let mut before = Engine::new(&config, RamStore::new(), Instant::ZERO, 1, 1);
    let went = run(&mut before, 0, 10, &mut buf);
    assert!(!went.is_empty(), "the link was used before the reboot");
    let spend = before.link_spend(link).unwrap();
    assert_eq!(spend.spent, before.stats().link_bytes[0]);
    assert_eq!(spend.window_elapsed, Duration::from_mins(9));
    let left = 300 - spend.spent;

    // The device reboots: its clock starts again at zero.
    let boot = |restore: bool| {
        let mut p = Engine::new(&config, RamStore::<8192>::new(), Instant::ZERO, 2, 2);
        if restore {
            p.restore_link_spend(Instant::ZERO, link, spend).unwrap();
        }
        p
    };
    let mut after = boot(true);
    let went = run(&mut after, 0, 50, &mut buf);
    assert!(
        after.stats().link_bytes[0] <= left,
        "{} bytes after the reboot, {left} were left",
        after.stats().link_bytes[0]
    );
    assert!(went.len() < 50, "the budget ran out before the window did");
    // Once the window has ended (never earlier than it would have), the budget is whole.
    let later = run(&mut after, 60, 70, &mut buf);
    assert!(!later.is_empty(), "a new window brings a new budget");
    // Without the carried spend the same reboot would have spent the budget again.
    let mut forgetful = boot(false);
    run(&mut forgetful, 0, 50, &mut buf);
    assert!(forgetful.stats().link_bytes[0] > left);
    // Unknown links and links without a budget are refused.
    assert_eq!(
        after.restore_link_spend(Instant::ZERO, LinkId(3), spend),
        Err(ControlError::NoSuch)
    );
    assert!(after.link_spend(LinkId(3)).is_none());
}

/// A transmit's deadline that the engine's clock has already passed (another call at or
/// after it came first, as a device's main loop or a busy driver does) is still reported
/// as due, so the transmit times out instead of staying in flight for ever.
#[test]
fn a_deadline_passed_by_another_call_is_still_due() {
    let config = two_regions().build().unwrap();
    let mut p = Engine::new(&config, RamStore::<4096>::new(), Instant::ZERO, 1, 3);
    let mut buf = [0u8; 4096];
    p.enqueue(Instant::ZERO, b"a", Class::Normal).unwrap();
    let tx = p.poll_transmit(Instant::ZERO, &mut buf).unwrap().unwrap();
    let timeout = p.poll_timeout().expect("the transmit has a deadline");
    // The next reading is enqueued at the deadline, before the timer is looked at.
    p.enqueue(timeout, b"b", Class::Normal).unwrap();
    let due = p.poll_timeout().expect("the passed deadline is still due");
    assert!(due <= timeout, "due at {due:?}, deadline {timeout:?}");
    p.handle_timeout(timeout);
    // The stalled transmit is over: its record goes out again.
    let again = p
        .poll_transmit(timeout, &mut buf)
        .unwrap()
        .expect("sent again");
    assert_ne!(again.id, tx.id);
    // And once handled, nothing is due at `now` any more: no busy loop.
    assert!(p.poll_timeout().is_none_or(|t| t > timeout));
}

#[test]
fn draining_a_mirror_endpoint_completes_what_the_others_have() {
    let config = two_regions().routing(Routing::Mirror).build().unwrap();
    let mut p = Engine::new(&config, RamStore::<4096>::new(), Instant::ZERO, 1, 7);
    let now = Instant::ZERO;
    for _ in 0..3 {
        p.enqueue(now, b"r", Class::Normal).unwrap();
    }
    let mut buf = [0u8; 1024];
    // The primary acknowledges everything; the secondary never answers.
    let mut to_secondary = None;
    while let Some(tx) = p.poll_transmit(now, &mut buf).unwrap() {
        if tx.endpoint == EndpointId(0) {
            p.handle_outcome(now, tx.id, Outcome::Delivered);
        } else {
            to_secondary = Some(tx);
        }
    }
    assert!(to_secondary.is_some(), "the secondary got its own transmit");
    assert_eq!((p.stats().delivered, p.stats().pending), (0, 3));
    // Without the secondary, the primary's acknowledgements are enough, once the
    // secondary's transmit is settled: here it fails.
    p.drain(EndpointId(1)).unwrap();
    assert_eq!((p.stats().delivered, p.stats().pending), (0, 3));
    p.handle_outcome(now, to_secondary.unwrap().id, Outcome::Unreachable);
    assert_eq!((p.stats().delivered, p.stats().pending), (3, 0));
    assert_eq!(p.poll_transmit(now, &mut buf), Ok(None));
}

#[test]
fn draining_a_mirror_endpoint_with_nothing_in_flight_completes_at_once() {
    let config = two_regions().routing(Routing::Mirror).build().unwrap();
    let mut p = Engine::new(&config, RamStore::<4096>::new(), Instant::ZERO, 1, 7);
    let now = Instant::ZERO;
    p.enqueue(now, b"r", Class::Normal).unwrap();
    let mut buf = [0u8; 1024];
    let tx = p.poll_transmit(now, &mut buf).unwrap().unwrap();
    assert_eq!(tx.endpoint, EndpointId(0));
    p.handle_outcome(now, tx.id, Outcome::Delivered);
    p.drain(EndpointId(1)).unwrap();
    assert_eq!((p.stats().delivered, p.stats().pending), (1, 0));
}

#[test]
fn a_rejected_first_record_of_an_epoch_is_dropped_behind_an_older_epochs_record() {
    let mut primary = EndpointConfig::new("primary");
    primary.max_batch_records = 1;
    let config = Config::builder("sensor-1")
        .endpoint(primary)
        .build()
        .unwrap();
    let mut store = RamStore::<4096>::new();
    let old = RecordMeta {
        epoch: 5,
        seq: 9,
        class: Class::Normal,
        enqueued_at: Instant::ZERO,
    };
    store.append(&old, b"old").unwrap();
    let mut p = Engine::new(&config, store, Instant::ZERO, 6, 1);
    let id = p.enqueue(Instant::ZERO, b"poison", Class::Normal).unwrap();
    assert_eq!((id.epoch, id.seq), (6, 0));
    let mut buf = [0u8; 1024];
    let first = p.poll_transmit(Instant::ZERO, &mut buf).unwrap().unwrap();
    let second = p.poll_transmit(Instant::ZERO, &mut buf).unwrap().unwrap();
    assert_eq!(
        second.frames(&buf).next().unwrap().unwrap().payload,
        b"poison"
    );
    p.handle_outcome(
        Instant::ZERO,
        second.id,
        Outcome::Rejected(RejectReason::Malformed),
    );
    assert_eq!(
        p.stats().dropped.malformed,
        1,
        "the poison record is dropped"
    );
    p.handle_outcome(Instant::ZERO, first.id, Outcome::Delivered);
    assert_eq!((p.stats().delivered, p.stats().pending), (1, 0));
}

/// A buffer too small for the next record is an error naming the size needed, not a
/// silent `None` that would leave the record to wait for its TTL; nothing is sent or
/// marked, and a buffer of that size gets it out. A buffer that holds some records but
/// not a whole batch still just makes smaller batches.
#[test]
fn a_buffer_too_small_for_the_next_record_is_an_error_naming_the_size() {
    let config = Config::builder("d")
        .endpoint(EndpointConfig::new("primary"))
        .build()
        .unwrap();
    let mut p = Engine::new(&config, RamStore::<4096>::new(), Instant::ZERO, 1, 7);
    let meta = RecordMeta {
        epoch: 1,
        seq: 0,
        class: Class::Normal,
        enqueued_at: Instant::ZERO,
    };
    let frame_len = frame::encoded_len(&meta, 200);
    p.enqueue(Instant::ZERO, &[1; 200], Class::Normal).unwrap();
    p.enqueue(Instant::ZERO, &[2; 200], Class::Normal).unwrap();

    let mut buf = [0u8; 1024];
    let err = p.poll_transmit(Instant::ZERO, &mut buf[..frame_len - 1]);
    assert_eq!(
        err,
        Err(TransmitError::BufferTooSmall { needed: frame_len })
    );
    assert!(
        err.unwrap_err()
            .to_string()
            .contains(&frame_len.to_string())
    );
    assert_eq!(p.inflight_records(), 0, "nothing marked in flight");
    assert_eq!(p.stats().link_bytes[0], 0, "nothing charged");
    assert_eq!(p.poll_event(), None);

    // Room for one record but not both: a batch of one, then the other.
    let tx = p
        .poll_transmit(Instant::ZERO, &mut buf[..frame_len + 10])
        .unwrap()
        .expect("one record fits");
    assert_eq!((tx.records, tx.len), (1, frame_len));
    p.handle_outcome(Instant::ZERO, tx.id, Outcome::Delivered);
    let tx = p.poll_transmit(Instant::ZERO, &mut buf).unwrap().unwrap();
    assert_eq!(tx.records, 1);
    p.handle_outcome(Instant::ZERO, tx.id, Outcome::Delivered);
    assert_eq!(p.stats().delivered, 2);
    assert_eq!(p.poll_transmit(Instant::ZERO, &mut [0u8; 1]), Ok(None));
}
