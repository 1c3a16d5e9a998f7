//! The API's one error type and how it becomes the error envelope of DESIGN §6:
//! `{error:{code, message, details}, meta:{requestId, timestamp}}` with the status of its code.
//!
//! A handler returns [`ApiError`]; its `IntoResponse` stores the error body in the response's
//! extensions and [`crate::middleware::envelope`] writes the envelope with the request's id (the
//! error itself cannot know it). Infrastructure failures carry their cause only for the log:
//! the client sees a stable code and a generic message, never internals.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nimbus_db::DbError;
use nimbus_domain::{ErrorCode, QuotaExceeded};
use serde::Serialize;
use serde_json::{Value, json};

/// One field's problem in a `VALIDATION_FAILED` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The JSON path of the field (`cores`, `sshKeys[1]`), a header name, or `null` when the
    /// problem is the body as a whole (malformed JSON).
    pub field: Option<String>,
    /// What is wrong, for humans.
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: Some(field.into()), message: message.into() }
    }

    /// A problem with the body as a whole.
    pub fn body(message: impl Into<String>) -> Self {
        FieldError { field: None, message: message.into() }
    }
}

/// Everything a request can fail with. Each variant has one stable [`ErrorCode`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, unknown fields, wrong types, out-of-range values (400).
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// The body is larger than the API accepts (413, code `VALIDATION_FAILED`).
    #[error("payload too large")]
    PayloadTooLarge,
    /// No, malformed or unknown credentials (401).
    #[error("authentication required")]
    Unauthenticated,
    /// The caller may not do this: a role or a credential scope is missing (403).
    #[error("forbidden: {message}")]
    Forbidden {
        /// The message.
        message: String,
        /// What was required.
        details: Value,
    },
    /// No such resource in the caller's tenant; a foreign tenant's id answers the same (404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The template does not exist (for this guest type, or on the requested node) (422).
    #[error("unknown template")]
    UnknownTemplate {
        /// The message.
        message: String,
        /// What was asked for.
        details: Value,
    },
    /// The node does not exist (422).
    #[error("unknown node {0}")]
    UnknownNode(String),
    /// The plan's limits would be exceeded (422).
    #[error(transparent)]
    QuotaExceeded(QuotaExceeded),
    /// An instance of that name exists in the tenant (409).
    #[error("name taken")]
    NameTaken,
    /// The `Idempotency-Key` was used with another request (422).
    #[error("idempotency key reused")]
    IdempotencyKeyReused,
    /// The first request with this `Idempotency-Key` is still running (409).
    #[error("idempotency key in progress")]
    IdempotencyKeyInProgress,
    /// Another constraint of the current state refused the request (409).
    #[error("conflict")]
    Conflict(String),
    /// The current state refused the request, with details saying what conflicts (409
    /// `CONFLICT`): a taken unique value (`{"fields": [...]}`, see [`ApiError::taken`]), a plan
    /// below a tenant's usage.
    #[error("{message}")]
    ConflictWith {
        /// The message.
        message: String,
        /// What conflicts.
        details: Value,
    },
    /// A refusal with its own code (`INSTANCE_BUSY`, `INVALID_INSTANCE_STATE`, `INVALID_RESIZE`,
    /// `SNAPSHOT_LIMIT`, …), the HTTP status the code's, and details saying why.
    #[error("{message}")]
    Refused {
        /// The code.
        code: ErrorCode,
        /// The message.
        message: String,
        /// What refused it.
        details: Value,
    },
    /// The caller spent its request budget (429, with `Retry-After`; see [`crate::ratelimit`]).
    #[error("rate limited")]
    RateLimited {
        /// Seconds until the next request is allowed.
        retry_after_secs: u64,
    },
    /// Proxmox cannot be reached or fails (503). The cause is logged.
    #[error("proxmox unavailable: {0}")]
    ProxmoxUnavailable(String),
    /// Postgres or Redis cannot be reached (503). The cause is logged.
    #[error("service unavailable: {0}")]
    ServiceUnavailable(String),
    /// A dependency of `/readyz` is down (503); `checks` says which, the causes are logged.
    #[error("not ready: {cause}")]
    Unready {
        /// `{"postgres": "ok"|"unavailable", "redis": …}`.
        checks: Value,
        /// What failed.
        cause: String,
    },
    /// A bug or an unexpected failure (500). The cause is logged, never echoed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// One field's problem.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    /// 409 `CONFLICT`: `field` holds a value that must be unique and is taken.
    pub fn taken(message: impl Into<String>, field: FieldError) -> Self {
        ApiError::ConflictWith { message: message.into(), details: json!({ "fields": [field] }) }
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Validation(_) | ApiError::PayloadTooLarge => ErrorCode::ValidationFailed,
            ApiError::Unauthenticated => ErrorCode::Unauthenticated,
            ApiError::Forbidden { .. } => ErrorCode::Forbidden,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::UnknownTemplate { .. } => ErrorCode::UnknownTemplate,
            ApiError::UnknownNode(_) => ErrorCode::UnknownNode,
            ApiError::QuotaExceeded(_) => ErrorCode::QuotaExceeded,
            ApiError::NameTaken => ErrorCode::NameTaken,
            ApiError::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            ApiError::IdempotencyKeyInProgress => ErrorCode::IdempotencyKeyInProgress,
            ApiError::Conflict(_) | ApiError::ConflictWith { .. } => ErrorCode::Conflict,
            ApiError::Refused { code, .. } => *code,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::ProxmoxUnavailable(_) => ErrorCode::ProxmoxUnavailable,
            ApiError::ServiceUnavailable(_) | ApiError::Unready { .. } => ErrorCode::ServiceUnavailable,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The HTTP status (DESIGN §6, through the code).
    pub fn status(&self) -> StatusCode {
        if let ApiError::PayloadTooLarge = self {
            return StatusCode::PAYLOAD_TOO_LARGE;
        }
        StatusCode::from_u16(self.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The message the client sees.
    fn public_message(&self) -> String {
        match self {
            ApiError::Validation(_) => "the request is invalid; see details".into(),
            ApiError::PayloadTooLarge => format!("the body is larger than {} bytes", crate::MAX_BODY_BYTES),
            ApiError::Unauthenticated => {
                "valid credentials are required: a signed-in session, or Authorization: Bearer <API key or access token>"
                    .into()
            }
            ApiError::Forbidden { message, .. } => message.clone(),
            ApiError::NotFound(what) => format!("{what} not found"),
            ApiError::UnknownTemplate { message, .. } => message.clone(),
            ApiError::UnknownNode(node) => format!("node '{node}' does not exist"),
            ApiError::QuotaExceeded(q) => {
                format!("the plan's {} limit would be exceeded", quota_resource_name(q))
            }
            ApiError::NameTaken => "an instance with this name already exists".into(),
            ApiError::IdempotencyKeyReused => "this Idempotency-Key was used with a different request".into(),
            ApiError::IdempotencyKeyInProgress => "a request with this Idempotency-Key is still being processed".into(),
            ApiError::Conflict(message) | ApiError::ConflictWith { message, .. } | ApiError::Refused { message, .. } => {
                message.clone()
            }
            ApiError::RateLimited { retry_after_secs } => {
                format!("too many requests; try again in {retry_after_secs} s")
            }
            ApiError::ProxmoxUnavailable(_) => "the virtualisation cluster is unavailable; try again later".into(),
            ApiError::ServiceUnavailable(_) => "the service is temporarily unavailable; try again later".into(),
            ApiError::Unready { .. } => "not ready: a dependency is unavailable; see details".into(),
            ApiError::Internal(_) => "an unexpected error occurred".into(),
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::Validation(fields) => json!({ "fields": fields }),
            ApiError::UnknownTemplate { details, .. } | ApiError::Forbidden { details, .. } => details.clone(),
            ApiError::UnknownNode(node) => json!({ "node": node }),
            ApiError::QuotaExceeded(q) => serde_json::to_value(q).unwrap_or(Value::Null),
            ApiError::NameTaken => json!({ "fields": [FieldError::new("name", "already used in this tenant")] }),
            ApiError::ConflictWith { details, .. } | ApiError::Refused { details, .. } => details.clone(),
            ApiError::Unready { checks, .. } => checks.clone(),
            ApiError::RateLimited { retry_after_secs } => json!({ "retryAfterSeconds": retry_after_secs }),
            _ => Value::Null,
        }
    }

    /// The cause to log, for the variants whose cause must not reach the client.
    fn log_cause(&self) -> Option<String> {
        match self {
            ApiError::ProxmoxUnavailable(c) | ApiError::ServiceUnavailable(c) | ApiError::Internal(c) => {
                Some(c.clone())
            }
            ApiError::Unready { cause, .. } => Some(cause.clone()),
            _ => None,
        }
    }
}

fn quota_resource_name(q: &QuotaExceeded) -> String {
    serde_json::to_value(q.resource).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound => ApiError::NotFound("resource"),
            DbError::QuotaExceeded(q) => ApiError::QuotaExceeded(q),
            DbError::PaymentRequired { balance, state } => ApiError::Refused {
                code: ErrorCode::PaymentRequired,
                message: "the prepaid balance is used up; top it up to create instances".into(),
                details: json!({ "balance": balance, "billingState": state }),
            },
            DbError::Conflict { constraint } if constraint == "instances_tenant_name_key" => ApiError::NameTaken,
            DbError::InstanceBusy(job) => ApiError::Refused {
                code: ErrorCode::InstanceBusy,
                message: format!("another operation ({}) is in progress on the instance; wait for it to end", job.kind),
                details: json!({ "job": job.handle() }),
            },
            DbError::InvalidInstanceState { status, .. } => ApiError::Refused {
                code: ErrorCode::InvalidInstanceState,
                message: format!("the instance is {status}, which does not allow this"),
                details: json!({ "status": status }),
            },
            DbError::Conflict { constraint } => ApiError::Conflict(format!("conflicts with an existing {constraint}")),
            e if e.is_unavailable() => ApiError::ServiceUnavailable(format!("postgres: {e}")),
            e => ApiError::Internal(format!("postgres: {e}")),
        }
    }
}

/// The error a response carries until the envelope middleware writes it out.
#[derive(Clone, Debug)]
pub(crate) struct PendingError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Value,
    /// Logged with the request id, never sent.
    pub cause: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let pending = PendingError {
            code: self.code(),
            message: self.public_message(),
            details: self.details(),
            cause: self.log_cause(),
        };
        let mut response = self.status().into_response();
        if self.status() == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, "Bearer".parse().unwrap());
        }
        response.extensions_mut().insert(pending);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_domain::QuotaResource;

    #[test]
    fn codes_and_statuses_follow_design_section_6() {
        assert_eq!(ApiError::field("cores", "x").status(), StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::Unauthenticated.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(ApiError::NotFound("job").status(), StatusCode::NOT_FOUND);
        let q = QuotaExceeded { resource: QuotaResource::Vcpus, limit: 4, used: 4, requested: 1 };
        assert_eq!(ApiError::QuotaExceeded(q).status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(ApiError::IdempotencyKeyReused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(ApiError::IdempotencyKeyInProgress.status(), StatusCode::CONFLICT);
        assert_eq!(ApiError::ServiceUnavailable("x".into()).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ApiError::Internal("x".into()).status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn internals_are_never_in_the_public_message() {
        let e = ApiError::Internal("password=hunter2 at db.internal:5432".into());
        assert!(!e.public_message().contains("hunter2"));
        assert_eq!(e.details(), Value::Null);
        assert!(e.log_cause().unwrap().contains("hunter2"));
    }

    #[test]
    fn quota_details_name_the_limit() {
        let q = QuotaExceeded { resource: QuotaResource::MemoryMib, limit: 4096, used: 4000, requested: 512 };
        let e = ApiError::QuotaExceeded(q);
        assert_eq!(e.details()["resource"], "memoryMib");
        assert!(e.public_message().contains("memoryMib"));
    }
}
