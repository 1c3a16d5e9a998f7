//! The job ledger: claiming, leases, progress, retries, recovery, cancellation.

use std::collections::HashSet;
use std::time::Duration;

use nimbus_db::jobs::{self, NewJob, Progress};
use nimbus_db::{DbError, outbox};
use nimbus_domain::{ErrorCode, JobError, JobId, JobKind, JobStatus, PageRequest, ResourceRef};
use nimbus_testkit::TestDb;
use sqlx::PgPool;

use crate::{ROOMY, count, tenant_with};

const LEASE: Duration = Duration::from_secs(30);

async fn enqueue(pool: &PgPool, queue: &str, max_attempts: i32) -> JobId {
    let mut job = NewJob::new(JobKind::Meter, queue, serde_json::json!({"n": 1}));
    job.max_attempts = max_attempts;
    jobs::enqueue(pool, None, &job).await.unwrap().job.id
}

fn transient() -> JobError {
    JobError { code: ErrorCode::ProxmoxUnavailable, message: "595 no route to host".into(), retryable: true }
}

#[tokio::test]
async fn a_job_is_claimed_once_and_duplicate_deliveries_do_nothing() {
    let db = TestDb::new().await;
    let id = enqueue(db.pool(), "q", 3).await;
    let job = jobs::claim(db.pool(), id, "w1", LEASE).await.unwrap().expect("claimed");
    assert_eq!((job.status, job.attempts, job.locked_by.as_deref()), (JobStatus::Running, 1, Some("w1")));
    assert!(job.started_at.is_some() && job.locked_until.is_some());
    assert!(jobs::claim(db.pool(), id, "w2", LEASE).await.unwrap().is_none());
    jobs::complete(db.pool(), id, "w1", None).await.unwrap();
    assert!(jobs::claim(db.pool(), id, "w2", LEASE).await.unwrap().is_none());
    assert!(jobs::claim(db.pool(), JobId::new(), "w2", LEASE).await.unwrap().is_none());
}

#[tokio::test]
async fn concurrent_claimers_never_get_the_same_job() {
    let db = TestDb::new().await;
    for _ in 0..60 {
        enqueue(db.pool(), "bulk", 1).await;
    }
    enqueue(db.pool(), "other-queue", 1).await;
    let claimer = |worker: &'static str| {
        let pool = db.pool().clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = jobs::claim_next(&pool, "bulk", worker, LEASE, 4).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                assert!(batch.iter().all(|j| j.locked_by.as_deref() == Some(worker) && j.queue == "bulk"));
                mine.extend(batch.into_iter().map(|j| j.id));
            }
        })
    };
    let (a, b, c) = (claimer("a"), claimer("b"), claimer("c"));
    let (a, b, c) = (a.await.unwrap(), b.await.unwrap(), c.await.unwrap());
    let all: HashSet<_> = a.iter().chain(&b).chain(&c).copied().collect();
    assert_eq!(a.len() + b.len() + c.len(), 60, "a job was handed out twice or lost");
    assert_eq!(all.len(), 60);
}

#[tokio::test]
async fn skip_locked_passes_over_rows_another_transaction_holds() {
    let db = TestDb::new().await;
    let first = enqueue(db.pool(), "q", 1).await;
    let second = enqueue(db.pool(), "q", 1).await;
    let mut tx = db.pool().begin().await.unwrap();
    let held = jobs::claim_next(&mut *tx, "q", "a", LEASE, 1).await.unwrap();
    assert_eq!(held[0].id, first);
    // Uncommitted: the other connection skips the locked row instead of waiting for it.
    let other = tokio::time::timeout(Duration::from_secs(5), jobs::claim_next(db.pool(), "q", "b", LEASE, 5))
        .await
        .expect("did not wait for the lock")
        .unwrap();
    assert_eq!(other.iter().map(|j| j.id).collect::<Vec<_>>(), vec![second]);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn only_the_lease_holder_may_report_progress_or_finish() {
    let db = TestDb::new().await;
    let id = enqueue(db.pool(), "q", 3).await;
    jobs::claim(db.pool(), id, "w1", LEASE).await.unwrap().unwrap();
    let p = Progress {
        progress: 40,
        step: Some("clone"),
        message: Some("cloning"),
        payload_patch: Some(serde_json::json!({"vmid": 101})),
    };
    let job = jobs::record_progress(db.pool(), id, "w1", p).await.unwrap();
    assert_eq!((job.progress, job.step.as_deref()), (40, Some("clone")));
    assert_eq!(job.payload, serde_json::json!({"n": 1, "vmid": 101}));

    let err =
        jobs::record_progress(db.pool(), id, "w2", Progress { progress: 50, ..Default::default() }).await.unwrap_err();
    assert!(matches!(err, DbError::LeaseLost(j) if j == id));
    assert!(matches!(jobs::complete(db.pool(), id, "w2", None).await, Err(DbError::LeaseLost(_))));
    let err =
        jobs::record_progress(db.pool(), id, "w1", Progress { progress: 101, ..Default::default() }).await.unwrap_err();
    assert!(matches!(&err, DbError::Check { constraint } if constraint == "jobs_progress_check"), "{err:?}");

    jobs::extend_lease(db.pool(), id, "w1", LEASE).await.unwrap();
    assert!(matches!(jobs::extend_lease(db.pool(), id, "w2", LEASE).await, Err(DbError::LeaseLost(_))));
    let made = vec![ResourceRef { kind: "instance".into(), id: "i-1".into() }];
    let done = jobs::complete(db.pool(), id, "w1", Some(&made)).await.unwrap();
    assert_eq!((done.status, done.progress, done.locked_by.clone()), (JobStatus::Succeeded, 100, None));
    assert_eq!(done.resources, made);
    assert!(done.finished_at.is_some());

    let events = jobs::events_after(db.pool(), id, 0, 100).await.unwrap();
    let seen: Vec<_> = events.iter().map(|e| (e.status, e.progress)).collect();
    assert_eq!(
        seen,
        vec![(JobStatus::Queued, 0), (JobStatus::Running, 0), (JobStatus::Running, 40), (JobStatus::Succeeded, 100)]
    );
    assert_eq!(events[2].message.as_deref(), Some("cloning"));
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4], "numbered per job");
    let later = jobs::events_after(db.pool(), id, events[1].seq, 100).await.unwrap();
    assert_eq!(later.len(), 2);
    assert_eq!(later[0].id, events[2].id);
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff_until_attempts_run_out() {
    let db = TestDb::new().await;
    let id = enqueue(db.pool(), "q", 2).await;
    jobs::claim(db.pool(), id, "w", LEASE).await.unwrap().unwrap();
    let pushed_before = count(db.pool(), "outbox").await;
    let job = jobs::fail(db.pool(), id, "w", &transient(), Duration::from_secs(60)).await.unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    assert!(job.run_after > chrono::Utc::now() + chrono::Duration::seconds(50));
    assert_eq!(job.error.as_ref().unwrap().code, ErrorCode::ProxmoxUnavailable);
    // The retry's dispatch is owed, but not before it is due.
    assert_eq!(count(db.pool(), "outbox").await, pushed_before + 1);
    let mut tx = db.pool().begin().await.unwrap();
    let due: Vec<_> = outbox::fetch_due(&mut tx, 10).await.unwrap().into_iter().filter(|e| e.job_id == id).collect();
    assert_eq!(due.len(), 1, "only the first dispatch is due");
    tx.rollback().await.unwrap();
    assert!(jobs::claim(db.pool(), id, "w", LEASE).await.unwrap().is_none(), "not due yet");

    sqlx::query("update jobs set run_after = now() where id = $1").bind(id.as_uuid()).execute(db.pool()).await.unwrap();
    let job = jobs::claim(db.pool(), id, "w", LEASE).await.unwrap().unwrap();
    assert_eq!(job.attempts, 2);
    let job = jobs::fail(db.pool(), id, "w", &transient(), Duration::from_secs(60)).await.unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert!(job.finished_at.is_some());

    // An administrator's retry grants another attempt and owes a dispatch.
    let again = jobs::retry_failed(&mut db.pool().acquire().await.unwrap(), id, 1).await.unwrap();
    assert_eq!((again.job.status, again.job.max_attempts, again.job.error.clone()), (JobStatus::Queued, 3, None));
    assert_eq!(again.dispatch["jobId"], id.to_string());
    assert!(matches!(
        jobs::retry_failed(&mut db.pool().acquire().await.unwrap(), id, 1).await,
        Err(DbError::InvalidJobState { status: JobStatus::Queued, .. })
    ));
    assert!(matches!(
        jobs::retry_failed(&mut db.pool().acquire().await.unwrap(), JobId::new(), 1).await,
        Err(DbError::NotFound)
    ));
}

#[tokio::test]
async fn permanent_failures_fail_at_once() {
    let db = TestDb::new().await;
    let id = enqueue(db.pool(), "q", 5).await;
    jobs::claim(db.pool(), id, "w", LEASE).await.unwrap().unwrap();
    let permanent = JobError { code: ErrorCode::UnknownTemplate, message: "no template 9000".into(), retryable: false };
    let job = jobs::fail(db.pool(), id, "w", &permanent, Duration::from_secs(1)).await.unwrap();
    assert_eq!((job.status, job.attempts), (JobStatus::Failed, 1));
    assert_eq!(job.handle().error.unwrap().code, ErrorCode::UnknownTemplate);
}

#[tokio::test]
async fn the_operators_detail_is_kept_beside_the_error_and_out_of_the_events() {
    let db = TestDb::new().await;
    let id = enqueue(db.pool(), "q", 2).await;
    let error =
        JobError { code: ErrorCode::ProxmoxRejected, message: "Proxmox could not clone".into(), retryable: true };
    let detail = "clone template: POST /nodes/pve1/qemu/9000/clone: HTTP 500: storage-7 (10.20.30.40) unreachable";
    jobs::claim(db.pool(), id, "w", LEASE).await.unwrap().unwrap();
    let job = jobs::fail_with_detail(db.pool(), id, "w", &error, Some(detail), Duration::ZERO).await.unwrap();
    assert_eq!((job.status, job.error_detail.as_deref()), (JobStatus::Queued, Some(detail)));
    let handle = serde_json::to_string(&job.handle()).unwrap();
    assert!(!handle.contains("10.20.30.40"), "{handle}");
    let events = jobs::events_after(db.pool(), id, 0, 100).await.unwrap();
    assert_eq!(events.last().unwrap().message.as_deref(), Some("Proxmox could not clone"));
    assert!(events.iter().all(|e| !e.message.as_deref().unwrap_or_default().contains("10.20.30.40")));

    let job = jobs::claim(db.pool(), id, "w", LEASE).await.unwrap().unwrap();
    assert_eq!(job.error_detail.as_deref(), Some(detail), "a retry in progress still shows the last failure");

    // The last attempt's detail replaces the earlier one; an administrator's retry clears both.
    let job = jobs::fail_with_detail(db.pool(), id, "w", &error, Some("second"), Duration::ZERO).await.unwrap();
    assert_eq!((job.status, job.error_detail.as_deref()), (JobStatus::Failed, Some("second")));
    let again = jobs::retry_failed(&mut db.pool().acquire().await.unwrap(), id, 1).await.unwrap();
    assert_eq!((again.job.error, again.job.error_detail), (None, None));
    // A failure without a detail leaves none behind.
    jobs::claim(db.pool(), id, "w", LEASE).await.unwrap().unwrap();
    let job = jobs::fail(db.pool(), id, "w", &error, Duration::ZERO).await.unwrap();
    assert_eq!((job.status, job.error_detail), (JobStatus::Failed, None));
    // The database refuses a detail without an error.
    sqlx::query(
        "update jobs set error_code = null, error_message = null, error_retryable = null, status = 'cancelled' \
                 where id = $1",
    )
    .bind(id.as_uuid())
    .execute(db.pool())
    .await
    .unwrap();
    let refused =
        sqlx::query("update jobs set error_detail = 'x' where id = $1").bind(id.as_uuid()).execute(db.pool()).await;
    assert!(refused.unwrap_err().to_string().contains("jobs_error_detail_check"));
}

#[tokio::test]
async fn expired_leases_are_reclaimed_and_the_old_holder_is_fenced_off() {
    let db = TestDb::new().await;
    let id = enqueue(db.pool(), "q", 2).await;
    let healthy = enqueue(db.pool(), "q", 2).await;
    jobs::claim(db.pool(), id, "dead", Duration::from_millis(1)).await.unwrap().unwrap();
    jobs::claim(db.pool(), healthy, "alive", LEASE).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let rec = jobs::recover_expired_leases(db.pool()).await.unwrap();
    assert_eq!((rec.requeued, rec.failed), (vec![id], vec![]));
    assert_eq!(jobs::get(db.pool(), healthy).await.unwrap().status, JobStatus::Running);
    // The crashed worker comes back: its lease is gone.
    assert!(matches!(jobs::complete(db.pool(), id, "dead", None).await, Err(DbError::LeaseLost(_))));

    let job = jobs::claim(db.pool(), id, "w2", Duration::from_millis(1)).await.unwrap().unwrap();
    assert_eq!(job.attempts, 2);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let rec = jobs::recover_expired_leases(db.pool()).await.unwrap();
    assert_eq!((rec.requeued, rec.failed), (vec![], vec![id]));
    let job = jobs::get(db.pool(), id).await.unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error.unwrap().code, ErrorCode::LeaseExpired);
}

#[tokio::test]
async fn only_queued_jobs_can_be_cancelled() {
    let db = TestDb::new().await;
    let (_, tenant, _) = tenant_with(db.pool(), ROOMY).await;
    let queued = jobs::enqueue(db.pool(), Some(tenant.id), &NewJob::new(JobKind::Backup, "q", serde_json::json!({})))
        .await
        .unwrap()
        .job
        .id;
    let running = enqueue(db.pool(), "q", 1).await;
    jobs::claim(db.pool(), running, "w", LEASE).await.unwrap().unwrap();

    let (_, stranger, _) = tenant_with(db.pool(), ROOMY).await;
    assert!(matches!(jobs::cancel(db.pool(), queued, Some(stranger.id)).await, Err(DbError::NotFound)));
    let job = jobs::cancel(db.pool(), queued, Some(tenant.id)).await.unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(jobs::claim(db.pool(), queued, "w", LEASE).await.unwrap().is_none());
    let err = jobs::cancel(db.pool(), running, None).await.unwrap_err();
    assert!(matches!(err, DbError::InvalidJobState { status: JobStatus::Running, .. }));
    assert_eq!(err.code(), ErrorCode::InvalidJobState);
}

#[tokio::test]
async fn jobs_are_listed_newest_first_and_by_status() {
    let db = TestDb::new().await;
    let (_, tenant, _) = tenant_with(db.pool(), ROOMY).await;
    let target = ResourceRef { kind: "instance".into(), id: "abc".into() };
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut job = NewJob::new(JobKind::Snapshot, "q", serde_json::json!({}));
        job.resources = vec![target.clone()];
        ids.push(jobs::enqueue(db.pool(), Some(tenant.id), &job).await.unwrap().job.id);
    }
    let (page, total) =
        jobs::list(db.pool(), tenant.id, jobs::JobFilter::default(), PageRequest { page: 1, per_page: 2 })
            .await
            .unwrap();
    assert_eq!(total, 3);
    assert_eq!(page.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[2], ids[1]]);
    let (running, total) = jobs::list(
        db.pool(),
        tenant.id,
        jobs::JobFilter { status: Some(JobStatus::Running), instance: None },
        PageRequest::default(),
    )
    .await
    .unwrap();
    assert!(running.is_empty());
    assert_eq!(total, 0);
}
