//! What the control plane and the host agent share that is not part of their contract
//! (`cloud-proto`): value types both speak ([`net`]), durable writes of small files ([`fs`]),
//! TCP for interactive traffic ([`tcp`]),
//! and how a service starts: its configuration file and overrides ([`config`]), logging,
//! the runtime, errors on exit and the shutdown signal ([`startup`]), and traces that cross
//! processes ([`telemetry`], feature `telemetry`).
//! Nothing here knows either service; both depend on it, it depends on neither.
#![forbid(unsafe_code)]

pub mod config;
pub mod fs;
pub mod net;
pub mod startup;
pub mod tcp;
#[cfg(feature = "telemetry")]
pub mod telemetry;
