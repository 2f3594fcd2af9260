//! Host liveness against a real database: a gap in the watch extends every lease before anyone
//! is judged; a host silent alone is declared dead after its lease plus the margin, many silent
//! together degrade the fleet and nobody is declared dead until an operator says so; a dead
//! host that reports again is taken back.

use std::time::Duration;

use control_plane::db::hosts::host_report;
use control_plane::reconcilers::host_liveness::{LivenessPolicy, activate};
use reqwest::Method;
use serde_json::json;

use crate::instances::serve_api;
use crate::projects::user_with_token;

const POLICY: LivenessPolicy = LivenessPolicy {
    period: Duration::from_secs(1),
    margin: Duration::from_secs(10),
    partition_silent_percent: 34,
    partition_min_hosts: 2,
};

async fn state(pool: &sqlx::PgPool, host: control_plane::ids::HostId) -> String {
    sqlx::query_scalar("SELECT state FROM hosts WHERE id = $1").bind(host).fetch_one(pool).await.unwrap()
}

/// Sets a host's lease to expire `secs` from now (negative: in the past).
async fn lease(pool: &sqlx::PgPool, host: control_plane::ids::HostId, secs: i64) {
    sqlx::query("UPDATE hosts SET lease_expires_at = now() + make_interval(secs => $2) WHERE id = $1")
        .bind(host)
        .bind(secs as f64)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_gap_in_the_watch_extends_every_lease_before_anyone_is_judged() {
    let api = serve_api().await;
    let pool = &api.pool;
    let host = control_plane::testing::add_host(pool, "hv-1", 8, 8, 100).await.unwrap();
    activate(pool, &POLICY).await.unwrap();
    // The control plane was away for a minute; the host's lease ran out 30 s ago meanwhile.
    sqlx::query("UPDATE fleet_liveness SET last_pass_at = now() - interval '60 seconds'").execute(pool).await.unwrap();
    lease(pool, host, -30).await;
    let changes = activate(pool, &POLICY).await.unwrap();
    let gap = changes.extended_by.expect("the gap was seen");
    assert!(gap >= Duration::from_secs(59), "{changes:?}");
    assert_eq!((changes.suspect, changes.dead), (0, 0), "{changes:?}");
    assert_eq!(state(pool, host).await, "active");
    // Without a gap, the same silence is judged.
    lease(pool, host, -30).await;
    let changes = activate(pool, &POLICY).await.unwrap();
    assert_eq!((changes.extended_by, changes.suspect, changes.dead), (None, 1, 1), "{changes:?}");
    assert_eq!(state(pool, host).await, "dead");
}

#[tokio::test]
async fn one_silent_host_dies_many_silent_together_degrade_the_fleet_until_an_operator_decides() {
    let api = serve_api().await;
    let pool = &api.pool;
    let operator = user_with_token(pool, "ops", true, &[]).await;
    let mut hosts = Vec::new();
    for name in ["hv-1", "hv-2", "hv-3"] {
        hosts.push(control_plane::testing::add_host(pool, name, 8, 8, 100).await.unwrap());
    }
    activate(pool, &POLICY).await.unwrap();

    // One of three silent past its lease and the margin: dead, alone.
    lease(pool, hosts[0], -20).await;
    let changes = activate(pool, &POLICY).await.unwrap();
    assert_eq!((changes.dead, changes.degraded_silent), (1, None), "{changes:?}");
    assert_eq!(state(pool, hosts[1]).await, "active");

    // It reports again: taken back with its identity, not refused.
    let mut conn = pool.acquire().await.unwrap();
    let renewal = host_report(&mut conn, hosts[0].0, (8, 8 << 30, 100 << 30), 10).await.unwrap().unwrap();
    assert_eq!((renewal.previous_state.as_str(), renewal.state.as_str()), ("dead", "active"));

    // Two of three silent together: a partition. Nobody is declared dead, however long.
    lease(pool, hosts[1], -60).await;
    lease(pool, hosts[2], -60).await;
    for _ in 0..2 {
        let changes = activate(pool, &POLICY).await.unwrap();
        assert_eq!((changes.dead, changes.degraded_silent), (0, Some(2)), "{changes:?}");
    }
    let (status, fleet) = api.call(Method::GET, "/v1/fleet/liveness", Some(&operator), None).await;
    assert_eq!(status, 200, "{fleet}");
    assert_eq!((fleet["state"].clone(), fleet["silent_hosts"].clone()), (json!("degraded"), json!(2)), "{fleet}");
    assert!(fleet["degraded_since"].is_string(), "{fleet}");

    // The operator decides: a host holding a lease cannot be declared dead; a silent one can.
    let declare = |h: control_plane::ids::HostId| format!("/v1/hosts/{}/declare-dead", h.0);
    let (status, body) = api.call(Method::POST, &declare(hosts[0]), Some(&operator), None).await;
    assert_eq!(status, 409, "{body}");
    for _ in 0..2 {
        let (status, body) = api.call(Method::POST, &declare(hosts[1]), Some(&operator), None).await;
        assert_eq!((status, body["state"].clone()), (200, json!("dead")), "{body}");
    }
    let customer = user_with_token(pool, "alice", false, &[]).await;
    let (status, _) = api.call(Method::POST, &declare(hosts[2]), Some(&customer), None).await;
    assert_eq!(status, 403);
    assert_eq!(state(pool, hosts[2]).await, "suspect", "only the operator's choice is dead");

    // The partition heals: the silent host reports, the fleet is healthy again.
    host_report(&mut conn, hosts[2].0, (8, 8 << 30, 100 << 30), 10).await.unwrap().unwrap();
    let changes = activate(pool, &POLICY).await.unwrap();
    assert_eq!(changes.degraded_silent, None, "{changes:?}");
    let (_, fleet) = api.call(Method::GET, "/v1/fleet/liveness", Some(&operator), None).await;
    assert_eq!(fleet["state"], "healthy", "{fleet}");
}
