//! `/v1/auth/apikeys`: the caller's personal API keys (DESIGN §5, issue #4 item 3).
//!
//! * `POST /v1/auth/apikeys` `{name, scopes, expiresAt?}` → 201 with the token, shown this once
//!   (only its SHA-256 is stored).
//! * `GET /v1/auth/apikeys[?page=&perPage=]`: the caller's own keys, newest first — prefix,
//!   name, scopes, expiry, last use, revocation; never the token or its hash.
//! * `DELETE /v1/auth/apikeys/{id}` → 204: revokes the key; the next request with it is 401.
//!   Another user's key, in any tenant, answers 404 like a missing one.
//!
//! Scopes never exceed what created them: `admin` only for an administrator whose credential
//! has the `admin` scope, and a key created with a key gets at most that key's scopes (`admin`
//! implies `write`, `write` implies `read`). An impersonated request cannot create keys: a key
//! would outlive the impersonation and act in the user's name without saying who made it.
//! Names are unique among a user's live keys (409 `CONFLICT` naming `name`). A user has at most
//! `API_KEYS_PER_USER` live keys (default 50; 409 `CONFLICT` past it), all spending one rate
//! budget, and a key made with an expiring key expires no later than it.

use std::collections::HashSet;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use chrono::{DateTime, Utc};
use nimbus_db::DbError;
use nimbus_db::api_keys::{self, ApiKey};
use nimbus_domain::{
    ApiError as ApiErrorBody, ApiKeyId, ApiKeyView, ApiResponse, CreateKey, CreatedKey, ListResponse, Role,
};
use serde_json::json;

use crate::auth::{AuthUser, Credential, Scope};
use crate::error::{ApiError, FieldError};
use crate::extract::{JsonBody, QueryParams, parse_id};
use crate::middleware::RequestId;
use crate::routes::PageQuery;
use crate::routes::vms::not_found;
use crate::state::AppState;

/// The longest key name (the `api_keys_name_check` constraint).
pub const MAX_NAME_CHARS: usize = 100;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/auth/apikeys", get(list).post(create)).route("/v1/auth/apikeys/{id}", delete(revoke))
}

/// A key as its owner sees it.
fn key_view(k: ApiKey, now: DateTime<Utc>) -> ApiKeyView {
    let status = if k.revoked_at.is_some() {
        "revoked"
    } else if k.expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else {
        "active"
    };
    ApiKeyView {
        id: k.id,
        name: k.name,
        prefix: k.prefix,
        scopes: k.scopes,
        status: status.to_owned(),
        expires_at: k.expires_at,
        last_used_at: k.last_used_at,
        revoked_at: k.revoked_at,
        created_at: k.created_at,
    }
}

/// A scope by its wire name.
fn parse_scope(s: &str) -> Option<Scope> {
    match s {
        "read" => Some(Scope::Read),
        "write" => Some(Scope::Write),
        "admin" => Some(Scope::Admin),
        _ => None,
    }
}

/// Checks the body's shape and values, every problem at once; returns the trimmed name and the
/// scopes in a canonical order.
fn validate(body: &CreateKey, now: DateTime<Utc>) -> Result<(String, Vec<Scope>), ApiError> {
    let mut errors = Vec::new();
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        errors.push(FieldError::new("name", format!("must be 1-{MAX_NAME_CHARS} characters")));
    } else if let Err(problem) = crate::validation::display_text(name) {
        errors.push(FieldError::new("name", problem));
    }
    if body.scopes.is_empty() {
        errors.push(FieldError::new("scopes", "must list at least one of read, write, admin"));
    }
    let mut seen = HashSet::new();
    let mut scopes = Vec::new();
    for (i, s) in body.scopes.iter().enumerate() {
        match parse_scope(s) {
            None => errors.push(FieldError::new(format!("scopes[{i}]"), "must be one of read, write, admin")),
            Some(_) if !seen.insert(s.as_str()) => {
                errors.push(FieldError::new(format!("scopes[{i}]"), "is listed twice"))
            }
            Some(scope) => scopes.push(scope),
        }
    }
    if body.expires_at.is_some_and(|at| at <= now) {
        errors.push(FieldError::new("expiresAt", "must be in the future"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    scopes.sort_by_key(|s| match s {
        Scope::Read => 0,
        Scope::Write => 1,
        Scope::Admin => 2,
    });
    Ok((name.to_owned(), scopes))
}

/// When the new key expires: a key made with an API key that expires cannot outlive it (it
/// would make a short-lived credential permanent), so it inherits that expiry when none is
/// asked for, and asking for a later one is refused. Sessions and provider tokens stand for the
/// user signing in, who may make keys of any lifetime.
fn bounded_expiry(auth: &AuthUser, asked: Option<DateTime<Utc>>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Credential::ApiKey(parent) = &auth.credential else { return Ok(asked) };
    let Some(limit) = parent.expires_at else { return Ok(asked) };
    match asked {
        None => Ok(Some(limit)),
        Some(at) if at <= limit => Ok(Some(at)),
        Some(_) => Err(ApiError::field(
            "expiresAt",
            format!("must not be later than the expiry of the key making this request ({})", limit.to_rfc3339()),
        )),
    }
}

/// 403 unless the caller may hand out every one of `scopes`: its credential holds each scope,
/// and `admin` also needs the admin role.
fn authorise_scopes(auth: &AuthUser, scopes: &[Scope]) -> Result<(), ApiError> {
    for &scope in scopes {
        let role_ok = scope != Scope::Admin || auth.role() == Role::Admin;
        if !role_ok || !auth.has_scope(scope) {
            let why = if role_ok { "the credential making this request lacks it" } else { "it needs the admin role" };
            return Err(ApiError::Forbidden {
                message: format!("a key cannot be given the '{}' scope: {why}", scope.as_str()),
                details: json!({ "scope": scope.as_str() }),
            });
        }
    }
    Ok(())
}

/// Creates an API key for the caller; the answer holds its token, shown this once.
#[utoipa::path(
    post, path = "/v1/auth/apikeys", operation_id = "createApiKey", tag = "API keys",
    request_body = CreateKey,
    responses(
        (status = 201, description = "Created: the key and its `token` (`Authorization: Bearer <token>`).",
            body = ApiResponse<CreatedKey>),
        (status = 403, description = "`FORBIDDEN`: a scope the caller may not hand out (`admin` needs the admin role, \
            and a key gets at most the scopes of the credential making it), or the request is impersonated (and the \
            usual checks: a read-only key, a session's CSRF token).", body = ApiErrorBody),
        (status = 409, description = "`CONFLICT`: the caller has a live key of that name, or already has the most live \
            keys allowed (`API_KEYS_PER_USER`, default 50).", body = ApiErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    body: JsonBody<CreateKey>,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    if let Some(admin) = &auth.impersonator {
        return Err(ApiError::Forbidden {
            message: "API keys cannot be created while impersonating a user".into(),
            details: json!({ "impersonatedBy": admin.id }),
        });
    }
    let (name, scopes) = validate(&body.value, now)?;
    authorise_scopes(&auth, &scopes)?;
    let expires_at = bounded_expiry(&auth, body.value.expires_at)?;

    let scope_names: Vec<String> = scopes.iter().map(|s| s.as_str().to_owned()).collect();
    let limit = state.settings().api_keys_per_user;
    let created = api_keys::create_within_limit(
        state.db(),
        auth.tenant(),
        auth.user.id,
        &name,
        &scope_names,
        expires_at,
        i64::from(limit),
    )
    .await;
    let (key, token) = match created {
        Ok(Some(created)) => created,
        Ok(None) => {
            return Err(ApiError::ConflictWith {
                message: format!("you have {limit} live API keys, the most allowed; revoke one first"),
                details: json!({ "limit": limit }),
            });
        }
        Err(DbError::Conflict { constraint }) if constraint == "api_keys_user_name_key" => {
            return Err(ApiError::taken(
                "you already have a live API key with this name",
                FieldError::new("name", "already used by another of your live keys"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(api_key.id = %key.id, api_key.prefix = %key.prefix, user.id = %auth.user.id, "API key created");
    let key_id = key.id;
    let view = CreatedKey { key: key_view(key, now), token };
    let mut response = (StatusCode::CREATED, super::data(&rid, view)).into_response();
    crate::audit::Created::mark(&mut response, "apikeys", key_id);
    Ok(response)
}

/// The caller's own API keys, newest first (never their tokens).
#[utoipa::path(
    get, path = "/v1/auth/apikeys", operation_id = "listApiKeys", tag = "API keys", params(PageQuery),
    responses((status = 200, description = "A page of the caller's keys, live, expired and revoked.",
        body = ListResponse<ApiKeyView>))
)]
async fn list(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Response, ApiError> {
    let request = q.request()?;
    let (keys, total) = api_keys::list_for_user(state.db(), auth.tenant(), auth.user.id, request).await?;
    let now = Utc::now();
    let items: Vec<ApiKeyView> = keys.into_iter().map(|k| key_view(k, now)).collect();
    Ok(super::page(&rid, items, request, total).into_response())
}

/// Revokes one of the caller's API keys: the next request with it is 401.
#[utoipa::path(
    delete, path = "/v1/auth/apikeys/{id}", operation_id = "revokeApiKey", tag = "API keys",
    params(("id" = ApiKeyId, Path, description = "The key's id.")),
    responses((status = 204, description = "Revoked."))
)]
async fn revoke(State(state): State<AppState>, auth: AuthUser, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id: ApiKeyId = parse_id(&id, "API key")?;
    let key = api_keys::revoke_for_user(state.db(), auth.tenant(), auth.user.id, id)
        .await
        .map_err(|e| not_found(e, "API key"))?;
    // Other API processes hear of it through NOTIFY; this one forgets before it answers.
    state.key_cache().forget_all();
    tracing::info!(api_key.id = %key.id, user.id = %auth.user.id, "API key revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, create, revoke))]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;

    fn body(name: &str, scopes: &[&str], expires_at: Option<DateTime<Utc>>) -> CreateKey {
        CreateKey { name: name.into(), scopes: scopes.iter().map(|s| s.to_string()).collect(), expires_at }
    }

    fn fields(e: ApiError) -> Vec<String> {
        match e {
            ApiError::Validation(f) => f.into_iter().map(|f| f.field.unwrap_or_default()).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn valid_bodies_are_normalised() {
        let now = Utc::now();
        let (name, scopes) = validate(&body("  ci  ", &["write", "read"], None), now).unwrap();
        assert_eq!(name, "ci");
        assert_eq!(scopes, vec![Scope::Read, Scope::Write]);
        assert!(validate(&body("ci", &["admin"], Some(now + chrono::Duration::days(1))), now).is_ok());
    }

    #[test]
    fn every_problem_is_named_by_its_field() {
        let now = Utc::now();
        let e = validate(&body(" ", &["read", "root", "read"], Some(now)), now).unwrap_err();
        assert_eq!(fields(e), vec!["name", "scopes[1]", "scopes[2]", "expiresAt"]);
        assert_eq!(fields(validate(&body("ci", &[], None), now).unwrap_err()), vec!["scopes"]);
        assert_eq!(fields(validate(&body(&"x".repeat(101), &["read"], None), now).unwrap_err()), vec!["name"]);
        assert_eq!(fields(validate(&body("a\nb", &["read"], None), now).unwrap_err()), vec!["name"]);
    }
}
