//! Durable operations: every mutating API call becomes an `operations` row with named steps,
//! carried out here by whichever replica claims it.
//!
//! ```text
//!   pending ──claim──▶ running ──all steps done──▶ succeeded
//!                         │ a step fails for good
//!                         ▼
//!                      undoing ──undo done steps, newest first──▶ failed
//! ```
//!
//! - A replica claims an operation with a lease (`lease_owner`, `lease_expires_at`) and renews it
//!   while it works; a replica that dies stops renewing, and another one claims the operation
//!   once the lease lapses and carries on from the first step not recorded as done.
//! - Every step is idempotent (it may run again after a crash between doing it and recording
//!   it) and has an undo, which is idempotent too.
//! - A step that cannot make progress right now (an agent unreachable) asks to be retried later;
//!   the lease is released with a delay so the operation is picked up again.
//! - A replica drives up to `operations.concurrency` operations at once, so one slow boot does
//!   not hold up every other change; on a clean shutdown it hands its leases back at once.
//! - The executor has its own database connections (`operations.max_connections`, apart from
//!   the API's): requests never queue behind background work for a connection, and a burst of
//!   operations keeps at most that many statements running, so the API keeps its share of the
//!   database while creates pour in.
//!
//! - Retries are bounded: a step that still asks to be retried after its time limit
//!   (`step_timeout_secs`, or its own in `step_timeouts`) fails the operation with code
//!   `timeout` and a message naming the step and the last cause.
//! - A create or start is cancelled by deleting its instance: its next step finds the instance
//!   `deleting`, fails with code `cancelled`, and the operation ends `cancelled` once undone.
//!
//! ```toml
//! [operations]
//! lease_secs = 30      # CLOUD_OPERATIONS_LEASE_SECS: how long a claim lasts without renewal
//! concurrency = 32     # CLOUD_OPERATIONS_CONCURRENCY: operations one replica drives at once
//! max_connections = 2  # CLOUD_OPERATIONS_MAX_CONNECTIONS: the executor's own database connections
//! step_timeout_secs = 600    # CLOUD_OPERATIONS_STEP_TIMEOUT_SECS: how long a step may retry
//! step_timeouts = { ensure_on_host = 900 }   # per step name, overriding step_timeout_secs
//! ```

pub mod executor;
pub mod instances;
pub mod snapshots;

pub use executor::{Executor, OperationsConfig};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::app::App;
use crate::db::operations::{self as db, OperationRow};
use crate::error_chain::ErrorChain;
use crate::states::{OperationKind, OperationState, Step, StepState};

/// How often an idle executor looks for claimable operations without being notified.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// Why a step did not complete.
#[derive(Debug)]
pub enum StepError {
    /// Try the step again after `after` (e.g. the agent is unreachable).
    Retry { reason: String, after: Duration },
    /// The operation cannot succeed: undo what was done. `code` is an API error code.
    Fail { code: &'static str, message: String },
}

impl StepError {
    /// A database error: transient from the operation's point of view.
    pub fn db(err: &sqlx::Error) -> Self {
        Self::Retry { reason: format!("database: {err}"), after: Duration::from_secs(1) }
    }
}

impl Executor {
    /// Runs operations until `stop` resolves, up to `concurrency` at a time. Operations in flight
    /// when it does are handed back (their leases end now), so this or another replica resumes
    /// them; every step is idempotent, so one cut short is simply run again.
    pub async fn run(&self, app: Arc<App>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let mut running = JoinSet::new();
        loop {
            while running.try_join_next().is_some() {}
            let slot = tokio::select! {
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                () = &mut stop => break,
            };
            let claimed = match app.work_pool.acquire().await {
                Ok(mut conn) => db::operation_claim(&mut conn, &self.owner, self.lease.as_secs_f64()).await,
                Err(err) => Err(err),
            };
            match claimed {
                Ok(Some(op)) => {
                    let (this, app) = (self.clone(), app.clone());
                    let span = tracing::info_span!("operation", id = %op.id, kind = %op.kind);
                    if let Some(parent) = &op.traceparent {
                        cloud_common::telemetry::set_parent_traceparent(&span, parent);
                    }
                    running.spawn(
                        async move {
                            this.drive(&app, op).await;
                            drop(slot);
                        }
                        .instrument(span),
                    );
                    continue;
                }
                Ok(None) => drop(slot),
                Err(err) => {
                    drop(slot);
                    tracing::warn!(error = %ErrorChain(&err), "cannot claim operations");
                }
            }
            tokio::select! {
                () = self.notify.notified() => {}
                () = tokio::time::sleep(IDLE_POLL) => {}
                () = &mut stop => break,
            }
        }
        running.shutdown().await;
        let released = match app.work_pool.acquire().await {
            Ok(mut conn) => db::operation_release_owned(&mut conn, &self.owner).await,
            Err(err) => Err(err),
        };
        match released {
            Ok(0) => {}
            Ok(n) => tracing::info!(operations = n, "handed unfinished operations back for any replica to resume"),
            Err(err) => {
                tracing::warn!(error = %ErrorChain(&err), "cannot hand operations back; their leases will lapse")
            }
        }
    }

    /// Carries `op` as far as it goes, renewing the lease meanwhile; stops when the lease is lost.
    async fn drive(&self, app: &Arc<App>, op: OperationRow) {
        let renew = async {
            loop {
                tokio::time::sleep(self.lease / 3).await;
                let renewed = match app.work_pool.acquire().await {
                    Ok(mut conn) => db::operation_renew(&mut conn, op.id, &self.owner, self.lease.as_secs_f64()).await,
                    Err(err) => Err(err),
                };
                if !matches!(renewed, Ok(true)) {
                    tracing::warn!("lost the operation's lease; another replica may resume it");
                    return;
                }
            }
        };
        tokio::select! {
            result = self.steps(app, &op) => {
                if let Err(err) = result {
                    tracing::warn!(error = %ErrorChain(&err), "operation interrupted by a database error; will resume");
                    if let Ok(mut conn) = app.work_pool.acquire().await {
                        let _ = db::operation_retry_later(&mut conn, op.id, &self.owner, 1.0).await;
                    }
                }
            }
            () = renew => {}
        }
    }

    async fn steps(&self, app: &Arc<App>, op: &OperationRow) -> Result<(), sqlx::Error> {
        let mut undoing = op.state == OperationState::Undoing;
        let mut conn = app.work_pool.acquire().await?;
        let steps = db::operation_steps(&mut conn, op.id).await?;
        let todo: Vec<_> = steps.iter().filter(|s| !undoing && s.state != StepState::Done).collect();
        // The first step to run is recorded running on the same connection; each one after it
        // with the previous one's done, in one statement.
        if let Some(first) = todo.first() {
            db::step_set(&mut conn, op.id, first.idx, StepState::Running, None, None).await?;
        }
        drop(conn);
        if !undoing {
            // The output of the step done just before in this run.
            let mut prior: Option<serde_json::Value> = None;
            for (n, step) in todo.iter().enumerate() {
                tracing::info!(step = %step.name, "step");
                let limit = self.config.step_timeout(step.name);
                let attempt = std::time::Instant::now();
                let span = tracing::info_span!("step", step = %step.name);
                let outcome = match run_step(app, op, step.name, prior.take().as_ref()).instrument(span).await {
                    Err(StepError::Retry { reason, .. })
                        if step.running_secs.is_some_and(|secs| secs >= limit.as_secs_f64()) =>
                    {
                        Err(StepError::Fail {
                            code: "timeout",
                            message: format!(
                                "step {} did not succeed within {}s: {reason}",
                                step.name,
                                limit.as_secs()
                            ),
                        })
                    }
                    other => other,
                };
                let result = match &outcome {
                    Ok(_) => "done",
                    Err(StepError::Retry { .. }) => "retry",
                    Err(StepError::Fail { .. }) => "failed",
                };
                app.metrics.step_attempted(op.kind.as_str(), step.name.as_str(), result, attempt.elapsed());
                match outcome {
                    Ok(output) => {
                        crate::fault::crash_point(&format!("{}/unrecorded", step.name));
                        let next = todo.get(n + 1).map(|s| s.idx);
                        db::step_advance(&mut *app.work_pool.acquire().await?, op.id, step.idx, output.as_ref(), next)
                            .await?;
                        crate::fault::crash_point(step.name.as_str());
                        prior = output;
                    }
                    Err(StepError::Retry { reason, after }) => {
                        tracing::info!(step = %step.name, %reason, retry_in = ?after, "step will be retried");
                        db::operation_retry_later(
                            &mut *app.work_pool.acquire().await?,
                            op.id,
                            &self.owner,
                            after.as_secs_f64(),
                        )
                        .await?;
                        return Ok(());
                    }
                    Err(StepError::Fail { code, message }) => {
                        tracing::warn!(step = %step.name, %message, "step failed; undoing the operation");
                        let mut conn = app.work_pool.acquire().await?;
                        db::step_set(&mut conn, op.id, step.idx, StepState::Failed, None, Some(&message)).await?;
                        db::operation_start_undo(&mut conn, op.id, code, &message).await?;
                        undoing = true;
                        break;
                    }
                }
            }
        }
        if !undoing {
            let mut conn = app.work_pool.acquire().await?;
            if let Err(err) = on_success(&mut conn, op).await {
                drop(conn);
                return self.later(app, op, err).await;
            }
            db::operation_finish(&mut conn, op.id, OperationState::Succeeded).await?;
            drop(conn);
            app.metrics.operation_finished(op.kind.as_str(), OperationState::Succeeded.as_str());
            app.changes.notify();
            tracing::info!("operation succeeded");
            return Ok(());
        }
        // Undo every step that was done (or may have been half done), newest first.
        let mut conn = app.work_pool.acquire().await?;
        let steps = db::operation_steps(&mut conn, op.id).await?;
        drop(conn);
        for step in steps.iter().rev().filter(|s| {
            matches!(s.state, StepState::Done | StepState::Running | StepState::Undoing | StepState::Failed)
        }) {
            db::step_set(&mut *app.work_pool.acquire().await?, op.id, step.idx, StepState::Undoing, None, None).await?;
            match undo_step(app, op, step.name, step.output.as_ref()).await {
                Ok(()) => {
                    db::step_set(&mut *app.work_pool.acquire().await?, op.id, step.idx, StepState::Undone, None, None)
                        .await?
                }
                Err(StepError::Retry { reason, .. })
                    if db::operation_undoing_secs(&mut *app.work_pool.acquire().await?, op.id).await?
                        >= self.config.step_timeout(step.name).as_secs_f64() =>
                {
                    // Bounded like every step: what could not be undone is said, not retried forever.
                    let note = format!("undoing step {} was abandoned: {reason}", step.name);
                    tracing::warn!(step = %step.name, %reason, "undo abandoned after its time limit");
                    let mut conn = app.work_pool.acquire().await?;
                    db::step_set(&mut conn, op.id, step.idx, StepState::Failed, None, Some(&note)).await?;
                    db::operation_append_error(&mut conn, op.id, &note).await?;
                }
                Err(err) => return self.later(app, op, err).await,
            }
        }
        let mut conn = app.work_pool.acquire().await?;
        let reason = db::operation_get(&mut conn, op.id).await?.and_then(|o| o.error_message).unwrap_or_default();
        drop(conn);
        let cancelled = db::operation_get(&mut *app.work_pool.acquire().await?, op.id)
            .await?
            .is_some_and(|o| o.error_code.as_deref() == Some("cancelled"));
        if !cancelled && let Err(err) = on_failure(app, op, &reason).await {
            return self.later(app, op, err).await;
        }
        let end = if cancelled { OperationState::Cancelled } else { OperationState::Failed };
        db::operation_finish(&mut *app.work_pool.acquire().await?, op.id, end).await?;
        app.metrics.operation_finished(op.kind.as_str(), end.as_str());
        app.changes.notify();
        tracing::info!(state = %end, "operation ended and was undone");
        Ok(())
    }

    /// Leaves the operation for a later attempt (an undo or bookkeeping step could not finish).
    async fn later(&self, app: &Arc<App>, op: &OperationRow, err: StepError) -> Result<(), sqlx::Error> {
        let (reason, after) = match err {
            StepError::Retry { reason, after } => (reason, after),
            StepError::Fail { message, .. } => (message, Duration::from_secs(5)),
        };
        tracing::warn!(%reason, retry_in = ?after, "operation will be resumed later");
        db::operation_retry_later(&mut *app.work_pool.acquire().await?, op.id, &self.owner, after.as_secs_f64()).await
    }
}

/// The steps of an operation kind.
pub fn steps(kind: OperationKind) -> &'static [Step] {
    if kind.is_snapshot() { snapshots::steps(kind) } else { instances::steps(kind) }
}

async fn run_step(
    app: &Arc<App>,
    op: &OperationRow,
    step: Step,
    prior: Option<&serde_json::Value>,
) -> Result<Option<serde_json::Value>, StepError> {
    if op.kind.is_snapshot() {
        snapshots::run_step(app, op, step).await
    } else {
        instances::run_step(app, op, step, prior).await
    }
}

async fn undo_step(
    app: &Arc<App>,
    op: &OperationRow,
    step: Step,
    output: Option<&serde_json::Value>,
) -> Result<(), StepError> {
    if op.kind.is_snapshot() {
        snapshots::undo_step(app, op, step).await
    } else {
        instances::undo_step(app, op, step, output).await
    }
}

async fn on_success(conn: &mut sqlx::PgConnection, op: &OperationRow) -> Result<(), StepError> {
    if op.kind.is_snapshot() { snapshots::on_success(conn, op).await } else { instances::on_success(conn, op).await }
}

async fn on_failure(app: &Arc<App>, op: &OperationRow, reason: &str) -> Result<(), StepError> {
    if op.kind.is_snapshot() {
        snapshots::on_failure(app, op, reason).await
    } else {
        instances::on_failure(app, op, reason).await
    }
}

/// The agent of `host`, or `None` when it cannot be called (unknown, or dead: a dead host that
/// returns cleans up by itself).
pub(crate) async fn host_agent(
    app: &App,
    host: crate::ids::HostId,
) -> Result<Option<crate::agents::AgentClient>, StepError> {
    let mut conn = app.work_pool.acquire().await.map_err(|e| StepError::db(&e))?;
    let row = crate::db::hosts::host_get(&mut conn, host.0).await.map_err(|e| StepError::db(&e))?;
    let Some(row) = row.filter(|h| h.state != crate::states::HostState::Dead) else { return Ok(None) };
    app.agents
        .client(&app.fleet, host, &row.agent_endpoint)
        .map(Some)
        .map_err(|e| StepError::Fail { code: "host_error", message: e.to_string() })
}
