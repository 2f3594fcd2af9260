//! Lifecycle seen from the guest: reboot (uptime resets, tmpfs state gone), pause/resume (the
//! guest stops answering, then answers again), reattach after dropping the handle, graceful
//! stop (the guest runs its shutdown script), force stop (it does not).

use std::time::Duration;

use vmm::console::Console;
use vmm::spec::{BootSpec, DiskFormat, DiskSpec, Firmware};
use vmm::vm::kill_unattached;
use vmm::{InstanceDir, LaunchOptions, ShutdownOutcome, Vm, VmStatus};

use crate::common::*;

async fn boot(fx: &Fixture, net: &TestNet, dir: &InstanceDir, host: &str) -> Vm {
    let spec = fx.spec(dir, net, host).await;
    let vm = Vm::start(spec, dir.clone(), &paused_start()).await.unwrap();
    let mut console = Console::connect(dir).await.unwrap();
    vm.resume().await.unwrap();
    console.wait_for("cloud-minimal: ready", BOOT_TIMEOUT).await.unwrap();
    vm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_pause_resume_reattach_and_graceful_stop() {
    let fx = Fixture::new();
    let net = TestNet::create();
    let dir = fx.instance_dir("vm");
    let _guard = VmGuard { dir: dir.clone() };
    let vm = boot(&fx, &net, &dir, "life").await;
    let key = &fx.key.private;

    // Reboot: a marker in the initramfs tmpfs disappears and the kernel's boot id changes.
    let boot_id =
        wait_for_ssh(&net, key, "touch /run/marker && cat /proc/sys/kernel/random/boot_id", Duration::from_secs(30))
            .await
            .unwrap();
    let mut events = vm.events();
    vm.reboot().await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
    assert_eq!(ev.event, "RESET");
    let out = wait_for_ssh(&net, key, "test ! -e /run/marker && cat /proc/sys/kernel/random/boot_id", BOOT_TIMEOUT)
        .await
        .unwrap();
    assert_ne!(out, boot_id, "reboot kept the boot id");

    // Pause: the guest stops answering; resume: it answers, with the same boot.
    vm.pause().await.unwrap();
    assert_eq!(vm.status().await.unwrap(), VmStatus::Paused);
    assert!(!ssh_port_open(&net).await, "a paused guest answered TCP");
    vm.resume().await.unwrap();
    assert_eq!(vm.status().await.unwrap(), VmStatus::Running);
    wait_for_ssh(&net, key, "true", Duration::from_secs(30)).await.unwrap();

    // Drop the handle, reattach from the directory, control the VM again.
    let pid = vm.pid();
    drop(vm);
    let vm = Vm::attach(dir.clone(), &LaunchOptions::default()).await.unwrap();
    assert_eq!(vm.pid(), pid);
    assert_eq!(vm.spec().name, "life");
    assert_eq!(vm.status().await.unwrap(), VmStatus::Running);

    // Graceful stop: the guest's shutdown script runs, QEMU exits by itself.
    let outcome = vm.shutdown(Duration::from_secs(60)).await.unwrap();
    assert_eq!(outcome, ShutdownOutcome::Graceful);
    assert_eq!(vm.status().await.unwrap(), VmStatus::Dead);
    let log = std::fs::read_to_string(dir.console_log()).unwrap();
    assert!(log.contains("cloud-minimal: ACPI power button: powering off"), "{log}");
    assert!(log.contains("cloud-minimal: shutting down"), "{log}");
    assert!(matches!(Vm::attach(dir.clone(), &LaunchOptions::default()).await, Err(vmm::VmError::Dead { .. })));
    assert!(!kill_unattached(&dir).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_stop_and_powerdown_of_a_paused_guest_are_forced() {
    let fx = Fixture::new();
    let net = TestNet::create();
    let dir = fx.instance_dir("vm");
    let _guard = VmGuard { dir: dir.clone() };

    // A paused guest cannot see the power button: shutdown falls back to force.
    let spec = fx.spec(&dir, &net, "force").await;
    let vm = Vm::start(spec, dir.clone(), &paused_start()).await.unwrap();
    let outcome = vm.shutdown(Duration::from_secs(2)).await.unwrap();
    assert_eq!(outcome, ShutdownOutcome::Forced);
    assert_eq!(vm.status().await.unwrap(), VmStatus::Dead);
    drop(vm);

    // Force stop of a running guest: it never runs its shutdown script.
    let vm = boot(&fx, &net, &dir, "force").await;
    wait_for_ssh(&net, &fx.key.private, "true", Duration::from_secs(30)).await.unwrap();
    vm.force_stop().await.unwrap();
    assert!(!vm.is_alive());
    assert!(!ssh_port_open(&net).await);
    let log = std::fs::read_to_string(dir.console_log()).unwrap();
    assert!(!log.contains("cloud-minimal: shutting down"), "{log}");
}

#[tokio::test]
async fn firmware_boot_launches_q35_with_a_per_vm_nvram() {
    let fx = Fixture::new();
    let net = TestNet::create();
    for (name, firmware) in [("seabios", Firmware::Seabios), ("ovmf", Firmware::Ovmf)] {
        let dir = fx.instance_dir(name);
        let _guard = VmGuard { dir: dir.clone() };
        let mut spec = fx.spec(&dir, &net, name).await;
        let disk = dir.root().join("whole-disk.raw");
        std::fs::File::create(&disk).unwrap().set_len(1024 * 1024).unwrap();
        spec.boot = BootSpec::Firmware { firmware };
        spec.disks = vec![DiskSpec { path: disk, format: DiskFormat::Raw, base: None, read_only: false }];
        let vm = Vm::start(spec, dir.clone(), &paused_start()).await.unwrap();
        assert_eq!(vm.status().await.unwrap(), VmStatus::Paused);
        assert_eq!(dir.nvram().exists(), firmware == Firmware::Ovmf);
        vm.force_stop().await.unwrap();
    }
}
