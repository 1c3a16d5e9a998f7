//! Per-Proxmox-node concurrency caps shared by every worker process: a lease semaphore in Redis.
//!
//! Node `n` has a sorted set `<prefix>nodecap:{n}` of holders scored by lease expiry (ms, Redis
//! server time, so the workers' clocks do not matter). Acquire, renew and release are Lua
//! scripts, hence atomic: acquire first drops expired holders (a crashed worker's permits come
//! back after `ttl`), then joins if fewer than `cap` remain. A [`Permit`] renews itself every
//! `ttl / 3` until released or dropped. Every node has the same cap unless overridden by name
//! (a small node, or one being drained, gets less).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

// KEYS[1] set; ARGV holder, cap, ttl ms. 1 = holding (new or renewed), 0 = full.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 1
end
return 0
";

// KEYS[1] set; ARGV holder, ttl ms. 1 = renewed, 0 = the permit had expired (and may be taken).
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
";

// KEYS[1] set. Holders whose lease has not expired.
const HOLDERS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
";

/// Caps on concurrent work per node; cheap to clone.
#[derive(Clone)]
pub struct NodeCaps {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    key_prefix: String,
    cap: u32,
    overrides: HashMap<String, u32>,
    ttl: Duration,
    poll: Duration,
    acquire: Script,
    renew: Script,
    holders: Script,
}

impl std::fmt::Debug for NodeCaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCaps")
            .field("cap", &self.inner.cap)
            .field("overrides", &self.inner.overrides)
            .field("ttl", &self.inner.ttl)
            .finish()
    }
}

impl NodeCaps {
    /// Caps of `cap` holders per node (at least 1), under `key_prefix`, whose permits expire
    /// `ttl` after their last renewal.
    pub async fn new(client: &redis::Client, key_prefix: &str, cap: u32, ttl: Duration) -> redis::RedisResult<Self> {
        Self::with_overrides(client, key_prefix, cap, HashMap::new(), ttl).await
    }

    /// [`NodeCaps::new`] with the caps of some nodes, by name, set apart (0 stops new work on
    /// a node).
    pub async fn with_overrides(
        client: &redis::Client,
        key_prefix: &str,
        cap: u32,
        overrides: HashMap<String, u32>,
        ttl: Duration,
    ) -> redis::RedisResult<Self> {
        // The queue's timeouts and reconnect backoff: with redis-rs' defaults a Redis restart
        // stalled permits (and so provisioning) for up to two minutes.
        let conn = client.get_connection_manager_with_config(nimbus_queue::connection_config(Duration::ZERO)).await?;
        Ok(NodeCaps {
            inner: Arc::new(Inner {
                conn,
                key_prefix: key_prefix.to_owned(),
                cap: cap.max(1),
                overrides,
                ttl: ttl.max(Duration::from_millis(300)),
                poll: Duration::from_millis(100),
                acquire: Script::new(ACQUIRE),
                renew: Script::new(RENEW),
                holders: Script::new(HOLDERS),
            }),
        })
    }

    /// The cap of nodes without an override.
    pub fn cap(&self) -> u32 {
        self.inner.cap
    }

    /// The cap of `node`.
    pub fn cap_of(&self, node: &str) -> u32 {
        self.inner.overrides.get(node).copied().unwrap_or(self.inner.cap)
    }

    /// The Redis key of `node`'s holders.
    pub fn key(&self, node: &str) -> String {
        format!("{}nodecap:{{{node}}}", self.inner.key_prefix)
    }

    /// Takes a permit on `node` for `holder` if one is free.
    pub async fn try_acquire(&self, node: &str, holder: &str) -> redis::RedisResult<Option<Permit>> {
        let ttl_ms = self.inner.ttl.as_millis() as u64;
        let got: i64 = self
            .inner
            .acquire
            .key(self.key(node))
            .arg(holder)
            .arg(self.cap_of(node))
            .arg(ttl_ms)
            .invoke_async(&mut self.inner.conn.clone())
            .await?;
        if got != 1 {
            return Ok(None);
        }
        Ok(Some(Permit::start(self.clone(), node.to_owned(), holder.to_owned())))
    }

    /// Waits for a permit on `node`, polling with jitter; `None` when `cancel` fires first.
    pub async fn acquire(
        &self,
        node: &str,
        holder: &str,
        cancel: &CancellationToken,
    ) -> redis::RedisResult<Option<Permit>> {
        loop {
            if let Some(p) = self.try_acquire(node, holder).await? {
                return Ok(Some(p));
            }
            // Jitter keeps waiting workers from polling in lockstep.
            let wait = self.inner.poll.mul_f64(0.5 + rand::random::<f64>());
            tokio::select! {
                _ = cancel.cancelled() => return Ok(None),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// How many unexpired holders `node` has.
    pub async fn holders(&self, node: &str) -> redis::RedisResult<u64> {
        self.inner.holders.key(self.key(node)).invoke_async(&mut self.inner.conn.clone()).await
    }

    async fn renew(&self, node: &str, holder: &str) -> redis::RedisResult<bool> {
        let renewed: i64 = self
            .inner
            .renew
            .key(self.key(node))
            .arg(holder)
            .arg(self.inner.ttl.as_millis() as u64)
            .invoke_async(&mut self.inner.conn.clone())
            .await?;
        Ok(renewed == 1)
    }

    async fn release(&self, node: &str, holder: &str) -> redis::RedisResult<()> {
        redis::cmd("ZREM").arg(self.key(node)).arg(holder).query_async::<()>(&mut self.inner.conn.clone()).await
    }
}

/// A held slot on a node. Renewed in the background; [`Permit::release`] frees it at once,
/// dropping it frees it in the background.
pub struct Permit {
    caps: NodeCaps,
    node: String,
    holder: String,
    renewer: tokio::task::JoinHandle<()>,
    released: bool,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("node", &self.node).field("holder", &self.holder).finish()
    }
}

impl Permit {
    fn start(caps: NodeCaps, node: String, holder: String) -> Permit {
        let renewer = {
            let (caps, node, holder) = (caps.clone(), node.clone(), holder.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(caps.inner.ttl / 3).await;
                    match caps.renew(&node, &holder).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(pve.node = %node, holder, "node permit expired before renewal");
                            return;
                        }
                        Err(e) => tracing::warn!(pve.node = %node, error = %e, "node permit renewal failed"),
                    }
                }
            })
        };
        Permit { caps, node, holder, renewer, released: false }
    }

    /// The node.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Stops renewing without releasing, as a holder that crashed would: the slot frees when
    /// its lease expires.
    pub fn abandon(mut self) {
        self.renewer.abort();
        self.released = true;
    }

    /// Frees the slot now.
    pub async fn release(mut self) {
        self.renewer.abort();
        self.released = true;
        if let Err(e) = self.caps.release(&self.node, &self.holder).await {
            // The slot comes back by itself when its lease expires.
            tracing::warn!(pve.node = %self.node, error = %e, "node permit release failed");
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.renewer.abort();
        if !self.released {
            let (caps, node, holder) = (self.caps.clone(), self.node.clone(), self.holder.clone());
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = caps.release(&node, &holder).await;
                });
            }
        }
    }
}
