//! The in-app feed and notification settings (DESIGN §11).
//!
//! * `GET /v1/notifications[?unread=true&page=&perPage=]`: the caller's feed, unread first and
//!   newest first within each; `meta.unread` is the unread count.
//! * `POST /v1/notifications/{id}/read` → 204; `POST /v1/notifications/read-all` → 204.
//! * `GET /v1/notifications/stream`: Server-Sent Events, an `unread` event `{count}` at once and
//!   at every change (woken on the `notification-events` channel; Postgres stays the truth).
//! * `GET /v1/me/notifications`: per event type, whether it emails the caller and shows in the
//!   feed (the type's default until the caller chooses); `PUT` with `{preferences: [{type, email,
//!   inApp}]}` sets the types it lists.
//!
//! Entries are the caller's own: another user's id answers 404.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use futures::Stream;
use nimbus_db::notifications::{self, Notification, Preference};
use nimbus_domain::events::EVENT_TYPES;
use nimbus_domain::{ApiResponse, Meta, Pagination};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::{ApiError, FieldError};
use crate::extract::{JsonBody, QueryParams, parse_id};
use crate::middleware::RequestId;
use crate::routes::PageQuery;
use crate::routes::stream_auth::StreamCredential;
use crate::routes::vms::not_found;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/notifications", get(feed))
        .route("/v1/notifications/read-all", post(read_all))
        .route("/v1/notifications/stream", get(stream))
        .route("/v1/notifications/{id}/read", post(read))
        .route("/v1/me/notifications", get(preferences).put(set_preferences))
}

/// `?unread=&page=&perPage=` of the feed.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FeedQuery {
    /// `true`: only the unread entries (default `false`).
    unread: Option<bool>,
    /// 1-based page (default 1).
    #[param(minimum = 1)]
    page: Option<u32>,
    /// Items per page (default 25, at most 100).
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<u32>,
}

/// One entry of the caller's feed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Notification)]
#[serde(rename_all = "camelCase")]
struct Entry {
    /// Id.
    id: Uuid,
    /// The event it is about.
    event_id: Uuid,
    /// The event's type.
    #[serde(rename = "type")]
    #[schema(example = "instance.created")]
    kind: String,
    /// One line about it.
    #[schema(example = "Instance web-1 is being created")]
    title: String,
    /// The kind of resource it is about (`instance`, `job`, `invoice`, …), if any.
    #[schema(example = "instance")]
    resource_type: Option<String>,
    /// That resource's id, if any.
    #[schema(example = "0193a5c4-7e1f-7b3a-9c2d-5e8f1a2b3c4d")]
    resource_id: Option<String>,
    /// When the event happened.
    created_at: DateTime<Utc>,
    /// When the caller read it; `null`: unread.
    #[schema(example = json!(null))]
    read_at: Option<DateTime<Utc>>,
}

fn entry(n: Notification) -> Entry {
    Entry {
        id: n.id,
        event_id: n.event_id,
        kind: n.kind,
        title: n.title,
        resource_type: n.resource_type,
        resource_id: n.resource_id,
        created_at: n.created_at,
        read_at: n.read_at,
    }
}

/// A page of the feed: a list answer whose `meta` also counts the unread entries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = NotificationFeed)]
struct Feed {
    /// The entries of this page.
    data: Vec<Entry>,
    /// Request metadata and the unread count.
    meta: FeedMeta,
    /// Where this page is.
    pagination: Pagination,
}

/// The feed's `meta`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = NotificationFeedMeta)]
struct FeedMeta {
    #[serde(flatten)]
    meta: Meta,
    /// The caller's unread entries, in all.
    #[schema(minimum = 0, example = 3)]
    unread: i64,
}

/// The caller's notifications, unread first and newest first within each.
#[utoipa::path(
    get, path = "/v1/notifications", operation_id = "listNotifications", tag = "Notifications",
    params(FeedQuery),
    responses((status = 200, description = "A page of the caller's feed; `meta.unread` is the unread count.",
        body = Feed))
)]
async fn feed(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    QueryParams(q): QueryParams<FeedQuery>,
) -> Result<Response, ApiError> {
    let request = PageQuery { page: q.page, per_page: q.per_page }.request()?;
    let mut conn = state.db().acquire().await.map_err(nimbus_db::DbError::from)?;
    let limit = i64::from(request.per_page);
    let offset = i64::from(request.page - 1) * limit;
    let (rows, total) =
        notifications::feed(&mut conn, auth.tenant(), auth.user.id, q.unread.unwrap_or(false), limit, offset).await?;
    let unread = notifications::unread_count(&mut *conn, auth.tenant(), auth.user.id).await?;
    let list = crate::routes::page(&rid, rows.into_iter().map(entry).collect(), request, total).0;
    let body = Feed { data: list.data, meta: FeedMeta { meta: list.meta, unread }, pagination: list.pagination };
    Ok(axum::Json(body).into_response())
}

/// Marks one of the caller's notifications read.
#[utoipa::path(
    post, path = "/v1/notifications/{id}/read", operation_id = "markNotificationRead", tag = "Notifications",
    params(("id" = Uuid, Path, description = "The notification's id.")),
    responses((status = 204, description = "Read (also when it already was)."))
)]
async fn read(State(state): State<AppState>, auth: AuthUser, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id: Uuid = parse_id(&id, "notification")?;
    notifications::mark_read(state.db(), auth.tenant(), auth.user.id, id)
        .await
        .map_err(|e| not_found(e, "notification"))?;
    state.dispatcher().publisher().publish(auth.user.id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Marks every notification of the caller read.
#[utoipa::path(
    post, path = "/v1/notifications/read-all", operation_id = "markAllNotificationsRead", tag = "Notifications",
    responses((status = 204, description = "All read."))
)]
async fn read_all(State(state): State<AppState>, auth: AuthUser) -> Result<Response, ApiError> {
    notifications::mark_all_read(state.db(), auth.tenant(), auth.user.id).await?;
    state.dispatcher().publisher().publish(auth.user.id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Whether one event type emails the caller and shows in their feed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = NotificationPreference)]
#[serde(rename_all = "camelCase")]
struct Choice {
    /// The event type.
    #[serde(rename = "type")]
    #[schema(schema_with = crate::routes::webhooks::event_type_name)]
    kind: &'static str,
    /// What it is about, in a phrase.
    #[schema(example = "An instance was created (provisioning starts)")]
    description: &'static str,
    /// Whether it emails the caller.
    email: bool,
    /// Whether it shows in the caller's feed.
    in_app: bool,
}

/// Every type with the caller's choice or its default.
async fn choices(state: &AppState, auth: &AuthUser) -> Result<Vec<Choice>, ApiError> {
    let chosen = notifications::preferences(state.db(), auth.user.id).await?;
    Ok(EVENT_TYPES
        .iter()
        .map(|t| {
            let own = chosen.iter().find(|p| p.event_type == t.name);
            Choice {
                kind: t.name,
                description: t.description,
                email: own.map_or(t.email_by_default, |p| p.email),
                in_app: own.is_none_or(|p| p.in_app),
            }
        })
        .collect())
}

/// The caller's notification settings: per event type, whether it emails them and shows in
/// their feed (the type's default until they choose).
#[utoipa::path(
    get, path = "/v1/me/notifications", operation_id = "getNotificationPreferences", tag = "Notifications",
    responses((status = 200, description = "Every event type with the caller's choice.",
        body = ApiResponse<Vec<Choice>>))
)]
async fn preferences(State(state): State<AppState>, auth: AuthUser, rid: RequestId) -> Result<Response, ApiError> {
    Ok(crate::routes::data(&rid, choices(&state, &auth).await?).into_response())
}

/// The caller's choice for one event type.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = NotificationPreferenceChoice)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PreferenceBody {
    /// The event type.
    #[serde(rename = "type")]
    #[schema(schema_with = crate::routes::webhooks::event_type_name)]
    kind: String,
    /// Whether it emails the caller.
    email: bool,
    /// Whether it shows in the caller's feed.
    in_app: bool,
}

/// The body of `PUT /v1/me/notifications`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = SetNotificationPreferences)]
#[serde(deny_unknown_fields)]
struct PreferencesBody {
    /// The types to set, each once; the types it does not list keep their setting.
    preferences: Vec<PreferenceBody>,
}

/// Sets the caller's notification settings for the event types listed.
#[utoipa::path(
    put, path = "/v1/me/notifications", operation_id = "setNotificationPreferences", tag = "Notifications",
    request_body = PreferencesBody,
    responses((status = 200, description = "Every event type with the caller's choice, as now set.",
        body = ApiResponse<Vec<Choice>>))
)]
async fn set_preferences(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    body: JsonBody<PreferencesBody>,
) -> Result<Response, ApiError> {
    let mut seen = std::collections::HashSet::new();
    let errors: Vec<FieldError> = body
        .value
        .preferences
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let field = format!("preferences[{i}].type");
            if nimbus_domain::events::event_type(&p.kind).is_none() {
                Some(FieldError::new(field, format!("'{}' is not an event type", p.kind)))
            } else if !seen.insert(p.kind.as_str()) {
                Some(FieldError::new(field, format!("'{}' is listed twice", p.kind)))
            } else {
                None
            }
        })
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let choices_made: Vec<Preference> = body
        .value
        .preferences
        .into_iter()
        .map(|p| Preference { event_type: p.kind, email: p.email, in_app: p.in_app })
        .collect();
    notifications::set_preferences(state.db(), auth.user.id, &choices_made).await?;
    Ok(crate::routes::data(&rid, choices(&state, &auth).await?).into_response())
}

/// The caller's unread count as Server-Sent Events: an `unread` event `{"count": n}` at once and
/// at every change; an `error` event (`UNAUTHENTICATED`) ends it when the credential stops
/// holding.
#[utoipa::path(
    get, path = "/v1/notifications/stream", operation_id = "streamNotifications", tag = "Notifications",
    responses((status = 200, description = "The event stream (it stays open; comments keep it alive).",
        content_type = "text/event-stream", body = String,
        example = "event: unread\ndata: {\"count\":3}\n\n"))
)]
async fn stream(State(state): State<AppState>, auth: AuthUser) -> Result<Response, ApiError> {
    let first = notifications::unread_count(state.db(), auth.tenant(), auth.user.id).await?;
    let open = state.http_metrics().stream_opened("notifications");
    let signal = state.dispatcher().feed_wakeups().follow(auth.user.id);
    let follow = Follow {
        poll: state.settings().sse_poll.min(state.settings().stream_auth_check),
        credential: StreamCredential::new(state.clone(), auth),
        state,
        signal,
        pending: Some(first),
        last: None,
        done: false,
    };
    Ok(Sse::new(open.around(unread_events(follow))).keep_alive(KeepAlive::default()).into_response())
}

struct Follow {
    state: AppState,
    credential: StreamCredential,
    signal: Arc<Notify>,
    poll: Duration,
    pending: Option<i64>,
    last: Option<i64>,
    done: bool,
}

fn unread_events(follow: Follow) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(follow, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            if let Some(count) = s.pending.take()
                && s.last != Some(count)
            {
                s.last = Some(count);
                return Some((Ok(Event::default().event("unread").data(json!({"count": count}).to_string())), s));
            }
            if let Some(error) = s.credential.revoked("notifications").await {
                s.done = true;
                return Some((Ok(error), s));
            }
            // Armed before waiting and reading, so a change committed meanwhile still wakes it.
            let signal = s.signal.clone();
            let woken = signal.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            tokio::select! {
                _ = &mut woken => {}
                _ = tokio::time::sleep(s.poll) => {}
            }
            let caller = s.credential.caller();
            match notifications::unread_count(s.state.db(), caller.tenant(), caller.user.id).await {
                Ok(n) => s.pending = Some(n),
                Err(e) => {
                    tracing::warn!(error = %e, "notification stream ended by a database error");
                    return None;
                }
            }
        }
    })
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(feed, read_all, stream, read, preferences, set_preferences))]
pub struct ApiDoc;
