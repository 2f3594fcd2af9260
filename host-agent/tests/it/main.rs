//! Integration tests of the host agent's instance layer: real QEMU, the minimal guest image,
//! real SSH, each test in a network namespace of its own (see `common`).
#![allow(clippy::unwrap_used)]

mod common;
mod images;
mod lifecycle;
mod recovery;
mod simulated;
mod snapshots;
