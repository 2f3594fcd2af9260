//! The host's side of every instance: the manager's configuration, which driver runs the VMs,
//! the host resources drivers and snapshots use ([`Host`]), and how VMs and taps are named.
//! Below the runners and the drivers, so both can use it without knowing each other.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vmm::{InstanceDir, LaunchOptions};

use super::{DesiredInstance, InstanceError, InstanceId};
use crate::images::{BlobSource, DEFAULT_MAX_BLOB_BYTES, ImageCache, ImageError};
use crate::network::{Ipv4Net, Network, tap_name};

/// How long a stop waits for the guest by default before forcing.
pub(super) const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The manager's configuration.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// One directory per instance (default `/var/lib/cloud-agent/instances`).
    pub instances_dir: PathBuf,
    /// The content-addressed image cache (default `/var/lib/cloud-agent/images`).
    pub images_dir: PathBuf,
    /// The local snapshot store, one directory per snapshot, outside the instance directories
    /// so snapshots outlive their instance (default `/var/lib/cloud-agent/snapshots`).
    pub snapshots_dir: PathBuf,
    /// Largest image blob accepted (default 20 GiB).
    pub max_image_bytes: u64,
    /// The most the image cache keeps of images no instance here uses (default 50 GiB): checked
    /// every minute, those used longest ago go first.
    pub image_cache_max_bytes: u64,
    /// Host bridge (default `cloudbr0`).
    pub bridge: String,
    /// The host's instance /24; the bridge gets its `.1`.
    pub host_subnet: Ipv4Net,
    /// Install the egress NAT table (default true).
    pub nat: bool,
    /// Set `net.ipv4.ip_forward=1` at start (default false: a host-wide setting).
    pub enable_ip_forward: bool,
    /// VMM driver (default QEMU; [`DriverKind::Simulated`] only for scale simulations).
    pub driver: DriverKind,
    /// Run network commands, QEMU and tunnels in this network namespace (tests). Default
    /// `None`: start the agent itself with `ip netns exec NS` instead.
    pub netns: Option<String>,
    /// How long a stop waits for the guest before forcing (default 30 s).
    pub stop_timeout: Duration,
    /// The shared store snapshots are uploaded to and restored from on any host (`None`:
    /// snapshots stay on this host, as in unit tests and scale simulations).
    pub store: Option<cloud_store::StoreConfig>,
    /// This host's cache of the store's chunks (default `/var/lib/cloud-agent/chunks`).
    pub chunks_dir: PathBuf,
    /// The most the chunk cache keeps (default 10 GiB): trimmed after every rebuild, the chunks
    /// used longest ago first.
    pub chunk_cache_max_bytes: u64,
    /// The host's lease ran out while the agent was away: instances whose VM died are not
    /// relaunched at start but wait, `stopped` with [`super::FENCED_REASON`], for the control
    /// plane to confirm this host still owns them (default false).
    pub fenced_at_start: bool,
    /// Run each VM's QEMU as a user of its own, in cgroups bounding its memory, CPU and
    /// processes (default true; off only where the agent cannot be root, as in unit tests).
    pub confine: bool,
    /// The first of the VMs' user ids (default 1,000,000,000; 2^24 of them are used).
    pub vm_user_base: u32,
    /// QEMU's own memory on top of the VM's, in its memory limit (default 192 MiB).
    pub vm_memory_overhead_mib: u64,
}

impl ManagerConfig {
    /// Defaults for a host with `host_subnet`.
    pub fn new(host_subnet: Ipv4Net) -> ManagerConfig {
        ManagerConfig {
            instances_dir: "/var/lib/cloud-agent/instances".into(),
            images_dir: "/var/lib/cloud-agent/images".into(),
            snapshots_dir: "/var/lib/cloud-agent/snapshots".into(),
            max_image_bytes: DEFAULT_MAX_BLOB_BYTES,
            image_cache_max_bytes: 50 << 30,
            bridge: "cloudbr0".into(),
            host_subnet,
            nat: true,
            enable_ip_forward: false,
            driver: DriverKind::default(),
            netns: None,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            store: None,
            chunks_dir: "/var/lib/cloud-agent/chunks".into(),
            chunk_cache_max_bytes: 10 << 30,
            fenced_at_start: false,
            confine: true,
            vm_user_base: 1_000_000_000,
            vm_memory_overhead_mib: 192,
        }
    }
}

/// Which VMM driver the manager uses.
#[derive(Debug, Clone)]
pub enum DriverKind {
    /// Real VMs under QEMU (the default).
    Qemu(Box<LaunchOptions>),
    /// No VMM at all: scale simulations only (see the module docs). Never a default.
    Simulated,
}

impl Default for DriverKind {
    fn default() -> Self {
        DriverKind::Qemu(Box::default())
    }
}

/// The host resources instances use: configuration, network, image cache.
#[derive(Debug)]
pub(crate) struct Host {
    pub config: ManagerConfig,
    pub network: Network,
    pub images: ImageCache,
    pub blob_source: Arc<dyn BlobSource>,
    pub store: Option<cloud_store::Store>,
    /// Users and cgroups of the VMs (`None`: QEMU runs as the agent's user, without limits).
    pub confiner: Option<super::confine::Confiner>,
    /// One rebuild of a snapshot from the store at a time, per snapshot (two restores of one
    /// snapshot at once share the second's wait, then its result).
    pub rebuilding: std::sync::Mutex<std::collections::HashMap<super::SnapshotId, Arc<tokio::sync::Mutex<()>>>>,
    /// What `/metrics` shows.
    pub metrics: Arc<crate::metrics::AgentMetrics>,
}

/// The image files of an instance in the cache.
pub(super) struct Resolved {
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub disk: Option<PathBuf>,
}

/// Fetches (or finds in the cache) every image file of `desired`.
pub(super) async fn resolve_images(ctx: &Host, desired: &DesiredInstance) -> Result<Resolved, InstanceError> {
    let img = &desired.image;
    let fetch = |sha: Option<String>, size: Option<u64>| async move {
        match sha {
            Some(sha) => ctx.images.ensure(&sha, size, ctx.blob_source.as_ref(), &ctx.metrics).await.map(Some),
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

/// The taps of `desired`, in NIC order.
pub(super) fn taps(desired: &DesiredInstance) -> Vec<String> {
    (0..desired.nics.len()).map(|i| tap_name(desired.id, i)).collect()
}

/// The ports of `desired` as isolation sees them: its NICs' taps, MACs and addresses, in the
/// network of its project (an instance without one has a network of its own).
pub(super) fn ports(desired: &DesiredInstance) -> Vec<crate::network::Port> {
    let segment =
        desired.project.as_ref().map_or_else(|| format!("instance {}", desired.id), |p| format!("project {p}"));
    desired
        .nics
        .iter()
        .enumerate()
        .map(|(i, nic)| crate::network::Port {
            tap: tap_name(desired.id, i),
            mac: nic.mac,
            address: nic.address.addr,
            segment: segment.clone(),
        })
        .collect()
}

/// The user and cgroups `desired`'s QEMU runs in (none when the agent does not confine VMs).
pub(super) async fn confinement(
    ctx: &Host,
    dir: &InstanceDir,
    desired: &DesiredInstance,
) -> Result<Option<vmm::qemu::jail::Confinement>, InstanceError> {
    let Some(confiner) = &ctx.confiner else { return Ok(None) };
    let confined = confiner.confine(desired.id, dir.root(), desired.vcpus, desired.memory_mib);
    Ok(Some(confined.map_err(|source| InstanceError::Confine { id: desired.id, source })?))
}

/// Creates the taps of `desired` on the bridge (before QEMU opens them) and their isolation
/// rules. Idempotent. Both at once (a launch waits for them): the bridge table drops every
/// frame of a tap it does not list yet, so a tap is isolated from the moment it exists.
pub(super) async fn ensure_taps(ctx: &Host, desired: &DesiredInstance) -> Result<(), InstanceError> {
    let (rules, created) = tokio::join!(isolate_ports(ctx, desired), create_taps(ctx, desired));
    rules?;
    created
}

/// Creates `desired`'s taps (without their isolation rules: see [`isolate_ports`]).
pub(super) async fn create_taps(ctx: &Host, desired: &DesiredInstance) -> Result<(), InstanceError> {
    for tap in taps(desired) {
        ctx.network.ensure_tap(&tap).await.map_err(|source| InstanceError::Network { id: desired.id, source })?;
    }
    Ok(())
}

/// Registers `desired`'s ports in the host's isolation rules; the guest must not run before.
pub(super) async fn isolate_ports(ctx: &Host, desired: &DesiredInstance) -> Result<(), InstanceError> {
    let ports = ports(desired);
    ctx.network.add_ports(&ports).await.map_err(|source| InstanceError::Network { id: desired.id, source })
}

/// The VM name on QEMU's command line: `i-<uuid without dashes>`.
pub(super) fn vm_name(id: InstanceId) -> String {
    format!("i-{}", id.0.simple())
}
