//! The operators' schedules (`GET /v1/admin/schedules`): every schedule, the system's and every
//! tenant's, with its cron expression and missed-fire policy, its next fire, its last fire and
//! what became of the job that fire started; each can be paused and resumed.

use nimbus_domain::JobStatus;
use serde::Deserialize;
use serde_json::Value;
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{Badge, ErrorBanner, Loading};
use crate::format;

/// How often the list is re-read.
const REFRESH_MS: u32 = 5000;

/// A schedule's last fire as the API shows it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LastFire {
    at: chrono::DateTime<chrono::Utc>,
    job_id: Option<String>,
    job_status: Option<JobStatus>,
    skipped: Option<String>,
}

/// A schedule as the API shows it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Schedule {
    id: String,
    tenant_id: Option<String>,
    name: String,
    cron: String,
    job_kind: String,
    missed_fire_policy: String,
    paused: bool,
    next_fire_at: chrono::DateTime<chrono::Utc>,
    last_fire: Option<LastFire>,
}

/// What the "Last fire" cell says.
fn last_fire_text(last: &Option<LastFire>) -> String {
    match last {
        None => "never".to_owned(),
        Some(f) => {
            let outcome = match (&f.job_status, &f.skipped) {
                (Some(s), _) => format::job_status(*s).to_owned(),
                (None, Some(why)) => format!("skipped: {why}"),
                (None, None) => "job removed".to_owned(),
            };
            format!("{} · {outcome}", format::time(&f.at))
        }
    }
}

#[component]
pub fn AdminSchedules() -> View {
    let items = create_signal(None::<(Vec<Schedule>, u64)>);
    let failure = create_signal(None::<Failure>);
    let reload = move || {
        crate::task::spawn(async move {
            match api::list::<Schedule>("/v1/admin/schedules?perPage=100").await {
                Ok(page) => {
                    items.set(Some(page));
                    failure.set(None);
                }
                Err(f) => failure.set(Some(f)),
            }
        })
    };
    crate::task::spawn(async move {
        loop {
            reload();
            gloo_timers::future::TimeoutFuture::new(REFRESH_MS).await;
        }
    });
    view! {
        section {
            h1 { "Schedules" }
            p(class="muted") { "Every schedule fires once per fire time, however many workers run. A paused schedule fires nothing; on resuming, its policy decides about the times it missed." }
            ErrorBanner(failure=failure)
            (move || match items.get_clone() {
                None => view! { Loading(label="Loading schedules…") },
                Some((list, _)) if list.is_empty() => view! { p(class="empty") { "No schedules yet." } },
                Some((list, total)) => {
                    let count = format!("{} of {total}", list.len());
                    let rows = list.into_iter().map(|s| {
                        let owner = s.tenant_id.as_deref().map(format::short_id).unwrap_or_else(|| "system".into());
                        let state = if s.paused { "paused" } else { "active" }.to_owned();
                        let next = format::time(&s.next_fire_at);
                        let last = last_fire_text(&s.last_fire);
                        // The job's id (the operator finds it on the queue dashboard; `/jobs/{id}`
                        // is the tenant's view).
                        let job = s.last_fire.as_ref().and_then(|f| f.job_id.clone()).map(|id| {
                            let short = format::short_id(&id);
                            view! { " " code(title=id) { (short) } }
                        });
                        let (row_name, name, cron, kind, policy) = (s.name.clone(), s.name, s.cron, s.job_kind, s.missed_fire_policy);
                        let (label, action) = if s.paused { ("Resume", "resume") } else { ("Pause", "pause") };
                        let path = format!("/v1/admin/schedules/{}/{action}", s.id);
                        let toggle = move |_| {
                            let path = path.clone();
                            crate::task::spawn(async move {
                                match api::post::<Value, Value>(&path, None, &[]).await {
                                    Ok(_) => reload(),
                                    Err(f) => failure.set(Some(f)),
                                }
                            });
                        };
                        view! {
                            tr(data-schedule=row_name) {
                                td { (name) }
                                td { (owner) }
                                td { code { (cron) } }
                                td { (kind) }
                                td { (policy) }
                                td { Badge(status=state) }
                                td { (next) }
                                td { (last) (job) }
                                td { button(class="small", r#type="button", data-testid=action, on:click=toggle) { (label) } }
                            }
                        }
                    }).collect::<Vec<_>>();
                    view! {
                        p(class="muted") { (count) }
                        div(class="table-wrap") {
                            table(data-testid="schedules") {
                                thead { tr { th { "Name" } th { "Owner" } th { "Cron (UTC)" } th { "Starts" } th { "Missed fires" } th { "State" } th { "Next fire" } th { "Last fire" } th {} } }
                                tbody { (rows) }
                            }
                        }
                    }
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire(status: Option<JobStatus>, skipped: Option<&str>) -> Option<LastFire> {
        Some(LastFire {
            at: chrono::DateTime::parse_from_rfc3339("2026-12-07T03:00:00Z").unwrap().with_timezone(&chrono::Utc),
            job_id: None,
            job_status: status,
            skipped: skipped.map(str::to_owned),
        })
    }

    #[test]
    fn the_last_fire_says_what_became_of_it() {
        assert_eq!(last_fire_text(&None), "never");
        assert_eq!(last_fire_text(&fire(Some(JobStatus::Succeeded), None)), "2026-12-07 03:00 UTC · succeeded");
        assert_eq!(last_fire_text(&fire(None, Some("busy"))), "2026-12-07 03:00 UTC · skipped: busy");
        assert_eq!(last_fire_text(&fire(None, None)), "2026-12-07 03:00 UTC · job removed");
    }
}
