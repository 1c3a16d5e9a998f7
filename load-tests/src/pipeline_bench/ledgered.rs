//! The ledgered pipeline: jobs enqueued in the Postgres ledger, their ids pushed to nimbus-queue
//! (the `Dispatch` message the API and the relay push), and an apalis worker whose handler claims
//! each job in the ledger and completes it, both through the workers' group-committing
//! `nimbus_jobs::LedgerWriter`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use apalis::prelude::*;
use nimbus_domain::{JobId, JobKind};
use nimbus_jobs::payload::Dispatch;
use nimbus_queue::{Queue, QueueConfig, QueueStats, StreamsBackend};
use sqlx::PgPool;
use sqlx::types::Uuid;
use tokio::sync::{Notify, oneshot};

use nimbus_jobs::LedgerWriter;

/// The ledger queue name and the worker's lease holder name.
pub const QUEUE: &str = "bench";
const WORKER: &str = "pipeline-bench-1";

/// Knobs of the ledgered run.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub jobs: usize,
    pub concurrency: usize,
    pub max_batch: usize,
    pub in_flight: usize,
}

/// What one ledgered round measured and verified.
#[derive(Debug)]
pub struct Round {
    pub rate: f64,
    pub setup: Duration,
    /// Ledger statements (each carries claims and completions).
    pub statements: usize,
    pub refused: usize,
    pub errors: usize,
}

/// Empties the ledger tables this benchmark writes.
pub async fn reset(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("truncate jobs, job_events, outbox").execute(pool).await?;
    Ok(())
}

/// Setup (not timed): `jobs` queued ledger rows with their first event, one bulk INSERT in one
/// transaction, then `ANALYZE`. Returns their ids.
async fn enqueue_all(pool: &PgPool, jobs: usize) -> anyhow::Result<Vec<Uuid>> {
    let ids: Vec<Uuid> = (0..jobs).map(|_| JobId::new().as_uuid()).collect();
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "with j as (insert into jobs (id, kind, queue) select unnest($1::uuid[]), $2, $3 \
         returning id, status, progress, step) \
         insert into job_events (job_id, status, progress, step) select id, status, progress, step from j",
    )
    .bind(&ids)
    .bind(JobKind::Start.as_str())
    .bind(QUEUE)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    if inserted != jobs as u64 {
        bail!("enqueued {inserted} of {jobs} jobs");
    }
    // Statistics as autovacuum would leave them for a table this size: the truncate emptied them,
    // and the planner would otherwise believe `jobs` tiny for the whole round.
    sqlx::query("analyze jobs, job_events").execute(pool).await?;
    Ok(ids)
}

/// One round: enqueue (untimed, through the owner's `pool`), then first push → last completion
/// committed (the ledger written through `app`, the runtime role's pool, as workers do).
pub async fn run(pool: &PgPool, app: &PgPool, redis_url: &str, o: Options) -> anyhow::Result<Round> {
    let setup_started = Instant::now();
    reset(pool).await?;
    let ids = enqueue_all(pool, o.jobs).await?;
    let queue = Queue::connect(redis_url, QueueConfig::new(QUEUE)).await?;
    queue.ensure_group().await?;
    let setup = setup_started.elapsed();

    let lease = Duration::from_secs(300);
    let ledger = LedgerWriter::start(app.clone(), WORKER, lease, o.max_batch, o.in_flight);
    let writer = ledger.clone();
    let done = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(Notify::new());

    let started = Instant::now();
    let mut sink = StreamsBackend::<Dispatch>::new(queue.clone());
    let tasks = ids.iter().map(|&id| {
        let dispatch = Dispatch { job_id: JobId::from_uuid(id), kind: JobKind::Start, queue: QUEUE.into() };
        TaskBuilder::new(dispatch).task_id(TaskId::from_string(id.to_string())).build()
    });
    sink.push_all(futures::stream::iter(tasks)).await?;

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let handler = {
        let (done, refused, errors, all_done) = (done.clone(), refused.clone(), errors.clone(), all_done.clone());
        let jobs = o.jobs;
        move |d: Dispatch| {
            let ledger = ledger.clone();
            let (done, refused, errors, all_done) = (done.clone(), refused.clone(), errors.clone(), all_done.clone());
            async move {
                let id = d.job_id;
                let step = async {
                    if ledger.claim(id).await?.is_none() {
                        return Ok::<bool, anyhow::Error>(false);
                    }
                    // The job itself: a no-op.
                    Ok(ledger.complete(id).await?)
                };
                match step.await {
                    Ok(true) => {
                        if done.fetch_add(1, Ordering::Relaxed) + 1 == jobs {
                            all_done.notify_one();
                        }
                    }
                    Ok(false) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        return Err::<(), BoxDynError>(e.into());
                    }
                }
                Ok(())
            }
        }
    };
    let worker = WorkerBuilder::new("pipeline-bench")
        .backend(StreamsBackend::<Dispatch>::new(queue.clone()))
        .concurrency(o.concurrency)
        .build(handler);
    let handle = tokio::spawn(worker.run_until(async move {
        let _ = stop_rx.await;
        Ok::<(), std::io::Error>(())
    }));

    let finished = tokio::time::timeout(Duration::from_secs(120), all_done.notified()).await;
    let elapsed = started.elapsed();
    let _ = stop_tx.send(());
    let worker_res = tokio::time::timeout(Duration::from_secs(30), handle).await.context("worker did not stop")??;
    finished.context("jobs not completed in the ledger within 120 s")?;
    if worker_res.is_err() {
        bail!("worker ended with an error");
    }
    let left = queue.stats().await?;
    if left != QueueStats::default() {
        bail!("jobs left in Redis after the run: {left:?}");
    }
    verify(pool, o.jobs).await?;
    Ok(Round {
        rate: o.jobs as f64 / elapsed.as_secs_f64(),
        setup,
        statements: usize::try_from(writer.statements())?,
        refused: refused.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
    })
}

/// Every job `succeeded`, claimed once (attempts = 1), with exactly one `running` and one
/// `succeeded` event, and no lease left behind.
async fn verify(pool: &PgPool, jobs: usize) -> anyhow::Result<()> {
    let (total, succeeded, once, leased): (i64, i64, i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where status = 'succeeded'), count(*) filter (where attempts = 1), \
         count(*) filter (where locked_by is not null) from jobs",
    )
    .fetch_one(pool)
    .await?;
    let (running_ev, succeeded_ev, distinct_succeeded): (i64, i64, i64) = sqlx::query_as(
        "select count(*) filter (where status = 'running'), count(*) filter (where status = 'succeeded'), \
         count(distinct job_id) filter (where status = 'succeeded') from job_events",
    )
    .fetch_one(pool)
    .await?;
    let n = jobs as i64;
    if (total, succeeded, once, leased) != (n, n, n, 0) || (running_ev, succeeded_ev, distinct_succeeded) != (n, n, n) {
        bail!(
            "ledger check failed: jobs {total}, succeeded {succeeded}, attempts=1 {once}, leased {leased}; \
             events running {running_ev}, succeeded {succeeded_ev} ({distinct_succeeded} distinct); expected {n}"
        );
    }
    Ok(())
}
