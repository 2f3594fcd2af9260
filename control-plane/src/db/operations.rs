//! SQL for durable operations and their steps.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::ids::{OperationId, ProjectId, UserId};
use crate::states::{OperationKind, OperationState, Step, StepState};

/// An operation as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OperationRow {
    pub id: OperationId,
    pub project_id: Option<ProjectId>,
    #[sqlx(try_from = "String")]
    pub kind: OperationKind,
    pub target_kind: String,
    pub target_id: Option<uuid::Uuid>,
    #[sqlx(try_from = "String")]
    pub state: OperationState,
    /// The step being carried out (or the last one), for progress displays.
    pub current_step: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    #[schema(ignore)]
    pub params: serde_json::Value,
    #[serde(skip)]
    #[schema(ignore)]
    pub request_hash: Option<Vec<u8>>,
    /// The trace this operation belongs to (W3C trace id, 32 hex digits), when the control
    /// plane exports traces: its request, steps and the host agents' work are spans of it.
    pub trace_id: Option<String>,
    #[serde(skip)]
    #[schema(ignore)]
    pub traceparent: Option<String>,
}

const COLUMNS: &str = "o.id, o.project_id, o.kind, o.target_kind, o.target_id, o.state, \
    (SELECT s.name FROM operation_steps s WHERE s.operation_id = o.id AND s.state <> 'pending' ORDER BY s.idx DESC LIMIT 1) AS current_step, \
    o.error_code, o.error_message, o.attempts, o.created_at, o.updated_at, o.finished_at, o.params, o.request_hash, \
    NULLIF(split_part(o.traceparent, '-', 2), '') AS trace_id, o.traceparent";

/// A new operation.
#[derive(Debug, Clone)]
pub struct NewOperation<'a> {
    pub project_id: Option<ProjectId>,
    pub kind: OperationKind,
    pub target_kind: &'a str,
    pub target_id: Option<uuid::Uuid>,
    pub params: serde_json::Value,
    pub created_by: Option<UserId>,
    pub idempotency_key: Option<&'a str>,
    pub request_hash: Option<Vec<u8>>,
    pub steps: &'a [Step],
}

/// Inserts an operation and its steps (pending), in one statement; the operation as inserted.
/// Call inside the transaction that makes the change the operation carries out, so both exist
/// or neither does.
pub async fn operation_create(conn: &mut PgConnection, new: &NewOperation<'_>) -> Result<OperationRow, sqlx::Error> {
    let inserting = Inserting::new(new);
    let (created_at,) = inserting
        .bind(sqlx::query_as(&format!("WITH {} SELECT o.created_at FROM o", Inserting::ctes(1, None))))
        .fetch_one(conn)
        .await?;
    Ok(inserting.row(created_at))
}

/// An operation on its way into a statement that inserts it: its values bound from one
/// parameter on ([`Inserting::bind`]), the statement's CTEs ([`Inserting::ctes`]), and the row
/// as inserted ([`Inserting::row`]). A statement inserting something else may insert its
/// operation in the same statement, so the change and its operation are one round trip.
#[derive(Debug)]
pub struct Inserting<'a> {
    id: OperationId,
    new: &'a NewOperation<'a>,
    /// The span creating it (a request's, a reconciler's): the operation continues its trace.
    traceparent: Option<String>,
}

impl<'a> Inserting<'a> {
    /// How many parameters [`Inserting::bind`] binds.
    pub const PARAMETERS: usize = 11;

    pub fn new(new: &'a NewOperation<'a>) -> Self {
        Self { id: OperationId::new(), new, traceparent: cloud_common::telemetry::traceparent() }
    }

    /// CTEs `o` (the operation: its `id` and `created_at`) and `s` (its steps, numbered from 0
    /// in order), with parameters `$first` on. One operation for each row of the CTE `from`
    /// (`None`: one): a statement inserts the operation only if it inserts what it acts on.
    pub fn ctes(first: usize, from: Option<&str>) -> String {
        let p = super::placeholders(first, Self::PARAMETERS);
        let from = from.map(|cte| format!(" FROM {cte}")).unwrap_or_default();
        format!(
            "o AS (
               INSERT INTO operations (id, project_id, kind, target_kind, target_id, params, created_by,
                                       idempotency_key, request_hash, traceparent)
               SELECT {}{from}
               RETURNING id, created_at),
             s AS (
               INSERT INTO operation_steps (operation_id, idx, name)
               SELECT o.id, n - 1, name FROM o, unnest({}::text[]) WITH ORDINALITY AS s(name, n))",
            p[..10].join(", "),
            p[10],
        )
    }

    /// Binds the operation's values, in the order [`Inserting::ctes`] reads them.
    pub fn bind<'q, O>(
        &'q self,
        query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        let names: Vec<&str> = self.new.steps.iter().map(|step| step.as_str()).collect();
        query
            .bind(self.id)
            .bind(self.new.project_id)
            .bind(self.new.kind.as_str())
            .bind(self.new.target_kind)
            .bind(self.new.target_id)
            .bind(&self.new.params)
            .bind(self.new.created_by)
            .bind(self.new.idempotency_key)
            .bind(&self.new.request_hash)
            .bind(&self.traceparent)
            .bind(names)
    }

    /// The operation as inserted at `created_at`: pending, no step begun, never attempted.
    pub fn row(self, created_at: DateTime<Utc>) -> OperationRow {
        let new = self.new;
        OperationRow {
            id: self.id,
            project_id: new.project_id,
            kind: new.kind,
            target_kind: new.target_kind.to_owned(),
            target_id: new.target_id,
            state: OperationState::Pending,
            current_step: None,
            error_code: None,
            error_message: None,
            attempts: 0,
            created_at,
            updated_at: created_at,
            finished_at: None,
            params: new.params.clone(),
            request_hash: new.request_hash.clone(),
            trace_id: self.traceparent.as_deref().and_then(cloud_common::telemetry::trace_id).map(str::to_owned),
            traceparent: self.traceparent,
        }
    }
}

/// The operation a user created earlier with this idempotency key, if any.
pub async fn operation_by_idempotency_key(
    conn: &mut PgConnection,
    user: UserId,
    key: &str,
) -> Result<Option<OperationRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM operations o WHERE o.created_by = $1 AND o.idempotency_key = $2"))
        .bind(user)
        .bind(key)
        .fetch_optional(conn)
        .await
}

/// One operation.
pub async fn operation_get(conn: &mut PgConnection, id: OperationId) -> Result<Option<OperationRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM operations o WHERE o.id = $1")).bind(id).fetch_optional(conn).await
}

/// The operations of a project, newest first, after the cursor `(created_at, id)`.
pub async fn operation_list(
    conn: &mut PgConnection,
    project: ProjectId,
    after: Option<(DateTime<Utc>, OperationId)>,
    limit: i64,
) -> Result<Vec<OperationRow>, sqlx::Error> {
    let (at, id) = after.map_or((None, None), |(a, i)| (Some(a), Some(i)));
    let from = super::page_from(after.is_some(), "o.created_at, o.id", "<", 2);
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM operations o WHERE o.project_id = $1 {from}
         ORDER BY o.created_at DESC, o.id DESC LIMIT $4"
    ))
    .bind(project)
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Claims the oldest runnable operation whose lease is free (or lapsed), for `lease_secs`.
/// `SKIP LOCKED` lets replicas claim different operations at the same time.
pub async fn operation_claim(
    conn: &mut PgConnection,
    owner: &str,
    lease_secs: f64,
) -> Result<Option<OperationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE operations AS o SET lease_owner = $1, lease_expires_at = now() + make_interval(secs => $2),
                state = CASE WHEN o.state = 'pending' THEN 'running' ELSE o.state END,
                attempts = o.attempts + 1, updated_at = now()
         WHERE o.id = (SELECT id FROM operations
                       WHERE state IN ('pending', 'running', 'undoing')
                         AND (lease_expires_at IS NULL OR lease_expires_at < now())
                       ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING {COLUMNS}"
    ))
    .bind(owner)
    .bind(lease_secs)
    .fetch_optional(conn)
    .await
}

/// Extends the lease while `owner` still holds it; false when it was lost.
pub async fn operation_renew(
    conn: &mut PgConnection,
    id: OperationId,
    owner: &str,
    lease_secs: f64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE operations SET lease_expires_at = now() + make_interval(secs => $3)
         WHERE id = $1 AND lease_owner = $2 AND state IN ('running', 'undoing')",
    )
    .bind(id)
    .bind(owner)
    .bind(lease_secs)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Releases the lease and makes the operation claimable again after `delay_secs`.
pub async fn operation_retry_later(
    conn: &mut PgConnection,
    id: OperationId,
    owner: &str,
    delay_secs: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE operations SET lease_owner = NULL, lease_expires_at = now() + make_interval(secs => $3), updated_at = now()
         WHERE id = $1 AND lease_owner = $2",
    )
    .bind(id)
    .bind(owner)
    .bind(delay_secs)
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends every lease `owner` holds (a clean shutdown), so any replica resumes those operations
/// now rather than when the leases would have lapsed. Returns how many there were.
pub async fn operation_release_owned(conn: &mut PgConnection, owner: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE operations SET lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
         WHERE lease_owner = $1 AND state IN ('pending', 'running', 'undoing')",
    )
    .bind(owner)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// A step's recorded state.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StepRow {
    pub idx: i16,
    #[sqlx(try_from = "String")]
    pub name: Step,
    #[sqlx(try_from = "String")]
    pub state: StepState,
    pub output: Option<serde_json::Value>,
    /// Seconds since the step first started (null: never started).
    pub running_secs: Option<f64>,
}

/// The steps of an operation, in order.
pub async fn operation_steps(conn: &mut PgConnection, id: OperationId) -> Result<Vec<StepRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT idx, name, state, output, EXTRACT(EPOCH FROM now() - started_at)::float8 AS running_secs
         FROM operation_steps WHERE operation_id = $1 ORDER BY idx",
    )
    .bind(id)
    .fetch_all(conn)
    .await
}

/// Records a step's new state (and output or error).
pub async fn step_set(
    conn: &mut PgConnection,
    id: OperationId,
    idx: i16,
    state: StepState,
    output: Option<&serde_json::Value>,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE operation_steps SET state = $3, output = COALESCE($4, output), error = $5,
                started_at = COALESCE(started_at, now()),
                finished_at = CASE WHEN $3 IN ('done', 'undone', 'failed') THEN now() ELSE NULL END
         WHERE operation_id = $1 AND idx = $2",
    )
    .bind(id)
    .bind(idx)
    .bind(state.as_str())
    .bind(output)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records step `done` of operation `id` done with its output and, in the same statement,
/// step `next` (if any) running: one round trip between two steps.
pub async fn step_advance(
    conn: &mut PgConnection,
    id: OperationId,
    done: i16,
    output: Option<&serde_json::Value>,
    next: Option<i16>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE operation_steps
         SET state = CASE WHEN idx = $2 THEN 'done' ELSE 'running' END,
             output = CASE WHEN idx = $2 THEN COALESCE($3, output) ELSE output END,
             error = NULL,
             started_at = COALESCE(started_at, now()),
             finished_at = CASE WHEN idx = $2 THEN now() END
         WHERE operation_id = $1 AND (idx = $2 OR idx = $4)",
    )
    .bind(id)
    .bind(done)
    .bind(output)
    .bind(next)
    .execute(conn)
    .await?;
    Ok(())
}

/// Seconds since the operation began undoing (0 when it has not).
pub async fn operation_undoing_secs(conn: &mut PgConnection, id: OperationId) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(EXTRACT(EPOCH FROM now() - undo_started_at)::float8, 0) FROM operations WHERE id = $1",
    )
    .bind(id)
    .fetch_one(conn)
    .await
}

/// Adds a sentence to an operation's error message (e.g. an undo that had to be abandoned).
pub async fn operation_append_error(conn: &mut PgConnection, id: OperationId, note: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE operations SET error_message = COALESCE(error_message || '; ', '') || $2 WHERE id = $1")
        .bind(id)
        .bind(note)
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves an operation to `undoing` with the error that caused it.
pub async fn operation_start_undo(
    conn: &mut PgConnection,
    id: OperationId,
    code: &str,
    message: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE operations SET state = 'undoing', error_code = $2, error_message = $3, updated_at = now(),
                undo_started_at = COALESCE(undo_started_at, now())
         WHERE id = $1",
    )
    .bind(id)
    .bind(code)
    .bind(message)
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends an operation (`succeeded` or `failed`) and releases its lease.
pub async fn operation_finish(
    conn: &mut PgConnection,
    id: OperationId,
    state: OperationState,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE operations SET state = $2, finished_at = now(), updated_at = now(), lease_owner = NULL, lease_expires_at = NULL
         WHERE id = $1",
    )
    .bind(id)
    .bind(state.as_str())
    .execute(conn)
    .await?;
    Ok(())
}
