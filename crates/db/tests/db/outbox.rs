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
