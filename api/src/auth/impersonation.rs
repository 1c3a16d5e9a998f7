//! Impersonation: an administrator (role `admin` and, for API keys, scope `admin`) acts as
//! another user, of any tenant, to see and do what that user sees and does (issue #4, item 4).
//!
//! * Bearer callers send `Nimbus-Impersonate: <userId>` with each request.
//! * Browser sessions start and stop it with `POST /v1/admin/users/{id}/impersonate` and
//!   `DELETE /v1/admin/impersonation`, which set the session's `impersonating` field.
//!
//! An impersonated request runs as the target user: its tenant, its role (never the
//! administrator's: a target who is also an admin gains nothing), and the credential's scopes.
//! [`refuse_admin_routes`] closes every `/v1/admin` route to it, so impersonation can never be a
//! way to escalate or to chain. Every response carries `Nimbus-Impersonated-By: <admin id>`,
//! and every impersonated request is logged with both ids.

use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use nimbus_db::DbError;
use nimbus_db::users::{self, User};
use nimbus_domain::{Role, UserId};
use serde_json::json;

use super::{AuthUser, Scope};
use crate::error::ApiError;
use crate::state::AppState;

/// The request header naming the user to act as.
pub const IMPERSONATE_HEADER: &str = "nimbus-impersonate";
/// The response header naming the administrator behind an impersonated request.
pub const IMPERSONATED_BY_HEADER: &str = "nimbus-impersonated-by";

/// Applies the `Nimbus-Impersonate` header to the resolved caller. Without the header the
/// caller is returned unchanged; with it, the caller must be an administrator and the answer
/// is the target user acting under the administrator's credential.
pub(super) async fn apply(
    state: &AppState,
    caller: Option<AuthUser>,
    headers: &HeaderMap,
) -> Result<Option<AuthUser>, ApiError> {
    let Some(raw) = headers.get(IMPERSONATE_HEADER) else { return Ok(caller) };
    // Impersonation needs a proven administrator: without a credential it is simply 401.
    let caller = caller.ok_or(ApiError::Unauthenticated)?;
    let target = raw
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<UserId>().ok())
        .ok_or_else(|| ApiError::field("Nimbus-Impersonate", "must be a user id"))?;
    act_as(state, caller, target).await.map(Some)
}

/// `caller` acting as user `target`: checks that the caller may impersonate and that the
/// target can be impersonated, and logs it.
pub async fn act_as(state: &AppState, caller: AuthUser, target: UserId) -> Result<AuthUser, ApiError> {
    let admin = may_impersonate(&caller)?;
    let user = impersonation_target(state, &admin, target).await?;
    tracing::info!(
        impersonator.id = %admin.id,
        user.id = %user.id,
        tenant.id = %user.tenant_id,
        "request impersonates a user"
    );
    Ok(AuthUser { user, credential: caller.credential, impersonator: Some(admin) })
}

/// The administrator behind `caller`, or 403: only an admin (with the `admin` scope) who is not
/// already impersonating someone may impersonate.
pub fn may_impersonate(caller: &AuthUser) -> Result<User, ApiError> {
    refuse_admin_routes(caller)?;
    caller.require_role(Role::Admin)?;
    caller.require_scope(Scope::Admin)?;
    Ok(caller.user.clone())
}

/// The user `admin` may act as: an existing, active user other than the admin (404 for an
/// unknown id, 403 for a deactivated user, 400 for oneself).
pub async fn impersonation_target(state: &AppState, admin: &User, target: UserId) -> Result<User, ApiError> {
    if target == admin.id {
        return Err(ApiError::field("userId", "an administrator cannot impersonate themselves"));
    }
    let user = match users::get_any_tenant(state.db(), target).await {
        Ok(user) => user,
        Err(DbError::NotFound) => return Err(ApiError::NotFound("user")),
        Err(e) => return Err(e.into()),
    };
    if !user.active {
        return Err(ApiError::Forbidden {
            message: "a deactivated user cannot be impersonated".into(),
            details: json!({ "userId": user.id, "active": false }),
        });
    }
    Ok(user)
}

/// 403 for an impersonated request: the admin routes are never reachable through another user.
pub fn refuse_admin_routes(caller: &AuthUser) -> Result<(), ApiError> {
    match &caller.impersonator {
        None => Ok(()),
        Some(admin) => Err(ApiError::Forbidden {
            message: "an impersonated request cannot use the admin routes; stop impersonating first".into(),
            details: json!({ "impersonatedBy": admin.id }),
        }),
    }
}

/// Adds `Nimbus-Impersonated-By: <admin id>` to a response.
pub(super) fn mark_response(response: &mut Response, admin: UserId) {
    if let Ok(value) = HeaderValue::from_str(&admin.to_string()) {
        response.headers_mut().insert(IMPERSONATED_BY_HEADER, value);
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use nimbus_db::api_keys::ApiKey;
    use nimbus_domain::{ApiKeyId, TenantId};

    use super::*;
    use crate::auth::Credential;

    fn user(role: Role) -> User {
        User {
            id: UserId::new(),
            tenant_id: TenantId::new(),
            email: "x@y.test".into(),
            display_name: None,
            role,
            active: true,
            created_at: Utc::now(),
        }
    }

    fn caller(role: Role, scopes: &[&str]) -> AuthUser {
        let user = user(role);
        let key = ApiKey {
            id: ApiKeyId::new(),
            tenant_id: user.tenant_id,
            user_id: user.id,
            name: "k".into(),
            prefix: "p".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            expires_at: None,
            last_used_at: None,
            revoked_at: None,
            created_at: Utc::now(),
        };
        AuthUser { user, credential: Credential::ApiKey(key), impersonator: None }
    }

    #[test]
    fn only_an_admin_with_the_admin_scope_who_is_not_impersonating_may_impersonate() {
        assert!(may_impersonate(&caller(Role::Admin, &[])).is_ok());
        assert!(may_impersonate(&caller(Role::Admin, &["admin"])).is_ok());
        assert!(may_impersonate(&caller(Role::Admin, &["read", "write"])).is_err());
        assert!(may_impersonate(&caller(Role::User, &[])).is_err());
        assert!(may_impersonate(&caller(Role::BillingAdmin, &["admin"])).is_err());
        // Acting as an admin gives nothing more: chains are refused.
        let mut chained = caller(Role::Admin, &[]);
        chained.impersonator = Some(user(Role::Admin));
        assert!(may_impersonate(&chained).is_err());
        assert!(refuse_admin_routes(&chained).is_err());
        assert!(refuse_admin_routes(&caller(Role::Admin, &[])).is_ok());
    }
}
