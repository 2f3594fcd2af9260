//! Two control-plane replicas on a highly-available PostgreSQL (Patroni with etcd, a primary and
//! a synchronous replica): the primary's machine dies (SIGKILL to Patroni and PostgreSQL) with
//! eight creates in flight at every moment, through both replicas. The replicas follow the
//! promoted replica; a create caught by the failover is refused with a 503 (retry), never a 500;
//! every create they acknowledged is in the database with its operation, which succeeds; no
//! instance is placed twice nor a host filled past its capacity; both sign with the one fleet CA
//! in the database. It prints how long creates failed (about 7 s with Patroni's 5 s lease).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cloud_tests::guest::minimal_image;
use cloud_tests::net::TestNetwork;
use cloud_tests::patroni::PatroniCluster;
use cloud_tests::process::{ControlPlane, SIMULATED_LARGE_HOST, spawn_agent_with, spawn_control_plane_on, wait_until};
use reqwest::Method;
use serde_json::json;

/// A create the control plane acknowledged (202): its instance and its operation.
struct Acknowledged {
    instance: String,
    operation: String,
}

/// What the streams of creates saw.
#[derive(Default)]
struct Stream {
    sent: usize,
    acknowledged: Vec<Acknowledged>,
    refused: Vec<(u16, serde_json::Value)>,
    crashed_at: Option<Instant>,
    /// From the crash to the first acknowledgement of a create sent after it.
    recovered_in: Option<Duration>,
    /// Creates sent after the crash and acknowledged.
    since_recovery: usize,
}

impl Stream {
    fn record(&mut self, sent_at: Instant, result: Result<Acknowledged, (u16, serde_json::Value)>) {
        match result {
            Ok(ack) => {
                if let Some(crashed_at) = self.crashed_at
                    && sent_at > crashed_at
                {
                    self.recovered_in.get_or_insert(crashed_at.elapsed());
                    self.since_recovery += 1;
                }
                self.acknowledged.push(ack);
            }
            Err(refusal) => self.refused.push(refusal),
        }
    }
}

/// Creates `vm-{i}` through `cp`: what was acknowledged, or the refusal's status and body.
async fn create(cp: &ControlPlane, i: usize) -> Result<Acknowledged, (u16, serde_json::Value)> {
    let body = json!({"name": format!("vm-{i}"), "image": "minimal", "vcpus": 1, "memory_mib": 128});
    let (status, accepted) = cp.call(Method::POST, "/v1/projects/default/instances", Some(body), None).await;
    if status != 202 {
        return Err((status, accepted));
    }
    let id = |v: &serde_json::Value| v["id"].as_str().expect("an id").to_owned();
    Ok(Acknowledged { instance: id(&accepted["instance"]), operation: id(&accepted["operation"]) })
}

/// How the primary's machine fails.
#[derive(Debug, Clone, Copy)]
enum Failure {
    /// It loses power: its connections are reset.
    Crash,
    /// It hangs, or drops off the network: its connections stay open, unanswered.
    Hang,
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_follow_a_patroni_failover_when_the_primary_crashes_and_lose_no_acknowledged_create() {
    failover_under_load(Failure::Crash).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_follow_a_patroni_failover_when_the_primary_hangs_and_lose_no_acknowledged_create() {
    failover_under_load(Failure::Hang).await;
}

async fn failover_under_load(failure: Failure) {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = PatroniCluster::start(dir.path()).await;
    cluster.execute("CREATE DATABASE cloud").await;
    let url = cluster.url("cloud");
    let mut net = TestNetwork::create();
    let a = spawn_control_plane_on(&net, dir.path(), &url, &[]).await;
    let b = a.replica(&net, "control-plane-b").await;
    let agents = [
        spawn_agent_with(&mut net, 1, &a, dir.path(), &SIMULATED_LARGE_HOST).await,
        spawn_agent_with(&mut net, 2, &a, dir.path(), &SIMULATED_LARGE_HOST).await,
    ];
    a.wait_active_hosts(2).await;
    a.register_minimal_image(&minimal_image()).await;

    // Eight streams of creates through both replicas; the primary dies while they are in flight.
    let old_primary = cluster.primary().await.expect("a primary");
    let stream = Mutex::new(Stream::default());
    let done = AtomicBool::new(false);
    let worker = || async {
        while !done.load(Ordering::Relaxed) {
            let n = {
                let mut s = stream.lock().unwrap();
                s.sent += 1;
                s.sent
            };
            let sent_at = Instant::now();
            let result = create(if n % 2 == 0 { &a } else { &b }, n).await;
            stream.lock().unwrap().record(sent_at, result);
        }
    };
    let crash_under_load = async {
        let acknowledged = || async { stream.lock().unwrap().acknowledged.len() >= 16 };
        wait_until(Duration::from_secs(60), "16 creates before the crash", acknowledged).await;
        match failure {
            Failure::Crash => cluster.nodes[old_primary].crash(),
            Failure::Hang => cluster.nodes[old_primary].hang(),
        }
        stream.lock().unwrap().crashed_at = Some(Instant::now());
        let recovered = || async { stream.lock().unwrap().since_recovery >= 16 };
        wait_until(Duration::from_secs(120), "creates acknowledged again after the crash", recovered).await;
        done.store(true, Ordering::Relaxed);
    };
    futures::join!(crash_under_load, futures::future::join_all((0..8).map(|_| worker())));
    let Stream { sent, acknowledged, refused, recovered_in, .. } = stream.into_inner().unwrap();
    let recovered_in = recovered_in.expect("recovered");
    let new_primary = cluster.primary().await.expect("the replica was promoted");
    assert_ne!(new_primary, old_primary);
    let statuses: BTreeSet<u16> = refused.iter().map(|(status, _)| *status).collect();
    eprintln!(
        "failover ({failure:?}): creates succeed again {recovered_in:?} after the primary failed; {sent} sent, {} acknowledged, \
         {} refused (statuses {statuses:?})",
        acknowledged.len(),
        refused.len(),
    );
    // A create caught by the failover is refused as a passing outage (503), never a 500.
    for (status, body) in &refused {
        assert_eq!(*status, 503, "a create during the failover: {body}");
    }

    // Every acknowledged create is carried out, by whichever replica: its operation is in the
    // database and succeeded, and its instance runs.
    let mut on_host: BTreeMap<String, String> = BTreeMap::new();
    for Acknowledged { instance: id, operation } in &acknowledged {
        let op = b.wait_operation(operation).await;
        assert_eq!(op["state"], "succeeded", "the operation of acknowledged instance {id}: {op}");
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
    // And no host reserved more than its instances hold (a create counted twice would show), nor
    // more than it has.
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
        for resource in ["vcpus", "memory_bytes", "disk_bytes"] {
            let field = |name: String| host[&name].as_i64().unwrap_or_else(|| panic!("no {name}: {host}"));
            let (reserved, total) = (field(format!("reserved_{resource}")), field(format!("total_{resource}")));
            assert!(reserved <= total, "host {id} is over its {resource}: {host}");
        }
    }
    let ids: BTreeSet<&String> = acknowledged.iter().map(|ack| &ack.instance).collect();
    assert_eq!(ids.len(), acknowledged.len(), "an id was acknowledged twice");

    // Both replicas sign with the CA in the database.
    let (_, info_a) = a.call(Method::GET, "/v1/fleet/join-info", None, None).await;
    let (_, info_b) = b.call(Method::GET, "/v1/fleet/join-info", None, None).await;
    assert!(info_a["ca_certificate_pem"].is_string(), "{info_a}");
    assert_eq!(info_a["ca_certificate_pem"], info_b["ca_certificate_pem"]);
    // The replicas said what they did.
    for cp in [&a, &b] {
        let log = std::fs::read_to_string(&cp.proc.log).unwrap();
        assert!(log.contains("following the new database primary"), "{} did not log the switch", cp.proc.log.display());
    }
}
