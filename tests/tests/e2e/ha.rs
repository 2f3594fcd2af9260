//! Two control-plane replicas on a highly-available PostgreSQL (Patroni with etcd, a primary and
//! a synchronous replica): the primary's machine dies (SIGKILL to Patroni and PostgreSQL) while
//! creates pour in. The replicas follow the promoted replica, every create they acknowledged is
//! carried out, no instance is placed twice, and both sign with the one fleet CA in the database.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cloud_tests::guest::minimal_image;
use cloud_tests::net::TestNetwork;
use cloud_tests::patroni::PatroniCluster;
use cloud_tests::process::{ControlPlane, spawn_agent_with, spawn_control_plane_on};
use reqwest::Method;
use serde_json::json;

/// Creates `vm-{i}` through `cp`; the instance id when the create was acknowledged (202).
async fn create(cp: &ControlPlane, i: usize) -> Option<String> {
    let body = json!({"name": format!("vm-{i}"), "image": "minimal", "vcpus": 1, "memory_mib": 128});
    let (status, accepted) = cp.call(Method::POST, "/v1/projects/default/instances", Some(body), None).await;
    (status == 202).then(|| accepted["instance"]["id"].as_str().expect("an instance id").to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_follow_a_patroni_failover_and_lose_no_acknowledged_create() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = PatroniCluster::start(dir.path()).await;
    cluster.execute("CREATE DATABASE cloud").await;
    let url = cluster.url("cloud");
    let mut net = TestNetwork::create();
    let a = spawn_control_plane_on(&net, dir.path(), &url, &[]).await;
    let b = a.replica(&net, "control-plane-b").await;
    let flags = ["--driver", "simulated", "--capacity-vcpus", "256", "--capacity-memory-mib", "65536"];
    let agents = [
        spawn_agent_with(&mut net, 1, &a, dir.path(), &flags).await,
        spawn_agent_with(&mut net, 2, &a, dir.path(), &flags).await,
    ];
    a.wait_active_hosts(2).await;
    a.register_minimal_image(&minimal_image()).await;

    // Creates through both replicas, 8 at a time; the primary dies after the second batch.
    let old_primary = cluster.primary().await.expect("a primary");
    let mut acknowledged = Vec::new();
    let (mut crashed_at, mut recovered_in) = (None, None);
    let mut i = 0;
    while recovered_in.is_none() || acknowledged.len() < 60 {
        let batch = (i..i + 8).map(|n| create(if n % 2 == 0 { &a } else { &b }, n));
        let results = futures::future::join_all(batch).await;
        let accepted = results.iter().flatten().count();
        acknowledged.extend(results.into_iter().flatten());
        i += 8;
        match crashed_at {
            None if i >= 16 => {
                cluster.nodes[old_primary].crash();
                crashed_at = Some(Instant::now());
            }
            Some(at) if recovered_in.is_none() && accepted == 8 => recovered_in = Some(at.elapsed()),
            Some(at) => assert!(at.elapsed() < Duration::from_secs(120), "no create succeeded for 2 minutes"),
            None => {}
        }
        if recovered_in.is_none() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let recovered_in = recovered_in.unwrap();
    let new_primary = cluster.primary().await.expect("the replica was promoted");
    assert_ne!(new_primary, old_primary);
    eprintln!(
        "failover: creates succeed again {recovered_in:?} after the primary died; {i} tried, {} acknowledged",
        acknowledged.len()
    );

    // Every acknowledged create is carried out, by whichever replica.
    let mut on_host: BTreeMap<String, String> = BTreeMap::new();
    for id in &acknowledged {
        let path = format!("/v1/projects/default/instances/{id}");
        let deadline = Instant::now() + Duration::from_secs(120);
        let row = loop {
            let (status, row) = a.call(Method::GET, &path, None, None).await;
            assert_eq!(status, 200, "an acknowledged instance is gone: {row}");
            if row["state"] == "running" {
                break row;
            }
            assert!(Instant::now() < deadline, "an acknowledged instance did not run: {row}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        on_host.insert(id.clone(), row["host_id"].as_str().expect("placed").to_owned());
    }

    // No instance is placed twice: each runs on exactly one agent, the one the database says.
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for agent in &agents {
        let host = agent.host_id();
        for entry in std::fs::read_dir(agent.state_dir.join("instances")).unwrap().flatten() {
            seen.entry(entry.file_name().to_string_lossy().into_owned()).or_default().push(host.clone());
        }
    }
    for (id, host) in &on_host {
        assert_eq!(seen.get(id), Some(&vec![host.clone()]), "instance {id} is on {:?}, placed on {host}", seen.get(id));
    }
    // And no host reserved more than its instances hold (a create counted twice would show).
    let (status, hosts) = a.call(Method::GET, "/v1/hosts", None, None).await;
    assert_eq!(status, 200);
    let (_, list) = a.call(Method::GET, "/v1/projects/default/instances?limit=1000", None, None).await;
    for host in hosts.as_array().expect("a host list") {
        let id = host["id"].as_str().unwrap();
        let placed: i64 = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|row| row["host_id"] == id)
            .map(|row| row["vcpus"].as_i64().unwrap())
            .sum();
        assert_eq!(host["reserved_vcpus"].as_i64(), Some(placed), "host {id}: {host}");
    }
    let ids: BTreeSet<&String> = acknowledged.iter().collect();
    assert_eq!(ids.len(), acknowledged.len(), "an id was acknowledged twice");

    // Both replicas sign with the CA in the database.
    let (_, info_a) = a.call(Method::GET, "/v1/fleet/join-info", None, None).await;
    let (_, info_b) = b.call(Method::GET, "/v1/fleet/join-info", None, None).await;
    assert!(info_a["ca_certificate_pem"].is_string(), "{info_a}");
    assert_eq!(info_a["ca_certificate_pem"], info_b["ca_certificate_pem"]);
    // The replicas said what they did.
    let logs = [a.proc.log_tail(400), b.proc.log_tail(400)].concat();
    assert!(logs.contains("following the new database primary"), "no replica logged the switch");
}
