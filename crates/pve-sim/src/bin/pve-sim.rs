//! The `pve-sim` binary: starts a simulated Proxmox VE cluster and prints the API token it
//! accepts and the certificate fingerprint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pve_sim::{SimConfig, start};

/// A simulated Proxmox VE 8.4 cluster.
#[derive(Parser, Debug)]
#[command(name = "pve-sim", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8006")]
    listen: SocketAddr,
    /// Number of nodes (pve1..pveN).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Keep the cluster (and the certificate) in this file across restarts.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Multiplies task durations (1 realistic, 0 instant).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    no_tls: bool,
    /// An accepted API token `user@realm!id=secret` (repeatable; default: one generated).
    #[arg(long = "token")]
    tokens: Vec<String>,
    /// Delay of every 401 answer in milliseconds.
    #[arg(long, default_value_t = 3000)]
    auth_failure_delay_ms: u64,
    /// Inject errors: `PATTERN=RATE[:STATUS]` (PATTERN: regex on "METHOD /api2/json/path").
    #[arg(long = "error-rate")]
    error_rates: Vec<String>,
    /// Add latency: `PATTERN=MS`.
    #[arg(long = "latency-ms")]
    latencies: Vec<String>,
    /// Start with this node down (repeatable).
    #[arg(long = "node-down")]
    nodes_down: Vec<String>,
    /// Seed of generated data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Per task type duration in ms, `TYPE=MS` (repeatable).
    #[arg(long = "task-duration-ms")]
    task_durations: Vec<String>,
    /// Seconds until a started guest's agent reports IPs (scaled by --time-scale).
    #[arg(long, default_value_t = 20.0)]
    guest_boot_seconds: f64,
    /// Password of root@pam for ticket logins.
    #[arg(long, env = "PVE_SIM_ROOT_PASSWORD", default_value = "pve-sim")]
    root_password: String,
}

/// `PATTERN=VALUE` split at the last `=` (patterns may contain `=`).
fn split_spec(spec: &str) -> anyhow::Result<(&str, &str)> {
    spec.rsplit_once('=').with_context(|| format!("'{spec}' is not PATTERN=VALUE"))
}

/// The default token kept in a state file, as `user@realm!id=secret`.
fn saved_token(path: &std::path::Path) -> Option<String> {
    let state = pve_sim::persist::load(path).ok()??;
    let (id, token) = state.cluster.tokens.iter().find(|(id, _)| id.as_str() == "root@pam!nimbus")?;
    Some(format!("{id}={}", token.secret))
}

/// Ctrl-C or SIGTERM.
async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut config = SimConfig {
        nodes: args.nodes,
        tls: !args.no_tls,
        time_scale: args.time_scale,
        auth_failure_delay: Duration::from_millis(args.auth_failure_delay_ms),
        state_file: args.state_file.clone(),
        seed: args.seed,
        guest_boot_time: Duration::from_secs_f64(args.guest_boot_seconds.max(0.0)),
        root_password: args.root_password.clone(),
        ..SimConfig::default()
    };
    if !args.tokens.is_empty() {
        config.tokens = args.tokens.clone();
    } else if let Some(token) = args.state_file.as_deref().and_then(saved_token) {
        // Keep the generated token across restarts so `make dev` users need not re-copy it.
        config.tokens = vec![token];
    }
    for spec in &args.task_durations {
        let (ty, ms) = split_spec(spec)?;
        config.task_durations.insert(ty.to_string(), Duration::from_millis(ms.parse().context("task duration ms")?));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let sim = start(config, args.listen).await?;
        let faults = sim.faults();
        for spec in &args.error_rates {
            let (pattern, value) = split_spec(spec)?;
            let (rate, status) = match value.split_once(':') {
                Some((r, s)) => (r, s.parse::<u16>().context("error status")?),
                None => (value, 500),
            };
            faults.add_error(pattern, rate.parse().context("error rate")?, status, "injected failure");
        }
        for spec in &args.latencies {
            let (pattern, ms) = split_spec(spec)?;
            faults.add_latency(pattern, Duration::from_millis(ms.parse().context("latency ms")?));
        }
        for node in &args.nodes_down {
            faults.set_node_down(node, true);
        }
        println!("pve-sim: simulated Proxmox VE 8.4 cluster at {}/api2/json", sim.base_url());
        println!("API token: {}", sim.auth_header());
        match sim.fingerprint() {
            Some(fp) => println!("certificate fingerprint (SHA-256): {fp}"),
            None => println!("plain HTTP (no certificate)"),
        }
        if let Some(path) = &args.state_file {
            println!("state file: {}", path.display());
        }
        wait_for_signal().await?;
        eprintln!("pve-sim: shutting down");
        sim.shutdown().await;
        anyhow::Ok(())
    })
}
