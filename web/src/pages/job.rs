//! A job's live progress: percentage, current step, the steps so far and the error, over SSE
//! with polling as fallback (see [`crate::progress`]).

use sycamore::prelude::*;

use crate::components::{Badge, CopyId, ErrorBanner, Loading};
use crate::format;
use crate::progress::{self, WaitingFor};

#[component(inline_props)]
pub fn JobPage(id: String) -> View {
    let live = progress::follow(id.clone());
    // Why it waits, while it is queued.
    let why = create_selector(move || live.job.with(|j| j.as_ref().and_then(progress::waiting_for)));
    let steps = move || {
        live.steps
            .get_clone()
            .into_iter()
            .map(|s| {
                let class = format!("step status-{}", s.status.as_str());
                let progress = format!(" {}%", s.progress);
                let message = match s.message {
                    Some(m) => view! { span(class="muted") { " — " (m) } },
                    None => view! {},
                };
                let step = s.step;
                view! {
                    li(class=class) {
                        span(class="step-name") { (step) }
                        span(class="muted") { (progress) }
                        (message)
                    }
                }
            })
            .collect::<Vec<_>>()
    };
    view! {
        section {
            div(class="page-head") {
                h1 { "Job " CopyId(id=id.clone()) }
                span(class="muted transport", data-testid="transport") { (move || live.transport.get()) }
            }
            ErrorBanner(failure=live.failure)
            (move || why.get_clone().map(|why| view! { WaitingFor(why=why) }))
            (move || match live.job.get_clone() {
                None => view! { Loading(label="Loading job…") },
                Some(job) => {
                    let status = format::job_status(job.status).to_owned();
                    let width = format!("width: {}%", job.progress);
                    let instance = match job.resources.iter().find(|r| r.kind == "instance") {
                        Some(r) => {
                            let href = format!("/instances/{}", r.id);
                            view! { p { a(href=href, data-testid="instance-link") { "Open the instance" } } }
                        }
                        None => view! {},
                    };
                    let error = match job.error.clone() {
                        Some(e) => {
                            let code = serde_json::to_value(e.code).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
                            let message = e.message;
                            // What to quote to support about this failure.
                            let rid = match job.request_id.clone() {
                                Some(rid) => view! { " · request " CopyId(id=rid) },
                                None => view! {},
                            };
                            view! {
                                div(class="banner error", role="alert", data-testid="job-error") {
                                    div(class="banner-text") { strong { (message) } " " span(class="muted") { (code) (rid) } }
                                }
                            }
                        }
                        None => view! {},
                    };
                    let bar_class = format!("bar status-{status}");
                    let kind = job.kind.as_str();
                    let progress = format!("{}%", job.progress);
                    let valuenow = job.progress.to_string();
                    let step = job.step.clone().unwrap_or_default();
                    let attempt = format!("attempt {}", job.attempts);
                    view! {
                        div(class="card") {
                            div(class="job-head") {
                                Badge(status=status)
                                span(data-testid="job-kind") { (kind) }
                                span(data-testid="job-progress") { (progress) }
                                span(class="muted") { (step) }
                                span(class="muted") { (attempt) }
                            }
                            div(class="meter big", role="progressbar", aria-valuenow=valuenow, aria-valuemin="0", aria-valuemax="100") {
                                div(class=bar_class, style=width) {}
                            }
                            (error)
                            (instance)
                        }
                    }
                }
            })
            h2 { "Steps" }
            ol(class="steps", data-testid="steps") { (steps) }
        }
    }
}
