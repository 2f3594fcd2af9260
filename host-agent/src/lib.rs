//! The host agent: the only process that touches a host's VMs, network and disks.
//!
//! Today it only reports its version; joining the fleet, the gRPC service and instance
//! supervision arrive with the host-agent issue (#4).
#![forbid(unsafe_code)]

/// The agent's version, reported to the control plane.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
