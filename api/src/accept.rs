//! Group commit for instance creates: `POST /v1/vms` requests that arrive together are written by
//! one statement and pushed to Redis in one round trip.
//!
//! A create is small (an instance, a job, its first event) but its commit, its statement and its
//! tenant's quota counters are per request; under load those dominate. [`Acceptor`] queues
//! creates for one task, which takes everything queued since it last started a statement and
//! writes it with `instances::create_many` (at most [`IN_FLIGHT`] statements at once, so a busy
//! moment grows the batches instead of the queue of statements). Each request still waits for
//! its own rows to commit before it answers.
//!
//! A batch is all or nothing: when it fails for a reason of one create (over quota, a taken name,
//! a refused value), each of its creates is run again alone, so every request gets the answer it
//! would have got on its own. Requests with an `Idempotency-Key` do not come here: their create
//! commits with the stored answer, in a transaction of their own.

use std::sync::{Arc, OnceLock};

use futures::future::join_all;
use nimbus_db::instances::{self, Created, NewCreate};
use nimbus_db::{DbError, PgPool};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::dispatch::Dispatcher;

/// The most creates one statement takes.
pub const MAX_BATCH: usize = 256;
/// Statements running at once.
pub const IN_FLIGHT: usize = 2;
/// Creates waiting for the writer before requests wait to queue theirs.
const QUEUE: usize = 4_096;

/// One create and the request waiting for it.
struct Pending {
    create: NewCreate,
    done: oneshot::Sender<Result<Created, DbError>>,
}

/// The batching writer: cheap to share, started on first use (it needs a Tokio runtime). Its
/// task ends when the acceptor is dropped.
pub struct Acceptor {
    db: PgPool,
    dispatcher: Arc<Dispatcher>,
    queue: OnceLock<mpsc::Sender<Pending>>,
}

impl Acceptor {
    /// Creates into `db`, pushed by `dispatcher`.
    pub fn new(db: PgPool, dispatcher: Arc<Dispatcher>) -> Self {
        Acceptor { db, dispatcher, queue: OnceLock::new() }
    }

    fn queue(&self) -> &mpsc::Sender<Pending> {
        self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run(self.db.clone(), self.dispatcher.clone(), rx));
            tx
        })
    }

    /// Writes `create` (with the creates queued alongside it), pushes its job, and returns what
    /// was written. The errors are those of `instances::create_with_job`.
    ///
    /// Once queued, the create is written and pushed even if the caller stops waiting.
    pub async fn create(&self, create: NewCreate) -> Result<Created, DbError> {
        let (done, wait) = oneshot::channel();
        let pending = Pending { create, done };
        let pending = match self.queue().send(pending).await {
            Ok(()) => return wait.await.unwrap_or_else(|_| Err(writer_stopped())),
            Err(mpsc::error::SendError(pending)) => pending,
        };
        // The writer is gone (the runtime is shutting down): write this one here.
        let created =
            instances::create_with_job(&self.db, pending.create.tenant, &pending.create.instance, &pending.create.job)
                .await?;
        self.dispatcher.push_created(&self.db, &[&created.enqueued]).await;
        Ok(created)
    }
}

fn writer_stopped() -> DbError {
    DbError::Sqlx(sqlx::Error::WorkerCrashed)
}

/// The writer task: whatever queued while the previous statements ran, one statement each.
async fn run(db: PgPool, dispatcher: Arc<Dispatcher>, mut rx: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // Wait for a free slot first: while every slot is busy, creates pile up into one batch.
        let Ok(slot) = in_flight.clone().acquire_owned().await else { return };
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let taken = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        let (db, dispatcher) = (db.clone(), dispatcher.clone());
        tokio::spawn(async move {
            write(&db, &dispatcher, taken).await;
            drop(slot);
        });
    }
}

/// Writes one batch, pushes its jobs, and answers each waiting request.
async fn write(db: &PgPool, dispatcher: &Dispatcher, batch: Vec<Pending>) {
    let (creates, waiting): (Vec<NewCreate>, Vec<_>) = batch.into_iter().map(|p| (p.create, p.done)).unzip();
    let results = match creates.as_slice() {
        [one] => vec![instances::create_with_job(db, one.tenant, &one.instance, &one.job).await],
        _ => match instances::create_many(db, &creates).await {
            Ok(created) => created.into_iter().map(Ok).collect(),
            Err(e) => {
                tracing::debug!(creates = creates.len(), error = %e, "batched create refused; writing each alone");
                join_all(creates.iter().map(|c| instances::create_with_job(db, c.tenant, &c.instance, &c.job))).await
            }
        },
    };
    let written: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).map(|c| &c.enqueued).collect();
    if !written.is_empty() {
        dispatcher.push_created(db, &written).await;
    }
    for (result, done) in results.into_iter().zip(waiting) {
        // The request may have stopped waiting (client gone): its create stands regardless.
        let _ = done.send(result);
    }
}
