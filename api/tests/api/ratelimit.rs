//! Rate limits over a real Redis: the budget per caller, its headers, the 429, buckets per key
//! and per client address, replicas sharing one bucket, and failing open when Redis is gone.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nimbus_api::Settings;
use nimbus_api::ratelimit::RateLimitSettings;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::support::{ROOMY, TestApp, assert_error, closed_port, new_tenant, split, vm_body};

/// Another API instance over `app`'s database and simulator, with Redis at `redis_url` and
/// keys under `key_prefix`, limited to `per_minute` and trusting `trusted` as proxies; returns
/// its base URL.
async fn instance(app: &TestApp, redis_url: &str, key_prefix: &str, per_minute: u32, trusted: &str) -> String {
    let settings = Settings {
        rate_limit: RateLimitSettings { per_minute, trusted_proxies: trusted.parse().unwrap(), ..Default::default() },
        ..Settings::default()
    };
    app.another_instance(redis_url, key_prefix, settings).await
}

/// An instance on the test Redis, under the test's prefix.
async fn limited(app: &TestApp, per_minute: u32, trusted: &str) -> String {
    instance(app, app.redis.url(), &format!("{}nimbus:", app.redis.prefix()), per_minute, trusted).await
}

async fn get(base: &str, token: Option<&str>, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap) {
    let mut req = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    (r.status(), r.headers().clone())
}

fn header(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name).map(|v| v.to_str().unwrap().parse().unwrap_or_else(|_| panic!("{name}: {v:?}")))
}

#[tokio::test]
async fn the_budget_is_counted_down_in_headers_then_429_with_retry_after() {
    let app = TestApp::new().await;
    let base = limited(&app, 3, "").await;
    for remaining in [2, 1, 0] {
        let (status, h) = get(&base, Some(&app.token), "/v1/quota", &[]).await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "ratelimit-limit"), Some(3));
        assert_eq!(header(&h, "ratelimit-remaining"), Some(remaining));
        // The full budget is back after (3 - remaining) intervals of 20 s.
        let reset = header(&h, "ratelimit-reset").unwrap();
        assert!((1..=60).contains(&reset), "reset {reset}");
        assert!(h.get("retry-after").is_none());
    }

    let r = reqwest::Client::new().post(format!("{base}/v1/vms")).bearer_auth(&app.token).json(&vm_body("web-1"));
    let (status, h, body) = split(r.send().await.unwrap()).await;
    assert_eq!(status, 429, "{body}");
    assert_error(&body, "RATE_LIMITED");
    let retry_after = header(&h, "retry-after").unwrap();
    // One request every 20 s: the next slot is at most 20 s away.
    assert!((1..=20).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(body["error"]["details"]["retryAfterSeconds"], retry_after);
    assert_eq!(header(&h, "ratelimit-limit"), Some(3));
    assert_eq!(header(&h, "ratelimit-remaining"), Some(0));
    assert!(header(&h, "ratelimit-reset").unwrap() >= retry_after);
    assert_eq!(h["x-request-id"], body["meta"]["requestId"].as_str().unwrap());
    assert_eq!(app.count("instances").await, 0, "the refused request did nothing");
    // Refused requests are not audited: a flood of them must not become a flood of inserts.
    let audited: i64 = sqlx::query_scalar("select count(*) from audit_log where http_status = 429")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(audited, 0);

    // Probes are never limited and carry no budget.
    for path in ["/healthz", "/readyz"] {
        let (status, h) = get(&base, None, path, &[]).await;
        assert_eq!(status, 200, "{path}");
        assert!(h.get("ratelimit-limit").is_none(), "{path}");
    }
}

#[tokio::test]
async fn every_key_and_every_anonymous_address_has_its_own_bucket() {
    let app = TestApp::new().await;
    let (_, other_key) = new_tenant(app.pool(), ROOMY).await;
    let base = limited(&app, 2, "").await;
    for _ in 0..2 {
        assert_eq!(get(&base, Some(&app.token), "/v1/quota", &[]).await.0, 200);
    }
    assert_eq!(get(&base, Some(&app.token), "/v1/quota", &[]).await.0, 429);

    // Another key still has its whole budget.
    let (status, h) = get(&base, Some(&other_key), "/v1/quota", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "ratelimit-remaining"), Some(1));

    // Anonymous callers spend their address's budget (here 127.0.0.1), even on 401s.
    let (status, h) = get(&base, None, "/v1/quota", &[]).await;
    assert_eq!(status, 401);
    assert_eq!(header(&h, "ratelimit-remaining"), Some(1));
    assert_eq!(get(&base, None, "/v1/quota", &[]).await.0, 401);
    assert_eq!(get(&base, None, "/v1/quota", &[]).await.0, 429);
    // A client cannot escape it with a forged X-Forwarded-For: no proxy is trusted.
    let (status, _) = get(&base, None, "/v1/quota", &[("x-forwarded-for", "203.0.113.77")]).await;
    assert_eq!(status, 429);

    let mut conn = app.redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg(app.redis.key("nimbus:rl:*")).query_async(&mut conn).await.unwrap();
    assert_eq!(keys.len(), 3, "two keys and one address: {keys:?}");
    assert!(keys.iter().any(|k| k.ends_with("rl:ip:127.0.0.1")), "{keys:?}");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_address_is_the_bucket() {
    let app = TestApp::new().await;
    let base = limited(&app, 2, "127.0.0.1").await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    for _ in 0..2 {
        assert_eq!(get(&base, None, "/v1/quota", &from("203.0.113.1")).await.0, 401);
    }
    assert_eq!(get(&base, None, "/v1/quota", &from("203.0.113.1")).await.0, 429);
    // Another client behind the same proxy.
    let (status, h) = get(&base, None, "/v1/quota", &from("203.0.113.2")).await;
    assert_eq!(status, 401);
    assert_eq!(header(&h, "ratelimit-remaining"), Some(1));
    // The right-most untrusted hop counts, not what the client wrote before it.
    let (status, _) = get(&base, None, "/v1/quota", &[("x-forwarded-for", "198.51.100.9, 203.0.113.1")]).await;
    assert_eq!(status, 429);
}

#[tokio::test]
async fn two_api_instances_share_one_bucket_through_redis() {
    let app = TestApp::new().await;
    let a = limited(&app, 4, "").await;
    let b = limited(&app, 4, "").await;
    let mut remaining = Vec::new();
    for base in [&a, &b, &a, &b] {
        let (status, h) = get(base, Some(&app.token), "/v1/quota", &[]).await;
        assert_eq!(status, 200);
        remaining.push(header(&h, "ratelimit-remaining").unwrap());
    }
    assert_eq!(remaining, [3, 2, 1, 0]);
    assert_eq!(get(&a, Some(&app.token), "/v1/quota", &[]).await.0, 429);
    assert_eq!(get(&b, Some(&app.token), "/v1/quota", &[]).await.0, 429);
}

#[tokio::test]
async fn a_lost_script_is_loaded_again() {
    let app = TestApp::new().await;
    let base = limited(&app, 3, "").await;
    assert_eq!(header(&get(&base, Some(&app.token), "/v1/quota", &[]).await.1, "ratelimit-remaining"), Some(2));
    // As after a Redis restart or failover: EVALSHA answers NOSCRIPT, the script is sent again.
    let mut conn = app.redis.connection().await;
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    assert_eq!(header(&get(&base, Some(&app.token), "/v1/quota", &[]).await.1, "ratelimit-remaining"), Some(1));
}

#[tokio::test]
async fn with_redis_unreachable_requests_pass_unlimited_and_fast() {
    let app = TestApp::new().await;
    let base = instance(&app, &format!("redis://127.0.0.1:{}/0", closed_port()), "nimbus:", 2, "").await;
    for _ in 0..6 {
        let started = Instant::now();
        let (status, h) = get(&base, Some(&app.token), "/v1/quota", &[]).await;
        assert_eq!(status, 200);
        assert!(h.get("ratelimit-limit").is_none(), "no budget is claimed when it is unknown");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }
}

/// A private Redis this test may stop.
struct OwnRedis {
    port: u16,
    child: Child,
}

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (installed by `make test`)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnRedis { port, child }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn redis_stopping_mid_way_fails_open_and_limits_resume_when_it_is_back() {
    let app = TestApp::new().await;
    let port = closed_port();
    let mut redis = OwnRedis::start(port);
    let base = instance(&app, &format!("redis://127.0.0.1:{port}/0"), "nimbus:", 2, "").await;
    for _ in 0..2 {
        assert_eq!(get(&base, Some(&app.token), "/v1/quota", &[]).await.0, 200);
    }
    assert_eq!(get(&base, Some(&app.token), "/v1/quota", &[]).await.0, 429);

    redis.stop();
    for _ in 0..5 {
        let (status, h) = get(&base, Some(&app.token), "/v1/quota", &[]).await;
        assert_eq!(status, 200, "fails open while Redis is down");
        assert!(h.get("ratelimit-remaining").is_none());
    }

    // Back (empty, as after a restart without persistence): the limiter reconnects after its
    // pause and counts again from a full budget.
    let _redis = OwnRedis::start(redis.port);
    tokio::time::sleep(nimbus_api::ratelimit::RETRY_AFTER_FAILURE + Duration::from_millis(200)).await;
    let (status, h) = get(&base, Some(&app.token), "/v1/quota", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "ratelimit-remaining"), Some(1));
    assert_eq!(get(&base, Some(&app.token), "/v1/quota", &[]).await.0, 200);
    assert_eq!(get(&base, Some(&app.token), "/v1/quota", &[]).await.0, 429);
}
