//! The snapshot operations and their steps.
//!
//! | operation | steps (undo in brackets) |
//! |---|---|
//! | `snapshot_create` | snapshot_on_host [delete it on the host] |
//! | `snapshot_delete` | delete_snapshot_on_host (its local copy, then the shared store's) |
//!
//! The host that takes a snapshot uploads it to the shared store before it answers, and keeps
//! its local copy (a restore there needs no fetch). Deleting removes both: the host's copy when
//! the host can be called (a dead host's went with it), then the store's manifest (its chunks
//! go at the next garbage collection). Both steps are idempotent: a snapshot id that exists is
//! returned as it is, and deleting one that is gone is no error.

use std::sync::Arc;
use std::time::Duration;

use cloud_proto::agent::v1 as pb;
use serde::{Deserialize, Serialize};
use tonic::Code;

use super::StepError;
use crate::agents::AgentClient;
use crate::app::App;
use crate::db::operations::OperationRow;
use crate::db::snapshots::{self as db, SnapshotRow};
use crate::ids::SnapshotId;
use crate::states::{OperationKind, SnapshotKind, SnapshotState, Step};

/// Steps of each snapshot operation kind.
pub fn steps(kind: OperationKind) -> &'static [Step] {
    match kind {
        OperationKind::SnapshotCreate => &[Step::SnapshotOnHost],
        OperationKind::SnapshotDelete => &[Step::DeleteSnapshotOnHost],
        _ => &[],
    }
}

/// The parameters every snapshot operation carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotParams {
    pub snapshot_id: SnapshotId,
}

/// What `snapshot_on_host` records: where the files are and how big they are.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Taken {
    size_bytes: i64,
    location: String,
}

fn params(op: &OperationRow) -> Result<SnapshotParams, StepError> {
    serde_json::from_value(op.params.clone())
        .map_err(|e| StepError::Fail { code: "internal", message: format!("operation parameters are invalid: {e}") })
}

fn db_err(e: sqlx::Error) -> StepError {
    StepError::db(&e)
}

async fn snapshot(app: &App, id: SnapshotId) -> Result<SnapshotRow, StepError> {
    db::snapshot_get_unchecked(&mut *app.work_pool.acquire().await.map_err(db_err)?, id)
        .await
        .map_err(db_err)?
        .ok_or(StepError::Fail { code: "not_found", message: "the snapshot no longer exists".to_owned() })
}

/// The agent of the snapshot's host, or `None` when there is no host to call (none recorded,
/// gone, or dead).
async fn host_client(app: &App, s: &SnapshotRow) -> Result<Option<AgentClient>, StepError> {
    match s.host_id {
        Some(host) => super::host_agent(app, host).await,
        None => Ok(None),
    }
}

fn agent_error(status: &tonic::Status) -> StepError {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled => StepError::Retry {
            reason: format!("the host agent is unreachable: {}", status.message()),
            after: Duration::from_secs(2),
        },
        Code::NotFound => StepError::Fail {
            code: "not_found",
            message: format!("the host has no such instance: {}", status.message()),
        },
        Code::FailedPrecondition => {
            StepError::Fail { code: "conflict", message: format!("the host refused: {}", status.message()) }
        }
        _ => StepError::Fail { code: "host_error", message: format!("the host refused: {}", status.message()) },
    }
}

/// Runs one step (idempotent).
pub async fn run_step(app: &Arc<App>, op: &OperationRow, step: Step) -> Result<Option<serde_json::Value>, StepError> {
    let s = snapshot(app, params(op)?.snapshot_id).await?;
    match step {
        Step::SnapshotOnHost => {
            let instance = s.instance_id.ok_or(StepError::Fail {
                code: "not_found",
                message: "the instance was deleted before it could be snapshotted".to_owned(),
            })?;
            let row = crate::db::instances::instance_get_unchecked(
                &mut *app.work_pool.acquire().await.map_err(db_err)?,
                instance,
            )
            .await
            .map_err(db_err)?
            .ok_or(StepError::Fail { code: "not_found", message: "the instance no longer exists".to_owned() })?;
            let mut agent = host_client(app, &s).await?.ok_or(StepError::Fail {
                code: "unavailable",
                message: "the instance's host cannot be reached to take the snapshot".to_owned(),
            })?;
            let kind = match s.kind {
                SnapshotKind::Disk => pb::SnapshotKind::Disk,
                SnapshotKind::Full => pb::SnapshotKind::Full,
            };
            let generation = u64::try_from(row.generation)
                .map_err(|_| StepError::Fail { code: "internal", message: "invalid instance generation".to_owned() })?;
            let request = pb::SnapshotInstanceRequest {
                instance_id: instance.to_string(),
                snapshot_id: s.id.to_string(),
                kind: kind as i32,
                generation,
            };
            let info = agent.snapshot_instance(request).await.map_err(|status| agent_error(&status))?.into_inner();
            let size_bytes = i64::try_from(info.size_bytes)
                .map_err(|_| StepError::Fail { code: "internal", message: "the snapshot is too large".to_owned() })?;
            let taken = Taken { size_bytes, location: info.location };
            serde_json::to_value(taken)
                .map(Some)
                .map_err(|e| StepError::Fail { code: "internal", message: e.to_string() })
        }
        Step::DeleteSnapshotOnHost => {
            // The host that took it, and every host that rebuilt it from the store to restore it.
            let mut conn = app.work_pool.acquire().await.map_err(db_err)?;
            let mut hosts: Vec<_> = db::snapshot_restore_hosts(&mut conn, s.id).await.map_err(db_err)?;
            drop(conn);
            hosts.insert(0, s.host_id);
            forget(app, s.id, &hosts, Store::Required).await.map(|()| None)
        }
        other => Err(StepError::Fail { code: "internal", message: format!("{other} is no snapshot step") }),
    }
}

/// Undoes one step of a failed operation (idempotent): a snapshot half taken is removed.
pub async fn undo_step(app: &Arc<App>, op: &OperationRow, step: Step) -> Result<(), StepError> {
    if step != Step::SnapshotOnHost {
        return Ok(());
    }
    let s = snapshot(app, params(op)?.snapshot_id).await?;
    // A failed create wrote no manifest unless it failed after its upload; a store that is away
    // (often why it failed) must not hold the undo up.
    forget(app, s.id, &[s.host_id], Store::BestEffort).await
}

/// Whether [`forget`] must remove the store's copy (retrying while the store is away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Store {
    Required,
    BestEffort,
}

/// Deletes snapshot `id` everywhere: the local copies on `hosts` (those that can be called:
/// a dead host's went with it), then the shared store's. Idempotent.
pub(super) async fn forget(
    app: &App,
    id: SnapshotId,
    hosts: &[Option<crate::ids::HostId>],
    store: Store,
) -> Result<(), StepError> {
    let mut called = Vec::new();
    for host in hosts.iter().flatten() {
        if called.contains(host) {
            continue;
        }
        called.push(*host);
        let Some(mut agent) = super::host_agent(app, *host).await? else { continue };
        match agent.delete_snapshot(pb::DeleteSnapshotRequest { snapshot_id: id.to_string() }).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::InvalidArgument => {}
            Err(status) => return Err(agent_error(&status)),
        }
    }
    match app.store.delete(&cloud_store::snapshot_name(id)).await {
        Ok(()) => Ok(()),
        Err(e) if store == Store::BestEffort => {
            tracing::warn!(snapshot = %id, error = %crate::error_chain::ErrorChain(&e), "cannot delete a failed snapshot from the store; left there");
            Ok(())
        }
        Err(e) => Err(StepError::Retry {
            reason: format!("cannot delete snapshot {id} from the store: {}", crate::error_chain::ErrorChain(&e)),
            after: Duration::from_secs(5),
        }),
    }
}

/// Records the outcome of a successful operation on the snapshot.
pub async fn on_success(conn: &mut sqlx::PgConnection, op: &OperationRow) -> Result<(), StepError> {
    let id = params(op)?.snapshot_id;
    match op.kind {
        OperationKind::SnapshotCreate => {
            let steps = crate::db::operations::operation_steps(&mut *conn, op.id).await.map_err(db_err)?;
            let taken: Taken = steps
                .iter()
                .find(|s| s.name == Step::SnapshotOnHost)
                .and_then(|s| s.output.clone())
                .and_then(|v| serde_json::from_value(v).ok())
                .ok_or(StepError::Fail {
                    code: "internal",
                    message: "the snapshot step recorded nothing".to_owned(),
                })?;
            db::snapshot_set_available(&mut *conn, id, taken.size_bytes, &taken.location).await.map_err(db_err)
        }
        OperationKind::SnapshotDelete => {
            db::snapshot_transition(&mut *conn, id, &[SnapshotState::Deleting], SnapshotState::Deleted, None)
                .await
                .map(drop)
                .map_err(db_err)
        }
        other => Err(StepError::Fail { code: "internal", message: format!("{other} is no snapshot operation") }),
    }
}

/// Records a failed (and undone) operation on the snapshot, with the reason.
pub async fn on_failure(app: &Arc<App>, op: &OperationRow, reason: &str) -> Result<(), StepError> {
    let id = params(op)?.snapshot_id;
    let mut conn = app.work_pool.acquire().await.map_err(db_err)?;
    let from = [SnapshotState::Creating, SnapshotState::Deleting];
    db::snapshot_transition(&mut conn, id, &from, SnapshotState::Failed, Some(reason)).await.map(drop).map_err(db_err)
}
