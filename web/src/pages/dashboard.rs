//! The dashboard: the tenant's instances by status, the month's spend so far (linking to the
//! Billing page) and its most recent jobs.

use nimbus_domain::{InstanceStatus, InstanceView, JobHandle};
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{Badge, CopyId, ErrorBanner, Loading};
use crate::format;
use crate::pages::billing;

const STATUSES: [InstanceStatus; 4] =
    [InstanceStatus::Running, InstanceStatus::Provisioning, InstanceStatus::Stopped, InstanceStatus::Failed];

#[component]
pub fn Dashboard() -> View {
    let instances = create_signal(None::<Vec<InstanceView>>);
    let jobs = create_signal(None::<Vec<JobHandle>>);
    let failure = create_signal(None::<Failure>);
    let spend = create_signal(None::<serde_json::Value>);
    billing::load("/v1/billing/usage".into(), spend, failure);
    let spend = billing::part(spend, "Loading this month…", billing::spend_card);
    crate::task::spawn(async move {
        loop {
            match api::list::<InstanceView>("/v1/vms?perPage=100").await {
                Ok((items, _)) => instances.set(Some(items)),
                Err(f) => failure.set(Some(f)),
            }
            match api::list::<JobHandle>("/v1/jobs?perPage=8").await {
                Ok((items, _)) => jobs.set(Some(items)),
                Err(f) => failure.set(Some(f)),
            }
            gloo_timers::future::TimeoutFuture::new(5000).await;
        }
    });
    view! {
        section {
            div(class="page-head") {
                h1 { "Dashboard" }
                a(class="button primary", href="/instances/new") { "Create instance" }
            }
            ErrorBanner(failure=failure)
            h2 { "Instances" }
            (move || match instances.get_clone() {
                None => view! { Loading(label="Loading instances…") },
                Some(list) => {
                    let total = list.len();
                    let cards = STATUSES.iter().map(|s| {
                        let n = list.iter().filter(|i| i.status == *s).count();
                        let name = format::instance_status(*s);
                        let class = format!("stat status-{name}");
                        let testid = format!("count-{name}");
                        view! { a(class=class, href="/instances", data-testid=testid) { strong { (n) } span { (name) } } }
                    }).collect::<Vec<_>>();
                    view! {
                        div(class="stats") {
                            a(class="stat", href="/instances", data-testid="count-total") { strong { (total) } span { "total" } }
                            (cards)
                        }
                    }
                }
            })
            (spend)
            h2 { "Recent jobs" }
            (move || match jobs.get_clone() {
                None => view! { Loading(label="Loading jobs…") },
                Some(list) if list.is_empty() => view! {
                    p(class="empty") { "No jobs yet. Creating an instance starts one." }
                },
                Some(list) => view! { JobTable(jobs=list) },
            })
        }
    }
}

/// A table of job handles (also used by the instance page).
#[component(inline_props)]
pub fn JobTable(jobs: Vec<JobHandle>) -> View {
    let rows = jobs
        .into_iter()
        .map(|j| {
            let id = j.id.to_string();
            let href = format!("/jobs/{id}");
            let error = j.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
            let short = format::short_id(&id);
            let kind = j.kind.as_str();
            let status = format::job_status(j.status).to_owned();
            let progress = format!("{}%", j.progress);
            let step = j.step.clone().unwrap_or_default();
            let created = format::time(&j.created_at);
            view! {
                tr {
                    td { a(href=href) { (short) } " " CopyId(id=id) }
                    td { (kind) }
                    td { Badge(status=status) }
                    td { (progress) }
                    td { (step) }
                    td(class="muted") { (created) }
                    td(class="error-text") { (error) }
                }
            }
        })
        .collect::<Vec<_>>();
    view! {
        div(class="table-wrap") {
            table {
                thead { tr { th { "Job" } th { "Kind" } th { "Status" } th { "Progress" } th { "Step" } th { "Created" } th { "Error" } } }
                tbody { (rows) }
            }
        }
    }
}
