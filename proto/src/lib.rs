//! The gRPC contract of the fleet (`cloud.agent.v1`).
//!
//! Two services, each called by the side that initiates the connection:
//! - [`agent::v1::host_agent_server::HostAgent`]: served by every host agent, called by the
//!   control plane (ensure an instance at a generation, stop, snapshot, console, tunnel…).
//! - [`agent::v1::control_plane_server::ControlPlane`]: served by the control plane, called by
//!   agents (join with a token, periodic reports that renew the host's lease).
//!
//! Both run over mutual TLS once a host has joined; only `Join` is reachable with a join token
//! instead of a client certificate. The messages grow with later features; fields are only ever
//! added, never renumbered.
#![forbid(unsafe_code)]

/// `cloud.*` packages.
pub mod cloud {
    /// `cloud.agent.*` packages.
    pub mod agent {
        /// `cloud.agent.v1`: the first version of the agent contract.
        #[allow(missing_debug_implementations, clippy::all)]
        pub mod v1 {
            tonic::include_proto!("cloud.agent.v1");
        }
    }
}

pub use cloud::agent;

pub mod identity;
pub mod join_token;
