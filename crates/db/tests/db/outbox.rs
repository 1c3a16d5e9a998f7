//! The outbox: relays share the backlog without overlap, and pushed rows are not fetched again.

use nimbus_db::jobs::{self, NewJob};
use nimbus_db::outbox;
use nimbus_domain::JobKind;
use nimbus_testkit::TestDb;

#[tokio::test]
async fn relays_split_the_backlog_and_marked_rows_stay_pushed() {
    let db = TestDb::new().await;
    for _ in 0..6 {
        jobs::enqueue(db.pool(), None, &NewJob::new(JobKind::Notify, "notify", serde_json::json!({}))).await.unwrap();
    }
    let mut later = NewJob::new(JobKind::Notify, "notify", serde_json::json!({}));
    later.run_after = Some(chrono::Utc::now() + chrono::Duration::hours(1));
    jobs::enqueue(db.pool(), None, &later).await.unwrap();
    assert_eq!(outbox::backlog(db.pool()).await.unwrap(), 7);

    let mut a = db.pool().begin().await.unwrap();
    let mut b = db.pool().begin().await.unwrap();
    let first = outbox::fetch_due(&mut a, 4).await.unwrap();
    let second = outbox::fetch_due(&mut b, 10).await.unwrap();
    assert_eq!((first.len(), second.len()), (4, 2), "the future row is not due; locked rows are skipped");
    assert!(first.iter().all(|e| second.iter().all(|f| f.id != e.id)));
    assert!(first.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(first[0].payload["kind"], "notify");
    let ids: Vec<i64> = first.iter().map(|e| e.id).collect();
    assert_eq!(outbox::mark_pushed(&mut *a, &ids).await.unwrap(), 4);
    a.commit().await.unwrap();
    // Relay b crashed before marking: its rows come back.
    b.rollback().await.unwrap();

    let mut c = db.pool().begin().await.unwrap();
    let again = outbox::fetch_due(&mut c, 10).await.unwrap();
    assert_eq!(again.iter().map(|e| e.id).collect::<Vec<_>>(), second.iter().map(|e| e.id).collect::<Vec<_>>());
    c.commit().await.unwrap();
    assert_eq!(outbox::mark_pushed(db.pool(), &ids).await.unwrap(), 0, "already pushed");
    assert_eq!(outbox::backlog(db.pool()).await.unwrap(), 3);
    assert!(outbox::next_due_at(db.pool()).await.unwrap().is_some());
    assert_eq!(
        outbox::delete_pushed_before(db.pool(), chrono::Utc::now() + chrono::Duration::seconds(1)).await.unwrap(),
        4
    );
}

#[tokio::test]
async fn a_failed_push_owes_a_row_and_the_sweep_finds_jobs_whose_message_was_lost() {
    use chrono::{Duration, Utc};
    use nimbus_db::instances;

    use crate::{ROOMY, provision_job, tenant_with, vm};

    let db = TestDb::new().await;
    let (_, tenant, _) = tenant_with(db.pool(), ROOMY).await;
    let create = |name: &'static str| {
        let pool = db.pool().clone();
        async move { instances::create(&pool, tenant.id, &vm(name), &provision_job()).await.unwrap().enqueued.job }
    };
    let pushed = create("pushed").await;
    let lost = create("lost").await;
    let failed_push = create("failed-push").await;
    let running = create("running").await;
    jobs::claim(db.pool(), running.id, "w", std::time::Duration::from_secs(60)).await.unwrap().unwrap();

    // The API's push failed: it owes the job a row, once, and only while the job is queued.
    assert_eq!(outbox::owe(db.pool(), &[failed_push.id, running.id]).await.unwrap(), 1, "a claimed job needs none");
    // `pushed` was pushed by the relay (its row marked) after `lost`'s process died unpushed.
    assert_eq!(outbox::owe(db.pool(), &[pushed.id]).await.unwrap(), 1);
    let mut tx = db.pool().begin().await.unwrap();
    let row = outbox::fetch_due(&mut tx, 10).await.unwrap().into_iter().find(|e| e.job_id == pushed.id).unwrap();
    outbox::mark_pushed(&mut *tx, &[row.id]).await.unwrap();
    tx.commit().await.unwrap();

    // Redis still holds messages from before these jobs were due: nothing is called lost.
    let before_them = lost.run_after - Duration::seconds(1);
    assert_eq!(outbox::owe_undelivered(db.pool(), "provision", before_them, &[], 100).await.unwrap(), 0);
    // Every message pushed before `pushed`'s relay push has been delivered: only `lost` has no
    // message (`failed-push` has its row waiting, `pushed` was pushed since, `running` is
    // claimed).
    let pushed_at: chrono::DateTime<Utc> = sqlx::query_scalar("select pushed_at from outbox where id = $1")
        .bind(row.id)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(outbox::owe_undelivered(db.pool(), "other-queue", pushed_at, &[], 100).await.unwrap(), 0);
    // A worker holds `lost`'s message (delivered, not yet claimed): not lost.
    assert_eq!(outbox::owe_undelivered(db.pool(), "provision", pushed_at, &[lost.id], 100).await.unwrap(), 0);
    assert_eq!(outbox::owe_undelivered(db.pool(), "provision", pushed_at, &[], 100).await.unwrap(), 1);
    // Later, `pushed`'s message is consumed too while the job is still queued: owed again.
    let settled = Utc::now() + Duration::minutes(1);
    assert_eq!(outbox::owe_undelivered(db.pool(), "provision", settled, &[], 100).await.unwrap(), 1);
    let owed: Vec<(uuid::Uuid, Option<chrono::DateTime<Utc>>)> =
        sqlx::query_as("select job_id, pushed_at from outbox where pushed_at is null order by id")
            .fetch_all(db.pool())
            .await
            .unwrap();
    let owed: Vec<_> = owed.into_iter().map(|(j, _)| j).collect();
    assert_eq!(owed, vec![failed_push.id.as_uuid(), lost.id.as_uuid(), pushed.id.as_uuid()]);
    assert_eq!(outbox::owe_undelivered(db.pool(), "provision", settled, &[], 100).await.unwrap(), 0, "owed once");
}
