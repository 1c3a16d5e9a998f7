//! `nimbus-db`: the PostgreSQL repositories shared by the API and the workers, one module per
//! aggregate. Queries are runtime-checked (`sqlx::query_as` + hand-written row mapping), and
//! every constraint violation comes back as a typed [`DbError`].
//!
//! * [`plans`], [`tenants`], [`users`], [`api_keys`]: tenancy and authentication by API key.
//! * [`instances`]: instances, the quota-checked create (instance + job in one statement, one
//!   create or a batch), VMID reservations.
//! * [`jobs`]: the job ledger: enqueue, claim with leases, progress, retry scheduling, lease
//!   recovery, events for SSE.
//! * [`operations`]: operations on existing instances, one at a time per instance.
//! * [`outbox`]: dispatches owed to Redis.
//! * [`schedules`]: cron schedules and their fires, each fire once (DESIGN §9).
//! * [`queue_stats`]: queue health from the ledger (the operator's queue dashboard).
//! * [`idempotency`]: `Idempotency-Key` records (DESIGN §6).
//! * [`audit`]: the append-only audit log.
//! * [`events`]: domain events, written with the change they report (DESIGN §11).
//! * [`usage`], [`invoices`], [`balance`], [`ladder`]: metering, invoices, the prepaid ledger and
//!   the ladder from a low balance to suspension (DESIGN §10); [`payments`]: top-ups paid through a
//!   provider; [`revenue`]: the operators' view.
//! * [`seed`]: the demo tenant for `make dev`.
//!
//! The schema lives in `migrations/` at the workspace root; [`MIGRATOR`] embeds it. Migrations
//! run as the tables' owner ([`migrate_with`]); the API and the workers connect as [`APP_ROLE`],
//! which reads and writes rows but cannot alter, truncate or drop anything, nor switch a trigger
//! off ([`schema_check`] tells them when the schema lags behind or they hold more than that).

pub mod api_keys;
pub mod audit;
pub mod backup_policies;
pub mod balance;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod identities;
pub mod instances;
pub mod invoices;
pub mod jobs;
pub mod ladder;
pub mod notifications;
pub mod operations;
pub mod outbox;
pub mod payments;
pub mod plans;
pub mod queue_stats;
pub mod revenue;
mod rows;
pub mod schedules;
pub mod seed;
pub mod tenants;
pub mod usage;
pub mod users;
pub mod webhooks;

use std::time::Duration;

pub use error::DbError;
pub use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};

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

/// The role the API and the workers connect as: rows only, no DDL (created and granted by the
/// migration `20261206000001_app_role.sql`).
pub const APP_ROLE: &str = "nimbus_app";

/// Applies the pending migrations (safe to run from several processes at once: sqlx takes an
/// advisory lock). `pool` must connect as the tables' owner.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Applies the pending migrations over one short-lived connection to `owner_url`, so a process
/// that migrates at start keeps no connection with the owner's rights afterwards.
pub async fn migrate_with(owner_url: &str) -> Result<(), sqlx::migrate::MigrateError> {
    let options: PgConnectOptions = owner_url.parse()?;
    let mut conn = PgConnection::connect_with(&options).await?;
    let result = MIGRATOR.run(&mut conn).await;
    conn.close().await.ok();
    result
}

/// How the schema and the connected role compare with what the code expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaCheck {
    /// Versions of embedded migrations the database has not applied (or applied from a different
    /// file); empty when the schema is current.
    pub pending: Vec<i64>,
    /// The connected role is a superuser or may act as the tables' owner: it could alter the
    /// tables or disable the audit log's triggers.
    pub privileged: bool,
}

/// Compares `pool`'s database with [`MIGRATOR`] and tells whether the connected role holds more
/// than row access. Needs only SELECT on `_sqlx_migrations`, which [`APP_ROLE`] has.
pub async fn schema_check(pool: &PgPool) -> Result<SchemaCheck> {
    let applied: Vec<(i64, Vec<u8>)> =
        if sqlx::query_scalar::<_, bool>("select to_regclass('_sqlx_migrations') is not null").fetch_one(pool).await? {
            sqlx::query_as("select version, checksum from _sqlx_migrations where success").fetch_all(pool).await?
        } else {
            Vec::new()
        };
    let pending = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .filter(|m| !applied.iter().any(|(v, c)| *v == m.version && c.as_slice() == &*m.checksum))
        .map(|m| m.version)
        .collect();
    let privileged: bool = sqlx::query_scalar(
        "select coalesce((select rolsuper from pg_roles where rolname = current_user), false) \
             or coalesce((select pg_has_role(relowner, 'USAGE') from pg_class \
                          where oid = to_regclass('audit_log')), false)",
    )
    .fetch_one(pool)
    .await?;
    Ok(SchemaCheck { pending, privileged })
}
