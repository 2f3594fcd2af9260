//! Operations: get one, wait for one to finish (long poll), list a project's. The logic is
//! [`crate::app::operations`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use crate::app::operations as app;
use crate::app::{App, Window};
use crate::auth::Caller;
use crate::db::operations::OperationRow;
use crate::ids::OperationId;

/// Routes of this module.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/operations/{id}", get(operation_get))
        .route("/v1/operations/{id}/wait", get(operation_wait))
        .route("/v1/projects/{project}/operations", get(operation_list))
}

/// One operation.
#[utoipa::path(get, path = "/v1/operations/{id}", tag = "operations", params(("id" = OperationId, Path)),
    responses((status = 200, body = OperationRow), (status = 404, body = super::error::ErrorBody)))]
pub async fn operation_get(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<OperationId>,
) -> Result<Json<OperationRow>, ApiError> {
    Ok(Json(app::get(&app, &caller, id).await?))
}

/// How long to wait.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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
    let timeout = Duration::from_secs(q.timeout_secs.unwrap_or(30));
    Ok(Json(app::wait(&app, &caller, id, timeout).await?))
}

/// A page of operations.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationList {
    pub items: Vec<OperationRow>,
    pub next_cursor: Option<String>,
}

/// Paging.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let after = q.cursor.as_deref().map(super::pagination::decode_cursor).transpose()?;
    let items = app::list(&app, &caller, &project, Window { after, fetch: limit + 1 }).await?;
    let (items, next_cursor) = super::pagination::split_page(items, limit, |o| (o.created_at, o.id.0));
    Ok(Json(OperationList { items, next_cursor }))
}
