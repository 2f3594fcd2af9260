//! End-to-end scenarios: real binaries, a real PostgreSQL, agents in network namespaces.
#![allow(clippy::unwrap_used)]

mod api;
mod fleet;
mod instances;
