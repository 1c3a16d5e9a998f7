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
use futures::Stream;
use nimbus_db::notifications::{self, Notification, Preference};
use nimbus_domain::events::EVENT_TYPES;
use serde::Deserialize;
use serde_json::{Value, json};
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FeedQuery {
    unread: Option<bool>,
    page: Option<u32>,
    per_page: Option<u32>,
}

fn entry(n: Notification) -> Value {
    json!({
        "id": n.id, "eventId": n.event_id, "type": n.kind, "title": n.title,
        "resourceType": n.resource_type, "resourceId": n.resource_id,
        "createdAt": n.created_at, "readAt": n.read_at,
    })
}

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
    let mut body =
        serde_json::to_value(crate::routes::page(&rid, rows.into_iter().map(entry).collect(), request, total).0)
            .unwrap_or_default();
    body["meta"]["unread"] = json!(unread);
    Ok(axum::Json(body).into_response())
}

async fn read(State(state): State<AppState>, auth: AuthUser, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id: Uuid = parse_id(&id, "notification")?;
    notifications::mark_read(state.db(), auth.tenant(), auth.user.id, id)
        .await
        .map_err(|e| not_found(e, "notification"))?;
    state.dispatcher().publisher().publish(auth.user.id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn read_all(State(state): State<AppState>, auth: AuthUser) -> Result<Response, ApiError> {
    notifications::mark_all_read(state.db(), auth.tenant(), auth.user.id).await?;
    state.dispatcher().publisher().publish(auth.user.id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Every type with the caller's choice or its default.
async fn choices(state: &AppState, auth: &AuthUser) -> Result<Vec<Value>, ApiError> {
    let chosen = notifications::preferences(state.db(), auth.user.id).await?;
    Ok(EVENT_TYPES
        .iter()
        .map(|t| {
            let own = chosen.iter().find(|p| p.event_type == t.name);
            json!({
                "type": t.name, "description": t.description,
                "email": own.map_or(t.email_by_default, |p| p.email),
                "inApp": own.is_none_or(|p| p.in_app),
            })
        })
        .collect())
}

async fn preferences(State(state): State<AppState>, auth: AuthUser, rid: RequestId) -> Result<Response, ApiError> {
    Ok(crate::routes::data(&rid, choices(&state, &auth).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PreferenceBody {
    #[serde(rename = "type")]
    kind: String,
    email: bool,
    in_app: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreferencesBody {
    preferences: Vec<PreferenceBody>,
}

async fn set_preferences(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    body: JsonBody<PreferencesBody>,
) -> Result<Response, ApiError> {
    let errors: Vec<FieldError> = body
        .value
        .preferences
        .iter()
        .enumerate()
        .filter(|(_, p)| nimbus_domain::events::event_type(&p.kind).is_none())
        .map(|(i, p)| FieldError::new(format!("preferences[{i}].type"), format!("'{}' is not an event type", p.kind)))
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
#[openapi(paths())]
pub struct ApiDoc;
