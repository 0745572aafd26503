//! A device's day, told by the engine: the primary region goes dark, the device fails over
//! to the secondary over its free WAN, the WAN dies too, cellular carries on, cellular dies,
//! and only critical alarms go over the satellite, within budget. Everything heals and the
//! device fails back. Run with `cargo run --release -p twinhub-core --example outage`.

use twinhub_core::*;

/// When each fault is on, in simulated seconds.
struct World {
    primary_down: (u64, u64),
    wan_down: (u64, u64),
    cell_down: (u64, u64),
}

impl World {
    fn outcome(&self, t: u64, tx: &Transmit) -> Outcome {
        let within = |(a, b): (u64, u64)| t >= a && t < b;
        let link_down = match tx.link.0 {
            0 => within(self.wan_down),
            1 => within(self.cell_down),
            _ => false,
        };
        if link_down || (tx.endpoint.0 == 0 && within(self.primary_down)) {
            Outcome::Unreachable
        } else {
            Outcome::Delivered
        }
    }
}

fn main() {
    let mut sat = LinkConfig::new("satellite", Cost::Costly);
    sat.budget = Some(Budget {
        bytes: 4 * 1024,
        window: Duration::from_days(1),
    });
    sat.arm_after = Duration::from_mins(10);
    let config = Config::builder("sensor-0001")
        .endpoint(EndpointConfig::new("primary"))
        .endpoint(EndpointConfig::new("secondary"))
        .link(LinkConfig::new("wan", Cost::Free))
        .link(LinkConfig::new("cell", Cost::Metered))
        .link(sat)
        .build()
        .expect("valid config");
    let world = World {
        primary_down: (600, 2400),
        wan_down: (1200, 4800),
        cell_down: (1800, 4200),
    };
    let name = |e: EndpointId| config.endpoints()[e.0 as usize].name.as_str();
    let link = |l: LinkId| config.links()[l.0 as usize].name.as_str();

    let mut p = Engine::new(&config, RamStore::<32768>::new(), Instant::ZERO, 1, 2026);
    let mut buf = vec![0u8; 300 * 1024];
    let mut inflight: Vec<(u64, TransmitId, Outcome)> = Vec::new();
    let mut delivered_over = [0u64; 3];
    let end = 3 * 3600;
    for t in 0..end {
        let now = Instant::from_millis(t * 1000);
        // A reading every 30 s; every tenth is a critical alarm.
        if t % 30 == 0 {
            let class = if t % 300 == 0 {
                Class::Critical
            } else {
                Class::Normal
            };
            let reading = format!(
                "{{\"t\":{t},\"temp\":{:.1}}}",
                20.0 + (t % 70) as f64 / 10.0
            );
            p.enqueue(now, reading.as_bytes(), class)
                .expect("room in the outbox");
        }
        // Answers arrive one second after sending.
        for (_, id, outcome) in inflight.iter().filter(|x| x.0 <= t) {
            p.handle_outcome(now, *id, *outcome);
        }
        inflight.retain(|x| x.0 > t);
        p.handle_timeout(now);
        while let Some(tx) = p
            .poll_transmit(now, &mut buf)
            .expect("the buffer holds a batch")
        {
            let outcome = world.outcome(t, &tx);
            if outcome == Outcome::Delivered {
                delivered_over[tx.link.0 as usize] += u64::from(tx.records);
            }
            inflight.push((t + 1, tx.id, outcome));
        }
        while let Some(event) = p.poll_event() {
            let clock = format!("{:02}:{:02}:{:02}", 9 + t / 3600, t / 60 % 60, t % 60);
            match event {
                Event::FailedOver { from, to } => {
                    println!("{clock}  failed over {} -> {}", name(from), name(to))
                }
                Event::FailedBack { from, to } => {
                    println!("{clock}  failed back {} -> {}", name(from), name(to))
                }
                Event::RouteDown {
                    endpoint,
                    link: l,
                    cause,
                } => {
                    println!(
                        "{clock}  route {} via {} down ({cause:?})",
                        name(endpoint),
                        link(l)
                    )
                }
                Event::RouteUp { endpoint, link: l } => {
                    println!("{clock}  route {} via {} up", name(endpoint), link(l))
                }
                Event::LinkDown { link: l } => println!("{clock}  link {} down", link(l)),
                Event::LinkArmed { link: l } => {
                    println!("{clock}  {} armed for critical records", link(l))
                }
                Event::LinkDisarmed { link: l } => println!("{clock}  {} disarmed", link(l)),
                Event::BudgetExhausted { link: l } => {
                    println!("{clock}  {} budget used up for today", link(l))
                }
                other => println!("{clock}  {other:?}"),
            }
        }
    }
    let s = p.stats();
    println!();
    println!(
        "accepted {}  delivered {}  pending {}  dropped {}",
        s.accepted,
        s.delivered,
        s.pending,
        s.dropped.total()
    );
    println!(
        "delivered over wan {}, cell {}, satellite {}",
        delivered_over[0], delivered_over[1], delivered_over[2]
    );
    println!(
        "satellite bytes {} of a {} byte budget",
        s.link_bytes[2],
        4 * 1024
    );
    println!(
        "failovers {}  failbacks {}  possible duplicates {}",
        s.failovers, s.failbacks, s.possible_duplicates
    );
    assert_eq!(
        s.accepted,
        s.delivered + s.pending + s.dropped.total(),
        "nothing lost"
    );
}
