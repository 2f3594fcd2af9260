//! TLS for `https://` endpoints: the system's trusted roots plus, optionally, a private CA from
//! a PEM file (`--ca-cert`), in one rustls configuration shared by the HTTP client and the
//! console and tunnel WebSockets.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The client TLS configuration: system roots, and the certificates of `ca_file` if given.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable entries of the system store are skipped, as browsers and curl do.
    let (added, _) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect)
            .map_err(|e| format!("cannot read the CA certificate {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no PEM certificate", path.display()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| format!("{} is not a usable CA certificate: {e}", path.display()))?;
        }
    } else if added == 0 {
        return Err("no trusted CA certificates on this system; pass --ca-cert FILE".to_owned());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
