//! `host-agent join`: become a member of a fleet with a join token.
//!
//! 1. Fetch the fleet CA and gRPC URL from the control plane's `/v1/fleet/join-info` and check
//!    the CA against the hash inside the token: from here on a man in the middle would need the
//!    fleet CA's key.
//! 2. Generate the host's key pair (it never leaves the host) and a CSR.
//! 3. Call `Join` over TLS (server verified against that CA; no client certificate yet).
//! 4. Store the certificate, CA and host record (see `identity`).

use std::time::Duration;

use cloud_proto::agent::v1 as pb;
use cloud_proto::agent::v1::control_plane_client::ControlPlaneClient;
use cloud_proto::identity::{CONTROL_PLANE_DNS, pem_sha256};
use cloud_proto::join_token::JoinToken;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::config::AgentConfig;
use crate::identity::{HostIdentity, HostRecord, IdentityError};

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("this host already joined the fleet as host {host_id}; remove {dir} to join again")]
    AlreadyJoined { host_id: uuid::Uuid, dir: std::path::PathBuf },
    #[error("the join token is malformed")]
    BadToken(#[source] cloud_proto::join_token::MalformedToken),
    #[error("cannot reach the control plane at {url}")]
    Discovery {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the control plane at {url} answered join-info with {status}")]
    DiscoveryStatus { url: String, status: reqwest::StatusCode },
    #[error(
        "the control plane's CA (sha256 {got}) is not the one in the join token ({expected}): refusing to trust it"
    )]
    CaMismatch { expected: String, got: String },
    #[error("cannot generate the host key or CSR")]
    Key(#[source] rcgen::Error),
    #[error("invalid control plane gRPC URL {url}")]
    Endpoint {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot connect to the control plane's gRPC service at {url}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the control plane refused to join: {}", .0.message())]
    Refused(tonic::Status),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

#[derive(Debug, serde::Deserialize)]
struct JoinInfo {
    ca_certificate_pem: String,
    grpc_url: String,
}

/// Joins the fleet of `control_plane` (its HTTP API URL) with `token`, and stores the identity.
pub async fn join(
    config: &AgentConfig,
    control_plane: &str,
    token: &str,
    capacity: pb::Capacity,
    accelerator: &str,
) -> Result<HostIdentity, JoinError> {
    let dir = config.identity_dir();
    if let Ok(existing) = HostIdentity::load(&dir) {
        return Err(JoinError::AlreadyJoined { host_id: existing.record.host_id, dir });
    }
    let token = JoinToken::parse(token).map_err(JoinError::BadToken)?;
    let agent_endpoint = config.advertised_url()?;

    let url = format!("{}/v1/fleet/join-info", control_plane.trim_end_matches('/'));
    let discovery = |source| JoinError::Discovery { url: url.clone(), source };
    // The API's certificate is not checked here (it may come from any CA, or be self-signed):
    // what this request fetches is the fleet CA, which is checked against the hash in the token
    // below, and the gRPC URL, whose server must then prove itself with that CA. A forged
    // answer can only make the join fail.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .danger_accept_invalid_certs(true)
        .build()
        .map_err(discovery)?;
    let resp = http.get(&url).send().await.map_err(discovery)?;
    if !resp.status().is_success() {
        return Err(JoinError::DiscoveryStatus { url, status: resp.status() });
    }
    let info: JoinInfo = resp.json().await.map_err(discovery)?;
    let got = pem_sha256(&info.ca_certificate_pem).unwrap_or_default();
    if got != token.ca_sha256 {
        return Err(JoinError::CaMismatch { expected: token.ca_sha256.clone(), got });
    }

    let key = rcgen::KeyPair::generate().map_err(JoinError::Key)?;
    let hostname =
        nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "host".to_owned());
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(JoinError::Key)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, hostname.clone());
    let csr_pem = params.serialize_request(&key).and_then(|csr| csr.pem()).map_err(JoinError::Key)?;

    let endpoint_err = |source| JoinError::Endpoint { url: info.grpc_url.clone(), source };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&info.ca_certificate_pem))
        .domain_name(CONTROL_PLANE_DNS);
    let channel = Endpoint::from_shared(info.grpc_url.clone())
        .map_err(endpoint_err)?
        .tls_config(tls)
        .map_err(endpoint_err)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|source| JoinError::Connect { url: info.grpc_url.clone(), source })?;
    let reply = ControlPlaneClient::new(channel)
        .join(pb::JoinRequest {
            token: token.to_string(),
            csr_pem,
            hostname,
            agent_endpoint: agent_endpoint.clone(),
            total: Some(capacity),
            accelerator: accelerator.to_owned(),
        })
        .await
        .map_err(JoinError::Refused)?
        .into_inner();
    let host_id = reply
        .host_id
        .parse()
        .map_err(|_| JoinError::Refused(tonic::Status::internal("the control plane returned an invalid host id")))?;
    let identity = HostIdentity::new(
        HostRecord {
            host_id,
            instance_subnet: reply.instance_subnet,
            control_plane_grpc_url: info.grpc_url,
            lease_seconds: reply.lease_seconds,
            agent_endpoint,
        },
        reply.certificate_pem,
        key.serialize_pem(),
        reply.ca_certificate_pem,
    );
    identity.store(&dir)?;
    tracing::info!(%host_id, subnet = %identity.record.instance_subnet, "joined the fleet");
    Ok(identity)
}
