//! The control plane dies and comes back: an instance create killed at every step (with one
//! replica, and with two where the other one carries on) finishes, and leaks nothing. And 200
//! concurrent creates through two replicas onto three small hosts never overcommit one.

use std::collections::HashMap;
use std::time::Duration;

use cloud_tests::guest::minimal_image;
use cloud_tests::net::TestNetwork;
use cloud_tests::process::{Agent, ControlPlane, spawn_agent, spawn_agent_with, spawn_control_plane_with};
use reqwest::Method;
use serde_json::{Value, json};

/// The steps of `instance_create`, in order (control-plane/src/operations/instances.rs).
const CREATE_STEPS: [&str; 4] = ["place", "allocate_address", "ensure_on_host", "wait_running"];

/// Crash points fire through this variable (the `fault-injection` feature, on in test builds).
const CRASH: &str = "CLOUD_FAULT_CRASH_AFTER_STEP";

/// A short operation lease so a dead replica's work is resumed within seconds, and a long host
/// lease so agents ride out the moments when the replica they report to is down.
const REPLICA_FLAGS: [&str; 4] = ["--operations-lease-secs", "3", "--fleet-lease-secs", "60"];

fn small(name: &str) -> Value {
    json!({"name": name, "image": "minimal", "vcpus": 1, "memory_mib": 256})
}

/// Creates `name` through `cp` and returns the operation id.
async fn create(cp: &ControlPlane, name: &str) -> String {
    let (status, body) = cp.call(Method::POST, "/v1/projects/default/instances", Some(small(name)), None).await;
    assert_eq!(status, 202, "{body}");
    body["operation"]["id"].as_str().unwrap().to_owned()
}

/// Waits until one of `replicas` has crashed; returns its index.
async fn crashed(replicas: &mut [&mut ControlPlane], step: &str) -> usize {
    for _ in 0..600 {
        if let Some(i) = replicas.iter_mut().position(|cp| cp.exited()) {
            return i;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no control plane crashed at {step}: is the fault-injection feature compiled in?");
}

/// Checks that `name` is running, deletes it, and checks that the delete succeeded.
async fn running_then_deleted(cp: &ControlPlane, name: &str, op: &str, what: &str) {
    let done = cp.wait_operation(op).await;
    assert_eq!(done["state"], "succeeded", "{what}: {done}");
    let path = format!("/v1/projects/default/instances/{name}");
    let (_, inst) = cp.call(Method::GET, &path, None, None).await;
    assert_eq!(inst["state"], "running", "{what}: {inst}");
    let (status, del) = cp.call(Method::DELETE, &path, None, None).await;
    assert_eq!(status, 202, "{what}: {del}");
    let done = cp.wait_operation(del["operation"]["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{what}: delete {done}");
}

/// Nothing is left behind: no reserved capacity, no address, no tap, no VM, no instance files.
async fn assert_nothing_leaked(cp: &ControlPlane, agent: &Agent) {
    for host in cp.hosts().await {
        let reserved = (&host["reserved_vcpus"], &host["reserved_memory_bytes"], &host["reserved_disk_bytes"]);
        assert_eq!(reserved, (&json!(0), &json!(0), &json!(0)), "capacity leaked: {host}");
    }
    let pool = sqlx::PgPool::connect(&cp.db_url).await.unwrap();
    let addresses: i64 = sqlx::query_scalar("SELECT count(*) FROM ip_allocations").fetch_one(&pool).await.unwrap();
    let nics: i64 = sqlx::query_scalar("SELECT count(*) FROM network_interfaces").fetch_one(&pool).await.unwrap();
    assert_eq!((addresses, nics), (0, 0), "addresses or NICs leaked");
    let unfinished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM operations WHERE state NOT IN ('succeeded', 'failed')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(unfinished, 0, "operations left unfinished");
    pool.close().await;
    let links = std::process::Command::new("ip").args(["-n", &agent.net.netns, "-o", "link", "show"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains("tap-"), "a tap leaked: {links}");
    let instances = agent.state_dir.join("instances");
    let left: Vec<_> =
        std::fs::read_dir(&instances).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "instance directories leaked: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_killed_at_any_step_finishes_with_one_replica_or_two_and_leaks_nothing() {
    let image = minimal_image();
    let mut net = TestNetwork::create();
    let dir = tempfile::tempdir().unwrap();
    let mut a = spawn_control_plane_with(&net, dir.path(), &REPLICA_FLAGS).await;
    let agent = spawn_agent(&mut net, 1, &a, dir.path()).await;
    a.wait_active_hosts(1).await;
    a.register_minimal_image(&image).await;

    // One replica, killed after each step did its work but before that was recorded: the
    // restarted process runs the step again, which must not do it twice.
    for (i, step) in CREATE_STEPS.iter().enumerate() {
        let point = format!("{step}/unrecorded");
        a.restart(&[(CRASH, &point)]).await;
        let name = format!("solo-{i}");
        let op = create(&a, &name).await;
        crashed(&mut [&mut a], &point).await;
        a.restart(&[]).await;
        running_then_deleted(&a, &name, &op, &point).await;
    }
    assert_nothing_leaked(&a, &agent).await;

    // Two replicas, both armed to crash after the step was recorded. Whichever claims the
    // operation dies; the other one resumes it once the lease lapses and finishes it alone.
    let mut b = a.replica(&net, "control-plane-b").await;
    for (i, step) in CREATE_STEPS.iter().enumerate() {
        a.restart(&[(CRASH, step)]).await;
        b.restart(&[(CRASH, step)]).await;
        let name = format!("pair-{i}");
        let op = create(&a, &name).await;
        let dead = crashed(&mut [&mut a, &mut b], step).await;
        let (survivor, victim) = if dead == 0 { (&mut b, &mut a) } else { (&mut a, &mut b) };
        let done = survivor.wait_operation(&op).await;
        assert_eq!(done["state"], "succeeded", "after {step}, the surviving replica did not finish: {done}");
        assert!(!survivor.exited(), "both replicas died at {step}");
        victim.restart(&[]).await;
        running_then_deleted(survivor, &name, &op, step).await;
    }
    assert_nothing_leaked(&a, &agent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_creates_through_two_replicas_never_overcommit_three_small_hosts() {
    let image = minimal_image();
    let mut net = TestNetwork::create();
    let dir = tempfile::tempdir().unwrap();
    let a = spawn_control_plane_with(&net, dir.path(), &REPLICA_FLAGS).await;
    let b = a.replica(&net, "control-plane-b").await;
    // Three small hosts (4 vCPUs each) whose agents simulate their VMs: 200 QEMUs do not fit
    // on this machine, and only the control plane is under test here.
    let mut agents = Vec::new();
    for n in 1..=3 {
        agents.push(spawn_agent_with(&mut net, n, &a, dir.path(), &["--driver", "simulated"]).await);
    }
    a.wait_active_hosts(3).await;
    a.register_minimal_image(&image).await;

    // Every create goes out at once, alternating replicas; then every one is retried with the
    // same Idempotency-Key through the other replica.
    const N: usize = 200;
    let send = |round: usize| {
        let replicas = [&a, &b];
        futures::future::join_all((0..N).map(move |i| {
            let cp = replicas[(i + round) % 2];
            async move {
                let key = format!("create-{i}");
                cp.call(Method::POST, "/v1/projects/default/instances", Some(small(&format!("vm-{i}"))), Some(&key))
                    .await
            }
        }))
    };
    let first = send(0).await;
    let retried = send(1).await;

    let (mut placed, mut refused_at_once, mut refused_later) = (0, 0, 0);
    let mut operations = HashMap::new();
    for (i, ((status, body), (again_status, again))) in first.iter().zip(&retried).enumerate() {
        match status {
            202 => {
                assert_eq!(*again_status, 202, "retry of create {i}: {again}");
                assert_eq!(
                    again["operation"]["id"], body["operation"]["id"],
                    "a retry of create {i} made a new operation"
                );
                operations.insert(i, body["operation"]["id"].as_str().unwrap().to_owned());
            }
            503 => {
                assert_eq!(body["error"]["code"], "no_capacity", "{body}");
                assert!(body["error"]["message"].as_str().unwrap().contains("not enough vCPUs"), "{body}");
                refused_at_once += 1;
            }
            _ => panic!("create {i}: {status} {body}"),
        }
    }
    for (i, op) in &operations {
        let done = a.wait_operation(op).await;
        match done["state"].as_str() {
            Some("succeeded") => placed += 1,
            Some("failed") => {
                assert_eq!(done["error_code"], "no_capacity", "create {i}: {done}");
                refused_later += 1;
            }
            other => panic!("create {i} ended {other:?}: {done}"),
        }
    }
    // 3 hosts × 4 vCPUs, 1 vCPU each: exactly 12 fit; every other create was refused with why.
    assert_eq!(placed, 12, "placed {placed}, refused at once {refused_at_once}, refused later {refused_later}");
    assert_eq!(placed + refused_at_once + refused_later, N);
    for host in a.hosts().await {
        assert_eq!(host["reserved_vcpus"], host["total_vcpus"], "{host}");
    }
    let pool = sqlx::PgPool::connect(&a.db_url).await.unwrap();
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM instances WHERE deleted_at IS NULL GROUP BY state ORDER BY state")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected = if refused_later > 0 {
        vec![("failed".to_owned(), refused_later as i64), ("running".to_owned(), 12)]
    } else {
        vec![("running".to_owned(), 12)]
    };
    assert_eq!(rows, expected, "one instance per accepted create, nothing twice");
    pool.close().await;

    // The scheduler's metrics, summed over both replicas, say the same.
    let mut placements = HashMap::<String, f64>::new();
    for cp in [&a, &b] {
        let text = reqwest::get(format!("{}/metrics", cp.api)).await.unwrap().text().await.unwrap();
        for line in text.lines().filter(|l| l.starts_with("cloud_scheduler_placements_total{")) {
            let (labels, value) = line.rsplit_once(' ').unwrap();
            *placements.entry(labels.to_owned()).or_default() += value.parse::<f64>().unwrap();
        }
    }
    let count = |outcome: &str| placements.get(&format!("cloud_scheduler_placements_total{{outcome=\"{outcome}\"}}"));
    assert_eq!(count("placed").copied(), Some(12.0), "{placements:?}");
    assert_eq!(count("no_host_fits").copied().unwrap_or(0.0), refused_later as f64, "{placements:?}");
    drop(agents);
}
