//! `/v1/admin` job routes, for the provider's operators (role `admin`): they span tenants.
//!
//! * `POST /v1/admin/jobs/{id}/retry[?attempts=N]`: re-queues a failed job with `N` more attempts
//!   (default [`NewJob::DEFAULT_MAX_ATTEMPTS`]); its step machine resumes at the step it reached.
//!   The job's instance, if it is `failed`, goes back to `provisioning` (taking its quota again,
//!   checked under the same tenant lock `POST /v1/vms` takes). Then the job is pushed through the
//!   dispatcher's fast path and the answer is 202 with the job handle and `Location`.
//! * `GET /v1/admin/jobs[?tenant=&status=failed&page=&perPage=]`: every tenant's jobs (or one
//!   tenant's) with the fields an operator needs (tenant, queue, attempts allowed, and the error's
//!   `errorDetail`: Proxmox's own text, which tenants never see), newest first.
//!
//! A caller who is not an admin gets 403 `FORBIDDEN` (through [`AdminUser`]); an unknown job is
//! 404; a job that is not `failed` is 409 `INVALID_JOB_STATE` with its status in `details`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nimbus_db::jobs::{self, Job, JobFilter, NewJob};
use nimbus_db::{DbError, instances, plans};
use nimbus_domain::{
    AdminJobView, ApiError as ApiErrorBody, ApiResponse, ErrorCode, InstanceId, InstanceStatus, JobHandle, JobId,
    JobStatus, ListResponse, ResourceRequest, TenantId,
};
use serde::Deserialize;
use serde_json::json;

use crate::auth::AdminUser;
use crate::error::{ApiError, PendingError};
use crate::extract::{QueryParams, parse_id};
use crate::middleware::RequestId;
use crate::routes::PageQuery;
use crate::routes::vms::not_found;
use crate::state::AppState;

/// The most attempts one retry may add.
pub const MAX_EXTRA_ATTEMPTS: i32 = 20;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/jobs", get(list)).route("/v1/admin/jobs/{id}/retry", post(retry))
}

/// The failures of this module that [`ApiError`] has no variant for, written through the same
/// envelope.
#[derive(Debug)]
enum AdminError {
    Api(ApiError),
    /// The job is not `failed` (409 `INVALID_JOB_STATE`).
    NotFailed {
        job: JobId,
        status: JobStatus,
    },
}

impl From<ApiError> for AdminError {
    fn from(e: ApiError) -> Self {
        AdminError::Api(e)
    }
}

impl From<DbError> for AdminError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::InvalidJobState { job, status } => AdminError::NotFailed { job, status },
            DbError::NotFound => AdminError::Api(ApiError::NotFound("job")),
            e => AdminError::Api(e.into()),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, pending) = match self {
            AdminError::Api(e) => return e.into_response(),
            AdminError::NotFailed { job, status } => (
                StatusCode::CONFLICT,
                PendingError {
                    code: ErrorCode::InvalidJobState,
                    message: format!("only a failed job can be retried; this one is {}", status.as_str()),
                    details: json!({ "jobId": job, "status": status }),
                    cause: None,
                },
            ),
        };
        let mut response = status.into_response();
        response.extensions_mut().insert(pending);
        response
    }
}

/// `?attempts=`.
#[derive(Clone, Copy, Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct RetryQuery {
    /// Attempts to add to the job (default 5).
    #[param(minimum = 1, maximum = 20, example = 5)]
    attempts: Option<i32>,
}

/// Retries a failed job of any tenant.
///
/// It is queued again with `attempts` more attempts and resumes at the step it reached; its
/// instance, if `failed`, goes back to `provisioning` (taking its quota again).
#[utoipa::path(
    post, path = "/v1/admin/jobs/{id}/retry", operation_id = "retryAdminJob", tag = "Administration",
    params(("id" = JobId, Path, description = "The job's id."), RetryQuery),
    responses(
        (status = 202, description = "Accepted: the job, queued again; `Location` is the job.",
            body = ApiResponse<JobHandle>, headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 409, description = "`INVALID_JOB_STATE`: only a failed job can be retried; `details` has its `jobId` and `status`.",
            body = ApiErrorBody),
        (status = 422, description = "`QUOTA_EXCEEDED`: the job's failed instance no longer fits its tenant's plan.",
            body = ApiErrorBody),
    )
)]
async fn retry(
    State(state): State<AppState>,
    AdminUser(auth): AdminUser,
    rid: RequestId,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<RetryQuery>,
) -> Result<Response, AdminError> {
    let extra = q.attempts.unwrap_or(NewJob::DEFAULT_MAX_ATTEMPTS);
    if !(1..=MAX_EXTRA_ATTEMPTS).contains(&extra) {
        return Err(ApiError::field("attempts", format!("must be between 1 and {MAX_EXTRA_ATTEMPTS}")).into());
    }
    let id: JobId = parse_id(&id, "job")?;
    let job = jobs::get(state.db(), id).await.map_err(|e| not_found(e, "job"))?;
    if job.status != JobStatus::Failed {
        return Err(AdminError::NotFailed { job: id, status: job.status });
    }

    // One transaction: the instance back to provisioning (its tenant's counters locked, so the
    // quota check cannot race a create) and the job re-queued commit together, or neither does.
    let mut tx = state.db().begin().await.map_err(DbError::from)?;
    if let (Some(tenant), Some(instance)) = (job.tenant_id, job.instance()) {
        revive_instance(&mut tx, tenant, instance).await?;
    }
    let enqueued = jobs::retry_failed(&mut tx, id, extra).await?;
    tx.commit().await.map_err(DbError::from)?;
    tracing::info!(job.id = %id, user.id = %auth.user.id, extra_attempts = extra, "failed job retried by an admin");

    state.dispatcher().push(state.db(), &enqueued).await;
    // Streams that ended on the failure are gone; one still open shows the job queued again.
    state.dispatcher().publisher().publish_job(id, job.instance()).await;
    let handle = enqueued.job.handle();
    let location = HeaderValue::from_str(&handle.links.self_).ok();
    let mut response = (StatusCode::ACCEPTED, super::data(&rid, handle)).into_response();
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Sets a `failed` instance of `tenant` back to `provisioning` after checking that the plan
/// still has room for it (a failed instance released its quota). Any other status is left as
/// it is.
async fn revive_instance(
    tx: &mut sqlx::PgConnection,
    tenant: nimbus_domain::TenantId,
    id: InstanceId,
) -> Result<(), AdminError> {
    // The lock `POST /v1/vms` takes for its quota check (`instances::create_with_job`).
    sqlx::query("select 1 from tenant_usage where tenant_id = $1 for update")
        .bind(tenant.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(DbError::from)?;
    let instance = match instances::get(&mut *tx, tenant, id).await {
        Ok(i) => i,
        Err(DbError::NotFound) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if instance.status != InstanceStatus::Failed {
        return Ok(());
    }
    let plan = plans::for_tenant(&mut *tx, tenant).await?;
    let used = instances::usage(&mut *tx, tenant).await?;
    let request = ResourceRequest {
        vcpus: i64::from(instance.cores),
        memory_mib: instance.memory_mib,
        disk_gib: instance.disk_gib,
    };
    plan.limits.check(&used, &request).map_err(ApiError::QuotaExceeded)?;
    instances::set_status(&mut *tx, id, InstanceStatus::Provisioning).await?;
    Ok(())
}

/// `?tenant=&status=&instance=&page=&perPage=`.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this tenant's jobs.
    tenant: Option<TenantId>,
    /// Only jobs with this status.
    status: Option<JobStatus>,
    /// Only the jobs of this instance.
    instance: Option<InstanceId>,
    /// 1-based page (default 1).
    #[param(minimum = 1)]
    page: Option<u32>,
    /// Items per page (default 25, at most 100).
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<u32>,
}

/// A job as the admin queue view shows it.
fn admin_view(j: &Job) -> AdminJobView {
    AdminJobView {
        handle: j.handle(),
        tenant_id: j.tenant_id,
        queue: j.queue.clone(),
        max_attempts: j.max_attempts,
        error_detail: j.error_detail.clone(),
        updated_at: j.updated_at,
    }
}

/// Lists every tenant's jobs.
///
/// Newest first, filtered by tenant, status and instance, with what operators need: tenant, queue,
/// attempts allowed and the error's full detail (`errorDetail`, which tenants never see).
#[utoipa::path(
    get, path = "/v1/admin/jobs", operation_id = "listAdminJobs", tag = "Administration", params(ListQuery),
    responses((status = 200, description = "A page of jobs across tenants.", body = ListResponse<AdminJobView>))
)]
async fn list(
    State(state): State<AppState>,
    _admin: AdminUser,
    rid: RequestId,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Response, AdminError> {
    let request = PageQuery { page: q.page, per_page: q.per_page }.request()?;
    let (items, total) =
        jobs::list_all_tenants(state.db(), q.tenant, JobFilter { status: q.status, instance: q.instance }, request)
            .await?;
    let items: Vec<AdminJobView> = items.iter().map(admin_view).collect();
    Ok(super::page(&rid, items, request, total).into_response())
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, retry))]
pub struct ApiDoc;
