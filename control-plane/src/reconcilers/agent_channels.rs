//! Connections to the agents, kept open: every [`PERIOD`] (and at start) each replica reads the
//! hosts that may be called and dials those it holds no channel to, so an operation's first
//! call to a host does not pay a mutual-TLS handshake on both sides while it runs, and drops the
//! channels of hosts that died, left, or moved. `fleet.keep_agent_connections = false` turns
//! this off: channels are then opened by the first call to each host (a fleet of many thousand
//! hosts per replica may prefer that to holding a connection to each).
//!
//! The number of channels held is the gauge `cloud_agent_channels`.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::error_chain::ErrorChain;
use crate::ids::HostId;

/// How often the hosts are read again.
pub const PERIOD: Duration = Duration::from_secs(10);

/// Runs passes until `stop` resolves.
pub async fn run(app: Arc<App>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        let pass = async {
            let mut conn = app.work_pool.acquire().await?;
            let live = crate::db::hosts::host_endpoints(&mut conn).await?;
            drop(conn);
            let live = live.into_iter().map(|(id, endpoint)| (HostId(id), endpoint)).collect();
            Ok::<_, sqlx::Error>(app.agents.keep_connected(&app.fleet, live).await)
        };
        tokio::select! {
            held = pass => match held {
                Ok(held) => app.metrics.set_agent_channels(held),
                Err(err) => tracing::warn!(error = %ErrorChain(&err), "cannot read the hosts to keep connected; retrying"),
            },
            () = &mut stop => return,
        }
        tokio::select! {
            () = tokio::time::sleep(PERIOD) => {}
            () = &mut stop => return,
        }
    }
}
