//! The operators' schedules (`GET /v1/admin/schedules`): every schedule, the system's and every
//! tenant's, with its cron expression and missed-fire policy, its next fire, its last fire and
//! what became of the job that fire started; each can be paused and resumed.

use serde_json::Value;
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{Badge, ErrorBanner, Loading};
use crate::format;
use crate::pages::billing::text;

/// How often the list is re-read.
const REFRESH_MS: u32 = 5000;

/// What the "Last fire" cell says of a schedule's `lastFire` (`{at, jobId, jobStatus, skipped}`,
/// or null). Schedules are read as JSON values: a typed answer would add its own decoder to the
/// first load.
fn last_fire_text(last: &Value) -> String {
    if last.is_null() {
        return "never".to_owned();
    }
    let outcome = match (last["jobStatus"].as_str(), last["skipped"].as_str()) {
        (Some(s), _) => s.to_owned(),
        (None, Some(why)) => format!("skipped: {why}"),
        (None, None) => "job removed".to_owned(),
    };
    format!("{} · {outcome}", format::time_str(last["at"].as_str().unwrap_or_default()))
}

#[component]
pub fn AdminSchedules() -> View {
    let items = create_signal(None::<(Vec<Value>, u64)>);
    let failure = create_signal(None::<Failure>);
    let reload = move || {
        crate::task::spawn(async move {
            match api::list::<Value>("/v1/admin/schedules?perPage=100").await {
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
                        let owner = s["tenantId"].as_str().map(format::short_id).unwrap_or_else(|| "system".into());
                        let paused = s["paused"] == true;
                        let state = if paused { "paused" } else { "active" }.to_owned();
                        let next = format::time_str(s["nextFireAt"].as_str().unwrap_or_default());
                        let last = last_fire_text(&s["lastFire"]);
                        // The job's id (the operator finds it on the queue dashboard; `/jobs/{id}`
                        // is the tenant's view).
                        let job = s["lastFire"]["jobId"].as_str().map(|id| {
                            let (short, id) = (format::short_id(id), id.to_owned());
                            view! { " " code(title=id) { (short) } }
                        });
                        let (row_name, name, cron, kind, policy) =
                            (text(&s["name"]), text(&s["name"]), text(&s["cron"]), text(&s["jobKind"]), text(&s["missedFirePolicy"]));
                        let (label, action) = if paused { ("Resume", "resume") } else { ("Pause", "pause") };
                        let path = format!("/v1/admin/schedules/{}/{action}", text(&s["id"]));
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
    use serde_json::json;

    #[test]
    fn the_last_fire_says_what_became_of_it() {
        let at = "2026-12-07T03:00:00Z";
        assert_eq!(last_fire_text(&Value::Null), "never");
        let ran = json!({"at": at, "jobId": "j", "jobStatus": "succeeded", "skipped": null});
        assert_eq!(last_fire_text(&ran), "2026-12-07 03:00 UTC · succeeded");
        let skipped = json!({"at": at, "jobId": null, "jobStatus": null, "skipped": "busy"});
        assert_eq!(last_fire_text(&skipped), "2026-12-07 03:00 UTC · skipped: busy");
        let removed = json!({"at": at, "jobId": null, "jobStatus": null, "skipped": null});
        assert_eq!(last_fire_text(&removed), "2026-12-07 03:00 UTC · job removed");
    }
}
