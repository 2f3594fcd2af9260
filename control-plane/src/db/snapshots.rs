//! Snapshots in the datastore. Every read a caller can reach is scoped by project; the
//! operation steps use the unchecked ones by id.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ids::{HostId, ImageId, InstanceId, ProjectId, SnapshotId};
use crate::states::{SnapshotKind, SnapshotState};

/// A row of `snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SnapshotRow {
    pub id: SnapshotId,
    pub project_id: ProjectId,
    /// The instance it was taken of (`null` once that instance is deleted).
    pub instance_id: Option<InstanceId>,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub kind: SnapshotKind,
    #[sqlx(try_from = "String")]
    pub state: SnapshotState,
    /// Why it failed, when it did.
    pub state_reason: Option<String>,
    /// Bytes of its files, once available.
    pub size_bytes: Option<i64>,
    /// The host that holds its files.
    pub host_id: Option<HostId>,
    /// Where its files are on that host.
    pub location: Option<String>,
    /// Taken by the instance's snapshot policy (pruned beyond its `keep`), not by hand.
    pub scheduled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What [`snapshot_insert`] stores (state `creating`).
#[derive(Debug, Clone)]
pub struct NewSnapshot<'a> {
    pub id: SnapshotId,
    pub project_id: ProjectId,
    pub instance_id: InstanceId,
    pub host_id: HostId,
    pub name: &'a str,
    pub kind: SnapshotKind,
    /// What a restore needs of the instance: its image and sizes.
    pub source: SnapshotSource,
    /// Taken by a snapshot policy.
    pub scheduled: bool,
}

/// The image and sizes of the instance a snapshot was taken of (`None`: taken before they were
/// kept, or the image was deleted since).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct SnapshotSource {
    pub image_id: Option<ImageId>,
    pub vcpus: Option<i32>,
    pub memory_bytes: Option<i64>,
    pub disk_bytes: Option<i64>,
}

const COLUMNS: &str = "id, project_id, instance_id, name, kind, state, state_reason, size_bytes, host_id, location, \
    scheduled, created_at, updated_at";

/// Stores a new snapshot as `creating`; a name taken in the project is a unique violation.
pub async fn snapshot_insert(conn: &mut PgConnection, new: &NewSnapshot<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO snapshots (id, project_id, instance_id, host_id, name, kind, state, image_id, vcpus,
                                memory_bytes, disk_bytes, scheduled)
         VALUES ($1, $2, $3, $4, $5, $6, 'creating', $7, $8, $9, $10, $11)",
    )
    .bind(new.id)
    .bind(new.project_id)
    .bind(new.instance_id)
    .bind(new.host_id)
    .bind(new.name)
    .bind(new.kind.as_str())
    .bind(new.source.image_id)
    .bind(new.source.vcpus)
    .bind(new.source.memory_bytes)
    .bind(new.source.disk_bytes)
    .bind(new.scheduled)
    .execute(conn)
    .await
    .map(drop)
}

/// The project's snapshot named or identified by `name_or_id` (not deleted).
pub async fn snapshot_get(
    conn: &mut PgConnection,
    project: ProjectId,
    name_or_id: &str,
) -> Result<Option<SnapshotRow>, sqlx::Error> {
    let id = name_or_id.parse::<Uuid>().ok();
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM snapshots
         WHERE project_id = $1 AND state <> 'deleted' AND (name = $2 OR id = $3)"
    ))
    .bind(project)
    .bind(name_or_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The image and sizes of the instance snapshot `id` was taken of.
pub async fn snapshot_source(conn: &mut PgConnection, id: SnapshotId) -> Result<Option<SnapshotSource>, sqlx::Error> {
    sqlx::query_as("SELECT image_id, vcpus, memory_bytes, disk_bytes FROM snapshots WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// A snapshot by id, whatever its project and state (for operations).
pub async fn snapshot_get_unchecked(
    conn: &mut PgConnection,
    id: SnapshotId,
) -> Result<Option<SnapshotRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM snapshots WHERE id = $1")).bind(id).fetch_optional(conn).await
}

/// The project's snapshots that are not deleted, after `after` (created_at, id), oldest first,
/// at most `limit`; only those of `instance` if given.
pub async fn snapshot_list(
    conn: &mut PgConnection,
    project: ProjectId,
    instance: Option<InstanceId>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<SnapshotRow>, sqlx::Error> {
    let from = super::page_from(after.is_some(), "created_at, id", ">", 3);
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM snapshots
         WHERE project_id = $1 AND state <> 'deleted' AND ($2::uuid IS NULL OR instance_id = $2) {from}
         ORDER BY created_at, id LIMIT $5"
    ))
    .bind(project)
    .bind(instance)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Marks a snapshot complete on its host (idempotent).
pub async fn snapshot_set_available(
    conn: &mut PgConnection,
    id: SnapshotId,
    size_bytes: i64,
    location: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE snapshots SET state = 'available', size_bytes = $2, location = $3, state_reason = NULL,
                updated_at = now()
         WHERE id = $1 AND state = 'creating'",
    )
    .bind(id)
    .bind(size_bytes)
    .bind(location)
    .execute(conn)
    .await
    .map(drop)
}

/// Moves a snapshot from one of `from` to `to` (with a reason, or none); false when it was in
/// none of them.
pub async fn snapshot_transition(
    conn: &mut PgConnection,
    id: SnapshotId,
    from: &[SnapshotState],
    to: SnapshotState,
    reason: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let done = sqlx::query(
        "UPDATE snapshots SET state = $3, state_reason = $4, updated_at = now()
         WHERE id = $1 AND state = ANY($2)",
    )
    .bind(id)
    .bind(&from)
    .bind(to.as_str())
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The hosts that operations restoring from snapshot `id` were placed on (restores into new
/// instances, recoveries): each may hold a copy rebuilt from the store.
pub async fn snapshot_restore_hosts(
    conn: &mut PgConnection,
    id: SnapshotId,
) -> Result<Vec<Option<HostId>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT (s.output->>'host_id')::uuid FROM operations o JOIN operation_steps s ON s.operation_id = o.id
         WHERE o.params->>'snapshot_id' = $1::text AND s.name = 'place' AND s.output ? 'host_id'",
    )
    .bind(id.to_string())
    .fetch_all(conn)
    .await
}
