//! SSH public keys of a project, injected into its instances (cloud-init
//! `ssh_authorized_keys`). A key is one OpenSSH `authorized_keys` line without options, checked
//! strictly by [`PublicKey::parse`] because it ends up in files inside guests; the stored text is
//! re-assembled from the parsed parts, single-spaced.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{App, AppError, Window, projects, validate};
use crate::auth::{Caller, Role};
use crate::db::ssh_keys::{self as db, NewSshKey, SshKeyRow, SshKeyStoreError};
use crate::ids::{ProjectId, SshKeyId, UserId};
use crate::openssh::PublicKey;

/// `POST /v1/projects/{project}/ssh-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SshKeyCreateParams {
    /// A DNS label, unique in the project.
    #[schema(schema_with = crate::app::validate::schema::dns_label)]
    pub name: String,
    /// One OpenSSH public key line of at most 16 KiB, e.g. the contents of `~/.ssh/id_ed25519.pub`.
    #[schema(schema_with = public_key_schema)]
    pub public_key: String,
}

/// The schema of a public key: format `openssh-public-key` (`type base64-blob [comment]`, the
/// blob's fields matching the type; `crate::openssh::PublicKey::parse` is the whole rule).
fn public_key_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom("openssh-public-key".to_owned())))
        .build()
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

/// A taken name or a key in use is a conflict; anything else is internal.
impl From<SshKeyStoreError> for AppError {
    fn from(err: SshKeyStoreError) -> Self {
        match &err {
            SshKeyStoreError::NameTaken { .. } => Self::Conflict(err.to_string()),
            SshKeyStoreError::InUse { name, instances } if instances.is_empty() => {
                Self::Conflict(format!("SSH key {name:?} is used by an instance"))
            }
            SshKeyStoreError::InUse { name, instances } => Self::Conflict(format!(
                "SSH key {name:?} is used by instance(s) {}; delete them first",
                instances.join(", ")
            )),
            SshKeyStoreError::Query(_) => Self::internal(err),
        }
    }
}

fn not_found(key: &str) -> AppError {
    AppError::NotFound(format!("no SSH key {key:?} in this project"))
}

/// The project's keys in `window`.
pub async fn list(app: &App, caller: &Caller, project: &str, window: Window) -> Result<Vec<SshKeyView>, AppError> {
    let project = projects::resolve(app, caller, project, Role::Viewer).await?;
    let mut conn = app.pool.acquire().await?;
    Ok(db::ssh_key_list(&mut conn, project, window.after, window.fetch)
        .await?
        .into_iter()
        .map(SshKeyView::from)
        .collect())
}

/// Adds a public key to the project.
pub async fn create(
    app: &App,
    caller: &Caller,
    project: &str,
    params: SshKeyCreateParams,
) -> Result<SshKeyView, AppError> {
    let project = projects::resolve(app, caller, project, Role::Member).await?;
    validate::require_dns_label("name", &params.name)?;
    let key =
        PublicKey::parse(&params.public_key).map_err(|err| AppError::Unprocessable(format!("public_key: {err}")))?;
    let (public_key, fingerprint) = (key.to_openssh(), key.fingerprint());
    let new = NewSshKey {
        id: SshKeyId::new(),
        project_id: project,
        user_id: Some(caller.user_id),
        name: &params.name,
        public_key: &public_key,
        fingerprint: &fingerprint,
    };
    let mut conn = app.pool.acquire().await?;
    let row = db::ssh_key_create(&mut conn, &new).await?;
    tracing::info!(project_id = %project, ssh_key_id = %row.id, name = %row.name, %fingerprint, "SSH key added");
    Ok(row.into())
}

/// One key of the project, by name or id.
pub async fn get(app: &App, caller: &Caller, project: &str, key: &str) -> Result<SshKeyView, AppError> {
    let project = projects::resolve(app, caller, project, Role::Viewer).await?;
    let mut conn = app.pool.acquire().await?;
    Ok(db::ssh_key_get(&mut conn, project, key).await?.ok_or_else(|| not_found(key))?.into())
}

/// Deletes a key of the project: not found when there is none (so a retry after a success is
/// not found too), a conflict while an instance uses it.
pub async fn delete(app: &App, caller: &Caller, project: &str, key: &str) -> Result<(), AppError> {
    let project = projects::resolve(app, caller, project, Role::Member).await?;
    let mut conn = app.pool.acquire().await?;
    let row = db::ssh_key_get(&mut conn, project, key).await?.ok_or_else(|| not_found(key))?;
    if !db::ssh_key_delete(&mut conn, project, row.id).await? {
        return Err(not_found(key));
    }
    tracing::info!(project_id = %project, ssh_key_id = %row.id, name = %row.name, "SSH key deleted");
    Ok(())
}
