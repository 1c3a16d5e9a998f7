//! What operators read across tenants: revenue per month and per plan from issued invoices and
//! credit notes, what the current month has accrued, and the tenants whose balance needs them.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::Result;

/// One month's invoiced revenue in one currency.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct Month {
    /// The period's first instant.
    pub period_start: DateTime<Utc>,
    /// ISO 4217.
    pub currency: String,
    /// Invoices issued for it.
    pub invoices: i64,
    /// Their subtotals (before tax).
    pub invoiced: Decimal,
    /// Credit notes' subtotals against them.
    pub credited: Decimal,
    /// Tax invoiced less tax credited.
    pub tax: Decimal,
}

/// Revenue per month for periods starting at or after `since`, newest first.
pub async fn by_month(ex: impl PgExecutor<'_>, since: DateTime<Utc>) -> Result<Vec<Month>> {
    Ok(sqlx::query_as(
        "select period_start, trim(currency) as currency, count(*) filter (where kind = 'invoice') as invoices, \
                coalesce(sum(subtotal) filter (where kind = 'invoice'), 0) as invoiced, \
                coalesce(sum(subtotal) filter (where kind = 'credit_note'), 0) as credited, \
                coalesce(sum(case when kind = 'invoice' then tax else -tax end), 0) as tax \
         from invoices where period_start >= $1 group by period_start, currency order by period_start desc, currency",
    )
    .bind(since)
    .fetch_all(ex)
    .await?)
}

/// One plan's share of a month's invoices: each invoice line counts for the plan of the price
/// its instance was last rated at in the period.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct PlanMonth {
    /// The period's first instant.
    pub period_start: DateTime<Utc>,
    /// The plan.
    pub plan_id: Uuid,
    /// Its name.
    pub plan_name: String,
    /// ISO 4217.
    pub currency: String,
    /// Instances billed.
    pub instances: i64,
    /// Their lines' sum (before tax).
    pub invoiced: Decimal,
}

/// Revenue per month and plan for periods starting at or after `since`.
pub async fn by_plan(ex: impl PgExecutor<'_>, since: DateTime<Utc>) -> Result<Vec<PlanMonth>> {
    Ok(sqlx::query_as(
        "select v.period_start, p.plan_id, pl.name as plan_name, trim(v.currency) as currency, \
                count(distinct l.instance_id) as instances, sum(l.amount) as invoiced \
         from invoices v join invoice_lines l on l.invoice_id = v.id \
         cross join lateral (select u.price_id from usage_records u where u.instance_id = l.instance_id \
                             and u.hour >= v.period_start and u.hour < v.period_end order by u.hour desc limit 1) last \
         join plan_prices p on p.id = last.price_id join plans pl on pl.id = p.plan_id \
         where v.kind = 'invoice' and v.period_start >= $1 \
         group by v.period_start, p.plan_id, pl.name, v.currency order by v.period_start desc, invoiced desc",
    )
    .bind(since)
    .fetch_all(ex)
    .await?)
}

/// What `[from, to)` has accrued, not invoiced yet, per currency: each instance's compute at most
/// its monthly cap, and its backup storage (before rounding and tax).
pub async fn accrued(
    ex: impl PgExecutor<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(String, Decimal)>> {
    Ok(sqlx::query_as(
        "select currency, sum(amount) from ( \
           select trim(min(u.currency)) as currency, \
                  least(sum(u.amount), coalesce((array_agg(u.monthly_cap order by u.hour desc))[1], sum(u.amount))) as amount \
           from usage_records u where u.hour >= $1 and u.hour < $2 group by u.instance_id \
           union all \
           select trim(b.currency), b.amount from backup_usage_records b where b.hour >= $1 and b.hour < $2 \
         ) accrued group by currency order by currency",
    )
    .bind(from)
    .bind(to)
    .fetch_all(ex)
    .await?)
}

/// A tenant as the operators' billing list shows it.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct TenantBalance {
    /// The tenant.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Pays ahead.
    pub prepaid: bool,
    /// Its step on the ladder.
    pub billing_state: String,
    /// Since when.
    pub billing_state_since: DateTime<Utc>,
    /// An operator's hold.
    pub suspension_reason: Option<String>,
    /// Its threshold.
    pub low_balance_threshold: Decimal,
    /// Its grace period.
    pub grace_period_hours: i32,
    /// The ledger's sum (negative: invoices not paid).
    pub ledger: Decimal,
    /// The oldest invoice issued since the ledger last stood at or above zero, when it is below.
    pub unpaid_since: Option<DateTime<Utc>>,
}

/// Tenants by balance, lowest first; with `attention`, only those not `ok` or owing.
pub async fn tenants(ex: impl PgExecutor<'_>, attention: bool, limit: i64) -> Result<Vec<TenantBalance>> {
    Ok(sqlx::query_as(
        "select t.id, t.name, t.prepaid, t.billing_state, t.billing_state_since, t.suspension_reason, \
                t.low_balance_threshold, t.grace_period_hours, coalesce(b.ledger, 0) as ledger, \
                case when coalesce(b.ledger, 0) < 0 then ( \
                  select min(e.created_at) from balance_entries e where e.tenant_id = t.id and e.kind = 'invoice' \
                    and e.id > coalesce((select max(r.id) from ( \
                      select id, sum(amount) over (order by id) as running from balance_entries where tenant_id = t.id \
                    ) r where r.running >= 0), 0)) end as unpaid_since \
         from tenants t left join (select tenant_id, sum(amount) as ledger from balance_entries group by tenant_id) b \
           on b.tenant_id = t.id \
         where not $1 or t.billing_state <> 'ok' or coalesce(b.ledger, 0) < 0 \
         order by coalesce(b.ledger, 0), t.name limit $2",
    )
    .bind(attention)
    .bind(limit)
    .fetch_all(ex)
    .await?)
}
