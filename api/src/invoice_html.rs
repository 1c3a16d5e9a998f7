//! The printable HTML of an invoice (`GET /v1/billing/invoices/{id}` with `Accept: text/html`,
//! or `{id}.html`): `templates/invoice.hbs` rendered with `handlebars` (which escapes every value),
//! with the issuer's name, address and logo from the configuration.

use handlebars::Handlebars;
use nimbus_db::invoices::{Invoice, Line};
use nimbus_domain::Money;
use serde::Serialize;
use std::sync::LazyLock;

/// Who issues invoices (`BILLING_ISSUER_*`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Issuer {
    /// Name.
    pub name: String,
    /// Address lines.
    pub address: Vec<String>,
    /// Logo (`https://` or `data:image/`).
    pub logo_url: Option<String>,
}

impl Default for Issuer {
    fn default() -> Self {
        Issuer { name: "Nimbus".into(), address: Vec::new(), logo_url: None }
    }
}

impl Issuer {
    /// From the variables' values; the address's lines are separated by `|`. A logo URL that is
    /// neither `https://` nor `data:image/` is refused (it is fetched by customers' browsers).
    pub fn from_vars(name: Option<String>, address: Option<String>, logo: Option<String>) -> Result<Issuer, String> {
        let logo_url = logo.map(|l| l.trim().to_owned()).filter(|l| !l.is_empty());
        if let Some(l) = &logo_url
            && !(l.starts_with("https://") || l.starts_with("data:image/"))
        {
            return Err("must be an https:// or data:image/ URL".into());
        }
        Ok(Issuer {
            name: name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).unwrap_or_else(|| "Nimbus".into()),
            address: address
                .unwrap_or_default()
                .split('|')
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect(),
            logo_url,
        })
    }
}

static TEMPLATES: LazyLock<Handlebars<'static>> = LazyLock::new(|| {
    let mut h = Handlebars::new();
    h.set_strict_mode(true);
    // Checked by the tests: the template is part of the binary.
    if let Err(e) = h.register_template_string("invoice", include_str!("../templates/invoice.hbs")) {
        tracing::error!(error = %e, "the invoice template does not parse");
    }
    h
});

#[derive(Serialize)]
struct LineData {
    position: i32,
    description: String,
    hours: i32,
    amount: String,
}

#[derive(Serialize)]
struct InvoiceData<'a> {
    issuer: &'a Issuer,
    tenant: &'a str,
    kind_title: &'static str,
    number: &'a str,
    issued: String,
    period_start: String,
    period_end: String,
    corrects: Option<String>,
    tax_id: Option<&'a str>,
    currency: &'a str,
    lines: Vec<LineData>,
    subtotal: String,
    reverse_charge: bool,
    tax_percent: String,
    tax: String,
    total: String,
}

/// The invoice as a printable HTML page.
pub fn render(issuer: &Issuer, tenant: &str, invoice: &Invoice, lines: &[Line]) -> Result<String, String> {
    let currency = invoice.currency.trim();
    let shown = |d: rust_decimal::Decimal| Money(d).round_to_minor_unit(currency).to_string();
    let day = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d").to_string();
    let data = InvoiceData {
        issuer,
        tenant,
        kind_title: if invoice.kind == "credit_note" { "Credit note" } else { "Invoice" },
        number: &invoice.number,
        issued: day(invoice.issued_at),
        period_start: day(invoice.period_start),
        // The period is `[start, end)`: its last day is the day before `end`.
        period_end: day(invoice.period_end - chrono::Duration::seconds(1)),
        corrects: invoice.corrects.map(|c| c.to_string()),
        tax_id: invoice.tax_id.as_deref(),
        currency,
        lines: lines
            .iter()
            .map(|l| LineData {
                position: l.position,
                description: l.description.clone(),
                hours: l.hours,
                amount: shown(l.amount),
            })
            .collect(),
        subtotal: shown(invoice.subtotal),
        reverse_charge: invoice.tax_reverse_charge,
        tax_percent: (invoice.tax_rate * rust_decimal::Decimal::from(100)).normalize().to_string(),
        tax: shown(invoice.tax),
        total: shown(invoice.total),
    };
    TEMPLATES.render("invoice", &data).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> rust_decimal::Decimal {
        rust_decimal::Decimal::from_str(s).unwrap()
    }

    #[test]
    fn the_invoice_prints_with_its_issuer_lines_and_totals_escaped() {
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&chrono::Utc);
        let invoice = Invoice {
            id: uuid::Uuid::nil(),
            tenant_id: uuid::Uuid::nil(),
            number: "NMB-2026-000042".into(),
            kind: "invoice".into(),
            corrects: None,
            period_start: at("2026-11-01T00:00:00Z"),
            period_end: at("2026-12-01T00:00:00Z"),
            currency: "EUR".into(),
            subtotal: d("10.0000"),
            tax_rate: d("0.1900"),
            tax_reverse_charge: false,
            tax_id: Some("DE123456789".into()),
            tax: d("1.9000"),
            total: d("11.9000"),
            issued_at: at("2026-12-01T00:00:05Z"),
        };
        let lines = vec![Line {
            position: 1,
            instance_id: None,
            description: "<script>alert(1)</script> (720 h)".into(),
            hours: 720,
            uncapped: d("12.5"),
            amount: d("10.0000"),
        }];
        let issuer =
            Issuer::from_vars(Some("Acme Hosting".into()), Some("1 Cloud Street | Berlin".into()), None).unwrap();
        let html = render(&issuer, "Customer & Co", &invoice, &lines).unwrap();
        for expected in [
            "Invoice NMB-2026-000042",
            "Acme Hosting</strong><br>1 Cloud Street<br>Berlin",
            "Period 2026-11-01 to 2026-11-30",
            "Customer &amp; Co",
            "tax id DE123456789",
            "&lt;script&gt;",
            "Tax 19 %",
            ">11.90 EUR<",
        ] {
            assert!(html.contains(expected), "{expected} missing from:\n{html}");
        }
        assert!(!html.contains("<script>"), "values are escaped");
        assert!(Issuer::from_vars(None, None, Some("http://logo.test/x.png".into())).is_err());
        assert!(Issuer::from_vars(None, None, Some("https://logo.test/x.png".into())).is_ok());
    }
}
