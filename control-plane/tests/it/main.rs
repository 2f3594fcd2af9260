//! Integration tests of the control plane against a real PostgreSQL (see `control_plane::testing`).
#![allow(clippy::unwrap_used)]

mod addresses;
mod auth;
mod binary;
mod embedded_db;
mod fleet_ca;
mod hosts;
mod http;
mod images;
mod instances;
mod liveness;
mod members;
mod migrations;
mod operations_end;
mod placement;
mod projects;
mod ssh_keys;
