//! The operator's queue dashboard: per queue depth, running, failed and dead jobs and the
//! throughput of the last hour (`GET /v1/admin/queues`); the failed jobs with their error and a
//! retry button (`GET /v1/admin/jobs?status=failed`, `POST /v1/admin/jobs/{id}/retry`).
//! Queues and jobs are read as JSON values: typed answers would add their own decoders to the
//! first load.

use serde_json::Value;
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{CopyId, ErrorBanner, Loading, Notice};
use crate::format;
use crate::pages::billing::text;
use crate::session::Me;

const REFRESH_MS: u32 = 4000;

async fn load(
    queues: Signal<Option<Vec<Value>>>,
    failed: Signal<Option<Vec<Value>>>,
    failure: Signal<Option<Failure>>,
) {
    match api::get::<Value>("/v1/admin/queues").await {
        Ok(Value::Array(q)) => queues.set(Some(q)),
        Ok(_) => queues.set(Some(Vec::new())),
        Err(f) => failure.set(Some(f)),
    }
    match api::list::<Value>("/v1/admin/jobs?status=failed&perPage=50").await {
        Ok((items, _)) => failed.set(Some(items)),
        Err(f) => failure.set(Some(f)),
    }
}

fn sparkline(slots: &Value) -> View {
    let slots =
        slots.as_array().map(|s| s.iter().map(|n| n.as_i64().unwrap_or(0)).collect::<Vec<_>>()).unwrap_or_default();
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
    let queues = create_signal(None::<Vec<Value>>);
    let failed = create_signal(None::<Vec<Value>>);
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
            match api::post::<Value, Value>(&format!("/v1/admin/jobs/{id}/retry"), None, &[]).await {
                Ok(job) => {
                    notice.set(Some(format!(
                        "Job {} re-queued (attempt {} of its new budget).",
                        format::short_id(&id),
                        job["attempts"].as_u64().unwrap_or(0) + 1
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
                        let (queue_attr, queue) = (text(&q["queue"]), text(&q["queue"]));
                        let depth = if q["retrying"].as_i64() > Some(0) { format!("{} ({} retrying)", q["depth"], q["retrying"]) } else { q["depth"].to_string() };
                        let (running, failed, dead) = (q["running"].to_string(), q["failed"].to_string(), q["dead"].to_string());
                        let failed_class = if q["failed"].as_i64() > Some(0) { "error-text" } else { "" };
                        let hour = format!("{} finished, {} failed", q["finishedLastHour"], q["failedLastHour"]);
                        let spark = sparkline(&q["throughput"]);
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
                        let tenant_id = j["tenantId"].as_str().map(str::to_owned);
                        let own = tenant_id == own_tenant;
                        let id = text(&j["id"]);
                        let message = text(&j["error"]["message"]);
                        // Proxmox's own text: operators only, tenants see the message alone.
                        let detail = match j["errorDetail"].as_str() {
                            Some(d) => { let d = d.to_owned(); view! { div(class="muted", data-testid="error-detail") { (d) } } },
                            None => view! {},
                        };
                        let code = text(&j["error"]["code"]);
                        let rid = match j["requestId"].as_str() { Some(r) => view! { CopyId(id=r.to_owned()) }, None => view! {} };
                        // Operators see every tenant's jobs: name whose each one is.
                        let tenant = match tenant_id { Some(t) => view! { CopyId(id=t) }, None => view! { "—" } };
                        let button_id = id.clone();
                        let busy = move || retrying.with(|r| r.as_deref() == Some(button_id.as_str()));
                        let on_retry = { let id = id.clone(); move |_| retry(id.clone()) };
                        let (row_attr, href, short, copy) = (id.clone(), format!("/jobs/{id}"), format::short_id(&id), id.clone());
                        let queue = text(&j["queue"]);
                        let kind = text(&j["kind"]);
                        let attempts = format!("{}/{}", j["attempts"], j["maxAttempts"]);
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
