//! The HTTPS side: a self-signed certificate generated at first start (kept in the state file
//! so its fingerprint is stable), its SHA-256 fingerprint as PVE shows it, and the rustls
//! server configuration (ring provider, HTTP/1.1 only like pveproxy).

use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A certificate and its private key, PEM encoded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertBundle {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Generates a self-signed certificate for the node names, `localhost` and loopback addresses.
pub fn generate(nodes: &[String]) -> anyhow::Result<CertBundle> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for n in nodes {
        names.push(n.clone());
        names.push(format!("{n}.sim.local"));
    }
    let mut params = rcgen::CertificateParams::new(names).context("certificate parameters")?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "pve1.sim.local");
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "PVE Cluster Node");
    params.distinguished_name.push(rcgen::DnType::OrganizationalUnitName, "PVE Cluster Node");
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2034, 1, 1);
    let key = rcgen::KeyPair::generate().context("key generation")?;
    let cert = params.self_signed(&key).context("self-signing")?;
    Ok(CertBundle { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// The DER bytes of the bundle's certificate.
pub fn cert_der(bundle: &CertBundle) -> anyhow::Result<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(bundle.cert_pem.as_bytes()).context("certificate PEM")
}

/// SHA-256 of the DER certificate: uppercase hex pairs joined by `:`.
pub fn fingerprint(bundle: &CertBundle) -> anyhow::Result<String> {
    let der = cert_der(bundle)?;
    let digest = Sha256::digest(der.as_ref());
    Ok(digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":"))
}

/// The rustls server configuration for the bundle.
pub fn server_config(bundle: &CertBundle) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let cert = cert_der(bundle)?;
    let key = PrivateKeyDer::from_pem_slice(bundle.key_pem.as_bytes()).context("private key PEM")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .context("TLS certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_has_a_stable_fingerprint() {
        let b = generate(&["pve1".into()]).unwrap();
        let fp = fingerprint(&b).unwrap();
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert_eq!(fp, fingerprint(&b.clone()).unwrap());
        assert!(fp.chars().all(|c| c == ':' || c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
        server_config(&b).unwrap();
        assert_ne!(fp, fingerprint(&generate(&["pve1".into()]).unwrap()).unwrap());
    }
}
