//! The runtime role `nimbus_app` (migration 20261206000001_app_role.sql): it reads and writes
//! rows, and nothing it can do removes the audit log's protection or changes the schema.

use chrono::Utc;
use nimbus_db::audit::{self, NewEntry, Outcome};
use nimbus_db::{instances, jobs};
use nimbus_domain::PageRequest;
use nimbus_testkit::TestDb;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::{ROOMY, count, provision_job, tenant_with, vm};

/// SQLSTATE 42501, `insufficient_privilege`: what PostgreSQL answers a role lacking a right (and
/// what the audit log's triggers raise).
const INSUFFICIENT_PRIVILEGE: &str = "42501";

fn entry(request_id: &str) -> NewEntry {
    NewEntry {
        at: Utc::now(),
        actor_id: None,
        impersonator_id: None,
        tenant_id: None,
        action: "POST /v1/vms".into(),
        resource_type: Some("vms".into()),
        resource_id: None,
        request_id: request_id.into(),
        client_ip: None,
        outcome: Outcome::Denied,
        http_status: 401,
        details: serde_json::json!({}),
    }
}

async fn refused(pool: &PgPool, sql: &str) {
    let e = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await.expect_err(sql);
    let code = e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some(INSUFFICIENT_PRIVILEGE), "{sql}: {e}");
}

/// The audit log's triggers, and whether each is enabled (`O`: fires in origin sessions).
async fn audit_triggers(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "select tgname::text, tgenabled::text from pg_trigger \
         where tgrelid = 'audit_log'::regclass and not tgisinternal order by tgname",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_runtime_role_cannot_disable_drop_or_bypass_the_audit_logs_protection() {
    let db = TestDb::new().await;
    let app = db.app_pool();
    audit::append_many(app, &[entry("req-kept")]).await.unwrap();
    let triggers = audit_triggers(db.pool()).await;
    assert_eq!(triggers.len(), 3, "{triggers:?}");

    for sql in [
        "alter table audit_log disable trigger all",
        "alter table audit_log disable trigger audit_log_no_delete",
        "drop trigger audit_log_no_update on audit_log",
        "drop function audit_log_append_only() cascade",
        "create or replace function audit_log_append_only() returns trigger language plpgsql \
         as $$ begin return null; end $$",
        "truncate audit_log",
        "update audit_log set outcome = 'success'",
        "delete from audit_log",
        "drop table audit_log",
        "alter table audit_log owner to nimbus_app",
        "alter table tenants add column note text",
        "alter table jobs drop constraint jobs_lease_check",
        "create table scratch (x int)",
        "create function scratch() returns int language sql as 'select 1'",
        "create schema scratch",
        "set session_replication_role = replica",
    ] {
        refused(app, sql).await;
    }

    // Nothing changed: the triggers are there and enabled, the row is intact, no object appeared.
    assert_eq!(audit_triggers(db.pool()).await, triggers);
    assert!(triggers.iter().all(|(_, enabled)| enabled == "O"), "{triggers:?}");
    let (rows, total) = audit::search_all_tenants(app, &Default::default(), PageRequest::default()).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!((rows[0].request_id.as_str(), rows[0].outcome), ("req-kept", Outcome::Denied));
    let added: i64 = sqlx::query_scalar::<_, i64>(
        "select count(*) from pg_class where relname = 'scratch' \
         union all select count(*) from pg_attribute where attrelid = 'tenants'::regclass and attname = 'note'",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
    .iter()
    .sum();
    assert_eq!(added, 0);
    // Granting itself more is a no-op (PostgreSQL only warns): it still holds no such right.
    sqlx::query("grant truncate, update, delete on audit_log to nimbus_app").execute(app).await.unwrap();
    let rights: (bool, bool, bool, bool) = sqlx::query_as(
        "select has_table_privilege('nimbus_app', 'audit_log', 'TRUNCATE'), \
                has_table_privilege('nimbus_app', 'audit_log', 'UPDATE'), \
                has_table_privilege('nimbus_app', 'audit_log', 'DELETE'), \
                has_table_privilege('nimbus_app', 'audit_log', 'INSERT')",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(rights, (false, false, false, true));

    // The same through one connection: the refused SET leaves triggers firing for it.
    let mut conn = app.acquire().await.unwrap();
    assert!(sqlx::query("set session_replication_role = replica").execute(&mut *conn).await.is_err());
    let mode: String = sqlx::query_scalar("show session_replication_role").fetch_one(&mut *conn).await.unwrap();
    assert_eq!(mode, "origin");
    let e = sqlx::query("update audit_log set action = 'x' where id = -1").execute(&mut *conn).await.unwrap_err();
    assert!(e.to_string().contains("permission denied"), "{e}");
}

#[tokio::test]
async fn the_runtime_role_reads_and_writes_rows_runs_triggers_and_notifies() {
    let db = TestDb::new().await;
    let app = db.app_pool();
    let user: String = sqlx::query_scalar("select current_user::text").fetch_one(app).await.unwrap();
    assert_eq!(user, nimbus_db::APP_ROLE);

    // Inserts through the quota triggers and functions, identity columns, updates, deletes.
    let (_, tenant, admin) = tenant_with(app, ROOMY).await;
    let created = instances::create(app, tenant.id, &vm("web-1"), &provision_job()).await.unwrap();
    let used: i64 = sqlx::query_scalar("select instances from tenant_usage where tenant_id = $1")
        .bind(tenant.id.as_uuid())
        .fetch_one(app)
        .await
        .unwrap();
    assert_eq!(used, 1);
    assert_eq!(jobs::events_after(app, created.enqueued.job.id, 0, 10).await.unwrap().len(), 1);
    assert_eq!(audit::append_many(app, &[entry("req-1"), entry("req-2")]).await.unwrap(), 2);
    assert_eq!(count(app, "audit_log").await, 2);
    sqlx::query("update users set display_name = 'Ops' where id = $1")
        .bind(admin.id.as_uuid())
        .execute(app)
        .await
        .unwrap();
    sqlx::query("delete from instances where id = $1").bind(created.instance.id.as_uuid()).execute(app).await.unwrap();
    assert_eq!(count(app, "instances").await, 0);

    // LISTEN/NOTIFY, as the API's key cache uses them.
    let mut listener = PgListener::connect_with(app).await.unwrap();
    listener.listen("nimbus_auth_changed").await.unwrap();
    sqlx::query("delete from users where id = $1").bind(admin.id.as_uuid()).execute(app).await.unwrap();
    let heard = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv()).await;
    assert_eq!(heard.expect("notified in time").unwrap().channel(), "nimbus_auth_changed");
}

#[tokio::test]
async fn tables_a_later_migration_creates_are_granted_to_the_runtime_role() {
    let db = TestDb::new().await;
    // As the owner that ran the migrations, like the next migration file would.
    sqlx::query("create table later_feature (id bigint generated always as identity primary key, note text not null)")
        .execute(db.pool())
        .await
        .unwrap();
    let app = db.app_pool();
    let id: i64 =
        sqlx::query_scalar("insert into later_feature (note) values ('a') returning id").fetch_one(app).await.unwrap();
    sqlx::query("update later_feature set note = 'b' where id = $1").bind(id).execute(app).await.unwrap();
    let note: String = sqlx::query_scalar("select note from later_feature").fetch_one(app).await.unwrap();
    assert_eq!(note, "b");
    sqlx::query("delete from later_feature").execute(app).await.unwrap();
    refused(app, "truncate later_feature").await;
    refused(app, "drop table later_feature").await;
}

#[tokio::test]
async fn schema_check_tells_the_runtime_role_from_the_owner_and_sees_pending_migrations() {
    let db = TestDb::new().await;
    let current = nimbus_db::schema_check(db.app_pool()).await.unwrap();
    assert_eq!(current, nimbus_db::SchemaCheck { pending: vec![], privileged: false });
    assert!(nimbus_db::schema_check(db.pool()).await.unwrap().privileged, "the superuser is privileged");

    let last = nimbus_db::MIGRATOR.iter().map(|m| m.version).max().unwrap();
    // The runtime role cannot rewrite the history to hide a pending migration...
    refused(db.app_pool(), "delete from _sqlx_migrations").await;
    // ...and sees one the owner has not applied yet.
    sqlx::query("delete from _sqlx_migrations where version = $1").bind(last).execute(db.pool()).await.unwrap();
    assert_eq!(nimbus_db::schema_check(db.app_pool()).await.unwrap().pending, vec![last]);
}
