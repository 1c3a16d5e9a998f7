//! State file and certificate: the cluster and the TLS certificate survive a restart, the
//! served certificate matches the printed fingerprint, plain HTTP when asked for.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use common::Api;
use pve_sim::SimConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest;

fn state_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pve-sim-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("state.json");
    let _ = std::fs::remove_file(&p);
    p
}

#[tokio::test]
async fn cluster_and_certificate_survive_a_restart() {
    let path = state_path("restart");
    let config = SimConfig { state_file: Some(path.clone()), ..SimConfig::for_tests() };
    let api = Api::with(config.clone()).await;
    let fp1 = api.sim.fingerprint().unwrap().to_string();
    let pem1 = api.sim.certificate_pem().unwrap().to_string();
    assert_eq!(api.post("/pools", &[("poolid", "kept"), ("comment", "across restarts")]).await.status, 200);
    let upid = api.post("/nodes/pve1/vzdump", &[("vmid", "9000")]).await.data().as_str().unwrap().to_string();
    api.wait_task(&upid).await;
    api.sim.shutdown().await;
    assert!(path.exists());

    let api = Api::with(config).await;
    assert_eq!(api.sim.fingerprint().unwrap(), fp1);
    assert_eq!(api.sim.certificate_pem().unwrap(), pem1);
    let r = api.get("/pools").await;
    assert_eq!(r.data()[0]["poolid"], "kept");
    assert_eq!(r.data()[0]["comment"], "across restarts");
    let r = api.get_q("/nodes/pve1/storage/local/content", &[("content", "backup")]).await;
    assert_eq!(r.data().as_array().unwrap().len(), 1);
    let st = api.get(&format!("/nodes/pve1/tasks/{}/status", common::enc(&upid))).await;
    assert_eq!(st.data()["exitstatus"], "OK");
    api.sim.shutdown().await;
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test]
async fn changes_are_written_without_a_shutdown() {
    let path = state_path("debounce");
    let api = Api::with(SimConfig { state_file: Some(path.clone()), ..SimConfig::for_tests() }).await;
    api.post("/pools", &[("poolid", "early")]).await;
    let mut found = false;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if std::fs::read_to_string(&path).unwrap_or_default().contains("\"early\"") {
            found = true;
            break;
        }
    }
    assert!(found, "state file not updated");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[derive(Debug)]
struct Capture(Mutex<Option<Vec<u8>>>);

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test]
async fn the_served_certificate_matches_the_fingerprint() {
    let api = Api::start().await;
    let capture = Arc::new(Capture(Mutex::new(None)));
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(api.sim.addr()).await.unwrap();
    let _tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let der = capture.0.lock().unwrap().clone().unwrap();
    let fp: Vec<String> = sha2::Sha256::digest(&der).iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(fp.join(":"), api.sim.fingerprint().unwrap());
    assert!(api.sim.base_url().starts_with("https://127.0.0.1:"));
}

#[tokio::test]
async fn plain_http_when_tls_is_off() {
    let api = Api::with(SimConfig { tls: false, ..SimConfig::for_tests() }).await;
    assert!(api.sim.base_url().starts_with("http://"));
    assert!(api.sim.fingerprint().is_none());
    assert!(api.sim.certificate_pem().is_none());
    assert_eq!(api.get("/version").await.status, 200);
}
