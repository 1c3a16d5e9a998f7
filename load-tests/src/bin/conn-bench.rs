//! Connection exhaustion (issue 10, item 2): the API holds its latency while 2,000 clients
//! trickle request headers at it (slowloris).
//!
//! The API runs as its own process (`nimbus-api serve`, the release build beside this binary),
//! with its production defaults: header-read timeout 10 s, 256 connections per client address,
//! 10,000 in all. The attackers come from eight loopback addresses (127.0.0.2-9, 250 each, under
//! the per-address cap); each sends a request line, then one header line a second, never the
//! blank line that ends the headers, and reconnects when the API cuts it off. A normal client on
//! 127.0.0.1 sends `GET /v1/quota` one request at a time before (the anchor) and during the
//! attack. Printed: the normal client's latency in both phases and their ratio, the attack's
//! connections (held, cut by the header timeout, refused), and the API's resident memory before,
//! at the peak of and after the attack.
//!
//! Everything is private and on loopback, bounded in time (about a minute): PostgreSQL and Redis
//! from `infra/scripts/services.sh` (durable: fsync on), pve-sim in process.
//!
//! Reproduce: `cargo build --release -p nimbus-api -p nimbus-load-tests --bins &&
//! target/release/conn-bench` (or `make bench`).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nimbus_api::bootstrap::{self, Bootstrap};
use nimbus_domain::PlanLimits;
use nimbus_load_tests::Summary;
use nimbus_load_tests::services::Services;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

#[derive(Parser, Debug)]
#[command(about = "API latency and memory under 2,000 slow-header connections")]
struct Args {
    /// Slow-header connections to hold.
    #[arg(long, default_value_t = 2_000)]
    attackers: usize,
    /// Loopback source addresses they come from (127.0.0.2 onwards).
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// How long the attack lasts once every connection is open, seconds (over the API's 10 s
    /// header timeout, so connections are cut and come back).
    #[arg(long, default_value_t = 20)]
    attack_seconds: u64,
    /// Requests of the normal client in the anchor phase.
    #[arg(long, default_value_t = 500)]
    requests: usize,
    /// Services folder (removed at the end); default /tmp/nimbus-conn-bench-PID.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The attackers' sockets are this process's files too.
    rlimit::increase_nofile_limit(65_536).context("raising the open-file limit")?;
    let dir =
        args.dir.clone().unwrap_or_else(|| PathBuf::from(format!("/tmp/nimbus-conn-bench-{}", std::process::id())));
    let services = Services::start(&dir, true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = runtime.block_on(run(&args, &services));
    drop(services);
    result
}

/// The API process, killed on drop.
struct Api(Child);

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Api {
    /// Its resident set, MiB.
    fn rss_mib(&self) -> f64 {
        Api::rss_of(self.0.id())
    }

    /// The resident set of process `pid`, MiB (`VmRSS` of /proc).
    fn rss_of(pid: u32) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    }
}

async fn run(args: &Args, services: &Services) -> anyhow::Result<()> {
    let database_url = services.var("NIMBUS_DATABASE_URL")?;
    let redis_url = services.var("NIMBUS_REDIS_URL")?;
    let app_database_url = services.var("NIMBUS_APP_DATABASE_URL")?;
    let pool = nimbus_db::connect(&database_url, 2).await?;
    nimbus_db::migrate(&pool).await?;
    let limits = PlanLimits { max_instances: 10, max_vcpus: 10, max_memory_mib: 10_240, max_disk_gib: 100 };
    let b = Bootstrap { tenant: "Bench".into(), email: "bench@example.com".into(), plan: "bench".into(), limits };
    let token = bootstrap::run(&pool, &b).await?.token;
    let sim = pve_sim::start(pve_sim::SimConfig::for_tests(), "127.0.0.1:0".parse()?).await?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let binary = std::env::current_exe()?.with_file_name("nimbus-api");
    anyhow::ensure!(binary.exists(), "{} is missing: cargo build --release -p nimbus-api", binary.display());
    let api = Api(Command::new(&binary)
        .arg("serve")
        .env("DATABASE_URL", &app_database_url)
        .env("REDIS_URL", &redis_url)
        .env("PVE_URL", sim.base_url())
        .env("PVE_TOKEN", sim.token())
        .env("PVE_FINGERPRINT", sim.fingerprint().context("pve-sim has no certificate")?)
        .env("LISTEN", format!("127.0.0.1:{port}"))
        // The normal client must measure the path, not its own rate limit.
        .env("RATE_LIMIT_PER_MINUTE", "1000000")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .context("starting nimbus-api")?);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "the API did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let normal = |n: usize, until: Option<Instant>| {
        let (http, url, token) = (http.clone(), format!("{base}/v1/quota"), token.clone());
        async move {
            let mut samples = Vec::new();
            let mut errors = 0;
            let t0 = Instant::now();
            // `n` requests, or as many as fit before `until`.
            loop {
                let done = match until {
                    Some(u) => Instant::now() >= u,
                    None => samples.len() + errors >= n,
                };
                if done {
                    break;
                }
                let t = Instant::now();
                match http.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status().is_success() => samples.push(t.elapsed().as_micros() as u64),
                    _ => errors += 1,
                }
            }
            Summary::from_samples(samples, errors, t0.elapsed())
        }
    };
    // Warm the pool and caches, then the anchor.
    normal(50, None).await;
    let rss_before = api.rss_mib();
    let anchor = normal(args.requests, None).await;

    let attack = Arc::new(Attack::default());
    let mut attackers = Vec::with_capacity(args.attackers);
    for i in 0..args.attackers {
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i % usize::from(args.sources.max(1))) as u8);
        attackers.push(tokio::spawn(attack.clone().slow_client(source, port)));
    }
    let ramp = Instant::now();
    while attack.held.load(Ordering::Relaxed) < args.attackers && ramp.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held_at_start = attack.held.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(args.attack_seconds);
    let rss_peak = Arc::new(parking_lot::Mutex::new(api.rss_mib()));
    let min_held = Arc::new(AtomicUsize::new(held_at_start));
    let sampler = {
        let (attack, rss_peak, min_held) = (attack.clone(), rss_peak.clone(), min_held.clone());
        let pid = api.0.id();
        tokio::spawn(async move {
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let rss = Api::rss_of(pid);
                let mut peak = rss_peak.lock();
                if rss > *peak {
                    *peak = rss;
                }
                min_held.fetch_min(attack.held.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        })
    };
    let under_attack = normal(0, Some(deadline)).await;
    sampler.await?;
    attack.stop.store(true, Ordering::Relaxed);
    for a in attackers {
        let _ = a.await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = api.rss_mib();

    println!(
        "conn-bench: {} slow-header connections from {} loopback addresses against nimbus-api (header timeout 10 s, \
         256 per address), services durable (fsync on)",
        args.attackers, args.sources
    );
    let line = |name: &str, s: &Summary| {
        println!(
            "{name:<34} {:>6} requests  {:>4} errors  p50 {:>6.2} ms  p99 {:>6.2} ms",
            s.requests,
            s.errors,
            s.percentile_ms(0.5),
            s.percentile_ms(0.99)
        );
    };
    line("normal client, no attack (anchor)", &anchor);
    line("normal client, under attack", &under_attack);
    println!(
        "ratio under attack / anchor: p50 {:.2}x  p99 {:.2}x",
        under_attack.percentile_ms(0.5) / anchor.percentile_ms(0.5),
        under_attack.percentile_ms(0.99) / anchor.percentile_ms(0.99)
    );
    println!(
        "attack: {} held once open (least during the attack {}), {} cut by the header timeout, {} refused at once, \
         {} failed to connect",
        held_at_start,
        min_held.load(Ordering::Relaxed),
        attack.cut.load(Ordering::Relaxed),
        attack.refused.load(Ordering::Relaxed),
        attack.connect_failed.load(Ordering::Relaxed),
    );
    println!(
        "nimbus-api RSS: {rss_before:.1} MiB before, {:.1} MiB at the peak, {rss_after:.1} MiB 2 s after",
        *rss_peak.lock()
    );
    anyhow::ensure!(under_attack.errors == 0, "the normal client saw {} errors under attack", under_attack.errors);
    Ok(())
}

/// The attack's counters.
#[derive(Default)]
struct Attack {
    held: AtomicUsize,
    cut: AtomicUsize,
    refused: AtomicUsize,
    connect_failed: AtomicUsize,
    stop: AtomicBool,
}

impl Attack {
    /// One slow client: connects from `source`, sends a request line and a header line a
    /// second, never finishing; reconnects when cut off, until told to stop.
    async fn slow_client(self: Arc<Self>, source: Ipv4Addr, port: u16) {
        while !self.stop.load(Ordering::Relaxed) {
            let socket = match TcpSocket::new_v4().and_then(|s| s.bind(SocketAddr::from((source, 0))).map(|()| s)) {
                Ok(s) => s,
                Err(_) => {
                    self.connect_failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let Ok(mut stream) = socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await else {
                self.connect_failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            if stream.write_all(b"GET /v1/quota HTTP/1.1\r\nHost: api\r\n").await.is_err() {
                continue;
            }
            self.held.fetch_add(1, Ordering::Relaxed);
            let mut buf = [0u8; 512];
            let ended = loop {
                if self.stop.load(Ordering::Relaxed) {
                    break None;
                }
                tokio::select! {
                    read = stream.read(&mut buf) => break Some(read),
                    () = tokio::time::sleep(Duration::from_secs(1)) => {
                        if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                            break Some(Ok(0));
                        }
                    }
                }
            };
            self.held.fetch_sub(1, Ordering::Relaxed);
            match ended {
                // The API answered before any header timeout: refused at the connection cap.
                Some(Ok(n)) if n > 0 => self.refused.fetch_add(1, Ordering::Relaxed),
                Some(_) => self.cut.fetch_add(1, Ordering::Relaxed),
                None => 0,
            };
            if matches!(ended, Some(Ok(n)) if n > 0) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
