//! Snapshots of instances: taking one (disk only, or with memory and device state), listing,
//! reading and deleting them. Taking and deleting are durable operations; the snapshot shows
//! its state, size, host and location as they become known.
//!
//! A running instance can be snapshotted either way; a stopped one only without memory (there
//! is none). The files stay on the instance's host for now (`location` is a path there).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{App, AppError, Window, projects, validate};
use crate::auth::{Caller, Role};
use crate::db::instances::InstanceRow;
use crate::db::operations::{NewOperation, OperationRow};
use crate::db::snapshot_policies::{self as policies, SnapshotPolicyRow};
use crate::db::snapshots::{self as db, NewSnapshot, SnapshotRow, SnapshotSource};
use crate::ids::{InstanceId, OperationId, ProjectId, SnapshotId, UserId};
use crate::operations::snapshots::SnapshotParams;
use crate::states::{InstanceState, OperationKind, SnapshotKind, SnapshotState};

/// `POST /v1/projects/{project}/snapshots`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreateParams {
    /// The instance's name or id.
    pub instance: String,
    /// A DNS label, unique among the project's snapshots (default: the instance's name and the
    /// time, e.g. `web-1-20261202-061500`).
    #[serde(default)]
    #[schema(schema_with = crate::app::validate::schema::dns_label_or_null)]
    pub name: Option<String>,
    /// Also save memory and device state (the instance must be running): a restore resumes the
    /// guest where it was instead of booting it.
    #[serde(default)]
    pub memory: bool,
}

/// An accepted change of a snapshot: the operation carrying it out, and the snapshot as it is.
#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotAccepted {
    pub operation: OperationRow,
    pub snapshot: SnapshotRow,
}

fn not_found(key: &str) -> AppError {
    AppError::NotFound(format!("no snapshot {key:?} in this project"))
}

/// `<instance>-<UTC time>`, the instance's part shortened to keep a DNS label.
fn default_name(instance: &str, at: DateTime<Utc>) -> String {
    let stamp = at.format("%Y%m%d-%H%M%S").to_string();
    let keep = 63 - stamp.len() - 1;
    let head: String = instance.chars().take(keep).collect();
    format!("{}-{stamp}", head.trim_end_matches('-'))
}

/// Takes a snapshot of an instance: the row (`creating`) and its `snapshot_create` operation in
/// one transaction; the executor is woken to carry it out.
pub async fn create(
    app: &App,
    caller: &Caller,
    project: &str,
    params: SnapshotCreateParams,
) -> Result<SnapshotAccepted, AppError> {
    let project = projects::resolve(app, caller, project, Role::Member).await?;
    let mut tx = app.pool.begin().await?;
    let instance = crate::db::instances::instance_get(&mut tx, project, &params.instance)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("instance: no instance {:?} in this project", params.instance)))?;
    let kind = if params.memory { SnapshotKind::Full } else { SnapshotKind::Disk };
    let taking = Taking { name: params.name, kind, by: Some(caller.user_id), scheduled: false };
    let (id, op) = take(&mut tx, &instance, taking, &app.quotas).await?;
    let accepted = accepted(&mut tx, op, id).await?;
    tx.commit().await?;
    app.executor.wake();
    Ok(accepted)
}

/// How a snapshot is being taken.
struct Taking {
    /// Its name (default: the instance's name and the time).
    name: Option<String>,
    kind: SnapshotKind,
    /// The user asking; `None` for a snapshot policy.
    by: Option<UserId>,
    /// Taken by the instance's snapshot policy.
    scheduled: bool,
}

/// Records snapshot and operation for `instance` in the caller's transaction, after checking
/// that the instance can be snapshotted that way.
async fn take(
    conn: &mut sqlx::PgConnection,
    instance: &InstanceRow,
    taking: Taking,
    quotas: &crate::quotas::Amounts,
) -> Result<(SnapshotId, OperationId), AppError> {
    let name = taking.name.unwrap_or_else(|| default_name(&instance.name, Utc::now()));
    validate::require_dns_label("name", &name)?;
    let kind = taking.kind;
    match (instance.state, kind) {
        (InstanceState::Running, _) | (InstanceState::Stopped, SnapshotKind::Disk) => {}
        (InstanceState::Stopped, SnapshotKind::Full) => {
            return Err(AppError::Conflict(format!(
                "instance {} is stopped: it has no memory to save; snapshot it without memory",
                instance.name
            )));
        }
        (state, _) => {
            return Err(AppError::Conflict(format!(
                "instance {} is {state}; a snapshot needs it running (or stopped, without memory)",
                instance.name
            )));
        }
    }
    let host =
        instance.host_id.ok_or_else(|| AppError::Conflict(format!("instance {} has no host yet", instance.name)))?;
    let ask = crate::quotas::Ask { snapshots: 1, ..Default::default() };
    crate::quotas::check(&mut *conn, instance.project_id, quotas, &ask).await??;
    let id = SnapshotId::new();
    let source = SnapshotSource {
        image_id: instance.image_id,
        vcpus: Some(instance.vcpus),
        memory_bytes: Some(instance.memory_bytes),
        disk_bytes: Some(instance.disk_bytes),
    };
    let project = instance.project_id;
    let new = NewSnapshot {
        id,
        project_id: project,
        instance_id: instance.id,
        host_id: host,
        name: &name,
        kind,
        source,
        scheduled: taking.scheduled,
    };
    db::snapshot_insert(conn, &new).await.map_err(|err| {
        if err.as_database_error().is_some_and(|e| e.is_unique_violation()) {
            AppError::Conflict(format!("the project already has a snapshot named {name:?}"))
        } else {
            err.into()
        }
    })?;
    let op = record(conn, taking.by, project, OperationKind::SnapshotCreate, id).await?;
    tracing::info!(snapshot = %id, %name, instance = %instance.id, ?kind, scheduled = taking.scheduled, "snapshot accepted");
    Ok((id, op))
}

async fn record(
    conn: &mut sqlx::PgConnection,
    by: Option<UserId>,
    project: ProjectId,
    kind: OperationKind,
    id: SnapshotId,
) -> Result<OperationId, AppError> {
    let params = serde_json::to_value(SnapshotParams { snapshot_id: id }).map_err(AppError::internal)?;
    let new = NewOperation {
        project_id: Some(project),
        kind,
        target_kind: "snapshot",
        target_id: Some(id.0),
        params,
        created_by: by,
        idempotency_key: None,
        request_hash: None,
        steps: crate::operations::steps(kind),
    };
    Ok(super::operations::record(conn, &new).await?.id)
}

async fn accepted(
    conn: &mut sqlx::PgConnection,
    op: OperationId,
    id: SnapshotId,
) -> Result<SnapshotAccepted, AppError> {
    let operation = crate::db::operations::operation_get(conn, op)
        .await?
        .ok_or_else(|| AppError::NotFound("no such operation".to_owned()))?;
    let snapshot =
        db::snapshot_get_unchecked(conn, id).await?.ok_or_else(|| AppError::NotFound("no such snapshot".to_owned()))?;
    Ok(SnapshotAccepted { operation, snapshot })
}

/// The project's snapshots in `window`, only those of `instance` (a name or id) if given.
pub async fn list(
    app: &App,
    caller: &Caller,
    project: &str,
    instance: Option<&str>,
    window: Window,
) -> Result<Vec<SnapshotRow>, AppError> {
    let project = projects::resolve(app, caller, project, Role::Viewer).await?;
    let mut conn = app.pool.acquire().await?;
    let instance: Option<InstanceId> = match instance {
        None => None,
        Some(key) => Some(
            crate::db::instances::instance_get(&mut conn, project, key)
                .await?
                .ok_or_else(|| AppError::NotFound(format!("no instance {key:?} in this project")))?
                .id,
        ),
    };
    Ok(db::snapshot_list(&mut conn, project, instance, window.after, window.fetch).await?)
}

/// One snapshot, by name or id.
pub async fn get(app: &App, caller: &Caller, project: &str, snapshot: &str) -> Result<SnapshotRow, AppError> {
    let project = projects::resolve(app, caller, project, Role::Viewer).await?;
    db::snapshot_get(&mut *app.pool.acquire().await?, project, snapshot).await?.ok_or_else(|| not_found(snapshot))
}

/// Deletes a snapshot (available or failed): `deleting` and its `snapshot_delete` operation,
/// which removes the files from the host. One being taken cannot be deleted yet; a second delete
/// returns the first's snapshot as it is (its operation is the first one's).
pub async fn delete(app: &App, caller: &Caller, project: &str, snapshot: &str) -> Result<SnapshotAccepted, AppError> {
    let project = projects::resolve(app, caller, project, Role::Member).await?;
    let mut tx = app.pool.begin().await?;
    let row = db::snapshot_get(&mut tx, project, snapshot).await?.ok_or_else(|| not_found(snapshot))?;
    let op = start_delete(&mut tx, &row, Some(caller.user_id)).await?;
    let accepted = accepted(&mut tx, op, row.id).await?;
    tx.commit().await?;
    app.executor.wake();
    Ok(accepted)
}

/// Moves an available or failed snapshot to `deleting` and records its `snapshot_delete`
/// operation, in the caller's transaction.
async fn start_delete(
    conn: &mut sqlx::PgConnection,
    row: &SnapshotRow,
    by: Option<UserId>,
) -> Result<OperationId, AppError> {
    let from = [SnapshotState::Available, SnapshotState::Failed];
    if !db::snapshot_transition(conn, row.id, &from, SnapshotState::Deleting, None).await? {
        return Err(AppError::Conflict(format!(
            "snapshot {} is {}; it can be deleted once it is available or failed",
            row.name, row.state
        )));
    }
    let op = record(conn, by, row.project_id, OperationKind::SnapshotDelete, row.id).await?;
    tracing::info!(snapshot = %row.id, name = %row.name, "snapshot delete accepted");
    Ok(op)
}

/// `PUT /v1/projects/{project}/instances/{instance}/snapshot-policy`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotPolicyParams {
    /// Seconds between two scheduled snapshots while the instance runs (10 to 604800).
    #[schema(minimum = 10, maximum = 604_800)]
    pub every_secs: u32,
    /// How many scheduled snapshots to keep, the newest (1 to 100); older ones are deleted.
    #[schema(minimum = 1, maximum = 100)]
    pub keep: u32,
    /// Save memory state too.
    #[serde(default)]
    pub memory: bool,
}

/// Sets (or replaces) an instance's snapshot policy.
pub async fn policy_set(
    app: &App,
    caller: &Caller,
    project: &str,
    instance: &str,
    params: SnapshotPolicyParams,
) -> Result<SnapshotPolicyRow, AppError> {
    let instance = super::instances::find(app, caller, project, instance, Role::Member).await?.1;
    let every = i32::try_from(params.every_secs).ok().filter(|s| (10..=604_800).contains(s));
    let every = every.ok_or_else(|| AppError::Unprocessable("every_secs: must be between 10 and 604800".to_owned()))?;
    let keep = i32::try_from(params.keep).ok().filter(|k| (1..=100).contains(k));
    let keep = keep.ok_or_else(|| AppError::Unprocessable("keep: must be between 1 and 100".to_owned()))?;
    let row = policies::policy_set(&mut *app.pool.acquire().await?, instance.id, every, keep, params.memory).await?;
    tracing::info!(instance = %instance.id, every_secs = every, keep, memory = params.memory, "snapshot policy set");
    Ok(row)
}

/// An instance's snapshot policy.
pub async fn policy_get(
    app: &App,
    caller: &Caller,
    project: &str,
    instance: &str,
) -> Result<SnapshotPolicyRow, AppError> {
    let found = super::instances::find(app, caller, project, instance, Role::Viewer).await?.1;
    policies::policy_get(&mut *app.pool.acquire().await?, found.id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("instance {instance:?} has no snapshot policy")))
}

/// Removes an instance's snapshot policy (its scheduled snapshots stay).
pub async fn policy_clear(app: &App, caller: &Caller, project: &str, instance: &str) -> Result<(), AppError> {
    let found = super::instances::find(app, caller, project, instance, Role::Member).await?.1;
    if !policies::policy_delete(&mut *app.pool.acquire().await?, found.id).await? {
        return Err(AppError::NotFound(format!("instance {instance:?} has no snapshot policy")));
    }
    Ok(())
}

/// One pass of the snapshot policies (any replica; they share the work through row locks):
/// takes the snapshots that are due and deletes scheduled ones beyond each policy's `keep`.
/// Returns how many snapshots it started and how many deletes.
pub async fn run_policies(app: &App) -> Result<(usize, usize), AppError> {
    let mut tx = app.pool.begin().await?;
    let due = policies::take_due(&mut tx, 32).await?;
    let mut taken = 0;
    for d in &due {
        let Some(instance) = crate::db::instances::instance_get_unchecked(&mut tx, d.instance_id).await? else {
            continue;
        };
        let kind = if d.memory { SnapshotKind::Full } else { SnapshotKind::Disk };
        let taking = Taking { name: None, kind, by: None, scheduled: true };
        // Each in a savepoint: one refused (its state changed, or a name taken by hand in the same
        // second, whose failed insert would abort the whole transaction) is skipped this time and
        // the others go on; the next pass retries.
        let mut one = sqlx::Acquire::begin(&mut *tx).await?;
        match take(&mut one, &instance, taking, &app.quotas).await {
            Ok(_) => {
                one.commit().await?;
                taken += 1;
            }
            Err(AppError::Conflict(reason)) => {
                one.rollback().await?;
                tracing::warn!(instance = %instance.id, %reason, "scheduled snapshot skipped");
            }
            Err(AppError::QuotaExceeded(reason)) => {
                one.rollback().await?;
                tracing::warn!(instance = %instance.id, %reason, "scheduled snapshot skipped: over its project's quota");
            }
            Err(err) => return Err(err),
        }
    }
    let mut deleted = 0;
    for id in policies::surplus(&mut tx, 32).await? {
        if let Some(row) = db::snapshot_get_unchecked(&mut tx, id).await? {
            start_delete(&mut tx, &row, None).await?;
            deleted += 1;
        }
    }
    tx.commit().await?;
    if taken + deleted > 0 {
        app.executor.wake();
    }
    Ok((taken, deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_dns_labels_of_the_instance_and_the_time() {
        let at = DateTime::parse_from_rfc3339("2026-12-02T06:15:00Z").map(|t| t.with_timezone(&Utc)).ok();
        let at = at.unwrap_or_default();
        assert_eq!(default_name("web-1", at), "web-1-20261202-061500");
        let long = default_name(&"a".repeat(63), at);
        assert!(long.len() <= 63 && validate::require_dns_label("name", &long).is_ok(), "{long}");
        let dash = default_name(&format!("{}-b", "a".repeat(46)), at);
        assert!(validate::require_dns_label("name", &dash).is_ok(), "{dash}");
    }
}
