//! TLS for real PVE clusters: rustls (ring) configurations for each [`TlsMode`].
//!
//! PVE nodes ship self-signed certificates (`pve-ssl.pem`, signed by the cluster's own
//! `pve-root-ca.pem`). A client either trusts that CA, pins the node certificate's
//! SHA-256 fingerprint (what the PVE GUI shows as `AB:CD:..`), or, for a lab, accepts
//! anything. Pinning compares the leaf certificate's DER hash and still verifies the
//! handshake signatures with that certificate's key, so a man in the middle cannot
//! replay the pinned certificate without its private key.

use std::fmt;
use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, OtherError, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::config::TlsMode;
use crate::error::{PveError, Result};

/// Parses a SHA-256 fingerprint: 64 hex digits, optionally in `AB:CD:..` pairs.
pub fn parse_fingerprint(fp: &str) -> Result<[u8; 32]> {
    let hex_only: String = fp.trim().chars().filter(|c| *c != ':' && !c.is_whitespace()).collect();
    let bytes = hex::decode(&hex_only).map_err(|e| PveError::Config(format!("certificate fingerprint '{fp}': {e}")))?;
    bytes
        .try_into()
        .map_err(|_| PveError::Config(format!("certificate fingerprint '{fp}' is not a SHA-256 (32 bytes)")))
}

/// Formats a SHA-256 as PVE shows fingerprints: uppercase hex pairs joined by `:`.
pub fn format_fingerprint(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// The SHA-256 fingerprint of a DER certificate, PVE-style.
pub fn certificate_fingerprint(der: &[u8]) -> String {
    format_fingerprint(&Sha256::digest(der))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls client configuration for `mode`.
pub fn client_config(mode: &TlsMode) -> Result<rustls::ClientConfig> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| PveError::Config(format!("TLS protocol versions: {e}")))?;
    let config = match mode {
        TlsMode::System => {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsMode::CaPem(pem) => builder.with_root_certificates(roots_from_pem(pem.as_bytes())?).with_no_client_auth(),
        TlsMode::CaFile(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| PveError::Config(format!("reading CA file {}: {e}", path.display())))?;
            builder.with_root_certificates(roots_from_pem(&pem)?).with_no_client_auth()
        }
        TlsMode::Fingerprint(fp) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pinned: Some(parse_fingerprint(fp)?),
                provider,
            }))
            .with_no_client_auth(),
        TlsMode::Insecure => {
            tracing::warn!(
                "TLS certificate verification is DISABLED for this Proxmox VE client: any \
                 server can impersonate the cluster and read the API token. Use a pinned \
                 fingerprint or the cluster CA instead."
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedVerifier { pinned: None, provider }))
                .with_no_client_auth()
        }
    };
    Ok(config)
}

fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| PveError::Config(format!("CA PEM: {e}")))?;
        roots.add(cert).map_err(|e| PveError::Config(format!("CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(PveError::Config("CA PEM holds no certificate".into()));
    }
    Ok(roots)
}

/// The pinned certificate did not match.
#[derive(Debug)]
pub struct FingerprintMismatch {
    /// The pinned fingerprint.
    pub expected: String,
    /// The server's fingerprint.
    pub actual: String,
}

impl fmt::Display for FingerprintMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server certificate fingerprint {} does not match the pinned {}", self.actual, self.expected)
    }
}

impl std::error::Error for FingerprintMismatch {}

/// Accepts the leaf certificate whose SHA-256 is `pinned` (any leaf when `None`, the
/// insecure mode); verifies handshake signatures either way.
#[derive(Debug)]
struct PinnedVerifier {
    pinned: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if let Some(pinned) = &self.pinned {
            let actual: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
            // Not secret data; a plain comparison is fine.
            if &actual != pinned {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                    FingerprintMismatch { expected: format_fingerprint(pinned), actual: format_fingerprint(&actual) },
                )))));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Finds a rustls error in an error's source chain. hyper wraps it in (possibly nested)
/// `io::Error`s, whose `source()` skips the wrapped error, hence the `get_ref` descent.
pub(crate) fn find_tls_error(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls_message(tls));
        }
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            let inner: &(dyn std::error::Error + 'static) = inner;
            if let Some(found) = find_tls_error(inner) {
                return Some(found);
            }
        }
        cur = e.source();
    }
    None
}

fn tls_message(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => inner.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_formats() {
        let colon = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";
        let a = parse_fingerprint(colon).unwrap();
        let b = parse_fingerprint(&colon.replace(':', "").to_lowercase()).unwrap();
        assert_eq!(a, b);
        assert_eq!(format_fingerprint(&a), colon);
        assert!(parse_fingerprint("AB:CD").is_err());
        assert!(parse_fingerprint("zz").is_err());
    }

    #[test]
    fn certificate_fingerprint_is_sha256_of_der() {
        // SHA-256 of the empty input.
        assert_eq!(
            certificate_fingerprint(b""),
            "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55"
        );
    }

    #[test]
    fn verifier_checks_the_pinned_hash() {
        let der = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        let good: [u8; 32] = Sha256::digest(der.as_ref()).into();
        let name = ServerName::try_from("pve1").unwrap();
        let ok = PinnedVerifier { pinned: Some(good), provider: provider() };
        assert!(ok.verify_server_cert(&der, &[], &name, &[], UnixTime::now()).is_ok());
        let bad = PinnedVerifier { pinned: Some([0u8; 32]), provider: provider() };
        let err = bad.verify_server_cert(&der, &[], &name, &[], UnixTime::now()).unwrap_err();
        assert!(tls_message(&err).contains("does not match"), "{err}");
        let insecure = PinnedVerifier { pinned: None, provider: provider() };
        assert!(insecure.verify_server_cert(&der, &[], &name, &[], UnixTime::now()).is_ok());
        assert!(!insecure.supported_verify_schemes().is_empty());
    }

    #[test]
    fn finds_rustls_errors_inside_nested_io_errors() {
        let tls = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let nested = std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, tls));
        let found = find_tls_error(&nested).unwrap();
        assert!(found.contains("UnknownIssuer"), "{found}");
        assert_eq!(find_tls_error(&std::io::Error::other("plain")), None);
    }

    #[test]
    fn ca_pem_errors() {
        assert!(client_config(&TlsMode::CaPem("not a pem".into())).is_err());
        assert!(client_config(&TlsMode::CaFile("/nonexistent/ca.pem".into())).is_err());
        assert!(client_config(&TlsMode::System).is_ok());
        assert!(client_config(&TlsMode::Fingerprint("12".into())).is_err());
    }
}
