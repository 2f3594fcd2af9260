//! End-to-end scenarios: real binaries, a real PostgreSQL, agents in network namespaces.
#![allow(clippy::unwrap_used)]

mod api;
mod api_types;
mod cli;
mod confinement;
mod console;
mod database;
mod disaster_recovery;
mod fleet;
mod ha;
mod images;
mod instances;
mod isolation;
mod layering;
mod liveness;
mod members;
mod oidc;
mod packages;
mod readme;
mod recovery;
mod schemathesis;
mod secrets;
mod snapshots;
mod store;
mod traces;
