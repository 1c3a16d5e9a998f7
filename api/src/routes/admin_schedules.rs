//! `/v1/admin/schedules`: the operators' view of every schedule (the system's and every
//! tenant's): its cron expression and policy, its next fire, its last fire with the status of
//! the job that fire started (or why it started none); and pausing and resuming one. A paused
//! schedule does not fire; when it resumes, its missed-fire policy decides about the times it
//! missed (`catch_up_all` fires each, `latest_only` one, `skip` none).

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use nimbus_db::schedules::{self, Listed, ScheduleFilter};
use nimbus_domain::{ApiResponse, JobId, JobKind, JobStatus, ListResponse, MissedFirePolicy, ScheduleId, TenantId};
use serde::{Deserialize, Serialize};

use crate::auth::AdminUser;
use crate::error::ApiError;
use crate::extract::{QueryParams, parse_id};
use crate::middleware::RequestId;
use crate::routes::PageQuery;
use crate::routes::vms::not_found;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/schedules", get(list))
        .route("/v1/admin/schedules/{id}/pause", post(pause))
        .route("/v1/admin/schedules/{id}/resume", post(resume))
}

/// The last fire of a schedule.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "at": "2026-12-01T03:00:00Z",
    "jobId": "0193a5c4-7e1f-7b3a-9c2d-5e8f1a2b3c4d",
    "jobStatus": "succeeded",
    "skipped": null
}))]
pub struct LastFire {
    /// Its fire time.
    pub at: DateTime<Utc>,
    /// The job it started.
    #[schema(required = true)]
    pub job_id: Option<JobId>,
    /// That job's status now.
    #[schema(required = true)]
    pub job_status: Option<JobStatus>,
    /// Why it started no job.
    #[schema(required = true, example = "the instance was busy with another operation")]
    pub skipped: Option<String>,
}

/// A schedule as operators see it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleView {
    /// Id.
    pub id: ScheduleId,
    /// Its tenant; `null` for the system's.
    #[schema(required = true)]
    pub tenant_id: Option<TenantId>,
    /// What it is for.
    #[schema(example = "backups of web-1")]
    pub name: String,
    /// Its cron expression (UTC).
    #[schema(example = "0 3 * * *")]
    pub cron: String,
    /// The kind of job each fire starts.
    pub job_kind: JobKind,
    /// Its missed-fire policy.
    pub missed_fire_policy: MissedFirePolicy,
    /// Whether it is paused.
    pub paused: bool,
    /// Its next fire time (when it is paused: the first it will consider on resuming).
    pub next_fire_at: DateTime<Utc>,
    /// Its last fire, if any.
    #[schema(required = true)]
    pub last_fire: Option<LastFire>,
    /// Created at.
    pub created_at: DateTime<Utc>,
}

fn view(l: Listed) -> ScheduleView {
    let s = l.schedule;
    let last_fire = s.last_fire_at.map(|at| LastFire {
        at,
        job_id: s.last_job_id,
        job_status: l.last_job_status,
        skipped: l.last_skipped.clone(),
    });
    ScheduleView {
        id: s.id,
        tenant_id: s.tenant_id,
        name: s.name,
        cron: s.cron,
        job_kind: s.job_kind,
        missed_fire_policy: s.policy,
        paused: s.paused,
        next_fire_at: s.next_fire_at,
        last_fire,
        created_at: s.created_at,
    }
}

/// `?tenant=&paused=&page=&perPage=`.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this tenant's schedules.
    tenant: Option<TenantId>,
    /// Only the paused (`true`) or the active (`false`) schedules.
    paused: Option<bool>,
    /// 1-based page (default 1).
    #[param(minimum = 1)]
    page: Option<u32>,
    /// Items per page (default 25, at most 100).
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<u32>,
}

/// Lists every schedule.
///
/// The system's and every tenant's: cron expression and missed-fire policy, next fire, and last
/// fire with the status of the job it started (or why it started none).
#[utoipa::path(
    get, path = "/v1/admin/schedules", operation_id = "listAdminSchedules", tag = "Administration",
    params(ListQuery),
    responses((status = 200, description = "A page of schedules.", body = ListResponse<ScheduleView>))
)]
async fn list(
    State(state): State<AppState>,
    _admin: AdminUser,
    rid: RequestId,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Response, ApiError> {
    let request = PageQuery { page: q.page, per_page: q.per_page }.request()?;
    let filter = ScheduleFilter { id: None, tenant: q.tenant, paused: q.paused };
    let (items, total) = schedules::list(state.db(), &filter, request).await?;
    let items: Vec<ScheduleView> = items.into_iter().map(view).collect();
    Ok(super::page(&rid, items, request, total).into_response())
}

async fn set_paused(
    state: &AppState,
    admin: &AdminUser,
    rid: &RequestId,
    id: &str,
    paused: bool,
) -> Result<Response, ApiError> {
    let id: ScheduleId = parse_id(id, "schedule")?;
    schedules::set_paused(state.db(), id, paused).await.map_err(|e| not_found(e, "schedule"))?;
    tracing::info!(schedule.id = %id, user.id = %admin.0.user.id, paused, "schedule paused or resumed by an admin");
    // Read back through the list's query, for the last fire's job status.
    let one = ScheduleFilter { id: Some(id), ..ScheduleFilter::default() };
    let (items, _) = schedules::list(state.db(), &one, nimbus_domain::PageRequest::default()).await?;
    match items.into_iter().next() {
        Some(l) => Ok(super::data(rid, view(l)).into_response()),
        None => Err(ApiError::NotFound("schedule")),
    }
}

/// Pauses a schedule.
///
/// A paused schedule does not fire until it is resumed.
#[utoipa::path(
    post, path = "/v1/admin/schedules/{id}/pause", operation_id = "pauseAdminSchedule", tag = "Administration",
    params(("id" = ScheduleId, Path, description = "The schedule's id.")),
    responses((status = 200, description = "The schedule, paused (pausing a paused one changes nothing).",
        body = ApiResponse<ScheduleView>))
)]
async fn pause(
    State(state): State<AppState>,
    admin: AdminUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_paused(&state, &admin, &rid, &id, true).await
}

/// Resumes a paused schedule.
///
/// Its missed-fire policy decides about the times it missed: `catch_up_all` fires each,
/// `latest_only` one, `skip` none.
#[utoipa::path(
    post, path = "/v1/admin/schedules/{id}/resume", operation_id = "resumeAdminSchedule", tag = "Administration",
    params(("id" = ScheduleId, Path, description = "The schedule's id.")),
    responses((status = 200, description = "The schedule, active (resuming an active one changes nothing).",
        body = ApiResponse<ScheduleView>))
)]
async fn resume(
    State(state): State<AppState>,
    admin: AdminUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_paused(&state, &admin, &rid, &id, false).await
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, pause, resume))]
pub struct ApiDoc;
