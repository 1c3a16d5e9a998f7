//! The HTML error page of browser navigations (`/auth/*`): the sign-in routes answer with it,
//! and the envelope layer turns every other error under `/auth/` into it, so a browser never
//! lands on a JSON document.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::middleware::RequestId;

/// An HTML error page naming the request id (for support).
pub fn page(rid: &RequestId, status: StatusCode, title: &str, message: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · Nimbus</title></head>\
         <body><main><h1>{t}</h1><p>{m}</p><p><a href=\"/\">Back to Nimbus</a></p>\
         <p><small>Request id: <code>{id}</code></small></p></main></body></html>\n",
        t = escape(title),
        m = escape(message),
        id = escape(&rid.0),
    );
    let mut r = (status, html).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Whether `path` is a browser navigation answered with [`page`] rather than the envelope.
pub fn is_navigation(path: &str) -> bool {
    path == "/auth" || path.starts_with("/auth/")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pages_escape_what_they_show() {
        let r = page(&RequestId("<x>".into()), StatusCode::BAD_REQUEST, "a<b", "c&d");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("a&lt;b") && body.contains("c&amp;d") && body.contains("&lt;x&gt;"), "{body}");
        assert!(!body.contains("<x>"));
    }

    #[test]
    fn only_auth_paths_are_navigations() {
        assert!(is_navigation("/auth/callback"));
        assert!(is_navigation("/auth"));
        assert!(!is_navigation("/authx"));
        assert!(!is_navigation("/v1/auth/apikeys"));
    }
}
