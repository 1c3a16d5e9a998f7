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
use nimbus_domain::{ApiError as ApiErrorBody, ApiResponse, Money, PlanId, TenantId};
use nimbus_jobs::PowerAction;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::BillingOperator;
use crate::error::{ApiError, FieldError};
use crate::extract::{QueryParams, decode, parse_id};
use crate::middleware::RequestId;
use crate::routes::billing::{EntryView, InvoiceView, entry_view, exact, invoice_view};
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

/// Where a tenant stands on the prepaid ladder, as operators and the tenant see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = BillingStanding)]
pub(crate) struct StandingView {
    /// Its step on the ladder.
    #[schema(value_type = BillingState)]
    state: &'static str,
    /// Since when.
    since: DateTime<Utc>,
    /// When an exhausted tenant is suspended (the grace period's end); `null` in other states.
    suspends_at: Option<DateTime<Utc>>,
    /// An operator's hold's reason; `null` without a hold.
    #[schema(example = "unpaid invoice NMB-2026-000042")]
    suspension_reason: Option<String>,
    /// Whether it is prepaid (only prepaid tenants climb the ladder).
    prepaid: bool,
    /// The ledger's sum less what is used and not invoiced yet, at the currency's minor unit.
    #[schema(value_type = String, example = "87.12")]
    available: Money,
    /// Used and not invoiced yet (with tax), at the currency's minor unit.
    #[schema(value_type = String, example = "33.38")]
    unbilled: Money,
    /// `balance.low` below this available balance (0: never).
    #[schema(value_type = String, example = "10")]
    low_balance_threshold: Money,
    /// Hours from an exhausted balance to suspension.
    #[schema(example = 72)]
    grace_period_hours: i32,
}

/// A step on the prepaid ladder.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Describes `ladder::State::as_str`, which the database also constrains.
pub(crate) enum BillingState {
    /// The available balance is above the threshold (or the tenant is not prepaid).
    Ok,
    /// Below the low-balance threshold.
    Low,
    /// Used up: suspended at the grace period's end.
    Exhausted,
    /// Suspended (exhausted past its grace period, or an operator's hold): read-only.
    Suspended,
}

/// The tenant's standing as operators and the tenant see it.
pub(crate) fn standing_view(s: &ladder::Standing, currency: &str) -> StandingView {
    StandingView {
        state: s.state.as_str(),
        since: s.since,
        suspends_at: s.suspends_at(),
        suspension_reason: s.hold.clone(),
        prepaid: s.prepaid,
        available: s.available().round_to_minor_unit(currency),
        unbilled: s.unbilled.round_to_minor_unit(currency),
        low_balance_threshold: exact(s.threshold),
        grace_period_hours: s.grace_hours,
    }
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

/// The body of `POST /v1/admin/plans/{id}/prices`: a plan's price version. Prices are decimal
/// strings from 0 to 1000000 per unit and hour.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = NewPriceVersion)]
struct PriceBody {
    /// Applies from (default: now); not in an hour already metered, and not at the time of
    /// another version of the plan.
    valid_from: Option<DateTime<Utc>>,
    /// ISO 4217 code.
    #[schema(example = "EUR", pattern = "^[A-Z]{3}$")]
    currency: String,
    /// Per vCPU and hour.
    #[schema(value_type = String, example = "0.005", pattern = "^([0-9]{1,6}(\\.[0-9]{1,10})?|1000000(\\.0{1,10})?)$")]
    vcpu_hour: Money,
    /// Per GiB of memory and hour.
    #[schema(value_type = String, example = "0.002", pattern = "^([0-9]{1,6}(\\.[0-9]{1,10})?|1000000(\\.0{1,10})?)$")]
    memory_gib_hour: Money,
    /// Per GiB of disk and hour.
    #[schema(value_type = String, example = "0.0001", pattern = "^([0-9]{1,6}(\\.[0-9]{1,10})?|1000000(\\.0{1,10})?)$")]
    disk_gib_hour: Money,
    /// Per GiB of backup archives and hour (default 0; not under the cap).
    #[schema(value_type = Option<String>, example = "0.00005", pattern = "^([0-9]{1,6}(\\.[0-9]{1,10})?|1000000(\\.0{1,10})?)$")]
    backup_gib_hour: Option<Money>,
    /// The most one instance's compute costs in a month (none when absent).
    #[schema(value_type = Option<String>, example = "10", pattern = "^([0-9]{1,6}(\\.[0-9]{1,10})?|1000000(\\.0{1,10})?)$")]
    monthly_cap: Option<Money>,
    /// Flat prices for exact sizes.
    #[serde(default)]
    #[schema(max_items = 50)]
    tiers: Vec<TierBody>,
}

/// A size tier: an instance of exactly this size costs `hourPrice` an hour, at most `monthlyCap`
/// a month. Names and sizes are unique within a version.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = NewPriceTier)]
struct TierBody {
    /// Shown on invoices (one line of 1-40 characters).
    #[schema(example = "S", min_length = 1, max_length = 40)]
    name: String,
    /// vCPUs.
    #[schema(example = 2, minimum = 1, maximum = 64)]
    cores: u32,
    /// MiB.
    #[schema(example = 2048, minimum = 256, maximum = 262144)]
    memory: u64,
    /// GiB.
    #[schema(example = 20, minimum = 1, maximum = 4096)]
    disk: u64,
    /// Per hour.
    #[schema(value_type = String, example = "0.01", pattern = "^([0-9]{1,6}(\\.[0-9]{1,10})?|1000000(\\.0{1,10})?)$")]
    hour_price: Money,
    /// The most it costs in a month (none when absent).
    #[schema(value_type = Option<String>, example = "5", pattern = "^([0-9]{1,6}(\\.[0-9]{1,10})?|1000000(\\.0{1,10})?)$")]
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

/// A size tier of a price version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = PriceTier)]
struct TierView {
    /// Shown on invoices.
    #[schema(example = "S")]
    name: String,
    /// vCPUs.
    #[schema(example = 2)]
    cores: i32,
    /// MiB.
    #[schema(example = 2048)]
    memory: i64,
    /// GiB.
    #[schema(example = 20)]
    disk: i64,
    /// Per hour.
    #[schema(value_type = String, example = "0.01")]
    hour_price: Money,
    /// The most it costs in a month; `null` without a cap.
    #[schema(value_type = Option<String>, example = "5")]
    monthly_cap: Option<Money>,
}

fn tier_view(t: &usage::Tier) -> TierView {
    TierView {
        name: t.name.clone(),
        cores: t.cores,
        memory: t.memory_mib,
        disk: t.disk_gib,
        hour_price: exact(Money(t.hour_price)),
        monthly_cap: t.monthly_cap.map(|c| exact(Money(c))),
    }
}

/// A plan's price version (amounts without trailing zeros).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = PriceVersion)]
struct PriceVersionView {
    /// Its id.
    id: Uuid,
    /// The plan.
    plan_id: PlanId,
    /// Applies from.
    valid_from: DateTime<Utc>,
    /// ISO 4217 code.
    #[schema(example = "EUR")]
    currency: String,
    /// Per vCPU and hour.
    #[schema(value_type = String, example = "0.005")]
    vcpu_hour: Money,
    /// Per GiB of memory and hour.
    #[schema(value_type = String, example = "0.002")]
    memory_gib_hour: Money,
    /// Per GiB of disk and hour.
    #[schema(value_type = String, example = "0.0001")]
    disk_gib_hour: Money,
    /// Per GiB of backup archives and hour.
    #[schema(value_type = String, example = "0.00005")]
    backup_gib_hour: Money,
    /// The most one instance's compute costs in a month; `null` without a cap.
    #[schema(value_type = Option<String>, example = "10")]
    monthly_cap: Option<Money>,
    /// Its size tiers, smallest first.
    tiers: Vec<TierView>,
}

/// Adds a price version to a plan, applying from a given time.
///
/// What was rated before keeps its price: the version may not start in an hour already metered.
#[utoipa::path(
    post, path = "/v1/admin/plans/{id}/prices", operation_id = "addPlanPrice", tag = "Billing administration",
    params(("id" = PlanId, Path, description = "The plan's id.")),
    request_body = PriceBody,
    responses(
        (status = 201, description = "The price version.", body = ApiResponse<PriceVersionView>),
        (status = 400, description = "`VALIDATION_FAILED`: a value is out of range, `validFrom` is in an hour already metered, or the plan has a price version from that time; `details.fields` names them.", body = ApiErrorBody),
    )
)]
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
    let view = PriceVersionView {
        id: price.id,
        plan_id: plan,
        valid_from: price.valid_from,
        currency: price.currency,
        vcpu_hour: exact(price.vcpu_hour),
        memory_gib_hour: exact(price.memory_gib_hour),
        disk_gib_hour: exact(price.disk_gib_hour),
        backup_gib_hour: exact(price.backup_gib_hour),
        monthly_cap: price.monthly_cap.map(exact),
        tiers: tiers.iter().map(tier_view).collect(),
    };
    Ok((StatusCode::CREATED, super::data(&rid, view)).into_response())
}

/// The body of `POST /v1/admin/tenants/{id}/credit`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = NewBalanceEntry)]
struct CreditBody {
    /// `top_up` (default; positive) or `adjustment` (either sign, with a reason).
    #[serde(default)]
    #[schema(value_type = Option<CreditKind>)]
    kind: Option<String>,
    /// Not zero, at most 1000000000 either way, at most four decimals, in the currency of the
    /// tenant's current price.
    #[schema(value_type = String, example = "50.00", pattern = "^-?([0-9]{1,9}(\\.[0-9]{1,4})?|1000000000(\\.0{1,4})?)$")]
    amount: Money,
    /// Why (required for an adjustment; at most 500 characters).
    #[schema(example = "goodwill credit for the outage of 3 December", max_length = 500)]
    reason: Option<String>,
}

/// What an operator adds to a tenant's ledger.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Describes `CreditBody::kind`, which `add_credit` checks.
enum CreditKind {
    /// A payment received (positive).
    TopUp,
    /// A correction, either sign, with its reason.
    Adjustment,
}

/// Adds a top-up or an adjustment to a tenant's prepaid balance.
///
/// The tenant moves along the prepaid ladder at once: a top-up lifts a suspension for an
/// exhausted balance and starts the instances it stopped.
#[utoipa::path(
    post, path = "/v1/admin/tenants/{id}/credit", operation_id = "addTenantCredit", tag = "Billing administration",
    params(("id" = TenantId, Path, description = "The tenant's id.")),
    request_body = CreditBody,
    responses((status = 201, description = "The ledger entry.", body = ApiResponse<EntryView>))
)]
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

/// The body of `PUT /v1/admin/tenants/{id}/billing` (and its answer, where every field is set).
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = BillingTerms)]
struct TermsBody {
    /// Whether the tenant pays in advance (and climbs the prepaid ladder).
    prepaid: bool,
    /// `0.19` for 19 % (from 0 up to 1, at most four decimals).
    #[schema(value_type = String, example = "0.19", pattern = "^0(\\.[0-9]{1,4})?$")]
    tax_rate: Money,
    /// Whether the customer owes the tax (reverse charge): invoices then charge none.
    #[serde(default)]
    tax_reverse_charge: bool,
    /// The customer's tax id (one line of at most 50 characters); none when absent or empty.
    #[schema(example = "DE123456789", max_length = 50)]
    tax_id: Option<String>,
    /// `balance.low` below this available balance (0: never; at most four decimals); kept when absent.
    #[schema(value_type = Option<String>, example = "10", pattern = "^([0-9]{1,9}(\\.[0-9]{1,4})?|1000000000(\\.0{1,4})?)$")]
    low_balance_threshold: Option<Money>,
    /// Hours from an exhausted balance to suspension (0-8760); kept when absent.
    #[schema(example = 72, minimum = 0, maximum = 8760)]
    grace_period_hours: Option<i32>,
}

/// Sets a tenant's billing terms: prepaid, tax, the low-balance threshold and grace period.
///
/// The tenant moves along the prepaid ladder at once.
#[utoipa::path(
    put, path = "/v1/admin/tenants/{id}/billing", operation_id = "setTenantBillingTerms", tag = "Billing administration",
    params(("id" = TenantId, Path, description = "The tenant's id.")),
    request_body = TermsBody,
    responses((status = 200, description = "The terms now in force (every field set).", body = ApiResponse<TermsBody>))
)]
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
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SuspendTenant)]
struct SuspendBody {
    /// Why (one line of 1-500 characters); the tenant sees it.
    #[schema(example = "unpaid invoice NMB-2026-000042", min_length = 1, max_length = 500)]
    reason: String,
}

/// A tenant's standing after an operator's hold was put or lifted.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = TenantHold)]
struct HoldView {
    /// The tenant.
    tenant_id: TenantId,
    /// Where it stands now.
    #[serde(flatten)]
    standing: StandingView,
    /// Power jobs the step enqueued (stopping its instances on suspension, starting them when it is lifted).
    #[schema(example = 2)]
    power_jobs: usize,
}

/// Suspends a tenant whatever its balance, until an operator unsuspends it.
#[utoipa::path(
    post, path = "/v1/admin/tenants/{id}/suspend", operation_id = "suspendTenant", tag = "Billing administration",
    params(("id" = TenantId, Path, description = "The tenant's id.")),
    request_body = SuspendBody,
    responses((status = 200, description = "The tenant's standing, suspended.", body = ApiResponse<HoldView>))
)]
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

/// Lifts an operator's hold on a tenant.
///
/// The balance decides again: a prepaid tenant still exhausted stays suspended.
#[utoipa::path(
    post, path = "/v1/admin/tenants/{id}/unsuspend", operation_id = "unsuspendTenant", tag = "Billing administration",
    params(("id" = TenantId, Path, description = "The tenant's id.")),
    responses((status = 200, description = "The tenant's standing without the hold.", body = ApiResponse<HoldView>))
)]
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
    let view =
        HoldView { tenant_id: tenant, standing: standing_view(&standing, &currency), power_jobs: step.enqueued.len() };
    Ok(super::data(rid, view).into_response())
}

/// The body of `POST /v1/admin/invoices/{id}/credit-notes`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewCreditNote)]
struct CreditNoteBody {
    /// The net amount credited (before tax, positive, at most what the invoice has left; rounded
    /// to the currency's minor unit); all the invoice has left when absent.
    #[schema(value_type = Option<String>, example = "10.00", pattern = "^[0-9]{1,12}(\\.[0-9]{1,4})?$")]
    amount: Option<Money>,
    /// Why (one line of 1-200 characters); it is on the credit note.
    #[schema(example = "outage of 3 December", min_length = 1, max_length = 200)]
    reason: String,
}

/// Issues a credit note correcting an invoice and credits it to the tenant's balance.
///
/// The credit note is taxed at the invoice's rate; credit notes of one invoice never add up to
/// more than it.
#[utoipa::path(
    post, path = "/v1/admin/invoices/{id}/credit-notes", operation_id = "issueCreditNote", tag = "Billing administration",
    params(("id" = Uuid, Path, description = "The invoice's id (an invoice, not a credit note).")),
    request_body = CreditNoteBody,
    responses(
        (status = 201, description = "The credit note, with its line.", body = ApiResponse<InvoiceView>),
        (status = 400, description = "`VALIDATION_FAILED`: a bad reason or amount, or an amount more than the invoice has left to credit (or it is fully credited); `details.fields` names them.", body = ApiErrorBody),
    )
)]
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
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct TenantsQuery {
    /// Only tenants that need an operator: not `ok`, or owing.
    #[serde(default)]
    attention: bool,
    /// At most this many (1-500, default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// One tenant in the operators' billing list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = TenantBalance)]
struct TenantBalanceView {
    /// The tenant's id.
    id: Uuid,
    /// Its name.
    #[schema(example = "Acme GmbH")]
    name: String,
    /// Whether it is prepaid.
    prepaid: bool,
    /// Its step on the prepaid ladder.
    #[schema(value_type = BillingState)]
    state: String,
    /// Since when.
    since: DateTime<Utc>,
    /// An operator's hold's reason; `null` without a hold.
    suspension_reason: Option<String>,
    /// `balance.low` below this available balance (0: never).
    #[schema(value_type = String, example = "10")]
    low_balance_threshold: Money,
    /// Hours from an exhausted balance to suspension.
    #[schema(example = 72)]
    grace_period_hours: i32,
    /// The ledger's sum (negative: owing).
    #[schema(value_type = String, example = "-12.5")]
    balance: Money,
    /// Owing since the oldest invoice the ledger has not covered; `null` when not owing.
    unpaid_since: Option<DateTime<Utc>>,
}

/// Tenants by balance, lowest first, optionally only those that need an operator.
///
/// With `attention=true`: tenants that are low, exhausted, suspended or owing.
#[utoipa::path(
    get, path = "/v1/admin/billing/tenants", operation_id = "listTenantBalances", tag = "Billing administration",
    params(TenantsQuery),
    responses((status = 200, description = "The tenants with their balance and standing.", body = ApiResponse<Vec<TenantBalanceView>>))
)]
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
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RevenueQuery {
    /// Months back from the current one (1-120, default 12).
    #[param(minimum = 1, maximum = 120)]
    months: Option<u32>,
}

/// Revenue per month and per plan since a month, and what the current month has accrued.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Revenue)]
struct RevenueView {
    /// The first month counted (its first instant).
    since: DateTime<Utc>,
    /// Invoiced per month and currency.
    months: Vec<RevenueMonth>,
    /// Invoiced per month, plan and currency.
    plans: Vec<RevenuePlan>,
    /// The current month, not invoiced yet.
    current_month: RevenueCurrentMonth,
}

/// One month's invoices in one currency (amounts at the currency's minor unit).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct RevenueMonth {
    /// The month's first instant.
    period_start: DateTime<Utc>,
    /// The month, `YYYY-MM`.
    #[schema(example = "2026-11")]
    month: String,
    /// ISO 4217 code.
    #[schema(example = "EUR")]
    currency: String,
    /// Invoices issued for it.
    #[schema(example = 42)]
    invoices: i64,
    /// Their subtotals.
    #[schema(value_type = String, example = "1234.56")]
    invoiced: Money,
    /// Credit notes' subtotals.
    #[schema(value_type = String, example = "20.00")]
    credited: Money,
    /// Invoiced less credited.
    #[schema(value_type = String, example = "1214.56")]
    net: Money,
    /// Their tax.
    #[schema(value_type = String, example = "230.77")]
    tax: Money,
}

/// One month's invoiced usage of one plan in one currency.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct RevenuePlan {
    /// The month's first instant.
    period_start: DateTime<Utc>,
    /// The plan's id.
    plan_id: Uuid,
    /// The plan's name.
    #[schema(example = "standard")]
    plan: String,
    /// ISO 4217 code.
    #[schema(example = "EUR")]
    currency: String,
    /// Instances billed.
    #[schema(example = 17)]
    instances: i64,
    /// What they were invoiced, at the currency's minor unit.
    #[schema(value_type = String, example = "812.40")]
    invoiced: Money,
}

/// The current month so far.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct RevenueCurrentMonth {
    /// Its first instant.
    period_start: DateTime<Utc>,
    /// Rated usage not invoiced yet, per currency.
    accrued: Vec<RevenueAccrued>,
}

/// An amount accrued in one currency.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct RevenueAccrued {
    /// ISO 4217 code.
    #[schema(example = "EUR")]
    currency: String,
    /// At the currency's minor unit.
    #[schema(value_type = String, example = "402.17")]
    amount: Money,
}

/// Revenue per month and per plan, and what the current month has accrued so far.
#[utoipa::path(
    get, path = "/v1/admin/billing/revenue", operation_id = "getRevenue", tag = "Billing administration",
    params(RevenueQuery),
    responses((status = 200, description = "The revenue.", body = ApiResponse<RevenueView>))
)]
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
    let view = RevenueView {
        since,
        months: by_month
            .into_iter()
            .map(|m| RevenueMonth {
                period_start: m.period_start,
                month: format!("{}-{:02}", m.period_start.year(), m.period_start.month()),
                invoices: m.invoices,
                invoiced: shown(m.invoiced, &m.currency),
                credited: shown(m.credited, &m.currency),
                net: shown(m.invoiced - m.credited, &m.currency),
                tax: shown(m.tax, &m.currency),
                currency: m.currency,
            })
            .collect(),
        plans: by_plan
            .into_iter()
            .map(|p| RevenuePlan {
                period_start: p.period_start,
                plan_id: p.plan_id,
                plan: p.plan_name,
                instances: p.instances,
                invoiced: shown(p.invoiced, &p.currency),
                currency: p.currency,
            })
            .collect(),
        current_month: RevenueCurrentMonth {
            period_start: current,
            accrued: accrued
                .into_iter()
                .map(|(currency, amount)| RevenueAccrued { amount: shown(amount, &currency), currency })
                .collect(),
        },
    };
    Ok(super::data(&rid, view).into_response())
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(add_price, add_credit, set_terms, suspend, unsuspend, credit_note, tenants, revenue_view))]
pub struct ApiDoc;
