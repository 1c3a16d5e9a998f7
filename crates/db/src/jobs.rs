//! The job ledger (DESIGN §2-§3): the durable record of every job. Redis only carries job ids;
//! this module owns the state machine
//!
//! ```text
//!   enqueue ──► queued ──claim──► running ──complete──► succeeded
//!                 ▲  │               │
//!                 │  └─cancel──► cancelled
//!                 │                  ├──fail (retryable, attempts left)──► queued (run_after = now + backoff)
//!                 │                  ├──fail (permanent or last attempt)──► failed ──retry (admin)──► queued
//!                 └──────────────────┴──lease expired (attempts left)──► queued, else failed (LEASE_EXPIRED)
//! ```
//!
//! Every transition writes a `job_events` row (the history behind SSE) in the same statement,
//! and every transition *to* `queued` except a create's writes an `outbox` row, so each dispatch
//! owed to Redis is durable. A create's dispatch is pushed by its caller right after commit (an
//! outbox row is owed only if that push fails, `outbox::owe`), and one lost with its process is
//! found by the relay's sweep (`outbox::owe_undelivered`). Running jobs are fenced by their lease: progress and completion only apply while
//! `locked_by` is the calling worker and the job is running.

use std::borrow::Cow;

use std::time::Duration;

use chrono::{DateTime, Utc};
use nimbus_domain::{
    ErrorCode, InstanceId, JobError, JobHandle, JobId, JobKind, JobLinks, JobStatus, PageRequest, ResourceRef, TenantId,
};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgExecutor, Row};

use crate::{DbError, Result, rows};

/// A ledger row.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// Id (UUID v7).
    pub id: JobId,
    /// Owner; `None` for system jobs.
    pub tenant_id: Option<TenantId>,
    /// What it does.
    pub kind: JobKind,
    /// The queue it is dispatched on.
    pub queue: String,
    /// Where it is.
    pub status: JobStatus,
    /// 0-100.
    pub progress: i16,
    /// The step reached.
    pub step: Option<String>,
    /// The job's input, plus whatever state its step machine persisted.
    pub payload: Value,
    /// What it acts on.
    pub resources: Vec<ResourceRef>,
    /// The last error, as its tenant sees it.
    pub error: Option<JobError>,
    /// What operators see beside [`Job::error`]: Proxmox's own text, the failing request, the
    /// node. Never shown to tenants (it can name hosts, addresses and paths).
    pub error_detail: Option<String>,
    /// Attempts started.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Not to be claimed before.
    pub run_after: DateTime<Utc>,
    /// The worker holding the lease.
    pub locked_by: Option<String>,
    /// Lease end.
    pub locked_until: Option<DateTime<Utc>>,
    /// The `X-Request-ID` of the request that started it.
    pub request_id: Option<String>,
    /// That request's W3C `traceparent`, which the worker's trace continues.
    pub traceparent: Option<String>,
    /// The `Idempotency-Key` of that request.
    pub idempotency_key: Option<String>,
    /// Accepted at.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// First attempt started at.
    pub started_at: Option<DateTime<Utc>>,
    /// Final status reached at.
    pub finished_at: Option<DateTime<Utc>>,
    /// What it waits for, when a worker put it back in the queue to wait ([`wait`]).
    pub waiting_for: Option<String>,
}

impl<'r> FromRow<'r, PgRow> for Job {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Job::decode(row, "")
    }
}

/// The job's columns of table alias `$t`, each renamed with `$p` in front (`j.id as job_id`), for
/// statements that return a job beside another row's columns; [`Job::decode`] reads them back.
#[rustfmt::skip]
macro_rules! job_columns_as {
    ($t:literal, $p:literal) => {
        concat!(
            $t, ".id as ", $p, "id, ", $t, ".tenant_id as ", $p, "tenant_id, ", $t, ".kind as ", $p, "kind, ",
            $t, ".queue as ", $p, "queue, ", $t, ".status as ", $p, "status, ", $t, ".progress as ", $p, "progress, ",
            $t, ".step as ", $p, "step, ", $t, ".payload as ", $p, "payload, ", $t, ".resources as ", $p, "resources, ",
            $t, ".error_code as ", $p, "error_code, ", $t, ".error_message as ", $p, "error_message, ",
            $t, ".error_retryable as ", $p, "error_retryable, ", $t, ".error_detail as ", $p, "error_detail, ",
            $t, ".attempts as ", $p, "attempts, ",
            $t, ".max_attempts as ", $p, "max_attempts, ", $t, ".run_after as ", $p, "run_after, ",
            $t, ".locked_by as ", $p, "locked_by, ", $t, ".locked_until as ", $p, "locked_until, ",
            $t, ".request_id as ", $p, "request_id, ", $t, ".idempotency_key as ", $p, "idempotency_key, ",
            $t, ".created_at as ", $p, "created_at, ", $t, ".updated_at as ", $p, "updated_at, ",
            $t, ".started_at as ", $p, "started_at, ", $t, ".finished_at as ", $p, "finished_at, ",
            $t, ".waiting_for as ", $p, "waiting_for, ", $t, ".traceparent as ", $p, "traceparent"
        )
    };
}
pub(crate) use job_columns_as;

impl Job {
    /// The instance it acts on: its first resource, when that is an instance (what the busy
    /// index reads, `jobs.instance_id`).
    pub fn instance(&self) -> Option<InstanceId> {
        self.resources.first().filter(|r| r.kind == "instance").and_then(|r| r.id.parse().ok())
    }

    /// The job in `row`, whose column names start with `prefix` (empty for a plain jobs row).
    pub(crate) fn decode(row: &PgRow, prefix: &str) -> Result<Self, sqlx::Error> {
        let col = |name: &'static str| -> Cow<'static, str> {
            if prefix.is_empty() { Cow::Borrowed(name) } else { Cow::Owned(format!("{prefix}{name}")) }
        };
        let error_code: Option<String> = row.try_get(&*col("error_code"))?;
        let error = match error_code {
            Some(code) => Some(JobError {
                // A code unknown to this build (written by a newer one) still shows as a failure.
                code: code.parse().unwrap_or(ErrorCode::Internal),
                message: row.try_get::<Option<String>, _>(&*col("error_message"))?.unwrap_or_default(),
                retryable: row.try_get::<Option<bool>, _>(&*col("error_retryable"))?.unwrap_or(false),
            }),
            None => None,
        };
        let resources: Value = row.try_get(&*col("resources"))?;
        Ok(Job {
            id: rows::id(row, &col("id"))?,
            tenant_id: rows::opt_id(row, &col("tenant_id"))?,
            kind: rows::enumeration(row, &col("kind"))?,
            queue: row.try_get(&*col("queue"))?,
            status: rows::enumeration(row, &col("status"))?,
            progress: row.try_get(&*col("progress"))?,
            step: row.try_get(&*col("step"))?,
            payload: row.try_get(&*col("payload"))?,
            resources: serde_json::from_value(resources)
                .map_err(|e| sqlx::Error::ColumnDecode { index: "resources".into(), source: Box::new(e) })?,
            error,
            error_detail: row.try_get(&*col("error_detail"))?,
            attempts: row.try_get(&*col("attempts"))?,
            max_attempts: row.try_get(&*col("max_attempts"))?,
            run_after: row.try_get(&*col("run_after"))?,
            locked_by: row.try_get(&*col("locked_by"))?,
            locked_until: row.try_get(&*col("locked_until"))?,
            request_id: row.try_get(&*col("request_id"))?,
            traceparent: row.try_get(&*col("traceparent"))?,
            idempotency_key: row.try_get(&*col("idempotency_key"))?,
            created_at: row.try_get(&*col("created_at"))?,
            updated_at: row.try_get(&*col("updated_at"))?,
            started_at: row.try_get(&*col("started_at"))?,
            finished_at: row.try_get(&*col("finished_at"))?,
            waiting_for: row.try_get(&*col("waiting_for"))?,
        })
    }

    /// The public job handle (DESIGN §2): never [`Job::error_detail`].
    pub fn handle(&self) -> JobHandle {
        JobHandle {
            id: self.id,
            kind: self.kind,
            status: self.status,
            progress: self.progress.clamp(0, 100) as u8,
            step: self.step.clone(),
            resources: self.resources.clone(),
            error: self.error.clone(),
            attempts: self.attempts.max(0) as u32,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            request_id: self.request_id.clone(),
            waiting_for: self.waiting_for.clone().filter(|_| self.status == JobStatus::Queued),
            links: JobLinks::for_job(self.id),
        }
    }
}

/// A job to enqueue.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// What it does.
    pub kind: JobKind,
    /// The queue it is dispatched on.
    pub queue: String,
    /// Its input.
    pub payload: Value,
    /// What it acts on.
    pub resources: Vec<ResourceRef>,
    /// Attempts allowed (≥ 1).
    pub max_attempts: i32,
    /// Not before (default: now).
    pub run_after: Option<DateTime<Utc>>,
    /// The request's `X-Request-ID`.
    pub request_id: Option<String>,
    /// The request's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// The request's trace context (W3C `traceparent`), when traces are exported.
    pub traceparent: Option<String>,
}

impl NewJob {
    /// Attempts allowed when not set.
    pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;

    /// A job with the defaults: no resources, 5 attempts, due now.
    pub fn new(kind: JobKind, queue: impl Into<String>, payload: Value) -> Self {
        NewJob {
            kind,
            queue: queue.into(),
            payload,
            resources: Vec::new(),
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            run_after: None,
            request_id: None,
            idempotency_key: None,
            traceparent: None,
        }
    }
}

/// One entry of a job's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobEvent {
    /// Monotonic id, across all jobs.
    pub id: i64,
    /// Position in its job's history, from 1 (the SSE event id: per job, so a stream tells
    /// nothing of other jobs' activity); 0 where a query does not number events.
    pub seq: i64,
    /// The job.
    pub job_id: JobId,
    /// Status after the change.
    pub status: JobStatus,
    /// Progress after the change.
    pub progress: i16,
    /// Step after the change.
    pub step: Option<String>,
    /// Free text (the error message on failure).
    pub message: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl<'r> FromRow<'r, PgRow> for JobEvent {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(JobEvent {
            id: row.try_get("id")?,
            seq: row.try_get::<Option<i64>, _>("seq").ok().flatten().unwrap_or(0),
            job_id: rows::id(row, "job_id")?,
            status: rows::enumeration(row, "status")?,
            progress: row.try_get("progress")?,
            step: row.try_get("step")?,
            message: row.try_get("message")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// A job that was enqueued, with what its dispatch needs.
#[derive(Clone, Debug)]
pub struct Enqueued {
    /// The ledger row.
    pub job: Job,
    /// The outbox row that owes the dispatch, if one was written: push `dispatch`, then
    /// `outbox::mark_pushed`. Without one, a failed push owes a row (`outbox::owe`).
    pub outbox_id: Option<i64>,
    /// The message for Redis (`{"jobId", "kind", "queue"}`).
    pub dispatch: Value,
}

/// What lease recovery did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Put back in the queue (attempts left).
    pub requeued: Vec<JobId>,
    /// Failed with `LEASE_EXPIRED` (it was their last attempt).
    pub failed: Vec<JobId>,
}

// The statements below share these fragments. They are static strings (sqlx 0.9 wants SQL it
// can trust), hence `concat!`.
macro_rules! dispatch_json {
    ($t:literal) => {
        concat!("jsonb_build_object('jobId', ", $t, ".id, 'kind', ", $t, ".kind, 'queue', ", $t, ".queue)")
    };
}
pub(crate) use dispatch_json;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Inserts a queued job, its first event and its outbox row in one statement. Call it inside the
/// transaction that creates the job's domain rows, so they commit together.
pub async fn enqueue(ex: impl PgExecutor<'_>, tenant: Option<TenantId>, new: &NewJob) -> Result<Enqueued> {
    let resources =
        serde_json::to_value(&new.resources).map_err(|e| DbError::Sqlx(sqlx::Error::Encode(Box::new(e))))?;
    let row = sqlx::query(concat!(
        "with j as (insert into jobs (id, tenant_id, kind, queue, payload, resources, max_attempts, run_after, \
         request_id, idempotency_key, traceparent) \
         values ($1, $2, $3, $4, $5, $6, $7, coalesce($8, now()), $9, $10, $11) returning *), \
         e as (insert into job_events (job_id, status, progress, step) select id, status, progress, step from j), \
         o as (insert into outbox (job_id, queue, payload, available_at) select id, queue, ",
        dispatch_json!("j"),
        ", run_after from j returning id, payload) \
         select j.*, o.id as outbox_id, o.payload as outbox_payload from j, o"
    ))
    .bind(JobId::new().as_uuid())
    .bind(tenant.map(|t| t.as_uuid()))
    .bind(new.kind.as_str())
    .bind(&new.queue)
    .bind(&new.payload)
    .bind(resources)
    .bind(new.max_attempts)
    .bind(new.run_after)
    .bind(&new.request_id)
    .bind(&new.idempotency_key)
    .bind(&new.traceparent)
    .fetch_one(ex)
    .await?;
    Ok(Enqueued {
        job: Job::from_row(&row)?,
        outbox_id: Some(row.try_get("outbox_id")?),
        dispatch: row.try_get("outbox_payload")?,
    })
}

/// Claims job `id` for `worker` for `lease` if it is queued and due (what a worker does with an
/// id it received from Redis). `None` when someone else has it, it is not due, or it is final:
/// a duplicate delivery then has no effect.
pub async fn claim(ex: impl PgExecutor<'_>, id: JobId, worker: &str, lease: Duration) -> Result<Option<Job>> {
    let job = sqlx::query_as(
        "with c as (update jobs set status = 'running', attempts = attempts + 1, locked_by = $2, \
         locked_until = now() + make_interval(secs => $3), started_at = coalesce(started_at, now()) \
         where id = $1 and status = 'queued' and run_after <= now() returning *), \
         e as (insert into job_events (job_id, status, progress, step) select id, status, progress, step from c) \
         select * from c",
    )
    .bind(id.as_uuid())
    .bind(worker)
    .bind(secs(lease))
    .fetch_optional(ex)
    .await?;
    Ok(job)
}

/// [`claim`] for many jobs and [`complete`] (without new resources) for many others, in ONE
/// statement: what a group-committing worker runs for the transitions its handlers wait on.
/// Returns the jobs claimed and the ids of those completed; a job not claimable (someone else
/// has it, not due, final) or not completable (lease lost) is simply absent.
///
/// The ids are joined in (`unnest`) rather than matched with `= any(..)`: with an array the
/// planner may AND the primary key with a scan of the whole `status = 'queued'` (or `'running'`)
/// partial index, whose size is the backlog.
pub async fn claim_and_complete_many(
    ex: impl PgExecutor<'_>,
    claims: &[JobId],
    completions: &[JobId],
    worker: &str,
    lease: Duration,
) -> Result<(Vec<Job>, Vec<JobId>)> {
    // Sorted, so that two batches sharing jobs (duplicate deliveries) lock them in one order.
    let sorted = |ids: &[JobId]| {
        let mut ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let (claims, completions) = (sorted(claims), sorted(completions));
    let rows = sqlx::query(
        "with c as (update jobs j set status = 'running', attempts = attempts + 1, locked_by = $3, \
         locked_until = now() + make_interval(secs => $4), started_at = coalesce(started_at, now()) \
         from unnest($1::uuid[]) as w(id) where j.id = w.id and j.status = 'queued' and j.run_after <= now() \
         returning j.*), \
         u as (update jobs j set status = 'succeeded', progress = 100, finished_at = now(), \
         locked_by = null, locked_until = null, error_code = null, error_message = null, error_retryable = null, \
         error_detail = null \
         from unnest($2::uuid[]) as w(id) where j.id = w.id and j.status = 'running' and j.locked_by = $3 \
         returning j.id, j.status, j.progress, j.step), \
         e as (insert into job_events (job_id, status, progress, step) \
         select id, status, progress, step from c union all select id, status, progress, step from u) \
         select x.completed, c.* from (select coalesce(array_agg(u.id), '{}') as completed from u) x \
         left join c on true",
    )
    .bind(&claims)
    .bind(&completions)
    .bind(worker)
    .bind(secs(lease))
    .fetch_all(ex)
    .await?;
    // One row per claimed job (or one row of nulls when none was), each carrying the completed ids.
    let mut claimed = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.try_get::<Option<uuid::Uuid>, _>("id")?.is_some() {
            claimed.push(Job::from_row(row)?);
        }
    }
    let completed: Vec<uuid::Uuid> = match rows.first() {
        Some(row) => row.try_get("completed")?,
        None => Vec::new(),
    };
    Ok((claimed, completed.into_iter().map(JobId::from_uuid).collect()))
}

/// Claims up to `limit` due jobs of `queue`, oldest first, skipping rows other claimers hold
/// locked (`FOR UPDATE SKIP LOCKED`): concurrent claimers never get the same job and never wait
/// for each other.
pub async fn claim_next(
    ex: impl PgExecutor<'_>,
    queue: &str,
    worker: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<Job>> {
    let jobs = sqlx::query_as(
        "with next as (select id from jobs where queue = $1 and status = 'queued' and run_after <= now() \
         order by run_after, id limit $4 for update skip locked), \
         c as (update jobs j set status = 'running', attempts = j.attempts + 1, locked_by = $2, \
         locked_until = now() + make_interval(secs => $3), started_at = coalesce(j.started_at, now()) \
         from next where j.id = next.id returning j.*), \
         e as (insert into job_events (job_id, status, progress, step) select id, status, progress, step from c) \
         select * from c order by run_after, id",
    )
    .bind(queue)
    .bind(worker)
    .bind(secs(lease))
    .bind(limit)
    .fetch_all(ex)
    .await?;
    Ok(jobs)
}

/// Extends the lease of a running job `worker` holds; `LeaseLost` when it no longer does.
pub async fn extend_lease(ex: impl PgExecutor<'_>, id: JobId, worker: &str, lease: Duration) -> Result<DateTime<Utc>> {
    let until: Option<DateTime<Utc>> = sqlx::query_scalar(
        "update jobs set locked_until = now() + make_interval(secs => $3) \
         where id = $1 and status = 'running' and locked_by = $2 returning locked_until",
    )
    .bind(id.as_uuid())
    .bind(worker)
    .bind(secs(lease))
    .fetch_optional(ex)
    .await?;
    until.ok_or(DbError::LeaseLost(id))
}

/// A progress report from a running job.
#[derive(Clone, Debug, Default)]
pub struct Progress<'a> {
    /// 0-100.
    pub progress: u8,
    /// The step now reached (persisted so a retry resumes there).
    pub step: Option<&'a str>,
    /// Free text for the event.
    pub message: Option<&'a str>,
    /// Merged into the payload (`payload || patch`): state the step machine keeps across
    /// attempts, e.g. `{"vmid": 123}`.
    pub payload_patch: Option<Value>,
}

/// Records progress of a job `worker` holds, with an event. `LeaseLost` when it no longer holds
/// it; `Check { constraint: "jobs_progress_check" }` above 100.
pub async fn record_progress(ex: impl PgExecutor<'_>, id: JobId, worker: &str, p: Progress<'_>) -> Result<Job> {
    let job = sqlx::query_as(
        "with u as (update jobs set progress = $3, step = coalesce($4, step), \
         payload = payload || coalesce($6, '{}'::jsonb) \
         where id = $1 and status = 'running' and locked_by = $2 returning *), \
         e as (insert into job_events (job_id, status, progress, step, message) \
         select id, status, progress, step, $5 from u) \
         select * from u",
    )
    .bind(id.as_uuid())
    .bind(worker)
    .bind(i16::from(p.progress))
    .bind(p.step)
    .bind(p.message)
    .bind(p.payload_patch)
    .fetch_optional(ex)
    .await?;
    job.ok_or(DbError::LeaseLost(id))
}

/// Marks a job `worker` holds as succeeded (progress 100, lease released). `resources`, when
/// given, replaces the job's resources (e.g. to add what it created).
pub async fn complete(
    ex: impl PgExecutor<'_>,
    id: JobId,
    worker: &str,
    resources: Option<&[ResourceRef]>,
) -> Result<Job> {
    let resources =
        resources.map(serde_json::to_value).transpose().map_err(|e| DbError::Sqlx(sqlx::Error::Encode(Box::new(e))))?;
    let job = sqlx::query_as(
        "with u as (update jobs set status = 'succeeded', progress = 100, finished_at = now(), \
         locked_by = null, locked_until = null, error_code = null, error_message = null, error_retryable = null, \
         error_detail = null, resources = coalesce($3, resources) \
         where id = $1 and status = 'running' and locked_by = $2 returning *), \
         e as (insert into job_events (job_id, status, progress, step) select id, status, progress, step from u) \
         select * from u",
    )
    .bind(id.as_uuid())
    .bind(worker)
    .bind(resources)
    .fetch_optional(ex)
    .await?;
    job.ok_or(DbError::LeaseLost(id))
}

/// Records a failed attempt of a job `worker` holds. A retryable error with attempts left puts
/// the job back in the queue for `now + retry_in` (with an outbox row due then); otherwise the
/// job fails for good. The returned job's status says which (`Queued` or `Failed`).
pub async fn fail(
    ex: impl PgExecutor<'_>,
    id: JobId,
    worker: &str,
    error: &JobError,
    retry_in: Duration,
) -> Result<Job> {
    fail_with_detail(ex, id, worker, error, None, retry_in).await
}

/// [`fail`], with what operators see beside the tenant's `error` (Proxmox's own text, the
/// failing request). The job's event carries `error.message` only.
pub async fn fail_with_detail(
    ex: impl PgExecutor<'_>,
    id: JobId,
    worker: &str,
    error: &JobError,
    detail: Option<&str>,
    retry_in: Duration,
) -> Result<Job> {
    let job = sqlx::query_as(concat!(
        "with u as (update jobs set \
         status = case when $5 and attempts < max_attempts then 'queued' else 'failed' end, waiting_for = null, \
         run_after = case when $5 and attempts < max_attempts then now() + make_interval(secs => $6) \
         else run_after end, \
         finished_at = case when $5 and attempts < max_attempts then null else now() end, \
         error_code = $3, error_message = $4, error_retryable = $5, error_detail = $7, \
         locked_by = null, locked_until = null \
         where id = $1 and status = 'running' and locked_by = $2 returning *), \
         e as (insert into job_events (job_id, status, progress, step, message) \
         select id, status, progress, step, error_message from u), \
         o as (insert into outbox (job_id, queue, payload, available_at) select id, queue, ",
        dispatch_json!("u"),
        ", run_after from u where status = 'queued') \
         select * from u"
    ))
    .bind(id.as_uuid())
    .bind(worker)
    .bind(error.code.as_str())
    .bind(&error.message)
    .bind(error.retryable)
    .bind(secs(retry_in))
    .bind(detail)
    .fetch_optional(ex)
    .await?;
    job.ok_or(DbError::LeaseLost(id))
}

/// Hands a job `worker` holds back to the queue without counting the attempt (its worker is
/// shutting down; nothing went wrong with the job): due at once, with an outbox row, and an
/// event saying why. `LeaseLost` when the worker no longer holds it.
pub async fn release(ex: impl PgExecutor<'_>, id: JobId, worker: &str, message: &str) -> Result<Job> {
    requeue(ex, id, worker, message, Duration::ZERO, false).await
}

/// Hands a job `worker` holds back to the queue to wait for `reason` (a node's only backup slot,
/// held by another job) without counting the attempt: due again in `retry_in`, with an outbox
/// row for then, and an event saying why. Its handle shows `reason` while it is queued.
/// `LeaseLost` when the worker no longer holds it.
pub async fn wait(ex: impl PgExecutor<'_>, id: JobId, worker: &str, reason: &str, retry_in: Duration) -> Result<Job> {
    requeue(ex, id, worker, reason, retry_in, true).await
}

/// Back to the queue, the attempt not counted, due in `retry_in`, `message` as the event's (and,
/// when `waiting`, as what the job waits for).
async fn requeue(
    ex: impl PgExecutor<'_>,
    id: JobId,
    worker: &str,
    message: &str,
    retry_in: Duration,
    waiting: bool,
) -> Result<Job> {
    // A job that waits again for the same thing adds no event: one says it waits, not one per look.
    let job = sqlx::query_as(concat!(
        "with before as (select waiting_for from jobs where id = $1), \
         u as (update jobs set status = 'queued', attempts = attempts - 1, \
         run_after = now() + make_interval(secs => $4), waiting_for = case when $5 then $3 end, \
         locked_by = null, locked_until = null \
         where id = $1 and status = 'running' and locked_by = $2 returning *), \
         e as (insert into job_events (job_id, status, progress, step, message) \
         select id, status, progress, step, $3 from u \
         where not $5 or (select waiting_for from before) is distinct from $3), \
         o as (insert into outbox (job_id, queue, payload, available_at) select id, queue, ",
        dispatch_json!("u"),
        ", run_after from u) \
         select * from u"
    ))
    .bind(id.as_uuid())
    .bind(worker)
    .bind(message)
    .bind(secs(retry_in))
    .bind(waiting)
    .fetch_optional(ex)
    .await?;
    job.ok_or(DbError::LeaseLost(id))
}

/// Puts back in the queue every running job whose lease has expired (its worker died or hung),
/// or fails it with `LEASE_EXPIRED` when that was its last attempt. Safe to run from every
/// worker at once (`SKIP LOCKED`).
pub async fn recover_expired_leases(ex: impl PgExecutor<'_>) -> Result<Recovered> {
    let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as(concat!(
        "with x as (select id from jobs where status = 'running' and locked_until < now() \
         for update skip locked), \
         u as (update jobs j set \
         status = case when j.attempts < j.max_attempts then 'queued' else 'failed' end, waiting_for = null, \
         finished_at = case when j.attempts < j.max_attempts then null else now() end, \
         run_after = now(), \
         error_code = case when j.attempts < j.max_attempts then j.error_code else 'LEASE_EXPIRED' end, \
         error_message = case when j.attempts < j.max_attempts then j.error_message \
         else 'the worker running the last attempt stopped renewing its lease' end, \
         error_retryable = case when j.attempts < j.max_attempts then j.error_retryable else false end, \
         error_detail = case when j.attempts < j.max_attempts then j.error_detail end, \
         locked_by = null, locked_until = null \
         from x where j.id = x.id returning j.*), \
         e as (insert into job_events (job_id, status, progress, step, message) \
         select id, status, progress, step, 'lease expired' from u), \
         o as (insert into outbox (job_id, queue, payload, available_at) select id, queue, ",
        dispatch_json!("u"),
        ", run_after from u where status = 'queued') \
         select id, status from u"
    ))
    .fetch_all(ex)
    .await?;
    let mut out = Recovered::default();
    for (id, status) in rows {
        if status == "queued" { out.requeued.push(id.into()) } else { out.failed.push(id.into()) }
    }
    Ok(out)
}

/// The status of a job, for telling "missing" from "wrong state" after a guarded update.
async fn state_error(ex: impl PgExecutor<'_>, id: JobId, tenant: Option<TenantId>) -> DbError {
    let status: Result<Option<String>, sqlx::Error> =
        sqlx::query_scalar("select status from jobs where id = $1 and ($2::uuid is null or tenant_id = $2)")
            .bind(id.as_uuid())
            .bind(tenant.map(|t| t.as_uuid()))
            .fetch_optional(ex)
            .await;
    match status {
        Ok(Some(s)) => match s.parse() {
            Ok(status) => DbError::InvalidJobState { job: id, status },
            Err(e) => DbError::Sqlx(sqlx::Error::Decode(Box::new(e))),
        },
        Ok(None) => DbError::NotFound,
        Err(e) => e.into(),
    }
}

/// Cancels a queued job (of `tenant`, when given). A running or final job is
/// `InvalidJobState`; a missing one `NotFound`.
pub async fn cancel(pool: &sqlx::PgPool, id: JobId, tenant: Option<TenantId>) -> Result<Job> {
    match cancel_if_queued(pool, id, tenant).await? {
        Some(job) => Ok(job),
        None => Err(state_error(pool, id, tenant).await),
    }
}

/// Cancels job `id` (of `tenant`, if given) if it is still queued, in the caller's transaction;
/// `None` when it is not (a worker took it, it ended, or it is not there).
pub async fn cancel_if_queued(ex: impl PgExecutor<'_>, id: JobId, tenant: Option<TenantId>) -> Result<Option<Job>> {
    Ok(sqlx::query_as(
        "with u as (update jobs set status = 'cancelled', finished_at = now(), \
         error_code = 'CANCELLED', error_message = 'cancelled before it ran', error_retryable = false, \
         error_detail = null \
         where id = $1 and ($2::uuid is null or tenant_id = $2) and status = 'queued' returning *), \
         e as (insert into job_events (job_id, status, progress, step, message) \
         select id, status, progress, step, error_message from u) \
         select * from u",
    )
    .bind(id.as_uuid())
    .bind(tenant.map(|t| t.as_uuid()))
    .fetch_optional(ex)
    .await?)
}

/// Re-queues a failed job with `extra_attempts` more attempts (`POST /v1/admin/jobs/{id}/retry`).
/// Its step and payload are kept, so the step machine resumes where it stopped.
pub async fn retry_failed(conn: &mut sqlx::PgConnection, id: JobId, extra_attempts: i32) -> Result<Enqueued> {
    let row = sqlx::query(concat!(
        "with u as (update jobs set status = 'queued', max_attempts = attempts + greatest($2, 1), waiting_for = null, \
         run_after = now(), finished_at = null, error_code = null, error_message = null, error_retryable = null, \
         error_detail = null where id = $1 and status = 'failed' returning *), \
         e as (insert into job_events (job_id, status, progress, step, message) \
         select id, status, progress, step, 'retried by an administrator' from u), \
         o as (insert into outbox (job_id, queue, payload, available_at) select id, queue, ",
        dispatch_json!("u"),
        ", run_after from u returning id, payload) \
         select u.*, o.id as outbox_id, o.payload as outbox_payload from u, o"
    ))
    .bind(id.as_uuid())
    .bind(extra_attempts)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => Ok(Enqueued {
            job: Job::from_row(&row)?,
            outbox_id: Some(row.try_get("outbox_id")?),
            dispatch: row.try_get("outbox_payload")?,
        }),
        None => Err(state_error(&mut *conn, id, None).await),
    }
}

/// A job by id (workers; no tenant scope).
pub async fn get(ex: impl PgExecutor<'_>, id: JobId) -> Result<Job> {
    Ok(sqlx::query_as("select * from jobs where id = $1").bind(id.as_uuid()).fetch_one(ex).await?)
}

/// A job of `tenant` (a foreign tenant's job is `NotFound`, like a missing one).
pub async fn get_for_tenant(ex: impl PgExecutor<'_>, tenant: TenantId, id: JobId) -> Result<Job> {
    Ok(sqlx::query_as("select * from jobs where id = $1 and tenant_id = $2")
        .bind(id.as_uuid())
        .bind(tenant.as_uuid())
        .fetch_one(ex)
        .await?)
}

/// Which jobs a list shows (every field optional).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs with this status.
    pub status: Option<JobStatus>,
    /// Only jobs acting on this instance (the provision that created it and every operation).
    pub instance: Option<InstanceId>,
}

/// A page of `tenant`'s jobs matching `filter`, newest first, with the total.
pub async fn list(
    ex: impl PgExecutor<'_>,
    tenant: TenantId,
    filter: JobFilter,
    page: PageRequest,
) -> Result<(Vec<Job>, i64)> {
    list_filtered(ex, Some(tenant), filter, page).await
}

/// [`list`] across tenants, for the provider's operators: every tenant's jobs (and jobs of no
/// tenant), or one tenant's when `tenant` is given.
pub async fn list_all_tenants(
    ex: impl PgExecutor<'_>,
    tenant: Option<TenantId>,
    filter: JobFilter,
    page: PageRequest,
) -> Result<(Vec<Job>, i64)> {
    list_filtered(ex, tenant, filter, page).await
}

async fn list_filtered(
    ex: impl PgExecutor<'_>,
    tenant: Option<TenantId>,
    filter: JobFilter,
    page: PageRequest,
) -> Result<(Vec<Job>, i64)> {
    // One round trip that also yields the total when the page is past the end: the count is
    // the driving row and the page joins it laterally.
    let rows = sqlx::query(
        "select t.total, p.* from (select count(*) as total from jobs \
         where ($1::uuid is null or tenant_id = $1) and ($2::text is null or status = $2) \
         and ($5::uuid is null or instance_id = $5)) t \
         left join lateral (select * from jobs where ($1::uuid is null or tenant_id = $1) \
         and ($2::text is null or status = $2) and ($5::uuid is null or instance_id = $5) \
         order by created_at desc, id desc limit $3 offset $4) p on true",
    )
    .bind(tenant.map(|t| t.as_uuid()))
    .bind(filter.status.map(|s| s.as_str()))
    .bind(page.limit())
    .bind(page.offset())
    .bind(filter.instance.map(|i| i.as_uuid()))
    .fetch_all(ex)
    .await?;
    Ok(rows::page::<Job>(&rows)?)
}

/// The events of a job after its `after`th (0 for all), oldest first: the SSE replay from
/// `Last-Event-ID`, which is the event's [`JobEvent::seq`].
pub async fn events_after(ex: impl PgExecutor<'_>, id: JobId, after: i64, limit: i64) -> Result<Vec<JobEvent>> {
    Ok(sqlx::query_as(
        "select * from (select id, row_number() over (order by id) as seq, job_id, status, progress, step, \
         message, created_at from job_events where job_id = $1) e where seq > $2 order by seq limit $3",
    )
    .bind(id.as_uuid())
    .bind(after)
    .bind(limit)
    .fetch_all(ex)
    .await?)
}
