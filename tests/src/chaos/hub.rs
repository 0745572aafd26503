//! A protocol's two hub regions: started, faulted and read back. A new protocol is one
//! more arm in each method here (and its name in [`super::PROTOCOLS`]).

use std::sync::{Arc, Mutex};

use twinhub_emulator::{Emulator, EmulatorConfig, Fault, ProxyConfig};
use twinhub_testkit::{Arrivals, Mosquitto};

use super::kafka::KafkaHub;
use super::plan::Action;
use super::tally::now_ms;

/// Two hub regions of one protocol with a fault switch on each.
pub(super) enum Hub {
    EventHubs(Emulator),
    Kafka(KafkaHub),
    Mqtt {
        brokers: Vec<Mosquitto>,
        proxies: Emulator,
        seen: Vec<Arc<Mutex<Arrivals>>>,
    },
}

pub(super) const REGIONS: [&str; 2] = ["primary", "secondary"];

impl Hub {
    pub(super) async fn start(protocol: &str) -> Result<Hub, String> {
        if protocol == "kafka" {
            return Ok(Hub::Kafka(KafkaHub::start(REGIONS.len()).await?));
        }
        if protocol == "event-hubs" {
            let emu = Emulator::start(EmulatorConfig::with_regions(REGIONS))
                .await
                .map_err(|e| e.to_string())?;
            return Ok(Hub::EventHubs(emu));
        }
        // The primary keeps sessions across a restart, so a record it acked before it was
        // stopped still reaches the consumer.
        let brokers = vec![
            Mosquitto::try_start_persistent()?,
            Mosquitto::try_start_with("allow_anonymous true\n")?,
        ];
        let mut config = EmulatorConfig::empty();
        config.proxies = brokers
            .iter()
            .zip(REGIONS)
            .map(|(b, name)| ProxyConfig {
                name: name.into(),
                upstream: b.addr(),
                port: 0,
            })
            .collect();
        let proxies = Emulator::start(config).await.map_err(|e| e.to_string())?;
        let mut seen = Vec::new();
        for (b, name) in brokers.iter().zip(REGIONS) {
            let s = Arc::new(Mutex::new(Arrivals::default()));
            collect(b.port, name, s.clone()).await?;
            seen.push(s);
        }
        Ok(Hub::Mqtt {
            brokers,
            proxies,
            seen,
        })
    }

    pub(super) fn endpoints_toml(&self) -> String {
        let mut out = String::new();
        for (i, name) in REGIONS.iter().enumerate() {
            let body = match self {
                Hub::EventHubs(emu) => format!(
                    "protocol = \"event-hubs\"\nconnection_string = \"{}\"\n",
                    emu[*name].event_hubs_connection_string()
                ),
                Hub::Mqtt { proxies, .. } => format!(
                    "protocol = \"mqtt\"\nurl = \"mqtt://{}\"\ntopic = \"telemetry/{{device_id}}\"\n",
                    proxies
                        .proxy(REGIONS[i])
                        .map(|p| p.addr().to_string())
                        .unwrap_or_default()
                ),
                Hub::Kafka(k) => k.endpoint_toml(i),
            };
            out.push_str(&format!("[[endpoint]]\nname = \"{name}\"\n{body}"));
        }
        out
    }

    /// Applies a fault; an error says the protocol cannot do it or a broker failed.
    pub(super) fn act(&mut self, action: Action) -> Result<(), String> {
        match (self, action) {
            (Hub::Kafka(k), action) => return k.act(action),
            (Hub::EventHubs(emu), Action::Fault(i, f)) => emu[REGIONS[i]].set_fault(f),
            (Hub::EventHubs(emu), Action::FaultFor(i, ip, f)) => {
                emu[REGIONS[i]].set_fault_for(ip, f)
            }
            // A region's hub killed and started again, as its clients see it.
            (Hub::EventHubs(emu), Action::Kill(i)) => emu[REGIONS[i]].set_fault(Fault::Down),
            (Hub::EventHubs(emu), Action::Restart(i)) => emu[REGIONS[i]].set_fault(Fault::Up),
            (Hub::Mqtt { proxies, .. }, Action::Fault(i, f)) => {
                if let Some(p) = proxies.proxy(REGIONS[i]) {
                    p.switch().set(f);
                }
            }
            (Hub::Mqtt { proxies, .. }, Action::FaultFor(i, ip, f)) => {
                if let Some(p) = proxies.proxy(REGIONS[i]) {
                    p.switch().set_for(ip, f);
                }
            }
            // SIGTERM: mosquitto saves the sessions it holds, as a broker under a service
            // manager is stopped; SIGKILL would lose what it acked but had not written.
            (Hub::Mqtt { brokers, .. }, Action::Kill(i)) => brokers[i].terminate(),
            (Hub::Mqtt { brokers, .. }, Action::Restart(i)) => brokers[i].restart(),
        }
        Ok(())
    }

    /// Whether `action` destroys records the hub acknowledged (a region whose log lives
    /// only in memory): the runner lets the consumers read them first.
    pub(super) fn loses_log(&self, action: &Action) -> bool {
        matches!(self, Hub::Kafka(_)) && KafkaHub::loses_log(action)
    }

    /// How the faults were done, where the plan's words do not say it.
    pub(super) fn note(&self) -> Option<&str> {
        match self {
            Hub::Kafka(k) => k.note(),
            _ => None,
        }
    }

    /// Every id the regions received so far, with arrival times, sorted by time.
    pub(super) fn arrivals(&self) -> Arrivals {
        let mut out = Arrivals::default();
        match self {
            Hub::EventHubs(emu) => {
                for name in REGIONS {
                    for r in emu[name].records() {
                        if let Some(id) = r.message_id {
                            out.arrive(id, r.received_at_ms);
                        }
                    }
                }
            }
            Hub::Kafka(k) => out = k.arrivals(),
            Hub::Mqtt { seen, .. } => {
                for s in seen {
                    out.merge(&s.lock().unwrap_or_else(|e| e.into_inner()));
                }
            }
        }
        out.times.sort_unstable();
        out
    }
}

/// Records every `message-id` the broker at `port` delivers, with its arrival time.
async fn collect(port: u16, name: &str, seen: Arc<Mutex<Arrivals>>) -> Result<(), String> {
    twinhub_testkit::collect_ids(port, name, move |id| {
        seen.lock()
            .unwrap_or_else(|e| e.into_inner())
            .arrive(id, now_ms());
    })
    .await
}
