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
use nimbus_domain::{ErrorCode, Money};
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
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PaymentView {
    id: Uuid,
    provider: String,
    reference: Option<String>,
    amount: Money,
    currency: String,
    status: String,
    created_at: DateTime<Utc>,
    settled_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redirect_url: Option<String>,
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopUpBody {
    amount: Money,
}

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

async fn list(State(state): State<AppState>, auth: AuthUser, rid: RequestId) -> Result<Response, ApiError> {
    let listed = payments::list(state.db(), auth.tenant(), PAYMENTS_SHOWN).await?;
    Ok(super::data(&rid, listed.into_iter().map(view).collect::<Vec<_>>()).into_response())
}

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
    let outcome = match notification {
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
                    "settled"
                }
                Ok(None) => "already settled",
                // Not one of ours (another integration's payment on the same account).
                Err(DbError::NotFound) => "unknown",
                Err(DbError::Check { .. }) => {
                    tracing::warn!(reference = %paid.reference, "payment notification with another amount; not credited");
                    "amount differs"
                }
                Err(e) => return Err(e.into()),
            }
        }
        Notification::Failed { reference } => {
            if payments::fail_reference(state.db(), provider.name(), &reference).await? { "failed" } else { "unknown" }
        }
        Notification::Ignored => "ignored",
    };
    Ok(super::data(&rid, json!({ "received": true, "outcome": outcome })).into_response())
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths())]
pub struct ApiDoc;
