//! The host's identity in the fleet, as `join` stored it, and the TLS settings built from it.
//!
//! ```text
//! <state_dir>/identity/
//!   host.json   host id, instance subnet, control plane gRPC URL, lease period
//!   host.key    the host's private key (0600; never leaves the host)
//!   host.pem    its certificate, signed by the fleet CA
//!   ca.pem      the fleet CA certificate
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use cloud_proto::identity::{CONTROL_PLANE_DNS, PeerIdentity};
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use uuid::Uuid;

/// What the control plane told the host when it joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRecord {
    pub host_id: Uuid,
    pub instance_subnet: String,
    pub control_plane_grpc_url: String,
    pub lease_seconds: u32,
    pub agent_endpoint: String,
}

/// The stored identity with its key material.
#[derive(Clone)]
pub struct HostIdentity {
    pub record: HostRecord,
    pub cert_pem: String,
    key_pem: String,
    pub ca_pem: String,
}

impl std::fmt::Debug for HostIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostIdentity").field("record", &self.record).finish_non_exhaustive()
    }
}

/// Errors reading or writing the identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("this host has not joined a fleet yet ({dir} has no host.json): run `host-agent join`")]
    NotJoined { dir: PathBuf },
    #[error("the host's private key {path} is open to other users (mode {mode:o}): run `chmod 600 {path}`")]
    KeyNotPrivate { path: PathBuf, mode: u32 },
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl HostIdentity {
    /// Assembles an identity from what `join` received.
    pub fn new(record: HostRecord, cert_pem: String, key_pem: String, ca_pem: String) -> Self {
        Self { record, cert_pem, key_pem, ca_pem }
    }

    /// Loads the identity from `dir`.
    pub fn load(dir: &Path) -> Result<Self, IdentityError> {
        let record_path = dir.join("host.json");
        if !record_path.exists() {
            return Err(IdentityError::NotJoined { dir: dir.to_path_buf() });
        }
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|source| IdentityError::Io { path, source })
        };
        let key_path = dir.join("host.key");
        match cloud_common::fs::open_to_others(&key_path) {
            Ok(Some(mode)) => return Err(IdentityError::KeyNotPrivate { path: key_path, mode }),
            Ok(None) => {}
            Err(source) => return Err(IdentityError::Io { path: key_path, source }),
        }
        let record: HostRecord = serde_json::from_str(&read("host.json")?)
            .map_err(|source| IdentityError::Corrupt { path: record_path, source })?;
        Ok(Self { record, cert_pem: read("host.pem")?, key_pem: read("host.key")?, ca_pem: read("ca.pem")? })
    }

    /// Stores the identity in `dir`; host.json goes last, so a crash leaves "not joined".
    pub fn store(&self, dir: &Path) -> Result<(), IdentityError> {
        fs::create_dir_all(dir).map_err(|source| IdentityError::Io { path: dir.to_path_buf(), source })?;
        write_atomic(&dir.join("host.key"), &self.key_pem, 0o600)?;
        write_atomic(&dir.join("host.pem"), &self.cert_pem, 0o644)?;
        write_atomic(&dir.join("ca.pem"), &self.ca_pem, 0o644)?;
        let record = serde_json::to_string_pretty(&self.record)
            .map_err(|source| IdentityError::Corrupt { path: dir.join("host.json"), source })?;
        write_atomic(&dir.join("host.json"), &record, 0o644)
    }

    /// TLS for the agent's own gRPC server: its certificate, and client certificates required
    /// and verified against the fleet CA (the service then checks it is the control plane's).
    pub fn server_tls(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// TLS for calling the control plane: the fleet CA, the control plane's name, our certificate.
    pub fn client_tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name(CONTROL_PLANE_DNS)
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }

    /// This host's identity as certificates name it.
    pub fn peer_identity(&self) -> PeerIdentity {
        PeerIdentity::Host(self.record.host_id)
    }
}

/// Writes `contents` under a temporary name with `mode`, then renames it into place.
pub fn write_atomic(path: &Path, contents: &str, mode: u32) -> Result<(), IdentityError> {
    cloud_common::fs::write_atomic(path, contents.as_bytes(), mode)
        .map_err(|source| IdentityError::Io { path: path.to_path_buf(), source })
}
