//! Wake-ups for the streams that follow jobs (`GET /v1/jobs/{id}/events`).
//!
//! Whoever changes a job's ledger row (a worker recording a step, settling an attempt, an admin
//! retrying) publishes the job's id on one Redis channel after the change has committed; every
//! API process subscribes to that channel and wakes the streams following that job, which then
//! read the new events from the ledger. The ledger stays the only source of truth: a message lost
//! (Redis down, a reconnect) only delays a stream until its fallback poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use nimbus_domain::JobId;
use redis::aio::ConnectionManager;
use tokio::sync::{Notify, OnceCell};

/// The channel under `key_prefix`.
pub fn channel(key_prefix: &str) -> String {
    format!("{key_prefix}job-events")
}

/// The most a publish may take: a worker never waits on a wake-up for long.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(250);

/// Publishes "job X changed" (cheap to clone; connects on first use, reconnects by itself).
#[derive(Clone)]
pub struct JobEventPublisher {
    client: redis::Client,
    channel: Arc<str>,
    conn: Arc<OnceCell<ConnectionManager>>,
}

impl std::fmt::Debug for JobEventPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobEventPublisher").field("channel", &self.channel).finish_non_exhaustive()
    }
}

impl JobEventPublisher {
    /// A publisher on the Redis of `client`, keys under `key_prefix`.
    pub fn new(client: redis::Client, key_prefix: &str) -> Self {
        JobEventPublisher { client, channel: channel(key_prefix).into(), conn: Arc::new(OnceCell::new()) }
    }

    /// Tells the followers of `job` to look at the ledger. Failures are logged and dropped: the
    /// followers' fallback poll covers them.
    pub async fn publish(&self, job: JobId) {
        let send = async {
            let conn = self.conn.get_or_try_init(|| ConnectionManager::new(self.client.clone())).await?;
            let mut conn = conn.clone();
            redis::cmd("PUBLISH").arg(&*self.channel).arg(job.to_string()).query_async::<i64>(&mut conn).await
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, send).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(job.id = %job, error = %e, "job event wake-up not published"),
            Err(_) => tracing::debug!(job.id = %job, "job event wake-up timed out"),
        }
    }
}

/// The subscriber side: one Redis subscription per process, fanned out to the streams waiting
/// on each job.
#[derive(Clone, Default)]
pub struct JobWakeups {
    waiters: Arc<Mutex<HashMap<JobId, Weak<Notify>>>>,
}

impl JobWakeups {
    /// Subscribes to the channel under `key_prefix` for as long as the runtime lives,
    /// reconnecting after `retry` when Redis goes away.
    pub fn start(client: redis::Client, key_prefix: &str, retry: Duration) -> Self {
        let wakeups = JobWakeups::default();
        let channel = channel(key_prefix);
        let fan_out = wakeups.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = fan_out.listen(&client, &channel).await {
                    tracing::debug!(error = %e, "job event subscription lost; streams fall back to polling");
                }
                tokio::time::sleep(retry).await;
            }
        });
        wakeups
    }

    async fn listen(&self, client: &redis::Client, channel: &str) -> redis::RedisResult<()> {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let Ok(payload) = message.get_payload::<String>() else { continue };
            if let Ok(job) = payload.parse::<JobId>() {
                self.wake(job);
            }
        }
        Ok(())
    }

    /// Wakes the streams following `job`.
    pub fn wake(&self, job: JobId) {
        let notify = self.waiters.lock().unwrap_or_else(|e| e.into_inner()).get(&job).and_then(Weak::upgrade);
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }

    /// The signal a stream following `job` waits on; shared by all of that job's streams and
    /// forgotten once none holds it.
    pub fn follow(&self, job: JobId) -> Arc<Notify> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = waiters.get(&job).and_then(Weak::upgrade) {
            return existing;
        }
        // Forget the jobs nobody follows any more before the map grows.
        if waiters.len() >= 1024 && waiters.len().is_power_of_two() {
            waiters.retain(|_, w| w.strong_count() > 0);
        }
        let notify = Arc::new(Notify::new());
        waiters.insert(job, Arc::downgrade(&notify));
        notify
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_reaches_every_follower_of_that_job_only() {
        let wakeups = JobWakeups::default();
        let (a, b) = (JobId::new(), JobId::new());
        let (a1, a2, b1) = (wakeups.follow(a), wakeups.follow(a), wakeups.follow(b));
        assert!(Arc::ptr_eq(&a1, &a2), "followers of one job share a signal");
        let (n1, n2, nb) = (a1.notified(), a2.notified(), b1.notified());
        tokio::pin!(n1, n2, nb);
        n1.as_mut().enable();
        n2.as_mut().enable();
        nb.as_mut().enable();
        wakeups.wake(a);
        tokio::time::timeout(Duration::from_millis(100), &mut n1).await.expect("first follower woken");
        tokio::time::timeout(Duration::from_millis(100), &mut n2).await.expect("second follower woken");
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut nb).await.is_err(), "other job not woken");
    }

    #[tokio::test]
    async fn a_follower_after_all_others_left_still_gets_woken() {
        let wakeups = JobWakeups::default();
        let job = JobId::new();
        drop(wakeups.follow(job));
        wakeups.wake(job); // nobody follows: nothing to wake, nothing kept
        let fresh = wakeups.follow(job);
        let notified = fresh.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        wakeups.wake(job);
        tokio::time::timeout(Duration::from_millis(100), notified).await.expect("the new follower is woken");
    }
}
