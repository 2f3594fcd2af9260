//! Snapshot policies in the datastore: one per instance at most.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::ids::{InstanceId, SnapshotId};

/// A row of `snapshot_policies`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SnapshotPolicyRow {
    pub instance_id: InstanceId,
    /// Seconds between two scheduled snapshots (at least 10).
    pub every_secs: i32,
    /// How many scheduled snapshots are kept (the newest).
    pub keep: i32,
    /// Whether scheduled snapshots save memory state too.
    pub memory: bool,
    /// When the last scheduled snapshot was started.
    pub last_run_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "instance_id, every_secs, keep, memory, last_run_at, created_at, updated_at";

/// Sets the policy of an instance (replacing one it had; its schedule carries on).
pub async fn policy_set(
    conn: &mut PgConnection,
    instance: InstanceId,
    every_secs: i32,
    keep: i32,
    memory: bool,
) -> Result<SnapshotPolicyRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO snapshot_policies (instance_id, every_secs, keep, memory) VALUES ($1, $2, $3, $4)
         ON CONFLICT (instance_id) DO UPDATE SET every_secs = $2, keep = $3, memory = $4, updated_at = now()
         RETURNING {COLUMNS}"
    ))
    .bind(instance)
    .bind(every_secs)
    .bind(keep)
    .bind(memory)
    .fetch_one(conn)
    .await
}

/// The policy of an instance, if it has one.
pub async fn policy_get(
    conn: &mut PgConnection,
    instance: InstanceId,
) -> Result<Option<SnapshotPolicyRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM snapshot_policies WHERE instance_id = $1"))
        .bind(instance)
        .fetch_optional(conn)
        .await
}

/// Removes the policy of an instance; true when it had one.
pub async fn policy_delete(conn: &mut PgConnection, instance: InstanceId) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM snapshot_policies WHERE instance_id = $1").bind(instance).execute(conn).await?;
    Ok(done.rows_affected() == 1)
}

/// A policy whose snapshot is due, with what taking it needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Due {
    pub instance_id: InstanceId,
    pub memory: bool,
}

/// The policies whose snapshot is due (their instance runs and has a host), locked for this
/// transaction and skipped by any other replica's, at most `limit`; each is marked as run now.
pub async fn take_due(conn: &mut PgConnection, limit: i64) -> Result<Vec<Due>, sqlx::Error> {
    sqlx::query_as(
        "WITH due AS (
             SELECT p.instance_id FROM snapshot_policies p JOIN instances i ON i.id = p.instance_id
             WHERE i.state = 'running' AND i.host_id IS NOT NULL AND i.deleted_at IS NULL
               AND (p.last_run_at IS NULL OR p.last_run_at + make_interval(secs => p.every_secs) <= now())
             ORDER BY p.last_run_at NULLS FIRST LIMIT $1
             FOR UPDATE OF p SKIP LOCKED)
         UPDATE snapshot_policies p SET last_run_at = now() FROM due
         WHERE p.instance_id = due.instance_id
         RETURNING p.instance_id, p.memory",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The scheduled snapshots beyond each policy's `keep` (the oldest available ones), at most
/// `limit`.
pub async fn surplus(conn: &mut PgConnection, limit: i64) -> Result<Vec<SnapshotId>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM (
             SELECT s.id, s.state, p.keep,
                    row_number() OVER (PARTITION BY s.instance_id ORDER BY s.created_at DESC) AS n
             FROM snapshots s JOIN snapshot_policies p ON p.instance_id = s.instance_id
             WHERE s.scheduled AND s.state IN ('creating', 'available')) ranked
         WHERE n > keep AND state = 'available' LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}
