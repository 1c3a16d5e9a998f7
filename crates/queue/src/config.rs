//! Per-queue settings and the Redis key layout.
//!
//! Keys carry the queue name as a Redis Cluster hash tag (`{provision}`) so the stream, its delayed
//! set and its dead stream live in one slot and the Lua scripts may touch all three.

use std::time::Duration;

use crate::backoff::Backoff;

/// How one queue is laid out in Redis and how its workers fetch, recover and retry.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The queue name, e.g. `provision`; it names the Redis keys.
    pub name: String,
    /// Prefix of every key (`nimbus:`; tests put their own namespace in front).
    pub key_prefix: String,
    /// The consumer group every worker of this queue joins.
    pub group: String,
    /// Entries read per `XREADGROUP` (also the size of a worker's local buffer).
    pub fetch_count: usize,
    /// How long one `XREADGROUP` blocks waiting for new entries; it also bounds how long a
    /// graceful shutdown waits for the read in flight.
    pub block: Duration,
    /// An entry unacknowledged for this long is taken over by another worker (`XAUTOCLAIM`).
    pub claim_min_idle: Duration,
    /// How often an idle worker looks for abandoned entries.
    pub reclaim_interval: Duration,
    /// How often a worker renews the claim on the entries it holds (must be well below
    /// `claim_min_idle` so long jobs are not stolen).
    pub renew_interval: Duration,
    /// How often due delayed jobs and retries are moved into the stream.
    pub promote_interval: Duration,
    /// At most this many delayed jobs are promoted per script call.
    pub promote_batch: usize,
    /// At most this many acknowledgements are written per round trip.
    pub ack_batch: usize,
    /// Attempts for jobs pushed without their own `max_attempts`.
    pub default_max_attempts: u32,
    /// Delay between failed attempts.
    pub backoff: Backoff,
    /// The dead stream is trimmed (approximately) to this many entries.
    pub dead_max_len: usize,
}

impl QueueConfig {
    /// Defaults tuned for no-op throughput and seconds-scale crash recovery.
    pub fn new(name: impl Into<String>) -> Self {
        let claim_min_idle = Duration::from_secs(5);
        Self {
            name: name.into(),
            key_prefix: "nimbus:".to_owned(),
            group: "workers".to_owned(),
            fetch_count: 100,
            block: Duration::from_millis(1000),
            claim_min_idle,
            reclaim_interval: Duration::from_secs(1),
            renew_interval: claim_min_idle / 3,
            promote_interval: Duration::from_millis(200),
            promote_batch: 500,
            ack_batch: 1000,
            default_max_attempts: 5,
            backoff: Backoff::default(),
            dead_max_len: 100_000,
        }
    }

    /// Sets the idle time after which abandoned entries are reclaimed, and derives the renewal
    /// interval (a third of it) and the reclaim interval (at most a fifth of it, at most 1 s).
    pub fn claim_min_idle(mut self, idle: Duration) -> Self {
        self.claim_min_idle = idle;
        self.renew_interval = idle / 3;
        self.reclaim_interval = (idle / 5).min(Duration::from_secs(1));
        self
    }

    /// Sets the prefix of every key (default `nimbus:`).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets the default number of attempts.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.default_max_attempts = attempts.max(1);
        self
    }

    /// Sets the retry backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets how many entries one read fetches.
    pub fn fetch_count(mut self, count: usize) -> Self {
        self.fetch_count = count.max(1);
        self
    }

    /// The stream holding waiting and in-flight jobs.
    pub fn stream_key(&self) -> String {
        format!("{}q:{{{}}}", self.key_prefix, self.name)
    }

    /// The sorted set of delayed jobs and retries, scored by due time (ms since the epoch).
    pub fn delayed_key(&self) -> String {
        format!("{}q:{{{}}}:delayed", self.key_prefix, self.name)
    }

    /// The stream of jobs that exhausted their attempts or failed permanently.
    pub fn dead_key(&self) -> String {
        format!("{}dead:{{{}}}", self.key_prefix, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_cluster_slot_tag() {
        let c = QueueConfig::new("provision");
        assert_eq!(c.stream_key(), "nimbus:q:{provision}");
        assert_eq!(c.delayed_key(), "nimbus:q:{provision}:delayed");
        assert_eq!(c.dead_key(), "nimbus:dead:{provision}");
        let t = QueueConfig::new("p").key_prefix("test:1:nimbus:");
        assert_eq!(t.stream_key(), "test:1:nimbus:q:{p}");
    }

    #[test]
    fn claim_idle_derives_renewal_below_it() {
        let c = QueueConfig::new("q").claim_min_idle(Duration::from_millis(900));
        assert_eq!(c.renew_interval, Duration::from_millis(300));
        assert_eq!(c.reclaim_interval, Duration::from_millis(180));
    }
}
