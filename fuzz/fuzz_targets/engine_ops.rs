#![no_main]
//! Random operation sequences never panic the engine and never break conservation:
//! accepted == delivered + pending + dropped after every step.
use libfuzzer_sys::fuzz_target;
use twinhub_core::*;

fuzz_target!(|data: &[u8]| {
    let mut sat = LinkConfig::new("sat", Cost::Costly);
    sat.budget = Some(Budget {
        bytes: 500,
        window: Duration::from_secs(600),
    });
    sat.arm_after = Duration::from_secs(30);
    let routing = match data.first().map(|b| b % 3) {
        Some(0) => Routing::ActivePassive,
        Some(1) => Routing::ActiveActive,
        _ => Routing::Mirror,
    };
    let config = Config::builder("fuzz")
        .routing(routing)
        .endpoint(EndpointConfig::new("a"))
        .endpoint(EndpointConfig::new("b"))
        .link(LinkConfig::new("wan", Cost::Free))
        .link(LinkConfig::new("cell", Cost::Metered))
        .link(sat)
        .build()
        .unwrap();
    let mut p = Engine::new(&config, RamStore::<1024>::new(), Instant::ZERO, 1, 7);
    let mut now = Instant::ZERO;
    let mut buf = [0u8; 4096];
    let mut sent: Vec<TransmitId> = Vec::new();
    for op in data.chunks_exact(3).skip(1) {
        let (a, b) = (op[1], op[2]);
        match op[0] % 7 {
            0 => {
                let _ = p.enqueue(now, &vec![a; b as usize], Class::ALL[(a % 3) as usize]);
            }
            1 => {
                while let Ok(Some(tx)) = p.poll_transmit(now, &mut buf) {
                    sent.push(tx.id);
                }
            }
            2 if !sent.is_empty() => {
                let id = sent.remove(a as usize % sent.len());
                let outcome = match b % 9 {
                    0..=2 => Outcome::Delivered,
                    3 => Outcome::Timeout,
                    4 => Outcome::Unreachable,
                    5 => Outcome::ServerError,
                    6 => Outcome::Throttled {
                        retry_after: Some(Duration::from_millis(u64::from(a) * 10)),
                    },
                    7 => Outcome::Unauthorized,
                    _ => Outcome::Rejected(RejectReason::TooLarge),
                };
                p.handle_outcome(now, id, outcome);
            }
            3 => p.handle_link(
                now,
                LinkId(a % 4),
                if b % 2 == 0 {
                    LinkState::Up
                } else {
                    LinkState::Down
                },
            ),
            4 => now = now + Duration::from_millis(u64::from(a) * u64::from(b) * 10),
            5 => p.handle_timeout(now),
            _ => {
                let _ = p.set_weights(&[u16::from(a), u16::from(b)]);
                let _ = if a % 2 == 0 {
                    p.drain(EndpointId(b % 3))
                } else {
                    p.undrain(EndpointId(b % 3))
                };
            }
        }
        while p.poll_event().is_some() {}
        let s = p.stats();
        assert_eq!(s.accepted, s.delivered + s.pending + s.dropped.total());
        if let Some(t) = p.poll_timeout() {
            assert!(t > Instant::ZERO);
        }
    }
});
