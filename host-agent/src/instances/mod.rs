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

mod confine;
pub use confine::SPAN as VM_USER_SPAN;
mod driver;
mod guest;
mod host;
mod manager;
mod record;
mod runner;
mod snapshots;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use guest::HOST_KEY_GRACE;
pub use host::{DriverKind, ManagerConfig};
pub use manager::{CapacityUsed, ConsoleSession, InstanceManager};
pub use snapshots::{SNAPSHOT_JSON, SnapshotId, SnapshotInfo};
pub use vmm::snapshot::SnapshotKind;

pub use crate::spec::{BootMode, DesiredInstance, ImageRef, InstanceId, MAX_NICS, NicConfig};

use crate::images::ImageError;
use crate::network::NetworkError;
use crate::storage::StorageError;

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

impl InstanceState {
    /// Its name, as serialized (snake_case).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Rebooting => "rebooting",
            Self::Snapshotting => "snapshotting",
            Self::Restoring => "restoring",
            Self::Paused => "paused",
            Self::Deleting => "deleting",
            Self::Deleted => "deleted",
            Self::Failed => "failed",
        }
    }
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

/// Why an instance whose VM died while the host's lease ran out is stopped: it runs again only
/// once the control plane confirms this host still owns it (see `ManagerConfig::fenced_at_start`).
pub const FENCED_REASON: &str = "fenced: waiting for the control plane to confirm this host still owns the instance";

impl InstanceStatus {
    /// Held by a fence: paused, or stopped with [`FENCED_REASON`] until the control plane
    /// confirms this host still owns it.
    pub fn is_fenced(&self) -> bool {
        self.state == InstanceState::Paused
            || (self.state == InstanceState::Stopped && self.reason.as_deref() == Some(FENCED_REASON))
    }
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
    /// The VM's user or cgroups could not be set up.
    #[error("cannot confine the VM of instance {id}")]
    Confine {
        /// Instance.
        id: InstanceId,
        /// Cause.
        #[source]
        source: std::io::Error,
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
    /// A file of a snapshot no longer has the content it was written with.
    #[error("snapshot {snapshot} is corrupt: {file} does not match the hash recorded when it was taken")]
    CorruptSnapshot {
        /// The snapshot.
        snapshot: SnapshotId,
        /// The file that changed.
        file: String,
    },
    /// The snapshot store failed (unreachable, a corrupt chunk, no such snapshot).
    #[error("snapshot {snapshot}: the snapshot store failed")]
    Store {
        /// The snapshot.
        snapshot: SnapshotId,
        /// Cause.
        #[source]
        source: cloud_store::StoreError,
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

impl From<crate::spec::InvalidSpec> for InstanceError {
    fn from(err: crate::spec::InvalidSpec) -> Self {
        InstanceError::InvalidSpec { id: err.id, reason: err.reason }
    }
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
    /// The snapshot store cannot be opened.
    #[error("cannot open the snapshot store")]
    Store(#[source] cloud_store::StoreError),
}
