//! The content-addressed store that snapshots (and later images) live in.
//!
//! Files are cut into chunks named by their SHA-256 and stored once; a manifest lists, per
//! file, which chunk holds each range. Behind one trait ([`object_store::ObjectStore`]) the store
//! is a local directory (the embedded default, shared by the control plane and every agent of a
//! single machine) or an S3 bucket:
//!
//! ```text
//! chunks/<aa>/<sha256>          a chunk's bytes (aa: the hash's first two hex digits)
//! manifests/<name>.json         a stored object (a root: its chunks are in use)
//! pending/<name>.<nonce>.json   an upload in progress (a root too, until it is done)
//! gc/active                     garbage collection is running
//! ```
//!
//! **Writing** ([`Store::put`]) hashes the files locally, writes the pending manifest, uploads
//! only the chunks the store lacks, writes the manifest, removes the pending one. A crash leaves
//! a pending manifest (its chunks stay until it is stale) and never a manifest whose chunks are
//! missing. The manifest is written last, so a failed upload leaves every earlier object as it was.
//!
//! **Reading** ([`Store::fetch`]) brings the chunks a host lacks into its local chunk cache and
//! checks every chunk's hash, from the store and from the cache: a flipped byte is an error
//! naming the chunk, never a corrupt file.
//!
//! **Garbage collection** ([`Store::collect_garbage`]) deletes chunks no manifest or pending
//! manifest references. It is safe while uploads run: it marks `gc/active`, lists the chunks,
//! then works in batches that each list the roots afresh and delete only within
//! [`SWEEP_WINDOW`] of that listing. An uploader that finds the mark after writing its pending
//! manifest waits longer than that window before it trusts a chunk it finds in the store, so a
//! chunk it relies on was either seen as referenced or deleted before it looked.

pub mod config;
mod manifest;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

pub use config::{Backend, S3Config, StoreConfig, StoreOverrides};
pub use manifest::{
    ChunkId, Extent, FileEntry, LAYERED_CHUNK, Manifest, ManifestError, PLAIN_CHUNK, Source, SourceRange,
};

/// The store's name of snapshot `id` (the agent that takes it and the control plane agree).
pub fn snapshot_name(id: impl std::fmt::Display) -> String {
    format!("snapshots/{id}")
}

/// The store's name of the image file whose SHA-256 is `sha256`; its one file is [`IMAGE_FILE`].
pub fn image_name(sha256: &str) -> String {
    format!("images/{sha256}")
}

/// The name of the one file of an image file's object.
pub const IMAGE_FILE: &str = "blob";

/// How long a garbage-collection batch may delete after it listed the roots.
pub const SWEEP_WINDOW: Duration = Duration::from_secs(2);
/// Pending manifests older than this are a crashed upload's and no longer roots.
pub const PENDING_STALE: Duration = Duration::from_secs(24 * 3600);
/// Chunk transfers in flight per upload or fetch.
pub const PARALLEL: usize = 8;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (S3 unreachable, permission, disk full).
    #[error("store {store}: cannot {op} {key}")]
    Backend {
        store: String,
        op: &'static str,
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },
    /// No such object.
    #[error("store {store}: no object named {name}")]
    NotFound { store: String, name: String },
    /// A chunk's bytes do not match its name.
    #[error("chunk {chunk} is corrupt ({location}): its bytes do not hash to its name")]
    Corrupt { chunk: ChunkId, location: String },
    /// A manifest cannot be parsed, or lists what cannot be (see [`Manifest::validate`]).
    #[error("store {store}: manifest {key} is invalid")]
    InvalidManifest {
        store: String,
        key: String,
        #[source]
        source: ManifestError,
    },
    /// A local file could not be read or written.
    #[error("cannot access {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The store is misconfigured.
    #[error("invalid store configuration: {0}")]
    Config(String),
}

/// What an upload moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutStats {
    /// Distinct chunks the object references.
    pub chunks: u64,
    /// Chunks uploaded (the rest were in the store already).
    pub chunks_uploaded: u64,
    /// Bytes of those chunks.
    pub bytes_uploaded: u64,
    /// Bytes of the manifest.
    pub manifest_bytes: u64,
}

/// What a fetch moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Distinct chunks the files reference.
    pub chunks: u64,
    /// Chunks downloaded (the rest were in the local cache).
    pub chunks_fetched: u64,
    /// Bytes of those chunks.
    pub bytes_fetched: u64,
}

/// What a garbage collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Chunks in the store when it began.
    pub chunks: u64,
    /// Chunks deleted.
    pub deleted: u64,
    /// Stale pending manifests deleted.
    pub stale_pending: u64,
}

/// What trimming a chunk cache removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrimStats {
    /// Bytes in the cache before.
    pub bytes: u64,
    /// Chunks removed.
    pub removed: u64,
    /// Their bytes.
    pub removed_bytes: u64,
}

/// Chunks used (fetched or read) this recently are never trimmed: a restore in progress may be
/// about to read them.
pub const CACHE_KEEP_RECENT: Duration = Duration::from_secs(600);

/// A chunk of a fetched file: its range, and where its bytes are in the local cache (`None`:
/// zeroes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalExtent {
    pub offset: u64,
    pub len: u32,
    pub chunk: Option<PathBuf>,
}

/// The store, and this machine's cache of its chunks.
#[derive(Debug, Clone)]
pub struct Store {
    objects: Arc<dyn ObjectStore>,
    label: String,
    cache: PathBuf,
}

fn chunk_key(id: &ChunkId) -> Key {
    let hex = id.hex();
    Key::from(format!("chunks/{}/{hex}", &hex[..2]))
}

fn manifest_key(name: &str) -> Key {
    Key::from(format!("manifests/{name}.json"))
}

fn gc_mark() -> Key {
    Key::from("gc/active")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}

impl Store {
    /// Opens the store `config` describes, with the local chunk cache in `cache`.
    pub fn open(config: &StoreConfig, cache: &Path) -> Result<Self, StoreError> {
        let (objects, label) = config.connect()?;
        // The cache holds tenants' data too: its owner's alone.
        let private = || {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(cache)?;
            std::fs::set_permissions(cache, std::fs::Permissions::from_mode(0o700))
        };
        private().map_err(|source| StoreError::Io { path: cache.to_owned(), source })?;
        Ok(Store { objects, label, cache: cache.to_owned() })
    }

    /// The store, for messages and records (`file:///dir` or `s3://bucket`).
    pub fn label(&self) -> &str {
        &self.label
    }

    fn backend(&self, op: &'static str, key: &Key) -> impl FnOnce(object_store::Error) -> StoreError + '_ {
        let key = key.to_string();
        move |source| StoreError::Backend { store: self.label.clone(), op, key, source: Box::new(source) }
    }

    /// Stores `sources` as the object `name` (blocking reads run off the async threads).
    /// Storing a name again replaces its manifest; chunks are shared, never rewritten.
    pub async fn put(&self, name: &str, sources: Vec<Source>) -> Result<(Manifest, PutStats), StoreError> {
        let (files, chunks) = blocking(move || manifest::cut(&sources))
            .await
            .map_err(|source| StoreError::Io { path: PathBuf::from("(snapshot files)"), source })?;
        let manifest = Manifest { name: name.to_owned(), created_at: chrono::Utc::now(), files };
        // What readers would refuse is not stored (ranges from qemu-img past a disk's size…).
        manifest.validate().map_err(|source| StoreError::InvalidManifest {
            store: self.label.clone(),
            key: manifest_key(name).to_string(),
            source,
        })?;
        let json = Bytes::from(serde_json::to_vec(&manifest).map_err(|e| StoreError::Config(e.to_string()))?);
        let pending = Key::from(format!("pending/{name}.{}.json", uuid::Uuid::new_v4()));
        self.objects.put(&pending, PutPayload::from(json.clone())).await.map_err(self.backend("write", &pending))?;
        let result = async {
            if self.gc_running().await? {
                tracing::info!(store = %self.label, name, "garbage collection is running: waiting out its sweep window");
                tokio::time::sleep(SWEEP_WINDOW + Duration::from_secs(1)).await;
            }
            let uploaded: Vec<u64> = futures::stream::iter(chunks)
                .map(|(id, source)| self.upload_chunk(id, source))
                .buffer_unordered(PARALLEL)
                .try_collect()
                .await?;
            let key = manifest_key(name);
            self.objects.put(&key, PutPayload::from(json.clone())).await.map_err(self.backend("write", &key))?;
            Ok::<_, StoreError>(PutStats {
                chunks: uploaded.len() as u64,
                chunks_uploaded: uploaded.iter().filter(|b| **b > 0).count() as u64,
                bytes_uploaded: uploaded.iter().sum(),
                manifest_bytes: json.len() as u64,
            })
        }
        .await;
        // A failed upload's pending manifest stays until it is stale only if this fails too.
        if let Err(e) = self.objects.delete(&pending).await {
            tracing::warn!(store = %self.label, key = %pending, error = %e, "cannot remove a pending manifest");
        }
        let stats = result?;
        tracing::info!(store = %self.label, name, ?stats, "stored");
        Ok((manifest, stats))
    }

    async fn gc_running(&self) -> Result<bool, StoreError> {
        match self.objects.head(&gc_mark()).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.backend("read", &gc_mark())(e)),
        }
    }

    /// Uploads one chunk unless the store has it; returns the bytes uploaded.
    async fn upload_chunk(&self, id: ChunkId, source: manifest::ChunkSource) -> Result<u64, StoreError> {
        let key = chunk_key(&id);
        match self.objects.head(&key).await {
            Ok(meta) if meta.size == u64::from(source.len) => return Ok(0),
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.backend("read", &key)(e)),
        }
        let path = source.path.clone();
        let data = blocking(move || {
            use std::io::{Read, Seek};
            let mut file = std::fs::File::open(&source.path)?;
            file.seek(std::io::SeekFrom::Start(source.at))?;
            let mut buf = vec![0u8; source.len as usize];
            file.read_exact(&mut buf)?;
            Ok::<_, std::io::Error>(buf)
        })
        .await
        .map_err(io(&path))?;
        if ChunkId::of(&data) != id {
            // The file changed while it was being stored: its manifest would lie.
            return Err(StoreError::Corrupt {
                chunk: id,
                location: format!("{} changed while stored", path.display()),
            });
        }
        let len = data.len() as u64;
        self.objects.put(&key, PutPayload::from(data)).await.map_err(self.backend("write", &key))?;
        Ok(len)
    }

    /// The manifest of object `name`.
    pub async fn manifest(&self, name: &str) -> Result<Manifest, StoreError> {
        self.read_manifest(&manifest_key(name))
            .await?
            .ok_or_else(|| StoreError::NotFound { store: self.label.clone(), name: name.to_owned() })
    }

    async fn read_manifest(&self, key: &Key) -> Result<Option<Manifest>, StoreError> {
        let bytes = match self.objects.get(key).await {
            Ok(got) => got.bytes().await.map_err(self.backend("read", key))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.backend("read", key)(e)),
        };
        Manifest::from_json(&bytes).map(Some).map_err(|source| StoreError::InvalidManifest {
            store: self.label.clone(),
            key: key.to_string(),
            source,
        })
    }

    /// Deletes object `name` (its chunks go at the next garbage collection). Deleting an
    /// object that is not there is no error.
    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        let key = manifest_key(name);
        match self.objects.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.backend("delete", &key)(e)),
        }
    }

    /// Brings the chunks of `file` that the cache lacks into it, checking each; returns the
    /// file's extents with their cached chunks.
    pub async fn fetch(&self, file: &FileEntry) -> Result<(Vec<LocalExtent>, FetchStats), StoreError> {
        let wanted: BTreeSet<ChunkId> = file.extents.iter().filter_map(|e| e.chunk).collect();
        let fetched: Vec<u64> = futures::stream::iter(wanted.iter().copied())
            .map(|id| self.cache_chunk(id))
            .buffer_unordered(PARALLEL)
            .try_collect()
            .await?;
        let stats = FetchStats {
            chunks: wanted.len() as u64,
            chunks_fetched: fetched.iter().filter(|b| **b > 0).count() as u64,
            bytes_fetched: fetched.iter().sum(),
        };
        let extents = file
            .extents
            .iter()
            .map(|e| LocalExtent { offset: e.offset, len: e.len, chunk: e.chunk.map(|c| self.cached(&c)) })
            .collect();
        Ok((extents, stats))
    }

    /// The local chunk cache: every path [`Store::fetch`] returns lies under it.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// Where chunk `id` is kept in the local cache.
    fn cached(&self, id: &ChunkId) -> PathBuf {
        let hex = id.hex();
        self.cache.join(&hex[..2]).join(hex)
    }

    /// Makes sure chunk `id` is in the cache with the right bytes; returns the bytes fetched.
    async fn cache_chunk(&self, id: ChunkId) -> Result<u64, StoreError> {
        if self.read_cached(id).await?.is_some() {
            return Ok(0);
        }
        let data = self.get_chunk(id).await?;
        let len = data.len() as u64;
        let path = self.cached(&id);
        let dest = path.clone();
        blocking(move || {
            std::fs::create_dir_all(dest.parent().unwrap_or(Path::new(".")))?;
            cloud_common::fs::replace_atomic(&dest, &data, 0o600)
        })
        .await
        .map_err(io(&path))?;
        Ok(len)
    }

    /// Chunk `id` from this machine's cache, if it is there with the right bytes (marked as
    /// used now, for [`Store::trim_cache`]).
    async fn read_cached(&self, id: ChunkId) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.cached(&id);
        let check = path.clone();
        blocking(move || match std::fs::read(&check) {
            Ok(data) if ChunkId::of(&data) == id => {
                cloud_common::fs::touch(&check);
                Ok(Some(data))
            }
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
        .map_err(io(&path))
    }

    /// Keeps this machine's chunk cache under `max_bytes`: removes the chunks used longest ago
    /// (never one used in the last [`CACHE_KEEP_RECENT`]) until it holds at most nine tenths of
    /// it. A trimmed chunk is fetched again from the store when needed.
    pub async fn trim_cache(&self, max_bytes: u64) -> Result<TrimStats, StoreError> {
        let dir = self.cache.clone();
        blocking(move || trim(&dir, max_bytes)).await.map_err(io(&self.cache))
    }

    /// Chunk `id` from the store, checked against its name.
    async fn get_chunk(&self, id: ChunkId) -> Result<Bytes, StoreError> {
        let key = chunk_key(&id);
        let data = match self.objects.get(&key).await {
            Ok(got) => got.bytes().await.map_err(self.backend("read", &key))?,
            Err(e) => return Err(self.backend("read", &key)(e)),
        };
        if ChunkId::of(&data) != id {
            return Err(StoreError::Corrupt { chunk: id, location: format!("{}/{key}", self.label) });
        }
        Ok(data)
    }

    /// The bytes of plain file `file`, in order, as chunks: from this machine's cache where it
    /// has a chunk (checked), else from the store (checked; not kept in the cache: the caller
    /// keeps the whole file). Up to [`PARALLEL`] chunks are fetched ahead.
    pub fn stream(&self, file: FileEntry) -> impl futures::Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
        let store = self.clone();
        futures::stream::iter(file.extents)
            .map(move |e| {
                let store = store.clone();
                async move { store.chunk_bytes(e).await }
            })
            .buffered(PARALLEL)
    }

    /// The bytes of one extent of a plain file (see [`Store::stream`]).
    async fn chunk_bytes(&self, e: Extent) -> Result<Bytes, StoreError> {
        let Some(id) = e.chunk else { return Ok(Bytes::from(vec![0u8; e.len as usize])) };
        let data = match self.read_cached(id).await? {
            Some(data) => Bytes::from(data),
            None => self.get_chunk(id).await?,
        };
        if data.len() != e.len as usize {
            return Err(StoreError::Corrupt {
                chunk: id,
                location: format!("{} (its extent has {} bytes)", self.label, e.len),
            });
        }
        Ok(data)
    }

    /// Writes a fetched plain file to `dest` (sparse: zero extents stay holes), reading each
    /// cached chunk once more and checking it.
    pub async fn write_plain(&self, file: &FileEntry, dest: &Path) -> Result<FetchStats, StoreError> {
        let (extents, stats) = self.fetch(file).await?;
        let size = file.size;
        let to = dest.to_owned();
        blocking(move || write_extents(&to, size, &extents)).await?;
        Ok(stats)
    }

    /// Deletes every chunk no manifest and no live pending manifest references (see the crate
    /// docs for why this is safe while uploads run).
    pub async fn collect_garbage(&self) -> Result<GcStats, StoreError> {
        let mark = gc_mark();
        self.objects
            .put(&mark, PutPayload::from(chrono::Utc::now().to_rfc3339()))
            .await
            .map_err(self.backend("write", &mark))?;
        let result = self.sweep().await;
        if let Err(e) = self.objects.delete(&mark).await {
            tracing::warn!(store = %self.label, error = %e, "cannot remove the garbage-collection mark");
        }
        let stats = result?;
        tracing::info!(store = %self.label, ?stats, "garbage collected");
        Ok(stats)
    }

    async fn sweep(&self) -> Result<GcStats, StoreError> {
        let chunks_prefix = Key::from("chunks");
        let mut candidates: BTreeSet<ChunkId> = BTreeSet::new();
        let mut listing = self.objects.list(Some(&chunks_prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(self.backend("list", &chunks_prefix))?;
            if let Some(Ok(id)) = meta.location.filename().map(str::parse::<ChunkId>) {
                candidates.insert(id);
            }
        }
        let mut stats = GcStats { chunks: candidates.len() as u64, ..GcStats::default() };
        let mut known: HashMap<String, BTreeSet<ChunkId>> = HashMap::new();
        loop {
            let listed = Instant::now();
            let roots = self.roots(&mut known, &mut stats).await?;
            candidates.retain(|c| !roots.contains(c));
            if candidates.is_empty() {
                return Ok(stats);
            }
            while let Some(id) = candidates.first().copied() {
                if listed.elapsed() >= SWEEP_WINDOW {
                    break;
                }
                let key = chunk_key(&id);
                match self.objects.delete(&key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => stats.deleted += 1,
                    Err(e) => return Err(self.backend("delete", &key)(e)),
                }
                candidates.remove(&id);
            }
            if candidates.is_empty() {
                return Ok(stats);
            }
        }
    }

    /// Every chunk referenced by a manifest or a live pending manifest, listed now. Manifests
    /// are immutable once written (pending ones carry a nonce), so `known` caches their chunks.
    ///
    /// Pending manifests are listed and read before the manifests: an upload writes its
    /// manifest before it removes its pending one, so an upload that finishes meanwhile is seen
    /// either way.
    async fn roots(
        &self,
        known: &mut HashMap<String, BTreeSet<ChunkId>>,
        stats: &mut GcStats,
    ) -> Result<BTreeSet<ChunkId>, StoreError> {
        let mut roots = BTreeSet::new();
        for prefix in ["pending", "manifests"] {
            let prefix = Key::from(prefix);
            let metas: Vec<_> =
                self.objects.list(Some(&prefix)).try_collect().await.map_err(self.backend("list", &prefix))?;
            for meta in metas {
                let stale = (chrono::Utc::now() - meta.last_modified).to_std().unwrap_or_default() > PENDING_STALE;
                if prefix.as_ref() == "pending" && stale {
                    match self.objects.delete(&meta.location).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => stats.stale_pending += 1,
                        Err(e) => return Err(self.backend("delete", &meta.location)(e)),
                    }
                    continue;
                }
                let key = meta.location;
                if !known.contains_key(key.as_ref()) {
                    // Gone since the listing (deleted, or a finished upload's pending): no root.
                    let chunks = self.read_manifest(&key).await?.map(|m| m.chunks()).unwrap_or_default();
                    known.insert(key.to_string(), chunks);
                }
                roots.extend(known[key.as_ref()].iter().copied());
            }
        }
        Ok(roots)
    }
}

fn trim(dir: &Path, max_bytes: u64) -> std::io::Result<TrimStats> {
    use cloud_common::fs::Cached;
    let mut chunks = Vec::new();
    let fans = match std::fs::read_dir(dir) {
        Ok(fans) => fans,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TrimStats::default()),
        Err(e) => return Err(e),
    };
    for fan in fans.flatten().filter(|f| f.file_type().is_ok_and(|t| t.is_dir())) {
        for chunk in std::fs::read_dir(fan.path())?.flatten() {
            let Ok(meta) = chunk.metadata() else { continue };
            if meta.is_file() {
                chunks.push(Cached { used: meta.modified()?, len: meta.len(), path: chunk.path(), pinned: false });
            }
        }
    }
    let mut stats = TrimStats { bytes: chunks.iter().map(|c| c.len).sum(), ..TrimStats::default() };
    if stats.bytes <= max_bytes {
        return Ok(stats);
    }
    let removed = cloud_common::fs::evict_lru(chunks, max_bytes / 10 * 9, CACHE_KEEP_RECENT)?;
    (stats.removed, stats.removed_bytes) = (removed.len() as u64, removed.iter().map(|c| c.len).sum());
    Ok(stats)
}

/// Writes `extents` into a new sparse file `dest` of `size` bytes, checking every chunk.
fn write_extents(dest: &Path, size: u64, extents: &[LocalExtent]) -> Result<(), StoreError> {
    use std::io::{Seek, Write};
    let tmp = dest.with_extension("partial");
    let mut out = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    out.set_len(size).map_err(io(&tmp))?;
    for e in extents {
        let Some(chunk) = &e.chunk else { continue };
        let data = read_chunk(chunk)?;
        // The manifest's length, not the chunk's, is what a hostile or broken manifest controls.
        if data.len() != e.len as usize {
            let location = format!("{} (its extent has {} bytes)", chunk.display(), e.len);
            return Err(StoreError::Corrupt { chunk: ChunkId::of(&data), location });
        }
        out.seek(std::io::SeekFrom::Start(e.offset)).map_err(io(&tmp))?;
        out.write_all(&data).map_err(io(&tmp))?;
    }
    out.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, dest).map_err(io(dest))
}

/// Reads a cached chunk and checks it against its name (the file name).
pub fn read_chunk(path: &Path) -> Result<Vec<u8>, StoreError> {
    let data = std::fs::read(path).map_err(io(path))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let id: ChunkId = name.parse().map_err(|e: String| StoreError::Config(e))?;
    if ChunkId::of(&data) != id {
        return Err(StoreError::Corrupt { chunk: id, location: path.display().to_string() });
    }
    Ok(data)
}

/// Keys of all stored objects' manifests, for tests and tools: name → manifest.
pub async fn list_manifests(store: &Store) -> Result<BTreeMap<String, Manifest>, StoreError> {
    let prefix = Key::from("manifests");
    let metas: Vec<_> =
        store.objects.list(Some(&prefix)).try_collect().await.map_err(store.backend("list", &prefix))?;
    let mut out = BTreeMap::new();
    for meta in metas {
        if let Some(m) = store.read_manifest(&meta.location).await? {
            out.insert(m.name.clone(), m);
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_extent_longer_or_shorter_than_its_chunk_is_corrupt_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"0123456789";
        let chunk = dir.path().join(ChunkId::of(data).hex());
        std::fs::write(&chunk, data).unwrap();
        let dest = dir.path().join("out");
        let extent = |len| [LocalExtent { offset: 0, len, chunk: Some(chunk.clone()) }];
        write_extents(&dest, 10, &extent(10)).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        for len in [20, 4] {
            let err = write_extents(&dest, 20, &extent(len)).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { chunk, .. } if chunk == ChunkId::of(data)), "{len}: {err}");
        }
    }

    #[test]
    fn trimming_removes_the_chunks_used_longest_ago_and_never_recent_ones() {
        let dir = tempfile::tempdir().unwrap();
        let now = std::time::SystemTime::now();
        let put = |name: &str, len: usize, age_secs: u64| {
            let path = dir.path().join(&name[..2]).join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, vec![1u8; len]).unwrap();
            let file = std::fs::File::options().append(true).open(&path).unwrap();
            file.set_modified(now - Duration::from_secs(age_secs)).unwrap();
            path
        };
        let oldest = put("aa01", 400, 7200);
        let older = put("bb02", 400, 3600);
        let old = put("cc03", 400, 1800);
        let recent = put("dd04", 400, 10);
        // Under the limit: nothing goes.
        assert_eq!(trim(dir.path(), 1600).unwrap().removed, 0);
        // 1600 bytes over a limit of 1000: down to 900, oldest first.
        let stats = trim(dir.path(), 1000).unwrap();
        assert_eq!((stats.bytes, stats.removed, stats.removed_bytes), (1600, 2, 800));
        assert!(!oldest.exists() && !older.exists() && old.exists() && recent.exists());
        // A limit nothing old enough can meet: the recent chunk stays.
        let stats = trim(dir.path(), 100).unwrap();
        assert_eq!(stats.removed, 1);
        assert!(!old.exists() && recent.exists());
        assert_eq!(trim(&dir.path().join("missing"), 1).unwrap(), TrimStats::default());
    }
}
