//! Snapshots through the instance manager with real QEMU: a running instance with state in its
//! tmpfs (`/tmp`) and on its data disk (`/mnt/data`, ext4 made by the agent) is snapshotted (disk, then full), deleted, and restored as new
//! instances. The full restore continues the guest (same boot id, marker in tmpfs, uptime not
//! reset) under a new id, tap and directory; the disk restore boots afresh from the disk at a
//! new MAC and address. Snapshots are idempotent by id, guarded by generation, and outlive the
//! instance.

use host_agent::instances::{
    DesiredInstance, InstanceError, InstanceId, InstanceState, PowerState, SNAPSHOT_JSON, SnapshotId, SnapshotKind,
};
use host_agent::network::tap_name;

use crate::common::*;

const IP: &str = "10.100.3.30";
const IP_FROM_DISK: &str = "10.100.3.31";
const DISK_MARKER: &str = "on-the-data-disk";

fn new_id() -> InstanceId {
    InstanceId(uuid::Uuid::new_v4())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_outlive_their_instance_and_restore_as_new_instances() {
    let host = TestHost::create();
    let key = ssh_key(host.tmp.path(), "snap");
    let desired = minimal_instance(&host, &key, "snap-1", IP);
    let id = desired.id;
    let manager = host.start_manager().await;
    manager.ensure(desired.clone(), PowerState::Running, 1).await.unwrap();

    // State in memory (tmpfs) and on the raw data disk.
    let write = format!(
        "echo hi > /tmp/marker && echo {DISK_MARKER} > /mnt/data/marker && sync && \
         cat /proc/sys/kernel/random/boot_id"
    );
    wait_for_ssh(&host, &key.private, IP, "true", BOOT_TIMEOUT).await.unwrap();
    let boot_id = ssh_ok(&host, &key.private, IP, &write).await.unwrap();

    // Disk snapshot of the running instance: it keeps running.
    let disk_id = SnapshotId(uuid::Uuid::new_v4());
    let disk = manager.snapshot(id, disk_id, SnapshotKind::Disk, 2).await.unwrap();
    assert_eq!((disk.snapshot_id, disk.instance_id, disk.kind), (disk_id, id, SnapshotKind::Disk));
    assert_eq!(disk.location, host.snapshots_dir().join(disk_id.to_string()));
    assert!(disk.location.join(SNAPSHOT_JSON).exists() && disk.size_bytes > 0);
    let status = manager.get(id).await.unwrap();
    assert_eq!((status.state, status.generation), (InstanceState::Running, 2));
    // The same id again: the same snapshot, not a new one. An older generation: a typed error.
    assert_eq!(manager.snapshot(id, disk_id, SnapshotKind::Disk, 2).await.unwrap(), disk);
    let stale = manager.snapshot(id, SnapshotId(uuid::Uuid::new_v4()), SnapshotKind::Disk, 1).await.unwrap_err();
    assert!(matches!(stale, InstanceError::StaleGeneration { requested: 1, current: 2, .. }), "{stale:?}");
    let clash = manager.snapshot(id, disk_id, SnapshotKind::Full, 2).await.unwrap_err();
    assert!(matches!(clash, InstanceError::InvalidSpec { .. }), "{clash:?}");

    // Full snapshot; then the instance is deleted and its snapshots stay.
    let uptime_before = guest_uptime(&host, &key.private, IP).await;
    let full_id = SnapshotId(uuid::Uuid::new_v4());
    let full = manager.snapshot(id, full_id, SnapshotKind::Full, 3).await.unwrap();
    assert_eq!(full.kind, SnapshotKind::Full);
    assert!(full.location.join("memory.state").exists());
    assert_eq!(manager.get(id).await.unwrap().state, InstanceState::Running);
    manager.delete(id, 4).await.unwrap();
    assert!(!host.instances_dir().join(id.to_string()).exists());
    assert!(full.location.join(SNAPSHOT_JSON).exists() && disk.location.join(SNAPSHOT_JSON).exists());

    // A full snapshot keeps its guest's devices: another number of NICs is refused, and so is
    // a location outside the local store. Nothing is created.
    let no_nic = DesiredInstance { id: new_id(), nics: Vec::new(), ..desired.clone() };
    let err = manager.restore(no_nic.clone(), full.location.clone(), 1).await.unwrap_err();
    assert!(matches!(err, InstanceError::InvalidSpec { .. }), "{err:?}");
    let elsewhere = DesiredInstance { id: new_id(), ..desired.clone() };
    let err = manager.restore(elsewhere, host.tmp.path().to_owned(), 1).await.unwrap_err();
    assert!(matches!(err, InstanceError::InvalidSpec { .. }), "{err:?}");
    assert!(manager.list().await.is_empty());
    assert!(!host.instances_dir().join(no_nic.id.to_string()).exists());

    // Full restore as a new instance (new id, tap, directory and hostname): the guest
    // continues, and its guest agent gives it its new hostname.
    let restored = DesiredInstance { id: new_id(), hostname: "snap-2".into(), ..desired.clone() };
    let status = manager.restore(restored.clone(), full.location.clone(), 1).await.unwrap();
    assert_eq!((status.state, status.generation), (InstanceState::Running, 1));
    let read = "cat /tmp/marker /proc/sys/kernel/random/boot_id; hostname";
    let out = wait_for_ssh(&host, &key.private, IP, read, BOOT_TIMEOUT).await.unwrap();
    assert_eq!(out, format!("hi\n{boot_id}\nsnap-2"));
    let uptime_after = guest_uptime(&host, &key.private, IP).await;
    assert!(uptime_after >= uptime_before, "uptime went from {uptime_before} to {uptime_after}");
    assert!(host.ip_ok(&["link", "show", "dev", &tap_name(restored.id, 0)]));
    assert!(!host.ip_ok(&["link", "show", "dev", &tap_name(id, 0)]));
    // Idempotent like ensure: the same generation is a no-op, an older one is refused.
    let pid = qemu_pid(&host.instances_dir(), restored.id).unwrap();
    let again = manager.restore(restored.clone(), full.location.clone(), 1).await.unwrap();
    assert_eq!((again.state, again.generation), (InstanceState::Running, 1));
    assert_eq!(qemu_pid(&host.instances_dir(), restored.id), Some(pid));
    let stale = manager.restore(restored.clone(), full.location.clone(), 0).await.unwrap_err();
    assert!(matches!(stale, InstanceError::StaleGeneration { .. }), "{stale:?}");
    manager.delete(restored.id, 2).await.unwrap();

    // Disk restore at a new MAC and address: a fresh boot that sees the data disk.
    let mut from_disk = DesiredInstance { id: new_id(), hostname: "snap-3".into(), ..desired.clone() };
    from_disk.nics[0].mac = "52:54:00:12:34:03".parse().unwrap();
    from_disk.nics[0].address = format!("{IP_FROM_DISK}/24").parse().unwrap();
    let status = manager.restore(from_disk.clone(), disk.location.clone(), 1).await.unwrap();
    assert_eq!(status.state, InstanceState::Running);
    let read = "cat /mnt/data/marker; hostname; test -e /tmp/marker || echo fresh; cat /proc/sys/kernel/random/boot_id";
    wait_for_ssh(&host, &key.private, IP_FROM_DISK, "true", BOOT_TIMEOUT).await.unwrap();
    let out = ssh_ok(&host, &key.private, IP_FROM_DISK, read).await.unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], [DISK_MARKER, "snap-3", "fresh"], "{out}");
    assert_ne!(lines[3], boot_id);
    manager.delete(from_disk.id, 2).await.unwrap();
    assert!(disk.location.join(SNAPSHOT_JSON).exists());
}

async fn guest_uptime(host: &TestHost, key: &std::path::Path, ip: &str) -> f64 {
    ssh_ok(host, key, ip, "cut -d' ' -f1 /proc/uptime").await.unwrap().parse().unwrap()
}
