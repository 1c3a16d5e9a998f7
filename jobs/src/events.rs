//! Wake-ups for the streams that follow jobs (`GET /v1/jobs/{id}/events`) and instances
//! (`GET /v1/vms/{id}/events`).
//!
//! Whoever changes a job's ledger row (a worker recording a step, settling an attempt, an admin
//! retrying) publishes the job's id on one Redis channel after the change has committed, and the
//! id of the job's instance on another; so does the reconciler when an instance's status follows
//! its guest. Every API process subscribes to the channels and wakes the streams following that
//! job or instance, which then read the new state from Postgres. Postgres stays the only source
//! of truth: a message lost (Redis down, a reconnect) only delays a stream until its fallback
//! poll.

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use nimbus_domain::{InstanceId, JobId, UserId};
use redis::aio::ConnectionManager;
use tokio::sync::{Notify, OnceCell};

/// What streams follow: an id with a channel of its own.
pub trait Topic: Copy + Eq + Hash + Display + FromStr + Send + Sync + 'static {
    /// The channel's name under the key prefix.
    const CHANNEL: &'static str;
}

impl Topic for JobId {
    const CHANNEL: &'static str = "job-events";
}

impl Topic for InstanceId {
    const CHANNEL: &'static str = "instance-events";
}

/// A user's in-app feed changed (the unread count streams follow it).
impl Topic for UserId {
    const CHANNEL: &'static str = "notification-events";
}

/// The channel of `T` under `key_prefix`.
pub fn channel<T: Topic>(key_prefix: &str) -> String {
    format!("{key_prefix}{}", T::CHANNEL)
}

/// The most a publish may take: a worker never waits on a wake-up for long.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(250);

/// Publishes "job X changed" and "instance Y changed" (cheap to clone; connects on first use,
/// reconnects by itself).
#[derive(Clone)]
pub struct EventPublisher {
    client: redis::Client,
    key_prefix: Arc<str>,
    conn: Arc<OnceCell<ConnectionManager>>,
}

/// The publisher's historical name: jobs were its first topic.
pub type JobEventPublisher = EventPublisher;

impl std::fmt::Debug for EventPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPublisher").field("key_prefix", &self.key_prefix).finish_non_exhaustive()
    }
}

impl EventPublisher {
    /// A publisher on the Redis of `client`, keys under `key_prefix`.
    pub fn new(client: redis::Client, key_prefix: &str) -> Self {
        EventPublisher { client, key_prefix: key_prefix.into(), conn: Arc::new(OnceCell::new()) }
    }

    /// Tells the followers of `id` to look again. Failures are logged and dropped: the
    /// followers' fallback poll covers them.
    pub async fn publish<T: Topic>(&self, id: T) {
        self.publish_all(&[(channel::<T>(&self.key_prefix), id.to_string())]).await;
    }

    /// Tells the followers of `job` and, when it acts on one, of its instance (one round trip).
    pub async fn publish_job(&self, job: JobId, instance: Option<InstanceId>) {
        let mut messages = vec![(channel::<JobId>(&self.key_prefix), job.to_string())];
        if let Some(instance) = instance {
            messages.push((channel::<InstanceId>(&self.key_prefix), instance.to_string()));
        }
        self.publish_all(&messages).await;
    }

    async fn publish_all(&self, messages: &[(String, String)]) {
        let send = async {
            let conn = self.conn.get_or_try_init(|| ConnectionManager::new(self.client.clone())).await?;
            let mut conn = conn.clone();
            let mut pipe = redis::pipe();
            for (channel, id) in messages {
                pipe.cmd("PUBLISH").arg(channel).arg(id).ignore();
            }
            pipe.query_async::<()>(&mut conn).await
        };
        let about = messages.first().map(|(_, id)| id.as_str()).unwrap_or_default();
        match tokio::time::timeout(PUBLISH_TIMEOUT, send).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(id = about, error = %e, "event wake-up not published"),
            Err(_) => tracing::debug!(id = about, "event wake-up timed out"),
        }
    }
}

/// The subscriber side: one Redis subscription per process and topic, fanned out to the
/// streams waiting on each id.
pub struct Wakeups<T: Topic> {
    waiters: Arc<Mutex<HashMap<T, Weak<Notify>>>>,
}

/// The streams following jobs.
pub type JobWakeups = Wakeups<JobId>;
/// The streams following instances.
pub type InstanceWakeups = Wakeups<InstanceId>;
/// The streams following users' feeds.
pub type FeedWakeups = Wakeups<UserId>;

impl<T: Topic> Clone for Wakeups<T> {
    fn clone(&self) -> Self {
        Wakeups { waiters: self.waiters.clone() }
    }
}

impl<T: Topic> Default for Wakeups<T> {
    fn default() -> Self {
        Wakeups { waiters: Arc::default() }
    }
}

impl<T: Topic> Wakeups<T> {
    /// Subscribes to the channel of `T` under `key_prefix` for as long as the runtime lives,
    /// reconnecting after `retry` when Redis goes away.
    pub fn start(client: redis::Client, key_prefix: &str, retry: Duration) -> Self {
        let wakeups = Wakeups::default();
        let channel = channel::<T>(key_prefix);
        let fan_out = wakeups.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = fan_out.listen(&client, &channel).await {
                    tracing::debug!(error = %e, channel, "event subscription lost; streams fall back to polling");
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
            if let Ok(id) = payload.parse::<T>() {
                self.wake(id);
            }
        }
        Ok(())
    }

    /// Wakes the streams following `id`.
    pub fn wake(&self, id: T) {
        let notify = self.waiters.lock().unwrap_or_else(|e| e.into_inner()).get(&id).and_then(Weak::upgrade);
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }

    /// The signal a stream following `id` waits on; shared by all of that id's streams and
    /// forgotten once none holds it.
    pub fn follow(&self, id: T) -> Arc<Notify> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = waiters.get(&id).and_then(Weak::upgrade) {
            return existing;
        }
        // Forget the ids nobody follows any more before the map grows.
        if waiters.len() >= 1024 && waiters.len().is_power_of_two() {
            waiters.retain(|_, w| w.strong_count() > 0);
        }
        let notify = Arc::new(Notify::new());
        waiters.insert(id, Arc::downgrade(&notify));
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
