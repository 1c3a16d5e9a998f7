//! Billing with injected time: hours metered once whoever meters them, started hours rounded up,
//! every hour at the price valid then; invoices capped, rounded, numbered without gaps and
//! immutable; the `meter` and `invoice` jobs run by a worker from their fire times.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use nimbus_db::instances::NewInstance;
use nimbus_db::usage::{self, NewPrice};
use nimbus_db::{invoices, plans};
use nimbus_domain::{InstanceId, InstanceKind, JobKind, JobStatus, Money, TenantId};
use nimbus_jobs::BillingRun;
use rust_decimal::Decimal;

use crate::support::{Harness, NODE};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn money(s: &str) -> Money {
    Money(Decimal::from_str(s).unwrap())
}

/// An instance of `tenant` with 2 vCPUs, 2 GiB and 10 GiB, created at `created` and, if given,
/// deleted at `deleted`.
async fn instance(h: &Harness, tenant: TenantId, name: &str, created: &str, deleted: Option<&str>) -> InstanceId {
    let new = NewInstance {
        name: name.into(),
        kind: InstanceKind::Qemu,
        template: "debian-12-cloudinit".into(),
        cores: 2,
        memory_mib: 2048,
        disk_gib: 10,
        ssh_keys: Vec::new(),
        node: Some(NODE.into()),
    };
    let job = nimbus_jobs::ProvisionVm {
        template: "debian-12-cloudinit".into(),
        template_vmid: 9000,
        node: NODE.into(),
        kind: InstanceKind::Qemu,
        vmid: None,
        from_backup: None,
    }
    .new_job();
    let created_row = nimbus_db::instances::create(h.db.pool(), tenant, &new, &job).await.unwrap();
    let id = created_row.instance.id;
    sqlx::query("update jobs set status = 'succeeded', finished_at = now() where id = $1")
        .bind(created_row.enqueued.job.id.as_uuid())
        .execute(h.db.pool())
        .await
        .unwrap();
    sqlx::query("update instances set created_at = $2, status = 'running' where id = $1")
        .bind(id.as_uuid())
        .bind(at(created))
        .execute(h.db.pool())
        .await
        .unwrap();
    if let Some(deleted) = deleted {
        sqlx::query("update instances set status = 'deleted' where id = $1")
            .bind(id.as_uuid())
            .execute(h.db.pool())
            .await
            .unwrap();
        sqlx::query("update instances set deleted_at = $2 where id = $1")
            .bind(id.as_uuid())
            .bind(at(deleted))
            .execute(h.db.pool())
            .await
            .unwrap();
    }
    id
}

/// Prices the tenant's plan from `from`: per vCPU-hour, GiB-hour of memory and of disk, and a cap.
async fn price(h: &Harness, from: &str, vcpu: &str, memory: &str, disk: &str, cap: Option<&str>) {
    let plan = plans::for_tenant(h.db.pool(), h.tenant).await.unwrap();
    let new = NewPrice {
        valid_from: at(from),
        currency: "EUR".into(),
        vcpu_hour: money(vcpu),
        memory_gib_hour: money(memory),
        disk_gib_hour: money(disk),
        backup_gib_hour: Money::ZERO,
        monthly_cap: cap.map(money),
        tiers: Vec::new(),
    };
    usage::add_price(h.db.pool(), plan.id, &new).await.unwrap();
}

async fn hours_of(h: &Harness, instance: InstanceId) -> Vec<(DateTime<Utc>, Decimal)> {
    sqlx::query_as("select hour, amount from usage_records where instance_id = $1 order by hour")
        .bind(instance.as_uuid())
        .fetch_all(h.db.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_hours_are_metered_once_at_the_price_of_their_hour() {
    let h = Harness::new().await;
    price(&h, "2026-03-01T00:00:00Z", "0.01", "0.005", "0.0001", None).await;
    // From 12:00 a vCPU costs twice as much.
    price(&h, "2026-03-02T12:00:00Z", "0.02", "0.005", "0.0001", None).await;
    let short = instance(&h, h.tenant, "short", "2026-03-02T10:59:00Z", Some("2026-03-02T12:01:00Z")).await;
    let later = instance(&h, h.tenant, "later", "2026-03-02T13:30:00Z", None).await;

    // A five-hour outage caught up by three replicas at once, each metering every hour.
    let hours: Vec<DateTime<Utc>> = (9..15).map(|hr| at(&format!("2026-03-02T{hr:02}:00:00Z"))).collect();
    let replicas: Vec<_> = (0..3)
        .map(|_| {
            let (pool, hours) = (h.db.pool().clone(), hours.clone());
            tokio::spawn(async move {
                let mut inserted = 0;
                for hour in hours {
                    inserted += usage::meter_hour(&pool, hour).await.unwrap();
                }
                inserted
            })
        })
        .collect();
    let mut inserted = 0;
    for r in replicas {
        inserted += r.await.unwrap();
    }
    // short: 10, 11, 12 (created 10:59, deleted 12:01: three started hours); later: 13, 14.
    assert_eq!(inserted, 5, "each (instance, hour) once across the replicas");
    let short_hours = hours_of(&h, short).await;
    let at_hours: Vec<String> = short_hours.iter().map(|(t, _)| t.format("%H").to_string()).collect();
    assert_eq!(at_hours, ["10", "11", "12"]);
    // 2 × 0.01 + 2 × 0.005 + 10 × 0.0001 = 0.031 before 12:00; 2 × 0.02 + ... = 0.051 from 12:00.
    let amounts: Vec<Decimal> = short_hours.iter().map(|(_, a)| a.normalize()).collect();
    assert_eq!(
        amounts,
        [Decimal::from_str("0.031").unwrap(), Decimal::from_str("0.031").unwrap(), Decimal::from_str("0.051").unwrap()]
    );
    assert_eq!(hours_of(&h, later).await.len(), 2);
    assert!(
        usage::unmetered_hours(h.db.pool(), hours[0], hours[5] + chrono::Duration::hours(1)).await.unwrap().is_empty()
    );

    // A price added later for a past time does not rewrite what was rated.
    price(&h, "2026-03-02T09:00:00Z", "9", "9", "9", None).await;
    assert_eq!(usage::meter_hour(h.db.pool(), hours[1]).await.unwrap(), 0);
    assert_eq!(hours_of(&h, short).await[0].1.normalize(), Decimal::from_str("0.031").unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoices_cap_round_number_without_gaps_and_cannot_be_changed() {
    let h = Harness::new().await;
    price(&h, "2026-01-01T00:00:00Z", "0.0125", "0", "0", Some("1.00")).await;
    let small = instance(&h, h.tenant, "small", "2026-02-27T22:00:00Z", None).await;
    let (other, _) = crate::support::another_tenant(&h).await;
    let theirs = instance(&h, other, "theirs", "2026-02-28T21:00:00Z", None).await;
    let (feb, mar) = invoices::month_of(at("2026-02-10T00:00:00Z"));
    // Metering began on Feb 27th; the gaps after that are what an invoice run fills.
    usage::meter_hour(h.db.pool(), at("2026-02-27T00:00:00Z")).await.unwrap();
    assert!(usage::unmetered_hours(h.db.pool(), feb, at("2026-02-27T01:00:00Z")).await.unwrap().is_empty());
    for hour in usage::unmetered_hours(h.db.pool(), feb, mar).await.unwrap() {
        usage::meter_hour(h.db.pool(), hour).await.unwrap();
    }
    // An issue rolled back gives its number back.
    let mut tx = h.db.pool().begin().await.unwrap();
    let dropped = invoices::issue(&mut tx, h.tenant, feb, mar).await.unwrap().unwrap();
    assert_eq!(dropped.number, "NMB-2026-000001");
    tx.rollback().await.unwrap();

    // Two runs at once for both tenants: each tenant's invoice once, numbers 1 and 2.
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (pool, tenants) = (h.db.pool().clone(), [h.tenant, other]);
            tokio::spawn(async move {
                let mut numbers = Vec::new();
                for tenant in tenants {
                    let mut tx = pool.begin().await.unwrap();
                    if let Some(i) = invoices::issue(&mut tx, tenant, feb, mar).await.unwrap() {
                        numbers.push(i.number);
                    }
                    tx.commit().await.unwrap();
                }
                numbers
            })
        })
        .collect();
    let mut numbers = Vec::new();
    for r in runs {
        numbers.extend(r.await.unwrap());
    }
    numbers.sort();
    assert_eq!(numbers, ["NMB-2026-000001", "NMB-2026-000002"]);

    let ours = invoices::list(h.db.pool(), h.tenant).await.unwrap();
    assert_eq!(ours.len(), 1);
    let mut conn = h.db.pool().acquire().await.unwrap();
    let (invoice, lines) = invoices::get(&mut conn, h.tenant, ours[0].id).await.unwrap();
    // small: 26 hours × 2 vCPUs × 0.0125 = 0.65 (Feb 27 22:00 to Mar 1 00:00).
    assert_eq!(lines.len(), 1);
    assert_eq!((lines[0].hours, lines[0].amount.normalize()), (26, Decimal::from_str("0.65").unwrap()));
    assert_eq!(lines[0].instance_id, Some(small.as_uuid()));
    assert_eq!(invoice.total, invoice.subtotal + invoice.tax);
    let (theirs_invoice, theirs_lines) = {
        let listed = invoices::list(h.db.pool(), other).await.unwrap();
        invoices::get(&mut conn, other, listed[0].id).await.unwrap()
    };
    assert_eq!(theirs_lines[0].instance_id, Some(theirs.as_uuid()));
    assert!(
        invoices::get(&mut conn, h.tenant, theirs_invoice.id).await.is_err(),
        "another tenant's invoice is not found"
    );

    // March: small runs all month, 744 hours × 0.025 = 18.60, capped at 1.00.
    let (_, apr) = invoices::month_of(mar);
    for hour in usage::unmetered_hours(h.db.pool(), mar, apr).await.unwrap() {
        usage::meter_hour(h.db.pool(), hour).await.unwrap();
    }
    let mut tx = h.db.pool().begin().await.unwrap();
    let march = invoices::issue(&mut tx, h.tenant, mar, apr).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    assert_eq!(march.number, "NMB-2026-000003");
    let (_, march_lines) = invoices::get(&mut conn, h.tenant, march.id).await.unwrap();
    assert_eq!(march_lines[0].hours, 744);
    assert_eq!(march_lines[0].uncapped.normalize(), Decimal::from_str("18.6").unwrap());
    assert_eq!(march_lines[0].amount.normalize(), Decimal::from_str("1").unwrap());

    // Issued is final, for the database owner's statements too.
    for statement in [
        "update invoices set total = 0",
        "delete from invoices",
        "update invoice_lines set amount = 0",
        "delete from invoice_lines",
        "truncate invoice_lines",
    ] {
        let refused = sqlx::query(statement).execute(h.db.pool()).await;
        assert!(refused.is_err(), "{statement} was allowed");
    }
    assert_eq!(invoices::list(h.db.pool(), h.tenant).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meter_and_invoice_jobs_bill_what_their_fire_times_name() {
    let h = Harness::new().await;
    price(&h, "2026-01-01T00:00:00Z", "0.01", "0", "0", None).await;
    instance(&h, h.tenant, "jobbed", "2026-04-30T22:10:00Z", None).await;
    let worker = h.start("billing-w1", 2).await;
    let run = |kind: JobKind, fire_at: &str| {
        let job = BillingRun { fire_at: Some(at(fire_at)) }.new_job(kind);
        let h = &h;
        async move {
            // Enqueued with its outbox row, which the worker's relay pushes.
            let enqueued = nimbus_db::jobs::enqueue(h.db.pool(), None, &job).await.unwrap();
            h.final_job(enqueued.job.id, Duration::from_secs(30)).await
        }
    };
    // The 23:00 fire meters 22:00-23:00.
    let metered = run(JobKind::Meter, "2026-04-30T23:00:00Z").await;
    assert_eq!(metered.status, JobStatus::Succeeded, "{:?}", metered.error);
    let hours: i64 = sqlx::query_scalar("select count(*) from usage_records").fetch_one(h.db.pool()).await.unwrap();
    assert_eq!(hours, 1);
    // The May 1st fire meters what is left of April (23:00) and invoices it: 2 hours.
    let invoiced = run(JobKind::Invoice, "2026-05-01T00:00:00Z").await;
    assert_eq!(invoiced.status, JobStatus::Succeeded, "{:?}", invoiced.error);
    let listed = invoices::list(h.db.pool(), h.tenant).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].period_start, listed[0].period_end),
        (at("2026-04-01T00:00:00Z"), at("2026-05-01T00:00:00Z"))
    );
    assert_eq!(listed[0].subtotal.normalize(), Decimal::from_str("0.04").unwrap());
    // Again: nothing more.
    assert_eq!(run(JobKind::Invoice, "2026-05-01T00:00:00Z").await.status, JobStatus::Succeeded);
    assert_eq!(invoices::list(h.db.pool(), h.tenant).await.unwrap().len(), 1);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_storage_is_metered_in_gib_hours_from_the_sizes_proxmox_reports() {
    let h = Harness::new().await;
    let worker = h.start("billing-backups", 2).await;
    let (instance, enqueued) = h.accept("archived", 3).await;
    h.push(&enqueued).await;
    assert_eq!(h.final_job(enqueued.job.id, Duration::from_secs(60)).await.status, JobStatus::Succeeded);
    let mut tx = h.db.pool().begin().await.unwrap();
    let backup = nimbus_jobs::BackupInstance::default().new_job();
    let backup = nimbus_db::operations::enqueue(&mut tx, h.tenant, instance.id, backup).await.unwrap();
    tx.commit().await.unwrap();
    h.push(&backup).await;
    let done = h.final_job(backup.job.id, Duration::from_secs(60)).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);

    // What Proxmox reports for the guest's archive.
    let storage = plans::backup_settings_for_tenant(h.db.pool(), h.tenant).await.unwrap().storage;
    let backups = nimbus_proxmox::ContentQuery::content("backup");
    let listed = h.pve().node(NODE).storage(&storage).content(&backups).await.unwrap();
    let vmid = h.instance(instance.id).await.vmid.map(|v| v as u32);
    let sizes: Vec<u64> = listed.iter().filter(|a| a.vmid == vmid).filter_map(|a| a.size).collect();
    assert_eq!(sizes.len(), 1, "{listed:?}");

    // Priced from the next hour: 0.01 per GiB-hour of archives, compute free.
    let base = chrono::DurationRound::duration_trunc(Utc::now(), chrono::Duration::hours(1)).unwrap()
        + chrono::Duration::hours(1);
    let plan = plans::for_tenant(h.db.pool(), h.tenant).await.unwrap();
    let new = NewPrice {
        valid_from: base,
        currency: "EUR".into(),
        vcpu_hour: Money::ZERO,
        memory_gib_hour: Money::ZERO,
        disk_gib_hour: Money::ZERO,
        backup_gib_hour: money("0.01"),
        monthly_cap: Some(money("0")),
        tiers: Vec::new(),
    };
    usage::add_price(h.db.pool(), plan.id, &new).await.unwrap();
    let meter = |fire_at: DateTime<Utc>| {
        let h = &h;
        async move {
            let job = BillingRun { fire_at: Some(fire_at) }.new_job(JobKind::Meter);
            let enqueued = nimbus_db::jobs::enqueue(h.db.pool(), None, &job).await.unwrap();
            let done = h.final_job(enqueued.job.id, Duration::from_secs(30)).await;
            assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
        }
    };
    let end = base + chrono::Duration::hours(1);
    meter(end).await;
    meter(end).await;
    let rows: Vec<(DateTime<Utc>, i32, i64, Decimal)> =
        sqlx::query_as("select hour, archives, bytes, amount from backup_usage_records where instance_id = $1")
            .bind(instance.id.as_uuid())
            .fetch_all(h.db.pool())
            .await
            .unwrap();
    let bytes = sizes[0] as i64;
    let expected = (Decimal::from(bytes) / Decimal::from(1u64 << 30) * Decimal::from_str("0.01").unwrap()).round_dp(10);
    assert_eq!(rows, [(base, 1, bytes, expected)], "once, whoever meters the hour again");

    // On the invoice: the compute line, capped at 0, and the storage line, not capped.
    let (from, to) = invoices::month_of(base);
    let mut conn = h.db.pool().acquire().await.unwrap();
    let (_, lines) = invoices::month_lines(&mut conn, h.tenant, from, to).await.unwrap().unwrap();
    let storage_line = lines.iter().find(|l| l.description.contains("backup storage")).expect("a backup storage line");
    assert_eq!(storage_line.uncapped, Money(expected));
    assert_eq!(storage_line.hours, 1);
    let compute = lines.iter().find(|l| l.description.starts_with("archived (")).unwrap();
    assert_eq!(compute.amount, Money::ZERO);
    worker.stop().await;
}

#[tokio::test]
async fn an_instance_of_a_tiers_size_is_rated_flat_and_capped_at_the_tiers_cap() {
    let h = Harness::new().await;
    let plan = plans::for_tenant(h.db.pool(), h.tenant).await.unwrap();
    // 0.10 per vCPU-hour, capped at 100; the 2 vCPU / 2 GiB / 10 GiB size is tier "S": 1 an
    // hour, at most 3 a month.
    let tier = usage::Tier {
        name: "S".into(),
        cores: 2,
        memory_mib: 2048,
        disk_gib: 10,
        hour_price: Decimal::ONE,
        monthly_cap: Some(Decimal::from(3)),
    };
    let new = NewPrice {
        valid_from: at("2026-01-01T00:00:00Z"),
        currency: "EUR".into(),
        vcpu_hour: money("0.1"),
        memory_gib_hour: Money::ZERO,
        disk_gib_hour: Money::ZERO,
        backup_gib_hour: Money::ZERO,
        monthly_cap: Some(money("100")),
        tiers: vec![tier.clone()],
    };
    let price = usage::add_price(h.db.pool(), plan.id, &new).await.unwrap();
    assert_eq!(usage::tiers(h.db.pool(), price.id).await.unwrap(), [tier]);
    let small = instance(&h, h.tenant, "small", "2026-03-02T00:00:00Z", None).await;
    let big = instance(&h, h.tenant, "big", "2026-03-02T00:00:00Z", None).await;
    sqlx::query("update instances set cores = 4 where id = $1").bind(big.as_uuid()).execute(h.db.pool()).await.unwrap();
    for hour in ["2026-03-02T00:00:00Z", "2026-03-02T01:00:00Z", "2026-03-02T02:00:00Z", "2026-03-02T03:00:00Z"] {
        usage::meter_hour(h.db.pool(), at(hour)).await.unwrap();
    }
    assert!(hours_of(&h, small).await.iter().all(|(_, amount)| *amount == Decimal::ONE));
    assert!(hours_of(&h, big).await.iter().all(|(_, amount)| amount.normalize() == Decimal::from_str("0.4").unwrap()));

    let (from, to) = invoices::month_of(at("2026-03-02T00:00:00Z"));
    let mut conn = h.db.pool().acquire().await.unwrap();
    let (_, lines) = invoices::month_lines(&mut conn, h.tenant, from, to).await.unwrap().unwrap();
    let described: Vec<(&str, Decimal)> =
        lines.iter().map(|l| (l.description.as_str(), l.amount.0.normalize())).collect();
    assert_eq!(described, [("big (4 h)", Decimal::from_str("1.6").unwrap()), ("small (S, 4 h)", Decimal::from(3))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_metering_the_same_hours_write_each_row_once() {
    let h = Harness::new().await;
    price(&h, "2026-01-01T00:00:00Z", "0.01", "0", "0", None).await;
    // As many as the demo plan allows.
    for i in 0..10 {
        instance(&h, h.tenant, &format!("metered-{i}"), "2026-06-01T00:00:00Z", None).await;
    }
    let mut workers = crate::support::Workers::default();
    for name in ["meter-a", "meter-b", "meter-c"] {
        workers.spawn(&h, name);
    }
    // Each of three hours fired three times, as three replicas' schedulers might.
    let mut jobs = Vec::new();
    for fire_at in ["2026-06-01T01:00:00Z", "2026-06-01T02:00:00Z", "2026-06-01T03:00:00Z"] {
        for _ in 0..3 {
            let job = BillingRun { fire_at: Some(at(fire_at)) }.new_job(JobKind::Meter);
            jobs.push(nimbus_db::jobs::enqueue(h.db.pool(), None, &job).await.unwrap().job.id);
        }
    }
    for id in jobs {
        let done = h.final_job(id, Duration::from_secs(60)).await;
        assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
    }
    let (rows, per_instance_hours): (i64, i64) = sqlx::query_as(
        "select count(*), count(distinct (instance_id, hour)) from usage_records where hour >= '2026-06-01' and hour < '2026-06-02'",
    )
    .fetch_one(h.db.pool())
    .await
    .unwrap();
    assert_eq!((rows, per_instance_hours), (30, 30), "10 instances x 3 hours, each once");
    let recorded: Option<Decimal> =
        sqlx::query_scalar("select sum(records) from metered_hours").fetch_one(h.db.pool()).await.unwrap();
    assert_eq!(recorded, Some(Decimal::from(30)), "the hours' counts add up to the rows written");
    for name in ["meter-a", "meter-b", "meter-c"] {
        workers.assert_alive(name);
    }
}
