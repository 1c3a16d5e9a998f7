//! The events relay: events not relayed yet go onto the Redis stream in `seq` order, one batch per
//! transaction (`SKIP LOCKED`, so relays in every worker process share the work), and are marked
//! relayed when the push succeeded. A crash between the push and the commit pushes the batch
//! again; the sinks are idempotent by event id. The relay polls (every 100 ms when idle, at once
//! while batches come full): a `NOTIFY` per event would serialise the commits of every write
//! path that records events (instance creates, job completions) on Postgres's notification queue.
//!
//! The stream is trimmed (`XTRIM MINID`) below the oldest entry some group has not acknowledged,
//! so Redis holds only what is in flight; the events table stays the record.

use std::time::Duration;

use nimbus_db::{PgPool, events};
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use super::{GROUPS, stream_key};

/// Relay settings.
#[derive(Clone, Debug)]
pub struct EventRelayConfig {
    /// Events per transaction.
    pub batch: i64,
    /// The longest wait between polls.
    pub idle: Duration,
    /// How often the stream is trimmed.
    pub trim_every: Duration,
}

impl Default for EventRelayConfig {
    fn default() -> Self {
        EventRelayConfig { batch: 500, idle: Duration::from_millis(100), trim_every: Duration::from_secs(10) }
    }
}

/// The relay.
#[derive(Clone)]
pub struct EventRelay {
    db: PgPool,
    redis: ConnectionManager,
    stream: String,
    config: EventRelayConfig,
}

impl EventRelay {
    /// A relay from `db`'s events to the stream under `key_prefix`.
    pub fn new(db: PgPool, redis: ConnectionManager, key_prefix: &str, config: EventRelayConfig) -> EventRelay {
        EventRelay { db, redis, stream: stream_key(key_prefix), config }
    }

    /// Relays one batch; returns how many events.
    pub async fn tick(&self) -> anyhow::Result<usize> {
        let mut tx = self.db.begin().await?;
        let batch = events::fetch_unrelayed(&mut tx, self.config.batch).await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for e in &batch {
            pipe.cmd("XADD")
                .arg(&self.stream)
                .arg("*")
                .arg("id")
                .arg(e.id.to_string())
                .arg("type")
                .arg(&e.kind)
                .arg("seq")
                .arg(e.seq)
                .ignore();
        }
        let mut redis = self.redis.clone();
        tokio::time::timeout(Duration::from_secs(3), pipe.query_async::<()>(&mut redis))
            .await
            .map_err(|_| anyhow::anyhow!("XADD timed out"))??;
        let ids: Vec<uuid::Uuid> = batch.iter().map(|e| e.id).collect();
        events::mark_relayed(&mut *tx, &ids).await?;
        tx.commit().await?;
        Ok(ids.len())
    }

    /// Trims the stream below the oldest entry a group has not acknowledged (or not read yet).
    pub async fn trim(&self) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        let mut keep_from: Option<(u64, u64)> = None;
        for group in GROUPS {
            // The oldest pending entry, or else the last one the group read: everything before
            // it has been handled by the group.
            let pending: redis::Value =
                redis::cmd("XPENDING").arg(&self.stream).arg(*group).query_async(&mut redis).await?;
            let oldest_pending = match &pending {
                redis::Value::Array(items) if items.len() >= 2 => match &items[1] {
                    redis::Value::BulkString(b) => parse_id(&String::from_utf8_lossy(b)),
                    _ => None,
                },
                _ => None,
            };
            let floor = match oldest_pending {
                Some(id) => id,
                None => match last_delivered(&mut redis, &self.stream, group).await? {
                    // Everything up to the last read was acknowledged: keep what follows it.
                    Some((ms, seq)) => (ms, seq + 1),
                    // A group that does not exist yet keeps everything.
                    None => return Ok(()),
                },
            };
            keep_from = Some(keep_from.map_or(floor, |k| k.min(floor)));
        }
        if let Some((ms, seq)) = keep_from {
            redis::cmd("XTRIM")
                .arg(&self.stream)
                .arg("MINID")
                .arg(format!("{ms}-{seq}"))
                .query_async::<()>(&mut redis)
                .await?;
        }
        Ok(())
    }

    /// Relays until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut next_trim = tokio::time::Instant::now() + self.config.trim_every;
        let mut failures = 0u32;
        loop {
            let wait = match self.tick().await {
                Ok(n) if n as i64 >= self.config.batch => {
                    failures = 0;
                    Duration::ZERO
                }
                Ok(_) => {
                    failures = 0;
                    self.config.idle
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::warn!(error = %e, failures, "events relay tick failed; the events stay for the next one");
                    }
                    (self.config.idle * failures.min(50)).min(Duration::from_secs(5))
                }
            };
            if tokio::time::Instant::now() >= next_trim {
                next_trim = tokio::time::Instant::now() + self.config.trim_every;
                if let Err(e) = self.trim().await {
                    tracing::debug!(error = %e, "events stream not trimmed; the next round tries again");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// A stream id `ms-seq`.
fn parse_id(s: &str) -> Option<(u64, u64)> {
    let (ms, seq) = s.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The last entry `group` read (`XINFO GROUPS`), `None` when the group does not exist.
async fn last_delivered(
    redis: &mut ConnectionManager,
    stream: &str,
    group: &str,
) -> anyhow::Result<Option<(u64, u64)>> {
    let info: redis::Value = match redis::cmd("XINFO").arg("GROUPS").arg(stream).query_async(redis).await {
        Ok(v) => v,
        Err(_) => return Ok(None),
    };
    let redis::Value::Array(groups) = info else { return Ok(None) };
    for g in groups {
        let fields: Vec<(String, redis::Value)> = match g {
            redis::Value::Array(kv) => kv
                .chunks(2)
                .filter_map(|c| match (&c[0], c.get(1)) {
                    (redis::Value::BulkString(k), Some(v)) => {
                        Some((String::from_utf8_lossy(k).into_owned(), v.clone()))
                    }
                    (redis::Value::SimpleString(k), Some(v)) => Some((k.clone(), v.clone())),
                    _ => None,
                })
                .collect(),
            redis::Value::Map(kv) => kv
                .into_iter()
                .filter_map(|(k, v)| match k {
                    redis::Value::BulkString(k) => Some((String::from_utf8_lossy(&k).into_owned(), v)),
                    redis::Value::SimpleString(k) => Some((k, v)),
                    _ => None,
                })
                .collect(),
            _ => continue,
        };
        let text = |v: &redis::Value| match v {
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        };
        let name = fields.iter().find(|(k, _)| k == "name").and_then(|(_, v)| text(v));
        if name.as_deref() == Some(group) {
            let last = fields.iter().find(|(k, _)| k == "last-delivered-id").and_then(|(_, v)| text(v));
            return Ok(last.as_deref().and_then(parse_id));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_ids_parse() {
        assert_eq!(super::parse_id("1700000000000-3"), Some((1_700_000_000_000, 3)));
        assert_eq!(super::parse_id("0-0"), Some((0, 0)));
        assert_eq!(super::parse_id("nonsense"), None);
    }
}
