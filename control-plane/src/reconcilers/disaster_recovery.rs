//! Disaster recovery: every couple of seconds, each replica recovers the lost instances of dead
//! hosts that have a DR policy (`app::recovery::run_recovery`). Replicas share the work through
//! row locks, so an instance is recovered once however many run.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::error_chain::ErrorChain;

/// How often the pass runs.
pub const PERIOD: Duration = Duration::from_secs(1);
/// Recoveries in flight at once, fleet-wide: bounded, so a dead host's instances do not all
/// fetch their snapshots at the same moment.
pub const CONCURRENCY: i64 = 4;

/// Runs passes until `stop` resolves.
pub async fn run(app: Arc<App>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        match crate::app::recovery::run_recovery(&app, CONCURRENCY).await {
            Ok(0) => {}
            Ok(started) => tracing::info!(started, "disaster recovery started"),
            Err(err) => tracing::warn!(error = %ErrorChain(&err), "disaster recovery pass failed; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(PERIOD) => {}
            () = &mut stop => return,
        }
    }
}
