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

use sqlx::PgPool;

use crate::db::liveness as db;

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

/// One pass: extends leases after a gap, marks suspect hosts, and dead ones unless the fleet is
/// partitioned, and the instances of dead hosts lost. Any replica may run it at any time: the
/// row lock on `fleet_liveness` serializes passes.
pub async fn activate(pool: &PgPool, policy: &LivenessPolicy) -> Result<Changes, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut changes = Changes::default();
    // `now()` is the transaction's start: a pass frozen half-way judges by when it began.
    let silence = db::liveness_lock_and_silence(&mut tx).await?;
    if silence > gap_threshold(policy.period) {
        db::hosts_extend_leases(&mut tx, silence).await?;
        changes.extended_by = Some(silence);
    }
    changes.suspect = db::hosts_mark_suspect(&mut tx).await?;
    let (silent, total) = db::hosts_count_silent(&mut tx).await?;
    changes.silent = silent;
    let partition = policy.is_partition(silent, total);
    db::liveness_record_pass(&mut tx, partition, silent).await?;
    if partition {
        changes.degraded_silent = Some(silent);
    } else {
        changes.dead = db::hosts_mark_dead(&mut tx, policy.margin).await?;
    }
    changes.lost_instances = crate::db::instances::instance_mark_lost_on_dead_hosts(&mut tx).await?;
    tx.commit().await?;
    Ok(changes)
}

/// Runs [`activate`] every `policy.period` until `stop` resolves, logging what changed (the
/// start and the end of a partition once each).
pub async fn run(
    app: std::sync::Arc<crate::app::App>,
    policy: LivenessPolicy,
    stop: impl std::future::Future<Output = ()>,
) {
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
            Err(err) => tracing::warn!(error = %crate::error_chain::ErrorChain(&err), "host liveness check failed"),
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
