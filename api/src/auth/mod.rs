//! Who is calling, and what they may do (DESIGN §5).
//!
//! [`authenticate`] is a layer: it resolves the request's credential once, before any handler,
//! and stores the resulting [`AuthUser`] in the request's extensions, so that later layers (rate
//! limits, the audit log) and handlers see the same caller. A credential that is presented but
//! invalid is 401 at once; a request without one passes through anonymously, and the routes that
//! need a caller refuse it with 401 through their extractor.
//!
//! Every route declares who may call it by the extractor it takes:
//! * [`AuthUser`]: any signed-in caller; safe methods need the `read` scope, the others `write`.
//! * [`AdminUser`]: the platform operator (role `admin` and, for API keys, scope `admin`).
//!
//! Credentials, in the order they are tried:
//! * `Authorization: Bearer nmb_…`: a personal API key (`nimbus_db::api_keys`).
//! * `Authorization: Bearer <JWT>`: an access token of the OIDC provider ([`jwt`]), when OIDC is
//!   configured.
//! * Cookie `__Host-nimbus_session`: a browser session of the OIDC sign-in ([`session`]); its
//!   state-changing requests pass the CSRF check ([`csrf`]). Not consulted under `/auth/`,
//!   whose pages read it themselves.
//!
//! An administrator may act as another user ([`impersonation`]): the request then runs as that
//! user, [`AuthUser::impersonator`] names the administrator, the response carries
//! `Nimbus-Impersonated-By`, and the admin routes are closed to it.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nimbus_db::api_keys::{self, ApiKey};
use nimbus_db::users::User;
use nimbus_domain::{Role, TenantId};
use serde_json::json;

use crate::error::ApiError;
use crate::ratelimit::client_ip;
use crate::state::AppState;

pub mod csrf;
pub mod impersonation;
pub mod jwt;
pub mod key_cache;
pub mod oidc;
pub mod session;
pub mod suspension;

/// What an API key may be limited to. A key without scopes has its owner's full role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Safe methods.
    Read,
    /// State-changing methods.
    Write,
    /// The `/v1/admin` routes (also needs the `admin` role).
    Admin,
}

impl Scope {
    /// The name stored on keys and shown in errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    /// The scope a request with `method` needs on a non-admin route.
    pub fn for_method(method: &Method) -> Scope {
        if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
            Scope::Read
        } else {
            Scope::Write
        }
    }
}

/// How the caller proved who they are.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A personal API key.
    ApiKey(ApiKey),
    /// A browser session (OIDC sign-in): the user's full role, CSRF-checked.
    Session(session::SessionCredential),
    /// An access token (JWT) of the OIDC provider: the user's full role.
    Jwt(jwt::JwtCredential),
}

/// The authenticated caller. Every query a handler makes is scoped by [`AuthUser::tenant`].
#[derive(Clone, Debug)]
pub struct AuthUser {
    /// The active user the request acts as.
    pub user: User,
    /// The credential presented.
    pub credential: Credential,
    /// The administrator acting as [`AuthUser::user`], when the request is impersonated. The
    /// effective role is the user's; the admin routes refuse such requests.
    pub impersonator: Option<User>,
}

impl AuthUser {
    /// The caller's tenant.
    pub fn tenant(&self) -> TenantId {
        self.user.tenant_id
    }

    /// The caller's role.
    pub fn role(&self) -> Role {
        self.user.role
    }

    /// Whether the credential allows `scope` (the role is checked separately).
    pub fn has_scope(&self, scope: Scope) -> bool {
        match &self.credential {
            Credential::ApiKey(key) => {
                key.scopes.is_empty()
                    || key.scopes.iter().any(|s| s == scope.as_str())
                    // `write` implies `read`, `admin` implies both.
                    || (scope == Scope::Read && key.scopes.iter().any(|s| s == "write" || s == "admin"))
                    || (scope == Scope::Write && key.scopes.iter().any(|s| s == "admin"))
            }
            Credential::Session(_) | Credential::Jwt(_) => true,
        }
    }

    /// 403 unless the credential allows `scope`.
    pub fn require_scope(&self, scope: Scope) -> Result<(), ApiError> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                message: format!("this credential lacks the '{}' scope", scope.as_str()),
                details: json!({ "requiredScope": scope.as_str() }),
            })
        }
    }

    /// 403 unless the caller has `role`.
    pub fn require_role(&self, role: Role) -> Result<(), ApiError> {
        if self.user.role == role {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                message: format!("this operation requires the {} role", role.as_str()),
                details: json!({ "requiredRole": role.as_str() }),
            })
        }
    }
}

/// Whether the request presents a credential that [`resolve`] will look up.
fn presents_credential(request: &Request) -> bool {
    request.headers().contains_key(header::AUTHORIZATION)
        || (!request.uri().path().starts_with("/auth/")
            && session::cookie_value(request.headers(), session::SESSION_COOKIE).is_some())
}

/// The layer (install with `axum::middleware::from_fn_with_state`).
///
/// A client address that has spent its budget of failed authentications
/// ([`crate::ratelimit::RateLimiter::auth_failures_left`]) is answered 429 before its
/// credential is looked up; each 401 for a presented credential spends one.
pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let failures_counted = presents_credential(&request);
    let ip = if failures_counted {
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let ip = client_ip(peer, request.headers(), &state.rate_limiter().settings().trusted_proxies);
        if let Some(left) = state.rate_limiter().auth_failures_left(ip).await
            && !left.allowed
        {
            return crate::ratelimit::refused(&left);
        }
        ip
    } else {
        None
    };
    let caller = match resolve(&state, request.method(), request.uri().path(), request.headers()).await {
        Ok(caller) => caller,
        Err(e @ ApiError::Unauthenticated) if failures_counted => {
            let mut response = e.into_response();
            if let Some(spent) = state.rate_limiter().auth_failed(ip).await {
                spent.write_headers(response.headers_mut());
            }
            return response;
        }
        Err(e @ ApiError::Forbidden { .. }) if !request.headers().contains_key(header::AUTHORIZATION) => {
            // A session's request refused by the CSRF check: the audit row names whose session.
            let mut response = e.into_response();
            if let Some((user, tenant)) = session::owner(&state, request.headers()).await {
                crate::audit::attribute(&mut response, user, tenant);
            }
            return response;
        }
        Err(e) => return e.into_response(),
    };
    let caller = match impersonation::apply(&state, caller, request.headers()).await {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    if let Some(caller) = &caller
        && let Err(e) = suspension::refuse_writes(&state, caller, request.method(), request.uri().path()).await
    {
        return e.into_response();
    }
    let impersonator = caller.as_ref().and_then(|c| c.impersonator.as_ref()).map(|admin| admin.id);
    if let Some(caller) = caller {
        request.extensions_mut().insert(caller);
    }
    let mut response = next.run(request).await;
    if let Some(admin) = impersonator {
        impersonation::mark_response(&mut response, admin);
    }
    response
}

/// The caller behind the request's credential: `None` when none is presented, 401 when one is
/// presented and is not valid (malformed, unknown, revoked, expired, its user deactivated).
async fn resolve(
    state: &AppState,
    method: &Method,
    path: &str,
    headers: &axum::http::HeaderMap,
) -> Result<Option<AuthUser>, ApiError> {
    let Some(authorization) = headers.get(header::AUTHORIZATION) else {
        return session::caller(state, method, path, headers).await;
    };
    let token = authorization
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or(ApiError::Unauthenticated)?;
    if !token.starts_with("nmb_") && state.identity().is_some() {
        return jwt::caller(state, token).await.map(Some);
    }
    let lookup = match state.key_cache().get(token) {
        Ok(a) => return Ok(Some(AuthUser { user: a.user, credential: Credential::ApiKey(a.key), impersonator: None })),
        Err(lookup) if state.key_cache().was_refused(&lookup) => return Err(ApiError::Unauthenticated),
        Err(lookup) => lookup,
    };
    match api_keys::authenticate(state.db(), token).await? {
        Some(a) => {
            state.key_cache().store(lookup, &a);
            Ok(Some(AuthUser { user: a.user, credential: Credential::ApiKey(a.key), impersonator: None }))
        }
        None => {
            state.key_cache().store_refused(lookup);
            Err(ApiError::Unauthenticated)
        }
    }
}

/// Re-checks, for a long-lived request (an event stream), that `caller`'s credential still
/// authenticates: the key is not revoked or expired, the session not ended, the token not
/// expired, the user (and an impersonating administrator) still active. `marker` is the
/// [`key_cache::KeyCache::change_marker`] of the last check: the database is asked again only
/// when a key or user changed since (or the change listener cannot vouch for that).
pub async fn still_valid(state: &AppState, caller: &AuthUser, marker: &mut Option<u64>) -> Result<bool, ApiError> {
    let now = chrono::Utc::now();
    match &caller.credential {
        Credential::ApiKey(key) if key.expires_at.is_some_and(|at| at <= now) => return Ok(false),
        Credential::Jwt(jwt) if jwt.expires_at.is_some_and(|at| at <= now) => return Ok(false),
        Credential::Session(session) => {
            let Some(identity) = state.identity() else { return Ok(false) };
            match identity.sessions().load(&session.id).await? {
                Some(s) if s.impersonating == session.impersonating => {}
                _ => return Ok(false),
            }
        }
        _ => {}
    }
    let current = state.key_cache().change_marker();
    if current.is_some() && current == *marker {
        return Ok(true);
    }
    let live = match &caller.credential {
        Credential::ApiKey(key) => api_keys::is_live(state.db(), key.id).await?,
        Credential::Session(_) | Credential::Jwt(_) => true,
    };
    let mut users = vec![&caller.user];
    users.extend(caller.impersonator.as_ref());
    let mut active = live;
    for user in users {
        if !active {
            break;
        }
        active = match nimbus_db::users::get(state.db(), user.tenant_id, user.id).await {
            Ok(u) => u.active && u.role == user.role,
            Err(nimbus_db::DbError::NotFound) => false,
            Err(e) => return Err(e.into()),
        };
    }
    *marker = current;
    Ok(active)
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        let user = parts.extensions.get::<AuthUser>().cloned().ok_or(ApiError::Unauthenticated)?;
        user.require_scope(Scope::for_method(&parts.method))?;
        Ok(user)
    }
}

/// A caller with the `admin` or the `billing-admin` role (and, for API keys, the `admin`
/// scope): the provider's operators who manage prices, credit, terms, credit notes and
/// suspensions across tenants. A `billing-admin` reaches no other `/v1/admin` route.
#[derive(Clone, Debug)]
pub struct BillingOperator(pub AuthUser);

impl FromRequestParts<AppState> for BillingOperator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        let user = parts.extensions.get::<AuthUser>().cloned().ok_or(ApiError::Unauthenticated)?;
        impersonation::refuse_admin_routes(&user)?;
        if user.role() != Role::BillingAdmin {
            user.require_role(Role::Admin)?;
        }
        user.require_scope(Scope::Admin)?;
        Ok(BillingOperator(user))
    }
}

/// A caller with the `admin` role (and, for API keys, the `admin` scope): the provider's
/// operators, whose routes under `/v1/admin` may span tenants.
#[derive(Clone, Debug)]
pub struct AdminUser(pub AuthUser);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        let user = parts.extensions.get::<AuthUser>().cloned().ok_or(ApiError::Unauthenticated)?;
        // Checked first: the effective role is the impersonated user's, and an administrator
        // acting as someone must never reach these routes through them.
        impersonation::refuse_admin_routes(&user)?;
        user.require_role(Role::Admin)?;
        user.require_scope(Scope::Admin)?;
        Ok(AdminUser(user))
    }
}
