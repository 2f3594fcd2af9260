//! The embedded database is supervised: killed with SIGKILL while creates are in flight, it is
//! back within seconds, every acknowledged operation finishes, and no host leaves `active`.

use std::time::{Duration, Instant};

use cloud_tests::guest::minimal_image;
use cloud_tests::net::TestNetwork;
use cloud_tests::process::{SIMULATED_LARGE_HOST, spawn_agent_with, spawn_control_plane_embedded, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_database_killed_under_load_comes_back_and_nothing_acknowledged_is_lost() {
    let mut net = TestNetwork::create();
    let dir = tempfile::tempdir().unwrap();
    let cp = spawn_control_plane_embedded(&net, dir.path(), &[]).await;
    let _agent = spawn_agent_with(&mut net, 1, &cp, dir.path(), &SIMULATED_LARGE_HOST).await;
    cp.wait_active_hosts(1).await;
    cp.register_minimal_image(&minimal_image()).await;

    let pid_file = cp.data_dir.join("postgres/pgdata/postmaster.pid");
    let postgres = || -> i32 {
        let text = std::fs::read_to_string(&pid_file).expect("postmaster.pid");
        text.lines().next().and_then(|l| l.trim().parse().ok()).expect("a pid")
    };
    let before = postgres();
    let create = |i: usize| {
        let cp = &cp;
        async move {
            let body = json!({"name": format!("vm-{i}"), "image": "minimal", "vcpus": 1, "memory_mib": 128});
            let key = format!("create-{i}");
            cp.call(reqwest::Method::POST, "/v1/projects/default/instances", Some(body), Some(&key)).await
        }
    };
    // Creates before, during and after the kill, 10 at a time.
    let mut acknowledged = Vec::new();
    let mut killed_at = None;
    for batch in 0..6 {
        let results = futures::future::join_all((0..10).map(|i| create(batch * 10 + i))).await;
        for (status, body) in results {
            if status == 202 {
                acknowledged.push(body["operation"]["id"].as_str().unwrap().to_owned());
            }
        }
        if batch == 1 {
            kill(Pid::from_raw(before), Signal::SIGKILL).unwrap();
            killed_at = Some(Instant::now());
        }
        let hosts = cp.hosts_or_empty().await;
        assert!(hosts.iter().all(|h| h["state"] == "active"), "a host left active: {hosts:?}");
    }
    let killed_at = killed_at.unwrap();
    wait_until(Duration::from_secs(10), "the database back (healthz 200)", || async {
        cp.http.get(format!("{}/healthz", cp.api)).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(killed_at.elapsed() < Duration::from_secs(30));
    assert_ne!(postgres(), before, "a new server runs");
    assert!(acknowledged.len() >= 20, "only {} creates were acknowledged", acknowledged.len());
    for op in &acknowledged {
        let done = cp.wait_operation(op).await;
        assert_eq!(done["state"], "succeeded", "an acknowledged operation did not finish: {done}");
    }
    let hosts = cp.hosts().await;
    assert!(hosts.iter().all(|h| h["state"] == "active"), "{hosts:?}");
    let metrics = cp.http.get(format!("{}/metrics", cp.api)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("cloud_embedded_db_restarts_total 1"), "{metrics}");
}
