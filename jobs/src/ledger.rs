//! Group commit for a worker's ledger transitions: handlers that claim or complete jobs at the
//! same moment share one statement (`jobs::claim_and_complete_many`) and one commit.
//!
//! A handler hands its job id and the transition to the [`LedgerWriter`] and waits; the writer's
//! task takes every request queued since it last started a statement (claims and completions
//! together, at most `max_batch`, at most `in_flight` statements at once, so a busy moment grows
//! the batches rather than the queue of statements), runs it, and answers each request once the
//! statement has committed. A handler therefore goes on only after its own transition is
//! durable, while the database sees one statement per batch instead of one per transition.
//!
//! The semantics are those of `jobs::claim` and `jobs::complete`: a claim of a job someone else
//! holds, that is not due or that is final gets `None` (a duplicate delivery has no effect,
//! also when both copies land in one batch); a completion without the lease gets `false`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nimbus_db::PgPool;
use nimbus_db::jobs::{self, Job};
use nimbus_domain::JobId;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Why a transition could not be applied: the batch's statement failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("ledger batch failed: {message}")]
pub struct BatchFailed {
    /// The statement's error.
    pub message: String,
    /// Whether the database could not be reached (worth retrying later).
    pub unavailable: bool,
}

enum Transition {
    Claim(oneshot::Sender<Result<Option<Job>, BatchFailed>>),
    Complete(oneshot::Sender<Result<bool, BatchFailed>>),
}

struct Request {
    id: JobId,
    transition: Transition,
}

/// The handle handlers use; cheap to clone. The writer's task ends with the last handle.
#[derive(Clone)]
pub struct LedgerWriter {
    tx: mpsc::UnboundedSender<Request>,
    statements: Arc<AtomicU64>,
}

impl std::fmt::Debug for LedgerWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerWriter").finish_non_exhaustive()
    }
}

impl LedgerWriter {
    /// Starts a writer for `worker` (its name in leases), claiming for `lease`, with at most
    /// `max_batch` transitions per statement and `in_flight` statements at once. Needs a Tokio
    /// runtime.
    pub fn start(db: PgPool, worker: impl Into<Arc<str>>, lease: Duration, max_batch: usize, in_flight: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let statements = Arc::new(AtomicU64::new(0));
        let limits = (max_batch.max(1), in_flight.max(1));
        tokio::spawn(run(db, worker.into(), lease, limits, statements.clone(), rx));
        LedgerWriter { tx, statements }
    }

    /// Statements committed so far (each carried one batch).
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Claims job `id` (as `jobs::claim`), once the batch it joined has committed.
    pub async fn claim(&self, id: JobId) -> Result<Option<Job>, BatchFailed> {
        let (reply, wait) = oneshot::channel();
        self.send(Request { id, transition: Transition::Claim(reply) })?;
        wait.await.map_err(|_| stopped())?
    }

    /// Completes job `id` (as `jobs::complete` without new resources); `false` when this worker
    /// no longer holds it.
    pub async fn complete(&self, id: JobId) -> Result<bool, BatchFailed> {
        let (reply, wait) = oneshot::channel();
        self.send(Request { id, transition: Transition::Complete(reply) })?;
        wait.await.map_err(|_| stopped())?
    }

    fn send(&self, request: Request) -> Result<(), BatchFailed> {
        self.tx.send(request).map_err(|_| stopped())
    }
}

fn stopped() -> BatchFailed {
    BatchFailed { message: "the ledger writer stopped".into(), unavailable: true }
}

async fn run(
    db: PgPool,
    worker: Arc<str>,
    lease: Duration,
    (max_batch, in_flight): (usize, usize),
    statements: Arc<AtomicU64>,
    mut rx: mpsc::UnboundedReceiver<Request>,
) {
    let slots = Arc::new(Semaphore::new(in_flight));
    let mut batch = Vec::with_capacity(max_batch);
    // Wait for a free statement slot first, then take everything that queued meanwhile.
    while let Ok(slot) = slots.clone().acquire_owned().await {
        if rx.recv_many(&mut batch, max_batch).await == 0 {
            return;
        }
        let taken = std::mem::replace(&mut batch, Vec::with_capacity(max_batch));
        let (db, worker, statements) = (db.clone(), worker.clone(), statements.clone());
        tokio::spawn(async move {
            if apply(&db, &worker, lease, taken).await {
                statements.fetch_add(1, Ordering::Relaxed);
            }
            drop(slot);
        });
    }
}

/// Runs one batch and answers its requests; returns whether it committed.
async fn apply(db: &PgPool, worker: &str, lease: Duration, batch: Vec<Request>) -> bool {
    let claims: Vec<JobId> =
        batch.iter().filter(|r| matches!(r.transition, Transition::Claim(_))).map(|r| r.id).collect();
    let completions: Vec<JobId> =
        batch.iter().filter(|r| matches!(r.transition, Transition::Complete(_))).map(|r| r.id).collect();
    match jobs::claim_and_complete_many(db, &claims, &completions, worker, lease).await {
        Ok((claimed, completed)) => {
            let mut claimed: HashMap<JobId, Job> = claimed.into_iter().map(|j| (j.id, j)).collect();
            let mut completed: std::collections::HashSet<JobId> = completed.into_iter().collect();
            for r in batch {
                // Taking the answer out leaves nothing for a duplicate of the same id in this batch.
                let _ = match r.transition {
                    Transition::Claim(reply) => reply.send(Ok(claimed.remove(&r.id))).is_ok(),
                    Transition::Complete(reply) => reply.send(Ok(completed.remove(&r.id))).is_ok(),
                };
            }
            true
        }
        Err(e) => {
            let failed = BatchFailed { message: e.to_string(), unavailable: e.is_unavailable() };
            tracing::warn!(claims = claims.len(), completions = completions.len(), error = %e, "ledger batch failed");
            for r in batch {
                let _ = match r.transition {
                    Transition::Claim(reply) => reply.send(Err(failed.clone())).is_ok(),
                    Transition::Complete(reply) => reply.send(Err(failed.clone())).is_ok(),
                };
            }
            false
        }
    }
}
