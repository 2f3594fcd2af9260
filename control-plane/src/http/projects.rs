//! `/v1/projects`: the caller's projects, creating one, and how every project-scoped route finds
//! its project ([`resolve_project`]).
//!
//! ```text
//! GET  /v1/projects             the caller's projects with the caller's role (paginated)
//! POST /v1/projects             create one; any authenticated user; the creator is its admin
//! GET  /v1/projects/{project}   one of them, by name or id
//! ```
//! Resources live under `/v1/projects/{project}/…`, where `{project}` is the project's name or
//! id (a UUID is always taken as an id; names can never be UUIDs). A project the caller is not a
//! member of is a 404 exactly like one that does not exist, on every route; a member whose role
//! is too low gets a 403. Operators are not implicitly members.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::json::{self, Json};
use super::pagination::{Page, PageParams, PageRequest};
use crate::App;
use crate::auth::{Caller, Role};
use crate::db::identity::{self, IdentityError, Project};
use crate::db::projects as db;
use crate::ids::ProjectId;

/// The longest project description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;

/// The routes of this module, for the API router to merge.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/projects", get(project_list).post(project_create))
        .route("/v1/projects/{project}", get(project_get))
}

/// The project named or identified by `key`, if the caller's role in it is at least `min`:
/// 404 `not_found` when it does not exist or the caller is not a member, 403 `forbidden` when
/// the caller's role is too low. Every `/v1/projects/{project}/…` handler starts here.
pub async fn resolve_project(pool: &PgPool, caller: &Caller, key: &str, min: Role) -> Result<ProjectId, ApiError> {
    Ok(resolve_project_with_role(pool, caller, key, min).await?.0)
}

/// [`resolve_project`], also returning the caller's role in the project.
pub async fn resolve_project_with_role(
    pool: &PgPool,
    caller: &Caller,
    key: &str,
    min: Role,
) -> Result<(ProjectId, Role), ApiError> {
    let id = match uuid::Uuid::parse_str(key) {
        Ok(id) => ProjectId(id),
        Err(_) => db::project_id_by_name(pool, key)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::not_found("no such project"))?,
    };
    let role = caller.require_role(pool, id, min).await?;
    Ok((id, role))
}

/// `POST /v1/projects`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectCreateParams {
    /// A DNS label, unique in the whole cloud.
    pub name: String,
    /// Free text, at most 1024 characters, one line.
    #[serde(default)]
    pub description: String,
}

/// A project, as one of its members sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectView {
    pub id: ProjectId,
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
    /// The caller's role in the project.
    pub role: Role,
}

impl ProjectView {
    fn new(project: Project, role: Role) -> Self {
        Self {
            id: project.id,
            name: project.name,
            description: project.description,
            created_at: project.created_at,
            role,
        }
    }
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
    let rows = db::project_list_for_user_page(&app.pool, caller.user_id, page.after, page.fetch_limit())
        .await
        .map_err(store_error)?;
    let page = Page::from_rows(rows, &page, |r| (r.project.created_at, r.project.id.0));
    Ok(Json(page.map(|r| ProjectView::new(r.project, r.role))))
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
    json::require_dns_label("name", &params.name)?;
    json::require_plain_text("description", &params.description, MAX_DESCRIPTION_CHARS)?;
    let mut tx = super::db_tx(&app).await?;
    let project = identity::project_create(&mut *tx, ProjectId::new(), &params.name, &params.description)
        .await
        .map_err(store_error)?;
    identity::project_member_add(&mut *tx, project.id, caller.user_id, Role::Admin).await.map_err(store_error)?;
    tx.commit().await.map_err(|e| ApiError::internal(&e))?;
    tracing::info!(project_id = %project.id, name = %project.name, user_id = %caller.user_id, "project created");
    Ok((StatusCode::CREATED, Json(ProjectView::new(project, Role::Admin))))
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
    let (id, role) = resolve_project_with_role(&app.pool, &caller, &project, Role::Viewer).await?;
    let project = db::project_get_unchecked(&app.pool, id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("no such project"))?;
    Ok(Json(ProjectView::new(project, role)))
}

/// 409 for a taken name, 500 (logged) for anything else.
fn store_error(err: IdentityError) -> ApiError {
    match &err {
        IdentityError::AlreadyExists { .. } => ApiError::conflict(err.to_string()),
        IdentityError::UnknownRole { .. } | IdentityError::Query(_) => ApiError::internal(&err),
    }
}
