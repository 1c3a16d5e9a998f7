//! Instances: the quota-checked create, names, sizes, VMID reservations.

use std::sync::Arc;

use nimbus_db::instances::{self, NewInstance};
use nimbus_db::{DbError, jobs};
use nimbus_domain::{
    ErrorCode, InstanceKind, InstanceStatus, JobStatus, PageRequest, PlanLimits, QuotaResource, ResourceRef, TenantId,
};
use nimbus_testkit::TestDb;

use crate::{ROOMY, count, provision_job, tenant_with, vm};

#[tokio::test]
async fn create_writes_instance_and_job_together_and_owes_no_outbox_row() {
    let db = TestDb::new().await;
    let (_, tenant, _) = tenant_with(db.pool(), ROOMY).await;
    let mut job = provision_job();
    job.request_id = Some("req-42".into());
    let created = instances::create(db.pool(), tenant.id, &vm("web-1"), &job).await.unwrap();

    assert_eq!(created.instance.status, InstanceStatus::Provisioning);
    assert_eq!(created.instance.kind, InstanceKind::Qemu);
    assert_eq!(created.instance.ssh_keys.len(), 1);
    let j = &created.enqueued.job;
    assert_eq!((j.status, j.tenant_id, j.attempts), (JobStatus::Queued, Some(tenant.id), 0));
    assert_eq!(j.resources, vec![ResourceRef::instance(created.instance.id)]);
    assert_eq!(j.request_id.as_deref(), Some("req-42"));
    assert_eq!(
        created.enqueued.dispatch,
        serde_json::json!({"jobId": j.id.to_string(), "kind": "provision", "queue": "provision"})
    );
    // The caller pushes at once; an outbox row is owed only when that push fails.
    assert_eq!(created.enqueued.outbox_id, None);
    assert_eq!(count(db.pool(), "outbox").await, 0);
    assert_eq!(jobs::events_after(db.pool(), j.id, 0, 10).await.unwrap().len(), 1);

    let got = instances::get(db.pool(), tenant.id, created.instance.id).await.unwrap();
    assert_eq!(got, created.instance);
    // Another tenant's id answers exactly like a missing one.
    let (_, other, _) = tenant_with(db.pool(), ROOMY).await;
    assert!(matches!(instances::get(db.pool(), other.id, got.id).await, Err(DbError::NotFound)));
    let handle = jobs::get_for_tenant(db.pool(), tenant.id, j.id).await.unwrap().handle();
    assert_eq!(handle.links.self_, format!("/v1/jobs/{}", j.id));
    assert!(matches!(jobs::get_for_tenant(db.pool(), other.id, j.id).await, Err(DbError::NotFound)));
}

#[tokio::test]
async fn a_taken_name_is_a_conflict_and_leaves_nothing_behind() {
    let db = TestDb::new().await;
    let (_, tenant, _) = tenant_with(db.pool(), ROOMY).await;
    let first = instances::create(db.pool(), tenant.id, &vm("db"), &provision_job()).await.unwrap();
    let err = instances::create(db.pool(), tenant.id, &vm("db"), &provision_job()).await.unwrap_err();
    assert!(matches!(&err, DbError::Conflict { constraint } if constraint == "instances_tenant_name_key"), "{err:?}");
    assert_eq!(err.code(), ErrorCode::NameTaken);
    assert_eq!(count(db.pool(), "jobs").await, 1);
    assert_eq!(count(db.pool(), "job_events").await, 1);

    // Other tenants may use the name; a deleted instance frees it.
    let (_, other, _) = tenant_with(db.pool(), ROOMY).await;
    instances::create(db.pool(), other.id, &vm("db"), &provision_job()).await.unwrap();
    instances::set_status(db.pool(), first.instance.id, InstanceStatus::Deleted).await.unwrap();
    instances::create(db.pool(), tenant.id, &vm("db"), &provision_job()).await.unwrap();
}

#[tokio::test]
async fn over_quota_is_refused_and_failed_instances_release_their_share() {
    let db = TestDb::new().await;
    let limits = PlanLimits { max_instances: 2, max_vcpus: 3, max_memory_mib: 4096, max_disk_gib: 100 };
    let (_, tenant, _) = tenant_with(db.pool(), limits).await;
    let big = NewInstance { cores: 2, ..vm("a") };
    let a = instances::create(db.pool(), tenant.id, &big, &provision_job()).await.unwrap();
    let err = instances::create(db.pool(), tenant.id, &NewInstance { cores: 2, ..vm("b") }, &provision_job())
        .await
        .unwrap_err();
    let DbError::QuotaExceeded(q) = &err else { panic!("{err:?}") };
    assert_eq!((q.resource, q.limit, q.used, q.requested), (QuotaResource::Vcpus, 3, 2, 2));
    assert_eq!(err.code(), ErrorCode::QuotaExceeded);
    assert_eq!(count(db.pool(), "instances").await, 1);

    instances::create(db.pool(), tenant.id, &vm("b"), &provision_job()).await.unwrap();
    let err = instances::create(db.pool(), tenant.id, &vm("c"), &provision_job()).await.unwrap_err();
    assert!(matches!(err, DbError::QuotaExceeded(q) if q.resource == QuotaResource::Instances));

    instances::set_status(db.pool(), a.instance.id, InstanceStatus::Failed).await.unwrap();
    let usage = instances::usage(db.pool(), tenant.id).await.unwrap();
    assert_eq!((usage.instances, usage.vcpus, usage.memory_mib, usage.disk_gib), (1, 1, 1024, 10));
    instances::create(db.pool(), tenant.id, &vm("c"), &provision_job()).await.unwrap();
}

#[tokio::test]
async fn concurrent_creates_never_overshoot_the_quota() {
    let db = TestDb::new().await;
    let limits = PlanLimits { max_instances: 5, ..ROOMY };
    let (_, tenant, _) = tenant_with(db.pool(), limits).await;
    let pool = Arc::new(db.pool().clone());
    // Start all 20 together so their transactions really overlap.
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (pool, barrier) = (pool.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut tx = pool.begin().await.unwrap();
                barrier.wait().await;
                let r =
                    instances::create_with_job(&mut *tx, tenant.id, &vm(&format!("vm-{i}")), &provision_job()).await;
                if r.is_ok() {
                    tx.commit().await.unwrap();
                }
                r
            })
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(DbError::QuotaExceeded(q)) => {
                assert_eq!(q.resource, QuotaResource::Instances);
                refused += 1
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((ok, refused), (5, 15));
    assert_eq!(count(db.pool(), "instances").await, 5);
    assert_eq!(count(db.pool(), "jobs").await, 5);
    let usage = instances::usage(db.pool(), tenant.id).await.unwrap();
    assert_eq!(usage.instances, 5, "the refused creates left the counters as they were");
}

#[tokio::test]
async fn the_database_refuses_any_write_that_takes_a_tenant_over_its_plan() {
    let db = TestDb::new().await;
    let limits = PlanLimits { max_instances: 3, max_vcpus: 4, max_memory_mib: 4096, max_disk_gib: 25 };
    let (_, tenant, _) = tenant_with(db.pool(), limits).await;
    let a = instances::create(db.pool(), tenant.id, &vm("a"), &provision_job()).await.unwrap();
    instances::create(db.pool(), tenant.id, &NewInstance { disk_gib: 10, ..vm("b") }, &provision_job()).await.unwrap();
    // Memory is checked before disk, as `PlanLimits::check` does.
    let both = NewInstance { memory_mib: 4096, disk_gib: 10, ..vm("c") };
    let err = instances::create(db.pool(), tenant.id, &both, &provision_job()).await.unwrap_err();
    let DbError::QuotaExceeded(q) = &err else { panic!("{err:?}") };
    assert_eq!((q.resource, q.limit, q.used, q.requested), (QuotaResource::MemoryMib, 4096, 2048, 4096));
    let err = instances::create(db.pool(), tenant.id, &NewInstance { disk_gib: 6, ..vm("c") }, &provision_job()).await;
    assert!(matches!(err, Err(DbError::QuotaExceeded(q)) if q.resource == QuotaResource::DiskGib && q.used == 20));

    // A plan lowered below what the tenant holds refuses the next create, and says why.
    instances::set_status(db.pool(), a.instance.id, InstanceStatus::Failed).await.unwrap();
    sqlx::query("update plans set max_instances = 1 where id = (select plan_id from tenants where id = $1)")
        .bind(tenant.id.as_uuid())
        .execute(db.pool())
        .await
        .unwrap();
    let err = instances::create(db.pool(), tenant.id, &vm("d"), &provision_job()).await.unwrap_err();
    assert!(matches!(err, DbError::QuotaExceeded(q) if q.resource == QuotaResource::Instances && q.limit == 1));
    assert_eq!(instances::usage(db.pool(), tenant.id).await.unwrap().instances, 1);
}

#[tokio::test]
async fn a_batch_of_creates_is_written_together_or_not_at_all() {
    use nimbus_db::instances::NewCreate;
    let db = TestDb::new().await;
    let (_, roomy, _) = tenant_with(db.pool(), ROOMY).await;
    let (_, small, _) = tenant_with(db.pool(), PlanLimits { max_instances: 2, ..ROOMY }).await;
    let create = |tenant: TenantId, name: &str| NewCreate { tenant, instance: vm(name), job: provision_job() };

    let batch = vec![create(roomy.id, "a"), create(small.id, "a"), create(roomy.id, "b"), create(small.id, "b")];
    let created = instances::create_many(db.pool(), &batch).await.unwrap();
    let got: Vec<_> = created.iter().map(|c| (c.instance.tenant_id, c.instance.name.as_str())).collect();
    assert_eq!(got, vec![(roomy.id, "a"), (small.id, "a"), (roomy.id, "b"), (small.id, "b")], "in request order");
    for c in &created {
        assert_eq!(c.enqueued.job.resources, vec![ResourceRef::instance(c.instance.id)]);
        assert_eq!(c.enqueued.job.tenant_id, Some(c.instance.tenant_id));
        assert_eq!(c.enqueued.dispatch["jobId"], c.enqueued.job.id.to_string());
        assert_eq!(c.instance.ssh_keys, vm("x").ssh_keys);
    }
    assert_eq!(count(db.pool(), "job_events").await, 4);
    assert_eq!(instances::usage(db.pool(), small.id).await.unwrap().instances, 2);
    assert_eq!(instances::usage(db.pool(), roomy.id).await.unwrap().vcpus, 2);

    // One create over its tenant's plan, or one taken name, refuses the whole batch.
    let over = vec![create(roomy.id, "c"), create(small.id, "c")];
    let err = instances::create_many(db.pool(), &over).await.unwrap_err();
    assert!(matches!(err, DbError::QuotaExceeded(q) if q.resource == QuotaResource::Instances), "{err:?}");
    let taken = vec![create(roomy.id, "d"), create(roomy.id, "a")];
    let err = instances::create_many(db.pool(), &taken).await.unwrap_err();
    assert!(matches!(&err, DbError::Conflict { constraint } if constraint == "instances_tenant_name_key"), "{err:?}");
    assert_eq!((count(db.pool(), "instances").await, count(db.pool(), "jobs").await), (4, 4));
    assert_eq!(instances::usage(db.pool(), roomy.id).await.unwrap().instances, 2);
}

#[tokio::test]
async fn bad_sizes_names_and_tenants_are_refused() {
    let db = TestDb::new().await;
    let (_, tenant, _) = tenant_with(db.pool(), ROOMY).await;
    let zero = NewInstance { cores: 0, ..vm("z") };
    let err = instances::create(db.pool(), tenant.id, &zero, &provision_job()).await.unwrap_err();
    assert!(matches!(&err, DbError::Check { constraint } if constraint == "instances_sizes_check"), "{err:?}");
    for name in ["Upper", "-dash", "a_b", ""] {
        let err = instances::create(db.pool(), tenant.id, &vm(name), &provision_job()).await.unwrap_err();
        assert!(
            matches!(&err, DbError::Check { constraint } if constraint == "instances_name_check"),
            "{name}: {err:?}"
        );
    }
    let err = instances::create(db.pool(), TenantId::new(), &vm("x"), &provision_job()).await.unwrap_err();
    assert!(matches!(err, DbError::NotFound), "{err:?}");
}

#[tokio::test]
async fn list_pages_and_placement_updates() {
    let db = TestDb::new().await;
    let (_, tenant, _) = tenant_with(db.pool(), ROOMY).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            instances::create(db.pool(), tenant.id, &vm(&format!("n{i}")), &provision_job()).await.unwrap().instance.id,
        );
    }
    let (page, total) = instances::list(db.pool(), tenant.id, PageRequest { page: 2, per_page: 2 }).await.unwrap();
    assert_eq!(total, 5);
    assert_eq!(page.iter().map(|i| i.id).collect::<Vec<_>>(), vec![ids[2], ids[1]]);
    let (past, total) = instances::list(db.pool(), tenant.id, PageRequest { page: 9, per_page: 2 }).await.unwrap();
    assert!(past.is_empty());
    assert_eq!(total, 5);

    let placed = instances::set_placement(db.pool(), ids[0], "pve2", 123).await.unwrap();
    assert_eq!((placed.node.as_deref(), placed.vmid), (Some("pve2"), Some(123)));
    let ips = vec!["10.0.0.5".to_string(), "2001:db8::5".to_string()];
    assert_eq!(instances::set_ip_addresses(db.pool(), ids[0], &ips).await.unwrap().ip_addresses, ips);
    assert!(instances::set_ip_addresses(db.pool(), ids[0], &["not-an-ip".into()]).await.is_err());
    let err = instances::set_placement(db.pool(), ids[1], "pve1", 42).await.unwrap_err();
    assert!(matches!(&err, DbError::Check { constraint } if constraint == "instances_vmid_check"), "{err:?}");
}

#[tokio::test]
async fn vmid_reservations_are_unique_and_a_retry_adopts_its_own() {
    let db = TestDb::new().await;
    let (_, tenant, _) = tenant_with(db.pool(), ROOMY).await;
    let a = instances::create(db.pool(), tenant.id, &vm("a"), &provision_job()).await.unwrap().instance.id;
    let b = instances::create(db.pool(), tenant.id, &vm("b"), &provision_job()).await.unwrap().instance.id;

    let first = instances::reserve_vmid(db.pool(), "default", a, Some("pve1"), 100).await.unwrap();
    assert_eq!((first.vmid, first.fresh), (100, true));
    // The retry asks with a new candidate from Proxmox and gets back what it reserved before.
    let retry = instances::reserve_vmid(db.pool(), "default", a, Some("pve1"), 105).await.unwrap();
    assert_eq!((retry.vmid, retry.fresh, retry.node.as_deref()), (100, false, Some("pve1")));

    let err = instances::reserve_vmid(db.pool(), "default", b, None, 100).await.unwrap_err();
    assert!(matches!(&err, DbError::Conflict { constraint } if constraint == "vmid_reservations_pkey"), "{err:?}");
    assert_eq!(instances::next_free_vmid(db.pool(), "default", 100).await.unwrap(), 101);
    // Another cluster has its own VMID space.
    assert!(instances::reserve_vmid(db.pool(), "eu-2", b, None, 100).await.unwrap().fresh);
    assert_eq!(instances::reservation(db.pool(), b).await.unwrap().unwrap().cluster, "eu-2");

    assert!(instances::release_vmid(db.pool(), a).await.unwrap());
    assert!(instances::reservation(db.pool(), a).await.unwrap().is_none());
    assert_eq!(instances::next_free_vmid(db.pool(), "default", 100).await.unwrap(), 100);
}

/// The old way: summing the instances that hold quota.
async fn summed(pool: &sqlx::PgPool, tenant: TenantId) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "select count(*), coalesce(sum(cores), 0)::bigint, coalesce(sum(memory_mib), 0)::bigint, \
         coalesce(sum(disk_gib), 0)::bigint from instances \
         where tenant_id = $1 and status not in ('failed', 'deleted')",
    )
    .bind(tenant.as_uuid())
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn counters(pool: &sqlx::PgPool, tenant: TenantId) -> (i64, i64, i64, i64) {
    let u = instances::usage(pool, tenant).await.unwrap();
    let got = (u.instances, u.vcpus, u.memory_mib, u.disk_gib);
    assert_eq!(got, summed(pool, tenant).await, "counters drifted from the instances");
    got
}

#[tokio::test]
async fn usage_counters_follow_create_failure_reprovision_and_delete() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (_, tenant, _) = tenant_with(pool, ROOMY).await;
    let (_, other, _) = tenant_with(pool, ROOMY).await;
    assert_eq!(counters(pool, tenant.id).await, (0, 0, 0, 0));
    // An unknown tenant holds nothing, as before.
    assert_eq!(instances::usage(pool, TenantId::new()).await.unwrap().instances, 0);

    let big = NewInstance { cores: 2, memory_mib: 2048, disk_gib: 20, ..vm("a") };
    let a = instances::create(pool, tenant.id, &big, &provision_job()).await.unwrap().instance;
    let b = instances::create(pool, tenant.id, &vm("b"), &provision_job()).await.unwrap().instance;
    instances::create(pool, other.id, &vm("x"), &provision_job()).await.unwrap();
    assert_eq!(counters(pool, tenant.id).await, (2, 3, 3072, 30));
    assert_eq!(counters(pool, other.id).await, (1, 1, 1024, 10));

    // Failed releases, once; a status change that keeps holding changes nothing.
    instances::set_status(pool, a.id, InstanceStatus::Failed).await.unwrap();
    assert_eq!(counters(pool, tenant.id).await, (1, 1, 1024, 10));
    instances::set_status(pool, a.id, InstanceStatus::Failed).await.unwrap();
    assert_eq!(counters(pool, tenant.id).await, (1, 1, 1024, 10));
    instances::set_status(pool, b.id, InstanceStatus::Running).await.unwrap();
    instances::set_status(pool, b.id, InstanceStatus::Stopped).await.unwrap();
    assert_eq!(counters(pool, tenant.id).await, (1, 1, 1024, 10));

    // Re-provisioning a failed instance takes its share again.
    instances::set_status(pool, a.id, InstanceStatus::Provisioning).await.unwrap();
    assert_eq!(counters(pool, tenant.id).await, (2, 3, 3072, 30));

    // Deleting holds until deleted; failed → deleted releases nothing twice.
    instances::set_status(pool, a.id, InstanceStatus::Deleting).await.unwrap();
    assert_eq!(counters(pool, tenant.id).await, (2, 3, 3072, 30));
    instances::set_status(pool, a.id, InstanceStatus::Deleted).await.unwrap();
    assert_eq!(counters(pool, tenant.id).await, (1, 1, 1024, 10));
    instances::set_status(pool, b.id, InstanceStatus::Failed).await.unwrap();
    instances::set_status(pool, b.id, InstanceStatus::Deleted).await.unwrap();
    assert_eq!(counters(pool, tenant.id).await, (0, 0, 0, 0));
    assert_eq!(counters(pool, other.id).await, (1, 1, 1024, 10));

    // A rolled-back create leaves the counters as they were; a row removed outright releases.
    let mut tx = pool.begin().await.unwrap();
    instances::create_with_job(&mut *tx, tenant.id, &vm("c"), &provision_job()).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(counters(pool, tenant.id).await, (0, 0, 0, 0));
    let c = instances::create(pool, tenant.id, &vm("c"), &provision_job()).await.unwrap().instance;
    assert_eq!(counters(pool, tenant.id).await, (1, 1, 1024, 10));
    sqlx::query("delete from instances where id = $1").bind(c.id.as_uuid()).execute(pool).await.unwrap();
    assert_eq!(counters(pool, tenant.id).await, (0, 0, 0, 0));

    // Deleting a tenant that still holds instances takes its counters with it.
    sqlx::query("delete from tenants where id = $1").bind(other.id.as_uuid()).execute(pool).await.unwrap();
    assert_eq!(count(pool, "tenant_usage").await, 1);
}

#[tokio::test]
async fn the_quota_check_reads_the_counters_after_a_failure_is_reprovisioned() {
    let db = TestDb::new().await;
    let limits = PlanLimits { max_instances: 2, ..ROOMY };
    let (_, tenant, _) = tenant_with(db.pool(), limits).await;
    let a = instances::create(db.pool(), tenant.id, &vm("a"), &provision_job()).await.unwrap().instance;
    instances::create(db.pool(), tenant.id, &vm("b"), &provision_job()).await.unwrap();
    instances::set_status(db.pool(), a.id, InstanceStatus::Failed).await.unwrap();
    let c = instances::create(db.pool(), tenant.id, &vm("c"), &provision_job()).await.unwrap().instance;
    let err = instances::create(db.pool(), tenant.id, &vm("d"), &provision_job()).await.unwrap_err();
    let DbError::QuotaExceeded(q) = &err else { panic!("{err:?}") };
    assert_eq!((q.resource, q.limit, q.used, q.requested), (QuotaResource::Instances, 2, 2, 1));
    // Re-taking a share is not refused (the instance already exists), so usage may exceed the
    // limit; the next create then sees the real figure.
    instances::set_status(db.pool(), a.id, InstanceStatus::Provisioning).await.unwrap();
    let err = instances::create(db.pool(), tenant.id, &vm("d"), &provision_job()).await.unwrap_err();
    let DbError::QuotaExceeded(q) = &err else { panic!("{err:?}") };
    assert_eq!((q.resource, q.used), (QuotaResource::Instances, 3));
    // A refused create leaves neither its instance nor its job behind.
    assert_eq!((count(db.pool(), "instances").await, count(db.pool(), "jobs").await), (3, 3));
    instances::set_status(db.pool(), c.id, InstanceStatus::Deleted).await.unwrap();
    instances::set_status(db.pool(), a.id, InstanceStatus::Deleted).await.unwrap();
    instances::create(db.pool(), tenant.id, &vm("d"), &provision_job()).await.unwrap();
    assert_eq!(counters(db.pool(), tenant.id).await, (2, 2, 2048, 20));
}
