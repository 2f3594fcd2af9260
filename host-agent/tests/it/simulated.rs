//! The simulated driver (scale simulations only): same state machine, no processes or taps.

use std::sync::Arc;

use host_agent::images::DirBlobSource;
use host_agent::instances::{
    DesiredInstance, DriverKind, InstanceError, InstanceId, InstanceManager, InstanceState, ManagerConfig, PowerState,
    SnapshotId, SnapshotKind,
};

use crate::common::*;

#[tokio::test]
async fn simulated_instances_follow_the_state_machine_and_persist() {
    let host = TestHost::create();
    let key = ssh_key(host.tmp.path(), "sim");
    let config = || {
        let mut c = ManagerConfig::new(SUBNET.parse().unwrap());
        c.instances_dir = host.instances_dir();
        c.images_dir = host.images_dir();
        c.snapshots_dir = host.snapshots_dir();
        c.driver = DriverKind::Simulated;
        c
    };
    let source = Arc::new(DirBlobSource::new(&host.seed));
    let manager = InstanceManager::start(config(), source.clone()).await.unwrap();
    let a = minimal_instance(&host, &key, "sim-a", "10.100.3.20");
    let b = minimal_instance(&host, &key, "sim-b", "10.100.3.21");
    assert_eq!(manager.ensure(a.clone(), PowerState::Running, 1).await.unwrap().state, InstanceState::Running);
    assert_eq!(manager.ensure(b.clone(), PowerState::Stopped, 5).await.unwrap().state, InstanceState::Stopped);
    assert_eq!(manager.capacity_used().await.memory_mib, 512);
    let paused = manager.pause_all().await;
    assert!(paused.iter().any(|s| s.id == a.id && s.state == InstanceState::Paused));
    let resumed = manager.resume(vec![a.id]).await;
    assert_eq!(resumed[0].as_ref().unwrap().state, InstanceState::Running);
    assert!(matches!(manager.reboot(b.id, 6).await, Err(InstanceError::InvalidState { .. })));
    assert_eq!(manager.stop(a.id, 2).await.unwrap().state, InstanceState::Stopped);
    assert_eq!(manager.ensure(a.clone(), PowerState::Running, 3).await.unwrap().state, InstanceState::Running);
    // Only agent.json on disk, nothing in the image cache, no bridge.
    let files: Vec<_> = std::fs::read_dir(host.instances_dir().join(a.id.to_string()))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, vec!["agent.json".to_owned()]);
    assert!(!host.images_dir().exists());
    assert!(!host.ip_ok(&["link", "show", "dev", "cloudbr0"]));

    drop(manager);
    let manager = InstanceManager::start(config(), source).await.unwrap();
    let s = manager.get(a.id).await.unwrap();
    assert_eq!((s.state, s.generation), (InstanceState::Running, 3));
    assert_eq!(manager.delete(b.id, 7).await.unwrap().state, InstanceState::Deleted);
    assert!(!host.instances_dir().join(b.id.to_string()).exists());
    assert_eq!(manager.list().await.len(), 1);

    // Snapshots keep their logic (idempotent by id, generation-guarded, restorable as a new
    // instance) with only the record on disk.
    let snap = SnapshotId(uuid::Uuid::new_v4());
    let info = manager.snapshot(a.id, snap, SnapshotKind::Full, 4).await.unwrap();
    assert_eq!(manager.snapshot(a.id, snap, SnapshotKind::Full, 4).await.unwrap(), info);
    assert_eq!(manager.get(a.id).await.unwrap().state, InstanceState::Running);
    let stale = manager.snapshot(a.id, SnapshotId(uuid::Uuid::new_v4()), SnapshotKind::Disk, 3).await.unwrap_err();
    assert!(matches!(stale, InstanceError::StaleGeneration { .. }), "{stale:?}");
    let missing = manager.snapshot(b.id, snap, SnapshotKind::Disk, 9).await.unwrap_err();
    assert!(matches!(missing, InstanceError::NotFound { .. }), "{missing:?}");
    let c = DesiredInstance { id: InstanceId(uuid::Uuid::new_v4()), ..a.clone() };
    let incomplete = host.snapshots_dir().join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&incomplete).unwrap();
    let err = manager.restore(c.clone(), incomplete, 1).await.unwrap_err();
    assert!(matches!(err, InstanceError::InvalidSpec { .. }), "{err:?}");
    let restored = manager.restore(c.clone(), info.location.clone(), 1).await.unwrap();
    assert_eq!((restored.id, restored.state), (c.id, InstanceState::Running));
    assert_eq!(manager.restore(c.clone(), info.location, 1).await.unwrap().generation, 1);
    assert_eq!(manager.list().await.len(), 2);
}
