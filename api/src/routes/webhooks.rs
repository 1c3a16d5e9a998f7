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
use nimbus_domain::{ApiError as ApiErrorBody, ApiResponse, ListResponse};
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookEndpoint)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    /// Id.
    pub id: Uuid,
    /// Where deliveries are POSTed.
    #[schema(example = "https://example.com/hooks/nimbus")]
    pub url: String,
    /// The owner's note (may be empty).
    #[schema(example = "Deploy notifications")]
    pub description: String,
    /// The event types it receives; empty: every type.
    #[schema(schema_with = event_type_list)]
    pub event_types: Vec<String>,
    /// Whether deliveries are made.
    pub enabled: bool,
    /// Why the system disabled it: `gone` (the receiver answered 410) or `failing` (5 days of
    /// failures); `null` when enabled or disabled by its owner.
    #[schema(example = json!(null))]
    pub disabled_reason: Option<String>,
    /// Deliveries per second at most; `null`: no cap.
    #[schema(example = 10)]
    pub rate_limit: Option<i32>,
    /// The first failure since the last success; `null` when the last attempt succeeded.
    #[schema(example = json!(null))]
    pub failing_since: Option<DateTime<Utc>>,
    /// Until when the secret before the last rotation still signs too; `null` outside a rotation.
    #[schema(example = json!(null))]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Last changed at.
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

/// A new endpoint, with its signing secret (shown this once).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = CreatedWebhookEndpoint)]
#[serde(rename_all = "camelCase")]
struct CreatedEndpoint {
    #[serde(flatten)]
    endpoint: EndpointView,
    /// The secret that signs deliveries (Standard Webhooks). Shown only in this response.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    secret: String,
}

/// An event type an endpoint can subscribe to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookEventType)]
struct EventTypeView {
    /// The dotted name.
    #[serde(rename = "type")]
    #[schema(example = "instance.created")]
    kind: &'static str,
    /// What happened, in a phrase.
    #[schema(example = "An instance was created (provisioning starts)")]
    description: &'static str,
}

/// The new secret after a rotation (shown this once).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = RotatedWebhookSecret)]
#[serde(rename_all = "camelCase")]
struct RotatedSecret {
    /// The new signing secret. Shown only in this response.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    secret: String,
    /// Until when the previous secret signs too (both signatures are sent).
    previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// The test event queued for one endpoint.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookTestEvent)]
#[serde(rename_all = "camelCase")]
struct TestEvent {
    /// The `webhook.test` event's id (the delivery log shows its delivery).
    event_id: Uuid,
}

/// What a recovery made due.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookRecovery)]
struct Recovery {
    /// Deliveries due now: new ones for events the endpoint missed, and failed ones sent again.
    deliveries: u64,
}

/// A delivery's state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookDeliveryStatus)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // Describes `status` for the OpenAPI document; the code keeps it a string.
enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// The receiver answered 2xx.
    Succeeded,
    /// Every attempt failed, or the endpoint is gone.
    Failed,
}

/// One delivery of an event to an endpoint.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookDelivery)]
#[serde(rename_all = "camelCase")]
struct DeliveryView {
    #[serde(flatten)]
    delivery: DeliveryFields,
    /// Attempts made so far.
    #[schema(minimum = 0)]
    attempts: i32,
}

/// What a delivery's list entry and its detail both show.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookDeliveryFields)]
#[serde(rename_all = "camelCase")]
struct DeliveryFields {
    /// Id.
    id: Uuid,
    /// The event delivered (the payload's `id`).
    event_id: Uuid,
    /// The event's type.
    #[schema(example = "instance.created")]
    event_type: String,
    /// Its state.
    #[schema(value_type = DeliveryStatus)]
    status: String,
    /// When it is attempted next (`pending` only, otherwise `null`).
    next_attempt_at: Option<DateTime<Utc>>,
    /// The receiver's HTTP status at the last attempt; `null` before one or without an answer.
    #[schema(example = 200)]
    last_status_code: Option<i32>,
    /// Created at.
    created_at: DateTime<Utc>,
    /// Last changed at.
    updated_at: DateTime<Utc>,
}

/// A delivery with the body it sends and every attempt: a [`DeliveryView`] whose `attempts`
/// lists them rather than counting them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookDeliveryDetail)]
#[serde(rename_all = "camelCase")]
struct DeliveryDetail {
    #[serde(flatten)]
    delivery: DeliveryFields,
    /// The body as signed and sent: `{id, type, timestamp, tenantId, resource, data}`.
    #[schema(schema_with = delivery_payload)]
    payload: Value,
    /// Every attempt, oldest first.
    attempts: Vec<AttemptView>,
}

impl From<&Delivery> for DeliveryFields {
    fn from(d: &Delivery) -> Self {
        DeliveryFields {
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type.clone(),
            status: d.status.clone(),
            next_attempt_at: d.next_attempt_at,
            last_status_code: d.last_status_code,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        DeliveryView { delivery: DeliveryFields::from(&d), attempts: d.attempts }
    }
}

/// One attempt of a delivery.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookAttempt)]
#[serde(rename_all = "camelCase")]
struct AttemptView {
    /// When it was made.
    attempted_at: DateTime<Utc>,
    /// The receiver's HTTP status; `null` when there was no answer.
    #[schema(example = 200)]
    status_code: Option<i32>,
    /// Why there was no answer or why it failed (a refused address, a timeout).
    #[schema(example = json!(null))]
    error: Option<String>,
    /// How long it took, in milliseconds.
    #[schema(example = 84)]
    latency_ms: i32,
    /// The first KiB of the receiver's answer.
    #[schema(example = "ok")]
    response_body: String,
    /// Whether it counted as delivered (2xx).
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

/// The body of `POST /v1/webhooks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = CreateWebhookEndpoint)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateEndpoint {
    /// Where deliveries are POSTed: an absolute `http` or `https` URL with a host and no
    /// credentials, at most 2000 characters.
    #[schema(format = "uri", max_length = 2000, pattern = "^https?://", example = "https://example.com/hooks/nimbus")]
    url: String,
    /// A note for the owner, at most 500 characters (trimmed).
    #[serde(default)]
    #[schema(max_length = 500, example = "Deploy notifications")]
    description: String,
    /// The event types it receives (`GET /v1/webhooks/event-types`); empty or absent: every type.
    #[serde(default)]
    #[schema(schema_with = event_type_list)]
    event_types: Vec<String>,
    /// Whether deliveries are made (default `true`).
    #[schema(example = true)]
    enabled: Option<bool>,
    /// Deliveries per second at most, 1-10000; absent or `null`: no cap.
    #[schema(minimum = 1, maximum = 10000, example = 10)]
    rate_limit: Option<i32>,
}

/// The body of `PATCH /v1/webhooks/{id}`: the fields it sets; absent (or `null`, except
/// `rateLimit`) leaves one as it is.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = UpdateWebhookEndpoint)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UpdateEndpoint {
    /// Where deliveries are POSTed (same rules as on creation).
    #[schema(format = "uri", max_length = 2000, pattern = "^https?://", example = "https://example.com/hooks/nimbus")]
    url: Option<String>,
    /// A note for the owner, at most 500 characters (trimmed).
    #[schema(max_length = 500, example = "Deploy notifications")]
    description: Option<String>,
    /// The event types it receives; empty: every type.
    #[schema(schema_with = nullable_event_type_list)]
    event_types: Option<Vec<String>>,
    /// `true` enables it (clearing why the system disabled it and its failing streak).
    #[schema(example = true)]
    enabled: Option<bool>,
    /// Deliveries per second at most, 1-10000; `null` removes the cap; absent leaves it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 10000, example = 10)]
    rate_limit: Option<Option<i32>>,
}

/// A field that may be `null`: `Some(None)` when sent as `null`, `None` when absent.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i32>>, D::Error> {
    Option::<i32>::deserialize(d).map(Some)
}

/// The body of `POST /v1/webhooks/{id}/recover`: a range of at most 31 days, in the past.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = RecoverWebhookDeliveries)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RecoverBody {
    /// The range's start (inclusive); before `until`.
    #[schema(example = "2026-11-30T00:00:00Z")]
    since: DateTime<Utc>,
    /// The range's end (exclusive); absent, `null` or later than now: now.
    #[schema(example = "2026-12-01T00:00:00Z")]
    until: Option<DateTime<Utc>>,
}

/// `?status=&page=&perPage=` of the delivery log.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeliveryQuery {
    /// Only the deliveries in this state.
    #[param(value_type = Option<DeliveryStatus>)]
    status: Option<String>,
    /// 1-based page (default 1).
    #[param(minimum = 1)]
    page: Option<u32>,
    /// Items per page (default 25, at most 100).
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<u32>,
}

/// The schema of a list of event types: each one of [`EVENT_TYPES`].
fn event_type_list() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(event_type_name())
        .max_items(Some(EVENT_TYPES.len()))
        .examples([json!(["instance.created", "job.failed"])])
        .build()
}

/// [`event_type_list`], or `null`.
fn nullable_event_type_list() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{SchemaType, Type};
    let mut list = event_type_list();
    list.schema_type = SchemaType::from_iter([Type::Array, Type::Null]);
    list
}

/// The schema of a delivery's payload (any object; an example of one).
fn delivery_payload() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some("The body as signed and sent: `{id, type, timestamp, tenantId, resource, data}`."))
        .examples([json!({
            "id": "0193a5c4-7e1f-7b3a-9c2d-5e8f1a2b3c4d", "type": "instance.created",
            "timestamp": "2026-12-01T09:30:00Z", "tenantId": "0193a5c4-7e1f-7b3a-9c2d-5e8f1a2b3c4e",
            "resource": {"type": "instance", "id": "0193a5c4-7e1f-7b3a-9c2d-5e8f1a2b3c4f"},
            "data": {"id": "0193a5c4-7e1f-7b3a-9c2d-5e8f1a2b3c4f", "name": "web-1", "type": "qemu",
                "status": "provisioning", "node": "pve1", "vmid": null},
        })])
        .build()
}

/// The schema of one event type's name: one of [`EVENT_TYPES`].
pub(crate) fn event_type_name() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(EVENT_TYPES.iter().map(|t| t.name)))
        .examples(["instance.created"])
        .build()
}

/// Checks a webhook URL's form: absolute http(s), a host, no credentials, at most 2,000 chars.
fn check_url(raw: &str, errors: &mut Vec<FieldError>) {
    let problem = match url::Url::parse(raw) {
        _ if raw.len() > 2000 => Some("must be at most 2000 characters"),
        Err(_) => Some("must be an absolute http or https URL"),
        // As sent, not as parsed: the stored text is what was sent.
        Ok(_) if !(raw.starts_with("https://") || raw.starts_with("http://")) => {
            Some("must start with https:// or http://")
        }
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

/// The event types a webhook endpoint can subscribe to.
#[utoipa::path(
    get, path = "/v1/webhooks/event-types", operation_id = "listWebhookEventTypes", tag = "Webhooks",
    responses((status = 200, description = "Every subscribable event type.", body = ApiResponse<Vec<EventTypeView>>))
)]
async fn event_types(_auth: AuthUser, rid: RequestId) -> Response {
    let types: Vec<EventTypeView> =
        EVENT_TYPES.iter().map(|t| EventTypeView { kind: t.name, description: t.description }).collect();
    data(&rid, types).into_response()
}

/// The tenant's webhook endpoints (at most 20, so not paged), oldest first.
#[utoipa::path(
    get, path = "/v1/webhooks", operation_id = "listWebhooks", tag = "Webhooks",
    responses((status = 200, description = "Every webhook endpoint of the tenant.",
        body = ApiResponse<Vec<EndpointView>>))
)]
async fn list(State(state): State<AppState>, auth: AuthUser, rid: RequestId) -> Result<Response, ApiError> {
    let now = Utc::now();
    let all = webhooks::list(state.db(), auth.tenant()).await?;
    Ok(data(&rid, all.into_iter().map(|e| EndpointView::of(e, now)).collect::<Vec<_>>()).into_response())
}

/// Creates a webhook endpoint; the answer holds its signing secret, shown this once.
#[utoipa::path(
    post, path = "/v1/webhooks", operation_id = "createWebhook", tag = "Webhooks",
    request_body = CreateEndpoint,
    responses(
        (status = 201, description = "Created: the endpoint and its `secret`.", body = ApiResponse<CreatedEndpoint>),
        (status = 409, description = "`CONFLICT`: the tenant already has 20 webhook endpoints, the most allowed.",
            body = ApiErrorBody),
    )
)]
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

/// One webhook endpoint (never its secret).
#[utoipa::path(
    get, path = "/v1/webhooks/{id}", operation_id = "getWebhook", tag = "Webhooks",
    params(("id" = Uuid, Path, description = "The webhook endpoint's id.")),
    responses((status = 200, description = "The endpoint.", body = ApiResponse<EndpointView>))
)]
async fn show(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let e = endpoint(&state, &auth, &id).await?;
    Ok(data(&rid, EndpointView::of(e, Utc::now())).into_response())
}

/// Changes a webhook endpoint's URL, description, event types, state or rate limit.
#[utoipa::path(
    patch, path = "/v1/webhooks/{id}", operation_id = "updateWebhook", tag = "Webhooks",
    params(("id" = Uuid, Path, description = "The webhook endpoint's id.")),
    request_body = UpdateEndpoint,
    responses((status = 200, description = "The endpoint as changed.", body = ApiResponse<EndpointView>))
)]
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

/// Deletes a webhook endpoint and its delivery log.
#[utoipa::path(
    delete, path = "/v1/webhooks/{id}", operation_id = "deleteWebhook", tag = "Webhooks",
    params(("id" = Uuid, Path, description = "The webhook endpoint's id.")),
    responses((status = 204, description = "Deleted."))
)]
async fn remove(State(state): State<AppState>, auth: AuthUser, Path(id): Path<String>) -> Result<Response, ApiError> {
    let e = endpoint(&state, &auth, &id).await?;
    webhooks::delete(state.db(), auth.tenant(), e.id).await.map_err(|e| not_found(e, "webhook endpoint"))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Gives a webhook endpoint a new signing secret, shown this once; the previous one keeps
/// signing too for 24 hours.
#[utoipa::path(
    post, path = "/v1/webhooks/{id}/secret/rotate", operation_id = "rotateWebhookSecret", tag = "Webhooks",
    params(("id" = Uuid, Path, description = "The webhook endpoint's id.")),
    responses((status = 200, description = "The new secret, and until when the previous one signs too.",
        body = ApiResponse<RotatedSecret>))
)]
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
    Ok(data(&rid, RotatedSecret { secret, previous_secret_expires_at: rotated.previous_secret_expires_at })
        .into_response())
}

/// Sends a `webhook.test` event to this endpoint only, whatever types it subscribes to; its
/// delivery shows in the log (a disabled endpoint gets none).
#[utoipa::path(
    post, path = "/v1/webhooks/{id}/test", operation_id = "sendWebhookTest", tag = "Webhooks",
    params(("id" = Uuid, Path, description = "The webhook endpoint's id.")),
    responses((status = 202, description = "Accepted: the test event is recorded and its delivery queued.",
        body = ApiResponse<TestEvent>))
)]
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
    Ok((StatusCode::ACCEPTED, data(&rid, TestEvent { event_id })).into_response())
}

/// A webhook endpoint's delivery log, newest first.
#[utoipa::path(
    get, path = "/v1/webhooks/{id}/deliveries", operation_id = "listWebhookDeliveries", tag = "Webhooks",
    params(("id" = Uuid, Path, description = "The webhook endpoint's id."), DeliveryQuery),
    responses((status = 200, description = "A page of the endpoint's deliveries.", body = ListResponse<DeliveryView>))
)]
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

/// One delivery, with the body it sends and every attempt.
#[utoipa::path(
    get, path = "/v1/webhooks/{id}/deliveries/{delivery}", operation_id = "getWebhookDelivery", tag = "Webhooks",
    params(
        ("id" = Uuid, Path, description = "The webhook endpoint's id."),
        ("delivery" = Uuid, Path, description = "The delivery's id."),
    ),
    responses((status = 200, description = "The delivery, its payload and its attempts.",
        body = ApiResponse<DeliveryDetail>))
)]
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
    let payload = webhooks::payload(state.db(), auth.tenant(), e.id, d.id).await?;
    let attempts: Vec<AttemptView> = webhooks::attempts(state.db(), d.id).await?.into_iter().map(Into::into).collect();
    let detail = DeliveryDetail { delivery: DeliveryFields::from(&d), payload, attempts };
    Ok(data(&rid, detail).into_response())
}

/// Sends a delivery again now, whatever its state (its attempts start again from zero).
#[utoipa::path(
    post, path = "/v1/webhooks/{id}/deliveries/{delivery}/replay", operation_id = "replayWebhookDelivery",
    tag = "Webhooks",
    params(
        ("id" = Uuid, Path, description = "The webhook endpoint's id."),
        ("delivery" = Uuid, Path, description = "The delivery's id."),
    ),
    responses((status = 202, description = "Accepted: the delivery, `pending` again and due now.",
        body = ApiResponse<DeliveryView>))
)]
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

/// Recovers a range of at most 31 days: the endpoint's events there that it has no delivery of
/// get one, and its failed deliveries there are sent again.
#[utoipa::path(
    post, path = "/v1/webhooks/{id}/recover", operation_id = "recoverWebhookDeliveries", tag = "Webhooks",
    params(("id" = Uuid, Path, description = "The webhook endpoint's id.")),
    request_body = RecoverBody,
    responses((status = 202, description = "Accepted: how many deliveries are due now.", body = ApiResponse<Recovery>))
)]
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
    Ok((StatusCode::ACCEPTED, data(&rid, Recovery { deliveries: n })).into_response())
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    event_types,
    list,
    create,
    show,
    update,
    remove,
    rotate,
    send_test,
    list_deliveries,
    show_delivery,
    replay,
    recover
))]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_as_sent_not_as_parsed() {
        // Each of these parses, but is not the http(s) URL the database stores as text.
        for bad in [
            "HTTPS://example.com",
            " https://example.com",
            "https:example.com",
            "ftp://example.com",
            "https://u:p@example.com",
        ] {
            let mut errors = Vec::new();
            check_url(bad, &mut errors);
            assert_eq!(errors.len(), 1, "{bad:?} is refused");
        }
        let mut errors = Vec::new();
        check_url("https://example.com/hooks/nimbus", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }
}
