//! The audit log's recording side (issue #4 item 7): which requests are audited, what an entry
//! says, and the group-commit writer that makes entries durable without a round trip each.
//!
//! Two layers, because a request can be refused before a caller is known:
//! * [`record`] runs outside `authenticate` (right inside the envelope), so it also sees the 401
//!   of an invalid credential. After the handler ran it decides whether the request is audited
//!   ([`audited`]), builds the entry and waits until the entry is durable before the response
//!   leaves.
//! * [`capture`] runs inside `authenticate` and copies the resolved caller onto the response,
//!   where [`record`] reads it.
//!
//! Audited: every state-changing request, every request under impersonation (or asking for it),
//! every `/v1/admin` request and every 401, on a known route. The action is the route template
//! (`POST /v1/admin/jobs/{id}/retry`), the resource the last id in the path (or, for a create,
//! what the handler marked as [`Created`], else the `Location` answered), the outcome follows
//! the status (`nimbus_db::audit::Outcome`). The request id is the server's; a client's own
//! `X-Request-ID` is kept in the details as `clientRequestId`.
//! Not audited: unknown routes (nothing to name) and 429s (a flood of refused requests must not
//! turn into a flood of inserts).
//!
//! The writer ([`AuditLog`]) is one task fed by a channel: it takes every entry queued while the
//! previous insert ran, inserts them with one multi-row `INSERT … SELECT FROM unnest(…)`, then
//! completes each request's oneshot. Under load many requests share one insert; each response
//! still waits for its own row. Text is stored losslessly (`nimbus_db::audit::storable` escapes
//! what PostgreSQL refuses), and a group insert that is refused anyway is retried row by row, so
//! one bad entry cannot drop the others. An entry that still fails is logged in full (the log is
//! then the record) and the responses go out unchanged: an audit failure never becomes a 500
//! after the handler has acted.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use nimbus_db::PgPool;
use nimbus_db::audit::{self, NewEntry, Outcome};
use nimbus_domain::{TenantId, UserId};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::auth::AuthUser;
use crate::auth::impersonation::IMPERSONATE_HEADER;
use crate::error::PendingError;
use crate::middleware::{ClientRequestId, RequestId};
use crate::ratelimit::client_ip;
use crate::state::AppState;

/// The most entries one insert takes.
pub const MAX_BATCH: usize = 1_000;
/// Entries waiting for the writer before requests wait to queue theirs.
const QUEUE: usize = 10_000;
/// Longest text kept from a request (path, ids): the rest is cut, the entry stays bounded.
const MAX_TEXT: usize = 256;

/// Who made the request, as [`capture`] saw it (or [`attribute`] named it).
#[derive(Clone, Copy, Debug)]
struct Actor {
    user: UserId,
    tenant: TenantId,
    impersonator: Option<UserId>,
}

/// Names the user behind a request refused before it had a caller (a session's request that
/// failed the CSRF check), so its audit row says whose session it was.
pub fn attribute(response: &mut Response, user: UserId, tenant: TenantId) {
    response.extensions_mut().insert(Actor { user, tenant, impersonator: None });
}

/// What a request created, for its audit row: handlers put it on their response, and the row
/// names it as its resource (a create's path names only the collection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    /// The collection, as in paths: `vms`, `apikeys`, `users`.
    pub kind: &'static str,
    /// The new resource's id.
    pub id: String,
}

impl Created {
    /// Marks `response` as having created `kind` `id`.
    pub fn mark(response: &mut Response, kind: &'static str, id: impl ToString) {
        response.extensions_mut().insert(Created { kind, id: id.to_string() });
    }
}

/// Copies the caller onto the response for [`record`] (install inside `authenticate`).
pub async fn capture(request: Request, next: Next) -> Response {
    let actor = request.extensions().get::<AuthUser>().map(|c| Actor {
        user: c.user.id,
        tenant: c.user.tenant_id,
        impersonator: c.impersonator.as_ref().map(|a| a.id),
    });
    let mut response = next.run(request).await;
    if let Some(actor) = actor {
        response.extensions_mut().insert(actor);
    }
    response
}

/// Whether a request is audited.
pub fn audited(method: &Method, template: &str, status: StatusCode, impersonation: bool) -> bool {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return false;
    }
    let safe = method == Method::GET || method == Method::HEAD || method == Method::OPTIONS;
    !safe
        || impersonation
        || template == "/v1/admin"
        || template.starts_with("/v1/admin/")
        || status == StatusCode::UNAUTHORIZED
}

/// What the request named: the last path parameter and the segment before it, else the
/// `Location` of what it created, else the last segment of the route.
fn resource(template: &str, params: &[(String, String)], location: Option<&str>) -> (Option<String>, Option<String>) {
    let segments: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    if let Some(i) = segments.iter().rposition(|s| s.starts_with('{')) {
        let name = segments[i].trim_matches(|c| c == '{' || c == '}' || c == '*');
        let id = params.iter().rev().find(|(k, _)| k == name).map(|(_, v)| truncate(v));
        let kind = i.checked_sub(1).map(|j| segments[j].to_owned());
        return (kind, id);
    }
    if let Some(location) = location {
        let mut parts = location.split('?').next().unwrap_or("").rsplit('/').filter(|s| !s.is_empty());
        if let (Some(id), Some(kind)) = (parts.next(), parts.next()) {
            return (Some(truncate(kind)), Some(truncate(id)));
        }
    }
    (segments.last().map(|s| (*s).to_owned()), None)
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_TEXT) {
        Some((i, _)) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

/// The layer (install with `axum::middleware::from_fn_with_state`, between the envelope and
/// `authenticate`).
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // Unknown routes have no template: nothing to name, and the envelope answers 404.
    let Some(template) = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()) else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    let params: Vec<(String, String)> = match RawPathParams::from_request_parts(&mut parts, &()).await {
        Ok(p) => p.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        Err(_) => Vec::new(),
    };
    let request = Request::from_parts(parts, body);
    let method = request.method().clone();
    let path = truncate(request.uri().path());
    let request_id = request.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let client_request_id = request.extensions().get::<ClientRequestId>().map(|r| r.0.clone());
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let ip: Option<IpAddr> = client_ip(peer, request.headers(), &state.settings().rate_limit.trusted_proxies);
    let asked_to_impersonate =
        request.headers().get(IMPERSONATE_HEADER).map(|v| truncate(&String::from_utf8_lossy(v.as_bytes())));

    let response = next.run(request).await;

    let status = response.status();
    let actor = response.extensions().get::<Actor>().copied();
    let impersonation = asked_to_impersonate.is_some() || actor.is_some_and(|a| a.impersonator.is_some());
    if !audited(&method, &template, status, impersonation) {
        return response;
    }
    let location = response.headers().get(header::LOCATION).and_then(|v| v.to_str().ok());
    let (resource_type, resource_id) = match response.extensions().get::<Created>() {
        Some(created) => (Some(created.kind.to_owned()), Some(truncate(&created.id))),
        None => resource(&template, &params, location),
    };
    let mut details = Map::new();
    details.insert("method".into(), json!(method.as_str()));
    details.insert("path".into(), json!(path));
    if let Some(location) = location {
        details.insert("location".into(), json!(truncate(location)));
    }
    if let Some(client_id) = client_request_id {
        details.insert("clientRequestId".into(), json!(client_id));
    }
    if let Some(error) = response.extensions().get::<PendingError>() {
        details.insert("errorCode".into(), json!(error.code));
    }
    if let Some(target) = asked_to_impersonate {
        details.insert("impersonate".into(), json!(target));
    }
    let entry = NewEntry {
        at: Utc::now(),
        actor_id: actor.map(|a| a.user),
        impersonator_id: actor.and_then(|a| a.impersonator),
        tenant_id: actor.map(|a| a.tenant),
        action: truncate(&format!("{method} {template}")),
        resource_type,
        resource_id,
        request_id,
        client_ip: ip,
        outcome: Outcome::from_status(status.as_u16()),
        http_status: status.as_u16(),
        details: Value::Object(details),
    };
    state.audit().append(entry).await;
    response
}

/// One queued entry and the request waiting for it.
struct Queued {
    entry: NewEntry,
    done: oneshot::Sender<bool>,
}

/// The group-commit writer: cheap to share, started on first use (it needs a Tokio runtime).
pub struct AuditLog {
    db: PgPool,
    timeout: Duration,
    queue: OnceLock<mpsc::Sender<Queued>>,
}

impl AuditLog {
    /// A writer into `db`; a request waits at most `timeout` for its entry.
    pub fn new(db: PgPool, timeout: Duration) -> Self {
        AuditLog { db, timeout, queue: OnceLock::new() }
    }

    fn queue(&self) -> &mpsc::Sender<Queued> {
        self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(write(self.db.clone(), rx));
            tx
        })
    }

    /// Appends `entry` and waits until it is durable. Returns whether it is; a failure is
    /// logged (by the writer, or here when the wait times out), never returned.
    ///
    /// The entry is queued before the first await when the queue has room, so a request
    /// cancelled afterwards (the client went away) still leaves its entry behind.
    pub async fn append(&self, entry: NewEntry) -> bool {
        let request_id = entry.request_id.clone();
        let (done, wait) = oneshot::channel();
        let queued = match self.queue().try_send(Queued { entry, done }) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(queued)) => Some(queued),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!(request.id = %request_id, "audit writer stopped; entry lost");
                return false;
            }
        };
        let waited = tokio::time::timeout(self.timeout, async {
            if let Some(queued) = queued {
                // Back-pressure: the writer is behind by a whole queue.
                self.queue().send(queued).await.ok()?;
            }
            wait.await.ok()
        })
        .await;
        match waited {
            Ok(Some(durable)) => durable,
            Ok(None) => {
                tracing::error!(request.id = %request_id, "audit writer stopped; entry lost");
                false
            }
            Err(_) => {
                tracing::error!(request.id = %request_id, timeout_ms = self.timeout.as_millis() as u64,
                    "audit entry not durable in time; answering without waiting");
                false
            }
        }
    }
}

/// The writer task: batches of whatever queued meanwhile, one insert each.
async fn write(db: PgPool, mut rx: mpsc::Receiver<Queued>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (entries, waiting): (Vec<NewEntry>, Vec<oneshot::Sender<bool>>) =
            batch.drain(..).map(|q| (q.entry, q.done)).unzip();
        let durable = match audit::append_many(&db, &entries).await {
            Ok(_) => vec![true; entries.len()],
            // The database is unreachable: a row-by-row retry would fail the same way, slower.
            Err(e) if e.is_unavailable() => {
                tracing::error!(error = %e, entries = entries.len(), "audit insert failed; entries follow");
                entries.iter().for_each(log_lost);
                vec![false; entries.len()]
            }
            // Something in the batch was refused: each entry on its own, so one bad row cannot
            // take the others with it.
            Err(e) => {
                tracing::warn!(error = %e, entries = entries.len(), "audit group insert refused; inserting one by one");
                let mut durable = Vec::with_capacity(entries.len());
                for entry in &entries {
                    let stored = audit::append_many(&db, std::slice::from_ref(entry)).await;
                    if let Err(e) = &stored {
                        tracing::error!(error = %e, "audit insert failed");
                        log_lost(entry);
                    }
                    durable.push(stored.is_ok());
                }
                durable
            }
        };
        for (done, durable) in waiting.into_iter().zip(durable) {
            // The request may have stopped waiting (timeout, client gone): nothing to do.
            let _ = done.send(durable);
        }
    }
}

/// An entry that could not be stored goes to the log, which is then its only record.
fn log_lost(lost: &NewEntry) {
    tracing::warn!(
        audit.action = %lost.action,
        audit.outcome = lost.outcome.as_str(),
        http.status = lost.http_status,
        request.id = %lost.request_id,
        user.id = ?lost.actor_id,
        impersonator.id = ?lost.impersonator_id,
        tenant.id = ?lost.tenant_id,
        resource.id = ?lost.resource_id,
        "audit entry lost"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_changes_admin_impersonation_and_401s_are_audited() {
        let ok = StatusCode::OK;
        assert!(audited(&Method::POST, "/v1/vms", StatusCode::ACCEPTED, false));
        assert!(audited(&Method::DELETE, "/v1/auth/apikeys/{id}", StatusCode::NO_CONTENT, false));
        assert!(!audited(&Method::GET, "/v1/vms", ok, false));
        assert!(audited(&Method::GET, "/v1/vms", ok, true), "impersonated reads are audited");
        assert!(audited(&Method::GET, "/v1/admin/jobs", ok, false), "admin reads are audited");
        assert!(!audited(&Method::GET, "/v1/administrators", ok, false));
        assert!(audited(&Method::GET, "/v1/vms", StatusCode::UNAUTHORIZED, false));
        assert!(!audited(&Method::POST, "/v1/vms", StatusCode::TOO_MANY_REQUESTS, false));
    }

    #[test]
    fn the_resource_is_the_last_path_id_or_what_was_created() {
        let p = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        assert_eq!(
            resource("/v1/admin/jobs/{id}/retry", &p(&[("id", "j1")]), None),
            (Some("jobs".into()), Some("j1".into()))
        );
        assert_eq!(
            resource("/v1/admin/tenants/{tenant}/plan", &p(&[("tenant", "t1")]), None),
            (Some("tenants".into()), Some("t1".into()))
        );
        assert_eq!(resource("/v1/vms", &[], Some("/v1/jobs/0190-abc")), (Some("jobs".into()), Some("0190-abc".into())));
        assert_eq!(resource("/v1/vms", &[], None), (Some("vms".into()), None));
        let long = "x".repeat(MAX_TEXT + 50);
        assert_eq!(resource("/v1/vms/{id}", &p(&[("id", &long)]), None).1.unwrap().len(), MAX_TEXT);
    }
}
