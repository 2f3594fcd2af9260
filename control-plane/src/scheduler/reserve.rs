//! Placing an instance: the loop that asks [`placement::rank`] and reserves the winner through
//! [`crate::db::placement`], in the caller's transaction. Why the SQL never overcommits, deadlocks
//! or breaks anti-affinity is told in that module.
//!
//! ```text
//!  place_instance(tx, instance)
//!    lock the instance row; already placed? done.   deleted? refused
//!    lock the anti-affinity group (if any)
//!    round 1..=ROUNDS:
//!      shortlist (every host when none fits) ──▶ rank ──▶ reserve h1, h2, … ──▶ set host; done
//!      every ranked host taken or busy ──▶ short jittered pause
//!    `Contended` (the executor retries the step)
//! ```

use sqlx::PgConnection;

use super::Strategy;
use super::placement::{self, Candidate, HostState, NoHostFits, Request, Resources};
use crate::db::placement::{self as store, CandidateRow, Need};
use crate::ids::{HostId, InstanceId};

/// How often the candidates are re-read when every ranked host was full or busy. Busy hosts are
/// free again within milliseconds (a placement holds a host's row only until it commits), and
/// full ones make the placement refused with fresh counts; the bound only stops a livelock
/// under heavy churn (the executor then retries the step).
const ROUNDS: u32 = 16;

/// How many of the best-scored fitting hosts a placement reads and tries per round.
const SHORTLIST: i64 = 16;

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
    /// The one host the instance must go to has no room (or is not active).
    #[error("host {host} has no room for the instance now (or takes no new instances)")]
    HostFull { host: HostId },
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

/// Places `instance` (its vCPUs, memory, disk and anti-affinity group as recorded in its row) on
/// the best host by `strategy`: reserves the capacity on the host and sets `instances.host_id`,
/// in the caller's transaction (which must be READ COMMITTED, see [`crate::db::placement`]).
/// Idempotent: an instance that already has a host keeps it.
pub async fn place_instance(
    conn: &mut PgConnection,
    instance: InstanceId,
    strategy: Strategy,
) -> Result<Placement, PlacementError> {
    place(conn, instance, Target::Best(strategy)).await
}

/// Places `instance` on `host` and nowhere else (a restore from files on that host): reserves
/// its capacity there and sets `instances.host_id`, or [`PlacementError::HostFull`]. Idempotent
/// like [`place_instance`].
pub async fn place_instance_on(
    conn: &mut PgConnection,
    instance: InstanceId,
    host: HostId,
) -> Result<Placement, PlacementError> {
    place(conn, instance, Target::Host(host)).await
}

/// Where a placement may go.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The best host by the strategy.
    Best(Strategy),
    /// This host only.
    Host(HostId),
}

async fn place(conn: &mut PgConnection, instance: InstanceId, target: Target) -> Result<Placement, PlacementError> {
    let db = |source| PlacementError::Db { instance, source };
    let request = match locked_request(conn, instance).await? {
        Ok(request) => request,
        Err(placed) => return Ok(placed),
    };
    let need = need(&request);
    let strategy = match target {
        Target::Best(strategy) => strategy,
        Target::Host(host) => {
            if !store::reserve(conn, host, &need).await.map_err(db)? {
                return Err(PlacementError::HostFull { host });
            }
            store::set_host(conn, instance, host).await.map_err(db)?;
            return Ok(Placement { host_id: host, newly_reserved: true });
        }
    };
    let most_headroom_first = match strategy {
        Strategy::Spread => true,
        Strategy::Binpack => false,
    };
    for round in 1..=ROUNDS {
        // The best few fitting hosts; only when none fits, every host, to say why.
        let mut rows = store::shortlist(conn, &need, most_headroom_first, SHORTLIST).await.map_err(db)?;
        if rows.is_empty() {
            rows = store::all_hosts(conn, &need).await.map_err(db)?;
        }
        let candidates = rows.into_iter().map(candidate).collect::<Result<Vec<_>, _>>()?;
        for host_id in placement::rank(&request, &candidates, strategy)? {
            if store::reserve(conn, host_id, &need).await.map_err(db)? {
                store::set_host(conn, instance, host_id).await.map_err(db)?;
                return Ok(Placement { host_id, newly_reserved: true });
            }
            tracing::debug!(%instance, host = %host_id, round, "host full or busy with another placement, trying the next");
        }
        // Every host that fitted was busy: let the concurrent placements finish, then re-read.
        tokio::time::sleep(round_pause(round)).await;
    }
    Err(PlacementError::Contended { instance, rounds: ROUNDS })
}

/// Locks the instance's row (and its anti-affinity group, if any): what it needs, or where it
/// already is (`Err`).
async fn locked_request(
    conn: &mut PgConnection,
    instance: InstanceId,
) -> Result<Result<Request, Placement>, PlacementError> {
    let db = |source| PlacementError::Db { instance, source };
    let row = store::lock_instance(conn, instance).await.map_err(db)?;
    let row = row.ok_or(PlacementError::UnknownInstance { instance })?;
    if row.deleted {
        return Err(PlacementError::InstanceDeleted { instance });
    }
    if let Some(host_id) = row.host_id {
        return Ok(Err(Placement { host_id, newly_reserved: false }));
    }
    if let Some(group) = &row.anti_affinity_group {
        store::lock_group(conn, row.project_id, group).await.map_err(db)?;
    }
    Ok(Ok(Request {
        resources: Resources { vcpus: row.vcpus, memory_bytes: row.memory_bytes, disk_bytes: row.disk_bytes },
        project_id: row.project_id,
        anti_affinity_group: row.anti_affinity_group,
    }))
}

/// Gives back the reservation of `instance` on its host and clears `instances.host_id`:
/// `Some(host)` when something was released, `None` when the instance had no host. Calling it
/// twice releases once.
pub async fn release_instance(conn: &mut PgConnection, instance: InstanceId) -> Result<Option<HostId>, PlacementError> {
    store::release_instance(conn, instance).await.map_err(|source| PlacementError::Db { instance, source })
}

/// The hosts that would take `request`, best first, without reserving anything: for a quick
/// "would this fit at all" answer before an operation is started. The answer may be stale by the
/// time the placement runs; only [`place_instance`] reserves.
pub async fn hosts_ranked_for(
    conn: &mut PgConnection,
    request: &Request,
    strategy: Strategy,
) -> Result<Vec<HostId>, PlacementError> {
    let rows = store::all_hosts(conn, &need(request)).await.map_err(PlacementError::ReadHosts)?;
    let candidates = rows.into_iter().map(candidate).collect::<Result<Vec<_>, _>>()?;
    Ok(placement::rank(request, &candidates, strategy)?)
}

/// What the database's filters read of `request` ([`store::fits`]).
pub fn need(request: &Request) -> Need<'_> {
    Need {
        project_id: request.project_id,
        anti_affinity_group: request.anti_affinity_group.as_deref(),
        vcpus: request.resources.vcpus,
        memory_bytes: request.resources.memory_bytes,
        disk_bytes: request.resources.disk_bytes,
    }
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
