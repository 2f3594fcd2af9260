//! Instances: create, list, get, start, stop, reboot, delete. Every change is a durable
//! operation (202 with the operation); `Idempotency-Key` makes retries return the same one.
//! The logic is [`crate::app::instances`]; DR policies (`PUT|DELETE …/dr-policy`) are
//! [`crate::app::recovery`].

use std::sync::Arc;

use axum::extract::State;

use super::extract::{IdempotencyKey, Path, Query};
use super::pagination::{Page, PageParams, PageRequest};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use crate::app::App;
use crate::app::instances::{self as app, Change, InstanceAccepted, InstanceCreateParams};
use crate::auth::Caller;
use crate::db::instances::InstanceRow;
use crate::states::InstanceState;

/// Routes of this module.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/projects/{project}/instances", post(instance_create).get(instance_list))
        .route("/v1/projects/{project}/instances/{instance}", get(instance_get).delete(instance_delete))
        .route("/v1/projects/{project}/instances/{instance}/wait", get(instance_wait))
        .route("/v1/projects/{project}/instances/{instance}/start", post(instance_start))
        .route("/v1/projects/{project}/instances/{instance}/stop", post(instance_stop))
        .route("/v1/projects/{project}/instances/{instance}/reboot", post(instance_reboot))
        .route("/v1/projects/{project}/instances/{instance}/suspend", post(instance_suspend))
        .route("/v1/projects/{project}/instances/{instance}/dr-policy", put(dr_policy_set).delete(dr_policy_clear))
}

/// Gives an instance a disaster-recovery policy: when its host dies, it is restored on a
/// healthy host from its latest snapshot (same id, name and SSH keys; a new address), highest
/// priority first. Returns the instance.
#[utoipa::path(put, path = "/v1/projects/{project}/instances/{instance}/dr-policy", tag = "instances",
    security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id"),
        ("instance" = String, Path, description = "The instance's name or id")),
    request_body = crate::app::recovery::DrPolicyParams,
    responses((status = 200, body = InstanceRow), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn dr_policy_set(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, instance)): Path<(String, String)>,
    super::json::Json(params): super::json::Json<crate::app::recovery::DrPolicyParams>,
) -> Result<Json<InstanceRow>, ApiError> {
    Ok(Json(crate::app::recovery::policy_set(&app, &caller, &project, &instance, params).await?))
}

/// Removes an instance's disaster-recovery policy (204; 404 when it had none).
#[utoipa::path(delete, path = "/v1/projects/{project}/instances/{instance}/dr-policy", tag = "instances",
    security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id"),
        ("instance" = String, Path, description = "The instance's name or id")),
    responses((status = 204, description = "Removed"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn dr_policy_clear(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, instance)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    crate::app::recovery::policy_clear(&app, &caller, &project, &instance).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A page of instances.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceList {
    pub items: Vec<InstanceRow>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// List filters (besides paging).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstanceFilter {
    /// Only instances in this state.
    pub state: Option<InstanceState>,
}

/// Creates an instance (202 with the `instance_create` operation).
#[utoipa::path(post, path = "/v1/projects/{project}/instances", tag = "instances", security(("bearer" = [])), request_body = InstanceCreateParams,
    params(("project" = String, Path, description = "Project name or id"),
           IdempotencyKey),
    responses((status = 202, body = InstanceAccepted), (status = 404, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody),
              (status = 503, body = super::error::ErrorBody, description = "`no_capacity`: no host fits; the message says why")))]
pub async fn instance_create(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(project): Path<String>,
    key: IdempotencyKey,
    super::json::Json(params): super::json::Json<InstanceCreateParams>,
) -> Result<(StatusCode, Json<InstanceAccepted>), ApiError> {
    let accepted = app::create(&app, &caller, &project, params, key.key.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Lists the project's live instances, oldest first.
#[utoipa::path(get, path = "/v1/projects/{project}/instances", tag = "instances", security(("bearer" = [])),
    params(("project" = String, Path, description = "Project name or id"), InstanceFilter, PageParams),
    responses((status = 200, body = InstanceList), (status = 404, body = super::error::ErrorBody)))]
pub async fn instance_list(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(project): Path<String>,
    Query(filter): Query<InstanceFilter>,
    page: PageRequest,
) -> Result<Json<InstanceList>, ApiError> {
    let items = app::list(&app, &caller, &project, filter.state, page.window()).await?;
    let Page { items, next_cursor } = Page::from_rows(items, &page, |i| (i.created_at, i.id.0));
    Ok(Json(InstanceList { items, next_cursor }))
}

/// One instance, by name or id.
#[utoipa::path(get, path = "/v1/projects/{project}/instances/{instance}", tag = "instances", security(("bearer" = [])),
    params(("project" = String, Path), ("instance" = String, Path, description = "Instance name or id")),
    responses((status = 200, body = InstanceRow), (status = 404, body = super::error::ErrorBody)))]
pub async fn instance_get(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, instance)): Path<(String, String)>,
) -> Result<Json<InstanceRow>, ApiError> {
    Ok(Json(app::get(&app, &caller, &project, &instance).await?))
}

/// How long and for what to wait.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InstanceWaitQuery {
    /// `ready` (default: running and its guest reachable) or `running`.
    pub until: Option<app::WaitUntil>,
    /// Seconds to wait at most (0 to 60, default 30); the instance is returned as it is then.
    #[param(minimum = 0, maximum = 60)]
    pub timeout_secs: Option<u64>,
}

/// Waits until the instance runs (and its guest is ready, unless `until=running`), or is in a
/// state it will not get there from by itself (check `state`), or the timeout passes; returns it.
#[utoipa::path(get, path = "/v1/projects/{project}/instances/{instance}/wait", tag = "instances", security(("bearer" = [])),
    params(("project" = String, Path), ("instance" = String, Path, description = "Instance name or id"),
        InstanceWaitQuery),
    responses((status = 200, body = InstanceRow), (status = 404, body = super::error::ErrorBody)))]
pub async fn instance_wait(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, instance)): Path<(String, String)>,
    Query(q): Query<InstanceWaitQuery>,
) -> Result<Json<InstanceRow>, ApiError> {
    let timeout = super::operations::wait_timeout(q.timeout_secs)?;
    Ok(Json(app::wait(&app, &caller, &project, &instance, q.until.unwrap_or_default(), timeout).await?))
}

async fn change(
    app: &App,
    caller: &Caller,
    (project, instance): (String, String),
    key: IdempotencyKey,
    change: Change,
) -> Result<(StatusCode, Json<InstanceAccepted>), ApiError> {
    let accepted = app::change(app, caller, &project, &instance, change, key.key.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Starts a stopped instance, or resumes a suspended one (on the host that holds its state).
#[utoipa::path(post, path = "/v1/projects/{project}/instances/{instance}/start", tag = "instances", security(("bearer" = [])),
    params(("project" = String, Path), ("instance" = String, Path), IdempotencyKey),
    responses((status = 202, body = InstanceAccepted), (status = 409, body = super::error::ErrorBody)))]
pub async fn instance_start(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    key: IdempotencyKey,
) -> Result<(StatusCode, Json<InstanceAccepted>), ApiError> {
    change(&app, &caller, path, key, Change::Start).await
}

/// Stops a running instance (ACPI shutdown, forced after a timeout).
#[utoipa::path(post, path = "/v1/projects/{project}/instances/{instance}/stop", tag = "instances", security(("bearer" = [])),
    params(("project" = String, Path), ("instance" = String, Path), IdempotencyKey),
    responses((status = 202, body = InstanceAccepted), (status = 409, body = super::error::ErrorBody)))]
pub async fn instance_stop(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    key: IdempotencyKey,
) -> Result<(StatusCode, Json<InstanceAccepted>), ApiError> {
    change(&app, &caller, path, key, Change::Stop).await
}

/// Reboots a running instance.
#[utoipa::path(post, path = "/v1/projects/{project}/instances/{instance}/reboot", tag = "instances", security(("bearer" = [])),
    params(("project" = String, Path), ("instance" = String, Path), IdempotencyKey),
    responses((status = 202, body = InstanceAccepted), (status = 409, body = super::error::ErrorBody)))]
pub async fn instance_reboot(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    key: IdempotencyKey,
) -> Result<(StatusCode, Json<InstanceAccepted>), ApiError> {
    change(&app, &caller, path, key, Change::Reboot).await
}

/// Suspends a running instance: its memory, devices and disks are saved on its host and its
/// vCPUs and memory freed (it keeps its address); `start` resumes it where it was, on that host.
#[utoipa::path(post, path = "/v1/projects/{project}/instances/{instance}/suspend", tag = "instances", security(("bearer" = [])),
    params(("project" = String, Path), ("instance" = String, Path), IdempotencyKey),
    responses((status = 202, body = InstanceAccepted), (status = 409, body = super::error::ErrorBody)))]
pub async fn instance_suspend(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    key: IdempotencyKey,
) -> Result<(StatusCode, Json<InstanceAccepted>), ApiError> {
    change(&app, &caller, path, key, Change::Suspend).await
}

/// Deletes an instance: its VM, address and capacity are freed.
#[utoipa::path(delete, path = "/v1/projects/{project}/instances/{instance}", tag = "instances", security(("bearer" = [])),
    params(("project" = String, Path), ("instance" = String, Path), IdempotencyKey),
    responses((status = 202, body = InstanceAccepted), (status = 409, body = super::error::ErrorBody)))]
pub async fn instance_delete(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    key: IdempotencyKey,
) -> Result<(StatusCode, Json<InstanceAccepted>), ApiError> {
    change(&app, &caller, path, key, Change::Delete).await
}
