//! The demo data of `make dev`: a plan, a tenant, an admin user and an API key. Re-running keeps
//! what exists (fixed ids) and creates a key only when the demo admin has no usable one.

use nimbus_domain::{Money, PlanId, PlanLimits, PlanPrices, Role, TenantId, UserId};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::api_keys::{self, ApiKey};
use crate::plans::{self, NewPlan, Plan};
use crate::tenants::{self, Tenant};
use crate::users::{self, NewUser, User};
use crate::{DbError, Result};

/// Id of the demo plan.
pub const DEMO_PLAN_ID: PlanId = PlanId::from_uuid(Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_de01));
/// Id of the demo tenant.
pub const DEMO_TENANT_ID: TenantId = TenantId::from_uuid(Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_de02));
/// Id of the demo admin.
pub const DEMO_ADMIN_ID: UserId = UserId::from_uuid(Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_de03));
/// Email of the demo admin.
pub const DEMO_ADMIN_EMAIL: &str = "admin@demo.nimbus.test";

/// What [`seed_demo`] left in place.
#[derive(Clone, Debug)]
pub struct DemoSeed {
    /// The plan.
    pub plan: Plan,
    /// The tenant.
    pub tenant: Tenant,
    /// The admin.
    pub admin: User,
    /// The admin's key.
    pub api_key: ApiKey,
    /// The token, when this run created the key (show it once; it cannot be recovered).
    pub new_token: Option<String>,
}

/// Creates whatever of the demo data is missing, in one transaction.
pub async fn seed_demo(pool: &sqlx::PgPool) -> Result<DemoSeed> {
    let mut tx = pool.begin().await?;
    let plan = match plans::get(&mut *tx, DEMO_PLAN_ID).await {
        Ok(p) => p,
        Err(DbError::NotFound) => {
            let new = NewPlan {
                name: "demo".into(),
                limits: PlanLimits { max_instances: 10, max_vcpus: 32, max_memory_mib: 65_536, max_disk_gib: 1_000 },
                prices: PlanPrices {
                    currency: "EUR".into(),
                    vcpu_hour: Money(Decimal::new(40, 4)),
                    memory_gib_hour: Money(Decimal::new(20, 4)),
                    disk_gib_hour: Money(Decimal::new(1, 4)),
                },
            };
            plans::create_with_id(&mut *tx, DEMO_PLAN_ID, &new).await?
        }
        Err(e) => return Err(e),
    };
    let tenant = match tenants::get(&mut *tx, DEMO_TENANT_ID).await {
        Ok(t) => t,
        Err(DbError::NotFound) => tenants::create_with_id(&mut *tx, DEMO_TENANT_ID, "Demo", plan.id).await?,
        Err(e) => return Err(e),
    };
    let admin = match users::get(&mut *tx, tenant.id, DEMO_ADMIN_ID).await {
        Ok(u) => u,
        Err(DbError::NotFound) => {
            let new =
                NewUser { email: DEMO_ADMIN_EMAIL.into(), display_name: Some("Demo Admin".into()), role: Role::Admin };
            users::create_with_id(&mut *tx, DEMO_ADMIN_ID, tenant.id, &new).await?
        }
        Err(e) => return Err(e),
    };
    let usable = api_keys::list(&mut *tx, tenant.id).await?.into_iter().find(|k| {
        k.user_id == admin.id && k.revoked_at.is_none() && k.expires_at.is_none_or(|t| t > chrono::Utc::now())
    });
    let (api_key, new_token) = match usable {
        Some(k) => (k, None),
        None => {
            let (k, token) = api_keys::create(&mut *tx, tenant.id, admin.id, "demo", &[], None).await?;
            (k, Some(token))
        }
    };
    tx.commit().await?;
    Ok(DemoSeed { plan, tenant, admin, api_key, new_token })
}
