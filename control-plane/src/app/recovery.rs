//! Disaster recovery: an instance's DR policy (a priority), and the pass that brings the
//! instances of dead hosts back on healthy ones.
//!
//! A host is declared dead only after its lease plus the fencing margin, and never while the
//! fleet looks partitioned (`reconcilers::host_liveness`); by then its agent has paused its VMs.
//! Each pass then takes the lost instances that have a DR policy, highest priority first, as
//! many as the concurrency leaves room for, and for each, in one transaction: takes it off the
//! dead host (its capacity there is released and the host no longer owns it, so an agent that
//! comes back destroys its stale copy instead of resuming it) and records an `instance_recover`
//! operation from its latest available snapshot. The operation places it through the
//! scheduler, gives it an address of its new host, and boots it from the snapshot's disks: same
//! id, name and SSH keys. A recovery that fails leaves the instance `lost` and is tried again
//! after [`RETRY_AFTER_SECS`]; an instance without a snapshot stays `lost`, saying so.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::instances::{Target, find, instance_operation};
use super::{App, AppError};
use crate::auth::{Caller, Role};
use crate::db::instances::{self as instances_db, InstanceRow};
use crate::db::recovery as db;
use crate::states::{InstanceState, OperationKind};

/// How long after a failed recovery an instance is tried again.
pub const RETRY_AFTER_SECS: i64 = 60;

/// An instance's DR policy.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrPolicyParams {
    /// 0 to 1000: when a host dies, its instances with the highest priority come back first.
    #[schema(minimum = 0, maximum = 1000)]
    pub priority: i64,
}

/// Gives an instance a DR policy (replacing the one it had); the instance as it is now.
pub async fn policy_set(
    app: &App,
    caller: &Caller,
    project: &str,
    instance: &str,
    params: DrPolicyParams,
) -> Result<InstanceRow, AppError> {
    let found = find(app, caller, project, instance, Role::Member).await?.1;
    let priority = i32::try_from(params.priority).ok().filter(|p| (0..=1000).contains(p));
    let priority =
        priority.ok_or_else(|| AppError::Unprocessable("priority: must be between 0 and 1000".to_owned()))?;
    let mut conn = app.pool.acquire().await?;
    db::dr_priority_set(&mut conn, found.id, Some(priority)).await?;
    tracing::info!(instance = %found.id, priority, "DR policy set");
    instances_db::instance_get_unchecked(&mut conn, found.id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no instance {instance:?} in this project")))
}

/// Removes an instance's DR policy (404 when it had none).
pub async fn policy_clear(app: &App, caller: &Caller, project: &str, instance: &str) -> Result<(), AppError> {
    let found = find(app, caller, project, instance, Role::Member).await?.1;
    if !db::dr_priority_set(&mut *app.pool.acquire().await?, found.id, None).await? {
        return Err(AppError::NotFound(format!("instance {instance:?} has no DR policy")));
    }
    Ok(())
}

/// One recovery pass (any replica: the candidates are row-locked, so each instance is
/// recovered once); starts at most `concurrency` recoveries in flight fleet-wide. Returns how
/// many it started.
pub async fn run_recovery(app: &App, concurrency: i64) -> Result<usize, AppError> {
    let mut tx = app.pool.begin().await?;
    let room = concurrency - db::recoveries_in_flight(&mut tx).await?;
    if room <= 0 {
        return Ok(0);
    }
    let due = db::candidates_locked(&mut tx, room, RETRY_AFTER_SECS).await?;
    let mut started = 0;
    for candidate in due {
        let id = candidate.id;
        let Some(snapshot) = db::latest_snapshot(&mut tx, id).await? else {
            db::no_snapshot(&mut tx, id).await?;
            continue;
        };
        // Off the dead host first: from now on it does not own the instance.
        crate::scheduler::reserve::release_instance(&mut tx, id).await.map_err(AppError::internal)?;
        let lost = [InstanceState::Lost];
        let Some(generation) = instances_db::instance_transition(&mut tx, id, &lost, InstanceState::Restoring).await?
        else {
            continue;
        };
        let on = Target { project: candidate.project_id, id, generation, snapshot_id: Some(snapshot) };
        let op = instance_operation(&mut tx, None, OperationKind::InstanceRecover, on, None, None).await?.id;
        tracing::warn!(instance = %id, %snapshot, priority = candidate.dr_priority, operation = %op,
            "recovering an instance of a dead host from its latest snapshot");
        started += 1;
    }
    tx.commit().await?;
    if started > 0 {
        app.executor.wake();
    }
    Ok(started)
}
