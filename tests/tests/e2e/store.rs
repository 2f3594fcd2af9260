//! The content-addressed store on both backends: a local directory and a real S3 server
//! (s3s-fs). Every test runs once per backend, with the same assertions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cloud_store::{LAYERED_CHUNK, PLAIN_CHUNK, Source, SourceRange, Store, StoreConfig, StoreError};
use cloud_tests::s3::S3Server;

/// One backend under test: its config, and the directory its objects end up in.
struct Backend {
    config: StoreConfig,
    objects: PathBuf,
    _s3: Option<S3Server>,
}

fn local_backend(dir: &Path) -> Backend {
    let objects = dir.join("store");
    let config = StoreConfig { dir: objects.clone(), ..StoreConfig::default() };
    Backend { config, objects, _s3: None }
}

async fn s3(dir: &Path) -> Backend {
    let server = S3Server::start(dir).await;
    Backend { config: server.config(), objects: server.bucket_dir(), _s3: Some(server) }
}

/// A store with a fresh chunk cache (as a host that never fetched anything).
fn open(b: &Backend, cache: &Path) -> Store {
    Store::open(&b.config, cache).unwrap()
}

/// Pseudo-random bytes (incompressible, reproducible).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A layered disk of 64 MiB virtual size whose overlay holds `data` at 8 MiB (as qemu-img map
/// would describe a qcow2 overlay whose data clusters are stored contiguously).
fn layered(path: &Path, data: &[u8]) -> Source {
    std::fs::write(path, data).unwrap();
    Source {
        name: "disk-0.qcow2".into(),
        path: path.to_owned(),
        size: 64 << 20,
        layered: Some(Some("ab".repeat(32))),
        ranges: vec![SourceRange { offset: 8 << 20, len: data.len() as u64, at: Some(0) }],
    }
}

fn sha(path: &Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

async fn roundtrip_and_second_upload(b: Backend, dir: &Path) {
    let store = open(&b, &dir.join("cache-a"));
    // A plain file with a hole in the middle, and a layered disk.
    let plain = dir.join("memory.state");
    let mut bytes = noise(5 * PLAIN_CHUNK as usize + 123, 1);
    bytes[PLAIN_CHUNK as usize..3 * PLAIN_CHUNK as usize].fill(0);
    std::fs::write(&plain, &bytes).unwrap();
    let mut disk = noise(4 << 20, 2);
    let sources = |disk: &[u8]| vec![Source::plain("memory.state", &plain).unwrap(), layered(&dir.join("disk"), disk)];
    let (first, stats) = store.put("snapshots/one", sources(&disk)).await.unwrap();
    assert_eq!(stats.bytes_uploaded, first.data_bytes(), "{stats:?}");
    assert_eq!(first.files["memory.state"].extents.iter().filter(|e| e.chunk.is_none()).count(), 2);

    // Another host, with an empty cache, gets the plain file back exactly, holes included.
    let other = open(&b, &dir.join("cache-b"));
    let manifest = other.manifest("snapshots/one").await.unwrap();
    assert_eq!(manifest, first);
    let out = dir.join("restored.state");
    let fetched = other.write_plain(&manifest.files["memory.state"], &out).await.unwrap();
    assert_eq!(sha(&out), sha(&plain));
    assert_eq!(fetched.chunks_fetched, 4, "{fetched:?}");
    // The cache now has them: fetching again moves nothing.
    let again = other.write_plain(&manifest.files["memory.state"], &out).await.unwrap();
    assert_eq!(again.chunks_fetched, 0);
    other.fetch(&manifest.files["disk-0.qcow2"]).await.unwrap();

    // 1 MiB changed in the disk (not aligned to a chunk): the second upload moves only the
    // chunks that changed, and at most one more at each end.
    let changed = 1 << 20;
    let at = 3 * LAYERED_CHUNK as usize + 4096;
    disk[at..at + changed].copy_from_slice(&noise(changed, 3));
    let (second, stats) = store.put("snapshots/two", sources(&disk)).await.unwrap();
    let changed_chunks = (changed as u64).div_ceil(LAYERED_CHUNK) + 1;
    assert_eq!(stats.chunks_uploaded, changed_chunks, "{stats:?}");
    assert!(stats.bytes_uploaded <= changed as u64 + LAYERED_CHUNK, "{stats:?}");
    let (extents, fetched) = other.fetch(&second.files["disk-0.qcow2"]).await.unwrap();
    assert_eq!(fetched.chunks_fetched, changed_chunks);
    // The disk's content, reassembled from the cache, is the changed disk.
    let mut rebuilt = vec![0u8; disk.len()];
    for e in &extents {
        let data = cloud_store::read_chunk(e.chunk.as_ref().unwrap()).unwrap();
        let from = (e.offset - (8 << 20)) as usize;
        rebuilt[from..from + e.len as usize].copy_from_slice(&data);
    }
    assert!(rebuilt == disk, "the reassembled disk differs");
    drop(b);
}

async fn corrupt_chunks_are_refused(b: Backend, dir: &Path) {
    let store = open(&b, &dir.join("cache-a"));
    let file = dir.join("f");
    std::fs::write(&file, noise(3 * PLAIN_CHUNK as usize, 4)).unwrap();
    let (manifest, _) = store.put("snapshots/c", vec![Source::plain("f", &file).unwrap()]).await.unwrap();
    // Flip one byte of one chunk where the backend keeps it.
    let victim = manifest.files["f"].extents[1].chunk.unwrap().hex();
    let path = b.objects.join("chunks").join(&victim[..2]).join(&victim);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let other = open(&b, &dir.join("cache-b"));
    let err = other.write_plain(&manifest.files["f"], &dir.join("out")).await.unwrap_err();
    assert!(matches!(&err, StoreError::Corrupt { chunk, .. } if chunk.hex() == victim), "{err:?}");
    assert!(!dir.join("out").exists(), "a corrupt fetch must leave no file");
    // A chunk corrupted in a host's cache is refused too, and fetched again from the store.
    let good = open(&b, &dir.join("cache-c"));
    let entry = &manifest.files["f"];
    let first_only = cloud_store::FileEntry { extents: entry.extents[..1].to_vec(), ..entry.clone() };
    let (extents, stats) = good.fetch(&first_only).await.unwrap();
    assert_eq!(stats.chunks_fetched, 1);
    let cached = extents[0].chunk.clone().unwrap();
    let mut bytes = std::fs::read(&cached).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&cached, bytes).unwrap();
    assert!(matches!(cloud_store::read_chunk(&cached), Err(StoreError::Corrupt { .. })));
    let (_, stats) = good.fetch(&first_only).await.unwrap();
    assert_eq!(stats.chunks_fetched, 1, "the corrupt cached chunk is fetched again");
    cloud_store::read_chunk(&cached).unwrap();
}

async fn garbage_collection_keeps_what_is_referenced(b: Backend, dir: &Path) {
    let store = open(&b, &dir.join("cache"));
    let shared = noise(2 * PLAIN_CHUNK as usize, 5);
    let (a, b_file) = (dir.join("a"), dir.join("b"));
    std::fs::write(&a, [shared.clone(), noise(PLAIN_CHUNK as usize, 6)].concat()).unwrap();
    std::fs::write(&b_file, [shared, noise(PLAIN_CHUNK as usize, 7)].concat()).unwrap();
    store.put("snapshots/a", vec![Source::plain("f", &a).unwrap()]).await.unwrap();
    let (kept, _) = store.put("snapshots/b", vec![Source::plain("f", &b_file).unwrap()]).await.unwrap();
    store.delete("snapshots/a").await.unwrap();
    store.delete("snapshots/a").await.unwrap();
    let stats = store.collect_garbage().await.unwrap();
    assert_eq!((stats.chunks, stats.deleted), (4, 1), "{stats:?}");
    let fresh = open(&b, &dir.join("cache-2"));
    fresh.write_plain(&kept.files["f"], &dir.join("out")).await.unwrap();
    assert_eq!(sha(&dir.join("out")), sha(&b_file));

    // Uploads racing collections: every stored object stays whole.
    let big = dir.join("big");
    for round in 0..3u64 {
        std::fs::write(&big, noise(16 * PLAIN_CHUNK as usize, 100 + round)).unwrap();
        let name = format!("snapshots/race-{round}");
        let put = store.put(&name, vec![Source::plain("f", &big).unwrap()]);
        let gc = async {
            tokio::time::sleep(Duration::from_millis(20 * round)).await;
            store.collect_garbage().await.unwrap();
        };
        let ((manifest, _), ()) = tokio::join!(async { put.await.unwrap() }, gc);
        store.collect_garbage().await.unwrap();
        let check = open(&b, &dir.join(format!("cache-race-{round}")));
        check.write_plain(&manifest.files["f"], &dir.join("out")).await.unwrap();
        assert_eq!(sha(&dir.join("out")), sha(&big), "round {round}");
        store.delete(&name).await.unwrap();
    }
    let stats = store.collect_garbage().await.unwrap();
    assert_eq!(stats.chunks - stats.deleted, kept.chunks().len() as u64, "{stats:?}");
}

/// Each scenario as two tests, one per backend.
macro_rules! on_both_backends {
    ($($scenario:ident => $local:ident, $s3:ident;)*) => {$(
        #[tokio::test]
        async fn $local() {
            let dir = tempfile::tempdir().unwrap();
            $scenario(local_backend(dir.path()), dir.path()).await;
        }

        #[tokio::test]
        async fn $s3() {
            let dir = tempfile::tempdir().unwrap();
            $scenario(s3(dir.path()).await, dir.path()).await;
        }
    )*};
}

on_both_backends! {
    roundtrip_and_second_upload =>
        local_store_roundtrips_and_uploads_only_changed_chunks, s3_store_roundtrips_and_uploads_only_changed_chunks;
    corrupt_chunks_are_refused => local_store_refuses_corrupt_chunks, s3_store_refuses_corrupt_chunks;
    garbage_collection_keeps_what_is_referenced =>
        local_store_collects_garbage_while_uploads_run, s3_store_collects_garbage_while_uploads_run;
}

#[tokio::test]
async fn an_s3_outage_fails_the_upload_and_keeps_earlier_objects() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = S3Server::start(dir.path()).await;
    let store = Store::open(&server.config(), &dir.path().join("cache")).unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, noise(2 * PLAIN_CHUNK as usize, 8)).unwrap();
    let (before, _) = store.put("snapshots/before", vec![Source::plain("f", &file).unwrap()]).await.unwrap();
    server.stop();
    std::fs::write(&file, noise(2 * PLAIN_CHUNK as usize, 9)).unwrap();
    let err = store.put("snapshots/during", vec![Source::plain("f", &file).unwrap()]).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
    server.restart().await;
    assert!(matches!(store.manifest("snapshots/during").await, Err(StoreError::NotFound { .. })));
    let other = Store::open(&server.config(), &dir.path().join("cache-2")).unwrap();
    assert_eq!(other.manifest("snapshots/before").await.unwrap(), before);
    other.write_plain(&before.files["f"], &dir.path().join("out")).await.unwrap();
}
