//! Top-ups paid by customers through a payment provider (`crate::payments`):
//!
//! * `POST /v1/billing/top-ups` `{amount}` (any member of the tenant may pay): records a pending
//!   payment in the plan's currency and starts it with the provider; `201` with what the browser
//!   completes it with (`clientSecret`, or a `redirectUrl`). Without a provider,
//!   `501 PAYMENTS_NOT_CONFIGURED`.
//! * `GET /v1/billing/top-ups`: the tenant's payments, newest first.
//! * `POST /v1/billing/providers/{provider}/webhook`: the provider's notifications, authenticated
//!   by the provider's own signature (no credential): a paid payment is credited once and moves
//!   the tenant along the ladder in the same transaction (a suspension is lifted at once); a
//!   notification delivered again changes nothing. A bad signature is `400`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use nimbus_db::DbError;
use nimbus_db::ladder;
use nimbus_db::payments::{self, Payment};
use nimbus_domain::{ApiError as ApiErrorBody, ApiResponse, ErrorCode, Money};
use nimbus_jobs::PowerAction;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::decode;
use crate::middleware::RequestId;
use crate::payments::{Notification, ProviderError};
use crate::routes::billing::exact;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/billing/top-ups", get(list).post(start))
        .route("/v1/billing/providers/{provider}/webhook", post(webhook))
}

/// The largest top-up one payment may be.
const MAX_TOP_UP: i64 = 100_000;

/// A payment as the tenant sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Payment)]
struct PaymentView {
    /// Its id (the provider's idempotency key).
    id: Uuid,
    /// The payment provider.
    #[schema(example = "stripe")]
    provider: String,
    /// The provider's id of the payment; `null` until the provider has started it.
    #[schema(example = "pi_3QJ8yZ2eZvKYlo2C1k8bX0aP")]
    reference: Option<String>,
    /// The amount, without trailing zeros.
    #[schema(value_type = String, example = "50")]
    amount: Money,
    /// ISO 4217 code.
    #[schema(example = "EUR")]
    currency: String,
    /// Where it is.
    #[schema(value_type = PaymentStatus)]
    status: String,
    /// When it was asked for.
    created_at: DateTime<Utc>,
    /// When it was collected; `null` while pending and for a failed payment.
    settled_at: Option<DateTime<Utc>>,
    /// What the browser completes the payment with (Stripe's `client_secret`): only in the
    /// answer to `POST /v1/billing/top-ups`, for providers that work that way.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "pi_3QJ8yZ2eZvKYlo2C1k8bX0aP_secret_4Vx")]
    client_secret: Option<String>,
    /// A page of the provider the customer goes to: only in the answer to
    /// `POST /v1/billing/top-ups`, for providers that work that way.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "https://checkout.example.com/pay/cs_123")]
    redirect_url: Option<String>,
}

/// Where a payment is (`status`).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Describes `PaymentView::status`, a string the database constrains to these.
enum PaymentStatus {
    /// Started, not collected yet.
    Pending,
    /// Collected and credited to the balance.
    Succeeded,
    /// Not collected (the customer may start another).
    Failed,
}

fn view(p: Payment) -> PaymentView {
    PaymentView {
        id: p.id,
        provider: p.provider,
        reference: p.reference,
        amount: exact(Money(p.amount)),
        currency: p.currency,
        status: p.status,
        created_at: p.created_at,
        settled_at: p.settled_at,
        client_secret: None,
        redirect_url: None,
    }
}

/// The body of `POST /v1/billing/top-ups`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewTopUp)]
struct TopUpBody {
    /// What to pay, in the currency of the tenant's current price: positive, at most 100000, in
    /// whole minor units of the currency (`50.00`, not `50.001`).
    #[schema(value_type = String, example = "50.00", pattern = "^([0-9]{1,5}(\\.[0-9]{1,2}0*)?|100000(\\.0+)?)$")]
    amount: Money,
}

/// Starts paying a top-up of the prepaid balance through the payment provider.
///
/// The answer says how the browser completes the payment; the balance is credited when the
/// provider notifies that it was paid.
#[utoipa::path(
    post, path = "/v1/billing/top-ups", operation_id = "startTopUp", tag = "Billing",
    request_body = TopUpBody,
    responses(
        (status = 201, description = "The pending payment, with its `clientSecret` or `redirectUrl`.", body = ApiResponse<PaymentView>),
        (status = 400, description = "`VALIDATION_FAILED`: the amount is not positive, above 100000 or finer than the currency's minor unit, or the tenant's plan has no price (so no currency to pay in).", body = ApiErrorBody),
        (status = 501, description = "`PAYMENTS_NOT_CONFIGURED`: no payment provider is set up; the provider's billing team adds credit.", body = ApiErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`: the payment provider could not be reached or refused the payment (it is recorded as failed), or a dependency is down.", body = ApiErrorBody),
    )
)]
async fn start(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let body = decode::<TopUpBody>(&bytes)?.value;
    let provider = state.payment_providers().first().cloned().ok_or_else(|| ApiError::Refused {
        code: ErrorCode::PaymentsNotConfigured,
        message: "no payment provider is set up; ask the provider's billing team to add credit".into(),
        details: json!({}),
    })?;
    let Some(currency) = nimbus_db::usage::price_at(state.db(), auth.tenant(), Utc::now()).await?.map(|p| p.currency)
    else {
        return Err(ApiError::field("amount", "the tenant's plan has no price, so no currency to pay in"));
    };
    let amount = body.amount;
    let minor = nimbus_domain::money::minor_units(&currency);
    if amount.0 <= rust_decimal::Decimal::ZERO
        || amount.0 > rust_decimal::Decimal::from(MAX_TOP_UP)
        || amount.0.normalize().scale() > minor
    {
        return Err(ApiError::field(
            "amount",
            format!("a positive amount of at most {MAX_TOP_UP} {currency}, in whole {currency} minor units"),
        ));
    }
    let payment = payments::start(state.db(), auth.tenant(), provider.name(), amount, &currency, auth.user.id).await?;
    let started = match provider.start(&payment).await {
        Ok(started) => started,
        Err(e) => {
            payments::fail(state.db(), payment.id).await?;
            tracing::warn!(payment.id = %payment.id, provider = provider.name(), error = %e, "payment not started");
            return Err(ApiError::ServiceUnavailable(format!("{}: {e}", provider.name())));
        }
    };
    let payment = payments::set_reference(state.db(), payment.id, &started.reference).await?;
    tracing::info!(payment.id = %payment.id, provider = provider.name(), amount = %amount, "payment started");
    let mut answer = view(payment);
    answer.client_secret = started.client_secret;
    answer.redirect_url = started.redirect_url;
    Ok((StatusCode::CREATED, super::data(&rid, answer)).into_response())
}

/// The payments `GET /v1/billing/top-ups` shows.
const PAYMENTS_SHOWN: i64 = 100;

/// The tenant's top-up payments (the latest 100), newest first.
#[utoipa::path(
    get, path = "/v1/billing/top-ups", operation_id = "listTopUps", tag = "Billing",
    responses((status = 200, description = "The tenant's payments.", body = ApiResponse<Vec<PaymentView>>))
)]
async fn list(State(state): State<AppState>, auth: AuthUser, rid: RequestId) -> Result<Response, ApiError> {
    let listed = payments::list(state.db(), auth.tenant(), PAYMENTS_SHOWN).await?;
    Ok(super::data(&rid, listed.into_iter().map(view).collect::<Vec<_>>()).into_response())
}

/// The answer to a provider's notification.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = PaymentNotificationReceipt)]
struct Receipt {
    /// Always `true`: the notification was verified and need not be sent again.
    received: bool,
    /// What it did.
    outcome: Outcome,
}

/// What a provider's notification did.
#[derive(Clone, Copy, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = PaymentNotificationOutcome)]
enum Outcome {
    /// The payment was credited and the tenant moved along the ladder.
    #[serde(rename = "settled")]
    Settled,
    /// Delivered again: nothing changed.
    #[serde(rename = "already settled")]
    AlreadySettled,
    /// Not a payment of this API (another integration's on the same account), or a failure of
    /// a payment that is no longer pending.
    #[serde(rename = "unknown")]
    Unknown,
    /// Collected with another amount or currency than asked for: not credited.
    #[serde(rename = "amount differs")]
    AmountDiffers,
    /// The payment failed.
    #[serde(rename = "failed")]
    Failed,
    /// A notification the API does not act on.
    #[serde(rename = "ignored")]
    Ignored,
}

/// Receives a payment provider's notification (its webhook), authenticated by its signature.
///
/// No credential: the provider's own signature (Stripe's `Stripe-Signature`) authenticates it. A
/// paid payment is credited once and moves the tenant along the prepaid ladder (a suspension is
/// lifted at once); a notification delivered again changes nothing.
#[utoipa::path(
    post, path = "/v1/billing/providers/{provider}/webhook", operation_id = "receivePaymentNotification", tag = "Billing",
    params(
        ("provider" = String, Path, description = "The payment provider's name, as configured.", example = "stripe"),
        ("Stripe-Signature" = Option<String>, Header,
            description = "Stripe's signature of the body: `t=<unix time>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">`, at most 5 minutes old.",
            example = "t=1764581400,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"),
    ),
    request_body(content = Object, content_type = "application/json",
        description = "The provider's event, as it sent it (its raw bytes are what is signed).",
        example = json!({"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_3QJ8yZ2eZvKYlo2C1k8bX0aP", "amount_received": 5000, "currency": "eur"}}})),
    responses(
        (status = 200, description = "Received: what the notification did.", body = ApiResponse<Receipt>),
        (status = 400, description = "`VALIDATION_FAILED`: the signature is missing, does not verify or is outside the 5 minutes' tolerance, or the verified notification cannot be read; `details.fields` names `body`.", body = ApiErrorBody),
        (status = 404, description = "`NOT_FOUND`: no payment provider of that name is configured.", body = ApiErrorBody),
    )
)]
async fn webhook(
    State(state): State<AppState>,
    rid: RequestId,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let provider =
        state.payment_providers().iter().find(|p| p.name() == name).cloned().ok_or(ApiError::NotFound("provider"))?;
    let now = Utc::now();
    let notification = provider.notification(&headers, &body, now).map_err(|e| match e {
        ProviderError::BadSignature(_) | ProviderError::Malformed(_) => {
            tracing::warn!(provider = provider.name(), error = %e, "payment notification refused");
            ApiError::field("body", e.to_string())
        }
        e => ApiError::ServiceUnavailable(e.to_string()),
    })?;
    let outcome: Outcome = match notification {
        Notification::Paid(paid) => {
            let mut tx = state.db().begin().await.map_err(DbError::from)?;
            match payments::settle(&mut tx, &paid, now).await {
                Ok(Some(payment)) => {
                    let tenant = payment.tenant_id.into();
                    let step = ladder::evaluate(&mut tx, tenant, now, &PowerAction::ladder_jobs()).await?;
                    tx.commit().await.map_err(DbError::from)?;
                    for job in &step.enqueued {
                        state.dispatcher().push(state.db(), job).await;
                    }
                    tracing::info!(payment.id = %payment.id, tenant.id = %tenant, "payment settled");
                    Outcome::Settled
                }
                Ok(None) => Outcome::AlreadySettled,
                // Not one of ours (another integration's payment on the same account).
                Err(DbError::NotFound) => Outcome::Unknown,
                Err(DbError::Check { .. }) => {
                    tracing::warn!(reference = %paid.reference, "payment notification with another amount; not credited");
                    Outcome::AmountDiffers
                }
                Err(e) => return Err(e.into()),
            }
        }
        Notification::Failed { reference } => {
            if payments::fail_reference(state.db(), provider.name(), &reference).await? {
                Outcome::Failed
            } else {
                Outcome::Unknown
            }
        }
        Notification::Ignored => Outcome::Ignored,
    };
    Ok(super::data(&rid, Receipt { received: true, outcome }).into_response())
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, start, webhook))]
pub struct ApiDoc;
