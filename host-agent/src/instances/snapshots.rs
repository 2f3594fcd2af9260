//! Snapshots taken through the agent, and restores from them.
//!
//! Snapshots live outside instance directories, so they outlive the instance they were taken
//! of (deleting an instance is exactly when its snapshots matter):
//!
//! ```text
//! <snapshots_dir>/<snapshot-uuid>/
//!   manifest.json  disk-N.qcow2  cidata.img  memory.state   what vmm::snapshot writes
//!   snapshot.json  the agent's record: ids, kind, size, time, the instance's desired spec
//! ```
//!
//! `snapshot.json` is written last (temp file + rename) once vmm has finished, so it marks a
//! complete snapshot: taking a snapshot whose directory has it returns the recorded info
//! (idempotent retries), and a directory without it is a crash's leftover that is removed and
//! taken again. A restore accepts only complete snapshots.
//!
//! With a shared store (`ManagerConfig::store`), a snapshot is uploaded once complete, as
//! `snapshots/<uuid>` (its disks as ranges over their base image, see `vmm::layers`); it is
//! taken only when the upload succeeded, and a retry uploads a complete snapshot the store
//! lacks. A restore on a host without the snapshot's directory rebuilds it from the store
//! first (`.<uuid>.partial`, renamed when whole): only the chunks the host lacks are fetched,
//! the disks are laid over this host's copy of their base image, the boot files are this
//! host's, and the file hashes are taken again of what was rebuilt.
//!
//! What a restore may change depends on the kind:
//! - **disk**: the guest boots afresh from the snapshotted disks with the *new* spec (its MACs,
//!   addresses, hostname, keys, config drive); only the disk layout must match.
//! - **full**: the guest continues where it was, with its memory. vCPUs, memory, the number of
//!   NICs and the disk layout must match the snapshotted instance, or the state would not load.
//!   Its network configuration and hostname are in guest memory too: when the new spec's differ
//!   (a new instance, or the same one on another host's subnet), the guest is *re-addressed*
//!   once it runs, through its guest agent (`qemu-guest-agent`): each NIC takes its new MAC and
//!   address, the default route its new gateway, the guest its new hostname, and the config
//!   drive is the new spec's, so a later boot agrees. QEMU is started with the new MACs, which
//!   the guest keeps using the old ones until told. A guest that cannot be re-addressed (no
//!   agent answers, or its command fails) is reset: it boots afresh from the restored disks
//!   with the new spec, as after a disk snapshot, and its processes are lost (logged).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use cloud_store::{Source, SourceRange, StoreError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use vmm::snapshot::{RestoreParams, SnapshotKind};
use vmm::{InstanceDir, Vm};

use super::host::{DriverKind, Host, resolve_images, taps, vm_name};
use super::{DesiredInstance, InstanceError, InstanceId};

/// The agent's record file in a snapshot directory.
pub const SNAPSHOT_JSON: &str = "snapshot.json";

/// A snapshot's id (the control plane's): also its directory name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SnapshotId(pub Uuid);

impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for SnapshotId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SnapshotId(s.parse()?))
    }
}

/// A complete snapshot on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The snapshot.
    pub snapshot_id: SnapshotId,
    /// The instance it was taken of.
    pub instance_id: InstanceId,
    /// Disk only, or disk + memory.
    pub kind: SnapshotKind,
    /// Total size of its files.
    pub size_bytes: u64,
    /// Its directory on this host.
    pub location: PathBuf,
    /// When it was completed.
    pub created_at: DateTime<Utc>,
}

/// `snapshot.json`. The location is where it is found, not recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SnapshotRecord {
    pub snapshot_id: SnapshotId,
    pub instance_id: InstanceId,
    pub kind: SnapshotKind,
    pub size_bytes: u64,
    pub created_at: DateTime<Utc>,
    /// The instance's desired spec when the snapshot was taken.
    pub source: DesiredInstance,
    /// The guest's SSH host keys then: a restore that resumes its memory is the same guest.
    #[serde(default)]
    pub ssh_host_keys: Vec<String>,
    /// SHA-256 (lowercase hex) of each of its files, by name: checked before a restore uses them.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, String>,
}

impl SnapshotRecord {
    pub fn info(&self, location: &Path) -> SnapshotInfo {
        SnapshotInfo {
            snapshot_id: self.snapshot_id,
            instance_id: self.instance_id,
            kind: self.kind,
            size_bytes: self.size_bytes,
            location: location.to_owned(),
            created_at: self.created_at,
        }
    }
}

/// The directory of snapshot `id` in the local store.
pub(super) fn location(ctx: &Host, id: SnapshotId) -> PathBuf {
    ctx.config.snapshots_dir.join(id.to_string())
}

fn store_err(snapshot: SnapshotId) -> impl FnOnce(StoreError) -> InstanceError {
    move |source| InstanceError::Store { snapshot, source }
}

fn snapshot_err(
    instance: InstanceId,
    snapshot: SnapshotId,
) -> impl FnOnce(vmm::snapshot::SnapshotError) -> InstanceError {
    move |source| InstanceError::Snapshot { id: instance, snapshot, source }
}

/// The store and QEMU's tools, when snapshots go to a shared store.
fn shared(ctx: &Host) -> Option<(&cloud_store::Store, &vmm::LaunchOptions)> {
    match (&ctx.store, &ctx.config.driver) {
        (Some(store), DriverKind::Qemu(opts)) => Some((store, &**opts)),
        _ => None,
    }
}

/// Whether `name` is a disk of a snapshot directory (stored as ranges over its base).
fn is_disk(name: &str) -> bool {
    name.starts_with("disk-") && name.ends_with(".qcow2")
}

/// Uploads the complete snapshot in `dir` to the shared store (nothing without one).
async fn upload(ctx: &Host, dir: &Path, record: &SnapshotRecord) -> Result<(), InstanceError> {
    let Some((store, opts)) = shared(ctx) else { return Ok(()) };
    let id = record.snapshot_id;
    let mut sources = Vec::new();
    for name in record.files.keys().map(String::as_str).chain([SNAPSHOT_JSON]) {
        let path = dir.join(name);
        let source = if is_disk(name) {
            let (size, ranges) =
                vmm::layers::overlay_ranges(opts, &path).await.map_err(snapshot_err(record.instance_id, id))?;
            // The root disk lies over the image's disk; any other disk over nothing.
            let base = if name == "disk-0.qcow2" { record.source.image.disk_sha256.clone() } else { None };
            Source {
                name: name.to_owned(),
                path,
                size,
                layered: Some(base),
                ranges: ranges.into_iter().map(|r| SourceRange { offset: r.offset, len: r.len, at: r.at }).collect(),
            }
        } else {
            Source::plain(name, &path).map_err(persist_err(&path))?
        };
        sources.push(source);
    }
    let started = std::time::Instant::now();
    let (_, stats) = store.put(&cloud_store::snapshot_name(id), sources).await.map_err(store_err(id))?;
    ctx.metrics.snapshot_uploaded(stats.bytes_uploaded, started.elapsed());
    tracing::info!(
        snapshot = %id,
        store = store.label(),
        chunks = stats.chunks,
        chunks_uploaded = stats.chunks_uploaded,
        bytes_uploaded = stats.bytes_uploaded,
        manifest_bytes = stats.manifest_bytes,
        "snapshot uploaded"
    );
    Ok(())
}

/// Makes sure the complete local snapshot in `dir` is in the shared store (a retry after a
/// failed or interrupted upload).
async fn ensure_uploaded(ctx: &Host, dir: &Path, record: &SnapshotRecord) -> Result<(), InstanceError> {
    let Some((store, _)) = shared(ctx) else { return Ok(()) };
    match store.manifest(&cloud_store::snapshot_name(record.snapshot_id)).await {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound { .. }) => upload(ctx, dir, record).await,
        Err(e) => Err(store_err(record.snapshot_id)(e)),
    }
}

/// The local directory of snapshot `id`, rebuilt from the shared store unless it is complete
/// here already (see the module docs).
async fn materialize(ctx: &Host, instance: InstanceId, id: SnapshotId) -> Result<PathBuf, InstanceError> {
    let dest = location(ctx, id);
    if read_record(&dest).await?.is_some() {
        return Ok(dest);
    }
    let Some((store, opts)) = shared(ctx) else {
        return Err(InstanceError::InvalidSpec {
            id: instance,
            reason: format!("snapshot {id} is not on this host, and this host has no shared snapshot store"),
        });
    };
    let lock = ctx.rebuilding.lock().unwrap_or_else(|e| e.into_inner()).entry(id).or_default().clone();
    let _rebuilding = lock.lock().await;
    if read_record(&dest).await?.is_some() {
        return Ok(dest);
    }
    let manifest = store.manifest(&cloud_store::snapshot_name(id)).await.map_err(store_err(id))?;
    let tmp = ctx.config.snapshots_dir.join(format!(".{id}.partial"));
    remove_dir_if_any(&tmp).await?;
    tokio::fs::create_dir_all(&tmp).await.map_err(persist_err(&tmp))?;
    let rebuilt = async {
        let corrupt = |file: &str| InstanceError::CorruptSnapshot { snapshot: id, file: file.to_owned() };
        let record_file = manifest.files.get(SNAPSHOT_JSON).ok_or_else(|| corrupt(SNAPSHOT_JSON))?;
        store.write_plain(record_file, &tmp.join(SNAPSHOT_JSON)).await.map_err(store_err(id))?;
        let mut record = read_record(&tmp).await?.ok_or_else(|| corrupt(SNAPSHOT_JSON))?;
        if record.snapshot_id != id {
            return Err(corrupt(SNAPSHOT_JSON));
        }
        let images = resolve_images(ctx, &record.source).await?;
        for (name, file) in manifest.files.iter().filter(|(name, _)| name.as_str() != SNAPSHOT_JSON) {
            if name.contains('/') || name.starts_with('.') || name.is_empty() {
                return Err(corrupt(name));
            }
            let path = tmp.join(name);
            if !file.layered {
                store.write_plain(file, &path).await.map_err(store_err(id))?;
                continue;
            }
            let base = match &file.base {
                Some(_) if file.base != record.source.image.disk_sha256 => return Err(corrupt(name)),
                Some(_) => images.disk.clone(),
                None => None,
            };
            let format = match &base {
                Some(b) => Some(crate::storage::detect_format(b).await.map_err(|e| InstanceError::Persist {
                    path: b.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?),
                None => None,
            };
            let (extents, _) = store.fetch(file).await.map_err(store_err(id))?;
            let writes: Vec<_> = extents
                .into_iter()
                .map(|e| vmm::layers::LayerWrite { offset: e.offset, len: u64::from(e.len), data: e.chunk })
                .collect();
            let backing = base.as_deref().zip(format.map(|f| f.as_str()));
            vmm::layers::write_overlay(opts, &path, backing, file.size, store.cache_dir(), &writes)
                .await
                .map_err(snapshot_err(instance, id))?;
        }
        relocate_boot_files(&tmp, &images).await.map_err(snapshot_err(instance, id))?;
        record.files = file_hashes(&tmp, |_| true).await?;
        write_record(&tmp, &record).await?;
        Ok(())
    }
    .await;
    if let Err(e) = rebuilt {
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        return Err(e);
    }
    remove_dir_if_any(&dest).await?;
    tokio::fs::rename(&tmp, &dest).await.map_err(persist_err(&dest))?;
    tracing::info!(%instance, snapshot = %id, store = store.label(), "snapshot fetched from the store");
    match store.trim_cache(ctx.config.chunk_cache_max_bytes).await {
        Ok(trim) if trim.removed > 0 => {
            tracing::info!(removed = trim.removed, bytes = trim.removed_bytes, "chunk cache trimmed")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %crate::error_chain(&e), "cannot trim the chunk cache"),
    }
    Ok(dest)
}

async fn remove_dir_if_any(dir: &Path) -> Result<(), InstanceError> {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(InstanceError::Persist { path: dir.to_owned(), source }),
    }
}

/// Points the boot files of the VM spec in a rebuilt snapshot's `manifest.json` at this host's
/// image cache (they named the snapshotted host's).
async fn relocate_boot_files(dir: &Path, images: &super::host::Resolved) -> Result<(), vmm::snapshot::SnapshotError> {
    let mut manifest = vmm::snapshot::read_manifest(dir).await?;
    if let vmm::spec::BootSpec::DirectKernel { kernel, initrd, .. } = &mut manifest.spec.boot {
        if let Some(k) = &images.kernel {
            kernel.clone_from(k);
        }
        if initrd.is_some() {
            initrd.clone_from(&images.initrd);
        }
    }
    vmm::snapshot::write_manifest(dir, &manifest).await
}

fn persist_err(path: &Path) -> impl FnOnce(std::io::Error) -> InstanceError + '_ {
    move |source| InstanceError::Persist { path: path.to_owned(), source }
}

/// The record of a complete snapshot in `dir`, `None` when `dir` has none.
pub(super) async fn read_record(dir: &Path) -> Result<Option<SnapshotRecord>, InstanceError> {
    let path = dir.join(SNAPSHOT_JSON);
    let bytes = match tokio::fs::read(&path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(InstanceError::Persist { path, source }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| InstanceError::Persist { path, source: std::io::Error::new(std::io::ErrorKind::InvalidData, e) })
}

async fn write_record(dir: &Path, record: &SnapshotRecord) -> Result<(), InstanceError> {
    super::record::write_json(&dir.join(SNAPSHOT_JSON), record).await
}

/// The existing complete snapshot `id`, checked to be of `instance` and `kind`.
pub(super) async fn existing(
    ctx: &Host,
    instance: InstanceId,
    id: SnapshotId,
    kind: SnapshotKind,
) -> Result<Option<SnapshotInfo>, InstanceError> {
    let dir = location(ctx, id);
    let Some(record) = read_record(&dir).await? else { return Ok(None) };
    if record.instance_id != instance || record.kind != kind {
        let reason =
            format!("snapshot {id} already exists as a {:?} snapshot of instance {}", record.kind, record.instance_id);
        return Err(InstanceError::InvalidSpec { id: instance, reason });
    }
    ensure_uploaded(ctx, &dir, &record).await?;
    Ok(Some(record.info(&dir)))
}

/// Takes snapshot `id` of `desired`'s instance: `write` puts the files into the directory it is
/// given (the driver's part: of the running VM, or of a stopped instance's disks), and this
/// records them. Leftovers of an earlier attempt are removed first; a failure removes what it
/// wrote.
pub(super) async fn take(
    ctx: &Host,
    desired: &DesiredInstance,
    id: SnapshotId,
    kind: SnapshotKind,
    ssh_host_keys: &[String],
    write: impl AsyncFnOnce(&Path) -> Result<(), InstanceError>,
) -> Result<SnapshotInfo, InstanceError> {
    let instance = desired.id;
    let dest = location(ctx, id);
    match tokio::fs::remove_dir_all(&dest).await {
        Ok(()) => tracing::info!(%instance, snapshot = %id, "removed an incomplete snapshot; taking it again"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(InstanceError::Persist { path: dest, source }),
    }
    tokio::fs::create_dir_all(&ctx.config.snapshots_dir).await.map_err(persist_err(&ctx.config.snapshots_dir))?;
    let result = write(&dest).await;
    let result = match result {
        Ok(()) => complete(&dest, id, kind, desired, ssh_host_keys).await,
        Err(e) => Err(e),
    };
    // Taken means stored: a failed upload fails the snapshot (earlier ones stay as they were).
    let result = match result {
        Ok((info, record)) => upload(ctx, &dest, &record).await.map(|()| info),
        Err(e) => Err(e),
    };
    if result.is_err() {
        let _ = tokio::fs::remove_dir_all(&dest).await;
    }
    result
}

/// Sizes the snapshot and writes `snapshot.json`, which makes it complete.
async fn complete(
    dest: &Path,
    id: SnapshotId,
    kind: SnapshotKind,
    desired: &DesiredInstance,
    ssh_host_keys: &[String],
) -> Result<(SnapshotInfo, SnapshotRecord), InstanceError> {
    let mut size_bytes = 0;
    let mut entries = tokio::fs::read_dir(dest).await.map_err(persist_err(dest))?;
    while let Some(entry) = entries.next_entry().await.map_err(persist_err(dest))? {
        size_bytes += entry.metadata().await.map_err(persist_err(&entry.path()))?.len();
    }
    let record = SnapshotRecord {
        snapshot_id: id,
        instance_id: desired.id,
        kind,
        size_bytes,
        created_at: Utc::now(),
        source: desired.clone(),
        ssh_host_keys: ssh_host_keys.to_vec(),
        files: file_hashes(dest, |_| true).await?,
    };
    write_record(dest, &record).await?;
    tracing::info!(instance = %desired.id, snapshot = %id, ?kind, size_bytes, "snapshot complete");
    Ok((record.info(dest), record))
}

/// The complete snapshot at `location`, which must be a snapshot directory in the local store
/// (rebuilt from the shared store when this host lacks it).
pub(super) async fn open(ctx: &Host, instance: InstanceId, location: &Path) -> Result<SnapshotRecord, InstanceError> {
    let invalid = |reason: String| InstanceError::InvalidSpec { id: instance, reason };
    let id = location.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<SnapshotId>().ok());
    if let Some(id) = id
        && location.parent() == Some(ctx.config.snapshots_dir.as_path())
    {
        materialize(ctx, instance, id).await?;
    }
    let store = tokio::fs::canonicalize(&ctx.config.snapshots_dir).await.ok();
    let canonical = tokio::fs::canonicalize(location).await.ok();
    let in_store = match (&store, &canonical) {
        (Some(store), Some(dir)) => dir.parent() == Some(store.as_path()),
        _ => false,
    };
    if !in_store {
        return Err(invalid(format!(
            "snapshot location {} is not a snapshot directory in the local store {} (only local snapshots can be \
             restored)",
            location.display(),
            ctx.config.snapshots_dir.display()
        )));
    }
    let record = read_record(location)
        .await?
        .ok_or_else(|| invalid(format!("{} holds no complete snapshot", location.display())))?;
    // Every file as it was written: a flipped byte is an error here, not a broken guest later.
    // The memory state is checked while QEMU loads it (`restore_full`), not before: it is most
    // of a resume's bytes, and a fresh boot does not read it at all.
    let now = file_hashes(location, |name| name != MEMORY_STATE).await?;
    let checked = record.files.iter().filter(|(name, _)| name.as_str() != MEMORY_STATE);
    if let Some(file) = checked.clone().find(|(name, sha)| now.get(*name) != Some(*sha)).map(|(name, _)| name) {
        return Err(InstanceError::CorruptSnapshot { snapshot: record.snapshot_id, file: file.clone() });
    }
    Ok(record)
}

/// The memory state's file in a snapshot directory (vmm's name).
const MEMORY_STATE: &str = "memory.state";

/// SHA-256 (lowercase hex) of one file (blocking).
fn file_hash(path: &Path) -> Result<String, InstanceError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(persist_err(path))?;
    let (mut hasher, mut buf) = (Sha256::new(), vec![0u8; 1 << 20]);
    loop {
        let n = file.read(&mut buf).map_err(persist_err(path))?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// SHA-256 (lowercase hex) of every file in the snapshot directory `dir` but its record, of
/// those whose name `wanted` accepts.
async fn file_hashes(
    dir: &Path,
    wanted: impl Fn(&str) -> bool + Send + 'static,
) -> Result<std::collections::BTreeMap<String, String>, InstanceError> {
    let dir = dir.to_owned();
    let hash_all = move || -> Result<std::collections::BTreeMap<String, String>, InstanceError> {
        let mut out = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(&dir).map_err(persist_err(&dir))? {
            let path = entry.map_err(persist_err(&dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
            if name == SNAPSHOT_JSON || !path.is_file() || !wanted(&name) {
                continue;
            }
            out.insert(name, file_hash(&path)?);
        }
        Ok(out)
    };
    tokio::task::spawn_blocking(hash_all).await.unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}

/// Checks that `desired` can be restored from `snapshot` (see the module docs).
pub(super) fn check_restorable(snapshot: &SnapshotRecord, desired: &DesiredInstance) -> Result<(), InstanceError> {
    let invalid = |reason: String| Err(InstanceError::InvalidSpec { id: desired.id, reason });
    let source = &snapshot.source;
    let id = snapshot.snapshot_id;
    if (source.disk_bytes, &source.image.disk_sha256) != (desired.disk_bytes, &desired.image.disk_sha256)
        || source.image.boot_mode != desired.image.boot_mode
    {
        return invalid(format!(
            "the disks of snapshot {id} differ from the spec's (disk size, base image or boot mode)"
        ));
    }
    if snapshot.kind == SnapshotKind::Disk {
        return Ok(());
    }
    if (source.vcpus, source.memory_mib) != (desired.vcpus, desired.memory_mib) {
        return invalid(format!(
            "full snapshot {id} needs {} vCPUs and {} MiB of memory, as when it was taken",
            source.vcpus, source.memory_mib
        ));
    }
    if source.nics.len() != desired.nics.len() {
        return invalid(format!(
            "full snapshot {id} resumes a guest with {} NICs: the spec must have as many",
            source.nics.len()
        ));
    }
    Ok(())
}

/// Whether a full restore of `snapshot` into `desired` must re-address the guest: its memory
/// holds the snapshotted instance's MACs, addresses and hostname, and the spec's differ.
pub(super) fn readdressed(snapshot: &SnapshotRecord, desired: &DesiredInstance) -> bool {
    let net = |d: &DesiredInstance| d.nics.iter().map(|n| (n.mac, n.address, n.gateway)).collect::<Vec<_>>();
    net(&snapshot.source) != net(desired) || snapshot.source.hostname != desired.hostname
}

/// How long a restored guest's agent has to answer, and then to re-address the guest.
const GUEST_AGENT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Run by `/bin/sh -c` in the guest: `HOSTNAME GATEWAY (OLD_MAC NEW_MAC ADDRESS/PREFIX)...`.
/// Only `ip`, `cat` and `hostname` are needed (busybox has them, as does any distribution).
const READDRESS_SCRIPT: &str = r#"set -eu
host=$1 gw=$2
shift 2
first=
while [ $# -ge 3 ]; do
	old=$1 new=$2 addr=$3
	shift 3
	dev=
	for d in /sys/class/net/*; do
		if [ "$(cat "$d/address")" = "$old" ]; then dev=${d##*/}; fi
	done
	if [ -z "$dev" ]; then echo "no interface has MAC $old" >&2; exit 3; fi
	ip link set dev "$dev" address "$new"
	ip addr flush dev "$dev"
	ip addr add "$addr" dev "$dev"
	ip neigh flush dev "$dev"
	if [ -z "$first" ]; then first=$dev; fi
done
if [ -n "$first" ]; then ip route replace default via "$gw" dev "$first"; fi
hostname "$host"
"#;

/// Tells a restored, running guest its new network settings (see the module docs); resets it
/// when it cannot be told, so that it boots with them.
async fn readdress(vm: &Vm, dir: &InstanceDir, snapshot: &SnapshotRecord, desired: &DesiredInstance) {
    let id = desired.id;
    let gateway = desired.nics.first().map(|n| n.gateway.to_string()).unwrap_or_default();
    let mut argv = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        READDRESS_SCRIPT.to_owned(),
        "readdress".to_owned(),
        desired.hostname.clone(),
        gateway,
    ];
    for (old, new) in snapshot.source.nics.iter().zip(&desired.nics) {
        argv.extend([old.mac.to_string(), new.mac.to_string(), new.address.to_string()]);
    }
    let started = std::time::Instant::now();
    let told = async {
        let mut agent = vmm::GuestAgent::connect(&dir.guest_agent_socket(), GUEST_AGENT_WAIT).await?;
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        agent.exec(&argv, GUEST_AGENT_WAIT).await
    }
    .await;
    let reason = match told {
        Ok(exit) if exit.code == Some(0) => {
            tracing::info!(%id, took_ms = started.elapsed().as_millis() as u64, "restored guest re-addressed");
            return;
        }
        Ok(exit) => format!(
            "its re-addressing command exited with {:?}: {}",
            exit.code,
            String::from_utf8_lossy(&exit.stderr).trim()
        ),
        Err(e) => e.to_string(),
    };
    tracing::warn!(%id, reason, "the restored guest cannot be re-addressed: it is reset and boots afresh with its new spec (its processes are lost)");
    if let Err(e) = vm.reboot().await {
        tracing::warn!(%id, error = %e, "cannot reset the restored guest");
    }
}

/// Restores a full snapshot into the instance directory `dir` for `desired` (its taps exist):
/// vmm's restore, resumed once the taps' isolation rules (applied meanwhile) are in place.
pub(super) async fn restore_full(
    ctx: &Host,
    opts: &vmm::LaunchOptions,
    dir: &InstanceDir,
    desired: &DesiredInstance,
    snapshot: &SnapshotRecord,
    location: &Path,
) -> Result<Vm, InstanceError> {
    let instance = desired.id;
    let readdress = readdressed(snapshot, desired);
    if readdress {
        crate::storage::build_config_drive(dir, desired)
            .await
            .map_err(|source| InstanceError::Storage { id: instance, source })?;
    }
    let params = RestoreParams {
        dir: dir.clone(),
        name: Some(vm_name(instance)),
        taps: Some(taps(desired)),
        macs: readdress.then(|| desired.nics.iter().map(|n| n.mac).collect()),
        keep_config_drive: readdress,
        netns: Some(ctx.config.netns.clone()),
        confinement: super::host::confinement(ctx, dir, desired).await?,
        resume: false,
    };
    // The memory state is hashed while QEMU loads it; the guest runs only once it matched.
    let memory = location.join(MEMORY_STATE);
    let hashing = tokio::task::spawn_blocking(move || file_hash(&memory));
    let (isolated, vm) =
        tokio::join!(super::host::isolate_ports(ctx, desired), vmm::snapshot::restore(location, &params, opts));
    let vm = vm.map_err(snapshot_err(instance, snapshot.snapshot_id));
    let hashed = hashing.await.unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))?;
    // A corrupt memory state is said as such, even when QEMU choked on it first.
    if snapshot.files.get(MEMORY_STATE).is_some_and(|expected| *expected != hashed) {
        if let Ok(vm) = &vm {
            let _ = vm.kill().await;
        }
        return Err(InstanceError::CorruptSnapshot { snapshot: snapshot.snapshot_id, file: MEMORY_STATE.to_owned() });
    }
    let vm = vm?;
    if let Err(e) = isolated {
        let _ = vm.kill().await;
        return Err(e);
    }
    vm.resume().await.map_err(|source| InstanceError::Vmm { id: instance, operation: "resume", source })?;
    if readdress {
        self::readdress(&vm, dir, snapshot, desired).await;
    }
    Ok(vm)
}

/// Copies a disk snapshot's disks into the instance directory `dir`, where a launch then finds
/// them (an existing `disk-N.qcow2` is kept) and boots from them with the new spec.
pub(super) async fn restore_disks(
    dir: &InstanceDir,
    snapshot: &SnapshotRecord,
    location: &Path,
) -> Result<(), InstanceError> {
    let manifest = vmm::snapshot::read_manifest(location).await.map_err(|source| InstanceError::Snapshot {
        id: snapshot.instance_id,
        snapshot: snapshot.snapshot_id,
        source,
    })?;
    for (i, name) in manifest.disks.iter().enumerate() {
        let from = location.join(name);
        let to = dir.disk(i);
        let tmp = to.with_extension("qcow2.tmp");
        tokio::fs::copy(&from, &tmp).await.map_err(persist_err(&from))?;
        tokio::fs::rename(&tmp, &to).await.map_err(persist_err(&to))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::instances::{BootMode, ImageRef, NicConfig};

    fn desired() -> DesiredInstance {
        DesiredInstance {
            id: InstanceId(Uuid::new_v4()),
            hostname: "a".into(),
            vcpus: 1,
            memory_mib: 256,
            disk_bytes: 1 << 26,
            image: ImageRef {
                image_id: String::new(),
                boot_mode: BootMode::DirectKernel,
                disk_sha256: None,
                disk_size_bytes: None,
                kernel_sha256: Some("a".repeat(64)),
                initrd_sha256: None,
                kernel_cmdline: String::new(),
                firmware: vmm::spec::Firmware::Ovmf,
            },
            nics: vec![NicConfig {
                mac: "52:54:00:00:00:01".parse().unwrap(),
                address: "10.0.0.2/24".parse().unwrap(),
                gateway: "10.0.0.1".parse().unwrap(),
            }],
            ssh_authorized_keys: vec![],
            user_data: None,
            project: None,
        }
    }

    fn record(kind: SnapshotKind, source: DesiredInstance) -> SnapshotRecord {
        SnapshotRecord {
            snapshot_id: SnapshotId(Uuid::new_v4()),
            instance_id: source.id,
            kind,
            size_bytes: 0,
            created_at: Utc::now(),
            source,
            ssh_host_keys: Vec::new(),
            files: Default::default(),
        }
    }

    #[test]
    fn disk_snapshots_take_a_new_network_full_snapshots_do_not() {
        let source = desired();
        let mut other = desired();
        other.nics[0].mac = "52:54:00:00:00:09".parse().unwrap();
        other.nics[0].address = "10.0.0.9/24".parse().unwrap();
        other.memory_mib = 512;
        check_restorable(&record(SnapshotKind::Disk, source.clone()), &other).unwrap();
        let full = record(SnapshotKind::Full, source.clone());
        assert!(matches!(check_restorable(&full, &other), Err(InstanceError::InvalidSpec { .. })));
        let mut same_net = desired();
        same_net.nics = source.nics.clone();
        check_restorable(&full, &same_net).unwrap();
        same_net.disk_bytes = 0;
        assert!(matches!(check_restorable(&full, &same_net), Err(InstanceError::InvalidSpec { .. })));
    }

    #[test]
    fn the_record_roundtrips_without_its_location() {
        let r = record(SnapshotKind::Full, desired());
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("location"));
        let back: SnapshotRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.info(Path::new("/x")), r.info(Path::new("/x")));
    }
}
