//! The content-addressed image cache: base disks, kernels and initrds stored by their SHA-256
//! under `<images_dir>/sha256/<hex>`.
//!
//! ```text
//!  ensure(digest) ─▶ cached? ──yes──▶ path
//!                      │ no
//!                      ▼  (per-digest lock, then re-check)
//!  BlobSource::fetch ─▶ stream ─▶ <images_dir>/tmp/<hex>.<nonce>.partial  (hashing, size limit)
//!                                      │ digest and size match
//!                                      ▼ fsync + rename
//!                               <images_dir>/sha256/<hex>
//! ```
//! A file only ever appears under `sha256/` through a rename after its digest was verified, so
//! its presence is proof of its content. Any failure removes the partial file. Two concurrent
//! `ensure` calls for one digest serialise on a per-digest lock; the second finds the file.
//!
//! Where blobs come from is a [`BlobSource`]: the agent's gRPC client of the control plane's
//! `FetchBlob` stream in production, [`DirBlobSource`] for pre-seeded images and tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Default largest blob the cache accepts: 20 GiB.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 20 * 1024 * 1024 * 1024;

/// A stream of a blob's bytes, in chunks.
pub type BlobStream = BoxStream<'static, Result<Vec<u8>, BlobSourceError>>;

/// Where blobs come from.
pub trait BlobSource: Send + Sync + std::fmt::Debug {
    /// Opens the blob with lowercase hex SHA-256 `sha256` as a stream of chunks.
    fn fetch<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<BlobStream, BlobSourceError>>;
}

/// A blob source failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobSourceError {
    /// The source does not have this blob.
    #[error("blob {sha256} not found")]
    NotFound {
        /// The digest asked for.
        sha256: String,
    },
    /// Reading a local file failed.
    #[error("cannot read blob file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Any other transport failure (e.g. a gRPC status), with the source's own error.
    #[error("blob transfer failed")]
    Transfer {
        /// The transport's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Image cache errors.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Not 64 lowercase hex digits.
    #[error("invalid sha256 digest {sha256:?}")]
    InvalidDigest {
        /// The value given.
        sha256: String,
    },
    /// The source could not provide the blob.
    #[error("cannot fetch blob {sha256}")]
    Fetch {
        /// The digest.
        sha256: String,
        /// The source's error.
        #[source]
        source: BlobSourceError,
    },
    /// The blob is (or announces to be) larger than allowed.
    #[error("blob {sha256} exceeds the size limit of {limit} bytes")]
    TooLarge {
        /// The digest.
        sha256: String,
        /// The limit that applied (configured maximum or expected size).
        limit: u64,
    },
    /// The blob ended with a different size than expected.
    #[error("blob {sha256} has {actual} bytes, expected {expected}")]
    SizeMismatch {
        /// The digest.
        sha256: String,
        /// Expected size.
        expected: u64,
        /// Received size.
        actual: u64,
    },
    /// The content does not hash to the digest it was requested by.
    #[error("blob content hashes to {actual}, expected {sha256}")]
    ChecksumMismatch {
        /// The digest asked for.
        sha256: String,
        /// What the content hashed to.
        actual: String,
    },
    /// Writing the cache failed.
    #[error("cannot write image cache file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The cache. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct ImageCache {
    dir: PathBuf,
    max_bytes: u64,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ImageCache {
    /// A cache in `dir` accepting blobs up to `max_bytes`.
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> ImageCache {
        ImageCache { dir: dir.into(), max_bytes, locks: Mutex::new(HashMap::new()) }
    }

    /// Where the blob with `sha256` lives once cached.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join("sha256").join(sha256)
    }

    /// The directory of partial downloads.
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Returns the cached blob's path, fetching it from `source` first when missing.
    ///
    /// `expected_size` (when known) must match exactly; the configured maximum applies always.
    pub async fn ensure(
        &self,
        sha256: &str,
        expected_size: Option<u64>,
        source: &dyn BlobSource,
        metrics: &crate::metrics::AgentMetrics,
    ) -> Result<PathBuf, ImageError> {
        if !is_sha256_hex(sha256) {
            return Err(ImageError::InvalidDigest { sha256: sha256.to_owned() });
        }
        let path = self.path(sha256);
        if let Ok(meta) = tokio::fs::metadata(&path).await {
            touch(&path).await;
            // The agent's alone (a VM reads its own images through an ACL entry of its user's),
            // also for files cached before that was so.
            if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0 {
                let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
                tokio::fs::set_permissions(&path, private)
                    .await
                    .map_err(|source| ImageError::Io { path: path.clone(), source })?;
            }
            return Ok(path);
        }
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(sha256.to_owned()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(path);
        }
        let started = std::time::Instant::now();
        let result = self.download(sha256, expected_size, source, &path).await;
        if let Ok(bytes) = result {
            metrics.image_fetched(bytes, started.elapsed());
        }
        {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            if Arc::strong_count(&lock) <= 2 {
                locks.remove(sha256);
            }
        }
        result.map(|_| path)
    }

    async fn download(
        &self,
        sha256: &str,
        expected_size: Option<u64>,
        source: &dyn BlobSource,
        dest: &Path,
    ) -> Result<u64, ImageError> {
        let limit = expected_size.map_or(self.max_bytes, |e| e.min(self.max_bytes));
        if expected_size.is_some_and(|e| e > self.max_bytes) {
            return Err(ImageError::TooLarge { sha256: sha256.to_owned(), limit: self.max_bytes });
        }
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| ImageError::Io { path, source }
        };
        let tmp_dir = self.tmp_dir();
        tokio::fs::create_dir_all(&tmp_dir).await.map_err(io_err(&tmp_dir))?;
        let parent = self.dir.join("sha256");
        tokio::fs::create_dir_all(&parent).await.map_err(io_err(&parent))?;
        // Others may pass through (a VM's QEMU opens the files it was granted) but not list.
        let passable = std::os::unix::fs::PermissionsExt::from_mode(0o711);
        tokio::fs::set_permissions(&parent, passable).await.map_err(io_err(&parent))?;
        let tmp = tmp_dir.join(format!("{sha256}.{}.partial", uuid::Uuid::new_v4().simple()));
        let result = async {
            let mut stream =
                source.fetch(sha256).await.map_err(|source| ImageError::Fetch { sha256: sha256.to_owned(), source })?;
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io_err(&tmp))?;
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600)).await.map_err(io_err(&tmp))?;
            let mut hasher = Sha256::new();
            let mut total: u64 = 0;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|source| ImageError::Fetch { sha256: sha256.to_owned(), source })?;
                total += chunk.len() as u64;
                if total > limit {
                    return Err(match expected_size {
                        Some(expected) if expected <= self.max_bytes => {
                            ImageError::SizeMismatch { sha256: sha256.to_owned(), expected, actual: total }
                        }
                        _ => ImageError::TooLarge { sha256: sha256.to_owned(), limit },
                    });
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(io_err(&tmp))?;
            }
            if let Some(expected) = expected_size
                && expected != total
            {
                return Err(ImageError::SizeMismatch { sha256: sha256.to_owned(), expected, actual: total });
            }
            let actual = hex::encode(hasher.finalize());
            if actual != sha256 {
                return Err(ImageError::ChecksumMismatch { sha256: sha256.to_owned(), actual });
            }
            file.sync_all().await.map_err(io_err(&tmp))?;
            drop(file);
            tokio::fs::rename(&tmp, dest).await.map_err(io_err(dest))?;
            tracing::info!(sha256, bytes = total, "image blob cached");
            Ok(total)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }
}

/// True for 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Marks a cached blob as used now, for [`ImageCache::evict`].
async fn touch(path: &Path) {
    let path = path.to_owned();
    let _ = tokio::task::spawn_blocking(move || cloud_common::fs::touch(&path)).await;
}

/// Blobs used this recently are never evicted: an instance may be about to open one.
pub const EVICT_KEEP_RECENT: std::time::Duration = std::time::Duration::from_secs(600);

impl ImageCache {
    /// Keeps the cache under `max_bytes`: removes the blobs no instance uses (`in_use`), used
    /// longest ago first (never one used in the last [`EVICT_KEEP_RECENT`]), until it is under
    /// the bound. Returns how many blobs and bytes went. Blocking work runs off the async threads.
    pub async fn evict(
        &self,
        max_bytes: u64,
        in_use: std::collections::HashSet<String>,
    ) -> std::io::Result<(u64, u64)> {
        let dir = self.dir.join("sha256");
        tokio::task::spawn_blocking(move || evict_dir(&dir, max_bytes, &in_use, EVICT_KEEP_RECENT))
            .await
            .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
    }
}

fn evict_dir(
    dir: &Path,
    max_bytes: u64,
    in_use: &std::collections::HashSet<String>,
    keep_recent: std::time::Duration,
) -> std::io::Result<(u64, u64)> {
    use cloud_common::fs::Cached;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    let mut blobs = Vec::new();
    for entry in entries.flatten() {
        let meta = entry.metadata()?;
        if meta.is_file() {
            let pinned = in_use.contains(entry.file_name().to_string_lossy().as_ref());
            blobs.push(Cached { used: meta.modified()?, len: meta.len(), path: entry.path(), pinned });
        }
    }
    if blobs.iter().map(|b| b.len).sum::<u64>() <= max_bytes {
        return Ok((0, 0));
    }
    let removed = cloud_common::fs::evict_lru(blobs, max_bytes, keep_recent)?;
    for blob in &removed {
        tracing::info!(blob = %blob.path.display(), bytes = blob.len, "image blob evicted");
    }
    Ok((removed.len() as u64, removed.iter().map(|b| b.len).sum()))
}

/// Blobs from the shared store, where the control plane puts every image file it registers
/// (`images/<sha256>`): chunks fetched in parallel (those this host has cached are read
/// locally), each checked. A blob the store lacks (an image registered before the store, or a
/// store that is down) comes from `fallback` (the control plane's stream).
#[derive(Debug)]
pub struct StoreBlobs {
    store: cloud_store::Store,
    fallback: Arc<dyn BlobSource>,
}

impl StoreBlobs {
    /// Blobs from `store`, else from `fallback`.
    pub fn new(store: cloud_store::Store, fallback: Arc<dyn BlobSource>) -> StoreBlobs {
        StoreBlobs { store, fallback }
    }
}

impl BlobSource for StoreBlobs {
    fn fetch<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<BlobStream, BlobSourceError>> {
        Box::pin(async move {
            let file = match self.store.manifest(&cloud_store::image_name(sha256)).await {
                Ok(mut m) => m.files.remove(cloud_store::IMAGE_FILE),
                Err(cloud_store::StoreError::NotFound { .. }) => None,
                Err(e) => {
                    tracing::warn!(%sha256, error = %crate::error_chain(&e), "the store cannot be read: fetching the image from the control plane");
                    None
                }
            };
            let Some(file) = file else { return self.fallback.fetch(sha256).await };
            let transfer = |e: cloud_store::StoreError| BlobSourceError::Transfer { source: Box::new(e) };
            Ok(self.store.stream(file).map(move |chunk| chunk.map(|b| b.to_vec()).map_err(transfer)).boxed())
        })
    }
}

/// Blobs pre-seeded in a directory as `<dir>/<sha256>` (operators, tests).
#[derive(Debug, Clone)]
pub struct DirBlobSource {
    dir: PathBuf,
}

impl DirBlobSource {
    /// A source reading `<dir>/<sha256>`.
    pub fn new(dir: impl Into<PathBuf>) -> DirBlobSource {
        DirBlobSource { dir: dir.into() }
    }
}

const CHUNK: usize = 256 * 1024;

impl BlobSource for DirBlobSource {
    fn fetch<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<BlobStream, BlobSourceError>> {
        Box::pin(async move {
            if !is_sha256_hex(sha256) {
                return Err(BlobSourceError::NotFound { sha256: sha256.to_owned() });
            }
            let path = self.dir.join(sha256);
            let file = match tokio::fs::File::open(&path).await {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(BlobSourceError::NotFound { sha256: sha256.to_owned() });
                }
                Err(source) => return Err(BlobSourceError::Io { path, source }),
            };
            let stream = futures::stream::unfold(Some((file, path)), |state| async move {
                let (mut file, path) = state?;
                let mut buf = vec![0u8; CHUNK];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(buf), Some((file, path))))
                    }
                    Err(source) => Some((Err(BlobSourceError::Io { path, source }), None)),
                }
            });
            Ok(stream.boxed())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn digest(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    #[test]
    fn eviction_spares_images_in_use_and_recent_ones_and_goes_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let now = std::time::SystemTime::now();
        let put = |name: &str, age_secs: u64| {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![0u8; 100]).unwrap();
            let f = std::fs::File::options().append(true).open(&path).unwrap();
            f.set_modified(now - std::time::Duration::from_secs(age_secs)).unwrap();
            path
        };
        let (oldest, used, old, recent) = (put("a", 4000), put("b", 3000), put("c", 2000), put("d", 5));
        let in_use: std::collections::HashSet<String> = ["b".to_owned()].into();
        let keep = std::time::Duration::from_secs(600);
        assert_eq!(evict_dir(dir.path(), 400, &in_use, keep).unwrap(), (0, 0));
        // 400 bytes, 250 allowed: the oldest unused one goes, then the next.
        assert_eq!(evict_dir(dir.path(), 250, &in_use, keep).unwrap(), (2, 200));
        assert!(!oldest.exists() && used.exists() && !old.exists() && recent.exists());
        // Nothing left that may go: in use or recent.
        assert_eq!(evict_dir(dir.path(), 0, &in_use, keep).unwrap(), (0, 0));
        assert_eq!(evict_dir(&dir.path().join("missing"), 0, &in_use, keep).unwrap(), (0, 0));
    }

    #[tokio::test]
    async fn caches_verified_blobs_and_reuses_them() {
        let src = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 600_000];
        let d = digest(&data);
        std::fs::write(src.path().join(&d), &data).unwrap();
        let cache = Arc::new(ImageCache::new(cache_dir.path(), DEFAULT_MAX_BLOB_BYTES));
        let source = Arc::new(DirBlobSource::new(src.path()));
        let metrics = Arc::new(crate::metrics::AgentMetrics::new());
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (cache, source, d, metrics) = (cache.clone(), source.clone(), d.clone(), metrics.clone());
            tasks.push(tokio::spawn(async move { cache.ensure(&d, Some(600_000), source.as_ref(), &metrics).await }));
        }
        for t in tasks {
            let p = t.await.unwrap().unwrap();
            assert_eq!(std::fs::read(p).unwrap(), data);
        }
        // Served from the cache even when the source is gone.
        std::fs::remove_file(src.path().join(&d)).unwrap();
        cache.ensure(&d, None, source.as_ref(), &metrics).await.unwrap();
        assert_eq!(std::fs::read_dir(cache.tmp_dir()).unwrap().count(), 0);
        // One fetch of four asks, counted once.
        let text = metrics.encode([]).unwrap();
        assert!(text.contains("cloud_agent_image_fetched_bytes_total 600000"), "{text}");
        assert!(text.contains("cloud_agent_image_fetch_seconds_count 1"), "{text}");
    }

    #[tokio::test]
    async fn rejects_bad_digests_and_missing_blobs() {
        let src = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(src.path().join("cache"), 10);
        let source = DirBlobSource::new(src.path());
        let metrics = crate::metrics::AgentMetrics::new();
        let err = cache.ensure("ABC", None, &source, &metrics).await.unwrap_err();
        assert!(matches!(err, ImageError::InvalidDigest { .. }));
        let err = cache.ensure(&digest(b"x"), None, &source, &metrics).await.unwrap_err();
        assert!(matches!(err, ImageError::Fetch { source: BlobSourceError::NotFound { .. }, .. }));
    }
}
