//! `cloudctl`: the typed API client (used by the CLI and by the end-to-end tests) and the CLI.
//!
//! The commands arrive with the cloudctl issue (#6).
#![forbid(unsafe_code)]

/// The CLI's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
