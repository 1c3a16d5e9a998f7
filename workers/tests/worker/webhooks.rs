//! Webhooks end to end: domain events from a real job to signed deliveries, checked by the
//! reference verifier (PyPI `standardwebhooks`) in a receiver on loopback; the retry schedule
//! with the clock injected; 410; the SSRF guard on loopback, unspecified, IPv4-mapped and
//! named addresses (the other ranges are the guard's unit tests, with a resolver double);
//! worker processes killed mid-way.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use nimbus_db::events::{self, NewEvent, types};
use nimbus_db::webhooks::{self, Endpoint};
use nimbus_domain::TenantId;
use nimbus_jobs::{Clock, ManualClock};
use nimbus_webhooks::{AllowList, Secret};
use nimbus_worker::runtime::EventsOptions;
use nimbus_worker::webhook_delivery::{DeliveryConfig, FreshBatch};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{Harness, Workers, another_tenant, wait_until};

/// The receiver (`infra/testing/webhook_receiver.py`), killed when dropped.
struct Receiver {
    child: Child,
    port: u16,
    log: PathBuf,
    dir: PathBuf,
}

impl Receiver {
    fn start() -> Receiver {
        let python = std::env::var("NIMBUS_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| {
            panic!("NIMBUS_PYTHON is not set: run `make test`, which points it at the venv with standardwebhooks")
        });
        let dir = std::env::temp_dir().join(format!("nimbus-receiver-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let (port_file, log) = (dir.join("port"), dir.join("log.jsonl"));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/testing/webhook_receiver.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(&port_file)
            .arg(&log)
            .stdin(Stdio::null())
            .spawn()
            .expect("the receiver starts");
        for _ in 0..200 {
            if let Ok(port) = std::fs::read_to_string(&port_file) {
                return Receiver { child, port: port.trim().parse().unwrap(), log, dir };
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the webhook receiver did not start");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    async fn configure(&self, path: &str, config: Value) {
        let answer =
            reqwest::Client::new().post(self.url(&format!("_config/{path}"))).json(&config).send().await.unwrap();
        assert!(answer.status().is_success());
    }

    /// Every request received so far.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn requests_to(&self, path: &str) -> Vec<Value> {
        self.requests().into_iter().filter(|r| r["path"] == path).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn endpoint(h: &Harness, tenant: TenantId, url: &str, types: &[&str]) -> (Endpoint, String) {
    let secret = Secret::generate().encode();
    let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
    let new = webhooks::NewEndpoint {
        url,
        description: "",
        event_types: &types,
        enabled: true,
        rate_limit: None,
        secret: &secret,
    };
    let e = webhooks::create(h.db.pool(), tenant, &new).await.unwrap();
    (e, secret)
}

async fn test_event(h: &Harness, tenant: TenantId, endpoint: Uuid) -> Uuid {
    let event = NewEvent {
        kind: types::WEBHOOK_TEST,
        at: Utc::now(),
        tenant: Some(tenant),
        resource: Some(("webhook_endpoint", endpoint.to_string())),
        data: json!({"endpointId": endpoint}),
    };
    events::record(h.db.pool(), &event).await.unwrap()
}

fn loopback_events(clock: Option<Arc<ManualClock>>) -> impl FnOnce(&mut nimbus_worker::runtime::RuntimeOptions) {
    move |o| {
        o.events = Some(EventsOptions {
            delivery: DeliveryConfig {
                allow: AllowList::parse("127.0.0.1/32").unwrap(),
                poll: Duration::from_millis(100),
                ..DeliveryConfig::default()
            },
            ..EventsOptions::default()
        });
        if let Some(clock) = clock {
            o.clock = clock;
        }
    }
}

async fn attempts_of(h: &Harness, delivery: Uuid) -> Vec<webhooks::Attempt> {
    webhooks::attempts(h.db.pool(), delivery).await.unwrap()
}

/// The endpoint's delivery of its test event. Only that one: an endpoint of every type may also get
/// the seeded tenant's `apikey.created`, when the consumer reaches that event after the endpoint
/// exists.
async fn delivery_of(h: &Harness, endpoint: Uuid) -> Option<(Uuid, String, Option<chrono::DateTime<Utc>>)> {
    sqlx::query_as(
        "select id, status, next_attempt_at from webhook_deliveries \
         where endpoint_id = $1 and event_type = 'webhook.test'",
    )
    .bind(endpoint)
    .fetch_optional(h.db.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_completion_reaches_each_subscribed_endpoint_once_signed_to_the_standard() {
    let h = Harness::new().await;
    let receiver = Receiver::start();
    let (all, all_secret) = endpoint(&h, h.tenant, &receiver.url("all"), &[]).await;
    let (jobs, jobs_secret) = endpoint(&h, h.tenant, &receiver.url("jobs"), &["job.succeeded", "job.failed"]).await;
    let (_backups, _) = endpoint(&h, h.tenant, &receiver.url("backups"), &["backup.completed"]).await;
    let (other_tenant, _) = another_tenant(&h).await;
    let (_other, _) = endpoint(&h, other_tenant, &receiver.url("other"), &[]).await;
    receiver.configure("all", json!({"secrets": [all_secret]})).await;
    receiver.configure("jobs", json!({"secrets": [jobs_secret.clone()]})).await;
    let worker = h.start_with("hooks-1", 2, loopback_events(None)).await;

    let (vm, enqueued) = h.accept("hooked", 3).await;
    h.push(&enqueued).await;
    let job = h.final_job(enqueued.job.id, Duration::from_secs(60)).await;
    assert_eq!(job.status, nimbus_domain::JobStatus::Succeeded, "{job:?}");
    let succeeded = |path: &'static str| {
        let r = &receiver;
        move || {
            let n = r
                .requests_to(path)
                .iter()
                .filter(|q| q["body"].as_str().unwrap().contains("\"job.succeeded\""))
                .count();
            async move { n >= 1 }
        }
    };
    assert!(wait_until(Duration::from_secs(20), succeeded("all")).await, "{:#?}", receiver.requests());
    assert!(wait_until(Duration::from_secs(20), succeeded("jobs")).await, "{:#?}", receiver.requests());
    // Anything late or twice would arrive meanwhile.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let of_type = |path: &str, kind: &str| -> Vec<Value> {
        receiver
            .requests_to(path)
            .into_iter()
            .filter(|r| serde_json::from_str::<Value>(r["body"].as_str().unwrap()).unwrap()["type"] == kind)
            .collect()
    };
    let (to_all, to_jobs) = (of_type("all", "job.succeeded"), of_type("jobs", "job.succeeded"));
    assert_eq!((to_all.len(), to_jobs.len()), (1, 1), "one delivery per subscribed endpoint");
    for r in to_all.iter().chain(&to_jobs) {
        assert_eq!(r["verified"], json!([true]), "the reference verifier accepts the signature: {r}");
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["data"]["id"], json!(job.id.to_string()));
        assert_eq!(body["tenantId"], json!(h.tenant.to_string()));
    }
    assert_eq!(to_all[0]["id"], to_jobs[0]["id"], "webhook-id is the event's, the receivers' idempotency key");
    assert!(receiver.requests_to("backups").is_empty(), "not subscribed to job events");
    assert!(receiver.requests_to("other").is_empty(), "another tenant's endpoint hears nothing");
    // The subscription to every type also got the instance's life.
    let statuses: Vec<String> = of_type("all", "instance.status_changed")
        .iter()
        .map(|r| {
            serde_json::from_str::<Value>(r["body"].as_str().unwrap()).unwrap()["data"]["status"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(statuses.contains(&"running".to_owned()), "{statuses:?}");
    assert_eq!(of_type("all", "instance.created").len(), 1);
    assert_eq!(of_type("jobs", "instance.created").len(), 0);
    let rows: i64 = sqlx::query_scalar(
        "select count(*) from webhook_deliveries d join events e on e.id = d.event_id \
         where e.type = 'job.succeeded' and e.resource_id = $1 and d.status = 'succeeded'",
    )
    .bind(job.id.to_string())
    .fetch_one(h.db.pool())
    .await
    .unwrap();
    assert_eq!(rows, 2);
    let _ = vm;

    // A rotation: both secrets sign until the old one expires, and each verifies.
    let new_secret = Secret::generate().encode();
    webhooks::rotate_secret(h.db.pool(), h.tenant, jobs.id, &new_secret, Utc::now() + chrono::Duration::hours(1))
        .await
        .unwrap();
    receiver.configure("jobs", json!({"secrets": [new_secret, jobs_secret]})).await;
    test_event(&h, h.tenant, jobs.id).await;
    let tested =
        || async { receiver.requests_to("jobs").iter().any(|r| r["body"].as_str().unwrap().contains("webhook.test")) };
    assert!(wait_until(Duration::from_secs(20), tested).await);
    let rotated = receiver
        .requests_to("jobs")
        .into_iter()
        .find(|r| r["body"].as_str().unwrap().contains("webhook.test"))
        .unwrap();
    assert_eq!(rotated["signature"].as_str().unwrap().split(' ').count(), 2, "two signatures during a rotation");
    assert_eq!(rotated["verified"], json!([true, true]), "old and new secret both verify: {rotated}");
    assert!(
        receiver.requests_to("all").iter().all(|r| !r["body"].as_str().unwrap().contains("webhook.test")),
        "a test event goes to its endpoint only"
    );
    let _ = all;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_follow_the_schedule_by_the_injected_clock_and_410_or_a_redirect_are_failures() {
    let h = Harness::new().await;
    let receiver = Receiver::start();
    let start = Utc::now();
    let clock = Arc::new(ManualClock::at(start));
    // Subscribed to a type nothing here emits: each gets its test event only.
    let (flaky, _) = endpoint(&h, h.tenant, &receiver.url("flaky"), &["invoice.issued"]).await;
    let (gone, _) = endpoint(&h, h.tenant, &receiver.url("gone"), &["invoice.issued"]).await;
    let (moved, _) = endpoint(&h, h.tenant, &receiver.url("moved"), &["invoice.issued"]).await;
    receiver.configure("flaky", json!({"fail": 3, "status": 503})).await;
    receiver.configure("gone", json!({"gone": true})).await;
    receiver.configure("moved", json!({"redirect": "http://10.0.0.1/hook"})).await;
    let worker = h.start_with("hooks-2", 2, loopback_events(Some(clock.clone()))).await;
    for e in [&flaky, &gone, &moved] {
        test_event(&h, h.tenant, e.id).await;
    }

    // The schedule: at once, then 5 s, 5 min, 30 min (each ±10 %), by the injected clock.
    let mut expected_wait = [5.0, 300.0, 1800.0].into_iter();
    for attempt in 1..=3 {
        let failed = || async {
            delivery_of(&h, flaky.id).await.is_some_and(|(_, _, next)| next.is_some())
                && receiver.requests_to("flaky").len() >= attempt
        };
        assert!(wait_until(Duration::from_secs(20), failed).await, "attempt {attempt}: {:#?}", receiver.requests());
        let deadline = Duration::from_secs(10);
        let settled = || async {
            let (id, _, _) = delivery_of(&h, flaky.id).await.unwrap();
            attempts_of(&h, id).await.len() >= attempt
        };
        assert!(wait_until(deadline, settled).await);
        let (id, status, next) = delivery_of(&h, flaky.id).await.unwrap();
        assert_eq!(status, "pending");
        let wait = (next.unwrap() - clock.now()).num_milliseconds() as f64 / 1000.0;
        let expected = expected_wait.next().unwrap();
        assert!(
            wait >= expected * 0.9 - 0.01 && wait <= expected * 1.1 + 0.01,
            "attempt {attempt}: waits {wait} s, not ~{expected} s"
        );
        assert_eq!(attempts_of(&h, id).await.last().unwrap().status_code, Some(503));
        // Nothing is sent before the time comes.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            receiver.requests_to("flaky").len(),
            attempt,
            "{:#?} {:#?}",
            receiver.requests_to("flaky"),
            attempts_of(&h, id).await
        );
        clock.set(next.unwrap() + chrono::Duration::milliseconds(1));
    }
    let delivered = || async { delivery_of(&h, flaky.id).await.is_some_and(|(_, s, _)| s == "succeeded") };
    assert!(wait_until(Duration::from_secs(20), delivered).await);
    let (id, _, _) = delivery_of(&h, flaky.id).await.unwrap();
    let log = attempts_of(&h, id).await;
    assert_eq!(log.iter().map(|a| a.status_code).collect::<Vec<_>>(), [Some(503), Some(503), Some(503), Some(200)]);
    assert!(log[3].response_body.contains("\"received\": 4"), "the answer is logged: {}", log[3].response_body);
    // Operators see the same attempts in the endpoint's health.
    let health = webhooks::all_with_health(h.db.pool(), clock.now()).await.unwrap();
    let flaky_health = health.iter().find(|e| e.endpoint.id == flaky.id).unwrap();
    assert_eq!((flaky_health.attempts_24h, flaky_health.succeeded_24h), (4, 1));
    assert_eq!(flaky_health.last_attempt_at, log.last().map(|a| a.attempted_at));

    // 410: failed at once, the endpoint disabled, its owner told by an event.
    let disabled = || async { !webhooks::get(h.db.pool(), h.tenant, gone.id).await.unwrap().enabled };
    assert!(wait_until(Duration::from_secs(20), disabled).await);
    let e = webhooks::get(h.db.pool(), h.tenant, gone.id).await.unwrap();
    assert_eq!(e.disabled_reason.as_deref(), Some("gone"));
    assert_eq!(delivery_of(&h, gone.id).await.unwrap().1, "failed");
    let told = events::for_tenant(h.db.pool(), h.tenant, Some(types::WEBHOOK_ENDPOINT_DISABLED)).await.unwrap();
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].data["reason"], "gone");

    // A redirect is a failure and is never followed (to a private address here).
    let (moved_id, status, _) = delivery_of(&h, moved.id).await.unwrap();
    assert_eq!(status, "pending", "retried later");
    assert_eq!(attempts_of(&h, moved_id).await[0].status_code, Some(302));
    // The clock crossed its retry times too: each retry was another 302, none followed.
    let moved_attempts = attempts_of(&h, moved_id).await;
    assert!(moved_attempts.iter().all(|a| a.status_code == Some(302) && !a.succeeded));
    assert_eq!(receiver.requests_to("moved").len(), moved_attempts.len());
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_refuses_loopback_unspecified_mapped_and_named_private_targets_and_logs_why() {
    let h = Harness::new().await;
    let receiver = Receiver::start();
    let port = receiver.port;
    // The allow-list off, as in production.
    let worker = h
        .start_with("hooks-3", 2, |o| {
            o.events = Some(EventsOptions {
                delivery: DeliveryConfig { poll: Duration::from_millis(100), ..DeliveryConfig::default() },
                ..EventsOptions::default()
            })
        })
        .await;
    let targets = [
        (format!("http://127.0.0.1:{port}/a"), "refused: 127.0.0.1 is loopback"),
        (format!("http://[::1]:{port}/a"), "refused: ::1 is loopback"),
        (format!("http://0.0.0.0:{port}/a"), "refused: 0.0.0.0 is unspecified"),
        (format!("http://[::ffff:127.0.0.1]:{port}/a"), "refused: 127.0.0.1 is loopback"),
        (format!("http://localhost:{port}/a"), "is loopback"),
    ];
    let mut endpoints = Vec::new();
    for (url, _) in &targets {
        let (e, _) = endpoint(&h, h.tenant, url, &[]).await;
        test_event(&h, h.tenant, e.id).await;
        endpoints.push(e);
    }
    for (e, (url, why)) in endpoints.iter().zip(&targets) {
        let attempted = || async {
            match delivery_of(&h, e.id).await {
                Some((id, _, _)) => !attempts_of(&h, id).await.is_empty(),
                None => false,
            }
        };
        assert!(wait_until(Duration::from_secs(20), attempted).await, "{url}");
        let (id, status, _) = delivery_of(&h, e.id).await.unwrap();
        let first = &attempts_of(&h, id).await[0];
        assert_eq!(first.status_code, None, "{url}: no request was made");
        let error = first.error.as_deref().unwrap_or_default();
        assert!(error.starts_with("refused:") && error.contains(why), "{url}: {error}");
        assert_eq!(status, "pending", "{url}: retried by the schedule, refused each time");
    }
    assert!(receiver.requests().is_empty(), "nothing reached the receiver");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_worker_mid_way_loses_no_delivery_and_makes_none_twice() {
    let h = Harness::new().await;
    let receiver = Receiver::start();
    let (hook, secret) = endpoint(&h, h.tenant, &receiver.url("bulk"), &[]).await;
    receiver.configure("bulk", json!({"secrets": [secret]})).await;
    let mut workers = Workers::default();
    workers.spawn(&h, "events-a");
    workers.spawn(&h, "events-b");
    let mut sent = Vec::new();
    for i in 0..120 {
        sent.push(test_event(&h, h.tenant, hook.id).await);
        if i == 40 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            workers.kill("events-a");
        }
    }
    let all = || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from webhook_deliveries where endpoint_id = $1 and status = 'succeeded' and event_id = any($2)",
        )
        .bind(hook.id)
        .bind(&sent)
            .fetch_one(h.db.pool())
            .await
            .unwrap();
        n == 120
    };
    let delivered = wait_until(Duration::from_secs(90), all).await;
    let states: Vec<(String, i64)> =
        sqlx::query_as("select status, count(*) from webhook_deliveries where endpoint_id = $1 group by status")
            .bind(hook.id)
            .fetch_all(h.db.pool())
            .await
            .unwrap();
    let unrelayed: i64 = sqlx::query_scalar("select count(*) from events where relayed_at is null")
        .fetch_one(h.db.pool())
        .await
        .unwrap();
    assert!(delivered, "every event delivered after the kill: {states:?}, {unrelayed} events not relayed");
    let expected: std::collections::BTreeSet<String> = sent.iter().map(|e| format!("msg_{}", e.simple())).collect();
    // The tenant's earlier events (the seed's API key) reach the endpoint too: only the test's count.
    let ours: Vec<Value> =
        receiver.requests_to("bulk").into_iter().filter(|r| expected.contains(r["id"].as_str().unwrap())).collect();
    let ids: std::collections::BTreeSet<String> = ours.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, expected, "each event reached the receiver");
    assert!(ours.iter().all(|r| r["verified"] == json!([true])));
    // A repeat can only come from an attempt in flight when its worker died (answered, not yet
    // logged); it carries the same webhook-id, which receivers deduplicate on.
    let repeats = ours.len() - ids.len();
    eprintln!("{repeats} request(s) repeated after the kill");
    let per_event: i64 = sqlx::query_scalar(
        "select coalesce(max(n), 0) from (select count(*) as n from webhook_deliveries where endpoint_id = $1 group by event_id) c",
    )
    .bind(hook.id)
    .fetch_one(h.db.pool())
    .await
    .unwrap();
    assert_eq!(per_event, 1, "one delivery per event, whichever consumer handled it");
    workers.assert_alive("events-b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_for_five_days_is_disabled_and_its_owner_told() {
    let h = Harness::new().await;
    let receiver = Receiver::start();
    let start = Utc::now();
    let clock = Arc::new(ManualClock::at(start));
    let (down, _) = endpoint(&h, h.tenant, &receiver.url("down"), &["invoice.issued"]).await;
    receiver.configure("down", json!({"fail": 1000, "status": 500})).await;
    let worker = h.start_with("hooks-5", 2, loopback_events(Some(clock.clone()))).await;
    test_event(&h, h.tenant, down.id).await;
    let failing = || async { webhooks::get(h.db.pool(), h.tenant, down.id).await.unwrap().failing_since.is_some() };
    assert!(wait_until(Duration::from_secs(20), failing).await);
    assert!(
        webhooks::get(h.db.pool(), h.tenant, down.id).await.unwrap().enabled,
        "one failure is not five days of them"
    );

    // Five days on, the next failure disables it.
    clock.set(start + chrono::Duration::days(5) + chrono::Duration::minutes(1));
    test_event(&h, h.tenant, down.id).await;
    let disabled = || async { !webhooks::get(h.db.pool(), h.tenant, down.id).await.unwrap().enabled };
    assert!(wait_until(Duration::from_secs(20), disabled).await);
    let e = webhooks::get(h.db.pool(), h.tenant, down.id).await.unwrap();
    assert_eq!(e.disabled_reason.as_deref(), Some("failing"));
    let told = events::for_tenant(h.db.pool(), h.tenant, Some(types::WEBHOOK_ENDPOINT_DISABLED)).await.unwrap();
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].data["reason"], "failing");
    // Its owner's feed says so (and it emails by default: `nimbus_domain::events`).
    let fed = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from notifications where type = 'webhook.endpoint_disabled'")
            .fetch_one(h.db.pool())
            .await
            .unwrap()
            > 0
    };
    assert!(wait_until(Duration::from_secs(20), fed).await);
    let requests = receiver.requests_to("down").len();
    test_event(&h, h.tenant, down.id).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.requests_to("down").len(), requests, "a disabled endpoint is sent nothing");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoints_rate_cap_spreads_its_deliveries_without_spending_attempts() {
    let h = Harness::new().await;
    let receiver = Receiver::start();
    let secret = Secret::generate().encode();
    let types = vec!["invoice.issued".to_owned()];
    let url = receiver.url("capped");
    let new = webhooks::NewEndpoint {
        url: &url,
        description: "",
        event_types: &types,
        enabled: true,
        rate_limit: Some(2),
        secret: &secret,
    };
    let capped = webhooks::create(h.db.pool(), h.tenant, &new).await.unwrap();
    let worker = h.start_with("hooks-6", 2, loopback_events(None)).await;
    for _ in 0..8 {
        test_event(&h, h.tenant, capped.id).await;
    }
    let all = || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from webhook_deliveries where endpoint_id = $1 and status = 'succeeded'",
        )
        .bind(capped.id)
        .fetch_one(h.db.pool())
        .await
        .unwrap()
            == 8
    };
    assert!(wait_until(Duration::from_secs(30), all).await);
    let (first, last, attempts): (chrono::DateTime<Utc>, chrono::DateTime<Utc>, i64) = sqlx::query_as(
        "select min(x.at), max(x.at), count(*) from webhook_deliveries d, \
           lateral (select (l ->> 'at')::timestamptz from jsonb_array_elements(d.attempt_log) l \
             union all select d.last_attempt_at where d.last_attempt_at is not null) x(at) \
         where d.endpoint_id = $1",
    )
    .bind(capped.id)
    .fetch_one(h.db.pool())
    .await
    .unwrap();
    assert_eq!(attempts, 8, "waiting for the cap spends no attempt");
    assert!(last - first >= chrono::Duration::milliseconds(2000), "8 at 2/s take over 2 s: {}", last - first);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_delivery_held_too_briefly_is_recorded_due_and_sent_once_by_the_poll() {
    let h = Harness::new().await;
    let receiver = Receiver::start();
    let (hook, _) = endpoint(&h, h.tenant, &receiver.url("late"), &[]).await;
    let event = test_event(&h, h.tenant, hook.id).await;
    // Owed with a hold too short for an attempt (15 s timeout), as when a batch waited long for
    // free slots: its consumer could lose its events to another before the attempt ended.
    let owed = webhooks::owed(h.db.pool(), &[event], Utc::now(), chrono::Duration::seconds(2)).await.unwrap();
    assert_eq!(owed.len(), 1);
    assert!(!owed[0].recorded);
    let config = DeliveryConfig {
        allow: AllowList::parse("127.0.0.1/32").unwrap(),
        poll: Duration::from_millis(100),
        ..DeliveryConfig::default()
    };
    let redis = h.redis.client().get_connection_manager().await.unwrap();
    let clock: Arc<dyn Clock> = Arc::new(nimbus_jobs::SystemClock);
    let deliverer = Arc::new(
        nimbus_worker::webhook_delivery::Deliverer::new(h.db.pool().clone(), redis, h.redis.prefix(), clock, config)
            .unwrap(),
    );
    let (fresh, rx) = tokio::sync::mpsc::channel(1);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(deliverer.run(rx, shutdown.clone()));
    let (batch, recorded) = FreshBatch::new(owed);
    fresh.send(batch).await.unwrap();
    assert!(recorded.wait().await, "recorded as due, so its events may be acknowledged");

    let sent = || async { delivery_of(&h, hook.id).await.is_some_and(|(_, status, _)| status == "succeeded") };
    assert!(wait_until(Duration::from_secs(20), sent).await, "the poll sends it");
    let (delivery, _, _) = delivery_of(&h, hook.id).await.unwrap();
    assert_eq!(attempts_of(&h, delivery).await.len(), 1);
    assert_eq!(receiver.requests_to("late").len(), 1, "sent once");

    // Its events handled again (their acknowledgement lost) owe nothing more.
    let again = webhooks::owed(h.db.pool(), &[event], Utc::now(), chrono::Duration::seconds(30)).await.unwrap();
    assert!(again.is_empty(), "{again:?}");
    shutdown.cancel();
    running.await.unwrap();
}
