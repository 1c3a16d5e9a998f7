//! The layer every request passes through: it accepts or generates the `X-Request-ID`, runs the
//! handler inside a tracing span carrying it, echoes it, and turns every error response into the
//! envelope of DESIGN §6 — the [`ApiError`](crate::ApiError)s of handlers and extractors as well
//! as axum's own plain-text answers (unknown route, wrong method, body too large).

use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use nimbus_domain::{ErrorBody, ErrorCode, Meta};
use tracing::Instrument;

use crate::error::PendingError;

/// The request header carrying the request id, echoed on every response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the current request (accepted from `X-Request-ID` or generated); an extractor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// The `meta` of a response to this request.
    pub fn meta(&self) -> Meta {
        Meta { request_id: self.0.clone(), timestamp: Utc::now() }
    }

    /// A client's id is kept when it is 1-128 visible ASCII characters (it ends up in logs and
    /// job rows, so nothing that could forge log lines).
    fn accept(value: &str) -> Option<RequestId> {
        let ok = !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| RequestId(value.to_owned()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // The middleware always inserts one; the fallback only serves routers built without it.
        Ok(parts.extensions.get::<RequestId>().cloned().unwrap_or_else(|| RequestId(uuid::Uuid::new_v4().to_string())))
    }
}

/// The middleware (install with `axum::middleware::from_fn`).
pub async fn envelope(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(RequestId::accept)
        .unwrap_or_else(|| RequestId(uuid::Uuid::now_v7().to_string()));
    request.extensions_mut().insert(id.clone());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!("request", request.id = %id.0, http.method = %method, http.path = %path);
    let started = Instant::now();

    let response = next.run(request).instrument(span.clone()).await;
    let mut response = span.in_scope(|| finish(response, &id));

    let status = response.status();
    span.in_scope(|| {
        tracing::info!(http.status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "answered")
    });
    if let Ok(v) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}

fn finish(response: Response, id: &RequestId) -> Response {
    if let Some(pending) = response.extensions().get::<PendingError>().cloned() {
        if let Some(cause) = &pending.cause {
            // Logged once, here, where the request id is known.
            if response.status().is_server_error() {
                tracing::error!(error.code = %pending.code, error.cause = %cause, "request failed");
            }
        }
        return write_error(response, id, pending.code, pending.message, pending.details);
    }
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // The sign-in routes answer browsers with HTML error pages of their own.
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if (status.is_client_error() || status.is_server_error()) && !is_json && !is_html {
        // An answer axum produced on its own (no route, wrong method, body limit...).
        let (code, message) = match status {
            StatusCode::NOT_FOUND => (ErrorCode::NotFound, "no such route".to_owned()),
            StatusCode::METHOD_NOT_ALLOWED => {
                (ErrorCode::MethodNotAllowed, "this route does not take this method; see Allow".to_owned())
            }
            StatusCode::PAYLOAD_TOO_LARGE => (ErrorCode::ValidationFailed, "the body is too large".to_owned()),
            s if s.is_client_error() => (ErrorCode::ValidationFailed, "the request is invalid".to_owned()),
            _ => {
                tracing::error!(http.status = status.as_u16(), "unhandled server error");
                (ErrorCode::Internal, "an unexpected error occurred".to_owned())
            }
        };
        return write_error(response, id, code, message, serde_json::Value::Null);
    }
    response
}

fn write_error(
    response: Response,
    id: &RequestId,
    code: ErrorCode,
    message: String,
    details: serde_json::Value,
) -> Response {
    let (mut parts, _) = response.into_parts();
    let body = nimbus_domain::ApiError { error: ErrorBody { code, message, details }, meta: id.meta() };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.extensions.remove::<PendingError>();
    // Status and headers (e.g. a 405's `Allow`, a 401's `WWW-Authenticate`) are kept.
    Response::from_parts(parts, Body::from(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_request_ids_are_kept_only_when_safe() {
        assert_eq!(RequestId::accept("abc-123"), Some(RequestId("abc-123".into())));
        assert_eq!(RequestId::accept(""), None);
        assert_eq!(RequestId::accept("has space"), None);
        assert_eq!(RequestId::accept("line\nbreak"), None);
        assert_eq!(RequestId::accept(&"x".repeat(129)), None);
    }
}
