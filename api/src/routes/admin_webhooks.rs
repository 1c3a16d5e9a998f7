//! `GET /v1/admin/webhooks`: the provider's operators see every tenant's webhook endpoints and
//! their health (attempts and successes in the last 24 hours, deliveries waiting, the failing
//! streak, why the system disabled one), the unhealthy first. Never the secrets.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use nimbus_db::webhooks;
use serde_json::json;

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

async fn list(State(state): State<AppState>, _admin: AdminUser, rid: RequestId) -> Result<Response, ApiError> {
    let now = Utc::now();
    let all = webhooks::all_with_health(state.db(), now).await?;
    let views: Vec<_> = all
        .into_iter()
        .map(|h| {
            let tenant_id = h.endpoint.tenant_id;
            let mut v = serde_json::to_value(EndpointView::of(h.endpoint, now)).unwrap_or_default();
            v["tenantId"] = json!(tenant_id);
            v["tenantName"] = json!(h.tenant_name);
            v["health"] = json!({
                "attempts24h": h.attempts_24h,
                "succeeded24h": h.succeeded_24h,
                "pending": h.pending,
                "lastAttemptAt": h.last_attempt_at,
            });
            v
        })
        .collect();
    Ok(data(&rid, views).into_response())
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths())]
pub struct ApiDoc;
