//! `TestApp`: the API on a free port with its own database, Redis prefix and simulator, plus
//! fixture builders (tenants with a plan and an API key) and request helpers.

use std::sync::Arc;
use std::time::Duration;

use nimbus_api::serve::ConnectionLimits;
use nimbus_api::{AppState, Settings};
use nimbus_db::plans::{self, NewPlan};
use nimbus_db::users::{self, NewUser};
use nimbus_db::{PgPool, api_keys, tenants};
use nimbus_domain::{PlanLimits, PlanPrices, Role, TenantId};
use nimbus_jobs::Queues;
use nimbus_proxmox::{ApiToken, ClientConfig, PollBackoff, ProxmoxClient, TlsMode};
use nimbus_testkit::{TestDb, TestRedis};
use nimbus_worker::Env;
use nimbus_worker::node_caps::NodeCaps;
use nimbus_worker::relay::RelayConfig;
use nimbus_worker::retry::{Backoff, RetryPolicy};
use nimbus_worker::runtime::{self, RuntimeOptions};
use pve_sim::{RunningSim, SimConfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Limits no test reaches unless it is about quota.
pub const ROOMY: PlanLimits =
    PlanLimits { max_instances: 100, max_vcpus: 400, max_memory_mib: 1 << 30, max_disk_gib: 1 << 20 };

/// A real ed25519 public key.
pub const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlx2uMl6O7otZxx5t83ZWNSS+gqAj3/2gOtI6dRPT+R test@host";

/// A template the simulator seeds on every node.
pub const TEMPLATE: &str = "debian-12-cloudinit";

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// How a [`TestApp`] deviates from the real services.
#[derive(Default)]
pub struct Options {
    /// Point the API at a Redis that is not there.
    pub redis_down: bool,
    /// Point the API at a Postgres that is not there (fixtures still use the test database).
    pub postgres_down: bool,
    /// Enable OIDC against this issuer (client `nimbus` of infra/oidc, public URL = the app's).
    pub oidc_issuer: Option<String>,
    /// `OIDC_TRUST_EMAIL`.
    pub oidc_trust_email: bool,
    /// Serve the portal from this directory (`NIMBUS_WEB_DIST`).
    pub web_dist: Option<std::path::PathBuf>,
    /// How often job event streams read the ledger without a wake-up (default 50 ms).
    pub sse_poll: Option<Duration>,
    /// How often open event streams re-check their credential (default: the API's).
    pub stream_auth_check: Option<Duration>,
    /// Failed authentications per minute per client address (default: the API's).
    pub auth_failures_per_minute: Option<u32>,
    /// Requests per minute per caller (default: the API's).
    pub requests_per_minute: Option<u32>,
    /// The Stripe provider's settings.
    pub stripe: Option<nimbus_api::payments::stripe::StripeConfig>,
}

pub struct TestApp {
    pub db: TestDb,
    pub redis: TestRedis,
    pub sim: RunningSim,
    pub base: String,
    /// The metrics listener (`/metrics`), apart from the public one.
    pub metrics_base: String,
    pub http: reqwest::Client,
    /// The API key of the default tenant.
    pub token: String,
    pub tenant: TenantId,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestApp {
    pub async fn new() -> TestApp {
        TestApp::with(ROOMY, Options::default()).await
    }

    pub async fn with(limits: PlanLimits, options: Options) -> TestApp {
        let db = TestDb::new().await;
        let redis = TestRedis::new().await;
        let sim = pve_sim::start(SimConfig::for_tests(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let tls = TlsMode::Fingerprint(sim.fingerprint().unwrap().to_owned());
        let mut registry = nimbus_telemetry::Registry::default();
        let pve = ProxmoxClient::new(
            ClientConfig::new(sim.base_url(), ApiToken::parse(sim.token()).unwrap(), tls)
                .timeout(Duration::from_secs(10))
                .observer(nimbus_telemetry::ProxmoxCalls::register(&mut registry)),
        )
        .unwrap();
        let pool = if options.postgres_down {
            sqlx::postgres::PgPoolOptions::new()
                .acquire_timeout(Duration::from_secs(2))
                .connect_lazy(&format!("postgres://postgres@127.0.0.1:{}/nimbus", closed_port()))
                .unwrap()
        } else {
            // The API runs as the runtime role, as in production; fixtures use the superuser's pool.
            db.app_pool().clone()
        };
        let redis_url =
            if options.redis_down { format!("redis://127.0.0.1:{}/0", closed_port()) } else { redis.url().to_owned() };
        let settings = Settings {
            sse_poll: options.sse_poll.unwrap_or(Duration::from_millis(50)),
            stream_auth_check: options.stream_auth_check.unwrap_or(Settings::default().stream_auth_check),
            ready_timeout: Duration::from_secs(1),
            web_dist: options.web_dist.clone(),
            stripe: options.stripe.clone(),
            rate_limit: nimbus_api::ratelimit::RateLimitSettings {
                auth_failures_per_minute: options
                    .auth_failures_per_minute
                    .unwrap_or(nimbus_api::ratelimit::RateLimitSettings::DEFAULT_AUTH_FAILURES_PER_MINUTE),
                per_minute: options
                    .requests_per_minute
                    .unwrap_or(nimbus_api::ratelimit::RateLimitSettings::DEFAULT_PER_MINUTE),
                ..Default::default()
            },
            ..Settings::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let key_prefix = format!("{}nimbus:", redis.prefix());
        let mut state = AppState::new(pool.clone(), &redis_url, &key_prefix, pve, settings)
            .unwrap()
            .with_http_metrics(nimbus_api::metrics::HttpMetrics::register(&mut registry));
        let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_base = format!("http://{}", metrics_listener.local_addr().unwrap());
        tokio::spawn(nimbus_telemetry::serve(metrics_listener, std::sync::Arc::new(registry), std::future::pending()));
        if let Some(issuer) = &options.oidc_issuer {
            use nimbus_api::auth::oidc::{Identity, OidcConfig};
            let mut config = OidcConfig::new(issuer, "nimbus", Some("nimbus-dev-secret"), base.parse().unwrap());
            config.trust_email = options.oidc_trust_email;
            state = state.with_identity(Identity::new(config, pool, &redis_url, &key_prefix).unwrap());
        }
        let server = tokio::spawn(async move {
            let limits = ConnectionLimits::default();
            nimbus_api::serve::serve(listener, nimbus_api::router(state), limits, std::future::pending())
                .await
                .unwrap();
        });
        let (tenant, token) = new_tenant(db.pool(), limits).await;
        TestApp { db, redis, sim, base, metrics_base, http: reqwest::Client::new(), token, tenant, server }
    }

    /// The test database as the superuser: fixtures and inspection, beyond what the API may do.
    pub fn pool(&self) -> &PgPool {
        self.db.pool()
    }

    /// Another API process over this app's database and simulator, with Redis at `redis_url`
    /// (keys under `key_prefix`) and `settings`; returns its base URL. It stops with the test's
    /// runtime.
    pub async fn another_instance(&self, redis_url: &str, key_prefix: &str, settings: Settings) -> String {
        self.another_instance_limited(redis_url, key_prefix, settings, ConnectionLimits::default()).await
    }

    /// [`TestApp::another_instance`] on this app's Redis and prefix, with `settings` and
    /// connection `limits`.
    pub async fn instance_with(&self, settings: Settings, limits: ConnectionLimits) -> String {
        let prefix = format!("{}nimbus:", self.redis.prefix());
        self.another_instance_limited(self.redis.url(), &prefix, settings, limits).await
    }

    async fn another_instance_limited(
        &self,
        redis_url: &str,
        key_prefix: &str,
        settings: Settings,
        limits: ConnectionLimits,
    ) -> String {
        let tls = TlsMode::Fingerprint(self.sim.fingerprint().unwrap().to_owned());
        let token = ApiToken::parse(self.sim.token()).unwrap();
        let pve = ProxmoxClient::new(ClientConfig::new(self.sim.base_url(), token, tls)).unwrap();
        let state = AppState::new(self.db.app_pool().clone(), redis_url, key_prefix, pve, settings).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            nimbus_api::serve::serve(listener, nimbus_api::router(state), limits, std::future::pending())
                .await
                .unwrap();
        });
        base
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET with the default tenant's key.
    pub async fn get(&self, path: &str) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
        self.get_as(&self.token, path).await
    }

    pub async fn get_as(&self, token: &str, path: &str) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
        let r = self.http.get(self.url(path)).bearer_auth(token).send().await.unwrap();
        split(r).await
    }

    /// POST a JSON value to /v1/vms with the default key and optional extra headers.
    pub async fn create_vm(
        &self,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.post(self.url("/v1/vms")).bearer_auth(&self.token).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        split(req.send().await.unwrap()).await
    }

    /// POST raw bytes as JSON to /v1/vms.
    pub async fn post_raw(&self, body: &str) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
        let r = self
            .http
            .post(self.url("/v1/vms"))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        split(r).await
    }

    /// Rows in `table`.
    /// The id of the app tenant's plan.
    pub async fn plan_id(&self) -> uuid::Uuid {
        sqlx::query_scalar("select plan_id from tenants where id = $1")
            .bind(self.tenant.as_uuid())
            .fetch_one(self.pool())
            .await
            .unwrap()
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
            .fetch_one(self.pool())
            .await
            .unwrap()
    }

    /// The `pushed_at` of the outbox rows (of `job`, or all), in order, once `expected` rows exist
    /// and all are marked or 5 s have passed (the API marks pushed rows off the request path).
    pub async fn outbox_marks_settled(
        &self,
        job: Option<nimbus_domain::JobId>,
        expected: usize,
    ) -> Vec<Option<chrono::DateTime<chrono::Utc>>> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let marks: Vec<Option<chrono::DateTime<chrono::Utc>>> =
                sqlx::query_scalar("select pushed_at from outbox where $1::uuid is null or job_id = $1 order by id")
                    .bind(job.map(|j| j.as_uuid()))
                    .fetch_all(self.pool())
                    .await
                    .unwrap();
            let settled = marks.len() == expected && marks.iter().all(Option::is_some);
            if settled || std::time::Instant::now() > deadline {
                assert_eq!(marks.len(), expected, "outbox rows");
                return marks;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub async fn split(r: reqwest::Response) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, headers, body)
}

/// A tenant on a fresh plan with `limits`, an admin and an API key.
pub async fn new_tenant(pool: &PgPool, limits: PlanLimits) -> (TenantId, String) {
    let plan = plans::create(
        pool,
        &NewPlan { name: format!("plan-{}", uuid::Uuid::new_v4().simple()), limits, prices: PlanPrices::free("EUR") },
    )
    .await
    .unwrap();
    let tenant = tenants::create(pool, "Acme", plan.id).await.unwrap();
    let admin = users::create(
        pool,
        tenant.id,
        &NewUser { email: "ops@acme.test".into(), display_name: None, role: Role::Admin },
    )
    .await
    .unwrap();
    let (_, token) = api_keys::create(pool, tenant.id, admin.id, "test", &[], None).await.unwrap();
    (tenant.id, token)
}

/// A valid create request.
pub fn vm_body(name: &str) -> Value {
    json!({
        "name": name,
        "type": "qemu",
        "template": TEMPLATE,
        "cores": 2,
        "memory": 2048,
        "disk": 20,
        "sshKeys": [SSH_KEY],
    })
}

/// The `details.fields[*].field` of a validation error.
pub fn fields(body: &Value) -> Vec<Option<String>> {
    body["error"]["details"]["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("no details.fields in {body}"))
        .iter()
        .map(|f| f["field"].as_str().map(str::to_owned))
        .collect()
}

/// Asserts the error envelope's shape and code.
pub fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"].get("details").is_some(), "{body}");
    assert!(body["meta"]["requestId"].is_string(), "{body}");
    assert!(body["meta"]["timestamp"].is_string(), "{body}");
}

/// A worker runtime on the app's database, Redis and simulator.
pub struct Worker {
    pub env: Arc<Env>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Worker {
    /// Starts one, whose Proxmox calls time out after `pve_timeout`.
    pub async fn start(app: &TestApp, pve_timeout: Duration) -> Worker {
        let key_prefix = format!("{}nimbus:", app.redis.prefix());
        let tls = TlsMode::Fingerprint(app.sim.fingerprint().unwrap().to_owned());
        let poll = PollBackoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
            factor: 1.5,
            jitter: 0.1,
        };
        let config = ClientConfig::new(app.sim.base_url(), ApiToken::parse(app.sim.token()).unwrap(), tls)
            .timeout(pve_timeout)
            .task_poll(poll);
        let settings = nimbus_worker::Settings {
            lease: Duration::from_secs(3),
            retry: RetryPolicy {
                backoff: Backoff { base: Duration::from_millis(50), max: Duration::from_millis(200), jitter: true },
            },
            task_timeout: Duration::from_secs(10),
            ip_timeout: Duration::from_secs(10),
            ip_poll: Duration::from_millis(20),
            ..nimbus_worker::Settings::default()
        };
        let lease = settings.lease;
        let env = Arc::new(Env {
            db: app.pool().clone(),
            pve: ProxmoxClient::new(config).unwrap(),
            caps: NodeCaps::new(app.redis.client(), &key_prefix, 4, lease).await.unwrap(),
            backup_lanes: Env::backup_lanes(app.redis.client(), &key_prefix, lease).await.unwrap(),
            settings,
            worker_id: "w1".into(),
            shutdown: CancellationToken::new(),
            events: nimbus_jobs::JobEventPublisher::new(app.redis.client().clone(), &key_prefix),
            ledger: Env::ledger_writer(app.pool(), "w1", lease),
            mail: None,
            metrics: nimbus_worker::metrics::WorkerMetrics::unserved(),
        });
        let options = RuntimeOptions {
            concurrency: 2,
            relay: RelayConfig { idle: Duration::from_millis(20), ..RelayConfig::default() },
            recovery_every: Duration::from_millis(200),
            reconcile_every: Some(Duration::from_millis(100)),
            ..RuntimeOptions::default()
        };
        let queues = Queues::with_client(app.redis.client().clone(), key_prefix);
        let handle = tokio::spawn(runtime::run(env.clone(), queues, options));
        Worker { env, handle }
    }

    /// Stops it and waits until it has.
    pub async fn stop(self) {
        self.env.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.handle).await.expect("the worker stops").unwrap().unwrap();
    }
}
