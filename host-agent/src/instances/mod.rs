//! The host's instances: desired specs in, VMs out.
//!
//! [`InstanceManager`] is a cheap handle; each instance is owned by one runner task (an actor)
//! that receives requests with a oneshot reply, so two operations on one instance never
//! interleave while different instances proceed in parallel. The manager's map of runners is a
//! `std::sync::Mutex` never held across an `.await`.
//!
//! ```text
//!            ensure(Running)                   stop                   (QEMU exits)
//!  (none) ─▶ Creating ─▶ Starting ─▶ Running ─────────▶ Stopping ─▶ Stopped
//!                │                  │ ▲  ▲ ▲                           │
//!                │ (any error)      │ │  │ └────── ensure(Running) ────┘ (via Starting)
//!                ▼                  │ │  └─ reboot ─ Rebooting
//!             Failed(reason)        │ └──── resume ─ Paused ◀─ pause_all (self-fencing)
//!                                   ▼
//!           delete (from any state) ─▶ Deleting ─▶ Deleted (runner gone, directory removed)
//! ```
//! Snapshots (see `snapshots`): `snapshot` passes through `Snapshotting` and returns to the
//! state it started from (Running, Paused, or Stopped for a disk snapshot); `restore` creates a
//! new instance `(none) ─▶ Restoring ─▶ Running` (a disk snapshot boots via `Starting`).
//!
//! Generations: every mutating request carries the control plane's generation. Lower than the
//! last applied one → [`InstanceError::StaleGeneration`]; equal → no-op returning the current
//! status; higher → recorded in `agent.json` (written atomically, before acting), then applied.
//! A deleted instance leaves an in-memory tombstone so a late, older ensure cannot resurrect it
//! while the agent runs.
//!
//! Crash safety: the directory of a new instance holds a `creating` marker until its first
//! launch has been attempted; a restarted manager deletes directories that still have it (or
//! have no `agent.json`). A VMM that outlived the agent is re-attached; a dead VMM whose desired
//! power is Running is relaunched (as after a host reboot); if that fails the instance is
//! reported `Failed` with the reason.

mod driver;
mod guest;
mod manager;
mod record;
mod runner;
mod snapshots;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use vmm::spec::MacAddr;

pub use driver::DriverKind;
pub use guest::HOST_KEY_GRACE;
pub use manager::{CapacityUsed, ConsoleSession, InstanceManager, ManagerConfig};
pub use snapshots::{SNAPSHOT_JSON, SnapshotId, SnapshotInfo};
pub use vmm::snapshot::SnapshotKind;

use crate::images::{ImageError, is_sha256_hex};
use crate::network::NetworkError;
use crate::storage::StorageError;
use cloud_common::net::Ipv4Interface;

/// An instance's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(pub Uuid);

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for InstanceId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(InstanceId(s.parse()?))
    }
}

/// How an image boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootMode {
    /// `microvm` with kernel + initrd (+ optional disk).
    DirectKernel,
    /// `q35` with firmware (OVMF or SeaBIOS, see [`ImageRef::firmware`]) booting the whole-disk image.
    Firmware,
}

/// The image an instance boots, by content digest (lowercase hex SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRef {
    /// The control plane's image id (informational).
    #[serde(default)]
    pub image_id: String,
    /// Boot mode.
    pub boot_mode: BootMode,
    /// Base disk digest (required for firmware boot).
    #[serde(default)]
    pub disk_sha256: Option<String>,
    /// Base disk size, checked when fetching.
    #[serde(default)]
    pub disk_size_bytes: Option<u64>,
    /// Kernel digest (direct kernel boot).
    #[serde(default)]
    pub kernel_sha256: Option<String>,
    /// Initrd digest (direct kernel boot, optional).
    #[serde(default)]
    pub initrd_sha256: Option<String>,
    /// Kernel command line (direct kernel boot).
    #[serde(default)]
    pub kernel_cmdline: String,
    /// The firmware of a firmware boot (records from before it was chosen were SeaBIOS).
    #[serde(default = "legacy_firmware")]
    pub firmware: vmm::spec::Firmware,
}

fn legacy_firmware() -> vmm::spec::Firmware {
    vmm::spec::Firmware::Seabios
}

/// One NIC: its MAC and static address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicConfig {
    /// Guest MAC.
    pub mac: MacAddr,
    /// Address with prefix, e.g. `10.100.3.7/24`.
    pub address: Ipv4Interface,
    /// Default gateway (the host bridge's address, as the control plane says).
    pub gateway: Ipv4Addr,
}

/// What the control plane wants an instance to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredInstance {
    /// Instance id.
    pub id: InstanceId,
    /// Guest hostname (RFC 1123).
    pub hostname: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Root/data disk size in bytes (0: none for disk-less direct-kernel images).
    pub disk_bytes: u64,
    /// Image.
    pub image: ImageRef,
    /// NICs, in guest order (at most 10).
    #[serde(default)]
    pub nics: Vec<NicConfig>,
    /// OpenSSH public keys for root.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// The user's own user-data.
    #[serde(default)]
    pub user_data: Option<String>,
}

/// Largest number of NICs per instance (tap names stay within 15 characters).
pub const MAX_NICS: usize = 10;

impl DesiredInstance {
    /// Checks what can be checked without touching the host.
    pub fn validate(&self) -> Result<(), InstanceError> {
        let invalid = |reason: String| Err(InstanceError::InvalidSpec { id: self.id, reason });
        if !vmm::config_drive::validate_hostname(&self.hostname) {
            return invalid(format!("invalid hostname {:?}", self.hostname));
        }
        if self.vcpus == 0 || self.vcpus > vmm::spec::MAX_VCPUS {
            return invalid(format!("invalid vCPU count {}", self.vcpus));
        }
        if self.memory_mib < vmm::spec::MIN_MEMORY_MIB {
            return invalid(format!("memory {} MiB is below the minimum", self.memory_mib));
        }
        let img = &self.image;
        for d in [&img.disk_sha256, &img.kernel_sha256, &img.initrd_sha256].into_iter().flatten() {
            if !is_sha256_hex(d) {
                return invalid(format!("invalid image digest {d:?}"));
            }
        }
        match img.boot_mode {
            BootMode::Firmware if img.disk_sha256.is_none() => {
                return invalid("firmware boot needs a disk image".into());
            }
            BootMode::DirectKernel if img.kernel_sha256.is_none() => {
                return invalid("direct kernel boot needs a kernel".into());
            }
            _ => {}
        }
        if img.kernel_cmdline.contains(['\n', '\0']) {
            return invalid("kernel command line contains control characters".into());
        }
        if self.nics.len() > MAX_NICS {
            return invalid(format!("{} NICs (at most {MAX_NICS})", self.nics.len()));
        }
        for (i, nic) in self.nics.iter().enumerate() {
            if nic.mac.is_multicast() {
                return invalid(format!("MAC address {} is multicast", nic.mac));
            }
            if self.nics[..i].iter().any(|o| o.mac == nic.mac) {
                return invalid(format!("MAC address {} is used twice", nic.mac));
            }
        }
        if let Some(i) = self.ssh_authorized_keys.iter().position(|k| !vmm::config_drive::validate_ssh_key(k)) {
            return invalid(format!("invalid SSH public key #{i}"));
        }
        Ok(())
    }
}

/// Desired power state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    /// The VM should run.
    Running,
    /// The VM should exist, powered off.
    Stopped,
}

/// Observed instance state (see the module diagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum InstanceState {
    Creating,
    Starting,
    Running,
    Stopping,
    Stopped,
    Rebooting,
    Snapshotting,
    Restoring,
    Paused,
    Deleting,
    Deleted,
    Failed,
}

/// An instance's state as last observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// Instance id.
    pub id: InstanceId,
    /// State.
    pub state: InstanceState,
    /// Generation of the last applied request.
    pub generation: u64,
    /// Why, for `Failed` (and a note for unexpected stops): a sentence a customer can read.
    pub reason: Option<String>,
    /// When this was observed.
    pub observed_at: DateTime<Utc>,
    /// When the guest became reachable in its current boot: its SSH port answered and its host
    /// keys are known (see `guest`). `None` while it boots and whenever it is not running.
    pub ready_at: Option<DateTime<Utc>>,
    /// The SSH host public keys the guest printed on its console (`<type> <base64>`).
    pub ssh_host_keys: Vec<String>,
}

/// Instance operation errors.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The request's generation is older than the one already applied.
    #[error("generation {requested} of instance {id} is older than the applied generation {current}")]
    StaleGeneration {
        /// Instance.
        id: InstanceId,
        /// The request's generation.
        requested: u64,
        /// The applied generation.
        current: u64,
    },
    /// No such instance on this host.
    #[error("instance {id} not found")]
    NotFound {
        /// Instance.
        id: InstanceId,
    },
    /// The desired spec is invalid.
    #[error("invalid spec for instance {id}: {reason}")]
    InvalidSpec {
        /// Instance.
        id: InstanceId,
        /// What is wrong.
        reason: String,
    },
    /// The operation needs another state.
    #[error("cannot {operation} instance {id} while it is {state:?}")]
    InvalidState {
        /// Instance.
        id: InstanceId,
        /// Current state.
        state: InstanceState,
        /// The operation.
        operation: &'static str,
    },
    /// Fetching an image failed.
    #[error("cannot fetch an image of instance {id}")]
    Image {
        /// Instance.
        id: InstanceId,
        /// Cause.
        #[source]
        source: ImageError,
    },
    /// Network setup failed.
    #[error("cannot set up the network of instance {id}")]
    Network {
        /// Instance.
        id: InstanceId,
        /// Cause.
        #[source]
        source: NetworkError,
    },
    /// Disk or config drive setup failed.
    #[error("cannot prepare the disks of instance {id}")]
    Storage {
        /// Instance.
        id: InstanceId,
        /// Cause.
        #[source]
        source: StorageError,
    },
    /// The VMM failed.
    #[error("VMM operation {operation} failed for instance {id}")]
    Vmm {
        /// Instance.
        id: InstanceId,
        /// What was attempted.
        operation: &'static str,
        /// Cause.
        #[source]
        source: vmm::VmError,
    },
    /// Taking or restoring a snapshot failed in the VMM layer.
    #[error("snapshot {snapshot} of instance {id} failed")]
    Snapshot {
        /// Instance (the snapshotted one, or the one being restored).
        id: InstanceId,
        /// The snapshot.
        snapshot: SnapshotId,
        /// Cause.
        #[source]
        source: vmm::snapshot::SnapshotError,
    },
    /// Reading or writing the instance directory failed.
    #[error("cannot write {path}")]
    Persist {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The instance has no NIC to tunnel to.
    #[error("instance {id} has no network interface")]
    NoNic {
        /// Instance.
        id: InstanceId,
    },
    /// Connecting a tunnel failed.
    #[error("cannot connect to {addr} of instance {id}")]
    Tunnel {
        /// Instance.
        id: InstanceId,
        /// The guest address.
        addr: std::net::SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The instance's runner is gone (manager shutting down).
    #[error("instance {id} is shutting down")]
    RunnerGone {
        /// Instance.
        id: InstanceId,
    },
}

/// Errors of [`InstanceManager::start`].
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The instances directory cannot be created or read.
    #[error("cannot use instances directory {path}")]
    InstancesDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Host network setup failed.
    #[error("cannot set up the host network")]
    Network(#[source] NetworkError),
}
