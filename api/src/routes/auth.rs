//! Browser sign-in (backend-for-frontend, DESIGN §5) and `GET /v1/me`.
//!
//! * `GET /auth/login?returnTo=/path`: starts the authorization code flow (PKCE S256, state,
//!   nonce) and binds the state to this browser with a short-lived `__Host-` cookie.
//! * `GET /auth/callback`: checks that cookie against `state`, finishes the flow, sets the
//!   session cookie and sends the browser to its `returnTo`.
//! * `POST /auth/logout`: ends the session (same-origin and CSRF-token checked), then sends
//!   the browser to the provider's end-session endpoint (RP-initiated logout) when it has one.
//! * `GET /v1/me`: the caller, their tenant and role, the session's CSRF token for the SPA, and
//!   the impersonating administrator if any.
//!
//! The `/auth/*` routes are navigations, not API calls: their errors are HTML pages with the
//! request id (the envelope layer lets `text/html` through), never the JSON envelope.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nimbus_db::tenants;
use nimbus_domain::{ApiResponse, MeView, TenantView, UserView};
use serde::Deserialize;

use crate::auth::oidc::SignInError;
use crate::auth::session::{SESSION_COOKIE, SessionId, cookie_value, set_cookie};
use crate::auth::{AuthUser, Credential, csrf};
use crate::error::ApiError;
use crate::html::page;
use crate::middleware::RequestId;
use crate::state::AppState;

/// The cookie binding a started sign-in's `state` to the browser that started it (login CSRF).
pub const LOGIN_COOKIE: &str = "__Host-nimbus_login";

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/logout", post(logout))
        .route("/v1/me", get(me))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
struct LoginQuery {
    /// Where to send the browser once signed in: a path on this site (printable ASCII, not
    /// `//…` nor `/\…`); absent or empty: `/`.
    #[param(max_length = 2048, pattern = r"^(/([!-.0-\[\]-~][!-\[\]-~]*)?)?$", example = "/vms")]
    return_to: Option<String>,
}

/// Starts the browser sign-in: sends the browser to the identity provider (authorization code
/// flow with PKCE), binding the attempt to this browser with a short-lived cookie.
#[utoipa::path(
    get, path = "/auth/login", operation_id = "login", tag = "Authentication",
    params(LoginQuery),
    responses(
        (status = 303, description = "To the identity provider's authorization endpoint.", headers(
            ("Location" = String, description = "The provider's authorization URL."),
            ("Set-Cookie" = String,
                description = "`__Host-nimbus_login`: binds the sign-in's `state` to this browser."),
        )),
        (status = 400, description = "An HTML page: `returnTo` is not a path on this site, or the query is malformed.",
            content_type = "text/html", body = String, example = json!(HTML_EXAMPLE)),
        (status = 401, description = "An HTML page: the request carries an `Authorization` header that is not a valid \
            credential (this page needs none).", content_type = "text/html", body = String,
            example = json!(HTML_EXAMPLE)),
        (status = 429, description = "An HTML page: over the rate limit; `Retry-After` says when to try again.",
            content_type = "text/html", body = String, example = json!(HTML_EXAMPLE)),
        (status = 503, description = "An HTML page: sign-in is not configured (no identity provider), or the provider \
            or a dependency is unavailable.", content_type = "text/html", body = String, example = json!(HTML_EXAMPLE)),
    )
)]
async fn login(State(state): State<AppState>, rid: RequestId, Query(q): Query<LoginQuery>) -> Response {
    let Some(identity) = state.identity() else {
        return page(&rid, StatusCode::SERVICE_UNAVAILABLE, "Sign-in is not configured", NOT_CONFIGURED);
    };
    let return_to = match q.return_to.as_deref() {
        None | Some("") => "/".to_owned(),
        Some(r) => match safe_return_to(r) {
            Some(r) => r,
            None => return page(&rid, StatusCode::BAD_REQUEST, "Invalid sign-in link", BAD_RETURN_TO),
        },
    };
    match identity.start_login(&return_to).await {
        Ok(start) => {
            let ttl = identity.config().login_ttl;
            redirect(start.url.as_str(), &[set_cookie(LOGIN_COOKIE, &start.state, Some(ttl))])
        }
        Err(e) => sign_in_error(&rid, e),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct CallbackQuery {
    /// The authorization code (with `state`, on success).
    code: Option<String>,
    /// The `state` the sign-in started with; it must match this browser's login cookie.
    state: Option<String>,
    /// The provider's error, when it ended the sign-in without a code (`access_denied`, …).
    error: Option<String>,
}

/// The cookie `GET /auth/callback` reads, as the OpenAPI document describes it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Cookie)]
#[allow(dead_code)] // Describes the cookie; `callback` reads it.
struct LoginCookie {
    /// The cookie `GET /auth/login` set: the sign-in's `state`.
    #[param(rename = "__Host-nimbus_login", required = false)]
    login: String,
}

/// Where the identity provider sends the browser back: finishes the sign-in, sets the session
/// cookie and sends the browser to its `returnTo`.
#[utoipa::path(
    get, path = "/auth/callback", operation_id = "loginCallback", tag = "Authentication",
    params(CallbackQuery, LoginCookie),
    responses(
        (status = 303, description = "Signed in: to the `returnTo` the sign-in started with.", headers(
            ("Location" = String, description = "The `returnTo` path."),
            ("Set-Cookie" = String,
                description = "`__Host-nimbus_session` (the session), and the login cookie cleared."),
        )),
        (status = 400, description = "An HTML page: the link is invalid, expired or already used (a missing or \
            unmatched `state`, no `code`), the provider refused or its answer could not be verified.",
            content_type = "text/html", body = String, example = json!(HTML_EXAMPLE)),
        (status = 401, description = "An HTML page: the request carries an `Authorization` header that is not a valid \
            credential (this page needs none).", content_type = "text/html", body = String,
            example = json!(HTML_EXAMPLE)),
        (status = 403, description = "An HTML page: sign-in refused (no or unverified email, an unusable claim, a \
            deactivated account).", content_type = "text/html", body = String, example = json!(HTML_EXAMPLE)),
        (status = 429, description = "An HTML page: over the rate limit; `Retry-After` says when to try again.",
            content_type = "text/html", body = String, example = json!(HTML_EXAMPLE)),
        (status = 503, description = "An HTML page: sign-in (or sign-up) is not configured, or the provider or a \
            dependency is unavailable.", content_type = "text/html", body = String, example = json!(HTML_EXAMPLE)),
    )
)]
async fn callback(
    State(state): State<AppState>,
    rid: RequestId,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(identity) = state.identity() else {
        return page(&rid, StatusCode::SERVICE_UNAVAILABLE, "Sign-in is not configured", NOT_CONFIGURED);
    };
    let clear_login = set_cookie(LOGIN_COOKIE, "", None);
    if let Some(error) = q.error {
        tracing::info!(oidc.error = %error, "the provider ended the sign-in with an error");
        let mut r = page(&rid, StatusCode::BAD_REQUEST, "Sign-in was not completed", PROVIDER_REFUSED);
        append_cookie(&mut r, &clear_login);
        return r;
    }
    let (Some(code), Some(returned_state)) = (q.code, q.state) else {
        return page(&rid, StatusCode::BAD_REQUEST, "Invalid sign-in link", BAD_STATE);
    };
    // The state must be the one this browser was given: a callback carrying someone else's
    // code (login CSRF) or a state from another tab is refused before any exchange.
    let bound = cookie_value(&headers, LOGIN_COOKIE)
        .is_some_and(|c| csrf::constant_time_eq(c.as_bytes(), returned_state.as_bytes()));
    if !bound {
        return page(&rid, StatusCode::BAD_REQUEST, "Invalid sign-in link", BAD_STATE);
    }
    match identity.finish_login(&returned_state, &code).await {
        Ok((done, cookie)) => {
            tracing::info!(user.id = %done.user.id, tenant.id = %done.user.tenant_id, "signed in");
            // A session this browser had before is ended, not left to idle out.
            if let Some(old) = cookie_value(&headers, SESSION_COOKIE).and_then(SessionId::from_cookie) {
                let _ = identity.sessions().delete(&old).await;
            }
            let session_cookie = set_cookie(SESSION_COOKIE, &cookie, Some(identity.config().session_absolute));
            redirect(&done.return_to, &[session_cookie, clear_login])
        }
        Err(e) => {
            let mut r = sign_in_error(&rid, e);
            append_cookie(&mut r, &clear_login);
            r
        }
    }
}

/// The form of `POST /auth/logout` (a plain HTML form cannot send the `X-CSRF-Token` header).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct LogoutForm {
    /// The session's CSRF token (`GET /v1/me`), when the `X-CSRF-Token` header is not sent.
    #[schema(nullable = false, example = "q8Vw2n5J1bXc7kR0tY4uHs")]
    csrf_token: Option<String>,
}

/// The header `POST /auth/logout` reads, as the OpenAPI document describes it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Describes the header; `logout` reads it.
struct CsrfHeader {
    /// The session's CSRF token (`GET /v1/me`); or the form's `csrfToken`.
    #[param(rename = "X-CSRF-Token", required = false)]
    csrf_token: String,
}

/// The cookie `POST /auth/logout` reads, as the OpenAPI document describes it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Cookie)]
#[allow(dead_code)] // Describes the cookie; `logout` reads it.
struct SessionCookie {
    /// The session to end.
    #[param(rename = "__Host-nimbus_session", required = false)]
    session: String,
}

/// Signs the browser out: ends the session, then sends the browser to the identity provider's
/// end-session endpoint when it has one (otherwise to `/`). Without a session it just goes to `/`.
#[utoipa::path(
    post, path = "/auth/logout", operation_id = "logout", tag = "Authentication",
    params(CsrfHeader, SessionCookie),
    request_body(content = LogoutForm, content_type = "application/x-www-form-urlencoded",
        description = "Optional; read whatever its `Content-Type`."),
    responses(
        (status = 303, description = "Signed out (or no session): to the provider's end-session endpoint or `/`.",
            headers(
                ("Location" = String, description = "The provider's end-session URL, or `/`."),
                ("Set-Cookie" = String, description = "`__Host-nimbus_session` cleared."),
            )),
        (status = 400, description = "An HTML page: the request is malformed (text that cannot be stored: NUL).",
            content_type = "text/html", body = String, example = json!(HTML_EXAMPLE)),
        (status = 401, description = "An HTML page: the request carries an `Authorization` header that is not a valid \
            credential (this page needs none).", content_type = "text/html", body = String,
            example = json!(HTML_EXAMPLE)),
        (status = 403, description = "An HTML page: sign-out refused, the request did not come from this site (its \
            `Origin`, or a missing or wrong CSRF token).", content_type = "text/html", body = String,
            example = json!(HTML_EXAMPLE)),
        (status = 429, description = "An HTML page: over the rate limit; `Retry-After` says when to try again.",
            content_type = "text/html", body = String, example = json!(HTML_EXAMPLE)),
        (status = 503, description = "An HTML page: sign-in is not configured, or the session store is unavailable.",
            content_type = "text/html", body = String, example = json!(HTML_EXAMPLE)),
    )
)]
async fn logout(State(state): State<AppState>, rid: RequestId, headers: HeaderMap, body: Bytes) -> Response {
    let Some(identity) = state.identity() else {
        return page(&rid, StatusCode::SERVICE_UNAVAILABLE, "Sign-in is not configured", NOT_CONFIGURED);
    };
    let clear = set_cookie(SESSION_COOKIE, "", None);
    let Some(id) = cookie_value(&headers, SESSION_COOKIE).and_then(SessionId::from_cookie) else {
        return redirect("/", &[clear]);
    };
    let session = match identity.sessions().load(&id).await {
        Ok(Some(s)) => s,
        Ok(None) => return redirect("/", &[clear]),
        Err(e) => return unavailable(&rid, e),
    };
    // A cross-site form must not be able to sign the user out: the same checks as every
    // state-changing request, with the token also accepted as a form field (a plain HTML form
    // cannot set headers).
    let form: LogoutForm = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let token = headers.get(csrf::CSRF_HEADER).and_then(|v| v.to_str().ok()).or(form.csrf_token.as_deref());
    let checked = csrf::check_origin(&headers, &identity.config().public_origin())
        .and_then(|()| csrf::check_token(token, &session.csrf_token));
    if checked.is_err() {
        return page(&rid, StatusCode::FORBIDDEN, "Sign-out refused", CSRF_REFUSED);
    }
    if let Err(e) = identity.sessions().delete(&id).await {
        return unavailable(&rid, e);
    }
    tracing::info!(user.id = %session.user_id, "signed out");
    let target = match identity.end_session_endpoint().await {
        Some(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                if let Some(id_token) = &session.id_token {
                    q.append_pair("id_token_hint", id_token);
                }
                q.append_pair("client_id", &identity.config().client_id);
                q.append_pair("post_logout_redirect_uri", &identity.config().post_logout_uri());
            }
            url.to_string()
        }
        None => "/".to_owned(),
    };
    redirect(&target, &[clear])
}

/// A user as `/v1/me` names them.
fn user_view(u: &nimbus_db::users::User) -> UserView {
    UserView { id: u.id, email: u.email.clone(), name: u.display_name.clone(), role: u.role }
}

/// The caller: their user, tenant and role, how they authenticated, the session's CSRF token,
/// and the administrator impersonating them, if any.
#[utoipa::path(
    get, path = "/v1/me", operation_id = "getMe", tag = "Authentication",
    responses((status = 200, description = "Who the credential belongs to.", body = ApiResponse<MeView>))
)]
async fn me(State(state): State<AppState>, auth: AuthUser, rid: RequestId) -> Result<Response, ApiError> {
    let tenant = tenants::get(state.db(), auth.tenant()).await?;
    let (auth_method, csrf_token) = match &auth.credential {
        Credential::Session(s) => ("session", Some(s.csrf_token.clone())),
        Credential::Jwt(_) => ("jwt", None),
        Credential::ApiKey(_) => ("apiKey", None),
    };
    let view = MeView {
        user: user_view(&auth.user),
        tenant: TenantView { id: tenant.id, name: tenant.name },
        role: auth.role(),
        auth_method: auth_method.to_owned(),
        csrf_token,
        impersonator: auth.impersonator.as_ref().map(user_view),
    };
    Ok(super::data(&rid, view).into_response())
}

/// `returnTo` as a same-site path, or `None`: only `/…` and never `//host` or `/\host`, which
/// browsers read as another origin (an open redirect), nor control characters, nor anything but
/// printable ASCII (it becomes a `Location` header, which only carries ASCII; the SPA's links are
/// percent-encoded already).
pub fn safe_return_to(r: &str) -> Option<String> {
    let ok = r.starts_with('/')
        && !r.starts_with("//")
        && !r.starts_with("/\\")
        && r.len() <= 2048
        && r.chars().all(|c| c.is_ascii_graphic() && c != '\\');
    ok.then(|| r.to_owned())
}

/// What the `/auth/*` error pages look like (`crate::html::page`), for the OpenAPI document.
const HTML_EXAMPLE: &str = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Invalid \
    sign-in link · Nimbus</title></head><body><main><h1>Invalid sign-in link</h1><p>This sign-in link is invalid, \
    has expired or was already used. Start again from the sign-in page.</p><p><a href=\"/\">Back to Nimbus</a></p>\
    <p><small>Request id: <code>0193a5c4-7e1f-7b3a-9c2d-5e8f1a2b3c4d</code></small></p></main></body></html>\n";

const NOT_CONFIGURED: &str = "This Nimbus has no identity provider configured; use an API key.";
const BAD_RETURN_TO: &str = "The returnTo parameter must be a path on this site, like /vms.";
const BAD_STATE: &str =
    "This sign-in link is invalid, has expired or was already used. Start again from the sign-in page.";
const PROVIDER_REFUSED: &str = "The identity provider did not complete the sign-in. Start again from the sign-in page.";
const CSRF_REFUSED: &str = "The sign-out request did not come from this site.";

fn sign_in_error(rid: &RequestId, e: SignInError) -> Response {
    match e {
        SignInError::ProviderDown(cause) => {
            tracing::warn!(error.cause = %cause, "identity provider unavailable");
            page(
                rid,
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is unavailable right now",
                "The identity provider cannot be reached. Try again in a few minutes.",
            )
        }
        SignInError::BadState => page(rid, StatusCode::BAD_REQUEST, "Invalid sign-in link", BAD_STATE),
        SignInError::Rejected(cause) => {
            tracing::warn!(error.cause = %cause, "sign-in rejected");
            page(
                rid,
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                "The identity provider's answer could not be verified. Start again from the sign-in page.",
            )
        }
        SignInError::NeedsEmail => page(
            rid,
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            "Your account at the identity provider has no email address, which Nimbus needs to create your account.",
        ),
        SignInError::EmailNotVerified => page(
            rid,
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            "Your identity provider has not verified your email address. Verify it there, then sign in again.",
        ),
        SignInError::InvalidClaim(claim) => {
            tracing::warn!(oidc.claim = claim, "sign-in refused: the provider sent an unusable claim");
            page(
                rid,
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                "Your account at the identity provider has an email address or identifier Nimbus cannot use.",
            )
        }
        SignInError::Deactivated => page(
            rid,
            StatusCode::FORBIDDEN,
            "Account deactivated",
            "This account is deactivated. Contact your administrator.",
        ),
        SignInError::NoSignupPlan => {
            tracing::error!("sign-up plan missing: first sign-ins cannot create tenants (OIDC_SIGNUP_PLAN)");
            page(
                rid,
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-up is unavailable",
                "New accounts cannot be created right now. Contact the operator of this service.",
            )
        }
        SignInError::Api(e) => unavailable(rid, e),
    }
}

fn unavailable(rid: &RequestId, e: ApiError) -> Response {
    tracing::error!(error = %e, "sign-in failed");
    page(rid, StatusCode::SERVICE_UNAVAILABLE, "Sign-in is unavailable right now", "Try again in a few minutes.")
}

/// A 303 to `to` with `Set-Cookie`s.
fn redirect(to: &str, cookies: &[String]) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    for c in cookies {
        append_cookie(&mut r, c);
    }
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn append_cookie(r: &mut Response, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(login, callback, logout, me), modifiers(&OPTIONAL_BODY))]
pub struct ApiDoc;

/// The logout form may be left out: a request without one is signed out too (with the
/// `X-CSRF-Token` header).
const OPTIONAL_BODY: crate::openapi::OptionalBody = crate::openapi::OptionalBody("/auth/logout");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_relative_paths_are_return_targets() {
        assert_eq!(safe_return_to("/vms?x=1").as_deref(), Some("/vms?x=1"));
        assert_eq!(safe_return_to("/vms/%C3%BC").as_deref(), Some("/vms/%C3%BC"));
        // Whatever passes becomes a Location header.
        assert!(HeaderValue::from_str(&safe_return_to("/a?b=c&d=%20#x").unwrap()).is_ok());
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/\\evil.example",
            "vms",
            "/a\nb",
            "/a\\b",
            "javascript:x",
            "/ü",
            "/a b",
        ] {
            assert_eq!(safe_return_to(bad), None, "{bad}");
        }
    }
}
