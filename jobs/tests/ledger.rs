//! The group-committing ledger writer against a real PostgreSQL (`NIMBUS_TEST_DATABASE_URL`).

use std::time::Duration;

use futures::future::join_all;
use nimbus_db::jobs::{self, NewJob};
use nimbus_domain::{JobId, JobKind, JobStatus};
use nimbus_jobs::LedgerWriter;
use nimbus_testkit::TestDb;

const LEASE: Duration = Duration::from_secs(60);

async fn enqueue(db: &TestDb, n: usize) -> Vec<JobId> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let new = NewJob::new(JobKind::Notify, "notify", serde_json::json!({}));
        ids.push(jobs::enqueue(db.pool(), None, &new).await.unwrap().job.id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_and_completions_sent_together_share_statements_with_the_single_job_semantics() {
    let db = TestDb::new().await;
    let ids = enqueue(&db, 40).await;
    let writer = LedgerWriter::start(db.app_pool().clone(), "w1", LEASE, 256, 2);

    // Every job claimed by one of 40 concurrent handlers, and one of them delivered twice.
    let mut claims: Vec<JobId> = ids.clone();
    claims.push(ids[7]);
    let claimed = join_all(claims.iter().map(|&id| writer.claim(id))).await;
    let got: Vec<_> = claimed.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(got.iter().filter(|j| j.is_some()).count(), 40, "the duplicate delivery gets nothing");
    for job in got.iter().flatten() {
        assert_eq!((job.status, job.attempts, job.locked_by.as_deref()), (JobStatus::Running, 1, Some("w1")));
    }
    assert!(writer.statements() < 41, "{} statements for 41 claims", writer.statements());

    // Completions: only the lease holder's count.
    let other = LedgerWriter::start(db.app_pool().clone(), "w2", LEASE, 256, 2);
    assert!(!other.complete(ids[0]).await.unwrap(), "w2 does not hold it");
    let done = join_all(ids.iter().map(|&id| writer.complete(id))).await;
    assert!(done.into_iter().all(|r| r.unwrap()));
    assert!(!writer.complete(ids[0]).await.unwrap(), "already complete");
    assert!(writer.claim(ids[0]).await.unwrap().is_none(), "a final job is not claimed again");
    for id in &ids {
        let job = jobs::get(db.pool(), *id).await.unwrap();
        assert_eq!((job.status, job.progress, job.locked_by), (JobStatus::Succeeded, 100, None));
        let events: Vec<_> =
            jobs::events_after(db.pool(), *id, 0, 10).await.unwrap().into_iter().map(|e| e.status).collect();
        assert_eq!(events, [JobStatus::Queued, JobStatus::Running, JobStatus::Succeeded]);
    }
}

#[tokio::test]
async fn a_failed_statement_answers_every_waiter_with_the_error() {
    let db = TestDb::new().await;
    let ids = enqueue(&db, 2).await;
    let closed = db.pool().clone();
    let writer = LedgerWriter::start(closed.clone(), "w1", LEASE, 256, 2);
    closed.close().await;
    for id in ids {
        let err = writer.claim(id).await.unwrap_err();
        assert!(err.unavailable, "{err}");
    }
}
