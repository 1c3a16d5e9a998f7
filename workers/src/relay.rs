//! The outbox relay (DESIGN §2): moves due outbox rows to Redis, so a job accepted while Redis
//! was down (or whose API process died before its push, or whose retry just became due) runs.
//!
//! One tick: `begin` → `outbox::fetch_due` (rows locked `SKIP LOCKED`, so relays in every
//! worker process share the work) → push them, pipelined per queue → `outbox::mark_pushed` →
//! `commit`. A failed push rolls back and the rows stay; a crash after the push pushes again,
//! which the ledger's claim makes harmless.

use std::time::Duration;

use nimbus_db::{DbError, PgPool, outbox};
use nimbus_jobs::{DispatchError, Queues};
use tokio_util::sync::CancellationToken;

/// Why a tick failed (nothing was marked pushed).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Postgres.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Redis.
    #[error(transparent)]
    Push(#[from] DispatchError),
    /// Redis did not answer in time.
    #[error("push timed out")]
    Timeout,
}

impl From<sqlx::Error> for RelayError {
    fn from(e: sqlx::Error) -> Self {
        RelayError::Db(e.into())
    }
}

/// Relay settings.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Rows per tick.
    pub batch: i64,
    /// Sleep when there was nothing to push.
    pub idle: Duration,
    /// Longest a push may take before the tick gives up.
    pub push_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig { batch: 500, idle: Duration::from_millis(250), push_timeout: Duration::from_secs(3) }
    }
}

/// The relay.
#[derive(Clone, Debug)]
pub struct Relay {
    db: PgPool,
    queues: Queues,
    config: RelayConfig,
}

impl Relay {
    /// A relay from `db`'s outbox to `queues`.
    pub fn new(db: PgPool, queues: Queues, config: RelayConfig) -> Relay {
        Relay { db, queues, config }
    }

    /// Pushes up to one batch of due rows; returns how many were pushed.
    pub async fn tick(&self) -> Result<usize, RelayError> {
        let mut tx = self.db.begin().await?;
        let due = outbox::fetch_due(&mut tx, self.config.batch).await?;
        if due.is_empty() {
            return Ok(0);
        }
        tokio::time::timeout(self.config.push_timeout, self.queues.push_outbox(&due))
            .await
            .map_err(|_| RelayError::Timeout)??;
        let ids: Vec<i64> = due.iter().map(|e| e.id).collect();
        outbox::mark_pushed(&mut *tx, &ids).await?;
        tx.commit().await?;
        tracing::debug!(rows = ids.len(), "outbox relayed");
        Ok(ids.len())
    }

    /// Ticks until `shutdown`: straight on while batches come full, after `idle` otherwise,
    /// backing off (up to 5 s) while Postgres or Redis fail.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let wait = match self.tick().await {
                Ok(n) if n as i64 >= self.config.batch => {
                    failures = 0;
                    Duration::ZERO
                }
                Ok(_) => {
                    failures = 0;
                    self.config.idle
                }
                Err(e) => {
                    failures += 1;
                    // Log the first failure of a streak and then every 20th, not every tick.
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::warn!(error = %e, failures, "outbox relay tick failed; rows stay for the next one");
                    }
                    (self.config.idle * failures.min(20)).min(Duration::from_secs(5))
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
