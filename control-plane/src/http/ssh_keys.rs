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
//! A key is one OpenSSH `authorized_keys` line without options, checked strictly by
//! [`PublicKey::parse`] because it ends up in files inside guests; the stored text is
//! re-assembled from the parsed parts, single-spaced.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::json::{self, Json};
use super::pagination::{Page, PageParams, PageRequest};
use super::projects::resolve_project;
use crate::App;
use crate::auth::{Caller, Role};
use crate::db::ssh_keys::{self as db, NewSshKey, SshKeyRow, SshKeyStoreError};
use crate::ids::{ProjectId, SshKeyId, UserId};
use crate::openssh::PublicKey;

/// The routes of this module, for the API router to merge.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/projects/{project}/ssh-keys", get(ssh_key_list).post(ssh_key_create))
        .route("/v1/projects/{project}/ssh-keys/{key}", get(ssh_key_get).delete(ssh_key_delete))
}

/// `POST /v1/projects/{project}/ssh-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SshKeyCreateParams {
    /// A DNS label, unique in the project.
    pub name: String,
    /// One OpenSSH public key line, e.g. the contents of `~/.ssh/id_ed25519.pub`.
    pub public_key: String,
}

/// An SSH public key of a project.
#[derive(Debug, Serialize, ToSchema)]
pub struct SshKeyView {
    pub id: SshKeyId,
    pub project_id: ProjectId,
    pub name: String,
    /// `<type> <base64> [comment]`.
    pub public_key: String,
    /// `SHA256:<base64>`, as `ssh-keygen -l -f key.pub` prints it.
    pub fingerprint: String,
    /// Who added it (`null` once that user is deleted).
    pub created_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
}

impl From<SshKeyRow> for SshKeyView {
    fn from(row: SshKeyRow) -> Self {
        Self {
            id: row.id,
            project_id: row.project_id,
            name: row.name,
            public_key: row.public_key,
            fingerprint: row.fingerprint,
            created_by: row.user_id,
            created_at: row.created_at,
        }
    }
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
    let project = resolve_project(&app.pool, &caller, &project, Role::Viewer).await?;
    let mut conn = super::db_conn(&app).await?;
    let rows = db::ssh_key_list(&mut conn, project, page.after, page.fetch_limit()).await.map_err(store_error)?;
    Ok(Json(Page::from_rows(rows, &page, |r| (r.created_at, r.id.0)).map(SshKeyView::from)))
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
    let project = resolve_project(&app.pool, &caller, &project, Role::Member).await?;
    json::require_dns_label("name", &params.name)?;
    let key =
        PublicKey::parse(&params.public_key).map_err(|err| ApiError::unprocessable(format!("public_key: {err}")))?;
    let (public_key, fingerprint) = (key.to_openssh(), key.fingerprint());
    let new = NewSshKey {
        id: SshKeyId::new(),
        project_id: project,
        user_id: Some(caller.user_id),
        name: &params.name,
        public_key: &public_key,
        fingerprint: &fingerprint,
    };
    let mut conn = super::db_conn(&app).await?;
    let row = db::ssh_key_create(&mut conn, &new).await.map_err(store_error)?;
    tracing::info!(project_id = %project, ssh_key_id = %row.id, name = %row.name, %fingerprint, "SSH key added");
    Ok((StatusCode::CREATED, Json(row.into())))
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
    let project = resolve_project(&app.pool, &caller, &project, Role::Viewer).await?;
    let mut conn = super::db_conn(&app).await?;
    Ok(Json(ssh_key_by_name_or_id(&mut conn, project, &key).await?.into()))
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
    let project = resolve_project(&app.pool, &caller, &project, Role::Member).await?;
    let mut conn = super::db_conn(&app).await?;
    let row = ssh_key_by_name_or_id(&mut conn, project, &key).await?;
    if !db::ssh_key_delete(&mut conn, project, row.id).await.map_err(store_error)? {
        return Err(not_found(&key));
    }
    tracing::info!(project_id = %project, ssh_key_id = %row.id, name = %row.name, "SSH key deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The project's key named or identified by `key`, or 404 `not_found`. For handlers that were
/// given key names (instance create), after [`resolve_project`] has authorized the caller.
pub async fn ssh_key_by_name_or_id(
    conn: &mut sqlx::PgConnection,
    project: ProjectId,
    key: &str,
) -> Result<SshKeyRow, ApiError> {
    db::ssh_key_get(conn, project, key).await.map_err(store_error)?.ok_or_else(|| not_found(key))
}

fn not_found(key: &str) -> ApiError {
    ApiError::not_found(format!("no SSH key {key:?} in this project"))
}

/// 409 for a taken name or a key in use, 500 (logged) for anything else.
fn store_error(err: SshKeyStoreError) -> ApiError {
    match &err {
        SshKeyStoreError::NameTaken { .. } => ApiError::conflict(err.to_string()),
        SshKeyStoreError::InUse { name, instances } if instances.is_empty() => {
            ApiError::conflict(format!("SSH key {name:?} is used by an instance"))
        }
        SshKeyStoreError::InUse { name, instances } => ApiError::conflict(format!(
            "SSH key {name:?} is used by instance(s) {}; delete them first",
            instances.join(", ")
        )),
        SshKeyStoreError::Query(_) => ApiError::internal(&err),
    }
}
