//! [`SdkConfig`], the whole configuration of one producer: what [`crate::config`] reads
//! from TOML and what the outbox, the transports and the engine are built from. The parts
//! it is made of (endpoints, protocols, links) are in [`crate::spec`].

use std::path::PathBuf;
use std::time::Duration;

use twinhub_core::Routing;

use crate::spec::{EndpointSpec, LinkSpec, OutboxSpec};

/// The whole configuration of one producer.
#[derive(Debug, Clone, PartialEq)]
pub struct SdkConfig {
    /// The device id (part of every message id).
    pub device_id: String,
    /// How records are spread over endpoints.
    pub routing: Routing,
    /// The local outbox.
    pub outbox: OutboxSpec,
    /// Hubs, in failover priority order.
    pub endpoints: Vec<EndpointSpec>,
    /// Network paths; none means one free link with the system's default route.
    pub links: Vec<LinkSpec>,
    /// Time to live per class (critical, normal, bulk); default 30 days each.
    pub ttl: [Duration; 3],
    /// Engine timings (defaults from the engine).
    pub timings: twinhub_core::Timings,
    /// Extra CA certificates (PEM) trusted besides the web PKI roots. Verification is
    /// always on; this is the only way to trust a private broker.
    pub ca_file: Option<PathBuf>,
}
