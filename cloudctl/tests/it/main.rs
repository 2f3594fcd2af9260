//! Integration tests of `cloudctl`: the built binary run as users run it (with its own
//! `XDG_CONFIG_HOME`), against a real control plane served in-process on a real PostgreSQL,
//! plus golden outputs of the render functions.
#![allow(clippy::unwrap_used)]

mod api;
mod bad_input;
mod common;
mod golden;
