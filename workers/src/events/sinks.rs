//! What the consumer groups do with events.
//!
//! * [`WebhookSink`] (group `webhooks`): the deliveries the events owe, one per subscribed
//!   endpoint and event not recorded yet (`nimbus_db::webhooks::owed`), handed to the deliverer
//!   for their first attempt at once; the batch is done when every one of them is recorded.
//! * [`NotificationSink`] (group `notifications`): the in-app feed of each user of the tenant, and
//!   the emails they chose, each email a `notify` job enqueued in the same transaction (the
//!   outbox relay dispatches it); then wakes the users' unread-count streams.

use std::collections::BTreeSet;
use std::sync::Arc;

use nimbus_db::{PgPool, events, jobs, notifications};
use nimbus_domain::events::{EVENT_TYPES, WEBHOOK_TEST, title};
use nimbus_domain::{JobKind, UserId};
use nimbus_jobs::{Clock, EventPublisher, queues};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::consumer::Sink;
use crate::webhook_delivery::FreshBatch;

/// The group that delivers webhooks.
pub const WEBHOOKS: &str = "webhooks";
/// The group that notifies users.
pub const NOTIFICATIONS: &str = "notifications";

/// Attempts a notification email gets (its retries follow the ledger's backoff).
pub const EMAIL_ATTEMPTS: i32 = 8;

/// The `webhooks` group's sink.
pub struct WebhookSink {
    db: PgPool,
    clock: Arc<dyn Clock>,
    hold: chrono::Duration,
    fresh: mpsc::Sender<FreshBatch>,
}

impl WebhookSink {
    /// A sink reading `db` and handing the deliveries events owe, this worker's for `hold` (the
    /// deliverer's lease), to `fresh`.
    pub fn new(db: PgPool, clock: Arc<dyn Clock>, hold: chrono::Duration, fresh: mpsc::Sender<FreshBatch>) -> Self {
        WebhookSink { db, clock, hold, fresh }
    }
}

impl Sink for WebhookSink {
    async fn handle(&self, events: &[Uuid]) -> anyhow::Result<()> {
        let owed = nimbus_db::webhooks::owed(&self.db, events, self.clock.now(), self.hold).await?;
        if owed.is_empty() {
            return Ok(());
        }
        let (batch, recorded) = FreshBatch::new(owed);
        // Waiting here while the deliverer is busy keeps the rest of the stream unread.
        self.fresh.send(batch).await.map_err(|_| anyhow::anyhow!("the deliverer stopped"))?;
        anyhow::ensure!(recorded.wait().await, "not every delivery was recorded");
        Ok(())
    }
}

/// The `notifications` group's sink.
pub struct NotificationSink {
    db: PgPool,
    wakeups: EventPublisher,
    /// Whether email is configured: without it no email is owed.
    email: bool,
}

impl NotificationSink {
    /// A sink writing to `db`, waking feeds through `wakeups`.
    pub fn new(db: PgPool, wakeups: EventPublisher, email: bool) -> Self {
        NotificationSink { db, wakeups, email }
    }
}

impl Sink for NotificationSink {
    async fn handle(&self, ids: &[Uuid]) -> anyhow::Result<()> {
        let found = events::by_ids(&self.db, ids).await?;
        let (ids, titles): (Vec<Uuid>, Vec<String>) = found
            .iter()
            .filter(|e| e.tenant_id.is_some() && e.kind != WEBHOOK_TEST)
            .map(|e| (e.id, title(&e.kind, &e.data)))
            .unzip();
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin().await?;
        let woken: BTreeSet<Uuid> = notifications::add_to_feeds(&mut *tx, &ids, &titles).await?.into_iter().collect();
        if self.email {
            let by_default: Vec<&str> = EVENT_TYPES.iter().filter(|t| t.email_by_default).map(|t| t.name).collect();
            for owed in notifications::owe_emails(&mut *tx, &ids, &by_default).await? {
                let mut job = jobs::NewJob::new(
                    JobKind::Notify,
                    queues::NOTIFY,
                    serde_json::json!({ "eventId": owed.event_id, "userId": owed.user_id }),
                );
                job.max_attempts = EMAIL_ATTEMPTS;
                let enqueued = jobs::enqueue(&mut *tx, Some(owed.tenant_id.into()), &job).await?;
                notifications::set_email_job(&mut *tx, owed.user_id, owed.event_id, enqueued.job.id.as_uuid()).await?;
            }
        }
        tx.commit().await?;
        for user in woken {
            self.wakeups.publish(UserId::from(user)).await;
        }
        Ok(())
    }
}
