//! `pve-sim`: a simulated Proxmox VE 8.4 cluster answering `/api2/json` like the real one
//! (envelope, reason phrases, 400/401/403/501/595 texts, UPID tasks, locks, storages), for
//! development, tests and load tests. Start one with [`start`] on a free port.
//!
//! Module map: `server` (HTTP dispatch), `router` (routes; its docs explain how to add an
//! endpoint), `params` (PVE parameter validation), `auth`, `tls`, `model` (cluster state),
//! `upload` (streamed multipart), `tasks`, `faults`, `rrd`, `persist`, `api` (non-guest endpoints),
//! `guests`.

pub mod api;
pub mod auth;
pub mod error;
pub mod faults;
pub mod guests;
pub mod model;
pub mod params;
pub mod persist;
pub mod router;
pub mod rrd;
pub mod server;
pub mod sim;
pub mod tasks;
pub mod tls;
pub mod upload;
pub mod util;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

pub use error::{PveError, PveResult};
pub use faults::FaultControl;
pub use sim::{Ctx, Sim};

/// The fixed token secret of [`SimConfig::for_tests`].
pub const TEST_TOKEN: &str = "root@pam!nimbus=4f1b2c3d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";

/// How to run a simulator.
#[derive(Clone)]
pub struct SimConfig {
    /// Number of nodes (pve1..pveN); default 3.
    pub nodes: usize,
    /// HTTPS with a self-signed certificate (default); false = plain HTTP.
    pub tls: bool,
    /// Multiplies task durations and boot time: 1.0 realistic, 0.0 instant.
    pub time_scale: f64,
    /// Per task type duration override (e.g. "qmclone"), before `time_scale`.
    pub task_durations: HashMap<String, Duration>,
    /// Accepted tokens, each `user@realm!tokenid=secret`.
    pub tokens: Vec<String>,
    /// Delay of every 401 (PVE: about 3 s).
    pub auth_failure_delay: Duration,
    /// Where the cluster (and certificate) persist across restarts.
    pub state_file: Option<PathBuf>,
    /// Seed of everything generated (MACs, UUIDs, metrics, IPs).
    pub seed: u64,
    /// Time from start until the guest agent reports IPs (scaled by `time_scale`).
    pub guest_boot_time: Duration,
    /// Password of `root@pam` for `POST /access/ticket`.
    pub root_password: String,
}

impl std::fmt::Debug for SimConfig {
    /// Token secrets and the root password are redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("nodes", &self.nodes)
            .field("tls", &self.tls)
            .field("time_scale", &self.time_scale)
            .field("task_durations", &self.task_durations)
            .field("tokens", &self.tokens.iter().map(|t| redact(t)).collect::<Vec<_>>())
            .field("auth_failure_delay", &self.auth_failure_delay)
            .field("state_file", &self.state_file)
            .field("seed", &self.seed)
            .field("guest_boot_time", &self.guest_boot_time)
            .field("root_password", &"<redacted>")
            .finish()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 3,
            tls: true,
            time_scale: 1.0,
            task_durations: HashMap::new(),
            tokens: vec![format!("root@pam!nimbus={}", random_uuid())],
            auth_failure_delay: Duration::from_secs(3),
            state_file: None,
            seed: 1,
            guest_boot_time: Duration::from_secs(20),
            root_password: "pve-sim".into(),
        }
    }
}

impl SimConfig {
    /// 3 nodes, TLS, instant tasks and boots, no auth delay, the fixed token [`TEST_TOKEN`].
    pub fn for_tests() -> Self {
        SimConfig {
            time_scale: 0.0,
            tokens: vec![TEST_TOKEN.to_string()],
            auth_failure_delay: Duration::ZERO,
            guest_boot_time: Duration::ZERO,
            ..SimConfig::default()
        }
    }
}

fn random_uuid() -> String {
    let a: u128 = rand::random();
    let h = format!("{a:032x}");
    format!("{}-{}-4{}-a{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

/// A running simulator.
pub struct RunningSim {
    addr: SocketAddr,
    base_url: String,
    token: String,
    fingerprint: Option<String>,
    sim: Arc<Sim>,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    writer: Option<tokio::task::JoinHandle<()>>,
}

impl RunningSim {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `https://127.0.0.1:PORT` (or `http://`).
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }
    /// The first token, `root@pam!nimbus=SECRET`.
    pub fn token(&self) -> &str {
        &self.token
    }
    /// `PVEAPIToken=root@pam!nimbus=SECRET`.
    pub fn auth_header(&self) -> String {
        format!("PVEAPIToken={}", self.token)
    }
    /// SHA-256 fingerprint of the certificate (`AB:CD:...`), None without TLS.
    pub fn fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }
    /// The certificate in PEM, None without TLS.
    pub fn certificate_pem(&self) -> Option<&str> {
        if self.sim.config.tls { self.sim.cert.as_ref().map(|c| c.cert_pem.as_str()) } else { None }
    }
    /// In-process fault injection.
    pub fn faults(&self) -> FaultControl {
        self.sim.faults.clone()
    }
    /// The simulator core (state access for tests and embedding).
    pub fn sim(&self) -> &Arc<Sim> {
        &self.sim
    }
    /// Stops accepting, closes connections and writes the state file a last time.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.server).await;
        if let Some(w) = self.writer.take() {
            let _ = w.await;
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Starts a simulator listening on `listen` (port 0 = a free port).
pub async fn start(config: SimConfig, listen: SocketAddr) -> anyhow::Result<RunningSim> {
    let mut tokens = Vec::new();
    for t in &config.tokens {
        let (user, name, secret) =
            auth::split_token(t).with_context(|| format!("token '{}' is not user@realm!id=secret", redact(t)))?;
        tokens.push((format!("{user}!{name}"), secret));
    }
    anyhow::ensure!(!tokens.is_empty(), "at least one API token is needed");
    anyhow::ensure!(config.nodes >= 1, "at least one node is needed");

    let loaded = match &config.state_file {
        Some(path) => persist::load(path)?,
        None => None,
    };
    let fresh = loaded.is_none();
    let (mut cluster, mut cert) = match loaded {
        Some(f) => (f.cluster, f.cert),
        None => (model::seed::build(config.nodes, config.seed, &config.root_password, &tokens), None),
    };
    for (id, secret) in &tokens {
        let user = id.split('!').next().unwrap_or(id).to_string();
        cluster.users.entry(user).or_insert(model::User { enable: true, expire: 0, password: String::new() });
        let entry = cluster.tokens.entry(id.clone()).or_insert(model::ApiToken {
            secret: secret.clone(),
            comment: None,
            expire: 0,
            privsep: false,
        });
        entry.secret = secret.clone();
    }
    if let Some(root) = cluster.users.get_mut("root@pam") {
        root.password = config.root_password.clone();
    }
    tasks::recover_after_restart(&mut cluster);
    if config.tls && cert.is_none() {
        let names: Vec<String> = cluster.nodes.keys().cloned().collect();
        cert = Some(tls::generate(&names)?);
    }
    let (acceptor, fingerprint) = match (&cert, config.tls) {
        (Some(c), true) => (Some(tokio_rustls::TlsAcceptor::from(tls::server_config(c)?)), Some(tls::fingerprint(c)?)),
        _ => (None, None),
    };

    let faults = FaultControl::default();
    faults.seed_rng(config.seed);
    let token = config.tokens[0].clone();
    let sim = Arc::new(Sim::new(config, cluster, faults, api::routes(), cert));

    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(server::serve(listener, sim.clone(), acceptor, stop_rx.clone()));
    let writer = match &sim.config.state_file {
        Some(path) => {
            if fresh {
                persist::save(&sim, path)?;
            }
            Some(tokio::spawn(persist::writer(sim.clone(), path.clone(), Duration::from_millis(250), stop_rx)))
        }
        None => None,
    };
    let scheme = if sim.config.tls { "https" } else { "http" };
    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    tracing::info!(%addr, nodes = sim.read().nodes.len(), "pve-sim listening");
    Ok(RunningSim {
        addr,
        base_url: format!("{scheme}://{host}:{}", addr.port()),
        token,
        fingerprint,
        sim,
        stop,
        server,
        writer,
    })
}

/// A token with its secret hidden, for logs and errors.
pub fn redact(token: &str) -> String {
    match token.rsplit_once('=') {
        Some((id, _)) => format!("{id}=<redacted>"),
        None => "<redacted>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let text = format!("{:?}", SimConfig::for_tests());
        assert!(text.contains("root@pam!nimbus=<redacted>"), "{text}");
        assert!(!text.contains(TEST_TOKEN.rsplit_once('=').unwrap().1));
        assert!(!text.contains("\"pve-sim\""));
    }
}
