//! Everything about one VM on one host: the VM spec, launching QEMU, its QMP control protocol,
//! the serial console, pause/resume, snapshot/restore and the NoCloud config drive.
//!
//! The host agent's view:
//! ```text
//!  config_drive::build(params) ─▶ cidata.img
//!  VmSpec ──validate──▶ Vm::start(spec, InstanceDir, LaunchOptions) ─▶ Vm (pid + QMP)
//!  Vm::{status, pause, resume, reboot, shutdown, force_stop}   Vm::attach(dir) after a restart
//!  Vm::{snapshot_disks, snapshot_full} ─▶ snapshots/<id>/   snapshot::restore(…) ─▶ Vm
//!  console::Console (serial.sock), console.log in the instance directory
//!  layers::{overlay_ranges, write_overlay}: a disk's own data, out of and into qcow2 overlays
//! ```
// Denied everywhere but `qemu::jail` (an ioctl and a pre-exec hook), which says why it is sound.
#![deny(unsafe_code)]

pub mod bare;
pub mod config_drive;
pub mod console;
pub mod guest_agent;
pub mod host_keys;
pub mod instance_dir;
pub mod layers;
pub mod qemu;
pub mod qmp;
pub mod snapshot;
pub mod spec;
pub mod vm;

pub use guest_agent::{GuestAgent, GuestAgentError};
pub use instance_dir::InstanceDir;
pub use qemu::{LaunchError, LaunchOptions};
pub use qmp::{QmpClient, QmpError, QmpEvent};
pub use spec::{SpecError, VmSpec};
pub use vm::{ShutdownOutcome, Vm, VmError, VmStatus};
