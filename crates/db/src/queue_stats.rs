//! Queue health read from the job ledger, for the operator's queue dashboard: per queue the
//! jobs waiting, running, failed and dead, and what finished over the last hour.

use std::collections::BTreeMap;

use nimbus_domain::{QueueStats, TenantId};
use sqlx::{PgExecutor, Row};

use crate::Result;

/// Width of one throughput slot.
pub const SLOT_SECS: i64 = 300;
/// Slots in the hour the dashboard shows.
pub const SLOTS: usize = 12;

/// Every queue with jobs (of `tenant`, or of every tenant), by name.
///
/// `dead` counts failed jobs that used up their attempts (what nimbus-queue moved to its dead
/// stream), as opposed to those failed at once by a permanent error.
pub async fn summary(ex: impl PgExecutor<'_> + Copy, tenant: Option<TenantId>) -> Result<Vec<QueueStats>> {
    let rows = sqlx::query(
        "select queue, \
           count(*) filter (where status = 'queued') as depth, \
           count(*) filter (where status = 'queued' and attempts > 0) as retrying, \
           count(*) filter (where status = 'running') as running, \
           count(*) filter (where status = 'failed') as failed, \
           count(*) filter (where status = 'failed' and attempts >= max_attempts) as dead, \
           count(*) filter (where status in ('succeeded', 'failed') and finished_at > now() - interval '1 hour') \
             as finished_last_hour, \
           count(*) filter (where status = 'failed' and finished_at > now() - interval '1 hour') as failed_last_hour \
         from jobs where ($1::uuid is null or tenant_id = $1) group by queue order by queue",
    )
    .bind(tenant.map(|t| t.as_uuid()))
    .fetch_all(ex)
    .await?;
    let mut stats = BTreeMap::new();
    for r in &rows {
        let queue: String = r.try_get("queue")?;
        stats.insert(
            queue.clone(),
            QueueStats {
                queue,
                depth: r.try_get("depth")?,
                retrying: r.try_get("retrying")?,
                running: r.try_get("running")?,
                failed: r.try_get("failed")?,
                dead: r.try_get("dead")?,
                finished_last_hour: r.try_get("finished_last_hour")?,
                failed_last_hour: r.try_get("failed_last_hour")?,
                throughput: vec![0; SLOTS],
            },
        );
    }
    // Slot 0 is the newest 5 minutes; the vector runs oldest first.
    let slots = sqlx::query(
        "select queue, least(floor(extract(epoch from now() - finished_at) / $2)::int, $3 - 1) as slot, \
           count(*) as n \
         from jobs where ($1::uuid is null or tenant_id = $1) and status in ('succeeded', 'failed') \
           and finished_at > now() - interval '1 hour' \
         group by 1, 2",
    )
    .bind(tenant.map(|t| t.as_uuid()))
    .bind(SLOT_SECS as f64)
    .bind(SLOTS as i32)
    .fetch_all(ex)
    .await?;
    for r in &slots {
        let queue: String = r.try_get("queue")?;
        let slot: i32 = r.try_get("slot")?;
        let n: i64 = r.try_get("n")?;
        if let Some(s) = stats.get_mut(&queue) {
            let age = (slot.max(0) as usize).min(SLOTS - 1);
            s.throughput[SLOTS - 1 - age] += n;
        }
    }
    Ok(stats.into_values().collect())
}
