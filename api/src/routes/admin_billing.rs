//! Billing for operators (role `admin` or `billing-admin`, [`BillingOperator`]):
//!
//! * `POST /v1/admin/plans/{id}/prices`: a new price version of a plan from a given time (what
//!   was rated before keeps its price): per resource, backup storage, and flat size tiers.
//! * `POST /v1/admin/tenants/{id}/credit`: a top-up or an adjustment (with its reason).
//! * `PUT /v1/admin/tenants/{id}/billing`: a tenant's terms (prepaid, tax, the ladder's
//!   threshold and grace period).
//! * `POST /v1/admin/tenants/{id}/suspend` (with a reason) and `…/unsuspend`: an operator's hold.
//! * `POST /v1/admin/invoices/{id}/credit-notes`: a correction of an issued invoice.
//! * `GET /v1/admin/billing/tenants`: tenants by balance (`?attention=true`: low, exhausted,
//!   suspended or owing), `GET /v1/admin/billing/revenue`: per month and per plan.
//!
//! Every change to a tenant's ledger or terms moves it along the prepaid ladder in the same
//! transaction (`nimbus_db::ladder`): a top-up lifts a suspension at once and starts the
//! instances the suspension stopped.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::{DateTime, Datelike, Duration, DurationRound, Months, Utc};
use nimbus_db::jobs::Enqueued;
use nimbus_db::ladder::{self, Outcome};
use nimbus_db::usage::{self, NewPrice};
use nimbus_db::{DbError, invoices, plans, revenue};
use nimbus_domain::{Money, PlanId, TenantId};
use nimbus_jobs::PowerAction;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::auth::BillingOperator;
use crate::error::{ApiError, FieldError};
use crate::extract::{QueryParams, decode, parse_id};
use crate::middleware::RequestId;
use crate::routes::billing::{entry_view, exact, invoice_view};
use crate::routes::vms::not_found;
use crate::state::AppState;
use crate::validation::{CORES, DISK_GIB, MEMORY_MIB};

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/plans/{id}/prices", post(add_price))
        .route("/v1/admin/tenants/{id}/credit", post(add_credit))
        .route("/v1/admin/tenants/{id}/billing", put(set_terms))
        .route("/v1/admin/tenants/{id}/suspend", post(suspend))
        .route("/v1/admin/tenants/{id}/unsuspend", post(unsuspend))
        .route("/v1/admin/invoices/{id}/credit-notes", post(credit_note))
        .route("/v1/admin/billing/tenants", get(tenants))
        .route("/v1/admin/billing/revenue", get(revenue_view))
}

/// Pushes the power jobs a ladder step enqueued (their outbox rows are committed: a failed
/// push is the relay's).
async fn push(state: &AppState, enqueued: &[Enqueued]) {
    for job in enqueued {
        state.dispatcher().push(state.db(), job).await;
    }
}

/// The tenant's standing as operators and the tenant see it.
pub(crate) fn standing_view(s: &ladder::Standing, currency: &str) -> serde_json::Value {
    json!({
        "state": s.state.as_str(),
        "since": s.since,
        "suspendsAt": s.suspends_at(),
        "suspensionReason": s.hold,
        "prepaid": s.prepaid,
        "available": s.available().round_to_minor_unit(currency),
        "unbilled": s.unbilled.round_to_minor_unit(currency),
        "lowBalanceThreshold": exact(s.threshold),
        "gracePeriodHours": s.grace_hours,
    })
}

/// The largest price (per unit and hour, or a monthly cap) a version may carry.
const MAX_PRICE: i64 = 1_000_000;

/// The largest credit, adjustment or threshold (the ledger keeps 16 integer digits).
const MAX_CREDIT: i64 = 1_000_000_000;

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
        } else if amount.is_some_and(|a| a.0 > Decimal::from(MAX_PRICE)) {
            errors.push(FieldError::new(format!("{prefix}{field}"), format!("at most {MAX_PRICE}")));
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
    /// Per GiB of backup archives and hour (default 0; not under the cap).
    backup_gib_hour: Option<Money>,
    monthly_cap: Option<Money>,
    /// Flat prices for exact sizes.
    #[serde(default)]
    tiers: Vec<TierBody>,
}

/// A size tier: an instance of exactly this size costs `hourPrice` an hour, at most `monthlyCap`
/// a month.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TierBody {
    name: String,
    cores: u32,
    /// MiB.
    memory: u64,
    /// GiB.
    disk: u64,
    hour_price: Money,
    monthly_cap: Option<Money>,
}

/// Tiers a price version may list.
const MAX_TIERS: usize = 50;

/// The problems with a version's tiers, each named by its place (`tiers[2].cores`).
fn tier_errors(tiers: &[TierBody]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if tiers.len() > MAX_TIERS {
        errors.push(FieldError::new("tiers", format!("at most {MAX_TIERS}")));
    }
    let mut names = std::collections::HashSet::new();
    let mut sizes = std::collections::HashSet::new();
    for (i, t) in tiers.iter().enumerate() {
        let field = |name: &str| format!("tiers[{i}].{name}");
        let name = t.name.trim();
        if name.is_empty() || name.chars().count() > 40 || crate::validation::display_text(name).is_err() {
            errors.push(FieldError::new(field("name"), "one line of 1-40 characters"));
        } else if !names.insert(name.to_owned()) {
            errors.push(FieldError::new(field("name"), "another tier has this name"));
        }
        if !CORES.contains(&t.cores) {
            errors.push(FieldError::new(field("cores"), format!("{}-{}", CORES.start(), CORES.end())));
        }
        if !MEMORY_MIB.contains(&t.memory) {
            errors.push(FieldError::new(field("memory"), format!("{}-{} MiB", MEMORY_MIB.start(), MEMORY_MIB.end())));
        }
        if !DISK_GIB.contains(&t.disk) {
            errors.push(FieldError::new(field("disk"), format!("{}-{} GiB", DISK_GIB.start(), DISK_GIB.end())));
        }
        if !sizes.insert((t.cores, t.memory, t.disk)) {
            errors.push(FieldError::new(field("cores"), "another tier has this size"));
        }
        for (name, amount) in [("hourPrice", Some(t.hour_price)), ("monthlyCap", t.monthly_cap)] {
            if amount.is_some_and(|a| a.0.is_sign_negative() || a.0 > Decimal::from(MAX_PRICE)) {
                errors.push(FieldError::new(field(name), format!("from 0 to {MAX_PRICE}")));
            }
        }
    }
    errors
}

fn tier_view(t: &usage::Tier) -> serde_json::Value {
    json!({
        "name": t.name, "cores": t.cores, "memory": t.memory_mib, "disk": t.disk_gib,
        "hourPrice": exact(Money(t.hour_price)), "monthlyCap": t.monthly_cap.map(|c| exact(Money(c))),
    })
}

async fn add_price(
    State(state): State<AppState>,
    BillingOperator(_operator): BillingOperator,
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
            ("backupGibHour", body.backup_gib_hour),
            ("monthlyCap", body.monthly_cap),
        ],
    );
    errors.extend(tier_errors(&body.tiers));
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
        backup_gib_hour: body.backup_gib_hour.unwrap_or(Money::ZERO),
        monthly_cap: body.monthly_cap,
        tiers: body
            .tiers
            .iter()
            .map(|t| usage::Tier {
                name: t.name.trim().to_owned(),
                cores: i32::try_from(t.cores).unwrap_or(i32::MAX),
                memory_mib: i64::try_from(t.memory).unwrap_or(i64::MAX),
                disk_gib: i64::try_from(t.disk).unwrap_or(i64::MAX),
                hour_price: t.hour_price.0,
                monthly_cap: t.monthly_cap.map(|m| m.0),
            })
            .collect(),
    };
    let price = usage::add_price(state.db(), plan, &new).await.map_err(|e| match e {
        nimbus_db::DbError::Conflict { .. } => ApiError::field("validFrom", "the plan has a price version from then"),
        e => e.into(),
    })?;
    tracing::info!(plan.id = %plan, price.id = %price.id, valid_from = %price.valid_from, "price version added");
    let tiers = usage::tiers(state.db(), price.id).await?;
    let view = serde_json::json!({
        "id": price.id, "planId": plan, "validFrom": price.valid_from, "currency": price.currency,
        "vcpuHour": exact(price.vcpu_hour), "memoryGibHour": exact(price.memory_gib_hour),
        "diskGibHour": exact(price.disk_gib_hour), "backupGibHour": exact(price.backup_gib_hour),
        "monthlyCap": price.monthly_cap.map(exact),
        "tiers": tiers.iter().map(tier_view).collect::<Vec<_>>(),
    });
    Ok((StatusCode::CREATED, super::data(&rid, view)).into_response())
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
    BillingOperator(operator): BillingOperator,
    rid: RequestId,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let tenant: TenantId = parse_id(&id, "tenant")?;
    nimbus_db::tenants::get(state.db(), tenant).await.map_err(|e| not_found(e, "tenant"))?;
    let body = decode::<CreditBody>(&bytes)?.value;
    let reason = body.reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    let kind = match body.kind.as_deref().unwrap_or("top_up") {
        "top_up" => "top_up",
        "adjustment" => "adjustment",
        _ => return Err(ApiError::field("kind", "top_up or adjustment")),
    };
    let mut errors = Vec::new();
    if kind == "top_up" && body.amount.0 <= Decimal::ZERO {
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
    if body.amount.0.abs() > Decimal::from(MAX_CREDIT) {
        errors.push(FieldError::new("amount", format!("at most {MAX_CREDIT}")));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let currency = usage::price_at(state.db(), tenant, Utc::now()).await?.map(|p| p.currency).unwrap_or_default();
    let credit = nimbus_db::balance::Credit { kind, amount: body.amount, currency, reason, by: operator.user.id };
    let mut tx = state.db().begin().await.map_err(DbError::from)?;
    let entry = nimbus_db::balance::add(&mut *tx, tenant, &credit).await?;
    let step = ladder::evaluate(&mut tx, tenant, Utc::now(), &PowerAction::ladder_jobs()).await?;
    tx.commit().await.map_err(DbError::from)?;
    push(&state, &step.enqueued).await;
    tracing::info!(tenant.id = %tenant, kind, amount = %body.amount, "balance entry added");
    log_step(tenant, &step);
    Ok((StatusCode::CREATED, super::data(&rid, entry_view(entry))).into_response())
}

fn log_step(tenant: TenantId, step: &Outcome) {
    if let Some((from, to)) = step.changed {
        tracing::info!(tenant.id = %tenant, from = from.as_str(), to = to.as_str(), jobs = step.enqueued.len(), "ladder step");
    }
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
    /// `balance.low` below this available balance (0: never); kept when absent.
    low_balance_threshold: Option<Money>,
    /// Hours from an exhausted balance to suspension (0-8760); kept when absent.
    grace_period_hours: Option<i32>,
}

async fn set_terms(
    State(state): State<AppState>,
    BillingOperator(_operator): BillingOperator,
    rid: RequestId,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let tenant: TenantId = parse_id(&id, "tenant")?;
    let body = decode::<TermsBody>(&bytes)?.value;
    let mut errors = Vec::new();
    if body.tax_rate.0.is_sign_negative() || body.tax_rate.0 >= Decimal::ONE || body.tax_rate.0.scale() > 4 {
        errors.push(FieldError::new("taxRate", "a fraction from 0 up to 1 with at most four decimals (0.19 for 19 %)"));
    }
    let tax_id = body.tax_id.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    if let Some(t) = &tax_id
        && (t.chars().count() > 50 || crate::validation::display_text(t).is_err())
    {
        errors.push(FieldError::new("taxId", "one line of at most 50 characters"));
    }
    if body
        .low_balance_threshold
        .is_some_and(|t| t.0.is_sign_negative() || t.0.scale() > 4 || t.0 > Decimal::from(MAX_CREDIT))
    {
        errors.push(FieldError::new("lowBalanceThreshold", "an amount of at least 0 with at most four decimals"));
    }
    if body.grace_period_hours.is_some_and(|h| !(0..=8760).contains(&h)) {
        errors.push(FieldError::new("gracePeriodHours", "0-8760 hours"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let change = nimbus_db::balance::TermsChange {
        prepaid: body.prepaid,
        tax_rate: body.tax_rate.0,
        tax_reverse_charge: body.tax_reverse_charge,
        tax_id,
        low_balance_threshold: body.low_balance_threshold.map(|m| m.0),
        grace_period_hours: body.grace_period_hours,
    };
    let mut tx = state.db().begin().await.map_err(DbError::from)?;
    let set = nimbus_db::balance::set_terms(&mut *tx, tenant, &change).await.map_err(|e| not_found(e, "tenant"))?;
    let step = ladder::evaluate(&mut tx, tenant, Utc::now(), &PowerAction::ladder_jobs()).await?;
    tx.commit().await.map_err(DbError::from)?;
    push(&state, &step.enqueued).await;
    tracing::info!(tenant.id = %tenant, prepaid = set.prepaid, "billing terms set");
    log_step(tenant, &step);
    let view = TermsBody {
        prepaid: set.prepaid,
        tax_rate: Money(set.tax_rate.normalize()),
        tax_reverse_charge: set.tax_reverse_charge,
        tax_id: set.tax_id,
        low_balance_threshold: Some(Money(set.low_balance_threshold.normalize())),
        grace_period_hours: Some(set.grace_period_hours),
    };
    Ok(super::data(&rid, view).into_response())
}

/// The body of `POST /v1/admin/tenants/{id}/suspend`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuspendBody {
    reason: String,
}

/// An operator's hold: the tenant is suspended whatever its balance until unsuspended.
async fn suspend(
    State(state): State<AppState>,
    BillingOperator(_operator): BillingOperator,
    rid: RequestId,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let tenant: TenantId = parse_id(&id, "tenant")?;
    nimbus_db::tenants::get(state.db(), tenant).await.map_err(|e| not_found(e, "tenant"))?;
    let body = decode::<SuspendBody>(&bytes)?.value;
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 || crate::validation::display_text(reason).is_err() {
        return Err(ApiError::field("reason", "one line of 1-500 characters"));
    }
    change_hold(&state, &rid, tenant, Some(reason)).await
}

/// Lifts an operator's hold; the balance decides again (a prepaid tenant still exhausted stays
/// suspended).
async fn unsuspend(
    State(state): State<AppState>,
    BillingOperator(_operator): BillingOperator,
    rid: RequestId,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant: TenantId = parse_id(&id, "tenant")?;
    nimbus_db::tenants::get(state.db(), tenant).await.map_err(|e| not_found(e, "tenant"))?;
    change_hold(&state, &rid, tenant, None).await
}

/// Puts an operator's hold on `tenant` (with its reason) or lifts it, and answers its standing.
async fn change_hold(
    state: &AppState,
    rid: &RequestId,
    tenant: TenantId,
    reason: Option<&str>,
) -> Result<Response, ApiError> {
    let jobs = PowerAction::ladder_jobs();
    let mut tx = state.db().begin().await.map_err(DbError::from)?;
    let step = match reason {
        Some(reason) => ladder::hold(&mut tx, tenant, reason, Utc::now(), &jobs).await?,
        None => ladder::release(&mut tx, tenant, Utc::now(), &jobs).await?,
    };
    let standing = ladder::standing(&mut tx, tenant).await?;
    tx.commit().await.map_err(DbError::from)?;
    push(state, &step.enqueued).await;
    log_step(tenant, &step);
    let currency = usage::price_at(state.db(), tenant, Utc::now()).await?.map(|p| p.currency).unwrap_or_default();
    let mut view = standing_view(&standing, &currency);
    view["tenantId"] = json!(tenant);
    view["powerJobs"] = json!(step.enqueued.len());
    Ok(super::data(rid, view).into_response())
}

/// The body of `POST /v1/admin/invoices/{id}/credit-notes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditNoteBody {
    /// The net amount credited (before tax); all the invoice has left when absent.
    amount: Option<Money>,
    reason: String,
}

async fn credit_note(
    State(state): State<AppState>,
    BillingOperator(_operator): BillingOperator,
    rid: RequestId,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let invoice: Uuid = parse_id(&id, "invoice")?;
    let tenant = invoices::tenant_of(state.db(), invoice).await.map_err(|e| not_found(e, "invoice"))?;
    let body = decode::<CreditNoteBody>(&bytes)?.value;
    let reason = body.reason.trim().to_owned();
    let mut errors = Vec::new();
    if reason.is_empty() || reason.chars().count() > 200 || crate::validation::display_text(&reason).is_err() {
        errors.push(FieldError::new("reason", "one line of 1-200 characters"));
    }
    if body.amount.is_some_and(|a| a.0 <= Decimal::ZERO) {
        errors.push(FieldError::new("amount", "a positive amount"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let note = invoices::NewCreditNote { amount: body.amount, reason, at: Utc::now() };
    let mut tx = state.db().begin().await.map_err(DbError::from)?;
    let issued = invoices::issue_credit_note(&mut tx, tenant, invoice, &note).await.map_err(|e| match e {
        DbError::Check { constraint } if constraint == invoices::CREDIT_NOTE_AMOUNT => {
            ApiError::field("amount", "more than the invoice has left to credit (or it is fully credited)")
        }
        DbError::NotFound => ApiError::NotFound("invoice"),
        e => e.into(),
    })?;
    let step = ladder::evaluate(&mut tx, tenant, Utc::now(), &PowerAction::ladder_jobs()).await?;
    let (issued, lines) = invoices::get(&mut tx, tenant, issued.id).await?;
    tx.commit().await.map_err(DbError::from)?;
    push(&state, &step.enqueued).await;
    tracing::info!(tenant.id = %tenant, invoice = %invoice, credit_note = %issued.number, "credit note issued");
    log_step(tenant, &step);
    Ok((StatusCode::CREATED, super::data(&rid, invoice_view(issued, Some(lines)))).into_response())
}

/// `GET /v1/admin/billing/tenants` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantsQuery {
    /// Only tenants that need an operator: not `ok`, or owing.
    #[serde(default)]
    attention: bool,
    /// At most this many (1-500, default 100).
    limit: Option<i64>,
}

/// One tenant in the operators' billing list.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TenantBalanceView {
    id: Uuid,
    name: String,
    prepaid: bool,
    state: String,
    since: DateTime<Utc>,
    suspension_reason: Option<String>,
    low_balance_threshold: Money,
    grace_period_hours: i32,
    /// The ledger's sum (negative: owing).
    balance: Money,
    /// Owing since the oldest invoice the ledger has not covered.
    unpaid_since: Option<DateTime<Utc>>,
}

async fn tenants(
    State(state): State<AppState>,
    BillingOperator(_operator): BillingOperator,
    rid: RequestId,
    QueryParams(q): QueryParams<TenantsQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "1-500"));
    }
    let rows = revenue::tenants(state.db(), q.attention, limit).await?;
    let views: Vec<TenantBalanceView> = rows
        .into_iter()
        .map(|t| TenantBalanceView {
            id: t.id,
            name: t.name,
            prepaid: t.prepaid,
            state: t.billing_state,
            since: t.billing_state_since,
            suspension_reason: t.suspension_reason,
            low_balance_threshold: Money(t.low_balance_threshold.normalize()),
            grace_period_hours: t.grace_period_hours,
            balance: Money(t.ledger.normalize()),
            unpaid_since: t.unpaid_since,
        })
        .collect();
    Ok(super::data(&rid, views).into_response())
}

/// `GET /v1/admin/billing/revenue` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevenueQuery {
    /// Months back from the current one (1-120, default 12).
    months: Option<u32>,
}

async fn revenue_view(
    State(state): State<AppState>,
    BillingOperator(_operator): BillingOperator,
    rid: RequestId,
    QueryParams(q): QueryParams<RevenueQuery>,
) -> Result<Response, ApiError> {
    let months = q.months.unwrap_or(12);
    if !(1..=120).contains(&months) {
        return Err(ApiError::field("months", "1-120"));
    }
    let now = Utc::now();
    let (current, next) = invoices::month_of(now);
    let since = current.checked_sub_months(Months::new(months)).unwrap_or(current);
    let by_month = revenue::by_month(state.db(), since).await?;
    let by_plan = revenue::by_plan(state.db(), since).await?;
    let accrued = revenue::accrued(state.db(), current, next).await?;
    let shown = |d: Decimal, currency: &str| Money(d).round_to_minor_unit(currency);
    let view = json!({
        "since": since,
        "months": by_month.iter().map(|m| json!({
            "periodStart": m.period_start,
            "month": format!("{}-{:02}", m.period_start.year(), m.period_start.month()),
            "currency": m.currency,
            "invoices": m.invoices,
            "invoiced": shown(m.invoiced, &m.currency),
            "credited": shown(m.credited, &m.currency),
            "net": shown(m.invoiced - m.credited, &m.currency),
            "tax": shown(m.tax, &m.currency),
        })).collect::<Vec<_>>(),
        "plans": by_plan.iter().map(|p| json!({
            "periodStart": p.period_start,
            "planId": p.plan_id,
            "plan": p.plan_name,
            "currency": p.currency,
            "instances": p.instances,
            "invoiced": shown(p.invoiced, &p.currency),
        })).collect::<Vec<_>>(),
        "currentMonth": {
            "periodStart": current,
            "accrued": accrued.iter().map(|(c, a)| json!({ "currency": c, "amount": shown(*a, c) })).collect::<Vec<_>>(),
        },
    });
    Ok(super::data(&rid, view).into_response())
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths())]
pub struct ApiDoc;
