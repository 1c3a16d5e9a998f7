//! Customers' backup policies: one per instance, a schedule (`schedules`, which the scheduler
//! fires) and the retention run after each scheduled backup. Every query names the tenant.

use chrono::{DateTime, Utc};
use nimbus_domain::{InstanceId, Retention, ScheduleId, TenantId};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::schedules::{self, NewSchedule};
use crate::{DbError, Result};

/// An instance's policy with its schedule's state.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupPolicy {
    /// The instance.
    pub instance_id: InstanceId,
    /// Its schedule.
    pub schedule_id: ScheduleId,
    /// The cron expression as the customer gave it (`0 3 * * *`, `daily`, `weekly`).
    pub cron: String,
    /// What each scheduled backup keeps.
    pub retention: Retention,
    /// Paused by an operator.
    pub paused: bool,
    /// Its next backup.
    pub next_fire_at: DateTime<Utc>,
    /// Its last scheduled backup.
    pub last_fire_at: Option<DateTime<Utc>>,
}

type Row = (Uuid, Uuid, String, i32, i32, i32, i32, bool, DateTime<Utc>, Option<DateTime<Utc>>);

/// The policies with their schedules, filtered by `$filter`.
macro_rules! select_where {
    ($filter:literal) => {
        concat!(
            "select p.instance_id, p.schedule_id, s.cron, p.keep_last, p.keep_daily, p.keep_weekly, p.keep_monthly, \
             s.paused, s.next_fire_at, s.last_fire_at from backup_policies p join schedules s on s.id = p.schedule_id \
             where ",
            $filter
        )
    };
}

fn decode(r: Row) -> BackupPolicy {
    let keep = |n: i32| n.max(0) as u32;
    BackupPolicy {
        instance_id: r.0.into(),
        schedule_id: r.1.into(),
        cron: r.2,
        retention: Retention {
            keep_last: keep(r.3),
            keep_daily: keep(r.4),
            keep_weekly: keep(r.5),
            keep_monthly: keep(r.6),
        },
        paused: r.7,
        next_fire_at: r.8,
        last_fire_at: r.9,
    }
}

/// `tenant`'s policy for `instance`, if it has one.
pub async fn get(ex: impl PgExecutor<'_>, tenant: TenantId, instance: InstanceId) -> Result<Option<BackupPolicy>> {
    let row: Option<Row> = sqlx::query_as(select_where!("p.instance_id = $1 and p.tenant_id = $2"))
        .bind(instance.as_uuid())
        .bind(tenant.as_uuid())
        .fetch_optional(ex)
        .await?;
    Ok(row.map(decode))
}

/// The retention of `instance`'s policy, for the backup job (which runs for the instance's
/// tenant, checked when the job was accepted).
pub async fn retention_of(ex: impl PgExecutor<'_>, instance: InstanceId) -> Result<Option<Retention>> {
    let row: Option<Row> =
        sqlx::query_as(select_where!("p.instance_id = $1")).bind(instance.as_uuid()).fetch_optional(ex).await?;
    Ok(row.map(|r| decode(r).retention))
}

/// Sets `instance`'s policy: a new schedule (`schedule`, whose job is the scheduled backup), or
/// the existing one given the new expression and first fire; the retention either way.
pub async fn put(
    tx: &mut PgConnection,
    tenant: TenantId,
    instance: InstanceId,
    schedule: &NewSchedule,
    retention: Retention,
) -> Result<BackupPolicy> {
    let keep = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let existing: Option<Uuid> = sqlx::query_scalar(
        "select schedule_id from backup_policies where instance_id = $1 and tenant_id = $2 for update",
    )
    .bind(instance.as_uuid())
    .bind(tenant.as_uuid())
    .fetch_optional(&mut *tx)
    .await?;
    let schedule_id = match existing {
        Some(id) => {
            sqlx::query(
                "update schedules set cron = $2, next_fire_at = $3, name = $4, updated_at = now() \
                 where id = $1 and tenant_id = $5",
            )
            .bind(id)
            .bind(&schedule.cron)
            .bind(schedule.first_fire_at)
            .bind(&schedule.name)
            .bind(tenant.as_uuid())
            .execute(&mut *tx)
            .await?;
            id
        }
        None => schedules::create(&mut *tx, schedule).await?.id.as_uuid(),
    };
    sqlx::query(
        "insert into backup_policies (instance_id, tenant_id, schedule_id, keep_last, keep_daily, keep_weekly, keep_monthly) \
         values ($1, $2, $3, $4, $5, $6, $7) on conflict (instance_id) do update set keep_last = $4, keep_daily = $5, \
         keep_weekly = $6, keep_monthly = $7, updated_at = now()",
    )
    .bind(instance.as_uuid())
    .bind(tenant.as_uuid())
    .bind(schedule_id)
    .bind(keep(retention.keep_last))
    .bind(keep(retention.keep_daily))
    .bind(keep(retention.keep_weekly))
    .bind(keep(retention.keep_monthly))
    .execute(&mut *tx)
    .await?;
    get(&mut *tx, tenant, instance).await?.ok_or(DbError::NotFound)
}

/// Removes `instance`'s policy (its schedule, which takes the policy row with it); false when
/// it had none.
pub async fn remove(ex: impl PgExecutor<'_>, tenant: TenantId, instance: InstanceId) -> Result<bool> {
    let done = sqlx::query(
        "delete from schedules where tenant_id = $2 and id = \
         (select schedule_id from backup_policies where instance_id = $1 and tenant_id = $2)",
    )
    .bind(instance.as_uuid())
    .bind(tenant.as_uuid())
    .execute(ex)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Removes the policy of a deleted instance, whoever's it is (the delete job's last step).
pub async fn remove_for_deleted(ex: impl PgExecutor<'_>, instance: InstanceId) -> Result<()> {
    sqlx::query("delete from schedules where id = (select schedule_id from backup_policies where instance_id = $1)")
        .bind(instance.as_uuid())
        .execute(ex)
        .await?;
    Ok(())
}
