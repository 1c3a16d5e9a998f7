//! The API's contract: `GET /v1/openapi.json` (the OpenAPI 3.1 document, `crate::openapi`) and
//! `GET /v1/docs`, the reference page that renders it (Redoc, built into the portal's `dist`
//! by `infra/scripts/build-web.sh` as `api-reference.html`, its script under `/assets`).

use std::sync::OnceLock;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

use crate::error::ApiError;
use crate::state::AppState;

/// The reference page's Content-Security-Policy: its one script from our own origin, no inline
/// script and no eval; Redoc's inline styles, its search worker (a `blob:`), and the document
/// fetched from this origin. Nothing is loaded from elsewhere.
pub const REFERENCE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The file in the portal's `dist` that is the reference page.
pub const REFERENCE_PAGE: &str = "api-reference.html";

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/openapi.json", get(openapi_json)).route("/v1/docs", get(reference_page))
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(
    get, path = "/v1/openapi.json", operation_id = "getOpenApiDocument", tag = "Reference",
    responses((status = 200, description = "The OpenAPI 3.1 document.", content_type = "application/json",
        body = Object, example = json!({"openapi": "3.1.0", "info": {"title": "Nimbus API", "version": "0.1.0"}})))
)]
async fn openapi_json() -> Response {
    static DOCUMENT: OnceLock<Bytes> = OnceLock::new();
    let body = DOCUMENT.get_or_init(|| Bytes::from(crate::openapi::document().to_string())).clone();
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The browsable reference of this API (the document rendered by Redoc).
#[utoipa::path(
    get, path = "/v1/docs", operation_id = "getApiReference", tag = "Reference",
    responses(
        (status = 200, description = "The reference page.", content_type = "text/html", body = String,
            example = "<!doctype html>…"),
        (status = 404, description = "`NOT_FOUND`: the portal (and so the page) is not built into `NIMBUS_WEB_DIST`.",
            body = nimbus_domain::ApiError),
    )
)]
async fn reference_page(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(dist) = &state.settings().web_dist else { return Err(ApiError::NotFound("reference page")) };
    let page = tokio::fs::read(dist.join(REFERENCE_PAGE)).await.map_err(|_| ApiError::NotFound("reference page"))?;
    let mut response = page.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(REFERENCE_CSP));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(super::web::NO_CACHE));
    Ok(response)
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(openapi_json, reference_page))]
pub struct ApiDoc;
