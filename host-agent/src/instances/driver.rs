//! How a runner turns a desired instance into a VMM process: the QEMU driver (images, taps,
//! disks, config drive, `vmm::Vm`), or the simulated driver.
//!
//! The simulated driver exists only for scale simulations (thousands of agents on one machine):
//! it keeps the same state machine and `agent.json`, with instant transitions and no process,
//! tap, disk or image. It is never the default; a configuration must select it explicitly, and
//! end-to-end tests never use it.

use std::path::PathBuf;

use vmm::spec::{Accel, BootSpec, NicSpec};
use vmm::{InstanceDir, LaunchOptions, Vm, VmSpec};

use super::runner::Ctx;
use super::{BootMode, DesiredInstance, InstanceError, InstanceId};
use crate::images::ImageError;
use crate::network::tap_name;
use crate::storage;

/// Which VMM driver the manager uses.
#[derive(Debug, Clone)]
pub enum DriverKind {
    /// Real VMs under QEMU (the default).
    Qemu(LaunchOptions),
    /// No VMM at all: scale simulations only (see the module docs). Never a default.
    Simulated,
}

impl Default for DriverKind {
    fn default() -> Self {
        DriverKind::Qemu(LaunchOptions::default())
    }
}

/// The taps of `desired`, in NIC order.
pub(super) fn taps(desired: &DesiredInstance) -> Vec<String> {
    (0..desired.nics.len()).map(|i| tap_name(desired.id, i)).collect()
}

/// The image files of an instance in the cache.
pub(super) struct Resolved {
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    disk: Option<PathBuf>,
}

/// Fetches (or finds in the cache) every image file of `desired`.
pub(super) async fn resolve_images(ctx: &Ctx, desired: &DesiredInstance) -> Result<Resolved, InstanceError> {
    let img = &desired.image;
    let fetch = |sha: Option<String>, size: Option<u64>| async move {
        match sha {
            Some(sha) => ctx.images.ensure(&sha, size, ctx.blob_source.as_ref()).await.map(Some),
            None => Ok::<_, ImageError>(None),
        }
    };
    let map = |source| InstanceError::Image { id: desired.id, source };
    Ok(Resolved {
        kernel: fetch(img.kernel_sha256.clone(), None).await.map_err(map)?,
        initrd: fetch(img.initrd_sha256.clone(), None).await.map_err(map)?,
        disk: fetch(img.disk_sha256.clone(), img.disk_size_bytes).await.map_err(map)?,
    })
}

/// Creates the taps of `desired` on the bridge (before QEMU opens them). Idempotent.
pub(super) async fn ensure_taps(ctx: &Ctx, desired: &DesiredInstance) -> Result<(), InstanceError> {
    for tap in taps(desired) {
        ctx.network.ensure_tap(&tap).await.map_err(|source| InstanceError::Network { id: desired.id, source })?;
    }
    Ok(())
}

/// The VM name on QEMU's command line: `i-<uuid without dashes>`.
pub(super) fn vm_name(id: InstanceId) -> String {
    format!("i-{}", id.0.simple())
}

/// Fetches images, creates taps, disks and the config drive: everything but the process.
/// Idempotent. Returns the spec to launch.
pub(super) async fn prepare(ctx: &Ctx, dir: &InstanceDir, desired: &DesiredInstance) -> Result<VmSpec, InstanceError> {
    let id = desired.id;
    let opts = match &ctx.config.driver {
        DriverKind::Qemu(opts) => opts,
        DriverKind::Simulated => {
            return Err(InstanceError::InvalidSpec { id, reason: "prepare called for a simulated instance".into() });
        }
    };
    let images = resolve_images(ctx, desired).await?;
    ensure_taps(ctx, desired).await?;
    let storage_err = |source| InstanceError::Storage { id, source };
    let disks = storage::ensure_root_disk(&opts.qemu_img, dir, images.disk.as_deref(), desired.disk_bytes)
        .await
        .map_err(storage_err)?;
    storage::build_config_drive(dir, desired, ctx.config.host_subnet).await.map_err(storage_err)?;
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
    })
}

/// Prepares and launches the VM.
pub(super) async fn launch(ctx: &Ctx, dir: &InstanceDir, desired: &DesiredInstance) -> Result<Vm, InstanceError> {
    let spec = prepare(ctx, dir, desired).await?;
    let opts = launch_options(ctx);
    Vm::start(spec, dir.clone(), &opts).await.map_err(|source| InstanceError::Vmm {
        id: desired.id,
        operation: "start",
        source,
    })
}

/// The QEMU launch options (defaults for the simulated driver, which never launches).
pub(super) fn launch_options(ctx: &Ctx) -> LaunchOptions {
    match &ctx.config.driver {
        DriverKind::Qemu(opts) => opts.clone(),
        DriverKind::Simulated => LaunchOptions::default(),
    }
}

/// Removes an instance's host resources: its VMM process (by pidfile), its taps (all indices
/// its id could have used) and its directory.
pub(super) async fn destroy(ctx: &Ctx, id: InstanceId, dir: &InstanceDir) -> Result<(), InstanceError> {
    if matches!(ctx.config.driver, DriverKind::Qemu(_)) {
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
    }
    match tokio::fs::remove_dir_all(dir.root()).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(InstanceError::Persist { path: dir.root().to_owned(), source }),
    }
}
