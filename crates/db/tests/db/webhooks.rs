//! Webhook deliveries' derived ids: the workers' and SQL's agree.

use nimbus_db::webhooks::delivery_id;
use nimbus_testkit::TestDb;
use uuid::Uuid;

#[tokio::test]
async fn a_delivery_id_is_the_same_computed_by_the_workers_and_by_sql() {
    let db = TestDb::new().await;
    let pairs: Vec<(Uuid, Uuid)> = (0..20).map(|_| (Uuid::new_v4(), Uuid::new_v4())).collect();
    for (endpoint, event) in &pairs {
        let in_sql: Uuid = sqlx::query_scalar("select webhook_delivery_id($1, $2)")
            .bind(endpoint)
            .bind(event)
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(delivery_id(*endpoint, *event), in_sql);
    }
    // The pair is ordered: the endpoint's id first.
    let (endpoint, event) = pairs[0];
    assert_ne!(delivery_id(endpoint, event), delivery_id(event, endpoint));
}
