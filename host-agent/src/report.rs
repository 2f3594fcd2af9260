//! Reports to the control plane, the host's lease, and self-fencing.
//!
//! Every `interval` the agent sends its capacity and the state and generation of every instance.
//! Each accepted report renews the host's lease for `lease_seconds`, counted from when the report
//! was *sent* (the conservative end). When the lease runs out without a renewal, the agent pauses
//! every VM: the control plane declares the host dead only after the lease plus a margin and
//! may then restore its instances elsewhere, so a VM must never keep running here by then. When
//! a report gets through again, the agent resumes only the instances the control plane confirms
//! this host still owns.
//!
//! ```text
//!            report ok                       no renewal for lease_seconds
//!   ┌──────────┐ ───────────────▶ ┌────────┐ ───────────────────────────▶ ┌────────┐
//!   │ starting │                  │ leased │                               │ fenced │
//!   └──────────┘ ◀─────────────── └────────┘ ◀─────────────────────────── └────────┘
//!                                              report ok: resume owned instances
//! ```
//!
//! The lease's wall-clock expiry is also written to `<state_dir>/lease.json`, so an agent that
//! restarts after its lease ran out fences at once instead of trusting a lease it no longer has.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cloud_proto::agent::v1 as pb;
use cloud_proto::agent::v1::control_plane_client::ControlPlaneClient;
use tonic::transport::Channel;

use crate::identity::{HostIdentity, write_atomic};

/// What the report loop needs from the rest of the agent.
pub trait HostState: Send + Sync + 'static {
    /// Total capacity offered and what instances use of it.
    fn capacity(&self) -> impl Future<Output = (pb::Capacity, pb::Capacity)> + Send;
    /// The current state and applied generation of every instance.
    fn instances(&self) -> impl Future<Output = Vec<pb::InstanceStatus>> + Send;
    /// Pause every running VM (the lease is gone).
    fn fence(&self) -> impl Future<Output = ()> + Send;
    /// Resume the paused VMs among `owned` (the control plane confirmed them).
    fn unfence(&self, owned: Vec<String>) -> impl Future<Output = ()> + Send;
}

/// The report loop's settings.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    pub interval: Duration,
    pub lease: Duration,
    pub lease_file: PathBuf,
}

/// Runs until `shutdown` resolves.
pub async fn run<S: HostState>(
    identity: HostIdentity,
    channel: Channel,
    state: Arc<S>,
    settings: ReportSettings,
    shutdown: impl Future<Output = ()>,
) {
    let mut client = ControlPlaneClient::new(channel);
    let host_id = identity.record.host_id.to_string();
    let mut deadline = initial_deadline(&settings);
    let mut fenced = false;
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        let (total, used) = state.capacity().await;
        let report = pb::HostReport {
            host_id: host_id.clone(),
            total: Some(total),
            used: Some(used),
            instances: state.instances().await,
            sent_at: Some(prost_types::Timestamp::from(SystemTime::now())),
        };
        let sent = Instant::now();
        let mut request = tonic::Request::new(report);
        request.set_timeout(settings.interval.max(Duration::from_secs(1)));
        match client.report(request).await {
            Ok(reply) => {
                deadline = sent + settings.lease;
                persist_expiry(&settings, SystemTime::now() + settings.lease);
                if fenced {
                    let owned = reply.into_inner().owned_instance_ids;
                    tracing::warn!(
                        instances = owned.len(),
                        "lease renewed: resuming the instances this host still owns"
                    );
                    state.unfence(owned).await;
                    fenced = false;
                }
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = %status.message(), left = ?deadline.saturating_duration_since(Instant::now()), "report failed");
                if !fenced && Instant::now() >= deadline {
                    tracing::error!(lease = ?settings.lease, "lease expired without renewal: pausing every VM (self-fencing)");
                    state.fence().await;
                    fenced = true;
                }
            }
        }
    }
}

/// The lease deadline at start: what is left of the stored lease, or nothing.
fn initial_deadline(settings: &ReportSettings) -> Instant {
    let stored = std::fs::read_to_string(&settings.lease_file)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v.get("expires_at_unix_ms")?.as_u64());
    let now_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    match stored {
        Some(expiry) if expiry > now_ms => Instant::now() + Duration::from_millis(expiry - now_ms),
        // No lease on record (first start) or it has run out: whatever ran here is unconfirmed.
        _ => Instant::now(),
    }
}

fn persist_expiry(settings: &ReportSettings, expiry: SystemTime) {
    let ms = expiry.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let text = serde_json::json!({ "expires_at_unix_ms": ms }).to_string();
    if let Err(err) = write_atomic(&settings.lease_file, &text, 0o644) {
        tracing::warn!(error = %err, "cannot record the lease expiry");
    }
}
