//! `/healthz` (the process answers) and `/readyz` (it can serve: Postgres and Redis answer).

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::error::ApiError;
use crate::middleware::RequestId;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

async fn healthz(rid: RequestId) -> Response {
    super::data(&rid, json!({ "status": "ok" })).into_response()
}

/// 200 when both answer within the timeout; otherwise 503 `SERVICE_UNAVAILABLE` whose details
/// say which one is down (the causes go to the log).
async fn readyz(State(state): State<AppState>, rid: RequestId) -> Result<Response, ApiError> {
    let timeout = state.settings().ready_timeout;
    let postgres = async {
        match tokio::time::timeout(timeout, sqlx::query_scalar::<_, i32>("select 1").fetch_one(state.db())).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        }
    };
    let (postgres, redis) = tokio::join!(postgres, state.dispatcher().ping(timeout));
    let word = |r: &Result<(), String>| if r.is_ok() { "ok" } else { "unavailable" };
    let checks = json!({ "postgres": word(&postgres), "redis": word(&redis) });
    if postgres.is_ok() && redis.is_ok() {
        return Ok(super::data(&rid, checks).into_response());
    }
    let causes = [("postgres", &postgres), ("redis", &redis)]
        .iter()
        .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")))
        .collect::<Vec<_>>()
        .join("; ");
    Err(ApiError::Unready { checks, cause: causes })
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths())]
pub struct ApiDoc;
