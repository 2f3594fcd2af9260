//! Operations: get one, wait for one to finish (long poll), list a project's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use crate::app::App;
use crate::auth::{Caller, Role};
use crate::db::operations::{self as db, OperationRow};
use crate::ids::OperationId;

/// Routes of this module.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/operations/{id}", get(operation_get))
        .route("/v1/operations/{id}/wait", get(operation_wait))
        .route("/v1/projects/{project}/operations", get(operation_list))
}

/// Longest a wait may block.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Finished states.
fn finished(op: &OperationRow) -> bool {
    op.state.is_finished()
}

async fn visible(app: &App, caller: &Caller, id: OperationId) -> Result<OperationRow, ApiError> {
    let mut conn = super::db_conn(app).await?;
    let op = db::operation_get(&mut conn, id).await.map_err(|e| ApiError::internal(&e))?;
    let not_found = || ApiError::not_found(format!("no operation {id}"));
    let op = op.ok_or_else(not_found)?;
    match op.project_id {
        Some(project) => {
            // Not a member of its project: as if it did not exist.
            caller.require_role(&app.pool, project, Role::Viewer).await.map_err(|_| not_found())?;
        }
        None => caller.require_operator().map_err(|_| not_found())?,
    }
    Ok(op)
}

/// One operation.
#[utoipa::path(get, path = "/v1/operations/{id}", tag = "operations", params(("id" = OperationId, Path)),
    responses((status = 200, body = OperationRow), (status = 404, body = super::error::ErrorBody)))]
pub async fn operation_get(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<OperationId>,
) -> Result<Json<OperationRow>, ApiError> {
    Ok(Json(visible(&app, &caller, id).await?))
}

/// How long to wait.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Seconds to wait at most (1 to 60, default 30); the operation is returned as it is then.
    pub timeout_secs: Option<u64>,
}

/// Waits until the operation finishes or the timeout passes, then returns it (check `state`).
#[utoipa::path(get, path = "/v1/operations/{id}/wait", tag = "operations", params(("id" = OperationId, Path), WaitQuery),
    responses((status = 200, body = OperationRow), (status = 404, body = super::error::ErrorBody)))]
pub async fn operation_wait(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<OperationId>,
    Query(q): Query<WaitQuery>,
) -> Result<Json<OperationRow>, ApiError> {
    let timeout = Duration::from_secs(q.timeout_secs.unwrap_or(30)).clamp(Duration::from_secs(1), MAX_WAIT);
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(50);
    loop {
        let op = visible(&app, &caller, id).await?;
        if finished(&op) || Instant::now() >= deadline {
            return Ok(Json(op));
        }
        tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// A page of operations.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationList {
    pub items: Vec<OperationRow>,
    pub next_cursor: Option<String>,
}

/// Paging.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OperationListQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// The project's operations, newest first.
#[utoipa::path(get, path = "/v1/projects/{project}/operations", tag = "operations",
    params(("project" = String, Path), OperationListQuery),
    responses((status = 200, body = OperationList), (status = 404, body = super::error::ErrorBody)))]
pub async fn operation_list(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(project): Path<String>,
    Query(q): Query<OperationListQuery>,
) -> Result<Json<OperationList>, ApiError> {
    let project = crate::app::projects::resolve(&app, &caller, &project, Role::Viewer).await?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let after = q.cursor.as_deref().map(super::pagination::decode_cursor).transpose()?;
    let after = after.map(|(at, id)| (at, OperationId::from(id)));
    let mut conn = super::db_conn(&app).await?;
    let items = db::operation_list(&mut conn, project, after, limit + 1).await.map_err(|e| ApiError::internal(&e))?;
    let (items, next_cursor) = super::pagination::split_page(items, limit, |o| (o.created_at, o.id.0));
    Ok(Json(OperationList { items, next_cursor }))
}
