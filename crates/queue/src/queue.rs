//! The queue handle: pushing jobs, counting them, reading the dead stream, and the Redis
//! operations workers build on (read, reclaim, ack, fail, renew, release, promote).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Value};
use serde::Serialize;

use crate::config::QueueConfig;
use crate::entry::{self, DeadJob, Entry};
use crate::error::{Error, Result};
use crate::scripts::Scripts;

/// Milliseconds since the Unix epoch (the score of delayed jobs).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A job to push: a stable id chosen by the caller (the ledger's job id), its JSON payload and
/// optional attempts and due time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// Stable job id; it survives retries and is what handlers see as the task id.
    pub id: String,
    /// JSON text of the payload.
    pub payload: String,
    /// Attempts allowed; the queue default when `None`.
    pub max_attempts: Option<u32>,
    /// Due time in ms since the epoch; the job waits in the delayed set until then.
    pub run_at_ms: Option<u64>,
}

impl NewJob {
    /// A job with `id` and `payload` serialised as JSON.
    pub fn new<T: Serialize>(id: impl Into<String>, payload: &T) -> Result<Self> {
        Ok(Self { id: id.into(), payload: serde_json::to_string(payload)?, max_attempts: None, run_at_ms: None })
    }

    /// Sets the attempts allowed for this job.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// Makes the job due `delay` from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.run_at_ms = Some(now_ms() + delay.as_millis() as u64);
        self
    }
}

/// Whether `e` says the consumer group (or its stream) is missing: Redis lost its data (a restart
/// without its files, `FLUSHALL`) or the stream key was deleted. Matched on the text too because
/// an error raised inside a Lua script carries the code in its message.
pub(crate) fn is_nogroup(e: &Error) -> bool {
    match e {
        Error::Redis(r) => r.code() == Some("NOGROUP") || r.to_string().contains("NOGROUP"),
        _ => false,
    }
}

/// Settings of every Redis connection the queue opens; a restarted Redis must be used again
/// within seconds. redis-rs 0.32's defaults wait 1 s after the first failed reconnect and then
/// `factor` (100) times longer, capped at 60 s plus up to 100 % jitter: a Redis down for more
/// than a second was not retried for 1–2 minutes, and every command meanwhile waited on that
/// reconnect. Here retries come every 1–2 s (backon's floor is 1 s). The timeouts keep a command
/// on a connection to a vanished host from waiting for TCP to give up; the response timeout is
/// longer than the blocking read so `XREADGROUP … BLOCK` never trips it. `block` is the longest
/// a command on these connections blocks in Redis (zero when none does).
pub fn connection_config(block: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(block + Duration::from_secs(2))
        .set_factor(2)
        .set_max_delay(1000)
        // About 15–30 s per reconnect round; a command after a failed round starts another.
        .set_number_of_retries(15)
}

/// Counts for dashboards and autoscaling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// In the stream, not yet delivered to any worker.
    pub waiting: u64,
    /// Delivered to a worker and not yet acknowledged.
    pub inflight: u64,
    /// Delayed jobs and retries waiting for their due time.
    pub delayed: u64,
    /// Jobs in the dead stream.
    pub dead: u64,
}

/// See [`Queue::horizon`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Horizon {
    /// The time of the oldest undelivered message, or now.
    pub since_ms: u64,
    /// The job ids of delivered, unacknowledged messages.
    pub held: Vec<String>,
}

pub(crate) struct Inner {
    pub client: Client,
    pub conn: ConnectionManager,
    pub config: QueueConfig,
    pub stream: String,
    pub delayed: String,
    pub dead: String,
    pub scripts: Scripts,
    group_ready: tokio::sync::OnceCell<()>,
}

/// A handle on one queue; cheap to clone, shared by producers and workers.
#[derive(Clone)]
pub struct Queue {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("stream", &self.inner.stream).finish()
    }
}

impl Queue {
    /// Connects to Redis at `url` (e.g. `redis://127.0.0.1:6379`).
    pub async fn connect(url: &str, config: QueueConfig) -> Result<Self> {
        Self::new(Client::open(url)?, config).await
    }

    /// A queue over `client`; opens one shared multiplexed connection for commands (workers open
    /// their own for blocking reads).
    pub async fn new(client: Client, config: QueueConfig) -> Result<Self> {
        let conn = client.get_connection_manager_with_config(connection_config(config.block)).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                stream: config.stream_key(),
                delayed: config.delayed_key(),
                dead: config.dead_key(),
                client,
                conn,
                config,
                scripts: Scripts::new(),
                group_ready: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// The queue's settings.
    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    /// The Redis client (workers open dedicated connections from it).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// Creates the stream and its consumer group if missing (once per handle; a group lost later
    /// is recreated by [`Queue::heal`]). The group starts at id 0 so jobs pushed before any worker
    /// existed are delivered.
    pub async fn ensure_group(&self) -> Result<()> {
        self.inner.group_ready.get_or_try_init(|| self.create_group()).await?;
        Ok(())
    }

    async fn create_group(&self) -> Result<()> {
        let res: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.inner.stream)
            .arg(&self.inner.config.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn())
            .await;
        match res {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other.map_err(Error::from),
        }
    }

    /// Recreates the consumer group when `e` says it is gone, so the caller's retry succeeds;
    /// returns whether it did. Id 0: the jobs pushed since the wipe (the relay re-pushes the
    /// ledger's) are all delivered.
    pub(crate) async fn heal(&self, e: &Error) -> bool {
        if !is_nogroup(e) {
            return false;
        }
        match self.create_group().await {
            Ok(()) => {
                tracing::warn!(queue = %self.inner.config.name, "consumer group was missing (Redis lost its data?); recreated");
                true
            }
            Err(err) => {
                tracing::warn!(queue = %self.inner.config.name, error = %err, "recreating the consumer group failed");
                false
            }
        }
    }

    /// Runs `op`, and once more after recreating the group if it failed for want of it.
    async fn healing<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        match op().await {
            Err(e) if self.heal(&e).await => op().await,
            other => other,
        }
    }

    /// Pushes one job.
    pub async fn push<T: Serialize>(&self, job_id: &str, payload: &T) -> Result<()> {
        self.push_jobs(vec![NewJob::new(job_id, payload)?]).await
    }

    /// Pushes jobs in one pipelined round trip: `XADD` for due jobs, `ZADD` to the delayed set
    /// for jobs with a future due time.
    pub async fn push_jobs(&self, jobs: Vec<NewJob>) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        self.ensure_group().await?;
        let default_max = self.inner.config.default_max_attempts;
        let now = now_ms();
        let mut pipe = redis::pipe();
        for job in &jobs {
            let max = job.max_attempts.unwrap_or(default_max);
            match job.run_at_ms {
                Some(at) if at > now => {
                    let member = serde_json::to_string(&(&job.id, &job.payload, 0u32, max))?;
                    pipe.cmd("ZADD").arg(&self.inner.delayed).arg(at).arg(member).ignore();
                }
                _ => {
                    pipe.cmd("XADD")
                        .arg(&self.inner.stream)
                        .arg("*")
                        .arg("j")
                        .arg(&job.id)
                        .arg("p")
                        .arg(&job.payload)
                        .arg("a")
                        .arg(0)
                        .arg("m")
                        .arg(max)
                        .ignore();
                }
            }
        }
        pipe.query_async::<()>(&mut self.conn()).await?;
        Ok(())
    }

    /// Waiting, in-flight, delayed and dead counts (four O(1) commands, one round trip).
    pub async fn stats(&self) -> Result<QueueStats> {
        self.ensure_group().await?;
        self.healing(|| self.stats_once()).await
    }

    async fn stats_once(&self) -> Result<QueueStats> {
        let (len, pending, delayed, dead): (u64, Value, u64, u64) = redis::pipe()
            .cmd("XLEN")
            .arg(&self.inner.stream)
            .cmd("XPENDING")
            .arg(&self.inner.stream)
            .arg(&self.inner.config.group)
            .cmd("ZCARD")
            .arg(&self.inner.delayed)
            .cmd("XLEN")
            .arg(&self.inner.dead)
            .query_async(&mut self.conn())
            .await?;
        let inflight = match &pending {
            Value::Array(parts) => match parts.first() {
                Some(Value::Int(n)) => *n as u64,
                _ => 0,
            },
            _ => 0,
        };
        // Acknowledged entries are deleted, so the stream holds exactly waiting + in-flight.
        Ok(QueueStats { waiting: len.saturating_sub(inflight), inflight, delayed, dead })
    }

    /// What Redis still holds of this queue's messages, for the outbox sweep: `since_ms`, the time
    /// (ms since the epoch, Redis's clock) of the oldest message not yet delivered to a worker, or
    /// Redis's current time when every message has been delivered; and `held`, the job ids of the
    /// messages delivered but not yet acknowledged (a worker has them buffered or running; a dead
    /// worker's are taken over by a peer). A job queued in the ledger since before `since_ms` and
    /// not `held` has no message left in Redis.
    pub async fn horizon(&self, max_held: usize) -> Result<Horizon> {
        let (since_ms, held): (u64, Vec<String>) = self
            .inner
            .scripts
            .horizon
            .key(&self.inner.stream)
            .arg(&self.inner.config.group)
            .arg(max_held.max(1))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(Horizon { since_ms, held })
    }

    /// The newest `count` dead jobs, newest first.
    pub async fn dead_jobs(&self, count: usize) -> Result<Vec<DeadJob>> {
        let v: Value = redis::cmd("XREVRANGE")
            .arg(&self.inner.dead)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.conn())
            .await?;
        entry::parse_dead(&v)
    }

    /// Deletes every key of this queue (benchmarks and tests; not for production data).
    pub async fn purge(&self) -> Result<()> {
        redis::cmd("DEL")
            .arg(&self.inner.stream)
            .arg(&self.inner.delayed)
            .arg(&self.inner.dead)
            .query_async::<()>(&mut self.conn())
            .await?;
        Ok(())
    }

    /// `XREADGROUP … COUNT count BLOCK ms` on the caller's dedicated connection.
    pub(crate) async fn read(&self, conn: &mut ConnectionManager, consumer: &str, count: usize) -> Result<Vec<Entry>> {
        let c = &self.inner.config;
        let v: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&c.group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count.max(1))
            .arg("BLOCK")
            .arg(c.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.inner.stream)
            .arg(">")
            .query_async(conn)
            .await?;
        entry::parse_read(&v)
    }

    /// Takes over up to `count` abandoned entries for `consumer`, continuing the scan at `cursor`.
    pub(crate) async fn reclaim(
        &self,
        consumer: &str,
        cursor: &str,
        count: usize,
    ) -> Result<(String, Vec<Entry>, u64)> {
        let c = &self.inner.config;
        let v: Value = self
            .inner
            .scripts
            .reclaim
            .key(&self.inner.stream)
            .key(&self.inner.dead)
            .arg(&c.group)
            .arg(consumer)
            .arg(c.claim_min_idle.as_millis() as u64)
            .arg(cursor)
            .arg(count.max(1))
            .arg(now_ms())
            .arg(c.dead_max_len)
            .invoke_async(&mut self.conn())
            .await?;
        entry::parse_reclaim(&v)
    }

    /// Acknowledges and deletes finished entries, atomically (`MULTI XACK XDEL EXEC`).
    pub(crate) async fn ack(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&self.inner.stream)
            .arg(&self.inner.config.group)
            .arg(ids)
            .ignore()
            .cmd("XDEL")
            .arg(&self.inner.stream)
            .arg(ids)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Ends a failed attempt: schedules the retry at `retry_at_ms`, or dead-letters the job when
    /// `retry_at_ms` is `None` or its attempts are spent. Returns 0 (already gone), 1 or 2.
    pub(crate) async fn fail(&self, entry_id: &str, spent: u32, retry_at_ms: Option<u64>, error: &str) -> Result<i64> {
        let retry_at = retry_at_ms.map(|t| t.to_string()).unwrap_or_else(|| "-1".to_owned());
        Ok(self
            .inner
            .scripts
            .fail
            .key(&self.inner.stream)
            .key(&self.inner.delayed)
            .key(&self.inner.dead)
            .arg(&self.inner.config.group)
            .arg(entry_id)
            .arg(spent)
            .arg(retry_at)
            .arg(error)
            .arg(now_ms())
            .arg(self.inner.config.dead_max_len)
            .invoke_async(&mut self.conn())
            .await?)
    }

    /// Renews `consumer`'s claim on `ids` it still owns.
    pub(crate) async fn renew(&self, consumer: &str, ids: &[String]) -> Result<i64> {
        Ok(self
            .inner
            .scripts
            .renew
            .key(&self.inner.stream)
            .arg(&self.inner.config.group)
            .arg(consumer)
            .arg(ids)
            .invoke_async(&mut self.conn())
            .await?)
    }

    /// Gives fetched-but-unstarted entries back to the group.
    pub(crate) async fn release(&self, ids: &[String]) -> Result<i64> {
        if ids.is_empty() {
            return Ok(0);
        }
        Ok(self
            .inner
            .scripts
            .release
            .key(&self.inner.stream)
            .arg(&self.inner.config.group)
            .arg(ids)
            .invoke_async(&mut self.conn())
            .await?)
    }

    /// Moves due delayed jobs into the stream until none is due; returns how many moved.
    pub async fn promote_due(&self) -> Result<u64> {
        let batch = self.inner.config.promote_batch.max(1);
        let mut total = 0u64;
        loop {
            let n: u64 = self
                .inner
                .scripts
                .promote
                .key(&self.inner.delayed)
                .key(&self.inner.stream)
                .arg(now_ms())
                .arg(batch)
                .invoke_async(&mut self.conn())
                .await?;
            total += n;
            if (n as usize) < batch {
                return Ok(total);
            }
        }
    }
}
