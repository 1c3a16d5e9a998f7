//! The scheduler under a thundering herd (issue 12, item 9): 100,000 customer schedules due in
//! the same minute (all at one instant, the worst case), fired by three scheduler replicas
//! (`nimbus_worker::scheduler::tick` in loops, each with its own connection pool, as three worker
//! processes would), every fire exactly once.
//!
//! Printed: fires per second, the delay from the due time to the job being queued (p50, p99:
//! when a reader polling the ledger every 50 ms first sees the fire committed, so figures are
//! up to 50 ms late), and the check that each schedule fired once with one queued job, pushed
//! once to Redis (no outbox row owed). Beside it, the floor: the same rows (fires, jobs, their
//! first events, the schedules advanced) written by plain `INSERT … SELECT` statements in one
//! transaction, in the same run, on the same database (without the Redis pushes). Goal: p99
//! delay ≤ 5 s, rate ≥ 0.5× the floor's.
//!
//! PostgreSQL runs durable (fsync and synchronous_commit on, `services.sh --persist`).
//!
//! Reproduce: `cargo build --release -p nimbus-load-tests --bins && target/release/scheduler-bench`
//! (or `make bench`).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Parser;
use nimbus_db::PgPool;
use nimbus_jobs::SystemClock;
use nimbus_load_tests::services::Services;

#[derive(Parser, Debug)]
#[command(about = "Scheduler fires per second and due-to-queued delay for 100,000 schedules due at once")]
struct Args {
    /// Schedules due at the same time.
    #[arg(long, default_value_t = 100_000)]
    schedules: usize,
    /// Scheduler replicas.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Schedules per transaction.
    #[arg(long, default_value_t = nimbus_worker::scheduler::BATCH)]
    batch: i64,
    /// Tick period of each replica, milliseconds.
    #[arg(long, default_value_t = 200)]
    tick_ms: u64,
    /// How often the reader looks at the ledger, milliseconds (the delays' resolution).
    #[arg(long, default_value_t = 50)]
    poll_ms: u64,
    /// Connections per replica.
    #[arg(long, default_value_t = 2)]
    connections: u32,
    /// Services folder (removed at the end); default /tmp/nimbus-scheduler-bench-PID.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/nimbus-scheduler-bench-{}", std::process::id())));
    let services = Services::start(&dir, true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = runtime.block_on(run(&args, &services));
    drop(services);
    result
}

/// Writes `n` daily schedules of one tenant, all due at `due`.
async fn seed(owner: &PgPool, n: usize, due: DateTime<Utc>) -> anyhow::Result<()> {
    let tenant = nimbus_db::seed::seed_demo(owner).await?.tenant.id;
    sqlx::query(
        "insert into schedules (id, tenant_id, name, cron, job_kind, queue, payload, missed_fire_policy, next_fire_at) \
         select gen_random_uuid(), $1, 'nightly backup ' || i, '0 3 * * *', 'backup', 'backup', '{}', \
                'latest_only', $2 \
         from generate_series(1, $3) as i",
    )
    .bind(tenant.as_uuid())
    .bind(due)
    .bind(n as i64)
    .execute(owner)
    .await?;
    sqlx::query("analyze schedules").execute(owner).await?;
    Ok(())
}

/// The floor: the rows a fire writes, by plain `INSERT … SELECT` in one transaction. Returns
/// the time it took; the rows are removed afterwards.
async fn floor(owner: &PgPool, due: DateTime<Utc>) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut tx = owner.begin().await?;
    sqlx::query(
        "create temporary table planned on commit drop as \
         select s.id as schedule_id, gen_random_uuid() as job_id, s.tenant_id from schedules s where s.next_fire_at <= $1",
    )
    .bind(due)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into jobs (id, tenant_id, kind, queue, payload) \
         select job_id, tenant_id, 'backup', 'backup', jsonb_build_object('scheduleId', schedule_id, 'fireAt', $1::timestamptz) \
         from planned",
    )
    .bind(due)
    .execute(&mut *tx)
    .await?;
    sqlx::query("insert into job_events (job_id, status, progress) select job_id, 'queued', 0 from planned")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "insert into schedule_fires (schedule_id, fire_at, job_id) select schedule_id, $1, job_id from planned",
    )
    .bind(due)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update schedules s set next_fire_at = $1 + interval '1 day', last_fire_at = $1, last_job_id = p.job_id \
         from planned p where s.id = p.schedule_id",
    )
    .bind(due)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let took = started.elapsed();
    // Back to the state before, for the scheduler's run.
    let mut tx = owner.begin().await?;
    sqlx::query("update schedules set next_fire_at = $1, last_fire_at = null, last_job_id = null")
        .bind(due)
        .execute(&mut *tx)
        .await?;
    sqlx::query("delete from schedule_fires").execute(&mut *tx).await?;
    sqlx::query("delete from jobs where kind = 'backup'").execute(&mut *tx).await?;
    tx.commit().await?;
    sqlx::query("vacuum analyze schedules").execute(owner).await?;
    sqlx::query("vacuum analyze jobs").execute(owner).await?;
    Ok(took)
}

async fn run(args: &Args, services: &Services) -> anyhow::Result<()> {
    let owner = nimbus_db::connect(&services.var("NIMBUS_DATABASE_URL")?, 4).await?;
    nimbus_db::migrate(&owner).await?;
    let app_url = services.var("NIMBUS_APP_DATABASE_URL")?;
    let redis_url = services.var("NIMBUS_REDIS_URL")?;
    let n = args.schedules;
    let settings: Vec<(String, String)> = sqlx::query_as(
        "select name, setting from pg_settings where name in ('fsync', 'synchronous_commit') order by name",
    )
    .fetch_all(&owner)
    .await?;
    println!(
        "scheduler-bench: {n} schedules due at one instant, {} replicas ticking every {} ms, {} per transaction; \
         PostgreSQL {settings:?}",
        args.replicas, args.tick_ms, args.batch
    );

    // The floor, on the same rows.
    let floor_due = Utc::now();
    seed(&owner, n, floor_due).await?;
    println!("  seeded; the floor runs");
    let floor_took = floor(&owner, floor_due).await?;
    println!("  floor done; the scheduler runs");
    let floor_rate = n as f64 / floor_took.as_secs_f64();

    // The scheduler: replicas start ticking, the schedules come due 3 s later.
    let due = Utc::now() + chrono::Duration::seconds(3);
    sqlx::query("update schedules set next_fire_at = $1").bind(due).execute(&owner).await?;
    let mut replicas = Vec::new();
    let stop = tokio_util::sync::CancellationToken::new();
    for _ in 0..args.replicas {
        let pool = nimbus_db::connect(&app_url, args.connections).await.context("the replica's pool")?;
        let stop = stop.clone();
        let (every, batch) = (Duration::from_millis(args.tick_ms), args.batch);
        let queues = nimbus_jobs::Queues::new(&redis_url, "bench:")?;
        replicas.push(tokio::spawn(async move {
            let clock = std::sync::Arc::new(SystemClock);
            let metrics = nimbus_worker::metrics::WorkerMetrics::unserved();
            nimbus_worker::scheduler::run_in_batches(pool, queues, clock, every, batch, stop, metrics).await
        }));
    }
    // The reader: when each fire is first seen committed.
    let mut seen_at: Vec<(Duration, i64)> = Vec::new();
    let mut last = 0i64;
    let deadline = Instant::now() + Duration::from_secs(300);
    let due_instant = Instant::now() + (due - Utc::now()).to_std().unwrap_or_default();
    while last < n as i64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
        let count: i64 = sqlx::query_scalar("select count(*) from schedule_fires").fetch_one(&owner).await?;
        if count > last {
            seen_at.push((Instant::now().saturating_duration_since(due_instant), count - last));
            last = count;
        }
    }
    stop.cancel();
    for r in replicas {
        let _ = r.await;
    }
    anyhow::ensure!(last == n as i64, "only {last} of {n} schedules fired within 300 s");
    let delay = |q: f64| -> Duration {
        let rank = ((n as f64 - 1.0) * q).round() as i64;
        let mut acc = 0i64;
        for (at, count) in &seen_at {
            acc += count;
            if acc > rank {
                return *at;
            }
        }
        seen_at.last().map(|(at, _)| *at).unwrap_or_default()
    };
    let (first, all) = (seen_at.first().map(|(at, _)| *at).unwrap_or_default(), delay(1.0));
    let rate = n as f64 / (all - first).max(Duration::from_millis(1)).as_secs_f64();

    // Exactly once: one fire, one queued job and one Redis message per schedule.
    let (fires, jobs, distinct, owed): (i64, i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from schedule_fires), \
                (select count(*) from jobs where kind = 'backup' and status = 'queued'), \
                (select count(distinct payload->>'scheduleId') from jobs where kind = 'backup'), \
                (select count(*) from outbox)",
    )
    .fetch_one(&owner)
    .await?;
    let pushed = nimbus_jobs::Queues::new(&redis_url, "bench:")?.queue("backup").await?.stats().await?.waiting as i64;
    let once = fires == n as i64 && jobs == n as i64 && distinct == n as i64 && pushed == n as i64 && owed == 0;

    println!(
        "  floor (INSERT … SELECT, one transaction): {n} fires in {:.2} s = {floor_rate:.0} fires/s",
        floor_took.as_secs_f64()
    );
    println!(
        "  scheduler ({} replicas): {n} fires, first seen {:.0} ms after due, last {:.2} s: {rate:.0} fires/s = {:.2}x the floor",
        args.replicas,
        first.as_secs_f64() * 1000.0,
        all.as_secs_f64(),
        rate / floor_rate
    );
    println!(
        "  delay from due to queued: p50 {:.2} s, p99 {:.2} s (the reader polls every {} ms)",
        delay(0.5).as_secs_f64(),
        delay(0.99).as_secs_f64(),
        args.poll_ms
    );
    println!(
        "  exactly once: {fires} fires, {jobs} queued jobs of {distinct} schedules, {pushed} messages in Redis, \
         {owed} outbox rows owed: {}",
        if once { "PASS" } else { "FAIL" }
    );
    let goals = delay(0.99) <= Duration::from_secs(5) && rate >= 0.5 * floor_rate;
    println!("  goal p99 ≤ 5 s and ≥ 0.5x the floor: {}", if goals { "met" } else { "MISSED" });
    anyhow::ensure!(once, "a schedule did not fire exactly once");
    anyhow::ensure!(goals, "the scheduler missed its goal");
    Ok(())
}
