//! `cloudctl`: the typed API client (used by the CLI and by the end-to-end tests), the CLI's
//! configuration files and its output formats. The command line itself (`src/main.rs`,
//! `src/cmd/`) is a thin layer over these.
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod output;

/// The CLI's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
