//! One webhook endpoint (`/webhooks/{id}`, `GET /v1/webhooks/{id}`): what it receives and its
//! state (disabled by its owner, or by Nimbus when the receiver answered 410 or kept failing), with
//! what can be done to it: enable or disable it and edit it (`PATCH`), rotate its secret (the new
//! one shown this once; the previous one keeps signing until the time the API gives), send it a
//! test event, delete it (its URL typed). Its deliveries follow (`webhook_deliveries`).

use std::rc::Rc;

use serde_json::{Value, json};
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{Badge, ConfirmByName, Destructive, ErrorBanner, Notice, button, dynamic};
use crate::format;
use crate::pages::billing::{load, part, text, when};
use crate::pages::webhooks::{self, Form, PATH, endpoint_form, secret_reveal};

/// What the page's parts share, its delivery log's included.
#[derive(Clone, Copy)]
pub struct Hook {
    /// `/v1/webhooks/{id}`.
    pub path: Signal<String>,
    endpoint: Signal<Option<Value>>,
    pub failure: Signal<Option<Failure>>,
    pub notice: Signal<Option<String>>,
    secret: Signal<Option<(String, String)>>,
    editing: Signal<bool>,
    deleting: Signal<Option<Destructive>>,
    /// The page of deliveries shown, 1-based.
    pub page: Signal<u64>,
    /// That page's deliveries and how many there are in all.
    pub list: Signal<Option<(Vec<Value>, u64)>>,
    /// The open delivery's id and, once read, the delivery.
    pub open: Signal<Option<String>>,
    pub detail: Signal<Option<Value>>,
}

impl Hook {
    /// Sends `method` to the endpoint's path + `sub` with `body`, hands the answer's `data` to
    /// `done`, then reads the endpoint and its deliveries again.
    pub fn run(self, method: &'static str, sub: String, body: Option<Value>, done: fn(Hook, Value)) {
        crate::task::spawn(async move {
            let path = format!("{}{sub}", self.path.get_clone_untracked());
            match api::act(method, &path, body.as_ref()).await {
                Ok(v) => {
                    self.failure.set(None);
                    done(self, v);
                    load(self.path.get_clone_untracked(), self.endpoint, self.failure);
                    crate::pages::webhook_deliveries::load(self).await;
                }
                Err(f) => self.failure.set(Some(f)),
            }
        });
    }
}

#[component(inline_props)]
pub fn WebhookPage(id: String) -> View {
    let hook = Hook {
        path: create_signal(format!("{PATH}/{id}")),
        endpoint: create_signal(None),
        failure: create_signal(None),
        notice: create_signal(None),
        secret: create_signal(None),
        editing: create_signal(false),
        deleting: create_signal(None),
        page: create_signal(1),
        list: create_signal(None),
        open: create_signal(None),
        detail: create_signal(None),
    };
    provide_context(hook);
    load(hook.path.get_clone_untracked(), hook.endpoint, hook.failure);
    // Not `run`: the page is gone once the list shows, so nothing is read again.
    let on_delete: Rc<dyn Fn(String)> = Rc::new(move |_| {
        let path = hook.path.get_clone_untracked();
        crate::task::spawn(async move {
            match api::act("DELETE", &path, None).await {
                Ok(_) => sycamore_router::navigate("/webhooks"),
                Err(f) => hook.failure.set(Some(f)),
            }
        });
    });
    let (secret, endpoint, editor, deliveries) = (
        secret_reveal(hook.secret),
        part(hook.endpoint, "Loading the endpoint…", endpoint),
        dynamic(Box::new(move || {
            if hook.editing.get() {
                editor(hook)
            } else {
                view! {}
            }
        })),
        crate::pages::webhook_deliveries::deliveries(hook),
    );
    view! {
        section {
            p { a(href="/webhooks") { "← Webhooks" } }
            ErrorBanner(failure=hook.failure)
            Notice(message=hook.notice)
            (secret)
            (endpoint)
            (editor)
            (deliveries)
            ConfirmByName(pending=hook.deleting, verb="Delete", on_confirm=on_delete,
                warning="No more events are sent to it, and its delivery log is deleted with it.")
        }
    }
}

/// Why a disabled or failing endpoint is so; nothing while it is fine.
fn trouble(e: &Value) -> Option<(&'static str, String)> {
    Some(match (e["enabled"] == true, e["disabledReason"].as_str()) {
        (false, Some("gone")) => (
            "banner error",
            "Disabled by Nimbus: the receiver answered 410 Gone. Enable it again once it is back.".to_owned(),
        ),
        (false, Some(_)) => (
            "banner error",
            "Disabled by Nimbus after its deliveries failed for 5 days. Enable it again once the receiver is fixed."
                .to_owned(),
        ),
        (false, None) => ("banner warning", "Disabled: no events are sent to it until it is enabled again.".to_owned()),
        (true, _) if !e["failingSince"].is_null() => (
            "banner warning",
            format!(
                "Deliveries have been failing since {}: they are retried, and after 5 days of failures the endpoint is disabled.",
                when(&e["failingSince"])
            ),
        ),
        _ => return None,
    })
}

/// The endpoint: its head with the actions, why it is in trouble, and its facts.
fn endpoint(e: Value) -> View {
    let hook = use_context::<Hook>();
    let enabled = e["enabled"] == true;
    let (url, state) = (text(&e["url"]), webhooks::state(&e));
    let trouble = trouble(&e).map(|(class, words)| view! { div(class=class, role="status") { (words) } });
    let target = Destructive { id: text(&e["id"]), name: url.clone() };
    let buttons = vec![
        button(
            if enabled { "Disable" } else { "Enable" },
            "",
            Box::new(move || hook.run("PATCH", String::new(), Some(json!({ "enabled": !enabled })), |_, _| {})),
        ),
        button("Edit", "", Box::new(move || hook.editing.set(true))),
        button(
            "Rotate secret",
            "",
            Box::new(move || {
                hook.run("POST", "/secret/rotate".into(), None, |hook, v| {
                    let meaning = format!(
                        "Deliveries are signed with the new secret from now on, and with the previous one too until {}: switch your receiver over before then.",
                        when(&v["previousSecretExpiresAt"])
                    );
                    hook.secret.set(Some((text(&v["secret"]), meaning)));
                })
            }),
        ),
        button(
            "Send test event",
            "primary",
            Box::new(move || {
                hook.run("POST", "/test".into(), None, |hook, v| {
                    let id = format::short_id(&text(&v["eventId"]));
                    hook.notice.set(Some(format!("Test event {id} sent: its delivery shows below.")));
                })
            }),
        ),
        button("Delete", "danger-outline", Box::new(move || hook.deleting.set(Some(target.clone())))),
    ];
    let mut facts = vec![
        ("Description", text(&e["description"])),
        ("Events", webhooks::event_types(&e)),
        ("Rate limit", e["rateLimit"].as_u64().map_or_else(|| "none".to_owned(), |n| format!("{n} per second"))),
        ("Created", when(&e["createdAt"])),
        ("Updated", when(&e["updatedAt"])),
    ];
    if !e["previousSecretExpiresAt"].is_null() {
        facts.push(("Previous secret", format!("still signs until {}", when(&e["previousSecretExpiresAt"]))));
    }
    let facts = facts.into_iter().map(|(term, value)| view! { dt { (term) } dd { (value) } }).collect::<Vec<_>>();
    view! {
        div(class="page-head") {
            h1 { span(class="url") { (url) } " " Badge(status=state) }
            div(class="actions") { (buttons) }
        }
        (trouble)
        dl(class="policy-facts") { (facts) }
    }
}

/// The endpoint form, filled with the endpoint and saved with one `PATCH`.
fn editor(hook: Hook) -> View {
    let form = Form::new(&hook.endpoint.get_clone_untracked().unwrap_or_default(), hook.failure);
    let save = Box::new(move || {
        hook.run("PATCH", String::new(), Some(form.body()), |hook, _| {
            hook.editing.set(false);
            hook.notice.set(Some("Saved.".into()));
        })
    });
    let cancel = button("Cancel", "", Box::new(move || hook.editing.set(false)));
    endpoint_form(form, "Edit endpoint", "Save", save, cancel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trouble_says_who_disabled_it_and_why() {
        let says = |e: Value| trouble(&e).map(|(class, words)| format!("{class}: {words}"));
        assert_eq!(says(json!({"enabled": true, "failingSince": null})), None);
        assert!(says(json!({"enabled": false, "disabledReason": "gone"})).unwrap().contains("410 Gone"));
        assert!(says(json!({"enabled": false, "disabledReason": "failing"})).unwrap().contains("failed for 5 days"));
        assert!(
            says(json!({"enabled": false, "disabledReason": null})).unwrap().starts_with("banner warning: Disabled:")
        );
        let failing = says(json!({"enabled": true, "failingSince": "2026-12-06T10:00:00Z"})).unwrap();
        assert!(failing.contains("failing since 2026-12-06 10:00 UTC"), "{failing}");
    }
}
