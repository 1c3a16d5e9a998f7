//! pipeline-bench: 20,000 no-op jobs through the whole ledgered pipeline (each job enqueued in
//! the Postgres ledger, its id pushed to nimbus-queue, claimed and completed in the ledger by an
//! apalis worker with the ledger writes group-committed) against BullMQ (not durable) on the same
//! Redis in one run. Postgres and Redis come from `infra/scripts/services.sh`; only loopback;
//! bounded in jobs and time.
//!
//! cargo build --release -p nimbus-load-tests --bin pipeline-bench && target/release/pipeline-bench

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../queue_bench/bullmq.rs"]
mod bullmq;
#[path = "../pipeline_bench/mod.rs"]
mod pipeline_bench;
#[path = "../queue_bench/redis_server.rs"]
#[allow(dead_code)]
mod redis_server;

use clap::Parser;
use pipeline_bench::{ledgered, services::Services};

#[derive(Parser, Debug)]
#[command(about = "the ledgered pipeline (Postgres ledger + nimbus-queue + apalis) vs BullMQ")]
struct Args {
    /// No-op jobs per round.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Handler concurrency (BullMQ Worker concurrency and our apalis `.concurrency`).
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Rounds; each runs BullMQ then the ledgered pipeline; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Most transitions (claims and completions) per ledger statement.
    #[arg(long, default_value_t = 500)]
    max_batch: usize,
    /// Ledger statements in flight at once.
    #[arg(long, default_value_t = 2)]
    in_flight: usize,
    /// Start the services with `--persist` (Postgres fsync on, Redis append-only file).
    #[arg(long)]
    persist: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    bullmq::ensure_installed()?;
    let dir = std::env::temp_dir().join(format!("nimbus-pipeline-bench-{}", std::process::id()));
    let services = Services::start(dir, args.persist)?;
    let ok = run(&args, &services).await;
    drop(services);
    if !ok? {
        std::process::exit(1);
    }
    Ok(())
}

async fn run(args: &Args, services: &Services) -> anyhow::Result<bool> {
    let port = services.redis_port()?;
    let pool = nimbus_db::connect(&services.database_url, 2 * args.in_flight as u32 + 2).await?;
    nimbus_db::migrate(&pool).await?;
    let app = nimbus_db::connect(&services.app_database_url, 2 * args.in_flight as u32 + 2).await?;
    let fsync: String = sqlx::query_scalar("show fsync").fetch_one(&pool).await?;
    let pg: String = sqlx::query_scalar("show server_version").fetch_one(&pool).await?;
    println!(
        "pipeline-bench: PostgreSQL {pg} (fsync {fsync}) | {} | bullmq {} | nimbus-queue + apalis",
        redis_server::RedisServer::version(),
        bullmq::version()
    );
    println!(
        "services: infra/scripts/services.sh start{} (loopback), Redis flushed and ledger truncated before every run",
        if args.persist { " --persist" } else { "" }
    );
    println!(
        "ledger setup (untimed): one bulk INSERT of jobs + first events in one transaction; ledger writes \
         group-committed: the claims and completions waiting go in one statement (<= {} transitions, {} in flight), \
         each handler awaits its batch's commit",
        args.max_batch, args.in_flight
    );
    println!();
    println!(
        "== {} no-op jobs, concurrency {}, end to end (first push -> last completion committed) ==",
        args.jobs, args.concurrency
    );
    let opts = ledgered::Options {
        jobs: args.jobs,
        concurrency: args.concurrency,
        max_batch: args.max_batch,
        in_flight: args.in_flight,
    };
    let (mut theirs, mut mine, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds.max(1) {
        redis_server::flush(&services.redis_url).await?;
        let b = bullmq::run(port, args.jobs, args.concurrency)?;
        redis_server::flush(&services.redis_url).await?;
        let r = ledgered::run(&pool, &app, &services.redis_url, opts).await?;
        println!(
            "round {round}: bullmq {b:>8.0} jobs/s | ledgered {:>8.0} jobs/s | ratio {:.2}x | \
             ledger statements {} (avg {:.0} transitions) | refused {} errors {} | \
             ledger verified: {} succeeded, each claimed once | setup {:.1} s",
            r.rate,
            r.rate / b,
            r.statements,
            2.0 * args.jobs as f64 / r.statements.max(1) as f64,
            r.refused,
            r.errors,
            args.jobs,
            r.setup.as_secs_f64()
        );
        theirs.push(b);
        mine.push(r.rate);
        ratios.push(r.rate / b);
    }
    let ratio = median(ratios);
    let pass = ratio >= 1.0;
    println!(
        "median: bullmq {:.0} jobs/s | ledgered pipeline {:.0} jobs/s | ratio {ratio:.2}x (target >= 1x): {}",
        median(theirs),
        median(mine),
        if pass { "PASS" } else { "FAIL" }
    );
    println!();
    println!(
        "reproduce: cargo build --release -p nimbus-load-tests --bin pipeline-bench && target/release/pipeline-bench"
    );
    ledgered::reset(&pool).await?;
    Ok(pass)
}
