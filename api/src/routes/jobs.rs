//! `/v1/jobs`: the job handles of the caller's tenant, and `GET /v1/jobs/{id}/events`, a
//! Server-Sent Events stream of the job's progress.
//!
//! The stream replays the job's history from the ledger (`job_events`, after `Last-Event-ID`
//! when the client reconnects), then follows new events by polling the ledger, and ends with an
//! `end` event carrying the final job handle once the job is succeeded, failed or cancelled.
//! Each `progress` event's id is its position in the job's history (1, 2, ...), so a
//! reconnecting client resumes exactly, and ids say nothing about other jobs.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::Stream;
use nimbus_db::PgPool;
use nimbus_db::jobs::{self, JobEvent, JobFilter};
use nimbus_domain::{
    ApiResponse, InstanceId, JobHandle, JobId, JobStatus, ListResponse, PageRequest, ProgressEvent, TenantId,
};
use serde::Deserialize;
use tokio::sync::Notify;

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::{QueryParams, parse_id};
use crate::middleware::RequestId;
use crate::routes::PageQuery;
use crate::routes::stream_auth::StreamCredential;
use crate::routes::vms::not_found;
use crate::state::AppState;

/// Events read per ledger query.
const EVENT_BATCH: i64 = 200;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", get(list))
        .route("/v1/jobs/{id}", get(show))
        .route("/v1/jobs/{id}/events", get(events))
}

/// `?page=&perPage=&status=&instance=`.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct JobsQuery {
    /// 1-based page (default 1).
    #[param(minimum = 1)]
    page: Option<u32>,
    /// Items per page (default 25, at most 100).
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<u32>,
    /// Only the jobs in this status.
    status: Option<JobStatus>,
    /// Only the jobs of this instance.
    instance: Option<InstanceId>,
}

/// The jobs of the caller's tenant, newest first.
#[utoipa::path(
    get, path = "/v1/jobs", operation_id = "listJobs", tag = "Jobs", params(JobsQuery),
    responses((status = 200, description = "A page of the tenant's jobs.", body = ListResponse<JobHandle>))
)]
async fn list(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    QueryParams(q): QueryParams<JobsQuery>,
) -> Result<Response, ApiError> {
    let request: PageRequest = PageQuery { page: q.page, per_page: q.per_page }.request()?;
    let (items, total) =
        jobs::list(state.db(), auth.tenant(), JobFilter { status: q.status, instance: q.instance }, request).await?;
    let items: Vec<JobHandle> = items.iter().map(|j| j.handle()).collect();
    Ok(super::page(&rid, items, request, total).into_response())
}

/// One job: its status, progress, step and error.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", operation_id = "getJob", tag = "Jobs",
    params(("id" = JobId, Path, description = "The job's id.")),
    responses((status = 200, description = "The job's handle.", body = ApiResponse<JobHandle>))
)]
async fn show(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: JobId = parse_id(&id, "job")?;
    let job = jobs::get_for_tenant(state.db(), auth.tenant(), id).await.map_err(|e| not_found(e, "job"))?;
    Ok(super::data(&rid, job.handle()).into_response())
}

/// The data of a `progress` event.
fn progress_event(e: JobEvent) -> ProgressEvent {
    ProgressEvent {
        job_id: e.job_id,
        status: e.status,
        progress: e.progress,
        step: e.step,
        message: e.message,
        created_at: e.created_at,
    }
}

/// Follows a job's progress as Server-Sent Events.
///
/// Its history, then each new `progress` event (data: a `ProgressEvent`, id: its position in the
/// job's history, for `Last-Event-ID`), then `end` (data: the final `JobHandle`) once it
/// succeeded, failed or was cancelled. `error` (`{code, message}`) ends the stream when the
/// caller's credential no longer holds.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/events", operation_id = "streamJobEvents", tag = "Jobs",
    params(
        ("id" = JobId, Path, description = "The job's id."),
        ("Last-Event-ID" = Option<String>, Header,
            description = "Resume after this event (the `id` of the last `progress` event received); \
                anything but a number replays the whole history.", example = "3"),
    ),
    responses(
        (status = 200, description = "An event stream: `progress` events whose data is a `ProgressEvent`, \
            one `end` event whose data is the final `JobHandle`, `error` events whose data is `{code, message}`, \
            and keep-alive comments.",
            content_type = "text/event-stream", body = String,
            example = "id: 1\nevent: progress\ndata: {\"jobId\":\"0193a5c4-7e1f-7b3a-9c2d-5e8f1a2b3c4d\",\
                \"status\":\"running\",\"progress\":40,\"step\":\"clone\",\"message\":null,\
                \"createdAt\":\"2026-12-01T09:30:00Z\"}\n\n"),
    )
)]
async fn events(
    State(state): State<AppState>,
    auth: AuthUser,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: JobId = parse_id(&id, "job")?;
    // Checked before the stream starts, so a foreign or missing job is a plain 404.
    jobs::get_for_tenant(state.db(), auth.tenant(), id).await.map_err(|e| not_found(e, "job"))?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0)
        .max(0);
    let signal = state.dispatcher().wakeups().follow(id);
    let open = state.http_metrics().stream_opened("jobs");
    let stream = open.around(follow(state.clone(), auth, id, after, signal));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

struct Follow {
    db: PgPool,
    tenant: TenantId,
    job: JobId,
    after: i64,
    signal: Arc<Notify>,
    poll: Duration,
    queue: VecDeque<Event>,
    last_status: Option<JobStatus>,
    done: bool,
    credential: StreamCredential,
}

/// The event stream of one job: ledger events after `after`, then an `end` event with the
/// final handle. The ledger is read again when `signal` fires (a writer published that the job
/// changed) or, should a wake-up be lost, after the `sse_poll` setting. A database error ends
/// the stream (logged); the client reconnects with `Last-Event-ID` and loses nothing.
///
/// The caller's credential is checked again every `stream_auth_check` (a revoked key, a
/// deactivated user, an ended session or an expired token): when it no longer holds, the
/// stream sends an `error` event (`UNAUTHENTICATED`) and ends.
fn follow(
    state: AppState,
    caller: AuthUser,
    job: JobId,
    after: i64,
    signal: Arc<Notify>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let follow = Follow {
        db: state.db().clone(),
        tenant: caller.tenant(),
        job,
        after,
        signal,
        poll: state.settings().sse_poll.min(state.settings().stream_auth_check),
        queue: VecDeque::new(),
        last_status: None,
        done: false,
        credential: StreamCredential::new(state, caller),
    };
    futures::stream::unfold(follow, |mut s| async move {
        loop {
            if let Some(event) = s.queue.pop_front() {
                return Some((Ok(event), s));
            }
            if s.done {
                return None;
            }
            if let Some(error) = s.credential.revoked(&format!("job {}", s.job)).await {
                s.queue.push_back(error);
                s.done = true;
                continue;
            }
            // Armed before reading, so a change committed while the ledger is read still wakes
            // the wait below.
            let signal = s.signal.clone();
            let woken = signal.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Err(e) = s.fill().await {
                tracing::warn!(job.id = %s.job, error = %e, "job event stream ended by a database error");
                return None;
            }
            if s.queue.is_empty() && !s.done {
                tokio::select! {
                    _ = &mut woken => {}
                    _ = tokio::time::sleep(s.poll) => {}
                }
            }
        }
    })
}

impl Follow {
    /// Reads the next events into the queue; when the job is final and nothing newer exists,
    /// queues the `end` event.
    async fn fill(&mut self) -> Result<(), nimbus_db::DbError> {
        let batch = jobs::events_after(&self.db, self.job, self.after, EVENT_BATCH).await?;
        let full = batch.len() as i64 == EVENT_BATCH;
        for e in batch {
            self.after = e.seq;
            self.last_status = Some(e.status);
            let id = e.seq.to_string();
            let data = progress_event(e);
            let event = Event::default().id(id).event("progress").json_data(&data).unwrap_or_default();
            self.queue.push_back(event);
        }
        // A final event followed by nothing newer ends the stream (an admin retry after a
        // failure would add newer events, which are streamed instead).
        if !full && self.last_status.is_some_and(JobStatus::is_final) {
            let job = jobs::get_for_tenant(&self.db, self.tenant, self.job).await?;
            if job.status.is_final() {
                let event = Event::default().event("end").json_data(job.handle()).unwrap_or_default();
                self.queue.push_back(event);
                self.done = true;
            }
        }
        Ok(())
    }
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, show, events), components(schemas(ProgressEvent, JobHandle)))]
pub struct ApiDoc;
