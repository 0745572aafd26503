//! twinhub-core: the sans-IO, `no_std`, allocation-free engine of twinhub.
//!
//! An [`Engine`] keeps a device's records in a [`Store`], sends them over routes
//! (endpoint × link) with health tracking, failover and failback, and keeps costly links
//! idle unless a budget and a rule allow them. It never does I/O, never reads a clock and
//! never draws system randomness, so the same engine runs in firmware, in the tokio SDK and
//! millions of times in the fleet simulator.
//!
//! Start with [`Engine`]: its documentation holds the driving contract and an example.
#![no_std]
#![forbid(unsafe_code)]

pub mod config;
pub mod engine;
pub mod event;
#[cfg(feature = "flash")]
pub mod flash;
pub mod frame;
pub mod id;
#[cfg(feature = "sas")]
pub mod sas;
pub mod store;
pub mod time;
#[cfg(feature = "wire")]
pub mod wire;

pub use config::{
    Budget, Class, ClassSet, Config, ConfigBuilder, ConfigError, Cost, EndpointConfig, EndpointId,
    LinkConfig, LinkId, MAX_ENDPOINTS, MAX_INFLIGHT, MAX_LINKS, OnFull, Routing, Timings,
};
pub use engine::{
    ControlError, Engine, EnqueueError, LinkSpend, LinkState, Outcome, RejectReason, RouteHealth,
    Transmit, TransmitError, TransmitId,
};
pub use event::{DownCause, DropCounts, DropReason, Event, Stats};
#[cfg(feature = "flash")]
pub use flash::{FlashStore, OpenError};
pub use frame::{Frame, FrameError, RecordMeta};
pub use id::{DeviceId, IdError, MessageId};
pub use store::{Persist, RamStore, RecordInfo, RecordKey, Settlement, Store, StoreError};
pub use time::{Duration, Instant};

// The README's examples run as doctests of the `twinhub` crate, which sees both this
// engine and the std SDK.
