//! Project members and fleet operators (the logic: [`crate::app::members`]).
//!
//! ```text
//! GET    /v1/projects/{project}/members          the members (any member)
//! POST   /v1/projects/{project}/members          add one by id, name, e-mail or subject (admins)
//! PATCH  /v1/projects/{project}/members/{user}   change a member's role (admins)
//! DELETE /v1/projects/{project}/members/{user}   remove one (admins; anyone may leave)
//! PUT    /v1/users/{user}/operator               make a user an operator (operators)
//! DELETE /v1/users/{user}/operator               revoke it (operators)
//! ```
//! The last admin of a project, and the last operator, cannot be removed or demoted (409).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;

use super::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, patch, put};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::json::Json;
use crate::app::App;
use crate::app::members::{self as app, MemberAddParams, MemberSetParams};
use crate::auth::Caller;
use crate::db::identity::{Member, User};

/// The routes of this module, for the API router to merge.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/projects/{project}/members", get(member_list).post(member_add))
        .route("/v1/projects/{project}/members/{user}", patch(member_set).delete(member_remove))
        .route("/v1/users/{user}/operator", put(operator_grant).delete(operator_revoke))
}

/// A project's members.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    pub items: Vec<Member>,
}

/// The project's members, by name.
#[utoipa::path(get, path = "/v1/projects/{project}/members", tag = "members", security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id")),
    responses((status = 200, body = MemberList), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn member_list(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(project): Path<String>,
) -> Result<Json<MemberList>, ApiError> {
    Ok(Json(MemberList { items: app::list(&app, &caller, &project).await? }))
}

/// Adds a member: 201, or 200 when they already are one with that role; 409 with another role.
#[utoipa::path(post, path = "/v1/projects/{project}/members", tag = "members", security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id")),
    request_body = MemberAddParams,
    responses((status = 201, body = Member), (status = 200, body = Member), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn member_add(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(project): Path<String>,
    Json(params): Json<MemberAddParams>,
) -> Result<(StatusCode, Json<Member>), ApiError> {
    let (member, new) = app::add(&app, &caller, &project, params).await?;
    Ok((if new { StatusCode::CREATED } else { StatusCode::OK }, Json(member)))
}

/// Changes a member's role (the last admin stays one: 409).
#[utoipa::path(patch, path = "/v1/projects/{project}/members/{user}", tag = "members", security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id"),
        ("user" = String, Path, description = "The member's user id, name, e-mail address or subject", min_length = 1, max_length = 254, pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$")),
    request_body = MemberSetParams,
    responses((status = 200, body = Member), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn member_set(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, user)): Path<(String, String)>,
    Json(params): Json<MemberSetParams>,
) -> Result<Json<Member>, ApiError> {
    Ok(Json(app::set_role(&app, &caller, &project, &user, params).await?))
}

/// Removes a member (the last admin stays: 409); 404 when they are none.
#[utoipa::path(delete, path = "/v1/projects/{project}/members/{user}", tag = "members", security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id"),
        ("user" = String, Path, description = "The member's user id, name, e-mail address or subject", min_length = 1, max_length = 254, pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$")),
    responses((status = 204, description = "Removed"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn member_remove(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    app::remove(&app, &caller, &project, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Makes a user an operator (idempotent).
#[utoipa::path(put, path = "/v1/users/{user}/operator", tag = "members", security(("bearer" = [])),
    params(("user" = String, Path, description = "The user's id, name, e-mail address or subject", min_length = 1, max_length = 254, pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$")),
    responses((status = 200, body = User), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn operator_grant(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(user): Path<String>,
) -> Result<Json<User>, ApiError> {
    Ok(Json(app::set_operator(&app, &caller, &user, true).await?))
}

/// Revokes a user's operator role (idempotent; the last operator stays one: 409).
#[utoipa::path(delete, path = "/v1/users/{user}/operator", tag = "members", security(("bearer" = [])),
    params(("user" = String, Path, description = "The user's id, name, e-mail address or subject", min_length = 1, max_length = 254, pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$")),
    responses((status = 200, body = User), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn operator_revoke(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(user): Path<String>,
) -> Result<Json<User>, ApiError> {
    Ok(Json(app::set_operator(&app, &caller, &user, false).await?))
}
