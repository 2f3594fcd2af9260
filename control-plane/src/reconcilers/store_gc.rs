//! Garbage collection of the shared snapshot store: every [`PERIOD`], each replica deletes the
//! chunks no snapshot references any more (`cloud_store::Store::collect_garbage`, safe while
//! snapshots are being uploaded and while another replica collects too). The first pass runs a
//! minute after start, so a replica that restarts in a loop does not sweep in a loop.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::error_chain::ErrorChain;

/// How often the store is swept.
pub const PERIOD: Duration = Duration::from_secs(15 * 60);
/// How long after start the first sweep runs.
const FIRST: Duration = Duration::from_secs(60);

/// Runs passes until `stop` resolves.
pub async fn run(app: Arc<App>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut wait = FIRST;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut stop => return,
        }
        wait = PERIOD;
        match app.store.collect_garbage().await {
            Ok(stats) if stats.deleted > 0 || stats.stale_pending > 0 => {
                tracing::info!(
                    store = app.store.label(),
                    deleted = stats.deleted,
                    chunks = stats.chunks,
                    "store swept"
                );
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %ErrorChain(&err), "store garbage collection failed; retrying later"),
        }
    }
}
