//! An instance's disks and config drive, in its instance directory.
//!
//! ```text
//!  image with a disk (firmware or kernel+disk):  disk-0.qcow2 ──backing──▶ images/sha256/<disk>
//!  direct-kernel image without a disk:           disk-0.qcow2 of disk_bytes (none if 0), one ext4
//!                                                filesystem labelled `cloud-data` (the guest
//!                                                keeps its state there: `minimal` mounts it and
//!                                                keeps /root, /home and its SSH host keys on it)
//!  every instance:                               cidata.img (NoCloud: meta-data, user-data,
//!                                                network-config with one entry per NIC)
//! ```
//! Disks are created once (an existing `disk-0.qcow2` is the instance's data and is never
//! recreated); the config drive is rebuilt at every start, so a changed key or address applies
//! on the next boot. `qemu-img` runs as a child process.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use tokio::io::AsyncReadExt;
use vmm::InstanceDir;
use vmm::config_drive::{self, Cidr, ConfigDriveError, ConfigDriveFormat, ConfigDriveParams, NicNetwork};
use vmm::spec::{BaseImage, DiskFormat, DiskSpec};

use crate::spec::DesiredInstance;

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// `qemu-img` is not installed.
    #[error("{program} not found (install the Debian package qemu-utils)")]
    QemuImgNotFound {
        /// The program as configured.
        program: PathBuf,
    },
    /// `qemu-img` could not be run.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `qemu-img create` failed.
    #[error("qemu-img failed with {status} creating {path}: {stderr}")]
    QemuImg {
        /// The disk being created.
        path: PathBuf,
        /// Exit status.
        status: ExitStatus,
        /// Its stderr.
        stderr: String,
    },
    /// `mkfs.ext4` is not installed.
    #[error("{program} not found (install the Debian package e2fsprogs)")]
    MkfsNotFound {
        /// The program.
        program: PathBuf,
    },
    /// `mkfs.ext4` failed.
    #[error("mkfs.ext4 failed with {status} formatting {path}: {stderr}")]
    Mkfs {
        /// The file being formatted.
        path: PathBuf,
        /// Exit status.
        status: ExitStatus,
        /// Its stderr.
        stderr: String,
    },
    /// Reading the base image header failed.
    #[error("cannot read base image {path}")]
    ReadBase {
        /// The base image.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Building the config drive failed.
    #[error("cannot build the config drive")]
    ConfigDrive(#[from] ConfigDriveError),
}

/// Detects a base image's format from its header (`QFI\xfb` is qcow2; anything else is raw).
pub async fn detect_format(path: &Path) -> Result<DiskFormat, StorageError> {
    let read_err = |source| StorageError::ReadBase { path: path.to_owned(), source };
    let mut f = tokio::fs::File::open(path).await.map_err(read_err)?;
    let mut magic = [0u8; 4];
    match f.read_exact(&mut magic).await {
        Ok(_) if &magic == b"QFI\xfb" => Ok(DiskFormat::Qcow2),
        Ok(_) => Ok(DiskFormat::Raw),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(DiskFormat::Raw),
        Err(e) => Err(read_err(e)),
    }
}

/// The filesystem label of the data disk made for a kernel image without a disk.
pub const DATA_DISK_LABEL: &str = "cloud-data";

/// Creates `disk-0.qcow2` unless it exists: an overlay on `base` when given, else a data disk of
/// `size_bytes` holding an empty ext4 filesystem labelled [`DATA_DISK_LABEL`] (no disk at all
/// when that is 0). Returns the disks to attach.
pub async fn ensure_root_disk(
    qemu_img: &Path,
    dir: &InstanceDir,
    base: Option<&Path>,
    size_bytes: u64,
) -> Result<Vec<DiskSpec>, StorageError> {
    let path = dir.disk(0);
    let base = match base {
        Some(b) => Some(BaseImage { path: b.to_owned(), format: detect_format(b).await? }),
        None => None,
    };
    if base.is_none() && size_bytes == 0 {
        return Ok(Vec::new());
    }
    if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
        let program = vmm::qemu::process::find_program(qemu_img)
            .ok_or_else(|| StorageError::QemuImgNotFound { program: qemu_img.to_owned() })?;
        let tmp = path.with_extension("qcow2.tmp");
        let mut cmd = tokio::process::Command::new(&program);
        let raw = path.with_extension("raw.tmp");
        match &base {
            Some(b) => {
                cmd.args(["create", "-q", "-f", "qcow2"]).arg("-b").arg(&b.path).args(["-F", b.format.as_str()]);
                cmd.arg(&tmp);
                if size_bytes > 0 {
                    cmd.arg(size_bytes.to_string());
                }
            }
            None => {
                format_ext4(&raw, size_bytes).await?;
                cmd.args(["convert", "-q", "-f", "raw", "-O", "qcow2"]).arg(&raw).arg(&tmp);
            }
        }
        let out = cmd.kill_on_drop(true).output().await.map_err(|source| StorageError::Spawn { program, source });
        let _ = tokio::fs::remove_file(&raw).await;
        let out = out?;
        if !out.status.success() {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(StorageError::QemuImg {
                path,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        tokio::fs::rename(&tmp, &path).await.map_err(|source| StorageError::ReadBase { path: path.clone(), source })?;
    }
    Ok(vec![DiskSpec { path, format: DiskFormat::Qcow2, base, read_only: false }])
}

/// Makes `path` a sparse raw file of `size_bytes` holding an empty ext4 filesystem.
async fn format_ext4(path: &Path, size_bytes: u64) -> Result<(), StorageError> {
    let program = PathBuf::from("mkfs.ext4");
    let program = vmm::qemu::process::find_program(&program).ok_or(StorageError::MkfsNotFound { program })?;
    let file = tokio::fs::File::create(path)
        .await
        .map_err(|source| StorageError::ReadBase { path: path.to_owned(), source })?;
    file.set_len(size_bytes).await.map_err(|source| StorageError::ReadBase { path: path.to_owned(), source })?;
    drop(file);
    let out = tokio::process::Command::new(&program)
        .args(["-q", "-F", "-L", DATA_DISK_LABEL, "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1"])
        .arg(path)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| StorageError::Spawn { program, source })?;
    if !out.status.success() {
        let _ = tokio::fs::remove_file(path).await;
        return Err(StorageError::Mkfs {
            path: path.to_owned(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// The config drive parameters of `desired`: its keys, user-data and one static network entry
/// per NIC, with the address, prefix and gateway the control plane chose.
pub fn config_drive_params(desired: &DesiredInstance) -> ConfigDriveParams {
    ConfigDriveParams {
        instance_id: desired.id.to_string(),
        hostname: desired.hostname.clone(),
        ssh_authorized_keys: desired.ssh_authorized_keys.clone(),
        user_data: desired.user_data.clone(),
        network: desired
            .nics
            .iter()
            .map(|nic| NicNetwork {
                mac: nic.mac,
                addresses: vec![Cidr { addr: IpAddr::V4(nic.address.addr), prefix_len: nic.address.prefix }],
                gateway: Some(IpAddr::V4(nic.gateway)),
                nameservers: vec![],
            })
            .collect(),
    }
}

/// Writes `cidata.img` for `desired` (atomically, via vmm's temp file + rename).
pub async fn build_config_drive(dir: &InstanceDir, desired: &DesiredInstance) -> Result<(), StorageError> {
    let params = config_drive_params(desired);
    config_drive::build(&params, ConfigDriveFormat::Vfat, &dir.config_drive()).await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn detects_qcow2_and_raw() {
        let tmp = tempfile::tempdir().unwrap();
        let raw = tmp.path().join("raw");
        std::fs::write(&raw, b"hello world").unwrap();
        assert_eq!(detect_format(&raw).await.unwrap(), DiskFormat::Raw);
        let q = tmp.path().join("q");
        std::fs::write(&q, b"QFI\xfb\0\0\0\x03").unwrap();
        assert_eq!(detect_format(&q).await.unwrap(), DiskFormat::Qcow2);
    }

    #[tokio::test]
    async fn creates_overlays_and_blank_disks_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = InstanceDir::new(tmp.path());
        assert!(ensure_root_disk(Path::new("qemu-img"), &dir, None, 0).await.unwrap().is_empty());
        let base = tmp.path().join("base.raw");
        std::fs::write(&base, vec![0u8; 1024 * 1024]).unwrap();
        let disks = ensure_root_disk(Path::new("qemu-img"), &dir, Some(&base), 4 * 1024 * 1024).await.unwrap();
        assert_eq!(disks.len(), 1);
        assert_eq!(disks[0].base.as_ref().unwrap().format, DiskFormat::Raw);
        let header = std::fs::read(dir.disk(0)).unwrap();
        assert_eq!(&header[..4], b"QFI\xfb");
        // Idempotent: the existing disk is kept.
        ensure_root_disk(Path::new("qemu-img"), &dir, Some(&base), 4 * 1024 * 1024).await.unwrap();
        // Without a base: a data disk with an ext4 filesystem labelled cloud-data.
        let data = InstanceDir::new(tmp.path().join("data"));
        std::fs::create_dir_all(data.root()).unwrap();
        let disks = ensure_root_disk(Path::new("qemu-img"), &data, None, 64 * 1024 * 1024).await.unwrap();
        assert_eq!((disks.len(), disks[0].base.is_none()), (1, true));
        let raw = tmp.path().join("data.raw");
        let out = std::process::Command::new("qemu-img")
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(data.disk(0))
            .arg(&raw)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let out = std::process::Command::new("blkid").args(["-o", "export"]).arg(&raw).output().unwrap();
        let info = String::from_utf8_lossy(&out.stdout);
        assert!(info.contains("TYPE=ext4") && info.contains("LABEL=cloud-data"), "{info}");
        let err =
            ensure_root_disk(Path::new("/nonexistent/qemu-img"), &InstanceDir::new(tmp.path().join("x")), None, 1)
                .await
                .unwrap_err();
        assert!(matches!(err, StorageError::QemuImgNotFound { .. }));
    }
}
