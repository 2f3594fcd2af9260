//! The operator endpoints for hosts: drain and undrain are operator-only, idempotent, survive a
//! lease lapse, and keep the scheduler off a drained host.

use reqwest::Method;
use serde_json::json;

use crate::instances::serve_api;
use crate::projects::user_with_token;

#[tokio::test]
async fn drain_and_undrain_are_operator_only_idempotent_and_outlive_a_lease_lapse() {
    let api = serve_api().await;
    let host = control_plane::testing::add_host(&api.pool, "hv-2", 8, 8, 100).await.unwrap();
    let operator = user_with_token(&api.pool, "ops", true, &[]).await;
    let customer = user_with_token(&api.pool, "alice", false, &[]).await;
    let drain = format!("/v1/hosts/{}/drain", host.0);
    let undrain = format!("/v1/hosts/{}/undrain", host.0);

    assert_eq!(api.call(Method::POST, &drain, None, None).await.0, 401);
    let (status, body) = api.call(Method::POST, &drain, Some(&customer), None).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) =
        api.call(Method::POST, &format!("/v1/hosts/{}/drain", uuid::Uuid::new_v4()), Some(&operator), None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api.call(Method::POST, "/v1/hosts/not-a-uuid/drain", Some(&operator), None).await;
    assert_eq!(status, 400, "{body}");

    for _ in 0..2 {
        let (status, body) = api.call(Method::POST, &drain, Some(&operator), None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!((body["state"].as_str(), body["draining"].as_bool()), (Some("draining"), Some(true)), "{body}");
    }

    // The lease lapses and the host reports again: it comes back draining, not active.
    sqlx::query("UPDATE hosts SET state = 'suspect' WHERE id = $1").bind(host).execute(&api.pool).await.unwrap();
    let mut conn = api.pool.acquire().await.unwrap();
    let renewal =
        control_plane::db::hosts::host_report(&mut conn, host.0, (8, 8 << 30, 100 << 30), 10).await.unwrap().unwrap();
    assert_eq!(renewal.state.as_str(), "draining");

    for _ in 0..2 {
        let (status, body) = api.call(Method::POST, &undrain, Some(&operator), None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!((body["state"].as_str(), body["draining"].as_bool()), (Some("active"), Some(false)), "{body}");
    }
    let (status, body) = api.call(Method::GET, &format!("/v1/hosts/{}", host.0), Some(&operator), None).await;
    assert_eq!((status, body["state"].clone()), (200, json!("active")), "{body}");

    // A dead host keeps the flag for when it reports again: it comes back draining.
    sqlx::query("UPDATE hosts SET state = 'dead' WHERE id = $1").bind(host).execute(&api.pool).await.unwrap();
    let (status, body) = api.call(Method::POST, &drain, Some(&operator), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["state"].as_str(), body["draining"].as_bool()), (Some("dead"), Some(true)), "{body}");
    let renewal =
        control_plane::db::hosts::host_report(&mut conn, host.0, (8, 8 << 30, 100 << 30), 10).await.unwrap().unwrap();
    assert_eq!((renewal.previous_state.as_str(), renewal.state.as_str()), ("dead", "draining"));
}

#[tokio::test]
async fn forty_hosts_joining_at_once_all_join_with_distinct_subnets() {
    use control_plane::db::hosts::{NewHost, host_join, join_token_create};
    let db = control_plane::testing::TestDatabase::create().await.unwrap();
    db.migrated_pool().await.unwrap().close().await;
    // A connection per join, so all 40 really run at once (as through several replicas).
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(40).connect_with(db.options()).await.unwrap();
    let expires = chrono::Utc::now() + chrono::Duration::hours(1);
    let mut tokens = Vec::new();
    for i in 0..40u8 {
        let hash = vec![i; 32];
        join_token_create(&mut pool.acquire().await.unwrap(), &hash, None, expires).await.unwrap();
        tokens.push(hash);
    }
    let pool_net = "10.100.0.0/16".parse().unwrap();
    let joins = tokens.into_iter().enumerate().map(|(i, hash)| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let host = NewHost {
                hostname: format!("hv-{i}"),
                agent_endpoint: format!("https://192.0.2.{i}:7444"),
                accelerator: "tcg".to_owned(),
                total_vcpus: 8,
                total_memory_bytes: 8 << 30,
                total_disk_bytes: 100 << 30,
            };
            host_join(&pool, &hash, &host, pool_net).await
        })
    });
    let mut subnets = std::collections::HashSet::new();
    for join in futures::future::join_all(joins).await {
        let row = join.unwrap().unwrap_or_else(|e| panic!("a concurrent join failed: {e}"));
        assert!(subnets.insert(row.instance_subnet.clone()), "subnet {} given twice", row.instance_subnet);
    }
    assert_eq!(subnets.len(), 40);
}

/// Reports written in batches: 200 hosts reporting at once (some twice, one unknown) each get
/// their own lease and instances, and what one says of its instance is applied.
#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_hosts_reporting_at_once_each_get_their_own_answer() {
    use control_plane::db::instances::InstanceReport;
    use control_plane::fleet::reports::{HostReport, submit};
    use control_plane::states::InstanceState;
    let db = control_plane::testing::TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = std::sync::Arc::new(control_plane::testing::app(pool.clone(), dir.path()));
    let mut hosts = Vec::new();
    for n in 0..200 {
        hosts.push(control_plane::testing::add_host(&pool, &format!("hv-{n}"), 8, 8, 100).await.unwrap());
    }
    sqlx::query("UPDATE hosts SET state = 'suspect', lease_expires_at = now()").execute(&pool).await.unwrap();
    // One instance on the first host, stopped in the database and running by the report.
    let project = control_plane::testing::add_project(&pool).await.unwrap();
    let instance =
        control_plane::testing::add_instance(&pool, project, "vm", Some(hosts[0]), "stopped").await.unwrap().0;

    let report = |host: uuid::Uuid, vcpus: i32| HostReport {
        host_id: host,
        capacity: (vcpus, 8 << 30, 100 << 30),
        instances: vec![],
    };
    let mut calls = tokio::task::JoinSet::new();
    for (n, host) in hosts.iter().enumerate() {
        let mut r = report(host.0, 8 + i32::try_from(n % 3).unwrap());
        if n == 0 {
            r.instances.push(InstanceReport {
                host: *host,
                id: instance.into(),
                generation: 1,
                state: Some(InstanceState::Running),
                reason: None,
                ready_at: None,
                host_keys: vec![],
            });
        }
        for _ in 0..(1 + n % 2) {
            let (app, r) = (app.clone(), r.clone());
            calls.spawn(async move { (r.host_id, submit(&app.reports, r).await) });
        }
    }
    let unknown = uuid::Uuid::new_v4();
    let (app2, r) = (app.clone(), report(unknown, 8));
    calls.spawn(async move { (r.host_id, submit(&app2.reports, r).await) });
    let mut answered = 0;
    let mut previous: std::collections::HashMap<uuid::Uuid, Vec<String>> = Default::default();
    while let Some(joined) = calls.join_next().await {
        let (host, answer) = joined.unwrap();
        let reported = answer.unwrap();
        answered += 1;
        if host == unknown {
            assert!(reported.is_none(), "an unknown host is refused");
            continue;
        }
        let (renewal, owned) = reported.unwrap_or_else(|| panic!("host {host} got no answer"));
        assert_eq!(renewal.state.as_str(), "active", "{renewal:?}");
        previous.entry(host).or_default().push(renewal.previous_state.as_str().to_owned());
        assert!(renewal.lease_expires_at > chrono::Utc::now(), "{renewal:?}");
        let expected = if host == hosts[0].0 { vec![instance] } else { vec![] };
        assert_eq!(owned, expected, "host {host}");
    }
    assert_eq!(answered, 301);
    // A host's first report found it suspect; its second one, written in the same batch or in
    // the next (the writer may start before every report is queued), found it so or active.
    assert_eq!(previous.len(), 200);
    for (host, seen) in &previous {
        assert!(seen.iter().any(|p| p == "suspect"), "host {host} was never seen suspect: {seen:?}");
        assert!(seen.iter().all(|p| p == "suspect" || p == "active"), "host {host}: {seen:?}");
    }
    let totals: Vec<(uuid::Uuid, i32)> =
        sqlx::query_as("SELECT id, total_vcpus FROM hosts").fetch_all(&pool).await.unwrap();
    for (id, vcpus) in totals {
        let n = hosts.iter().position(|h| h.0 == id).unwrap();
        assert_eq!(vcpus, 8 + i32::try_from(n % 3).unwrap(), "host {n}'s capacity is its report's");
    }
    let state: String =
        sqlx::query_scalar("SELECT state FROM instances WHERE id = $1").bind(instance).fetch_one(&pool).await.unwrap();
    assert_eq!(state, "running");
}

/// Reports have a connection of their own: requests holding every connection of the API's pool
/// do not keep a host's report, and so its lease, waiting.
#[tokio::test]
async fn a_report_is_written_while_requests_hold_every_api_connection() {
    use control_plane::fleet::reports::{HostReport, submit};
    let db = control_plane::testing::TestDatabase::create().await.unwrap();
    db.migrated_pool().await.unwrap().close().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(30))
        .connect_with(db.options())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = control_plane::testing::app(pool.clone(), dir.path());
    let host = control_plane::testing::add_host(&pool, "hv-1", 8, 8, 100).await.unwrap();
    sqlx::query("UPDATE hosts SET state = 'suspect', lease_expires_at = now()").execute(&pool).await.unwrap();
    let held = (pool.acquire().await.unwrap(), pool.acquire().await.unwrap());

    let report = HostReport { host_id: host.0, capacity: (8, 8 << 30, 100 << 30), instances: vec![] };
    let written = tokio::time::timeout(std::time::Duration::from_secs(10), submit(&app.reports, report))
        .await
        .expect("the report waited for the API's connections")
        .unwrap()
        .expect("the host is known");
    assert_eq!(written.0.state.as_str(), "active", "{written:?}");
    drop(held);
}
