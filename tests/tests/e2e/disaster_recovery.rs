//! Disaster recovery with real processes: three hosts in network namespaces and a short lease
//! (4 s; the margin before a silent host is declared dead is one more lease). Host A dies (its
//! agent and VMs killed, its link cut); its instances with a DR policy come back on B or C from
//! their latest snapshots, once, while the test watches every QEMU on the machine; when A comes
//! back, its stale copies are destroyed, never started.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cloud_tests::cloud::{OneHostCloud, Store};
use cloud_tests::guest::minimal_image;
use cloud_tests::process::{kill_vms_under, qemu_processes, wait_until};

const CP_FLAGS: [&str; 2] = ["--fleet-lease-secs", "4"];

/// VMs whose QEMU command line names `id` (their instance directory), on any host: QEMU
/// processes that are the one their `-pidfile` names. A QEMU that is daemonizing is briefly two
/// or three processes (it forks twice) of which only the last is the VM and writes the file.
fn copies(id: &str) -> usize {
    qemu_processes(id.as_bytes())
        .into_iter()
        .filter(|(pid, args)| {
            let pidfile = args.iter().position(|a| a == b"-pidfile").and_then(|i| args.get(i + 1));
            let written = pidfile
                .and_then(|f| std::fs::read_to_string(String::from_utf8_lossy(f).as_ref()).ok())
                .and_then(|text| text.trim().parse::<i32>().ok());
            written == Some(*pid)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_hosts_instances_come_back_elsewhere_once_and_its_stale_copies_are_destroyed() {
    recovers_once(Store::Local).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn disaster_recovery_works_the_same_from_s3() {
    recovers_once(Store::S3).await;
}

async fn recovers_once(store: Store) {
    let mut cloud = OneHostCloud::start_with_flags(store, &CP_FLAGS).await;
    cloud.cli.create_minimal_image(&minimal_image()).await;
    let host_a = cloud.agent.host_id();
    let mut recovered = Vec::new();
    for (name, priority) in [("db-1", 200), ("web-1", 100)] {
        let line = format!("instance create {name} --image minimal --memory 256MiB --disk 1GiB --ssh-key alice --wait");
        let created = cloud.lifecycle(&line, "running").await;
        cloud.ssh(name, &format!("echo {name}-data > /root/kept.txt && sync")).await;
        let set = cloud.cli.line(&format!("instance dr set {name} --priority {priority}")).await.ok("dr set");
        assert_eq!(set.out["dr_priority"], priority, "{}", set.out);
        cloud.cli.line(&format!("snapshot create --instance {name} --wait")).await.ok("snapshot create");
        recovered.push((name, created));
    }
    let bad = cloud.cli.line("instance dr set web-1 --priority 5000").await;
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.err.contains("priority: must be between 0 and 1000"), "{}", bad.err);
    cloud.lifecycle("instance create plain --image minimal --memory 256MiB --wait", "running").await;
    cloud.add_host().await;
    cloud.add_host().await;

    // Every QEMU of the recovered instances on the machine, sampled until the end.
    let ids: Vec<String> = recovered.iter().map(|(_, i)| i["id"].as_str().unwrap().to_owned()).collect();
    let (stop, most) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let watcher = {
        let (stop, most, ids) = (stop.clone(), most.clone(), ids.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for id in &ids {
                    most.fetch_max(copies(id), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // Host A dies: its agent and its VMs are killed, and its link is cut.
    let killed = Instant::now();
    cloud.agent.proc.as_mut().unwrap().kill_hard();
    kill_vms_under(&cloud.agent.state_dir);
    cloud_tests::net::ip(&["-n", &cloud.agent.net.netns, "link", "set", "eth0", "down"]);

    for (name, before) in &recovered {
        // Generous: a loaded CI machine can make hosts miss reports (the fleet then looks
        // partitioned and nobody is declared dead until they report again). dr-bench measures.
        wait_until(Duration::from_secs(240), "the instance recovered on another host", || async {
            let now = cloud.cli.line(&format!("instance get {name}")).await;
            now.code == 0
                && now.out["state"] == "running"
                && now.out["ready_at"].is_string()
                && now.out["host_id"] != before["host_id"]
        })
        .await;
        // Same instance, same key; the snapshot's data.
        assert_eq!(cloud.ssh(name, "cat /root/kept.txt").await.trim(), format!("{name}-data"));
        eprintln!("{name}: SSH answers on its new host {:.1} s after the kill", killed.elapsed().as_secs_f64());
        let now = cloud.cli.line(&format!("instance get {name}")).await.ok("instance get");
        assert_eq!(now.out["id"], before["id"]);
        assert_ne!(now.out["host_id"].as_str(), Some(host_a.as_str()));
        assert_ne!(now.out["address"], before["address"], "a new host, an address of its subnet");
    }
    let ops = cloud.cli.line("operation list").await.ok("operation list");
    let recoveries = ops.out.as_array().unwrap().iter().filter(|o| o["kind"] == "instance_recover").count();
    assert_eq!(recoveries, 2, "one recovery each: {}", ops.out);
    // Without a DR policy it stays lost.
    let plain = cloud.cli.line("instance get plain").await.ok("instance get");
    assert_eq!(plain.out["state"], "lost", "{}", plain.out);

    // Host A comes back: its stale instances are destroyed, never started.
    cloud_tests::net::ip(&["-n", &cloud.agent.net.netns, "link", "set", "eth0", "up"]);
    cloud.agent.start().await;
    let dirs: Vec<_> = ids.iter().map(|id| cloud.agent.state_dir.join("instances").join(id)).collect();
    wait_until(Duration::from_secs(60), "the stale copies destroyed on the returning host", || {
        let gone = dirs.iter().all(|d| !d.exists());
        async move { gone }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = std::fs::read_to_string(cloud.dir.path().join("agent-1.log")).unwrap();
    let relaunched: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("should run; relaunching") && ids.iter().any(|id| l.contains(id.as_str())))
        .collect();
    assert!(relaunched.is_empty(), "the returning host relaunched an instance that moved away: {relaunched:?}");
    assert!(log.contains("lease ran out: relaunching only once the control plane confirms"), "no fenced start");
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert_eq!(most.load(Ordering::Relaxed), 1, "an instance ran in two places at once (or never ran)");
    for (name, _) in &recovered {
        assert_eq!(cloud.ssh(name, "cat /root/kept.txt").await.trim(), format!("{name}-data"));
    }
}
