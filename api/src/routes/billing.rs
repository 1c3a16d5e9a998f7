//! Billing for customers: `GET /v1/billing/usage` (the month to date per instance and in total,
//! each instance's monthly cap applied, backup storage beside it, with the forecast to the month's end at the current
//! rate), `GET /v1/billing/invoices` and `GET /v1/billing/invoices/{id}` (JSON with its lines;
//! `{id}.csv` for the lines as CSV; `{id}.html` or `Accept: text/html` for the printable page;
//! credit notes too), `GET /v1/billing/balance` (the ledger's balance, the available balance
//! after what is not invoiced yet, the tenant's step on the prepaid ladder and the ledger's
//! latest entries). The operators' side is `admin_billing.rs`.
//!
//! Amounts are decimal strings with their currency, never floats.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Duration, DurationRound, Utc};
use nimbus_db::invoices::{self, Invoice, Line};
use nimbus_db::{instances, ladder, usage};
use nimbus_domain::{ApiResponse, InstanceId, Money};
use serde::Serialize;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::middleware::RequestId;
use crate::routes::admin_billing::{StandingView, standing_view};
use crate::routes::vms::not_found;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/billing/usage", get(usage_to_date))
        .route("/v1/billing/invoices", get(list_invoices))
        .route("/v1/billing/invoices/{id}", get(show_invoice))
        .route("/v1/billing/balance", get(show_balance))
}

/// One instance's month to date. Amounts are unrounded (rated to 10 places), without trailing
/// zeros.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = BillingUsageInstance)]
struct InstanceLine {
    /// The instance (it may since have been deleted).
    instance_id: InstanceId,
    /// Its name.
    #[schema(example = "web-1")]
    name: String,
    /// Hours metered this month.
    #[schema(example = 72)]
    hours: i64,
    /// Usage before the cap.
    #[schema(value_type = String, example = "13.0416")]
    usage: Money,
    /// The most its compute costs in a month, if its price has a cap.
    #[schema(value_type = Option<String>, example = "10")]
    monthly_cap: Option<Money>,
    /// What it costs so far: the usage, at most the cap.
    #[schema(value_type = String, example = "10")]
    amount: Money,
    /// Its cost at the month's end at its current rate (capped); its rate is 0 once deleted.
    #[schema(value_type = String, example = "10")]
    forecast: Money,
}

/// The month to date: usage per instance (each under its monthly cap) and backup storage, with
/// the forecast to the month's end at the current rates. Usage is metered hourly: the month to
/// date ends with the last hour metered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = BillingUsage)]
struct UsageView {
    /// The month's first instant.
    period_start: DateTime<Utc>,
    /// The next month's first instant (the period ends before it).
    period_end: DateTime<Utc>,
    /// ISO 4217 code of the tenant's current price; `null` when its plan has no price.
    #[schema(example = "EUR")]
    currency: Option<String>,
    /// Compute, per instance metered this month.
    instances: Vec<InstanceLine>,
    /// Backup storage per instance (not under the cap).
    backups: Vec<BackupLine>,
    /// What the month costs so far (instances and backups).
    #[schema(value_type = String, example = "10.031")]
    total: Money,
    /// What the month will cost at its end at the current rates.
    #[schema(value_type = String, example = "31.2")]
    forecast: Money,
}

/// One instance's backup storage, month to date.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = BillingUsageBackup)]
struct BackupLine {
    /// The instance the archives are of.
    instance_id: InstanceId,
    /// Its name.
    #[schema(example = "web-1")]
    name: String,
    /// Hours with archives.
    #[schema(example = 72)]
    hours: i64,
    /// The sum over those hours of the archives' GiB (a decimal string).
    #[schema(example = "144.5")]
    gib_hours: rust_decimal::Decimal,
    /// What they cost so far.
    #[schema(value_type = String, example = "0.031")]
    amount: Money,
    /// At the month's end at the last hour's rate (0 once the instance is deleted).
    #[schema(value_type = String, example = "0.1")]
    forecast: Money,
}

/// The tenant's usage this month so far, with a forecast to the month's end.
///
/// Usage per instance (each under its monthly cap) and backup storage, metered hourly, and the
/// forecast to the month's end at the current rates.
#[utoipa::path(
    get, path = "/v1/billing/usage", operation_id = "getBillingUsage", tag = "Billing",
    responses((status = 200, description = "The month to date.", body = ApiResponse<UsageView>))
)]
async fn usage_to_date(State(state): State<AppState>, auth: AuthUser, rid: RequestId) -> Result<Response, ApiError> {
    let now = Utc::now();
    let (from, to) = invoices::month_of(now);
    let hour = now.duration_trunc(Duration::hours(1)).unwrap_or(now);
    let metered = usage::by_instance(state.db(), auth.tenant(), from, to).await?;
    // The hours left in the month after the current one, at each live instance's last hourly rate.
    let hours_left = (to - hour).num_hours().max(0);
    let live: std::collections::HashSet<InstanceId> =
        instances::live_ids(state.db(), auth.tenant()).await?.into_iter().collect();
    let rates = usage::last_hour_rates(state.db(), auth.tenant(), from, to, false).await?;
    let rate_of = |rates: &[(InstanceId, Money)], id: InstanceId| {
        if live.contains(&id) {
            rates.iter().find(|(i, _)| *i == id).map(|(_, r)| *r).unwrap_or(Money::ZERO)
        } else {
            Money::ZERO
        }
    };
    let mut lines = Vec::new();
    for u in metered {
        let amount = cap(u.amount, u.monthly_cap);
        let rate = rate_of(&rates, u.instance_id);
        let forecast = cap(u.amount + rate * rust_decimal::Decimal::from(hours_left), u.monthly_cap);
        lines.push(InstanceLine {
            instance_id: u.instance_id,
            name: u.name,
            hours: u.hours,
            usage: exact(u.amount),
            monthly_cap: u.monthly_cap.map(exact),
            amount: exact(amount),
            forecast: exact(forecast),
        });
    }
    let backup_rates = usage::last_hour_rates(state.db(), auth.tenant(), from, to, true).await?;
    let backups: Vec<BackupLine> = usage::backups_by_instance(state.db(), auth.tenant(), from, to)
        .await?
        .into_iter()
        .map(|b| {
            let rate = rate_of(&backup_rates, b.instance_id);
            BackupLine {
                instance_id: b.instance_id,
                name: b.name,
                hours: b.hours,
                gib_hours: b.gib_hours,
                amount: exact(b.amount),
                forecast: exact(b.amount + rate * rust_decimal::Decimal::from(hours_left)),
            }
        })
        .collect();
    let currency = usage::price_at(state.db(), auth.tenant(), now).await?.map(|p| p.currency);
    let total = exact(lines.iter().map(|l| l.amount).chain(backups.iter().map(|b| b.amount)).sum());
    let forecast = exact(lines.iter().map(|l| l.forecast).chain(backups.iter().map(|b| b.forecast)).sum());
    let view = UsageView { period_start: from, period_end: to, currency, instances: lines, backups, total, forecast };
    Ok(super::data(&rid, view).into_response())
}

/// An unrounded amount (usage is rated to 10 places) without its trailing zeros: `13`, `0.031`.
pub(crate) fn exact(m: Money) -> Money {
    Money(m.0.normalize())
}

fn cap(amount: Money, cap: Option<Money>) -> Money {
    match cap {
        Some(c) if c < amount => c,
        _ => amount,
    }
}

/// An issued invoice or credit note as customers see it (amounts at the currency's minor unit).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Invoice)]
pub(crate) struct InvoiceView {
    /// Its id.
    id: Uuid,
    /// Its number, from one gapless sequence per year (invoices and credit notes alike).
    #[schema(example = "NMB-2026-000042")]
    number: String,
    /// An invoice, or a credit note correcting one.
    #[schema(value_type = InvoiceKind)]
    kind: String,
    /// The invoice a credit note corrects; `null` for an invoice.
    corrects: Option<Uuid>,
    /// The billed month's first instant.
    period_start: DateTime<Utc>,
    /// The next month's first instant.
    period_end: DateTime<Utc>,
    /// ISO 4217 code.
    #[schema(example = "EUR")]
    currency: String,
    /// Before tax (for a credit note, the net amount it credits).
    #[schema(value_type = String, example = "42.00")]
    subtotal: Money,
    /// The tax rate as a fraction (`0.19` for 19 %).
    #[schema(value_type = String, example = "0.1900")]
    tax_rate: Money,
    /// Whether the customer owes the tax (reverse charge); the tax is then 0.
    tax_reverse_charge: bool,
    /// The customer's tax id, if any.
    #[schema(example = "DE123456789")]
    tax_id: Option<String>,
    /// The tax.
    #[schema(value_type = String, example = "7.98")]
    tax: Money,
    /// Subtotal plus tax.
    #[schema(value_type = String, example = "49.98")]
    total: Money,
    /// When it was issued.
    issued_at: DateTime<Utc>,
    /// Its lines: only when one invoice is shown (not in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    lines: Option<Vec<LineView>>,
}

/// One line of an invoice.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = InvoiceLine)]
pub(crate) struct LineView {
    /// Its place on the invoice, from 1.
    #[schema(example = 1)]
    position: i32,
    /// The instance it bills; `null` on a credit note.
    instance_id: Option<Uuid>,
    /// What it bills.
    #[schema(example = "web-1 (720 h)")]
    description: String,
    /// Hours billed.
    #[schema(example = 720)]
    hours: i32,
    /// The usage before the monthly cap, unrounded.
    #[schema(value_type = String, example = "43.2")]
    uncapped: Money,
    /// What it costs, at the currency's minor unit.
    #[schema(value_type = String, example = "42.00")]
    amount: Money,
}

/// What an invoice is (`kind`).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Describes `InvoiceView::kind`, a string the database constrains to these.
pub(crate) enum InvoiceKind {
    /// A month's invoice.
    Invoice,
    /// A correction of an issued invoice.
    CreditNote,
}

pub(crate) fn invoice_view(i: Invoice, lines: Option<Vec<Line>>) -> InvoiceView {
    let currency = i.currency.trim().to_owned();
    // Stored with four decimals; shown at the currency's minor unit, as issued.
    let unit = currency.clone();
    let shown = move |d: rust_decimal::Decimal| Money(d).round_to_minor_unit(&unit);
    InvoiceView {
        id: i.id,
        number: i.number,
        kind: i.kind,
        corrects: i.corrects,
        period_start: i.period_start,
        period_end: i.period_end,
        subtotal: shown(i.subtotal),
        tax_rate: Money(i.tax_rate),
        tax_reverse_charge: i.tax_reverse_charge,
        tax_id: i.tax_id,
        tax: shown(i.tax),
        total: shown(i.total),
        issued_at: i.issued_at,
        currency,
        lines: lines.map(|ls| {
            ls.into_iter()
                .map(|l| LineView {
                    position: l.position,
                    instance_id: l.instance_id,
                    description: l.description,
                    hours: l.hours,
                    uncapped: Money(l.uncapped.normalize()),
                    amount: shown(l.amount),
                })
                .collect()
        }),
    }
}

/// The caller's tenant's invoices and credit notes, without their lines.
#[utoipa::path(
    get, path = "/v1/billing/invoices", operation_id = "listInvoices", tag = "Billing",
    responses((status = 200, description = "Every invoice and credit note of the tenant.", body = ApiResponse<Vec<InvoiceView>>))
)]
async fn list_invoices(State(state): State<AppState>, auth: AuthUser, rid: RequestId) -> Result<Response, ApiError> {
    let listed = invoices::list(state.db(), auth.tenant()).await?;
    let views: Vec<InvoiceView> = listed.into_iter().map(|i| invoice_view(i, None)).collect();
    Ok(super::data(&rid, views).into_response())
}

/// The forms an invoice is served in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    Json,
    Csv,
    Html,
}

/// One invoice or credit note with its lines, as JSON, a printable HTML page or CSV.
///
/// JSON by default; the printable HTML page when the first type of `Accept` is `text/html` or
/// the id ends with `.html`; the lines and totals as CSV (an attachment) when the id ends with
/// `.csv`.
#[utoipa::path(
    get, path = "/v1/billing/invoices/{id}", operation_id = "getInvoice", tag = "Billing",
    params(("id" = String, Path,
        description = "The invoice's id (a UUID), optionally followed by `.html` (the printable page) or `.csv` (the lines as CSV).",
        example = "0193a5c4-7e1f-7b3a-9c2d-5e8f1a2b3c4d")),
    responses((status = 200,
        description = "The invoice: JSON with its lines; the printable HTML page when `Accept` starts with `text/html` or the id \
            ends with `.html`; its lines and totals as CSV (`Content-Disposition: attachment`) when the id ends with `.csv`.",
        content(
            (ApiResponse<InvoiceView> = "application/json"),
            (String = "text/html", example = "<!doctype html>…"),
            (String = "text/csv", example = "invoice,position,description,hours,amount,currency\r\nNMB-2026-000042,1,web-1 (720 h),720,42.00,EUR\r\n"),
        )))
)]
async fn show_invoice(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .and_then(|a| a.split(',').next())
        .is_some_and(|first| first.trim().starts_with("text/html"));
    let (id, form) = if let Some(id) = id.strip_suffix(".csv") {
        (id.to_owned(), Form::Csv)
    } else if let Some(id) = id.strip_suffix(".html") {
        (id.to_owned(), Form::Html)
    } else {
        (id, if wants_html { Form::Html } else { Form::Json })
    };
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound("invoice"))?;
    let mut conn = state.db().acquire().await.map_err(nimbus_db::DbError::from)?;
    let (invoice, lines) = invoices::get(&mut conn, auth.tenant(), id).await.map_err(|e| not_found(e, "invoice"))?;
    if form == Form::Html {
        let tenant = nimbus_db::tenants::get(state.db(), auth.tenant()).await?;
        let issuer = &state.settings().invoice_issuer;
        let html = crate::invoice_html::render(issuer, &tenant.name, &invoice, &lines).map_err(ApiError::Internal)?;
        let mut response = html.into_response();
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // Its own styles and the issuer's logo; nothing else, no script.
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src https: data:"),
        );
        return Ok(response);
    }
    if form == Form::Csv {
        let mut response = as_csv(&invoice, &lines).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}.csv\"", invoice.number)) {
            response.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
        return Ok(response);
    }
    Ok(super::data(&rid, invoice_view(invoice, Some(lines))).into_response())
}

/// The invoice's lines and totals as CSV (RFC 4180: fields with commas or quotes quoted).
fn as_csv(invoice: &Invoice, lines: &[Line]) -> String {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
    }
    let currency = invoice.currency.trim();
    let mut out = String::from("invoice,position,description,hours,amount,currency\r\n");
    for l in lines {
        out.push_str(&format!(
            "{},{},{},{},{},{currency}\r\n",
            invoice.number,
            l.position,
            field(&l.description),
            l.hours,
            l.amount.normalize()
        ));
    }
    for (label, amount) in [("subtotal", invoice.subtotal), ("tax", invoice.tax), ("total", invoice.total)] {
        out.push_str(&format!("{},,{label},,{},{currency}\r\n", invoice.number, amount.normalize()));
    }
    out
}

/// The entries `GET /v1/billing/balance` shows.
const ENTRIES_SHOWN: i64 = 100;

/// One ledger entry as the tenant sees it (not which operator added it).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = LedgerEntry)]
pub(crate) struct EntryView {
    /// Its id (entries are numbered in order).
    #[schema(example = 1042)]
    id: i64,
    /// What it is.
    #[schema(value_type = LedgerEntryKind)]
    kind: String,
    /// Credits positive (top-ups, credit notes, adjustments up), debits negative (issued
    /// invoices, adjustments down), at the currency's minor unit.
    #[schema(value_type = String, example = "50.00")]
    amount: Money,
    /// ISO 4217 code (empty when the tenant's plan had no price).
    #[schema(example = "EUR")]
    currency: String,
    /// The invoice or credit note it books; `null` for top-ups and adjustments.
    invoice_id: Option<Uuid>,
    /// Why (an adjustment's reason), if given.
    #[schema(example = "goodwill credit for the outage of 3 December")]
    reason: Option<String>,
    /// When it was booked.
    created_at: DateTime<Utc>,
}

/// What a ledger entry is (`kind`).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Describes `EntryView::kind`, a string the database constrains to these.
pub(crate) enum LedgerEntryKind {
    /// A payment or an operator's top-up.
    TopUp,
    /// An issued invoice (a debit).
    Invoice,
    /// A credit note.
    CreditNote,
    /// An operator's correction, with its reason.
    Adjustment,
}

pub(crate) fn entry_view(e: nimbus_db::balance::Entry) -> EntryView {
    let currency = e.currency.trim().to_owned();
    EntryView {
        id: e.id,
        kind: e.kind,
        amount: Money(e.amount).round_to_minor_unit(&currency),
        currency,
        invoice_id: e.invoice_id,
        reason: e.reason,
        created_at: e.created_at,
    }
}

/// The prepaid balance: the ledger's sum, where the tenant stands on the prepaid ladder, and the
/// ledger's latest entries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = BillingBalance)]
struct BalanceView {
    /// The ledger's sum, at the currency's minor unit (negative: owing).
    #[schema(value_type = String, example = "120.50")]
    balance: Money,
    /// ISO 4217 code of the tenant's current price (else of its latest entry; empty when neither).
    #[schema(example = "EUR")]
    currency: String,
    /// Where the tenant stands on the prepaid ladder.
    standing: StandingView,
    /// The ledger's latest entries (at most 100), newest first.
    entries: Vec<EntryView>,
}

/// The tenant's prepaid balance, its standing on the prepaid ladder and its latest ledger entries.
#[utoipa::path(
    get, path = "/v1/billing/balance", operation_id = "getBillingBalance", tag = "Billing",
    responses((status = 200, description = "The balance, the standing and the latest entries.", body = ApiResponse<BalanceView>))
)]
async fn show_balance(State(state): State<AppState>, auth: AuthUser, rid: RequestId) -> Result<Response, ApiError> {
    let entries = nimbus_db::balance::entries(state.db(), auth.tenant(), ENTRIES_SHOWN).await?;
    let currency = match usage::price_at(state.db(), auth.tenant(), Utc::now()).await? {
        Some(p) => p.currency,
        None => entries.first().map(|e| e.currency.trim().to_owned()).unwrap_or_default(),
    };
    // The standing carries the ledger's sum: the balance is not summed a second time.
    let mut conn = state.db().acquire().await.map_err(nimbus_db::DbError::from)?;
    let standing = ladder::standing(&mut conn, auth.tenant()).await?;
    let view = BalanceView {
        balance: standing.ledger.round_to_minor_unit(&currency),
        standing: standing_view(&standing, &currency),
        currency,
        entries: entries.into_iter().map(entry_view).collect(),
    };
    Ok(super::data(&rid, view).into_response())
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(usage_to_date, list_invoices, show_invoice, show_balance))]
pub struct ApiDoc;
