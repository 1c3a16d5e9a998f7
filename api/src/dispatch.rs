//! The fast path from an accepted job to Redis (DESIGN §2): right after the transaction that
//! wrote the job and its outbox row commits, push the job to its nimbus-queue stream and mark the
//! outbox row pushed. Redis being down is not an error for the client: the push is bounded by a
//! timeout, the outbox row stays, and the relay in the workers pushes it later.

use std::collections::HashMap;
use std::time::Duration;

use nimbus_db::{PgPool, outbox};
use nimbus_domain::JobId;
use nimbus_queue::Queue;
use serde_json::Value;
use tokio::sync::RwLock;

/// Pushes jobs to Redis, one lazily connected [`Queue`] per queue name.
pub struct Dispatcher {
    client: redis::Client,
    key_prefix: String,
    timeout: Duration,
    queues: RwLock<HashMap<String, Queue>>,
}

impl Dispatcher {
    /// How long a push (including connecting) may take before the outbox is left to the relay.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

    /// A dispatcher for the Redis at `url` (nothing connects until the first push), with every
    /// key under `key_prefix` (`nimbus:` in production).
    pub fn new(url: &str, key_prefix: impl Into<String>, timeout: Duration) -> redis::RedisResult<Self> {
        Ok(Dispatcher {
            client: redis::Client::open(url)?,
            key_prefix: key_prefix.into(),
            timeout,
            queues: RwLock::new(HashMap::new()),
        })
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    async fn queue(&self, name: &str) -> Result<Queue, String> {
        if let Some(q) = self.queues.read().await.get(name) {
            return Ok(q.clone());
        }
        // Connect outside the lock: a hanging Redis must not serialise every request.
        let config = nimbus_jobs::queues::config(name, &self.key_prefix);
        let queue = Queue::new(self.client.clone(), config).await.map_err(|e| e.to_string())?;
        Ok(self.queues.write().await.entry(name.to_owned()).or_insert(queue).clone())
    }

    /// Pushes `job` on `queue` with the outbox's `payload`, then marks outbox row `outbox_id`
    /// pushed. Returns whether the push happened; failures are logged, never returned: the row
    /// stays for the relay, and a push whose marking failed is pushed again by the relay, which
    /// the ledger's claim makes harmless.
    pub async fn push(&self, db: &PgPool, queue: &str, job: JobId, outbox_id: i64, payload: &Value) -> bool {
        let pushed = tokio::time::timeout(self.timeout, async {
            let q = self.queue(queue).await?;
            q.push(&job.to_string(), payload).await.map_err(|e| e.to_string())
        })
        .await;
        match pushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(job.id = %job, queue, error = %e, "push to Redis failed; the outbox relay will push it");
                return false;
            }
            Err(_) => {
                tracing::warn!(job.id = %job, queue, "push to Redis timed out; the outbox relay will push it");
                return false;
            }
        }
        if let Err(e) = outbox::mark_pushed(db, &[outbox_id]).await {
            tracing::warn!(job.id = %job, outbox.id = outbox_id, error = %e, "pushed but not marked; the relay will push again");
        }
        true
    }

    /// `PING` on a fresh connection, bounded by `timeout` (for `/readyz`).
    pub async fn ping(&self, timeout: Duration) -> Result<(), String> {
        let probe = async {
            let mut conn = self.client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
            redis::cmd("PING").query_async::<String>(&mut conn).await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(timeout, probe).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("timed out".into()),
        }
    }
}
