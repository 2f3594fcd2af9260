//! [`InstanceManager`]: the handle the gRPC layer and the lease logic use. It routes requests
//! to per-instance runners, owns rediscovery at start, and answers reads (status, capacity)
//! from state the runners publish, without a round trip.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot};
use vmm::InstanceDir;

use super::driver;
use super::host::{Host, ManagerConfig};
use super::record::{self, AGENT_JSON, CREATING_MARKER};
use super::runner::{self, Ctx, Request, Runner, RunnerHandle};
use super::snapshots::{SnapshotId, SnapshotInfo};
use super::{
    DesiredInstance, InstanceError, InstanceId, InstanceState, InstanceStatus, ManagerError, PowerState, SnapshotKind,
};
use crate::images::{BlobSource, ImageCache};
use crate::network::{Network, NetworkConfig};

/// How much scrollback a new console viewer gets from `console.log`.
pub const CONSOLE_SCROLLBACK_BYTES: u64 = 64 * 1024;

/// Resources of the instances that exist on this host (any state but deleted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapacityUsed {
    /// Instances.
    pub instances: u32,
    /// Sum of vCPUs.
    pub vcpus: u64,
    /// Sum of memory, MiB.
    pub memory_mib: u64,
    /// Sum of disk sizes, bytes.
    pub disk_bytes: u64,
}

/// One viewer's serial console: scrollback, then live output; input goes to the guest.
/// Dropping it detaches the viewer; others are unaffected.
#[derive(Debug)]
pub struct ConsoleSession {
    /// The tail of `console.log` (up to `CONSOLE_SCROLLBACK_BYTES`, 64 KiB) when the viewer attached.
    pub scrollback: Vec<u8>,
    /// Live output. `Lagged` means this viewer was too slow and missed some bytes.
    pub output: broadcast::Receiver<Vec<u8>>,
    /// Keyboard input for the guest's serial port.
    pub input: mpsc::Sender<Vec<u8>>,
}

impl ConsoleSession {
    /// `(scrollback, live output, input)`.
    pub fn into_parts(self) -> (Vec<u8>, broadcast::Receiver<Vec<u8>>, mpsc::Sender<Vec<u8>>) {
        (self.scrollback, self.output, self.input)
    }
}

/// The handle. Cheap to clone.
#[derive(Debug, Clone)]
pub struct InstanceManager {
    ctx: Arc<Ctx>,
    runners: Arc<Mutex<HashMap<InstanceId, RunnerHandle>>>,
    /// Generation at which deleted instances were deleted (while this process lives).
    tombstones: Arc<Mutex<HashMap<InstanceId, u64>>>,
}

impl InstanceManager {
    /// Sets up the host network (QEMU driver), rediscovers every instance directory
    /// (re-attaching, relaunching or cleaning up, see the module docs) and removes taps no
    /// instance owns. Missing image blobs are fetched from `blob_source`.
    pub async fn start(
        config: ManagerConfig,
        blob_source: Arc<dyn BlobSource>,
    ) -> Result<InstanceManager, ManagerError> {
        let dir_err = |path: &PathBuf| {
            let path = path.clone();
            move |source| ManagerError::InstancesDir { path, source }
        };
        let driver = driver::for_kind(&config.driver);
        let uses_network = driver.uses_host_network();
        // Tenants' disks, config drives (user-data), memory states and images: the agent's
        // alone, except that a VM's QEMU passes through to its own directory and to the image
        // files its user was granted (0711: no listing). A scale simulation has only records.
        let private_dirs = match uses_network {
            true => vec![(&config.instances_dir, 0o711), (&config.snapshots_dir, 0o700), (&config.images_dir, 0o711)],
            false => vec![(&config.instances_dir, 0o700)],
        };
        for (dir, mode) in private_dirs {
            tokio::fs::create_dir_all(dir).await.map_err(dir_err(dir))?;
            let private = std::os::unix::fs::PermissionsExt::from_mode(mode);
            tokio::fs::set_permissions(dir, private).await.map_err(dir_err(dir))?;
        }
        let mut net_config = NetworkConfig::new(config.host_subnet);
        net_config.bridge = config.bridge.clone();
        net_config.nat = config.nat;
        net_config.enable_ip_forward = config.enable_ip_forward;
        net_config.netns = config.netns.clone();
        let network = Network::new(net_config);
        if uses_network {
            network.ensure_host().await.map_err(ManagerError::Network)?;
        }
        let (events, _) = broadcast::channel(1024);
        let images = ImageCache::new(config.images_dir.clone(), config.max_image_bytes);
        let store = match &config.store {
            Some(store) => Some(cloud_store::Store::open(store, &config.chunks_dir).map_err(ManagerError::Store)?),
            None => None,
        };
        let confiner = (uses_network && config.confine).then(|| {
            let cgroups = super::confine::Cgroups::detect();
            if cgroups.is_none() {
                tracing::warn!(
                    "no cgroup hierarchy with the memory controller: VMs run without memory, CPU or process limits"
                );
            }
            // Under TCG, QEMU also holds the translated code.
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            let tcg = vmm::qemu::host::resolve_accel(vmm::spec::Accel::Auto, &cpuinfo) == vmm::qemu::ResolvedAccel::Tcg;
            let code_cache = if tcg { vmm::qemu::cmdline::TCG_CODE_CACHE_MIB } else { 0 };
            super::confine::Confiner {
                users: super::confine::VmUsers::new(config.vm_user_base),
                cgroups,
                overhead_mib: config.vm_memory_overhead_mib + code_cache,
            }
        });
        let ctx = Arc::new(Ctx {
            driver: driver::for_kind(&config.driver),
            host: Host {
                config,
                network,
                images,
                // Image files come from the store where it has them.
                blob_source: match &store {
                    Some(s) => Arc::new(crate::images::StoreBlobs::new(s.clone(), blob_source)),
                    None => blob_source,
                },
                store,
                confiner,
                rebuilding: Default::default(),
                metrics: Default::default(),
            },
            events,
            guest_news: Default::default(),
        });

        let mut found = Vec::new();
        let mut entries =
            tokio::fs::read_dir(&ctx.config.instances_dir).await.map_err(dir_err(&ctx.config.instances_dir))?;
        while let Some(entry) = entries.next_entry().await.map_err(dir_err(&ctx.config.instances_dir))? {
            let Some(id) = entry.file_name().to_str().and_then(|n| n.parse::<InstanceId>().ok()) else {
                continue;
            };
            let dir = InstanceDir::new(entry.path());
            let half_created = tokio::fs::try_exists(dir.root().join(CREATING_MARKER)).await.unwrap_or(false)
                || !tokio::fs::try_exists(dir.root().join(AGENT_JSON)).await.unwrap_or(false);
            if half_created {
                tracing::info!(%id, "removing half-created instance");
                if let Err(e) = ctx.driver.destroy(&ctx, id, &dir).await {
                    tracing::warn!(%id, error = %format!("{e:#}"), "cannot remove half-created instance");
                }
                continue;
            }
            match record::read_record(&dir).await {
                Ok(record) if record.desired.id == id => found.push((dir, record)),
                Ok(_) => tracing::warn!(%id, "agent.json names another instance; leaving it for an operator"),
                Err(e) => tracing::warn!(%id, error = %format!("{e:#}"), "unreadable agent.json; leaving it"),
            }
        }
        let owned: HashSet<String> = found.iter().flat_map(|(_, r)| super::host::taps(&r.desired)).collect();
        if let Some(confiner) = &ctx.confiner {
            // The users the instances found here already have are taken before any new one is
            // handed out.
            for (dir, record) in &found {
                confiner.users.user_of(record.desired.id, dir.root());
            }
        }
        if uses_network {
            // Isolation first: the VMs found running pass nothing until their ports are known.
            let ports = found.iter().flat_map(|(_, r)| super::host::ports(&r.desired)).collect();
            ctx.network.set_ports(ports).await.map_err(ManagerError::Network)?;
        }
        let recovered =
            futures::future::join_all(found.into_iter().map(|(dir, record)| Runner::recover(ctx.clone(), dir, record)))
                .await;
        let runners: HashMap<InstanceId, RunnerHandle> = recovered.into_iter().map(|r| (r.id(), r.spawn())).collect();
        if uses_network {
            ctx.network.reconcile(&owned).await.map_err(ManagerError::Network)?;
        }
        tracing::info!(instances = runners.len(), "instance manager started");
        let runners = Arc::new(Mutex::new(runners));
        if uses_network {
            tokio::spawn(evict_images(Arc::downgrade(&ctx), Arc::downgrade(&runners)));
        }
        Ok(InstanceManager { ctx, runners, tombstones: Arc::new(Mutex::new(HashMap::new())) })
    }

    /// The configuration.
    pub fn config(&self) -> &ManagerConfig {
        &self.ctx.config
    }

    /// The host network handle (for inspection).
    pub fn network(&self) -> &Network {
        &self.ctx.network
    }

    fn handle(&self, id: InstanceId) -> Option<RunnerHandle> {
        self.runners.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
    }

    async fn call<T>(
        &self,
        id: InstanceId,
        handle: &RunnerHandle,
        make: impl FnOnce(runner::Reply<T>) -> Request,
    ) -> Result<T, InstanceError> {
        let (reply, rx) = oneshot::channel();
        let request = Request::Traced { request: Box::new(make(reply)), caller: tracing::Span::current() };
        handle.tx.send(request).await.map_err(|_| InstanceError::RunnerGone { id })?;
        rx.await.map_err(|_| InstanceError::RunnerGone { id })?
    }

    /// Makes the instance exist with `desired` and `power` at `generation` (see the module
    /// docs for generation semantics). Returns the resulting status.
    pub async fn ensure(
        &self,
        desired: DesiredInstance,
        power: PowerState,
        generation: u64,
    ) -> Result<InstanceStatus, InstanceError> {
        let desired = Box::new(desired);
        self.create_or_apply(desired, generation, |desired, reply| Request::Ensure {
            desired,
            power,
            generation,
            reply,
        })
        .await
    }

    /// Routes a request that may create the instance (ensure, restore) to its runner, made for
    /// it when the instance is new. A new runner that failed before creating anything on disk
    /// is forgotten.
    async fn create_or_apply(
        &self,
        desired: Box<DesiredInstance>,
        generation: u64,
        make: impl FnOnce(Box<DesiredInstance>, runner::Reply<InstanceStatus>) -> Request,
    ) -> Result<InstanceStatus, InstanceError> {
        desired.validate()?;
        let id = desired.id;
        if let Some(&current) = self.tombstones.lock().unwrap_or_else(|e| e.into_inner()).get(&id)
            && generation <= current
        {
            return Err(InstanceError::StaleGeneration { id, requested: generation, current });
        }
        let (handle, created) = {
            let mut runners = self.runners.lock().unwrap_or_else(|e| e.into_inner());
            match runners.get(&id) {
                Some(h) => (h.clone(), false),
                None => {
                    let h = Runner::new_instance(self.ctx.clone(), (*desired).clone()).spawn();
                    runners.insert(id, h.clone());
                    (h, true)
                }
            }
        };
        let result = self.call(id, &handle, |reply| make(desired, reply)).await;
        if created && matches!(result, Err(InstanceError::Image { .. } | InstanceError::InvalidSpec { .. })) {
            // Nothing was created on disk: forget the runner (dropping its sender ends it).
            let mut runners = self.runners.lock().unwrap_or_else(|e| e.into_inner());
            if runners.get(&id).is_some_and(|h| h.tx.same_channel(&handle.tx)) {
                runners.remove(&id);
            }
        }
        result
    }

    /// Takes snapshot `snapshot` of instance `id` into `<snapshots_dir>/<snapshot>/`: a disk
    /// snapshot of a running, paused or stopped instance, or a full one (memory too) of a
    /// running or paused one. The instance is `Snapshotting` meanwhile and then returns to its
    /// state. Idempotent by snapshot id: a complete snapshot is returned as it is. `generation`
    /// is checked (older: [`InstanceError::StaleGeneration`]) and recorded when newer; the
    /// desired spec does not change.
    pub async fn snapshot(
        &self,
        id: InstanceId,
        snapshot: SnapshotId,
        kind: SnapshotKind,
        generation: u64,
    ) -> Result<SnapshotInfo, InstanceError> {
        let handle = self.handle(id).ok_or(InstanceError::NotFound { id })?;
        self.call(id, &handle, |reply| Request::Snapshot { snapshot, kind, generation, reply }).await
    }

    /// Removes snapshot `snapshot` from the local store; true when it was there. Idempotent.
    pub async fn delete_snapshot(&self, snapshot: SnapshotId) -> Result<bool, InstanceError> {
        let dir = self.snapshot_location(snapshot);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {
                tracing::info!(%snapshot, "snapshot deleted");
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(InstanceError::Persist { path: dir, source }),
        }
    }

    /// The local location of snapshot `snapshot` (whether or not it exists).
    pub fn snapshot_location(&self, snapshot: SnapshotId) -> PathBuf {
        super::snapshots::location(&self.ctx, snapshot)
    }

    /// Creates instance `desired.id` (running) from the complete snapshot at
    /// `snapshot_location`, a directory of the local store ([`ManagerConfig::snapshots_dir`];
    /// anything else is [`InstanceError::InvalidSpec`]). The id may differ from the
    /// snapshotted instance's. A full snapshot continues the guest where it was (its NICs,
    /// vCPUs and memory must match the snapshot's); a disk snapshot boots afresh from its disks
    /// with `desired`'s network and config drive. Idempotent by instance id and generation as
    /// [`InstanceManager::ensure`].
    pub async fn restore(
        &self,
        desired: DesiredInstance,
        snapshot_location: PathBuf,
        generation: u64,
    ) -> Result<InstanceStatus, InstanceError> {
        self.restore_as(desired, snapshot_location, generation, false).await
    }

    /// [`InstanceManager::restore`], booting from the snapshot's disks when `fresh_boot` even if
    /// it holds memory state: for an instance whose address differs from the snapshot's guest
    /// (whose memory keeps its network configuration).
    pub async fn restore_as(
        &self,
        desired: DesiredInstance,
        location: PathBuf,
        generation: u64,
        fresh_boot: bool,
    ) -> Result<InstanceStatus, InstanceError> {
        self.create_or_apply(Box::new(desired), generation, |desired, reply| Request::Restore {
            desired,
            location,
            generation,
            fresh_boot,
            reply,
        })
        .await
    }

    /// Powers the instance off (ACPI, then force after the stop timeout).
    pub async fn stop(&self, id: InstanceId, generation: u64) -> Result<InstanceStatus, InstanceError> {
        let handle = self.handle(id).ok_or(InstanceError::NotFound { id })?;
        self.call(id, &handle, |reply| Request::Stop { generation, reply }).await
    }

    /// Resets a running instance.
    pub async fn reboot(&self, id: InstanceId, generation: u64) -> Result<InstanceStatus, InstanceError> {
        let handle = self.handle(id).ok_or(InstanceError::NotFound { id })?;
        self.call(id, &handle, |reply| Request::Reboot { generation, reply }).await
    }

    /// Removes the VMM process, taps and files. Unknown instances are already deleted.
    pub async fn delete(&self, id: InstanceId, generation: u64) -> Result<InstanceStatus, InstanceError> {
        let Some(handle) = self.handle(id) else {
            let mut tombstones = self.tombstones.lock().unwrap_or_else(|e| e.into_inner());
            let at = tombstones.entry(id).or_insert(generation);
            *at = (*at).max(generation);
            return Ok(InstanceStatus {
                id,
                state: InstanceState::Deleted,
                generation: *at,
                reason: None,
                observed_at: Utc::now(),
                ready_at: None,
                ssh_host_keys: Vec::new(),
            });
        };
        let status = self.call(id, &handle, |reply| Request::Delete { generation, reply }).await?;
        self.runners.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        self.tombstones.lock().unwrap_or_else(|e| e.into_inner()).insert(id, status.generation);
        Ok(status)
    }

    /// The instance's current status.
    pub async fn get(&self, id: InstanceId) -> Result<InstanceStatus, InstanceError> {
        self.handle(id).map(|h| h.shared.status()).ok_or(InstanceError::NotFound { id })
    }

    /// The desired spec last applied to the instance.
    pub async fn desired(&self, id: InstanceId) -> Result<DesiredInstance, InstanceError> {
        self.handle(id).map(|h| h.shared.desired()).ok_or(InstanceError::NotFound { id })
    }

    /// Every instance's current status.
    pub async fn list(&self) -> Vec<InstanceStatus> {
        let handles: Vec<RunnerHandle> =
            self.runners.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        handles.iter().map(|h| h.shared.status()).collect()
    }

    /// The host's metrics (the agent serves them on `metrics_listen`).
    pub fn metrics(&self) -> &crate::metrics::AgentMetrics {
        &self.ctx.metrics
    }

    /// Every state change from now on. Send [`InstanceManager::list`] first for a full picture.
    pub fn watch(&self) -> broadcast::Receiver<InstanceStatus> {
        self.ctx.events.subscribe()
    }

    /// Resolves when a guest became reachable or published its host keys since the last call.
    pub async fn guest_news(&self) {
        self.ctx.guest_news.notified().await;
    }

    /// Pauses every running instance (self-fencing). Returns the statuses afterwards; failures
    /// are logged and leave that instance as it was.
    pub async fn pause_all(&self) -> Vec<InstanceStatus> {
        let handles: Vec<(InstanceId, RunnerHandle)> =
            self.runners.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (*k, v.clone())).collect();
        let calls = handles.iter().map(|(id, h)| async move {
            match self.call(*id, h, |reply| Request::Pause { reply }).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(%id, error = %format!("{e:#}"), "cannot pause instance while fencing");
                    h.shared.status()
                }
            }
        });
        futures::future::join_all(calls).await
    }

    /// Destroys an instance the control plane no longer places here (deleted, or moved while
    /// this host was cut off), at the generation it last applied.
    pub async fn destroy_unowned(&self, id: InstanceId) -> Result<InstanceStatus, InstanceError> {
        let generation = self.get(id).await?.generation;
        tracing::warn!(%id, "destroying an instance this host no longer owns");
        self.delete(id, generation).await
    }

    /// Resumes the paused instances among `ids` (those the control plane confirmed we own).
    pub async fn resume(&self, ids: Vec<InstanceId>) -> Vec<Result<InstanceStatus, InstanceError>> {
        let calls = ids.into_iter().map(|id| async move {
            let handle = self.handle(id).ok_or(InstanceError::NotFound { id })?;
            self.call(id, &handle, |reply| Request::Resume { reply }).await
        });
        futures::future::join_all(calls).await
    }

    /// Resources used by instances that exist on this host.
    pub async fn capacity_used(&self) -> CapacityUsed {
        let handles: Vec<RunnerHandle> =
            self.runners.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let mut used = CapacityUsed::default();
        for h in handles {
            let d = h.shared.desired();
            used.instances += 1;
            used.vcpus += u64::from(d.vcpus);
            used.memory_mib += d.memory_mib;
            used.disk_bytes += d.disk_bytes;
        }
        used
    }

    /// Attaches a console viewer: scrollback from `console.log`, live output, input.
    pub async fn console(&self, id: InstanceId) -> Result<ConsoleSession, InstanceError> {
        let handle = self.handle(id).ok_or(InstanceError::NotFound { id })?;
        // Subscribe first: a byte may then appear twice, but none is lost.
        let output = handle.shared.console_out.subscribe();
        let dir = InstanceDir::new(self.ctx.config.instances_dir.join(id.to_string()));
        let (log, older) = (dir.console_log(), dir.console_log_rotated());
        let mut scrollback = read_tail(&log, CONSOLE_SCROLLBACK_BYTES)
            .await
            .map_err(|source| InstanceError::Persist { path: log, source })?;
        // Just after a rotation console.log holds little: the rest is the end of the older part.
        let missing = CONSOLE_SCROLLBACK_BYTES.saturating_sub(scrollback.len() as u64);
        if missing > 0 {
            let mut before =
                read_tail(&older, missing).await.map_err(|source| InstanceError::Persist { path: older, source })?;
            before.append(&mut scrollback);
            scrollback = before;
        }
        Ok(ConsoleSession { scrollback, output, input: handle.shared.console_in.clone() })
    }

    /// A TCP connection to `port` on the instance's first NIC address, made from the host (in
    /// [`ManagerConfig::netns`] when set).
    pub async fn tunnel(&self, id: InstanceId, port: u16) -> Result<TcpStream, InstanceError> {
        let desired = self.desired(id).await?;
        let nic = desired.nics.first().ok_or(InstanceError::NoNic { id })?;
        let addr = SocketAddr::from((nic.address.addr, port));
        let err = |source| InstanceError::Tunnel { id, addr, source };
        super::guest::connect(self.ctx.config.netns.as_deref(), addr, Duration::from_secs(5)).await.map_err(err)
    }
}

/// The last `max` bytes of `path` (empty when it does not exist).
async fn read_tail(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata().await?.len();
    f.seek(std::io::SeekFrom::Start(len.saturating_sub(max))).await?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).await?;
    Ok(buf)
}

/// How often the image cache is brought under its bound.
const EVICT_PERIOD: std::time::Duration = std::time::Duration::from_secs(60);

/// Every [`EVICT_PERIOD`] while the manager lives: evicts the cached images no instance of this
/// host uses, past `ManagerConfig::image_cache_max_bytes` (see `ImageCache::evict`).
async fn evict_images(ctx: std::sync::Weak<Ctx>, runners: std::sync::Weak<Mutex<HashMap<InstanceId, RunnerHandle>>>) {
    loop {
        tokio::time::sleep(EVICT_PERIOD).await;
        let (Some(ctx), Some(runners)) = (ctx.upgrade(), runners.upgrade()) else { return };
        let in_use: HashSet<String> = runners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flat_map(|h| {
                let image = h.shared.desired().image;
                [image.disk_sha256, image.kernel_sha256, image.initrd_sha256]
            })
            .flatten()
            .collect();
        drop(runners);
        match ctx.images.evict(ctx.config.image_cache_max_bytes, in_use).await {
            Ok((0, _)) => {}
            Ok((removed, bytes)) => tracing::info!(removed, bytes, "image cache trimmed"),
            Err(e) => tracing::warn!(error = %e, "cannot trim the image cache"),
        }
    }
}
