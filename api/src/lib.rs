//! `nimbus-api`: Nimbus's HTTP API (`/v1`), the front door of the job pipeline (DESIGN §2, §6).
//!
//! * [`router`] wires every route with the [`middleware::envelope`] layer (request ids, the
//!   error envelope) over an [`AppState`]; `main.rs` only reads the configuration and serves it.
//! * [`routes`]: one module per domain — health, VMs, jobs (with the SSE stream), templates,
//!   quota.
//! * [`auth`]: who is calling ([`AuthUser`], [`AdminUser`]) and the layer that resolves it.
//! * [`ratelimit`]: requests per minute per caller, shared by the replicas through Redis.
//! * [`audit`]: which requests the audit log records, and its group-commit writer.
//! * [`html`]: the HTML error page of the `/auth/*` navigations.
//! * [`extract`]: the JSON body, query and `Idempotency-Key` extractors, whose failures are
//!   [`ApiError`]s.
//! * [`error`]: [`ApiError`], its stable codes and statuses.
//! * [`inventory`]: templates, nodes and placement from Proxmox, cached briefly.
//! * [`accept`]: instance creates written and pushed together (group commit).
//! * [`dispatch`]: the push of accepted jobs to Redis, with the outbox as the safety net.
//! * [`validation`]: names, sizes and SSH keys.
//! * [`serve`]: the listener, with its header and idle timeouts and connection caps.
//! * [`config`], [`bootstrap`]: the environment table and the first tenant.

pub mod accept;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod console;
pub mod dispatch;
pub mod error;
pub mod extract;
pub mod html;
pub mod inventory;
pub mod invoice_html;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod payments;
pub mod ratelimit;
pub mod routes;
pub mod serve;
pub mod state;
pub mod validation;

use axum::Router;
use axum::extract::DefaultBodyLimit;

pub use auth::{AdminUser, AuthUser};
pub use config::Config;
pub use error::{ApiError, FieldError};
pub use state::{AppState, Settings};

/// Bodies larger than this are refused (413 in the envelope): no request of this API needs more.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(routes::health::router())
        .merge(routes::reference::router())
        .merge(routes::vms::router())
        .merge(routes::vm_actions::router())
        .merge(routes::vm_snapshots::router())
        .merge(routes::vm_console::router())
        .merge(routes::vm_events::router())
        .merge(routes::vm_backups::router())
        .merge(routes::billing::router())
        .merge(routes::admin_billing::router())
        .merge(routes::payments::router())
        .merge(routes::admin_plans::router())
        .merge(routes::vm_backup_policy::router())
        .merge(routes::vm_restore::router())
        .merge(routes::admin_schedules::router())
        .merge(routes::jobs::router())
        .merge(routes::templates::router())
        .merge(routes::quota::router())
        .merge(routes::admin::router())
        .merge(routes::admin_users::router())
        .merge(routes::admin_vms::router())
        .merge(routes::admin_webhooks::router())
        .merge(routes::webhooks::router())
        .merge(routes::notifications::router())
        .merge(routes::apikeys::router())
        .merge(routes::auth::router())
        .merge(routes::admin_audit::router())
        .merge(routes::admin_queues::router())
        .merge(routes::admin_nodes::router())
        .merge(routes::web::router(state.settings().web_dist.clone()))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Layers run bottom-up: envelope → audit record → unstorable text refused → authenticate
        // → audit capture → rate limit → handler. The audit record sits outside `authenticate`
        // to see its 401s too.
        .layer(axum::middleware::from_fn_with_state(state.clone(), ratelimit::layer))
        .layer(axum::middleware::from_fn(audit::capture))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(axum::middleware::from_fn(middleware::refuse_unstorable))
        .layer(axum::middleware::from_fn_with_state(state.clone(), audit::record))
        .layer(axum::middleware::from_fn(middleware::envelope))
        // Outermost: counts every request with the status the client gets.
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::layer))
        .with_state(state)
}
