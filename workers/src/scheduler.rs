//! The scheduler (DESIGN §9): every worker replica ticks; Postgres decides who fires. A tick
//! takes the due schedules in batches, each batch one transaction: lock them (`SKIP LOCKED`, so
//! replicas split the work instead of waiting), decide each one's fires by its cron expression
//! and missed-fire policy (`nimbus_jobs::schedule`), and write the fires, their jobs and the next
//! fire times (`nimbus_db::schedules::fire`). A fire is unique per schedule and time, so even two
//! replicas deciding on the same schedule start one job. After each commit the tick pushes the
//! batch's jobs to Redis (one pipelined round trip per queue); a push that fails becomes outbox
//! rows for the relay, and one lost with the process is found by the relay's sweep.
//!
//! Time comes from the injected [`Clock`], so tests cross hours and months without waiting.

use crate::metrics::WorkerMetrics;
use std::sync::Arc;
use std::time::Duration;

use nimbus_db::PgPool;
use nimbus_db::outbox;
use nimbus_db::schedules::{self, Decision};
use nimbus_jobs::schedule::{CronSpec, plan};
use nimbus_jobs::{Clock, Queues};
use tokio_util::sync::CancellationToken;

/// Schedules decided per transaction.
pub const BATCH: i64 = 1000;

/// What one tick did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Due schedules decided on.
    pub schedules: usize,
    /// Jobs started.
    pub started: usize,
    /// Fires another replica had already written.
    pub duplicates: usize,
    /// Fires that started no job because the instance was busy.
    pub busy: usize,
}

/// Fires everything due at the clock's time, [`BATCH`] schedules per transaction, and pushes the
/// jobs on `queues`.
pub async fn tick(db: &PgPool, queues: &Queues, clock: &dyn Clock) -> Result<Tick, nimbus_db::DbError> {
    tick_in_batches(db, queues, clock, BATCH).await
}

/// [`tick`] with `batch` schedules per transaction.
pub async fn tick_in_batches(
    db: &PgPool,
    queues: &Queues,
    clock: &dyn Clock,
    batch: i64,
) -> Result<Tick, nimbus_db::DbError> {
    let now = clock.now();
    let mut total = Tick::default();
    let mut after = None;
    loop {
        let mut tx = db.begin().await?;
        let due = schedules::due(&mut tx, now, after, batch).await?;
        after = due.last().map(|s| (s.next_fire_at, s.id));
        let decisions: Vec<Decision> = due
            .iter()
            .map(|s| {
                let planned = CronSpec::parse(&s.cron).ok().and_then(|spec| plan(&spec, s.next_fire_at, now, s.policy));
                match planned {
                    Some(p) => Decision { schedule: s.id, fires: p.fires, next: Some(p.next) },
                    None => {
                        tracing::warn!(schedule.id = %s.id, cron = %s.cron, "schedule fires no more; paused");
                        Decision { schedule: s.id, fires: Vec::new(), next: None }
                    }
                }
            })
            .collect();
        let fired = schedules::fire(&mut tx, &decisions).await?;
        tx.commit().await.map_err(nimbus_db::DbError::from)?;
        push(db, queues, &fired.jobs).await;
        total.schedules += due.len();
        total.started += fired.jobs.len();
        total.duplicates += fired.duplicates;
        total.busy += fired.busy;
        if (due.len() as i64) < batch {
            break;
        }
    }
    if total.schedules > 0 {
        tracing::info!(schedules = total.schedules, started = total.started, busy = total.busy, "schedules fired");
    }
    Ok(total)
}

/// Pushes started jobs; owes outbox rows for those whose push failed.
async fn push(db: &PgPool, queues: &Queues, started: &[schedules::Started]) {
    if started.is_empty() {
        return;
    }
    let messages = started.iter().map(|s| (s.job, s.queue.as_str(), &s.dispatch));
    if let Err(e) = queues.push_all(messages).await {
        tracing::warn!(jobs = started.len(), error = %e, "push of scheduled jobs failed; the outbox relay will push them");
        let ids: Vec<_> = started.iter().map(|s| s.job).collect();
        if let Err(e) = outbox::owe(db, &ids).await {
            // The relay's sweep still finds them, only later.
            tracing::warn!(jobs = ids.len(), error = %e, "could not write the outbox rows for a failed push");
        }
    }
}

/// Ticks every `every` until `shutdown`.
pub async fn run(
    db: PgPool,
    queues: Queues,
    clock: Arc<dyn Clock>,
    every: Duration,
    shutdown: CancellationToken,
    metrics: Arc<WorkerMetrics>,
) {
    run_in_batches(db, queues, clock, every, BATCH, shutdown, metrics).await
}

/// [`run`] with `batch` schedules per transaction.
pub async fn run_in_batches(
    db: PgPool,
    queues: Queues,
    clock: Arc<dyn Clock>,
    every: Duration,
    batch: i64,
    shutdown: CancellationToken,
    metrics: Arc<WorkerMetrics>,
) {
    loop {
        match tick_in_batches(&db, &queues, clock.as_ref(), batch).await {
            Ok(tick) => metrics.schedules_fired(tick.started),
            Err(e) => tracing::warn!(error = %e, "scheduler tick failed; the next one retries"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
