//! `host-agent run`: serve the control plane, run the instances, report, fence.
//!
//! Stopping the agent (SIGINT/SIGTERM, or a crash) never stops a VM: QEMU runs detached, and a
//! restarted agent reattaches to every instance directory it finds.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cloud_proto::agent::v1 as pb;
use tonic::transport::Endpoint;

use crate::config::{AgentConfig, Driver};
use crate::grpc::{AgentService, blobs::ControlPlaneBlobs};
use crate::identity::{HostIdentity, IdentityError};
use crate::instances::{DriverKind, InstanceManager, ManagerConfig, ManagerError};
use crate::report::{self, HostState, ReportSettings};

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("invalid control plane URL {url}")]
    ControlPlaneUrl {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the instance subnet {subnet:?} recorded at join is not an IPv4 /24")]
    Subnet { subnet: String },
    #[error("cannot start the instance manager")]
    Manager(#[from] ManagerError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent's gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
}

/// The accelerator this host's VMs get ("kvm" or "tcg"), or "simulated".
pub fn accelerator(config: &AgentConfig) -> String {
    match config.driver {
        Driver::Simulated => "simulated".to_owned(),
        Driver::Qemu => {
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            vmm::qemu::host::resolve_accel(vmm::spec::Accel::Auto, &cpuinfo).as_str().to_owned()
        }
    }
}

/// The instance manager's settings for this agent.
fn manager_config(config: &AgentConfig, subnet: &str) -> Result<ManagerConfig, RunError> {
    let net = subnet.parse().map_err(|_| RunError::Subnet { subnet: subnet.to_owned() })?;
    let mut manager = ManagerConfig::new(net);
    manager.instances_dir = config.state_dir.join("instances");
    manager.images_dir = config.state_dir.join("images");
    manager.snapshots_dir = config.state_dir.join("snapshots");
    manager.chunks_dir = config.state_dir.join("chunks");
    manager.chunk_cache_max_bytes = config.chunk_cache_gib.saturating_mul(1 << 30);
    manager.image_cache_max_bytes = config.image_cache_gib.saturating_mul(1 << 30);
    manager.vm_user_base = config.vm_user_base;
    manager.vm_memory_overhead_mib = config.vm_memory_overhead_mib;
    // Scale simulations have no disks to store.
    manager.store = (config.driver == Driver::Qemu).then(|| config.store.clone());
    manager.bridge.clone_from(&config.bridge);
    // The host routes its instances' traffic (egress NAT): forwarding must be on.
    manager.enable_ip_forward = true;
    manager.driver = match config.driver {
        Driver::Qemu => DriverKind::Qemu(Box::new(vmm::LaunchOptions {
            console_log_max_bytes: config.console_log_max_kib.saturating_mul(1 << 10),
            ..vmm::LaunchOptions::default()
        })),
        Driver::Simulated => DriverKind::Simulated,
    };
    Ok(manager)
}

/// What instances use of the host, as the proto reports it.
pub async fn capacity_used(manager: &InstanceManager) -> pb::Capacity {
    let used = manager.capacity_used().await;
    pb::Capacity {
        vcpus: u32::try_from(used.vcpus).unwrap_or(u32::MAX),
        memory_bytes: used.memory_mib << 20,
        disk_bytes: used.disk_bytes,
    }
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), RunError> {
    let identity = HostIdentity::load(&config.identity_dir())?;
    let url = identity.record.control_plane_grpc_url.clone();
    let endpoint_err = |source| RunError::ControlPlaneUrl { url: url.clone(), source };
    let channel = Endpoint::from_shared(url.clone())
        .map_err(endpoint_err)?
        .tls_config(identity.client_tls())
        .map_err(endpoint_err)?
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();

    let mut manager_config = manager_config(&config, &identity.record.instance_subnet)?;
    let lease_file = config.state_dir.join("lease.json");
    // A lease that ran out while the agent was away: the host may have been declared dead and
    // its instances recovered elsewhere, so none of its dead VMs is relaunched before the
    // control plane confirms this host still owns it.
    manager_config.fenced_at_start = crate::report::lease_left(&lease_file).is_none();
    let manager = InstanceManager::start(manager_config, Arc::new(ControlPlaneBlobs::new(channel.clone()))).await?;
    let total = crate::capacity::total(&config.capacity, &config.state_dir);
    let service =
        AgentService { identity: identity.clone(), manager: manager.clone(), total, accelerator: accelerator(&config) };

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Listen { addr: config.listen, source })?;
    tracing::info!(host_id = %identity.record.host_id, listen = %config.listen, control_plane = %url, "host agent running");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let settings = ReportSettings {
        interval: Duration::from_millis(config.report_interval_ms),
        lease: Duration::from_secs(u64::from(identity.record.lease_seconds)),
        lease_file,
    };
    // VMs an earlier agent paused when its lease ran out, and VMs that died while the lease
    // ran out, wait for the first accepted report: it says which this host still owns.
    let paused: Vec<_> = manager.list().await.iter().filter(|s| s.is_fenced()).map(|s| s.id).collect();
    if !paused.is_empty() {
        tracing::warn!(
            instances = paused.len(),
            "VMs were left paused by a fence: they resume once a report is accepted"
        );
    }
    if let Some(addr) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| RunError::Listen { addr, source })?;
        tracing::info!(listen = %addr, "serving metrics");
        let metrics = serve_metrics(listener, manager.clone(), stopped(stop_rx.clone()));
        tokio::spawn(async move {
            if let Err(e) = metrics.await {
                tracing::warn!(error = %e, "the metrics server stopped");
            }
        });
    }
    let state = Arc::new(ManagerState { manager, total, fenced: std::sync::Mutex::new(paused) });
    let reports = report::run(identity, channel, state, settings, stopped(stop_rx.clone()));
    let served = crate::grpc::serve(service, listener, stopped(stop_rx));
    let ((), served) = tokio::join!(reports, served);
    tracing::info!("host agent stopped; its VMs keep running");
    served.map_err(RunError::Serve)
}

/// The report loop's view of the instance manager.
#[derive(Debug)]
struct ManagerState {
    manager: InstanceManager,
    total: pb::Capacity,
    /// The instances that were here when the lease ran out.
    fenced: std::sync::Mutex<Vec<crate::instances::InstanceId>>,
}

impl HostState for ManagerState {
    async fn capacity(&self) -> (pb::Capacity, pb::Capacity) {
        (self.total, capacity_used(&self.manager).await)
    }

    async fn instances(&self) -> Vec<pb::InstanceStatus> {
        self.manager.list().await.iter().map(crate::grpc::convert::status).collect()
    }

    async fn changed(&self) {
        self.manager.guest_news().await;
    }

    fn starts_fenced(&self) -> bool {
        !self.fenced.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    async fn fence(&self) {
        let paused = self.manager.pause_all().await;
        tracing::warn!(instances = paused.len(), "fenced: instances paused");
        *self.fenced.lock().unwrap_or_else(|e| e.into_inner()) = paused.iter().map(|s| s.id).collect();
    }

    /// Destroys what was here when the lease ran out and the control plane no longer places
    /// here (deleted or moved meanwhile), then resumes what it still owns. Instances created
    /// after the fence are never destroyed here: the owned list may predate them.
    async fn unfence(&self, owned: Vec<String>) {
        let owned: Vec<crate::instances::InstanceId> = owned.iter().filter_map(|id| id.parse().ok()).collect();
        let fenced = std::mem::take(&mut *self.fenced.lock().unwrap_or_else(|e| e.into_inner()));
        for id in fenced.into_iter().filter(|id| !owned.contains(id)) {
            if let Err(err) = self.manager.destroy_unowned(id).await {
                tracing::error!(%id, error = %crate::error_chain(&err), "cannot destroy an instance this host no longer owns");
            }
        }
        for result in self.manager.resume(owned).await {
            if let Err(err) = result {
                tracing::error!(error = %crate::error_chain(&err), "cannot resume an instance after fencing");
            }
        }
    }
}

/// Serves the agent's `GET /metrics` ([`crate::metrics`]) on `listener` until `shutdown`.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    manager: crate::instances::InstanceManager,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;

    let route = axum::routing::get(move || {
        let manager = manager.clone();
        async move {
            let states: Vec<&'static str> = manager.list().await.iter().map(|s| s.state.as_str()).collect();
            match manager.metrics().encode(states) {
                Ok(text) => {
                    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                        .into_response()
                }
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }
    });
    let app = axum::Router::new().route("/metrics", route);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
