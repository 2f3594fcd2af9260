//! Disaster recovery as a customer sees it: a host running N instances with DR policies dies
//! (its agent and VMs killed, its link cut); for each instance, the time from the kill to SSH
//! answering on its new host, and the total. Prints JSON lines; figures only, no assertions.
//!
//! ```text
//! cargo build --workspace --bins && cargo run -p cloud-tests --example dr-bench [-- N [LEASE_SECS]]
//! ```
//!
//! Needs root (network namespaces), QEMU and the `minimal` image, like the end-to-end tests: a
//! control plane with a `LEASE_SECS` host lease (default 4; a silent host is declared dead after
//! the lease plus a margin of one more lease), host A with N `minimal` instances (256 MiB,
//! 1 vCPU; default 2), each with a DR policy and a disk snapshot, and two empty hosts B and C.

use std::io::Write;
use std::time::{Duration, Instant};

use cloud_tests::cloud::{OneHostCloud, Store};
use cloud_tests::guest::minimal_image;
use cloud_tests::process::kill_vms_under;
use serde_json::json;

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    let lease: u32 = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(4);
    let lease_flag = lease.to_string();
    let mut cloud = OneHostCloud::start_with_flags(Store::Local, &["--fleet-lease-secs", &lease_flag]).await;
    cloud.cli.create_minimal_image(&minimal_image()).await;
    let host_a = cloud.agent.host_id();
    let names: Vec<String> = (1..=n).map(|i| format!("app-{i}")).collect();
    for name in &names {
        let line = format!("instance create {name} --image minimal --memory 256MiB --disk 1GiB --ssh-key alice --wait");
        cloud.lifecycle(&line, "running").await;
        cloud.cli.line(&format!("instance dr set {name} --priority 100")).await.ok("dr set");
        cloud.cli.line(&format!("snapshot create --instance {name} --wait")).await.ok("snapshot create");
    }
    cloud.add_host().await;
    cloud.add_host().await;

    let killed = Instant::now();
    cloud.agent.proc.as_mut().expect("agent A runs").kill_hard();
    kill_vms_under(&cloud.agent.state_dir);
    cloud_tests::net::ip(&["-n", &cloud.agent.net.netns, "link", "set", "eth0", "down"]);

    let mut out = std::io::stdout().lock();
    let mut pending: Vec<&String> = names.iter().collect();
    let mut last = Duration::ZERO;
    while !pending.is_empty() {
        assert!(killed.elapsed() < Duration::from_secs(300), "not recovered within 300 s: {pending:?}");
        let mut still = Vec::new();
        for name in pending {
            let got = cloud.cli.line(&format!("instance get {name}")).await;
            let moved = got.code == 0
                && got.out["state"] == "running"
                && got.out["ready_at"].is_string()
                && got.out["host_id"].as_str() != Some(host_a.as_str());
            let ssh = if moved {
                cloud.cli.run(&["instance", "ssh", name, "-i", &cloud.key, "--", "true"]).await.code == 0
            } else {
                false
            };
            if ssh {
                last = killed.elapsed();
                let value = json!({"bench": "dr_kill_to_ssh", "instance": name, "ms": (last.as_secs_f64() * 1000.0).round(),
                    "lease_secs": lease, "margin_secs": lease});
                let _ = writeln!(out, "{value}");
            } else {
                still.push(name);
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = json!({"bench": "dr_total", "instances": n, "ms": (last.as_secs_f64() * 1000.0).round(),
        "lease_secs": lease, "margin_secs": lease});
    let _ = writeln!(out, "{total}");
}
