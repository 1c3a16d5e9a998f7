//! The prepaid ladder with injected time (the `meter` jobs' fire times): a tenant's available
//! balance falls hour by hour; `balance.low`, then creates refused, then after the grace period
//! its running instances shut down by real power jobs against pve-sim; a top-up lifts it all and
//! starts again exactly the instances the suspension stopped.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use nimbus_db::balance::{self, Credit};
use nimbus_db::events;
use nimbus_db::ladder::{self, State};
use nimbus_db::usage::{self, NewPrice};
use nimbus_db::{DbError, instances, operations, plans};
use nimbus_domain::{InstanceStatus, JobKind, JobStatus, Money, UserId};
use nimbus_jobs::{BillingRun, PowerAction};
use rust_decimal::Decimal;

use crate::support::Harness;

fn money(s: &str) -> Money {
    Money(Decimal::from_str(s).unwrap())
}

async fn state_of(h: &Harness) -> (String, DateTime<Utc>) {
    sqlx::query_as("select billing_state, billing_state_since from tenants where id = $1")
        .bind(h.tenant.as_uuid())
        .fetch_one(h.db.pool())
        .await
        .unwrap()
}

/// The tenant's billing events, oldest first (its instances and jobs record events of their own).
async fn event_types(h: &Harness) -> Vec<String> {
    let all = events::for_tenant(h.db.pool(), h.tenant, None).await.unwrap();
    all.into_iter().map(|e| e.kind).filter(|k| events::types::BILLING.contains(&k.as_str())).collect()
}

/// Runs the `meter` job fired at `fire_at` (metering the hour before it, then the ladder).
async fn meter(h: &Harness, fire_at: DateTime<Utc>) {
    let job = BillingRun { fire_at: Some(fire_at) }.new_job(JobKind::Meter);
    // Enqueued with its outbox row, which the worker's relay pushes.
    let enqueued = nimbus_db::jobs::enqueue(h.db.pool(), None, &job).await.unwrap();
    let done = h.final_job(enqueued.job.id, Duration::from_secs(30)).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
}

/// Waits for the instance's one queued or running operation to end, and returns its status.
async fn settle(h: &Harness, instance: nimbus_domain::InstanceId) -> InstanceStatus {
    if let Some(job) = operations::active(h.db.pool(), instance).await.unwrap() {
        let done = h.final_job(job.id, Duration::from_secs(60)).await;
        assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
    }
    h.instance(instance).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ladder_goes_from_low_balance_to_suspension_and_back_on_payment() {
    let h = Harness::new().await;
    let worker = h.start("ladder-w1", 4).await;
    // Two real guests: `busy` keeps running, `idle` is stopped by its owner before any of it.
    let mut ids = Vec::new();
    for name in ["busy", "idle"] {
        let (instance, enqueued) = h.accept(name, 3).await;
        h.push(&enqueued).await;
        let done = h.final_job(enqueued.job.id, Duration::from_secs(60)).await;
        assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
        ids.push(instance.id);
    }
    let (busy, idle) = (ids[0], ids[1]);
    let mut tx = h.db.pool().begin().await.unwrap();
    let stop = PowerAction::default().new_job(JobKind::Stop);
    operations::enqueue(&mut tx, h.tenant, idle, stop).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(settle(&h, idle).await, InstanceStatus::Stopped);

    // From the next hour: 1 EUR per vCPU-hour, so each hour costs 4 EUR (2 instances x 2 vCPUs,
    // billed in any power state). Prepaid with 10 EUR, low below 3, suspended 2 hours after
    // the balance is used up.
    let base = Utc::now().duration_trunc(chrono::Duration::hours(1)).unwrap() + chrono::Duration::hours(1);
    let plan = plans::for_tenant(h.db.pool(), h.tenant).await.unwrap();
    let price = NewPrice {
        valid_from: base,
        currency: "EUR".into(),
        vcpu_hour: money("1"),
        memory_gib_hour: money("0"),
        disk_gib_hour: money("0"),
        backup_gib_hour: money("0"),
        monthly_cap: None,
        tiers: Vec::new(),
    };
    usage::add_price(h.db.pool(), plan.id, &price).await.unwrap();
    sqlx::query(
        "update tenants set prepaid = true, low_balance_threshold = 3, grace_period_hours = 2, tax_rate = 0 where id = $1",
    )
    .bind(h.tenant.as_uuid())
    .execute(h.db.pool())
    .await
    .unwrap();
    let operator: UserId = sqlx::query_scalar::<_, uuid::Uuid>("select id from users where tenant_id = $1 limit 1")
        .bind(h.tenant.as_uuid())
        .fetch_one(h.db.pool())
        .await
        .unwrap()
        .into();
    let top_up = |amount: &str| Credit {
        kind: "top_up",
        amount: money(amount),
        currency: "EUR".into(),
        reason: None,
        by: operator,
    };
    balance::add(h.db.pool(), h.tenant, &top_up("10")).await.unwrap();
    let hour = |n: i64| base + chrono::Duration::hours(n);

    // Hour 1: 6 left. Hour 2: 2 left, below 3: `balance.low`, once however often it is metered.
    meter(&h, hour(1)).await;
    assert_eq!(state_of(&h).await.0, "ok");
    meter(&h, hour(2)).await;
    meter(&h, hour(2)).await;
    assert_eq!(state_of(&h).await, ("low".into(), hour(2)));
    assert_eq!(event_types(&h).await, ["balance.low"]);

    // Hour 3: -2 left: exhausted, no new instance (the database refuses it).
    meter(&h, hour(3)).await;
    assert_eq!(state_of(&h).await, ("exhausted".into(), hour(3)));
    let refused = h.accept_job_result("third").await;
    assert!(matches!(refused, Err(DbError::PaymentRequired { ref state, .. }) if state == "exhausted"), "{refused:?}");
    // Within the grace period nothing stops.
    meter(&h, hour(4)).await;
    assert_eq!(state_of(&h).await.0, "exhausted");
    assert_eq!(h.instance(busy).await.status, InstanceStatus::Running);

    // Two hours after: suspended, and only the running instance is shut down, by a real job.
    meter(&h, hour(5)).await;
    assert_eq!(state_of(&h).await, ("suspended".into(), hour(5)));
    assert_eq!(settle(&h, busy).await, InstanceStatus::Stopped);
    assert_eq!(h.instance(idle).await.status, InstanceStatus::Stopped);
    let stopped: Vec<uuid::Uuid> =
        sqlx::query_scalar("select instance_id from suspended_instances where tenant_id = $1")
            .bind(h.tenant.as_uuid())
            .fetch_all(h.db.pool())
            .await
            .unwrap();
    assert_eq!(stopped, [busy.as_uuid()]);
    // Metering the hour again changes nothing and enqueues nothing.
    meter(&h, hour(5)).await;
    assert!(operations::active(h.db.pool(), busy).await.unwrap().is_none());

    // 5 hours metered: 20 EUR used of 10. A top-up of 15 leaves 5 available: above the
    // threshold, the suspension is lifted in the top-up's transaction and `busy` starts again.
    let mut tx = h.db.pool().begin().await.unwrap();
    balance::add(&mut *tx, h.tenant, &top_up("15")).await.unwrap();
    let step = ladder::evaluate(&mut tx, h.tenant, hour(5), &PowerAction::ladder_jobs()).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(step.changed, Some((State::Suspended, State::Ok)));
    assert_eq!(step.enqueued.len(), 1);
    assert!(step.enqueued[0].outbox_id.is_some(), "the start is owed its push with its commit");
    assert_eq!(settle(&h, busy).await, InstanceStatus::Running);
    assert_eq!(h.instance(idle).await.status, InstanceStatus::Stopped, "it was stopped before the suspension");
    assert_eq!(event_types(&h).await, ["balance.low", "balance.exhausted", "tenant.suspended", "tenant.resumed"]);
    let suspended = &events::for_tenant(h.db.pool(), h.tenant, Some("tenant.suspended")).await.unwrap()[0];
    assert_eq!(suspended.data["available"], "-10");
    assert_eq!(suspended.occurred_at, hour(5));
    assert!(h.accept_job_result("third").await.is_ok(), "creates are allowed again");
    let left: i64 =
        sqlx::query_scalar("select count(*) from suspended_instances").fetch_one(h.db.pool()).await.unwrap();
    assert_eq!(left, 0);
    worker.stop().await;
}

impl Harness {
    /// Tries to write a new instance for the tenant, as the API's create does.
    async fn accept_job_result(&self, name: &str) -> Result<(), DbError> {
        let new = instances::NewInstance {
            name: name.into(),
            kind: nimbus_domain::InstanceKind::Qemu,
            template: "debian-12-cloudinit".into(),
            cores: 1,
            memory_mib: 1024,
            disk_gib: 10,
            ssh_keys: Vec::new(),
            node: Some(crate::support::NODE.into()),
        };
        let job = nimbus_jobs::ProvisionVm {
            template: "debian-12-cloudinit".into(),
            template_vmid: crate::support::TEMPLATE_VMID,
            node: crate::support::NODE.into(),
            kind: nimbus_domain::InstanceKind::Qemu,
            vmid: None,
            from_backup: None,
        }
        .new_job();
        instances::create(self.db.pool(), self.tenant, &new, &job).await.map(|_| ())
    }
}

#[tokio::test]
async fn paying_before_the_suspensions_shutdown_ran_cancels_it() {
    let h = Harness::new().await;
    // An instance that runs (its provision marked done; no worker runs here, so jobs stay queued).
    let (instance, enqueued) = h.accept("kept-up", 3).await;
    sqlx::query("update jobs set status = 'succeeded', finished_at = now() where id = $1")
        .bind(enqueued.job.id.as_uuid())
        .execute(h.db.pool())
        .await
        .unwrap();
    sqlx::query("update instances set status = 'running' where id = $1")
        .bind(instance.id.as_uuid())
        .execute(h.db.pool())
        .await
        .unwrap();
    sqlx::query("update tenants set prepaid = true, grace_period_hours = 0 where id = $1")
        .bind(h.tenant.as_uuid())
        .execute(h.db.pool())
        .await
        .unwrap();
    let now = Utc::now();
    let jobs = PowerAction::ladder_jobs();
    let mut tx = h.db.pool().begin().await.unwrap();
    let suspended = ladder::evaluate(&mut tx, h.tenant, now, &jobs).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(suspended.changed, Some((State::Ok, State::Suspended)));
    let stop = suspended.enqueued[0].job.id;

    // Paid while the shutdown is still queued: it is cancelled, nothing is started, the
    // instance never stopped.
    let operator: uuid::Uuid = sqlx::query_scalar("select id from users where tenant_id = $1 limit 1")
        .bind(h.tenant.as_uuid())
        .fetch_one(h.db.pool())
        .await
        .unwrap();
    let credit =
        Credit { kind: "top_up", amount: money("5"), currency: "EUR".into(), reason: None, by: operator.into() };
    let mut tx = h.db.pool().begin().await.unwrap();
    balance::add(&mut *tx, h.tenant, &credit).await.unwrap();
    let resumed = ladder::evaluate(&mut tx, h.tenant, now, &jobs).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(resumed.changed, Some((State::Suspended, State::Ok)));
    assert!(resumed.enqueued.is_empty(), "nothing to start: {:?}", resumed.enqueued);
    assert_eq!(h.job(stop).await.status, JobStatus::Cancelled);
    assert!(operations::active(h.db.pool(), instance.id).await.unwrap().is_none());
    assert_eq!(h.instance(instance.id).await.status, InstanceStatus::Running);
    let left: i64 =
        sqlx::query_scalar("select count(*) from suspended_instances").fetch_one(h.db.pool()).await.unwrap();
    assert_eq!(left, 0);
}
