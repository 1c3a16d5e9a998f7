//! Payment providers: how a customer pays a top-up of its prepaid balance.
//!
//! A provider is one implementation of [`PaymentProvider`]:
//!
//! 1. [`PaymentProvider::start`]: the customer asks to pay (`POST /v1/billing/top-ups`); the API
//!    records a pending payment (`nimbus_db::payments`) and asks the provider to start collecting
//!    it, our payment id as the provider's idempotency key. What comes back (the provider's
//!    reference, and what the browser needs to complete it: a client secret or a page to go to)
//!    is answered to the customer.
//! 2. [`PaymentProvider::notification`]: the provider tells the API what happened
//!    (`POST /v1/billing/providers/{name}/webhook`). The provider verifies its own signature
//!    and reads the notification; the API settles the payment once (a top-up entry naming it, the
//!    database refusing a second one) and moves the tenant along the ladder in the same
//!    transaction, so a payment lifts a suspension at once.
//!
//! Adding a provider is adding a module here, its settings in `config.rs`, and a line in
//! [`from_settings`]. Operators' manual top-ups (`POST /v1/admin/tenants/{id}/credit`) need none.

pub mod stripe;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use nimbus_db::payments::{Paid, Payment};

/// What a provider's start answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    /// The provider's id of the payment.
    pub reference: String,
    /// A secret the browser completes the payment with (Stripe's `client_secret`).
    pub client_secret: Option<String>,
    /// A page of the provider the customer goes to, for providers that work that way.
    pub redirect_url: Option<String>,
}

/// What a provider's notification says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notification {
    /// The payment was collected.
    Paid(Paid),
    /// The payment failed (the customer may try again with a new one).
    Failed {
        /// The provider's reference.
        reference: String,
    },
    /// Something the API does not act on.
    Ignored,
}

/// Why a provider call failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider could not be reached or refused the request.
    #[error("the payment provider failed: {0}")]
    Unavailable(String),
    /// A notification whose signature is missing, wrong or too old.
    #[error("the notification's signature does not verify: {0}")]
    BadSignature(&'static str),
    /// A notification that is not what the provider sends.
    #[error("the notification cannot be read: {0}")]
    Malformed(String),
}

/// A boxed future, so providers can be chosen at start and held as trait objects.
pub type ProviderFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ProviderError>> + Send + 'a>>;

/// A payment provider.
pub trait PaymentProvider: Send + Sync + std::fmt::Debug {
    /// Its name, in paths and in the ledger (`stripe`).
    fn name(&self) -> &'static str;

    /// Starts collecting `payment` (pending, not yet referenced).
    fn start<'a>(&'a self, payment: &'a Payment) -> ProviderFuture<'a, Started>;

    /// Verifies a notification (its headers and raw body, at `now`) and reads it.
    fn notification(&self, headers: &HeaderMap, body: &[u8], now: DateTime<Utc>)
    -> Result<Notification, ProviderError>;
}

/// The providers the settings configure (none without their variables).
pub fn from_settings(settings: &crate::state::Settings) -> Vec<Arc<dyn PaymentProvider>> {
    let mut providers: Vec<Arc<dyn PaymentProvider>> = Vec::new();
    if let Some(config) = &settings.stripe {
        providers.push(Arc::new(stripe::Stripe::new(config.clone())));
    }
    providers
}
