//! Group commit for the ledger's per-job transitions: handlers hand their job id to a batcher
//! task and await the reply; the batcher takes every request waiting, runs one
//! `UPDATE ... WHERE id = ANY($1)` (with the job events, like `nimbus_db::jobs::claim` /
//! `complete`), and replies once that statement has committed. A handler therefore only goes on
//! after its own transition is durable, while the database sees one statement per batch.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::types::Uuid;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Which transition a batcher applies.
#[derive(Clone, Copy, Debug)]
pub enum Transition {
    /// `queued` → `running` for `worker` with a lease (`jobs::claim`, batched).
    Claim,
    /// `running` (held by `worker`) → `succeeded` (`jobs::complete`, batched).
    Complete,
}

const CLAIM: &str = "with c as (update jobs set status = 'running', attempts = attempts + 1, locked_by = $2, \
     locked_until = now() + make_interval(secs => $3), started_at = coalesce(started_at, now()) \
     where id = any($1) and status = 'queued' and run_after <= now() \
     returning id, status, progress, step), \
     e as (insert into job_events (job_id, status, progress, step) select id, status, progress, step from c) \
     select id from c";

const COMPLETE: &str = "with u as (update jobs set status = 'succeeded', progress = 100, finished_at = now(), \
     locked_by = null, locked_until = null, error_code = null, error_message = null, error_retryable = null \
     where id = any($1) and status = 'running' and locked_by = $2 \
     returning id, status, progress, step), \
     e as (insert into job_events (job_id, status, progress, step) select id, status, progress, step from u) \
     select id from u";

struct Request {
    id: Uuid,
    reply: oneshot::Sender<bool>,
}

/// The handle handlers use; cloning it is cheap.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::UnboundedSender<Request>,
}

/// Batch sizes seen, for the report.
#[derive(Default)]
pub struct BatchStats {
    pub batches: std::sync::atomic::AtomicUsize,
    pub rows: std::sync::atomic::AtomicUsize,
}

impl Batcher {
    /// Starts a batcher task applying `transition` for `worker`, at most `max_batch` ids per
    /// statement and `in_flight` statements at once.
    pub fn spawn(
        pool: PgPool,
        transition: Transition,
        worker: String,
        lease: Duration,
        max_batch: usize,
        in_flight: usize,
        stats: Arc<BatchStats>,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Request>();
        let permits = Arc::new(Semaphore::new(in_flight.max(1)));
        let worker = Arc::<str>::from(worker);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let permit = permits.clone().acquire_owned().await.expect("semaphore never closed");
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                let (pool, worker, stats) = (pool.clone(), worker.clone(), stats.clone());
                tokio::spawn(async move {
                    let ids: Vec<Uuid> = batch.iter().map(|r| r.id).collect();
                    let sql = match transition {
                        Transition::Claim => CLAIM,
                        Transition::Complete => COMPLETE,
                    };
                    let query = sqlx::query_scalar::<_, Uuid>(sql).bind(&ids).bind(&*worker);
                    let query = match transition {
                        Transition::Claim => query.bind(lease.as_secs_f64()),
                        Transition::Complete => query,
                    };
                    let res = query.fetch_all(&pool).await;
                    drop(permit);
                    // On an error the replies are dropped: every waiter sees its request fail.
                    match res {
                        Ok(done) => {
                            stats.batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            stats.rows.fetch_add(done.len(), std::sync::atomic::Ordering::Relaxed);
                            let mut done: HashSet<Uuid> = done.into_iter().collect();
                            for r in batch {
                                // A duplicate delivery in the same batch: only one waiter gets the job.
                                let _ = r.reply.send(done.remove(&r.id));
                            }
                        }
                        Err(e) => eprintln!("ledger batch failed: {e}"),
                    }
                });
            }
        });
        Self { tx }
    }

    /// Applies the transition to `id`; `Ok(true)` once it has committed, `Ok(false)` when the
    /// ledger refused it (not queued / not held), `Err` when the statement failed.
    pub async fn apply(&self, id: Uuid) -> anyhow::Result<bool> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request { id, reply }).map_err(|_| anyhow::anyhow!("batcher stopped"))?;
        rx.await.map_err(|_| anyhow::anyhow!("ledger batch failed"))
    }
}
