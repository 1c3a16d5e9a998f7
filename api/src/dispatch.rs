//! The fast path from an accepted job to Redis (DESIGN §2): right after the transaction that
//! wrote the job and its outbox row commits, push the job to its nimbus-queue stream and mark the
//! outbox row pushed. Redis being down is not an error for the client: the push is bounded by a
//! timeout, the outbox row stays, and the relay in the workers pushes it later.
//!
//! Marking is off the request path: pushed rows' ids go to one task per process that marks
//! whatever has queued up in one `UPDATE` (under load, many requests share a statement). A row
//! not yet marked when the process dies, or when a relay looks first, is pushed twice, which the
//! ledger's claim makes harmless.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use nimbus_db::{PgPool, outbox};
use nimbus_domain::JobId;
use nimbus_jobs::{JobEventPublisher, JobWakeups};
use nimbus_queue::Queue;
use serde_json::Value;
use tokio::sync::{RwLock, mpsc};

/// Pushes jobs to Redis, one lazily connected [`Queue`] per queue name.
pub struct Dispatcher {
    client: redis::Client,
    key_prefix: String,
    timeout: Duration,
    queues: RwLock<HashMap<String, Queue>>,
    /// Ids of pushed outbox rows for the marking task (started by the first push).
    pushed: OnceLock<mpsc::UnboundedSender<i64>>,
    /// "Job X changed" for the streams of every API process.
    publisher: JobEventPublisher,
    /// This process's subscription to those messages (started by the first stream).
    wakeups: OnceLock<JobWakeups>,
}

/// Marks pushed outbox rows, as many per statement as have queued up since the last one.
async fn mark_pushed_rows(db: PgPool, mut ids: mpsc::UnboundedReceiver<i64>) {
    let mut batch = Vec::with_capacity(MARK_BATCH);
    while ids.recv_many(&mut batch, MARK_BATCH).await > 0 {
        if let Err(e) = outbox::mark_pushed(&db, &batch).await {
            tracing::warn!(rows = batch.len(), error = %e, "pushed but not marked; the relay will push again");
        }
        batch.clear();
    }
}

/// The most outbox rows one marking statement takes.
const MARK_BATCH: usize = 1000;

impl Dispatcher {
    /// How long a push (including connecting) may take before the outbox is left to the relay.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

    /// A dispatcher for the Redis at `url` (nothing connects until the first push), with every
    /// key under `key_prefix` (`nimbus:` in production).
    pub fn new(url: &str, key_prefix: impl Into<String>, timeout: Duration) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let key_prefix = key_prefix.into();
        Ok(Dispatcher {
            publisher: JobEventPublisher::new(client.clone(), &key_prefix),
            wakeups: OnceLock::new(),
            client,
            key_prefix,
            timeout,
            queues: RwLock::new(HashMap::new()),
            pushed: OnceLock::new(),
        })
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// Publishes "job X changed" to the job event streams of every API process.
    pub fn publisher(&self) -> &JobEventPublisher {
        &self.publisher
    }

    /// The wake-ups of this process's job event streams (subscribes on first use).
    pub fn wakeups(&self) -> &JobWakeups {
        self.wakeups.get_or_init(|| JobWakeups::start(self.client.clone(), &self.key_prefix, Duration::from_secs(1)))
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

    /// Pushes `job` on `queue` with the outbox's `payload`, then has outbox row `outbox_id`
    /// marked pushed (shortly after, by the marking task). Returns whether the push happened;
    /// failures are logged, never returned: the row stays for the relay.
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
        let marker = self.pushed.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(mark_pushed_rows(db.clone(), rx));
            tx
        });
        // The task lives as long as the runtime; after that nothing is served anyway.
        let _ = marker.send(outbox_id);
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
