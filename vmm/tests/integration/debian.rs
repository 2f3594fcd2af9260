//! Boot `debian-12`: real cloud-init reads our NoCloud drive, sets the hostname from meta-data
//! and installs the key from user-data; SSH works with that key and no other. The one boot of a
//! full Debian per test run (about 20–50 s under TCG).

use std::path::PathBuf;
use std::time::Duration;

use vmm::spec::{BaseImage, BootSpec, DiskFormat, DiskSpec};
use vmm::{Vm, VmStatus};

use crate::common::*;

/// The debian-12 image (`CLOUD_DEBIAN12_IMAGE` or the default cache), or the build hint.
fn debian_image() -> (PathBuf, serde_json::Value) {
    let dir = PathBuf::from(
        std::env::var("CLOUD_DEBIAN12_IMAGE").unwrap_or_else(|_| "/var/cache/cloud/images/debian-12".into()),
    );
    let manifest = std::fs::read(dir.join("manifest.json")).unwrap_or_else(|_| {
        panic!("guest image missing in {}: run deploy/images/build-debian12.sh (as root) first", dir.display())
    });
    (dir, serde_json::from_slice(&manifest).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_12_with_real_cloud_init_takes_hostname_and_key_from_the_config_drive() {
    let (image, manifest) = debian_image();
    let fx = Fixture::new();
    let net = TestNet::create();
    let dir = fx.instance_dir("deb");
    let mut spec = fx.spec(&dir, &net, "debian-test").await;
    let _guard = VmGuard { dir: dir.clone() };
    spec.memory_mib = 512;
    spec.boot = BootSpec::DirectKernel {
        kernel: image.join("vmlinuz"),
        initrd: Some(image.join("initrd.img")),
        cmdline: manifest["boot"]["cmdline"].as_str().unwrap().to_owned(),
    };
    // The root disk first (/dev/vda): a qcow2 overlay on the read-only base image.
    spec.disks = vec![DiskSpec {
        path: dir.root().join("disk-0.qcow2"),
        format: DiskFormat::Qcow2,
        base: Some(BaseImage { path: image.join("disk.qcow2"), format: DiskFormat::Qcow2 }),
        read_only: false,
    }];

    let vm = Vm::start(spec, dir.clone(), &Default::default()).await.unwrap();
    let out =
        wait_for_ssh(&net, &fx.key.private, "hostname; cat /run/cloud-init/result.json", Duration::from_secs(240))
            .await
            .unwrap();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("debian-test"), "{out}");
    let result: serde_json::Value = serde_json::from_str(&lines.collect::<Vec<_>>().join("\n")).unwrap();
    assert_eq!(result["v1"]["datasource"].as_str().map(|d| d.starts_with("DataSourceNoCloud")), Some(true), "{result}");
    assert_eq!(result["v1"]["errors"], serde_json::json!([]), "{result}");

    let refused = ssh(&net, &fx.other_key.private, "true").await.unwrap();
    assert!(!refused.status.success(), "a key not on the config drive was accepted");
    vm.force_stop().await.unwrap();
    assert_eq!(vm.status().await.unwrap(), VmStatus::Dead);
}
