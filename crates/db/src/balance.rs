//! Prepaid credit (DESIGN §10): a ledger per tenant whose sum is the balance. Operators add
//! top-ups and adjustments (with a reason); an issued invoice debits its total in the
//! transaction that issues it. Append-only: the database refuses to change an entry.

use chrono::{DateTime, Utc};
use nimbus_domain::{Money, TenantId, UserId};
use rust_decimal::Decimal;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::Result;

/// One ledger entry.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct Entry {
    /// Its place in the ledger.
    pub id: i64,
    /// `top_up`, `invoice`, `credit_note` or `adjustment`.
    pub kind: String,
    /// Credit (positive) or debit (negative).
    pub amount: Decimal,
    /// ISO 4217.
    pub currency: String,
    /// The invoice or credit note it settles.
    pub invoice_id: Option<Uuid>,
    /// Why (adjustments must say).
    pub reason: Option<String>,
    /// The operator who added it.
    pub created_by: Option<Uuid>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// What an operator adds.
#[derive(Clone, Debug)]
pub struct Credit {
    /// `top_up` (positive) or `adjustment` (either sign, with a reason).
    pub kind: &'static str,
    /// The amount.
    pub amount: Money,
    /// ISO 4217.
    pub currency: String,
    /// Why.
    pub reason: Option<String>,
    /// Who.
    pub by: UserId,
}

/// Adds an operator's entry to `tenant`'s ledger. A non-positive top-up or an adjustment
/// without a reason is `Check { .. }`.
pub async fn add(ex: impl PgExecutor<'_>, tenant: TenantId, credit: &Credit) -> Result<Entry> {
    Ok(sqlx::query_as(
        "insert into balance_entries (tenant_id, kind, amount, currency, reason, created_by) \
         values ($1, $2, $3, $4, $5, $6) returning id, kind, amount, currency, invoice_id, reason, created_by, created_at",
    )
    .bind(tenant.as_uuid())
    .bind(credit.kind)
    .bind(credit.amount.0)
    .bind(&credit.currency)
    .bind(&credit.reason)
    .bind(credit.by.as_uuid())
    .fetch_one(ex)
    .await?)
}

/// Debits an issued invoice's total (in the issuing transaction).
pub async fn debit_invoice(
    ex: impl PgExecutor<'_>,
    tenant: TenantId,
    invoice: Uuid,
    total: Money,
    currency: &str,
) -> Result<()> {
    settle(ex, tenant, "invoice", invoice, Money(-total.0), currency).await
}

/// Credits a credit note's total (in the issuing transaction).
pub async fn credit_note(
    ex: impl PgExecutor<'_>,
    tenant: TenantId,
    note: Uuid,
    total: Money,
    currency: &str,
) -> Result<()> {
    settle(ex, tenant, "credit_note", note, total, currency).await
}

async fn settle(
    ex: impl PgExecutor<'_>,
    tenant: TenantId,
    kind: &str,
    document: Uuid,
    amount: Money,
    currency: &str,
) -> Result<()> {
    sqlx::query(
        "insert into balance_entries (tenant_id, kind, amount, currency, invoice_id) values ($1, $2, $3, $4, $5)",
    )
    .bind(tenant.as_uuid())
    .bind(kind)
    .bind(amount.0)
    .bind(currency)
    .bind(document)
    .execute(ex)
    .await?;
    Ok(())
}

/// `tenant`'s latest `limit` entries, newest first.
pub async fn entries(ex: impl PgExecutor<'_>, tenant: TenantId, limit: i64) -> Result<Vec<Entry>> {
    Ok(sqlx::query_as(
        "select id, kind, amount, currency, invoice_id, reason, created_by, created_at from balance_entries \
         where tenant_id = $1 order by id desc limit $2",
    )
    .bind(tenant.as_uuid())
    .bind(limit)
    .fetch_all(ex)
    .await?)
}

/// A tenant's billing terms.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct Terms {
    /// Pays ahead: no new instances once the balance is used up.
    pub prepaid: bool,
    /// Tax rate on its invoices (0.19 = 19 %).
    pub tax_rate: Decimal,
    /// The customer accounts for the tax.
    pub tax_reverse_charge: bool,
    /// Its tax id, shown on invoices.
    pub tax_id: Option<String>,
    /// The ladder's `balance.low` below this available balance (0: never).
    pub low_balance_threshold: Decimal,
    /// Hours from an exhausted balance to suspension.
    pub grace_period_hours: i32,
}

/// A change of a tenant's terms: the ladder's settings are kept when not given.
#[derive(Clone, Debug, PartialEq)]
pub struct TermsChange {
    /// Pays ahead.
    pub prepaid: bool,
    /// Tax rate.
    pub tax_rate: Decimal,
    /// Reverse charge.
    pub tax_reverse_charge: bool,
    /// Tax id.
    pub tax_id: Option<String>,
    /// The low-balance threshold, if it changes.
    pub low_balance_threshold: Option<Decimal>,
    /// The grace period, if it changes.
    pub grace_period_hours: Option<i32>,
}

/// Sets `tenant`'s billing terms; `NotFound` for an unknown tenant, `Check` for a rate outside
/// [0, 1), a negative threshold or a grace period outside 0-8760 hours.
pub async fn set_terms(ex: impl PgExecutor<'_>, tenant: TenantId, terms: &TermsChange) -> Result<Terms> {
    sqlx::query_as(
        "update tenants set prepaid = $2, tax_rate = $3, tax_reverse_charge = $4, tax_id = $5, \
         low_balance_threshold = coalesce($6, low_balance_threshold), \
         grace_period_hours = coalesce($7, grace_period_hours) where id = $1 \
         returning prepaid, tax_rate, tax_reverse_charge, tax_id, low_balance_threshold, grace_period_hours",
    )
    .bind(tenant.as_uuid())
    .bind(terms.prepaid)
    .bind(terms.tax_rate)
    .bind(terms.tax_reverse_charge)
    .bind(&terms.tax_id)
    .bind(terms.low_balance_threshold)
    .bind(terms.grace_period_hours)
    .fetch_optional(ex)
    .await?
    .ok_or(crate::DbError::NotFound)
}
