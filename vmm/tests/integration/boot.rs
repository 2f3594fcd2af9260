//! Boot `minimal`: init markers on the console socket and in console.log; SSH with the key
//! from the config drive works, another key is refused; the launched spec is in config.json.

use std::time::Duration;

use vmm::console::Console;
use vmm::{Vm, VmSpec, VmStatus};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_minimal_to_ssh_with_the_injected_key_only() {
    let fx = Fixture::new();
    let net = TestNet::create();
    let dir = fx.instance_dir("vm");
    let spec = fx.spec(&dir, &net, "boot-test").await;
    let _guard = VmGuard { dir: dir.clone() };

    let vm = Vm::start(spec.clone(), dir.clone(), &paused_start()).await.unwrap();
    assert_eq!(vm.status().await.unwrap(), VmStatus::Paused);
    let mut console = Console::connect(&dir).await.unwrap();
    vm.resume().await.unwrap();
    console.wait_for("cloud-minimal: init start", BOOT_TIMEOUT).await.unwrap();
    console.wait_for("cloud-minimal: ready", BOOT_TIMEOUT).await.unwrap();
    // QEMU writes console.log right after the socket: allow it a moment.
    let log = wait_for_file_text(&dir.console_log(), "cloud-minimal: ready").await;
    assert!(log.contains("cloud-minimal: init start"), "{log}");

    let launched: VmSpec = serde_json::from_slice(&std::fs::read(dir.config_json()).unwrap()).unwrap();
    assert_eq!(launched, spec);

    let out = wait_for_ssh(&net, &fx.key.private, "uname -sr; hostname", Duration::from_secs(30)).await.unwrap();
    assert!(out.starts_with("Linux "), "{out}");
    assert!(out.ends_with("boot-test"), "{out}");

    let refused = ssh(&net, &fx.other_key.private, "true").await.unwrap();
    assert!(!refused.status.success(), "a key not on the config drive was accepted");

    vm.force_stop().await.unwrap();
    assert_eq!(vm.status().await.unwrap(), VmStatus::Dead);
}
