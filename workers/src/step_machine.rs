//! What every job on the spine shares, so that each handler file reads as its steps: claim the
//! job in the ledger, keep its lease, resume at the first step not recorded as done, run the
//! steps (holding a node permit around those that load the node), record each, and settle the
//! run in one transaction: succeeded, retry scheduled, failed for good, or released on shutdown.
//!
//! ```text
//!  message {jobId} ─► claim (lease) ─► None: duplicate or not due → ack, no effect
//!                        │
//!                        ▼   Operation::load, then from Operation::next_step:
//!        step ─► step ─► … each: check stop → permit? → execute (idempotent) → record
//!                        │
//!                        ▼
//!  settle: Operation::succeeded | Operation::failed (final) | retry with backoff | release
//! ```
//!
//! Failures: transient Proxmox errors (classified by `PveError::class`) and an unreachable
//! database put the job back in the ledger with exponential backoff and jitter until its attempts
//! are spent (`ATTEMPTS_EXHAUSTED`); permanent ones fail it at once. The ledger keeps each
//! failure twice ([`StepError::failure`]): for the tenant, a code and a message of our own naming
//! the step in plain words; for operators (`error_detail`), Proxmox's own text and the failing
//! request, which can name storage hosts, addresses, device paths and nodes. On shutdown a job
//! stops at the next step boundary and goes back to the queue without spending its attempt.

use std::fmt::{Debug, Display};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{BoxDynError, Data};
use nimbus_db::jobs::{self, Job, Progress};
use nimbus_db::{DbError, PgPool};
use nimbus_domain::{ErrorCode, InstanceId, JobError, JobStatus};
use nimbus_jobs::Dispatch;
use nimbus_proxmox::PveError;
use serde_json::Value;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::env::Env;
use crate::node_caps::Permit;

/// A step of some job's step machine.
pub trait StepInfo: Copy + Eq + Debug + Send + Sync + 'static {
    /// How logs and operators' details name it (`clone template`).
    fn name(self) -> &'static str;
    /// The ledger's `step` once this step is done.
    fn done_name(self) -> &'static str;
    /// The job's progress once this step is done (below 100: completion says 100).
    fn progress(self) -> u8;
    /// Whether the step loads the Proxmox node (and so runs under a node permit).
    fn needs_node_permit(self) -> bool;
    /// What the step does, in plain words for tenants ("Proxmox could not …").
    fn plain_action(self) -> &'static str;

    /// The step as errors name it.
    fn label(self) -> StepLabel {
        StepLabel { name: self.name(), action: self.plain_action() }
    }
}

/// A step as an error names it: for operators (`name`) and for tenants (`action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepLabel {
    /// How logs and operators' details name it (`clone template`).
    pub name: &'static str,
    /// Plain words for tenants (`clone the template`).
    pub action: &'static str,
}

impl Display for StepLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// The first of `steps` not done after the ledger recorded `done` (`None` at the start, or a
/// name none of `steps` has: start at the beginning, so nothing is skipped by mistake). `None`
/// when every step is done.
pub fn resume_after<S: StepInfo>(steps: &[S], done: Option<&str>) -> Option<S> {
    let Some(done) = done else { return steps.first().copied() };
    match steps.iter().position(|s| s.done_name() == done) {
        Some(i) => steps.get(i + 1).copied(),
        None => steps.first().copied(),
    }
}

/// Why a step (or the whole run) stopped.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Proxmox refused or could not be reached.
    #[error("{step}: {error}")]
    Pve {
        /// The step.
        step: StepLabel,
        /// The client's error (its class decides retry or not); boxed, as it is large and
        /// rare next to the `Ok` values it travels with.
        error: Box<PveError>,
    },
    /// The database failed.
    #[error(transparent)]
    Db(DbError),
    /// A condition retrying cannot change.
    #[error("{message}{}", fmt_detail(.detail))]
    Permanent {
        /// Stable code.
        code: ErrorCode,
        /// For the tenant: plain words, no internals.
        message: String,
        /// For operators only (ids, nodes, the underlying error).
        detail: Option<String>,
    },
    /// A condition that may pass.
    #[error("{message}{}", fmt_detail(.detail))]
    Transient {
        /// Stable code.
        code: ErrorCode,
        /// For the tenant: plain words, no internals.
        message: String,
        /// For operators only (ids, nodes, the underlying error).
        detail: Option<String>,
    },
    /// The job's lease was lost: another worker may own it now, so touch nothing more.
    #[error("lease lost")]
    LeaseLost,
    /// The worker is shutting down; the job goes back to the queue.
    #[error("worker shutting down")]
    ShuttingDown,
    /// The job cannot start its step yet (another job holds what it needs, such as the node's
    /// one backup slot): it goes back to the queue, showing `reason`, and is tried again after
    /// `retry_in` without spending an attempt.
    #[error("waiting: {reason}")]
    Waiting {
        /// For the tenant, in plain words.
        reason: String,
        /// When to look again.
        retry_in: Duration,
    },
}

fn fmt_detail(detail: &Option<String>) -> String {
    detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
}

/// A failure as the ledger records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What the job's tenant sees.
    pub error: JobError,
    /// What only operators see (`error_detail`).
    pub detail: Option<String>,
}

impl From<DbError> for StepError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::LeaseLost(_) => StepError::LeaseLost,
            e => StepError::Db(e),
        }
    }
}

impl StepError {
    /// Wraps a Proxmox error of `step` (for `map_err`).
    pub fn pve<S: StepInfo>(step: S) -> impl FnOnce(PveError) -> StepError {
        move |error| StepError::Pve { step: step.label(), error: Box::new(error) }
    }

    /// A failure of our own that retrying cannot change.
    pub fn permanent(code: ErrorCode, message: impl Into<String>, detail: Option<String>) -> StepError {
        StepError::Permanent { code, message: message.into(), detail }
    }

    /// Whether another attempt may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            StepError::Pve { error, .. } => error.is_transient(),
            StepError::Db(e) => e.is_unavailable(),
            StepError::Transient { .. }
            | StepError::LeaseLost
            | StepError::ShuttingDown
            | StepError::Waiting { .. } => true,
            StepError::Permanent { .. } => false,
        }
    }

    /// The error the tenant sees: [`StepError::failure`] without the operators' detail.
    pub fn job_error(&self) -> JobError {
        self.failure().error
    }

    /// The failure as the ledger records it. The tenant's message is ours and names the step in
    /// plain words; Proxmox's text, the request's method and path (which name the node and the
    /// guest), per-parameter errors, task logs and database errors go to the detail only: they
    /// can hold storage hosts, addresses and device paths.
    pub fn failure(&self) -> Failure {
        let retryable = self.is_transient();
        let (code, message, detail) = match self {
            StepError::Pve { step, error } => {
                let action = step.action;
                let (code, message) = match &**error {
                    PveError::Timeout { .. } | PveError::TaskTimeout { .. } => {
                        (ErrorCode::Timeout, format!("Proxmox did not answer in time and could not {action}"))
                    }
                    e if e.is_transient() => {
                        (ErrorCode::ProxmoxUnavailable, format!("Proxmox was unavailable and could not {action}"))
                    }
                    _ => (ErrorCode::ProxmoxRejected, format!("Proxmox could not {action}")),
                };
                (code, message, Some(pve_detail(step, error)))
            }
            StepError::Db(e) if e.is_unavailable() => {
                (ErrorCode::ServiceUnavailable, "the database was unavailable".to_owned(), Some(e.to_string()))
            }
            StepError::Db(e) => (ErrorCode::Internal, "internal error".to_owned(), Some(e.to_string())),
            StepError::Permanent { code, message, detail } | StepError::Transient { code, message, detail } => {
                (*code, message.clone(), detail.clone())
            }
            StepError::LeaseLost => (ErrorCode::LeaseExpired, "the worker lost the job's lease".to_owned(), None),
            StepError::ShuttingDown => {
                (ErrorCode::ServiceUnavailable, "the worker shut down; the job resumes elsewhere".to_owned(), None)
            }
            StepError::Waiting { reason, .. } => (ErrorCode::ServiceUnavailable, reason.clone(), None),
        };
        Failure { error: JobError { code, message, retryable }, detail }
    }
}

/// The operators' account of a Proxmox failure: the step, the client's error (method, API path,
/// status, Proxmox's message, per-parameter errors; a task's UPID and exit status) and the end of
/// a failed task's log.
fn pve_detail(step: &StepLabel, error: &PveError) -> String {
    let mut detail = format!("{step}: {error}");
    if let PveError::TaskFailed { log_tail, .. } = error
        && !log_tail.is_empty()
    {
        detail.push_str("; task log: ");
        detail.push_str(&log_tail.join(" | "));
    }
    detail
}

/// What handling one message did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The job was not claimable (running elsewhere, final, or not due): nothing done.
    NotClaimed,
    /// Every step ran; the job succeeded.
    Succeeded,
    /// A transient failure; the ledger re-queues the job after this delay.
    RetryScheduled(Duration),
    /// The job failed for good with this error.
    Failed(JobError),
    /// Shutdown: the job went back to the queue at its current step.
    Released,
    /// The job went back to the queue to wait for something another job holds; due again
    /// after this delay.
    Waiting(Duration),
    /// The lease was lost mid-run; whoever holds the job now finishes it.
    LeaseLost,
}

/// A claimed job in progress: the context every step gets (the env, the ledger row, the lease).
pub struct Run {
    /// The worker's shared context.
    pub env: Env,
    /// The ledger row as last written (its `step` is the last step recorded).
    pub job: Job,
    lease_lost: CancellationToken,
}

impl Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run").field("job", &self.job.id).field("step", &self.job.step).finish()
    }
}

impl Run {
    /// A run of `job`, stopped when `lease_lost` fires or the worker shuts down.
    pub fn new(env: Env, job: Job, lease_lost: CancellationToken) -> Run {
        Run { env, job, lease_lost }
    }

    /// The database.
    pub fn db(&self) -> &PgPool {
        &self.env.db
    }

    /// The job's payload as `T`; an unreadable payload fails the job for good.
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, StepError> {
        serde_json::from_value(self.job.payload.clone()).map_err(|e| {
            StepError::permanent(
                ErrorCode::Internal,
                "the job's input could not be read",
                Some(format!("the payload is not a {} payload: {e}", self.job.kind)),
            )
        })
    }

    /// The instance the job acts on (its first `instance` resource).
    pub fn instance_id(&self) -> Result<InstanceId, StepError> {
        self.job.instance().ok_or_else(|| StepError::permanent(ErrorCode::Internal, "the job names no instance", None))
    }

    /// `Err` when the run must stop now: the lease was lost, or the worker is shutting down.
    pub fn check_stop(&self) -> Result<(), StepError> {
        if self.lease_lost.is_cancelled() {
            return Err(StepError::LeaseLost);
        }
        if self.env.shutdown.is_cancelled() {
            return Err(StepError::ShuttingDown);
        }
        Ok(())
    }

    /// Fires when [`Run::check_stop`] would stop the run, for waits inside a step. Cancel it
    /// when done waiting.
    pub fn stop_token(&self) -> CancellationToken {
        let token = CancellationToken::new();
        let (lost, shutdown, t) = (self.lease_lost.clone(), self.env.shutdown.clone(), token.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = lost.cancelled() => t.cancel(),
                _ = shutdown.cancelled() => t.cancel(),
                _ = t.cancelled() => {}
            }
        });
        token
    }

    /// A permit of `node`'s concurrency cap, waiting for one (or stopping).
    pub async fn node_permit(&self, node: &str) -> Result<Permit, StepError> {
        self.permit_of(&self.env.caps, node).await
    }

    /// A permit of `node` under `caps` (the node caps, or a narrower lane such as backups'),
    /// waiting for one (or stopping).
    pub async fn permit_of(&self, caps: &crate::node_caps::NodeCaps, node: &str) -> Result<Permit, StepError> {
        let holder = format!("{}:{}", self.env.worker_id, self.job.id);
        if let Ok(Some(p)) = caps.try_acquire(node, &holder).await {
            return Ok(p);
        }
        // The node is at its cap (or Redis did not answer: `acquire` says which).
        let waiting = std::time::Instant::now();
        let stop = self.stop_token();
        let acquired = caps.acquire(node, &holder, &stop).await;
        stop.cancel();
        if let Ok(Some(_)) = &acquired {
            self.env.metrics.node_cap_waited(node, waiting.elapsed());
        }
        match acquired {
            Ok(Some(p)) => Ok(p),
            Ok(None) => Err(self.check_stop().err().unwrap_or(StepError::ShuttingDown)),
            Err(e) => Err(StepError::Transient {
                code: ErrorCode::ServiceUnavailable,
                message: "the node's concurrency limit could not be checked".to_owned(),
                detail: Some(format!("node {node}: {e}")),
            }),
        }
    }

    /// Records `step` as done in the ledger (fenced by the lease), merging `patch` into the
    /// payload, with `note` as the event's message, and tells the job's followers.
    pub async fn record<S: StepInfo>(
        &mut self,
        step: S,
        patch: Option<Value>,
        note: Option<&str>,
    ) -> Result<(), StepError> {
        let progress =
            Progress { progress: step.progress(), step: Some(step.done_name()), message: note, payload_patch: patch };
        self.job = jobs::record_progress(&self.env.db, self.job.id, &self.env.worker_id, progress).await?;
        self.env.events.publish_job(self.job.id, self.job.instance()).await;
        Ok(())
    }
}

/// One job kind's step machine.
pub trait Operation: Sized + Send {
    /// Its steps.
    type Step: StepInfo;

    /// The kind's name in logs.
    const NAME: &'static str;

    /// Reads what the claimed job needs (payload, instance) into a ready machine.
    fn load(run: Run) -> impl Future<Output = Result<Self, StepError>> + Send;

    /// The run it owns.
    fn run(&self) -> &Run;

    /// [`Operation::run`], mutable.
    fn run_mut(&mut self) -> &mut Run;

    /// Every step, in order.
    fn steps(&self) -> &'static [Self::Step];

    /// The node whose cap the permit steps count against.
    fn node(&self) -> &str;

    /// The step to run next (`None`: all done); by default the one after the ledger's record.
    fn next_step(&self) -> Option<Self::Step> {
        resume_after(self.steps(), self.run().job.step.as_deref())
    }

    /// Does `step`'s work without recording it; safe to repeat.
    fn execute(&mut self, step: Self::Step) -> impl Future<Output = Result<(), StepError>> + Send;

    /// What `step` merges into the payload when it is recorded (state a retry must reuse).
    fn patch(&self, _step: Self::Step) -> Option<Value> {
        None
    }

    /// What the event of `step` tells the job's followers, beyond its name (e.g. that a change
    /// waits for the next restart).
    fn note(&self, _step: Self::Step) -> Option<String> {
        None
    }

    /// The domain writes of success, in the transaction that completes the job.
    fn succeeded(&self, tx: &mut PgConnection) -> impl Future<Output = Result<(), DbError>> + Send;

    /// The domain writes of a final failure, in the transaction that fails the job (a retry
    /// scheduled does not call it). By default none: the instance stays as it was, and the
    /// reconciler reports what Proxmox shows.
    fn failed(_job: &Job, _tx: &mut PgConnection) -> impl Future<Output = Result<(), DbError>> + Send {
        async { Ok(()) }
    }
}

/// The apalis handler of an operation's queue. Errors are returned only when the job could not
/// be claimed or settled because Postgres was unreachable: the queue then redelivers the message
/// later. Everything else is acknowledged, the ledger having recorded the result.
pub async fn handle<O: Operation>(message: Dispatch, env: Data<Arc<Env>>) -> Result<(), BoxDynError> {
    let job_id = message.job_id;
    match run::<O>(&env, job_id).await {
        Ok(outcome) => {
            tracing::debug!(job.id = %job_id, job.kind = O::NAME, ?outcome, "message handled");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(job.id = %job_id, job.kind = O::NAME, error = %e, "could not reach the ledger; redelivering");
            Err(Box::new(e))
        }
    }
}

/// Claims job `job_id` and runs it to an outcome, keeping the lease alive meanwhile.
pub async fn run<O: Operation>(env: &Env, job_id: nimbus_domain::JobId) -> Result<Outcome, DbError> {
    // Claims of jobs delivered together share a statement (`nimbus_jobs::ledger`).
    let claimed = env.ledger.claim(job_id).await.map_err(|e| {
        // Keep "the database could not be reached" recognisable (`DbError::is_unavailable`).
        DbError::Sqlx(if e.unavailable { sqlx::Error::PoolTimedOut } else { sqlx::Error::Protocol(e.to_string()) })
    })?;
    let Some(job) = claimed else {
        return Ok(Outcome::NotClaimed);
    };
    // Every line logged while the job runs carries its id, its kind and the id of the request that
    // made it (LOG_FORMAT=json: `span`), and the job's trace continues that request's.
    let span = tracing::info_span!("job", job.id = %job_id, job.kind = O::NAME, request.id = job.request_id.as_deref());
    nimbus_telemetry::traces::continue_trace(&span, job.traceparent.as_deref());
    run_claimed::<O>(env, job).instrument(span).await
}

/// Runs claimed `job` to an outcome, keeping the lease alive meanwhile.
async fn run_claimed<O: Operation>(env: &Env, job: Job) -> Result<Outcome, DbError> {
    let job_id = job.id;
    tracing::info!(job.id = %job_id, job.kind = O::NAME, job.attempt = job.attempts, job.step = job.step.as_deref().unwrap_or("-"), "claimed");
    env.events.publish_job(job_id, job.instance()).await;
    let started = std::time::Instant::now();
    let lease_lost = CancellationToken::new();
    let keeper = tokio::spawn(keep_lease(env.clone(), job_id, lease_lost.clone()));
    let result = match O::load(Run::new(env.clone(), job.clone(), lease_lost)).await {
        Ok(mut op) => drive(&mut op).await.map(|()| op),
        Err(e) => Err(e),
    };
    keeper.abort();
    let outcome = settle(env, &job, result).await;
    if let Ok(o) = &outcome {
        env.metrics.job_ended(O::NAME, o, started.elapsed());
    }
    env.events.publish_job(job_id, job.instance()).await;
    outcome
}

/// Runs the remaining steps, recording each, holding a node permit around those that load the
/// node.
pub async fn drive<O: Operation>(op: &mut O) -> Result<(), StepError> {
    let mut permit: Option<Permit> = None;
    let result = async {
        let Some(first) = op.next_step() else { return Ok(()) };
        let steps = op.steps();
        let start = steps.iter().position(|s| *s == first).unwrap_or(0);
        for step in steps[start..].iter().copied() {
            op.run().check_stop()?;
            if step.needs_node_permit() && permit.is_none() {
                permit = Some(op.run().node_permit(op.node()).await?);
            } else if !step.needs_node_permit()
                && let Some(p) = permit.take()
            {
                p.release().await;
            }
            op.execute(step).await?;
            // The last step is recorded by the completion that follows at once (a crash in
            // between repeats it, which its idempotence allows, rather than trusting a bare
            // record), unless it has something to say.
            let (patch, note) = (op.patch(step), op.note(step));
            let last = steps.last() == Some(&step);
            if !last || patch.is_some() || note.is_some() {
                op.run_mut().record(step, patch, note.as_deref()).await?;
            }
        }
        Ok(())
    }
    .await;
    if let Some(p) = permit {
        p.release().await;
    }
    result
}

/// Renews the job's lease every third of its length; fires `lost` when it can no longer.
async fn keep_lease(env: Env, job: nimbus_domain::JobId, lost: CancellationToken) {
    let every = env.settings.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        match jobs::extend_lease(&env.db, job, &env.worker_id, env.settings.lease).await {
            Ok(_) => {}
            Err(DbError::LeaseLost(_)) => {
                tracing::warn!(job.id = %job, "lease lost; stopping");
                lost.cancel();
                return;
            }
            // The lease may still be valid; the next tick tries again.
            Err(e) => tracing::warn!(job.id = %job, error = %e, "lease renewal failed"),
        }
    }
}

/// Records the run's end in the ledger (and the domain rows), in one transaction.
async fn settle<O: Operation>(env: &Env, job: &Job, result: Result<O, StepError>) -> Result<Outcome, DbError> {
    let worker = env.worker_id.as_str();
    match result {
        Ok(op) => {
            let mut tx = env.db.begin().await?;
            op.succeeded(&mut tx).await?;
            match jobs::complete(&mut *tx, job.id, worker, None).await {
                Ok(_) => {}
                Err(DbError::LeaseLost(_)) => return Ok(Outcome::LeaseLost),
                Err(e) => return Err(e),
            }
            tx.commit().await?;
            tracing::info!(job.id = %job.id, job.kind = O::NAME, "succeeded");
            Ok(Outcome::Succeeded)
        }
        Err(StepError::LeaseLost) => Ok(Outcome::LeaseLost),
        Err(StepError::ShuttingDown) => {
            // Not the job's fault: back to the queue without spending the attempt; whoever takes
            // it next resumes at the step recorded.
            match jobs::release(&env.db, job.id, worker, "released by a worker shutting down").await {
                Ok(_) => Ok(Outcome::Released),
                Err(DbError::LeaseLost(_)) => Ok(Outcome::LeaseLost),
                Err(e) => Err(e),
            }
        }
        Err(StepError::Waiting { reason, retry_in }) => {
            // Nothing failed: the job waits its turn in the queue, saying for what.
            match jobs::wait(&env.db, job.id, worker, &reason, retry_in).await {
                Ok(_) => {
                    env.events.publish_job(job.id, job.instance()).await;
                    Ok(Outcome::Waiting(retry_in))
                }
                Err(DbError::LeaseLost(_)) => Ok(Outcome::LeaseLost),
                Err(e) => Err(e),
            }
        }
        Err(e) => {
            let last_attempt = job.attempts >= job.max_attempts;
            let Failure { mut error, detail } = e.failure();
            if error.retryable && last_attempt {
                error = JobError {
                    code: ErrorCode::AttemptsExhausted,
                    message: format!("gave up after {} attempts; last error: {}", job.attempts, error.message),
                    retryable: true,
                };
            }
            let retry_in = env.settings.retry.next_retry_in(job.attempts.max(1) as u32);
            // The request id is what a tenant quotes; the log holds what they were not shown.
            let rid = job.request_id.as_deref().unwrap_or("-");
            if let StepError::Db(db) = &e {
                tracing::error!(job.id = %job.id, job.kind = O::NAME, request.id = rid, error = %db, "step failed on the database");
            } else {
                tracing::warn!(job.id = %job.id, job.kind = O::NAME, request.id = rid, code = error.code.as_str(), error = %e, "attempt failed");
            }
            let mut tx = env.db.begin().await?;
            let failed =
                match jobs::fail_with_detail(&mut *tx, job.id, worker, &error, detail.as_deref(), retry_in).await {
                    Ok(j) => j,
                    Err(DbError::LeaseLost(_)) => return Ok(Outcome::LeaseLost),
                    Err(e) => return Err(e),
                };
            if failed.status == JobStatus::Failed {
                O::failed(&failed, &mut tx).await?;
            }
            tx.commit().await?;
            Ok(match failed.status {
                JobStatus::Failed => Outcome::Failed(error),
                _ => Outcome::RetryScheduled(retry_in),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_domain::JobId;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum S {
        A,
        B,
    }
    impl StepInfo for S {
        fn name(self) -> &'static str {
            "s"
        }
        fn done_name(self) -> &'static str {
            match self {
                S::A => "a_done",
                S::B => "b_done",
            }
        }
        fn progress(self) -> u8 {
            50
        }
        fn needs_node_permit(self) -> bool {
            false
        }
        fn plain_action(self) -> &'static str {
            "do it"
        }
    }

    #[test]
    fn resumes_after_the_recorded_step() {
        let steps = [S::A, S::B];
        assert_eq!(resume_after(&steps, None), Some(S::A));
        assert_eq!(resume_after(&steps, Some("a_done")), Some(S::B));
        assert_eq!(resume_after(&steps, Some("b_done")), None);
        assert_eq!(resume_after(&steps, Some("unknown")), Some(S::A));
    }

    #[test]
    fn errors_carry_codes_and_retryability() {
        let e = StepError::permanent(ErrorCode::ProxmoxRejected, "no", None);
        assert_eq!(
            e.job_error(),
            JobError { code: ErrorCode::ProxmoxRejected, message: "no".into(), retryable: false }
        );
        assert!(StepError::ShuttingDown.is_transient());
        assert_eq!(StepError::from(DbError::LeaseLost(JobId::from_uuid(uuid::Uuid::nil()))).to_string(), "lease lost");
        let e = StepError::pve(S::B)(PveError::NotProxmox {
            method: "GET".into(),
            path: "/x".into(),
            status: 404,
            body: "nginx".into(),
        });
        assert_eq!(e.job_error().message, "Proxmox could not do it");
    }
}
