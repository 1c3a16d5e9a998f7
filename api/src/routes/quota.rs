//! `GET /v1/quota`: the tenant's plan limits, what it uses, and what remains.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_db::{instances, plans};
use nimbus_domain::{ApiResponse, PlanRef, QuotaView};

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::middleware::RequestId;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/quota", get(show))
}

/// The tenant's plan: its limits, what the tenant's instances use, what remains, and its prices.
#[utoipa::path(
    get, path = "/v1/quota", operation_id = "getQuota", tag = "Quota",
    responses(
        (status = 200, description = "The plan's limits, the usage and what remains.", body = ApiResponse<QuotaView>),
    )
)]
async fn show(State(state): State<AppState>, auth: AuthUser, rid: RequestId) -> Result<Response, ApiError> {
    let plan = plans::for_tenant(state.db(), auth.tenant()).await?;
    let used = instances::usage(state.db(), auth.tenant()).await?;
    let view = QuotaView {
        remaining: plan.limits.remaining(&used),
        plan: PlanRef { id: plan.id, name: plan.name },
        limits: plan.limits,
        prices: plan.prices,
        used,
    };
    Ok(super::data(&rid, view).into_response())
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(show))]
pub struct ApiDoc;
