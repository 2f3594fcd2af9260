//! The first create of `debian-12` on a host that never saw it, as a user sees it: from
//! `instance create --wait=running` until QEMU runs, with the image's files fetched from the
//! snapshot store (in chunks, in parallel) and, for comparison, streamed from the control plane
//! (the path an image the store lacks takes); then a warm create on the same host. Prints JSON
//! lines (ms); figures only, no assertions.
//!
//! ```text
//! cargo build --workspace --bins && cargo run -p cloud-tests --example first-create-bench
//! ```
//!
//! Needs root (network namespaces), QEMU and the `debian-12` image
//! (`deploy/images/build-debian12.sh`).

use std::io::Write;
use std::time::Instant;

use cloud_tests::cloud::OneHostCloud;
use cloud_tests::guest::debian12_image;
use serde_json::json;

async fn create_ms(cloud: &OneHostCloud, name: &str) -> f64 {
    let started = Instant::now();
    let line = format!("instance create {name} --image debian-12 --memory 512MiB --wait=running");
    let run = cloud.cli.line(&line).await.ok(&line);
    assert_eq!(run.out["instance"]["state"], "running", "{}", run.out);
    let ms = (started.elapsed().as_secs_f64() * 1000.0).round();
    cloud.cli.line(&format!("instance delete {name} --wait")).await.ok("delete");
    ms
}

#[tokio::main]
async fn main() {
    let (image, manifest) = debian12_image();
    let mut cloud = OneHostCloud::start().await;
    let path = |f: &str| image.join(f).to_str().expect("UTF-8 path").to_owned();
    let cmdline = manifest["boot"]["cmdline"].as_str().expect("cmdline").to_owned();
    let (kernel, initrd, disk) = (path("vmlinuz"), path("initrd.img"), path("disk.qcow2"));
    let args = ["image", "create", "debian-12", "--boot-mode", "direct-kernel", "--kernel", &kernel];
    let args = [&args[..], &["--initrd", &initrd, "--disk", &disk, "--cmdline", &cmdline]].concat();
    cloud.cli.run(&args).await.ok("image create debian-12");
    let disk_bytes = std::fs::metadata(&disk).map(|m| m.len()).unwrap_or(0);

    let mut out = std::io::stdout().lock();
    // Host 1 never saw the image: from the store.
    let first = create_ms(&cloud, "d-1").await;
    let warm = create_ms(&cloud, "d-2").await;
    // A second host, with the image's objects gone from the store: streamed from the control plane.
    let store = cloud.store();
    let image_shas: Vec<String> = ["vmlinuz", "initrd.img", "disk.qcow2"]
        .iter()
        .filter_map(|f| manifest["files"][*f]["sha256"].as_str().map(str::to_owned))
        .collect();
    for sha in &image_shas {
        store.delete(&cloud_store::image_name(sha)).await.expect("delete from the store");
    }
    let host2 = cloud.add_host().await;
    cloud.cli.line(&format!("host drain {}", cloud.agent.host_id())).await;
    let streamed = create_ms(&cloud, "d-3").await;
    for (what, ms) in [("first_create_from_store", first), ("warm_create", warm), ("first_create_streamed", streamed)] {
        let value = json!({"bench": what, "image": "debian-12", "disk_bytes": disk_bytes, "create_to_running_ms": ms,
            "host": if what == "first_create_streamed" { host2.as_str() } else { "1" }});
        let _ = writeln!(out, "{value}");
    }
}
