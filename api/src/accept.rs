//! Group commit for instance creates: `POST /v1/vms` requests that arrive together are written by
//! one statement and pushed to Redis in one round trip.
//!
//! A create is small (an instance, a job, its first event) but its commit, its statement and its
//! tenant's quota counters are per request; under load those dominate. [`Acceptor`] queues
//! creates for one task, which takes everything queued since it last started a statement and
//! writes it with `instances::create_many` (at most [`IN_FLIGHT`] batches at once, so a busy
//! moment grows the batches instead of the queue of statements). Each request still waits for
//! its own rows to commit before it answers.
//!
//! A batch is all or nothing: when it fails for a reason of one create (over quota, a taken name,
//! a refused value), its creates are written again per tenant, and a tenant's that fail again one
//! by one, so every request gets the answer it would have got on its own while one tenant at its
//! limit does not hold back the others ([`write_creates`]). Requests with an `Idempotency-Key` do
//! not come here: their create commits with the stored answer, in a transaction of their own.

use std::sync::{Arc, OnceLock};

use futures::StreamExt;
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
    let results = write_creates(db, &creates).await;
    let written: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).map(|c| &c.enqueued).collect();
    if !written.is_empty() {
        dispatcher.push_created(db, &written).await;
    }
    for (result, done) in results.into_iter().zip(waiting) {
        // The request may have stopped waiting (client gone): its create stands regardless.
        let _ = done.send(result);
    }
}

/// The answers to `creates`, in order. One statement for all; when it fails because of some
/// create (over quota, a taken name, a refused value, a deadlock), one statement per tenant,
/// and for a tenant whose statement fails too, one per create, in order, so each gets the
/// answer it would have got alone while the other tenants' creates still go together. Any other
/// failure (the database unreachable, an outcome unknown) answers every create with it: running
/// them again could create twice.
async fn write_creates(db: &PgPool, creates: &[NewCreate]) -> Vec<Result<Created, DbError>> {
    if let [one] = creates {
        return vec![instances::create_with_job(db, one.tenant, &one.instance, &one.job).await];
    }
    let refused = match instances::create_many(db, creates).await {
        Ok(created) => return created.into_iter().map(Ok).collect(),
        Err(e) if refused_by_one_create(&e) => e,
        Err(e) => return creates.iter().map(|_| Err(same_failure(&e))).collect(),
    };
    tracing::debug!(creates = creates.len(), error = %refused, "batched create refused; writing per tenant");
    let mut by_tenant: Vec<(nimbus_domain::TenantId, Vec<usize>)> = Vec::new();
    for (i, c) in creates.iter().enumerate() {
        match by_tenant.iter_mut().find(|(t, _)| *t == c.tenant) {
            Some((_, indices)) => indices.push(i),
            None => by_tenant.push((c.tenant, vec![i])),
        }
    }
    let mut results: Vec<Option<Result<Created, DbError>>> = creates.iter().map(|_| None).collect();
    let groups = futures::stream::iter(by_tenant.into_iter().map(|(_, indices)| async move {
        let group: Vec<NewCreate> = indices.iter().map(|&i| creates[i].clone()).collect();
        (indices, write_tenant(db, &group).await)
    }))
    .buffer_unordered(IN_FLIGHT);
    futures::pin_mut!(groups);
    while let Some((indices, answers)) = groups.next().await {
        for (i, answer) in indices.into_iter().zip(answers) {
            results[i] = Some(answer);
        }
    }
    results.into_iter().map(|r| r.unwrap_or_else(|| Err(writer_stopped()))).collect()
}

/// One tenant's creates of a refused batch: together, or, when refused again, one by one in
/// order (they would queue on the tenant's counters anyway).
async fn write_tenant(db: &PgPool, group: &[NewCreate]) -> Vec<Result<Created, DbError>> {
    if let [one] = group {
        return vec![instances::create_with_job(db, one.tenant, &one.instance, &one.job).await];
    }
    match instances::create_many(db, group).await {
        Ok(created) => created.into_iter().map(Ok).collect(),
        Err(e) if refused_by_one_create(&e) => {
            let mut answers = Vec::with_capacity(group.len());
            for c in group {
                answers.push(instances::create_with_job(db, c.tenant, &c.instance, &c.job).await);
            }
            answers
        }
        Err(e) => group.iter().map(|_| Err(same_failure(&e))).collect(),
    }
}

/// Whether a batch failed because of one (or some) of its creates, not because of the database.
fn refused_by_one_create(e: &DbError) -> bool {
    match e {
        DbError::QuotaExceeded(_)
        | DbError::PaymentRequired { .. }
        | DbError::Conflict { .. }
        | DbError::Check { .. }
        | DbError::ForeignKey { .. }
        | DbError::NotFound => true,
        // A deadlock or serialization failure between concurrent batches: alone, it succeeds.
        DbError::Sqlx(e) => e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "40P01" || c == "40001"),
        _ => false,
    }
}

/// `e` again, for another create of the failed batch: "unavailable" stays unavailable (503).
fn same_failure(e: &DbError) -> DbError {
    if e.is_unavailable() {
        DbError::Sqlx(sqlx::Error::PoolTimedOut)
    } else {
        DbError::Sqlx(sqlx::Error::Protocol(format!("batched create failed: {e}")))
    }
}
