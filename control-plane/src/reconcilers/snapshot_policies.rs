//! Snapshot policies: every couple of seconds, each replica takes the scheduled snapshots that
//! are due and deletes the ones beyond each policy's `keep` (`app::snapshots::run_policies`).
//! Replicas share the work through row locks, so a snapshot is taken once however many run.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::error_chain::ErrorChain;

/// How often policies are looked at: the precision of their schedules.
pub const PERIOD: Duration = Duration::from_secs(2);

/// Runs passes until `stop` resolves.
pub async fn run(app: Arc<App>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        match crate::app::snapshots::run_policies(&app).await {
            Ok((0, 0)) => {}
            Ok((taken, deleted)) => tracing::info!(taken, deleted, "snapshot policies applied"),
            Err(err) => tracing::warn!(error = %ErrorChain(&err), "snapshot policies pass failed; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(PERIOD) => {}
            () = &mut stop => return,
        }
    }
}
