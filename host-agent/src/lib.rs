//! The host agent: the only process that touches a host's VMs, network and disks.
//!
//!
//! - `join`: become a member of the fleet with a join token (`identity` keeps the result).
//! - `grpc`: the agent's mutual-TLS gRPC service, the only place proto and domain types meet.
//! - `report`: periodic reports that renew the host's lease, and self-fencing without one.
//! - `instances`, `network`, `storage`, `images`: the instances and what they are made of.
#![forbid(unsafe_code)]

pub mod agent;
pub mod capacity;
pub mod config;
pub mod grpc;
pub mod identity;
pub mod images;
pub mod instances;
pub mod join;
pub mod metrics;
pub mod network;
pub mod report;
pub mod spec;
pub mod storage;

/// The agent's version, reported to the control plane.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Displays an error and all its sources, `a: b: c`, for logs.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}
