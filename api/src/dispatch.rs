//! The fast path from an accepted job to Redis (DESIGN §2): right after the statement that wrote
//! the job commits, push the job to its nimbus-queue stream. Redis being down is not an error for
//! the client: the push is bounded by a timeout, and the dispatch is left to the relay in the
//! workers: through the job's outbox row when it has one (admin retries), otherwise through a
//! row written on the spot (`outbox::owe`, for creates, which write none up front).
//!
//! Marking an outbox row pushed is off the request path: pushed rows' ids go to one task per
//! process that marks whatever has queued up in one `UPDATE`. A row not yet marked when the
//! process dies, or when a relay looks first, is pushed twice, which the ledger's claim makes
//! harmless. A process that dies between a create's commit and its push leaves no row at all;
//! the relay's sweep finds that job by comparing the ledger with Redis.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use nimbus_db::jobs::Enqueued;
use nimbus_db::{PgPool, outbox};
use nimbus_domain::JobId;
use nimbus_jobs::{EventPublisher, FeedWakeups, InstanceWakeups, JobWakeups};
use nimbus_queue::Queue;
use tokio::sync::{RwLock, mpsc};

/// Pushes jobs to Redis, one lazily connected [`Queue`] per queue name.
pub struct Dispatcher {
    client: redis::Client,
    key_prefix: String,
    timeout: Duration,
    queues: RwLock<HashMap<String, Queue>>,
    /// Ids of pushed outbox rows for the marking task (started by the first push).
    pushed: OnceLock<mpsc::UnboundedSender<i64>>,
    /// "Job X (instance Y) changed" for the streams of every API process.
    publisher: EventPublisher,
    /// This process's subscriptions to those messages (each started by its first stream).
    wakeups: OnceLock<JobWakeups>,
    instance_wakeups: OnceLock<InstanceWakeups>,
    feed_wakeups: OnceLock<FeedWakeups>,
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
            publisher: EventPublisher::new(client.clone(), &key_prefix),
            wakeups: OnceLock::new(),
            instance_wakeups: OnceLock::new(),
            feed_wakeups: OnceLock::new(),
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

    /// Publishes "job X changed" and "instance Y changed" to the streams of every API process.
    pub fn publisher(&self) -> &EventPublisher {
        &self.publisher
    }

    /// The wake-ups of this process's job event streams (subscribes on first use).
    pub fn wakeups(&self) -> &JobWakeups {
        self.wakeups.get_or_init(|| JobWakeups::start(self.client.clone(), &self.key_prefix, Duration::from_secs(1)))
    }

    /// The wake-ups of this process's instance event streams (subscribes on first use).
    pub fn instance_wakeups(&self) -> &InstanceWakeups {
        self.instance_wakeups
            .get_or_init(|| InstanceWakeups::start(self.client.clone(), &self.key_prefix, Duration::from_secs(1)))
    }

    /// The wake-ups of this process's unread-count streams (subscribes on first use).
    pub fn feed_wakeups(&self) -> &FeedWakeups {
        self.feed_wakeups
            .get_or_init(|| FeedWakeups::start(self.client.clone(), &self.key_prefix, Duration::from_secs(1)))
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

    /// Pushes `enqueued`'s job, then has its outbox row marked pushed (shortly after, by the
    /// marking task). A job without an outbox row (a create) goes through [`Self::push_created`].
    /// Returns whether the push happened; failures are logged, never returned: the dispatch is
    /// left to the relay.
    pub async fn push(&self, db: &PgPool, enqueued: &Enqueued) -> bool {
        let Some(outbox_id) = enqueued.outbox_id else {
            return self.push_created(db, &[enqueued]).await == 1;
        };
        let (job, queue) = (enqueued.job.id, enqueued.job.queue.as_str());
        let pushed = tokio::time::timeout(self.timeout, async {
            let q = self.queue(queue).await?;
            q.push(&job.to_string(), &enqueued.dispatch).await.map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|_| Err("timed out".to_owned()));
        if let Err(e) = pushed {
            tracing::warn!(job.id = %job, queue, error = %e, "push to Redis failed; the outbox relay will push it");
            return false;
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

    /// Pushes jobs that have no outbox row (creates), one pipelined round trip per queue. A queue
    /// whose push fails gets its jobs an outbox row each, for the relay. Returns how many were
    /// pushed.
    pub async fn push_created(&self, db: &PgPool, jobs: &[&Enqueued]) -> usize {
        let mut by_queue: HashMap<&str, Vec<&Enqueued>> = HashMap::new();
        for job in jobs {
            by_queue.entry(job.job.queue.as_str()).or_default().push(job);
        }
        let mut pushed = 0;
        for (name, jobs) in by_queue {
            let attempt = tokio::time::timeout(self.timeout, async {
                let messages = jobs
                    .iter()
                    .map(|j| nimbus_queue::NewJob::new(j.job.id.to_string(), &j.dispatch))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                self.queue(name).await?.push_jobs(messages).await.map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|_| Err("timed out".to_owned()));
            if let Err(e) = attempt {
                tracing::warn!(queue = name, jobs = jobs.len(), error = %e, "push to Redis failed; the outbox relay will push them");
                let ids: Vec<JobId> = jobs.iter().map(|j| j.job.id).collect();
                if let Err(e) = outbox::owe(db, &ids).await {
                    // The relay's sweep still finds them, only later.
                    tracing::warn!(jobs = ids.len(), error = %e, "could not write the outbox rows for a failed push");
                }
                continue;
            }
            pushed += jobs.len();
        }
        pushed
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
