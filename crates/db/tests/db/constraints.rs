//! The database itself refuses bad rows, whatever code writes them.

use nimbus_db::DbError;
use nimbus_testkit::TestDb;
use sqlx::AssertSqlSafe;

use crate::{ROOMY, tenant_with};

async fn violated(pool: &sqlx::PgPool, sql: String) -> String {
    let err: DbError = sqlx::query(AssertSqlSafe(sql.clone())).execute(pool).await.unwrap_err().into();
    err.constraint().unwrap_or_else(|| panic!("{sql}: {err:?}")).to_owned()
}

#[tokio::test]
async fn check_constraints_refuse_bad_rows() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (plan, tenant, _) = tenant_with(pool, ROOMY).await;
    let job = |cols: &str, vals: &str| {
        format!("insert into jobs (id, kind, queue{cols}) values (gen_random_uuid(), 'meter', 'q'{vals})")
    };
    let cases = [
        (job(", progress", ", 101"), "jobs_progress_check"),
        (job(", progress", ", -1"), "jobs_progress_check"),
        (job(", status", ", 'paused'"), "jobs_status_check"),
        (job(", status", ", 'running'"), "jobs_lease_check"),
        (
            job(
                ", status, finished_at, error_code, error_message, error_retryable",
                ", 'failed', null, 'X', 'x', false",
            ),
            "jobs_finished_check",
        ),
        (job(", status, finished_at", ", 'failed', now()"), "jobs_error_check"),
        (job(", attempts, max_attempts", ", 4, 3"), "jobs_attempts_check"),
        (job(", max_attempts", ", 0"), "jobs_attempts_check"),
        (job(", resources", ", '{}'"), "jobs_resources_check"),
        ("insert into jobs (id, kind, queue) values (gen_random_uuid(), 'Bad Kind', 'q')".into(), "jobs_kind_check"),
        (
            "insert into plans (id, name, max_instances, max_vcpus, max_memory_mib, max_disk_gib) \
             values (gen_random_uuid(), 'neg', -1, 1, 1, 1)"
                .into(),
            "plans_limits_check",
        ),
        (
            "insert into plans (id, name, max_instances, max_vcpus, max_memory_mib, max_disk_gib, price_vcpu_hour) \
             values (gen_random_uuid(), 'negp', 1, 1, 1, 1, -0.01)"
                .into(),
            "plans_prices_check",
        ),
        (format!("update plans set currency = 'eur' where id = '{}'", plan.id), "plans_currency_check"),
        (
            format!(
                "insert into users (id, tenant_id, email, role) values (gen_random_uuid(), '{}', 'x@y.z', 'root')",
                tenant.id
            ),
            "users_role_check",
        ),
        (
            format!(
                "insert into instances (id, tenant_id, name, kind, template, cores, memory_mib, disk_gib) \
                 values (gen_random_uuid(), '{}', 'x', 'docker', 't', 1, 1, 1)",
                tenant.id
            ),
            "instances_kind_check",
        ),
        (
            format!(
                "insert into instances (id, tenant_id, name, kind, template, cores, memory_mib, disk_gib, status) \
                 values (gen_random_uuid(), '{}', 'x', 'lxc', 't', 1, 1, 1, 'paused')",
                tenant.id
            ),
            "instances_status_check",
        ),
        (
            format!(
                "insert into instances (id, tenant_id, name, kind, template, cores, memory_mib, disk_gib) \
                 values (gen_random_uuid(), '{}', 'x', 'lxc', 't', 1, -5, 1)",
                tenant.id
            ),
            "instances_sizes_check",
        ),
        (
            format!(
                "insert into idempotency_keys (tenant_id, key, request_sha256, locked_until) \
                 values ('{}', 'k', '\\x00', now())",
                tenant.id
            ),
            "idempotency_keys_hash_check",
        ),
        (
            format!(
                "insert into idempotency_keys (tenant_id, key, request_sha256) values ('{}', 'k', sha256('x'))",
                tenant.id
            ),
            "idempotency_keys_state_check",
        ),
        (
            "insert into job_events (job_id, status, progress) values (gen_random_uuid(), 'queued', 0)".into(),
            "job_events_job_fkey",
        ),
        ("insert into outbox (job_id, queue, payload) values (gen_random_uuid(), 'q', '{}')".into(), "outbox_job_fkey"),
    ];
    for (sql, constraint) in cases {
        assert_eq!(violated(pool, sql.clone()).await, constraint, "{sql}");
    }
}
