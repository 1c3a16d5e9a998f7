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
use nimbus_domain::{Money, PlanId, PlanLimits, PlanPrices};
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

/// Limits as operators send them.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LimitsBody {
    max_instances: i32,
    max_vcpus: i32,
    max_memory_mib: i64,
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

/// The first prices of a new plan.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PricesBody {
    currency: String,
    vcpu_hour: Money,
    memory_gib_hour: Money,
    disk_gib_hour: Money,
}

/// The body of `POST /v1/admin/plans`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateBody {
    name: String,
    limits: LimitsBody,
    prices: PricesBody,
    max_backups: Option<i32>,
    min_backup_interval_minutes: Option<i32>,
}

/// The body of `PATCH /v1/admin/plans/{id}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateBody {
    name: Option<String>,
    limits: Option<LimitsBody>,
    max_backups: Option<i32>,
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
#[openapi(paths())]
pub struct ApiDoc;
