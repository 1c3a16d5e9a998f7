//! The operators' billing (`/admin/billing`, for the roles `admin` and `billing-admin`): the
//! revenue per month and per plan with what the current month has accrued so far
//! (`GET /v1/admin/billing/revenue`), and the tenants by balance, lowest first
//! (`GET /v1/admin/billing/tenants`, by default only those that need an operator), each with its
//! standing. An operator adds credit to a tenant (a top-up, or an adjustment with its reason),
//! suspends it with a reason and lifts that suspension; the list is read again after each.
//!
//! The answers are read as JSON values with the Billing page's helpers: typed answers would add
//! their own decoders to the first load.

use serde_json::{Value, json};
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{Badge, ErrorBanner, Notice};
use crate::format;
use crate::pages::billing::{cells, load, money, part, rows, table, text};

/// The months the revenue covers.
const MONTHS: u32 = 12;

/// The months the per-plan table shows, newest first.
const PLAN_MONTHS: usize = 3;

/// What the page's parts share (a context: the tenant list is drawn by a plain `fn`, like every
/// part of the Billing page).
#[derive(Clone, Copy)]
struct Ops {
    /// The tenant the dialog acts on: id, name, and whether it adds credit (else suspends).
    acting: Signal<Option<(String, String, bool)>>,
    failure: Signal<Option<Failure>>,
    notice: Signal<Option<String>>,
    /// Bumped to read the tenants again.
    version: Signal<u32>,
}

impl Ops {
    /// Posts an action on a tenant; when it is done, says `done` and reads the tenants again.
    async fn post(self, path: String, body: Option<Value>, done: String) -> Result<(), Failure> {
        api::post::<Value, Value>(&path, body.as_ref(), &[]).await?;
        self.notice.set(Some(done));
        self.failure.set(None);
        self.version.update(|v| *v += 1);
        Ok(())
    }
}

#[component]
pub fn AdminBilling() -> View {
    let ops = Ops {
        acting: create_signal(None),
        failure: create_signal(None),
        notice: create_signal(None),
        version: create_signal(0),
    };
    provide_context(ops);
    let [revenue, tenants] = [(); 2].map(|_| create_signal(None::<Value>));
    let attention = create_signal(true);
    load(format!("/v1/admin/billing/revenue?months={MONTHS}"), revenue, ops.failure);
    create_effect(move || {
        ops.version.track();
        let path = format!("/v1/admin/billing/tenants?limit=100&attention={}", attention.get());
        load(path, tenants, ops.failure);
    });
    let (revenue, tenants) =
        (part(revenue, "Loading revenue…", revenue_view), part(tenants, "Loading tenants…", tenant_list));
    view! {
        section {
            h1 { "Revenue and balances" }
            ErrorBanner(failure=ops.failure)
            Notice(message=ops.notice)
            (revenue)
            h2 { "Tenants" }
            div(class="checks") {
                label { input(r#type="checkbox", bind:checked=attention) "Only those that need attention: low, exhausted, suspended or owing" }
            }
            (tenants)
            TenantDialog()
        }
    }
}

/// The revenue per month, the latest months per plan, and the current month so far.
fn revenue_view(r: Value) -> View {
    let accrued = r["currentMonth"]["accrued"]
        .as_array()
        .map(|a| a.iter().map(|x| money(&x["amount"], &x["currency"])).collect::<Vec<_>>().join(", "));
    let accrued = accrued.filter(|a| !a.is_empty()).unwrap_or_else(|| "nothing yet".to_owned());
    let months = rows(&r["months"], |m| {
        let mut texts = vec![text(&m["month"]), m["invoices"].to_string()];
        texts.extend(["invoiced", "credited", "net", "tax", "currency"].map(|k| text(&m[k])));
        let (month, cells) = (text(&m["month"]), cells(texts));
        view! { tr(data-month=month) { (cells) } }
    })
    .map(|r| table(&["Month", "Invoices", "Invoiced", "Credited", "Net", "Tax", "Currency"], r));
    let plans = rows(&latest(&r["plans"], PLAN_MONTHS), |p| {
        let month = p["periodStart"].as_str().and_then(|s| s.get(..7)).unwrap_or_default().to_owned();
        let cells =
            cells(vec![month, text(&p["plan"]), p["instances"].to_string(), money(&p["invoiced"], &p["currency"])]);
        view! { tr { (cells) } }
    })
    .map(|r| {
        let t = table(&["Month", "Plan", "Instances", "Invoiced"], r);
        view! { h2 { "Per plan" } (t) }
    });
    let empty = months.is_none().then(|| view! { p(class="empty") { "No invoice issued in these months yet." } });
    view! {
        p(class="balance") { "This month so far, not invoiced yet: " strong(data-testid="accrued") { (accrued) } }
        h2 { "Per month" }
        (months)
        (empty)
        (plans)
    }
}

/// The rows of the `months` latest months of a list sorted newest first by `periodStart`.
fn latest(list: &Value, months: usize) -> Value {
    let mut seen = Vec::new();
    let rows = list.as_array().into_iter().flatten().take_while(|p| {
        if !seen.contains(&&p["periodStart"]) {
            seen.push(&p["periodStart"]);
        }
        seen.len() <= months
    });
    Value::Array(rows.cloned().collect())
}

/// The tenants with their standing, balance and what an operator can do about them.
fn tenant_list(list: Value) -> View {
    let ops = use_context::<Ops>();
    let Some(r) = rows(&list, |t| {
        let (id, name) = (text(&t["id"]), text(&t["name"]));
        let state = text(&t["state"]);
        let hold =
            t["suspensionReason"].as_str().map(str::to_owned).map(|why| view! { " " span(class="muted") { (why) } });
        let owing = t["unpaidSince"].as_str().map_or_else(|| "—".to_owned(), format::time_str);
        let cells = cells(vec![text(&t["balance"]), owing]);
        // An operator's hold is lifted by unsuspending; without one, the tenant can be held.
        let buttons =
            [("Add credit", Some(true)), if hold.is_some() { ("Unsuspend", None) } else { ("Suspend", Some(false)) }]
                .map(|(label, credit)| {
                    let (id, name) = (id.clone(), name.clone());
                    let click = move |_| match credit {
                        Some(credit) => ops.acting.set(Some((id.clone(), name.clone(), credit))),
                        None => {
                            let (path, done) =
                                (format!("/v1/admin/tenants/{id}/unsuspend"), format!("{name} unsuspended."));
                            crate::task::spawn(async move {
                                if let Err(f) = ops.post(path, None, done).await {
                                    ops.failure.set(Some(f));
                                }
                            });
                        }
                    };
                    let class = if credit == Some(false) { "small danger-outline" } else { "small" };
                    view! { button(class=class, r#type="button", on:click=click) { (label) } }
                });
        let (row, buttons) = (name.clone(), Vec::from(buttons));
        view! {
            tr(data-tenant=row) {
                td { (name) }
                td { Badge(status=state) (hold) }
                (cells)
                td(class="row-actions") { (buttons) }
            }
        }
    }) else {
        return view! { p(class="empty", data-testid="no-tenants") { "No tenant needs attention." } };
    };
    table(&["Tenant", "Standing", "Balance", "Unpaid since", ""], r)
}

/// The dialog that adds credit to a tenant or suspends it, shown while a tenant is being acted
/// on. It stays open with the API's error when the action is refused.
#[component]
fn TenantDialog() -> View {
    let ops = use_context::<Ops>();
    view! {
        (move || ops.acting.get_clone().map(|(id, name, credit)| {
            let amount = create_signal(String::new());
            let kind = create_signal("top_up".to_owned());
            let reason = create_signal(String::new());
            let failure = create_signal(None::<Failure>);
            let title = if credit { format!("Add credit to {name}") } else { format!("Suspend {name}?") };
            let submit = move |e: web_sys::SubmitEvent| {
                e.prevent_default();
                let why = reason.get_clone_untracked().trim().to_owned();
                let (path, body, done) = if credit {
                    let why = Some(why).filter(|w| !w.is_empty());
                    let body = json!({ "amount": amount.get_clone_untracked().trim(), "kind": kind.get_clone_untracked(), "reason": why });
                    (format!("/v1/admin/tenants/{id}/credit"), body, format!("Credit added to {name}."))
                } else {
                    (format!("/v1/admin/tenants/{id}/suspend"), json!({ "reason": why }), format!("{name} suspended."))
                };
                crate::task::spawn(async move {
                    match ops.post(path, Some(body), done).await {
                        Ok(()) => ops.acting.set(None),
                        Err(f) => failure.set(Some(f)),
                    }
                });
            };
            let escape = move |e: web_sys::KeyboardEvent| {
                if e.key() == "Escape" {
                    ops.acting.set(None);
                }
            };
            let fields = if credit {
                view! {
                    label(r#for="credit-amount") { "Amount" }
                    input(id="credit-amount", r#type="text", inputmode="decimal", required=true, autocomplete="off", placeholder="10.00", bind:value=amount)
                    label(r#for="credit-kind") { "Kind" }
                    select(id="credit-kind", bind:value=kind) {
                        option(value="top_up") { "Top-up" }
                        option(value="adjustment") { "Adjustment (either sign, with a reason)" }
                    }
                }
            } else {
                view! { p(class="warn") { "Its running instances are stopped and its account becomes read-only until it is unsuspended." } }
            };
            let (class, label) = if credit { ("primary", "Add credit") } else { ("danger", "Suspend") };
            view! {
                div(class="backdrop") {
                    form(class="dialog card", role="dialog", aria-modal="true", aria-labelledby="tenant-title",
                         on:submit=submit, on:keydown=escape) {
                        h2(id="tenant-title") { (title) }
                        ErrorBanner(failure=failure)
                        (fields)
                        label(r#for="tenant-reason") { "Reason" }
                        input(id="tenant-reason", r#type="text", maxlength="500", required=!credit, autocomplete="off", bind:value=reason)
                        div(class="actions") {
                            button(r#type="button", on:click=move |_| ops.acting.set(None)) { "Cancel" }
                            button(class=class, r#type="submit", data-testid="tenant-submit") { (label) }
                        }
                    }
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plans_table_keeps_the_latest_months() {
        let plans = json!([
            {"periodStart": "2026-11-01T00:00:00Z", "plan": "small"},
            {"periodStart": "2026-11-01T00:00:00Z", "plan": "large"},
            {"periodStart": "2026-10-01T00:00:00Z", "plan": "small"},
            {"periodStart": "2026-09-01T00:00:00Z", "plan": "small"},
        ]);
        let plan = |v: &Value| v.as_array().unwrap().iter().map(|p| text(&p["plan"])).collect::<Vec<_>>();
        assert_eq!(plan(&latest(&plans, 2)), ["small", "large", "small"]);
        assert_eq!(plan(&latest(&plans, 3)).len(), 4);
        assert_eq!(latest(&Value::Null, 3), json!([]));
    }
}
