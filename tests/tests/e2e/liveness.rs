//! The fleet survives its control plane, with real processes and short leases (4 s; the
//! harness's agents report every 500 ms): a control plane frozen for three leases, or stopped
//! for ten, loses no host and no instance; a host cut off alone is declared dead and taken back
//! when it returns, even after its agent crashed while fenced (what was deleted meanwhile is
//! destroyed there, the rest resumes at the same address); two hosts of three silent together
//! wait for an operator.

use std::time::{Duration, Instant};

use cloud_tests::cloudctl::Cloudctl;
use cloud_tests::guest::{minimal_image, ssh_keygen};
use cloud_tests::net::TestNetwork;
use cloud_tests::process::{ControlPlane, spawn_agent, spawn_agent_with, spawn_control_plane_with, wait_until};
use nix::sys::signal::{Signal, kill};
use serde_json::Value;

const LEASE_SECS: u64 = 4;
const CP_FLAGS: [&str; 2] = ["--fleet-lease-secs", "4"];

async fn host_states(cp: &ControlPlane) -> Vec<String> {
    cp.hosts().await.iter().map(|h| h["state"].as_str().unwrap_or_default().to_owned()).collect()
}

async fn instance(cp: &ControlPlane, name: &str) -> Value {
    cp.call(reqwest::Method::GET, &format!("/v1/projects/default/instances/{name}"), None, None).await.1
}

/// A cloud with the minimal image, the key `alice` and cloudctl; returns (cli, key path).
async fn with_minimal_image(cp: &ControlPlane, dir: &std::path::Path) -> (Cloudctl, String) {
    cp.register_minimal_image(&minimal_image()).await;
    let cli = Cloudctl::new(cp, &dir.join("home"));
    let (key, _) = ssh_keygen(dir, "alice");
    let key = key.to_str().unwrap().to_owned();
    cli.run(&["ssh-key", "create", "alice", "--public-key", &format!("@{key}.pub")]).await.ok("ssh-key");
    (cli, key)
}

async fn ssh(cli: &Cloudctl, key: &str, name: &str, command: &str) -> String {
    cli.run(&["instance", "ssh", name, "-i", key, "--", command]).await.ok(&format!("ssh {name}")).text()
}

/// Polls for `within`: the hosts never `dead`, the instance never `lost`; true once every host
/// is active and the instance running.
async fn recovers_without_losses(cp: &ControlPlane, name: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let (states, inst) = (host_states(cp).await, instance(cp, name).await);
        assert!(!states.iter().any(|s| s == "dead"), "a host was declared dead: {states:?}");
        assert_ne!(inst["state"], "lost", "{inst}");
        if states.iter().all(|s| s == "active") && inst["state"] == "running" {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_or_restarted_control_plane_loses_no_host_and_no_instance() {
    let mut net = TestNetwork::create();
    let dir = tempfile::tempdir().unwrap();
    let mut cp = spawn_control_plane_with(&net, dir.path(), &CP_FLAGS).await;
    let _agent = spawn_agent(&mut net, 1, &cp, dir.path()).await;
    cp.wait_active_hosts(1).await;
    let (cli, key) = with_minimal_image(&cp, dir.path()).await;
    cli.line("instance create web-1 --image minimal --memory 256MiB --ssh-key alice --wait").await.ok("create");

    // Frozen for three leases (as a long pause would): the agent fences meanwhile.
    kill(cp.proc.pid(), Signal::SIGSTOP).unwrap();
    tokio::time::sleep(Duration::from_secs(3 * LEASE_SECS)).await;
    kill(cp.proc.pid(), Signal::SIGCONT).unwrap();
    assert!(recovers_without_losses(&cp, "web-1", Duration::from_secs(8)).await, "not back after the freeze");
    assert!(ssh(&cli, &key, "web-1", "uname -n").await.starts_with("web-1"));

    // Stopped, and started again ten leases later.
    kill(cp.proc.pid(), Signal::SIGTERM).unwrap();
    let _ = cp.proc.child.wait();
    tokio::time::sleep(Duration::from_secs(10 * LEASE_SECS)).await;
    cp.restart(&[]).await;
    assert!(recovers_without_losses(&cp, "web-1", Duration::from_secs(8)).await, "not back after the restart");
    assert!(ssh(&cli, &key, "web-1", "uname -n").await.starts_with("web-1"));
    let (_, ops) = cp.call(reqwest::Method::GET, "/v1/projects/default/operations", None, None).await;
    let failed: Vec<&Value> = ops["items"].as_array().unwrap().iter().filter(|o| o["state"] != "succeeded").collect();
    assert!(failed.is_empty(), "{failed:?}");
    let log = std::fs::read_to_string(&cp.proc.log).unwrap();
    assert!(log.contains("every host's lease is extended by the gap"), "the gap was not noticed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_cut_off_is_declared_dead_and_taken_back_when_it_returns() {
    let mut net = TestNetwork::create();
    let dir = tempfile::tempdir().unwrap();
    let cp = spawn_control_plane_with(&net, dir.path(), &CP_FLAGS).await;
    let mut agent = spawn_agent(&mut net, 1, &cp, dir.path()).await;
    cp.wait_active_hosts(1).await;
    let (cli, key) = with_minimal_image(&cp, dir.path()).await;
    for name in ["kept", "gone"] {
        let line = format!("instance create {name} --image minimal --memory 256MiB --ssh-key alice --wait");
        cli.line(&line).await.ok("create");
    }
    ssh(&cli, &key, "kept", "echo still-here > /root/f && sync").await;
    let address = instance(&cp, "kept").await["address"].clone();
    let gone_id = instance(&cp, "gone").await["id"].as_str().unwrap().to_owned();

    // The host's link is cut: it stops reporting (and fences); alone, it is declared dead.
    cloud_tests::net::ip(&["-n", &agent.net.netns, "link", "set", "eth0", "down"]);
    wait_until(Duration::from_secs(6 * LEASE_SECS), "the host declared dead", || async {
        host_states(&cp).await == ["dead"]
    })
    .await;
    assert_eq!(instance(&cp, "kept").await["state"], "lost");
    // Deleted while its host is dead: done without the host.
    cli.line("instance delete gone --wait").await.ok("delete on a dead host");

    // Its agent crashes while fenced and starts again once the link is back: the host is taken
    // back, no new join, and the VMs its predecessor paused are resumed or destroyed.
    agent.proc.as_mut().unwrap().kill_hard();
    cloud_tests::net::ip(&["-n", &agent.net.netns, "link", "set", "eth0", "up"]);
    agent.start().await;
    wait_until(Duration::from_secs(4 * LEASE_SECS), "the host and its instance back", || async {
        host_states(&cp).await == ["active"] && instance(&cp, "kept").await["state"] == "running"
    })
    .await;
    assert_eq!(instance(&cp, "kept").await["address"], address);
    assert_eq!(ssh(&cli, &key, "kept", "cat /root/f").await.trim(), "still-here");
    let gone_dir = agent.state_dir.join("instances").join(&gone_id);
    wait_until(Duration::from_secs(10), "the deleted instance destroyed on its host", || {
        let gone = !gone_dir.exists();
        async move { gone }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_silent_host_dies_alone_and_two_silent_together_wait_for_an_operator() {
    let mut net = TestNetwork::create();
    let dir = tempfile::tempdir().unwrap();
    let cp = spawn_control_plane_with(&net, dir.path(), &CP_FLAGS).await;
    let flags = ["--driver", "simulated"];
    let mut agents = Vec::new();
    for n in 1..=3 {
        agents.push(spawn_agent_with(&mut net, n, &cp, dir.path(), &flags).await);
    }
    cp.wait_active_hosts(3).await;
    let ids: Vec<String> = agents.iter().map(|a| a.host_id()).collect();
    let state_of = |states: &[Value], id: &str| {
        states.iter().find(|h| h["id"] == id).map(|h| h["state"].as_str().unwrap_or_default().to_owned())
    };

    // One agent killed: that host alone is declared dead; the others stay active throughout.
    agents[0].proc.as_mut().unwrap().kill_hard();
    wait_until(Duration::from_secs(6 * LEASE_SECS), "host 1 dead", || async {
        let hosts = cp.hosts().await;
        assert_eq!(state_of(&hosts, &ids[1]).as_deref(), Some("active"));
        assert_eq!(state_of(&hosts, &ids[2]).as_deref(), Some("active"));
        state_of(&hosts, &ids[0]).as_deref() == Some("dead")
    })
    .await;

    // Two of three silent together (frozen): a partition. Nobody is declared dead.
    for a in &agents[1..] {
        kill(a.proc.as_ref().unwrap().pid(), Signal::SIGSTOP).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(4 * LEASE_SECS)).await;
    let hosts = cp.hosts().await;
    assert_eq!(state_of(&hosts, &ids[1]).as_deref(), Some("suspect"), "{hosts:?}");
    assert_eq!(state_of(&hosts, &ids[2]).as_deref(), Some("suspect"), "{hosts:?}");
    let cli = Cloudctl::new(&cp, &dir.path().join("home"));
    let fleet = cli.line("host liveness").await.ok("host liveness").out;
    assert_eq!((fleet["state"].as_str(), fleet["silent_hosts"].as_i64()), (Some("degraded"), Some(2)), "{fleet}");

    // The operator decides host 2 is gone; host 3 waits, and returns when it wakes up.
    let declared = cli.run(&["host", "declare-dead", &ids[1]]).await.ok("host declare-dead");
    assert_eq!(declared.out["state"], "dead", "{}", declared.out);
    kill(agents[2].proc.as_ref().unwrap().pid(), Signal::SIGCONT).unwrap();
    wait_until(Duration::from_secs(3 * LEASE_SECS), "host 3 active again", || async {
        state_of(&cp.hosts().await, &ids[2]).as_deref() == Some("active")
    })
    .await;
    wait_until(Duration::from_secs(LEASE_SECS), "the fleet healthy again", || async {
        cp.call(reqwest::Method::GET, "/v1/fleet/liveness", None, None).await.1["state"] == "healthy"
    })
    .await;
    // Host 2 wakes up too: taken back, no second join.
    kill(agents[1].proc.as_ref().unwrap().pid(), Signal::SIGCONT).unwrap();
    wait_until(Duration::from_secs(3 * LEASE_SECS), "host 2 taken back", || async {
        state_of(&cp.hosts().await, &ids[1]).as_deref() == Some("active")
    })
    .await;
}
