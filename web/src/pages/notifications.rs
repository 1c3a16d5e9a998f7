//! The caller's notification settings (`/settings/notifications`): per event type, whether it
//! emails them and whether it shows in the bell's feed (`GET /v1/me/notifications`), saved all
//! at once (`PUT /v1/me/notifications`, answered like the `GET`).

use serde_json::{Value, json};
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{ErrorBanner, Loading, Notice, dynamic, on_submit};
use crate::pages::billing::{table, text};

const PATH: &str = "/v1/me/notifications";

/// One event type: its name, what it means, and the two choices (email, in the app).
type Choice = (String, String, Signal<bool>, Signal<bool>);

/// The choices of the API's answer.
fn choices(data: &Value) -> Vec<Choice> {
    let list = data.as_array().map(Vec::as_slice).unwrap_or_default();
    list.iter()
        .map(|p| {
            let (email, in_app) = (create_signal(p["email"] == true), create_signal(p["inApp"] == true));
            (text(&p["type"]), text(&p["description"]), email, in_app)
        })
        .collect()
}

#[component]
pub fn NotificationSettings() -> View {
    let failure = create_signal(None::<Failure>);
    let notice = create_signal(None::<String>);
    let rows = create_signal(None::<Vec<Choice>>);
    let apply = move |answer: Result<Value, Failure>| match answer {
        Ok(v) => {
            rows.set(Some(choices(&v)));
            failure.set(None);
        }
        Err(f) => failure.set(Some(f)),
    };
    crate::task::spawn(async move { apply(api::act("GET", PATH, None).await) });
    let save = on_submit(Box::new(move || {
        let preferences = rows.with_untracked(|r| {
            r.iter()
                .flatten()
                .map(|(kind, _, email, in_app)| json!({ "type": kind, "email": email.get(), "inApp": in_app.get() }))
                .collect::<Vec<_>>()
        });
        crate::task::spawn(async move {
            let answer = api::act("PUT", PATH, Some(&json!({ "preferences": preferences }))).await;
            if answer.is_ok() {
                notice.set(Some("Saved.".into()));
            }
            apply(answer);
        });
    }));
    let table = dynamic(Box::new(move || match rows.get_clone() {
        None => view! { Loading(label="Loading your settings…") },
        Some(list) => {
            let rows = list
                .into_iter()
                .map(|(kind, description, email, in_app)| {
                    let row = kind.clone();
                    view! {
                        tr(data-type=row) {
                            td { (description) div { code(class="muted") { (kind) } } }
                            td { input(r#type="checkbox", aria-label="Email", bind:checked=email) }
                            td { input(r#type="checkbox", aria-label="In the app", bind:checked=in_app) }
                        }
                    }
                })
                .collect::<Vec<_>>();
            table(&["Event", "Email", "In the app"], rows)
        }
    }));
    view! {
        section {
            h1 { "Notifications" }
            p(class="muted") { "Choose what Nimbus tells you about, by email and in the bell at the top. To send events to your own systems, add a " a(href="/webhooks") { "webhook" } "." }
            ErrorBanner(failure=failure)
            Notice(message=notice)
            form(class="preferences", on:submit=save) {
                (table)
                div(class="actions") { button(class="primary", r#type="submit") { "Save" } }
            }
        }
    }
}
