//! Operations end: a step that keeps failing (an agent nothing answers for) fails its operation
//! after the step's time limit, naming the step and the cause, and undoes what was done; a
//! create in progress is cancelled by deleting its instance.

use std::time::{Duration, Instant};

use control_plane::auth::Role;
use control_plane::operations::OperationsConfig;
use reqwest::Method;
use serde_json::{Value, json};

use crate::instances::{Api, serve_api_with};
use crate::projects::{project, user_with_token};

async fn wait_done(api: &Api, token: &str, op: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = api.call(Method::GET, &format!("/v1/operations/{op}"), Some(token), None).await;
        if matches!(body["state"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
            return body;
        }
        assert!(Instant::now() < deadline, "operation {op} did not end: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn reserved_vcpus(api: &Api) -> i64 {
    sqlx::query_scalar("SELECT sum(reserved_vcpus)::bigint FROM hosts").fetch_one(&api.pool).await.unwrap()
}

#[tokio::test]
async fn a_step_that_keeps_failing_ends_its_operation_within_its_bound() {
    let ops = OperationsConfig { step_timeout_secs: 2, ..OperationsConfig::default() };
    let api = serve_api_with(Some(ops)).await;
    let p = project(&api.pool, "team").await;
    let alice = user_with_token(&api.pool, "alice", false, &[(p, Role::Admin)]).await;
    let body = json!({"name": "web-1", "image": "img", "vcpus": 1, "memory_mib": 256});
    let (status, created) = api.call(Method::POST, "/v1/projects/team/instances", Some(&alice), Some(body)).await;
    assert_eq!(status, 202, "{created}");
    let op = wait_done(&api, &alice, created["operation"]["id"].as_str().unwrap()).await;
    assert_eq!((op["state"].as_str(), op["error_code"].as_str()), (Some("failed"), Some("timeout")), "{op}");
    let message = op["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("ensure_on_host") && message.contains("agent is unreachable"), "{message}");
    assert!(message.contains("undoing step ensure_on_host was abandoned"), "{message}");
    let (_, instance) = api.call(Method::GET, "/v1/projects/team/instances/web-1", Some(&alice), None).await;
    assert_eq!(instance["state"], "failed", "{instance}");
    assert_eq!(reserved_vcpus(&api).await, 0, "the undo released the placement");
}

#[tokio::test]
async fn deleting_an_instance_cancels_its_create_and_undoes_it() {
    let ops = OperationsConfig { step_timeout_secs: 600, ..OperationsConfig::default() };
    let api = serve_api_with(Some(ops)).await;
    let p = project(&api.pool, "team").await;
    let alice = user_with_token(&api.pool, "alice", false, &[(p, Role::Admin)]).await;
    let body = json!({"name": "web-1", "image": "img", "vcpus": 1, "memory_mib": 256});
    let (_, created) = api.call(Method::POST, "/v1/projects/team/instances", Some(&alice), Some(body)).await;
    let create = created["operation"]["id"].as_str().unwrap().to_owned();
    // The create is stuck retrying its agent call; the customer gives up and deletes.
    let deadline = Instant::now() + Duration::from_secs(30);
    while reserved_vcpus(&api).await == 0 {
        assert!(Instant::now() < deadline, "the create was never placed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its host dies meanwhile, so neither the create's undo nor the delete can call it: both
    // go on without it (the host destroys what it no longer owns if it ever returns).
    sqlx::query("UPDATE hosts SET state = 'dead'").execute(&api.pool).await.unwrap();
    let (status, deleted) = api.call(Method::DELETE, "/v1/projects/team/instances/web-1", Some(&alice), None).await;
    assert_eq!(status, 202, "a create in progress can be cancelled: {deleted}");
    let create = wait_done(&api, &alice, &create).await;
    assert_eq!((create["state"].as_str(), create["error_code"].as_str()), (Some("cancelled"), Some("cancelled")));
    let delete = wait_done(&api, &alice, deleted["operation"]["id"].as_str().unwrap()).await;
    assert_eq!(delete["state"], "succeeded", "{delete}");
    let (status, _) = api.call(Method::GET, "/v1/projects/team/instances/web-1", Some(&alice), None).await;
    assert_eq!(status, 404);
    assert_eq!(reserved_vcpus(&api).await, 0, "nothing stays reserved");
    let addresses: i64 = sqlx::query_scalar("SELECT count(*) FROM ip_allocations").fetch_one(&api.pool).await.unwrap();
    assert_eq!(addresses, 0, "no address stays allocated");
}
