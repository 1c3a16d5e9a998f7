//! The fixtures against the real services: isolation between tests and cleanup.

use nimbus_testkit::{TestDb, TestRedis};
use redis::AsyncCommands;

#[tokio::test]
async fn each_test_db_is_migrated_and_separate() {
    let a = TestDb::new().await;
    let b = TestDb::new().await;
    assert_ne!(a.name(), b.name());
    let tables: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.tables where table_name in ('jobs', 'instances', 'outbox')",
    )
    .fetch_one(a.pool())
    .await
    .unwrap();
    assert_eq!(tables, 3);
    sqlx::query("create table scratch (x int)").execute(a.pool()).await.unwrap();
    let in_b: i64 = sqlx::query_scalar("select count(*) from information_schema.tables where table_name = 'scratch'")
        .fetch_one(b.pool())
        .await
        .unwrap();
    assert_eq!(in_b, 0);
}

#[tokio::test]
async fn the_app_pool_is_the_runtime_role_on_the_same_database() {
    let db = TestDb::new().await;
    let (user, database): (String, String) =
        sqlx::query_as("select current_user::text, current_database()::text").fetch_one(db.app_pool()).await.unwrap();
    assert_eq!((user.as_str(), database.as_str()), (nimbus_db::APP_ROLE, db.name()));
    assert!(db.app_url().contains(db.name()));
    let superuser: bool = sqlx::query_scalar("select rolsuper from pg_roles where rolname = current_user")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(superuser, "fixtures keep the superuser");
}

#[tokio::test]
async fn a_dropped_test_db_is_removed() {
    let db = TestDb::new().await;
    let name = db.name().to_owned();
    let admin = sqlx::PgPool::connect(&std::env::var(nimbus_testkit::DATABASE_URL_VAR).unwrap()).await.unwrap();
    drop(db);
    let left: i64 = sqlx::query_scalar("select count(*) from pg_database where datname = $1")
        .bind(&name)
        .fetch_one(&admin)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn test_redis_prefixes_are_separate_and_cleaned_up() {
    let a = TestRedis::new().await;
    let b = TestRedis::new().await;
    assert_ne!(a.prefix(), b.prefix());
    let mut conn = a.connection().await;
    let _: () = conn.set(a.key("x"), 1).await.unwrap();
    let _: () = conn.set(a.key("y"), 2).await.unwrap();
    assert_eq!(a.keys().await, vec![a.key("x"), a.key("y")]);
    assert!(b.keys().await.is_empty());
    let prefix = a.prefix().to_owned();
    drop(a);
    let left: Vec<String> = conn.keys(format!("{prefix}*")).await.unwrap();
    assert!(left.is_empty(), "keys left after drop: {left:?}");
}
