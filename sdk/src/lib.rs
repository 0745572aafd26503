//! twinhub: IoT telemetry producers that fail over between regions, fail back when they
//! heal, buffer in a local outbox and never spend on a costly link by accident.
//!
//! This is the std build for gateways and Linux devices: a tokio driver around the
//! `twinhub-core` engine, with MQTT, IoT Hub, Event Hubs and HTTP transports, a durable disk
//! outbox and TOML configuration. The engine's types are re-exported here.

pub mod builder;
pub mod client_cert;
pub mod config;
pub mod dedup;
pub mod disk;
pub mod epoch;
pub mod memstore;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod producer;
pub mod record;
pub mod spec;
pub mod transport;

pub use builder::{BuildError, ProducerBuilder};
pub use config::SdkConfig;
pub use producer::{
    ControlFailure, Delivered, DeliveryTicket, EndpointRef, FlushError, LinkRef, NotDelivered,
    Outbox, OutboxFailure, Parts, PartsError, Producer, SendError, SendOptions, SendTicket,
    Snapshot,
};

/// The engine itself, for what the flat re-exports leave out.
pub use twinhub_core as core;
/// The device ↔ gateway serial wire (postcard + CRC-32C + COBS).
pub use twinhub_core::wire;

pub use twinhub_core::{
    Budget, Class, ClassSet, Cost, DeviceId, DownCause, DropCounts, DropReason,
    Duration as EngineDuration, EndpointId, Event, Instant as EngineInstant, LinkId, LinkSpend,
    MessageId, OnFull, Outcome, RejectReason, RouteHealth, Routing, Settlement, Stats, Timings,
    TransmitError,
};

// The README's examples (the engine's and the SDK's) run as doctests of this crate, the
// one that sees both.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
