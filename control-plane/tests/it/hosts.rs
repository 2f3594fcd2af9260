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
