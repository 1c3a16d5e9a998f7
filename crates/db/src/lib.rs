//! `nimbus-db`: the PostgreSQL repositories shared by the API and the workers, one module per
//! aggregate. Queries are runtime-checked (`sqlx::query_as` + hand-written row mapping), and
//! every constraint violation comes back as a typed [`DbError`].
//!
//! * [`plans`], [`tenants`], [`users`], [`api_keys`]: tenancy and authentication by API key.
//! * [`instances`]: instances, the quota-checked create (instance + job in one statement, one
//!   create or a batch), VMID reservations.
//! * [`jobs`]: the job ledger: enqueue, claim with leases, progress, retry scheduling, lease
//!   recovery, events for SSE.
//! * [`outbox`]: dispatches owed to Redis.
//! * [`queue_stats`]: queue health from the ledger (the operator's queue dashboard).
//! * [`idempotency`]: `Idempotency-Key` records (DESIGN §6).
//! * [`audit`]: the append-only audit log.
//! * [`seed`]: the demo tenant for `make dev`.
//!
//! The schema lives in `migrations/` at the workspace root; [`MIGRATOR`] embeds it.

pub mod api_keys;
pub mod audit;
pub mod error;
pub mod idempotency;
pub mod identities;
pub mod instances;
pub mod jobs;
pub mod outbox;
pub mod plans;
pub mod queue_stats;
mod rows;
pub mod seed;
pub mod tenants;
pub mod users;

use std::time::Duration;

pub use error::DbError;
pub use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// The migrations in `migrations/`, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Shorthand for repository results.
pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// Connects a pool of at most `max_connections` to `url`.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await?)
}

/// Applies the pending migrations (safe to run from several processes at once: sqlx takes an
/// advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
