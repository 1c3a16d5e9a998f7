//! The operators' view of webhooks (`GET /v1/admin/webhooks`): every tenant's endpoints, the
//! unhealthy first, with their state, failing streak, the last day's attempts and success rate,
//! deliveries waiting and the last attempt. Read-only: endpoints are their tenants' to change.

use serde_json::Value;
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{Badge, ErrorBanner, Loading};
use crate::format;
use crate::pages::billing::text;

/// How often the list is re-read.
const REFRESH_MS: u32 = 10_000;

/// An endpoint's state (its badge: `enabled`, `failing` or `disabled`) and, when the system
/// disabled it, why.
fn state(e: &Value) -> (String, &'static str) {
    match (e["enabled"] == true, e["disabledReason"].as_str()) {
        (true, _) if !e["failingSince"].is_null() => ("failing".to_owned(), ""),
        (true, _) => ("enabled".to_owned(), ""),
        (false, Some("gone")) => ("disabled".to_owned(), "its receiver answered 410 Gone"),
        (false, Some("failing")) => ("disabled".to_owned(), "failing for 5 days"),
        (false, _) => ("disabled".to_owned(), "by its owner"),
    }
}

/// The last day's successes over attempts, `-` without attempts.
fn success_rate(health: &Value) -> String {
    let attempts = health["attempts24h"].as_u64().unwrap_or_default();
    let succeeded = health["succeeded24h"].as_u64().unwrap_or_default();
    if attempts == 0 {
        return "-".to_owned();
    }
    format!("{}% of {attempts}", format::whole(format::percent(succeeded as f64, attempts as f64)))
}

#[component]
pub fn AdminWebhooks() -> View {
    // Read as JSON values: a typed answer would add its own decoder to the first load.
    let items = create_signal(None::<Vec<Value>>);
    let failure = create_signal(None::<Failure>);
    crate::task::spawn(async move {
        loop {
            match api::get::<Vec<Value>>("/v1/admin/webhooks").await {
                Ok(list) => {
                    items.set(Some(list));
                    failure.set(None);
                }
                Err(f) => failure.set(Some(f)),
            }
            gloo_timers::future::TimeoutFuture::new(REFRESH_MS).await;
        }
    });
    view! {
        section {
            h1 { "Webhooks" }
            p(class="muted") { "Every tenant's endpoints, the unhealthy first. An endpoint failing for five days, or answering 410, is disabled and its owners told." }
            ErrorBanner(failure=failure)
            (move || match items.get_clone() {
                None => view! { Loading(label="Loading endpoints…") },
                Some(list) if list.is_empty() => view! { p(class="empty") { "No tenant has a webhook endpoint." } },
                Some(list) => {
                    let rows = list.into_iter().map(|e| {
                        let (row_id, tenant, url) = (text(&e["id"]), text(&e["tenantName"]), text(&e["url"]));
                        let (badge, why) = state(&e);
                        let failing = e["failingSince"].as_str().map(format::time_str).unwrap_or_else(|| "-".into());
                        let rate = success_rate(&e["health"]);
                        let pending = e["health"]["pending"].as_u64().unwrap_or_default().to_string();
                        let last = e["health"]["lastAttemptAt"].as_str().map(format::time_str).unwrap_or_else(|| "-".into());
                        view! {
                            tr(data-endpoint=row_id) {
                                td { (tenant) }
                                td { code { (url) } }
                                td { Badge(status=badge) " " span(class="muted") { (why) } }
                                td { (failing) }
                                td { (rate) }
                                td { (pending) }
                                td { (last) }
                            }
                        }
                    }).collect::<Vec<_>>();
                    view! {
                        div(class="table-wrap") {
                            table(data-testid="webhook-health") {
                                thead { tr { th { "Tenant" } th { "URL" } th { "State" } th { "Failing since" } th { "Delivered (24 h)" } th { "Waiting" } th { "Last attempt" } } }
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
    fn states_and_rates_say_what_an_operator_needs() {
        assert_eq!(state(&json!({"enabled": true, "failingSince": null})), ("enabled".to_owned(), ""));
        assert_eq!(state(&json!({"enabled": true, "failingSince": "2026-12-06T00:00:00Z"})).0, "failing");
        assert_eq!(state(&json!({"enabled": false, "disabledReason": "gone"})).1, "its receiver answered 410 Gone");
        assert_eq!(state(&json!({"enabled": false, "disabledReason": null})).1, "by its owner");
        assert_eq!(success_rate(&json!({"attempts24h": 0, "succeeded24h": 0})), "-");
        assert_eq!(success_rate(&json!({"attempts24h": 4, "succeeded24h": 3})), "75% of 4");
    }
}
