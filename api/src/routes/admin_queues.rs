//! `GET /v1/admin/queues`: the health of each job queue, read from the ledger (depth, running,
//! failed, dead, throughput over the last hour) for the portal's queue dashboard. An operator
//! route: every tenant's jobs, or one tenant's with `?tenant=<id>`.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_db::queue_stats;
use nimbus_domain::{ApiResponse, QueueStats, TenantId};
use serde::Deserialize;

use crate::auth::AdminUser;
use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::middleware::RequestId;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/queues", get(list))
}

/// `?tenant=`.
#[derive(Clone, Copy, Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Filter {
    /// Count only this tenant's jobs.
    tenant: Option<TenantId>,
}

/// Shows the health of each job queue.
///
/// Read from the job ledger: depth, retrying, running, failed, dead, and throughput over the last
/// hour; every tenant's jobs, or one tenant's.
#[utoipa::path(
    get, path = "/v1/admin/queues", operation_id = "listAdminQueues", tag = "Administration", params(Filter),
    responses((status = 200, description = "One entry per queue.", body = ApiResponse<Vec<QueueStats>>))
)]
async fn list(
    State(state): State<AppState>,
    _admin: AdminUser,
    rid: RequestId,
    QueryParams(filter): QueryParams<Filter>,
) -> Result<Response, ApiError> {
    let stats = queue_stats::summary(state.db(), filter.tenant).await?;
    Ok(super::data(&rid, stats).into_response())
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list))]
pub struct ApiDoc;
