//! Top-ups paid through a payment provider: a payment is recorded when the customer starts
//! paying, takes the provider's reference, and is settled at most once, crediting the tenant's
//! ledger (an entry that names the payment; the database refuses a second one).

use chrono::{DateTime, Utc};
use nimbus_domain::{Money, TenantId, UserId};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::{DbError, Result};

/// A payment.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct Payment {
    /// Ours (the provider's idempotency key too).
    pub id: Uuid,
    /// The tenant paying.
    pub tenant_id: Uuid,
    /// `stripe`, …
    pub provider: String,
    /// The provider's id for it, once it has one.
    pub reference: Option<String>,
    /// The amount.
    pub amount: Decimal,
    /// ISO 4217.
    pub currency: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// When it was started.
    pub created_at: DateTime<Utc>,
    /// When it was settled.
    pub settled_at: Option<DateTime<Utc>>,
}

macro_rules! payment_columns {
    () => {
        "id, tenant_id, provider, reference, amount, trim(currency) as currency, status, created_at, settled_at"
    };
}

/// Records a payment `tenant` starts through `provider`.
pub async fn start(
    ex: impl PgExecutor<'_>,
    tenant: TenantId,
    provider: &str,
    amount: Money,
    currency: &str,
    by: UserId,
) -> Result<Payment> {
    Ok(sqlx::query_as(concat!(
        "insert into payments (id, tenant_id, provider, amount, currency, created_by) values ($1, $2, $3, $4, $5, $6) \
         returning ",
        payment_columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(tenant.as_uuid())
    .bind(provider)
    .bind(amount.0)
    .bind(currency)
    .bind(by.as_uuid())
    .fetch_one(ex)
    .await?)
}

/// Sets the provider's reference of payment `id`.
pub async fn set_reference(ex: impl PgExecutor<'_>, id: Uuid, reference: &str) -> Result<Payment> {
    Ok(sqlx::query_as(concat!("update payments set reference = $2 where id = $1 returning ", payment_columns!()))
        .bind(id)
        .bind(reference)
        .fetch_one(ex)
        .await?)
}

/// Marks payment `id` failed (the provider refused it, or could not be reached to start it).
pub async fn fail(ex: impl PgExecutor<'_>, id: Uuid) -> Result<()> {
    sqlx::query("update payments set status = 'failed' where id = $1 and status = 'pending'")
        .bind(id)
        .execute(ex)
        .await?;
    Ok(())
}

/// Marks the pending payment `provider` knows as `reference` failed; whether there was one.
pub async fn fail_reference(ex: impl PgExecutor<'_>, provider: &str, reference: &str) -> Result<bool> {
    let done = sqlx::query(
        "update payments set status = 'failed' where provider = $1 and reference = $2 and status = 'pending'",
    )
    .bind(provider)
    .bind(reference)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// What the provider says was paid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paid {
    /// The provider.
    pub provider: &'static str,
    /// Its reference of the payment.
    pub reference: String,
    /// The amount it collected.
    pub amount: Money,
    /// ISO 4217, upper case.
    pub currency: String,
}

/// Settles the payment `paid` names (in the caller's transaction): the first time, marks it
/// succeeded and credits its tenant's ledger with a top-up naming it, and returns the payment;
/// again, `None`. A reference no payment has is `NotFound`; an amount or currency other than the
/// payment's is `Check { constraint: "payments_amount_check" }` (nothing is credited).
pub async fn settle(conn: &mut PgConnection, paid: &Paid, at: DateTime<Utc>) -> Result<Option<Payment>> {
    let payment: Payment = sqlx::query_as(concat!(
        "select ",
        payment_columns!(),
        " from payments where provider = $1 and reference = $2 for update"
    ))
    .bind(paid.provider)
    .bind(&paid.reference)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(DbError::NotFound)?;
    if payment.status == "succeeded" {
        return Ok(None);
    }
    if payment.amount != paid.amount.0 || payment.currency != paid.currency {
        return Err(DbError::Check { constraint: "payments_amount_check".into() });
    }
    let settled: Payment = sqlx::query_as(concat!(
        "update payments set status = 'succeeded', settled_at = $2 where id = $1 returning ",
        payment_columns!()
    ))
    .bind(payment.id)
    .bind(at)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "insert into balance_entries (tenant_id, kind, amount, currency, reason, payment_id) \
         values ($1, 'top_up', $2, $3, $4, $5)",
    )
    .bind(settled.tenant_id)
    .bind(settled.amount)
    .bind(&settled.currency)
    .bind(format!("paid through {} ({})", paid.provider, paid.reference))
    .bind(settled.id)
    .execute(&mut *conn)
    .await?;
    Ok(Some(settled))
}

/// `tenant`'s payments, newest first.
pub async fn list(ex: impl PgExecutor<'_>, tenant: TenantId, limit: i64) -> Result<Vec<Payment>> {
    Ok(sqlx::query_as(concat!(
        "select ",
        payment_columns!(),
        " from payments where tenant_id = $1 order by created_at desc, id desc limit $2"
    ))
    .bind(tenant.as_uuid())
    .bind(limit)
    .fetch_all(ex)
    .await?)
}
