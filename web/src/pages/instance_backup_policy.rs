//! The Backups tab's schedule and retention editor. `GET /v1/vms/{id}/backup-policy` gives the
//! saved schedule (none, `daily`, `weekly` or a cron expression), how many backups retention
//! keeps, the plan's limits and the next run. "Preview retention" dry-runs the entered keeps on
//! the current backups (`…/backup-policy/preview`) before anything is saved; Save is a `PUT`
//! (the API's field errors shown like every form's), and "Turn off" is a `DELETE`.
//!
//! The answers are read as JSON values, not typed structs: each typed answer would add its own
//! decoder to the first load, and this editor reads a few fields of each.

use serde_json::{Value, json};
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{Badge, ErrorBanner, Loading, Notice};
use crate::format;

/// The keeps: JSON and query name, input id, label.
const KEEPS: [(&str, &str, &str); 4] = [
    ("keepLast", "keep-last", "Keep last"),
    ("keepDaily", "keep-daily", "Keep daily"),
    ("keepWeekly", "keep-weekly", "Keep weekly"),
    ("keepMonthly", "keep-monthly", "Keep monthly"),
];

/// The schedule choices: value, label.
const CHOICES: [(&str, &str); 4] =
    [("none", "None"), ("daily", "Daily"), ("weekly", "Weekly"), ("custom", "Custom (cron expression)")];

/// The choice that shows a saved schedule.
fn choice_of(schedule: Option<&str>) -> &'static str {
    match schedule {
        None => "none",
        Some("daily") => "daily",
        Some("weekly") => "weekly",
        Some(_) => "custom",
    }
}

/// The schedule a choice stands for; `None` is no scheduled backups.
fn schedule(choice: &str, cron: &str) -> Result<Option<String>, String> {
    match choice {
        "none" => Ok(None),
        "daily" | "weekly" => Ok(Some(choice.to_owned())),
        _ if cron.trim().is_empty() => Err("Enter a cron expression, e.g. 0 3 * * *.".into()),
        _ => Ok(Some(cron.trim().to_owned())),
    }
}

/// The keeps as typed, as whole numbers ≥ 0: the query string and the JSON object.
fn keeps(typed: &[String; 4]) -> Result<(String, Value), String> {
    let (mut query, mut body) = (Vec::new(), serde_json::Map::new());
    for ((name, _, label), v) in KEEPS.iter().zip(typed) {
        let n: u32 = v.trim().parse().map_err(|_| format!("{label} must be a whole number, 0 or more."))?;
        query.push(format!("{name}={n}"));
        body.insert((*name).to_owned(), n.into());
    }
    Ok((query.join("&"), Value::Object(body)))
}

/// A time field of an answer, or `none` when it is null.
fn when(v: &Value, none: &str) -> String {
    v.as_str().map(format::time_str).unwrap_or_else(|| none.to_owned())
}

/// The preview's headline.
fn removes_text(n: u64) -> String {
    match n {
        0 => "No backup would be removed".to_owned(),
        1 => "1 backup would be removed".to_owned(),
        n => format!("{n} backups would be removed"),
    }
}

/// A problem found before asking the API, shown like the API's own.
fn problem(message: String) -> Failure {
    Failure { status: 0, code: "VALIDATION_FAILED".into(), message, request_id: None, fields: Vec::new() }
}

#[component(inline_props)]
pub fn BackupPolicy(id: String) -> View {
    let path = format!("/v1/vms/{id}/backup-policy");
    let policy = create_signal(None::<Value>);
    let failure = create_signal(None::<Failure>);
    let notice = create_signal(None::<String>);
    let preview = create_signal(None::<Value>);
    let choice = create_signal("none".to_owned());
    let cron = create_signal(String::new());
    let typed = [(); 4].map(|_| create_signal(String::new()));
    let busy = create_signal(false);
    {
        let path = path.clone();
        crate::task::spawn(async move {
            match api::get::<Value>(&path).await {
                Ok(p) => {
                    let saved = p["schedule"].as_str();
                    choice.set(choice_of(saved).to_owned());
                    if choice_of(saved) == "custom" {
                        cron.set(saved.unwrap_or_default().to_owned());
                    }
                    for ((name, _, _), s) in KEEPS.iter().zip(typed) {
                        s.set(p["retention"][name].as_u64().unwrap_or(0).to_string());
                    }
                    policy.set(Some(p));
                }
                Err(f) => failure.set(Some(f)),
            }
        });
    }
    // A preview is of the keeps it was asked with: gone once they change.
    create_effect(move || {
        typed.iter().for_each(|s| s.track());
        preview.set(None);
    });
    let scheduled = move || policy.with(|p| p.as_ref().is_some_and(|p| p["schedule"].is_string()));
    let entered = move || keeps(&typed.map(|s| s.get_clone_untracked()));
    // Saves `Some((schedule, retention))` (`PUT`), or turns scheduled backups off (`DELETE`).
    let send = move |path: String, plan: Option<(String, Value)>| {
        if busy.get_untracked() {
            return;
        }
        busy.set(true);
        crate::task::spawn(async move {
            let saved = match plan {
                Some((schedule, retention)) => {
                    api::put::<Value>(&path, &json!({ "schedule": schedule, "retention": retention })).await
                }
                None => match api::delete(&path).await {
                    Ok(()) => api::get::<Value>(&path).await,
                    Err(f) => Err(f),
                },
            };
            match saved {
                Ok(p) => {
                    failure.set(None);
                    let next = when(&p["nextRunAt"], "not scheduled");
                    let said = if p["schedule"].is_string() {
                        format!("Saved. Next run: {next}.")
                    } else {
                        "Scheduled backups are off.".to_owned()
                    };
                    notice.set(Some(said));
                    policy.set(Some(p));
                }
                Err(f) => failure.set(Some(f)),
            }
            busy.set(false);
        });
    };
    let save = {
        let path = path.clone();
        move |e: web_sys::SubmitEvent| {
            e.prevent_default();
            let planned = schedule(&choice.get_clone_untracked(), &cron.get_clone_untracked())
                .and_then(|s| Ok((s, entered()?.1)));
            match planned {
                Err(m) => failure.set(Some(problem(m))),
                Ok((Some(s), retention)) => send(path.clone(), Some((s, retention))),
                // No schedule: turn off the saved one, if any.
                Ok((None, _)) if scheduled() => send(path.clone(), None),
                Ok((None, _)) => notice.set(Some("Scheduled backups are off.".to_owned())),
            }
        }
    };
    let turn_off = {
        let path = path.clone();
        move |_| {
            choice.set("none".to_owned());
            send(path.clone(), None);
        }
    };
    let run_preview = move |_| match entered() {
        Err(m) => failure.set(Some(problem(m))),
        Ok((query, _)) => {
            let url = format!("{path}/preview?{query}");
            crate::task::spawn(async move {
                match api::get::<Value>(&url).await {
                    Ok(p) => {
                        failure.set(None);
                        preview.set(Some(p));
                    }
                    Err(f) => failure.set(Some(f)),
                }
            });
        }
    };
    let facts = move |p: &Value| {
        let next = when(&p["nextRunAt"], "not scheduled");
        let last = when(&p["lastRunAt"], "never");
        let limits = format!(
            "at most {} backups kept; a scheduled backup at most every {} minutes",
            p["limits"]["maxBackups"].as_u64().unwrap_or(0),
            p["limits"]["minIntervalMinutes"].as_u64().unwrap_or(0)
        );
        let paused = (p["paused"].as_bool() == Some(true)).then(|| {
            view! { p(class="warn") { "Paused by an operator: no scheduled backup runs until it is resumed." } }
        });
        view! {
            (paused)
            dl(class="policy-facts") {
                dt { "Next run" } dd(data-testid="next-run") { (next) }
                dt { "Last run" } dd { (last) }
                dt { "Plan limits" } dd(data-testid="policy-limits") { (limits) }
            }
        }
    };
    let dry_run = move || {
        // Cloned out: views are not built while a signal is borrowed.
        preview.get_clone().map(|p| {
            let removes = p["removes"].as_u64().unwrap_or(0);
            let class = if removes > 0 { "prune-summary warn" } else { "prune-summary" };
            let (count, headline) = (removes.to_string(), removes_text(removes));
            let rows = p["backups"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| {
                    let id = b["id"].as_str().unwrap_or_default().to_owned();
                    let (row, taken) = (id.clone(), when(&b["createdAt"], ""));
                    let mark = b["mark"].as_str().unwrap_or_default().to_owned();
                    view! { tr(data-preview=row) { td { code { (id) } } td { (taken) } td { Badge(status=mark) } } }
                })
                .collect::<Vec<_>>();
            let table = if rows.is_empty() {
                view! { p(class="muted") { "No backups yet: nothing to keep or remove." } }
            } else {
                view! {
                    div(class="table-wrap") {
                        table {
                            thead { tr { th { "Backup" } th { "Taken" } th { "With this retention" } } }
                            tbody { (rows) }
                        }
                    }
                }
            };
            view! {
                div(class="preview", data-testid="retention-preview") {
                    p(class=class, data-testid="prune-removes", data-removes=count) { strong { (headline) } }
                    (table)
                }
            }
        })
    };
    // Built again when the policy is saved: what was typed lives in the signals.
    let form = move |scheduled: bool| {
        let now = choice.get_clone_untracked();
        let options = CHOICES
            .iter()
            .map(|(value, label)| {
                let (value, label) = (*value, *label);
                view! { option(value=value, selected=now == value) { (label) } }
            })
            .collect::<Vec<_>>();
        let inputs = KEEPS
            .iter()
            .zip(typed)
            .map(|((_, id, label), value)| {
                let (id, label) = (*id, *label);
                view! {
                    div {
                        label(r#for=id) { (label) }
                        input(id=id, r#type="number", min="0", step="1", required=true, bind:value=value)
                    }
                }
            })
            .collect::<Vec<_>>();
        let (save, turn_off, run_preview) = (save.clone(), turn_off.clone(), run_preview.clone());
        view! {
            form(class="policy", on:submit=save) {
                div(class="row") {
                    div {
                        label(r#for="backup-schedule") { "Schedule" }
                        select(id="backup-schedule", bind:value=choice) { (options) }
                    }
                    div {
                        label(r#for="backup-cron") { "Cron expression (UTC)" }
                        input(id="backup-cron", r#type="text", autocomplete="off", placeholder="0 3 * * *",
                              disabled=move || choice.with(|c| c != "custom"), bind:value=cron)
                    }
                }
                fieldset {
                    legend { "Retention" }
                    p(class="muted") { "Keeps the newest backups, and the newest of each of the last days, weeks and months. Protected backups are never removed." }
                    div(class="row") { (inputs) }
                }
                div(class="actions") {
                    button(class="danger-outline", r#type="button", disabled=!scheduled, on:click=turn_off) { "Turn off" }
                    button(r#type="button", on:click=run_preview) { "Preview retention" }
                    button(class="primary", r#type="submit") { "Save schedule" }
                }
            }
        }
    };
    view! {
        div(class="card backup-policy", data-testid="backup-policy") {
            h2 { "Schedule and retention" }
            ErrorBanner(failure=failure)
            Notice(message=notice)
            (move || match policy.get_clone() {
                Some(p) => {
                    let (facts, editor) = (facts(&p), form(p["schedule"].is_string()));
                    view! { (facts) (editor) (dry_run) }
                }
                None => view! { Loading(label="Loading the backup schedule…") },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_choice_stands_for_a_schedule() {
        assert_eq!(choice_of(None), "none");
        assert_eq!(choice_of(Some("weekly")), "weekly");
        assert_eq!(choice_of(Some("0 3 * * *")), "custom");
        assert_eq!(schedule("none", "0 3 * * *"), Ok(None));
        assert_eq!(schedule("daily", ""), Ok(Some("daily".into())));
        assert_eq!(schedule("custom", " 0 3 * * * "), Ok(Some("0 3 * * *".into())));
        assert!(schedule("custom", " ").is_err());
    }

    #[test]
    fn keeps_are_whole_numbers_sent_by_name() {
        let (query, body) = keeps(&["2", "0", " 4 ", "1"].map(str::to_owned)).unwrap();
        assert_eq!(query, "keepLast=2&keepDaily=0&keepWeekly=4&keepMonthly=1");
        assert_eq!(body, json!({"keepLast": 2, "keepDaily": 0, "keepWeekly": 4, "keepMonthly": 1}));
        assert!(keeps(&["-1", "0", "0", "0"].map(str::to_owned)).unwrap_err().starts_with("Keep last"));
        assert!(keeps(&["1", "", "0", "0"].map(str::to_owned)).unwrap_err().starts_with("Keep daily"));
        assert_eq!(removes_text(0), "No backup would be removed");
        assert_eq!(removes_text(3), "3 backups would be removed");
        assert_eq!(when(&json!("2026-12-07T03:00:00Z"), "never"), "2026-12-07 03:00 UTC");
        assert_eq!(when(&Value::Null, "never"), "never");
    }
}
