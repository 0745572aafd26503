//! A local two-region hub emulator with a fault switch, for development, tests and demos.
//!
//! Each region serves, on 127.0.0.1 and ephemeral ports by default:
//!
//! * an HTTP ingest compatible with the Event Hubs REST send API (`POST /{hub}/messages`,
//!   single event and batch, SAS checked, the tier's size limit enforced) plus a generic
//!   JSON batch ingest (`POST /ingest/{name}`, `Idempotency-Key` honoured); see [`mod@http`]
//!   for status codes and [`batch`] for body formats and where message ids are read;
//! * an embedded MQTT broker (rumqttd; 3.1.1 and 5 on one port) that records every publish
//!   with its message id; see [`mod@mqtt`];
//! * an IoT Hub endpoint (MQTT 3.1.1 over TLS on port 8883 of its own loopback address,
//!   certificate from the run's CA in [`Emulator::ca_file`]) that checks client id, user
//!   name, SAS token, topic, QoS, size and keep-alive as IoT Hub does; see [`mod@iothub`].
//!   It also takes X.509 devices (client certificates from the run's CA, CN = device id;
//!   [`Emulator::issue_device_cert`]) and MQTT over WebSockets on port 443 of the same
//!   address ([`Region::iot_hub_websocket_addr`], [`mod@iothub_ws`]);
//! * a [`FaultSwitch`] in front of all of them, settable at runtime from code or the admin API
//!   ([`mod@admin`]): up, down, blackhole, HTTP 503/429, latency, flap, per source address.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use twinhub_emulator::{Emulator, EmulatorConfig, Fault};
//!
//! let emu = Emulator::start(EmulatorConfig::default()).await?; // primary + secondary
//! let primary = &emu["primary"];
//! let conn = primary.event_hubs_connection_string(); // hand this to the SDK
//! primary.set_fault(Fault::Down);                     // region outage
//! primary.set_fault_for("127.0.0.3".parse()?, Fault::Blackhole); // one link only
//! let got = emu["secondary"].wait_for_ids(&["dev:1:0"], Duration::from_secs(15)).await?;
//! assert_eq!(emu["secondary"].stats().total.duplicates, 0);
//! # let _ = (conn, got); Ok(()) }
//! ```

pub mod batch;

#[cfg(feature = "server")]
pub mod admin;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
mod emulator;
#[cfg(feature = "server")]
pub mod fault;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod iothub;
#[cfg(feature = "server")]
pub mod iothub_ws;
#[cfg(feature = "server")]
pub mod mqtt;
#[cfg(feature = "server")]
pub mod proxy;
#[cfg(feature = "server")]
mod store;
#[cfg(feature = "server")]
pub mod tls;

#[cfg(feature = "server")]
pub use config::{EmulatorConfig, ProxyConfig, RegionConfig, Tier};
#[cfg(feature = "server")]
pub use emulator::{Emulator, Region, StartError, WaitTimeout};
#[cfg(feature = "server")]
pub use fault::{Fault, FaultRequest, FaultSwitch};
#[cfg(feature = "server")]
pub use iothub::IotHubEvents;
#[cfg(feature = "server")]
pub use proxy::FaultProxy;
#[cfg(feature = "server")]
pub use store::{Counts, Protocol, Record, RegionStats};
#[cfg(feature = "server")]
pub use tls::DeviceCert;
