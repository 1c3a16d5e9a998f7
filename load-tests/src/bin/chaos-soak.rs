//! chaos-soak: creates at a steady rate through the whole stack (PostgreSQL and Redis durable,
//! pve-sim, `nimbus-api serve`, two or more `nimbus-worker` processes) while a fault driver, at
//! seeded random times, SIGKILLs workers, restarts Redis with and without its data, restarts or
//! crashes PostgreSQL and makes Proxmox fail or stall. Then it stops the faults, lets the system
//! drain (bounded), and accounts for every request answered 202: its job final, a succeeded
//! provision's guest there exactly once, no guest without an instance, the quota counters equal to
//! what exists, no effect twice. Requests refused during a fault (5xx, no connection, timeout) are
//! counted, not owed.
//!
//! Everything listens on 127.0.0.1; bounded by --duration and --drain-timeout; exits non-zero when
//! a job was lost or duplicated, a guest leaked, or another invariant broke.
//!
//! cargo build --release -p nimbus-load-tests --bin chaos-soak && target/release/chaos-soak --duration 300

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../chaos/mod.rs"]
mod chaos;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chaos::faults::{Driver, FaultKind, START};
use chaos::load::{self, epoch_now};
use chaos::rng::Rng;
use clap::Parser;
use nimbus_load_tests::stack::{Stack, StackConfig, find_binaries};

#[derive(Parser, Debug)]
#[command(about = "creates under injected faults, then an accounting of every accepted request")]
struct Args {
    /// Seconds of load (faults stop before the load does).
    #[arg(long, default_value_t = 300)]
    duration: u64,
    /// Creates per second (open loop).
    #[arg(long, default_value_t = 4.0)]
    rate: f64,
    /// Seed of the fault schedule, the fault parameters and the mix of job kinds.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Mean seconds between two fault starts.
    #[arg(long, default_value_t = 12.0)]
    fault_every: f64,
    /// Fault kinds to inject, comma separated (default: all).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Seconds of load before the first fault.
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// Longest wait, after the load, for every job to reach a final state.
    #[arg(long, default_value_t = 180)]
    drain_timeout: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Jobs run at once per worker process (`WORKER_CONCURRENCY`).
    #[arg(long, default_value_t = 8)]
    worker_concurrency: usize,
    /// Ledger lease of the workers (`JOB_LEASE_SECS`).
    #[arg(long, default_value_t = 6)]
    lease_secs: u64,
    /// Simulated Proxmox nodes.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// pve-sim task and boot durations relative to a real cluster's (a clone takes 5 s × this).
    #[arg(long, default_value_t = 0.05)]
    time_scale: f64,
    /// Requests waiting for an answer at once, at most (beyond that a tick is skipped).
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// Working folder (services, logs); default /tmp/nimbus-chaos-PID. Removed at the end unless
    /// --keep or the soak failed.
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long)]
    keep: bool,
    /// Folder of nimbus-api and nimbus-worker (default: next to this binary, built if missing).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rate > 0.0 && args.rate <= 500.0, "--rate must be in (0, 500]");
    anyhow::ensure!(args.workers >= 1, "--workers must be at least 1");
    anyhow::ensure!(args.duration >= 30, "--duration must be at least 30 s");
    let kinds = if args.faults.is_empty() {
        FaultKind::ALL.to_vec()
    } else {
        args.faults
            .iter()
            .map(|s| {
                FaultKind::parse(s.trim()).with_context(|| {
                    let all: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                    format!("unknown fault '{s}' (known: {})", all.join(", "))
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let bin_dir = find_binaries(args.bin_dir.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let passed = runtime.block_on(soak(&args, kinds, bin_dir))?;
    let given: Vec<String> = std::env::args().skip(1).collect();
    let extra = if given.is_empty() { String::new() } else { format!(" -- {}", given.join(" ")) };
    println!("reproduce: cargo run --release -p nimbus-load-tests --bin chaos-soak{extra}");
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

async fn soak(args: &Args, kinds: Vec<FaultKind>, bin_dir: PathBuf) -> anyhow::Result<bool> {
    let mut rng = Rng::new(args.seed);
    let planned = (args.rate * args.duration as f64).ceil() as i64;
    let root = args.dir.clone().unwrap_or_else(|| PathBuf::from(format!("/tmp/nimbus-chaos-{}", std::process::id())));
    let config = StackConfig {
        root,
        bin_dir,
        workers: args.workers,
        worker_concurrency: args.worker_concurrency,
        lease_secs: args.lease_secs,
        sim_nodes: args.nodes,
        time_scale: args.time_scale,
        seed: args.seed,
        max_instances: planned * 2 + 100,
        worker_env: Vec::new(),
    };
    println!(
        "chaos-soak: {} s of creates at {}/s (seed {}), {} workers x {}, {} pve-sim nodes (time scale {}), a fault \
         every ~{} s after {} s: {}",
        args.duration,
        args.rate,
        args.seed,
        args.workers,
        args.worker_concurrency,
        args.nodes,
        args.time_scale,
        args.fault_every,
        args.warmup,
        kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
    );
    for k in &kinds {
        println!("  {:<16} {}", k.name(), k.describe());
    }
    let stack = Arc::new(Stack::start(config).await?);
    println!("stack: {} (logs in {})", stack.root().display(), stack.logs_dir.display());
    // Ctrl-C or SIGTERM ends the run early, but never without stopping the stack.
    let outcome = tokio::select! {
        outcome = run(args, kinds, &stack, &mut rng) => outcome,
        _ = interrupted() => Err(anyhow::anyhow!("interrupted")),
    };
    let passed = *outcome.as_ref().unwrap_or(&false);
    let keep = args.keep || !passed;
    if keep {
        println!("logs kept in {}", stack.logs_dir.display());
    }
    stack.shutdown(keep).await;
    outcome
}

async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn run(args: &Args, kinds: Vec<FaultKind>, stack: &Arc<Stack>, rng: &mut Rng) -> anyhow::Result<bool> {
    let duration = Duration::from_secs(args.duration);
    let started = Instant::now();
    let _ = START.set(epoch_now());
    let driver = Driver {
        stack: stack.clone(),
        kinds,
        rng: rng.fork(1),
        every: Duration::from_secs_f64(args.fault_every),
        start_after: Duration::from_secs(args.warmup),
        // The last seconds of load run without faults, so late jobs are not all fault victims.
        stop_at: started + duration.mul_f64(0.9),
    };
    let monitor_stop = Arc::new(tokio::sync::Notify::new());
    let tally = Arc::new(load::Tally::default());
    let monitor = tokio::spawn(monitor(stack.clone(), monitor_stop.clone(), tally.clone()));
    let prefix = format!("soak-{}", args.seed);
    let (base, key) = (&stack.api_base, &stack.api_key);
    let load = load::run(base, key, args.rate, duration, args.max_in_flight, rng.fork(2), &prefix, tally);
    let (faults, load) = tokio::join!(driver.run(), load);
    monitor_stop.notify_one();
    let crashes = monitor.await?;
    let (faults, (sent, skipped)) = (faults?, load?);
    settle(args, stack, sent, skipped, faults, crashes).await
}

/// Restarts a worker that exited by itself (as a supervisor would) and remembers it: the soak's
/// own kills are not exits, so anything seen here is a crash. Prints the totals now and then.
async fn monitor(stack: Arc<Stack>, stop: Arc<tokio::sync::Notify>, tally: Arc<load::Tally>) -> Vec<String> {
    let mut crashes = Vec::new();
    let mut last_line = Instant::now();
    loop {
        tokio::select! {
            _ = stop.notified() => return crashes,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if last_line.elapsed() >= Duration::from_secs(15) {
            let at = epoch_now() - START.get().copied().unwrap_or_default();
            println!("  load   {at:>6.1}s  {}", tally.line());
            last_line = Instant::now();
        }
        for (slot, what) in stack.unexpected_exits().await {
            println!("  crash  {what}");
            crashes.push(what);
            if let Some(slot) = slot
                && let Err(e) = stack.start_worker(slot).await
            {
                crashes.push(format!("restarting worker slot {slot}: {e}"));
            }
        }
    }
}

async fn settle(
    args: &Args,
    stack: &Stack,
    sent: Vec<load::Sent>,
    skipped: usize,
    faults: Vec<chaos::faults::FaultRecord>,
    crashes: Vec<String>,
) -> anyhow::Result<bool> {
    // Whatever a fault left behind is repaired before the drain.
    stack.sim.faults().clear();
    stack.services_up().await?;
    stack.ensure_workers().await?;
    let owed: Vec<&str> = sent
        .iter()
        .filter_map(|s| match &s.outcome {
            load::Outcome::Accepted { job_id, .. } => Some(job_id.as_str()),
            _ => None,
        })
        .collect();
    println!(
        "load done: {} requests, {} accepted; draining (at most {} s)",
        sent.len(),
        owed.len(),
        args.drain_timeout
    );

    let pool = connect(&stack.database_url).await?;
    let drain_started = Instant::now();
    let deadline = drain_started + Duration::from_secs(args.drain_timeout);
    let mut last_print = Instant::now();
    loop {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from jobs where tenant_id = $1::uuid and status not in ('succeeded', 'failed', 'cancelled')",
        )
        .bind(&stack.tenant_id)
        .fetch_one(&pool)
        .await?;
        // Tasks of a worker that lost its lease may still be running: their effects count too.
        let tasks_running = stack.sim.sim().read().tasks.iter().any(|t| t.running);
        if open == 0 && !tasks_running {
            break;
        }
        if Instant::now() >= deadline {
            println!("drain: {open} jobs still open after {} s", args.drain_timeout);
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            println!("drain: {open} jobs open after {:.0} s", drain_started.elapsed().as_secs_f64());
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("drained in {:.1} s", drain_started.elapsed().as_secs_f64());

    let mut evidence = chaos::audit::read_database(&pool, &stack.tenant_id).await?;
    evidence.api_usage = api_usage(stack).await.ok();
    chaos::audit::read_simulator(&stack.sim, &mut evidence);
    pool.close().await;
    let mut verdict = chaos::audit::judge(&sent, skipped, &faults, &evidence);
    if owed.is_empty() {
        verdict.broken.push("no request was accepted: nothing was tested".into());
    }
    for c in crashes {
        verdict.notes.push(format!("a process exited without being killed: {c}"));
    }

    println!();
    print!("{}", verdict.report);
    let show = |label: &str, items: &[String]| {
        for item in items.iter().take(20) {
            println!("  {label}: {item}");
        }
        if items.len() > 20 {
            println!("  {label}: ... and {} more", items.len() - 20);
        }
    };
    show("LOST", &verdict.lost);
    show("DUPLICATED", &verdict.duplicated);
    show("LEAKED", &verdict.leaked);
    show("BROKEN", &verdict.broken);
    show("note", &verdict.notes);
    let passed = verdict.passed();
    println!(
        "result      lost {}   duplicated {}   leaked guests {}   other broken invariants {}   → {}",
        verdict.lost.len(),
        verdict.duplicated.len(),
        verdict.leaked.len(),
        verdict.broken.len(),
        if passed { "PASS" } else { "FAIL" }
    );
    Ok(passed)
}

/// The soak's own connection, after PostgreSQL has come back (it may still be recovering).
async fn connect(url: &str) -> anyhow::Result<sqlx::PgPool> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match nimbus_db::connect(url, 2).await {
            Ok(pool) => return Ok(pool),
            Err(e) if Instant::now() < deadline => {
                eprintln!("chaos-soak: waiting for PostgreSQL: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `used` of `GET /v1/quota`, the API's view of the counters.
async fn api_usage(stack: &Stack) -> anyhow::Result<(i64, i64, i64, i64)> {
    let v: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/quota", stack.api_base))
        .bearer_auth(&stack.api_key)
        .timeout(Duration::from_secs(10))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let used = &v["data"]["used"];
    let n = |k: &str| used[k].as_i64().with_context(|| format!("GET /v1/quota: no used.{k}"));
    Ok((n("instances")?, n("vcpus")?, n("memoryMib")?, n("diskGib")?))
}
