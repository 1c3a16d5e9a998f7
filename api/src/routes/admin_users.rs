//! The provider's operators manage users, tenants' plans and impersonation (issue #4, item 4).
//! Every route takes [`AdminUser`] (role `admin`, scope `admin`, not impersonated) and
//! deliberately spans tenants: these are the only handlers that call the `*_any_tenant` /
//! `*_all_tenants` repository functions.
//!
//! * `GET /v1/admin/users[?q=&tenant=&role=&active=&page=&perPage=]`: users of every tenant,
//!   newest first; `q` matches email or display name (case-insensitive substring).
//! * `POST /v1/admin/users` `{email, displayName?, role, tenantId | newTenant:{name, planId}}`
//!   → 201: a user in an existing tenant, or in a new tenant on a plan (one transaction).
//! * `GET /v1/admin/users/{id}`, `PATCH /v1/admin/users/{id}` `{role?, displayName?}`.
//! * `POST /v1/admin/users/{id}/deactivate` and `/reactivate`: a deactivated user's API keys
//!   and sessions stop at the next request (both re-read the user every time); reactivating
//!   brings back the keys that were not revoked meanwhile. Administrators cannot deactivate or
//!   demote themselves (409), so an operator never locks themselves out by mistake.
//! * `GET /v1/admin/plans`: every plan with its limits and prices.
//! * `PUT /v1/admin/tenants/{id}/plan[?force=true]` `{planId}`: moves a tenant to a plan. A plan
//!   whose limits are below what the tenant holds now is refused with 409 `CONFLICT` listing
//!   each exceeded limit, unless `force=true`: then it is applied (nothing running is touched;
//!   the tenant simply cannot create until it is back under the limits) and the answer lists
//!   the exceeded limits in `overLimits`. The check holds the tenant's usage row locked, so a
//!   concurrent create cannot slip in between.
//!
//! * `POST /v1/admin/users/{id}/impersonate` / `DELETE /v1/admin/impersonation`: start and stop
//!   acting as a user in a browser session (the session's `impersonating` field; see
//!   [`crate::auth::impersonation`]). Bearer callers send `Nimbus-Impersonate` instead and get
//!   400 here. The stop route is the one admin route an impersonated session reaches: it is the
//!   way back, it needs the real caller to be an administrator, and it only ends impersonation.
//!
//! Unknown ids answer 404 `NOT_FOUND`; ids named in a body that do not exist are 400 on that
//! field.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use chrono::{DateTime, Utc};
use nimbus_db::plans::{self, Plan};
use nimbus_db::users::{self, NewUser, User, UserFilter, UserUpdate};
use nimbus_db::{DbError, tenants};
use nimbus_domain::{
    ApiError as ApiErrorBody, ApiResponse, ListResponse, PlanId, PlanLimits, PlanPrices, QuotaResource, ResourceUsage,
    Role, TenantId, UserId,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;

use crate::auth::impersonation;
use crate::auth::{AdminUser, AuthUser, Credential};
use crate::error::{ApiError, FieldError};
use crate::extract::{JsonBody, QueryParams, parse_id};
use crate::middleware::RequestId;
use crate::routes::PageQuery;
use crate::state::AppState;

/// The longest display name accepted.
pub const MAX_DISPLAY_NAME_CHARS: usize = 200;
/// The longest tenant name (the `tenants_name_check` constraint).
pub const MAX_TENANT_NAME_CHARS: usize = 200;
/// The longest search term.
pub const MAX_QUERY_CHARS: usize = 200;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/users", get(list).post(create))
        .route("/v1/admin/users/{id}", get(show).patch(update))
        .route("/v1/admin/users/{id}/deactivate", post(deactivate))
        .route("/v1/admin/users/{id}/reactivate", post(reactivate))
        .route("/v1/admin/users/{id}/impersonate", post(start_impersonation))
        .route("/v1/admin/impersonation", delete(stop_impersonation))
        .route("/v1/admin/plans", get(list_plans))
        .route("/v1/admin/tenants/{id}/plan", put(assign_plan))
}

/// A user as operators see it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AdminUserView)]
pub struct UserView {
    /// Id.
    id: UserId,
    /// Their tenant.
    tenant_id: TenantId,
    /// Email address (unique in the tenant, case-insensitively).
    #[schema(example = "ada@example.com")]
    email: String,
    /// Display name, if any.
    #[schema(required = true, example = "Ada Lovelace")]
    display_name: Option<String>,
    /// Role in their tenant.
    role: Role,
    /// `false` once deactivated: their API keys and sessions stop working.
    active: bool,
    /// Created at.
    created_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            id: u.id,
            tenant_id: u.tenant_id,
            email: u.email,
            display_name: u.display_name,
            role: u.role,
            active: u.active,
            created_at: u.created_at,
        }
    }
}

fn user_not_found(e: DbError) -> ApiError {
    match e {
        DbError::NotFound => ApiError::NotFound("user"),
        e => e.into(),
    }
}

/// `?q=&tenant=&role=&active=&page=&perPage=`.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Part of the email or display name (case-insensitive; at most 200 characters).
    #[param(max_length = 200, example = "ada")]
    q: Option<String>,
    /// Only this tenant's users.
    tenant: Option<TenantId>,
    /// Only users with this role.
    role: Option<Role>,
    /// Only active (`true`) or deactivated (`false`) users.
    active: Option<bool>,
    /// 1-based page (default 1).
    #[param(minimum = 1)]
    page: Option<u32>,
    /// Items per page (default 25, at most 100).
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<u32>,
}

/// Lists the users of every tenant.
///
/// Newest first; `q` matches part of the email or display name, case-insensitively.
#[utoipa::path(
    get, path = "/v1/admin/users", operation_id = "listAdminUsers", tag = "Administration", params(ListQuery),
    responses((status = 200, description = "A page of users across tenants.", body = ListResponse<UserView>))
)]
async fn list(
    State(state): State<AppState>,
    AdminUser(_): AdminUser,
    rid: RequestId,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Response, ApiError> {
    let request = PageQuery { page: q.page, per_page: q.per_page }.request()?;
    let term = q.q.as_deref().map(str::trim).filter(|t| !t.is_empty());
    if term.is_some_and(|t| t.chars().count() > MAX_QUERY_CHARS) {
        return Err(ApiError::field("q", format!("must be at most {MAX_QUERY_CHARS} characters")));
    }
    let filter = UserFilter { q: term.map(str::to_owned), tenant: q.tenant, role: q.role, active: q.active };
    let (items, total) = users::search_all_tenants(state.db(), &filter, request).await?;
    let items: Vec<UserView> = items.into_iter().map(UserView::from).collect();
    Ok(super::page(&rid, items, request, total).into_response())
}

/// Shows one user of any tenant.
#[utoipa::path(
    get, path = "/v1/admin/users/{id}", operation_id = "getAdminUser", tag = "Administration",
    params(("id" = UserId, Path, description = "The user's id.")),
    responses((status = 200, description = "The user.", body = ApiResponse<UserView>))
)]
async fn show(
    State(state): State<AppState>,
    AdminUser(_): AdminUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: UserId = parse_id(&id, "user")?;
    let user = users::get_any_tenant(state.db(), id).await.map_err(user_not_found)?;
    Ok(super::data(&rid, UserView::from(user)).into_response())
}

// The patterns below are `crate::validation::display_text` (and the trimming before it) as
// regular expressions: no control or bidirectional formatting character, and a visible one
// (a display name may also be blank: it is then none).

/// The new tenant of `POST /v1/admin/users`.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewTenant {
    /// Its name: 1-200 characters once trimmed, with a visible one and no control or
    /// bidirectional formatting characters.
    #[schema(
        example = "Acme Ltd",
        min_length = 1,
        max_length = 200,
        pattern = r"^[ \t\n\x0b\x0c\r\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]*[^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069 \t\n\x0b\x0c\r\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u00ad\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200d\u2060-\u2064\u206a-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0][^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]*[ \t\n\x0b\x0c\r\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    name: String,
    /// Its plan (`GET /v1/admin/plans`).
    plan_id: PlanId,
}

/// The body of `POST /v1/admin/users`: give exactly one of `tenantId` and `newTenant`.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({
    "email": "ada@example.com",
    "displayName": "Ada Lovelace",
    "role": "admin",
    "newTenant": { "name": "Acme Ltd", "planId": "0193a5c4-7e1f-7b3a-9c2d-5e8f1a2b3c4d" }
}))]
struct CreateUser {
    /// Email address, unique in the tenant (case-insensitively); surrounding spaces are
    /// trimmed.
    #[schema(
        example = "ada@example.com",
        min_length = 3,
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+$"
    )]
    email: String,
    /// Display name: at most 200 characters once trimmed, with a visible one and no control or
    /// bidirectional formatting characters; blank or `null` means none.
    #[serde(default)]
    #[schema(
        example = "Ada Lovelace",
        max_length = 200,
        pattern = r"^[ \t\n\x0b\x0c\r\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*([^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]*[^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069 \t\n\x0b\x0c\r\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u00ad\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200d\u2060-\u2064\u206a-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0][^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]*)?[ \t\n\x0b\x0c\r\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    display_name: Option<String>,
    /// Role in the tenant.
    role: Role,
    /// An existing tenant to add the user to.
    #[serde(default)]
    tenant_id: Option<TenantId>,
    /// A tenant to create for the user (in the same transaction).
    #[serde(default)]
    new_tenant: Option<NewTenant>,
}

/// Whether `email` is an address the `users_email_check` constraint accepts: one `@` with
/// something on both sides, no whitespace, at most 254 characters.
fn email_problem(email: &str) -> Option<&'static str> {
    if email.is_empty() || email.len() > 254 {
        return Some("must be 1-254 characters");
    }
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !email.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            None
        }
        _ => Some("must be an email address like name@example.com"),
    }
}

/// A display name trimmed, or the problem with it (`None` = no name).
fn display_name(field: &str, raw: Option<&str>, errors: &mut Vec<FieldError>) -> Option<String> {
    let name = raw.map(str::trim).filter(|n| !n.is_empty())?;
    if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        errors.push(FieldError::new(field, format!("must be at most {MAX_DISPLAY_NAME_CHARS} characters")));
    } else if let Err(problem) = crate::validation::display_text(name) {
        errors.push(FieldError::new(field, problem));
    }
    Some(name.to_owned())
}

/// Where a new user goes.
enum Destination {
    Existing(TenantId),
    New { name: String, plan: PlanId },
}

fn validate_create(body: &CreateUser) -> Result<(String, Option<String>, Destination), ApiError> {
    let mut errors = Vec::new();
    let email = body.email.trim().to_owned();
    if let Some(problem) = email_problem(&email) {
        errors.push(FieldError::new("email", problem));
    }
    let display_name = display_name("displayName", body.display_name.as_deref(), &mut errors);
    let destination = match (&body.tenant_id, &body.new_tenant) {
        (Some(tenant), None) => Some(Destination::Existing(*tenant)),
        (None, Some(t)) => {
            let name = t.name.trim();
            if name.is_empty() || name.chars().count() > MAX_TENANT_NAME_CHARS {
                errors.push(FieldError::new("newTenant.name", format!("must be 1-{MAX_TENANT_NAME_CHARS} characters")));
            } else if let Err(problem) = crate::validation::display_text(name) {
                errors.push(FieldError::new("newTenant.name", problem));
            }
            Some(Destination::New { name: name.to_owned(), plan: t.plan_id })
        }
        _ => {
            errors.push(FieldError::new("tenantId", "give exactly one of tenantId and newTenant"));
            None
        }
    };
    match destination {
        Some(d) if errors.is_empty() => Ok((email, display_name, d)),
        _ => Err(ApiError::Validation(errors)),
    }
}

/// Creates a user.
///
/// In an existing tenant (`tenantId`), or in a new tenant on a plan (`newTenant`), in one
/// transaction.
#[utoipa::path(
    post, path = "/v1/admin/users", operation_id = "createAdminUser", tag = "Administration",
    request_body = CreateUser,
    responses(
        (status = 201, description = "Created: the user; `Location` is the user.", body = ApiResponse<UserView>,
            headers(("Location" = String, description = "`/v1/admin/users/{id}`"))),
        (status = 400, description = "`VALIDATION_FAILED`: a malformed field, not exactly one of `tenantId` and `newTenant`, or a `tenantId` or `newTenant.planId` that does not exist; `details` names the field.",
            body = ApiErrorBody),
        (status = 409, description = "`CONFLICT`: a user with this email exists in the tenant; `details.fields` names `email`.",
            body = ApiErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    rid: RequestId,
    body: JsonBody<CreateUser>,
) -> Result<Response, ApiError> {
    let (email, display_name, destination) = validate_create(&body.value)?;
    let new = NewUser { email, display_name, role: body.value.role };

    let mut tx = state.db().begin().await.map_err(DbError::from)?;
    let tenant = match destination {
        Destination::Existing(tenant) => match tenants::get(&mut *tx, tenant).await {
            Ok(t) => t.id,
            Err(DbError::NotFound) => return Err(ApiError::field("tenantId", "no such tenant")),
            Err(e) => return Err(e.into()),
        },
        Destination::New { name, plan } => match tenants::create(&mut *tx, &name, plan).await {
            Ok(t) => t.id,
            Err(DbError::ForeignKey { .. }) => return Err(ApiError::field("newTenant.planId", "no such plan")),
            Err(e) => return Err(e.into()),
        },
    };
    let user = match users::create(&mut *tx, tenant, &new).await {
        Ok(user) => user,
        Err(DbError::Conflict { constraint }) if constraint == "users_tenant_email_key" => {
            return Err(ApiError::taken(
                "a user with this email already exists in the tenant",
                FieldError::new("email", "already used in this tenant"),
            ));
        }
        Err(DbError::Check { constraint }) if constraint == "users_email_check" => {
            return Err(ApiError::field("email", "must be an email address like name@example.com"));
        }
        Err(e) => return Err(e.into()),
    };
    tx.commit().await.map_err(DbError::from)?;
    tracing::info!(admin.id = %admin.user.id, user.id = %user.id, tenant.id = %user.tenant_id, "user created by an admin");

    let location = HeaderValue::from_str(&format!("/v1/admin/users/{}", user.id)).ok();
    let mut response = (StatusCode::CREATED, super::data(&rid, UserView::from(user))).into_response();
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `Some(None)` for an explicit `null`, `Some(Some(v))` for a value; absence is `None` through
/// `#[serde(default)]`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The body of `PATCH /v1/admin/users/{id}`: at least one of its fields.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(min_properties = 1)]
struct UpdateUser {
    /// The new role (an administrator cannot change their own).
    #[serde(default)]
    #[schema(value_type = Role)]
    role: Option<Role>,
    /// The new display name (same rules as on creation); `null` or blank clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "Ada Lovelace", max_length = 200, pattern = r"^[ \t\n\x0b\x0c\r\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*([^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]*[^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069 \t\n\x0b\x0c\r\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u00ad\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200d\u2060-\u2064\u206a-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0][^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]*)?[ \t\n\x0b\x0c\r\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$")]
    display_name: Option<Option<String>>,
}

/// 409 when an administrator would change their own standing (role or activity).
fn not_oneself(admin: &User, target: UserId, what: &str) -> Result<(), ApiError> {
    if admin.id == target {
        return Err(ApiError::Conflict(format!("administrators cannot {what} themselves; ask another administrator")));
    }
    Ok(())
}

/// Changes a user's role or display name.
///
/// Administrators cannot change their own role.
#[utoipa::path(
    patch, path = "/v1/admin/users/{id}", operation_id = "updateAdminUser", tag = "Administration",
    params(("id" = UserId, Path, description = "The user's id.")),
    request_body = UpdateUser,
    responses(
        (status = 200, description = "The user, changed.", body = ApiResponse<UserView>),
        (status = 409, description = "`CONFLICT`: administrators cannot change their own role.", body = ApiErrorBody),
    )
)]
async fn update(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    rid: RequestId,
    Path(id): Path<String>,
    body: JsonBody<UpdateUser>,
) -> Result<Response, ApiError> {
    let id: UserId = parse_id(&id, "user")?;
    let body = body.value;
    if body.role.is_none() && body.display_name.is_none() {
        return Err(ApiError::Validation(vec![FieldError::body("give role and/or displayName")]));
    }
    let mut errors = Vec::new();
    let display_name = body.display_name.as_ref().map(|n| display_name("displayName", n.as_deref(), &mut errors));
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if body.role.is_some_and(|r| r != admin.user.role) {
        not_oneself(&admin.user, id, "change the role of")?;
    }
    let update = UserUpdate { role: body.role, display_name };
    let user = users::update_any_tenant(state.db(), id, &update).await.map_err(user_not_found)?;
    state.key_cache().forget_all();
    tracing::info!(admin.id = %admin.user.id, user.id = %user.id, role = user.role.as_str(), "user updated by an admin");
    Ok(super::data(&rid, UserView::from(user)).into_response())
}

/// Deactivates a user.
///
/// Their API keys and sessions stop working at their next request. Administrators cannot deactivate
/// themselves.
#[utoipa::path(
    post, path = "/v1/admin/users/{id}/deactivate", operation_id = "deactivateAdminUser", tag = "Administration",
    params(("id" = UserId, Path, description = "The user's id.")),
    responses(
        (status = 200, description = "The user, deactivated (deactivating them again changes nothing).",
            body = ApiResponse<UserView>),
        (status = 409, description = "`CONFLICT`: administrators cannot deactivate themselves.", body = ApiErrorBody),
    )
)]
async fn deactivate(
    state: State<AppState>,
    admin: AdminUser,
    rid: RequestId,
    id: Path<String>,
) -> Result<Response, ApiError> {
    set_active(state, admin, rid, id, false).await
}

/// Reactivates a user.
///
/// Their API keys that were not revoked meanwhile work again.
#[utoipa::path(
    post, path = "/v1/admin/users/{id}/reactivate", operation_id = "reactivateAdminUser", tag = "Administration",
    params(("id" = UserId, Path, description = "The user's id.")),
    responses((status = 200, description = "The user, active (reactivating an active user changes nothing).",
        body = ApiResponse<UserView>))
)]
async fn reactivate(
    state: State<AppState>,
    admin: AdminUser,
    rid: RequestId,
    id: Path<String>,
) -> Result<Response, ApiError> {
    set_active(state, admin, rid, id, true).await
}

async fn set_active(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    rid: RequestId,
    Path(id): Path<String>,
    active: bool,
) -> Result<Response, ApiError> {
    let id: UserId = parse_id(&id, "user")?;
    if !active {
        not_oneself(&admin.user, id, "deactivate")?;
    }
    let user = users::set_active_any_tenant(state.db(), id, active).await.map_err(user_not_found)?;
    state.key_cache().forget_all();
    tracing::info!(admin.id = %admin.user.id, user.id = %user.id, active, "user activity changed by an admin");
    Ok(super::data(&rid, UserView::from(user)).into_response())
}

/// 400 for a credential that is not a browser session: only sessions hold an impersonation.
fn session_of(caller: &AuthUser) -> Result<&crate::auth::session::SessionCredential, ApiError> {
    match &caller.credential {
        Credential::Session(session) => Ok(session),
        _ => Err(ApiError::field(
            "Authorization",
            "impersonation is kept by browser sessions; API clients send the Nimbus-Impersonate header instead",
        )),
    }
}

/// The session store (sessions exist only with OIDC configured).
fn session_store(state: &AppState) -> Result<&crate::auth::session::SessionStore, ApiError> {
    state
        .identity()
        .map(|identity| identity.sessions())
        .ok_or_else(|| ApiError::ServiceUnavailable("impersonation by session without OIDC".into()))
}

/// What a session is doing after a change of impersonation.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ImpersonationView {
    /// The administrator the session belongs to.
    impersonator: UserId,
    /// The user the session acts as; `null` when it acts as the administrator.
    #[schema(required = true)]
    impersonating: Option<UserView>,
}

/// Starts acting as a user in the caller's browser session.
///
/// Until it stops (`DELETE /v1/admin/impersonation`), the session's requests are the user's,
/// audited under both names. API clients send the `Nimbus-Impersonate` header instead.
#[utoipa::path(
    post, path = "/v1/admin/users/{id}/impersonate", operation_id = "startImpersonation", tag = "Administration",
    params(("id" = UserId, Path, description = "The user to act as.")),
    responses(
        (status = 200, description = "The session now acts as the user.", body = ApiResponse<ImpersonationView>),
        (status = 400, description = "`VALIDATION_FAILED`: the caller is not a browser session (API clients send `Nimbus-Impersonate`), or the user is the caller.",
            body = ApiErrorBody),
        (status = 403, description = "`FORBIDDEN`: the user is deactivated, or the caller is not an administrator.",
            body = ApiErrorBody),
    )
)]
async fn start_impersonation(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let target: UserId = parse_id(&id, "user")?;
    let session = session_of(&admin)?;
    let user = impersonation::impersonation_target(&state, &admin.user, target).await?;
    if !session_store(&state)?.set_impersonating(&session.id, Some(user.id)).await? {
        return Err(ApiError::Unauthenticated);
    }
    tracing::info!(impersonator.id = %admin.user.id, user.id = %user.id, tenant.id = %user.tenant_id, "session impersonation started");
    let view = ImpersonationView { impersonator: admin.user.id, impersonating: Some(user.into()) };
    Ok(super::data(&rid, view).into_response())
}

/// Stops the impersonation of the caller's browser session.
///
/// The session acts as the administrator again. Reached by the impersonated session itself, or by
/// the administrator's own session (nothing to stop: the same answer).
#[utoipa::path(
    delete, path = "/v1/admin/impersonation", operation_id = "stopImpersonation", tag = "Administration",
    responses(
        (status = 200, description = "The session acts as the administrator again.", body = ApiResponse<ImpersonationView>),
        (status = 400, description = "`VALIDATION_FAILED`: the caller is not a browser session (API clients simply stop sending `Nimbus-Impersonate`).",
            body = ApiErrorBody),
    )
)]
async fn stop_impersonation(
    State(state): State<AppState>,
    caller: AuthUser,
    rid: RequestId,
) -> Result<Response, ApiError> {
    let admin = match &caller.impersonator {
        Some(admin) => admin.clone(),
        None => impersonation::may_impersonate(&caller)?,
    };
    let session = session_of(&caller)?;
    if !session_store(&state)?.set_impersonating(&session.id, None).await? {
        return Err(ApiError::Unauthenticated);
    }
    if caller.impersonator.is_some() {
        tracing::info!(impersonator.id = %admin.id, user.id = %caller.user.id, "session impersonation stopped");
    }
    let view = ImpersonationView { impersonator: admin.id, impersonating: None };
    Ok(super::data(&rid, view).into_response())
}

/// A plan as operators see it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PlanView {
    /// Id.
    id: PlanId,
    /// Name.
    #[schema(example = "standard")]
    name: String,
    /// What a tenant on it may hold.
    limits: PlanLimits,
    /// Its listed prices (what the current version charges, once valid).
    prices: PlanPrices,
    /// Created at.
    created_at: DateTime<Utc>,
    /// Set once archived: it takes no new tenants.
    #[schema(required = true)]
    archived_at: Option<DateTime<Utc>>,
}

impl From<Plan> for PlanView {
    fn from(p: Plan) -> Self {
        PlanView {
            id: p.id,
            name: p.name,
            limits: p.limits,
            prices: p.prices,
            created_at: p.created_at,
            archived_at: p.archived_at,
        }
    }
}

/// Lists every plan.
///
/// Archived ones included, with their limits and listed prices.
#[utoipa::path(
    get, path = "/v1/admin/plans", operation_id = "listAdminPlans", tag = "Administration",
    responses((status = 200, description = "Every plan.", body = ApiResponse<Vec<PlanView>>))
)]
async fn list_plans(
    State(state): State<AppState>,
    AdminUser(_): AdminUser,
    rid: RequestId,
) -> Result<Response, ApiError> {
    let plans: Vec<PlanView> = plans::list(state.db()).await?.into_iter().map(PlanView::from).collect();
    Ok(super::data(&rid, plans).into_response())
}

/// One limit a tenant's current usage exceeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverLimit {
    /// Which limit.
    resource: QuotaResource,
    /// The plan's limit.
    limit: i64,
    /// What the tenant holds.
    used: i64,
}

/// Every limit of `limits` that `usage` exceeds (pure, so it is unit-tested).
pub fn over_limits(limits: &PlanLimits, usage: &ResourceUsage) -> Vec<OverLimit> {
    [
        (QuotaResource::Instances, i64::from(limits.max_instances), usage.instances),
        (QuotaResource::Vcpus, i64::from(limits.max_vcpus), usage.vcpus),
        (QuotaResource::MemoryMib, limits.max_memory_mib, usage.memory_mib),
        (QuotaResource::DiskGib, limits.max_disk_gib, usage.disk_gib),
    ]
    .into_iter()
    .filter(|(_, limit, used)| used > limit)
    .map(|(resource, limit, used)| OverLimit { resource, limit, used })
    .collect()
}

/// The body of `PUT /v1/admin/tenants/{id}/plan`.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AssignPlan {
    /// The plan (not archived; `GET /v1/admin/plans`).
    plan_id: PlanId,
}

/// `?force=`.
#[derive(Clone, Copy, Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ForceQuery {
    /// Apply the plan even when the tenant holds more than it allows (default `false`): nothing
    /// running is touched, the tenant cannot create until it is back under the limits.
    force: Option<bool>,
}

/// A tenant after a plan change.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TenantPlanView {
    /// The tenant's id.
    id: TenantId,
    /// The tenant's name.
    #[schema(example = "Acme Ltd")]
    name: String,
    /// Its plan now.
    plan: PlanView,
    /// What it holds now.
    used: ResourceUsage,
    /// The limits the tenant is above (only with `force=true`; empty otherwise).
    over_limits: Vec<OverLimit>,
}

/// Moves a tenant to another plan.
///
/// A plan whose limits are below what the tenant holds is refused unless `force=true`; then it is
/// applied (nothing running is touched, the tenant cannot create until it is back under the limits)
/// and the answer lists the limits it is over.
#[utoipa::path(
    put, path = "/v1/admin/tenants/{id}/plan", operation_id = "setTenantPlan", tag = "Administration",
    params(("id" = TenantId, Path, description = "The tenant's id."), ForceQuery),
    request_body = AssignPlan,
    responses(
        (status = 200, description = "The tenant on its new plan, with what it holds and the limits it is over.",
            body = ApiResponse<TenantPlanView>),
        (status = 400, description = "`VALIDATION_FAILED`: a malformed body or `force`, or a `planId` that does not exist or is archived.",
            body = ApiErrorBody),
        (status = 409, description = "`CONFLICT`: the tenant holds more than the plan allows; `details.overLimits` lists each limit (pass `force=true` to apply it anyway).",
            body = ApiErrorBody),
    )
)]
async fn assign_plan(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    rid: RequestId,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<ForceQuery>,
    body: JsonBody<AssignPlan>,
) -> Result<Response, ApiError> {
    let tenant: TenantId = parse_id(&id, "tenant")?;
    let force = q.force.unwrap_or(false);
    let mut tx = state.db().begin().await.map_err(DbError::from)?;
    let used = match tenants::usage_for_update(&mut *tx, tenant).await {
        Ok(used) => used,
        Err(DbError::NotFound) => return Err(ApiError::NotFound("tenant")),
        Err(e) => return Err(e.into()),
    };
    let plan = match plans::get(&mut *tx, body.value.plan_id).await {
        Ok(plan) => plan,
        Err(DbError::NotFound) => return Err(ApiError::field("planId", "no such plan")),
        Err(e) => return Err(e.into()),
    };
    if plan.archived_at.is_some() {
        return Err(ApiError::field("planId", "the plan is archived: it takes no new tenants"));
    }
    let over = over_limits(&plan.limits, &used);
    if !over.is_empty() && !force {
        return Err(ApiError::ConflictWith {
            message: format!(
                "the tenant uses more than plan '{}' allows; free resources first or pass force=true",
                plan.name
            ),
            details: json!({ "overLimits": over }),
        });
    }
    let updated = tenants::set_plan(&mut *tx, tenant, plan.id).await?;
    tx.commit().await.map_err(DbError::from)?;
    tracing::info!(
        admin.id = %admin.user.id, tenant.id = %tenant, plan.id = %plan.id, forced = !over.is_empty(),
        "tenant moved to another plan by an admin"
    );
    let view = TenantPlanView { id: updated.id, name: updated.name, plan: plan.into(), used, over_limits: over };
    Ok(super::data(&rid, view).into_response())
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    list,
    create,
    show,
    update,
    deactivate,
    reactivate,
    start_impersonation,
    stop_impersonation,
    list_plans,
    assign_plan
))]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_like_the_database_does() {
        assert_eq!(email_problem("ann@acme.test"), None);
        for bad in ["", "ann", "@acme.test", "ann@", "a b@acme.test", "a@b@c"] {
            assert!(email_problem(bad).is_some(), "{bad}");
        }
        assert!(email_problem(&format!("{}@x.y", "a".repeat(260))).is_some());
    }

    #[test]
    fn over_limits_lists_each_exceeded_limit() {
        let limits = PlanLimits { max_instances: 2, max_vcpus: 4, max_memory_mib: 4096, max_disk_gib: 100 };
        let fits = ResourceUsage { instances: 2, vcpus: 4, memory_mib: 4096, disk_gib: 100 };
        assert!(over_limits(&limits, &fits).is_empty(), "at the limit is not over it");
        let over = ResourceUsage { instances: 3, vcpus: 4, memory_mib: 8192, disk_gib: 10 };
        assert_eq!(
            over_limits(&limits, &over),
            vec![
                OverLimit { resource: QuotaResource::Instances, limit: 2, used: 3 },
                OverLimit { resource: QuotaResource::MemoryMib, limit: 4096, used: 8192 },
            ]
        );
    }

    #[test]
    fn a_user_goes_to_exactly_one_tenant() {
        let body = |tenant: bool, new: bool| CreateUser {
            email: "ann@acme.test".into(),
            display_name: None,
            role: Role::User,
            tenant_id: tenant.then(TenantId::new),
            new_tenant: new.then(|| NewTenant { name: "Acme".into(), plan_id: PlanId::new() }),
        };
        assert!(validate_create(&body(true, false)).is_ok());
        assert!(validate_create(&body(false, true)).is_ok());
        assert!(validate_create(&body(true, true)).is_err());
        assert!(validate_create(&body(false, false)).is_err());
    }
}
