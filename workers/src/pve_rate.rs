//! The cap on Proxmox API requests per second shared by every worker process: a
//! [`RequestGate`] for the Proxmox client, kept in Redis.
//!
//! One key, `<prefix>pve:rate`, holds GCRA's theoretical arrival time (TAT) in µs of Redis
//! server time (`TIME` inside the script, so the workers' clocks do not matter). Each request
//! runs one Lua script, atomic, that books the caller a slot (the TAT moves one interval,
//! 1/rate, on) and returns how long until that slot: nothing while fewer than `burst` requests
//! are ahead, then one request per interval. The gate sleeps that long and sends. Booking
//! instead of asking again later costs one round trip per request however many wait, and
//! serves waiters in order; a caller that gives up while it waits leaves its slot unused, so
//! the cap can be under-used, never exceeded.
//!
//! When Redis does not answer, each process falls back to a limiter of its own at the same
//! rate (see [`ClusterRateCap`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use nimbus_proxmox::RequestGate;
use redis::Script;
use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

// KEYS[1] the TAT; ARGV interval µs, burst. Books one slot; returns the µs until it (0: go).
const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now) + interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', string.format('%.0f', math.ceil((tat - now) / 1000) + 1000))
return math.max(tat - now - tonumber(ARGV[2]) * interval, 0)
";

/// How long one Redis round trip may take before this request is paced locally. Redis
/// answers in about a millisecond; a command on a connection that is reconnecting would
/// otherwise wait for the whole reconnect round.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// How long after a failure Redis is asked again (by one request; the others stay local).
const REDIS_RETRY: Duration = Duration::from_secs(1);

/// The cluster-wide cap; share one per process ([`ClusterRateCap::connect`] returns an `Arc`).
///
/// If Redis cannot be reached, requests are paced by a limiter in this process at the same
/// rate, and Redis is tried again every second; a warning is logged once per outage. Waiting
/// for Redis instead would stall every Proxmox call, task polls of running jobs included, for
/// as long as Redis is down, and letting requests through unpaced would release the very burst
/// the cap exists to spread. Pacing per process bounds the cluster at (processes × rate) during
/// an outage: more than the cap, but bounded, and only while Redis, which the job queue needs
/// as well, is down.
pub struct ClusterRateCap {
    client: redis::Client,
    /// Made on first use, so that a worker starts while Redis is down.
    conn: OnceCell<ConnectionManager>,
    script: Script,
    key: String,
    per_second: u32,
    burst: u32,
    interval: Duration,
    local: LocalRate,
    /// `Some` during an outage: when Redis may be tried again.
    redis_down_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for ClusterRateCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterRateCap")
            .field("key", &self.key)
            .field("per_second", &self.per_second)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

impl ClusterRateCap {
    /// A cap of `per_second` requests per second with bursts of `burst`, across every process
    /// using `key_prefix` on this Redis. Both must be at least 1 (a rate of 0 means no cap:
    /// configure no gate). Redis is not contacted until the first request.
    pub fn connect(
        client: &redis::Client,
        key_prefix: &str,
        per_second: u32,
        burst: u32,
    ) -> anyhow::Result<Arc<ClusterRateCap>> {
        anyhow::ensure!(per_second > 0, "the Proxmox request rate must be at least 1 per second");
        anyhow::ensure!(burst > 0, "the Proxmox request burst must be at least 1");
        // Rounded up, so that the cap is never exceeded.
        let interval = Duration::from_micros(1_000_000u64.div_ceil(u64::from(per_second)));
        Ok(Arc::new(ClusterRateCap {
            client: client.clone(),
            conn: OnceCell::new(),
            script: Script::new(RESERVE),
            key: format!("{key_prefix}pve:rate"),
            per_second,
            burst,
            interval,
            local: LocalRate::default(),
            redis_down_until: Mutex::new(None),
        }))
    }

    /// The Redis key shared by every process.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Waits for this process's next request's turn.
    async fn wait_turn(&self) {
        let wait = if self.may_ask_redis() {
            match tokio::time::timeout(REDIS_TIMEOUT, self.reserve_in_redis()).await {
                Ok(Ok(wait)) => {
                    self.redis_answered();
                    wait
                }
                Ok(Err(e)) => self.redis_failed(&e.to_string()),
                Err(_) => self.redis_failed("no answer in time"),
            }
        } else {
            self.local.reserve(self.interval, self.burst)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    async fn reserve_in_redis(&self) -> redis::RedisResult<Duration> {
        let conn = self
            .conn
            .get_or_try_init(|| {
                self.client.get_connection_manager_with_config(nimbus_queue::connection_config(Duration::ZERO))
            })
            .await?;
        let wait_us: u64 = self
            .script
            .key(&self.key)
            .arg(self.interval.as_micros() as u64)
            .arg(self.burst)
            .invoke_async(&mut conn.clone())
            .await?;
        Ok(Duration::from_micros(wait_us))
    }

    /// True unless Redis failed less than [`REDIS_RETRY`] ago; past that, the first caller
    /// asks it again and pushes the next try on, so that the others do not wait on it too.
    fn may_ask_redis(&self) -> bool {
        let mut down_until = self.redis_down_until.lock().unwrap();
        match *down_until {
            None => true,
            Some(at) if Instant::now() < at => false,
            Some(_) => {
                *down_until = Some(Instant::now() + REDIS_RETRY);
                true
            }
        }
    }

    fn redis_answered(&self) {
        if self.redis_down_until.lock().unwrap().take().is_some() {
            tracing::info!(key = %self.key, "Redis answers again: Proxmox requests are capped across the cluster again");
        }
    }

    /// Records the failure and books this request's turn locally.
    fn redis_failed(&self, error: &str) -> Duration {
        let outage_began = self.redis_down_until.lock().unwrap().replace(Instant::now() + REDIS_RETRY).is_none();
        if outage_began {
            tracing::warn!(
                key = %self.key,
                error,
                per_second = self.per_second,
                "Redis unreachable: Proxmox requests are capped per process, not across the cluster, until it is back"
            );
        }
        self.local.reserve(self.interval, self.burst)
    }
}

impl RequestGate for ClusterRateCap {
    fn acquire(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.wait_turn())
    }
}

/// The same GCRA in this process's memory, for Redis outages.
#[derive(Debug, Default)]
struct LocalRate {
    tat: Mutex<Option<Instant>>,
}

impl LocalRate {
    /// Books the next slot; returns how long until it.
    fn reserve(&self, interval: Duration, burst: u32) -> Duration {
        let now = Instant::now();
        let mut tat = self.tat.lock().unwrap();
        let next = tat.map_or(now, |t| t.max(now)) + interval;
        *tat = Some(next);
        next.saturating_duration_since(now).saturating_sub(interval * burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_limiter_lets_a_burst_through_then_one_per_interval() {
        let local = LocalRate::default();
        let interval = Duration::from_millis(50);
        let waits: Vec<Duration> = (0..8).map(|_| local.reserve(interval, 5)).collect();
        assert!(waits[..5].iter().all(Duration::is_zero), "{waits:?}");
        // Booked back to back: each wait is one interval more (less the little time elapsed).
        for (k, w) in waits[5..].iter().enumerate() {
            let expected = interval * (k as u32 + 1);
            assert!(*w <= expected && *w + Duration::from_millis(20) > expected, "{waits:?}");
        }
    }

    #[test]
    fn rates_and_bursts_are_checked() {
        let client = redis::Client::open("redis://127.0.0.1:1").unwrap();
        assert!(ClusterRateCap::connect(&client, "nimbus:", 0, 5).is_err());
        assert!(ClusterRateCap::connect(&client, "nimbus:", 5, 0).is_err());
        let cap = ClusterRateCap::connect(&client, "nimbus:", 3, 3).unwrap();
        assert_eq!(cap.key(), "nimbus:pve:rate");
        assert_eq!(cap.interval, Duration::from_micros(333_334), "rounded so as never to exceed the rate");
    }
}
