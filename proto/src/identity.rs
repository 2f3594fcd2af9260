//! Who is on the other end of a mutual-TLS connection.
//!
//! Every certificate of the fleet is issued by the fleet CA (kept by the control plane) and names
//! its holder twice: a URI subject alternative name that says what it is, and a DNS name that
//! clients verify as the TLS server name. Host ids therefore cannot be forged by a host: a
//! certificate for host A presented on a report for host B is refused.
//!
//! | holder | URI SAN | DNS SAN (server name) |
//! |---|---|---|
//! | control plane | `urn:cloud:control-plane` | `control-plane.cloud.internal` |
//! | host | `urn:cloud:host:<uuid>` | `<uuid>.hosts.cloud.internal` |

use sha2::{Digest, Sha256};
use uuid::Uuid;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// URI SAN of the control plane's certificates.
pub const CONTROL_PLANE_URI: &str = "urn:cloud:control-plane";
/// DNS SAN (and TLS server name) of the control plane's gRPC server.
pub const CONTROL_PLANE_DNS: &str = "control-plane.cloud.internal";
const HOST_URI_PREFIX: &str = "urn:cloud:host:";
const HOST_DNS_SUFFIX: &str = ".hosts.cloud.internal";

/// The holder of a fleet certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerIdentity {
    ControlPlane,
    Host(Uuid),
}

/// Why a peer certificate names no fleet identity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("the peer presented no client certificate")]
    NoCertificate,
    #[error("the peer certificate cannot be parsed")]
    Unparseable,
    #[error("the peer certificate names no fleet identity")]
    NoIdentity,
}

impl PeerIdentity {
    /// The URI SAN for this identity.
    pub fn uri(&self) -> String {
        match self {
            Self::ControlPlane => CONTROL_PLANE_URI.to_owned(),
            Self::Host(id) => format!("{HOST_URI_PREFIX}{id}"),
        }
    }

    /// The DNS SAN for this identity, which clients use as the TLS server name.
    pub fn dns_name(&self) -> String {
        match self {
            Self::ControlPlane => CONTROL_PLANE_DNS.to_owned(),
            Self::Host(id) => format!("{id}{HOST_DNS_SUFFIX}"),
        }
    }

    /// Reads the identity from a DER certificate (the leaf a peer presented). The chain was
    /// already verified against the fleet CA by the TLS layer.
    pub fn from_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Unparseable)?;
        let san = cert.subject_alternative_name().map_err(|_| IdentityError::Unparseable)?;
        let Some(san) = san else { return Err(IdentityError::NoIdentity) };
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                if *uri == CONTROL_PLANE_URI {
                    return Ok(Self::ControlPlane);
                }
                if let Some(id) = uri.strip_prefix(HOST_URI_PREFIX).and_then(|s| Uuid::parse_str(s).ok()) {
                    return Ok(Self::Host(id));
                }
            }
        }
        Err(IdentityError::NoIdentity)
    }

    /// The identity of the peer of a tonic request served over mutual TLS.
    pub fn of_request<T>(request: &tonic::Request<T>) -> Result<Self, IdentityError> {
        let certs = request.peer_certs().ok_or(IdentityError::NoCertificate)?;
        let leaf = certs.first().ok_or(IdentityError::NoCertificate)?;
        Self::from_certificate(leaf)
    }
}

/// SHA-256 (lowercase hex) of the DER inside a PEM certificate: the fleet CA's fingerprint, as
/// join tokens carry it.
pub fn pem_sha256(pem: &str) -> Option<String> {
    let der = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?.1.contents;
    Some(hex::encode(Sha256::digest(der)))
}
