//! SQL for placement: reading candidate hosts, reserving capacity on the chosen one, giving it
//! back. The decision itself is [`crate::scheduler::placement`] (pure).
//!
//! ```text
//!  place_instance(tx, instance)                      all in the caller's transaction
//!    1. SELECT … FROM instances WHERE id = $i FOR UPDATE      the request; already placed? done
//!    2. pg_advisory_xact_lock(project, group)                 only with an anti-affinity group
//!    3. SELECT the 16 fitting hosts the database scores best ──▶ placement::rank ──▶ h1, h2, …
//!       (none fits: SELECT every host, so rank can say how many each filter removed)
//!    4. UPDATE hosts SET reserved_* = reserved_* + need
//!         WHERE id = (SELECT id FROM hosts WHERE id = $h AND state = 'active'
//!                       AND reserved_* + need <= total_* FOR UPDATE SKIP LOCKED)   RETURNING id
//!         0 rows (full now, or another placement holds the row) ──▶ next ranked host
//!    5. UPDATE instances SET host_id = $h
//!    every ranked host taken or busy ──▶ short jittered pause, back to 3 with fresh counts
//!                                        (bounded by ROUNDS, then `Contended`: retried later)
//! ```
//!
//! ## Why capacity never overcommits
//! Step 4 locks the host's row and checks the room on its newest version before adding to it:
//! `FOR UPDATE` re-evaluates the condition on the latest committed row (READ COMMITTED), so two
//! replicas racing for the last vCPUs of a host cannot both see room. (The table's CHECK
//! constraints are the backstop.)
//!
//! ## Why placements never deadlock or queue
//! A placement never waits for a host row: `SKIP LOCKED` passes over a host another placement is
//! reserving and tries the next one. An earlier version used a plain conditional UPDATE, which
//! waits for the row; when the other transaction then filled the host, the waiter's recheck
//! failed but PostgreSQL kept the row locked until the end of its transaction, while it went on
//! to wait for the next host. Three such placements formed cycles (40P01 under 200 concurrent
//! placements), and waiting also made every placement queue behind the best-ranked host.
//! Passing over a busy host can place an instance on the second-best host; spreading concurrent
//! placements is worth that.

//! ## Why anti-affinity holds under concurrency
//! Capacity is guarded by the row it lives in, but "no other member of the group on this host" is
//! a fact about *other* rows, which a conditional UPDATE cannot see reliably. Two placements of the
//! same group would both read "host A has no member" and both pick it. So a placement with a group
//! first takes a transaction-scoped advisory lock keyed by (project, group): placements of one
//! group serialize, everything else runs in parallel. Locking the host rows instead (`SELECT …
//! FOR UPDATE` on every candidate) would serialize *all* placements fleet-wide. Because the lock
//! is taken in an earlier statement, the candidate query (a new READ COMMITTED snapshot) sees the
//! group members committed by the previous holder. Callers must therefore use READ COMMITTED (the
//! default); a REPEATABLE READ transaction would read with a snapshot taken before the lock. A
//! hash collision between two groups only serializes them needlessly.
//!
//! ## Idempotency
//! Placement is a forward step of the operations executor and release its undo, so both may run
//! again after a crash. `place_instance` on a placed instance returns its host without reserving
//! again; `release_instance` gives back the reservation only while `instances.host_id` is set,
//! checked and cleared in the same statement as the hosts update, so it releases at most once.

use sqlx::PgConnection;

use crate::ids::{HostId, InstanceId, ProjectId};
use crate::scheduler::Strategy;
use crate::scheduler::placement::{self, Candidate, HostState, NoHostFits, Request, Resources};

/// How often the candidates are re-read when every ranked host was full or busy. Busy hosts are
/// free again within milliseconds (a placement holds a host's row only until it commits), and
/// full ones make the placement refused with fresh counts; the bound only stops a livelock
/// under heavy churn (the executor then retries the step).
const ROUNDS: u32 = 16;

/// First key of the anti-affinity advisory locks (ASCII "PLAC"), keeping them apart from any other
/// advisory locks of the schema.
const ANTI_AFFINITY_LOCK_SPACE: i32 = 0x504C_4143;

/// Where an instance was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub host_id: HostId,
    /// False when the instance already had a host (the step ran before) and nothing was reserved.
    pub newly_reserved: bool,
}

/// Why an instance could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error("instance {instance} does not exist")]
    UnknownInstance { instance: InstanceId },
    #[error("instance {instance} is deleted")]
    InstanceDeleted { instance: InstanceId },
    /// Nothing fits; the message says, per filter, how many hosts it removed.
    #[error(transparent)]
    NoHostFits(#[from] NoHostFits),
    #[error("host {host} has unknown state {state:?}")]
    UnknownHostState { host: HostId, state: String },
    #[error("every host that fitted instance {instance} was taken by concurrent placements, {rounds} times")]
    Contended { instance: InstanceId, rounds: u32 },
    #[error("cannot read the candidate hosts")]
    ReadHosts(#[source] sqlx::Error),
    #[error("placement query failed for instance {instance}")]
    Db {
        instance: InstanceId,
        #[source]
        source: sqlx::Error,
    },
}

#[derive(Debug, sqlx::FromRow)]
struct InstanceRow {
    project_id: ProjectId,
    vcpus: i32,
    memory_bytes: i64,
    disk_bytes: i64,
    anti_affinity_group: Option<String>,
    host_id: Option<HostId>,
    deleted: bool,
}

#[derive(Debug, sqlx::FromRow)]
struct CandidateRow {
    id: HostId,
    state: String,
    total_vcpus: i32,
    total_memory_bytes: i64,
    total_disk_bytes: i64,
    reserved_vcpus: i32,
    reserved_memory_bytes: i64,
    reserved_disk_bytes: i64,
    reserved_addresses: i32,
    runs_group_member: bool,
}

/// Places `instance` (its vCPUs, memory, disk and anti-affinity group as recorded in its row) on
/// the best host by `strategy`: reserves the capacity on the host and sets `instances.host_id`,
/// in the caller's transaction (which must be READ COMMITTED, see the module docs). Idempotent:
/// an instance that already has a host keeps it.
pub async fn place_instance(
    conn: &mut PgConnection,
    instance: InstanceId,
    strategy: Strategy,
) -> Result<Placement, PlacementError> {
    let db = |source| PlacementError::Db { instance, source };
    let row: Option<InstanceRow> = sqlx::query_as(
        "SELECT project_id, vcpus, memory_bytes, disk_bytes, anti_affinity_group, host_id,
                deleted_at IS NOT NULL OR state = 'deleting' AS deleted
         FROM instances WHERE id = $1 FOR UPDATE",
    )
    .bind(instance)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    let row = row.ok_or(PlacementError::UnknownInstance { instance })?;
    if row.deleted {
        return Err(PlacementError::InstanceDeleted { instance });
    }
    if let Some(host_id) = row.host_id {
        return Ok(Placement { host_id, newly_reserved: false });
    }
    let request = Request {
        resources: Resources { vcpus: row.vcpus, memory_bytes: row.memory_bytes, disk_bytes: row.disk_bytes },
        project_id: row.project_id,
        anti_affinity_group: row.anti_affinity_group,
    };
    if let Some(group) = &request.anti_affinity_group {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2::text || '/' || $3))")
            .bind(ANTI_AFFINITY_LOCK_SPACE)
            .bind(request.project_id)
            .bind(group)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    for round in 1..=ROUNDS {
        // The best few fitting hosts; only when none fits, every host, to say why.
        let mut candidates = shortlist(conn, &request, strategy).await.map_err(db)??;
        if candidates.is_empty() {
            candidates = self::candidates(conn, &request).await.map_err(db)??;
        }
        let ranked = placement::rank(&request, &candidates, strategy)?;
        for host_id in ranked {
            if reserve(conn, host_id, &request.resources).await.map_err(db)? {
                sqlx::query("UPDATE instances SET host_id = $2, updated_at = now() WHERE id = $1")
                    .bind(instance)
                    .bind(host_id)
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?;
                return Ok(Placement { host_id, newly_reserved: true });
            }
            tracing::debug!(%instance, host = %host_id, round, "host full or busy with another placement, trying the next");
        }
        // Every host that fitted was busy: let the concurrent placements finish, then re-read.
        tokio::time::sleep(round_pause(round)).await;
    }
    Err(PlacementError::Contended { instance, rounds: ROUNDS })
}

/// Gives back the reservation of `instance` on its host and clears `instances.host_id`, in one
/// statement: `Some(host)` when something was released, `None` when the instance had no host
/// (never placed, or already released). Calling it twice releases once.
pub async fn release_instance(conn: &mut PgConnection, instance: InstanceId) -> Result<Option<HostId>, PlacementError> {
    sqlx::query_scalar(
        "WITH placed AS (
             SELECT id, host_id, vcpus, memory_bytes, disk_bytes FROM instances
             WHERE id = $1 AND host_id IS NOT NULL
             FOR UPDATE
         ), cleared AS (
             UPDATE instances i SET host_id = NULL, updated_at = now()
             FROM placed WHERE i.id = placed.id
             RETURNING placed.host_id, placed.vcpus, placed.memory_bytes, placed.disk_bytes
         )
         UPDATE hosts h SET
             reserved_vcpus = h.reserved_vcpus - c.vcpus,
             reserved_memory_bytes = h.reserved_memory_bytes - c.memory_bytes,
             reserved_disk_bytes = h.reserved_disk_bytes - c.disk_bytes,
             reserved_addresses = h.reserved_addresses - 1,
             updated_at = now()
         FROM cleared c WHERE h.id = c.host_id
         RETURNING h.id",
    )
    .bind(instance)
    .fetch_optional(conn)
    .await
    .map_err(|source| PlacementError::Db { instance, source })
}

/// The hosts that would take `request`, best first, without reserving anything: for a quick
/// "would this fit at all" answer before an operation is started. The answer may be stale by the
/// time the placement runs; only [`place_instance`] reserves.
pub async fn hosts_ranked_for(
    conn: &mut PgConnection,
    request: &Request,
    strategy: Strategy,
) -> Result<Vec<HostId>, PlacementError> {
    let candidates = candidates(conn, request).await.map_err(PlacementError::ReadHosts)??;
    Ok(placement::rank(request, &candidates, strategy)?)
}

/// True when some host could take `request` right now (the same filters as
/// [`placement::rank`], in one query that returns one boolean): the cheap check before an
/// instance create is accepted, whatever the size of the fleet. Reserves nothing.
pub async fn any_host_fits(conn: &mut PgConnection, request: &Request) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM hosts h WHERE {FITS})"))
        .bind(request.project_id)
        .bind(request.anti_affinity_group.as_deref())
        .bind(request.resources.vcpus)
        .bind(request.resources.memory_bytes)
        .bind(request.resources.disk_bytes)
        .fetch_one(conn)
        .await
}

/// The hosts `h` that pass every filter of [`placement::rank`] for a request bound as $1
/// project, $2 anti-affinity group, $3 vCPUs, $4 memory bytes, $5 disk bytes.
const FITS: &str = "h.state = 'active'
    AND h.reserved_vcpus + $3 <= h.total_vcpus
    AND h.reserved_memory_bytes + $4 <= h.total_memory_bytes
    AND h.reserved_disk_bytes + $5 <= h.total_disk_bytes
    AND h.reserved_addresses < 253
    AND ($2::text IS NULL OR NOT EXISTS (
        SELECT 1 FROM instances i
        WHERE i.host_id = h.id AND i.project_id = $1 AND i.anti_affinity_group = $2 AND i.deleted_at IS NULL))";

/// How many of the best-scored fitting hosts a placement reads and tries per round.
const SHORTLIST: i64 = 16;

/// The [`SHORTLIST`] fitting hosts with the most (spread) or least (binpack) headroom after
/// placement, as the database scores them: a placement reads a few hosts, not the fleet.
/// [`placement::rank`] then orders them exactly. Empty when nothing fits.
async fn shortlist(
    conn: &mut PgConnection,
    request: &Request,
    strategy: Strategy,
) -> Result<Result<Vec<Candidate>, PlacementError>, sqlx::Error> {
    let order = match strategy {
        Strategy::Spread => "DESC",
        Strategy::Binpack => "ASC",
    };
    let rows: Vec<CandidateRow> = sqlx::query_as(&format!(
        "SELECT h.id, h.state, h.total_vcpus, h.total_memory_bytes, h.total_disk_bytes,
                h.reserved_vcpus, h.reserved_memory_bytes, h.reserved_disk_bytes, h.reserved_addresses,
                false AS runs_group_member
         FROM hosts h WHERE {FITS}
         ORDER BY LEAST((h.total_vcpus - h.reserved_vcpus - $3)::float8 / GREATEST(h.total_vcpus, 1),
                        (h.total_memory_bytes - h.reserved_memory_bytes - $4)::float8 / GREATEST(h.total_memory_bytes, 1),
                        (h.total_disk_bytes - h.reserved_disk_bytes - $5)::float8 / GREATEST(h.total_disk_bytes, 1)) {order},
                  h.id
         LIMIT $6"
    ))
    .bind(request.project_id)
    .bind(request.anti_affinity_group.as_deref())
    .bind(request.resources.vcpus)
    .bind(request.resources.memory_bytes)
    .bind(request.resources.disk_bytes)
    .bind(SHORTLIST)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(candidate).collect())
}

/// Every host, with whether it runs a live member of the request's anti-affinity group, in one
/// query. The outer error is the query's, the inner one a host row the scheduler cannot read.
async fn candidates(
    conn: &mut PgConnection,
    request: &Request,
) -> Result<Result<Vec<Candidate>, PlacementError>, sqlx::Error> {
    let rows: Vec<CandidateRow> = sqlx::query_as(
        "SELECT id, state, total_vcpus, total_memory_bytes, total_disk_bytes,
                reserved_vcpus, reserved_memory_bytes, reserved_disk_bytes, reserved_addresses,
                id IN (SELECT host_id FROM instances
                       WHERE project_id = $1 AND anti_affinity_group = $2
                         AND deleted_at IS NULL AND host_id IS NOT NULL) AS runs_group_member
         FROM hosts ORDER BY id",
    )
    .bind(request.project_id)
    .bind(request.anti_affinity_group.as_deref())
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(candidate).collect())
}

fn candidate(row: CandidateRow) -> Result<Candidate, PlacementError> {
    let state = row
        .state
        .parse::<HostState>()
        .map_err(|_| PlacementError::UnknownHostState { host: row.id, state: row.state.clone() })?;
    Ok(Candidate {
        id: row.id,
        state,
        total: Resources {
            vcpus: row.total_vcpus,
            memory_bytes: row.total_memory_bytes,
            disk_bytes: row.total_disk_bytes,
        },
        reserved: Resources {
            vcpus: row.reserved_vcpus,
            memory_bytes: row.reserved_memory_bytes,
            disk_bytes: row.reserved_disk_bytes,
        },
        runs_group_member: row.runs_group_member,
        reserved_addresses: row.reserved_addresses,
    })
}

/// A pause of 1–2 × 2^round ms (at most 64–128 ms) between rounds, jittered so placements that
/// met on the same hosts do not meet again.
fn round_pause(round: u32) -> std::time::Duration {
    let base = 1u64 << round.min(6);
    let jitter = u64::try_from(uuid::Uuid::new_v4().as_u128() % u128::from(base)).unwrap_or(0);
    std::time::Duration::from_millis(base + jitter)
}

/// Reserves `need` on `host` if it is still active, has room and no other placement holds its
/// row right now: true when it did. Never waits for a lock (see the module docs).
async fn reserve(conn: &mut PgConnection, host: HostId, need: &Resources) -> Result<bool, sqlx::Error> {
    let reserved: Option<HostId> = sqlx::query_scalar(
        "UPDATE hosts SET
             reserved_vcpus = reserved_vcpus + $2,
             reserved_memory_bytes = reserved_memory_bytes + $3,
             reserved_disk_bytes = reserved_disk_bytes + $4,
             reserved_addresses = reserved_addresses + 1,
             updated_at = now()
         WHERE id = (SELECT id FROM hosts
                     WHERE id = $1 AND state = 'active'
                       AND reserved_vcpus + $2 <= total_vcpus
                       AND reserved_memory_bytes + $3 <= total_memory_bytes
                       AND reserved_disk_bytes + $4 <= total_disk_bytes
                       AND reserved_addresses < 253
                     FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind(host)
    .bind(need.vcpus)
    .bind(need.memory_bytes)
    .bind(need.disk_bytes)
    .fetch_optional(conn)
    .await?;
    Ok(reserved.is_some())
}
