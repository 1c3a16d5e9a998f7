//! Group commit for the ledger's per-job transitions: handlers hand their job id and the
//! transition they need to the batcher and await the reply; the batcher takes every request
//! waiting — claims and completions together — runs ONE statement for all of them (two
//! `UPDATE ... WHERE id = ANY(..)` and their job events, like `nimbus_db::jobs::claim` /
//! `complete`), and replies once that statement has committed. A handler therefore only goes on
//! after its own transition is durable, while the database sees one statement per batch.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::types::Uuid;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Which transition a handler asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// `queued` → `running` for the worker with a lease (`jobs::claim`, batched).
    Claim,
    /// `running` (held by the worker) → `succeeded` (`jobs::complete`, batched).
    Complete,
}

/// Both transitions and their events in one statement. A job is never in both arrays: its
/// completion is asked for only after its claim has committed. The ids are joined in (`unnest`),
/// not matched with `= any(..)`: that would let the planner AND the primary key with a scan of the
/// whole `status = 'queued'` (or `'running'`) partial index, which grows with the backlog.
const APPLY: &str = "with c as (update jobs j set status = 'running', attempts = attempts + 1, locked_by = $3, \
     locked_until = now() + make_interval(secs => $4), started_at = coalesce(started_at, now()) \
     from unnest($1::uuid[]) as w(id) where j.id = w.id and j.status = 'queued' and j.run_after <= now() \
     returning j.id, j.status, j.progress, j.step), \
     u as (update jobs j set status = 'succeeded', progress = 100, finished_at = now(), \
     locked_by = null, locked_until = null, error_code = null, error_message = null, error_retryable = null \
     from unnest($2::uuid[]) as w(id) where j.id = w.id and j.status = 'running' and j.locked_by = $3 \
     returning j.id, j.status, j.progress, j.step), \
     e as (insert into job_events (job_id, status, progress, step) \
     select id, status, progress, step from c union all select id, status, progress, step from u) \
     select id, true as claimed from c union all select id, false from u";

struct Request {
    id: Uuid,
    transition: Transition,
    reply: oneshot::Sender<bool>,
}

/// The handle handlers use; cloning it is cheap.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::UnboundedSender<Request>,
}

/// Statements and rows seen, for the report.
#[derive(Default)]
pub struct BatchStats {
    pub statements: AtomicUsize,
    pub claims: AtomicUsize,
    pub completions: AtomicUsize,
}

impl Batcher {
    /// Starts a batcher task for `worker`, at most `max_batch` requests per statement and
    /// `in_flight` statements at once.
    pub fn spawn(
        pool: PgPool,
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
            let mut batch = Vec::with_capacity(max_batch);
            // Wait for a free statement slot first, then take everything that queued meanwhile.
            while let Ok(permit) = permits.clone().acquire_owned().await {
                if rx.recv_many(&mut batch, max_batch).await == 0 {
                    break;
                }
                let batch = std::mem::replace(&mut batch, Vec::with_capacity(max_batch));
                let (pool, worker, stats) = (pool.clone(), worker.clone(), stats.clone());
                tokio::spawn(async move {
                    let (claim, complete): (Vec<&Request>, Vec<&Request>) =
                        batch.iter().partition(|r| r.transition == Transition::Claim);
                    let claim_ids: Vec<Uuid> = claim.iter().map(|r| r.id).collect();
                    let complete_ids: Vec<Uuid> = complete.iter().map(|r| r.id).collect();
                    let res = sqlx::query_as::<_, (Uuid, bool)>(APPLY)
                        .bind(&claim_ids)
                        .bind(&complete_ids)
                        .bind(&*worker)
                        .bind(lease.as_secs_f64())
                        .fetch_all(&pool)
                        .await;
                    drop(permit);
                    // On an error the replies are dropped: every waiter sees its request fail.
                    match res {
                        Ok(done) => {
                            stats.statements.fetch_add(1, Ordering::Relaxed);
                            stats.claims.fetch_add(claim_ids.len(), Ordering::Relaxed);
                            stats.completions.fetch_add(complete_ids.len(), Ordering::Relaxed);
                            let mut done: HashSet<(Uuid, bool)> = done.into_iter().collect();
                            for r in batch {
                                // A duplicate delivery in the same batch: only one waiter gets the job.
                                let applied = done.remove(&(r.id, r.transition == Transition::Claim));
                                let _ = r.reply.send(applied);
                            }
                        }
                        Err(e) => eprintln!("ledger batch failed: {e}"),
                    }
                });
            }
        });
        Self { tx }
    }

    /// Applies `transition` to `id`; `Ok(true)` once it has committed, `Ok(false)` when the
    /// ledger refused it (not queued / not held), `Err` when the statement failed.
    pub async fn apply(&self, id: Uuid, transition: Transition) -> anyhow::Result<bool> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request { id, transition, reply }).map_err(|_| anyhow::anyhow!("batcher stopped"))?;
        rx.await.map_err(|_| anyhow::anyhow!("ledger batch failed"))
    }
}
