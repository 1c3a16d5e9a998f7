//! Extractors whose failures are [`ApiError`]s (never axum's plain-text rejections): the JSON
//! body with per-field errors, query strings, the `Idempotency-Key` header, ids in paths, and
//! (authentication lives in [`crate::auth`]).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ApiError, FieldError};

/// A JSON body decoded into `T`, with the parsed document kept (its canonical text is the
/// request's fingerprint for `Idempotency-Key`).
///
/// Malformed JSON, a missing or non-JSON `Content-Type`, unknown fields (`T` uses
/// `deny_unknown_fields`), missing fields and wrong types are all 400 `VALIDATION_FAILED` with
/// the offending field's path in `details.fields`.
#[derive(Debug)]
pub struct JsonBody<T> {
    /// The decoded body.
    pub value: T,
    /// The document as parsed.
    pub raw: Value,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !json_type {
            return Err(ApiError::field("Content-Type", "must be application/json"));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::Validation(vec![FieldError::body(e.body_text())])
            }
        })?;
        decode(&bytes)
    }
}

/// Decodes a JSON document into `T` (separate from the extractor so it is unit-testable).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<JsonBody<T>, ApiError> {
    let raw: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::Validation(vec![FieldError::body(format!("malformed JSON: {e}"))]))?;
    if let Some(path) = nul_at(&raw, String::new()) {
        let field = if path.is_empty() {
            FieldError::body("must not contain NUL characters")
        } else {
            FieldError::new(path, "must not contain NUL characters")
        };
        return Err(ApiError::Validation(vec![field]));
    }
    decode_value(raw)
}

/// [`decode`] of a document already parsed (and checked for NUL characters).
pub fn decode_value<T: DeserializeOwned>(raw: Value) -> Result<JsonBody<T>, ApiError> {
    let value = serde_path_to_error::deserialize::<_, T>(&raw).map_err(|e| {
        let path = e.path().to_string();
        ApiError::Validation(vec![field_error(&path, &e.into_inner().to_string())])
    })?;
    Ok(JsonBody { value, raw })
}

/// The path of the first string or key holding a NUL (`\u0000`), which PostgreSQL cannot store:
/// every body is refused for it here, whatever its fields, so no route can pass one on.
fn nul_at(value: &Value, path: String) -> Option<String> {
    let join = |key: &str| if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
    match value {
        Value::String(s) if s.contains('\0') => Some(path),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| nul_at(v, format!("{path}[{i}]"))),
        Value::Object(map) => map
            .iter()
            .find_map(|(k, v)| if k.contains('\0') { Some(join(&k.replace('\0', "\\0"))) } else { nul_at(v, join(k)) }),
        _ => None,
    }
}

/// Names the field of a serde error: the path where it happened, or for unknown and missing
/// fields the field serde names in backticks (the path then points at the parent object).
fn field_error(path: &str, message: &str) -> FieldError {
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    let field = match (named, path) {
        // Unknown fields: the path already ends at the field; missing ones: at its parent.
        (Some(name), path) if path == name || path.ends_with(&format!(".{name}")) => path.to_owned(),
        (Some(name), "." | "") => name.to_owned(),
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, "." | "") => return FieldError::body(message),
        (None, path) => path.to_owned(),
    };
    // serde's message for an unknown field lists every accepted one; keep it, it helps.
    FieldError::new(field, message)
}

/// A query string decoded into `T`; a value of the wrong type is 400 `VALIDATION_FAILED`.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(query)
            .map(QueryParams)
            .map_err(|e| ApiError::Validation(vec![FieldError::new("query", e.to_string())]))
    }
}

/// The `Idempotency-Key` header, if sent (1-255 visible ASCII characters).
#[derive(Clone, Debug)]
pub struct IdempotencyKey(pub Option<String>);

/// The `Idempotency-Key` header as the OpenAPI document describes it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Describes the header; `IdempotencyKey` reads it.
pub struct IdempotencyKeyHeader {
    /// Sending the same request again with the same key answers what the first one did and
    /// creates nothing twice (1-255 visible ASCII characters; kept 24 hours).
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    idempotency_key: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else { return Ok(IdempotencyKey(None)) };
        let ok =
            value.to_str().ok().filter(|v| !v.is_empty() && v.len() <= 255 && v.bytes().all(|b| b.is_ascii_graphic()));
        match ok {
            Some(v) => Ok(IdempotencyKey(Some(v.to_owned()))),
            None => Err(ApiError::field("Idempotency-Key", "must be 1-255 visible ASCII characters")),
        }
    }
}

/// Parses an id from a path. A malformed id names nothing, so it is 404 like a missing one.
pub fn parse_id<T: std::str::FromStr>(raw: &str, what: &'static str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound(what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Probe {
        cores: u32,
        #[serde(default)]
        ssh_keys: Vec<String>,
    }

    fn fields(e: ApiError) -> Vec<FieldError> {
        match e {
            ApiError::Validation(f) => f,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_json_is_a_body_error() {
        let f = fields(decode::<Probe>(b"{\"cores\": ").unwrap_err());
        assert_eq!(f[0].field, None);
        assert!(f[0].message.starts_with("malformed JSON"), "{}", f[0].message);
    }

    #[test]
    fn unknown_missing_and_mistyped_fields_are_named() {
        let f = fields(decode::<Probe>(br#"{"cores": 1, "colour": "red"}"#).unwrap_err());
        assert_eq!(f[0].field.as_deref(), Some("colour"));
        let f = fields(decode::<Probe>(br#"{}"#).unwrap_err());
        assert_eq!(f[0].field.as_deref(), Some("cores"));
        let f = fields(decode::<Probe>(br#"{"cores": "two"}"#).unwrap_err());
        assert_eq!(f[0].field.as_deref(), Some("cores"));
        let f = fields(decode::<Probe>(br#"{"cores": 1, "sshKeys": ["a", 2]}"#).unwrap_err());
        assert_eq!(f[0].field.as_deref(), Some("sshKeys[1]"));
        let f = fields(decode::<Probe>(br#"{"cores": 1, "sshKeys": ["a", "b\u0000"]}"#).unwrap_err());
        assert_eq!(f[0].field.as_deref(), Some("sshKeys[1]"));
        assert!(f[0].message.contains("NUL"), "{}", f[0].message);
        let f = fields(decode::<Probe>(br#"{"cores": 1, "a\u0000": 1}"#).unwrap_err());
        assert_eq!(f[0].field.as_deref(), Some("a\\0"));
        let ok = decode::<Probe>(br#"{"cores": 2}"#).unwrap();
        assert_eq!(ok.value.cores, 2);
    }
}
