//! The image cache against bad blobs: nothing is left in the cache after a failure.

use host_agent::images::{BlobSourceError, DirBlobSource, ImageCache, ImageError};
use host_agent::instances::{InstanceError, PowerState};

use crate::common::*;

fn cache_is_empty(dir: &std::path::Path) -> bool {
    ["sha256", "tmp"].iter().all(|d| std::fs::read_dir(dir.join(d)).map(|mut r| r.next().is_none()).unwrap_or(true))
}

#[tokio::test]
async fn checksum_and_size_errors_are_typed_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = tmp.path().join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    let data = b"not what the digest says".to_vec();
    let wrong = "0".repeat(64);
    std::fs::write(seed.join(&wrong), &data).unwrap();
    let source = DirBlobSource::new(&seed);
    let cache_dir = tmp.path().join("cache");
    let cache = ImageCache::new(&cache_dir, 1024);
    let metrics = host_agent::metrics::AgentMetrics::new();

    let err = cache.ensure(&wrong, None, &source, &metrics).await.unwrap_err();
    assert!(matches!(err, ImageError::ChecksumMismatch { .. }), "{err:?}");
    let err = cache.ensure(&wrong, Some(3), &source, &metrics).await.unwrap_err();
    assert!(matches!(err, ImageError::SizeMismatch { expected: 3, .. }), "{err:?}");
    let small = ImageCache::new(&cache_dir, 10);
    let err = small.ensure(&wrong, None, &source, &metrics).await.unwrap_err();
    assert!(matches!(err, ImageError::TooLarge { limit: 10, .. }), "{err:?}");
    let err = small.ensure(&wrong, Some(1 << 40), &source, &metrics).await.unwrap_err();
    assert!(matches!(err, ImageError::TooLarge { .. }), "{err:?}");
    let err = cache.ensure(&"1".repeat(64), None, &source, &metrics).await.unwrap_err();
    assert!(matches!(err, ImageError::Fetch { source: BlobSourceError::NotFound { .. }, .. }), "{err:?}");
    // Nothing fetched is counted.
    assert!(metrics.encode([]).unwrap().contains("cloud_agent_image_fetched_bytes_total 0"));
    assert!(cache_is_empty(&cache_dir));
}

#[tokio::test]
async fn unknown_image_digest_changes_nothing() {
    let host = TestHost::create();
    let key = ssh_key(host.tmp.path(), "bob");
    let mut desired = minimal_instance(&host, &key, "nope", "10.100.3.9");
    desired.image.kernel_sha256 = Some("2".repeat(64));
    let manager = host.start_manager().await;
    let err = manager.ensure(desired.clone(), PowerState::Running, 1).await.unwrap_err();
    assert!(matches!(err, InstanceError::Image { .. }), "{err:?}");
    assert!(manager.list().await.is_empty());
    assert!(!host.instances_dir().join(desired.id.to_string()).exists());
    let mut bad_mac = desired;
    bad_mac.nics[0].mac = "01:00:5e:00:00:01".parse().unwrap();
    let err = manager.ensure(bad_mac, PowerState::Running, 1).await.unwrap_err();
    assert!(matches!(err, InstanceError::InvalidSpec { .. }), "{err:?}");
}
