//! CSRF defence for cookie-authenticated requests (DESIGN §5, OWASP CSRF cheat sheet): a
//! state-changing request must carry the session's token in `X-CSRF-Token` (a cross-site form
//! or `fetch` without CORS cannot set a custom header) AND come from the API's own origin, by
//! `Origin` or, when a browser sends none, by `Referer`. Bearer requests are exempt: a browser
//! never attaches a bearer token on its own.

use axum::http::{HeaderMap, Method, header};
use serde_json::json;

use super::Scope;
use crate::error::ApiError;

/// The header carrying the token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Whether `method` can change state: the one rule of the API, shared with the scopes of
/// [`Scope::for_method`] (only GET, HEAD and OPTIONS are safe; TRACE, unknown and extension
/// methods are treated as writes).
pub fn is_state_changing(method: &Method) -> bool {
    Scope::for_method(method) == Scope::Write
}

/// Checks a request made with the session whose token is `expected`; `origin` is the API's
/// public origin (`https://cloud.example.com`).
pub fn check(method: &Method, headers: &HeaderMap, expected: &str, origin: &str) -> Result<(), ApiError> {
    if !is_state_changing(method) {
        return Ok(());
    }
    let token = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    check_token(token, expected)?;
    check_origin(headers, origin)
}

/// The token half: `presented` must equal `expected`.
pub fn check_token(presented: Option<&str>, expected: &str) -> Result<(), ApiError> {
    match presented {
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(forbidden("the X-CSRF-Token header does not match this session", "invalid")),
        None => {
            Err(forbidden("a state-changing request with a session cookie needs the X-CSRF-Token header", "missing"))
        }
    }
}

/// The same-origin half: `Origin`, or without it the origin of `Referer`, must be `origin`.
pub fn check_origin(headers: &HeaderMap, origin: &str) -> Result<(), ApiError> {
    let seen = match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(o) => Some(o.to_owned()),
        None => headers
            .get(header::REFERER)
            .and_then(|v| v.to_str().ok())
            .and_then(|r| url::Url::parse(r).ok())
            .map(|u| u.origin().ascii_serialization()),
    };
    match seen {
        Some(o) if o == origin => Ok(()),
        Some(_) => Err(ApiError::Forbidden {
            message: "cross-origin state-changing requests are refused".into(),
            details: json!({ "csrf": "origin-mismatch" }),
        }),
        None => Err(ApiError::Forbidden {
            message: "a state-changing request with a session cookie needs an Origin or Referer header".into(),
            details: json!({ "csrf": "origin-missing" }),
        }),
    }
}

fn forbidden(message: &str, what: &str) -> ApiError {
    ApiError::Forbidden { message: message.into(), details: json!({ "csrf": format!("token-{what}") }) }
}

/// Compares without an early exit, so the time taken does not reveal the matching prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "https://cloud.example.com";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn safe_methods_pass_without_anything() {
        assert!(check(&Method::GET, &HeaderMap::new(), "t", ORIGIN).is_ok());
    }

    #[test]
    fn only_get_head_and_options_are_safe() {
        for safe in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(!is_state_changing(&safe), "{safe}");
            assert_eq!(Scope::for_method(&safe), Scope::Read);
        }
        let odd = Method::from_bytes(b"PROPFIND").unwrap();
        for unsafe_ in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::TRACE, Method::CONNECT, odd] {
            assert!(is_state_changing(&unsafe_), "{unsafe_}");
            assert_eq!(Scope::for_method(&unsafe_), Scope::Write);
            assert!(check(&unsafe_, &HeaderMap::new(), "t", ORIGIN).is_err(), "{unsafe_}");
        }
    }

    #[test]
    fn unsafe_methods_need_token_and_origin() {
        let ok = headers(&[("x-csrf-token", "t"), ("origin", ORIGIN)]);
        assert!(check(&Method::POST, &ok, "t", ORIGIN).is_ok());
        let via_referer = headers(&[("x-csrf-token", "t"), ("referer", "https://cloud.example.com/vms?x=1")]);
        assert!(check(&Method::DELETE, &via_referer, "t", ORIGIN).is_ok());
        for bad in [
            headers(&[("origin", ORIGIN)]),
            headers(&[("x-csrf-token", "u"), ("origin", ORIGIN)]),
            headers(&[("x-csrf-token", "t")]),
            headers(&[("x-csrf-token", "t"), ("origin", "https://evil.example")]),
            headers(&[("x-csrf-token", "t"), ("origin", "https://cloud.example.com.evil.example")]),
            headers(&[("x-csrf-token", "t"), ("referer", "https://evil.example/https://cloud.example.com")]),
        ] {
            assert!(check(&Method::POST, &bad, "t", ORIGIN).is_err(), "{bad:?}");
        }
    }
}
