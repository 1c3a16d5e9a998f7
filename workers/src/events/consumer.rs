//! One consumer group's loop on the events stream. Each worker process is one consumer of each
//! group (named by the worker): it reads new entries (`XREADGROUP … >`, blocking), hands their
//! event ids to the group's [`Sink`], and acknowledges them once the sink is done with them. Up to
//! `in_flight` batches are handled at once; a batch is read only when it can be handled at once,
//! so its entries' idle time is its handling's. Entries that stay unacknowledged longer than
//! `claim_idle` (their consumer crashed or its sink failed) are taken over by whichever consumer
//! looks next (`XAUTOCLAIM`), so nothing is lost: `claim_idle` must outlast a sink's handling.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What a group does with a batch of events (their ids, in stream order). Must be idempotent
/// by event id: a batch may come again.
pub trait Sink: Send + Sync + 'static {
    /// Handles `events`; an error leaves them unacknowledged, to be taken over later.
    fn handle(&self, events: &[Uuid]) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Consumer settings.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Entries per read.
    pub batch: usize,
    /// How long a read blocks waiting for entries.
    pub block: Duration,
    /// How long an entry stays with a consumer that has not acknowledged it.
    pub claim_idle: Duration,
    /// Batches handled at once.
    pub in_flight: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig { batch: 200, block: Duration::from_secs(1), claim_idle: Duration::from_secs(10), in_flight: 1 }
    }
}

/// A consumer of one group.
pub struct Consumer<S: Sink> {
    client: redis::Client,
    stream: String,
    group: &'static str,
    name: String,
    sink: Arc<S>,
    config: ConsumerConfig,
}

impl<S: Sink> Consumer<S> {
    /// Consumer `name` of `group` on `stream`.
    pub fn new(
        client: redis::Client,
        stream: String,
        group: &'static str,
        name: String,
        sink: S,
        config: ConsumerConfig,
    ) -> Self {
        Consumer { client, stream, group, name, sink: Arc::new(sink), config }
    }

    /// Consumes until `shutdown`, reconnecting when Redis goes away.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.consume(&shutdown).await {
                tracing::warn!(group = self.group, error = %e, "events consumer lost Redis; it starts again");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn consume(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        // A connection of its own: a blocking read holds it. Acknowledgements take another.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(self.config.block + Duration::from_secs(2))
            .set_connection_timeout(Duration::from_secs(2));
        let mut conn = self.client.get_connection_manager_with_config(config).await?;
        let acks = self.client.get_connection_manager().await?;
        create_group(&mut conn, &self.stream, self.group).await?;
        let mut handling = JoinSet::new();
        let consumed = self.read_and_hand(&mut conn, &acks, &mut handling, shutdown).await;
        // The batches in hand finish (the sink's handling is bounded) and are acknowledged.
        while handling.join_next().await.is_some() {}
        consumed
    }

    async fn read_and_hand(
        &self,
        conn: &mut ConnectionManager,
        acks: &ConnectionManager,
        handling: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let slots = Arc::new(Semaphore::new(self.config.in_flight.max(1)));
        let mut next_claim = tokio::time::Instant::now();
        loop {
            // Finished handlings are reaped as they end (their outcome is logged by them).
            while handling.try_join_next().is_some() {}
            let slot = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                slot = slots.clone().acquire_owned() => slot?,
            };
            if tokio::time::Instant::now() >= next_claim {
                next_claim = tokio::time::Instant::now() + self.config.claim_idle / 2;
                let claimed = self.claim_stale(conn).await?;
                if !claimed.is_empty() {
                    self.hand(acks, handling, claimed, slot);
                    continue;
                }
            }
            let options = StreamReadOptions::default()
                .group(self.group, &self.name)
                .count(self.config.batch)
                .block(self.config.block.as_millis() as usize);
            let keys = [self.stream.as_str()];
            let reply: Option<StreamReadReply> = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = redis::AsyncCommands::xread_options(conn, &keys, &[">"], &options) => r?,
            };
            let entries: Vec<StreamId> =
                reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect()).unwrap_or_default();
            if !entries.is_empty() {
                self.hand(acks, handling, entries, slot);
            }
        }
    }

    /// Entries idle with any consumer longer than `claim_idle`, now this one's.
    async fn claim_stale(&self, conn: &mut ConnectionManager) -> anyhow::Result<Vec<StreamId>> {
        let options = StreamAutoClaimOptions::default().count(self.config.batch);
        let reply: StreamAutoClaimReply = redis::AsyncCommands::xautoclaim_options(
            conn,
            &self.stream,
            self.group,
            &self.name,
            self.config.claim_idle.as_millis() as u64,
            "0-0",
            options,
        )
        .await?;
        Ok(reply.claimed)
    }

    /// Hands `entries` to the sink, in a task holding `slot`, and acknowledges them when it
    /// succeeded.
    fn hand(
        &self,
        acks: &ConnectionManager,
        handling: &mut JoinSet<()>,
        entries: Vec<StreamId>,
        slot: OwnedSemaphorePermit,
    ) {
        let ids: Vec<Uuid> = entries
            .iter()
            .filter_map(|e| match e.map.get("id") {
                Some(redis::Value::BulkString(b)) => std::str::from_utf8(b).ok()?.parse().ok(),
                _ => None,
            })
            .collect();
        let stream_ids: Vec<String> = entries.into_iter().map(|e| e.id).collect();
        let (sink, mut acks, stream, group) = (self.sink.clone(), acks.clone(), self.stream.clone(), self.group);
        handling.spawn(async move {
            match sink.handle(&ids).await {
                Ok(()) => {
                    let acked: redis::RedisResult<()> =
                        redis::AsyncCommands::xack(&mut acks, &stream, group, &stream_ids).await;
                    if let Err(e) = acked {
                        // Left pending: taken over after `claim_idle`, and handled again harmlessly.
                        tracing::warn!(group, error = %e, "events handled but not acknowledged");
                    }
                }
                Err(e) => {
                    // Left pending: taken over after `claim_idle`.
                    tracing::warn!(group, events = ids.len(), error = %e, "events not handled; they are retried");
                }
            }
            drop(slot);
        });
    }
}

/// Creates `group` reading the stream from its start, and the stream, unless they exist.
pub async fn create_group(conn: &mut ConnectionManager, stream: &str, group: &str) -> anyhow::Result<()> {
    let created: redis::RedisResult<()> =
        redis::cmd("XGROUP").arg("CREATE").arg(stream).arg(group).arg("0").arg("MKSTREAM").query_async(conn).await;
    match created {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(e.into()),
    }
}
