//! Operations as their callers see them: one, waiting for one to finish, a project's list. An
//! operation of a project the caller is not a member of (or a fleet operation, for a
//! non-operator) is not found, exactly like one that does not exist.

use std::time::Duration;

use tokio::time::Instant;

use super::{App, AppError, Window, projects};
use crate::auth::{Caller, Role};
use crate::db::identity::ProjectKey;
use crate::db::operations::{self as db, NewOperation, OperationRow};
use crate::ids::OperationId;

/// Longest a wait may block.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// One operation the caller may see.
pub async fn get(app: &App, caller: &Caller, id: OperationId) -> Result<OperationRow, AppError> {
    let not_found = || AppError::NotFound(format!("no operation {id}"));
    let op = db::operation_get(&mut *app.pool.acquire().await?, id).await?.ok_or_else(not_found)?;
    match op.project_id {
        Some(project) => {
            caller.require_role(&app.pool, ProjectKey::Id(project), Role::Viewer).await.map_err(|_| not_found())?;
        }
        None => caller.require_operator().map_err(|_| not_found())?,
    }
    Ok(op)
}

/// The operation once it has finished, or as it is after `timeout` (at most [`MAX_WAIT`]).
pub async fn wait(app: &App, caller: &Caller, id: OperationId, timeout: Duration) -> Result<OperationRow, AppError> {
    let deadline = Instant::now() + timeout.clamp(Duration::from_secs(1), MAX_WAIT);
    app.changes
        .watch(deadline, || async {
            let op = get(app, caller, id).await?;
            let finished = op.state.is_finished();
            Ok((op, finished))
        })
        .await
}

/// The project's operations in `window`, newest first.
pub async fn list(app: &App, caller: &Caller, project: &str, window: Window) -> Result<Vec<OperationRow>, AppError> {
    let project = projects::resolve(app, caller, project, Role::Viewer).await?;
    let after = window.after.map(|(at, id)| (at, OperationId::from(id)));
    Ok(db::operation_list(&mut *app.pool.acquire().await?, project, after, window.fetch).await?)
}

/// The answer to a request whose idempotency key a concurrent request is using.
pub(super) fn key_in_use() -> AppError {
    AppError::Conflict("this Idempotency-Key is being used by a concurrent request; retry".to_owned())
}

/// Records an operation and its steps inside the caller's transaction; an idempotency key
/// that a concurrent request is using is a conflict.
pub(super) async fn record(conn: &mut sqlx::PgConnection, new: &NewOperation<'_>) -> Result<OperationRow, AppError> {
    db::operation_create(conn, new).await.map_err(|err| {
        if err.as_database_error().is_some_and(|e| e.is_unique_violation()) { key_in_use() } else { err.into() }
    })
}
