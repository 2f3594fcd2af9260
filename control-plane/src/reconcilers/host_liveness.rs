//! Host liveness: hosts whose lease ran out become `suspect`, and `dead` once the lease plus a
//! margin has passed; the instances of a dead host become `lost`. A dead host that reports
//! again is taken back (see `db::hosts::host_report`).
//!
//! ```text
//!   active/draining ──lease expired──▶ suspect ──lease + margin expired, alone──▶ dead
//!         ▲                               │  ▲                                       │
//!         └────────── a report ───────────┘  └── many silent at once: fleet degraded  │
//!         └─────────────────────── a report (taken back with its identity) ──────────┘
//! ```
//!
//! Silence means something only while the control plane was listening. Each pass records when it
//! ran (`fleet_liveness.last_pass_at`, the database's clock); a pass that finds the previous one
//! further back than [`gap_threshold`] (this control plane was stopped or frozen, or its
//! database away) first extends every lease by that gap, as a newly elected leader resets its
//! heartbeat timers, so hosts get their full lease to report before anyone is judged.
//!
//! When at least `partition_silent_percent` of the hosts (and at least `partition_min_hosts`)
//! are silent together, that is a partition, not deaths: the fleet is `degraded`, nobody is
//! declared dead automatically, and an operator decides (`POST /v1/hosts/{id}/declare-dead`).
//!
//! The margin is what makes self-fencing safe: an agent pauses its VMs as soon as its own lease
//! runs out, so by the time the control plane declares the host dead (and may restore its
//! instances elsewhere) nothing runs there any more.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// How liveness is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessPolicy {
    /// How often passes run.
    pub period: Duration,
    /// How long after its lease a silent host is declared dead.
    pub margin: Duration,
    /// At least this share of hosts silent at once is a partition…
    pub partition_silent_percent: u32,
    /// …when they are at least this many.
    pub partition_min_hosts: u32,
}

impl LivenessPolicy {
    /// The policy of a `[fleet]` configuration, with passes every second.
    pub fn from_config(fleet: &crate::fleet::FleetConfig) -> Self {
        Self {
            period: Duration::from_secs(1),
            margin: Duration::from_secs(u64::from(fleet.lease_secs)),
            partition_silent_percent: fleet.partition_silent_percent,
            partition_min_hosts: fleet.partition_min_hosts,
        }
    }

    /// Whether `silent` of `total` hosts going quiet together is a partition.
    pub fn is_partition(&self, silent: u64, total: u64) -> bool {
        silent >= u64::from(self.partition_min_hosts)
            && silent * 100 >= u64::from(self.partition_silent_percent) * total
            && total > 0
    }
}

/// A pass that finds the previous one further back than this saw a gap in the watch.
pub fn gap_threshold(period: Duration) -> Duration {
    period + period.max(Duration::from_secs(2))
}

/// What one activation changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Hosts silent (suspect) after the pass.
    pub silent: u64,
    /// The gap the leases were extended by, when there was one.
    pub extended_by: Option<Duration>,
    pub suspect: u64,
    pub dead: u64,
    pub lost_instances: u64,
    /// The fleet is partitioned: this many hosts are silent and none is declared dead.
    pub degraded_silent: Option<u64>,
}

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

/// Declares the instances of dead hosts lost.
pub async fn mark_lost_instances(conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE instances SET state = 'lost', state_reason = 'the host stopped reporting and was declared dead',
                ready_at = NULL, updated_at = now()
         WHERE deleted_at IS NULL AND state NOT IN ('lost', 'deleted')
           AND host_id IN (SELECT id FROM hosts WHERE state = 'dead')",
    )
    .execute(conn)
    .await?
    .rows_affected())
}

/// One pass: extends leases after a gap, marks suspect hosts, and dead ones unless the fleet is
/// partitioned, and the instances of dead hosts lost. Any replica may run it at any time: the
/// row lock on `fleet_liveness` serializes passes.
pub async fn activate(pool: &PgPool, policy: &LivenessPolicy) -> Result<Changes, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut changes = Changes::default();
    // `now()` is the transaction's start: a pass frozen half-way judges by when it began.
    let silence: f64 =
        sqlx::query_scalar("SELECT EXTRACT(EPOCH FROM now() - last_pass_at)::float8 FROM fleet_liveness FOR UPDATE")
            .fetch_one(&mut *tx)
            .await?;
    if silence > gap_threshold(policy.period).as_secs_f64() {
        sqlx::query(
            "UPDATE hosts SET lease_expires_at = lease_expires_at + make_interval(secs => $1)
             WHERE state IN ('active', 'draining', 'suspect') AND lease_expires_at IS NOT NULL",
        )
        .bind(silence)
        .execute(&mut *tx)
        .await?;
        changes.extended_by = Some(Duration::from_secs_f64(silence));
    }
    sqlx::query("UPDATE fleet_liveness SET last_pass_at = now()").execute(&mut *tx).await?;
    changes.suspect = sqlx::query(
        "UPDATE hosts SET state = 'suspect', updated_at = now()
         WHERE state IN ('active', 'draining') AND lease_expires_at < now()",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let (silent, total): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'suspect'), count(*) FROM hosts
         WHERE state IN ('active', 'draining', 'suspect')",
    )
    .fetch_one(&mut *tx)
    .await?;
    let (silent, total) = (u64::try_from(silent).unwrap_or(0), u64::try_from(total).unwrap_or(0));
    changes.silent = silent;
    if policy.is_partition(silent, total) {
        changes.degraded_silent = Some(silent);
        sqlx::query("UPDATE fleet_liveness SET degraded_since = COALESCE(degraded_since, now()), silent_hosts = $1")
            .bind(i64::try_from(silent).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
    } else {
        sqlx::query("UPDATE fleet_liveness SET degraded_since = NULL, silent_hosts = $1")
            .bind(i64::try_from(silent).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        changes.dead = sqlx::query(
            "UPDATE hosts SET state = 'dead', updated_at = now()
             WHERE state = 'suspect' AND lease_expires_at < now() - make_interval(secs => $1)",
        )
        .bind(policy.margin.as_secs_f64())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    changes.lost_instances = mark_lost_instances(&mut tx).await?;
    tx.commit().await?;
    Ok(changes)
}

/// Runs [`activate`] every `policy.period` until `stop` resolves, logging what changed (the
/// start and the end of a partition once each).
pub async fn run(app: std::sync::Arc<crate::App>, policy: LivenessPolicy, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut degraded = false;
    loop {
        match activate(&app.pool, &policy).await {
            Ok(changes) => {
                if let Some(gap) = changes.extended_by {
                    tracing::warn!(
                        gap_secs = gap.as_secs_f64(),
                        "liveness was not judged for a while (control plane stopped, frozen or without its database): \
                         every host's lease is extended by the gap before anyone is judged"
                    );
                }
                match (changes.degraded_silent, degraded) {
                    (Some(silent), false) => tracing::error!(
                        silent,
                        "many hosts went silent together: the fleet is degraded (a partition?); no host is declared \
                         dead automatically: an operator may declare one dead"
                    ),
                    (None, true) => tracing::warn!("the fleet is no longer degraded"),
                    _ => {}
                }
                degraded = changes.degraded_silent.is_some();
                app.metrics.set_fleet_liveness(degraded, changes.silent);
                if changes.suspect + changes.dead + changes.lost_instances > 0 {
                    let changes = Changes { silent: 0, ..changes };
                    tracing::warn!(?changes, "host liveness changed");
                }
            }
            Err(err) => tracing::warn!(error = %crate::http::error::ErrorChain(&err), "host liveness check failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(policy.period) => {}
            () = &mut stop => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_third_or_more_and_at_least_two_is_a_partition() {
        let p = LivenessPolicy {
            period: Duration::from_secs(1),
            margin: Duration::from_secs(10),
            partition_silent_percent: 34,
            partition_min_hosts: 2,
        };
        assert!(!p.is_partition(1, 3), "one host alone is a death");
        assert!(p.is_partition(2, 3));
        assert!(!p.is_partition(1, 1), "a single host is never a partition (at least two)");
        assert!(p.is_partition(2, 2));
        assert!(!p.is_partition(33, 100));
        assert!(p.is_partition(34, 100));
        assert!(!p.is_partition(0, 0));
    }
}
