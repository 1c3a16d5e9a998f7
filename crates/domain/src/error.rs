//! The stable, machine-readable error codes of the API (DESIGN §6) and of failed jobs. Clients
//! branch on these strings, so a code is never renamed or reused for another meaning.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => ($s:literal, $status:literal)),+ $(,)?) => {
        /// A stable error code, serialised in SCREAMING_SNAKE_CASE.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum ErrorCode {
            $($(#[$doc])* $variant),+
        }

        impl ErrorCode {
            /// Every code.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The wire spelling.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $s),+ }
            }

            /// The HTTP status the API answers with for this code (DESIGN §6). Job-only codes
            /// map to the status that fits if they ever surface in a response.
            pub const fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status),+ }
            }
        }

        impl std::str::FromStr for ErrorCode {
            type Err = crate::status::ParseEnumError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok(ErrorCode::$variant),)+
                    _ => Err(crate::status::ParseEnumError { kind: "error code", value: s.to_owned() }),
                }
            }
        }
    };
}

error_codes! {
    /// Malformed JSON, unknown fields, out-of-range values; `details` lists the fields.
    ValidationFailed => ("VALIDATION_FAILED", 400),
    /// No or invalid credentials.
    Unauthenticated => ("UNAUTHENTICATED", 401),
    /// Authenticated but not allowed.
    Forbidden => ("FORBIDDEN", 403),
    /// No such resource in the caller's tenant (a foreign tenant's id answers the same).
    NotFound => ("NOT_FOUND", 404),
    /// The route exists but not with this method; `Allow` lists the methods it takes.
    MethodNotAllowed => ("METHOD_NOT_ALLOWED", 405),
    /// The request conflicts with the current state.
    Conflict => ("CONFLICT", 409),
    /// An instance of that name already exists in the tenant.
    NameTaken => ("NAME_TAKEN", 409),
    /// A request with the same `Idempotency-Key` is still being processed.
    IdempotencyKeyInProgress => ("IDEMPOTENCY_KEY_IN_PROGRESS", 409),
    /// Another operation is queued or running on the instance; `details.job` is its handle.
    InstanceBusy => ("INSTANCE_BUSY", 409),
    /// The instance's status does not allow the operation; `details.status` is the status.
    InvalidInstanceState => ("INVALID_INSTANCE_STATE", 409),
    /// A resize the plan or the instance cannot take (below the plan's minimum or the current
    /// disk); `details` names the field.
    InvalidResize => ("INVALID_RESIZE", 422),
    /// The plan's snapshot limit per instance is reached.
    SnapshotLimit => ("SNAPSHOT_LIMIT", 422),
    /// The plan's backup limit per instance is reached (backups made on the Proxmox side count).
    BackupLimit => ("BACKUP_LIMIT", 422),
    /// The `Idempotency-Key` was used with a different request.
    IdempotencyKeyReused => ("IDEMPOTENCY_KEY_REUSED", 422),
    /// The plan's limits would be exceeded; `details` names the limit.
    QuotaExceeded => ("QUOTA_EXCEEDED", 422),
    /// A prepaid tenant's balance is exhausted: top it up to create instances again.
    PaymentRequired => ("PAYMENT_REQUIRED", 402),
    /// The tenant is suspended for an unpaid balance (or by an operator): the API is read-only
    /// but for billing and deleting instances until it is lifted.
    TenantSuspended => ("TENANT_SUSPENDED", 402),
    /// No payment provider is set up: top-ups are added by operators.
    PaymentsNotConfigured => ("PAYMENTS_NOT_CONFIGURED", 501),
    /// The template does not exist.
    UnknownTemplate => ("UNKNOWN_TEMPLATE", 422),
    /// The node does not exist.
    UnknownNode => ("UNKNOWN_NODE", 422),
    /// The job is not in a state that allows the operation (e.g. retrying a running job).
    InvalidJobState => ("INVALID_JOB_STATE", 409),
    /// Too many requests; see `Retry-After`.
    RateLimited => ("RATE_LIMITED", 429),
    /// Proxmox is unreachable or failing.
    ProxmoxUnavailable => ("PROXMOX_UNAVAILABLE", 503),
    /// A dependency (database, Redis) is unavailable.
    ServiceUnavailable => ("SERVICE_UNAVAILABLE", 503),
    /// A bug or an unexpected failure; details are logged, never echoed.
    Internal => ("INTERNAL", 500),
    /// Job: Proxmox refused the operation for a reason retrying will not fix.
    ProxmoxRejected => ("PROXMOX_REJECTED", 422),
    /// Job: an operation did not finish in time.
    Timeout => ("TIMEOUT", 504),
    /// Job: the worker holding it stopped renewing its lease on the last attempt.
    LeaseExpired => ("LEASE_EXPIRED", 500),
    /// Job: every attempt failed with a transient error.
    AttemptsExhausted => ("ATTEMPTS_EXHAUSTED", 503),
    /// Job: cancelled before it ran.
    Cancelled => ("CANCELLED", 409),
    /// The mail server refused a notification's address for good (it is not tried again).
    EmailRejected => ("EMAIL_REJECTED", 422),
    /// The mail server could not be reached or refused for now (the email is retried).
    EmailUnavailable => ("EMAIL_UNAVAILABLE", 503),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialise_as_their_stable_strings() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(code.as_str().parse::<ErrorCode>().unwrap(), *code);
            assert!(code.as_str().chars().all(|c| c.is_ascii_uppercase() || c == '_'));
        }
        assert_eq!(ErrorCode::QuotaExceeded.http_status(), 422);
        assert_eq!(ErrorCode::IdempotencyKeyInProgress.http_status(), 409);
    }
}
