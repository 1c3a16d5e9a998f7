//! Scaling (issue 15, item 6): how provisioning throughput grows with worker processes, and
//! creates with API replicas, on a whole stack of real processes (`nimbus-api serve`,
//! `nimbus-worker`, durable PostgreSQL and Redis from `services.sh --persist`, pve-sim in this
//! process with realistic task times scaled down).
//!
//! Workers: for each count in `--workers` (1, 2, 4), a backlog of `--jobs` provisions, spread
//! over the nodes in turn, is created through the API with no worker running; then that many workers start (each
//! `WORKER_CONCURRENCY` jobs at once, `NODE_CAP` per node shared by all) and the backlog drains:
//! jobs/s, next to the count times the one-worker figure (linear). The per-node caps bind at
//! `NODE_CAP × nodes` jobs at once; past that more workers only wait.
//!
//! API: creates at `--api-concurrency` against one replica, then spread over two (round robin, two
//! ports: what a plain reverse proxy does), creates/s each.
//!
//! Reproduce: `cargo build --release -p nimbus-load-tests -p nimbus-api -p nimbus-worker --bins &&
//! target/release/scale-bench` (or `make bench`).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nimbus_load_tests::stack::{Stack, StackConfig, find_binaries};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Provisioning throughput with 1, 2 and 4 workers; creates with 1 and 2 API replicas")]
struct Args {
    /// Provisions in each worker round's backlog.
    #[arg(long, default_value_t = 120)]
    jobs: usize,
    /// Worker counts, one round each.
    #[arg(long, default_value = "1,2,4", value_delimiter = ',')]
    workers: Vec<usize>,
    /// Jobs each worker runs at once (`WORKER_CONCURRENCY`).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Operations at once per Proxmox node, across all workers (`NODE_CAP`).
    #[arg(long, default_value_t = 8)]
    node_cap: usize,
    /// Simulated nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// pve-sim's task time scale (1: realistic).
    #[arg(long, default_value_t = 0.05)]
    time_scale: f64,
    /// Creates in each API round.
    #[arg(long, default_value_t = 3000)]
    creates: usize,
    /// Creates in flight at once in the API rounds.
    #[arg(long, default_value_t = 32)]
    api_concurrency: usize,
    /// Where the stack lives (default: /tmp/nimbus-scale-PID; removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Where nimbus-api and nimbus-worker are (default: beside this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlx2uMl6O7otZxx5t83ZWNSS+gqAj3/2gOtI6dRPT+R scale@host";

/// A create on `node` (every node holds the template).
fn create_body(name: &str, node: &str) -> serde_json::Value {
    json!({"name": name, "type": "qemu", "template": "debian-12-cloudinit", "cores": 1, "memory": 256, "disk": 4,
        "sshKeys": [SSH_KEY], "node": node})
}

/// Sends `n` creates named `<prefix>-<i>` over `bases` in turn; the accepted jobs' ids and the
/// rate.
async fn create(
    http: &reqwest::Client,
    bases: &[String],
    key: &str,
    prefix: &str,
    n: usize,
    concurrency: usize,
    nodes: usize,
) -> anyhow::Result<(Vec<String>, f64, usize)> {
    let jobs = Arc::new(parking_lot::Mutex::new(Vec::with_capacity(n)));
    let (http, bases, key, prefix) = (http.clone(), Arc::new(bases.to_vec()), key.to_owned(), prefix.to_owned());
    let collected = jobs.clone();
    let summary = nimbus_load_tests::closed_loop(concurrency, n, Duration::from_secs(600), move |i| {
        let (http, bases, key, jobs) = (http.clone(), bases.clone(), key.clone(), collected.clone());
        let name = format!("{prefix}-{i}");
        async move {
            let base = &bases[i % bases.len()];
            let node = format!("pve{}", i % nodes + 1);
            let answer =
                http.post(format!("{base}/v1/vms")).bearer_auth(&key).json(&create_body(&name, &node)).send().await?;
            anyhow::ensure!(answer.status() == reqwest::StatusCode::ACCEPTED, "create answered {}", answer.status());
            let body: serde_json::Value = answer.json().await?;
            let id = body["data"]["id"].as_str().context("no job id")?.to_owned();
            jobs.lock().push(id);
            Ok(())
        }
    })
    .await;
    let jobs = std::mem::take(&mut *jobs.lock());
    Ok((jobs, summary.per_second(), summary.errors))
}

/// Waits until every job of `ids` is final; (seconds since `started`, failed).
async fn drained(db: &sqlx::PgPool, ids: &[uuid::Uuid], started: Instant) -> anyhow::Result<(f64, i64)> {
    let deadline = started + Duration::from_secs(900);
    loop {
        let (done, failed): (i64, i64) = sqlx::query_as(
            "select count(*) filter (where status in ('succeeded', 'failed')), count(*) filter (where status = 'failed') \
             from jobs where id = any($1)",
        )
        .bind(ids)
        .fetch_one(db)
        .await?;
        if done as usize >= ids.len() {
            return Ok((started.elapsed().as_secs_f64(), failed));
        }
        anyhow::ensure!(Instant::now() < deadline, "{} of {} jobs final after 900 s", done, ids.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run(args: &Args, stack: &Stack) -> anyhow::Result<()> {
    let db = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&stack.database_url).await?;
    let http = reqwest::Client::new();
    println!(
        "scale: {} provisions per round, WORKER_CONCURRENCY={}, NODE_CAP={} × {} nodes (the caps bind at {} jobs at once), \
         pve-sim time scale {}",
        args.jobs,
        args.concurrency,
        args.node_cap,
        args.nodes,
        args.node_cap * args.nodes,
        args.time_scale
    );
    let mut one_worker = None;
    for (round, &workers) in args.workers.iter().enumerate() {
        let prefix = format!("scale-r{round}");
        let (jobs, _, errors) =
            create(&http, std::slice::from_ref(&stack.api_base), &stack.api_key, &prefix, args.jobs, 16, args.nodes)
                .await?;
        anyhow::ensure!(errors == 0 && jobs.len() == args.jobs, "{errors} creates of the backlog failed");
        let ids: Vec<uuid::Uuid> = jobs.iter().map(|j| j.parse()).collect::<Result<_, _>>()?;
        let started = Instant::now();
        for _ in 0..workers {
            stack.add_worker().await?;
        }
        let (seconds, failed) = drained(&db, &ids, started).await?;
        stack.remove_workers().await;
        let rate = ids.len() as f64 / seconds;
        let base = *one_worker.get_or_insert(rate / workers as f64);
        let at_once = (workers * args.concurrency).min(args.node_cap * args.nodes);
        println!(
            "{workers} worker(s): {} provisions in {seconds:.2} s = {rate:.1} jobs/s ({:.2}x one worker; linear {workers}.00x; \
             {at_once} at once at most), {failed} failed",
            ids.len(),
            rate / base
        );
        anyhow::ensure!(failed == 0, "provisions failed; see the logs in {}", stack.logs_dir.display());
    }

    let (_, one, e1) = create(
        &http,
        std::slice::from_ref(&stack.api_base),
        &stack.api_key,
        "api-1",
        args.creates,
        args.api_concurrency,
        args.nodes,
    )
    .await?;
    let replica = stack.start_api_replica().await?;
    let bases = [stack.api_base.clone(), replica];
    let (_, two, e2) =
        create(&http, &bases, &stack.api_key, "api-2", args.creates, args.api_concurrency, args.nodes).await?;
    println!(
        "API creates at {} in flight: 1 replica {one:.0}/s ({e1} errors), 2 replicas {two:.0}/s ({e2} errors): {:.2}x \
         (all on this machine's 2 cores, shared with PostgreSQL and Redis)",
        args.api_concurrency,
        two / one
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root =
        args.dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("nimbus-scale-{}", std::process::id())));
    let bin_dir = find_binaries(args.bin_dir.clone())?;
    let stack = Stack::start(StackConfig {
        root,
        bin_dir,
        workers: 0,
        worker_concurrency: args.concurrency,
        lease_secs: 6,
        sim_nodes: args.nodes,
        time_scale: args.time_scale,
        seed: 1,
        max_instances: 1_000_000,
        worker_env: vec![
            ("WORKER_QUEUES".into(), "provision".into()),
            ("NODE_CAP".into(), args.node_cap.to_string()),
            ("PVE_RATE_LIMIT".into(), "0".into()),
            ("EVENTS".into(), "0".into()),
        ],
    })
    .await?;
    let result = run(&args, &stack).await;
    stack.shutdown(false).await;
    result
}
