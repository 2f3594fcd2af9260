//! Host liveness: hosts whose lease ran out become `suspect`, and `dead` once the lease plus a
//! margin has passed; the instances of a dead host become `lost`.
//!
//! ```text
//!   active/draining ──lease expired──▶ suspect ──lease + margin expired──▶ dead
//!         ▲                               │
//!         └────────── a report ───────────┘        (dead → active only by re-joining)
//! ```
//!
//! The margin is what makes self-fencing safe: an agent pauses its VMs as soon as its own lease
//! runs out, so by the time the control plane declares the host dead (and may restore its
//! instances elsewhere) nothing runs there any more.

use std::time::Duration;

use sqlx::PgPool;

/// What one activation changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub suspect: u64,
    pub dead: u64,
    pub lost_instances: u64,
}

/// Marks suspect and dead hosts and lost instances.
pub async fn activate(pool: &PgPool, margin: Duration) -> Result<Changes, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let suspect = sqlx::query(
        "UPDATE hosts SET state = 'suspect', updated_at = now()
         WHERE state IN ('active', 'draining') AND lease_expires_at < now()",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let dead = sqlx::query(
        "UPDATE hosts SET state = 'dead', updated_at = now()
         WHERE state = 'suspect' AND lease_expires_at < now() - make_interval(secs => $1)",
    )
    .bind(margin.as_secs_f64())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let lost_instances = sqlx::query(
        "UPDATE instances SET state = 'lost', state_reason = 'the host stopped reporting and was declared dead', updated_at = now()
         WHERE deleted_at IS NULL AND state NOT IN ('lost', 'deleted')
           AND host_id IN (SELECT id FROM hosts WHERE state = 'dead')",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    let changes = Changes { suspect, dead, lost_instances };
    if changes != Changes::default() {
        tracing::warn!(?changes, "host liveness changed");
    }
    Ok(changes)
}

/// Runs [`activate`] every `period` until `stop` resolves.
pub async fn run(pool: PgPool, period: Duration, margin: Duration, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        if let Err(err) = activate(&pool, margin).await {
            tracing::warn!(error = %crate::http::error::ErrorChain(&err), "host liveness check failed");
        }
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = &mut stop => return,
        }
    }
}
