//! How a runner turns a desired instance into a VMM process: the [`Driver`] trait and its two
//! implementations, [`Qemu`] (images, taps, disks, config drive, `vmm::Vm`) and [`Simulated`].
//! The runner, the manager and the snapshots call the trait; nothing else branches on the kind.
//!
//! The simulated driver exists only for scale simulations (thousands of agents on one machine):
//! it keeps the same state machine and `agent.json`, with instant transitions and no process,
//! tap, disk or image. It is never the default; a configuration must select it explicitly, and
//! end-to-end tests never use it.

use std::path::Path;

use futures::future::BoxFuture;
use vmm::spec::{Accel, BootSpec, NicSpec};
use vmm::{InstanceDir, LaunchOptions, Vm, VmError, VmSpec};

use super::host::{DriverKind, Host, create_taps, ensure_taps, resolve_images, taps, vm_name};
use super::snapshots::{self, SnapshotId, SnapshotRecord};
use super::{BootMode, DesiredInstance, InstanceError, InstanceId, SnapshotKind};
use crate::network::tap_name;
use crate::storage;

/// What became of the VM of an instance found on disk.
#[derive(Debug)]
pub(super) enum Attached {
    /// No process to attach to: the driver runs none (simulated).
    NoProcess,
    /// Its VMM runs; here is its handle.
    Vm(Vm),
    /// Its VMM is gone (the host rebooted, or it was stopped).
    Gone,
    /// Its VMM runs but cannot be driven.
    Unreachable(VmError),
}

/// What a restore left behind.
#[derive(Debug)]
pub(super) enum Restored {
    /// Nothing to drive (simulated): the instance counts as running.
    NoProcess,
    /// A full snapshot: the guest runs on.
    Running(Box<Vm>),
    /// A disk snapshot: its disks are in place, a launch boots from them.
    Disks,
}

/// What the runner asks of whatever runs its VMs. Chosen once from [`DriverKind`].
pub(super) trait Driver: Send + Sync + std::fmt::Debug {
    /// Fetches what a new instance needs, before its directory exists (so an unknown or corrupt
    /// image leaves nothing behind).
    fn resolve<'a>(&'a self, ctx: &'a Host, desired: &'a DesiredInstance) -> BoxFuture<'a, Result<(), InstanceError>>;
    /// Prepares everything but the process, for an instance created stopped.
    fn prepare<'a>(
        &'a self,
        ctx: &'a Host,
        dir: &'a InstanceDir,
        desired: &'a DesiredInstance,
    ) -> BoxFuture<'a, Result<(), InstanceError>>;
    /// Starts the VM: its handle, or `None` when there is no process to drive.
    fn launch<'a>(
        &'a self,
        ctx: &'a Host,
        dir: &'a InstanceDir,
        desired: &'a DesiredInstance,
    ) -> BoxFuture<'a, Result<Option<Vm>, InstanceError>>;
    /// Finds the VM of an instance found on disk (at start, or after its monitor dropped).
    fn attach<'a>(&'a self, dir: &'a InstanceDir) -> BoxFuture<'a, Attached>;
    /// Whether the instance's VM runs.
    fn is_alive(&self, vm: Option<&Vm>) -> bool;
    /// Removes an instance's host resources: its process, taps and directory.
    fn destroy<'a>(
        &'a self,
        ctx: &'a Host,
        id: InstanceId,
        dir: &'a InstanceDir,
    ) -> BoxFuture<'a, Result<(), InstanceError>>;
    /// Writes snapshot `id`'s files into `dest`: of the running (or paused) `vm`, or of the
    /// stopped instance's disks when `vm` is `None`.
    #[allow(clippy::too_many_arguments)]
    fn write_snapshot<'a>(
        &'a self,
        ctx: &'a Host,
        vm: Option<&'a Vm>,
        dir: &'a InstanceDir,
        desired: &'a DesiredInstance,
        dest: &'a Path,
        id: SnapshotId,
        kind: SnapshotKind,
    ) -> BoxFuture<'a, Result<(), InstanceError>>;
    /// Restores `snapshot` (at `location`) into the new instance directory `dir`.
    fn restore<'a>(
        &'a self,
        ctx: &'a Host,
        dir: &'a InstanceDir,
        desired: &'a DesiredInstance,
        snapshot: &'a SnapshotRecord,
        location: &'a Path,
    ) -> BoxFuture<'a, Result<Restored, InstanceError>>;
    /// Whether it needs the host's bridge, NAT and taps.
    fn uses_host_network(&self) -> bool;
}

/// The driver a [`DriverKind`] names.
pub(super) fn for_kind(kind: &DriverKind) -> Box<dyn Driver> {
    match kind {
        DriverKind::Qemu(opts) => Box::new(Qemu { opts: (**opts).clone() }),
        DriverKind::Simulated => Box::new(Simulated),
    }
}

/// Fetches images, creates taps, disks and the config drive: everything but the process.
/// Idempotent. Returns the spec to launch.
async fn prepare_spec(
    ctx: &Host,
    opts: &LaunchOptions,
    dir: &InstanceDir,
    desired: &DesiredInstance,
) -> Result<VmSpec, InstanceError> {
    let id = desired.id;
    let images = resolve_images(ctx, desired).await?;
    ensure_taps(ctx, desired).await?;
    let storage_err = |source| InstanceError::Storage { id, source };
    let disks = storage::ensure_root_disk(&opts.qemu_img, dir, images.disk.as_deref(), desired.disk_bytes)
        .await
        .map_err(storage_err)?;
    storage::build_config_drive(dir, desired).await.map_err(storage_err)?;
    let boot = match (desired.image.boot_mode, images.kernel) {
        (BootMode::DirectKernel, Some(kernel)) => {
            BootSpec::DirectKernel { kernel, initrd: images.initrd, cmdline: desired.image.kernel_cmdline.clone() }
        }
        (BootMode::DirectKernel, None) => {
            return Err(InstanceError::InvalidSpec { id, reason: "direct kernel boot needs a kernel".into() });
        }
        (BootMode::Firmware, _) => BootSpec::Firmware { firmware: desired.image.firmware },
    };
    let nics = desired.nics.iter().zip(taps(desired)).map(|(nic, tap)| NicSpec { tap, mac: nic.mac }).collect();
    Ok(VmSpec {
        name: vm_name(id),
        vcpus: desired.vcpus,
        memory_mib: desired.memory_mib,
        boot,
        disks,
        nics,
        config_drive: Some(dir.config_drive()),
        accel: Accel::Auto,
        netns: ctx.config.netns.clone(),
        confinement: super::host::confinement(ctx, dir, desired).await?,
        // Always offered: a guest that runs qemu-guest-agent can be re-addressed after a restore.
        guest_agent: true,
    })
}

/// Undoes what confining instance `id` (in `dir`, not yet removed) left outside its
/// directory: its user's read grants on the image files it booted from, its cgroups, its user.
async fn unconfine(ctx: &Host, id: InstanceId, dir: &InstanceDir) {
    let Some(confiner) = &ctx.confiner else { return };
    let uid = confiner.users.user_of(id, dir.root());
    let spec = tokio::fs::read(dir.config_json()).await.ok().and_then(|j| serde_json::from_slice::<VmSpec>(&j).ok());
    let shared = spec.as_ref().map(VmSpec::shared_files).unwrap_or_default();
    if let Err(e) = vmm::qemu::jail::revoke(&shared, uid).await {
        tracing::warn!(%id, files = ?shared, error = %e, "cannot revoke a VM user's read grants");
    }
    confiner.users.release(id);
    if let Some(cgroups) = &confiner.cgroups {
        cgroups.remove(id);
    }
}

/// Removes an instance's directory (idempotent).
async fn remove_dir(dir: &InstanceDir) -> Result<(), InstanceError> {
    match tokio::fs::remove_dir_all(dir.root()).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(InstanceError::Persist { path: dir.root().to_owned(), source }),
    }
}

/// Real VMs under QEMU, through the `vmm` crate.
#[derive(Debug)]
struct Qemu {
    opts: LaunchOptions,
}

impl Driver for Qemu {
    fn resolve<'a>(&'a self, ctx: &'a Host, desired: &'a DesiredInstance) -> BoxFuture<'a, Result<(), InstanceError>> {
        Box::pin(async move { resolve_images(ctx, desired).await.map(drop) })
    }

    fn prepare<'a>(
        &'a self,
        ctx: &'a Host,
        dir: &'a InstanceDir,
        desired: &'a DesiredInstance,
    ) -> BoxFuture<'a, Result<(), InstanceError>> {
        Box::pin(async move { prepare_spec(ctx, &self.opts, dir, desired).await.map(drop) })
    }

    fn launch<'a>(
        &'a self,
        ctx: &'a Host,
        dir: &'a InstanceDir,
        desired: &'a DesiredInstance,
    ) -> BoxFuture<'a, Result<Option<Vm>, InstanceError>> {
        Box::pin(async move {
            let spec = prepare_spec(ctx, &self.opts, dir, desired).await?;
            let vm = Vm::start(spec, dir.clone(), &self.opts).await.map_err(|source| InstanceError::Vmm {
                id: desired.id,
                operation: "start",
                source,
            })?;
            Ok(Some(vm))
        })
    }

    fn attach<'a>(&'a self, dir: &'a InstanceDir) -> BoxFuture<'a, Attached> {
        Box::pin(async move {
            match Vm::attach(dir.clone(), &self.opts).await {
                Ok(vm) => Attached::Vm(vm),
                Err(VmError::Dead { .. } | VmError::Config { .. }) => Attached::Gone,
                Err(e) => Attached::Unreachable(e),
            }
        })
    }

    fn is_alive(&self, vm: Option<&Vm>) -> bool {
        vm.is_some_and(Vm::is_alive)
    }

    fn destroy<'a>(
        &'a self,
        ctx: &'a Host,
        id: InstanceId,
        dir: &'a InstanceDir,
    ) -> BoxFuture<'a, Result<(), InstanceError>> {
        Box::pin(async move {
            vmm::vm::kill_unattached(dir).await;
            let net_err = |source| InstanceError::Network { id, source };
            // Tap names are `tap-<8 hex of the id><nic index>`: every tap with this prefix is ours.
            let prefix = tap_name(id, 0);
            let prefix = &prefix[..prefix.len() - 1];
            for tap in ctx.network.list_taps().await.map_err(net_err)? {
                if tap.starts_with(prefix) {
                    ctx.network.remove_tap(&tap).await.map_err(net_err)?;
                }
            }
            ctx.network.remove_ports(prefix).await.map_err(net_err)?;
            unconfine(ctx, id, dir).await;
            remove_dir(dir).await
        })
    }

    fn write_snapshot<'a>(
        &'a self,
        ctx: &'a Host,
        vm: Option<&'a Vm>,
        dir: &'a InstanceDir,
        desired: &'a DesiredInstance,
        dest: &'a Path,
        id: SnapshotId,
        kind: SnapshotKind,
    ) -> BoxFuture<'a, Result<(), InstanceError>> {
        Box::pin(async move {
            let instance = desired.id;
            let err = |source| InstanceError::Snapshot { id: instance, snapshot: id, source };
            match (vm, kind) {
                (Some(vm), SnapshotKind::Full) => vm.snapshot_full(dest, &self.opts).await.map(drop).map_err(err),
                (Some(vm), SnapshotKind::Disk) => vm.snapshot_disks(dest, &self.opts).await.map(drop).map_err(err),
                (None, SnapshotKind::Disk) => {
                    // The spec a launch would use (idempotent: the disks exist and are kept).
                    let spec = prepare_spec(ctx, &self.opts, dir, desired).await?;
                    vmm::snapshot::snapshot_stopped(&spec, dest, &self.opts).await.map(drop).map_err(err)
                }
                (None, SnapshotKind::Full) => Err(InstanceError::InvalidState {
                    id: instance,
                    state: super::InstanceState::Stopped,
                    operation: "take a full snapshot of",
                }),
            }
        })
    }

    fn restore<'a>(
        &'a self,
        ctx: &'a Host,
        dir: &'a InstanceDir,
        desired: &'a DesiredInstance,
        snapshot: &'a SnapshotRecord,
        location: &'a Path,
    ) -> BoxFuture<'a, Result<Restored, InstanceError>> {
        Box::pin(async move {
            match snapshot.kind {
                SnapshotKind::Full => {
                    // The isolation rules are applied while QEMU loads the paused guest.
                    create_taps(ctx, desired).await?;
                    let vm = snapshots::restore_full(ctx, &self.opts, dir, desired, snapshot, location).await?;
                    Ok(Restored::Running(Box::new(vm)))
                }
                SnapshotKind::Disk => {
                    snapshots::restore_disks(dir, snapshot, location).await?;
                    Ok(Restored::Disks)
                }
            }
        })
    }

    fn uses_host_network(&self) -> bool {
        true
    }
}

/// No VMM at all: scale simulations only (see the module docs). Never a default.
#[derive(Debug)]
struct Simulated;

impl Driver for Simulated {
    fn resolve<'a>(&'a self, _: &'a Host, _: &'a DesiredInstance) -> BoxFuture<'a, Result<(), InstanceError>> {
        Box::pin(async { Ok(()) })
    }

    fn prepare<'a>(
        &'a self,
        _: &'a Host,
        _: &'a InstanceDir,
        _: &'a DesiredInstance,
    ) -> BoxFuture<'a, Result<(), InstanceError>> {
        Box::pin(async { Ok(()) })
    }

    fn launch<'a>(
        &'a self,
        _: &'a Host,
        _: &'a InstanceDir,
        _: &'a DesiredInstance,
    ) -> BoxFuture<'a, Result<Option<Vm>, InstanceError>> {
        Box::pin(async { Ok(None) })
    }

    fn attach<'a>(&'a self, _: &'a InstanceDir) -> BoxFuture<'a, Attached> {
        Box::pin(async { Attached::NoProcess })
    }

    fn is_alive(&self, _: Option<&Vm>) -> bool {
        true
    }

    fn destroy<'a>(
        &'a self,
        _: &'a Host,
        _: InstanceId,
        dir: &'a InstanceDir,
    ) -> BoxFuture<'a, Result<(), InstanceError>> {
        Box::pin(remove_dir(dir))
    }

    fn write_snapshot<'a>(
        &'a self,
        _: &'a Host,
        _: Option<&'a Vm>,
        _: &'a InstanceDir,
        _: &'a DesiredInstance,
        dest: &'a Path,
        _: SnapshotId,
        _: SnapshotKind,
    ) -> BoxFuture<'a, Result<(), InstanceError>> {
        // the record alone
        Box::pin(async move {
            tokio::fs::create_dir_all(dest)
                .await
                .map_err(|source| InstanceError::Persist { path: dest.to_owned(), source })
        })
    }

    fn restore<'a>(
        &'a self,
        _: &'a Host,
        _: &'a InstanceDir,
        _: &'a DesiredInstance,
        _: &'a SnapshotRecord,
        _: &'a Path,
    ) -> BoxFuture<'a, Result<Restored, InstanceError>> {
        Box::pin(async { Ok(Restored::NoProcess) })
    }

    fn uses_host_network(&self) -> bool {
        false
    }
}
