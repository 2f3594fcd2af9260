//! Images in the datastore. An image belongs to a project, or to nobody (`project_id` NULL):
//! a public image, which every project sees. Names are unique per owner (the index treats NULL
//! as one owner), so a project image may share its name with a public one; lookups by name
//! prefer the project's own.
//!
//! The files of an image are blobs in the control plane's blob store, named by their SHA-256;
//! a row only records the hashes and sizes. Deleting an image a live instance uses fails with
//! [`ImageStoreError::InUse`]; deleted instances (kept as history) let it go, and their
//! reference is cleared (`ON DELETE SET NULL`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ids::{ImageId, ProjectId};
use crate::states::{BootMode, ImageState};

/// Errors of the image queries.
#[derive(Debug, thiserror::Error)]
pub enum ImageStoreError {
    #[error("an image named {name:?} already exists {owner}")]
    NameTaken { name: String, owner: &'static str },
    #[error("image {name:?} is used by instances {instances:?}")]
    InUse { name: String, instances: Vec<String> },
    #[error("image query failed")]
    Query(#[from] sqlx::Error),
}

/// A row of `images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ImageRow {
    pub id: ImageId,
    /// `None` for a public image.
    pub project_id: Option<ProjectId>,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub state: ImageState,
    #[sqlx(try_from = "String")]
    pub boot_mode: BootMode,
    pub disk_sha256: Option<String>,
    pub disk_size_bytes: Option<i64>,
    /// The size of the disk the disk file describes (qcow2's virtual size).
    pub disk_virtual_bytes: Option<i64>,
    pub kernel_sha256: Option<String>,
    pub initrd_sha256: Option<String>,
    pub kernel_cmdline: String,
    /// uefi | bios, for `firmware` images.
    pub firmware: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What [`image_create`] stores.
#[derive(Debug, Clone)]
pub struct NewImage<'a> {
    pub id: ImageId,
    /// `None`: a public image.
    pub project_id: Option<ProjectId>,
    pub name: &'a str,
    pub state: ImageState,
    pub boot_mode: BootMode,
    pub disk_sha256: Option<&'a str>,
    pub disk_size_bytes: Option<i64>,
    pub disk_virtual_bytes: Option<i64>,
    pub kernel_sha256: Option<&'a str>,
    pub initrd_sha256: Option<&'a str>,
    pub kernel_cmdline: &'a str,
    pub firmware: Option<&'a str>,
}

const COLUMNS: &str = "id, project_id, name, state, boot_mode, disk_sha256, disk_size_bytes, disk_virtual_bytes, kernel_sha256, \
    initrd_sha256, kernel_cmdline, firmware, created_at, updated_at";

/// How [`ImageStoreError::NameTaken`] names the owner's images.
pub fn owner_text(project: Option<ProjectId>) -> &'static str {
    if project.is_some() { "in this project" } else { "among the public images" }
}

/// Stores a new image; its name must be free among its owner's images.
pub async fn image_create(conn: &mut PgConnection, image: &NewImage<'_>) -> Result<ImageRow, ImageStoreError> {
    sqlx::query_as(&format!(
        "INSERT INTO images (id, project_id, name, state, boot_mode, disk_sha256, disk_size_bytes, kernel_sha256,
                             initrd_sha256, kernel_cmdline, firmware, disk_virtual_bytes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {COLUMNS}"
    ))
    .bind(image.id)
    .bind(image.project_id)
    .bind(image.name)
    .bind(image.state.as_str())
    .bind(image.boot_mode.as_str())
    .bind(image.disk_sha256)
    .bind(image.disk_size_bytes)
    .bind(image.kernel_sha256)
    .bind(image.initrd_sha256)
    .bind(image.kernel_cmdline)
    .bind(image.firmware)
    .bind(image.disk_virtual_bytes)
    .fetch_one(conn)
    .await
    .map_err(|err| match err.as_database_error() {
        Some(db) if db.is_unique_violation() => {
            ImageStoreError::NameTaken { name: image.name.to_owned(), owner: owner_text(image.project_id) }
        }
        _ => ImageStoreError::Query(err),
    })
}

/// Whether the owner (`None`: public) already has an image named `name`.
pub async fn image_name_taken(
    conn: &mut PgConnection,
    project: Option<ProjectId>,
    name: &str,
) -> Result<bool, ImageStoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM images WHERE project_id IS NOT DISTINCT FROM $1 AND name = $2)",
    )
    .bind(project)
    .bind(name)
    .fetch_one(conn)
    .await?)
}

/// One page of the images `project` sees (its own and the public ones) by `(created_at, id)`.
pub async fn image_list_visible(
    conn: &mut PgConnection,
    project: ProjectId,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ImageRow>, ImageStoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM images
         WHERE (project_id = $1 OR project_id IS NULL)
           AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
         ORDER BY created_at, id LIMIT $4"
    ))
    .bind(project)
    .bind(after.map(|(at, _)| at))
    .bind(after.map(|(_, id)| id))
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// The image `project` sees under `name_or_id` (a UUID is taken as an id; names are never
/// UUIDs): the project's own image of that name if it has one, else the public one.
pub async fn image_by_name_or_id(
    conn: &mut PgConnection,
    project: ProjectId,
    name_or_id: &str,
) -> Result<Option<ImageRow>, ImageStoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM images
         WHERE (project_id = $1 OR project_id IS NULL) AND (id = $2 OR name = $3)
         ORDER BY project_id NULLS LAST LIMIT 1"
    ))
    .bind(project)
    .bind(Uuid::parse_str(name_or_id).ok())
    .bind(name_or_id)
    .fetch_optional(conn)
    .await?)
}

/// Deletes the image `id`; `false` when it does not exist. An image a live instance uses is
/// [`ImageStoreError::InUse`] and stays. Must run in a transaction: the image row stays locked
/// from the check to the delete, so a concurrent create (whose insert must lock the image row
/// for its reference) cannot start using it in between.
pub async fn image_delete_unchecked(conn: &mut PgConnection, id: ImageId) -> Result<bool, ImageStoreError> {
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM images WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(name) = name else { return Ok(false) };
    let instances: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM instances WHERE image_id = $1 AND deleted_at IS NULL ORDER BY name LIMIT 10",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    if !instances.is_empty() {
        return Err(ImageStoreError::InUse { name, instances });
    }
    let deleted =
        sqlx::query("DELETE FROM images WHERE id = $1").bind(id).execute(&mut *conn).await.map_err(|err| {
            match err.as_database_error() {
                // An instance took the image between the check and the delete.
                Some(db) if db.is_foreign_key_violation() => {
                    ImageStoreError::InUse { name: name.clone(), instances: Vec::new() }
                }
                _ => ImageStoreError::Query(err),
            }
        })?;
    Ok(deleted.rows_affected() > 0)
}

/// An image by id, whoever owns it (a snapshot's source image, for operations and derivations).
pub async fn image_get_unchecked(conn: &mut PgConnection, id: ImageId) -> Result<Option<ImageRow>, ImageStoreError> {
    Ok(sqlx::query_as(&format!("SELECT {COLUMNS} FROM images WHERE id = $1")).bind(id).fetch_optional(conn).await?)
}
