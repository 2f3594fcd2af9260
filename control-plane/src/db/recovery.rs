//! Disaster recovery: instances' DR priorities, and which lost instances are due a recovery.

use sqlx::PgConnection;

use crate::ids::{InstanceId, ProjectId, SnapshotId};

/// Sets (or, with `None`, clears) an instance's DR priority; false when it had none to clear.
pub async fn dr_priority_set(
    conn: &mut PgConnection,
    id: InstanceId,
    priority: Option<i32>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE instances SET dr_priority = $2, updated_at = now()
         WHERE id = $1 AND deleted_at IS NULL AND ($2::integer IS NOT NULL OR dr_priority IS NOT NULL)",
    )
    .bind(id)
    .bind(priority)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A lost instance with a DR policy whose host is dead.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Candidate {
    pub id: InstanceId,
    pub project_id: ProjectId,
    pub dr_priority: i32,
}

/// How many recoveries are running now (fleet-wide).
pub async fn recoveries_in_flight(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM operations WHERE kind = 'instance_recover' AND state IN ('pending', 'running', 'undoing')",
    )
    .fetch_one(conn)
    .await
}

/// Up to `limit` instances due a recovery, highest priority first, locked (others skip them):
/// lost, with a DR policy, on a dead host (or on none: an earlier recovery failed), and not
/// failed to recover in the last `backoff_secs`.
pub async fn candidates_locked(
    conn: &mut PgConnection,
    limit: i64,
    backoff_secs: i64,
) -> Result<Vec<Candidate>, sqlx::Error> {
    sqlx::query_as(
        "SELECT i.id, i.project_id, i.dr_priority FROM instances i LEFT JOIN hosts h ON h.id = i.host_id
         WHERE i.state = 'lost' AND i.dr_priority IS NOT NULL AND i.deleted_at IS NULL
           AND (h.state = 'dead' OR i.host_id IS NULL)
           AND NOT EXISTS (SELECT 1 FROM operations o
                           WHERE o.target_id = i.id AND o.kind = 'instance_recover' AND o.state = 'failed'
                             AND o.finished_at > now() - make_interval(secs => $2))
         ORDER BY i.dr_priority DESC, i.created_at, i.id
         LIMIT $1
         FOR UPDATE OF i SKIP LOCKED",
    )
    .bind(limit)
    .bind(backoff_secs as f64)
    .fetch_all(conn)
    .await
}

/// The newest available snapshot of an instance.
pub async fn latest_snapshot(conn: &mut PgConnection, id: InstanceId) -> Result<Option<SnapshotId>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM snapshots WHERE instance_id = $1 AND state = 'available' ORDER BY created_at DESC, id LIMIT 1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Says why a lost instance with a DR policy is not recovered (once: the reason is set only
/// when it differs).
pub async fn no_snapshot(conn: &mut PgConnection, id: InstanceId) -> Result<(), sqlx::Error> {
    let reason = "its host is dead and it has no available snapshot to recover from: restore one by hand";
    sqlx::query(
        "UPDATE instances SET state_reason = $2, updated_at = now()
         WHERE id = $1 AND state = 'lost' AND state_reason IS DISTINCT FROM $2",
    )
    .bind(id)
    .bind(reason)
    .execute(conn)
    .await
    .map(drop)
}
