//! Serves the portal (the SPA built into `NIMBUS_WEB_DIST` by `infra/scripts/build-web.sh`).
//!
//! * `/assets/*`: content-hashed files, cached for a year (`immutable`); gzip copies are sent to
//!   clients that accept them. A missing asset is a 404, never the page: a stale `index.html`
//!   asking for an old script must fail loudly rather than receive HTML.
//! * Any other `GET`/`HEAD` outside the API's own namespaces is a deep link: `index.html`,
//!   revalidated on every load (`no-cache`), so a deployment is picked up at once.
//! * `/v1/*`, `/auth/*`, `/healthz` and `/readyz` are never the page: an unknown path there keeps
//!   its JSON 404 (the envelope layer writes it).
//!
//! Without `NIMBUS_WEB_DIST` nothing is served and every unknown path is the JSON 404.

use std::path::PathBuf;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use crate::state::AppState;

/// `Cache-Control` of the hashed assets.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of `index.html`.
pub const NO_CACHE: &str = "no-cache";
/// The page's Content-Security-Policy: its own scripts only (no inline script exists), wasm
/// compilation, same-origin API calls, never framed. Inline `style` attributes stay allowed: the
/// SPA sets progress-bar widths through them.
pub const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The fallback serving the SPA from `dist`, or none.
pub fn router(dist: Option<PathBuf>) -> Router<AppState> {
    let Some(dist) = dist else { return Router::new() };
    let index = dist.join("index.html");
    if !index.is_file() {
        tracing::warn!(web.dist = %dist.display(), "NIMBUS_WEB_DIST has no index.html: build it with infra/scripts/build-web.sh");
    }
    // Brotli to browsers that accept it (over HTTPS, all of them), gzip to the others.
    let assets = ServeDir::new(dist.join("assets")).precompressed_br().precompressed_gzip();
    let page = ServeFile::new(index).precompressed_br().precompressed_gzip();
    Router::new().fallback(move |request: Request| serve(request, assets.clone(), page.clone()))
}

/// Paths that belong to the API, never to the SPA.
pub fn is_api_path(path: &str) -> bool {
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    under("/v1") || under("/auth") || path == "/healthz" || path == "/readyz"
}

async fn serve(request: Request, assets: ServeDir, page: ServeFile) -> Response {
    let path = request.uri().path().to_owned();
    if is_api_path(&path) || !(request.method() == Method::GET || request.method() == Method::HEAD) {
        return StatusCode::NOT_FOUND.into_response();
    }
    if let Some(rest) = path.strip_prefix("/assets/") {
        let mut request = request;
        // ServeDir resolves the path below its own root.
        *request.uri_mut() = match format!("/{rest}").parse() {
            Ok(uri) => uri,
            Err(_) => return StatusCode::NOT_FOUND.into_response(),
        };
        return finish(assets.oneshot(request).await, IMMUTABLE);
    }
    let (parts, _) = request.into_parts();
    let mut response = finish(page.oneshot(Request::from_parts(parts, Body::empty())).await, NO_CACHE);
    if response.status().is_success() {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    }
    response
}

fn finish<B>(served: Result<axum::http::Response<B>, std::convert::Infallible>, cache: &'static str) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let response = match served {
        Ok(r) => r.map(Body::new),
        Err(never) => match never {},
    };
    let (mut parts, body) = response.into_parts();
    if parts.status.is_success() || parts.status == StatusCode::NOT_MODIFIED {
        parts.headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        parts.headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        parts.headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        return Response::from_parts(parts, body);
    }
    // ServeDir's own 404 (plain text) becomes the envelope's "no such route"; other statuses
    // (416 for a bad range, ...) go through the envelope layer as they are.
    parts.status.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_namespaces_are_not_deep_links() {
        for p in ["/v1", "/v1/", "/v1/nope", "/auth/login", "/auth", "/healthz", "/readyz"] {
            assert!(is_api_path(p), "{p}");
        }
        for p in ["/", "/instances", "/v1x", "/authors", "/healthz/x", "/admin/queues", "/jobs/v1"] {
            assert!(!is_api_path(p), "{p}");
        }
    }
}
