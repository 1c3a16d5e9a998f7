//! Instances and their VMID reservations, and the one operation that must be exactly right under
//! concurrency: creating an instance within the tenant's plan limits together with its
//! provision job ([`create_with_job`]).

use chrono::{DateTime, Utc};
use nimbus_domain::{
    InstanceId, InstanceKind, InstanceStatus, JobId, PageRequest, ResourceRef, ResourceRequest, ResourceUsage, TenantId,
};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgExecutor, Row};

use crate::jobs::{Enqueued, Job, NewJob};
use crate::{DbError, Result, jobs, rows};

/// An instance row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Id.
    pub id: InstanceId,
    /// Owner.
    pub tenant_id: TenantId,
    /// DNS label, unique per tenant among instances not deleted.
    pub name: String,
    /// VM or container.
    pub kind: InstanceKind,
    /// The template it was created from.
    pub template: String,
    /// Cores.
    pub cores: i32,
    /// Memory, MiB.
    pub memory_mib: i64,
    /// Disk, GiB.
    pub disk_gib: i64,
    /// Authorised SSH public keys.
    pub ssh_keys: Vec<String>,
    /// Proxmox node, once placed.
    pub node: Option<String>,
    /// Proxmox VMID, once reserved.
    pub vmid: Option<i32>,
    /// Life-cycle status.
    pub status: InstanceStatus,
    /// The guest's addresses, once known.
    pub ip_addresses: Vec<String>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When the running guest last started, as the reconciler read it from Proxmox's uptime.
    pub guest_started_at: Option<DateTime<Utc>>,
}

impl<'r> FromRow<'r, PgRow> for Instance {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(Instance {
            id: rows::id(row, "id")?,
            tenant_id: rows::id(row, "tenant_id")?,
            name: row.try_get("name")?,
            kind: rows::enumeration(row, "kind")?,
            template: row.try_get("template")?,
            cores: row.try_get("cores")?,
            memory_mib: row.try_get("memory_mib")?,
            disk_gib: row.try_get("disk_gib")?,
            ssh_keys: row.try_get("ssh_keys")?,
            node: row.try_get("node")?,
            vmid: row.try_get("vmid")?,
            status: rows::enumeration(row, "status")?,
            ip_addresses: row.try_get("ip_addresses")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            guest_started_at: row.try_get("guest_started_at")?,
        })
    }
}

// inet[] goes out as text[] of bare addresses (`host()`, no `/32`), so the row mapping needs no
// network types. A macro, not a const, because sqlx 0.9 takes only static SQL and `concat!`
// needs literals.
macro_rules! columns {
    () => {
        "id, tenant_id, name, kind, template, cores, memory_mib, disk_gib, ssh_keys, node, vmid, \
         status, array(select host(a) from unnest(ip_addresses) with ordinality u(a, n) order by n) \
         as ip_addresses, created_at, updated_at, guest_started_at"
    };
}

/// What a new instance is.
#[derive(Clone, Debug)]
pub struct NewInstance {
    /// DNS label.
    pub name: String,
    /// VM or container.
    pub kind: InstanceKind,
    /// Template.
    pub template: String,
    /// Cores (> 0).
    pub cores: i32,
    /// Memory, MiB (> 0).
    pub memory_mib: i64,
    /// Disk, GiB (> 0).
    pub disk_gib: i64,
    /// SSH public keys.
    pub ssh_keys: Vec<String>,
    /// Node chosen by the caller (placement), if any.
    pub node: Option<String>,
}

impl NewInstance {
    /// What it asks of the quota.
    pub fn request(&self) -> ResourceRequest {
        ResourceRequest { vcpus: i64::from(self.cores), memory_mib: self.memory_mib, disk_gib: self.disk_gib }
    }
}

/// The result of [`create_with_job`].
#[derive(Clone, Debug)]
pub struct Created {
    /// The instance (status `provisioning`).
    pub instance: Instance,
    /// Its job and the message to push.
    pub enqueued: Enqueued,
}

/// What a tenant holds now: instances that hold quota (not failed, not deleted). Read from the
/// tenant's counters in `tenant_usage`, which triggers on `instances` keep exact; an unknown
/// tenant holds nothing.
pub async fn usage(ex: impl PgExecutor<'_>, tenant: TenantId) -> Result<ResourceUsage> {
    let row: Option<(i64, i64, i64, i64)> =
        sqlx::query_as("select instances, vcpus, memory_mib, disk_gib from tenant_usage where tenant_id = $1")
            .bind(tenant.as_uuid())
            .fetch_optional(ex)
            .await?;
    let (instances, vcpus, memory_mib, disk_gib) = row.unwrap_or_default();
    Ok(ResourceUsage { instances, vcpus, memory_mib, disk_gib })
}

/// Creates an instance of `tenant` within its plan's limits, with its provision `job` and the
/// job's first event, in ONE statement ([`create_many`] of one). The quota check is the
/// database's: the insert trigger adds the instance to the tenant's counters at the end of the
/// statement, locking them, and refuses it if a limit would break (`tenant_usage_add`). The lock
/// is taken after the inserts, so in autocommit it is held for the commit alone and one tenant's
/// creates follow each other quickly; inside a transaction it is held until that commits.
///
/// No outbox row is written: the caller pushes the job to Redis right after commit (and owes an
/// outbox row only if that push fails), and a push lost in between is found by the relay's sweep
/// (`outbox::owe_undelivered`).
///
/// Over the limits is `DbError::QuotaExceeded`; a taken name is `Conflict { constraint:
/// "instances_tenant_name_key" }`; an unknown tenant is `NotFound`.
pub async fn create_with_job(
    ex: impl PgExecutor<'_>,
    tenant: TenantId,
    new: &NewInstance,
    job: &NewJob,
) -> Result<Created> {
    let create = NewCreate { tenant, instance: new.clone(), job: job.clone() };
    match create_many(ex, std::slice::from_ref(&create)).await {
        Ok(mut created) => created.pop().ok_or(DbError::NotFound),
        Err(DbError::ForeignKey { constraint })
            if constraint == "instances_tenant_fkey" || constraint == "jobs_tenant_fkey" =>
        {
            Err(DbError::NotFound)
        }
        Err(e) => Err(e),
    }
}

/// One create of [`create_many`].
#[derive(Clone, Debug)]
pub struct NewCreate {
    /// The owner.
    pub tenant: TenantId,
    /// The instance.
    pub instance: NewInstance,
    /// Its provision job.
    pub job: NewJob,
}

/// [`create_with_job`] for many creates (of any tenants) in ONE statement: all are written, or
/// none. The statement-level usage trigger adds each tenant's share once and checks it, so a
/// batch that would take any tenant over its plan fails as a whole (`QuotaExceeded` with the
/// batch's total); so does a taken name or a refused size. The caller then runs the creates one
/// by one to give each its own answer. Results come in the order of `creates`.
pub async fn create_many(ex: impl PgExecutor<'_>, creates: &[NewCreate]) -> Result<Vec<Created>> {
    let n = creates.len();
    let mut ids = Vec::with_capacity(n);
    let mut tenants = Vec::with_capacity(n);
    let (mut names, mut kinds, mut templates) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut cores, mut memory, mut disk) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut ssh_keys, mut nodes) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut job_ids, mut job_kinds, mut queues) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut payloads, mut resources, mut max_attempts) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut run_after, mut request_ids, mut idempotency_keys) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let mut traceparents = Vec::with_capacity(n);
    let encode = |e: serde_json::Error| DbError::Sqlx(sqlx::Error::Encode(Box::new(e)));
    for c in creates {
        let id = InstanceId::new();
        let mut refs = c.job.resources.clone();
        let reference = ResourceRef::instance(id);
        if !refs.contains(&reference) {
            refs.insert(0, reference);
        }
        ids.push(id.as_uuid());
        tenants.push(c.tenant.as_uuid());
        names.push(c.instance.name.as_str());
        kinds.push(c.instance.kind.as_str());
        templates.push(c.instance.template.as_str());
        cores.push(c.instance.cores);
        memory.push(c.instance.memory_mib);
        disk.push(c.instance.disk_gib);
        ssh_keys.push(serde_json::to_value(&c.instance.ssh_keys).map_err(encode)?);
        nodes.push(c.instance.node.as_deref());
        job_ids.push(JobId::new().as_uuid());
        job_kinds.push(c.job.kind.as_str());
        queues.push(c.job.queue.as_str());
        payloads.push(&c.job.payload);
        resources.push(serde_json::to_value(&refs).map_err(encode)?);
        max_attempts.push(c.job.max_attempts);
        run_after.push(c.job.run_after);
        request_ids.push(c.job.request_id.as_deref());
        idempotency_keys.push(c.job.idempotency_key.as_deref());
        traceparents.push(c.job.traceparent.as_deref());
    }
    let rows = sqlx::query(concat!(
        "with r as (select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int4[], \
         $7::int8[], $8::int8[], $9::jsonb[], $10::text[], $11::uuid[], $12::text[], $13::text[], $14::jsonb[], \
         $15::jsonb[], $16::int4[], $17::timestamptz[], $18::text[], $19::text[], $20::text[]) with ordinality \
         as r(id, tenant_id, name, kind, template, cores, memory_mib, disk_gib, ssh_keys, node, job_id, job_kind, \
         queue, payload, resources, max_attempts, run_after, request_id, idempotency_key, traceparent, n)), \
         i as (insert into instances (id, tenant_id, name, kind, template, cores, memory_mib, disk_gib, ssh_keys, \
         node) select id, tenant_id, name, kind, template, cores, memory_mib, disk_gib, \
         array(select jsonb_array_elements_text(ssh_keys)), node from r order by tenant_id, name returning ",
        columns!(),
        "), j as (insert into jobs (id, tenant_id, kind, queue, payload, resources, max_attempts, run_after, \
         request_id, idempotency_key, traceparent) select job_id, tenant_id, job_kind, queue, payload, resources, \
         max_attempts, coalesce(run_after, now()), request_id, idempotency_key, traceparent from r \
         order by tenant_id, name returning *), \
         e as (insert into job_events (job_id, status, progress, step) select id, status, progress, step from j) \
         select i.*, ",
        jobs::job_columns_as!("j", "job_"),
        ", ",
        jobs::dispatch_json!("j"),
        " as dispatch from r join i on i.id = r.id join j on j.id = r.job_id order by r.n"
    ))
    .bind(&ids)
    .bind(&tenants)
    .bind(&names)
    .bind(&kinds)
    .bind(&templates)
    .bind(&cores)
    .bind(&memory)
    .bind(&disk)
    .bind(&ssh_keys)
    .bind(&nodes)
    .bind(&job_ids)
    .bind(&job_kinds)
    .bind(&queues)
    .bind(&payloads)
    .bind(&resources)
    .bind(&max_attempts)
    .bind(&run_after)
    .bind(&request_ids)
    .bind(&idempotency_keys)
    .bind(&traceparents)
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Created {
                instance: Instance::from_row(row)?,
                enqueued: Enqueued {
                    job: Job::decode(row, "job_")?,
                    outbox_id: None,
                    dispatch: row.try_get("dispatch")?,
                },
            })
        })
        .collect()
}

/// [`create_with_job`] on its own (autocommit).
pub async fn create(pool: &sqlx::PgPool, tenant: TenantId, new: &NewInstance, job: &NewJob) -> Result<Created> {
    create_with_job(pool, tenant, new, job).await
}

/// An instance of `tenant` (a foreign tenant's is `NotFound`).
pub async fn get(ex: impl PgExecutor<'_>, tenant: TenantId, id: InstanceId) -> Result<Instance> {
    Ok(sqlx::query_as(concat!("select ", columns!(), " from instances where tenant_id = $1 and id = $2"))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_one(ex)
        .await?)
}

/// The ids of `tenant`'s instances that are not deleted (nor failed): those still billed.
pub async fn live_ids(ex: impl PgExecutor<'_>, tenant: TenantId) -> Result<Vec<InstanceId>> {
    let ids: Vec<uuid::Uuid> =
        sqlx::query_scalar("select id from instances where tenant_id = $1 and status not in ('deleted', 'failed')")
            .bind(tenant.as_uuid())
            .fetch_all(ex)
            .await?;
    Ok(ids.into_iter().map(Into::into).collect())
}

/// The instance of `tenant` whose guest has VMID `vmid`, unless deleted.
pub async fn get_by_vmid(ex: impl PgExecutor<'_>, tenant: TenantId, vmid: u32) -> Result<Instance> {
    Ok(sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from instances where tenant_id = $1 and vmid = $2 and status <> 'deleted' order by created_at desc limit 1"
    ))
    .bind(tenant.as_uuid())
    .bind(i32::try_from(vmid).unwrap_or(i32::MAX))
    .fetch_one(ex)
    .await?)
}

/// An instance of `tenant`, locked until the caller's transaction ends (operations take it
/// before they enqueue, so status checks and the enqueue see the same row).
pub async fn get_for_update(ex: impl PgExecutor<'_>, tenant: TenantId, id: InstanceId) -> Result<Instance> {
    Ok(sqlx::query_as(concat!("select ", columns!(), " from instances where tenant_id = $1 and id = $2 for update"))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_one(ex)
        .await?)
}

/// Sets an instance's sizes (its tenant's counters follow through the usage trigger).
pub async fn set_sizes(
    ex: impl PgExecutor<'_>,
    id: InstanceId,
    cores: i32,
    memory_mib: i64,
    disk_gib: i64,
) -> Result<Instance> {
    Ok(sqlx::query_as(concat!(
        "update instances set cores = $2, memory_mib = $3, disk_gib = $4 where id = $1 returning ",
        columns!()
    ))
    .bind(id.as_uuid())
    .bind(cores)
    .bind(memory_mib)
    .bind(disk_gib)
    .fetch_one(ex)
    .await?)
}

/// Records the SSH keys an instance's guest was (re)built with.
pub async fn set_ssh_keys(ex: impl PgExecutor<'_>, id: InstanceId, keys: &[String]) -> Result<Instance> {
    Ok(sqlx::query_as(concat!("update instances set ssh_keys = $2 where id = $1 returning ", columns!()))
        .bind(id.as_uuid())
        .bind(keys)
        .fetch_one(ex)
        .await?)
}

/// Records the template an instance was (re)built from.
pub async fn set_template(ex: impl PgExecutor<'_>, id: InstanceId, template: &str) -> Result<Instance> {
    Ok(sqlx::query_as(concat!("update instances set template = $2 where id = $1 returning ", columns!()))
        .bind(id.as_uuid())
        .bind(template)
        .fetch_one(ex)
        .await?)
}

/// An instance by id (workers).
pub async fn get_any(ex: impl PgExecutor<'_>, id: InstanceId) -> Result<Instance> {
    Ok(sqlx::query_as(concat!("select ", columns!(), " from instances where id = $1"))
        .bind(id.as_uuid())
        .fetch_one(ex)
        .await?)
}

/// A page of `tenant`'s instances that are not deleted, newest first, with the total.
pub async fn list(ex: impl PgExecutor<'_>, tenant: TenantId, page: PageRequest) -> Result<(Vec<Instance>, i64)> {
    let rows = sqlx::query(concat!(
        "select t.total, p.* from (select count(*) as total from instances \
         where tenant_id = $1 and status <> 'deleted') t \
         left join lateral (select ",
        columns!(),
        " from instances where tenant_id = $1 and status <> 'deleted' \
         order by created_at desc, id desc limit $2 offset $3) p on true"
    ))
    .bind(tenant.as_uuid())
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(ex)
    .await?;
    Ok(rows::page::<Instance>(&rows)?)
}

/// Which instances an operators' list shows (every field optional).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceFilter {
    /// One tenant's.
    pub tenant: Option<TenantId>,
    /// Those on this Proxmox node.
    pub node: Option<String>,
    /// Those with this status (without it: all but `deleted`).
    pub status: Option<InstanceStatus>,
}

/// A page of every tenant's instances matching `filter`, newest first, with the total (the
/// provider's operators).
pub async fn list_all(
    ex: impl PgExecutor<'_>,
    filter: &InstanceFilter,
    page: PageRequest,
) -> Result<(Vec<Instance>, i64)> {
    let rows = sqlx::query(concat!(
        "select t.total, p.* from (select count(*) as total from instances \
         where ($1::uuid is null or tenant_id = $1) and ($2::text is null or node = $2) \
         and (case when $3::text is null then status <> 'deleted' else status = $3 end)) t \
         left join lateral (select ",
        columns!(),
        " from instances where ($1::uuid is null or tenant_id = $1) and ($2::text is null or node = $2) \
         and (case when $3::text is null then status <> 'deleted' else status = $3 end) \
         order by created_at desc, id desc limit $4 offset $5) p on true"
    ))
    .bind(filter.tenant.map(|t| t.as_uuid()))
    .bind(filter.node.as_deref())
    .bind(filter.status.map(|s| s.as_str()))
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(ex)
    .await?;
    Ok(rows::page::<Instance>(&rows)?)
}

/// Sets an instance's status (failed or deleted releases its quota and, once deleted, its name).
pub async fn set_status(ex: impl PgExecutor<'_>, id: InstanceId, status: InstanceStatus) -> Result<Instance> {
    Ok(sqlx::query_as(concat!("update instances set status = $2 where id = $1 returning ", columns!()))
        .bind(id.as_uuid())
        .bind(status.as_str())
        .fetch_one(ex)
        .await?)
}

/// Records where the instance lives on Proxmox.
pub async fn set_placement(ex: impl PgExecutor<'_>, id: InstanceId, node: &str, vmid: i32) -> Result<Instance> {
    Ok(sqlx::query_as(concat!("update instances set node = $2, vmid = $3 where id = $1 returning ", columns!()))
        .bind(id.as_uuid())
        .bind(node)
        .bind(vmid)
        .fetch_one(ex)
        .await?)
}

/// Records the guest's IP addresses (each must parse as an `inet`, else `Sqlx` with a data
/// error).
pub async fn set_ip_addresses(ex: impl PgExecutor<'_>, id: InstanceId, addresses: &[String]) -> Result<Instance> {
    Ok(sqlx::query_as(concat!(
        "update instances set ip_addresses = $2::text[]::inet[] where id = $1 returning ",
        columns!()
    ))
    .bind(id.as_uuid())
    .bind(addresses)
    .fetch_one(ex)
    .await?)
}

/// A VMID held for an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmidReservation {
    /// The Proxmox cluster.
    pub cluster: String,
    /// The VMID.
    pub vmid: i32,
    /// The node it was reserved for.
    pub node: Option<String>,
    /// `true` when this call created the reservation, `false` when it already existed (a retry
    /// adopting what an earlier attempt reserved).
    pub fresh: bool,
}

/// Reserves `candidate` on `cluster` for `instance`, or returns the reservation the instance
/// already has (whatever its VMID). A VMID held by another instance is
/// `Conflict { constraint: "vmid_reservations_pkey" }`: ask for the next candidate.
pub async fn reserve_vmid(
    ex: impl PgExecutor<'_>,
    cluster: &str,
    instance: InstanceId,
    node: Option<&str>,
    candidate: i32,
) -> Result<VmidReservation> {
    let (cluster, vmid, node, fresh): (String, i32, Option<String>, bool) = sqlx::query_as(
        "with ins as (insert into vmid_reservations (cluster, vmid, instance_id, node) values ($1, $2, $3, $4) \
         on conflict (instance_id) do nothing returning cluster, vmid, node) \
         select cluster, vmid, node, true from ins \
         union all \
         select cluster, vmid, node, false from vmid_reservations \
         where instance_id = $3 and not exists (select 1 from ins)",
    )
    .bind(cluster)
    .bind(candidate)
    .bind(instance.as_uuid())
    .bind(node)
    .fetch_one(ex)
    .await?;
    Ok(VmidReservation { cluster, vmid, node, fresh })
}

/// The reservation of an instance, if any.
pub async fn reservation(ex: impl PgExecutor<'_>, instance: InstanceId) -> Result<Option<VmidReservation>> {
    let row: Option<(String, i32, Option<String>)> =
        sqlx::query_as("select cluster, vmid, node from vmid_reservations where instance_id = $1")
            .bind(instance.as_uuid())
            .fetch_optional(ex)
            .await?;
    Ok(row.map(|(cluster, vmid, node)| VmidReservation { cluster, vmid, node, fresh: false }))
}

/// The smallest VMID ≥ `from` not reserved on `cluster` (Proxmox may still use it for a guest
/// Nimbus does not manage: the caller checks and tries the next one).
pub async fn next_free_vmid(ex: impl PgExecutor<'_>, cluster: &str, from: i32) -> Result<i32> {
    Ok(sqlx::query_scalar(
        "select min(c) from (select $2::int as c union all \
         select vmid + 1 from vmid_reservations where cluster = $1 and vmid >= $2) cands \
         where not exists (select 1 from vmid_reservations r where r.cluster = $1 and r.vmid = cands.c)",
    )
    .bind(cluster)
    .bind(from)
    .fetch_one(ex)
    .await?)
}

/// Releases an instance's VMID (after the guest is destroyed).
pub async fn release_vmid(ex: impl PgExecutor<'_>, instance: InstanceId) -> Result<bool> {
    let done = sqlx::query("delete from vmid_reservations where instance_id = $1")
        .bind(instance.as_uuid())
        .execute(ex)
        .await?;
    Ok(done.rows_affected() > 0)
}
