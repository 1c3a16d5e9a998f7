//! Sending webhook deliveries (DESIGN §11).
//!
//! Fresh deliveries arrive from the `webhooks` group's sink as a [`FreshBatch`]: owed by events the
//! stream still holds unacknowledged, not written anywhere yet, and attempted at once. Each is
//! written with the outcome of its first attempt, so one that succeeds costs a single row; the
//! sink acknowledges the events once every delivery of the batch is recorded ([`Recorded`]). A poll
//! takes the recorded deliveries that are due (retries, replays, recoveries, deferred ones, and any
//! whose worker died holding them). A delivery is attempted only while its attempt can end within
//! its hold (a claim's lease; for a fresh one, the time its events stay with this consumer): one
//! that waited too long for a slot is not sent but recorded as due, for the poll (fresh) or left
//! to its lease's end (claimed), so two workers never send it at once. Each attempt:
//!
//! 1. checks the endpoint's rate cap (a per-second window in Redis shared by every worker); over
//!    it, the delivery is recorded as due the next second without spending an attempt;
//! 2. signs the body per Standard Webhooks v1 (`webhook-id` is the event's id, the receiver's
//!    idempotency key; two signatures while a secret rotates);
//! 3. sends it through the SSRF guard (an address-literal URL is judged first; names are judged
//!    by the client's resolver, on the address connected to), never following redirects, with a
//!    15 s timeout;
//! 4. hands what came of it to the settler, which records the attempts (status, latency, the first
//!    KiB of the answer, or why there was none) a batch at a time, in one transaction (one commit
//!    for many attempts; until it commits, the deliveries stay held), and settles each delivery:
//!    2xx succeeded; 410 failed and the endpoint disabled; otherwise the next attempt by the
//!    schedule with jitter (a `Retry-After` longer than the wait is honoured), or failed when the
//!    schedule has run out.
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
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The most of an answer kept in the log.
const RESPONSE_KEPT: usize = 1024;
/// The most attempts settled in one transaction.
const SETTLE_BATCH: usize = 512;
/// Settling transactions at once.
const SETTLE_COMMITS: usize = 2;
/// How long a small batch of attempts waits for more before it is settled.
const SETTLE_LINGER: Duration = Duration::from_millis(5);
/// What an attempt's lease keeps beyond its timeout, for the settler to commit it.
const SETTLE_MARGIN: Duration = Duration::from_secs(5);
/// Batches of fresh deliveries in hand at once (the `webhooks` consumer's batches in flight): enough
/// that the next batch is waiting when one ends, few enough that none waits out its hold.
pub const FRESH_BATCHES: usize = 4;

/// Fresh deliveries for the deliverer, each with its share of the batch's [`Recorded`].
pub struct FreshBatch {
    deliveries: Vec<(Claimed, Ticket)>,
}

impl FreshBatch {
    /// The batch of `deliveries` (from `webhooks::owed`), and what tells when all are recorded.
    pub fn new(deliveries: Vec<Claimed>) -> (FreshBatch, Recorded) {
        let (tx, rx) = oneshot::channel();
        let tracker = Arc::new(Tracker {
            remaining: std::sync::atomic::AtomicUsize::new(deliveries.len()),
            failed: std::sync::atomic::AtomicBool::new(false),
            done: parking_lot::Mutex::new(Some(tx)),
        });
        if deliveries.is_empty() {
            tracker.finish();
        }
        let deliveries = deliveries.into_iter().map(|d| (d, Ticket(Some(tracker.clone())))).collect();
        (FreshBatch { deliveries }, Recorded(rx))
    }
}

/// Resolves once every delivery of a [`FreshBatch`] is recorded (`true`), or when some could not
/// be (`false`: not sent, or sent and not recorded): then the events must stay unacknowledged, to be
/// fanned out again, which sends only what has no row.
pub struct Recorded(oneshot::Receiver<bool>);

impl Recorded {
    /// Whether every delivery was recorded.
    pub async fn wait(self) -> bool {
        self.0.await.unwrap_or(false)
    }
}

struct Tracker {
    remaining: std::sync::atomic::AtomicUsize,
    failed: std::sync::atomic::AtomicBool,
    done: parking_lot::Mutex<Option<oneshot::Sender<bool>>>,
}

impl Tracker {
    fn settled(&self, recorded: bool) {
        use std::sync::atomic::Ordering;
        if !recorded {
            self.failed.store(true, Ordering::SeqCst);
        }
        if self.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.finish();
        }
    }

    fn finish(&self) {
        if let Some(done) = self.done.lock().take() {
            let _ = done.send(!self.failed.load(std::sync::atomic::Ordering::SeqCst));
        }
    }
}

/// A fresh delivery's share of its batch: reports it recorded, or, dropped without, not.
struct Ticket(Option<Arc<Tracker>>);

impl Ticket {
    fn recorded(mut self) {
        if let Some(t) = self.0.take() {
            t.settled(true);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.settled(false);
        }
    }
}

/// A delivery in hand: claimed by the poll (recorded, no ticket), or fresh with its ticket.
type Held = (Claimed, Option<Ticket>);

/// The `webhooks` group's consumer settings from `base`: its batches stay with it while the
/// deliverer holds their deliveries, and several are in hand at once.
pub fn consumer_config(
    deliverer: &Deliverer,
    base: crate::events::consumer::ConsumerConfig,
) -> crate::events::consumer::ConsumerConfig {
    crate::events::consumer::ConsumerConfig {
        claim_idle: base.claim_idle.max(deliverer.fresh_hold()),
        in_flight: FRESH_BATCHES,
        ..base
    }
}

/// An attempt for the settler: the delivery, what came of it, and a fresh one's ticket.
type Settled = (Claimed, AttemptResult, Option<Ticket>);

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
    settled: mpsc::Sender<Settled>,
    to_settle: parking_lot::Mutex<Option<mpsc::Receiver<Settled>>>,
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

    /// Delivers until `shutdown`: `fresh` deliveries at once, due ones every `poll`.
    pub async fn run(self: Arc<Self>, mut fresh: mpsc::Receiver<FreshBatch>, shutdown: CancellationToken) {
        let drained = CancellationToken::new();
        let settler =
            self.to_settle.lock().take().map(|rx| tokio::spawn(self.clone().settle_loop(rx, drained.clone())));
        let mut poll = tokio::time::interval(self.config.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                batch = fresh.recv() => match batch {
                    Some(batch) => {
                        let held = batch.deliveries.into_iter().map(|(d, t)| (d, Some(t))).collect();
                        if let Err(e) = self.start(held).await {
                            tracing::warn!(error = %e, "fresh webhook deliveries not started; their events are fanned out again");
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

    /// Settles attempts a batch at a time until `drained` (then what is left, and returns), with
    /// up to [`SETTLE_COMMITS`] transactions at once: a commit waits for the disk, and attempts
    /// keep ending meanwhile (they gather into the next batch while every commit is busy).
    async fn settle_loop(self: Arc<Self>, mut results: mpsc::Receiver<Settled>, drained: CancellationToken) {
        let commits = Arc::new(Semaphore::new(SETTLE_COMMITS));
        let mut committing = tokio::task::JoinSet::new();
        loop {
            let Ok(permit) = commits.clone().acquire_owned().await else { break };
            let mut batch = Vec::with_capacity(SETTLE_BATCH);
            let mut more = tokio::select! {
                n = results.recv_many(&mut batch, SETTLE_BATCH) => n > 0,
                _ = drained.cancelled() => {
                    while let Ok(r) = results.try_recv() {
                        batch.push(r);
                    }
                    false
                }
            };
            // A small batch waits a moment for more: a commit costs about the same for ten
            // attempts as for hundreds.
            let linger = tokio::time::sleep(SETTLE_LINGER);
            tokio::pin!(linger);
            while more && batch.len() < SETTLE_BATCH / 4 {
                let room = SETTLE_BATCH - batch.len();
                tokio::select! {
                    n = results.recv_many(&mut batch, room) => more = n > 0,
                    _ = &mut linger => break,
                    _ = drained.cancelled() => break,
                }
            }
            let this = self.clone();
            committing.spawn(async move {
                this.commit(batch).await;
                drop(permit);
            });
            while committing.try_join_next().is_some() {}
            if !more {
                break;
            }
        }
        while committing.join_next().await.is_some() {}
    }

    /// Settles `batch` in one transaction (tried three times; after that its claimed deliveries
    /// stay held until their lease ends and are attempted again, and its fresh ones' events are
    /// fanned out again).
    async fn commit(&self, batch: Vec<Settled>) {
        if batch.is_empty() {
            return;
        }
        let (attempts, tickets): (Vec<(Claimed, AttemptResult)>, Vec<Option<Ticket>>) =
            batch.into_iter().map(|(d, r, t)| ((d, r), t)).unzip();
        for attempt in 1..=3 {
            let settled = async {
                let mut tx = self.db.begin().await?;
                let changes = webhooks::settle(&mut tx, &attempts).await?;
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
                    tickets.into_iter().flatten().for_each(Ticket::recorded);
                    return;
                }
                Err(e) if attempt == 3 => {
                    tracing::warn!(attempts = attempts.len(), error = %e, "webhook attempts not recorded; they are sent again");
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await,
            }
        }
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
            started += self.start(claimed.into_iter().map(|d| (d, None)).collect()).await?;
            if (n as i64) < free {
                return Ok(started);
            }
        }
    }

    /// How long a claim holds a delivery, and a fresh one is this worker's.
    pub fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::minutes(1))
    }

    /// The longest from a fresh batch's reading to its deliveries being recorded: the `webhooks`
    /// consumer group must leave its events with this consumer at least that long.
    pub fn fresh_hold(&self) -> Duration {
        self.config.lease + SETTLE_MARGIN
    }

    /// Starts the attempts of `held` deliveries as slots free up. One whose hold would end
    /// before its attempt could (it waited too long for a slot) is not sent: a fresh one is
    /// recorded as due, for the poll; a claimed one is left to the end of its lease, when another
    /// worker may take it (two must never send it at once). Returns how many started.
    async fn start(self: &Arc<Self>, held: Vec<Held>) -> anyhow::Result<usize> {
        let mut started = 0;
        let mut late = Vec::new();
        let needs = chrono::Duration::from_std(self.config.timeout + SETTLE_MARGIN).unwrap_or(chrono::Duration::MAX);
        for (d, ticket) in held {
            let permit = self.slots.clone().acquire_owned().await.context("the deliverer stopped")?;
            if self.clock.now() + needs > d.locked_until {
                tracing::debug!(delivery = %d.id, "held too briefly to attempt");
                if let Some(ticket) = ticket {
                    late.push((d, ticket));
                }
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                let id = d.id;
                // Boxed: the attempt's future is large, and a task's future is moved as it starts.
                if let Err(e) = Box::pin(this.attempt(d, ticket)).await {
                    tracing::warn!(delivery = %id, error = %e, "webhook attempt not recorded; it is sent again");
                }
                drop(permit);
            });
            started += 1;
        }
        if !late.is_empty() {
            let now = self.clock.now();
            self.defer(late, now).await?;
        }
        Ok(started)
    }

    /// Records fresh deliveries as due at `at`, for the poll.
    async fn defer(&self, fresh: Vec<(Claimed, Ticket)>, at: DateTime<Utc>) -> anyhow::Result<()> {
        let deliveries: Vec<&Claimed> = fresh.iter().map(|(d, _)| d).collect();
        let mut conn = self.db.acquire().await?;
        webhooks::defer(&mut conn, &deliveries, at).await?;
        fresh.into_iter().for_each(|(_, ticket)| ticket.recorded());
        Ok(())
    }

    /// One attempt of held delivery `d` (fresh with its `ticket`, or claimed).
    async fn attempt(&self, d: Claimed, ticket: Option<Ticket>) -> anyhow::Result<()> {
        if let Some(limit) = d.rate_limit
            && !self.within_rate(d.endpoint_id, limit).await
        {
            // Over the cap: due again the next second, no attempt spent.
            let next_second = self.clock.now() + chrono::Duration::seconds(1);
            let mut conn = self.db.acquire().await?;
            webhooks::defer(&mut conn, &[&d], next_second).await?;
            if let Some(ticket) = ticket {
                ticket.recorded();
            }
            return Ok(());
        }
        let at = self.clock.now();
        let result = self.send(&d, at).await;
        self.metrics.webhook_attempt(match (result.succeeded, result.gone) {
            (true, _) => "delivered",
            (_, true) => "gone",
            _ => "failed",
        });
        self.settled.send((d, result, ticket)).await.map_err(|_| anyhow::anyhow!("the settler stopped"))?;
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
        let body = d.payload.clone().into_bytes();
        let secret = Secret::parse(&d.secret).map_err(|e| e.to_string())?;
        let previous = d.previous_secret.as_deref().and_then(|s| Secret::parse(s).ok());
        let mut secrets = vec![&secret];
        secrets.extend(previous.as_ref());
        let id = format!("msg_{}", d.event_id.simple());
        // The moment of sending, as receivers check it against their own clock.
        let timestamp = Utc::now().timestamp();
        let signature = nimbus_webhooks::sign(&secrets, &id, timestamp, &body);
        let request = self
            .client
            .post(d.url.as_str())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .build()
            .map_err(|e| format!("bad URL: {}", error_chain(&e)))?;
        let url_host = request.url().host_str().unwrap_or_default().to_owned();
        let url_host = url_host.as_str();
        self.guard.check_url(request.url()).map_err(|refusal| refusal.to_string())?;
        let sent = self.client.execute(request).await;
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
