//! The Snapshots tab: the instance's snapshots (`GET /v1/vms/{id}/snapshots`), taking one, rolling
//! back to one and deleting one; each is a job the page follows, and the list is read again
//! whenever an operation on the instance ends.

use std::rc::Rc;

use serde_json::{Value, json};
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{ConfirmByName, Destructive, ErrorBanner, Loading};
use crate::format;
use crate::instance_live::LiveInstance;
use crate::pages::billing::text;

#[component(inline_props)]
pub fn SnapshotsTab(live: LiveInstance) -> View {
    let Some(id) = live.instance.with_untracked(|i| i.as_ref().map(|i| i.id.to_string())) else { return view! {} };
    // Snapshots (`{name, description?, createdAt?}`) and jobs are read as JSON values: typed
    // answers would add their own decoders to the first load.
    let list = create_signal(None::<Vec<Value>>);
    let failure = create_signal(None::<Failure>);
    let name = create_signal(String::new());
    let description = create_signal(String::new());
    let rolling_back = create_signal(None::<Destructive>);
    let deleting = create_signal(None::<Destructive>);
    // Read again each time the instance settles (a snapshot job ended).
    let (settled, usable) = (live.settled(), live.usable());
    {
        let id = id.clone();
        create_effect(move || {
            if settled.get() != Some(true) {
                return;
            }
            let id = id.clone();
            crate::task::spawn(async move {
                match api::get::<Vec<Value>>(&format!("/v1/vms/{id}/snapshots")).await {
                    Ok(items) => list.set(Some(items)),
                    Err(f) => failure.set(Some(f)),
                }
            });
        });
    }
    let post = move |path: String, body: Value| {
        let instance = live;
        crate::task::spawn(async move {
            match api::post::<Value, Value>(&path, Some(&body), &[]).await {
                Ok(_) => {
                    if let Some(id) = instance.instance.with_untracked(|i| i.as_ref().map(|i| i.id.to_string())) {
                        instance.reload(&id).await;
                    }
                }
                Err(f) => failure.set(Some(f)),
            }
        });
    };
    let take = {
        let id = id.clone();
        move |e: web_sys::SubmitEvent| {
            e.prevent_default();
            let desc = description.get_clone_untracked();
            let mut body = json!({ "name": name.get_clone_untracked().trim() });
            if !desc.trim().is_empty() {
                body["description"] = json!(desc.trim());
            }
            name.set(String::new());
            description.set(String::new());
            post(format!("/v1/vms/{id}/snapshots"), body);
        }
    };
    let on_rollback: Rc<dyn Fn(String)> = {
        let id = id.clone();
        Rc::new(move |snapshot: String| post(format!("/v1/vms/{id}/snapshots/{snapshot}/rollback"), json!({})))
    };
    let on_delete: Rc<dyn Fn(String)> = {
        let id = id.clone();
        Rc::new(move |snapshot: String| {
            let path = format!("/v1/vms/{id}/snapshots/{snapshot}");
            crate::task::spawn(async move {
                match api::delete_accepted::<Value>(&path).await {
                    Ok(_) => {
                        if let Some(id) = live.instance.with_untracked(|i| i.as_ref().map(|i| i.id.to_string())) {
                            live.reload(&id).await;
                        }
                    }
                    Err(f) => failure.set(Some(f)),
                }
            });
        })
    };
    view! {
        div(class="card", data-testid="snapshots") {
            h2 { "Snapshots" }
            ErrorBanner(failure=failure)
            form(class="inline-form", on:submit=take) {
                label(r#for="snapshot-name") { "Name" }
                input(id="snapshot-name", r#type="text", required=true, minlength="2", maxlength="40",
                      pattern="[A-Za-z][A-Za-z0-9_\\-]+", placeholder="before-upgrade", bind:value=name)
                label(r#for="snapshot-description") { "Description" }
                input(id="snapshot-description", r#type="text", maxlength="500", placeholder="optional", bind:value=description)
                button(class="primary", r#type="submit", data-testid="take-snapshot", disabled=move || !usable.get()) { "Take snapshot" }
            }
            (move || match list.get_clone() {
                None => view! { Loading(label="Loading snapshots…") },
                Some(items) if items.is_empty() => view! { p(class="empty") { "No snapshots yet." } },
                Some(items) => {
                    let rows = items.into_iter().map(|s| {
                        let (row_name, shown, taken) = (text(&s["name"]), text(&s["name"]), s["createdAt"].as_str().map(format::time_str).unwrap_or_default());
                        let desc = text(&s["description"]);
                        let (back, del) = (text(&s["name"]), text(&s["name"]));
                        let ask_back = move |_| rolling_back.set(Some(Destructive { id: back.clone(), name: back.clone() }));
                        let ask_del = move |_| deleting.set(Some(Destructive { id: del.clone(), name: del.clone() }));
                        view! {
                            tr(data-snapshot=row_name) {
                                td { code { (shown) } }
                                td { (desc) }
                                td { (taken) }
                                td(class="row-actions") {
                                    button(class="small", r#type="button", data-testid="rollback", disabled=move || !usable.get(), on:click=ask_back) { "Roll back" }
                                    button(class="small danger-outline", r#type="button", data-testid="delete-snapshot", disabled=move || !usable.get(), on:click=ask_del) { "Delete" }
                                }
                            }
                        }
                    }).collect::<Vec<_>>();
                    view! {
                        div(class="table-wrap") {
                            table {
                                thead { tr { th { "Name" } th { "Description" } th { "Taken" } th {} } }
                                tbody { (rows) }
                            }
                        }
                    }
                }
            })
        }
        ConfirmByName(pending=rolling_back, verb="Roll back to", on_confirm=on_rollback)
        ConfirmByName(pending=deleting, verb="Delete snapshot", on_confirm=on_delete)
    }
}
