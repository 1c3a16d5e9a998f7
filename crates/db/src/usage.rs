//! Prices and hourly usage (DESIGN §10).
//!
//! Rule: an instance is billed for every hour it existed in, from its creation to its deletion,
//! in any power state but `failed` (a guest never delivered), a started hour counting whole. Each
//! hour is rated at the sizes the instance has when the hour is metered (a resize counts from the
//! hour it is metered in) and at the price version valid at the hour's start. One row per
//! (instance, hour), unique: metering an hour twice, from two replicas or in a catch-up, inserts
//! nothing the second time. An instance whose sizes are exactly one of the version's size tiers is
//! rated at the tier's flat hourly price and capped at the tier's monthly cap instead.
//!
//! Backup storage: each hour an instance is billed for, the archives of it Proxmox holds on its
//! plan's backup storage when the hour is metered, in GiB-hours at the version's
//! `backup_gib_hour` ([`meter_backups`]; one row per instance and hour, unique too). Snapshots are
//! not metered by size: Proxmox's API gives none (a snapshot's data lives inside its disk's
//! volume); the plan limits how many an instance keeps.

use chrono::{DateTime, Utc};
use nimbus_domain::{InstanceId, Money, PlanId, TenantId};
use rust_decimal::Decimal;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::Result;

/// A plan's price version.
#[derive(Clone, Debug, PartialEq)]
pub struct Price {
    /// Id (usage rows name it).
    pub id: Uuid,
    /// Applies from.
    pub valid_from: DateTime<Utc>,
    /// ISO 4217.
    pub currency: String,
    /// Per vCPU and hour.
    pub vcpu_hour: Money,
    /// Per GiB of memory and hour.
    pub memory_gib_hour: Money,
    /// Per GiB of disk and hour.
    pub disk_gib_hour: Money,
    /// Per GiB of backup archives and hour (not under the cap).
    pub backup_gib_hour: Money,
    /// The most one instance's compute costs in a month.
    pub monthly_cap: Option<Money>,
}

/// A price version to add.
#[derive(Clone, Debug)]
pub struct NewPrice {
    /// Applies from (what was rated before it keeps its price).
    pub valid_from: DateTime<Utc>,
    /// ISO 4217.
    pub currency: String,
    /// Per vCPU and hour.
    pub vcpu_hour: Money,
    /// Per GiB of memory and hour.
    pub memory_gib_hour: Money,
    /// Per GiB of disk and hour.
    pub disk_gib_hour: Money,
    /// Per GiB of backup archives and hour.
    pub backup_gib_hour: Money,
    /// The most one instance's compute costs in a month.
    pub monthly_cap: Option<Money>,
    /// Flat prices for exact sizes (an instance of another size is rated per resource).
    pub tiers: Vec<Tier>,
}

/// A size tier of a price version: an instance of exactly this size costs `hour_price` an hour,
/// at most `monthly_cap` a month, instead of its per-resource price.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct Tier {
    /// Its name, shown on invoices (`S`, `CX22`).
    pub name: String,
    /// vCPUs.
    pub cores: i32,
    /// Memory, MiB.
    pub memory_mib: i64,
    /// Disk, GiB.
    pub disk_gib: i64,
    /// Per hour.
    pub hour_price: Decimal,
    /// The most it costs in a month.
    pub monthly_cap: Option<Decimal>,
}

/// The size tiers of price version `price`, smallest first.
pub async fn tiers(ex: impl PgExecutor<'_>, price: Uuid) -> Result<Vec<Tier>> {
    Ok(sqlx::query_as(
        "select name, cores, memory_mib, disk_gib, hour_price, monthly_cap from plan_price_tiers \
         where price_id = $1 order by cores, memory_mib, disk_gib",
    )
    .bind(price)
    .fetch_all(ex)
    .await?)
}

type PriceRow = (Uuid, DateTime<Utc>, String, Decimal, Decimal, Decimal, Decimal, Option<Decimal>);

fn price(r: PriceRow) -> Price {
    Price {
        id: r.0,
        valid_from: r.1,
        currency: r.2.trim().to_owned(),
        vcpu_hour: Money(r.3),
        memory_gib_hour: Money(r.4),
        disk_gib_hour: Money(r.5),
        backup_gib_hour: Money(r.6),
        monthly_cap: r.7.map(Money),
    }
}

/// Adds a price version to `plan`, with its size tiers. A second version at the same time is
/// `Conflict { constraint: "plan_prices_plan_valid_from_key" }`; two tiers of one size or name
/// `Conflict { constraint: "plan_price_tiers_pkey" | "plan_price_tiers_name_key" }`. A version valid already also
/// becomes the plan's listed prices (what the create wizard estimates with).
pub async fn add_price(ex: impl PgExecutor<'_>, plan: PlanId, new: &NewPrice) -> Result<Price> {
    let row: PriceRow = sqlx::query_as(
        "with p as (insert into plan_prices (id, plan_id, valid_from, currency, vcpu_hour, memory_gib_hour, \
                    disk_gib_hour, backup_gib_hour, monthly_cap) values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning *), \
         listed as (update plans set currency = p.currency, price_vcpu_hour = p.vcpu_hour, \
                    price_memory_gib_hour = p.memory_gib_hour, price_disk_gib_hour = p.disk_gib_hour \
                    from p where plans.id = p.plan_id and p.valid_from <= now()), \
         tiers as (insert into plan_price_tiers (price_id, name, cores, memory_mib, disk_gib, hour_price, monthly_cap) \
                   select p.id, t.* from p, unnest($10::text[], $11::int[], $12::bigint[], $13::bigint[], \
                                                    $14::numeric[], $15::numeric[]) as t) \
         select id, valid_from, currency, vcpu_hour, memory_gib_hour, disk_gib_hour, backup_gib_hour, monthly_cap from p",
    )
    .bind(Uuid::now_v7())
    .bind(plan.as_uuid())
    .bind(new.valid_from)
    .bind(&new.currency)
    .bind(new.vcpu_hour.0)
    .bind(new.memory_gib_hour.0)
    .bind(new.disk_gib_hour.0)
    .bind(new.backup_gib_hour.0)
    .bind(new.monthly_cap.map(|m| m.0))
    .bind(new.tiers.iter().map(|t| t.name.as_str()).collect::<Vec<_>>())
    .bind(new.tiers.iter().map(|t| t.cores).collect::<Vec<_>>())
    .bind(new.tiers.iter().map(|t| t.memory_mib).collect::<Vec<_>>())
    .bind(new.tiers.iter().map(|t| t.disk_gib).collect::<Vec<_>>())
    .bind(new.tiers.iter().map(|t| t.hour_price).collect::<Vec<_>>())
    .bind(new.tiers.iter().map(|t| t.monthly_cap).collect::<Vec<_>>())
    .fetch_one(ex)
    .await?;
    Ok(price(row))
}

/// The price version of `tenant`'s plan valid at `at`.
pub async fn price_at(ex: impl PgExecutor<'_>, tenant: TenantId, at: DateTime<Utc>) -> Result<Option<Price>> {
    let row: Option<PriceRow> = sqlx::query_as(
        "select p.id, p.valid_from, p.currency, p.vcpu_hour, p.memory_gib_hour, p.disk_gib_hour, p.backup_gib_hour, \
                p.monthly_cap \
         from plan_prices p join tenants t on t.plan_id = p.plan_id \
         where t.id = $1 and p.valid_from <= $2 order by p.valid_from desc limit 1",
    )
    .bind(tenant.as_uuid())
    .bind(at)
    .fetch_optional(ex)
    .await?;
    Ok(row.map(price))
}

/// Meters the hour starting at `hour` (a whole UTC hour) for every instance, in one transaction
/// with the hour's `metered_hours` row: inserts the rows not yet there and returns how many.
pub async fn meter_hour(pool: &sqlx::PgPool, hour: DateTime<Utc>) -> Result<u64> {
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "insert into usage_records (instance_id, hour, tenant_id, price_id, vcpus, memory_mib, disk_gib, amount, \
                                    currency, tier, monthly_cap) \
         select i.id, $1, i.tenant_id, p.id, i.cores, i.memory_mib, i.disk_gib, \
                coalesce(tr.hour_price, \
                         i.cores * p.vcpu_hour + i.memory_mib / 1024.0 * p.memory_gib_hour + i.disk_gib * p.disk_gib_hour), \
                p.currency, tr.name, case when tr.name is null then p.monthly_cap else tr.monthly_cap end \
         from instances i \
         join tenants t on t.id = i.tenant_id \
         join lateral (select * from plan_prices pp where pp.plan_id = t.plan_id and pp.valid_from <= $1 \
                       order by pp.valid_from desc limit 1) p on true \
         left join plan_price_tiers tr on tr.price_id = p.id and tr.cores = i.cores \
                                      and tr.memory_mib = i.memory_mib and tr.disk_gib = i.disk_gib \
         where i.created_at < $1 + interval '1 hour' and (i.deleted_at is null or i.deleted_at > $1) \
           and i.status <> 'failed' \
         on conflict do nothing",
    )
    .bind(hour)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(
        "insert into metered_hours (hour, records) values ($1, $2) \
         on conflict (hour) do update set records = metered_hours.records + excluded.records",
    )
    .bind(hour)
    .bind(i64::try_from(inserted).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(inserted)
}

/// An instance billed for an hour, with where its backups are: what [`meter_backups`] needs
/// Proxmox to be asked about.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupSource {
    /// The instance.
    pub instance_id: InstanceId,
    /// Its node.
    pub node: String,
    /// Its guest's VMID.
    pub vmid: i32,
    /// When it was created: only archives taken since are its own (a VMID can be reused).
    pub created_at: DateTime<Utc>,
    /// Its plan's backup storage.
    pub storage: String,
}

/// The instances the hour starting at `hour` bills (as [`meter_hour`] does) that have a guest,
/// with their plan's backup storage.
pub async fn backup_sources(ex: impl PgExecutor<'_>, hour: DateTime<Utc>) -> Result<Vec<BackupSource>> {
    let rows: Vec<(Uuid, String, i32, DateTime<Utc>, String)> = sqlx::query_as(
        "select i.id, i.node, i.vmid, i.created_at, pl.backup_storage from instances i \
         join tenants t on t.id = i.tenant_id join plans pl on pl.id = t.plan_id \
         where i.created_at < $1 + interval '1 hour' and (i.deleted_at is null or i.deleted_at > $1) \
           and i.status <> 'failed' and i.node is not null and i.vmid is not null order by i.node, i.id",
    )
    .bind(hour)
    .fetch_all(ex)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| BackupSource { instance_id: r.0.into(), node: r.1, vmid: r.2, created_at: r.3, storage: r.4 })
        .collect())
}

/// An instance's backup archives as Proxmox reported them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupFootprint {
    /// The instance.
    pub instance_id: InstanceId,
    /// How many archives.
    pub archives: i32,
    /// Their size in bytes.
    pub bytes: i64,
}

/// Meters the backup storage of the hour starting at `hour`: one row per instance with archives,
/// `bytes / 2^30` GiB rated at the price version valid at the hour's start. Rows already there
/// stay as they are (a re-run or a replica adds nothing). Returns how many it wrote.
pub async fn meter_backups(pool: &sqlx::PgPool, hour: DateTime<Utc>, footprints: &[BackupFootprint]) -> Result<u64> {
    let ids: Vec<Uuid> = footprints.iter().map(|f| f.instance_id.as_uuid()).collect();
    let archives: Vec<i32> = footprints.iter().map(|f| f.archives).collect();
    let bytes: Vec<i64> = footprints.iter().map(|f| f.bytes).collect();
    let inserted = sqlx::query(
        "insert into backup_usage_records (instance_id, hour, tenant_id, price_id, archives, bytes, amount, currency) \
         select i.id, $1, i.tenant_id, p.id, f.archives, f.bytes, \
                round(f.bytes / 1073741824.0 * p.backup_gib_hour, 10), p.currency \
         from unnest($2::uuid[], $3::int[], $4::bigint[]) as f(instance_id, archives, bytes) \
         join instances i on i.id = f.instance_id join tenants t on t.id = i.tenant_id \
         join lateral (select * from plan_prices pp where pp.plan_id = t.plan_id and pp.valid_from <= $1 \
                       order by pp.valid_from desc limit 1) p on true \
         where f.bytes > 0 and f.archives > 0 \
         on conflict do nothing",
    )
    .bind(hour)
    .bind(&ids)
    .bind(&archives)
    .bind(&bytes)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(inserted)
}

/// One instance's backup storage in a period.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupUsage {
    /// The instance.
    pub instance_id: InstanceId,
    /// Its name.
    pub name: String,
    /// GiB-hours (the sum of each hour's GiB).
    pub gib_hours: Decimal,
    /// Hours with archives.
    pub hours: i64,
    /// What they cost.
    pub amount: Money,
    /// The currency.
    pub currency: String,
}

/// `tenant`'s backup storage per instance in `[from, to)`, by instance name.
pub async fn backups_by_instance(
    ex: impl PgExecutor<'_>,
    tenant: TenantId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<BackupUsage>> {
    type Row = (Uuid, String, Decimal, i64, Decimal, String);
    let rows: Vec<Row> = sqlx::query_as(
        "select u.instance_id, i.name, round(sum(u.bytes) / 1073741824.0, 4), count(*), sum(u.amount), min(u.currency) \
         from backup_usage_records u join instances i on i.id = u.instance_id \
         where u.tenant_id = $1 and u.hour >= $2 and u.hour < $3 \
         group by u.instance_id, i.name order by i.name, u.instance_id",
    )
    .bind(tenant.as_uuid())
    .bind(from)
    .bind(to)
    .fetch_all(ex)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| BackupUsage {
            instance_id: r.0.into(),
            name: r.1,
            gib_hours: r.2.normalize(),
            hours: r.3,
            amount: Money(r.4),
            currency: r.5.trim().to_owned(),
        })
        .collect())
}

/// The whole hours of `[from, to)` not metered yet since metering began (the first hour ever
/// metered), oldest first: the gaps to fill. Hours before metering began are not billed.
pub async fn unmetered_hours(
    ex: impl PgExecutor<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<DateTime<Utc>>> {
    Ok(sqlx::query_scalar(
        "select h from generate_series(greatest($1::timestamptz, coalesce((select min(hour) from metered_hours), $2)), \
                                       $2::timestamptz - interval '1 hour', interval '1 hour') h \
         where not exists (select 1 from metered_hours m where m.hour = h) order by h",
    )
    .bind(from)
    .bind(to)
    .fetch_all(ex)
    .await?)
}

/// One instance's usage in a period.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceUsage {
    /// The instance.
    pub instance_id: InstanceId,
    /// Its name.
    pub name: String,
    /// Hours billed.
    pub hours: i64,
    /// What they cost, before any cap.
    pub amount: Money,
    /// The currency.
    pub currency: String,
    /// The monthly cap its latest hour was rated with (its tier's, or its price version's).
    pub monthly_cap: Option<Money>,
    /// The size tier its latest hour was rated as, if any.
    pub tier: Option<String>,
}

/// `tenant`'s usage per instance in `[from, to)`, by instance name.
pub async fn by_instance(
    ex: impl PgExecutor<'_>,
    tenant: TenantId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<InstanceUsage>> {
    type Row = (Uuid, String, i64, Decimal, String, Option<Decimal>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "select u.instance_id, i.name, count(*), sum(u.amount), min(u.currency), \
                (array_agg(u.monthly_cap order by u.hour desc))[1], (array_agg(u.tier order by u.hour desc))[1] \
         from usage_records u join instances i on i.id = u.instance_id \
         where u.tenant_id = $1 and u.hour >= $2 and u.hour < $3 \
         group by u.instance_id, i.name order by i.name, u.instance_id",
    )
    .bind(tenant.as_uuid())
    .bind(from)
    .bind(to)
    .fetch_all(ex)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| InstanceUsage {
            instance_id: r.0.into(),
            name: r.1,
            hours: r.2,
            amount: Money(r.3),
            currency: r.4.trim().to_owned(),
            monthly_cap: r.5.map(Money),
            tier: r.6,
        })
        .collect())
}

/// The tenants with usage in `[from, to)` and no invoice for the period starting at `from`.
pub async fn tenants_to_invoice(
    ex: impl PgExecutor<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<TenantId>> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "select distinct u.tenant_id from usage_records u \
         where u.hour >= $1 and u.hour < $2 \
           and not exists (select 1 from invoices v where v.tenant_id = u.tenant_id and v.period_start = $1 \
                           and v.kind = 'invoice') \
         order by 1",
    )
    .bind(from)
    .bind(to)
    .fetch_all(ex)
    .await?;
    Ok(ids.into_iter().map(Into::into).collect())
}

/// Each of `tenant`'s instances' amount for its latest metered hour in `[from, to)`: its current
/// hourly rate, for forecasts. With `backups`, the rate of its backup storage instead.
pub async fn last_hour_rates(
    ex: impl PgExecutor<'_>,
    tenant: TenantId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    backups: bool,
) -> Result<Vec<(InstanceId, Money)>> {
    macro_rules! latest_per_instance {
        ($table:literal) => {
            concat!(
                "select distinct on (instance_id) instance_id, amount from ",
                $table,
                " where tenant_id = $1 and hour >= $2 and hour < $3 order by instance_id, hour desc"
            )
        };
    }
    let query =
        if backups { latest_per_instance!("backup_usage_records") } else { latest_per_instance!("usage_records") };
    let rows: Vec<(Uuid, Decimal)> =
        sqlx::query_as(query).bind(tenant.as_uuid()).bind(from).bind(to).fetch_all(ex).await?;
    Ok(rows.into_iter().map(|(id, amount)| (id.into(), Money(amount))).collect())
}
