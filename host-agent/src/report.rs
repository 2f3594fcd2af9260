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

use crate::identity::HostIdentity;

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
    /// Resolves when a guest became ready or published host keys, so the next report goes out
    /// early (users wait for it).
    fn changed(&self) -> impl Future<Output = ()> + Send;
    /// True when VMs were found paused by an earlier agent's fence: the first accepted report
    /// unfences them, as if this process had fenced them.
    fn starts_fenced(&self) -> bool {
        false
    }
}

/// Shortest time between two reports when instances change quickly.
const MIN_REPORT_GAP: Duration = Duration::from_millis(20);

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
    let mut fenced = state.starts_fenced();
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut last_sent: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticker.tick() => {}
            () = state.changed() => {
                // news users wait for (a guest became ready) is reported now, not at the next tick
                if let Some(wait) = last_sent.map(|at| (at + MIN_REPORT_GAP).saturating_duration_since(Instant::now())) {
                    tokio::time::sleep(wait).await;
                }
                ticker.reset();
            }
        }
        last_sent = Some(Instant::now());
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
        // A slow answer still renews the lease (counted from when the report was sent): give it
        // half the lease, so a busy control plane is not taken for a silent one.
        request.set_timeout(settings.interval.max(settings.lease / 2).max(Duration::from_secs(1)));
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
    // No lease on record (first start) or it has run out: whatever ran here is unconfirmed.
    Instant::now() + lease_left(&settings.lease_file).unwrap_or_default()
}

/// What is left of the lease recorded in `lease_file`; `None` when there is none or it ran out
/// (then nothing this host ran may run again before the control plane confirms it).
pub fn lease_left(lease_file: &std::path::Path) -> Option<Duration> {
    let stored = std::fs::read_to_string(lease_file)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v.get("expires_at_unix_ms")?.as_u64())?;
    let now_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    (stored > now_ms).then(|| Duration::from_millis(stored - now_ms))
}

fn persist_expiry(settings: &ReportSettings, expiry: SystemTime) {
    let ms = expiry.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let text = serde_json::json!({ "expires_at_unix_ms": ms }).to_string();
    // Written in place, not synced: every report, and only needed across agent restarts (after
    // a power cut the VMs it protects are gone too). Always 13 digits of milliseconds, so every
    // version has the same length.
    if let Err(err) = cloud_common::fs::overwrite_in_place(&settings.lease_file, text.as_bytes(), 0o644) {
        tracing::warn!(error = %err, file = %settings.lease_file.display(), "cannot record the lease expiry");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The report loop against a real in-process gRPC server on 127.0.0.1 (plaintext: TLS is
    //! not what is under test) that plays the control plane's side of reports, and a host whose
    //! fence and unfence calls are recorded with their time.

    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use cloud_proto::agent::v1::control_plane_server::{ControlPlane, ControlPlaneServer};
    use tokio::sync::{mpsc, oneshot, watch};
    use tonic::transport::{Endpoint, Server};
    use tonic::{Request, Response, Status};

    use super::*;
    use crate::identity::HostRecord;

    const INTERVAL: Duration = Duration::from_millis(100);
    const LEASE: Duration = Duration::from_millis(600);
    /// Scheduling noise allowed on a busy machine when checking *when* something happened.
    const SLACK: Duration = Duration::from_millis(100);

    /// The control plane as a network peer: accepts reports (confirming `owned`) or, while
    /// `failing`, refuses them as unavailable.
    struct Peer {
        failing: AtomicBool,
        owned: Vec<String>,
        accepted: watch::Sender<u32>,
        last_accepted: Mutex<Option<Instant>>,
    }

    impl Peer {
        fn new(owned: &[&str], failing: bool) -> Arc<Peer> {
            Arc::new(Peer {
                failing: AtomicBool::new(failing),
                owned: owned.iter().map(|s| (*s).to_owned()).collect(),
                accepted: watch::channel(0).0,
                last_accepted: Mutex::new(None),
            })
        }

        fn last_accepted(&self) -> Instant {
            self.last_accepted.lock().unwrap().unwrap()
        }

        /// Waits until `n` more reports have been accepted.
        async fn wait_for_accepted(&self, n: u32) {
            let mut rx = self.accepted.subscribe();
            let target = *rx.borrow() + n;
            tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|c| *c >= target)).await.unwrap().unwrap();
        }
    }

    #[tonic::async_trait]
    impl ControlPlane for Peer {
        async fn join(&self, _: Request<pb::JoinRequest>) -> Result<Response<pb::JoinResponse>, Status> {
            Err(Status::unimplemented("not part of this test"))
        }

        async fn report(&self, request: Request<pb::HostReport>) -> Result<Response<pb::ReportResponse>, Status> {
            assert!(!request.into_inner().host_id.is_empty());
            if self.failing.load(Ordering::SeqCst) {
                return Err(Status::unavailable("the control plane is unreachable (test)"));
            }
            *self.last_accepted.lock().unwrap() = Some(Instant::now());
            self.accepted.send_modify(|c| *c += 1);
            Ok(Response::new(pb::ReportResponse { lease_expires_at: None, owned_instance_ids: self.owned.clone() }))
        }

        type FetchBlobStream = tokio_stream::Empty<Result<pb::BlobChunk, Status>>;

        async fn fetch_blob(
            &self,
            _: Request<pb::FetchBlobRequest>,
        ) -> Result<Response<Self::FetchBlobStream>, Status> {
            Err(Status::unimplemented("not part of this test"))
        }
    }

    /// Serves `peer` on an ephemeral port; returns a channel to it.
    async fn spawn_control_plane(peer: Arc<Peer>) -> Channel {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(Server::builder().add_service(ControlPlaneServer::from_arc(peer)).serve_with_incoming(incoming));
        Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy()
    }

    #[derive(Debug, PartialEq)]
    enum Event {
        Fenced(Instant),
        Unfenced(Instant, Vec<String>),
    }

    /// A host that records when it is fenced and unfenced.
    struct RecordingHost {
        events: mpsc::UnboundedSender<Event>,
    }

    impl HostState for RecordingHost {
        async fn capacity(&self) -> (pb::Capacity, pb::Capacity) {
            (pb::Capacity { vcpus: 4, memory_bytes: 1 << 30, disk_bytes: 1 << 30 }, pb::Capacity::default())
        }

        async fn instances(&self) -> Vec<pb::InstanceStatus> {
            Vec::new()
        }

        async fn fence(&self) {
            let _ = self.events.send(Event::Fenced(Instant::now()));
        }

        async fn changed(&self) {
            std::future::pending().await
        }

        async fn unfence(&self, owned: Vec<String>) {
            let _ = self.events.send(Event::Unfenced(Instant::now(), owned));
        }
    }

    /// A running report loop; stopped on drop.
    struct Agent {
        events: mpsc::UnboundedReceiver<Event>,
        started: Instant,
        _stop: oneshot::Sender<()>,
    }

    impl Agent {
        fn start(channel: Channel, lease: Duration, lease_file: PathBuf) -> Agent {
            let record = HostRecord {
                host_id: uuid::Uuid::new_v4(),
                instance_subnet: "10.100.3.0/24".into(),
                control_plane_grpc_url: String::new(),
                lease_seconds: 1,
                agent_endpoint: String::new(),
            };
            let identity = HostIdentity::new(record, String::new(), String::new(), String::new());
            let (tx, events) = mpsc::unbounded_channel();
            let (stop, stopped) = oneshot::channel::<()>();
            let settings = ReportSettings { interval: INTERVAL, lease, lease_file };
            let shutdown = async move {
                let _ = stopped.await;
            };
            tokio::spawn(run(identity, channel, Arc::new(RecordingHost { events: tx }), settings, shutdown));
            Agent { events, started: Instant::now(), _stop: stop }
        }

        async fn next_event(&mut self) -> Event {
            tokio::time::timeout(Duration::from_secs(10), self.events.recv()).await.unwrap().unwrap()
        }

        /// Asserts that nothing is fenced or unfenced for `period`.
        async fn assert_quiet_for(&mut self, period: Duration) {
            if let Ok(event) = tokio::time::timeout(period, self.events.recv()).await {
                panic!("unexpected {event:?}");
            }
        }
    }

    fn lease_expiry_ms(path: &std::path::Path) -> u64 {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        v["expires_at_unix_ms"].as_u64().unwrap()
    }

    fn now_ms() -> u64 {
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64
    }

    #[tokio::test]
    async fn fences_once_after_the_lease_and_resumes_what_the_control_plane_owns() {
        let tmp = tempfile::tempdir().unwrap();
        let lease_file = tmp.path().join("lease.json");
        let peer = Peer::new(&["a", "b"], false);
        let mut agent = Agent::start(spawn_control_plane(peer.clone()).await, LEASE, lease_file.clone());

        // (a) Reports get through: no fence, however long it goes on; the lease is on record.
        peer.wait_for_accepted(10).await;
        agent.assert_quiet_for(Duration::ZERO).await;
        assert!(lease_expiry_ms(&lease_file) > now_ms());

        // (b) The control plane stops accepting: one fence, once the lease has run out.
        peer.failing.store(true, Ordering::SeqCst);
        let Event::Fenced(fenced_at) = agent.next_event().await else { panic!("expected a fence") };
        let since_renewal = fenced_at - peer.last_accepted();
        assert!(since_renewal + SLACK >= LEASE, "fenced {since_renewal:?} after the last renewal");
        assert!(since_renewal <= LEASE + 2 * INTERVAL + 5 * SLACK, "fenced only {since_renewal:?} after it");
        agent.assert_quiet_for(4 * INTERVAL).await;

        // (c) Reports get through again: the instances the control plane owns are resumed, once.
        peer.failing.store(false, Ordering::SeqCst);
        let Event::Unfenced(_, owned) = agent.next_event().await else { panic!("expected an unfence") };
        assert_eq!(owned, ["a", "b"]);
        peer.wait_for_accepted(3).await;
        agent.assert_quiet_for(Duration::ZERO).await;
    }

    #[tokio::test]
    async fn a_stored_lease_is_honoured_at_start_and_an_expired_one_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let lease_file = tmp.path().join("lease.json");
        let peer = Peer::new(&[], true);
        let channel = spawn_control_plane(peer).await;
        // A lease long enough that a fence within it can only come from the stored expiry.
        let lease = Duration::from_secs(30);

        // (d) 1 s of lease left on record: no fence while it lasts, a fence soon after.
        let left = Duration::from_secs(1);
        std::fs::write(&lease_file, format!(r#"{{"expires_at_unix_ms":{}}}"#, now_ms() + 1000)).unwrap();
        let mut agent = Agent::start(channel.clone(), lease, lease_file.clone());
        let Event::Fenced(at) = agent.next_event().await else { panic!("expected a fence") };
        let after = at - agent.started;
        assert!(after + SLACK >= left, "fenced after {after:?} with {left:?} of stored lease");
        assert!(after <= left + 2 * INTERVAL + 5 * SLACK, "fenced only after {after:?}");
        drop(agent);

        // An expired lease on record: fenced at the first failed report.
        std::fs::write(&lease_file, format!(r#"{{"expires_at_unix_ms":{}}}"#, now_ms() - 1000)).unwrap();
        let mut agent = Agent::start(channel, lease, lease_file);
        let Event::Fenced(at) = agent.next_event().await else { panic!("expected a fence") };
        assert!(at - agent.started <= INTERVAL + 5 * SLACK, "fenced after {:?}", at - agent.started);
        agent.assert_quiet_for(3 * INTERVAL).await;
    }
}
