//! `/v1/projects`: the caller's projects and creating one (the logic: [`crate::app::projects`]).
//!
//! ```text
//! GET  /v1/projects             the caller's projects with the caller's role (paginated)
//! POST /v1/projects             create one; any authenticated user; the creator is its admin
//! GET  /v1/projects/{project}   one of them, by name or id
//! GET  /v1/projects/{project}/quotas   its quotas and usage (members; operators: any)
//! PUT  /v1/projects/{project}/quotas   sets its own quotas (operators)
//! ```
//! Resources live under `/v1/projects/{project}/…`, where `{project}` is the project's name or
//! id (a UUID is always taken as an id; names can never be UUIDs). A project the caller is not a
//! member of is a 404 exactly like one that does not exist, on every route; a member whose role
//! is too low gets a 403. Operators are not implicitly members.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;

use super::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;

use super::error::{ApiError, ErrorBody};
use super::json::Json;
use super::pagination::{Page, PageParams, PageRequest};
use crate::app::App;
use crate::app::projects::{self as app, ProjectCreateParams, ProjectView, QuotasView};
use crate::auth::Caller;

/// The routes of this module, for the API router to merge.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/projects", get(project_list).post(project_create))
        .route("/v1/projects/{project}", get(project_get))
        .route("/v1/projects/{project}/quotas", get(project_quotas_get).put(project_quotas_set))
}

/// A page of projects.
pub type ProjectList = Page<ProjectView>;

/// The caller's projects, oldest first.
#[utoipa::path(get, path = "/v1/projects", tag = "projects", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = Page<ProjectView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn project_list(
    State(app): State<Arc<App>>,
    caller: Caller,
    page: PageRequest,
) -> Result<Json<ProjectList>, ApiError> {
    let rows = app::list(&app, &caller, page.window()).await?;
    Ok(Json(Page::from_rows(rows, &page, |p| (p.created_at, p.id.0))))
}

/// Creates a project; the caller becomes its admin.
#[utoipa::path(post, path = "/v1/projects", tag = "projects", security(("bearer" = [])),
    request_body = ProjectCreateParams,
    responses((status = 201, body = ProjectView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn project_create(
    State(app): State<Arc<App>>,
    caller: Caller,
    Json(params): Json<ProjectCreateParams>,
) -> Result<(StatusCode, Json<ProjectView>), ApiError> {
    Ok((StatusCode::CREATED, Json(app::create(&app, &caller, params).await?)))
}

/// One of the caller's projects, by name or id.
#[utoipa::path(get, path = "/v1/projects/{project}", tag = "projects", security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id")),
    responses((status = 200, body = ProjectView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn project_get(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(project): Path<String>,
) -> Result<Json<ProjectView>, ApiError> {
    Ok(Json(app::get(&app, &caller, &project).await?))
}

/// A project's quotas (0: no limit) and what it holds now.
#[utoipa::path(get, path = "/v1/projects/{project}/quotas", tag = "projects", security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id")),
    responses((status = 200, body = QuotasView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn project_quotas_get(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(project): Path<String>,
) -> Result<Json<QuotasView>, ApiError> {
    Ok(Json(app::quotas_get(&app, &caller, &project).await?))
}

/// Sets a project's own quotas (operators); each one left out takes the default again.
#[utoipa::path(put, path = "/v1/projects/{project}/quotas", tag = "projects", security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id")),
    request_body = crate::quotas::Settable,
    responses((status = 200, body = QuotasView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn project_quotas_set(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(project): Path<String>,
    Json(quotas): Json<crate::quotas::Settable>,
) -> Result<Json<QuotasView>, ApiError> {
    Ok(Json(app::quotas_set(&app, &caller, &project, quotas).await?))
}
