//! The Webhooks page (`/webhooks`): the caller's endpoints (`GET /v1/webhooks`) and a form that
//! adds one (`POST /v1/webhooks`), its signing secret shown this once. The event types to choose
//! from are the API's (`GET /v1/webhooks/event-types`); none chosen means every type. Endpoints
//! open on their own page (`webhook`), whose editor is this page's form.
//!
//! The answers are read as JSON values with the Billing page's helpers, and every part, button
//! and form goes through the boxed helpers of `components`: typed answers and one closure type
//! per handler would each add their own code to the first load.

use serde_json::{Value, json};
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{Badge, CopyId, ErrorBanner, button, dynamic, field, on_click, on_submit};
use crate::pages::billing::{cells, load, part, rows, table, text, when};

/// The API's endpoints.
pub const PATH: &str = "/v1/webhooks";

/// What the state badge of an endpoint says: `enabled`, `failing` (enabled, its deliveries
/// failing), or `disabled`.
pub fn state(e: &Value) -> String {
    match (e["enabled"] == true, e["failingSince"].is_null()) {
        (true, true) => "enabled",
        (true, false) => "failing",
        _ => "disabled",
    }
    .to_owned()
}

/// The event types an endpoint receives, as a line of text.
pub fn event_types(e: &Value) -> String {
    match e["eventTypes"].as_array() {
        Some(types) if !types.is_empty() => types.iter().map(text).collect::<Vec<_>>().join(", "),
        _ => "all".to_owned(),
    }
}

/// The form's optional rate limit: a number, `null` when left empty (no cap).
pub fn rate_limit(typed: &str) -> Value {
    let typed = typed.trim();
    typed.parse::<u32>().map_or_else(|_| if typed.is_empty() { Value::Null } else { json!(typed) }, |n| json!(n))
}

/// What the endpoint form holds.
#[derive(Clone, Copy)]
pub struct Form {
    url: Signal<String>,
    description: Signal<String>,
    limit: Signal<String>,
    /// The checked event types (none: every type).
    chosen: Signal<Vec<String>>,
    /// The API's event types, once read.
    types: Signal<Option<Value>>,
}

impl Form {
    /// A form filled with endpoint `e` (`null` for a new one); the event types are read now.
    pub fn new(e: &Value, failure: Signal<Option<Failure>>) -> Form {
        let chosen = e["eventTypes"].as_array().map(|t| t.iter().map(text).collect()).unwrap_or_default();
        let form = Form {
            url: create_signal(text(&e["url"])),
            description: create_signal(text(&e["description"])),
            limit: create_signal(e["rateLimit"].as_u64().map(|n| n.to_string()).unwrap_or_default()),
            chosen: create_signal(chosen),
            types: create_signal(None),
        };
        load(format!("{PATH}/event-types"), form.types, failure);
        form
    }

    /// The body of `POST /v1/webhooks` and of `PATCH /v1/webhooks/{id}`.
    pub fn body(self) -> Value {
        json!({
            "url": self.url.get_clone().trim(),
            "description": self.description.get_clone().trim(),
            "eventTypes": self.chosen.get_clone(),
            "rateLimit": rate_limit(&self.limit.get_clone()),
        })
    }

    fn clear(self) {
        for s in [self.url, self.description, self.limit] {
            s.set(String::new());
        }
        self.chosen.set(Vec::new());
    }
}

/// The endpoint form: URL, description, rate limit and event types; `submit` sends it, and
/// `extra` goes beside its button.
pub fn endpoint_form(form: Form, title: &'static str, submit: &'static str, send: Box<dyn Fn()>, extra: View) -> View {
    let types = dynamic(Box::new(move || {
        let types = form.types.with(|t| t.as_ref().and_then(Value::as_array).cloned()).unwrap_or_default();
        let boxes = types.into_iter().map(|t| {
            let (name, value, label, description) =
                (text(&t["type"]), text(&t["type"]), text(&t["type"]), text(&t["description"]));
            let on = name.clone();
            let checked = move || form.chosen.with(|c| c.contains(&on));
            let toggle = on_click(Box::new(move || {
                form.chosen.update(|c| match c.iter().position(|n| *n == name) {
                    Some(i) => drop(c.remove(i)),
                    None => c.push(name.clone()),
                })
            }));
            view! { label(title=description) { input(r#type="checkbox", value=value, prop:checked=checked, on:click=toggle) code { (label) } } }
        });
        boxes.collect::<Vec<_>>().into()
    }));
    // Bound first: a call written inside `view!` is wrapped in a closure of its own.
    let fields = vec![
        field("webhook-url", "URL", "url", form.url),
        field("webhook-description", "Description", "text", form.description),
        field("webhook-rate-limit", "Rate limit (per second, empty: none)", "number", form.limit),
    ];
    view! {
        form(class="card", on:submit=on_submit(send)) {
            h2 { (title) }
            div(class="row") { (fields) }
            fieldset(class="checks", data-testid="event-types") {
                legend(class="muted") { "Event types (none checked: every type)" }
                (types)
            }
            div(class="actions") { (extra) button(class="primary", r#type="submit") { (submit) } }
        }
    }
}

/// A new signing secret with what it means, shown this once.
pub fn secret_reveal(secret: Signal<Option<(String, String)>>) -> View {
    dynamic(Box::new(move || match secret.get_clone() {
        None => view! {},
        Some((value, meaning)) => {
            let done = button("Done", "", Box::new(move || secret.set(None)));
            view! {
                div(class="card reveal", role="status", data-testid="new-secret") {
                    h2 { "Signing secret" }
                    p { (meaning) }
                    p(class="warn") { "Copy it now: it is not shown again." }
                    div(class="token") { CopyId(id=value) }
                    (done)
                }
            }
        }
    }))
}

#[component]
pub fn Webhooks() -> View {
    let failure = create_signal(None::<Failure>);
    let list = create_signal(None::<Value>);
    let secret = create_signal(None::<(String, String)>);
    let form = Form::new(&Value::Null, failure);
    load(PATH.to_owned(), list, failure);
    let send = Box::new(move || {
        let body = form.body();
        crate::task::spawn(async move {
            match api::act("POST", PATH, Some(&body)).await {
                Ok(created) => {
                    let meaning = format!(
                        "Deliveries to {} are signed with it: check their webhook-signature header (Standard Webhooks).",
                        text(&created["url"])
                    );
                    secret.set(Some((text(&created["secret"]), meaning)));
                    form.clear();
                    failure.set(None);
                    load(PATH.to_owned(), list, failure);
                }
                Err(f) => failure.set(Some(f)),
            }
        });
    });
    let (form, secret, list) = (
        endpoint_form(form, "New endpoint", "Create endpoint", send, view! {}),
        secret_reveal(secret),
        part(list, "Loading endpoints…", endpoints),
    );
    view! {
        section {
            div(class="page-head") {
                h1 { "Webhooks" }
                a(href="/settings/notifications") { "Notification settings" }
            }
            p(class="muted") { "Nimbus sends the events you choose to your endpoints as signed POST requests, and retries for a day when they fail." }
            ErrorBanner(failure=failure)
            (secret)
            (form)
            h2 { "Your endpoints" }
            (list)
        }
    }
}

/// The endpoints, each opening its page.
fn endpoints(list: Value) -> View {
    match rows(&list, |e| {
        let (url, row, href) = (text(&e["url"]), text(&e["url"]), format!("/webhooks/{}", text(&e["id"])));
        let cells = cells(vec![text(&e["description"]), event_types(e), when(&e["createdAt"])]);
        let state = state(e);
        view! { tr(data-webhook=row) { td { a(href=href) { (url) } } (cells) td { Badge(status=state) } } }
    }) {
        Some(r) => table(&["URL", "Description", "Events", "Created", "State"], r),
        None => view! { p(class="empty", data-testid="no-webhooks") { "No endpoints yet." } },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_reads_naturally() {
        let e = json!({"enabled": true, "failingSince": null, "eventTypes": []});
        assert_eq!((state(&e), event_types(&e)), ("enabled".to_owned(), "all".to_owned()));
        let e = json!({"enabled": true, "failingSince": "2026-12-06T10:00:00Z", "eventTypes": ["job.failed", "balance.low"]});
        assert_eq!((state(&e), event_types(&e)), ("failing".to_owned(), "job.failed, balance.low".to_owned()));
        assert_eq!(state(&json!({"enabled": false, "disabledReason": "gone"})), "disabled");
    }

    #[test]
    fn an_empty_rate_limit_is_no_cap() {
        assert_eq!(rate_limit(" 25 "), json!(25));
        assert_eq!(rate_limit(""), Value::Null);
        assert_eq!(rate_limit("fast"), json!("fast"), "left to the API to refuse, with its field");
    }
}
