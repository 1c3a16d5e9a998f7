//! Invoices (DESIGN §10): one per tenant and month, issued from the month's usage with each
//! instance's monthly cap applied. Amounts are exact decimals; each line is rounded half to even
//! to the currency's minor unit, the subtotal is the sum of the rounded lines, the tax is the
//! rounded subtotal × rate (none under reverse charge), the total their sum. Numbers are gapless
//! per year (`NMB-2026-000123`): the year's counter row is taken in the issuing transaction.
//! Issued invoices and lines are immutable (the database refuses UPDATE, DELETE, TRUNCATE). An
//! issued invoice debits its total from the tenant's prepaid balance in the same transaction.

use chrono::{DateTime, Datelike, Utc};
use nimbus_domain::{InstanceId, Money, TenantId};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::events::{self, NewEvent};
use crate::usage::{self, InstanceUsage};
use crate::{DbError, Result};

/// The check a credit note's amount fails: not positive, or more than the invoice has left.
pub const CREDIT_NOTE_AMOUNT: &str = "credit_note_amount";

/// An issued invoice.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct Invoice {
    /// Id.
    pub id: Uuid,
    /// The tenant billed.
    pub tenant_id: Uuid,
    /// `NMB-<year>-<nnnnnn>`.
    pub number: String,
    /// `invoice` or `credit_note`.
    pub kind: String,
    /// The invoice a credit note corrects.
    pub corrects: Option<Uuid>,
    /// The period billed, `[start, end)`.
    pub period_start: DateTime<Utc>,
    /// Its end.
    pub period_end: DateTime<Utc>,
    /// ISO 4217.
    pub currency: String,
    /// Sum of the lines.
    pub subtotal: Decimal,
    /// The tenant's tax rate when issued (0.19 = 19 %).
    pub tax_rate: Decimal,
    /// The customer accounts for the tax (no tax charged).
    pub tax_reverse_charge: bool,
    /// The customer's tax id.
    pub tax_id: Option<String>,
    /// Tax charged.
    pub tax: Decimal,
    /// Subtotal plus tax.
    pub total: Decimal,
    /// Issued at.
    pub issued_at: DateTime<Utc>,
}

/// One line of an invoice.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct Line {
    /// Its place on the invoice, from 1.
    pub position: i32,
    /// The instance billed.
    pub instance_id: Option<Uuid>,
    /// What it is for.
    pub description: String,
    /// Hours billed.
    pub hours: i32,
    /// The usage before the cap.
    pub uncapped: Decimal,
    /// What is charged (capped, rounded).
    pub amount: Decimal,
}

/// A line before it is written: an instance's month, capped and rounded.
#[derive(Clone, Debug, PartialEq)]
pub struct DraftLine {
    /// The instance.
    pub instance_id: InstanceId,
    /// What it is for.
    pub description: String,
    /// Hours billed.
    pub hours: i64,
    /// The usage before the cap.
    pub uncapped: Money,
    /// Charged: the usage, at most the cap, rounded half to even to the minor unit.
    pub amount: Money,
}

/// The lines of a month's usage.
pub fn draft_lines(usage: &[InstanceUsage]) -> Vec<DraftLine> {
    usage
        .iter()
        .map(|u| {
            let capped = match u.monthly_cap {
                Some(cap) if cap < u.amount => cap,
                _ => u.amount,
            };
            DraftLine {
                instance_id: u.instance_id,
                description: match &u.tier {
                    Some(tier) => format!("{} ({tier}, {} h)", u.name, u.hours),
                    None => format!("{} ({} h)", u.name, u.hours),
                },
                hours: u.hours,
                uncapped: u.amount,
                amount: capped.round_to_minor_unit(&u.currency),
            }
        })
        .collect()
}

/// The lines of `tenant`'s usage in `[from, to)` and their currency (`None` without usage): each
/// instance's compute, capped, then each instance's backup storage (not capped), rounded.
pub async fn month_lines(
    conn: &mut PgConnection,
    tenant: TenantId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Option<(String, Vec<DraftLine>)>> {
    let compute = usage::by_instance(&mut *conn, tenant, from, to).await?;
    let Some(currency) = compute.first().map(|u| u.currency.clone()) else { return Ok(None) };
    let mut lines = draft_lines(&compute);
    for b in usage::backups_by_instance(&mut *conn, tenant, from, to).await? {
        lines.push(DraftLine {
            instance_id: b.instance_id,
            description: format!("{} backup storage ({} GiB-h)", b.name, b.gib_hours),
            hours: b.hours,
            uncapped: b.amount,
            amount: b.amount.round_to_minor_unit(&b.currency),
        });
    }
    Ok(Some((currency, lines)))
}

/// Subtotal, tax and total of rounded lines: the tax is rounded once, on the subtotal.
pub fn totals(lines: &[DraftLine], tax_rate: Decimal, reverse_charge: bool, currency: &str) -> (Money, Money, Money) {
    let subtotal: Money = lines.iter().map(|l| l.amount).sum();
    let tax = if reverse_charge { Money::ZERO } else { (subtotal * tax_rate).round_to_minor_unit(currency) };
    (subtotal, tax, subtotal + tax)
}

/// The first instant of the month of `at`, and of the next month.
pub fn month_of(at: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let first = |y: i32, m: u32| {
        chrono::NaiveDate::from_ymd_opt(y, m, 1).and_then(|d| d.and_hms_opt(0, 0, 0)).map(|d| d.and_utc())
    };
    let start = first(at.year(), at.month()).unwrap_or(at);
    let (y, m) = if at.month() == 12 { (at.year() + 1, 1) } else { (at.year(), at.month() + 1) };
    (start, first(y, m).unwrap_or(at))
}

/// Issues `tenant`'s invoice for the month `[from, to)` from its usage, unless it has one or
/// had no usage (`None`). Call in a transaction: the year's counter row stays locked until it
/// ends, so numbers are gapless and concurrent runs take turns.
pub async fn issue(
    tx: &mut PgConnection,
    tenant: TenantId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Option<Invoice>> {
    // The tenant's row, locked: two runs for one tenant take turns, the second finds the invoice.
    let tax: Option<(Decimal, bool, Option<String>)> =
        sqlx::query_as("select tax_rate, tax_reverse_charge, tax_id from tenants where id = $1 for no key update")
            .bind(tenant.as_uuid())
            .fetch_optional(&mut *tx)
            .await?;
    let (tax_rate, reverse_charge, tax_id) = tax.ok_or(DbError::NotFound)?;
    let issued: Option<Uuid> =
        sqlx::query_scalar("select id from invoices where tenant_id = $1 and period_start = $2 and kind = 'invoice'")
            .bind(tenant.as_uuid())
            .bind(from)
            .fetch_optional(&mut *tx)
            .await?;
    if issued.is_some() {
        return Ok(None);
    }
    let Some((currency, lines)) = month_lines(&mut *tx, tenant, from, to).await? else { return Ok(None) };
    let (subtotal, tax, total) = totals(&lines, tax_rate, reverse_charge, &currency);
    let number = next_number(&mut *tx, from.year()).await?;
    let invoice: Invoice = sqlx::query_as(
        "insert into invoices (id, tenant_id, number, period_start, period_end, currency, subtotal, tax_rate, \
         tax_reverse_charge, tax_id, tax, total) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         returning *",
    )
    .bind(Uuid::now_v7())
    .bind(tenant.as_uuid())
    .bind(number)
    .bind(from)
    .bind(to)
    .bind(&currency)
    .bind(subtotal.0)
    .bind(tax_rate)
    .bind(reverse_charge)
    .bind(tax_id)
    .bind(tax.0)
    .bind(total.0)
    .fetch_one(&mut *tx)
    .await?;
    let positions: Vec<i32> = (1..=lines.len() as i32).collect();
    let instances: Vec<Uuid> = lines.iter().map(|l| l.instance_id.as_uuid()).collect();
    let descriptions: Vec<&str> = lines.iter().map(|l| l.description.as_str()).collect();
    let hours: Vec<i32> = lines.iter().map(|l| i32::try_from(l.hours).unwrap_or(i32::MAX)).collect();
    let uncapped: Vec<Decimal> = lines.iter().map(|l| l.uncapped.0).collect();
    let amounts: Vec<Decimal> = lines.iter().map(|l| l.amount.0).collect();
    sqlx::query(
        "insert into invoice_lines (invoice_id, position, instance_id, description, hours, uncapped, amount) \
         select $1, * from unnest($2::int[], $3::uuid[], $4::text[], $5::int[], $6::numeric[], $7::numeric[])",
    )
    .bind(invoice.id)
    .bind(&positions)
    .bind(&instances)
    .bind(&descriptions)
    .bind(&hours)
    .bind(&uncapped)
    .bind(&amounts)
    .execute(&mut *tx)
    .await?;
    // Settled from the prepaid balance at once (the balance may go below zero).
    crate::balance::debit_invoice(&mut *tx, tenant, invoice.id, total, &currency).await?;
    record_issued(&mut *tx, events::types::INVOICE_ISSUED, &invoice).await?;
    Ok(Some(invoice))
}

/// The next number of `year` (`NMB-2026-000123`). Its counter row stays locked until the
/// transaction ends: numbers are gapless and concurrent issues take turns.
async fn next_number(ex: impl PgExecutor<'_>, year: i32) -> Result<String> {
    let seq: i32 = sqlx::query_scalar(
        "insert into invoice_numbers (year, last) values ($1, 1) \
         on conflict (year) do update set last = invoice_numbers.last + 1 returning last",
    )
    .bind(year)
    .fetch_one(ex)
    .await?;
    Ok(format!("NMB-{year}-{seq:06}"))
}

/// Takes `year`'s number counter row (creating it) until the transaction ends, before any tenant.
async fn lock_counter(ex: impl PgExecutor<'_>, year: i32) -> Result<()> {
    sqlx::query(
        "insert into invoice_numbers (year, last) values ($1, 0) \
         on conflict (year) do update set last = invoice_numbers.last",
    )
    .bind(year)
    .execute(ex)
    .await?;
    Ok(())
}

/// Records the event of an issued invoice or credit note.
async fn record_issued(ex: impl PgExecutor<'_>, kind: &str, doc: &Invoice) -> Result<()> {
    let event = NewEvent {
        kind,
        at: doc.issued_at,
        tenant: Some(doc.tenant_id.into()),
        resource: Some((doc.kind.as_str(), doc.id.to_string())),
        data: serde_json::json!({
            "number": doc.number,
            "corrects": doc.corrects,
            "periodStart": doc.period_start,
            "periodEnd": doc.period_end,
            "currency": doc.currency.trim(),
            "total": doc.total.to_string(),
        }),
    };
    events::record(ex, &event).await?;
    Ok(())
}

/// A correction to an issued invoice.
#[derive(Clone, Debug)]
pub struct NewCreditNote {
    /// The net amount credited (before tax); `None` credits all the invoice has left.
    pub amount: Option<Money>,
    /// Why (printed on the credit note's line).
    pub reason: String,
    /// When it is issued.
    pub at: DateTime<Utc>,
}

/// Issues a credit note for `tenant`'s invoice `invoice`: a document of its own (kind
/// `credit_note`, a number from the same gapless sequence, the year of issue), taxed at the
/// invoice's rate, credited to the prepaid balance. Credit notes of one invoice never add up to
/// more than it: an amount that is not positive or exceeds what is left is
/// `Check { constraint: CREDIT_NOTE_AMOUNT }`; crediting what is left credits its tax exactly.
pub async fn issue_credit_note(
    tx: &mut PgConnection,
    tenant: TenantId,
    invoice: Uuid,
    note: &NewCreditNote,
) -> Result<Invoice> {
    // The year's counter first, then the tenant (as the ladder locks it): the order `issue_all`
    // takes them in, so a credit note during an invoice run waits rather than deadlocks.
    lock_counter(&mut *tx, note.at.year()).await?;
    sqlx::query("select 1 from tenants where id = $1 for no key update")
        .bind(tenant.as_uuid())
        .execute(&mut *tx)
        .await?;
    let original: Invoice =
        sqlx::query_as("select * from invoices where id = $1 and tenant_id = $2 and kind = 'invoice'")
            .bind(invoice)
            .bind(tenant.as_uuid())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(DbError::NotFound)?;
    let (credited, credited_tax): (Decimal, Decimal) = sqlx::query_as(
        "select coalesce(sum(subtotal), 0), coalesce(sum(tax), 0) from invoices where corrects = $1 and kind = 'credit_note'",
    )
    .bind(invoice)
    .fetch_one(&mut *tx)
    .await?;
    let currency = original.currency.trim().to_owned();
    let left = original.subtotal - credited;
    let amount = note.amount.map_or(left, |m| m.round_to_minor_unit(&currency).0);
    if amount <= Decimal::ZERO || amount > left {
        return Err(DbError::Check { constraint: CREDIT_NOTE_AMOUNT.into() });
    }
    let tax = if amount == left {
        original.tax - credited_tax
    } else if original.tax_reverse_charge {
        Decimal::ZERO
    } else {
        (Money(amount) * original.tax_rate).round_to_minor_unit(&currency).0
    };
    let number = next_number(&mut *tx, note.at.year()).await?;
    let credit: Invoice = sqlx::query_as(
        "insert into invoices (id, tenant_id, number, kind, corrects, period_start, period_end, currency, subtotal, \
         tax_rate, tax_reverse_charge, tax_id, tax, total, issued_at) \
         values ($1, $2, $3, 'credit_note', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) returning *",
    )
    .bind(Uuid::now_v7())
    .bind(tenant.as_uuid())
    .bind(number)
    .bind(invoice)
    .bind(original.period_start)
    .bind(original.period_end)
    .bind(&currency)
    .bind(amount)
    .bind(original.tax_rate)
    .bind(original.tax_reverse_charge)
    .bind(&original.tax_id)
    .bind(tax)
    .bind(amount + tax)
    .bind(note.at)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "insert into invoice_lines (invoice_id, position, instance_id, description, hours, uncapped, amount) \
         values ($1, 1, null, $2, 0, $3, $3)",
    )
    .bind(credit.id)
    .bind(format!("Credit for {}: {}", original.number, note.reason.trim()))
    .bind(amount)
    .execute(&mut *tx)
    .await?;
    crate::balance::credit_note(&mut *tx, tenant, credit.id, Money(amount + tax), &currency).await?;
    record_issued(&mut *tx, events::types::CREDIT_NOTE_ISSUED, &credit).await?;
    Ok(credit)
}

/// Issues the month `[from, to)`'s missing invoices of every tenant with usage, `per_transaction`
/// tenants to a transaction (a commit each, not one per invoice); returns how many it issued.
/// Each transaction first takes the year's number counter, so concurrent runs queue on it
/// rather than deadlock over tenants taken in different orders.
pub async fn issue_all(
    pool: &sqlx::PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    per_transaction: usize,
) -> Result<usize> {
    let tenants = usage::tenants_to_invoice(pool, from, to).await?;
    let mut issued = 0;
    for batch in tenants.chunks(per_transaction.max(1)) {
        let mut tx = pool.begin().await?;
        lock_counter(&mut *tx, from.year()).await?;
        for tenant in batch {
            if issue(&mut tx, *tenant, from, to).await?.is_some() {
                issued += 1;
            }
        }
        tx.commit().await?;
    }
    Ok(issued)
}

/// The tenant an invoice or credit note belongs to (for operators, whose routes span tenants).
pub async fn tenant_of(ex: impl PgExecutor<'_>, id: Uuid) -> Result<TenantId> {
    let tenant: Option<Uuid> =
        sqlx::query_scalar("select tenant_id from invoices where id = $1").bind(id).fetch_optional(ex).await?;
    tenant.map(Into::into).ok_or(DbError::NotFound)
}

/// `tenant`'s invoices, newest first.
pub async fn list(ex: impl PgExecutor<'_>, tenant: TenantId) -> Result<Vec<Invoice>> {
    Ok(sqlx::query_as("select * from invoices where tenant_id = $1 order by issued_at desc, number desc")
        .bind(tenant.as_uuid())
        .fetch_all(ex)
        .await?)
}

/// `tenant`'s invoice `id` with its lines.
pub async fn get(ex: &mut PgConnection, tenant: TenantId, id: Uuid) -> Result<(Invoice, Vec<Line>)> {
    let invoice: Invoice = sqlx::query_as("select * from invoices where tenant_id = $1 and id = $2")
        .bind(tenant.as_uuid())
        .bind(id)
        .fetch_one(&mut *ex)
        .await?;
    let lines = sqlx::query_as(
        "select position, instance_id, description, hours, uncapped, amount from invoice_lines \
         where invoice_id = $1 order by position",
    )
    .bind(id)
    .fetch_all(&mut *ex)
    .await?;
    Ok((invoice, lines))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn usage(amount: &str, cap: Option<&str>) -> InstanceUsage {
        InstanceUsage {
            instance_id: InstanceId::new(),
            name: "web-1".into(),
            hours: 10,
            amount: Money(Decimal::from_str(amount).unwrap()),
            currency: "EUR".into(),
            monthly_cap: cap.map(|c| Money(Decimal::from_str(c).unwrap())),
            tier: None,
        }
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn lines_are_capped_then_rounded_half_to_even_and_totals_sum_the_rounded_lines() {
        let lines = draft_lines(&[usage("1.005", None), usage("1.015", None), usage("9.999", Some("5.00"))]);
        let amounts: Vec<Decimal> = lines.iter().map(|l| l.amount.0).collect();
        assert_eq!(amounts, [d("1.00"), d("1.02"), d("5.00")]);
        assert_eq!(lines[2].uncapped.0, d("9.999"));
        let (subtotal, tax, total) = totals(&lines, d("0.19"), false, "EUR");
        assert_eq!((subtotal.0, tax.0, total.0), (d("7.02"), d("1.33"), d("8.35")));
        let (_, tax, total) = totals(&lines, d("0.19"), true, "EUR");
        assert_eq!((tax.0, total.0), (d("0"), d("7.02")), "reverse charge: no tax");
    }

    #[test]
    fn the_sum_of_rounded_lines_is_the_subtotal_for_any_amounts() {
        // A deterministic spread of awkward amounts (many half-cent ties among them).
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..500 {
            let n = (seed % 12 + 1) as usize;
            let all: Vec<InstanceUsage> = (0..n)
                .map(|i| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    // Up to 10,000 with three decimals; every tenth ends in a half cent.
                    let milli = ((seed >> 33) % 10_000_000) as i64 / 10 * 10 + if i % 2 == 0 { 5 } else { 0 };
                    InstanceUsage { amount: Money(Decimal::new(milli, 3)), ..usage("0", None) }
                })
                .collect();
            let lines = draft_lines(&all);
            let (subtotal, tax, total) = totals(&lines, d("0.21"), false, "EUR");
            let summed: Decimal = lines.iter().map(|l| l.amount.0).sum();
            assert_eq!(subtotal.0, summed);
            assert_eq!(total.0, subtotal.0 + tax.0);
            assert!(lines.iter().all(|l| l.amount.0.scale() <= 2), "{lines:?}");
        }
    }

    #[test]
    fn months_have_their_own_lengths() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        for (inside, days) in [
            ("2026-02-14T10:00:00Z", 28),
            ("2028-02-29T23:59:59Z", 29),
            ("2026-04-30T00:00:00Z", 30),
            ("2026-12-31T23:00:00Z", 31),
        ] {
            let (start, end) = month_of(at(inside));
            assert_eq!((end - start).num_days(), days, "{inside}");
            assert_eq!(start.day(), 1);
        }
    }
}
