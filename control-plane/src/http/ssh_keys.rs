//! `/v1/projects/{project}/ssh-keys`: the public keys a project injects into its instances
//! (cloud-init `ssh_authorized_keys` on the config drive).
//!
//! ```text
//! GET    /v1/projects/{project}/ssh-keys          the project's keys (viewer; paginated)
//! POST   /v1/projects/{project}/ssh-keys          add one (member) → 201 with its fingerprint
//! GET    /v1/projects/{project}/ssh-keys/{key}    one key, by name or id (viewer)
//! DELETE /v1/projects/{project}/ssh-keys/{key}    remove it (member) → 204; 404 when it does
//!                                                 not exist (a retried delete sees 404);
//!                                                 409 while an instance uses it
//! ```
//! The logic is [`crate::app::ssh_keys`].

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
use crate::app::ssh_keys::{self as app, SshKeyCreateParams, SshKeyView};
use crate::auth::Caller;

/// The routes of this module, for the API router to merge.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/projects/{project}/ssh-keys", get(ssh_key_list).post(ssh_key_create))
        .route("/v1/projects/{project}/ssh-keys/{key}", get(ssh_key_get).delete(ssh_key_delete))
}

/// A page of SSH keys.
pub type SshKeyList = Page<SshKeyView>;

/// The project's SSH keys, oldest first.
#[utoipa::path(get, path = "/v1/projects/{project}/ssh-keys", tag = "ssh-keys", security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id"), PageParams),
    responses((status = 200, body = Page<SshKeyView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn ssh_key_list(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(project): Path<String>,
    page: PageRequest,
) -> Result<Json<SshKeyList>, ApiError> {
    let rows = app::list(&app, &caller, &project, page.window()).await?;
    Ok(Json(Page::from_rows(rows, &page, |k| (k.created_at, k.id.0))))
}

/// Adds an SSH public key to the project.
#[utoipa::path(post, path = "/v1/projects/{project}/ssh-keys", tag = "ssh-keys", security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id")),
    request_body = SshKeyCreateParams,
    responses((status = 201, body = SshKeyView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn ssh_key_create(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(project): Path<String>,
    Json(params): Json<SshKeyCreateParams>,
) -> Result<(StatusCode, Json<SshKeyView>), ApiError> {
    Ok((StatusCode::CREATED, Json(app::create(&app, &caller, &project, params).await?)))
}

/// One SSH key of the project, by name or id.
#[utoipa::path(get, path = "/v1/projects/{project}/ssh-keys/{key}", tag = "ssh-keys", security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id"),
        ("key" = String, Path, description = "The key's name or id")),
    responses((status = 200, body = SshKeyView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn ssh_key_get(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, key)): Path<(String, String)>,
) -> Result<Json<SshKeyView>, ApiError> {
    Ok(Json(app::get(&app, &caller, &project, &key).await?))
}

/// Deletes an SSH key of the project: 404 when there is none (so a retry after a success is a
/// 404 too), 409 while an instance uses it.
#[utoipa::path(delete, path = "/v1/projects/{project}/ssh-keys/{key}", tag = "ssh-keys", security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id"),
        ("key" = String, Path, description = "The key's name or id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn ssh_key_delete(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    app::delete(&app, &caller, &project, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
