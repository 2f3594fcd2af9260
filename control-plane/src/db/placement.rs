//! SQL for placement: reading candidate hosts, reserving capacity on the chosen one, giving it
//! back. The ranking is `scheduler::placement` (pure) and the loop below runs in
//! `scheduler::reserve`; this module only knows rows, so it imports nothing from the scheduler.
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

/// First key of the anti-affinity advisory locks (ASCII "PLAC"), keeping them apart from any other
/// advisory locks of the schema.
const ANTI_AFFINITY_LOCK_SPACE: i32 = 0x504C_4143;

/// What an instance asks of a host, as the placement queries bind it.
#[derive(Debug, Clone, Copy)]
pub struct Need<'a> {
    pub project_id: ProjectId,
    pub anti_affinity_group: Option<&'a str>,
    pub vcpus: i32,
    pub memory_bytes: i64,
    pub disk_bytes: i64,
}

/// An instance's row as placement reads it (locked).
#[derive(Debug, sqlx::FromRow)]
pub struct InstanceRow {
    pub project_id: ProjectId,
    pub vcpus: i32,
    pub memory_bytes: i64,
    pub disk_bytes: i64,
    pub anti_affinity_group: Option<String>,
    pub host_id: Option<HostId>,
    /// Deleted, or being deleted: placing it would only be undone.
    pub deleted: bool,
}

/// A host's capacity as placement reads it.
#[derive(Debug, sqlx::FromRow)]
pub struct CandidateRow {
    pub id: HostId,
    pub state: String,
    pub total_vcpus: i32,
    pub total_memory_bytes: i64,
    pub total_disk_bytes: i64,
    pub reserved_vcpus: i32,
    pub reserved_memory_bytes: i64,
    pub reserved_disk_bytes: i64,
    pub reserved_addresses: i32,
    /// The host runs a live member of the request's anti-affinity group.
    pub runs_group_member: bool,
}

/// Step 1: the instance's row, locked for the caller's transaction; `None` when there is none.
pub async fn lock_instance(conn: &mut PgConnection, instance: InstanceId) -> Result<Option<InstanceRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT project_id, vcpus, memory_bytes, disk_bytes, anti_affinity_group, host_id,
                deleted_at IS NOT NULL OR state = 'deleting' AS deleted
         FROM instances WHERE id = $1 FOR UPDATE",
    )
    .bind(instance)
    .fetch_optional(conn)
    .await
}

/// Step 2: serializes the placements of one anti-affinity group until the transaction ends.
pub async fn lock_group(conn: &mut PgConnection, project: ProjectId, group: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2::text || '/' || $3))")
        .bind(ANTI_AFFINITY_LOCK_SPACE)
        .bind(project)
        .bind(group)
        .execute(conn)
        .await
        .map(drop)
}

/// Step 5: records the host an instance was placed on.
pub async fn set_host(conn: &mut PgConnection, instance: InstanceId, host: HostId) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE instances SET host_id = $2, updated_at = now() WHERE id = $1")
        .bind(instance)
        .bind(host)
        .execute(conn)
        .await
        .map(drop)
}

/// Gives back the reservation of `instance` on its host and clears `instances.host_id`, in one
/// statement: `Some(host)` when something was released, `None` when the instance had no host
/// (never placed, or already released). Calling it twice releases once.
pub async fn release_instance(conn: &mut PgConnection, instance: InstanceId) -> Result<Option<HostId>, sqlx::Error> {
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
}

/// The hosts `h` that pass every filter of the scheduler's ranking for `need`, bound as $1
/// project, $2 anti-affinity group, $3 vCPUs, $4 memory bytes, $5 disk bytes. Without a group
/// the text has no anti-affinity subquery at all: its plan then does not hang on the parameters,
/// so PostgreSQL plans it once per connection and reuses the plan. (Written once for both, as
/// `$2 IS NULL OR NOT EXISTS …`, the plan kept for any parameters looked dearer than one made for
/// the values at hand, and every execution was planned anew, more work than running it.)
pub fn fits(need: &Need<'_>) -> String {
    let group = if need.anti_affinity_group.is_some() {
        "NOT EXISTS (SELECT 1 FROM instances i
             WHERE i.host_id = h.id AND i.project_id = $1 AND i.anti_affinity_group = $2 AND i.deleted_at IS NULL)"
    } else {
        // Both are bound either way, and a parameter's type must be stated where it appears.
        "$1::uuid IS NOT NULL AND $2::text IS NULL"
    };
    format!(
        "h.state = 'active'
         AND h.reserved_vcpus + $3 <= h.total_vcpus
         AND h.reserved_memory_bytes + $4 <= h.total_memory_bytes
         AND h.reserved_disk_bytes + $5 <= h.total_disk_bytes
         AND h.reserved_addresses < 253
         AND {group}"
    )
}

/// Step 3: the `limit` fitting hosts with the most (`most_headroom_first`) or least headroom,
/// as the database keeps it in each row (`hosts.headroom`, indexed): a placement reads a few
/// hosts, not the fleet, whatever its size. The headroom is the host's before the placement;
/// the scheduler ranks the few exactly, by their headroom after it. Empty when nothing fits.
pub async fn shortlist(
    conn: &mut PgConnection,
    need: &Need<'_>,
    most_headroom_first: bool,
    limit: i64,
) -> Result<Vec<CandidateRow>, sqlx::Error> {
    // Both keys in the index's direction (or both against it): a walk of the index that stops
    // after `limit` fitting hosts. A full host (no headroom) fits nothing.
    let order = if most_headroom_first { "DESC" } else { "ASC" };
    sqlx::query_as(&format!(
        "SELECT h.id, h.state, h.total_vcpus, h.total_memory_bytes, h.total_disk_bytes,
                h.reserved_vcpus, h.reserved_memory_bytes, h.reserved_disk_bytes, h.reserved_addresses,
                false AS runs_group_member
         FROM hosts h WHERE {fits} AND h.headroom > 0
         ORDER BY h.headroom {order}, h.id {order}
         LIMIT $6",
        fits = fits(need)
    ))
    .bind(need.project_id)
    .bind(need.anti_affinity_group)
    .bind(need.vcpus)
    .bind(need.memory_bytes)
    .bind(need.disk_bytes)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Every host, with whether it runs a live member of the request's anti-affinity group, in one
/// query: what the scheduler ranks when nothing fits, to say why.
pub async fn all_hosts(conn: &mut PgConnection, need: &Need<'_>) -> Result<Vec<CandidateRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, state, total_vcpus, total_memory_bytes, total_disk_bytes,
                reserved_vcpus, reserved_memory_bytes, reserved_disk_bytes, reserved_addresses,
                id IN (SELECT host_id FROM instances
                       WHERE project_id = $1 AND anti_affinity_group = $2
                         AND deleted_at IS NULL AND host_id IS NOT NULL) AS runs_group_member
         FROM hosts ORDER BY id",
    )
    .bind(need.project_id)
    .bind(need.anti_affinity_group)
    .fetch_all(conn)
    .await
}

/// Step 4: reserves `need` on `host` if it is still active, has room and no other placement holds
/// its row right now: true when it did. Never waits for a lock (see the module docs).
pub async fn reserve(conn: &mut PgConnection, host: HostId, need: &Need<'_>) -> Result<bool, sqlx::Error> {
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
