//! What the control plane wants an instance to be: the agent's side of `InstanceSpec`, as the
//! instance record (`agent.json`) stores it. Plain data and its checks; the runtime types
//! (states, errors, the runners) are in [`crate::instances`], which reads these.

use std::net::Ipv4Addr;

use cloud_common::net::Ipv4Interface;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use vmm::spec::MacAddr;

use crate::images::is_sha256_hex;

/// A spec that cannot be right whatever the host has: says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid spec for instance {id}: {reason}")]
pub struct InvalidSpec {
    pub id: InstanceId,
    pub reason: String,
}

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
    /// The project: instances of different projects on this host share no packet (`None`, as
    /// in records from before projects were sent: a network of its own).
    #[serde(default)]
    pub project: Option<String>,
}

/// Largest number of NICs per instance (tap names stay within 15 characters).
pub const MAX_NICS: usize = 10;

impl DesiredInstance {
    /// Checks what can be checked without touching the host.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let invalid = |reason: String| Err(InvalidSpec { id: self.id, reason });
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
