//! The `cloud.agent.v1.ControlPlane` gRPC service: Join and Report.
//!
//! `Join` is the only call allowed without a client certificate; it is authorized by the join
//! token. `Report` must come with the certificate of the host it reports for. Every refusal is
//! logged with the reason, since a refused host is what an operator will ask about.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use cloud_proto::agent::v1 as pb;
use cloud_proto::agent::v1::control_plane_server::{ControlPlane, ControlPlaneServer};
use cloud_proto::identity::PeerIdentity;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::app::App;
use crate::db::hosts::{self, JoinError, NewHost};
use crate::db::instances::InstanceReport;
use crate::states::InstanceState;
use cloud_proto::join_token::JoinToken;

/// Serves the fleet's gRPC API on `addr` until `shutdown` resolves.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let fleet = &app.fleet;
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&fleet.identity.cert_pem, &fleet.identity.key_pem))
        .client_ca_root(Certificate::from_pem(fleet.ca.cert_pem()))
        .client_auth_optional(true);
    let incoming = cloud_common::tcp::incoming(listener);
    Server::builder()
        .tls_config(tls)?
        .add_service(ControlPlaneServer::new(ControlPlaneService { app: app.clone() }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Binds the gRPC listener (separately, so start-up fails early on a taken port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[derive(Debug)]
struct ControlPlaneService {
    app: Arc<App>,
}

fn refuse(status: Status, peer: Option<SocketAddr>, what: &str) -> Status {
    tracing::warn!(peer = ?peer, reason = %status.message(), "{what} refused");
    status
}

/// Size of the chunks blobs are streamed in.
const BLOB_CHUNK: usize = 256 * 1024;

#[tonic::async_trait]
impl ControlPlane for ControlPlaneService {
    type FetchBlobStream = tokio_stream::wrappers::ReceiverStream<Result<pb::BlobChunk, Status>>;

    async fn fetch_blob(
        &self,
        request: Request<pb::FetchBlobRequest>,
    ) -> Result<Response<Self::FetchBlobStream>, Status> {
        let peer = request.remote_addr();
        let fail = |status| refuse(status, peer, "blob fetch");
        match PeerIdentity::of_request(&request) {
            Ok(PeerIdentity::Host(_)) => {}
            Ok(PeerIdentity::ControlPlane) => return Err(fail(Status::permission_denied("only hosts fetch blobs"))),
            Err(e) => return Err(fail(Status::unauthenticated(e.to_string()))),
        }
        let sha = request.into_inner().sha256;
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(Status::invalid_argument("sha256 must be 64 lowercase hex digits"));
        }
        let path = self.app.blob_dir.join(&sha);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Status::not_found(format!("no blob {sha}")));
            }
            Err(e) => return Err(internal(&e)),
        };
        let total_size = file.metadata().await.map_err(|e| internal(&e))?.len();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut first = true;
            loop {
                let mut buf = vec![0u8; BLOB_CHUNK];
                let n = match file.read(&mut buf).await {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.send(Err(internal(&e))).await;
                        return;
                    }
                };
                if n == 0 && !first {
                    return;
                }
                buf.truncate(n);
                let chunk = pb::BlobChunk { total_size: if first { total_size } else { 0 }, data: buf };
                first = false;
                if tx.send(Ok(chunk)).await.is_err() || n == 0 {
                    return;
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn join(&self, request: Request<pb::JoinRequest>) -> Result<Response<pb::JoinResponse>, Status> {
        let peer = request.remote_addr();
        let req = request.into_inner();
        let fail = |status| refuse(status, peer, "join");
        let token = JoinToken::parse(&req.token).map_err(|e| fail(Status::unauthenticated(e.to_string())))?;
        let fleet = &self.app.fleet;
        if token.ca_sha256 != fleet.ca.cert_sha256() {
            return Err(fail(Status::unauthenticated("the join token belongs to another fleet")));
        }
        let host = validate_join(&req).map_err(|msg| fail(Status::invalid_argument(msg)))?;
        // Check the CSR before the token is spent, so a bad request does not burn it.
        rcgen::CertificateSigningRequestParams::from_pem(&req.csr_pem)
            .map_err(|_| fail(Status::invalid_argument("csr_pem is not a valid PEM certificate signing request")))?;

        let row = hosts::host_join(&self.app.pool, &token.secret_hash(), &host, fleet.config.instance_subnet_pool)
            .await
            .map_err(|err| match err {
                JoinError::UnknownToken => fail(Status::unauthenticated("unknown join token")),
                JoinError::TokenUsed => fail(Status::unauthenticated("the join token was already used")),
                JoinError::TokenExpired => fail(Status::unauthenticated("the join token has expired")),
                JoinError::PoolExhausted { .. } => fail(Status::resource_exhausted(err.to_string())),
                JoinError::Db(err) => internal(&err),
            })?;
        let certificate_pem = fleet.ca.sign_host_csr(&req.csr_pem, row.id).map_err(|e| internal(&e))?;
        tracing::info!(host_id = %row.id, hostname = %row.hostname, subnet = %row.instance_subnet, "host joined");
        Ok(Response::new(pb::JoinResponse {
            host_id: row.id.to_string(),
            certificate_pem,
            ca_certificate_pem: fleet.ca.cert_pem().to_owned(),
            instance_subnet: row.instance_subnet,
            lease_seconds: fleet.config.lease_secs,
        }))
    }

    async fn report(&self, request: Request<pb::HostReport>) -> Result<Response<pb::ReportResponse>, Status> {
        let peer = request.remote_addr();
        let fail = |status| refuse(status, peer, "report");
        let caller = PeerIdentity::of_request(&request).map_err(|e| fail(Status::unauthenticated(e.to_string())))?;
        let report = request.into_inner();
        let PeerIdentity::Host(host_id) = caller else {
            return Err(fail(Status::permission_denied("only hosts report")));
        };
        if Uuid::parse_str(&report.host_id).ok() != Some(host_id) {
            return Err(fail(Status::permission_denied(format!(
                "the certificate is for host {host_id}, the report for {:?}",
                report.host_id
            ))));
        }
        let received = std::time::Instant::now();
        // How old the freshest observation in the report is (the agent's clock against ours).
        let lag = report
            .instances
            .iter()
            .filter_map(|i| i.observed_at.as_ref())
            .map(|t| chrono::Utc::now().timestamp_millis() - (t.seconds * 1000 + i64::from(t.nanos) / 1_000_000))
            .min()
            .map(|ms| std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        let total = report.total.unwrap_or_default();
        // A capacity the database cannot hold is refused, never taken as "as much as fits".
        let too_large = |what: &str| fail(Status::invalid_argument(format!("the host's {what} is too large")));
        let capacity = (
            i32::try_from(total.vcpus).map_err(|_| too_large("vCPU count"))?,
            i64::try_from(total.memory_bytes).map_err(|_| too_large("memory"))?,
            i64::try_from(total.disk_bytes).map_err(|_| too_large("disk"))?,
        );
        let instances = report.instances.iter().filter_map(|status| instance_report(host_id, status)).collect();
        let written =
            super::reports::submit(&self.app.reports, super::reports::HostReport { host_id, capacity, instances })
                .await;
        let (renewal, owned) = written
            .map_err(|e| unavailable(&*e))?
            .ok_or_else(|| fail(Status::permission_denied("unknown host: join with a new token")))?;
        tracing::debug!(%host_id, state = %renewal.state, "report accepted");
        self.app.metrics.report_applied(received.elapsed(), lag);
        Ok(Response::new(pb::ReportResponse {
            lease_expires_at: Some(timestamp(renewal.lease_expires_at)),
            owned_instance_ids: owned.iter().map(Uuid::to_string).collect(),
        }))
    }
}

/// What an agent says about one of its instances, as the database takes it: its guest's
/// readiness and host keys, and its state when steady (operations own the transitional ones).
/// `None` for a status that names no instance.
fn instance_report(host: Uuid, status: &pb::InstanceStatus) -> Option<InstanceReport> {
    let id = Uuid::parse_str(&status.instance_id).ok()?;
    let Ok(generation) = i64::try_from(status.generation) else {
        tracing::warn!(%host, instance = %id, generation = status.generation, "a report's generation is out of range: ignored");
        return None;
    };
    // PostgreSQL keeps microseconds: compare at that precision, or every report would "change" it.
    let ready_at = status
        .ready_at
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0) / 1000 * 1000));
    let state = match pb::InstanceState::try_from(status.state) {
        Ok(pb::InstanceState::Running) => Some(InstanceState::Running),
        Ok(pb::InstanceState::Stopped) => Some(InstanceState::Stopped),
        Ok(pb::InstanceState::Failed) => Some(InstanceState::Failed),
        _ => None,
    };
    Some(InstanceReport {
        host: host.into(),
        id: id.into(),
        generation,
        state,
        reason: (!status.reason.is_empty()).then(|| status.reason.clone()),
        ready_at,
        host_keys: crate::openssh::HostKey::parse_all(status.ssh_host_keys.iter().map(String::as_str)),
    })
}

fn validate_join(req: &pb::JoinRequest) -> Result<NewHost, String> {
    let hostname = req.hostname.trim();
    if hostname.is_empty() || hostname.len() > 253 || hostname.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("hostname must be 1 to 253 printable characters without spaces".to_owned());
    }
    let endpoint = req.agent_endpoint.trim();
    let valid_endpoint = endpoint
        .strip_prefix("https://")
        .and_then(|rest| rest.rsplit_once(':'))
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if !valid_endpoint {
        return Err("agent_endpoint must look like https://HOST:PORT".to_owned());
    }
    let accelerator = match req.accelerator.as_str() {
        "kvm" | "tcg" | "simulated" => req.accelerator.clone(),
        other => return Err(format!("accelerator must be kvm, tcg or simulated, not {other:?}")),
    };
    let total = req.total.ok_or("total capacity is required")?;
    if total.vcpus == 0 || total.memory_bytes == 0 {
        return Err("total capacity must have vCPUs and memory".to_owned());
    }
    Ok(NewHost {
        hostname: hostname.to_owned(),
        agent_endpoint: endpoint.to_owned(),
        accelerator,
        total_vcpus: i32::try_from(total.vcpus).map_err(|_| "too many vCPUs")?,
        total_memory_bytes: i64::try_from(total.memory_bytes).map_err(|_| "memory too large")?,
        total_disk_bytes: i64::try_from(total.disk_bytes).map_err(|_| "disk too large")?,
    })
}

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0) }
}

fn internal(err: &(dyn std::error::Error + 'static)) -> Status {
    tracing::error!(error = %crate::error_chain::ErrorChain(err), "fleet gRPC internal error");
    Status::internal("internal error")
}

fn unavailable(err: &(dyn std::error::Error + 'static)) -> Status {
    tracing::warn!(error = %crate::error_chain::ErrorChain(err), "fleet gRPC: database unavailable");
    Status::unavailable("the control plane's database is unavailable")
}
