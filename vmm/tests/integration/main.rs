//! Integration tests of the vmm crate against real QEMU (TCG here) booting the `minimal`
//! guest image, with real SSH over taps in network namespaces the tests create.
//!
//! Requirements (tests fail with a hint when missing, never skip): Debian packages
//! qemu-system-x86, qemu-utils, openssh-client, iproute2, dosfstools, mtools, e2fsprogs; the
//! image from `deploy/images/build-minimal.sh` (or `CLOUD_MINIMAL_IMAGE=<dir>`); root.
#![allow(clippy::unwrap_used)]

mod bad_input;
mod boot;
mod common;
mod debian;
mod lifecycle;
mod snapshots;
