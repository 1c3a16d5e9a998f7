//! `ops-bench`: what the platform itself adds to an instance action.
//!
//! A whole stack on loopback (the chaos soak's: PostgreSQL durable, fsync on; Redis; the real
//! `nimbus-api` and `nimbus-worker` processes; pve-sim with `--nodes` nodes and task time 0).
//! After `--instances` instances are provisioned, it measures:
//!
//! * the floor: the same power actions issued straight at pve-sim by one client (the Proxmox
//!   client the workers use, with its task polling): status, action, wait for the task;
//! * serial: a tenth of `--actions` through the API, one at a time, each timed from the job's
//!   `created_at` (the API's accept) to its `finished_at` in the ledger;
//! * the burst: `--actions` actions (stop and start in turns) accepted by the API, all of a round
//!   at once (one per instance), timed the same way.
//!
//! The platform's own cost per action is the serial latency minus the floor's at the same
//! percentile (one at a time, an action waits for nothing else); the burst shows what queueing
//! behind the pool, the node caps and the request cap adds. The workers' cluster-wide Proxmox request cap (`--rate`) is checked against
//! pve-sim's own count of the requests it received, per second.
//!
//! `cargo run --release -p nimbus-load-tests --bin ops-bench [-- --actions 1000 --instances 200]`

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nimbus_load_tests::Summary;
use nimbus_load_tests::stack::{Stack, StackConfig, find_binaries};
use nimbus_proxmox::{ApiToken, ClientConfig, ProxmoxClient, TlsMode};
use serde_json::{Value, json};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "the platform's own cost per instance action, next to the same actions straight at pve-sim")]
struct Args {
    /// Instances the actions are spread over.
    #[arg(long, default_value_t = 200)]
    instances: usize,
    /// Power actions through the API (stop and start in turns, one round per instance at once).
    #[arg(long, default_value_t = 1000)]
    actions: usize,
    /// pve-sim nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Jobs of one queue each worker runs at once.
    #[arg(long, default_value_t = 32)]
    worker_concurrency: usize,
    /// Operations at once per Proxmox node (`NODE_CAP`).
    #[arg(long, default_value_t = 16)]
    node_cap: u32,
    /// The workers' cap on Proxmox API requests per second (`PVE_RATE_LIMIT`).
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Where the stack lives (default: a fresh folder under the system's temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Where `nimbus-api` and `nimbus-worker` are (default: next to this binary, built if missing).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = find_binaries(args.bin_dir.clone())?;
    let root =
        args.dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("nimbus-ops-{}", std::process::id())));
    let config = StackConfig {
        root,
        bin_dir,
        workers: args.workers,
        worker_concurrency: args.worker_concurrency,
        lease_secs: 6,
        sim_nodes: args.nodes,
        time_scale: 0.0,
        seed: 1,
        max_instances: (args.instances as i64) * 2 + 10,
        worker_env: vec![
            ("PVE_RATE_LIMIT".into(), args.rate.to_string()),
            ("PVE_RATE_BURST".into(), burst(args.rate).to_string()),
            ("NODE_CAP".into(), args.node_cap.to_string()),
        ],
    };
    println!(
        "ops-bench: {} instances on {} pve-sim nodes (task time 0), {} worker(s) x {} per queue, node cap {}, \
         Proxmox rate cap {}/s",
        args.instances, args.nodes, args.workers, args.worker_concurrency, args.node_cap, args.rate
    );
    let stack = Stack::start(config).await?;
    let result = run(&args, &stack).await;
    stack.shutdown(result.is_err()).await;
    result
}

async fn run(args: &Args, stack: &Stack) -> anyhow::Result<()> {
    let pool = nimbus_db::connect(&stack.database_url, 4).await?;
    let http = reqwest::Client::new();
    let api = Api { http: http.clone(), base: stack.api_base.clone(), key: stack.api_key.clone() };

    // Instances to act on, spread over the nodes; 1 GiB disks, so no storage fills up (the
    // template's disk is larger, and disks never shrink).
    let started = Instant::now();
    let mut jobs = Vec::new();
    for i in 0..args.instances {
        let node = format!("pve{}", i % args.nodes + 1);
        let body = json!({"name": format!("bench-{i}"), "type": "qemu", "template": "debian-12-cloudinit",
            "cores": 1, "memory": 512, "disk": 1, "node": node});
        let (status, answer) = api.send(reqwest::Method::POST, "/v1/vms", Some(body)).await?;
        anyhow::ensure!(status == 202, "create {i}: {status} {answer}");
        jobs.push(answer["data"]["id"].as_str().context("no job id")?.to_owned());
    }
    let provisioned = wait_final(&pool, &jobs).await?;
    anyhow::ensure!(provisioned.values().all(|(s, _)| s == "succeeded"), "a provision failed");
    println!("setup       {} instances running in {:.1} s", args.instances, started.elapsed().as_secs_f64());
    let instances: Vec<(String, u32, String)> = sqlx::query_as::<_, (String, i32, String)>(
        "select id::text, vmid, node from instances where status = 'running' order by name",
    )
    .fetch_all(&pool)
    .await?
    .into_iter()
    .map(|(id, vmid, node)| (id, vmid as u32, node))
    .collect();

    let floor = floor(stack, &instances).await?;
    let serial = serial(args, &api, &pool, &instances).await?;
    let (platform, wall, failed, rate) = platform(args, &api, &pool, stack, &instances).await?;

    let p = |s: &Summary, q| s.percentile_ms(q);
    println!();
    println!(
        "floor       {} actions straight at pve-sim by one client: p50 {:.2} ms, p99 {:.2} ms",
        floor.requests,
        p(&floor, 0.5),
        p(&floor, 0.99)
    );
    println!(
        "serial      {} actions through the API, one at a time: accept → finished p50 {:.2} ms, p99 {:.2} ms",
        serial.requests,
        p(&serial, 0.5),
        p(&serial, 0.99)
    );
    println!(
        "platform    {} actions through the API ({} failed) in {:.1} s ({:.0}/s): accept → finished p50 {:.2} ms, \
         p99 {:.2} ms",
        platform.requests,
        failed,
        wall.as_secs_f64(),
        platform.requests as f64 / wall.as_secs_f64(),
        p(&platform, 0.5),
        p(&platform, 0.99)
    );
    // One at a time, an action waits for nothing but itself: the difference is the platform's
    // own cost. In the burst it also waits for the pool, the node caps and the request rate.
    let overhead50 = p(&serial, 0.5) - p(&floor, 0.5);
    let overhead99 = p(&serial, 0.99) - p(&floor, 0.99);
    println!(
        "overhead    the platform's own cost per action (serial - floor): p50 {overhead50:.2} ms, p99 {overhead99:.2} ms \
         (serial / floor: p50 {:.2}x, p99 {:.2}x); goal p50 ≤ 20 ms: {}",
        p(&serial, 0.5) / p(&floor, 0.5),
        p(&serial, 0.99) / p(&floor, 0.99),
        if overhead50 <= 20.0 { "met" } else { "NOT met" }
    );
    println!(
        "burst       queueing in the burst (burst - floor): p50 {:.2} ms, p99 {:.2} ms",
        p(&platform, 0.5) - p(&floor, 0.5),
        p(&platform, 0.99) - p(&floor, 0.99)
    );
    // Over any second the cap allows its rate plus the burst.
    let rate_kept = rate.max_per_second <= u64::from(args.rate + burst(args.rate));
    println!(
        "pve rate    cap {}/s (burst {}); pve-sim received at most {} requests in one second, {:.0}/s on average while the \
         actions ran{}",
        args.rate,
        burst(args.rate),
        rate.max_per_second,
        rate.mean_per_second,
        if rate_kept { "" } else { " (ABOVE the cap)" }
    );
    anyhow::ensure!(overhead50 <= 20.0, "the platform's p50 cost per action is {overhead50:.2} ms, above 20 ms");
    anyhow::ensure!(
        rate_kept,
        "pve-sim saw {} requests in one second, above the cap of {}/s",
        rate.max_per_second,
        args.rate
    );
    Ok(())
}

/// The workers' burst: a tenth of the rate, so that a second's count says whether the rate held.
fn burst(rate: u32) -> u32 {
    (rate / 10).max(1)
}

/// The API as the benchmark's tenant.
struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }
}

/// Waits until every job of `ids` is final; returns status and accept → finished seconds per job.
async fn wait_final(pool: &sqlx::PgPool, ids: &[String]) -> anyhow::Result<HashMap<String, (String, f64)>> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let rows: Vec<(String, String, Option<f64>)> = sqlx::query_as(
            "select id::text, status, extract(epoch from finished_at - created_at)::float8 from jobs \
             where id::text = any($1)",
        )
        .bind(ids)
        .fetch_all(pool)
        .await?;
        let done: HashMap<String, (String, f64)> = rows
            .into_iter()
            .filter(|(_, s, _)| ["succeeded", "failed", "cancelled"].contains(&s.as_str()))
            .map(|(id, s, secs)| (id, (s, secs.unwrap_or(0.0))))
            .collect();
        if done.len() == ids.len() {
            return Ok(done);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {} jobs not final after 600 s",
            ids.len() - done.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The same power actions, straight at pve-sim by one client, one after another.
async fn floor(stack: &Stack, instances: &[(String, u32, String)]) -> anyhow::Result<Summary> {
    let sim = &stack.sim;
    let tls = TlsMode::Fingerprint(sim.fingerprint().context("no certificate")?.to_owned());
    let client = ProxmoxClient::new(ClientConfig::new(sim.base_url(), ApiToken::parse(sim.token())?, tls))?;
    let started = Instant::now();
    let mut samples = Vec::new();
    for round in 0..2 {
        for (_, vmid, node) in instances {
            let t = Instant::now();
            let guest = client.node(node).qemu(*vmid);
            let running = guest.status().await?.is_running();
            let upid = if round == 0 && running { guest.stop().await? } else { guest.start().await? };
            client.wait_task(&upid, Duration::from_secs(60)).await?;
            samples.push(t.elapsed().as_micros() as u64);
        }
    }
    Ok(Summary::from_samples(samples, 0, started.elapsed()))
}

/// Power actions through the API one at a time (stop and start in turns on the first
/// instance), each timed in the ledger.
async fn serial(
    args: &Args,
    api: &Api,
    pool: &sqlx::PgPool,
    instances: &[(String, u32, String)],
) -> anyhow::Result<Summary> {
    let (id, _, _) = instances.first().context("no instance")?;
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut failed = 0;
    for i in 0..(args.actions / 10).max(20) {
        let action = if i % 2 == 0 { "stop" } else { "start" };
        let (status, body) =
            api.send(reqwest::Method::POST, &format!("/v1/vms/{id}/actions/{action}"), Some(json!({}))).await?;
        anyhow::ensure!(status == 202, "{action}: {status} {body}");
        let job = body["data"]["id"].as_str().context("no job id")?.to_owned();
        for (_, (status, secs)) in wait_final(pool, &[job]).await? {
            if status == "succeeded" {
                samples.push((secs * 1e6) as u64);
            } else {
                failed += 1;
            }
        }
    }
    Ok(Summary::from_samples(samples, failed, started.elapsed()))
}

/// pve-sim's requests per second while the actions ran.
struct Rate {
    max_per_second: u64,
    mean_per_second: f64,
}

/// `--actions` actions through the API, a round (one per instance) at a time.
async fn platform(
    args: &Args,
    api: &Api,
    pool: &sqlx::PgPool,
    stack: &Stack,
    instances: &[(String, u32, String)],
) -> anyhow::Result<(Summary, Duration, usize, Rate)> {
    let sim = stack.sim.sim().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (sim, stop) = (sim.clone(), stop.clone());
        tokio::spawn(async move {
            let mut per_second = Vec::new();
            let mut last = sim.requests();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = sim.requests();
                per_second.push(now - last);
                last = now;
            }
            per_second
        })
    };
    let first_request = sim.requests();
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut failed = 0;
    let mut sent = 0;
    // The floor left every guest running; the API's view followed through the reconciler.
    let mut action = "stop";
    while sent < args.actions {
        let round: Vec<&(String, u32, String)> = instances.iter().take(args.actions - sent).collect();
        let mut handles = Vec::new();
        for (id, _, _) in &round {
            let path = format!("/v1/vms/{id}/actions/{action}");
            let (http, base, key) = (api.http.clone(), api.base.clone(), api.key.clone());
            handles.push(tokio::spawn(async move {
                let r = http.post(format!("{base}{path}")).bearer_auth(key).json(&json!({})).send().await?;
                let status = r.status().as_u16();
                let body: Value = r.json().await?;
                anyhow::ensure!(status == 202, "{path}: {status} {body}");
                Ok::<String, anyhow::Error>(body["data"]["id"].as_str().unwrap_or_default().to_owned())
            }));
        }
        let mut ids = Vec::new();
        for h in handles {
            ids.push(h.await??);
        }
        for (_, (status, secs)) in wait_final(pool, &ids).await? {
            if status == "succeeded" {
                samples.push((secs * 1e6) as u64);
            } else {
                failed += 1;
            }
        }
        sent += ids.len();
        action = if action == "stop" { "start" } else { "stop" };
    }
    let wall = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let per_second = sampler.await?;
    let total = sim.requests() - first_request;
    let rate = Rate {
        max_per_second: per_second.iter().copied().max().unwrap_or(0),
        mean_per_second: total as f64 / wall.as_secs_f64(),
    };
    Ok((Summary::from_samples(samples, failed, wall), wall, failed, rate))
}
