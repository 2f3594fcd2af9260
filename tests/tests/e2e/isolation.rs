//! What a guest can reach: nothing of its host itself (its agent, sshd, databases, any address
//! of it), while the way out through the host's NAT stays open; on one host, only instances of
//! its own project, and only as itself (its own MAC and address).

use cloud_tests::cloud::OneHostCloud;
use cloud_tests::guest::minimal_image;

/// Whether one ping from the guest `name` to `target` is answered.
async fn pings(cloud: &OneHostCloud, name: &str, target: &str) -> bool {
    let command = format!("ping -c 1 -W 2 {target} >/dev/null 2>&1; echo rc=$?");
    let out = cloud.ssh(name, &command).await;
    match out.trim() {
        "rc=0" => true,
        "rc=1" => false,
        other => panic!("ping from {name} to {target} said {other:?}"),
    }
}

/// A TCP listener on every address of a host's network namespace that answers each connection
/// with an SSH banner (a stand-in for a host's sshd or database). Dropping it closes the
/// socket: an open socket keeps its namespace, and the namespace's veth, alive after
/// `ip netns del`, where a later test could meet its name.
struct StandIn {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    addr: std::net::SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn listen_in(netns: &str, address: std::net::Ipv4Addr, port: u16) -> StandIn {
    let ns = std::fs::File::open(format!("/run/netns/{netns}")).expect("the host's namespace");
    let listener = std::thread::spawn(move || {
        // setns moves this thread only; the socket stays in the namespace it was made in.
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        std::net::TcpListener::bind(("0.0.0.0", port)).expect("bind in the host's namespace")
    })
    .join()
    .expect("listener thread");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let _ = std::io::Write::write_all(&mut stream, b"SSH-2.0-stand-in\r\n");
        }
    });
    StandIn { stop, addr: (address, port).into(), thread: Some(thread) }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accepting thread; it returns and closes the listener.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_reaches_none_of_its_hosts_own_addresses_but_still_gets_out() {
    let cloud = OneHostCloud::start().await;
    cloud.cli.create_minimal_image(&minimal_image()).await;
    let line = "instance create web-1 --image minimal --memory 256MiB --ssh-key alice --wait";
    let created = cloud.lifecycle(line, "running").await;
    let address = created["address"].as_str().unwrap();
    let bridge = format!("{}.1", address.rsplit_once('.').unwrap().0);
    // The host's own addresses: its bridge (the guest's gateway) and its uplink (where the agent
    // serves gRPC).
    let uplink = cloud.agent.net.address.to_string();
    assert!(!pings(&cloud, "web-1", &bridge).await, "the guest reached its host at {bridge}");
    assert!(!pings(&cloud, "web-1", &uplink).await, "the guest reached its host at {uplink}");
    // The host's services: its agent (7444) and, as stand-ins an answering test listener plays,
    // an sshd (22) and a database (5432). The test reaches them; the guest does not.
    let services = [22, 5432].map(|port| listen_in(&cloud.agent.net.netns, cloud.agent.net.address, port));
    for port in [22, 5432] {
        let mut banner = String::new();
        let mut stream = std::net::TcpStream::connect((cloud.agent.net.address, port)).unwrap();
        std::io::Read::read_to_string(&mut stream, &mut banner).unwrap();
        assert!(banner.starts_with("SSH-2.0-"), "the stand-in on port {port} does not answer");
    }
    for target in [&bridge, &uplink] {
        for port in [22, 5432, 7444] {
            let command = format!("echo | nc -w 2 {target} {port} >/dev/null 2>&1; echo rc=$?");
            let out = cloud.ssh("web-1", &command).await;
            assert_eq!(out.trim(), "rc=1", "the guest connected to its host's {target}:{port}");
        }
    }
    drop(services);
    // Beyond the host (the test network's gateway, in another namespace): through the NAT.
    let outside = cloud.cp.api.trim_start_matches("http://").split(':').next().unwrap().to_owned();
    assert!(pings(&cloud, "web-1", &outside).await, "the guest cannot get out to {outside}");
}

/// Whether `command` (a shell line printing `rc=$?` last) succeeded in the guest `name` of
/// `project`.
async fn guest_ok(cloud: &OneHostCloud, project: &str, name: &str, command: &str) -> bool {
    let line = format!("{command}; echo rc=$?");
    let args = ["--project", project, "instance", "ssh", name, "-i", &cloud.key, "--", &line];
    let out = cloud.cli.run(&args).await.ok(&format!("ssh {name}: {command}")).text();
    match out.lines().last().unwrap_or_default().trim() {
        "rc=0" => true,
        "rc=1" => false,
        other => panic!("{command:?} in {name} said {other:?} ({out})"),
    }
}

/// From the guest `name`: (ping answered, SSH banner read, ARP answered) for `target`.
async fn reaches(cloud: &OneHostCloud, project: &str, name: &str, target: &str) -> (bool, bool, bool) {
    (
        guest_ok(cloud, project, name, &format!("ping -c 1 -W 2 {target} >/dev/null 2>&1")).await,
        guest_ok(cloud, project, name, &format!("echo | nc -w 2 {target} 22 2>/dev/null | grep -q SSH-2.0")).await,
        guest_ok(cloud, project, name, &format!("arping -c 1 -w 2 -I eth0 {target} >/dev/null 2>&1")).await,
    )
}

fn isolation_table(cloud: &OneHostCloud) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &cloud.agent.net.netns, "nft", "list", "table", "bridge", "cloud_agent"])
        .output()
        .expect("nft list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn projects_on_one_host_share_no_packet_and_a_guest_sends_only_as_itself() {
    let mut cloud = OneHostCloud::start().await;
    cloud.cli.create_minimal_image_with(&minimal_image(), &["--public"]).await;
    cloud.cli.line("project create other").await.ok("project create");
    let key = format!("@{}.pub", cloud.key);
    cloud.cli.run(&["--project", "other", "ssh-key", "create", "alice", "--public-key", &key]).await.ok("ssh-key");
    let mut address = std::collections::HashMap::new();
    for (project, name) in [("default", "a-1"), ("default", "a-2"), ("other", "b-1")] {
        let line = format!(
            "--project {project} instance create {name} --image minimal --memory 256MiB --ssh-key alice --wait"
        );
        let created = cloud.lifecycle(&line, "running").await;
        address.insert(name, created["address"].as_str().unwrap().to_owned());
    }
    let (a2, b1) = (address["a-2"].clone(), address["b-1"].clone());

    // One project's instances reach each other; the other project's: not a packet either way.
    assert_eq!(reaches(&cloud, "default", "a-1", &a2).await, (true, true, true), "a-1 → a-2 (same project)");
    assert_eq!(reaches(&cloud, "default", "a-1", &b1).await, (false, false, false), "a-1 → b-1 (another project)");
    assert_eq!(reaches(&cloud, "other", "b-1", &a2).await, (false, false, false), "b-1 → a-2 (another project)");

    // A guest that takes another address or MAC sends nothing: its own project's neighbour
    // hears nothing from it (then it takes its own back).
    let spoofed = format!("{}.250", a2.rsplit_once('.').unwrap().0);
    let as_other_ip = format!(
        "ip addr add {spoofed}/24 dev eth0; arping -c 1 -w 2 -s {spoofed} -I eth0 {a2} >/dev/null 2>&1; a=$?; \
         ping -c 1 -W 2 -I {spoofed} {a2} >/dev/null 2>&1; p=$?; ip addr del {spoofed}/24 dev eth0; [ $a = 0 ] || [ $p = 0 ]"
    );
    assert!(!guest_ok(&cloud, "default", "a-1", &as_other_ip).await, "a-1 reached a-2 from {spoofed}");
    let as_other_mac = format!(
        "m=$(cat /sys/class/net/eth0/address); ip link set eth0 address 52:54:00:66:66:66; \
         arping -c 1 -w 2 -I eth0 {a2} >/dev/null 2>&1; r=$?; ip link set eth0 address $m; (exit $r)"
    );
    assert!(!guest_ok(&cloud, "default", "a-1", &as_other_mac).await, "a-1 reached a-2 from another MAC");
    assert_eq!(reaches(&cloud, "default", "a-1", &a2).await, (true, true, true), "a-1 as itself again");

    // The agent restarts: the rules are rebuilt from its records, the same.
    let before = isolation_table(&cloud);
    cloud.agent.proc.as_mut().unwrap().kill_hard();
    cloud.agent.start().await;
    assert_eq!(isolation_table(&cloud), before, "the isolation table after an agent restart");
    assert_eq!(reaches(&cloud, "default", "a-1", &b1).await, (false, false, false), "after the restart");
    assert!(pings(&cloud, "a-1", &a2).await, "a-1 → a-2 after the restart");

    // Deleted: its tap leaves the rules.
    let b1_id =
        cloud.cli.line("--project other instance get b-1").await.ok("get").out["id"].as_str().unwrap().to_owned();
    let tap = format!("tap-{}0", &b1_id.replace('-', "")[..8]);
    assert!(before.contains(&tap), "{tap} is not in the rules:\n{before}");
    cloud.cli.line("--project other instance delete b-1 --wait").await.ok("delete");
    assert!(!isolation_table(&cloud).contains(&tap), "{tap} is still in the rules");
}
