//! `/v1/webhooks`: a tenant's webhook endpoints and their delivery log (DESIGN §11).
//!
//! * `GET /v1/webhooks/event-types`: the types an endpoint can subscribe to.
//! * `POST /v1/webhooks` `{url, description?, eventTypes?, enabled?, rateLimit?}` → 201 with the
//!   endpoint and its `secret` (`whsec_…`), shown this once. `eventTypes` empty: every type.
//! * `GET /v1/webhooks`, `GET|PATCH|DELETE /v1/webhooks/{id}`.
//! * `POST /v1/webhooks/{id}/secret/rotate` → the new secret, shown once; the previous one keeps
//!   signing (both signatures are sent) for 24 hours, so receivers can switch without a gap.
//! * `POST /v1/webhooks/{id}/test` → 202: a `webhook.test` event to this endpoint only.
//! * `GET /v1/webhooks/{id}/deliveries[?status=&page=&perPage=]`, newest first;
//!   `GET /v1/webhooks/{id}/deliveries/{deliveryId}` with its payload and every attempt.
//! * `POST /v1/webhooks/{id}/deliveries/{deliveryId}/replay` → 202: sent again now.
//! * `POST /v1/webhooks/{id}/recover` `{since, until?}` → 202: the endpoint's events in that range
//!   that it has no delivery of get one, and its failed deliveries there are sent again.
//!
//! The URL is checked for its form here; the SSRF guard judges the address of every attempt
//! where the connection is made (a refused address shows in the delivery log). Secrets are never
//! shown again after creation or rotation.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Duration, Utc};
use nimbus_db::events::{self, NewEvent, types};
use nimbus_db::webhooks::{self, Attempt, Delivery, Endpoint, EndpointFields};
use nimbus_domain::events::EVENT_TYPES;
use nimbus_webhooks::Secret;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::{ApiError, FieldError};
use crate::extract::{JsonBody, QueryParams, parse_id};
use crate::middleware::RequestId;
use crate::routes::vms::not_found;
use crate::routes::{PageQuery, data, page};
use crate::state::AppState;

/// The most endpoints a tenant may have.
pub const MAX_ENDPOINTS: i64 = 20;
/// How long the previous secret keeps signing after a rotation.
pub const ROTATION_WINDOW: Duration = Duration::hours(24);
/// The longest range one recovery covers.
const MAX_RECOVERY: Duration = Duration::days(31);

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks/event-types", get(event_types))
        .route("/v1/webhooks", get(list).post(create))
        .route("/v1/webhooks/{id}", get(show).patch(update).delete(remove))
        .route("/v1/webhooks/{id}/secret/rotate", post(rotate))
        .route("/v1/webhooks/{id}/test", post(send_test))
        .route("/v1/webhooks/{id}/deliveries", get(list_deliveries))
        .route("/v1/webhooks/{id}/deliveries/{delivery}", get(show_delivery))
        .route("/v1/webhooks/{id}/deliveries/{delivery}/replay", post(replay))
        .route("/v1/webhooks/{id}/recover", post(recover))
}

/// An endpoint as its owner sees it (never its secrets).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    pub id: Uuid,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub rate_limit: Option<i32>,
    pub failing_since: Option<DateTime<Utc>>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EndpointView {
    pub fn of(e: Endpoint, now: DateTime<Utc>) -> EndpointView {
        EndpointView {
            id: e.id,
            url: e.url,
            description: e.description,
            event_types: e.event_types,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            rate_limit: e.rate_limit,
            failing_since: e.failing_since,
            previous_secret_expires_at: e.previous_secret_expires_at.filter(|at| *at > now),
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedEndpoint {
    #[serde(flatten)]
    endpoint: EndpointView,
    secret: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryView {
    id: Uuid,
    event_id: Uuid,
    event_type: String,
    status: String,
    attempts: i32,
    next_attempt_at: Option<DateTime<Utc>>,
    last_status_code: Option<i32>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        DeliveryView {
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_status_code: d.last_status_code,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AttemptView {
    attempted_at: DateTime<Utc>,
    status_code: Option<i32>,
    error: Option<String>,
    latency_ms: i32,
    response_body: String,
    succeeded: bool,
}

impl From<Attempt> for AttemptView {
    fn from(a: Attempt) -> Self {
        AttemptView {
            attempted_at: a.attempted_at,
            status_code: a.status_code,
            error: a.error,
            latency_ms: a.latency_ms,
            response_body: a.response_body,
            succeeded: a.succeeded,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateEndpoint {
    url: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    event_types: Vec<String>,
    enabled: Option<bool>,
    rate_limit: Option<i32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UpdateEndpoint {
    url: Option<String>,
    description: Option<String>,
    event_types: Option<Vec<String>>,
    enabled: Option<bool>,
    /// `null` removes the cap; absent leaves it.
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Option<i32>>,
}

/// A field that may be `null`: `Some(None)` when sent as `null`, `None` when absent.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i32>>, D::Error> {
    Option::<i32>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RecoverBody {
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeliveryQuery {
    status: Option<String>,
    page: Option<u32>,
    per_page: Option<u32>,
}

/// Checks a webhook URL's form: absolute http(s), a host, no credentials, at most 2,000 chars.
fn check_url(raw: &str, errors: &mut Vec<FieldError>) {
    let problem = match url::Url::parse(raw) {
        _ if raw.len() > 2000 => Some("must be at most 2000 characters"),
        Err(_) => Some("must be an absolute http or https URL"),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => Some("must be an http or https URL"),
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Some("must name a host"),
        Ok(u) if !u.username().is_empty() || u.password().is_some() => Some("must not carry credentials"),
        Ok(_) => None,
    };
    if let Some(p) = problem {
        errors.push(FieldError::new("url", p));
    }
}

fn check_event_types(types: &[String], errors: &mut Vec<FieldError>) {
    for (i, t) in types.iter().enumerate() {
        if nimbus_domain::events::event_type(t).is_none() {
            errors.push(FieldError::new(format!("eventTypes[{i}]"), format!("'{t}' is not an event type")));
        }
    }
    if types.len() > EVENT_TYPES.len() {
        errors.push(FieldError::new("eventTypes", "lists a type twice"));
    }
}

fn check_description(d: &str, errors: &mut Vec<FieldError>) {
    if d.chars().count() > 500 {
        errors.push(FieldError::new("description", "must be at most 500 characters"));
    }
}

fn check_rate_limit(r: Option<i32>, errors: &mut Vec<FieldError>) {
    if r.is_some_and(|r| !(1..=10_000).contains(&r)) {
        errors.push(FieldError::new("rateLimit", "must be between 1 and 10000 deliveries per second"));
    }
}

fn done(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() { Ok(()) } else { Err(ApiError::Validation(errors)) }
}

fn dedup(mut types: Vec<String>) -> Vec<String> {
    types.sort_unstable();
    types.dedup();
    types
}

async fn event_types(_auth: AuthUser, rid: RequestId) -> Response {
    let types: Vec<Value> = EVENT_TYPES.iter().map(|t| json!({"type": t.name, "description": t.description})).collect();
    data(&rid, types).into_response()
}

async fn list(State(state): State<AppState>, auth: AuthUser, rid: RequestId) -> Result<Response, ApiError> {
    let now = Utc::now();
    let all = webhooks::list(state.db(), auth.tenant()).await?;
    Ok(data(&rid, all.into_iter().map(|e| EndpointView::of(e, now)).collect::<Vec<_>>()).into_response())
}

async fn create(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    body: JsonBody<CreateEndpoint>,
) -> Result<Response, ApiError> {
    let req = body.value;
    let mut errors = Vec::new();
    check_url(&req.url, &mut errors);
    check_event_types(&req.event_types, &mut errors);
    check_description(&req.description, &mut errors);
    check_rate_limit(req.rate_limit, &mut errors);
    done(errors)?;
    let mut tx = state.db().begin().await.map_err(nimbus_db::DbError::from)?;
    // Serialises creates per tenant, so the limit holds under concurrent requests.
    sqlx::query("select id from tenants where id = $1 for no key update")
        .bind(auth.tenant().as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(nimbus_db::DbError::from)?;
    if webhooks::count(&mut *tx, auth.tenant()).await? >= MAX_ENDPOINTS {
        return Err(ApiError::Conflict(format!("a tenant has at most {MAX_ENDPOINTS} webhook endpoints")));
    }
    let secret = Secret::generate().encode();
    let event_types = dedup(req.event_types);
    let new = webhooks::NewEndpoint {
        url: &req.url,
        description: req.description.trim(),
        event_types: &event_types,
        enabled: req.enabled.unwrap_or(true),
        rate_limit: req.rate_limit,
        secret: &secret,
    };
    let endpoint = webhooks::create(&mut *tx, auth.tenant(), &new).await?;
    tx.commit().await.map_err(nimbus_db::DbError::from)?;
    let created = CreatedEndpoint { endpoint: EndpointView::of(endpoint, Utc::now()), secret };
    Ok((StatusCode::CREATED, data(&rid, created)).into_response())
}

async fn endpoint(state: &AppState, auth: &AuthUser, id: &str) -> Result<Endpoint, ApiError> {
    let id: Uuid = parse_id(id, "webhook endpoint")?;
    webhooks::get(state.db(), auth.tenant(), id).await.map_err(|e| not_found(e, "webhook endpoint"))
}

async fn show(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let e = endpoint(&state, &auth, &id).await?;
    Ok(data(&rid, EndpointView::of(e, Utc::now())).into_response())
}

async fn update(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    Path(id): Path<String>,
    body: JsonBody<UpdateEndpoint>,
) -> Result<Response, ApiError> {
    let req = body.value;
    let mut errors = Vec::new();
    if let Some(url) = &req.url {
        check_url(url, &mut errors);
    }
    if let Some(types) = &req.event_types {
        check_event_types(types, &mut errors);
    }
    if let Some(d) = &req.description {
        check_description(d, &mut errors);
    }
    check_rate_limit(req.rate_limit.flatten(), &mut errors);
    done(errors)?;
    let e = endpoint(&state, &auth, &id).await?;
    let fields = EndpointFields {
        url: req.url,
        description: req.description.map(|d| d.trim().to_owned()),
        event_types: req.event_types.map(dedup),
        enabled: req.enabled,
        rate_limit: req.rate_limit,
    };
    let updated = webhooks::update(state.db(), auth.tenant(), e.id, &fields)
        .await
        .map_err(|e| not_found(e, "webhook endpoint"))?;
    Ok(data(&rid, EndpointView::of(updated, Utc::now())).into_response())
}

async fn remove(State(state): State<AppState>, auth: AuthUser, Path(id): Path<String>) -> Result<Response, ApiError> {
    let e = endpoint(&state, &auth, &id).await?;
    webhooks::delete(state.db(), auth.tenant(), e.id).await.map_err(|e| not_found(e, "webhook endpoint"))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn rotate(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let e = endpoint(&state, &auth, &id).await?;
    let secret = Secret::generate().encode();
    let until = Utc::now() + ROTATION_WINDOW;
    let rotated = webhooks::rotate_secret(state.db(), auth.tenant(), e.id, &secret, until)
        .await
        .map_err(|e| not_found(e, "webhook endpoint"))?;
    Ok(data(&rid, json!({"secret": secret, "previousSecretExpiresAt": rotated.previous_secret_expires_at}))
        .into_response())
}

async fn send_test(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let e = endpoint(&state, &auth, &id).await?;
    let event = NewEvent {
        kind: types::WEBHOOK_TEST,
        at: Utc::now(),
        tenant: Some(auth.tenant()),
        resource: Some(("webhook_endpoint", e.id.to_string())),
        data: json!({"endpointId": e.id, "message": "This is a test event from Nimbus.", "sentBy": auth.user.id}),
    };
    let event_id = events::record(state.db(), &event).await?;
    Ok((StatusCode::ACCEPTED, data(&rid, json!({"eventId": event_id}))).into_response())
}

async fn list_deliveries(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<DeliveryQuery>,
) -> Result<Response, ApiError> {
    let request = PageQuery { page: q.page, per_page: q.per_page }.request()?;
    if let Some(s) = q.status.as_deref()
        && !matches!(s, "pending" | "succeeded" | "failed")
    {
        return Err(ApiError::Validation(vec![FieldError::new("status", "must be pending, succeeded or failed")]));
    }
    let e = endpoint(&state, &auth, &id).await?;
    let mut conn = state.db().acquire().await.map_err(nimbus_db::DbError::from)?;
    let limit = i64::from(request.per_page);
    let offset = i64::from(request.page - 1) * limit;
    let (rows, total) =
        webhooks::deliveries(&mut conn, auth.tenant(), e.id, q.status.as_deref(), limit, offset).await?;
    Ok(page(&rid, rows.into_iter().map(DeliveryView::from).collect(), request, total).into_response())
}

async fn show_delivery(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let e = endpoint(&state, &auth, &id).await?;
    let delivery_id: Uuid = parse_id(&delivery, "delivery")?;
    let d =
        webhooks::delivery(state.db(), auth.tenant(), e.id, delivery_id).await.map_err(|e| not_found(e, "delivery"))?;
    let attempts: Vec<AttemptView> = webhooks::attempts(state.db(), d.id).await?.into_iter().map(Into::into).collect();
    let payload = d.payload.clone();
    let mut view = serde_json::to_value(DeliveryView::from(d)).unwrap_or_default();
    view["payload"] = payload;
    view["attempts"] = serde_json::to_value(attempts).unwrap_or_default();
    Ok(data(&rid, view).into_response())
}

async fn replay(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let e = endpoint(&state, &auth, &id).await?;
    let delivery_id: Uuid = parse_id(&delivery, "delivery")?;
    webhooks::replay(state.db(), auth.tenant(), e.id, delivery_id, Utc::now())
        .await
        .map_err(|e| not_found(e, "delivery"))?;
    let d = webhooks::delivery(state.db(), auth.tenant(), e.id, delivery_id).await?;
    Ok((StatusCode::ACCEPTED, data(&rid, DeliveryView::from(d))).into_response())
}

async fn recover(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    Path(id): Path<String>,
    body: JsonBody<RecoverBody>,
) -> Result<Response, ApiError> {
    let e = endpoint(&state, &auth, &id).await?;
    let now = Utc::now();
    let until = body.value.until.unwrap_or(now).min(now);
    let since = body.value.since;
    if since >= until {
        return Err(ApiError::Validation(vec![FieldError::new("since", "must be before until (and before now)")]));
    }
    if until - since > MAX_RECOVERY {
        return Err(ApiError::Validation(vec![FieldError::new("since", "a recovery covers at most 31 days")]));
    }
    let mut tx = state.db().begin().await.map_err(nimbus_db::DbError::from)?;
    let n = webhooks::recover(&mut tx, auth.tenant(), e.id, since, until, now).await?;
    tx.commit().await.map_err(nimbus_db::DbError::from)?;
    Ok((StatusCode::ACCEPTED, data(&rid, json!({"deliveries": n}))).into_response())
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths())]
pub struct ApiDoc;
