//! Billing for customers: `GET /v1/billing/usage` (the month to date per instance and in total,
//! each instance's monthly cap applied, with the forecast to the month's end at the current
//! rate), `GET /v1/billing/invoices` and `GET /v1/billing/invoices/{id}` (JSON with its lines;
//! `{id}.csv` for the lines as CSV; `{id}.html` or `Accept: text/html` for the printable page), `GET /v1/billing/balance` (the prepaid balance and its
//! latest entries). For operators: `POST /v1/admin/plans/{id}/prices`, a new price version of a
//! plan from a given time (what was rated before keeps its price), and
//! `POST /v1/admin/tenants/{id}/credit`, a top-up or an adjustment (with its reason), and
//! `PUT /v1/admin/tenants/{id}/billing`, a tenant's terms (prepaid, tax rate, reverse charge,
//! tax id). A prepaid tenant whose balance is used up cannot create instances
//! (`402 PAYMENT_REQUIRED`, checked by the database with the quota).
//!
//! Amounts are decimal strings with their currency, never floats.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Duration, DurationRound, Utc};
use nimbus_db::invoices::{self, Invoice, Line};
use nimbus_db::usage::{self, NewPrice};
use nimbus_db::{instances, plans};
use nimbus_domain::{InstanceId, Money, PlanId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::{AdminUser, AuthUser};
use crate::error::{ApiError, FieldError};
use crate::extract::{decode, parse_id};
use crate::middleware::RequestId;
use crate::routes::vms::not_found;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/billing/usage", get(usage_to_date))
        .route("/v1/billing/invoices", get(list_invoices))
        .route("/v1/billing/invoices/{id}", get(show_invoice))
        .route("/v1/billing/balance", get(show_balance))
        .route("/v1/admin/plans/{id}/prices", post(add_price))
        .route("/v1/admin/tenants/{id}/credit", post(add_credit))
        .route("/v1/admin/tenants/{id}/billing", axum::routing::put(set_terms))
}

/// One instance's month to date.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InstanceLine {
    instance_id: InstanceId,
    name: String,
    hours: i64,
    /// Usage before the cap.
    usage: Money,
    monthly_cap: Option<Money>,
    /// What it costs so far: the usage, at most the cap.
    amount: Money,
    /// Its cost at the month's end at its current rate (capped); its rate is 0 once deleted.
    forecast: Money,
}

/// `GET /v1/billing/usage`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageView {
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    /// Usage is metered hourly: the month to date ends with the last hour metered.
    currency: Option<String>,
    instances: Vec<InstanceLine>,
    total: Money,
    forecast: Money,
}

async fn usage_to_date(State(state): State<AppState>, auth: AuthUser, rid: RequestId) -> Result<Response, ApiError> {
    let now = Utc::now();
    let (from, to) = invoices::month_of(now);
    let hour = now.duration_trunc(Duration::hours(1)).unwrap_or(now);
    let metered = usage::by_instance(state.db(), auth.tenant(), from, to).await?;
    // The hours left in the month after the current one, at each live instance's last hourly rate.
    let hours_left = (to - hour).num_hours().max(0);
    let live: std::collections::HashSet<InstanceId> =
        instances::live_ids(state.db(), auth.tenant()).await?.into_iter().collect();
    let rates = usage::last_hour_rates(state.db(), auth.tenant(), from, to).await?;
    let mut lines = Vec::new();
    for u in metered {
        let amount = cap(u.amount, u.monthly_cap);
        let rate = if live.contains(&u.instance_id) {
            rates.iter().find(|(id, _)| *id == u.instance_id).map(|(_, r)| *r).unwrap_or(Money::ZERO)
        } else {
            Money::ZERO
        };
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
    let currency = usage::price_at(state.db(), auth.tenant(), now).await?.map(|p| p.currency);
    let total = exact(lines.iter().map(|l| l.amount).sum());
    let forecast = exact(lines.iter().map(|l| l.forecast).sum());
    let view = UsageView { period_start: from, period_end: to, currency, instances: lines, total, forecast };
    Ok(super::data(&rid, view).into_response())
}

/// An unrounded amount (usage is rated to 10 places) without its trailing zeros: `13`, `0.031`.
fn exact(m: Money) -> Money {
    Money(m.0.normalize())
}

fn cap(amount: Money, cap: Option<Money>) -> Money {
    match cap {
        Some(c) if c < amount => c,
        _ => amount,
    }
}

/// An invoice as customers see it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InvoiceView {
    id: Uuid,
    number: String,
    kind: String,
    corrects: Option<Uuid>,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    currency: String,
    subtotal: Money,
    tax_rate: Money,
    tax_reverse_charge: bool,
    tax_id: Option<String>,
    tax: Money,
    total: Money,
    issued_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lines: Option<Vec<LineView>>,
}

/// One line of an invoice.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LineView {
    position: i32,
    instance_id: Option<Uuid>,
    description: String,
    hours: i32,
    uncapped: Money,
    amount: Money,
}

fn invoice_view(i: Invoice, lines: Option<Vec<Line>>) -> InvoiceView {
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

/// The problems with prices: a currency that is no ISO 4217 code, a negative amount; each
/// field named under `prefix` (`prices.` for a plan's, empty for a price version's).
pub(crate) fn price_errors(prefix: &str, currency: &str, amounts: &[(&str, Option<Money>)]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase())) {
        errors.push(FieldError::new(format!("{prefix}currency"), "an ISO 4217 code such as EUR"));
    }
    for (field, amount) in amounts {
        if amount.is_some_and(|a| a.0.is_sign_negative()) {
            errors.push(FieldError::new(format!("{prefix}{field}"), "must not be negative"));
        }
    }
    errors
}

/// The body of `POST /v1/admin/plans/{id}/prices`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PriceBody {
    /// Applies from (default: now); not before the plan's newest version.
    valid_from: Option<DateTime<Utc>>,
    currency: String,
    vcpu_hour: Money,
    memory_gib_hour: Money,
    disk_gib_hour: Money,
    monthly_cap: Option<Money>,
}

async fn add_price(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    rid: RequestId,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let plan: PlanId = parse_id(&id, "plan")?;
    plans::get(state.db(), plan).await.map_err(|e| not_found(e, "plan"))?;
    let body = decode::<PriceBody>(&bytes)?.value;
    let mut errors = price_errors(
        "",
        &body.currency,
        &[
            ("vcpuHour", Some(body.vcpu_hour)),
            ("memoryGibHour", Some(body.memory_gib_hour)),
            ("diskGibHour", Some(body.disk_gib_hour)),
            ("monthlyCap", body.monthly_cap),
        ],
    );
    // Rated hours keep their price: a version may not start before the current hour.
    let now = Utc::now();
    let valid_from = body.valid_from.unwrap_or(now);
    if valid_from < now.duration_trunc(Duration::hours(1)).unwrap_or(now) {
        errors.push(FieldError::new("validFrom", "must not be in an hour already metered"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let new = NewPrice {
        valid_from,
        currency: body.currency,
        vcpu_hour: body.vcpu_hour,
        memory_gib_hour: body.memory_gib_hour,
        disk_gib_hour: body.disk_gib_hour,
        monthly_cap: body.monthly_cap,
    };
    let price = usage::add_price(state.db(), plan, &new).await.map_err(|e| match e {
        nimbus_db::DbError::Conflict { .. } => ApiError::field("validFrom", "the plan has a price version from then"),
        e => e.into(),
    })?;
    tracing::info!(plan.id = %plan, price.id = %price.id, valid_from = %price.valid_from, "price version added");
    let view = serde_json::json!({
        "id": price.id, "planId": plan, "validFrom": price.valid_from, "currency": price.currency,
        "vcpuHour": price.vcpu_hour, "memoryGibHour": price.memory_gib_hour, "diskGibHour": price.disk_gib_hour,
        "monthlyCap": price.monthly_cap,
    });
    Ok((StatusCode::CREATED, super::data(&rid, view)).into_response())
}

/// The entries `GET /v1/billing/balance` shows.
const ENTRIES_SHOWN: i64 = 100;

/// One ledger entry as the tenant sees it (not which operator added it).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EntryView {
    id: i64,
    kind: String,
    amount: Money,
    currency: String,
    invoice_id: Option<Uuid>,
    reason: Option<String>,
    created_at: DateTime<Utc>,
}

fn entry_view(e: nimbus_db::balance::Entry) -> EntryView {
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

async fn show_balance(State(state): State<AppState>, auth: AuthUser, rid: RequestId) -> Result<Response, ApiError> {
    let balance = nimbus_db::balance::balance(state.db(), auth.tenant()).await?;
    let entries = nimbus_db::balance::entries(state.db(), auth.tenant(), ENTRIES_SHOWN).await?;
    let currency = match usage::price_at(state.db(), auth.tenant(), Utc::now()).await? {
        Some(p) => p.currency,
        None => entries.first().map(|e| e.currency.trim().to_owned()).unwrap_or_default(),
    };
    let view = serde_json::json!({
        "balance": balance.round_to_minor_unit(&currency),
        "currency": currency,
        "entries": entries.into_iter().map(entry_view).collect::<Vec<_>>(),
    });
    Ok(super::data(&rid, view).into_response())
}

/// The body of `POST /v1/admin/tenants/{id}/credit`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreditBody {
    /// `top_up` (default; positive) or `adjustment` (either sign, with a reason).
    #[serde(default)]
    kind: Option<String>,
    amount: Money,
    reason: Option<String>,
}

async fn add_credit(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    rid: RequestId,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let tenant: nimbus_domain::TenantId = parse_id(&id, "tenant")?;
    nimbus_db::tenants::get(state.db(), tenant).await.map_err(|e| not_found(e, "tenant"))?;
    let body = decode::<CreditBody>(&bytes)?.value;
    let reason = body.reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    let kind = match body.kind.as_deref().unwrap_or("top_up") {
        "top_up" => "top_up",
        "adjustment" => "adjustment",
        _ => return Err(ApiError::field("kind", "top_up or adjustment")),
    };
    let mut errors = Vec::new();
    if kind == "top_up" && body.amount.0 <= rust_decimal::Decimal::ZERO {
        errors.push(FieldError::new("amount", "a top-up is positive"));
    }
    if body.amount.0.is_zero() {
        errors.push(FieldError::new("amount", "must not be zero"));
    }
    if kind == "adjustment" && reason.is_none() {
        errors.push(FieldError::new("reason", "an adjustment says why"));
    }
    if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        errors.push(FieldError::new("reason", "at most 500 characters"));
    }
    if body.amount.0.scale() > 4 {
        errors.push(FieldError::new("amount", "at most four decimal places"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let currency = usage::price_at(state.db(), tenant, Utc::now()).await?.map(|p| p.currency).unwrap_or_default();
    let credit = nimbus_db::balance::Credit { kind, amount: body.amount, currency, reason, by: admin.user.id };
    let entry = nimbus_db::balance::add(state.db(), tenant, &credit).await?;
    tracing::info!(tenant.id = %tenant, kind, amount = %body.amount, "balance entry added");
    Ok((StatusCode::CREATED, super::data(&rid, entry_view(entry))).into_response())
}

/// The body of `PUT /v1/admin/tenants/{id}/billing` (and its answer).
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TermsBody {
    prepaid: bool,
    /// `0.19` for 19 %.
    tax_rate: Money,
    #[serde(default)]
    tax_reverse_charge: bool,
    tax_id: Option<String>,
}

async fn set_terms(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    rid: RequestId,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let tenant: nimbus_domain::TenantId = parse_id(&id, "tenant")?;
    let body = decode::<TermsBody>(&bytes)?.value;
    let mut errors = Vec::new();
    if body.tax_rate.0.is_sign_negative()
        || body.tax_rate.0 >= rust_decimal::Decimal::ONE
        || body.tax_rate.0.scale() > 4
    {
        errors.push(FieldError::new("taxRate", "a fraction from 0 up to 1 with at most four decimals (0.19 for 19 %)"));
    }
    let tax_id = body.tax_id.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    if let Some(t) = &tax_id
        && (t.chars().count() > 50 || crate::validation::display_text(t).is_err())
    {
        errors.push(FieldError::new("taxId", "one line of at most 50 characters"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let terms = nimbus_db::balance::Terms {
        prepaid: body.prepaid,
        tax_rate: body.tax_rate.0,
        tax_reverse_charge: body.tax_reverse_charge,
        tax_id,
    };
    let set = nimbus_db::balance::set_terms(state.db(), tenant, &terms).await.map_err(|e| not_found(e, "tenant"))?;
    tracing::info!(tenant.id = %tenant, prepaid = set.prepaid, "billing terms set");
    let view = TermsBody {
        prepaid: set.prepaid,
        tax_rate: Money(set.tax_rate.normalize()),
        tax_reverse_charge: set.tax_reverse_charge,
        tax_id: set.tax_id,
    };
    Ok(super::data(&rid, view).into_response())
}
