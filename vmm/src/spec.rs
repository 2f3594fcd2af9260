//! The VM spec: what one VM is made of (vCPUs, memory, boot mode, disks, NICs, config drive,
//! accelerator), as the host agent writes it to `config.json`.
//!
//! Specs are input: every struct is `#[serde(deny_unknown_fields)]`, and [`VmSpec::validate`]
//! turns every problem we can detect before QEMU starts into a typed [`SpecError`] (zero vCPUs,
//! memory that is not a whole number of MiB, missing kernel/disk/base files, duplicate MACs or
//! taps, names that would not survive the QEMU command line).

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Largest number of vCPUs we accept (QEMU's microvm/q35 limits are higher; this is a sanity cap).
pub const MAX_VCPUS: u32 = 255;
/// Smallest guest memory we accept, in MiB.
pub const MIN_MEMORY_MIB: u64 = 16;

/// Everything needed to launch one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Human-readable VM name (QEMU `-name`); `[A-Za-z0-9._-]`, at most 64 characters.
    pub name: String,
    /// Number of virtual CPUs (1..=255).
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// How the guest boots.
    pub boot: BootSpec,
    /// Block devices, in guest order (`vda`, `vdb`, … before the config drive).
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    /// Network interfaces, in guest order.
    #[serde(default)]
    pub nics: Vec<NicSpec>,
    /// NoCloud config drive image (see [`crate::config_drive`]), attached read-only after the disks.
    #[serde(default)]
    pub config_drive: Option<PathBuf>,
    /// Accelerator; `auto` picks KVM when the CPU has vmx/svm, TCG otherwise.
    #[serde(default)]
    pub accel: Accel,
    /// Network namespace the taps are in (they are opened there for QEMU).
    #[serde(default)]
    pub netns: Option<String>,
    /// The user QEMU runs as and its cgroups (`None`: the caller's user, no cgroups).
    #[serde(default)]
    pub confinement: Option<crate::qemu::jail::Confinement>,
    /// A virtio-serial channel for a guest agent (`org.qemu.guest_agent.0`, socket `qga.sock`).
    /// Part of the machine a memory state belongs to: a restore keeps the snapshot's choice.
    #[serde(default)]
    pub guest_agent: bool,
}

/// Boot mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BootSpec {
    /// Direct kernel boot on QEMU's `microvm` machine (ACPI on, virtio-mmio devices).
    DirectKernel {
        /// Kernel image (bzImage or PVH vmlinux).
        kernel: PathBuf,
        /// Optional initramfs.
        #[serde(default)]
        initrd: Option<PathBuf>,
        /// Kernel command line; `tsc_early_khz=` is appended under TCG when absent.
        #[serde(default)]
        cmdline: String,
    },
    /// Firmware boot of a whole-disk image on `q35` (virtio-pci devices).
    Firmware {
        /// Which firmware.
        firmware: Firmware,
    },
}

/// Firmware for [`BootSpec::Firmware`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Firmware {
    /// SeaBIOS (legacy BIOS), QEMU's default.
    Seabios,
    /// OVMF (UEFI) with a per-VM variable store `nvram.fd` in the instance directory.
    Ovmf,
}

/// Image file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskFormat {
    /// QEMU copy-on-write format; required for overlays.
    Qcow2,
    /// Raw image.
    Raw,
}

impl DiskFormat {
    /// The name QEMU and qemu-img use.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

/// A read-only base image that a qcow2 overlay is backed by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseImage {
    /// Base image path (never written).
    pub path: PathBuf,
    /// Base image format.
    pub format: DiskFormat,
}

/// One block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// The image the VM reads and writes. When `base` is set and this file does not exist, it is
    /// created at start as a qcow2 overlay (`qemu-img create -f qcow2 -b base -F fmt`).
    pub path: PathBuf,
    /// Format of `path`.
    pub format: DiskFormat,
    /// Backing base image for an overlay.
    #[serde(default)]
    pub base: Option<BaseImage>,
    /// Attach read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// One network interface, backed by a host tap device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicSpec {
    /// Tap device name (created by the caller; QEMU opens it).
    pub tap: String,
    /// Guest MAC address.
    pub mac: MacAddr,
}

/// Accelerator choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    /// KVM when `/proc/cpuinfo` shows vmx or svm, else TCG.
    #[default]
    Auto,
    /// Hardware virtualization.
    Kvm,
    /// QEMU's software emulator.
    Tcg,
}

/// An Ethernet MAC address, written `52:54:00:12:34:56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// True for a multicast (group) address, which a NIC must not use.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

/// A string that is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {input:?} (expected six hex octets separated by ':')")]
pub struct ParseMacError {
    /// What was given.
    pub input: String,
}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError { input: s.to_owned() };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A spec that cannot be launched.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The JSON does not describe a spec (syntax, unknown field, wrong type).
    #[error("malformed VM spec")]
    Malformed {
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The name is empty, too long, or has characters outside `[A-Za-z0-9._-]`.
    #[error("invalid VM name {name:?}")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// vCPU count outside 1..=[`MAX_VCPUS`].
    #[error("invalid vCPU count {vcpus} (must be 1..={MAX_VCPUS})")]
    InvalidVcpus {
        /// The count given.
        vcpus: u32,
    },
    /// Memory below [`MIN_MEMORY_MIB`].
    #[error("invalid memory size {memory_mib} MiB (minimum {MIN_MEMORY_MIB} MiB)")]
    InvalidMemory {
        /// The size given.
        memory_mib: u64,
    },
    /// A file the spec refers to does not exist.
    #[error("{what} {path} does not exist")]
    MissingFile {
        /// Which file (kernel, initrd, disk, base image, config drive).
        what: &'static str,
        /// Its path.
        path: PathBuf,
    },
    /// A path that is not absolute (QEMU runs with `/` as its working directory).
    #[error("{what} path {path} is not absolute")]
    RelativePath {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
    },
    /// A path QEMU's option syntax cannot carry (a comma, or not UTF-8).
    #[error("{what} path {path} contains a comma or is not UTF-8")]
    UnrepresentablePath {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
    },
    /// A disk with a base image must be a qcow2 overlay.
    #[error("disk {index} has a base image but format {format:?} (overlays are qcow2)")]
    OverlayNotQcow2 {
        /// Disk index.
        index: usize,
        /// The format given.
        format: DiskFormat,
    },
    /// Tap names are at most 15 characters of `[A-Za-z0-9_.-]`.
    #[error("invalid tap name {tap:?}")]
    InvalidTap {
        /// The name given.
        tap: String,
    },
    /// Two NICs share a tap.
    #[error("tap {tap} is used by two NICs")]
    DuplicateTap {
        /// The tap name.
        tap: String,
    },
    /// Two NICs share a MAC address.
    #[error("MAC address {mac} is used by two NICs")]
    DuplicateMac {
        /// The address.
        mac: MacAddr,
    },
    /// A multicast MAC address.
    #[error("MAC address {mac} is a multicast address")]
    MulticastMac {
        /// The address.
        mac: MacAddr,
    },
    /// The kernel command line contains a newline or NUL.
    #[error("kernel command line contains control characters")]
    InvalidCmdline,
    /// A network namespace name `ip netns` would not accept.
    #[error("invalid network namespace name {netns:?}")]
    InvalidNetns {
        /// The name given.
        netns: String,
    },
}

impl VmSpec {
    /// The image files the VM boots from and reads but never writes, shared with other VMs:
    /// its disks' base images, and its kernel and initrd.
    pub fn shared_files(&self) -> Vec<&Path> {
        let mut files: Vec<&Path> =
            self.disks.iter().filter_map(|d| d.base.as_ref()).map(|b| b.path.as_path()).collect();
        if let BootSpec::DirectKernel { kernel, initrd, .. } = &self.boot {
            files.push(kernel);
            files.extend(initrd.as_deref());
        }
        files
    }

    /// Parses and validates a JSON spec.
    pub fn from_json(json: &str) -> Result<VmSpec, SpecError> {
        let spec: VmSpec = serde_json::from_str(json).map_err(|source| SpecError::Malformed { source })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks everything that can be checked before launching: sizes, names, files, uniqueness.
    ///
    /// A disk whose `path` does not exist yet is fine when it has a `base` (the overlay is
    /// created at start).
    pub fn validate(&self) -> Result<(), SpecError> {
        if !is_simple_name(&self.name, 64) {
            return Err(SpecError::InvalidName { name: self.name.clone() });
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(SpecError::InvalidVcpus { vcpus: self.vcpus });
        }
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(SpecError::InvalidMemory { memory_mib: self.memory_mib });
        }
        match &self.boot {
            BootSpec::DirectKernel { kernel, initrd, cmdline } => {
                check_file("kernel", kernel)?;
                if let Some(initrd) = initrd {
                    check_file("initrd", initrd)?;
                }
                if cmdline.chars().any(|c| c.is_control()) {
                    return Err(SpecError::InvalidCmdline);
                }
            }
            BootSpec::Firmware { .. } => {}
        }
        for (index, disk) in self.disks.iter().enumerate() {
            if let Some(base) = &disk.base {
                if disk.format != DiskFormat::Qcow2 {
                    return Err(SpecError::OverlayNotQcow2 { index, format: disk.format });
                }
                check_file("base image", &base.path)?;
                check_path("disk", &disk.path)?;
            } else {
                check_file("disk", &disk.path)?;
            }
        }
        if let Some(drive) = &self.config_drive {
            check_file("config drive", drive)?;
        }
        let mut taps = HashSet::new();
        let mut macs = HashSet::new();
        for nic in &self.nics {
            if nic.tap.len() > 15 || !is_simple_name(&nic.tap, 15) {
                return Err(SpecError::InvalidTap { tap: nic.tap.clone() });
            }
            if nic.mac.is_multicast() {
                return Err(SpecError::MulticastMac { mac: nic.mac });
            }
            if !taps.insert(nic.tap.as_str()) {
                return Err(SpecError::DuplicateTap { tap: nic.tap.clone() });
            }
            if !macs.insert(nic.mac) {
                return Err(SpecError::DuplicateMac { mac: nic.mac });
            }
        }
        if let Some(netns) = &self.netns
            && !is_simple_name(netns, 64)
        {
            return Err(SpecError::InvalidNetns { netns: netns.clone() });
        }
        Ok(())
    }
}

/// `[A-Za-z0-9._-]{1,max}`, not starting with `-` or `.`.
fn is_simple_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && !s.starts_with(['-', '.'])
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_path(what: &'static str, path: &Path) -> Result<(), SpecError> {
    if !path.is_absolute() {
        return Err(SpecError::RelativePath { what, path: path.to_owned() });
    }
    match path.to_str() {
        Some(s) if !s.contains(',') && !s.chars().any(char::is_control) => Ok(()),
        _ => Err(SpecError::UnrepresentablePath { what, path: path.to_owned() }),
    }
}

fn check_file(what: &'static str, path: &Path) -> Result<(), SpecError> {
    check_path(what, path)?;
    if !path.is_file() {
        return Err(SpecError::MissingFile { what, path: path.to_owned() });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec_with_kernel(dir: &Path) -> VmSpec {
        let kernel = dir.join("vmlinuz");
        std::fs::write(&kernel, b"k").unwrap();
        VmSpec {
            name: "vm-1".into(),
            vcpus: 1,
            memory_mib: 256,
            boot: BootSpec::DirectKernel { kernel, initrd: None, cmdline: "console=ttyS0".into() },
            disks: vec![],
            nics: vec![],
            config_drive: None,
            accel: Accel::Auto,
            netns: None,
            confinement: None,
            guest_agent: false,
        }
    }

    #[test]
    fn mac_roundtrips_and_rejects_garbage() {
        let mac: MacAddr = "52:54:00:AB:cd:01".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:01");
        for bad in ["", "52:54:00:ab:cd", "52:54:00:ab:cd:01:02", "5:54:00:ab:cd:01", "zz:54:00:ab:cd:01"] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_and_unknown_fields_are_rejected() {
        assert!(matches!(VmSpec::from_json("{"), Err(SpecError::Malformed { .. })));
        let dir = tempfile::tempdir().unwrap();
        let mut v = serde_json::to_value(spec_with_kernel(dir.path())).unwrap();
        v["surprise"] = 1.into();
        assert!(matches!(VmSpec::from_json(&v.to_string()), Err(SpecError::Malformed { .. })));
    }

    #[test]
    fn valid_spec_roundtrips() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_with_kernel(dir.path());
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(VmSpec::from_json(&json).unwrap(), spec);
    }

    #[test]
    fn invalid_specs_give_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let base = spec_with_kernel(dir.path());

        let mut s = base.clone();
        s.vcpus = 0;
        assert!(matches!(s.validate(), Err(SpecError::InvalidVcpus { vcpus: 0 })));

        let mut s = base.clone();
        s.memory_mib = 0;
        assert!(matches!(s.validate(), Err(SpecError::InvalidMemory { .. })));

        let mut s = base.clone();
        s.boot = BootSpec::DirectKernel { kernel: dir.path().join("nope"), initrd: None, cmdline: String::new() };
        assert!(matches!(s.validate(), Err(SpecError::MissingFile { what: "kernel", .. })));

        let mut s = base.clone();
        s.name = "a b".into();
        assert!(matches!(s.validate(), Err(SpecError::InvalidName { .. })));

        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let mut s = base.clone();
        s.nics = vec![NicSpec { tap: "tap0".into(), mac }, NicSpec { tap: "tap1".into(), mac }];
        assert!(matches!(s.validate(), Err(SpecError::DuplicateMac { .. })));

        let mut s = base.clone();
        s.nics = vec![NicSpec { tap: "tap0".into(), mac: "01:00:5e:00:00:01".parse().unwrap() }];
        assert!(matches!(s.validate(), Err(SpecError::MulticastMac { .. })));

        let mut s = base.clone();
        s.nics = vec![NicSpec { tap: "a-very-long-tap-name".into(), mac }];
        assert!(matches!(s.validate(), Err(SpecError::InvalidTap { .. })));

        let mut s = base.clone();
        s.disks = vec![DiskSpec {
            path: dir.path().join("disk-0.qcow2"),
            format: DiskFormat::Raw,
            base: Some(BaseImage { path: dir.path().join("vmlinuz"), format: DiskFormat::Raw }),
            read_only: false,
        }];
        assert!(matches!(s.validate(), Err(SpecError::OverlayNotQcow2 { index: 0, .. })));

        let mut s = base.clone();
        s.disks = vec![DiskSpec { path: "relative.img".into(), format: DiskFormat::Raw, base: None, read_only: false }];
        assert!(matches!(s.validate(), Err(SpecError::RelativePath { .. })));

        let mut s = base;
        s.boot = BootSpec::DirectKernel { kernel: dir.path().join("vmlinuz"), initrd: None, cmdline: "a\nb".into() };
        assert!(matches!(s.validate(), Err(SpecError::InvalidCmdline)));
    }
}
