//! Stripe, by PaymentIntents: a top-up is a PaymentIntent of its amount in the currency's minor
//! unit (our payment id in its metadata and as the idempotency key), which the browser confirms
//! with Stripe.js and the `client_secret` answered; Stripe's `payment_intent.succeeded` (or
//! `payment_intent.payment_failed`) notification, signed with the endpoint's secret
//! (`Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, 5 minutes' tolerance),
//! settles it. Settings: `STRIPE_SECRET_KEY`, `STRIPE_WEBHOOK_SECRET`, and `STRIPE_API_BASE`
//! (default `https://api.stripe.com`; tests point it at PyPI `localstripe`).

use std::time::Duration;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use nimbus_db::payments::{Paid, Payment};
use nimbus_domain::Money;
use nimbus_domain::money::minor_units;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Deserialize;
use sha2::Sha256;

use super::{Notification, PaymentProvider, ProviderError, ProviderFuture, Started};

/// How old a notification's timestamp may be (Stripe's libraries' default).
const TOLERANCE_SECS: i64 = 300;

/// Stripe's settings.
#[derive(Clone)]
pub struct StripeConfig {
    /// `STRIPE_API_BASE`.
    pub api_base: String,
    /// `STRIPE_SECRET_KEY` (`sk_…`).
    pub secret_key: String,
    /// `STRIPE_WEBHOOK_SECRET` (`whsec_…`), the webhook endpoint's signing secret.
    pub webhook_secret: String,
}

impl std::fmt::Debug for StripeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeConfig").field("api_base", &self.api_base).finish_non_exhaustive()
    }
}

/// The Stripe provider.
#[derive(Debug)]
pub struct Stripe {
    config: StripeConfig,
    http: reqwest::Client,
}

impl Stripe {
    /// A provider with `config`.
    pub fn new(config: StripeConfig) -> Stripe {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap_or_default();
        Stripe { config, http }
    }
}

/// The decimal places of Stripe's integer amounts in `currency`: the ISO minor unit, except for
/// the currencies Stripe keeps two-decimal for backwards compatibility (ISK, UGX: amounts end in 00).
fn stripe_exponent(currency: &str) -> u32 {
    match currency.to_ascii_uppercase().as_str() {
        "ISK" | "UGX" => 2,
        c => minor_units(c),
    }
}

/// `amount` in Stripe's integer unit of the currency, if it is a whole number of them.
fn to_minor(amount: Decimal, currency: &str) -> Option<i64> {
    let scaled = amount * Decimal::from(10i64.pow(stripe_exponent(currency)));
    if scaled.fract().is_zero() { scaled.to_i64() } else { None }
}

fn from_minor(amount: i64, currency: &str) -> Money {
    Money(Decimal::new(amount, stripe_exponent(currency)))
}

#[derive(Deserialize)]
struct Intent {
    id: String,
    client_secret: Option<String>,
}

#[derive(Deserialize)]
struct StripeErrorBody {
    error: StripeErrorDetail,
}

#[derive(Deserialize)]
struct StripeErrorDetail {
    message: Option<String>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: EventObject,
}

#[derive(Deserialize)]
struct EventObject {
    id: String,
    amount: Option<i64>,
    amount_received: Option<i64>,
    currency: Option<String>,
}

impl PaymentProvider for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn start<'a>(&'a self, payment: &'a Payment) -> ProviderFuture<'a, Started> {
        Box::pin(async move {
            let amount = to_minor(payment.amount, &payment.currency)
                .ok_or_else(|| ProviderError::Unavailable("the amount is not a whole number of minor units".into()))?;
            let form = [
                ("amount", amount.to_string()),
                ("currency", payment.currency.to_lowercase()),
                ("metadata[payment_id]", payment.id.to_string()),
                ("metadata[tenant_id]", payment.tenant_id.to_string()),
            ];
            let url = format!("{}/v1/payment_intents", self.config.api_base.trim_end_matches('/'));
            let response = self
                .http
                .post(url)
                .bearer_auth(&self.config.secret_key)
                .header("Idempotency-Key", payment.id.to_string())
                .form(&form)
                .send()
                .await
                .map_err(|e| ProviderError::Unavailable(e.without_url().to_string()))?;
            let status = response.status();
            let body = response.bytes().await.map_err(|e| ProviderError::Unavailable(e.to_string()))?;
            if !status.is_success() {
                let message = serde_json::from_slice::<StripeErrorBody>(&body).ok().and_then(|b| b.error.message);
                return Err(ProviderError::Unavailable(format!("{status}: {}", message.unwrap_or_default())));
            }
            let intent: Intent =
                serde_json::from_slice(&body).map_err(|e| ProviderError::Unavailable(e.to_string()))?;
            Ok(Started { reference: intent.id, client_secret: intent.client_secret, redirect_url: None })
        })
    }

    fn notification(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Notification, ProviderError> {
        let header = headers
            .get("stripe-signature")
            .and_then(|v| v.to_str().ok())
            .ok_or(ProviderError::BadSignature("no Stripe-Signature header"))?;
        verify(header, body, &self.config.webhook_secret, now)?;
        let event: Event = serde_json::from_slice(body).map_err(|e| ProviderError::Malformed(e.to_string()))?;
        let object = event.data.object;
        match event.kind.as_str() {
            "payment_intent.succeeded" => {
                let currency = object.currency.ok_or_else(|| ProviderError::Malformed("no currency".into()))?;
                let amount = object
                    .amount_received
                    .or(object.amount)
                    .ok_or_else(|| ProviderError::Malformed("no amount".into()))?;
                let currency = currency.to_uppercase();
                Ok(Notification::Paid(Paid {
                    provider: "stripe",
                    reference: object.id,
                    amount: from_minor(amount, &currency),
                    currency,
                }))
            }
            "payment_intent.payment_failed" => Ok(Notification::Failed { reference: object.id }),
            _ => Ok(Notification::Ignored),
        }
    }
}

/// Checks `header` (`t=…,v1=…[,v1=…]`) against `body` signed with `secret` at most
/// [`TOLERANCE_SECS`] from `now`.
fn verify(header: &str, body: &[u8], secret: &str, now: DateTime<Utc>) -> Result<(), ProviderError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", s)) => signatures.extend(hex::decode(s).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(ProviderError::BadSignature("no timestamp"))?;
    if (now.timestamp() - timestamp).abs() > TOLERANCE_SECS {
        return Err(ProviderError::BadSignature("the timestamp is outside the tolerance"));
    }
    let signed = || {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body);
        Some(mac)
    };
    // `verify_slice` compares in constant time.
    let matches = signatures.iter().any(|s| signed().is_some_and(|mac| mac.verify_slice(s).is_ok()));
    if matches { Ok(()) } else { Err(ProviderError::BadSignature("no signature matches")) }
}

/// A `Stripe-Signature` header for `body` at `timestamp` (what Stripe sends; tests sign with it).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn amounts_go_to_and_from_minor_units() {
        assert_eq!(to_minor(Decimal::new(2500, 2), "EUR"), Some(2500));
        assert_eq!(to_minor(Decimal::new(25, 0), "EUR"), Some(2500));
        assert_eq!(to_minor(Decimal::new(2501, 3), "EUR"), None);
        assert_eq!(to_minor(Decimal::new(500, 0), "JPY"), Some(500));
        assert_eq!(from_minor(1999, "EUR"), Money(Decimal::new(1999, 2)));
        assert_eq!(from_minor(1999, "KWD"), Money(Decimal::new(1999, 3)));
        assert_eq!(to_minor(Decimal::new(500, 0), "ISK"), Some(50_000), "Stripe's two-decimal ISK");
        assert_eq!(from_minor(50_000, "ISK"), Money(Decimal::new(500, 0)));
    }

    #[test]
    fn signatures_verify_only_with_the_secret_within_the_tolerance() {
        let body = br#"{"type":"payment_intent.succeeded"}"#;
        let header = sign("whsec_a", 1_800_000_000, body);
        assert!(verify(&header, body, "whsec_a", at(1_800_000_100)).is_ok());
        assert!(verify(&header, body, "whsec_b", at(1_800_000_100)).is_err(), "another secret");
        assert!(verify(&header, b"{}", "whsec_a", at(1_800_000_100)).is_err(), "another body");
        assert!(verify(&header, body, "whsec_a", at(1_800_000_301)).is_err(), "too old");
        // During a secret's rotation Stripe sends a signature per secret.
        let both =
            format!("{},v1={}", sign("whsec_old", 1_800_000_000, body), &header[header.find("v1=").unwrap() + 3..]);
        assert!(verify(&both, body, "whsec_a", at(1_800_000_000)).is_ok());
        assert!(verify("v1=00", body, "whsec_a", at(1_800_000_000)).is_err(), "no timestamp");
    }
}
