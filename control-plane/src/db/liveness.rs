//! SQL of host liveness (the policy is `reconcilers::host_liveness`): the `fleet_liveness` row
//! (when liveness was last judged, whether the fleet is degraded) and the host transitions it
//! drives. Every function runs in the pass's transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// The fleet's liveness as operators see it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct FleetLiveness {
    /// `healthy`, or `degraded` while many hosts are silent together (a partition): then no
    /// host is declared dead automatically; an operator may declare one dead.
    pub state: String,
    pub degraded_since: Option<DateTime<Utc>>,
    /// Hosts whose lease ran out (`suspect`).
    pub silent_hosts: i64,
    /// Hosts that are not `dead` or still `joining`.
    pub hosts: i64,
    pub dead_hosts: i64,
    /// When liveness was last judged.
    pub last_pass_at: DateTime<Utc>,
}

/// Reads the fleet's liveness.
pub async fn fleet_liveness(conn: &mut PgConnection) -> Result<FleetLiveness, sqlx::Error> {
    let (last_pass_at, degraded_since, silent_hosts, hosts, dead_hosts): (
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        i64,
        i64,
        i64,
    ) = sqlx::query_as(
        "SELECT f.last_pass_at, f.degraded_since,
                (SELECT count(*) FROM hosts WHERE state = 'suspect'),
                (SELECT count(*) FROM hosts WHERE state IN ('active', 'draining', 'suspect')),
                (SELECT count(*) FROM hosts WHERE state = 'dead')
         FROM fleet_liveness f",
    )
    .fetch_one(conn)
    .await?;
    let state = if degraded_since.is_some() { "degraded" } else { "healthy" }.to_owned();
    Ok(FleetLiveness { state, degraded_since, silent_hosts, hosts, dead_hosts, last_pass_at })
}

/// Locks the `fleet_liveness` row (passes are serialized) and says how long ago the last pass ran.
pub async fn liveness_lock_and_silence(conn: &mut PgConnection) -> Result<Duration, sqlx::Error> {
    let secs: f64 =
        sqlx::query_scalar("SELECT EXTRACT(EPOCH FROM now() - last_pass_at)::float8 FROM fleet_liveness FOR UPDATE")
            .fetch_one(conn)
            .await?;
    Ok(Duration::from_secs_f64(secs.max(0.0)))
}

/// Records this pass: its time, whether the fleet is degraded (kept since it began) and how many
/// hosts are silent.
pub async fn liveness_record_pass(conn: &mut PgConnection, degraded: bool, silent: u64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE fleet_liveness SET last_pass_at = now(), silent_hosts = $2,
                degraded_since = CASE WHEN $1 THEN COALESCE(degraded_since, now()) END",
    )
    .bind(degraded)
    .bind(i64::try_from(silent).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(())
}

/// Extends the lease of every host that has one by `by` (a gap in the watch).
pub async fn hosts_extend_leases(conn: &mut PgConnection, by: Duration) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE hosts SET lease_expires_at = lease_expires_at + make_interval(secs => $1)
         WHERE state IN ('active', 'draining', 'suspect') AND lease_expires_at IS NOT NULL",
    )
    .bind(by.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(())
}

/// Active and draining hosts whose lease ran out become `suspect`; how many did.
pub async fn hosts_mark_suspect(conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE hosts SET state = 'suspect', updated_at = now()
         WHERE state IN ('active', 'draining') AND lease_expires_at < now()",
    )
    .execute(conn)
    .await?
    .rows_affected())
}

/// (silent, all) among the hosts that are neither joining nor dead.
pub async fn hosts_count_silent(conn: &mut PgConnection) -> Result<(u64, u64), sqlx::Error> {
    let (silent, total): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'suspect'), count(*) FROM hosts
         WHERE state IN ('active', 'draining', 'suspect')",
    )
    .fetch_one(conn)
    .await?;
    Ok((u64::try_from(silent).unwrap_or(0), u64::try_from(total).unwrap_or(0)))
}

/// Suspect hosts silent for their lease plus `margin` become `dead`; how many did.
pub async fn hosts_mark_dead(conn: &mut PgConnection, margin: Duration) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE hosts SET state = 'dead', updated_at = now()
         WHERE state = 'suspect' AND lease_expires_at < now() - make_interval(secs => $1)",
    )
    .bind(margin.as_secs_f64())
    .execute(conn)
    .await?
    .rows_affected())
}
