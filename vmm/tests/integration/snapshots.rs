//! Snapshots of a running VM with a data disk (qcow2 overlay on a raw ext4 base):
//! a disk snapshot boots into a new VM that sees the data; a full snapshot, after the original
//! QEMU is killed, restores into another directory, tap and namespace, and the guest continues
//! (file in tmpfs still there, uptime did not reset, same boot id).

use std::time::Duration;

use vmm::console::Console;
use vmm::snapshot::{self, RestoreParams, SnapshotKind};
use vmm::spec::{BaseImage, DiskFormat, DiskSpec};
use vmm::{LaunchOptions, Vm, VmStatus};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_and_full_snapshots_restore_elsewhere() {
    require_program("mkfs.ext4", "e2fsprogs");
    let fx = Fixture::new();
    let net = TestNet::create();
    let dir = fx.instance_dir("vm");
    let _guard = VmGuard { dir: dir.clone() };
    let opts = LaunchOptions::default();
    let key = &fx.key.private;

    // A raw ext4 base image and a qcow2 overlay created by the launch.
    let base = fx.tmp.path().join("data-base.raw");
    let f = std::fs::File::create(&base).unwrap();
    f.set_len(64 * 1024 * 1024).unwrap();
    let st = std::process::Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&base).status().unwrap();
    assert!(st.success());
    let mut spec = fx.spec(&dir, &net, "snap").await;
    spec.disks = vec![DiskSpec {
        path: dir.disk(0),
        format: DiskFormat::Qcow2,
        base: Some(BaseImage { path: base.clone(), format: DiskFormat::Raw }),
        read_only: false,
    }];
    let vm = Vm::start(spec, dir.clone(), &paused_start()).await.unwrap();
    let mut console = Console::connect(&dir).await.unwrap();
    vm.resume().await.unwrap();
    console.wait_for("cloud-minimal: ready", BOOT_TIMEOUT).await.unwrap();
    wait_for_ssh(
        &net,
        key,
        "echo on-disk > /mnt/data/hello && echo in-memory > /run/file && sync",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let boot_id = ssh_ok(&net, key, "cat /proc/sys/kernel/random/boot_id").await.unwrap();

    // Disk snapshot of the running VM: it keeps running.
    let disk_snap = dir.snapshot("disk-1");
    let m = vm.snapshot_disks(&disk_snap, &opts).await.unwrap();
    assert_eq!(m.kind, SnapshotKind::Disk);
    assert_eq!(vm.status().await.unwrap(), VmStatus::Running);

    // Full snapshot.
    let uptime_before = guest_uptime(&net, key).await.unwrap();
    let full_snap = fx.tmp.path().join("full-1");
    let m = vm.snapshot_full(&full_snap, &opts).await.unwrap();
    assert_eq!(m.kind, SnapshotKind::Full);
    assert_eq!(vm.status().await.unwrap(), VmStatus::Running);
    assert!(full_snap.join("memory.state").metadata().unwrap().len() > 1024 * 1024);

    // Kill QEMU (a host crash, as far as the VM is concerned).
    vm.kill().await.unwrap();
    drop(vm);

    // Restore the full snapshot into another directory, tap and namespace.
    let net2 = TestNet::create();
    let dir2 = fx.instance_dir("restored");
    let _guard2 = VmGuard { dir: dir2.clone() };
    let restored = snapshot::restore(
        &full_snap,
        &RestoreParams {
            dir: dir2.clone(),
            name: Some("snap-restored".into()),
            taps: Some(vec![net2.tap.clone()]),
            netns: Some(Some(net2.netns.clone())),
            confinement: None,
            macs: None,
            keep_config_drive: false,
            resume: true,
        },
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(restored.status().await.unwrap(), VmStatus::Running);
    let out = wait_for_ssh(
        &net2,
        key,
        "cat /run/file /mnt/data/hello /proc/sys/kernel/random/boot_id",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(out, format!("in-memory\non-disk\n{boot_id}"));
    let uptime_after = guest_uptime(&net2, key).await.unwrap();
    assert!(uptime_after >= uptime_before, "{uptime_before} -> {uptime_after}");
    restored.force_stop().await.unwrap();
    drop(restored);

    // The disk snapshot boots a new VM that sees the data.
    let dir3 = fx.instance_dir("from-disk");
    let _guard3 = VmGuard { dir: dir3.clone() };
    let from_disk = snapshot::restore(
        &disk_snap,
        &RestoreParams {
            dir: dir3.clone(),
            name: None,
            taps: Some(vec![net2.tap.clone()]),
            netns: Some(Some(net2.netns.clone())),
            confinement: None,
            macs: None,
            keep_config_drive: false,
            resume: true,
        },
        &opts,
    )
    .await
    .unwrap();
    let out = wait_for_ssh(
        &net2,
        key,
        "cat /mnt/data/hello; test -e /run/file || echo fresh; cat /proc/sys/kernel/random/boot_id",
        BOOT_TIMEOUT,
    )
    .await
    .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], ["on-disk", "fresh"]);
    assert_ne!(lines[2], boot_id);
    from_disk.force_stop().await.unwrap();
}
