//! Operations on existing instances (power, resize, rebuild, snapshots, delete): each is a job
//! on the instance, and at most one is queued or running per instance. The database enforces
//! that (`jobs_instance_busy_key`, migration `20261206000003_instance_operations.sql`): a second
//! enqueue fails with [`DbError::InstanceBusy`] carrying the job that holds the instance.

use nimbus_domain::{InstanceId, InstanceStatus, QuotaExceeded, QuotaResource, ResourceRef, TenantId};
use sqlx::{PgConnection, PgExecutor};

use crate::instances::{self, Instance};
use crate::jobs::{self, Enqueued, Job, NewJob};
use crate::{DbError, Result};

/// The unique index that lets one operation at a time hold an instance.
pub const BUSY_INDEX: &str = "jobs_instance_busy_key";

/// Locks `instance` of `tenant` (`for update`, until the caller's transaction ends) for an
/// operation: a job already queued or running on it is [`DbError::InstanceBusy`], a status
/// outside `allowed` is [`DbError::InvalidInstanceState`].
pub async fn lock(
    conn: &mut PgConnection,
    tenant: TenantId,
    instance: InstanceId,
    allowed: &[InstanceStatus],
) -> Result<Instance> {
    let locked = instances::get_for_update(&mut *conn, tenant, instance).await?;
    if let Some(holder) = active(&mut *conn, instance).await? {
        return Err(DbError::InstanceBusy(Box::new(holder)));
    }
    if !allowed.contains(&locked.status) {
        return Err(DbError::InvalidInstanceState { instance, status: locked.status });
    }
    Ok(locked)
}

/// Enqueues `job` on `instance` (made its first resource), with its outbox row, inside the
/// caller's transaction. The busy index decides: a job that got in since [`lock`] looked is
/// [`DbError::InstanceBusy`] here too.
pub async fn enqueue(
    conn: &mut PgConnection,
    tenant: TenantId,
    instance: InstanceId,
    mut job: NewJob,
) -> Result<Enqueued> {
    let reference = ResourceRef::instance(instance);
    job.resources.retain(|r| r != &reference);
    job.resources.insert(0, reference);
    // A savepoint keeps the transaction usable when the index refuses the job, so the holder can
    // be read and named in the answer.
    sqlx::query("savepoint enqueue_operation").execute(&mut *conn).await?;
    match jobs::enqueue(&mut *conn, Some(tenant), &job).await {
        Ok(enqueued) => Ok(enqueued),
        Err(DbError::Conflict { constraint }) if constraint == BUSY_INDEX => {
            sqlx::query("rollback to savepoint enqueue_operation").execute(&mut *conn).await?;
            match active(&mut *conn, instance).await? {
                Some(holder) => Err(DbError::InstanceBusy(Box::new(holder))),
                // It ended in between: the caller may simply try again.
                None => Err(DbError::Conflict { constraint }),
            }
        }
        Err(e) => Err(e),
    }
}

/// The job queued or running on `instance`, if any.
pub async fn active(ex: impl PgExecutor<'_>, instance: InstanceId) -> Result<Option<Job>> {
    Ok(sqlx::query_as("select * from jobs where instance_id = $1 and status in ('queued', 'running') limit 1")
        .bind(instance.as_uuid())
        .fetch_optional(ex)
        .await?)
}

/// The jobs queued or running on each of `instances` (for lists that show the operation in
/// progress per row).
pub async fn active_many(ex: impl PgExecutor<'_>, instances: &[InstanceId]) -> Result<Vec<Job>> {
    let ids: Vec<uuid::Uuid> = instances.iter().map(|i| i.as_uuid()).collect();
    Ok(sqlx::query_as("select * from jobs where instance_id = any($1) and status in ('queued', 'running')")
        .bind(&ids)
        .fetch_all(ex)
        .await?)
}

/// Sets the sizes of `instance` (locked by [`lock`] in the same transaction) within its
/// tenant's plan, the way a create is checked: the tenant's counters are locked, and growing any
/// of cores, memory or disk past a limit is [`DbError::QuotaExceeded`]. The counters follow the
/// instance's sizes (the usage trigger), so the new size holds quota from the moment it is
/// accepted, and a failed resize gives back what it did not apply.
pub async fn set_sizes_within_plan(
    conn: &mut PgConnection,
    tenant: TenantId,
    instance: &Instance,
    cores: i32,
    memory_mib: i64,
    disk_gib: i64,
) -> Result<Instance> {
    let row: Option<(i64, i64, i64, i32, i64, i64)> = sqlx::query_as(
        "select u.vcpus, u.memory_mib, u.disk_gib, p.max_vcpus, p.max_memory_mib, p.max_disk_gib \
         from tenant_usage u join tenants t on t.id = u.tenant_id join plans p on p.id = t.plan_id \
         where u.tenant_id = $1 for update of u",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(&mut *conn)
    .await?;
    let (vcpus, memory, disk, max_vcpus, max_memory, max_disk) = row.ok_or(DbError::NotFound)?;
    let grows = |resource, used: i64, old: i64, new: i64, limit: i64| -> Result<()> {
        if new > old && used - old + new > limit {
            return Err(DbError::QuotaExceeded(QuotaExceeded { resource, limit, used, requested: new - old }));
        }
        Ok(())
    };
    grows(QuotaResource::Vcpus, vcpus, instance.cores.into(), cores.into(), max_vcpus.into())?;
    grows(QuotaResource::MemoryMib, memory, instance.memory_mib, memory_mib, max_memory)?;
    grows(QuotaResource::DiskGib, disk, instance.disk_gib, disk_gib, max_disk)?;
    instances::set_sizes(&mut *conn, instance.id, cores, memory_mib, disk_gib).await
}

/// The snapshots a tenant's plan allows per instance.
pub async fn snapshot_limit(ex: impl PgExecutor<'_>, tenant: TenantId) -> Result<i32> {
    Ok(sqlx::query_scalar(
        "select p.max_snapshots_per_instance from tenants t join plans p on p.id = t.plan_id where t.id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_one(ex)
    .await?)
}

/// An instance whose guest the reconciler compares with what Proxmox reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The instance.
    pub id: InstanceId,
    /// Its guest's VMID.
    pub vmid: i32,
    /// Its status now.
    pub status: InstanceStatus,
    /// When its guest last started, as last recorded.
    pub guest_started_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The instances whose status follows their guest: `running`, `stopped` or `missing`, with a
/// VMID, and no operation queued or running (an operation owns its instance's status until it
/// ends).
pub async fn observable(ex: impl PgExecutor<'_>, cluster: &str) -> Result<Vec<Observed>> {
    let rows: Vec<(uuid::Uuid, i32, String, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
        "select i.id, r.vmid, i.status, i.guest_started_at from instances i join vmid_reservations r on r.instance_id = i.id \
         where r.cluster = $1 and i.status in ('running', 'stopped', 'missing') \
         and not exists (select 1 from jobs j where j.instance_id = i.id and j.status in ('queued', 'running'))",
    )
    .bind(cluster)
    .fetch_all(ex)
    .await?;
    rows.into_iter()
        .map(|(id, vmid, status, guest_started_at)| {
            let status = status
                .parse()
                .map_err(|e: nimbus_domain::ParseEnumError| DbError::Sqlx(sqlx::Error::Decode(Box::new(e))))?;
            Ok(Observed { id: InstanceId::from_uuid(id), vmid, status, guest_started_at })
        })
        .collect()
}

/// Records what Proxmox reported: each `(instance, status)` whose status differs is changed,
/// unless an operation got in since it was read (that operation owns the status now) or the
/// instance left the observed statuses. `seen` instances get `observed_at = now()`. Returns the
/// instances changed.
pub async fn record_observed(
    ex: impl PgExecutor<'_>,
    changes: &[(InstanceId, InstanceStatus)],
    seen: &[InstanceId],
) -> Result<Vec<InstanceId>> {
    let ids: Vec<uuid::Uuid> = changes.iter().map(|(i, _)| i.as_uuid()).collect();
    let statuses: Vec<&str> = changes.iter().map(|(_, s)| s.as_str()).collect();
    let seen: Vec<uuid::Uuid> = seen.iter().map(|i| i.as_uuid()).collect();
    let changed: Vec<uuid::Uuid> = sqlx::query_scalar(
        "with c as (select * from unnest($1::uuid[], $2::text[]) as c(id, status)), \
         s as (update instances i set observed_at = now() where i.id = any($3) and i.id not in (select id from c)), \
         u as (update instances i set status = c.status, observed_at = case when c.status = 'missing' \
         then i.observed_at else now() end from c where i.id = c.id and i.status <> c.status \
         and i.status in ('running', 'stopped', 'missing') \
         and not exists (select 1 from jobs j where j.instance_id = i.id and j.status in ('queued', 'running')) \
         returning i.id) select id from u",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&seen)
    .fetch_all(ex)
    .await?;
    Ok(changed.into_iter().map(InstanceId::from_uuid).collect())
}

/// Records when running guests started (from Proxmox's uptime; `None` once they stopped).
pub async fn record_started(
    ex: impl PgExecutor<'_>,
    started: &[(InstanceId, Option<chrono::DateTime<chrono::Utc>>)],
) -> Result<u64> {
    let ids: Vec<uuid::Uuid> = started.iter().map(|(i, _)| i.as_uuid()).collect();
    let at: Vec<Option<chrono::DateTime<chrono::Utc>>> = started.iter().map(|(_, a)| *a).collect();
    let done = sqlx::query(
        "update instances i set guest_started_at = s.at from unnest($1::uuid[], $2::timestamptz[]) as s(id, at) \
         where i.id = s.id",
    )
    .bind(&ids)
    .bind(&at)
    .execute(ex)
    .await?;
    Ok(done.rows_affected())
}
