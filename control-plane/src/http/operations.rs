//! Operations: get one, wait for one to finish (long poll), list a project's. The logic is
//! [`crate::app::operations`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;

use super::extract::{Path, Query};
use super::pagination::{Page, PageParams, PageRequest};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use crate::app::App;
use crate::app::operations as app;
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
#[utoipa::path(get, path = "/v1/operations/{id}", tag = "operations", security(("bearer" = [])), params(("id" = OperationId, Path)),
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
    /// Seconds to wait at most (0 to 60, default 30); the operation is returned as it is then.
    #[param(minimum = 0, maximum = 60)]
    pub timeout_secs: Option<u64>,
}

/// Waits until the operation finishes or the timeout passes, then returns it (check `state`).
#[utoipa::path(get, path = "/v1/operations/{id}/wait", tag = "operations", security(("bearer" = [])), params(("id" = OperationId, Path), WaitQuery),
    responses((status = 200, body = OperationRow), (status = 404, body = super::error::ErrorBody)))]
pub async fn operation_wait(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<OperationId>,
    Query(q): Query<WaitQuery>,
) -> Result<Json<OperationRow>, ApiError> {
    let timeout = wait_timeout(q.timeout_secs)?;
    Ok(Json(app::wait(&app, &caller, id, timeout).await?))
}

/// `?timeout_secs=` of a wait: 30 s when absent, at most [`MAX_WAIT`](crate::app::operations::MAX_WAIT).
pub(super) fn wait_timeout(secs: Option<u64>) -> Result<Duration, ApiError> {
    let max = crate::app::operations::MAX_WAIT;
    match secs {
        None => Ok(Duration::from_secs(30)),
        Some(secs) if secs <= max.as_secs() => Ok(Duration::from_secs(secs)),
        Some(secs) => Err(ApiError::invalid(format!("timeout_secs: at most {}, not {secs}", max.as_secs()))),
    }
}

/// A page of operations.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationList {
    pub items: Vec<OperationRow>,
    pub next_cursor: Option<String>,
}

/// The project's operations, newest first.
#[utoipa::path(get, path = "/v1/projects/{project}/operations", tag = "operations", security(("bearer" = [])),
    params(("project" = String, Path), PageParams),
    responses((status = 200, body = OperationList), (status = 404, body = super::error::ErrorBody)))]
pub async fn operation_list(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(project): Path<String>,
    page: PageRequest,
) -> Result<Json<OperationList>, ApiError> {
    let items = app::list(&app, &caller, &project, page.window()).await?;
    let Page { items, next_cursor } = Page::from_rows(items, &page, |o| (o.created_at, o.id.0));
    Ok(Json(OperationList { items, next_cursor }))
}
