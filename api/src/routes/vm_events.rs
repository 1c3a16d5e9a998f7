//! `GET /v1/vms/{id}/events`: a Server-Sent Events stream of one instance as its page shows it.
//! The first `instance` event carries the current view (as `GET /v1/vms/{id}` answers it);
//! another follows each change: an operation queued, progressing or ending, a status the
//! reconciler read from Proxmox (a guest shut down from inside), new sizes or addresses. The
//! stream wakes on the `instance-events` channel (`nimbus_jobs::events`) and reads Postgres,
//! which stays the truth; a lost wake-up only delays it until the `sse_poll` setting. Uptime
//! alone is not a change (clients count it on). A deleted instance's last view ends the stream
//! (`end`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::Stream;
use nimbus_db::{instances, operations};
use nimbus_domain::{InstanceId, InstanceStatus, InstanceView};
use tokio::sync::Notify;

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::parse_id;
use crate::routes::stream_auth::StreamCredential;
use crate::routes::vms::{not_found, view};
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/vms/{id}/events", get(events))
}

/// Follows an instance as Server-Sent Events.
///
/// An `instance` event with its current view (as `GET /v1/vms/{id}` answers it), then one per
/// change (an operation queued, progressing or ending, a status, sizes or addresses); `end`
/// carries a deleted instance's last view, and `error` (`{code, message}`) ends the stream when
/// the caller's credential no longer holds.
#[utoipa::path(
    get, path = "/v1/vms/{id}/events", operation_id = "streamVmEvents", tag = "Instances",
    params(("id" = InstanceId, Path, description = "The instance's id.")),
    responses(
        (status = 200, description = "An event stream: `instance` and `end` events whose data is an \
            `InstanceView`, `error` events whose data is `{code, message}`, and keep-alive comments.",
            content_type = "text/event-stream", body = String,
            example = "event: instance\ndata: {\"id\":\"0193a5c4-7e1f-7b3a-9c2d-5e8f1a2b3c4d\",\"name\":\"web-1\",\
                \"status\":\"running\"}\n\n"),
    )
)]
async fn events(State(state): State<AppState>, auth: AuthUser, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id: InstanceId = parse_id(&id, "vm")?;
    // Checked before the stream starts, so a foreign or missing instance is a plain 404.
    let first = current(&state, &auth, id).await.map_err(|e| not_found(e, "vm"))?;
    let signal = state.dispatcher().instance_wakeups().follow(id);
    let open = state.http_metrics().stream_opened("instances");
    let follow = Follow {
        poll: state.settings().sse_poll.min(state.settings().stream_auth_check),
        credential: StreamCredential::new(state.clone(), auth),
        state,
        id,
        signal,
        pending: Some(first),
        last: None,
        done: false,
    };
    Ok(Sse::new(open.around(stream(follow))).keep_alive(KeepAlive::default()).into_response())
}

/// The instance as `GET /v1/vms/{id}` shows it.
async fn current(state: &AppState, auth: &AuthUser, id: InstanceId) -> Result<InstanceView, nimbus_db::DbError> {
    let vm = instances::get(state.db(), auth.tenant(), id).await?;
    let operation = operations::active(state.db(), id).await?.map(|j| j.handle());
    Ok(view(vm, operation))
}

/// What decides whether a view is news: everything but the uptime, which moves every second.
fn fingerprint(v: &InstanceView) -> String {
    let mut v = v.clone();
    v.uptime = None;
    serde_json::to_string(&v).unwrap_or_default()
}

struct Follow {
    state: AppState,
    credential: StreamCredential,
    id: InstanceId,
    signal: Arc<Notify>,
    poll: Duration,
    /// A view read but not sent yet.
    pending: Option<InstanceView>,
    /// The fingerprint of the last view sent.
    last: Option<String>,
    done: bool,
}

fn stream(follow: Follow) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(follow, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            if let Some(v) = s.pending.take() {
                let print = fingerprint(&v);
                if s.last.as_ref() != Some(&print) {
                    s.last = Some(print);
                    let deleted = v.status == InstanceStatus::Deleted;
                    s.done = deleted;
                    let name = if deleted { "end" } else { "instance" };
                    return Some((Ok(Event::default().event(name).json_data(&v).unwrap_or_default()), s));
                }
            }
            if let Some(error) = s.credential.revoked(&format!("vm {}", s.id)).await {
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
            match current(&s.state, s.credential.caller(), s.id).await {
                Ok(v) => s.pending = Some(v),
                Err(e) => {
                    tracing::warn!(vm.id = %s.id, error = %e, "instance event stream ended by a database error");
                    return None;
                }
            }
        }
    })
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(events), components(schemas(InstanceView)))]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_alone_is_no_news() {
        let v: InstanceView = serde_json::from_value(serde_json::json!({
            "id": InstanceId::new(), "name": "web-1", "type": "qemu", "template": "debian-12", "cores": 1,
            "memory": 1024, "disk": 10, "status": "running", "node": "pve1", "vmid": 100, "ipAddresses": [],
            "sshKeys": [], "createdAt": "2026-12-06T00:00:00Z", "updatedAt": "2026-12-06T00:00:00Z", "uptime": 5
        }))
        .expect("a view");
        let mut later = v.clone();
        later.uptime = Some(65);
        assert_eq!(fingerprint(&v), fingerprint(&later));
        let mut stopped = later.clone();
        stopped.status = InstanceStatus::Stopped;
        assert_ne!(fingerprint(&v), fingerprint(&stopped));
    }
}
