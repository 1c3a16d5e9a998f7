//! Idempotency-Key semantics of DESIGN §6.

use std::time::Duration;

use nimbus_db::idempotency::{self, Begin, request_hash};
use nimbus_db::{DbError, instances};
use nimbus_testkit::TestDb;

use crate::{ROOMY, count, provision_job, tenant_with, vm};

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn same_key_same_body_replays_other_body_is_refused_in_flight_is_reported() {
    let db = TestDb::new().await;
    let (_, tenant, _) = tenant_with(db.pool(), ROOMY).await;
    let body = br#"{"name":"web"}"#;
    let hash = request_hash("POST", "/v1/vms", body);
    let other = request_hash("POST", "/v1/vms", br#"{"name":"db"}"#);

    assert_eq!(idempotency::begin(db.pool(), tenant.id, "k1", &hash, LEASE).await.unwrap(), Begin::Started);
    assert_eq!(idempotency::begin(db.pool(), tenant.id, "k1", &hash, LEASE).await.unwrap(), Begin::InProgress);
    assert_eq!(idempotency::begin(db.pool(), tenant.id, "k1", &other, LEASE).await.unwrap(), Begin::Mismatch);

    // The answer commits with the work it describes.
    let mut tx = db.pool().begin().await.unwrap();
    let created = instances::create_with_job(&mut *tx, tenant.id, &vm("web"), &provision_job()).await.unwrap();
    let answer = serde_json::json!({"data": {"id": created.enqueued.job.id}});
    idempotency::complete(&mut *tx, tenant.id, "k1", 202, &answer).await.unwrap();
    tx.commit().await.unwrap();

    let replay = idempotency::begin(db.pool(), tenant.id, "k1", &hash, LEASE).await.unwrap();
    assert_eq!(replay, Begin::Replay { status: 202, body: Some(answer) });
    assert_eq!(idempotency::begin(db.pool(), tenant.id, "k1", &other, LEASE).await.unwrap(), Begin::Mismatch);
    assert_eq!(count(db.pool(), "jobs").await, 1);

    // Keys are per tenant.
    let (_, other_tenant, _) = tenant_with(db.pool(), ROOMY).await;
    assert_eq!(idempotency::begin(db.pool(), other_tenant.id, "k1", &other, LEASE).await.unwrap(), Begin::Started);
}

#[tokio::test]
async fn concurrent_duplicates_let_exactly_one_through() {
    let db = TestDb::new().await;
    let (_, tenant, _) = tenant_with(db.pool(), ROOMY).await;
    let hash = request_hash("POST", "/v1/vms", b"{}");
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let pool = db.pool().clone();
            tokio::spawn(async move { idempotency::begin(&pool, tenant.id, "same", &hash, LEASE).await.unwrap() })
        })
        .collect();
    let mut started = 0;
    for t in tasks {
        match t.await.unwrap() {
            Begin::Started => started += 1,
            Begin::InProgress => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(started, 1);
}

#[tokio::test]
async fn abandoned_stale_and_expired_keys_can_be_used_again() {
    let db = TestDb::new().await;
    let (_, tenant, _) = tenant_with(db.pool(), ROOMY).await;
    let hash = request_hash("POST", "/v1/vms", b"{}");
    let other = request_hash("POST", "/v1/vms", b"{\"x\":1}");

    // An answer that must not be replayed (5xx): abandon, and the retry starts afresh.
    assert_eq!(idempotency::begin(db.pool(), tenant.id, "a", &hash, LEASE).await.unwrap(), Begin::Started);
    idempotency::abandon(db.pool(), tenant.id, "a").await.unwrap();
    assert_eq!(idempotency::begin(db.pool(), tenant.id, "a", &hash, LEASE).await.unwrap(), Begin::Started);

    // The first request died in flight: once its lease ends the same request takes over, a
    // different one is still refused.
    let short = Duration::from_millis(1);
    assert_eq!(idempotency::begin(db.pool(), tenant.id, "s", &hash, short).await.unwrap(), Begin::Started);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(idempotency::begin(db.pool(), tenant.id, "s", &other, LEASE).await.unwrap(), Begin::Mismatch);
    assert_eq!(idempotency::begin(db.pool(), tenant.id, "s", &hash, LEASE).await.unwrap(), Begin::Started);

    // After 24 hours a key is new again, whatever the body.
    idempotency::complete(db.pool(), tenant.id, "s", 202, &serde_json::json!({})).await.unwrap();
    sqlx::query("update idempotency_keys set expires_at = now() - interval '1 second' where key = 's'")
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(idempotency::begin(db.pool(), tenant.id, "s", &other, LEASE).await.unwrap(), Begin::Started);

    // Completing a key nobody holds is an error, not a silent overwrite.
    idempotency::complete(db.pool(), tenant.id, "s", 202, &serde_json::json!({})).await.unwrap();
    assert!(matches!(
        idempotency::complete(db.pool(), tenant.id, "s", 500, &serde_json::json!({})).await,
        Err(DbError::NotFound)
    ));
    sqlx::query("update idempotency_keys set expires_at = now() - interval '1 second'")
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(idempotency::purge_expired(db.pool()).await.unwrap(), 2);
}
