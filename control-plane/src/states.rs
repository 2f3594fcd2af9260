//! The lifecycle states of instances, hosts, operations and their steps, the kinds of
//! operations, the names of steps and the roles of project members: Rust enums, matched exhaustively, spelled as in the database (`snake_case` text columns, see `migrations/`) in
//! one place each: [`as_str`](InstanceState::as_str) and its `FromStr`/`TryFrom<String>`
//! inverse, which `sqlx` rows use through `#[sqlx(try_from = "String")]`.
//!
//! ```text
//!  instance: creating ─▶ starting ─▶ running ⇄ stopping ─▶ stopped ─▶ deleting ─▶ deleted
//!            (+ rebooting, snapshotting, restoring, failed with a reason, lost: host dead)
//!  host:     joining ─▶ active ⇄ draining;  active ─▶ suspect ─▶ dead ─▶ active (reports again)
//!  operation: pending ─▶ running ─▶ succeeded | undoing ─▶ failed | cancelled
//!  step:      pending ─▶ running ─▶ done | failed;  done/running/failed ─▶ undoing ─▶ undone
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A state spelled in no known way (a newer schema, or a corrupt row).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} state {value:?}")]
pub struct UnknownState {
    pub what: &'static str,
    pub value: String,
}

/// Declares a state enum with its database spelling, `Display`, `FromStr` and `TryFrom<String>`.
macro_rules! states {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every state.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The database (and API) spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownState { what: $what, value: other.to_owned() }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownState;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }
    };
}

states! {
    /// An instance's state.
    InstanceState, "instance" {
        Creating => "creating",
        Starting => "starting",
        Running => "running",
        Stopping => "stopping",
        Stopped => "stopped",
        Rebooting => "rebooting",
        Snapshotting => "snapshotting",
        Restoring => "restoring",
        Deleting => "deleting",
        Deleted => "deleted",
        /// An operation failed; `state_reason` says why.
        Failed => "failed",
        /// Its host was declared dead.
        Lost => "lost",
        /// Its memory and disks are being saved on its host, before it is stopped there.
        Suspending => "suspending",
        /// Saved on its host, holding no capacity; `start` resumes it where it was.
        Suspended => "suspended",
    }
}

states! {
    /// A host's state. Only `active` hosts take new instances.
    HostState, "host" {
        Joining => "joining",
        Active => "active",
        Draining => "draining",
        Suspect => "suspect",
        Dead => "dead",
    }
}

states! {
    /// An operation's state.
    OperationState, "operation" {
        Pending => "pending",
        Running => "running",
        Undoing => "undoing",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
    }
}

impl OperationState {
    /// True once it will not change any more.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

states! {
    /// An operation step's state.
    StepState, "step" {
        Pending => "pending",
        Running => "running",
        Done => "done",
        Undoing => "undoing",
        Undone => "undone",
        Failed => "failed",
    }
}

states! {
    /// What an operation does.
    OperationKind, "operation kind" {
        InstanceCreate => "instance_create",
        InstanceStart => "instance_start",
        InstanceStop => "instance_stop",
        InstanceReboot => "instance_reboot",
        InstanceDelete => "instance_delete",
        InstanceRestore => "instance_restore",
        InstanceSuspend => "instance_suspend",
        InstanceResume => "instance_resume",
        InstanceRecover => "instance_recover",
        SnapshotCreate => "snapshot_create",
        SnapshotDelete => "snapshot_delete",
    }
}

impl OperationKind {
    /// Whether it works on a snapshot (else on an instance).
    pub fn is_snapshot(self) -> bool {
        matches!(self, Self::SnapshotCreate | Self::SnapshotDelete)
    }
}

states! {
    /// A step of an operation (see `operations::instances` for which kind has which).
    Step, "step name" {
        Place => "place",
        AllocateAddress => "allocate_address",
        EnsureOnHost => "ensure_on_host",
        WaitRunning => "wait_running",
        StopOnHost => "stop_on_host",
        WaitStopped => "wait_stopped",
        RebootOnHost => "reboot_on_host",
        DeleteOnHost => "delete_on_host",
        ReleaseAddress => "release_address",
        ReleaseCapacity => "release_capacity",
        RestoreOnHost => "restore_on_host",
        SuspendOnHost => "suspend_on_host",
        DropSuspendState => "drop_suspend_state",
        SnapshotOnHost => "snapshot_on_host",
        DeleteSnapshotOnHost => "delete_snapshot_on_host",
    }
}

states! {
    /// A snapshot's state: `creating` while its operation runs, `available` once its files are
    /// complete on its host, `deleting` while they are removed, `deleted` after.
    SnapshotState, "snapshot" {
        Creating => "creating",
        Available => "available",
        Failed => "failed",
        Deleting => "deleting",
        Deleted => "deleted",
    }
}

states! {
    /// What a snapshot holds.
    SnapshotKind, "snapshot kind" {
        /// The disks only: restoring boots from them.
        Disk => "disk",
        /// The disks, memory and device state: restoring resumes the running guest.
        Full => "full",
    }
}

states! {
    /// An image's state. Only `available` images can be booted.
    ImageState, "image" {
        Uploading => "uploading",
        Available => "available",
        Failed => "failed",
        Deleting => "deleting",
    }
}

states! {
    /// How an image boots.
    BootMode, "boot mode" {
        /// The VMM loads a kernel (and initrd) itself; the disk, if any, is the root file system.
        DirectKernel => "direct_kernel",
        /// Firmware (BIOS/UEFI) boots a whole-disk image.
        Firmware => "firmware",
    }
}

states! {
    /// The firmware that boots a whole-disk image.
    Firmware, "firmware" {
        /// UEFI (OVMF, with a variable store per instance): GPT disks with an EFI system partition.
        Uefi => "uefi",
        /// Legacy BIOS (SeaBIOS): disks with an MBR boot loader.
        Bios => "bios",
    }
}

/// A firmware image boots through UEFI unless it says otherwise.
impl Default for Firmware {
    fn default() -> Self {
        Firmware::Uefi
    }
}

/// A user's role in a project; each role can do what the ones before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the project's resources.
    Viewer,
    /// Also creates, changes and deletes them.
    Member,
    /// Also manages the project's members.
    Admin,
}

impl Role {
    /// The name stored in `project_members.role` and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Member => "member",
            Self::Admin => "admin",
        }
    }

    /// Whether this role can do what `min` can.
    pub fn allows(self, min: Role) -> bool {
        self >= min
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a role name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected viewer, member or admin")]
pub struct UnknownRole(pub String);

impl TryFrom<String> for Role {
    type Error = UnknownRole;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "member" => Ok(Self::Member),
            "admin" => Ok(Self::Admin),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

impl InstanceState {
    /// Being deleted, or deleted: no create or start may go on.
    pub fn is_going_away(self) -> bool {
        matches!(self, Self::Deleting | Self::Deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_spelling() {
        for s in InstanceState::ALL {
            assert_eq!(s.as_str().parse::<InstanceState>(), Ok(*s));
            assert_eq!(serde_json::to_value(s).ok(), Some(serde_json::Value::String(s.as_str().to_owned())));
        }
        for s in HostState::ALL {
            assert_eq!(s.as_str().parse::<HostState>(), Ok(*s));
        }
        for s in OperationState::ALL {
            assert_eq!(s.as_str().parse::<OperationState>(), Ok(*s));
        }
        for s in StepState::ALL {
            assert_eq!(s.as_str().parse::<StepState>(), Ok(*s));
        }
        for s in OperationKind::ALL {
            assert_eq!(s.as_str().parse::<OperationKind>(), Ok(*s));
        }
        for s in Step::ALL {
            assert_eq!(s.as_str().parse::<Step>(), Ok(*s));
        }
        assert_eq!(
            "paused".parse::<InstanceState>(),
            Err(UnknownState { what: "instance", value: "paused".to_owned() })
        );
    }
}
