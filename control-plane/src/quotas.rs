//! Per-project quotas: how many instances, vCPUs, bytes of memory and disk, and snapshots a
//! project may hold. A create, restore or snapshot that would go over one is refused with 403
//! `quota_exceeded` naming it, and changes nothing.
//!
//! ```text
//!  snapshot ─▶ tx: usage + this one > quota? (one read, no lock) ─▶ refused, naming the quota
//!              └▶ insert ─▶ commit: a deferred trigger adds it to the project's usage row and
//!                 refuses (CQ001, the same message) what a concurrent request took meanwhile
//!  create, restore ─▶ one statement: quotas handed over, instance inserted ─▶ commit: the same
//!                     trigger, the one check (nothing to read first: one round trip less)
//! ```
//! `project_usage` is kept by triggers on `instances` and `snapshots` (migration 0032): every
//! change of what a project holds, whichever code path makes it, is counted in its transaction,
//! and the row is locked only while that transaction commits.
//! The defaults come from `[quotas]`; an operator sets a project's own (`PUT
//! /v1/projects/{project}/quotas`). 0 is no limit: a project whose quotas are all 0 takes no lock.
//!
//! ```toml
//! [quotas]
//! instances = 1000            # CLOUD_QUOTAS_INSTANCES
//! vcpus = 4096                # CLOUD_QUOTAS_VCPUS
//! memory_gib = 16384          # CLOUD_QUOTAS_MEMORY_GIB
//! disk_gib = 262144           # CLOUD_QUOTAS_DISK_GIB
//! snapshots = 10000           # CLOUD_QUOTAS_SNAPSHOTS
//! ```

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::ids::ProjectId;

/// `[quotas]` configuration: the defaults of every project (0: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotasConfig {
    pub instances: u32,
    pub vcpus: u32,
    pub memory_gib: u64,
    pub disk_gib: u64,
    pub snapshots: u32,
}

impl Default for QuotasConfig {
    fn default() -> Self {
        Self { instances: 1000, vcpus: 4096, memory_gib: 16384, disk_gib: 262_144, snapshots: 10_000 }
    }
}

/// A project's quotas (0: no limit) or usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Amounts {
    pub instances: i64,
    pub vcpus: i64,
    pub memory_bytes: i64,
    pub disk_bytes: i64,
    pub snapshots: i64,
}

impl QuotasConfig {
    /// The defaults as amounts.
    pub fn amounts(&self) -> Amounts {
        let bytes = |gib: u64| i64::try_from(gib.saturating_mul(1 << 30)).unwrap_or(i64::MAX);
        Amounts {
            instances: i64::from(self.instances),
            vcpus: i64::from(self.vcpus),
            memory_bytes: bytes(self.memory_gib),
            disk_bytes: bytes(self.disk_gib),
            snapshots: i64::from(self.snapshots),
        }
    }
}

/// Why a request is over a quota: which one, its limit, what the project holds, what it asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quota exceeded: project {project} may hold at most {limit} {what} (quotas.{key}); it holds {used} and this needs {asked} more"
)]
pub struct QuotaExceeded {
    pub project: String,
    pub key: &'static str,
    pub what: &'static str,
    pub limit: i64,
    pub used: i64,
    pub asked: i64,
}

/// What a request adds.
pub type Ask = Amounts;

/// Sets a project's own quotas (`None`: back to the default).
pub async fn set(conn: &mut PgConnection, project: ProjectId, quotas: &Settable) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projects SET quota_instances = $2, quota_vcpus = $3, quota_memory_bytes = $4,
                quota_disk_bytes = $5, quota_snapshots = $6, updated_at = now() WHERE id = $1",
    )
    .bind(project)
    .bind(quotas.instances)
    .bind(quotas.vcpus)
    .bind(quotas.memory_bytes)
    .bind(quotas.disk_bytes)
    .bind(quotas.snapshots)
    .execute(conn)
    .await?;
    Ok(())
}

/// A project's own quotas as an operator sets them: each absent one takes the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Settable {
    #[schema(minimum = 0)]
    pub instances: Option<i32>,
    #[schema(minimum = 0)]
    pub vcpus: Option<i32>,
    #[schema(minimum = 0)]
    pub memory_bytes: Option<i64>,
    #[schema(minimum = 0)]
    pub disk_bytes: Option<i64>,
    #[schema(minimum = 0)]
    pub snapshots: Option<i32>,
}

fn amounts((instances, vcpus, memory_bytes, disk_bytes, snapshots): (i64, i64, i64, i64, i64)) -> Amounts {
    Amounts { instances, vcpus, memory_bytes, disk_bytes, snapshots }
}

/// A project as its quotas see it: its name, its quotas (its own, else `defaults`; 0: no limit)
/// and what it holds now (kept in `project_usage` by triggers: one row whatever its size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub name: String,
    pub limits: Amounts,
    pub usage: Amounts,
}

/// The project's [`Standing`] in one statement, without a lock; `None` when there is no such
/// project. Inside a transaction it also hands the effective quotas to it (`cloud.quotas`), so
/// the usage triggers refuse at commit (SQLSTATE `CQ001`, [`from_database`]) what concurrent
/// requests of the project took meanwhile; outside one that setting ends with the statement.
pub async fn standing(
    conn: &mut PgConnection,
    project: ProjectId,
    defaults: &Amounts,
) -> Result<Option<Standing>, sqlx::Error> {
    type Row = (String, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64);
    let row: Option<Row> = bind_defaults(
        sqlx::query_as(&format!(
            "SELECT p.name, q.instances, q.vcpus, q.memory_bytes, q.disk_bytes, q.snapshots,
                    COALESCE(u.instances, 0), COALESCE(u.vcpus, 0), COALESCE(u.memory_bytes, 0),
                    COALESCE(u.disk_bytes, 0), COALESCE(u.snapshots, 0)
             FROM projects p {handed_over}
             LEFT JOIN project_usage u ON u.project_id = p.id
             WHERE p.id = $1",
            handed_over = handed_over(2)
        ))
        .bind(project),
        defaults,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(name, li, lv, lm, ld, ls, ui, uv, um, ud, us)| Standing {
        name,
        limits: amounts((li, lv, lm, ld, ls)),
        usage: amounts((ui, uv, um, ud, us)),
    }))
}

/// SQL joined to a project row `p`: its effective quotas `q` (its own, else the defaults bound
/// from `$first` on by [`bind_defaults`]), handed to the transaction as `cloud.quotas` (column
/// `c`) for the usage triggers to check at commit.
pub fn handed_over(first: usize) -> String {
    let d = crate::db::placeholders(first, 5);
    format!(
        "CROSS JOIN LATERAL (SELECT COALESCE(p.quota_instances, {})::bigint AS instances,
                                    COALESCE(p.quota_vcpus, {})::bigint AS vcpus,
                                    COALESCE(p.quota_memory_bytes, {}) AS memory_bytes,
                                    COALESCE(p.quota_disk_bytes, {}) AS disk_bytes,
                                    COALESCE(p.quota_snapshots, {})::bigint AS snapshots) q
         CROSS JOIN LATERAL set_config('cloud.quotas',
             json_build_object('project', p.id, 'name', p.name, 'instances', q.instances, 'vcpus', q.vcpus,
                               'memory_bytes', q.memory_bytes, 'disk_bytes', q.disk_bytes,
                               'snapshots', q.snapshots)::text, true) AS c",
        d[0], d[1], d[2], d[3], d[4]
    )
}

/// Binds the default quotas, in the order [`handed_over`] reads them.
pub fn bind_defaults<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    defaults: &Amounts,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(defaults.instances)
        .bind(defaults.vcpus)
        .bind(defaults.memory_bytes)
        .bind(defaults.disk_bytes)
        .bind(defaults.snapshots)
}

/// Checks that `ask` fits the project's quotas, in the caller's transaction, without a lock
/// (see [`standing`]: the triggers hold the line at commit). `Ok(Err(_))` names the first quota
/// it would exceed.
pub async fn check(
    conn: &mut PgConnection,
    project: ProjectId,
    defaults: &Amounts,
    ask: &Ask,
) -> Result<Result<(), QuotaExceeded>, sqlx::Error> {
    let Some(Standing { name, limits: l, usage: u }) = standing(conn, project, defaults).await? else {
        return Ok(Ok(()));
    };
    let checks = [
        ("instances", "instances", l.instances, u.instances, ask.instances),
        ("vcpus", "vCPUs", l.vcpus, u.vcpus, ask.vcpus),
        ("memory_bytes", "bytes of memory", l.memory_bytes, u.memory_bytes, ask.memory_bytes),
        ("disk_bytes", "bytes of disk", l.disk_bytes, u.disk_bytes, ask.disk_bytes),
        ("snapshots", "snapshots", l.snapshots, u.snapshots, ask.snapshots),
    ];
    for (key, what, limit, used, asked) in checks {
        if limit > 0 && asked > 0 && used.saturating_add(asked) > limit {
            return Ok(Err(QuotaExceeded { project: name, key, what, limit, used, asked }));
        }
    }
    Ok(Ok(()))
}

/// The SQLSTATE of a change the usage triggers refused (migration 0032).
pub const SQLSTATE: &str = "CQ001";

/// The message of a quota the database refused at commit, if that is what `err` is.
pub fn from_database(err: &sqlx::Error) -> Option<String> {
    let db = err.as_database_error()?;
    (db.code().as_deref() == Some(SQLSTATE)).then(|| db.message().to_owned())
}
