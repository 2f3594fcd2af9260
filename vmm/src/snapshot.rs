//! Snapshots: disk state, and optionally memory + device state, in a directory
//! (`snapshots/<id>/` locally; the agent uploads it to the snapshot store).
//!
//! ```text
//! snapshots/<id>/manifest.json   kind, the spec, file names
//!               disk-N.qcow2     each disk: its changes over the base image (qcow2, backing = base)
//!                                or a full copy when it has no backing file
//!               cidata.img       the config drive (the device must exist on restore)
//!               memory.state     full snapshots: QEMU's migration stream
//! ```
//! Consistency: the VM is paused (`stop` drains and flushes every block device) while disks
//! are copied with `qemu-img convert -U`, then resumed if it was running, so the disks are a
//! crash-consistent point in time (what the guest had not yet written from its own page cache
//! is not in them). A full snapshot migrates the paused VM into `memory.state`, opened
//! by the caller and passed to QEMU over QMP (`fd:`; QEMU 7.2 has no `file:` migration, and a
//! sandboxed QEMU may neither open the file nor spawn `cat`) with the bandwidth cap lifted, then copies the disks, so
//! memory and disks describe the same instant.
//!
//! Restore builds a new instance directory: disk copies, the config drive, the same devices in
//! the same order (device ids depend only on order, so other taps, another netns or another
//! directory are fine), then either boots (disk snapshot) or starts QEMU with
//! `-incoming defer`, feeds it `memory.state` and `cont`s (full snapshot).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::process::Command;

use crate::instance_dir::InstanceDir;
use crate::qemu::process::{LaunchOptions, find_program};
use crate::qmp::QmpError;
use crate::spec::{DiskFormat, DiskSpec, VmSpec};
use crate::vm::{Vm, VmError, VmStatus};

/// Migration bandwidth during a save (bytes/s): effectively unlimited (QEMU's default of
/// 128 MiB/s triples the save time of a 256 MiB guest).
const SAVE_BANDWIDTH: u64 = 64 * 1024 * 1024 * 1024;
/// How long a save or restore migration may take.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(300);

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// Disks only: restoring boots the guest.
    Disk,
    /// Disks plus memory and device state: restoring continues the guest where it was.
    Full,
}

/// `manifest.json` of a snapshot directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotManifest {
    /// Disk or full.
    pub kind: SnapshotKind,
    /// The spec of the VM when the snapshot was taken.
    pub spec: VmSpec,
    /// Disk files, relative to the snapshot directory, in spec order.
    pub disks: Vec<String>,
    /// Config drive file, relative to the snapshot directory.
    pub config_drive: Option<String>,
    /// Memory state file, relative to the snapshot directory (full snapshots).
    pub memory: Option<String>,
}

/// Snapshot and restore errors.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A VM operation failed.
    #[error("VM operation failed")]
    Vm(#[from] VmError),
    /// A QMP exchange failed.
    #[error("QMP exchange failed")]
    Qmp(#[from] QmpError),
    /// A snapshot file could not be read or written.
    #[error("cannot access snapshot file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `qemu-img` failed.
    #[error("qemu-img failed with {status} on {path}")]
    QemuImg {
        /// Its exit status.
        status: ExitStatus,
        /// The image.
        path: PathBuf,
        /// Its stderr.
        stderr: String,
    },
    /// `qemu-img` is not installed.
    #[error("{program} not found (install the Debian package qemu-utils)")]
    QemuImgNotFound {
        /// As configured.
        program: PathBuf,
    },
    /// The migration ended in a state other than `completed`.
    #[error("migration ended with status {status}")]
    MigrationFailed {
        /// QEMU's migration status.
        status: String,
        /// QEMU's error description, if any.
        detail: String,
    },
    /// The migration did not finish in time.
    #[error("migration did not finish within {after:?}")]
    MigrationTimeout {
        /// The timeout.
        after: Duration,
    },
    /// The restore parameters do not fit the snapshot.
    #[error("restore parameters do not match the snapshot: {reason}")]
    Mismatch {
        /// What does not match.
        reason: &'static str,
    },
    /// The VM is in a state that cannot be snapshotted (e.g. dead).
    #[error("cannot snapshot a VM in state {status:?}")]
    BadState {
        /// Its state.
        status: VmStatus,
    },
}

/// Where and how a snapshot is restored.
#[derive(Debug, Clone)]
pub struct RestoreParams {
    /// The new instance directory (created if missing).
    pub dir: InstanceDir,
    /// New VM name (default: the snapshot's).
    pub name: Option<String>,
    /// Tap names for the NICs, in order (default: the snapshot's).
    pub taps: Option<Vec<String>>,
    /// Network namespace (default: the snapshot's).
    pub netns: Option<Option<String>>,
    /// The restored VM's user and cgroups (never the snapshotted VM's: a new VM is a new user).
    pub confinement: Option<crate::qemu::jail::Confinement>,
    /// MAC addresses for the NICs, in order (default: the snapshot's). A restored guest keeps
    /// using the snapshot's MACs until it is told otherwise; these are the ones a reset gives it.
    pub macs: Option<Vec<crate::spec::MacAddr>>,
    /// The directory already holds the config drive the VM should see (a new instance's): the
    /// snapshot's is not copied over it.
    pub keep_config_drive: bool,
    /// Resume the guest after a full restore (otherwise it stays paused).
    pub resume: bool,
}

impl Vm {
    /// Takes a disk snapshot into `dest` (pausing the VM while the disks are copied).
    #[tracing::instrument(name = "vmm.snapshot_disks", skip_all)]
    pub async fn snapshot_disks(&self, dest: &Path, opts: &LaunchOptions) -> Result<SnapshotManifest, SnapshotError> {
        let was_running = self.pause_for_snapshot().await?;
        let result = copy_state(self.spec(), dest, opts, SnapshotKind::Disk, None).await;
        if was_running {
            self.resume().await?;
        }
        result
    }

    /// Takes a full snapshot (memory, devices, disks) into `dest`; the VM resumes afterwards if
    /// it was running.
    #[tracing::instrument(name = "vmm.snapshot_full", skip_all)]
    pub async fn snapshot_full(&self, dest: &Path, opts: &LaunchOptions) -> Result<SnapshotManifest, SnapshotError> {
        let was_running = self.pause_for_snapshot().await?;
        let result = async {
            create_dir(dest).await?;
            let memory = dest.join("memory.state");
            let qmp = self.qmp();
            qmp.execute("migrate-set-parameters", Some(json!({ "max-bandwidth": SAVE_BANDWIDTH }))).await?;
            let file =
                std::fs::File::create(&memory).map_err(|source| SnapshotError::Io { path: memory.clone(), source })?;
            qmp.pass_fd(MIGRATION_FD, std::os::fd::AsFd::as_fd(&file)).await?;
            drop(file);
            qmp.execute("migrate", Some(json!({ "uri": format!("fd:{MIGRATION_FD}") }))).await?;
            if let Err(e) = wait_for_migration(self).await {
                // Leave no migration running behind the error; it may already be over.
                let _ = qmp.execute("migrate_cancel", None).await;
                return Err(e);
            }
            copy_state(self.spec(), dest, opts, SnapshotKind::Full, Some("memory.state")).await
        }
        .await;
        if was_running {
            self.resume().await?;
        }
        result
    }

    /// Pauses a running VM; returns whether it was running.
    async fn pause_for_snapshot(&self) -> Result<bool, SnapshotError> {
        match self.status().await? {
            VmStatus::Running => {
                self.pause().await?;
                Ok(true)
            }
            VmStatus::Paused | VmStatus::Saved => Ok(false),
            status => Err(SnapshotError::BadState { status }),
        }
    }
}

/// Takes a disk snapshot of a VM that is not running, from its spec.
#[tracing::instrument(name = "vmm.snapshot_stopped", skip_all)]
pub async fn snapshot_stopped(
    spec: &VmSpec,
    dest: &Path,
    opts: &LaunchOptions,
) -> Result<SnapshotManifest, SnapshotError> {
    copy_state(spec, dest, opts, SnapshotKind::Disk, None).await
}

/// Polls `query-migrate` (with backoff) until the migration completes or fails.
async fn wait_for_migration(vm: &Vm) -> Result<(), SnapshotError> {
    let deadline = tokio::time::Instant::now() + MIGRATION_TIMEOUT;
    // A small VM's state loads in tens of milliseconds: look often at first.
    let mut delay = Duration::from_millis(2);
    loop {
        let info = vm.qmp().execute("query-migrate", None).await?;
        let status = info["status"].as_str().unwrap_or("none").to_owned();
        match status.as_str() {
            "completed" => return Ok(()),
            "failed" | "cancelled" => {
                return Err(SnapshotError::MigrationFailed {
                    status,
                    detail: info["error-desc"].as_str().unwrap_or_default().to_owned(),
                });
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SnapshotError::MigrationTimeout { after: MIGRATION_TIMEOUT });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 5 / 4).min(Duration::from_millis(50));
    }
}

/// Copies disks and config drive into `dest` and writes the manifest.
async fn copy_state(
    spec: &VmSpec,
    dest: &Path,
    opts: &LaunchOptions,
    kind: SnapshotKind,
    memory: Option<&str>,
) -> Result<SnapshotManifest, SnapshotError> {
    create_dir(dest).await?;
    let mut disks = Vec::with_capacity(spec.disks.len());
    for (i, disk) in spec.disks.iter().enumerate() {
        let name = format!("disk-{i}.qcow2");
        convert_disk(opts, disk, &dest.join(&name)).await?;
        disks.push(name);
    }
    let config_drive = match &spec.config_drive {
        Some(src) => {
            copy_file(src, &dest.join("cidata.img")).await?;
            Some("cidata.img".to_owned())
        }
        None => None,
    };
    let manifest =
        SnapshotManifest { kind, spec: spec.clone(), disks, config_drive, memory: memory.map(str::to_owned) };
    write_manifest(dest, &manifest).await?;
    tracing::info!(dest = %dest.display(), ?kind, "snapshot written");
    Ok(manifest)
}

/// `qemu-img convert -U`: the disk's changes over its backing file (qcow2 with the same backing
/// file), or a full qcow2 copy when it has none.
async fn convert_disk(opts: &LaunchOptions, disk: &DiskSpec, out: &Path) -> Result<(), SnapshotError> {
    let qemu_img = find_program(&opts.qemu_img)
        .ok_or_else(|| SnapshotError::QemuImgNotFound { program: opts.qemu_img.clone() })?;
    let backing = backing_file(&qemu_img, &disk.path).await?;
    let mut cmd = Command::new(&qemu_img);
    cmd.args(["convert", "-U", "-f", disk.format.as_str(), "-O", "qcow2"]);
    if let Some((file, format)) = &backing {
        cmd.arg("-B").arg(file).args(["-F", format]);
    }
    cmd.arg(&disk.path).arg(out);
    run_qemu_img(cmd, out).await.map(drop)
}

/// The absolute backing file and its format, from `qemu-img info`.
async fn backing_file(qemu_img: &Path, image: &Path) -> Result<Option<(PathBuf, String)>, SnapshotError> {
    let mut cmd = Command::new(qemu_img);
    cmd.args(["info", "-U", "--output=json"]).arg(image);
    let out = run_qemu_img(cmd, image).await?;
    let info: serde_json::Value = serde_json::from_slice(&out).map_err(|e| SnapshotError::Io {
        path: image.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    let file = info["full-backing-filename"].as_str().or_else(|| info["backing-filename"].as_str());
    Ok(file.map(|f| {
        let format = info["backing-filename-format"].as_str().unwrap_or(DiskFormat::Qcow2.as_str()).to_owned();
        (PathBuf::from(f), format)
    }))
}

pub(crate) async fn run_qemu_img(mut cmd: Command, path: &Path) -> Result<Vec<u8>, SnapshotError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| SnapshotError::Io { path: path.to_owned(), source })?;
    if !out.status.success() {
        return Err(SnapshotError::QemuImg {
            status: out.status,
            path: path.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out.stdout)
}

async fn create_dir(dir: &Path) -> Result<(), SnapshotError> {
    tokio::fs::create_dir_all(dir).await.map_err(|source| SnapshotError::Io { path: dir.to_owned(), source })
}

async fn copy_file(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    tokio::fs::copy(from, to).await.map(drop).map_err(|source| SnapshotError::Io { path: from.to_owned(), source })
}

/// Writes `manifest.json` into a snapshot directory.
pub async fn write_manifest(snapshot: &Path, manifest: &SnapshotManifest) -> Result<(), SnapshotError> {
    let path = snapshot.join("manifest.json");
    let json = serde_json::to_vec_pretty(manifest)
        .map_err(|e| SnapshotError::Io { path: path.clone(), source: std::io::Error::other(e) })?;
    tokio::fs::write(&path, json).await.map_err(|source| SnapshotError::Io { path, source })
}

/// Reads `manifest.json` from a snapshot directory.
pub async fn read_manifest(snapshot: &Path) -> Result<SnapshotManifest, SnapshotError> {
    let path = snapshot.join("manifest.json");
    let bytes = tokio::fs::read(&path).await.map_err(|source| SnapshotError::Io { path: path.clone(), source })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| SnapshotError::Io { path, source: std::io::Error::new(std::io::ErrorKind::InvalidData, e) })
}

/// The spec a restore launches: the snapshot's, with files in the new directory and the
/// caller's name, taps and netns (pure).
pub fn restore_spec(manifest: &SnapshotManifest, params: &RestoreParams) -> Result<VmSpec, SnapshotError> {
    let mut spec = manifest.spec.clone();
    if manifest.disks.len() != spec.disks.len() {
        return Err(SnapshotError::Mismatch { reason: "manifest lists a different number of disks than its spec" });
    }
    for (i, disk) in spec.disks.iter_mut().enumerate() {
        disk.path = params.dir.disk(i);
        disk.format = DiskFormat::Qcow2;
        disk.base = None;
    }
    spec.config_drive = manifest.config_drive.as_ref().map(|_| params.dir.config_drive());
    if let Some(name) = &params.name {
        spec.name = name.clone();
    }
    if let Some(taps) = &params.taps {
        if taps.len() != spec.nics.len() {
            return Err(SnapshotError::Mismatch { reason: "number of taps differs from the number of NICs" });
        }
        for (nic, tap) in spec.nics.iter_mut().zip(taps) {
            nic.tap = tap.clone();
        }
    }
    if let Some(macs) = &params.macs {
        if macs.len() != spec.nics.len() {
            return Err(SnapshotError::Mismatch { reason: "number of MAC addresses differs from the number of NICs" });
        }
        for (nic, mac) in spec.nics.iter_mut().zip(macs) {
            nic.mac = *mac;
        }
    }
    if let Some(netns) = &params.netns {
        spec.netns = netns.clone();
    }
    spec.confinement = params.confinement.clone();
    Ok(spec)
}

/// Restores a snapshot into `params.dir` and returns the running (or, for a full snapshot with
/// `resume: false`, paused) VM.
#[tracing::instrument(name = "vmm.restore", skip_all)]
pub async fn restore(snapshot: &Path, params: &RestoreParams, opts: &LaunchOptions) -> Result<Vm, SnapshotError> {
    let manifest = read_manifest(snapshot).await?;
    let spec = restore_spec(&manifest, params)?;
    create_dir(params.dir.root()).await?;
    for (i, name) in manifest.disks.iter().enumerate() {
        copy_file(&snapshot.join(name), &params.dir.disk(i)).await?;
    }
    match &manifest.config_drive {
        Some(_) if params.keep_config_drive => {}
        Some(name) => copy_file(&snapshot.join(name), &params.dir.config_drive()).await?,
        None => {}
    }
    let memory = match (manifest.kind, &manifest.memory) {
        (SnapshotKind::Disk, _) => return Ok(Vm::start(spec, params.dir.clone(), opts).await?),
        (SnapshotKind::Full, Some(m)) => snapshot.join(m),
        (SnapshotKind::Full, None) => {
            return Err(SnapshotError::Mismatch { reason: "full snapshot without memory state" });
        }
    };
    if !memory.is_file() {
        return Err(SnapshotError::Io { path: memory, source: std::io::ErrorKind::NotFound.into() });
    }
    let vm = Vm::launch(spec, params.dir.clone(), opts, true).await?;
    let result = async {
        let file = std::fs::File::open(&memory).map_err(|source| SnapshotError::Io { path: memory.clone(), source })?;
        vm.qmp().pass_fd(MIGRATION_FD, std::os::fd::AsFd::as_fd(&file)).await?;
        drop(file);
        vm.qmp().execute("migrate-incoming", Some(json!({ "uri": format!("fd:{MIGRATION_FD}") }))).await?;
        wait_for_migration(&vm).await?;
        if params.resume {
            vm.resume().await?;
        }
        Ok::<(), SnapshotError>(())
    }
    .await;
    if let Err(e) = result {
        // A half-restored VM is useless; do not leave it behind.
        let _ = vm.kill().await;
        return Err(e);
    }
    tracing::info!(snapshot = %snapshot.display(), pid = vm.pid(), "snapshot restored");
    Ok(vm)
}

/// The name QEMU knows a migration's file descriptor by (`getfd`, then `fd:NAME`): QEMU opens
/// no file and spawns nothing (its sandbox forbids spawning) to save or load memory.
const MIGRATION_FD: &str = "migration";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::spec::{Accel, BootSpec, NicSpec};

    #[test]
    fn restore_spec_moves_files_and_swaps_taps() {
        let spec = VmSpec {
            name: "a".into(),
            vcpus: 1,
            memory_mib: 256,
            boot: BootSpec::DirectKernel { kernel: "/k".into(), initrd: None, cmdline: String::new() },
            disks: vec![DiskSpec {
                path: "/old/disk-0.qcow2".into(),
                format: DiskFormat::Qcow2,
                base: None,
                read_only: false,
            }],
            nics: vec![NicSpec { tap: "tap-old".into(), mac: "52:54:00:00:00:01".parse().unwrap() }],
            config_drive: Some("/old/cidata.img".into()),
            accel: Accel::Tcg,
            netns: Some("ns-old".into()),
            confinement: None,
            guest_agent: false,
        };
        let manifest = SnapshotManifest {
            kind: SnapshotKind::Full,
            spec,
            disks: vec!["disk-0.qcow2".into()],
            config_drive: Some("cidata.img".into()),
            memory: Some("memory.state".into()),
        };
        let mut params = RestoreParams {
            dir: InstanceDir::new("/new"),
            name: Some("b".into()),
            taps: Some(vec!["tap-new".into()]),
            netns: Some(None),
            confinement: None,
            macs: None,
            keep_config_drive: false,
            resume: true,
        };
        let s = restore_spec(&manifest, &params).unwrap();
        assert_eq!(s.name, "b");
        assert_eq!(s.disks[0].path, Path::new("/new/disk-0.qcow2"));
        assert_eq!(s.config_drive.as_deref(), Some(Path::new("/new/cidata.img")));
        assert_eq!(s.nics[0].tap, "tap-new");
        assert_eq!(s.nics[0].mac, manifest.spec.nics[0].mac);
        assert_eq!(s.netns, None);

        let new_mac: crate::spec::MacAddr = "52:54:00:00:00:02".parse().unwrap();
        params.macs = Some(vec![new_mac]);
        assert_eq!(restore_spec(&manifest, &params).unwrap().nics[0].mac, new_mac);
        params.macs = Some(vec![]);
        assert!(matches!(restore_spec(&manifest, &params), Err(SnapshotError::Mismatch { .. })));
        params.macs = None;
        params.taps = Some(vec![]);
        assert!(matches!(restore_spec(&manifest, &params), Err(SnapshotError::Mismatch { .. })));
    }
}
