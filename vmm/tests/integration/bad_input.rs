//! Bad input gives typed errors and leaves no process or tap behind.

use std::path::PathBuf;

use vmm::qemu::process::read_pidfile_sync;
use vmm::spec::{BootSpec, SpecError};
use vmm::vm::kill_unattached;
use vmm::{LaunchError, LaunchOptions, QmpError, Vm, VmError, VmSpec};

use crate::common::*;

fn qemu_processes_for(dir: &vmm::InstanceDir) -> usize {
    let needle = dir.qmp_socket().display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(&needle))
        .count()
}

#[tokio::test]
async fn malformed_spec_missing_kernel_and_missing_qemu_are_typed_errors() {
    let fx = Fixture::new();
    let net = TestNet::create();
    let dir = fx.instance_dir("vm");
    let spec = fx.spec(&dir, &net, "bad").await;

    assert!(matches!(VmSpec::from_json("{\"name\": \"x\", \"vcpus\": 1}"), Err(SpecError::Malformed { .. })));
    let mut json = serde_json::to_value(&spec).unwrap();
    json["vcpus"] = 0.into();
    assert!(matches!(VmSpec::from_json(&json.to_string()), Err(SpecError::InvalidVcpus { vcpus: 0 })));

    let mut missing_kernel = spec.clone();
    missing_kernel.boot =
        BootSpec::DirectKernel { kernel: fx.tmp.path().join("no-such-vmlinuz"), initrd: None, cmdline: String::new() };
    let err = Vm::start(missing_kernel, dir.clone(), &LaunchOptions::default()).await.unwrap_err();
    assert!(matches!(err, VmError::Launch(LaunchError::Spec(SpecError::MissingFile { what: "kernel", .. }))));

    let opts = LaunchOptions { qemu: PathBuf::from("/nonexistent/qemu-system-x86_64"), ..LaunchOptions::default() };
    let err = Vm::start(spec.clone(), dir.clone(), &opts).await.unwrap_err();
    assert!(matches!(err, VmError::Launch(LaunchError::ProgramNotFound { package: "qemu-system-x86", .. })));

    // Missing firmware names the file and the package, and leaves no NVRAM behind.
    let mut firmware = spec.clone();
    firmware.boot = BootSpec::Firmware { firmware: vmm::spec::Firmware::Ovmf };
    let missing = fx.tmp.path().join("no-such-OVMF_CODE_4M.fd");
    let opts = LaunchOptions { ovmf_code: missing.clone(), ..LaunchOptions::default() };
    let err = Vm::start(firmware, dir.clone(), &opts).await.unwrap_err();
    assert!(
        matches!(&err, VmError::Launch(LaunchError::FirmwareNotFound { path, package: "ovmf" }) if *path == missing),
        "{err:?}"
    );
    let message = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default();
    assert!(message.contains("no-such-OVMF_CODE_4M.fd") && message.contains("package ovmf"), "{message}");
    assert!(!dir.nvram().exists());

    // A namespace that does not exist: its tap cannot be opened, QEMU never starts, nothing is
    // left running.
    let mut no_netns = spec;
    no_netns.netns = Some(unique("nonexistent"));
    let err = Vm::start(no_netns.clone(), dir.clone(), &LaunchOptions::default()).await.unwrap_err();
    assert!(matches!(&err, VmError::Launch(LaunchError::Tap { netns: Some(_), .. })), "{err:?}");
    assert_eq!(qemu_processes_for(&dir), 0);
    assert!(read_pidfile_sync(&dir).is_none());
    assert!(net.tap_exists(), "the test's own tap must survive");
}

#[tokio::test]
async fn lost_qmp_socket_and_dead_vm_are_typed_errors() {
    let fx = Fixture::new();
    let net = TestNet::create();
    let dir = fx.instance_dir("vm");
    let _guard = VmGuard { dir: dir.clone() };
    let spec = fx.spec(&dir, &net, "lost").await;
    let opts = paused_start();

    // No VM yet: attach reports it.
    assert!(matches!(Vm::attach(dir.clone(), &opts).await, Err(VmError::Config { .. })));

    let vm = Vm::start(spec.clone(), dir.clone(), &opts).await.unwrap();
    // A second launch into the same directory is refused.
    assert!(matches!(
        Vm::start(spec, dir.clone(), &opts).await,
        Err(VmError::Launch(LaunchError::AlreadyRunning { .. }))
    ));
    drop(vm);

    // The control socket disappears: attach fails with a typed error, the VM can still be
    // killed through its pidfile, and nothing is left behind.
    std::fs::remove_file(dir.qmp_socket()).unwrap();
    let err = Vm::attach(dir.clone(), &opts).await.unwrap_err();
    assert!(matches!(err, VmError::Qmp(QmpError::Connect { .. })), "{err:?}");
    assert!(kill_unattached(&dir).await);
    assert_eq!(qemu_processes_for(&dir), 0);
    assert!(matches!(Vm::attach(dir.clone(), &opts).await, Err(VmError::Dead { .. })));

    // The namespace and tap are the test's; deleting them leaves nothing behind.
    let netns = net.netns.clone();
    drop(net);
    assert!(!netns_exists(&netns));
}
