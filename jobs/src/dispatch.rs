//! The enqueue path's last leg: pushing [`Dispatch`] messages to nimbus-queue streams. The
//! message id is the ledger job id, so every consumer sees the job under its ledger id.
//!
//! Callers own the outbox bookkeeping: push, then `outbox::mark_pushed`. A push that fails
//! leaves the row for the relay; a push repeated after a crash is harmless because workers
//! claim through the ledger.

use std::collections::HashMap;
use std::sync::Arc;

use nimbus_db::outbox::OutboxEntry;
use nimbus_domain::JobId;
use nimbus_queue::{NewJob, Queue};
use tokio::sync::RwLock;

use crate::payload::Dispatch;
use crate::queues;

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// Redis refused or could not be reached.
    #[error(transparent)]
    Queue(#[from] nimbus_queue::Error),
    /// Bad Redis URL.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Pushes `message` on `queue` under its job id.
pub async fn dispatch(queue: &Queue, message: &Dispatch) -> Result<(), DispatchError> {
    Ok(queue.push(&message.job_id.to_string(), message).await?)
}

/// Lazily connected queue handles by name, sharing one Redis client and key prefix. A queue
/// whose connection failed is not remembered, so the next push tries again.
#[derive(Clone)]
pub struct Queues {
    client: redis::Client,
    key_prefix: String,
    queues: Arc<RwLock<HashMap<String, Queue>>>,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues").field("key_prefix", &self.key_prefix).finish()
    }
}

impl Queues {
    /// Queues on the Redis at `url` (nothing connects until the first use) under `key_prefix`.
    pub fn new(url: &str, key_prefix: impl Into<String>) -> Result<Self, DispatchError> {
        Ok(Self::with_client(redis::Client::open(url)?, key_prefix))
    }

    /// Queues over an existing client.
    pub fn with_client(client: redis::Client, key_prefix: impl Into<String>) -> Self {
        Queues { client, key_prefix: key_prefix.into(), queues: Arc::default() }
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// The Redis client.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The handle of queue `name`, connecting it on first use with [`queues::config`].
    pub async fn queue(&self, name: &str) -> Result<Queue, DispatchError> {
        if let Some(q) = self.queues.read().await.get(name) {
            return Ok(q.clone());
        }
        // Connect outside the lock: an unreachable Redis must not serialise every caller.
        let queue = Queue::new(self.client.clone(), queues::config(name, &self.key_prefix)).await?;
        Ok(self.queues.write().await.entry(name.to_owned()).or_insert(queue).clone())
    }

    /// Pushes `message` on its queue.
    pub async fn push(&self, message: &Dispatch) -> Result<(), DispatchError> {
        dispatch(&self.queue(&message.queue).await?, message).await
    }

    /// Pushes outbox rows, one pipelined round trip per queue, each with its stored payload
    /// (the `{"jobId", "kind", "queue"}` message) under its job id. On error mark nothing:
    /// queues pushed before the failure are pushed again later, which the ledger makes harmless.
    pub async fn push_outbox(&self, entries: &[OutboxEntry]) -> Result<(), DispatchError> {
        self.push_all(entries.iter().map(|e| (e.job_id, e.queue.as_str(), &e.payload))).await
    }

    /// Pushes `(job, queue, message)`s, one pipelined round trip per queue.
    pub async fn push_all<'a>(
        &self,
        messages: impl IntoIterator<Item = (JobId, &'a str, &'a serde_json::Value)>,
    ) -> Result<(), DispatchError> {
        let mut by_queue: HashMap<&str, Vec<NewJob>> = HashMap::new();
        for (job, queue, payload) in messages {
            let job = NewJob::new(job.to_string(), payload).map_err(DispatchError::Queue)?;
            by_queue.entry(queue).or_default().push(job);
        }
        for (name, jobs) in by_queue {
            self.queue(name).await?.push_jobs(jobs).await?;
        }
        Ok(())
    }
}
