//! A suspended tenant (DESIGN §10: its prepaid balance exhausted past the grace period, or an
//! operator's hold) can read everything but change nothing, except what gets it out of there or
//! lowers what it owes: billing, deleting (instances, snapshots, backups, keys), signing out.
//! Refused writes are `402 TENANT_SUSPENDED`. Operators' routes decide for themselves.

use axum::http::Method;
use serde_json::json;

use super::AuthUser;
use crate::error::ApiError;
use crate::state::AppState;
use nimbus_domain::ErrorCode;

/// Whether a suspended tenant may still make this request.
pub fn allowed_while_suspended(method: &Method, path: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE)
        || path.starts_with("/v1/billing/")
        || path.starts_with("/v1/admin/")
        || path.starts_with("/auth/")
}

/// `402 TENANT_SUSPENDED` for a write of a suspended tenant's caller.
pub async fn refuse_writes(state: &AppState, caller: &AuthUser, method: &Method, path: &str) -> Result<(), ApiError> {
    if allowed_while_suspended(method, path) {
        return Ok(());
    }
    let suspended: Option<(String, Option<String>)> =
        sqlx::query_as("select billing_state, suspension_reason from tenants where id = $1")
            .bind(caller.tenant().as_uuid())
            .fetch_optional(state.db())
            .await
            .map_err(nimbus_db::DbError::from)?;
    match suspended {
        Some((state, reason)) if state == "suspended" => Err(ApiError::Refused {
            code: ErrorCode::TenantSuspended,
            message: match &reason {
                Some(_) => "the account is suspended by the provider; billing stays available".into(),
                None => {
                    "the account is suspended for an unpaid balance; top it up to lift it (billing stays available)"
                        .into()
                }
            },
            details: json!({ "billingState": state, "reason": reason }),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_billing_and_deletes_stay_open() {
        assert!(allowed_while_suspended(&Method::GET, "/v1/vms"));
        assert!(allowed_while_suspended(&Method::DELETE, "/v1/vms/x"));
        assert!(allowed_while_suspended(&Method::POST, "/v1/billing/anything"));
        assert!(allowed_while_suspended(&Method::POST, "/auth/logout"));
        assert!(!allowed_while_suspended(&Method::POST, "/v1/vms"));
        assert!(!allowed_while_suspended(&Method::POST, "/v1/vms/x/actions/start"));
        assert!(!allowed_while_suspended(&Method::PUT, "/v1/vms/x/backup-policy"));
        assert!(!allowed_while_suspended(&Method::POST, "/v1/billingx"));
    }
}
