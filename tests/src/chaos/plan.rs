//! What each scenario does along a stream, and which rows have no counterpart.

use std::net::IpAddr;
use std::time::Duration;

use twinhub_emulator::Fault;

/// How long each scenario's phases last.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scale {
    /// Length of a stream with one fault in its middle third.
    pub(super) stream: Duration,
    /// Length of the 1 Hz flapping.
    pub(super) flap: Duration,
    /// Length of the outage of both regions.
    pub(super) both_down: Duration,
    /// Producer processes killed with SIGKILL.
    pub(super) restarts: usize,
    /// Stream rate, records per second.
    pub(super) rate: u32,
}

impl Scale {
    /// The short version (`--short`) or the full one.
    pub(super) fn new(short: bool) -> Scale {
        if short {
            Scale {
                stream: Duration::from_secs(9),
                flap: Duration::from_secs(8),
                both_down: Duration::from_secs(8),
                restarts: 20,
                rate: 200,
            }
        } else {
            Scale {
                stream: Duration::from_secs(90),
                flap: Duration::from_secs(60),
                both_down: Duration::from_secs(120),
                restarts: 30,
                rate: 200,
            }
        }
    }
}

/// A fault action at a point of a stream.
#[derive(Debug, Clone, Copy)]
pub(super) enum Action {
    Fault(usize, Fault),
    FaultFor(usize, IpAddr, Fault),
    Kill(usize),
    Restart(usize),
}

/// A stream and the faults applied along it.
pub(super) struct Plan {
    pub(super) length: Duration,
    pub(super) actions: Vec<(Duration, Action)>,
    /// Extra producer configuration (links).
    pub(super) links: &'static str,
    pub(super) note: &'static str,
}

impl Plan {
    /// The plan of a stream scenario; none for a scenario that is not a stream.
    pub(super) fn for_scenario(scenario: &str, scale: Scale) -> Option<Plan> {
        let s = scale.stream;
        let (a, b) = (s / 3, s * 2 / 3);
        let window = |fault| {
            vec![
                (a, Action::Fault(0, fault)),
                (b, Action::Fault(0, Fault::Up)),
            ]
        };
        let plan = |length, actions| Plan {
            length,
            actions,
            links: "",
            note: "",
        };
        Some(match scenario {
            "kill" => plan(s, vec![(a, Action::Kill(0)), (b, Action::Restart(0))]),
            "flap" => {
                let start = Duration::from_secs(2);
                plan(
                    start + scale.flap + Duration::from_secs(4),
                    vec![
                        (start, Action::Fault(0, Fault::Flap { period_ms: 500 })),
                        (start + scale.flap, Action::Fault(0, Fault::Up)),
                    ],
                )
            }
            "blackhole" => plan(s, window(Fault::Blackhole)),
            "503" => plan(s, window(Fault::Http503)),
            "429" => plan(s, window(Fault::Http429 { retry_after_s: 1 })),
            "both-down" => {
                let start = Duration::from_secs(2);
                let end = start + scale.both_down;
                plan(
                    end + Duration::from_secs(4),
                    vec![
                        (start, Action::Fault(0, Fault::Down)),
                        (start, Action::Fault(1, Fault::Down)),
                        (end, Action::Fault(0, Fault::Up)),
                        (end, Action::Fault(1, Fault::Up)),
                    ],
                )
            }
            "wan-down" => {
                let wan: IpAddr = [127, 0, 0, 2].into();
                // Telling "link down" from "region down" takes failures on both regions
                // first: the WAN stays down at least 6 s so the cell link gets its turn.
                let s = s.max(Duration::from_secs(18));
                let (a, b) = (s / 3, s * 2 / 3);
                Plan {
                    length: s,
                    actions: vec![
                        (a, Action::FaultFor(0, wan, Fault::Down)),
                        (a, Action::FaultFor(1, wan, Fault::Down)),
                        (b, Action::FaultFor(0, wan, Fault::Up)),
                        (b, Action::FaultFor(1, wan, Fault::Up)),
                    ],
                    links: "[[link]]\nname = \"wan\"\ncost = \"free\"\nbind = \"127.0.0.2\"\n\
                            [[link]]\nname = \"cell\"\ncost = \"metered\"\nbind = \"127.0.0.3\"\n",
                    note: "cell",
                }
            }
            _ => return None,
        })
    }
}

/// Why a scenario has no counterpart over a protocol, if it has none.
pub(super) fn not_applicable(scenario: &str, protocol: &str) -> Option<String> {
    let name = match protocol {
        "mqtt" => "MQTT",
        "kafka" => "Kafka",
        _ => return None,
    };
    match scenario {
        "503" | "429" => Some(format!(
            "n/a: HTTP status storms have no {name} counterpart"
        )),
        "wan-down" if protocol == "kafka" => Some(
            "n/a: a mock cluster cannot refuse one source address while it serves another".into(),
        ),
        _ => None,
    }
}
