//! The transactional outbox: dispatches owed to Redis. Rows are written by [`crate::jobs`] in the
//! same statement as the job transition that owes them (retry scheduled, lease recovered, admin
//! retry). The API pushes right after commit and marks the row; the relay picks up whatever is
//! left (Redis was down, the API crashed, a retry became due).
//!
//! A create writes no row: the API pushes at once and writes one ([`owe`]) only if the push
//! fails. A push lost with its process is found by the sweep ([`owe_undelivered`]), which
//! compares the ledger's queued jobs with the messages Redis still holds.
//!
//! Relay loop: `begin` → [`fetch_due`] (rows locked, `SKIP LOCKED` so relays in several workers
//! share the work) → push to Redis → [`mark_pushed`] → `commit`. A crash between the push and the
//! commit pushes again: consumers claim jobs through the ledger, so a duplicate has no effect.

use chrono::{DateTime, Utc};
use nimbus_domain::JobId;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, PgExecutor, Row};

use crate::{Result, rows};

/// An unpushed outbox row.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxEntry {
    /// Id (dispatch order).
    pub id: i64,
    /// The job.
    pub job_id: JobId,
    /// The Redis queue.
    pub queue: String,
    /// The message (`{"jobId", "kind", "queue"}`).
    pub payload: Value,
    /// Not to be pushed before (a scheduled retry).
    pub available_at: DateTime<Utc>,
    /// Written at.
    pub created_at: DateTime<Utc>,
}

impl<'r> FromRow<'r, PgRow> for OutboxEntry {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(OutboxEntry {
            id: row.try_get("id")?,
            job_id: rows::id(row, "job_id")?,
            queue: row.try_get("queue")?,
            payload: row.try_get("payload")?,
            available_at: row.try_get("available_at")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// Locks and returns up to `limit` due, unpushed rows in order, skipping rows another relay
/// holds. Call inside a transaction and keep it open until [`mark_pushed`].
pub async fn fetch_due(tx: &mut PgConnection, limit: i64) -> Result<Vec<OutboxEntry>> {
    Ok(sqlx::query_as(
        "select id, job_id, queue, payload, available_at, created_at from outbox \
         where pushed_at is null and available_at <= now() order by available_at, id limit $1 \
         for update skip locked",
    )
    .bind(limit)
    .fetch_all(tx)
    .await?)
}

/// Marks rows as pushed; returns how many were still unpushed.
pub async fn mark_pushed(ex: impl PgExecutor<'_>, ids: &[i64]) -> Result<u64> {
    let done = sqlx::query("update outbox set pushed_at = now() where id = any($1) and pushed_at is null")
        .bind(ids)
        .execute(ex)
        .await?;
    Ok(done.rows_affected())
}

/// Owes jobs `ids` their dispatch (their push right after commit failed): an outbox row due now
/// for each that is still queued. Returns how many rows were written.
pub async fn owe(ex: impl PgExecutor<'_>, ids: &[JobId]) -> Result<u64> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
    let done = sqlx::query(concat!(
        "insert into outbox (job_id, queue, payload) select id, queue, ",
        crate::jobs::dispatch_json!("jobs"),
        " from jobs where id = any($1) and status = 'queued' order by id"
    ))
    .bind(&ids)
    .execute(ex)
    .await?;
    Ok(done.rows_affected())
}

/// The sweep for dispatches lost between a commit and its push (the pushing process died, or
/// Redis lost its data): owes an outbox row to each job of `queue` that is queued and due since
/// before `settled_before`, is not `held`, and has no row waiting and none pushed since
/// `settled_before`. Returns how many rows it wrote (at most `limit`); the relay pushes them like
/// any other.
///
/// `settled_before` is the time of the oldest message of the queue not yet delivered to a worker
/// (or now, if there is none), less a margin for the clocks of Postgres and Redis and for pushes
/// still in flight; `held` are the jobs whose messages workers hold (delivered, not yet
/// acknowledged). A job due before `settled_before`, still queued and not held, has no message
/// left in Redis. Getting it wrong only costs a duplicate push, which the ledger's claim ignores.
pub async fn owe_undelivered(
    ex: impl PgExecutor<'_>,
    queue: &str,
    settled_before: DateTime<Utc>,
    held: &[JobId],
    limit: i64,
) -> Result<u64> {
    let held: Vec<uuid::Uuid> = held.iter().map(|id| id.as_uuid()).collect();
    let done = sqlx::query(concat!(
        "insert into outbox (job_id, queue, payload) select j.id, j.queue, ",
        crate::jobs::dispatch_json!("j"),
        " from jobs j where j.status = 'queued' and j.queue = $1 and j.run_after < $2 and j.id <> all($3) \
         and not exists (select 1 from outbox o where o.job_id = j.id and (o.pushed_at is null or o.pushed_at >= $2)) \
         order by j.run_after, j.id limit $4"
    ))
    .bind(queue)
    .bind(settled_before)
    .bind(&held)
    .bind(limit)
    .execute(ex)
    .await?;
    Ok(done.rows_affected())
}

/// Unpushed rows (due or not): the relay's backlog, for metrics.
pub async fn backlog(ex: impl PgExecutor<'_>) -> Result<i64> {
    Ok(sqlx::query_scalar("select count(*) from outbox where pushed_at is null").fetch_one(ex).await?)
}

/// When the next unpushed row becomes due, if any (lets the relay sleep until then).
pub async fn next_due_at(ex: impl PgExecutor<'_>) -> Result<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar("select min(available_at) from outbox where pushed_at is null").fetch_one(ex).await?)
}

/// Deletes rows pushed before `before` (housekeeping).
pub async fn delete_pushed_before(ex: impl PgExecutor<'_>, before: DateTime<Utc>) -> Result<u64> {
    let done = sqlx::query("delete from outbox where pushed_at < $1").bind(before).execute(ex).await?;
    Ok(done.rows_affected())
}
