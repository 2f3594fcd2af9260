//! SQL for hosts and join tokens.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::states::HostState;
use cloud_common::net::Ipv4Net;

/// A host as the control plane records it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct HostRow {
    pub id: Uuid,
    pub hostname: String,
    pub agent_endpoint: String,
    #[sqlx(try_from = "String")]
    pub state: HostState,
    /// An operator asked that no new instances be placed here (kept while suspect).
    pub draining: bool,
    pub accelerator: String,
    pub total_vcpus: i32,
    pub total_memory_bytes: i64,
    pub total_disk_bytes: i64,
    pub reserved_vcpus: i32,
    pub reserved_memory_bytes: i64,
    pub reserved_disk_bytes: i64,
    pub instance_subnet: String,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub last_report_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const HOST_COLUMNS: &str = "id, hostname, agent_endpoint, state, draining, accelerator, total_vcpus, total_memory_bytes, \
    total_disk_bytes, reserved_vcpus, reserved_memory_bytes, reserved_disk_bytes, instance_subnet::text AS instance_subnet, \
    lease_expires_at, last_report_at, created_at";

/// What a joining host tells about itself.
#[derive(Debug, Clone)]
pub struct NewHost {
    pub hostname: String,
    pub agent_endpoint: String,
    pub accelerator: String,
    pub total_vcpus: i32,
    pub total_memory_bytes: i64,
    pub total_disk_bytes: i64,
}

/// Why a join was refused.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("unknown join token")]
    UnknownToken,
    #[error("the join token was already used")]
    TokenUsed,
    #[error("the join token has expired")]
    TokenExpired,
    #[error("the instance subnet pool {pool} has no free /24 left")]
    PoolExhausted { pool: Ipv4Net },
    #[error("database")]
    Db(#[from] sqlx::Error),
}

/// Records a new join token (only its hash).
pub async fn join_token_create(
    conn: &mut PgConnection,
    token_hash: &[u8],
    created_by: Option<Uuid>,
    expires_at: DateTime<Utc>,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO host_join_tokens (id, token_hash, created_by, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(token_hash)
        .bind(created_by)
        .bind(expires_at)
        .execute(conn)
        .await?;
    Ok(id)
}

/// Consumes a join token and creates the host with the lowest free /24 of `pool`, in one
/// transaction: a token can admit exactly one host, and two joins never share a subnet. Joins
/// choose subnets one at a time (an advisory lock), so a thousand hosts joining at once all
/// succeed; the unique index stays the backstop (the loser retries with the next subnet).
pub async fn host_join(
    pool: &PgPool,
    token_hash: &[u8],
    host: &NewHost,
    subnets: Ipv4Net,
) -> Result<HostRow, JoinError> {
    const ATTEMPTS: usize = 8;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        match host_join_once(pool, token_hash, host, subnets).await {
            Err(JoinError::Db(err)) if is_unique_violation(&err, "hosts_instance_subnet_key") => last = Some(err),
            other => return other,
        }
    }
    Err(JoinError::Db(last.unwrap_or(sqlx::Error::PoolTimedOut)))
}

/// The advisory lock that serializes subnet choices of joins (ASCII "SUBN").
const SUBNET_LOCK: i64 = 0x5355_424E;

async fn host_join_once(
    pool: &PgPool,
    token_hash: &[u8],
    host: &NewHost,
    subnets: Ipv4Net,
) -> Result<HostRow, JoinError> {
    let mut tx = pool.begin().await?;
    // Lock the token row first so two joins with the same token serialize here.
    let token: Option<(Uuid, Option<DateTime<Utc>>, bool)> = sqlx::query_as(
        "SELECT id, used_at, expires_at <= now() FROM host_join_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(token_hash)
    .fetch_optional(&mut *tx)
    .await?;
    let token_id = match token {
        None => return Err(JoinError::UnknownToken),
        Some((_, Some(_), _)) => return Err(JoinError::TokenUsed),
        Some((_, None, true)) => return Err(JoinError::TokenExpired),
        Some((id, None, false)) => id,
    };
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SUBNET_LOCK).execute(&mut *tx).await?;
    let used: Vec<String> = sqlx::query_scalar("SELECT instance_subnet::text FROM hosts").fetch_all(&mut *tx).await?;
    let used: Vec<Ipv4Net> = used.iter().filter_map(|s| s.parse().ok()).collect();
    let subnet = subnets.first_free_24(used.iter()).ok_or(JoinError::PoolExhausted { pool: subnets })?;
    let id = Uuid::new_v4();
    let row: HostRow = sqlx::query_as(&format!(
        "INSERT INTO hosts (id, hostname, agent_endpoint, accelerator, total_vcpus, total_memory_bytes, total_disk_bytes, instance_subnet)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::cidr) RETURNING {HOST_COLUMNS}"
    ))
    .bind(id)
    .bind(&host.hostname)
    .bind(&host.agent_endpoint)
    .bind(&host.accelerator)
    .bind(host.total_vcpus)
    .bind(host.total_memory_bytes)
    .bind(host.total_disk_bytes)
    .bind(subnet.to_string())
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("UPDATE host_join_tokens SET used_at = now(), host_id = $2 WHERE id = $1")
        .bind(token_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(row)
}

/// What a report changed.
#[derive(Debug, Clone)]
pub struct LeaseRenewal {
    pub state: HostState,
    /// The state before the report (`dead`: the host was taken back).
    pub previous_state: HostState,
    pub lease_expires_at: DateTime<Utc>,
}

/// Renews a host's lease from a report and updates its capacity; a joining, suspect or dead
/// host becomes active (or draining): a host declared dead is taken back with its identity,
/// subnet and addresses, and its lost instances return as it reports them. `None` for an
/// unknown host. One host of [`hosts_report`].
pub async fn host_report(
    conn: &mut PgConnection,
    host_id: Uuid,
    capacity: (i32, i64, i64),
    lease_secs: u32,
) -> Result<Option<LeaseRenewal>, sqlx::Error> {
    let renewed = hosts_report(conn, &[HostCapacity { host_id, capacity }], lease_secs).await?;
    Ok(renewed.into_iter().next().map(|(_, renewal)| renewal))
}

/// A host's report of its capacity (vCPUs, memory bytes, disk bytes).
#[derive(Debug, Clone, Copy)]
pub struct HostCapacity {
    pub host_id: Uuid,
    pub capacity: (i32, i64, i64),
}

/// [`host_report`] for many hosts in one statement (a batch of reports; each host once). The
/// rows are locked in id order, so two batches never deadlock. Returns the known hosts'
/// renewals; unknown ones are absent.
pub async fn hosts_report(
    conn: &mut PgConnection,
    reports: &[HostCapacity],
    lease_secs: u32,
) -> Result<Vec<(Uuid, LeaseRenewal)>, sqlx::Error> {
    let ids: Vec<Uuid> = reports.iter().map(|r| r.host_id).collect();
    let vcpus: Vec<i32> = reports.iter().map(|r| r.capacity.0).collect();
    let memory: Vec<i64> = reports.iter().map(|r| r.capacity.1).collect();
    let disk: Vec<i64> = reports.iter().map(|r| r.capacity.2).collect();
    let rows: Vec<(Uuid, String, String, DateTime<Utc>)> = sqlx::query_as(
        "WITH r AS (SELECT * FROM unnest($1::uuid[], $3::int[], $4::bigint[], $5::bigint[]) AS r(id, vcpus, memory, disk)),
              before AS (SELECT h.id, h.state AS previous_state FROM hosts h
                         WHERE h.id = ANY($1) ORDER BY h.id FOR UPDATE)
         UPDATE hosts SET
             lease_expires_at = now() + make_interval(secs => $2),
             last_report_at = now(),
             state = CASE WHEN state IN ('joining', 'suspect', 'dead') THEN (CASE WHEN draining THEN 'draining' ELSE 'active' END)
                          ELSE state END,
             total_vcpus = GREATEST(r.vcpus, reserved_vcpus),
             total_memory_bytes = GREATEST(r.memory, reserved_memory_bytes),
             total_disk_bytes = GREATEST(r.disk, reserved_disk_bytes),
             updated_at = now()
         FROM r, before
         WHERE hosts.id = r.id AND before.id = r.id
         RETURNING hosts.id, hosts.state, before.previous_state, lease_expires_at",
    )
    .bind(&ids)
    .bind(f64::from(lease_secs))
    .bind(&vcpus)
    .bind(&memory)
    .bind(&disk)
    .fetch_all(conn)
    .await?;
    let parse = |s: String| s.parse::<HostState>().map_err(|e| sqlx::Error::Decode(Box::new(e)));
    rows.into_iter()
        .map(|(id, state, previous_state, lease_expires_at)| {
            Ok((id, LeaseRenewal { state: parse(state)?, previous_state: parse(previous_state)?, lease_expires_at }))
        })
        .collect()
}

/// The ids of the live instances placed on each of `hosts` (hosts without any are absent).
/// One lookup of the host index per host: written as `host_id = ANY($1)`, the plan hung on the
/// table's statistics, and while they lagged behind a quickly growing table (a new fleet's first
/// minute) every report batch read all live instances instead.
pub async fn hosts_instance_ids(
    conn: &mut PgConnection,
    hosts: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Vec<Uuid>>, sqlx::Error> {
    let rows: Vec<(Uuid, Vec<Uuid>)> = sqlx::query_as(
        "SELECT h.id, l.ids FROM unnest($1::uuid[]) AS h(id)
         CROSS JOIN LATERAL (SELECT array_agg(i.id ORDER BY i.id) AS ids FROM instances i
                             WHERE i.host_id = h.id AND i.deleted_at IS NULL) l
         WHERE l.ids IS NOT NULL",
    )
    .bind(hosts)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Every host, oldest first.
pub async fn host_list(conn: &mut PgConnection) -> Result<Vec<HostRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY created_at, id")).fetch_all(conn).await
}

/// The agent endpoint of every host that may be called (all but the dead), by host id.
pub async fn host_endpoints(conn: &mut PgConnection) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as("SELECT id, agent_endpoint FROM hosts WHERE state <> 'dead'").fetch_all(conn).await
}

/// One host.
pub async fn host_get(conn: &mut PgConnection, id: Uuid) -> Result<Option<HostRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = $1")).bind(id).fetch_optional(conn).await
}

/// What became of a drain or undrain request.
#[derive(Debug)]
pub enum DrainOutcome {
    Done(Box<HostRow>),
    NotFound,
}

/// Sets or clears a host's drain flag (idempotent); an active host becomes draining and a
/// draining one active again. Hosts that are joining, suspect or dead keep their state and take
/// the flag into account when they next report.
pub async fn host_set_draining(conn: &mut PgConnection, id: Uuid, draining: bool) -> Result<DrainOutcome, sqlx::Error> {
    let updated: Option<HostRow> = sqlx::query_as(&format!(
        "UPDATE hosts SET draining = $2,
             state = CASE WHEN $2 AND state = 'active' THEN 'draining'
                          WHEN NOT $2 AND state = 'draining' THEN 'active'
                          ELSE state END,
             updated_at = now()
         WHERE id = $1
         RETURNING {HOST_COLUMNS}"
    ))
    .bind(id)
    .bind(draining)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(updated.map_or(DrainOutcome::NotFound, |row| DrainOutcome::Done(Box::new(row))))
}

/// What became of an operator's declaration that a host is dead.
#[derive(Debug)]
pub enum DeclareDeadOutcome {
    /// The host is dead now (or was already); its instances are lost.
    Dead {
        host: Box<HostRow>,
        lost_instances: u64,
    },
    NotFound,
    /// The host holds a valid lease: it is not silent.
    Alive {
        lease_expires_at: Option<DateTime<Utc>>,
    },
}

/// Declares a silent host dead (operators, e.g. during a partition): only a host whose lease
/// ran out; its live instances become `lost`. Idempotent.
pub async fn host_declare_dead(conn: &mut PgConnection, id: Uuid) -> Result<DeclareDeadOutcome, sqlx::Error> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let Some((state, lease)): Option<(String, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT state, lease_expires_at FROM hosts WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
    else {
        return Ok(DeclareDeadOutcome::NotFound);
    };
    let silent: bool =
        sqlx::query_scalar("SELECT $1::timestamptz IS NULL OR $1 < now()").bind(lease).fetch_one(&mut *tx).await?;
    let state = state.parse::<HostState>().map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    if state != HostState::Dead && !(state == HostState::Suspect || silent) {
        return Ok(DeclareDeadOutcome::Alive { lease_expires_at: lease });
    }
    sqlx::query("UPDATE hosts SET state = 'dead', updated_at = now() WHERE id = $1 AND state <> 'dead'")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let lost_instances = crate::db::instances::instance_mark_lost_on_dead_hosts(&mut tx).await?;
    let host =
        sqlx::query_as(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = $1")).bind(id).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok(DeclareDeadOutcome::Dead { host: Box::new(host), lost_instances })
}

/// True when `err` violates the named unique constraint.
pub fn is_unique_violation(err: &sqlx::Error, constraint: &str) -> bool {
    err.as_database_error().is_some_and(|e| e.is_unique_violation() && e.constraint() == Some(constraint))
}
