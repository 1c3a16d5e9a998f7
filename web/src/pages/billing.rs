//! The Billing page: the month to date (`GET /v1/billing/usage`: the total so far, the forecast
//! to the month's end, each instance's hours, usage, cap, amount and forecast), the invoices
//! (`GET /v1/billing/invoices`, newest first) and the prepaid balance with its entries and the
//! account's standing (`GET /v1/billing/balance`): low, exhausted (new instances refused until
//! a top-up, suspension at a set time) or suspended (instances stopped, the account read-only),
//! said at the top of the page when it is not `ok`. An invoice opens on its own page
//! (`/billing/invoices/{id}`) with its lines, subtotal, tax and total, a CSV download and a Print
//! button; the print stylesheet leaves only the invoice.
//!
//! Amounts are the API's decimal strings, shown as written with their currency: nothing here
//! computes with them. The answers are read as JSON values, like the Backups tab's: a typed
//! answer would add its own decoder to the first load.

use serde_json::Value;
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{Badge, ErrorBanner, Loading};
use crate::format;

/// Reads `path`'s `data` into `into`, or what went wrong into `failure`.
pub fn load(path: String, into: Signal<Option<Value>>, failure: Signal<Option<Failure>>) {
    crate::task::spawn(async move {
        match api::get::<Value>(&path).await {
            Ok(v) => into.set(Some(v)),
            Err(f) => failure.set(Some(f)),
        }
    });
}

/// An amount as the API wrote it, with its currency: `12.34 EUR`; a dash when there is none.
pub fn money(amount: &Value, currency: &Value) -> String {
    match (amount.as_str(), currency.as_str().filter(|c| !c.is_empty())) {
        (Some(a), Some(c)) => format!("{a} {c}"),
        (Some(a), None) => a.to_owned(),
        _ => "—".to_owned(),
    }
}

/// A string field, or nothing.
pub fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// A time field as [`format::time_str`] shows it.
pub fn when(v: &Value) -> String {
    format::time_str(v.as_str().unwrap_or_default())
}

/// The period of an answer or invoice, as the days it covers.
fn period(v: &Value) -> String {
    format::period(v["periodStart"].as_str().unwrap_or_default(), v["periodEnd"].as_str().unwrap_or_default())
}

/// A table with these column heads.
pub fn table(heads: &'static [&'static str], rows: Vec<View>) -> View {
    let heads = heads.iter().map(|h| view! { th { (*h) } }).collect::<Vec<_>>();
    view! { div(class="table-wrap") { table { thead { tr { (heads) } } tbody { (rows) } } } }
}

/// Cells of text.
pub fn cells(texts: Vec<String>) -> Vec<View> {
    texts.into_iter().map(|t| view! { td { (t) } }).collect()
}

/// A term and its value in a `dl`; `id` is the value's test id.
fn fact(term: String, value: String, id: &'static str) -> View {
    view! { dt { (term) } dd(data-testid=id) { (value) } }
}

/// The rows `row` makes of an array field; `None` when there are none.
pub fn rows(list: &Value, row: impl Fn(&Value) -> View) -> Option<Vec<View>> {
    Some(list.as_array()?.iter().map(row).collect::<Vec<_>>()).filter(|r| !r.is_empty())
}

/// What `show` makes of a loaded answer, a spinner until then. One closure type for every part
/// (and the dashboard's card): each type would add its own copy of sycamore's dynamic view.
pub fn part(v: Signal<Option<Value>>, label: &'static str, show: fn(Value) -> View) -> impl Fn() -> View {
    move || match v.get_clone() {
        None => view! { Loading(label=label) },
        Some(v) => show(v),
    }
}

#[component]
pub fn Billing() -> View {
    let failure = create_signal(None::<Failure>);
    let [usage, invoices, balance] = [(); 3].map(|_| create_signal(None::<Value>));
    for (path, into) in [("usage", usage), ("invoices", invoices), ("balance", balance)] {
        load(format!("/v1/billing/{path}"), into, failure);
    }
    // The standing goes first: a suspended account is the first thing the customer must see.
    let standing = move || balance.with(|b| b.as_ref().and_then(standing));
    // Bound first: a call written inside `view!` is wrapped in a closure of its own.
    let (usage, invoices, balance) = (
        part(usage, "Loading usage…", month),
        part(invoices, "Loading invoices…", invoice_list),
        part(balance, "Loading the balance…", ledger),
    );
    view! {
        section {
            h1 { "Billing" }
            ErrorBanner(failure=failure)
            (standing)
            h2 { "Month to date" }
            (usage)
            h2 { "Invoices" }
            (invoices)
            h2 { "Balance" }
            (balance)
        }
    }
}

/// The dashboard's card: the month so far and its forecast, linking here.
pub fn spend_card(u: Value) -> View {
    let (total, forecast) = (money(&u["total"], &u["currency"]), money(&u["forecast"], &u["currency"]));
    view! {
        a(class="card spend", href="/billing", data-testid="month-spend") {
            "This month: " strong(data-testid="spend-total") { (total) } ", forecast " (forecast)
        }
    }
}

/// The month to date and each instance's part of it.
fn month(u: Value) -> View {
    let cur = &u["currency"];
    let figures = vec![
        fact("So far".into(), money(&u["total"], cur), "month-total"),
        fact("Forecast to the month's end".into(), money(&u["forecast"], cur), "forecast"),
        fact("Period".into(), period(&u), "period"),
    ];
    let table = match rows(&u["instances"], |i| {
        let name = text(&i["name"]);
        let href = format!("/instances/{}", text(&i["instanceId"]));
        let mut texts = vec![i["hours"].to_string()];
        texts.extend([&i["usage"], &i["monthlyCap"], &i["amount"], &i["forecast"]].map(|a| money(a, cur)));
        let (row, cells) = (name.clone(), cells(texts));
        view! { tr(data-instance=row) { td { a(href=href) { (name) } } (cells) } }
    }) {
        Some(r) => table(&["Instance", "Hours", "Usage", "Monthly cap", "Amount", "Forecast"], r),
        None => view! { p(class="empty") { "No usage metered this month yet." } },
    };
    view! {
        dl(class="figures") { (figures) }
        (table)
    }
}

/// The invoices, each opening its page.
fn invoice_list(list: Value) -> View {
    match rows(&list, |i| {
        let number = text(&i["number"]);
        let href = format!("/billing/invoices/{}", text(&i["id"]));
        let kind = text(&i["kind"]).replace('_', " ");
        let kind = (kind != "invoice").then(|| view! { " " span(class="badge tag") { (kind) } });
        let (row, cells) =
            (number.clone(), cells(vec![period(i), money(&i["total"], &i["currency"]), when(&i["issuedAt"])]));
        view! { tr(data-invoice=row) { td { a(href=href) { (number) } (kind) } (cells) } }
    }) {
        Some(r) => table(&["Number", "Period", "Total", "Issued"], r),
        None => view! {
            p(class="empty", data-testid="no-invoices") { "No invoices yet. A month is invoiced once it has ended." }
        },
    }
}

/// What the account's standing means for the customer; nothing while it is `ok`.
fn standing(b: &Value) -> Option<View> {
    let (class, message) = standing_notice(&b["standing"])?;
    Some(view! { div(class=class, role="alert", data-testid="standing") { (message) } })
}

/// The banner's class and words for a standing that is not `ok`.
fn standing_notice(s: &Value) -> Option<(&'static str, String)> {
    Some(match s["state"].as_str()? {
        "low" => ("banner warning", "Your balance is running low: top it up to keep your instances running.".to_owned()),
        "exhausted" => (
            "banner warning",
            format!(
                "Your balance is used up: new instances are refused, and the account is suspended at {} unless it is topped up.",
                when(&s["suspendsAt"])
            ),
        ),
        "suspended" => (
            "banner error",
            match s["suspensionReason"].as_str() {
                Some(why) => format!("Your account is suspended ({why}): its instances were stopped and it is read-only."),
                None => "Your account is suspended: its instances were stopped and it is read-only until the balance is topped up.".to_owned(),
            },
        ),
        _ => return None,
    })
}

/// The prepaid balance, what of it is available and the standing, then its entries, newest
/// first.
fn ledger(b: Value) -> View {
    let (cur, s) = (&b["currency"], &b["standing"]);
    let balance = money(&b["balance"], cur);
    // The ledger less the usage not invoiced yet: what the ladder goes by.
    let available = money(&s["available"], cur);
    let unbilled = format!(" ({} not invoiced yet) ", money(&s["unbilled"], cur));
    let state = text(&s["state"]);
    let entries = match rows(&b["entries"], |e| {
        let id = e["id"].to_string();
        let kind = text(&e["kind"]).replace('_', " ");
        let cells = cells(vec![when(&e["createdAt"]), kind, money(&e["amount"], &e["currency"])]);
        let reason = text(&e["reason"]);
        let invoice = e["invoiceId"].as_str().map(|i| {
            let href = format!("/billing/invoices/{i}");
            view! { " " a(href=href) { "invoice" } }
        });
        view! { tr(data-entry=id) { (cells) td { (reason) (invoice) } } }
    }) {
        Some(r) => table(&["Date", "Kind", "Amount", "Reason"], r),
        None => view! { p(class="empty", data-testid="no-entries") { "No top-ups or charges yet." } },
    };
    view! {
        p(class="balance") {
            "Prepaid balance: " strong(data-testid="balance") { (balance) }
            " · available: " strong(data-testid="available") { (available) } (unbilled) Badge(status=state)
        }
        (entries)
    }
}

/// An invoice on its own page, printable.
#[component(inline_props)]
pub fn InvoicePage(id: String) -> View {
    let failure = create_signal(None::<Failure>);
    let invoice = create_signal(None::<Value>);
    load(format!("/v1/billing/invoices/{id}"), invoice, failure);
    let invoice = part(invoice, "Loading the invoice…", invoice_page);
    view! {
        section {
            p(class="no-print") { a(href="/billing") { "← Billing" } }
            ErrorBanner(failure=failure)
            (invoice)
        }
    }
}

/// The invoice (or credit note): its facts, lines and totals, with the tax as issued.
fn invoice_page(i: Value) -> View {
    let cur = &i["currency"];
    let kind = if i["kind"] == "credit_note" { "Credit note" } else { "Invoice" };
    let title = format!("{kind} {}", text(&i["number"]));
    // A plain link is authenticated by the session cookie; an API key is not sent with it.
    // `rel=external` keeps the router from taking the click.
    let csv = format!("/v1/billing/invoices/{}.csv", text(&i["id"]));
    let csv = if crate::session::Session::uses_api_key() {
        view! { span(class="muted") { "CSV: GET " code { (csv) } " with your key" } }
    } else {
        view! { a(class="button", href=csv, download="", rel="external", data-testid="invoice-csv") { "Download CSV" } }
    };
    let print = |_| {
        if let Some(w) = web_sys::window() {
            let _ = w.print();
        }
    };
    let mut facts = vec![
        fact("Period".into(), period(&i), "invoice-period"),
        fact("Issued".into(), when(&i["issuedAt"]), "invoice-issued"),
    ];
    if let Some(t) = i["taxId"].as_str() {
        facts.push(fact("Your tax ID".into(), t.to_owned(), "invoice-tax-id"));
    }
    let corrects = i["corrects"].as_str().map(|c| {
        let href = format!("/billing/invoices/{c}");
        view! { dt { "Corrects" } dd { a(href=href) { "the corrected invoice" } } }
    });
    let lines = rows(&i["lines"], |l| {
        let texts = vec![
            l["position"].to_string(),
            text(&l["description"]),
            l["hours"].to_string(),
            money(&l["uncapped"], cur),
            money(&l["amount"], cur),
        ];
        let cells = cells(texts);
        view! { tr { (cells) } }
    })
    .map(|r| table(&["#", "Description", "Hours", "Usage", "Amount"], r));
    // The rate as a percentage (`0.19` → 19%), in decimal arithmetic.
    let rate = i["taxRate"].as_str().and_then(|r| r.parse::<rust_decimal::Decimal>().ok());
    let tax = match rate {
        Some(r) => format!("Tax ({}%)", (r * rust_decimal::Decimal::ONE_HUNDRED).normalize()),
        None => "Tax".to_owned(),
    };
    let totals = vec![
        fact("Subtotal".into(), money(&i["subtotal"], cur), "invoice-subtotal"),
        fact(tax, money(&i["tax"], cur), "invoice-tax"),
        fact("Total".into(), money(&i["total"], cur), "invoice-total"),
    ];
    let reverse = (i["taxReverseCharge"] == true).then(|| {
        view! {
            p(data-testid="reverse-charge") { "Reverse charge: the tax is due from the recipient of the service." }
        }
    });
    view! {
        div(class="page-head") {
            h1 { (title) }
            div(class="actions no-print") {
                (csv)
                button(class="primary", r#type="button", on:click=print) { "Print" }
            }
        }
        dl(class="policy-facts") { (facts) (corrects) }
        (lines)
        dl(class="totals") { (totals) }
        (reverse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn amounts_are_shown_as_the_api_wrote_them() {
        let cur = json!("EUR");
        assert_eq!(money(&json!("12.3400"), &cur), "12.3400 EUR");
        assert_eq!(money(&json!("-5.00"), &cur), "-5.00 EUR");
        assert_eq!(money(&json!("0"), &json!(null)), "0", "no price yet: no currency");
        assert_eq!(money(&json!("0"), &json!("")), "0");
        assert_eq!(money(&json!(null), &cur), "—", "no cap");
        let u = json!({"periodStart": "2026-12-01T00:00:00Z", "periodEnd": "2027-01-01T00:00:00Z"});
        assert_eq!(period(&u), "2026-12-01 – 2026-12-31");
        assert_eq!(when(&json!("2026-12-07T03:00:00Z")), "2026-12-07 03:00 UTC");
    }

    #[test]
    fn the_standing_is_said_unless_it_is_ok() {
        let notice = |s: Value| standing_notice(&s).map(|(class, words)| format!("{class}: {words}"));
        assert_eq!(notice(json!({"state": "ok"})), None);
        assert!(notice(json!({"state": "low"})).unwrap().starts_with("banner warning: Your balance is running low"));
        let exhausted = notice(json!({"state": "exhausted", "suspendsAt": "2026-12-08T03:00:00Z"})).unwrap();
        assert!(
            exhausted.contains("new instances are refused") && exhausted.contains("at 2026-12-08 03:00 UTC"),
            "{exhausted}"
        );
        let suspended = notice(json!({"state": "suspended", "suspensionReason": null})).unwrap();
        assert!(suspended.starts_with("banner error: ") && suspended.ends_with("until the balance is topped up."));
        let held = notice(json!({"state": "suspended", "suspensionReason": "chargeback"})).unwrap();
        assert!(held.contains("suspended (chargeback)") && !held.contains("topped up"), "{held}");
    }
}
