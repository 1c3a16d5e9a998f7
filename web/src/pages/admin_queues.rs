//! The operator's queue dashboard: per queue depth, running, failed and dead jobs and the
//! throughput of the last hour (`GET /v1/admin/queues`); the failed jobs with their error and a
//! retry button (`GET /v1/admin/jobs?status=failed`, `POST /v1/admin/jobs/{id}/retry`).

use nimbus_domain::{AdminJobView, JobHandle, QueueStats};
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{CopyId, ErrorBanner, Loading, Notice};
use crate::format;
use crate::session::Me;

const REFRESH_MS: u32 = 4000;

async fn load(
    queues: Signal<Option<Vec<QueueStats>>>,
    failed: Signal<Option<Vec<AdminJobView>>>,
    failure: Signal<Option<Failure>>,
) {
    match api::get::<Vec<QueueStats>>("/v1/admin/queues").await {
        Ok(q) => queues.set(Some(q)),
        Err(f) => failure.set(Some(f)),
    }
    match api::list::<AdminJobView>("/v1/admin/jobs?status=failed&perPage=50").await {
        Ok((items, _)) => failed.set(Some(items)),
        Err(f) => failure.set(Some(f)),
    }
}

fn sparkline(slots: &[i64]) -> View {
    let max = slots.iter().copied().max().unwrap_or(0).max(1);
    let bars = slots
        .iter()
        .map(|n| {
            let style = format!("height: {}%", (n * 100 / max).max(2));
            let title = format!("{n} jobs");
            view! { span(class="spark-bar", style=style, title=title) {} }
        })
        .collect::<Vec<_>>();
    view! { span(class="spark", aria-label="jobs finished per 5 minutes, last hour") { (bars) } }
}

#[component]
pub fn Queues() -> View {
    let queues = create_signal(None::<Vec<QueueStats>>);
    let failed = create_signal(None::<Vec<AdminJobView>>);
    let failure = create_signal(None::<Failure>);
    let notice = create_signal(None::<String>);
    let retrying = create_signal(None::<String>);
    crate::task::spawn(async move {
        loop {
            load(queues, failed, failure).await;
            gloo_timers::future::TimeoutFuture::new(REFRESH_MS).await;
        }
    });
    let retry = move |id: String| {
        retrying.set(Some(id.clone()));
        crate::task::spawn(async move {
            match api::post::<(), JobHandle>(&format!("/v1/admin/jobs/{id}/retry"), None, &[]).await {
                Ok(job) => {
                    notice.set(Some(format!(
                        "Job {} re-queued (attempt {} of its new budget).",
                        format::short_id(&id),
                        job.attempts + 1
                    )));
                    failure.set(None);
                }
                Err(f) => failure.set(Some(f)),
            }
            retrying.set(None);
            load(queues, failed, failure).await;
        });
    };
    view! {
        section {
            h1 { "Queues" }
            ErrorBanner(failure=failure)
            Notice(message=notice)
            (move || match queues.get_clone() {
                None => view! { Loading(label="Loading queues…") },
                Some(list) if list.is_empty() => view! { p(class="empty") { "No job has been queued yet." } },
                Some(list) => {
                    let rows = list.into_iter().map(|q| {
                        let (queue_attr, queue) = (q.queue.clone(), q.queue.clone());
                        let depth = if q.retrying > 0 { format!("{} ({} retrying)", q.depth, q.retrying) } else { q.depth.to_string() };
                        let (running, failed, dead) = (q.running, q.failed, q.dead);
                        let failed_class = if q.failed > 0 { "error-text" } else { "" };
                        let hour = format!("{} finished, {} failed", q.finished_last_hour, q.failed_last_hour);
                        let spark = sparkline(&q.throughput);
                        view! {
                            tr(data-queue=queue_attr) {
                                td { strong { (queue) } }
                                td(data-testid="depth") { (depth) }
                                td(data-testid="running") { (running) }
                                td(data-testid="failed", class=failed_class) { (failed) }
                                td(data-testid="dead") { (dead) }
                                td { (hour) }
                                td { (spark) }
                            }
                        }
                    }).collect::<Vec<_>>();
                    view! {
                        div(class="table-wrap") {
                            table(data-testid="queues") {
                                thead { tr { th { "Queue" } th { "Depth" } th { "Running" } th { "Failed" } th { "Dead" } th { "Last hour" } th { "Throughput" } } }
                                tbody { (rows) }
                            }
                        }
                    }
                }
            })
            h2 { "Failed jobs" }
            (move || match failed.get_clone() {
                None => view! { Loading(label="Loading failed jobs…") },
                Some(list) if list.is_empty() => view! { p(class="empty", data-testid="no-failed") { "No failed jobs. All clear." } },
                Some(list) => {
                    // The job page reads the caller's own tenant's jobs only.
                    let own_tenant = Me::current().map(|me| me.tenant_id);
                    let rows = list.into_iter().map(|j| {
                        let own = j.tenant_id.map(|t| t.to_string()) == own_tenant;
                        let id = j.handle.id.to_string();
                        let error = j.handle.error.clone();
                        let message = error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
                        // Proxmox's own text: operators only, tenants see the message alone.
                        let detail = match j.error_detail.clone() {
                            Some(d) => view! { div(class="muted", data-testid="error-detail") { (d) } },
                            None => view! {},
                        };
                        let code = error.and_then(|e| serde_json::to_value(e.code).ok()).and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
                        let rid = match j.handle.request_id.clone() { Some(r) => view! { CopyId(id=r) }, None => view! {} };
                        // Operators see every tenant's jobs: name whose each one is.
                        let tenant = match j.tenant_id { Some(t) => view! { CopyId(id=t.to_string()) }, None => view! { "—" } };
                        let button_id = id.clone();
                        let busy = move || retrying.with(|r| r.as_deref() == Some(button_id.as_str()));
                        let on_retry = { let id = id.clone(); move |_| retry(id.clone()) };
                        let (row_attr, href, short, copy) = (id.clone(), format!("/jobs/{id}"), format::short_id(&id), id.clone());
                        let queue = j.queue.clone();
                        let kind = j.handle.kind.as_str();
                        let attempts = format!("{}/{}", j.handle.attempts, j.max_attempts);
                        view! {
                            tr(data-job=row_attr) {
                                td { (if own { view! { a(href=href.clone()) { (short.clone()) } } } else { view! { span { (short.clone()) } } }) " " CopyId(id=copy) }
                                td(data-testid="tenant") { (tenant) }
                                td { (queue) }
                                td { (kind) }
                                td { (attempts) }
                                td(class="error-text") { strong { (code) } " " (message) (detail) }
                                td { (rid) }
                                td { button(class="primary small", r#type="button", data-testid="retry", disabled=busy, on:click=on_retry) { "Retry" } }
                            }
                        }
                    }).collect::<Vec<_>>();
                    view! {
                        div(class="table-wrap") {
                            table(data-testid="failed-jobs") {
                                thead { tr { th { "Job" } th { "Tenant" } th { "Queue" } th { "Kind" } th { "Attempts" } th { "Error" } th { "Request" } th {} } }
                                tbody { (rows) }
                            }
                        }
                    }
                }
            })
        }
    }
}
