//! The layers every request passes through:
//! * [`envelope`] gives the request its id, runs the handler inside a tracing span carrying it,
//!   echoes it, and turns every error response into the envelope of DESIGN §6 — the
//!   [`ApiError`](crate::ApiError)s of handlers and extractors as well as axum's own plain-text
//!   answers (unknown route, wrong method, body too large) — or, under `/auth/`, into the HTML
//!   error page of browser navigations.
//! * [`refuse_unstorable`] refuses text PostgreSQL cannot store (NUL) in the path, the query
//!   and the headers with 400, before anything reads them; JSON bodies get the same rule in
//!   their one extractor ([`crate::extract::JsonBody`]).
//!
//! The request id is always the server's (a UUIDv7): it is what logs, jobs and the audit log
//! carry, so no client can make two requests look like one. A client's own `X-Request-ID` that
//! is printable and at most 128 characters is kept beside it ([`ClientRequestId`]), logged, put
//! in the audit row, and echoed as `X-Correlation-ID`.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use nimbus_domain::{ErrorBody, ErrorCode, Meta};
use tracing::Instrument;

use crate::error::{ApiError, PendingError};

/// The response header carrying the request id (the server's).
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The response header echoing the client's own `X-Request-ID`.
pub const CORRELATION_ID_HEADER: &str = "x-correlation-id";

/// The id of the current request, made by the server; an extractor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// The `meta` of a response to this request.
    pub fn meta(&self) -> Meta {
        Meta { request_id: self.0.clone(), timestamp: Utc::now() }
    }
}

/// The client's own `X-Request-ID`, kept as its correlation id (in the request's extensions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRequestId(pub String);

impl ClientRequestId {
    /// Kept when it is 1-128 printable ASCII characters without markup or quotes: it goes to
    /// logs, the audit log and back to the client, so nothing that could forge a log line or
    /// inject into a page that shows it.
    fn accept(value: &str) -> Option<ClientRequestId> {
        let ok = !value.is_empty()
            && value.len() <= 128
            && value.bytes().all(|b| b.is_ascii_graphic() && !b"<>\"'`\\&".contains(&b));
        ok.then(|| ClientRequestId(value.to_owned()))
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
    let id = RequestId(uuid::Uuid::now_v7().to_string());
    let client_id =
        request.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).and_then(ClientRequestId::accept);
    request.extensions_mut().insert(id.clone());
    if let Some(client_id) = &client_id {
        request.extensions_mut().insert(client_id.clone());
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!("request", request.id = %id.0, client.request_id = client_id.as_ref().map(|c| c.0.as_str()),
        http.method = %method, http.path = %path);
    let started = Instant::now();

    let response = next.run(request).instrument(span.clone()).await;
    let mut response = span.in_scope(|| finish(response, &id, crate::html::is_navigation(&path)));

    let status = response.status();
    span.in_scope(|| {
        tracing::info!(http.status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "answered")
    });
    if let Ok(v) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    if let Some(v) = client_id.and_then(|c| HeaderValue::from_str(&c.0).ok()) {
        response.headers_mut().insert(CORRELATION_ID_HEADER, v);
    }
    response
}

/// The layer refusing unstorable text (install with `axum::middleware::from_fn`, inside the
/// audit layer so a refused write is still recorded, and before `authenticate`).
pub async fn refuse_unstorable(request: Request, next: Next) -> Response {
    match unstorable_part(&request) {
        Some(part) => {
            ApiError::field(part, "must not contain NUL characters (also not percent-encoded as %00)").into_response()
        }
        None => next.run(request).await,
    }
}

/// Which part of the request holds a NUL, once percent-decoded: PostgreSQL refuses it in text,
/// so a value carrying one could fail whatever statement it reaches (and a shared one with it).
fn unstorable_part(request: &Request) -> Option<&'static str> {
    let decodes_to_nul = |s: &str| s.contains('\0') || percent_encoding::percent_decode_str(s).any(|b| b == 0);
    if decodes_to_nul(request.uri().path()) {
        return Some("path");
    }
    if request.uri().query().is_some_and(decodes_to_nul) {
        return Some("query");
    }
    // HTTP/1 parsers refuse NUL in headers; other transports might not.
    if request.headers().values().any(|v| v.as_bytes().contains(&0)) {
        return Some("headers");
    }
    None
}

fn finish(response: Response, id: &RequestId, navigation: bool) -> Response {
    let status = response.status();
    if navigation && (status.is_client_error() || status.is_server_error()) && !is_html(&response) {
        return navigation_page(response, id);
    }
    if let Some(pending) = response.extensions().get::<PendingError>().cloned() {
        if let Some(cause) = &pending.cause {
            // Logged once, here, where the request id is known.
            if response.status().is_server_error() {
                tracing::error!(error.code = %pending.code, error.cause = %cause, "request failed");
            }
        }
        return write_error(response, id, pending.code, pending.message, pending.details);
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // The sign-in routes answer browsers with HTML error pages of their own.
    if (status.is_client_error() || status.is_server_error()) && !is_json && !is_html(&response) {
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

fn is_html(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"))
}

/// An error under `/auth/` that the route did not render itself (a malformed query, a refused
/// path, a wrong method, a rate limit): the same HTML page as the route's own errors, keeping
/// the status and headers (`Allow`, `Retry-After`).
fn navigation_page(response: Response, id: &RequestId) -> Response {
    let status = response.status();
    if let Some(cause) = response.extensions().get::<PendingError>().and_then(|p| p.cause.clone()) {
        tracing::error!(error.cause = %cause, "sign-in request failed");
    }
    let (title, message) = match status {
        StatusCode::TOO_MANY_REQUESTS => ("Too many requests", "Wait a moment, then try again."),
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
            ("Page not found", "This sign-in address does not exist. Start again from the sign-in page.")
        }
        s if s.is_client_error() => {
            ("Invalid sign-in link", "This sign-in link is malformed. Start again from the sign-in page.")
        }
        _ => ("Sign-in is unavailable right now", "Try again in a few minutes."),
    };
    let (mut parts, _) = response.into_parts();
    let page = crate::html::page(id, status, title, message);
    let (page_parts, body) = page.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &page_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    parts.extensions.remove::<PendingError>();
    Response::from_parts(parts, body)
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
        assert_eq!(ClientRequestId::accept("abc-123"), Some(ClientRequestId("abc-123".into())));
        assert_eq!(ClientRequestId::accept(&"x".repeat(128)).map(|c| c.0.len()), Some(128));
        assert_eq!(ClientRequestId::accept(""), None);
        assert_eq!(ClientRequestId::accept("has space"), None);
        assert_eq!(ClientRequestId::accept("line\nbreak"), None);
        assert_eq!(ClientRequestId::accept("<script>"), None);
        assert_eq!(ClientRequestId::accept("a\"b"), None);
        assert_eq!(ClientRequestId::accept(&"x".repeat(129)), None);
    }

    fn request(uri: &str) -> Request {
        Request::builder().uri(uri).body(Body::empty()).unwrap()
    }

    #[test]
    fn nul_is_found_wherever_it_enters() {
        assert_eq!(unstorable_part(&request("/v1/vms/%00")), Some("path"));
        assert_eq!(unstorable_part(&request("/v1/admin/audit-logs?action=a%00b")), Some("query"));
        assert_eq!(unstorable_part(&request("/v1/admin/users?q=%00")), Some("query"));
        assert_eq!(unstorable_part(&request("/v1/vms/abc?x=%2500")), None, "an encoded percent sign is text");
        assert_eq!(unstorable_part(&request("/v1/vms/%C3%BC?q=a%20b")), None);
    }
}
