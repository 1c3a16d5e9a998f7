//! Lease recovery: running jobs whose worker died (or hung) stop renewing their lease; a
//! periodic tick puts them back in the queue (the ledger writes their outbox rows, which the
//! relay pushes) or fails them when that was their last attempt. A provision job failed this way
//! also fails its instance, releasing its quota.

use std::time::Duration;

use nimbus_db::jobs::{self, Recovered};
use nimbus_db::{DbError, PgPool, instances};
use nimbus_domain::{InstanceStatus, JobKind};
use tokio_util::sync::CancellationToken;

/// One recovery pass.
pub async fn tick(db: &PgPool) -> Result<Recovered, DbError> {
    let recovered = jobs::recover_expired_leases(db).await?;
    for id in &recovered.failed {
        let job = jobs::get(db, *id).await?;
        if job.kind == JobKind::Provision
            && let Some(instance) = job.instance()
        {
            instances::set_status(db, instance, InstanceStatus::Failed).await?;
        }
    }
    if !recovered.requeued.is_empty() || !recovered.failed.is_empty() {
        tracing::info!(
            requeued = recovered.requeued.len(),
            failed = recovered.failed.len(),
            "expired leases recovered"
        );
    }
    Ok(recovered)
}

/// Runs [`tick`] every `every` until `shutdown`.
pub async fn run(db: PgPool, every: Duration, shutdown: CancellationToken) {
    loop {
        if let Err(e) = tick(&db).await {
            tracing::warn!(error = %e, "lease recovery failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
