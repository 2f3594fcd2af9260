//! The `cloud.agent.v1.HostAgent` service.
//!
//! Every call must come from the control plane: the TLS layer already required a certificate
//! signed by the fleet CA, and the interceptor here refuses every identity but the control
//! plane's (another host's certificate is valid, but not allowed to drive this host).

use std::future::Future;
use std::pin::Pin;

use cloud_proto::agent::v1 as pb;
use cloud_proto::agent::v1::host_agent_server::{HostAgent, HostAgentServer};
use cloud_proto::identity::PeerIdentity;
use futures::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use crate::identity::HostIdentity;
use crate::instances::{InstanceError, InstanceManager, PowerState};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The service's state.
#[derive(Debug, Clone)]
pub struct AgentService {
    pub identity: HostIdentity,
    pub manager: InstanceManager,
    pub total: pb::Capacity,
    pub accelerator: String,
}

/// Serves the agent's gRPC API on `listener` until `shutdown` resolves.
pub async fn serve(
    service: AgentService,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let tls = service.identity.server_tls();
    let incoming = cloud_common::tcp::incoming(listener);
    Server::builder()
        .trace_fn(|request| {
            // Each call is a span of the control plane's trace (W3C context in its metadata).
            let span = tracing::info_span!("grpc", method = %request.uri().path());
            cloud_common::telemetry::set_parent(&span, |name| {
                request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
            });
            span
        })
        .tls_config(tls)?
        .add_service(HostAgentServer::with_interceptor(service, only_the_control_plane))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

fn only_the_control_plane(request: Request<()>) -> Result<Request<()>, Status> {
    match PeerIdentity::of_request(&request) {
        Ok(PeerIdentity::ControlPlane) => Ok(request),
        Ok(other) => {
            tracing::warn!(peer = ?request.remote_addr(), identity = ?other, "refused a caller that is not the control plane");
            Err(Status::permission_denied("only the control plane may call a host agent"))
        }
        Err(err) => {
            tracing::warn!(peer = ?request.remote_addr(), error = %err, "refused a caller without a fleet certificate");
            Err(Status::unauthenticated(err.to_string()))
        }
    }
}

fn status_of(err: InstanceError) -> Status {
    match &err {
        InstanceError::StaleGeneration { .. } => Status::failed_precondition(err.to_string()),
        InstanceError::NotFound { .. } => Status::not_found(err.to_string()),
        InstanceError::InvalidSpec { .. } => Status::invalid_argument(err.to_string()),
        InstanceError::CorruptSnapshot { .. } => Status::data_loss(err.to_string()),
        InstanceError::Store { source: cloud_store::StoreError::Corrupt { .. }, .. } => {
            Status::data_loss(crate::error_chain(&err))
        }
        InstanceError::Store { source: cloud_store::StoreError::NotFound { .. }, .. } => {
            Status::not_found(crate::error_chain(&err))
        }
        // The store was already retried for seconds: the operation fails (a snapshot is marked
        // failed and earlier ones stay usable) rather than waiting out a long outage.
        InstanceError::Store { .. } => Status::aborted(crate::error_chain(&err)),
        InstanceError::InvalidState { .. } => Status::failed_precondition(err.to_string()),
        _ => {
            tracing::error!(error = %crate::error_chain(&err), "instance operation failed");
            Status::internal(err.to_string())
        }
    }
}

#[tonic::async_trait]
impl HostAgent for AgentService {
    async fn get_host_info(&self, _: Request<pb::GetHostInfoRequest>) -> Result<Response<pb::HostInfo>, Status> {
        let used = crate::agent::capacity_used(&self.manager).await;
        Ok(Response::new(pb::HostInfo {
            host_id: self.identity.record.host_id.to_string(),
            hostname: nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default(),
            agent_version: crate::VERSION.to_owned(),
            accelerator: self.accelerator.clone(),
            total: Some(self.total),
            used: Some(used),
            instance_subnet: self.identity.record.instance_subnet.clone(),
        }))
    }

    async fn ensure_instance(
        &self,
        request: Request<pb::EnsureInstanceRequest>,
    ) -> Result<Response<pb::InstanceStatus>, Status> {
        let req = request.into_inner();
        let spec = req.spec.ok_or_else(|| Status::invalid_argument("spec is required"))?;
        let desired = convert::desired_instance(spec)?;
        let power = match pb::PowerState::try_from(req.desired_power_state) {
            Ok(pb::PowerState::Running) => PowerState::Running,
            Ok(pb::PowerState::Stopped) => PowerState::Stopped,
            _ => return Err(Status::invalid_argument("desired_power_state must be RUNNING or STOPPED")),
        };
        let status = self.manager.ensure(desired, power, req.generation).await.map_err(status_of)?;
        Ok(Response::new(convert::status(&status)))
    }

    async fn stop_instance(
        &self,
        request: Request<pb::InstanceActionRequest>,
    ) -> Result<Response<pb::InstanceStatus>, Status> {
        let req = request.into_inner();
        let status =
            self.manager.stop(convert::instance_id(&req.instance_id)?, req.generation).await.map_err(status_of)?;
        Ok(Response::new(convert::status(&status)))
    }

    async fn reboot_instance(
        &self,
        request: Request<pb::InstanceActionRequest>,
    ) -> Result<Response<pb::InstanceStatus>, Status> {
        let req = request.into_inner();
        let status =
            self.manager.reboot(convert::instance_id(&req.instance_id)?, req.generation).await.map_err(status_of)?;
        Ok(Response::new(convert::status(&status)))
    }

    async fn delete_instance(
        &self,
        request: Request<pb::InstanceActionRequest>,
    ) -> Result<Response<pb::InstanceStatus>, Status> {
        let req = request.into_inner();
        let status =
            self.manager.delete(convert::instance_id(&req.instance_id)?, req.generation).await.map_err(status_of)?;
        Ok(Response::new(convert::status(&status)))
    }

    async fn get_instance(
        &self,
        request: Request<pb::GetInstanceRequest>,
    ) -> Result<Response<pb::InstanceStatus>, Status> {
        let id = convert::instance_id(&request.into_inner().instance_id)?;
        let status = self.manager.get(id).await.map_err(status_of)?;
        Ok(Response::new(convert::status(&status)))
    }

    async fn snapshot_instance(
        &self,
        request: Request<pb::SnapshotInstanceRequest>,
    ) -> Result<Response<pb::SnapshotInfo>, Status> {
        let req = request.into_inner();
        let id = convert::instance_id(&req.instance_id)?;
        let snapshot = convert::snapshot_id(&req.snapshot_id)?;
        let kind = convert::snapshot_kind(req.kind)?;
        let info = self.manager.snapshot(id, snapshot, kind, req.generation).await.map_err(status_of)?;
        Ok(Response::new(convert::snapshot_info(&info)))
    }

    async fn restore_instance(
        &self,
        request: Request<pb::RestoreInstanceRequest>,
    ) -> Result<Response<pb::InstanceStatus>, Status> {
        let req = request.into_inner();
        let spec = req.spec.ok_or_else(|| Status::invalid_argument("spec is required"))?;
        let desired = convert::desired_instance(spec)?;
        // The location names the snapshot; the id alone means the local store's copy.
        let location = match (req.snapshot_id.as_str(), req.snapshot_location.as_str()) {
            ("", "") => return Err(Status::invalid_argument("snapshot_id or snapshot_location is required")),
            (id, "") => self.manager.snapshot_location(convert::snapshot_id(id)?),
            (id, location) => {
                let location = std::path::PathBuf::from(location);
                if !id.is_empty() && location.file_name().and_then(|n| n.to_str()) != Some(id) {
                    return Err(Status::invalid_argument(format!(
                        "snapshot_location {} is not the location of snapshot {id}",
                        location.display()
                    )));
                }
                location
            }
        };
        let status =
            self.manager.restore_as(desired, location, req.generation, req.fresh_boot).await.map_err(status_of)?;
        Ok(Response::new(convert::status(&status)))
    }

    async fn delete_snapshot(
        &self,
        request: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        let snapshot = convert::snapshot_id(&request.into_inner().snapshot_id)?;
        let deleted = self.manager.delete_snapshot(snapshot).await.map_err(status_of)?;
        Ok(Response::new(pb::DeleteSnapshotResponse { deleted }))
    }

    type ConsoleStream = BoxStream<pb::ConsoleOutput>;

    async fn console(
        &self,
        request: Request<Streaming<pb::ConsoleInput>>,
    ) -> Result<Response<Self::ConsoleStream>, Status> {
        let mut input = request.into_inner();
        let first = input
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("the first message must name the instance"))??;
        let Some(pb::console_input::Kind::InstanceId(id)) = first.kind else {
            return Err(Status::invalid_argument("the first message must name the instance"));
        };
        let session = self.manager.console(convert::instance_id(&id)?).await.map_err(status_of)?;
        let (scrollback, mut live, writer) = session.into_parts();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = input.next().await {
                if let Some(pb::console_input::Kind::Data(bytes)) = msg.kind
                    && writer.send(bytes).await.is_err()
                {
                    return;
                }
            }
        });
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            if !scrollback.is_empty()
                && tx.send(Ok(pb::ConsoleOutput { data: scrollback, scrollback: true })).await.is_err()
            {
                return;
            }
            loop {
                match live.recv().await {
                    Ok(data) => {
                        if tx.send(Ok(pb::ConsoleOutput { data: data.to_vec(), scrollback: false })).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "a console viewer fell behind");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type TunnelStream = BoxStream<pb::TunnelData>;

    async fn tunnel(
        &self,
        request: Request<Streaming<pb::TunnelData>>,
    ) -> Result<Response<Self::TunnelStream>, Status> {
        let mut input = request.into_inner();
        let first =
            input.next().await.ok_or_else(|| Status::invalid_argument("the first message must open the tunnel"))??;
        let Some(pb::tunnel_data::Kind::Open(open)) = first.kind else {
            return Err(Status::invalid_argument("the first message must open the tunnel"));
        };
        let port = u16::try_from(open.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| Status::invalid_argument("port must be 1-65535"))?;
        let stream = self.manager.tunnel(convert::instance_id(&open.instance_id)?, port).await.map_err(status_of)?;
        cloud_common::tcp::quick_ack(&stream);
        let (mut read, mut write) = stream.into_split();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = input.next().await {
                if let Some(pb::tunnel_data::Kind::Data(bytes)) = msg.kind
                    && write.write_all(&bytes).await.is_err()
                {
                    return;
                }
            }
            let _ = write.shutdown().await;
        });
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        cloud_common::tcp::quick_ack(read.as_ref());
                        let msg = pb::TunnelData { kind: Some(pb::tunnel_data::Kind::Data(buf[..n].to_vec())) };
                        if tx.send(Ok(msg)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type WatchInstancesStream = BoxStream<pb::InstanceStatus>;

    async fn watch_instances(
        &self,
        _: Request<pb::WatchInstancesRequest>,
    ) -> Result<Response<Self::WatchInstancesStream>, Status> {
        // Subscribe before listing, so no change between the two is lost.
        let mut changes = self.manager.watch();
        let current = self.manager.list().await;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            for status in &current {
                if tx.send(Ok(convert::status(status))).await.is_err() {
                    return;
                }
            }
            loop {
                match changes.recv().await {
                    Ok(status) => {
                        if tx.send(Ok(convert::status(&status))).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "an instance watcher fell behind");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
