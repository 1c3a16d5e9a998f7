//! `nimbus-api bootstrap`: the first tenant, its plan, an admin and an API key, in one
//! transaction, on an empty database only. The key is returned once and never stored in clear.

use nimbus_db::plans::{self, NewPlan};
use nimbus_db::users::{self, NewUser};
use nimbus_db::{DbError, PgPool, api_keys, tenants};
use nimbus_domain::{PlanLimits, PlanPrices, Role, TenantId, UserId};

/// What to create.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    /// Tenant name.
    pub tenant: String,
    /// Admin email.
    pub email: String,
    /// Plan name (created with `limits` if no plan has it).
    pub plan: String,
    /// Limits of a new plan.
    pub limits: PlanLimits,
}

/// What was created.
#[derive(Clone, Debug)]
pub struct Bootstrapped {
    /// The tenant.
    pub tenant: TenantId,
    /// The admin.
    pub admin: UserId,
    /// The API key: shown once.
    pub token: String,
}

/// Why bootstrap refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Bootstrap only runs on a database without tenants.
    #[error("the database already has tenants; bootstrap runs only once")]
    AlreadyBootstrapped,
    /// The database refused (e.g. an invalid email).
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Creates the first tenant, its admin and an API key.
pub async fn run(db: &PgPool, b: &Bootstrap) -> Result<Bootstrapped, BootstrapError> {
    let mut tx = db.begin().await.map_err(DbError::from)?;
    // Two bootstraps at once: the second waits here and then sees the first one's tenant.
    sqlx::query("select pg_advisory_xact_lock(hashtext('nimbus-api-bootstrap'))")
        .execute(&mut *tx)
        .await
        .map_err(DbError::from)?;
    let any: bool =
        sqlx::query_scalar("select exists (select 1 from tenants)").fetch_one(&mut *tx).await.map_err(DbError::from)?;
    if any {
        return Err(BootstrapError::AlreadyBootstrapped);
    }
    let plan = match plans::list(&mut *tx).await?.into_iter().find(|p| p.name == b.plan) {
        Some(p) => p,
        None => {
            let new = NewPlan { name: b.plan.clone(), limits: b.limits, prices: PlanPrices::free("EUR") };
            plans::create(&mut *tx, &new).await?
        }
    };
    let tenant = tenants::create(&mut *tx, &b.tenant, plan.id).await?;
    let admin =
        users::create(&mut *tx, tenant.id, &NewUser { email: b.email.clone(), display_name: None, role: Role::Admin })
            .await?;
    let (_, token) = api_keys::create(&mut *tx, tenant.id, admin.id, "bootstrap", &[], None).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Bootstrapped { tenant: tenant.id, admin: admin.id, token })
}
