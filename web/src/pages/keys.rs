//! The caller's API keys (`/v1/auth/apikeys`): create one (its token shown this once), list them,
//! revoke one after typing its name.

use std::rc::Rc;

use serde_json::{Value, json};
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{Badge, ConfirmByName, CopyId, Destructive, ErrorBanner, Loading, Notice};
use crate::format;
use crate::pages::billing::text;
use crate::session::{Session, SessionState};

const PATH: &str = "/v1/auth/apikeys";

/// Reads the keys, as JSON values: typed answers would add their own decoders to the first load.
async fn load(keys: Signal<Option<Vec<Value>>>, failure: Signal<Option<Failure>>) {
    match api::list::<Value>(&format!("{PATH}?perPage=100")).await {
        Ok((items, _)) => keys.set(Some(items)),
        Err(f) => failure.set(Some(f)),
    }
}

#[component]
pub fn Keys() -> View {
    let keys = create_signal(None::<Vec<Value>>);
    let failure = create_signal(None::<Failure>);
    let notice = create_signal(None::<String>);
    let created = create_signal(None::<Value>);
    let name = create_signal(String::new());
    let read = create_signal(true);
    let write = create_signal(true);
    let admin = create_signal(false);
    let pending = create_signal(None::<Destructive>);
    let is_admin =
        Session::get().state.with_untracked(|s| matches!(s, SessionState::SignedIn(me) if me.operator_level() == 2));
    crate::task::spawn(load(keys, failure));

    let submit = move |e: web_sys::SubmitEvent| {
        e.prevent_default();
        let scopes = [("read", read.get()), ("write", write.get()), ("admin", admin.get())]
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(s, _)| s)
            .collect::<Vec<_>>();
        let body = json!({ "name": name.get_clone().trim(), "scopes": scopes });
        crate::task::spawn(async move {
            match api::post::<Value, Value>(PATH, Some(&body), &[]).await {
                Ok(k) => {
                    created.set(Some(k));
                    name.set(String::new());
                    failure.set(None);
                    load(keys, failure).await;
                }
                Err(f) => failure.set(Some(f)),
            }
        });
    };
    let revoke: Rc<dyn Fn(String)> = Rc::new(move |id: String| {
        crate::task::spawn(async move {
            match api::delete(&format!("{PATH}/{id}")).await {
                Ok(()) => notice.set(Some("The key is revoked: requests with it are refused from now on.".into())),
                Err(f) => failure.set(Some(f)),
            }
            load(keys, failure).await;
        });
    });

    view! {
        section {
            h1 { "API keys" }
            p(class="muted") { "Keys let scripts and tools call the API as you: send one as " code { "Authorization: Bearer <key>" } "." }
            ErrorBanner(failure=failure)
            Notice(message=notice)
            (move || match created.get_clone() {
                None => view! {},
                Some(k) => {
                    let title = format!("Key “{}” created", text(&k["name"]));
                    let token = text(&k["token"]);
                    view! {
                        div(class="card", role="status", data-testid="new-token") {
                            h2 { (title) }
                            p { "Copy it now: it is shown only this once." }
                            div(class="token") { CopyId(id=token) }
                            button(r#type="button", on:click=move |_| created.set(None)) { "Done" }
                        }
                    }
                }
            })
            form(class="card", on:submit=submit) {
                h2 { "New key" }
                div(class="inline-form") {
                    div {
                        label(r#for="key-name") { "Name" }
                        input(id="key-name", r#type="text", required=true, maxlength="100", placeholder="e.g. deploy-bot", bind:value=name)
                    }
                    button(class="primary", r#type="submit") { "Create key" }
                }
                fieldset(class="checks") {
                    legend(class="muted") { "Scopes" }
                    label { input(r#type="checkbox", bind:checked=read) "read" }
                    label { input(r#type="checkbox", bind:checked=write) "write" }
                    (if is_admin { view! { label { input(r#type="checkbox", bind:checked=admin) "admin" } } } else { view! {} })
                }
            }
            h2 { "Your keys" }
            (move || match keys.get_clone() {
                None => view! { Loading(label="Loading keys…") },
                Some(list) if list.is_empty() => view! { p(class="empty") { "You have no API keys." } },
                Some(list) => {
                    let rows = list.into_iter().map(|k| {
                        let (row_attr, name) = (text(&k["name"]), text(&k["name"]));
                        let prefix = format!("nmb_{}_…", text(&k["prefix"]));
                        let scopes = match k["scopes"].as_array() {
                            Some(s) if !s.is_empty() => s.iter().map(text).collect::<Vec<_>>().join(", "),
                            _ => "full role".to_owned(),
                        };
                        let status = text(&k["status"]);
                        let used = k["lastUsedAt"].as_str().map_or_else(|| "never".into(), format::time_str);
                        let created_at = format::time_str(&text(&k["createdAt"]));
                        let action = if status == "active" {
                            let target = Destructive { id: text(&k["id"]), name: text(&k["name"]) };
                            view! { button(class="small", r#type="button", data-testid="revoke", on:click=move |_| pending.set(Some(target.clone()))) { "Revoke" } }
                        } else {
                            view! {}
                        };
                        view! {
                            tr(data-key=row_attr) {
                                td { strong { (name) } }
                                td { code { (prefix) } }
                                td { (scopes) }
                                td { Badge(status=status) }
                                td(class="muted") { (used) }
                                td(class="muted") { (created_at) }
                                td { (action) }
                            }
                        }
                    }).collect::<Vec<_>>();
                    view! {
                        div(class="table-wrap") {
                            table(data-testid="keys") {
                                thead { tr { th { "Name" } th { "Key" } th { "Scopes" } th { "Status" } th { "Last used" } th { "Created" } th {} } }
                                tbody { (rows) }
                            }
                        }
                    }
                }
            })
            ConfirmByName(pending=pending, verb="Revoke", on_confirm=revoke)
        }
    }
}
