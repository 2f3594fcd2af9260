//! SSH public keys in the datastore, per project. Every query is scoped by project: a key of
//! another project is never found, which is how the API's 404 for other tenants comes about.
//!
//! A key is referenced by the instances it was injected into (`instance_ssh_keys`, `ON DELETE
//! RESTRICT`), so deleting a key in use fails with [`SshKeyStoreError::InUse`] naming them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ids::{ProjectId, SshKeyId, UserId};

/// Errors of the SSH key queries.
#[derive(Debug, thiserror::Error)]
pub enum SshKeyStoreError {
    #[error("the project already has an SSH key named {name:?}")]
    NameTaken { name: String },
    #[error("SSH key {name:?} is used by instances {instances:?}")]
    InUse { name: String, instances: Vec<String> },
    #[error("SSH key query failed")]
    Query(#[from] sqlx::Error),
}

/// A row of `ssh_keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SshKeyRow {
    pub id: SshKeyId,
    pub project_id: ProjectId,
    /// The user who added it (`null` once that user is gone).
    pub user_id: Option<UserId>,
    pub name: String,
    /// One line of `authorized_keys`: `<type> <base64> [comment]`.
    pub public_key: String,
    /// `SHA256:<base64>`, as `ssh-keygen -l` shows it.
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
}

/// What [`ssh_key_create`] stores.
#[derive(Debug, Clone)]
pub struct NewSshKey<'a> {
    pub id: SshKeyId,
    pub project_id: ProjectId,
    pub user_id: Option<UserId>,
    pub name: &'a str,
    pub public_key: &'a str,
    pub fingerprint: &'a str,
}

const COLUMNS: &str = "id, project_id, user_id, name, public_key, fingerprint, created_at";

/// Stores a new key; its name must be free in the project.
pub async fn ssh_key_create(conn: &mut PgConnection, key: &NewSshKey<'_>) -> Result<SshKeyRow, SshKeyStoreError> {
    sqlx::query_as(&format!(
        "INSERT INTO ssh_keys (id, project_id, user_id, name, public_key, fingerprint)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    ))
    .bind(key.id)
    .bind(key.project_id)
    .bind(key.user_id)
    .bind(key.name)
    .bind(key.public_key)
    .bind(key.fingerprint)
    .fetch_one(conn)
    .await
    .map_err(|err| match err.as_database_error() {
        Some(db) if db.is_unique_violation() => SshKeyStoreError::NameTaken { name: key.name.to_owned() },
        _ => SshKeyStoreError::Query(err),
    })
}

/// One page of the project's keys by `(created_at, id)`, after the key `after`.
pub async fn ssh_key_list(
    conn: &mut PgConnection,
    project: ProjectId,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<SshKeyRow>, SshKeyStoreError> {
    let from = super::page_from(after.is_some(), "created_at, id", ">", 2);
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM ssh_keys WHERE project_id = $1 {from}
         ORDER BY created_at, id LIMIT $4"
    ))
    .bind(project)
    .bind(after.map(|(at, _)| at))
    .bind(after.map(|(_, id)| id))
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// The project's key named or identified by `name_or_id` (a UUID is taken as an id).
pub async fn ssh_key_get(
    conn: &mut PgConnection,
    project: ProjectId,
    name_or_id: &str,
) -> Result<Option<SshKeyRow>, SshKeyStoreError> {
    // Names are never UUIDs, so a UUID can only match an id.
    Ok(sqlx::query_as(&format!("SELECT {COLUMNS} FROM ssh_keys WHERE project_id = $1 AND (id = $2 OR name = $3)"))
        .bind(project)
        .bind(Uuid::parse_str(name_or_id).ok())
        .bind(name_or_id)
        .fetch_optional(conn)
        .await?)
}

/// Deletes the project's key `id`; `false` when the project has no such key. A key still
/// referenced by an instance is [`SshKeyStoreError::InUse`] and stays.
pub async fn ssh_key_delete(
    conn: &mut PgConnection,
    project: ProjectId,
    id: SshKeyId,
) -> Result<bool, SshKeyStoreError> {
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM ssh_keys WHERE project_id = $1 AND id = $2")
        .bind(project)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(name) = name else { return Ok(false) };
    let instances = instances_using(conn, id).await?;
    if !instances.is_empty() {
        return Err(SshKeyStoreError::InUse { name, instances });
    }
    let deleted = sqlx::query("DELETE FROM ssh_keys WHERE project_id = $1 AND id = $2")
        .bind(project)
        .bind(id)
        .execute(&mut *conn)
        .await
        .map_err(|err| match err.as_database_error() {
            // An instance took the key between the check and the delete.
            Some(db) if db.is_foreign_key_violation() => {
                SshKeyStoreError::InUse { name: name.clone(), instances: Vec::new() }
            }
            _ => SshKeyStoreError::Query(err),
        })?;
    Ok(deleted.rows_affected() > 0)
}

/// Names of (at most ten of) the instances referencing the key, deleted ones included.
async fn instances_using(conn: &mut PgConnection, id: SshKeyId) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT i.name FROM instance_ssh_keys k JOIN instances i ON i.id = k.instance_id
         WHERE k.ssh_key_id = $1 ORDER BY i.name LIMIT 10",
    )
    .bind(id)
    .fetch_all(conn)
    .await
}
