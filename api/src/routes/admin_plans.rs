//! Operators manage plans: `POST /v1/admin/plans` creates one (limits, backup limits, and its
//! first prices), `PATCH /v1/admin/plans/{id}` changes its name and limits, and
//! `POST /v1/admin/plans/{id}/archive` retires it: a plan is never deleted (tenants and rated
//! usage name it); an archived one keeps its tenants but takes no new ones. Prices change by
//! versions (`POST /v1/admin/plans/{id}/prices`, `billing.rs`); the list is
//! `GET /v1/admin/plans` (`admin_users.rs`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use nimbus_db::plans::{self, NewPlan, PlanUpdate};
use nimbus_domain::{ApiError as ApiErrorBody, ApiResponse, Money, PlanId, PlanLimits, PlanPrices};
use serde::Deserialize;

use crate::auth::AdminUser;
use crate::error::{ApiError, FieldError};
use crate::extract::{decode, parse_id};
use crate::middleware::RequestId;
use crate::routes::admin_users::PlanView;
use crate::routes::vms::not_found;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/plans", post(create))
        .route("/v1/admin/plans/{id}", patch(update))
        .route("/v1/admin/plans/{id}/archive", post(archive))
}

/// A plan's limits as operators send them: what a tenant may hold at once (none negative).
#[derive(Clone, Copy, Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = PlanLimitsInput)]
struct LimitsBody {
    /// Instances that are not failed or deleted.
    #[schema(example = 10, minimum = 0)]
    max_instances: i32,
    /// Sum of cores.
    #[schema(example = 16, minimum = 0)]
    max_vcpus: i32,
    /// Sum of memory, MiB.
    #[schema(example = 32768, minimum = 0)]
    max_memory_mib: i64,
    /// Sum of disk, GiB.
    #[schema(example = 500, minimum = 0)]
    max_disk_gib: i64,
}

impl From<LimitsBody> for PlanLimits {
    fn from(l: LimitsBody) -> Self {
        PlanLimits {
            max_instances: l.max_instances,
            max_vcpus: l.max_vcpus,
            max_memory_mib: l.max_memory_mib,
            max_disk_gib: l.max_disk_gib,
        }
    }
}

/// The first prices of a new plan: decimal strings from 0 to 1000000 per unit and hour.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = PlanPricesInput)]
struct PricesBody {
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
}

/// The body of `POST /v1/admin/plans`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = NewPlan)]
struct CreateBody {
    /// Unique (one line of 1-100 characters).
    #[schema(example = "standard", min_length = 1, max_length = 100)]
    name: String,
    /// What a tenant on it may hold at once.
    limits: LimitsBody,
    /// Its first prices (later ones are price versions, `POST /v1/admin/plans/{id}/prices`).
    prices: PricesBody,
    /// Backups kept per instance (default 10).
    #[schema(example = 10, minimum = 0)]
    max_backups: Option<i32>,
    /// Minutes between scheduled backups, at least (default 60).
    #[schema(example = 60, minimum = 0)]
    min_backup_interval_minutes: Option<i32>,
}

/// The body of `PATCH /v1/admin/plans/{id}`: what changes (the rest is kept).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = PlanChange)]
struct UpdateBody {
    /// A new unique name (one line of 1-100 characters).
    #[schema(example = "standard", min_length = 1, max_length = 100)]
    name: Option<String>,
    /// New limits (all four).
    limits: Option<LimitsBody>,
    /// Backups kept per instance.
    #[schema(example = 10, minimum = 0)]
    max_backups: Option<i32>,
    /// Minutes between scheduled backups, at least.
    #[schema(example = 60, minimum = 0)]
    min_backup_interval_minutes: Option<i32>,
}

/// Every problem with a plan's values.
fn check(
    name: Option<&str>,
    limits: Option<LimitsBody>,
    prices: Option<&PricesBody>,
    backups: (Option<i32>, Option<i32>),
) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if let Some(n) = name
        && (n.trim().is_empty() || n.chars().count() > 100 || crate::validation::display_text(n).is_err())
    {
        errors.push(FieldError::new("name", "one line of 1-100 characters"));
    }
    if let Some(l) = limits
        && (l.max_instances < 0 || l.max_vcpus < 0 || l.max_memory_mib < 0 || l.max_disk_gib < 0)
    {
        errors.push(FieldError::new("limits", "no limit may be negative"));
    }
    if let Some(p) = prices {
        errors.extend(crate::routes::admin_billing::price_errors(
            "prices.",
            &p.currency,
            &[
                ("vcpuHour", Some(p.vcpu_hour)),
                ("memoryGibHour", Some(p.memory_gib_hour)),
                ("diskGibHour", Some(p.disk_gib_hour)),
            ],
        ));
    }
    if backups.0.is_some_and(|n| n < 0) {
        errors.push(FieldError::new("maxBackups", "must not be negative"));
    }
    if backups.1.is_some_and(|n| n < 0) {
        errors.push(FieldError::new("minBackupIntervalMinutes", "must not be negative"));
    }
    if errors.is_empty() { Ok(()) } else { Err(ApiError::Validation(errors)) }
}

/// A taken name answers on the field.
fn name_taken(e: nimbus_db::DbError) -> ApiError {
    match e {
        nimbus_db::DbError::Conflict { constraint } if constraint == "plans_name_key" => {
            ApiError::field("name", "another plan has this name")
        }
        e => not_found(e, "plan"),
    }
}

/// Creates a plan with its limits, backup limits and first prices.
#[utoipa::path(
    post, path = "/v1/admin/plans", operation_id = "createPlan", tag = "Administration",
    request_body = CreateBody,
    responses(
        (status = 201, description = "The plan.", body = ApiResponse<PlanView>),
        (status = 400, description = "`VALIDATION_FAILED`: a value is out of range, or another plan has this name (`details.fields` names `name`).", body = ApiErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    rid: RequestId,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let body = decode::<CreateBody>(&bytes)?.value;
    check(
        Some(&body.name),
        Some(body.limits),
        Some(&body.prices),
        (body.max_backups, body.min_backup_interval_minutes),
    )?;
    let new = NewPlan {
        name: body.name.trim().to_owned(),
        limits: body.limits.into(),
        prices: PlanPrices {
            currency: body.prices.currency,
            vcpu_hour: body.prices.vcpu_hour,
            memory_gib_hour: body.prices.memory_gib_hour,
            disk_gib_hour: body.prices.disk_gib_hour,
        },
    };
    let mut tx = state.db().begin().await.map_err(nimbus_db::DbError::from)?;
    let plan = plans::create(&mut *tx, &new).await.map_err(name_taken)?;
    let backups = PlanUpdate {
        max_backups: body.max_backups,
        min_backup_interval_minutes: body.min_backup_interval_minutes,
        ..PlanUpdate::default()
    };
    let plan = plans::update(&mut *tx, plan.id, &backups).await?;
    tx.commit().await.map_err(nimbus_db::DbError::from)?;
    tracing::info!(admin.id = %admin.user.id, plan.id = %plan.id, "plan created");
    Ok((StatusCode::CREATED, super::data(&rid, PlanView::from(plan))).into_response())
}

/// Changes a plan's name, limits or backup limits (its prices change by price versions).
#[utoipa::path(
    patch, path = "/v1/admin/plans/{id}", operation_id = "updatePlan", tag = "Administration",
    params(("id" = PlanId, Path, description = "The plan's id.")),
    request_body = UpdateBody,
    responses(
        (status = 200, description = "The plan as changed.", body = ApiResponse<PlanView>),
        (status = 400, description = "`VALIDATION_FAILED`: a value is out of range, or another plan has this name (`details.fields` names `name`).", body = ApiErrorBody),
    )
)]
async fn update(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    rid: RequestId,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let id: PlanId = parse_id(&id, "plan")?;
    let body = decode::<UpdateBody>(&bytes)?.value;
    check(body.name.as_deref(), body.limits, None, (body.max_backups, body.min_backup_interval_minutes))?;
    let change = PlanUpdate {
        name: body.name.map(|n| n.trim().to_owned()),
        limits: body.limits.map(Into::into),
        max_backups: body.max_backups,
        min_backup_interval_minutes: body.min_backup_interval_minutes,
    };
    let plan = plans::update(state.db(), id, &change).await.map_err(name_taken)?;
    tracing::info!(admin.id = %admin.user.id, plan.id = %plan.id, "plan changed");
    Ok(super::data(&rid, PlanView::from(plan)).into_response())
}

/// Archives a plan: it keeps its tenants but takes no new ones.
///
/// A plan is never deleted; archiving an archived plan changes nothing.
#[utoipa::path(
    post, path = "/v1/admin/plans/{id}/archive", operation_id = "archivePlan", tag = "Administration",
    params(("id" = PlanId, Path, description = "The plan's id.")),
    responses((status = 200, description = "The plan, archived.", body = ApiResponse<PlanView>))
)]
async fn archive(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: PlanId = parse_id(&id, "plan")?;
    let plan = plans::archive(state.db(), id).await.map_err(|e| not_found(e, "plan"))?;
    tracing::info!(admin.id = %admin.user.id, plan.id = %plan.id, "plan archived");
    Ok(super::data(&rid, PlanView::from(plan)).into_response())
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create, update, archive))]
pub struct ApiDoc;
