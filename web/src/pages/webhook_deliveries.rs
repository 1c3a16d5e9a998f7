//! An endpoint's delivery log, under its page: the deliveries, newest first and read again every
//! few seconds (`GET /v1/webhooks/{id}/deliveries`); one opens with the payload as signed and
//! every attempt (status, latency, error, the start of the answer) and can be sent again
//! (`…/deliveries/{deliveryId}/replay`). "Recover" sends again every delivery since a time
//! (`POST /v1/webhooks/{id}/recover`), for a receiver that lost them.

use serde_json::{Value, json};
use sycamore::prelude::*;
use wasm_bindgen::JsValue;

use crate::api;
use crate::components::{Badge, Loading, button, dynamic, field, on_click, on_submit};
use crate::format;
use crate::pages::billing::{cells, rows, table, text, when};
use crate::pages::webhook::Hook;

/// How often the list (and the open delivery) is read again.
const REFRESH_MS: u32 = 4000;

const PER_PAGE: u64 = 20;

/// Reads the page of deliveries shown and the open delivery.
pub async fn load(hook: Hook) {
    let path = hook.path.get_clone_untracked();
    let page = hook.page.get_untracked();
    match api::list::<Value>(&format!("{path}/deliveries?page={page}&perPage={PER_PAGE}")).await {
        Ok(list) => hook.list.set(Some(list)),
        Err(f) => hook.failure.set(Some(f)),
    }
    if let Some(id) = hook.open.get_clone_untracked() {
        match api::get::<Value>(&format!("{path}/deliveries/{id}")).await {
            // Unless another one was opened meanwhile.
            Ok(d) if hook.open.with_untracked(|o| o.as_deref() == d["id"].as_str()) => hook.detail.set(Some(d)),
            Ok(_) => {}
            Err(f) => hook.failure.set(Some(f)),
        }
    }
}

/// Shows delivery `id` (`None`: closes it) or page `page`, read at once.
fn show(hook: Hook, id: Option<String>, page: u64) {
    hook.detail.set(None);
    hook.open.set(id);
    hook.page.set(page);
    crate::task::spawn(load(hook));
}

/// A `datetime-local` input's value (the browser's time zone) as RFC 3339, in UTC.
fn rfc3339(local: &str) -> Option<String> {
    let t = js_sys::Date::new(&JsValue::from_str(local));
    (!local.is_empty() && !t.get_time().is_nan()).then(|| t.to_iso_string().into())
}

/// A JSON value indented for reading (the browser's `JSON.stringify`: serde_json's pretty
/// printer would add its own code to the first load).
fn pretty(v: &Value) -> String {
    let raw = v.to_string();
    js_sys::JSON::parse(&raw)
        .and_then(|p| js_sys::JSON::stringify_with_replacer_and_space(&p, &JsValue::NULL, &JsValue::from(2)))
        .map_or(raw, String::from)
}

/// The log: this page of deliveries, the open one, and the Recover form.
pub fn deliveries(hook: Hook) -> View {
    crate::task::spawn(async move {
        loop {
            load(hook).await;
            gloo_timers::future::TimeoutFuture::new(REFRESH_MS).await;
        }
    });
    let (since, until) = (create_signal(String::new()), create_signal(String::new()));
    let recover = on_submit(Box::new(move || {
        let mut body = json!({ "since": rfc3339(&since.get_clone()) });
        if let Some(until) = rfc3339(&until.get_clone()) {
            body["until"] = json!(until);
        }
        hook.run("POST", "/recover".into(), Some(body), |hook, v| {
            let n = v["deliveries"].as_u64().unwrap_or(0);
            hook.notice.set(Some(format!("{n} deliveries queued to be sent again.")));
        });
    }));
    let (list, open, fields) = (
        dynamic(Box::new(move || list(hook))),
        dynamic(Box::new(move || delivery(hook))),
        vec![
            field("recover-since", "Since", "datetime-local", since),
            field("recover-until", "Until (optional)", "datetime-local", until),
        ],
    );
    view! {
        h2 { "Deliveries" }
        (list)
        (open)
        form(class="card", on:submit=recover) {
            h2 { "Recover" }
            p(class="muted") { "Send again every delivery made since a time, for a receiver that lost them." }
            div(class="row") { (fields) }
            div(class="actions") { button(r#type="submit") { "Recover" } }
        }
    }
}

/// This page of deliveries, each opening its attempts, and the way to the other pages.
fn list(hook: Hook) -> View {
    let Some((list, total)) = hook.list.get_clone() else { return view! { Loading(label="Loading deliveries…") } };
    let Some(rows) = rows(&Value::Array(list), |d| {
        let id = text(&d["id"]);
        let (row, kind, kind_attr, status) =
            (id.clone(), text(&d["eventType"]), text(&d["eventType"]), text(&d["status"]));
        let code = d["lastStatusCode"].as_u64().map_or_else(|| "—".to_owned(), |c| c.to_string());
        let next = d["nextAttemptAt"].as_str().map_or_else(|| "—".to_owned(), format::time_str);
        let cells = cells(vec![d["attempts"].to_string(), code, next, when(&d["createdAt"])]);
        let page = hook.page.get_untracked();
        let open = on_click(Box::new(move || show(hook, Some(id.clone()), page)));
        view! {
            tr(data-delivery=row, data-event-type=kind_attr) {
                td { button(class="link", r#type="button", on:click=open) { (kind) } }
                td { Badge(status=status) }
                (cells)
            }
        }
    }) else {
        return view! { p(class="empty", data-testid="no-deliveries") { "No deliveries yet. Send a test event to see one." } };
    };
    let (at, pages) = (hook.page.get_untracked(), total.div_ceil(PER_PAGE));
    let pager = (pages > 1).then(|| {
        let label = format!("Page {at} of {pages}");
        let newer = (at > 1).then(|| button("Newer", "small", Box::new(move || show(hook, None, at - 1))));
        let older = (at < pages).then(|| button("Older", "small", Box::new(move || show(hook, None, at + 1))));
        view! { div(class="toolbar") { (newer) span(class="muted") { (label) } (older) } }
    });
    let table = table(&["Event", "Status", "Attempts", "Last answer", "Next attempt", "Created"], rows);
    view! {
        div(data-testid="deliveries") { (table) }
        (pager)
    }
}

/// The open delivery: its payload and every attempt, with a button that sends it again.
fn delivery(hook: Hook) -> View {
    let Some(d) = hook.detail.get_clone() else {
        return match hook.open.with(Option::is_some) {
            true => view! { Loading(label="Loading the delivery…") },
            false => view! {},
        };
    };
    let id = text(&d["id"]);
    let title = format!("{} · {}", text(&d["eventType"]), format::short_id(&id));
    let event = format!("Event {}", text(&d["eventId"]));
    let (status, payload) = (text(&d["status"]), pretty(&d["payload"]));
    let page = hook.page.get_untracked();
    let buttons = vec![
        button(
            "Replay",
            "",
            Box::new(move || {
                hook.run("POST", format!("/deliveries/{id}/replay"), None, |hook, _| {
                    hook.notice.set(Some("The delivery is queued to be sent again.".into()));
                })
            }),
        ),
        button("Close", "ghost", Box::new(move || show(hook, None, page))),
    ];
    let attempts = rows(&d["attempts"], |a| {
        let code = a["statusCode"].as_u64().map_or_else(|| "no answer".to_owned(), |c| c.to_string());
        let result = if a["succeeded"] == true { "succeeded" } else { "failed" }.to_owned();
        let said = a["error"].as_str().map_or_else(|| text(&a["responseBody"]), str::to_owned);
        let (at, attr, latency) = (when(&a["attemptedAt"]), code.clone(), format!("{} ms", a["latencyMs"]));
        view! {
            tr(data-attempt=attr) {
                td { (at) }
                td(data-testid="attempt-status") { (code) }
                td { (latency) }
                td { Badge(status=result) }
                td { code(class="said") { (said) } }
            }
        }
    })
    .map(|r| table(&["Attempted", "Status", "Latency", "Result", "Error or answer"], r))
    .unwrap_or_else(|| view! { p(class="empty") { "Not attempted yet." } });
    view! {
        div(class="card delivery", data-testid="delivery") {
            div(class="page-head") {
                h2 { (title) " " Badge(status=status) }
                div(class="actions") { (buttons) }
            }
            p(class="muted") { (event) }
            h3 { "Payload" }
            pre(class="payload", data-testid="payload") { (payload) }
            h3 { "Attempts" }
            (attempts)
        }
    }
}
