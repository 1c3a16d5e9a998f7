//! `/healthz` (the process answers) and `/readyz` (it can serve: Postgres and Redis answer).

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_domain::{ApiError as ApiErrorBody, ApiResponse};
use serde::Serialize;

use crate::error::ApiError;
use crate::middleware::RequestId;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

/// What `/healthz` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`: the process answers.
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
}

/// Whether a dependency answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = DependencyState)]
pub enum Check {
    /// It answered within the timeout.
    Ok,
    /// It failed or timed out.
    Unavailable,
}

/// What `/readyz` answers (and, when not ready, the error's `details`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Readiness)]
pub struct Readiness {
    /// PostgreSQL.
    pub postgres: Check,
    /// Redis.
    pub redis: Check,
}

/// Liveness: the process answers.
#[utoipa::path(
    get, path = "/healthz", operation_id = "getHealth", tag = "Health",
    responses((status = 200, description = "The process answers.", body = ApiResponse<Health>))
)]
async fn healthz(rid: RequestId) -> Response {
    super::data(&rid, Health { status: "ok" }).into_response()
}

/// Readiness: whether PostgreSQL and Redis answer.
///
/// 200 when both answer within the timeout; otherwise 503 `SERVICE_UNAVAILABLE` whose details say
/// which one is down (the causes go to the log).
#[utoipa::path(
    get, path = "/readyz", operation_id = "getReadiness", tag = "Health",
    responses(
        (status = 200, description = "Ready: both dependencies answer.", body = ApiResponse<Readiness>),
        (status = 503, description = "`SERVICE_UNAVAILABLE`: a dependency is down; `details` is \
            `{postgres, redis}`, each `ok` or `unavailable`.", body = ApiErrorBody,
            example = json!({
                "error": {
                    "code": "SERVICE_UNAVAILABLE",
                    "message": "not ready: a dependency is unavailable; see details",
                    "details": {"postgres": "ok", "redis": "unavailable"}
                },
                "meta": {"requestId": "req_01JF3J6X9Q2M8V4T7C5B1N0K2D", "timestamp": "2026-12-01T09:30:00Z"}
            })),
    )
)]
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
    let word = |r: &Result<(), String>| if r.is_ok() { Check::Ok } else { Check::Unavailable };
    let checks = Readiness { postgres: word(&postgres), redis: word(&redis) };
    if postgres.is_ok() && redis.is_ok() {
        return Ok(super::data(&rid, checks).into_response());
    }
    let checks = serde_json::to_value(&checks).unwrap_or_default();
    let causes = [("postgres", &postgres), ("redis", &redis)]
        .iter()
        .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")))
        .collect::<Vec<_>>()
        .join("; ");
    Err(ApiError::Unready { checks, cause: causes })
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(healthz, readyz))]
pub struct ApiDoc;
