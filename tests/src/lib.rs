//! The end-to-end harness: spawns the real binaries and the real components they need, and
//! cleans up after itself. Helpers read as sentences: `spawn_control_plane()`, `spawn_agent()`.
//!
//! Topology of one test (all of it created by the test and removed by its guards):
//!
//! ```text
//!  root namespace                          netns ct<id>-h1            netns ct<id>-h2
//!  bridge ct<id>br 10.250.N.1/24 ──veth── 10.250.N.11/24  …  ──veth── 10.250.N.12/24
//!    control-plane (HTTP + gRPC on .1)     host-agent (gRPC on .11)   host-agent (.12)
//!    PostgreSQL: the test run's cluster     cloudbr0 + taps + VMs      cloudbr0 + taps + VMs
//! ```
#![forbid(unsafe_code)]

pub mod cloud;
pub mod cloudctl;
pub mod guest;
pub mod layering;
pub mod net;
pub mod oidc;
pub mod otlp;
pub mod packages;
pub mod patroni;
pub mod process;
pub mod s3;
pub mod tunnel;

use std::path::PathBuf;

/// The path of a workspace binary (built next to the test executable's `deps/` directory).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("cannot find the test executable: {e}"));
    let dir = exe.parent().and_then(|deps| deps.parent()).map(PathBuf::from).unwrap_or_default();
    let path = dir.join(name);
    assert!(path.is_file(), "{} is missing: build it first with `cargo build --workspace --bins`", path.display());
    path
}

/// The value of one sample in a Prometheus text exposition: `series` is the sample's name with
/// its labels as printed (`cloud_hosts{state="active"}`), or its bare name when it has none.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Fails loudly when the test cannot do what it needs (root for namespaces, a tool).
pub fn require_root() {
    assert!(nix::unistd::geteuid().is_root(), "end-to-end tests create network namespaces: run them as root");
}
