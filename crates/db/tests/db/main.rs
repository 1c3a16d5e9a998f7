//! nimbus-db against a real PostgreSQL (a fresh database per test, from nimbus-testkit).

mod accounts;
mod app_role;
mod constraints;
mod idempotency;
mod instances;
mod jobs;
mod outbox;
mod webhooks;

use nimbus_db::instances::NewInstance;
use nimbus_db::jobs::NewJob;
use nimbus_db::plans::{self, NewPlan, Plan};
use nimbus_db::tenants::{self, Tenant};
use nimbus_db::users::{self, NewUser, User};
use nimbus_domain::{InstanceKind, JobKind, Money, PlanLimits, PlanPrices, Role};
use sqlx::PgPool;

/// Limits generous enough that tests not about quota never hit them.
pub const ROOMY: PlanLimits =
    PlanLimits { max_instances: 100, max_vcpus: 400, max_memory_mib: 1 << 30, max_disk_gib: 1 << 20 };

/// A plan with `limits`, a tenant on it and an admin.
pub async fn tenant_with(pool: &PgPool, limits: PlanLimits) -> (Plan, Tenant, User) {
    let plan = plans::create(
        pool,
        &NewPlan {
            name: format!("plan-{}", uuid::Uuid::new_v4().simple()),
            limits,
            prices: PlanPrices {
                currency: "EUR".into(),
                vcpu_hour: Money(rust_decimal::Decimal::new(4, 3)),
                memory_gib_hour: Money(rust_decimal::Decimal::new(2, 3)),
                disk_gib_hour: Money(rust_decimal::Decimal::new(1, 4)),
            },
        },
    )
    .await
    .unwrap();
    let tenant = tenants::create(pool, "Acme", plan.id).await.unwrap();
    let admin = users::create(
        pool,
        tenant.id,
        &NewUser { email: "ops@acme.test".into(), display_name: None, role: Role::Admin },
    )
    .await
    .unwrap();
    (plan, tenant, admin)
}

/// A small VM named `name`.
pub fn vm(name: &str) -> NewInstance {
    NewInstance {
        name: name.into(),
        kind: InstanceKind::Qemu,
        template: "debian-12".into(),
        cores: 1,
        memory_mib: 1024,
        disk_gib: 10,
        ssh_keys: vec!["ssh-ed25519 AAAAC3Nza test@host".into()],
        node: None,
    }
}

/// A provision job on queue `provision`.
pub fn provision_job() -> NewJob {
    NewJob::new(JobKind::Provision, "provision", serde_json::json!({"template": "debian-12"}))
}

/// Rows in `table`.
pub async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}"))).fetch_one(pool).await.unwrap()
}
