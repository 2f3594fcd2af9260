//! Real operating systems through the whole stack, as a customer uses them with cloudctl:
//! `debian-12` (stock cloud-init) keeps its files and its identity across stop/start and
//! reboot with `instance ssh` working at once each time, and the same Debian as an unmodified
//! whole disk (GPT, EFI system partition, GRUB) boots through UEFI firmware to SSH.

use cloud_tests::cloud::OneHostCloud;
use cloud_tests::guest::debian12_image;
use serde_json::Value;

fn fingerprints(instance: &Value) -> Vec<String> {
    let keys = instance["ssh_host_keys"].as_array().cloned().unwrap_or_default();
    assert!(!keys.is_empty(), "the guest published no host keys: {instance}");
    keys.iter().map(|k| k["fingerprint"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn debian_12_keeps_its_files_and_identity_across_stop_start_and_reboot() {
    let (image, manifest) = debian12_image();
    let cloud = OneHostCloud::start().await;
    let path = |f: &str| image.join(f).to_str().unwrap().to_owned();
    let cmdline = manifest["boot"]["cmdline"].as_str().unwrap();
    cloud
        .cli
        .run(&[
            "image",
            "create",
            "debian-12",
            "--boot-mode",
            "direct-kernel",
            "--kernel",
            &path("vmlinuz"),
            "--initrd",
            &path("initrd.img"),
            "--disk",
            &path("disk.qcow2"),
            "--cmdline",
            cmdline,
        ])
        .await
        .ok("image create debian-12");

    let created = cloud
        .lifecycle("instance create deb-1 --image debian-12 --memory 512MiB --ssh-key alice --wait", "running")
        .await;
    let keys = fingerprints(&created);
    // By default the disk is the image's own size, and that is what the host reserves.
    assert_eq!(created["disk_bytes"], 2i64 << 30, "{created}");
    assert_eq!(cloud.ssh("deb-1", "hostname").await.trim(), "deb-1");
    cloud.ssh("deb-1", "echo kept > /root/kept.txt && sync").await;

    cloud.lifecycle("instance stop deb-1 --wait", "stopped").await;
    let started = cloud.lifecycle("instance start deb-1 --wait", "running").await;
    assert_eq!(fingerprints(&started), keys, "the host keys changed across stop/start");
    assert_eq!(cloud.ssh("deb-1", "cat /root/kept.txt").await.trim(), "kept");

    let rebooted = cloud.lifecycle("instance reboot deb-1 --wait", "running").await;
    assert_eq!(fingerprints(&rebooted), keys, "the host keys changed across a reboot");
    assert_eq!(cloud.ssh("deb-1", "cat /root/kept.txt").await.trim(), "kept");
    cloud.cli.line("instance delete deb-1 --wait").await.ok("delete");
}

#[tokio::test(flavor = "multi_thread")]
async fn debian_12_whole_disk_boots_through_uefi_to_ssh() {
    let (image, manifest) = debian12_image();
    let file = manifest["whole_disk"]["file"].as_str().unwrap_or_else(|| {
        panic!("{} has no whole-disk image: rebuild it with deploy/images/build-debian12.sh", image.display())
    });
    let disk = image.join(file);
    let cloud = OneHostCloud::start().await;
    let registered = cloud
        .cli
        .run(&["image", "create", "debian-12-uefi", "--boot-mode", "firmware", "--disk", disk.to_str().unwrap()])
        .await
        .ok("image create debian-12-uefi");
    assert_eq!(registered.out["firmware"], "uefi", "{}", registered.out);
    assert_eq!(registered.out["disk_virtual_bytes"], 2i64 << 30, "{}", registered.out);
    // A disk smaller than the image's is refused, naming the minimum; nothing is created.
    let small = cloud.cli.line("instance create tiny --image debian-12-uefi --memory 512MiB --disk 1GiB").await;
    assert_eq!(small.code, 1, "{small:?}");
    assert!(small.err.contains("disk_gib: must be at least 2"), "{}", small.err);
    assert_eq!(cloud.cli.line("instance get tiny").await.code, 2);

    let created = cloud
        .lifecycle(
            "instance create efi-1 --image debian-12-uefi --memory 512MiB --disk 4GiB --ssh-key alice --wait",
            "running",
        )
        .await;
    fingerprints(&created);
    // Booted by UEFI firmware (the kernel sees EFI runtime services), from the disk's own GRUB
    // and kernel, with the root file system on the disk's second partition, grown to the disk.
    let out = cloud
        .ssh("efi-1", "test -d /sys/firmware/efi && echo uefi; cat /proc/cmdline; findmnt -no SOURCE /; cat /sys/class/block/vda2/size")
        .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"uefi"), "{out}");
    assert!(!lines[1].contains("cloud-minimal"), "{out}");
    assert_eq!(lines.get(2), Some(&"/dev/vda2"), "{out}");
    let root_bytes = lines.get(3).and_then(|l| l.trim().parse::<u64>().ok()).unwrap_or(0) * 512;
    assert!(root_bytes > 3 << 30, "the root partition was not grown to the 4 GiB disk: {out}");
    cloud.cli.line("instance delete efi-1 --wait").await.ok("delete");
}
