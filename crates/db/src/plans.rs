//! Plans: limits a tenant may hold and hourly prices.

use chrono::{DateTime, Utc};
use nimbus_domain::{Money, PlanId, PlanLimits, PlanPrices, TenantId};
use rust_decimal::Decimal;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgExecutor, Row};

use crate::{Result, rows};

/// A plan row.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Id.
    pub id: PlanId,
    /// Unique name.
    pub name: String,
    /// What a tenant on this plan may hold.
    pub limits: PlanLimits,
    /// What it pays.
    pub prices: PlanPrices,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Archived at: no tenant may be moved onto it any more.
    pub archived_at: Option<DateTime<Utc>>,
}

impl<'r> FromRow<'r, PgRow> for Plan {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(Plan {
            id: rows::id(row, "id")?,
            name: row.try_get("name")?,
            limits: PlanLimits {
                max_instances: row.try_get("max_instances")?,
                max_vcpus: row.try_get("max_vcpus")?,
                max_memory_mib: row.try_get("max_memory_mib")?,
                max_disk_gib: row.try_get("max_disk_gib")?,
            },
            prices: PlanPrices {
                currency: row.try_get::<String, _>("currency")?,
                vcpu_hour: Money(row.try_get::<Decimal, _>("price_vcpu_hour")?),
                memory_gib_hour: Money(row.try_get::<Decimal, _>("price_memory_gib_hour")?),
                disk_gib_hour: Money(row.try_get::<Decimal, _>("price_disk_gib_hour")?),
            },
            created_at: row.try_get("created_at")?,
            archived_at: row.try_get("archived_at")?,
        })
    }
}

/// What [`create`] needs.
#[derive(Clone, Debug)]
pub struct NewPlan {
    /// Unique name.
    pub name: String,
    /// Limits (each ≥ 0).
    pub limits: PlanLimits,
    /// Prices (each ≥ 0).
    pub prices: PlanPrices,
}

/// Inserts a plan. A taken name is `Conflict { constraint: "plans_name_key" }`; a negative
/// limit or price is `Check { .. }`.
pub async fn create(ex: impl PgExecutor<'_>, new: &NewPlan) -> Result<Plan> {
    create_with_id(ex, PlanId::new(), new).await
}

/// [`create`] with a chosen id (fixtures, the demo seed).
pub async fn create_with_id(ex: impl PgExecutor<'_>, id: PlanId, new: &NewPlan) -> Result<Plan> {
    Ok(sqlx::query_as(
        "insert into plans (id, name, max_instances, max_vcpus, max_memory_mib, max_disk_gib, currency, \
         price_vcpu_hour, price_memory_gib_hour, price_disk_gib_hour) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         returning id, name, max_instances, max_vcpus, max_memory_mib, max_disk_gib, currency, \
         price_vcpu_hour, price_memory_gib_hour, price_disk_gib_hour, created_at, archived_at",
    )
    .bind(id.as_uuid())
    .bind(&new.name)
    .bind(new.limits.max_instances)
    .bind(new.limits.max_vcpus)
    .bind(new.limits.max_memory_mib)
    .bind(new.limits.max_disk_gib)
    .bind(&new.prices.currency)
    .bind(new.prices.vcpu_hour.amount())
    .bind(new.prices.memory_gib_hour.amount())
    .bind(new.prices.disk_gib_hour.amount())
    .fetch_one(ex)
    .await?)
}

/// A plan by id.
pub async fn get(ex: impl PgExecutor<'_>, id: PlanId) -> Result<Plan> {
    Ok(sqlx::query_as(
        "select id, name, max_instances, max_vcpus, max_memory_mib, max_disk_gib, currency, \
         price_vcpu_hour, price_memory_gib_hour, price_disk_gib_hour, created_at, archived_at from plans where id = $1",
    )
    .bind(id.as_uuid())
    .fetch_one(ex)
    .await?)
}

/// The plan of a tenant.
pub async fn for_tenant(ex: impl PgExecutor<'_>, tenant: TenantId) -> Result<Plan> {
    Ok(sqlx::query_as(
        "select p.id, p.name, p.max_instances, p.max_vcpus, p.max_memory_mib, p.max_disk_gib, p.currency, \
         p.price_vcpu_hour, p.price_memory_gib_hour, p.price_disk_gib_hour, p.created_at, p.archived_at \
         from plans p join tenants t on t.plan_id = p.id where t.id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_one(ex)
    .await?)
}

/// What a tenant's plan says about backups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSettings {
    /// The Proxmox storage backups go to.
    pub storage: String,
    /// How many backups each instance may keep (Nimbus's and Proxmox-side ones alike).
    pub max_backups: i32,
    /// The shortest time between two scheduled backups of an instance, minutes.
    pub min_interval_minutes: i32,
}

/// The backup settings of `tenant`'s plan.
pub async fn backup_settings_for_tenant(ex: impl PgExecutor<'_>, tenant: TenantId) -> Result<BackupSettings> {
    let row: Option<(String, i32, i32)> = sqlx::query_as(
        "select p.backup_storage, p.max_backups, p.min_backup_interval_minutes \
         from plans p join tenants t on t.plan_id = p.id where t.id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(ex)
    .await?;
    let (storage, max_backups, min_interval_minutes) = row.ok_or(crate::DbError::NotFound)?;
    Ok(BackupSettings { storage, max_backups, min_interval_minutes })
}

/// Sets a plan's backup limits.
pub async fn set_backup_limits(
    ex: impl PgExecutor<'_>,
    id: PlanId,
    max_backups: i32,
    min_interval_minutes: i32,
) -> Result<()> {
    sqlx::query("update plans set max_backups = $2, min_backup_interval_minutes = $3 where id = $1")
        .bind(id.as_uuid())
        .bind(max_backups)
        .bind(min_interval_minutes)
        .execute(ex)
        .await?;
    Ok(())
}

/// Every plan, by name.
pub async fn list(ex: impl PgExecutor<'_>) -> Result<Vec<Plan>> {
    Ok(sqlx::query_as(
        "select id, name, max_instances, max_vcpus, max_memory_mib, max_disk_gib, currency, \
         price_vcpu_hour, price_memory_gib_hour, price_disk_gib_hour, created_at, archived_at from plans order by name",
    )
    .fetch_all(ex)
    .await?)
}

/// Replaces a plan's limits. Lowering them below a tenant's usage is allowed: it only blocks
/// new instances.
pub async fn update_limits(ex: impl PgExecutor<'_>, id: PlanId, limits: PlanLimits) -> Result<Plan> {
    Ok(sqlx::query_as(
        "update plans set max_instances = $2, max_vcpus = $3, max_memory_mib = $4, max_disk_gib = $5 \
         where id = $1 \
         returning id, name, max_instances, max_vcpus, max_memory_mib, max_disk_gib, currency, \
         price_vcpu_hour, price_memory_gib_hour, price_disk_gib_hour, created_at, archived_at",
    )
    .bind(id.as_uuid())
    .bind(limits.max_instances)
    .bind(limits.max_vcpus)
    .bind(limits.max_memory_mib)
    .bind(limits.max_disk_gib)
    .fetch_one(ex)
    .await?)
}

/// What [`update`] changes; `None` keeps the value.
#[derive(Clone, Debug, Default)]
pub struct PlanUpdate {
    /// A new unique name.
    pub name: Option<String>,
    /// New limits.
    pub limits: Option<PlanLimits>,
    /// Backups kept per instance.
    pub max_backups: Option<i32>,
    /// Minutes between scheduled backups, at least.
    pub min_backup_interval_minutes: Option<i32>,
}

/// Changes a plan's name, limits and backup limits (its prices change by versions,
/// `usage::add_price`). A taken name is `Conflict { constraint: "plans_name_key" }`.
pub async fn update(ex: impl PgExecutor<'_>, id: PlanId, u: &PlanUpdate) -> Result<Plan> {
    let l = u.limits;
    Ok(sqlx::query_as(
        "update plans set name = coalesce($2, name), max_instances = coalesce($3, max_instances), \
         max_vcpus = coalesce($4, max_vcpus), max_memory_mib = coalesce($5, max_memory_mib), \
         max_disk_gib = coalesce($6, max_disk_gib), max_backups = coalesce($7, max_backups), \
         min_backup_interval_minutes = coalesce($8, min_backup_interval_minutes) where id = $1 \
         returning id, name, max_instances, max_vcpus, max_memory_mib, max_disk_gib, currency, \
         price_vcpu_hour, price_memory_gib_hour, price_disk_gib_hour, created_at, archived_at",
    )
    .bind(id.as_uuid())
    .bind(&u.name)
    .bind(l.map(|l| l.max_instances))
    .bind(l.map(|l| l.max_vcpus))
    .bind(l.map(|l| l.max_memory_mib))
    .bind(l.map(|l| l.max_disk_gib))
    .bind(u.max_backups)
    .bind(u.min_backup_interval_minutes)
    .fetch_one(ex)
    .await?)
}

/// Archives a plan (once; archiving again keeps the first time).
pub async fn archive(ex: impl PgExecutor<'_>, id: PlanId) -> Result<Plan> {
    Ok(sqlx::query_as(
        "update plans set archived_at = coalesce(archived_at, now()) where id = $1 \
         returning id, name, max_instances, max_vcpus, max_memory_mib, max_disk_gib, currency, \
         price_vcpu_hour, price_memory_gib_hour, price_disk_gib_hour, created_at, archived_at",
    )
    .bind(id.as_uuid())
    .fetch_one(ex)
    .await?)
}
