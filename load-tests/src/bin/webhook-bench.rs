//! Webhook fan-out (issue 14, item 6): events written to Postgres, relayed to the Redis stream,
//! fanned out by the `webhooks` consumer group and delivered, signed, through the SSRF guard, by
//! the deliverer (all as `nimbus-worker` runs them), to 10 endpoints on a local receiver; next to
//! the floor: the same signed requests sent by a plain client loop with the same concurrency, in
//! the same run, to the same receiver, once before the fan-out and once after (the machine's speed
//! drifts within a run; the ratio is to the mean of both).
//!
//! Two phases: a burst (10,000 events committed as fast as possible: deliveries per second, and
//! the delay from each event's commit to its delivery, which under a backlog is mostly queueing),
//! then a paced run (events at a steady rate the system keeps up with: the delay a subscriber sees
//! in normal operation). Checks: every (event, endpoint) delivered, none twice. Redis memory before
//! and after (the stream is trimmed below what every group acknowledged).
//! Goal: ≥ 0.5× the floor's rate, p99 delay ≤ 1 s when paced, zero lost, zero duplicated.
//!
//! PostgreSQL runs durable (fsync and synchronous_commit on, `services.sh --persist`).
//!
//! Reproduce: `cargo build --release -p nimbus-load-tests --bins && target/release/webhook-bench`
//! (or `make bench`).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use clap::Parser;
use nimbus_db::PgPool;
use nimbus_load_tests::services::Services;
use nimbus_worker::events::consumer::{Consumer, ConsumerConfig};
use nimbus_worker::events::relay::{EventRelay, EventRelayConfig};
use nimbus_worker::events::sinks::{self, NotificationSink, WebhookSink};
use nimbus_worker::webhook_delivery::{Deliverer, DeliveryConfig};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Parser, Debug)]
#[command(about = "Webhook fan-out: 10,000 events to 10 endpoints, against a plain client loop")]
struct Args {
    /// Events in the burst.
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    /// Endpoints subscribed to every event.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Attempts in flight at once (the deliverer's and the floor's).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Events per second in the paced phase.
    #[arg(long, default_value_t = 100)]
    paced_rate: usize,
    /// Events in the paced phase.
    #[arg(long, default_value_t = 1_000)]
    paced_events: usize,
    /// Services folder (removed at the end); default /tmp/nimbus-webhook-bench-PID.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// What the receiver got: per request, the webhook-id, the endpoint and when (µs since the epoch).
#[derive(Default)]
struct Received(Mutex<Vec<(String, u16, u64)>>);

fn micros_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

async fn receive(State(got): State<Arc<Received>>, Path(endpoint): Path<u16>, headers: HeaderMap) -> &'static str {
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    got.0.lock().push((id, endpoint, micros_now()));
    "ok"
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir =
        args.dir.clone().unwrap_or_else(|| PathBuf::from(format!("/tmp/nimbus-webhook-bench-{}", std::process::id())));
    let services = Services::start(&dir, true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = runtime.block_on(run(&args, &services));
    drop(services);
    result
}

async fn redis_memory(redis: &mut redis::aio::ConnectionManager) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(redis).await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_default())
}

/// Records `n` events of the tenant in transactions of `batch`; returns each event's id and the
/// moment its transaction committed (µs since the epoch).
async fn record_events(
    db: &PgPool,
    tenant: Uuid,
    n: usize,
    batch: usize,
    pace: Option<Duration>,
) -> anyhow::Result<HashMap<String, u64>> {
    let mut committed = HashMap::with_capacity(n);
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let take = batch.min(n - done);
        if let Some(every) = pace {
            let due = started + every * done as u32;
            tokio::time::sleep_until(due.into()).await;
        }
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "insert into events (id, type, occurred_at, tenant_id, resource_type, resource_id, data) \
             select gen_random_uuid(), 'invoice.issued', now(), $1, 'invoice', gen_random_uuid()::text, \
               jsonb_build_object('number', '2026-' || i, 'total', '12.34', 'currency', 'EUR') \
             from generate_series(1, $2) as i returning id",
        )
        .bind(tenant)
        .bind(take as i64)
        .fetch_all(db)
        .await?;
        let at = micros_now();
        committed.extend(ids.into_iter().map(|id| (format!("msg_{}", id.simple()), at)));
        done += take;
    }
    Ok(committed)
}

struct Phase {
    deliveries: usize,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    lost: usize,
    duplicated: usize,
}

/// Waits until every (event, endpoint) of `committed` arrived (or `limit` passed) and measures.
async fn settle_phase(
    got: &Received,
    committed: &HashMap<String, u64>,
    endpoints: usize,
    first_commit: u64,
    limit: Duration,
) -> Phase {
    let expected = committed.len() * endpoints;
    let deadline = Instant::now() + limit;
    // Counted as they arrive (each request looked at once), so the waiting costs the system
    // under test next to nothing.
    let (mut looked_at, mut n) = (0, 0);
    loop {
        {
            let got = got.0.lock();
            n += got[looked_at..].iter().filter(|(id, _, _)| committed.contains_key(id)).count();
            looked_at = got.len();
        }
        if n >= expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Anything late or twice arrives meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = got.0.lock();
    let mut seen: HashMap<(&str, u16), usize> = HashMap::new();
    let mut delays = Vec::new();
    let mut last = first_commit;
    for (id, endpoint, at) in got.iter() {
        if let Some(commit) = committed.get(id) {
            *seen.entry((id.as_str(), *endpoint)).or_default() += 1;
            delays.push(at.saturating_sub(*commit));
            last = last.max(*at);
        }
    }
    delays.sort_unstable();
    let pct = |q: f64| {
        delays.get(((delays.len().max(1) - 1) as f64 * q).round() as usize).copied().unwrap_or(0) as f64 / 1000.0
    };
    Phase {
        deliveries: seen.len(),
        seconds: (last - first_commit) as f64 / 1e6,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        lost: expected - seen.len(),
        duplicated: seen.values().map(|n| n - 1).sum(),
    }
}

async fn run(args: &Args, services: &Services) -> anyhow::Result<()> {
    let owner = nimbus_db::connect(&services.var("NIMBUS_DATABASE_URL")?, 4).await?;
    nimbus_db::migrate(&owner).await?;
    let app = nimbus_db::connect(&services.var("NIMBUS_APP_DATABASE_URL")?, 16).await?;
    let tenant = nimbus_db::seed::seed_demo(&owner).await?.tenant.id;
    let redis_client = redis::Client::open(services.var("NIMBUS_REDIS_URL")?)?;
    let mut redis = redis_client.get_connection_manager().await?;

    // The receiver.
    let got = Arc::new(Received::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let router = axum::Router::new().route("/{endpoint}", axum::routing::post(receive)).with_state(got.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let mut secrets = Vec::new();
    for i in 0..args.endpoints {
        let secret = nimbus_webhooks_secret();
        let url = format!("http://127.0.0.1:{port}/{i}");
        let new = nimbus_db::webhooks::NewEndpoint {
            url: &url,
            description: "bench",
            event_types: &[],
            enabled: true,
            rate_limit: None,
            secret: &secret,
        };
        nimbus_db::webhooks::create(&owner, tenant, &new).await?;
        secrets.push((url, secret));
    }
    // The seed's own events (its API key) are not the benchmark's: relay them first.
    sqlx::query("update events set relayed_at = now()").execute(&owner).await?;

    let shutdown = CancellationToken::new();
    let clock: Arc<dyn nimbus_jobs::Clock> = Arc::new(nimbus_jobs::SystemClock);
    let prefix = "nimbus:";
    let delivery = DeliveryConfig {
        concurrency: args.concurrency,
        allow: nimbus_webhooks::AllowList::parse("127.0.0.1/32").map_err(anyhow::Error::msg)?,
        ..DeliveryConfig::default()
    };
    let deliverer = Arc::new(Deliverer::new(app.clone(), redis.clone(), prefix, clock.clone(), delivery)?);
    let (fresh_tx, fresh_rx) = tokio::sync::mpsc::channel(nimbus_worker::webhook_delivery::FRESH_BATCHES);
    let relay_config = EventRelayConfig { trim_every: Duration::from_secs(1), ..EventRelayConfig::default() };
    let relay = EventRelay::new(app.clone(), redis.clone(), prefix, relay_config);
    let consumer = Consumer::new(
        redis_client.clone(),
        nimbus_worker::events::stream_key(prefix),
        sinks::WEBHOOKS,
        "bench".into(),
        WebhookSink::new(app.clone(), clock, deliverer.lease(), fresh_tx),
        nimbus_worker::webhook_delivery::consumer_config(&deliverer, ConsumerConfig::default()),
    );
    // The feed's group runs beside it, as in production (email off).
    let feed = Consumer::new(
        redis_client.clone(),
        nimbus_worker::events::stream_key(prefix),
        sinks::NOTIFICATIONS,
        "bench".into(),
        NotificationSink::new(app.clone(), nimbus_jobs::EventPublisher::new(redis_client.clone(), prefix), false),
        ConsumerConfig::default(),
    );
    let memory_before = redis_memory(&mut redis).await?;
    let tasks = [
        tokio::spawn(relay.run(shutdown.clone())),
        tokio::spawn(consumer.run(shutdown.clone())),
        tokio::spawn(feed.run(shutdown.clone())),
        tokio::spawn(deliverer.clone().run(fresh_rx, shutdown.clone())),
    ];

    println!(
        "webhook fan-out: {} events × {} endpoints, {} attempts in flight (PostgreSQL durable)",
        args.events, args.endpoints, args.concurrency
    );
    // The floor before the fan-out and after it: these machines' speed drifts within a run, and
    // the fan-out is compared with the mean of both.
    let floor_before = floor(args, &secrets).await?;
    let first_commit = micros_now();
    let committed = record_events(&app, tenant.as_uuid(), args.events, 500, None).await?;
    let burst = settle_phase(&got, &committed, args.endpoints, first_commit, Duration::from_secs(600)).await;
    let pacing = Duration::from_secs(1) / args.paced_rate.max(1) as u32;
    let first_paced = micros_now();
    let paced_committed = record_events(&app, tenant.as_uuid(), args.paced_events, 1, Some(pacing)).await?;
    let paced = settle_phase(&got, &paced_committed, args.endpoints, first_paced, Duration::from_secs(300)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let memory_after = redis_memory(&mut redis).await?;
    shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }

    let floor_after = floor(args, &secrets).await?;

    let rate = burst.deliveries as f64 / burst.seconds;
    let floor_rate = (floor_before.per_second() + floor_after.per_second()) / 2.0;
    println!(
        "burst:  {} deliveries in {:.2} s = {:.0}/s; delay from commit p50 {:.0} ms, p99 {:.0} ms (a backlog's queueing)",
        burst.deliveries, burst.seconds, rate, burst.p50_ms, burst.p99_ms
    );
    for (when, floor) in [("before", &floor_before), ("after", &floor_after)] {
        println!(
            "floor {when}: {} plain signed requests in {:.2} s = {:.0}/s ({} errors)",
            floor.requests,
            floor.elapsed.as_secs_f64(),
            floor.per_second(),
            floor.errors
        );
    }
    println!("ratio to the floor (the mean of both, {floor_rate:.0}/s): {:.2}x (goal ≥ 0.5x)", rate / floor_rate);
    println!(
        "paced:  {} events/s × {} endpoints: {} deliveries; delay from commit p50 {:.0} ms, p99 {:.0} ms (goal p99 ≤ 1000 ms)",
        args.paced_rate, args.endpoints, paced.deliveries, paced.p50_ms, paced.p99_ms
    );
    let lost = burst.lost + paced.lost;
    let duplicated = burst.duplicated + paced.duplicated;
    println!("lost {lost}, duplicated {duplicated}");
    println!("Redis used_memory: {} KiB before, {} KiB after", memory_before / 1024, memory_after / 1024);
    let ok = rate / floor_rate >= 0.5 && paced.p99_ms <= 1000.0 && lost == 0 && duplicated == 0;
    println!("{}", if ok { "PASS" } else { "FAIL" });
    anyhow::ensure!(ok, "webhook-bench missed its goal");
    Ok(())
}

/// The floor: as many signed requests as the burst's deliveries, to the same endpoints, sent by a
/// plain client loop with the same concurrency.
async fn floor(args: &Args, secrets: &[(String, String)]) -> anyhow::Result<nimbus_load_tests::Summary> {
    let bodies: Vec<(String, String, String, Vec<u8>)> = (0..args.events)
        .map(|_| format!("msg_{}", Uuid::new_v4().simple()))
        .flat_map(|id| secrets.iter().map(move |(url, secret)| (url.clone(), secret.clone(), id.clone())))
        .map(|(url, secret, id)| {
            let body = serde_json::to_vec(
                &serde_json::json!({"id": id, "type": "invoice.issued", "data": {"total": "12.34"}}),
            )
            .unwrap_or_default();
            (url, secret, id, body)
        })
        .collect();
    let bodies = Arc::new(bodies);
    let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(args.concurrency).build()?;
    let total = bodies.len();
    let summary = nimbus_load_tests::closed_loop(args.concurrency, total, Duration::from_secs(600), move |i| {
        let (client, bodies) = (client.clone(), bodies.clone());
        async move {
            let (url, secret, id, body) = &bodies[i];
            let ts = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
            let secret = nimbus_webhooks::Secret::parse(secret).map_err(|e| anyhow::anyhow!("{e}"))?;
            let signature = nimbus_webhooks::sign(&[&secret], &format!("floor_{id}"), ts, body);
            let r = client
                .post(url.as_str())
                .header("content-type", "application/json")
                .header("webhook-id", format!("floor_{id}"))
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", signature)
                .body(body.clone())
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success());
            Ok(())
        }
    })
    .await;
    Ok(summary)
}

fn nimbus_webhooks_secret() -> String {
    nimbus_webhooks::Secret::generate().encode()
}
