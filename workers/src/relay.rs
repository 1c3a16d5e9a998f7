//! The outbox relay (DESIGN §2): moves due outbox rows to Redis, so a job accepted while Redis
//! was down (or whose API process died before its push, or whose retry just became due) runs.
//!
//! One tick: `begin` → `outbox::fetch_due` (rows locked `SKIP LOCKED`, so relays in every
//! worker process share the work) → push them, pipelined per queue → `outbox::mark_pushed` →
//! `commit`. A failed push rolls back and the rows stay; a crash after the push pushes again,
//! which the ledger's claim makes harmless.
//!
//! Every `sweep_every`, the relay also looks for dispatches that never reached Redis: a create
//! writes no outbox row (its API process pushes right after commit), so a process that died in
//! between, or a Redis that lost its data, leaves a queued job with no message. For each queue
//! Redis tells the time of its oldest undelivered message and the jobs whose messages workers
//! hold (`Queue::horizon`); queued jobs due well before that time and not held get an outbox row
//! (`outbox::owe_undelivered`), which the next tick pushes.

use std::time::Duration;

use nimbus_db::{DbError, PgPool, outbox};
use nimbus_domain::JobId;
use nimbus_jobs::{DispatchError, Queues};
use tokio_util::sync::CancellationToken;

/// The most held messages the sweep asks Redis about; with more held at once, it waits.
const MAX_HELD: usize = 10_000;

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
    /// How often to sweep for dispatches lost between commit and push.
    pub sweep_every: Duration,
    /// How long before a queue's oldest undelivered message a queued job must have been due for
    /// the sweep to call its dispatch lost: covers pushes still in flight and the clock difference
    /// between Postgres and Redis (a margin too small costs duplicate pushes, never a job).
    pub sweep_margin: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch: 500,
            idle: Duration::from_millis(250),
            push_timeout: Duration::from_secs(3),
            sweep_every: Duration::from_secs(5),
            sweep_margin: Duration::from_secs(5),
        }
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

    /// Owes an outbox row to every queued job whose dispatch never reached Redis (see the module
    /// docs), up to one batch per queue; returns how many. The rows are pushed by [`Relay::tick`].
    pub async fn sweep(&self) -> Result<u64, RelayError> {
        let mut owed = 0;
        for &name in nimbus_jobs::queues::ALL {
            let queue = self.queues.queue(name).await?;
            let horizon = tokio::time::timeout(self.config.push_timeout, queue.horizon(MAX_HELD))
                .await
                .map_err(|_| RelayError::Timeout)?
                .map_err(DispatchError::from)?;
            if horizon.held.len() >= MAX_HELD {
                // Not every held message is known: calling a job lost now could be wrong often.
                continue;
            }
            let held: Vec<JobId> = horizon.held.iter().filter_map(|id| id.parse().ok()).collect();
            let margin = chrono::Duration::from_std(self.config.sweep_margin).unwrap_or(chrono::Duration::MAX);
            let Some(settled_before) = i64::try_from(horizon.since_ms)
                .ok()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .and_then(|t| t.checked_sub_signed(margin))
            else {
                continue;
            };
            let n = outbox::owe_undelivered(&self.db, name, settled_before, &held, self.config.batch).await?;
            if n > 0 {
                tracing::warn!(queue = name, jobs = n, "queued jobs had no message in Redis; dispatching them again");
            }
            owed += n;
        }
        Ok(owed)
    }

    /// Ticks until `shutdown`: straight on while batches come full, after `idle` otherwise,
    /// backing off (up to 5 s) while Postgres or Redis fail; sweeps every `sweep_every`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures = 0u32;
        let mut next_sweep = tokio::time::Instant::now() + self.config.sweep_every;
        loop {
            if tokio::time::Instant::now() >= next_sweep {
                next_sweep = tokio::time::Instant::now() + self.config.sweep_every;
                if let Err(e) = self.sweep().await {
                    tracing::debug!(error = %e, "sweep for lost dispatches failed; the next one tries again");
                }
            }
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
