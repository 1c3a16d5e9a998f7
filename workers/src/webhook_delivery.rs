//! Sending webhook deliveries (DESIGN §11).
//!
//! Fresh deliveries arrive from the `webhooks` group's sink, already held by this worker (a lease
//! taken when they were made), and are attempted at once; a poll takes the ones that are due
//! (retries, replays, recoveries, and any whose worker died holding them, or whose lease ran
//! short before a slot was free: a held delivery is attempted only while its attempt can end
//! within the lease). Each attempt:
//!
//! 1. checks the endpoint's rate cap (a per-second window in Redis shared by every worker); over
//!    it, the delivery waits for the next second without spending an attempt;
//! 2. signs the body per Standard Webhooks v1 (`webhook-id` is the event's id, the receiver's
//!    idempotency key; two signatures while a secret rotates);
//! 3. sends it through the SSRF guard (an address-literal URL is judged first; names are judged
//!    by the client's resolver, on the address connected to), never following redirects, with a
//!    15 s timeout;
//! 4. hands what came of it to the settler, which logs the attempts (status, latency, the first
//!    KiB of the answer, or why there was none) a batch at a time, in one transaction (one commit
//!    for many attempts; until it commits, the deliveries stay held), and settles each delivery: 2xx succeeded; 410 failed and the endpoint disabled; otherwise the
//!    next attempt by the schedule with jitter (a `Retry-After` longer than the wait is
//!    honoured), or failed when the schedule has run out.
//!
//! Time comes from the injected clock, so tests cross the schedule's hours without waiting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use nimbus_db::PgPool;
use nimbus_db::webhooks::{self, AttemptResult, Claimed, EndpointChange};
use nimbus_jobs::Clock;
use nimbus_webhooks::guard::{GuardedResolver, Lookup, SystemLookup, refusal_in};
use nimbus_webhooks::schedule::{Outcome, next_attempt_delay, parse_retry_after, random_jitter};
use nimbus_webhooks::{AllowList, Guard, Refusal, Secret};
use redis::aio::ConnectionManager;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The most of an answer kept in the log.
const RESPONSE_KEPT: usize = 1024;
/// The most attempts settled in one transaction.
const SETTLE_BATCH: usize = 512;
/// What an attempt's lease keeps beyond its timeout, for the settler to commit it.
const SETTLE_MARGIN: Duration = Duration::from_secs(5);
/// Batches of fresh deliveries waiting for the deliverer: more makes the sink wait (and the
/// stream keep the events), so none waits long enough to outlive its lease.
pub const FRESH_BACKLOG: usize = 2;

/// Delivery settings.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// Attempts in flight at once in this process.
    pub concurrency: usize,
    /// How often due deliveries are looked for.
    pub poll: Duration,
    /// The longest a receiver may take.
    pub timeout: Duration,
    /// How long a worker holds a delivery it is sending (at least the timeout and 10 s).
    pub lease: Duration,
    /// Networks deliveries may reach although the guard refuses them (`WEBHOOK_ALLOW_NETWORKS`).
    pub allow: AllowList,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            concurrency: 64,
            poll: Duration::from_secs(1),
            timeout: Duration::from_secs(15),
            lease: Duration::from_secs(30),
            allow: AllowList::default(),
        }
    }
}

/// The deliverer of one worker process.
pub struct Deliverer {
    db: PgPool,
    redis: ConnectionManager,
    key_prefix: String,
    client: reqwest::Client,
    guard: Guard,
    clock: Arc<dyn Clock>,
    config: DeliveryConfig,
    slots: Arc<Semaphore>,
    settled: mpsc::Sender<(Claimed, AttemptResult)>,
    to_settle: parking_lot::Mutex<Option<mpsc::Receiver<(Claimed, AttemptResult)>>>,
    metrics: Arc<crate::metrics::WorkerMetrics>,
}

impl Deliverer {
    /// A deliverer resolving names with the system's resolver.
    pub fn new(
        db: PgPool,
        redis: ConnectionManager,
        key_prefix: &str,
        clock: Arc<dyn Clock>,
        config: DeliveryConfig,
    ) -> anyhow::Result<Deliverer> {
        Self::with_lookup(db, redis, key_prefix, clock, config, Arc::new(SystemLookup))
    }

    /// A deliverer resolving names with `lookup`.
    pub fn with_lookup(
        db: PgPool,
        redis: ConnectionManager,
        key_prefix: &str,
        clock: Arc<dyn Clock>,
        config: DeliveryConfig,
        lookup: Arc<dyn Lookup>,
    ) -> anyhow::Result<Deliverer> {
        let guard = Guard::new(config.allow.clone());
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent("Nimbus-Webhooks/1")
            .dns_resolver(Arc::new(GuardedResolver::new(guard.clone(), lookup)))
            .pool_max_idle_per_host(config.concurrency)
            .build()
            .context("building the webhook client")?;
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        // A lease must outlast an attempt and its settling, or nothing held would be attempted.
        let mut config = config;
        config.lease = config.lease.max(config.timeout + SETTLE_MARGIN * 2);
        let (settled, to_settle) = mpsc::channel(SETTLE_BATCH * 4);
        Ok(Deliverer {
            db,
            redis,
            key_prefix: key_prefix.to_owned(),
            client,
            guard,
            clock,
            config,
            slots,
            settled,
            to_settle: parking_lot::Mutex::new(Some(to_settle)),
            metrics: crate::metrics::WorkerMetrics::unserved(),
        })
    }

    /// Counts attempts in `metrics` (the process's).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::WorkerMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Delivers until `shutdown`: `fresh` deliveries (held already) at once, due ones every `poll`.
    pub async fn run(self: Arc<Self>, mut fresh: mpsc::Receiver<Vec<Claimed>>, shutdown: CancellationToken) {
        let drained = CancellationToken::new();
        let settler =
            self.to_settle.lock().take().map(|rx| tokio::spawn(self.clone().settle_loop(rx, drained.clone())));
        let mut poll = tokio::time::interval(self.config.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                held = fresh.recv() => match held {
                    Some(held) => {
                        if let Err(e) = self.start(held).await {
                            tracing::warn!(error = %e, "fresh webhook deliveries not started; the poll takes them after their lease");
                        }
                    }
                    None => break,
                },
                _ = poll.tick() => {
                    if let Err(e) = self.dispatch().await {
                        tracing::warn!(error = %e, "webhook deliveries not claimed; the next poll tries again");
                    }
                }
            }
        }
        // Let the attempts in flight finish (they hold every slot when done), then settle them.
        let _ = self.slots.acquire_many(self.config.concurrency.max(1) as u32).await;
        drained.cancel();
        if let Some(settler) = settler {
            let _ = settler.await;
        }
    }

    /// Settles attempts a batch at a time until `drained` (then what is left, and returns).
    async fn settle_loop(
        self: Arc<Self>,
        mut results: mpsc::Receiver<(Claimed, AttemptResult)>,
        drained: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(SETTLE_BATCH);
        loop {
            let more = tokio::select! {
                n = results.recv_many(&mut batch, SETTLE_BATCH) => n > 0,
                _ = drained.cancelled() => {
                    while let Ok(r) = results.try_recv() {
                        batch.push(r);
                    }
                    false
                }
            };
            self.commit(&mut batch).await;
            if !more {
                return;
            }
        }
    }

    /// Settles `batch` in one transaction (tried three times; after that its deliveries stay
    /// held until their lease ends and are attempted again).
    async fn commit(&self, batch: &mut Vec<(Claimed, AttemptResult)>) {
        if batch.is_empty() {
            return;
        }
        for attempt in 1..=3 {
            let settled = async {
                let mut tx = self.db.begin().await?;
                let changes = webhooks::settle(&mut tx, batch).await?;
                tx.commit().await?;
                Ok::<_, nimbus_db::DbError>(changes)
            };
            match settled.await {
                Ok(changes) => {
                    for (endpoint, change) in changes {
                        match change {
                            EndpointChange::DisabledGone => {
                                tracing::info!(%endpoint, "webhook endpoint answered 410 Gone: disabled")
                            }
                            EndpointChange::DisabledFailing => {
                                tracing::info!(%endpoint, "webhook endpoint failing for 5 days: disabled")
                            }
                            EndpointChange::None => {}
                        }
                    }
                    break;
                }
                Err(e) if attempt == 3 => {
                    tracing::warn!(attempts = batch.len(), error = %e, "webhook attempts not recorded; they are sent again after their lease");
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await,
            }
        }
        batch.clear();
    }

    /// Claims due deliveries and starts their attempts, as many as there are free slots; returns
    /// how many were started.
    pub async fn dispatch(self: &Arc<Self>) -> anyhow::Result<usize> {
        let mut started = 0;
        loop {
            let free = self.slots.available_permits().max(1) as i64;
            // A claim is a lease, not a record: its commit need not wait for the disk. Were
            // Postgres to lose it in a crash, the delivery would only be sent again, with the
            // same webhook-id. The attempts and their outcome are committed durably.
            let mut tx = self.db.begin().await?;
            sqlx::query("set local synchronous_commit = off").execute(&mut *tx).await?;
            let claimed = webhooks::claim(&mut *tx, free, self.clock.now(), self.lease()).await?;
            tx.commit().await?;
            let n = claimed.len();
            started += self.start(claimed).await?;
            if (n as i64) < free {
                return Ok(started);
            }
        }
    }

    /// How long a claim holds a delivery.
    pub fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::minutes(1))
    }

    /// Starts the attempts of `held` deliveries as slots free up. One whose lease would end
    /// before its attempt could (it waited too long for a slot) is left alone: another worker may
    /// take it after the lease, and two must never send it at once. Returns how many started.
    async fn start(self: &Arc<Self>, held: Vec<Claimed>) -> anyhow::Result<usize> {
        let mut started = 0;
        let needs = chrono::Duration::from_std(self.config.timeout + SETTLE_MARGIN).unwrap_or(chrono::Duration::MAX);
        for d in held {
            let permit = self.slots.clone().acquire_owned().await.context("the deliverer stopped")?;
            if self.clock.now() + needs > d.locked_until {
                tracing::debug!(delivery = %d.id, "lease too short to attempt; the poll takes it after the lease");
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                let id = d.id;
                if let Err(e) = this.attempt(d).await {
                    tracing::warn!(delivery = %id, error = %e, "webhook attempt not recorded; the lease expires and it is retried");
                }
                drop(permit);
            });
            started += 1;
        }
        Ok(started)
    }

    /// One attempt of held delivery `d`.
    pub async fn attempt(&self, d: Claimed) -> anyhow::Result<()> {
        if let Some(limit) = d.rate_limit
            && !self.within_rate(d.endpoint_id, limit).await
        {
            let next_second = self.clock.now() + chrono::Duration::seconds(1);
            webhooks::postpone(&self.db, d.id, next_second).await?;
            return Ok(());
        }
        let at = self.clock.now();
        let result = self.send(&d, at).await;
        self.metrics.webhook_attempt(match (result.succeeded, result.gone) {
            (true, _) => "delivered",
            (_, true) => "gone",
            _ => "failed",
        });
        self.settled.send((d, result)).await.map_err(|_| anyhow::anyhow!("the settler stopped"))?;
        Ok(())
    }

    /// Whether one more delivery to `endpoint` this second stays within `limit`.
    async fn within_rate(&self, endpoint: Uuid, limit: i32) -> bool {
        let second = Utc::now().timestamp();
        let key = format!("{}webhook-rate:{endpoint}:{second}", self.key_prefix);
        let mut redis = self.redis.clone();
        let counted: redis::RedisResult<(i64,)> =
            redis::pipe().incr(&key, 1).expire(&key, 2).ignore().query_async(&mut redis).await;
        match counted {
            Ok((n,)) => n <= i64::from(limit),
            // Without Redis the cap cannot be kept: send rather than hold every delivery.
            Err(_) => true,
        }
    }

    /// Signs and sends `d`; what came of it.
    async fn send(&self, d: &Claimed, at: DateTime<Utc>) -> AttemptResult {
        let started = Instant::now();
        let attempt = d.attempts + 1;
        let outcome = self.request(d).await;
        let latency_ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
        let (status, retry_after, body, error) = match outcome {
            Ok((status, retry_after, body)) => (Some(status), retry_after, body, None),
            Err(error) => (None, None, String::new(), Some(error)),
        };
        let kind = Outcome::of(status);
        let retry_at = match kind {
            Outcome::Delivered | Outcome::Gone => None,
            Outcome::Failed => next_attempt_delay(attempt, random_jitter(), retry_after)
                .and_then(|wait| chrono::Duration::from_std(wait).ok())
                .map(|wait| at + wait),
        };
        AttemptResult {
            at,
            status_code: status.map(i32::from),
            error,
            latency_ms,
            response_body: body,
            succeeded: kind == Outcome::Delivered,
            gone: kind == Outcome::Gone,
            retry_at,
        }
    }

    /// The request itself: the receiver's status, `Retry-After` and the start of its answer, or
    /// why there was no answer.
    async fn request(&self, d: &Claimed) -> Result<(u16, Option<Duration>, String), String> {
        let url = reqwest::Url::parse(&d.url).map_err(|e| format!("bad URL: {e}"))?;
        let url_host = url.host_str().unwrap_or_default().to_owned();
        let url_host = url_host.as_str();
        self.guard.check_url(&url).map_err(|refusal| refusal.to_string())?;
        let body = d.payload.clone().into_bytes();
        let secret = Secret::parse(&d.secret).map_err(|e| e.to_string())?;
        let previous = d.previous_secret.as_deref().and_then(|s| Secret::parse(s).ok());
        let mut secrets = vec![&secret];
        secrets.extend(previous.as_ref());
        let id = format!("msg_{}", d.event_id.simple());
        // The moment of sending, as receivers check it against their own clock.
        let timestamp = Utc::now().timestamp();
        let signature = nimbus_webhooks::sign(&secrets, &id, timestamp, &body);
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                return Err(match refusal_in(&e) {
                    Some(refusal) => refusal_for_owner(&refusal, url_host),
                    None if e.is_timeout() => format!("no answer within {} s", self.config.timeout.as_secs()),
                    None => format!("no answer: {}", error_chain(&e)),
                });
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut kept = Vec::new();
        while kept.len() < RESPONSE_KEPT {
            match response.chunk().await {
                Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
                _ => break,
            }
        }
        Ok((status, retry_after, truncate_utf8(&kept, RESPONSE_KEPT)))
    }
}

/// What the endpoint's owner reads of a refusal: for a name, the range it resolved into but not
/// the address, which would tell a tenant what the provider's own DNS answers for internal names.
fn refusal_for_owner(refusal: &Refusal, host: &str) -> String {
    match refusal {
        Refusal::Address { range, .. } if host.parse::<std::net::IpAddr>().is_err() && !host.starts_with('[') => {
            format!("refused: {host} is {range}")
        }
        other => other.to_string(),
    }
}

/// `bytes` as text, at most `max` bytes of it, cut at a character boundary.
fn truncate_utf8(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned();
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// An error and its sources, joined.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_name_keeps_its_address_from_the_owner() {
        let private = Refusal::Address { address: "10.1.2.3".parse().unwrap(), range: "private" };
        assert_eq!(refusal_for_owner(&private, "internal.example"), "refused: internal.example is private");
        assert_eq!(
            refusal_for_owner(&private, "10.1.2.3"),
            "refused: 10.1.2.3 is private",
            "a literal is the owner's own"
        );
        let v6 = Refusal::Address { address: "::1".parse().unwrap(), range: "loopback" };
        assert_eq!(refusal_for_owner(&v6, "[::1]"), "refused: ::1 is loopback");
    }

    #[test]
    fn kept_answers_are_cut_at_a_character() {
        assert_eq!(truncate_utf8(b"ok", 1024), "ok");
        let long = "é".repeat(600);
        let kept = truncate_utf8(long.as_bytes(), 1024);
        assert!(kept.len() <= 1024 && kept.chars().all(|c| c == 'é'));
        assert_eq!(kept.chars().count(), 512);
    }
}
