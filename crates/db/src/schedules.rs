//! Schedules and their fires (DESIGN §9). A tick of the scheduler, in one transaction:
//! [`due`] locks the due, unpaused schedules (`SKIP LOCKED`: replicas share the work, never
//! wait on each other), then [`fire`] writes each fire (unique per schedule and fire time: a fire
//! another replica already wrote is left out), the jobs of the new fires, and each schedule's
//! next fire time. When the transaction commits, the scheduler pushes the jobs to Redis itself
//! and owes an outbox row only for a push that fails, as the API does for creates (a push lost
//! with its process is found by the relay's sweep): a thundering herd of fires then writes no
//! outbox rows for the relay to mark.
//! When to fire is decided by the caller (`nimbus_jobs::schedule`); this module only records it.

use chrono::{DateTime, Utc};
use nimbus_domain::{JobId, JobKind, JobStatus, MissedFirePolicy, PageRequest, ResourceRef, ScheduleId, TenantId};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::jobs::{NewJob, dispatch_json};
use crate::{DbError, Result, rows};

/// Why a fire started no job: its instance had an operation queued or running.
pub const SKIPPED_BUSY: &str = "the instance was busy with another operation";

/// A schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// Id.
    pub id: ScheduleId,
    /// The tenant it belongs to; `None` for the system's.
    pub tenant_id: Option<TenantId>,
    /// What it is for, as operators read it.
    pub name: String,
    /// Its cron expression (UTC), as given.
    pub cron: String,
    /// The kind of the job each fire starts.
    pub job_kind: JobKind,
    /// That job's queue.
    pub queue: String,
    /// That job's payload; each fire adds `fireAt` and `scheduleId`.
    pub payload: Value,
    /// What that job acts on.
    pub resources: Vec<ResourceRef>,
    /// What happens to fire times missed while nothing ticked.
    pub policy: MissedFirePolicy,
    /// When it fires next.
    pub next_fire_at: DateTime<Utc>,
    /// Paused schedules do not fire; on resume the policy decides about the times missed.
    pub paused: bool,
    /// The time of its last fire.
    pub last_fire_at: Option<DateTime<Utc>>,
    /// The job its last fire started.
    pub last_job_id: Option<JobId>,
    /// Created at.
    pub created_at: DateTime<Utc>,
}

impl<'r> FromRow<'r, PgRow> for Schedule {
    fn from_row(row: &'r PgRow) -> std::result::Result<Self, sqlx::Error> {
        let decode = |col: &str, e: String| sqlx::Error::ColumnDecode { index: col.into(), source: e.into() };
        let kind: String = row.try_get("job_kind")?;
        let policy: String = row.try_get("missed_fire_policy")?;
        let resources: Value = row.try_get("resources")?;
        Ok(Schedule {
            id: rows::id(row, "id")?,
            tenant_id: rows::opt_id(row, "tenant_id")?,
            name: row.try_get("name")?,
            cron: row.try_get("cron")?,
            job_kind: kind.parse().map_err(|e: nimbus_domain::ParseEnumError| decode("job_kind", e.to_string()))?,
            queue: row.try_get("queue")?,
            payload: row.try_get("payload")?,
            resources: serde_json::from_value(resources).map_err(|e| decode("resources", e.to_string()))?,
            policy: policy
                .parse()
                .map_err(|e: nimbus_domain::ParseEnumError| decode("missed_fire_policy", e.to_string()))?,
            next_fire_at: row.try_get("next_fire_at")?,
            paused: row.try_get("paused")?,
            last_fire_at: row.try_get("last_fire_at")?,
            last_job_id: rows::opt_id(row, "last_job_id")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// A schedule to create.
#[derive(Clone, Debug)]
pub struct NewSchedule {
    /// Its tenant (`None`: the system's).
    pub tenant: Option<TenantId>,
    /// What it is for.
    pub name: String,
    /// A cron expression the caller has checked (`nimbus_jobs::schedule::CronSpec`).
    pub cron: String,
    /// The job each fire starts (its `run_after`, request id and idempotency key are not used).
    pub job: NewJob,
    /// The missed-fire policy.
    pub policy: MissedFirePolicy,
    /// Its first fire time.
    pub first_fire_at: DateTime<Utc>,
}

/// Creates a schedule.
pub async fn create(ex: impl PgExecutor<'_>, new: &NewSchedule) -> Result<Schedule> {
    let resources =
        serde_json::to_value(&new.job.resources).map_err(|e| DbError::Sqlx(sqlx::Error::Encode(Box::new(e))))?;
    Ok(sqlx::query_as(
        "insert into schedules (id, tenant_id, name, cron, job_kind, queue, payload, resources, missed_fire_policy, \
         next_fire_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) returning *",
    )
    .bind(ScheduleId::new().as_uuid())
    .bind(new.tenant.map(|t| t.as_uuid()))
    .bind(&new.name)
    .bind(&new.cron)
    .bind(new.job.kind.as_str())
    .bind(&new.job.queue)
    .bind(&new.job.payload)
    .bind(resources)
    .bind(new.policy.as_str())
    .bind(new.first_fire_at)
    .fetch_one(ex)
    .await?)
}

/// Creates the system schedule `new` unless a system schedule of that name exists; true when
/// it created it. Replicas starting together take turns on a transaction-scoped advisory lock
/// of the name, so each name is created once.
pub async fn create_system_unless_named(pool: &sqlx::PgPool, new: &NewSchedule) -> Result<bool> {
    let mut tx = pool.begin().await?;
    sqlx::query("select pg_advisory_xact_lock(hashtext('nimbus schedule ' || $1))")
        .bind(&new.name)
        .execute(&mut *tx)
        .await?;
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from schedules where tenant_id is null and name = $1)")
            .bind(&new.name)
            .fetch_one(&mut *tx)
            .await?;
    if !exists {
        create(&mut *tx, &NewSchedule { tenant: None, ..new.clone() }).await?;
    }
    tx.commit().await?;
    Ok(!exists)
}

/// Locks up to `limit` unpaused schedules due at `now`, oldest first, skipping those another
/// replica holds; with `after`, only those past that `(next_fire_at, id)` position (the last of
/// the previous batch of the same tick). Call inside the transaction that then calls [`fire`].
pub async fn due(
    tx: &mut PgConnection,
    now: DateTime<Utc>,
    after: Option<(DateTime<Utc>, ScheduleId)>,
    limit: i64,
) -> Result<Vec<Schedule>> {
    Ok(sqlx::query_as(
        "select * from schedules where not paused and next_fire_at <= $1 \
         and ($3::timestamptz is null or (next_fire_at, id) > ($3, $4)) \
         order by next_fire_at, id limit $2 for update skip locked",
    )
    .bind(now)
    .bind(limit)
    .bind(after.map(|(at, _)| at))
    .bind(after.map(|(_, id)| id.as_uuid()))
    .fetch_all(&mut *tx)
    .await?)
}

/// What a tick decided for one locked schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The schedule.
    pub schedule: ScheduleId,
    /// Its fire times to fire now, oldest first (may be empty: all skipped).
    pub fires: Vec<DateTime<Utc>>,
    /// Its next fire time afterwards (`None`: its expression fires no more; it is paused).
    pub next: Option<DateTime<Utc>>,
}

/// A job a fire started, with the message that dispatches it.
#[derive(Clone, Debug, PartialEq)]
pub struct Started {
    /// The job.
    pub job: JobId,
    /// Its queue.
    pub queue: String,
    /// The Redis message (`{"jobId", "kind", "queue"}`).
    pub dispatch: Value,
}

/// What [`fire`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fired {
    /// The jobs started (queued, not yet pushed).
    pub jobs: Vec<Started>,
    /// Fires already written by someone else (left alone).
    pub duplicates: usize,
    /// Fires written without a job because the job's instance was busy.
    pub busy: usize,
}

/// Records `decisions` (for schedules locked by [`due`] in the same transaction): the fires,
/// their jobs (queued, each with its first event; the caller pushes them after commit), and each
/// schedule's next fire time, last fire and last job.
pub async fn fire(tx: &mut PgConnection, decisions: &[Decision]) -> Result<Fired> {
    let (mut ids, mut times, mut jobs) = (Vec::new(), Vec::new(), Vec::new());
    for d in decisions {
        for at in &d.fires {
            ids.push(d.schedule.as_uuid());
            times.push(*at);
            jobs.push(JobId::new().as_uuid());
        }
    }
    // In one statement: the fires not yet written (a fire another replica wrote stays theirs)
    // and their jobs, each with its first event. A job whose instance is busy
    // (`jobs_instance_busy_key`) is not inserted; its fire then names no job.
    type Row = (Uuid, DateTime<Utc>, Uuid, Option<String>, Option<Value>);
    let rows: Vec<Row> = sqlx::query_as(concat!(
        "with f as (insert into schedule_fires (schedule_id, fire_at, job_id) \
                    select * from unnest($1::uuid[], $2::timestamptz[], $3::uuid[]) \
                    on conflict do nothing returning schedule_id, fire_at, job_id), \
         j as (insert into jobs (id, tenant_id, kind, queue, payload, resources) \
               select f.job_id, s.tenant_id, s.job_kind, s.queue, \
                      s.payload || jsonb_build_object('scheduleId', s.id, 'fireAt', f.fire_at), s.resources \
               from f join schedules s on s.id = f.schedule_id order by f.fire_at \
               on conflict do nothing returning *), \
         e as (insert into job_events (job_id, status, progress, step) select id, status, progress, step from j) \
         select f.schedule_id, f.fire_at, f.job_id, j.queue, ",
        dispatch_json!("j"),
        " from f left join j on j.id = f.job_id"
    ))
    .bind(&ids)
    .bind(&times)
    .bind(&jobs)
    .fetch_all(&mut *tx)
    .await?;
    let mut fired = Fired { duplicates: ids.len() - rows.len(), ..Fired::default() };
    let busy: Vec<(Uuid, DateTime<Utc>)> = rows.iter().filter(|r| r.3.is_none()).map(|r| (r.0, r.1)).collect();
    fired.busy = busy.len();
    if !busy.is_empty() {
        let (busy_ids, busy_times): (Vec<Uuid>, Vec<DateTime<Utc>>) = busy.into_iter().unzip();
        sqlx::query(
            "update schedule_fires f set job_id = null, skipped = $3 \
             from unnest($1::uuid[], $2::timestamptz[]) as u(schedule_id, fire_at) \
             where f.schedule_id = u.schedule_id and f.fire_at = u.fire_at",
        )
        .bind(&busy_ids)
        .bind(&busy_times)
        .bind(SKIPPED_BUSY)
        .execute(&mut *tx)
        .await?;
    }
    // Each schedule's latest fire of this tick, with the job it started.
    let mut latest: std::collections::HashMap<Uuid, (DateTime<Utc>, Option<Uuid>)> = std::collections::HashMap::new();
    for (schedule, at, job, queue, _) in &rows {
        let entry = latest.entry(*schedule).or_insert((*at, None));
        if *at >= entry.0 {
            *entry = (*at, queue.as_ref().map(|_| *job));
        }
    }
    fired.jobs = rows
        .into_iter()
        .filter_map(|(_, _, job, queue, dispatch)| {
            Some(Started { job: JobId::from_uuid(job), queue: queue?, dispatch: dispatch? })
        })
        .collect();
    // Each schedule's next fire, last fire and last job.
    let (mut sids, mut nexts, mut lasts, mut last_jobs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for d in decisions {
        sids.push(d.schedule.as_uuid());
        nexts.push(d.next);
        let last = latest.get(&d.schedule.as_uuid());
        lasts.push(last.map(|(at, _)| *at));
        last_jobs.push(last.and_then(|(_, job)| *job));
    }
    sqlx::query(
        "update schedules s set next_fire_at = coalesce(u.next, s.next_fire_at), paused = s.paused or u.next is null, \
         last_fire_at = coalesce(u.last_fire_at, s.last_fire_at), \
         last_job_id = case when u.last_fire_at is null then s.last_job_id else u.last_job_id end, updated_at = now() \
         from unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::uuid[]) \
              as u(id, next, last_fire_at, last_job_id) \
         where s.id = u.id",
    )
    .bind(&sids)
    .bind(&nexts)
    .bind(&lasts)
    .bind(&last_jobs)
    .execute(&mut *tx)
    .await?;
    Ok(fired)
}

/// A schedule with the status of the job its last fire started.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed {
    /// The schedule.
    pub schedule: Schedule,
    /// Its last job's status (`None`: no fire yet, or that fire started none).
    pub last_job_status: Option<JobStatus>,
    /// Why its last fire started no job, if it did not.
    pub last_skipped: Option<String>,
}

/// `?tenant=&paused=` of the operators' list.
#[derive(Clone, Debug, Default)]
pub struct ScheduleFilter {
    /// Only this one.
    pub id: Option<ScheduleId>,
    /// Only this tenant's.
    pub tenant: Option<TenantId>,
    /// Only paused (or only running) ones.
    pub paused: Option<bool>,
}

/// Every schedule matching `filter`, soonest next fire first.
pub async fn list(ex: impl PgExecutor<'_>, filter: &ScheduleFilter, page: PageRequest) -> Result<(Vec<Listed>, i64)> {
    let rows = sqlx::query(
        "select s.*, j.status as last_job_status, f.skipped as last_skipped, count(*) over () as total \
         from schedules s \
         left join jobs j on j.id = s.last_job_id \
         left join schedule_fires f on f.schedule_id = s.id and f.fire_at = s.last_fire_at \
         where ($1::uuid is null or s.tenant_id = $1) and ($2::boolean is null or s.paused = $2) \
               and ($5::uuid is null or s.id = $5) \
         order by s.next_fire_at, s.id limit $3 offset $4",
    )
    .bind(filter.tenant.map(|t| t.as_uuid()))
    .bind(filter.paused)
    .bind(page.limit())
    .bind(page.offset())
    .bind(filter.id.map(|i| i.as_uuid()))
    .fetch_all(ex)
    .await?;
    let total = rows.first().map(|r| r.try_get::<i64, _>("total")).transpose()?.unwrap_or(0);
    let listed = rows
        .iter()
        .map(|r| {
            let status: Option<String> = r.try_get("last_job_status")?;
            Ok(Listed {
                schedule: Schedule::from_row(r)?,
                last_job_status: status.and_then(|s| s.parse().ok()),
                last_skipped: r.try_get("last_skipped")?,
            })
        })
        .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?;
    Ok((listed, total))
}

/// Pauses or resumes a schedule. A resumed schedule's missed times are its policy's to decide
/// on the next tick.
pub async fn set_paused(ex: impl PgExecutor<'_>, id: ScheduleId, paused: bool) -> Result<Schedule> {
    sqlx::query_as("update schedules set paused = $2, updated_at = now() where id = $1 returning *")
        .bind(id.as_uuid())
        .bind(paused)
        .fetch_optional(ex)
        .await?
        .ok_or(DbError::NotFound)
}

/// The fires of a schedule, newest first: `(fire_at, job, skipped)`.
pub async fn fires(
    ex: impl PgExecutor<'_>,
    id: ScheduleId,
    limit: i64,
) -> Result<Vec<(DateTime<Utc>, Option<JobId>, Option<String>)>> {
    let rows: Vec<(DateTime<Utc>, Option<Uuid>, Option<String>)> = sqlx::query_as(
        "select fire_at, job_id, skipped from schedule_fires where schedule_id = $1 order by fire_at desc limit $2",
    )
    .bind(id.as_uuid())
    .bind(limit)
    .fetch_all(ex)
    .await?;
    Ok(rows.into_iter().map(|(at, job, skipped)| (at, job.map(JobId::from_uuid), skipped)).collect())
}
