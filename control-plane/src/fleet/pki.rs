//! The fleet CA: the root of trust between the control plane and the host agents.
//!
//! Kept in the database (`fleet_ca`), which every replica shares: the first replica to start
//! generates it, or imports the one older versions kept in `<data_dir>/pki/` (`ca.key` 0600,
//! `ca.pem`, left in place), and every replica loads it from there (see [`super::Fleet::load`]).
//! The control plane issues itself a certificate for its gRPC server and for calling agents, and
//! signs each joining host's CSR. Certificates carry the holder's identity as SANs (see
//! `cloud_proto::identity`); whatever names a CSR asks for are ignored.

use std::fs;
use std::path::{Path, PathBuf};

use cloud_proto::identity::{PeerIdentity, pem_sha256};

pub use crate::db::pki::StoredCa;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Host and control-plane certificates are valid this long; hosts re-join to renew (for now).
const LEAF_VALIDITY_DAYS: i64 = 365;
const CA_VALIDITY_DAYS: i64 = 3650;

/// Errors of the fleet PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the fleet CA in {origin} is unusable")]
    BadCa {
        origin: String,
        #[source]
        source: rcgen::Error,
    },
    #[error(
        "the fleet CA key {path} is open to other users (mode {mode:o}): run `chmod 600 {path}` (and consider the key exposed: the fleet trusts it)"
    )]
    KeyNotPrivate { path: PathBuf, mode: u32 },
    #[error("cannot generate a key or certificate")]
    Generate(#[source] rcgen::Error),
    #[error("the certificate signing request is invalid")]
    BadCsr(#[source] rcgen::Error),
}

/// A certificate with its private key, both PEM.
#[derive(Clone)]
pub struct IssuedIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Never prints the key (an `App` or a `Fleet` printed with `{:?}` would carry it into a log).
impl std::fmt::Debug for IssuedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedIdentity").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// The loaded fleet CA.
pub struct FleetCa {
    cert_pem: String,
    cert_sha256: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for FleetCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetCa").field("cert_sha256", &self.cert_sha256).finish_non_exhaustive()
    }
}

impl FleetCa {
    /// A new CA: a fresh key and a self-signed certificate valid for ten years.
    pub fn generate() -> Result<StoredCa, PkiError> {
        let key = KeyPair::generate().map_err(PkiError::Generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "cloud fleet CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, CA_VALIDITY_DAYS);
        let cert = params.self_signed(&key).map_err(PkiError::Generate)?;
        Ok(StoredCa { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// The CA kept in `<dir>/ca.{pem,key}` (where versions before the database kept it), if both
    /// files are there; a key file others can read is refused.
    pub fn read_files(dir: &Path) -> Result<Option<StoredCa>, PkiError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PkiError::Io { path, source }
        };
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        if !cert_path.exists() || !key_path.exists() {
            return Ok(None);
        }
        if let Some(mode) = cloud_common::fs::open_to_others(&key_path).map_err(io(&key_path))? {
            return Err(PkiError::KeyNotPrivate { path: key_path, mode });
        }
        let cert_pem = fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key_pem = fs::read_to_string(&key_path).map_err(io(&key_path))?;
        Ok(Some(StoredCa { cert_pem, key_pem }))
    }

    /// The CA of `stored`; `origin` says where it came from, for the error.
    pub fn from_stored(stored: &StoredCa, origin: &str) -> Result<Self, PkiError> {
        let bad = |source| PkiError::BadCa { origin: origin.to_owned(), source };
        let key = KeyPair::from_pem(&stored.key_pem).map_err(bad)?;
        let issuer = Issuer::from_ca_cert_pem(&stored.cert_pem, key).map_err(bad)?;
        let cert_sha256 = pem_sha256(&stored.cert_pem).ok_or_else(|| bad(rcgen::Error::CouldNotParseCertificate))?;
        Ok(Self { cert_pem: stored.cert_pem.clone(), cert_sha256, issuer })
    }

    /// The CA certificate (PEM), which every member of the fleet trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// SHA-256 of the CA certificate's DER, hex: join tokens carry it so a joining host can
    /// check it talks to the right control plane before trusting anything it says.
    pub fn cert_sha256(&self) -> &str {
        &self.cert_sha256
    }

    /// A fresh key and certificate for the control plane (gRPC server and agent client).
    pub fn issue_control_plane(&self) -> Result<IssuedIdentity, PkiError> {
        let key = KeyPair::generate().map_err(PkiError::Generate)?;
        let params = leaf_params(PeerIdentity::ControlPlane)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(PkiError::Generate)?;
        Ok(IssuedIdentity { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Signs a joining host's CSR. Only the CSR's public key is used: the names and usages come
    /// from the host id the control plane assigned.
    pub fn sign_host_csr(&self, csr_pem: &str, host: uuid::Uuid) -> Result<String, PkiError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::BadCsr)?;
        csr.params = leaf_params(PeerIdentity::Host(host))?;
        let cert = csr.signed_by(&self.issuer).map_err(PkiError::Generate)?;
        Ok(cert.pem())
    }
}

fn leaf_params(identity: PeerIdentity) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(vec![identity.dns_name()]).map_err(PkiError::Generate)?;
    let uri = identity.uri().try_into().map_err(PkiError::Generate)?;
    params.subject_alt_names.push(SanType::URI(uri));
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, identity.dns_name());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let mut serial = [0u8; 16];
    getrandom::getrandom(&mut serial).map_err(|_| PkiError::Generate(rcgen::Error::RingUnspecified))?;
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    set_validity(&mut params, LEAF_VALIDITY_DAYS);
    Ok(params)
}

fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that are slightly behind.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// Writes a secret: created 0600 under a temporary name, then renamed into place.
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_atomic(path, contents, 0o600)
}

fn write_atomic(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    cloud_common::fs::write_atomic(path, contents.as_bytes(), mode)
        .map_err(|source| PkiError::Io { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn new_ca() -> FleetCa {
        FleetCa::from_stored(&FleetCa::generate().expect("generate"), "a test").expect("load")
    }

    #[test]
    fn a_ca_kept_in_files_is_read_only_with_a_private_key_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(FleetCa::read_files(dir.path()).expect("no files").is_none());
        let stored = FleetCa::generate().expect("generate");
        write_private(&dir.path().join("ca.key"), &stored.key_pem).expect("key");
        write_atomic(&dir.path().join("ca.pem"), &stored.cert_pem, 0o644).expect("cert");
        let read = FleetCa::read_files(dir.path()).expect("read").expect("files");
        let ca = FleetCa::from_stored(&read, "files").expect("load");
        assert_eq!(ca.cert_pem(), stored.cert_pem);
        assert_eq!(ca.cert_sha256().len(), 64);
        // A key others can read is refused, saying how to fix it.
        fs::set_permissions(dir.path().join("ca.key"), fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = FleetCa::read_files(dir.path()).expect_err("an open key");
        assert!(matches!(err, PkiError::KeyNotPrivate { mode: 0o644, .. }), "{err:?}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_host_certificate_names_the_assigned_host_not_what_the_csr_asked() {
        let ca = new_ca();
        let key = KeyPair::generate().expect("key");
        // The CSR claims to be the control plane; the signed certificate must not.
        let mut asked = CertificateParams::new(vec![PeerIdentity::ControlPlane.dns_name()]).expect("params");
        asked.subject_alt_names.push(SanType::URI(PeerIdentity::ControlPlane.uri().try_into().expect("uri")));
        let csr = asked.serialize_request(&key).expect("csr").pem().expect("pem");
        let host = uuid::Uuid::new_v4();
        let cert = ca.sign_host_csr(&csr, host).expect("sign");
        let der = x509_parser::pem::parse_x509_pem(cert.as_bytes()).expect("pem").1.contents;
        assert_eq!(PeerIdentity::from_certificate(&der), Ok(PeerIdentity::Host(host)));
    }

    #[test]
    fn garbage_csr_is_a_typed_error() {
        let ca = new_ca();
        let err = ca.sign_host_csr("not a csr", uuid::Uuid::new_v4()).expect_err("garbage");
        assert!(matches!(err, PkiError::BadCsr(_)));
    }
}
