//! `GET /v1/admin/webhooks`: the provider's operators see every tenant's webhook endpoints and
//! their health (attempts and successes in the last 24 hours, deliveries waiting, the failing
//! streak, why the system disabled one), the unhealthy first. Never the secrets.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use nimbus_db::webhooks;
use nimbus_domain::ApiResponse;
use serde::Serialize;
use uuid::Uuid;

use crate::auth::AdminUser;
use crate::error::ApiError;
use crate::middleware::RequestId;
use crate::routes::data;
use crate::routes::webhooks::EndpointView;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/webhooks", get(list))
}

/// A tenant's webhook endpoint as operators see it: the endpoint, whose it is, and its health.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = AdminWebhookEndpoint)]
#[serde(rename_all = "camelCase")]
struct AdminEndpointView {
    #[serde(flatten)]
    endpoint: EndpointView,
    /// The tenant's id.
    tenant_id: Uuid,
    /// The tenant's name.
    #[schema(example = "Acme Ltd")]
    tenant_name: String,
    /// Its deliveries' recent record.
    health: Health,
}

/// An endpoint's recent record.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookEndpointHealth)]
#[serde(rename_all = "camelCase")]
struct Health {
    /// Attempts in the last 24 hours.
    #[serde(rename = "attempts24h")]
    #[schema(minimum = 0, example = 42)]
    attempts_24h: i64,
    /// Of those, the ones that succeeded.
    #[serde(rename = "succeeded24h")]
    #[schema(minimum = 0, example = 40)]
    succeeded_24h: i64,
    /// Deliveries waiting to be sent.
    #[schema(minimum = 0, example = 1)]
    pending: i64,
    /// The last attempt in the last 24 hours; `null` without one.
    last_attempt_at: Option<DateTime<Utc>>,
}

/// Every tenant's webhook endpoints with their health, the disabled and failing first.
#[utoipa::path(
    get, path = "/v1/admin/webhooks", operation_id = "listAllWebhooks", tag = "Administration",
    responses((status = 200, description = "Every webhook endpoint of every tenant (not paged).",
        body = ApiResponse<Vec<AdminEndpointView>>))
)]
async fn list(State(state): State<AppState>, _admin: AdminUser, rid: RequestId) -> Result<Response, ApiError> {
    let now = Utc::now();
    let all = webhooks::all_with_health(state.db(), now).await?;
    let views: Vec<AdminEndpointView> = all
        .into_iter()
        .map(|h| AdminEndpointView {
            tenant_id: h.endpoint.tenant_id,
            tenant_name: h.tenant_name,
            health: Health {
                attempts_24h: h.attempts_24h,
                succeeded_24h: h.succeeded_24h,
                pending: h.pending,
                last_attempt_at: h.last_attempt_at,
            },
            endpoint: EndpointView::of(h.endpoint, now),
        })
        .collect();
    Ok(data(&rid, views).into_response())
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list))]
pub struct ApiDoc;
