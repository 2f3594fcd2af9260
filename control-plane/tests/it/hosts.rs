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
    assert_eq!(renewal.state, "draining");

    for _ in 0..2 {
        let (status, body) = api.call(Method::POST, &undrain, Some(&operator), None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!((body["state"].as_str(), body["draining"].as_bool()), (Some("active"), Some(false)), "{body}");
    }
    let (status, body) = api.call(Method::GET, &format!("/v1/hosts/{}", host.0), Some(&operator), None).await;
    assert_eq!((status, body["state"].clone()), (200, json!("active")), "{body}");

    // A dead host must join again; draining it is a conflict and changes nothing.
    sqlx::query("UPDATE hosts SET state = 'dead' WHERE id = $1").bind(host).execute(&api.pool).await.unwrap();
    let (status, body) = api.call(Method::POST, &drain, Some(&operator), None).await;
    assert_eq!(status, 409, "{body}");
    let draining: bool =
        sqlx::query_scalar("SELECT draining FROM hosts WHERE id = $1").bind(host).fetch_one(&api.pool).await.unwrap();
    assert!(!draining);
}
