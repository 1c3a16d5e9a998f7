//! queue-bench: our dispatch layer (nimbus-queue, an apalis backend on Redis Streams) against
//! BullMQ on the same private Redis in one run, then a 1M-job backlog drain and idle pickup
//! latency. Only loopback; bounded in jobs and time.
//!
//! cargo build --release -p nimbus-load-tests --bin queue-bench && target/release/queue-bench

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../queue_bench/mod.rs"]
mod queue_bench;

use std::time::Duration;

use clap::Parser;
use nimbus_load_tests::Summary;
use queue_bench::{bullmq, ours, redis_server};

#[derive(Parser, Debug)]
#[command(about = "nimbus-queue vs BullMQ on one Redis, backlog drain and idle pickup")]
struct Args {
    /// No-op jobs per throughput round.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Handler concurrency (BullMQ Worker concurrency and our apalis `.concurrency`).
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Throughput rounds; each runs BullMQ then ours; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Jobs in the backlog scenario (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    backlog: usize,
    /// Jobs in the idle pickup scenario.
    #[arg(long, default_value_t = 200)]
    pickups: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    bullmq::ensure_installed()?;
    let server = redis_server::RedisServer::start().await?;
    let url = server.url();
    println!(
        "queue-bench: {} | bullmq {} | nimbus-queue (apalis 1.0 backend on Redis Streams)",
        redis_server::RedisServer::version(),
        bullmq::version()
    );
    println!("private redis-server on 127.0.0.1:{} (no persistence), flushed before every run", server.port);
    println!();
    println!(
        "== throughput: {} no-op jobs, concurrency {}, bulk push then one worker, end to end ==",
        args.jobs, args.concurrency
    );
    let (mut theirs, mut mine, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds.max(1) {
        redis_server::flush(&url).await?;
        let b = bullmq::run(server.port, args.jobs, args.concurrency)?;
        redis_server::flush(&url).await?;
        let o = ours::throughput(&url, args.jobs, args.concurrency).await?;
        println!("round {round}: bullmq {b:>9.0} jobs/s | nimbus-queue {o:>9.0} jobs/s | ratio {:.1}x", o / b);
        theirs.push(b);
        mine.push(o);
        ratios.push(o / b);
    }
    let ratio = median(ratios);
    println!(
        "median: bullmq {:.0} jobs/s | nimbus-queue {:.0} jobs/s | ratio {ratio:.1}x (target >= 4x, aim 8x): {}",
        median(theirs),
        median(mine),
        if ratio >= 4.0 { "PASS" } else { "FAIL" }
    );

    let mut ok = ratio >= 4.0;
    if args.backlog > 0 {
        println!();
        println!(
            "== backlog: {} jobs pushed with no worker running, then drained (concurrency {}) ==",
            args.backlog, args.concurrency
        );
        redis_server::flush(&url).await?;
        let r = ours::backlog(&url, args.backlog, args.concurrency, Duration::from_secs(300)).await?;
        println!("push   {:>9.0} jobs/s (pipelined batches of 10,000)", r.push_rate);
        println!("drain  {:>9.0} jobs/s", r.drain_rate);
        println!(
            "errors {} | lost {} | duplicates {} (all must be 0) | left in Redis {:?}",
            r.errors, r.lost, r.duplicates, r.left
        );
        println!(
            "redis used_memory: before push {:.1} MiB | after push {:.1} MiB ({:.0} B/job) | after drain {:.1} MiB",
            mib(r.mem_before),
            mib(r.mem_after_push),
            (r.mem_after_push.saturating_sub(r.mem_before)) as f64 / r.jobs as f64,
            mib(r.mem_after_drain)
        );
        ok &= r.errors == 0 && r.lost == 0 && r.duplicates == 0;
    }

    println!();
    println!("== idle pickup: {} jobs pushed one at a time to an idle worker ==", args.pickups);
    redis_server::flush(&url).await?;
    let micros = ours::pickup(&url, args.pickups).await?;
    let s = Summary::from_samples(micros, 0, Duration::from_secs(1));
    let (p50, p99) = (s.percentile_ms(0.5), s.percentile_ms(0.99));
    println!(
        "push -> handler start: median {p50:.2} ms | p99 {p99:.2} ms (target median < 10 ms): {}",
        if p50 < 10.0 { "PASS" } else { "FAIL" }
    );
    ok &= p50 < 10.0;

    println!();
    println!("reproduce: cargo build --release -p nimbus-load-tests --bin queue-bench && target/release/queue-bench");
    drop(server);
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
