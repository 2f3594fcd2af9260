//! The fleet: host agents joining with a token, mutual TLS under the fleet CA, and the reports
//! that renew each host's lease.
//!
//! ```text
//!  operator ── POST /v1/hosts/join-tokens ──▶ token cjt1.<ca sha256>.<secret>
//!  host-agent join:
//!    GET /v1/fleet/join-info            CA certificate + gRPC URL; CA checked against the token
//!    gRPC Join(token, CSR)  (TLS, server verified, no client certificate yet)
//!      ◀── host id, certificate, CA, instance /24, lease period
//!  host-agent run:
//!    gRPC Report every ~2 s (mutual TLS)  ◀── lease expiry, instances it owns
//! ```

pub mod grpc;
pub mod pki;
pub mod reports;

use std::net::SocketAddr;
use std::path::Path;

use cloud_common::net::Ipv4Net;
use pki::{FleetCa, IssuedIdentity, PkiError};
use serde::{Deserialize, Serialize};

/// `[fleet]` configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Where the gRPC service for host agents listens (mutual TLS).
    pub grpc_listen: SocketAddr,
    /// The URL agents use to reach `grpc_listen` (default: `https://<grpc_listen>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_url: Option<String>,
    /// Each joining host gets the next free /24 of this pool for its instances.
    pub instance_subnet_pool: Ipv4Net,
    /// How long a report keeps a host's lease; agents report every ~2 s.
    pub lease_secs: u32,
    /// Default lifetime of a join token.
    pub join_token_ttl_secs: u64,
    /// When at least this percentage of the hosts is silent at once (and at least
    /// `partition_min_hosts`), it is a partition: none is declared dead automatically.
    pub partition_silent_percent: u32,
    /// The fewest silent hosts that can make a partition.
    pub partition_min_hosts: u32,
    /// Dial every live host's agent ahead of its first call and keep the connection
    /// (`reconcilers::agent_channels`); off, each is dialed by its first call.
    pub keep_agent_connections: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            grpc_url: None,
            instance_subnet_pool: Ipv4Net { addr: std::net::Ipv4Addr::new(10, 100, 0, 0), prefix: 16 },
            lease_secs: 10,
            join_token_ttl_secs: 3600,
            partition_silent_percent: 34,
            partition_min_hosts: 2,
            keep_agent_connections: true,
        }
    }
}

impl FleetConfig {
    /// The gRPC URL handed to agents.
    pub fn advertised_grpc_url(&self) -> String {
        self.grpc_url.clone().unwrap_or_else(|| format!("https://{}", self.grpc_listen))
    }
}

/// The control plane's side of the fleet's trust: the CA and its own certificate.
#[derive(Debug)]
pub struct Fleet {
    pub config: FleetConfig,
    pub ca: FleetCa,
    /// Issued at each start; used for the gRPC server and when calling agents.
    pub identity: IssuedIdentity,
}

impl Fleet {
    /// Loads the CA from the database — storing it first when no replica has: the one in
    /// `<data_dir>/pki` if an older version left it there, else a new one — and issues this
    /// process's certificate.
    pub async fn load(pool: &sqlx::PgPool, data_dir: &Path, config: FleetConfig) -> Result<Self, FleetLoadError> {
        let mut conn = pool.acquire().await?;
        let stored = match crate::db::pki::fleet_ca(&mut *conn).await? {
            Some(stored) => stored,
            None => {
                let dir = data_dir.join("pki");
                let (ca, from) = match FleetCa::read_files(&dir)? {
                    Some(ca) => (ca, format!("imported from {}", dir.display())),
                    None => (FleetCa::generate()?, "created".to_owned()),
                };
                let stored = crate::db::pki::fleet_ca_insert(&mut conn, &ca).await?;
                if stored.cert_pem == ca.cert_pem {
                    tracing::info!(how = %from, "stored the fleet CA in the database");
                }
                stored
            }
        };
        Ok(Self::new(FleetCa::from_stored(&stored, "the database")?, config)?)
    }

    /// The fleet of `ca`, with a certificate for this process.
    pub fn new(ca: FleetCa, config: FleetConfig) -> Result<Self, PkiError> {
        let identity = ca.issue_control_plane()?;
        Ok(Self { config, ca, identity })
    }
}

/// Why the fleet CA could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FleetLoadError {
    #[error("cannot read or store the fleet CA in the database")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Pki(#[from] PkiError),
}
