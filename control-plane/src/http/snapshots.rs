//! `/v1/projects/{project}/snapshots`: snapshots of the project's instances. The logic is
//! [`crate::app::snapshots`].
//!
//! ```text
//! POST   /v1/projects/{project}/snapshots              take one (member) → 202 with the operation
//! GET    /v1/projects/{project}/snapshots[?instance=]  the project's snapshots (viewer; paginated)
//! GET    /v1/projects/{project}/snapshots/{snapshot}   one, by name or id (viewer)
//! DELETE /v1/projects/{project}/snapshots/{snapshot}   delete it (member) → 202 with the operation
//! POST   /v1/projects/{project}/snapshots/{snapshot}/restore   a new instance from it (member)
//!                                                 → 202 with the `instance_restore` operation
//! POST   /v1/projects/{project}/snapshots/{snapshot}/image     an image of its root disk (member)
//! PUT|GET|DELETE /v1/projects/{project}/instances/{instance}/snapshot-policy
//!                                                 scheduled snapshots of an instance
//! ```

use std::sync::Arc;

use axum::Router;
use axum::extract::State;

use super::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use serde::Deserialize;

use super::error::{ApiError, ErrorBody};
use super::json::Json;
use super::pagination::{Page, PageParams, PageRequest};
use crate::app::App;
use crate::app::instances::{InstanceAccepted, InstanceRestoreParams};
use crate::app::snapshots::{self as app, SnapshotAccepted, SnapshotCreateParams, SnapshotPolicyParams};
use crate::auth::Caller;
use crate::db::snapshot_policies::SnapshotPolicyRow;
use crate::db::snapshots::SnapshotRow;

/// The routes of this module, for the API router to merge.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/projects/{project}/snapshots", get(snapshot_list).post(snapshot_create))
        .route("/v1/projects/{project}/snapshots/{snapshot}", get(snapshot_get).delete(snapshot_delete))
        .route("/v1/projects/{project}/snapshots/{snapshot}/restore", post(snapshot_restore))
        .route("/v1/projects/{project}/snapshots/{snapshot}/image", post(snapshot_image))
        .route(
            "/v1/projects/{project}/instances/{instance}/snapshot-policy",
            put(snapshot_policy_set).get(snapshot_policy_get).delete(snapshot_policy_clear),
        )
}

/// A page of snapshots.
pub type SnapshotList = Page<SnapshotRow>;

/// List filters (besides paging).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SnapshotFilter {
    /// Only the snapshots of this instance (name or id).
    pub instance: Option<String>,
}

/// Takes a snapshot of an instance, with its memory state if `memory` (202 with the
/// `snapshot_create` operation; the snapshot is `available` when it succeeds).
#[utoipa::path(post, path = "/v1/projects/{project}/snapshots", tag = "snapshots", security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id")),
    request_body = SnapshotCreateParams,
    responses((status = 202, body = SnapshotAccepted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn snapshot_create(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(project): Path<String>,
    Json(params): Json<SnapshotCreateParams>,
) -> Result<(StatusCode, Json<SnapshotAccepted>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(app::create(&app, &caller, &project, params).await?)))
}

/// The project's snapshots (of one instance if asked), oldest first.
#[utoipa::path(get, path = "/v1/projects/{project}/snapshots", tag = "snapshots", security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id"), SnapshotFilter, PageParams),
    responses((status = 200, body = Page<SnapshotRow>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn snapshot_list(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(project): Path<String>,
    Query(filter): Query<SnapshotFilter>,
    page: PageRequest,
) -> Result<Json<SnapshotList>, ApiError> {
    let rows = app::list(&app, &caller, &project, filter.instance.as_deref(), page.window()).await?;
    Ok(Json(Page::from_rows(rows, &page, |s| (s.created_at, s.id.0))))
}

/// One snapshot of the project, by name or id.
#[utoipa::path(get, path = "/v1/projects/{project}/snapshots/{snapshot}", tag = "snapshots", security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id"),
        ("snapshot" = String, Path, description = "The snapshot's name or id")),
    responses((status = 200, body = SnapshotRow), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn snapshot_get(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, snapshot)): Path<(String, String)>,
) -> Result<Json<SnapshotRow>, ApiError> {
    Ok(Json(app::get(&app, &caller, &project, &snapshot).await?))
}

/// Deletes a snapshot and its files (202 with the `snapshot_delete` operation); 409 while it is
/// being taken.
#[utoipa::path(delete, path = "/v1/projects/{project}/snapshots/{snapshot}", tag = "snapshots", security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id"),
        ("snapshot" = String, Path, description = "The snapshot's name or id")),
    responses((status = 202, body = SnapshotAccepted), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn snapshot_delete(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, snapshot)): Path<(String, String)>,
) -> Result<(StatusCode, Json<SnapshotAccepted>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(app::delete(&app, &caller, &project, &snapshot).await?)))
}

/// Makes a project image of a snapshot's root disk, booting like the image the snapshotted
/// instance had (201 with the image).
#[utoipa::path(post, path = "/v1/projects/{project}/snapshots/{snapshot}/image", tag = "snapshots",
    security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id"),
        ("snapshot" = String, Path, description = "The snapshot's name or id")),
    request_body = crate::app::images::ImageFromSnapshotParams,
    responses((status = 201, body = crate::app::images::ImageView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn snapshot_image(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, snapshot)): Path<(String, String)>,
    Json(params): Json<crate::app::images::ImageFromSnapshotParams>,
) -> Result<(StatusCode, Json<crate::app::images::ImageView>), ApiError> {
    let image = crate::app::images::from_snapshot(&app, &caller, &project, &snapshot, params).await?;
    Ok((StatusCode::CREATED, Json(image)))
}

/// Restores a snapshot into a new instance on any host (202 with the `instance_restore`
/// operation); the instance boots from the snapshot's disks with a new address.
/// `Idempotency-Key` makes a retry return the same operation.
#[utoipa::path(post, path = "/v1/projects/{project}/snapshots/{snapshot}/restore", tag = "snapshots",
    security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id"),
        ("snapshot" = String, Path, description = "The snapshot's name or id"),
        super::extract::IdempotencyKey),
    request_body = InstanceRestoreParams,
    responses((status = 202, body = InstanceAccepted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn snapshot_restore(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, snapshot)): Path<(String, String)>,
    key: super::extract::IdempotencyKey,
    Json(params): Json<InstanceRestoreParams>,
) -> Result<(StatusCode, Json<InstanceAccepted>), ApiError> {
    let accepted =
        crate::app::instances::restore(&app, &caller, &project, &snapshot, params, key.key.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Snapshots an instance every `every_secs` while it runs and keeps the newest `keep` of those
/// scheduled snapshots (replaces the policy it had).
#[utoipa::path(put, path = "/v1/projects/{project}/instances/{instance}/snapshot-policy", tag = "snapshots",
    security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id"),
        ("instance" = String, Path, description = "The instance's name or id")),
    request_body = SnapshotPolicyParams,
    responses((status = 200, body = SnapshotPolicyRow), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn snapshot_policy_set(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, instance)): Path<(String, String)>,
    Json(params): Json<SnapshotPolicyParams>,
) -> Result<Json<SnapshotPolicyRow>, ApiError> {
    Ok(Json(app::policy_set(&app, &caller, &project, &instance, params).await?))
}

/// An instance's snapshot policy (404 when it has none).
#[utoipa::path(get, path = "/v1/projects/{project}/instances/{instance}/snapshot-policy", tag = "snapshots",
    security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id"),
        ("instance" = String, Path, description = "The instance's name or id")),
    responses((status = 200, body = SnapshotPolicyRow), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn snapshot_policy_get(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, instance)): Path<(String, String)>,
) -> Result<Json<SnapshotPolicyRow>, ApiError> {
    Ok(Json(app::policy_get(&app, &caller, &project, &instance).await?))
}

/// Removes an instance's snapshot policy; its scheduled snapshots stay (204; 404 when it had none).
#[utoipa::path(delete, path = "/v1/projects/{project}/instances/{instance}/snapshot-policy", tag = "snapshots",
    security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id"),
        ("instance" = String, Path, description = "The instance's name or id")),
    responses((status = 204, description = "Removed"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn snapshot_policy_clear(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, instance)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    app::policy_clear(&app, &caller, &project, &instance).await?;
    Ok(StatusCode::NO_CONTENT)
}
