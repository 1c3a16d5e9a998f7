//! Tenants: the customer organisations every other row belongs to.

use chrono::{DateTime, Utc};
use nimbus_domain::{PlanId, TenantId};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgExecutor, Row};

use crate::{Result, rows};

/// A tenant row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// Id.
    pub id: TenantId,
    /// Display name.
    pub name: String,
    /// Its plan.
    pub plan_id: PlanId,
    /// Created at.
    pub created_at: DateTime<Utc>,
}

impl<'r> FromRow<'r, PgRow> for Tenant {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(Tenant {
            id: rows::id(row, "id")?,
            name: row.try_get("name")?,
            plan_id: rows::id(row, "plan_id")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// Inserts a tenant on `plan`. An unknown plan is `ForeignKey { constraint: "tenants_plan_fkey" }`.
pub async fn create(ex: impl PgExecutor<'_>, name: &str, plan: PlanId) -> Result<Tenant> {
    create_with_id(ex, TenantId::new(), name, plan).await
}

/// [`create`] with a chosen id.
pub async fn create_with_id(ex: impl PgExecutor<'_>, id: TenantId, name: &str, plan: PlanId) -> Result<Tenant> {
    Ok(sqlx::query_as(
        "insert into tenants (id, name, plan_id) values ($1, $2, $3) returning id, name, plan_id, created_at",
    )
    .bind(id.as_uuid())
    .bind(name)
    .bind(plan.as_uuid())
    .fetch_one(ex)
    .await?)
}

/// A tenant by id.
pub async fn get(ex: impl PgExecutor<'_>, id: TenantId) -> Result<Tenant> {
    Ok(sqlx::query_as("select id, name, plan_id, created_at from tenants where id = $1")
        .bind(id.as_uuid())
        .fetch_one(ex)
        .await?)
}

/// Moves a tenant to another plan.
pub async fn set_plan(ex: impl PgExecutor<'_>, id: TenantId, plan: PlanId) -> Result<Tenant> {
    Ok(sqlx::query_as("update tenants set plan_id = $2 where id = $1 returning id, name, plan_id, created_at")
        .bind(id.as_uuid())
        .bind(plan.as_uuid())
        .fetch_one(ex)
        .await?)
}

/// What `tenant` holds now, with its usage row locked until the transaction ends: instance
/// creates of the tenant wait, so a plan change checked against this usage cannot be overtaken
/// by a create. A missing tenant is `NotFound`.
pub async fn usage_for_update(ex: impl PgExecutor<'_>, tenant: TenantId) -> Result<nimbus_domain::ResourceUsage> {
    let (instances, vcpus, memory_mib, disk_gib): (i64, i64, i64, i64) = sqlx::query_as(
        "select instances, vcpus, memory_mib, disk_gib from tenant_usage where tenant_id = $1 for update",
    )
    .bind(tenant.as_uuid())
    .fetch_one(ex)
    .await?;
    Ok(nimbus_domain::ResourceUsage { instances, vcpus, memory_mib, disk_gib })
}
