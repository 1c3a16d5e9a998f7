//! Tenant isolation and access, route by route (issue #4, item 5), against the catalogue
//! `nimbus_api::routes::catalog()`.
//!
//! * The catalogue is exactly the router: the router's paths are enumerated, each one's
//!   methods read from the `Allow` header of a 405, and compared both ways.
//! * [`CASES`] covers exactly the catalogue, with a case of the kind its access needs.
//! * For every route: anonymous → 401; for admin routes, a non-administrator, an administrator's
//!   key without the `admin` scope and an impersonated administrator → 403; for tenant routes
//!   naming an id, tenant B with tenant A's id answers exactly like a random missing id (404,
//!   same error body); lists answered to B show none of A's ids. None of these calls changes a
//!   row of any table (the audit log, which records them, aside).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use nimbus_api::routes::{Access, RouteSpec, catalog};
use nimbus_api::{AppState, Settings};
use nimbus_db::jobs::NewJob;
use nimbus_db::users::{self, NewUser};
use nimbus_db::{api_keys, plans, schedules};
use nimbus_domain::{JobKind, MissedFirePolicy, PlanLimits, Role, TenantId, UserId};
use nimbus_proxmox::{ApiToken, ClientConfig, ProxmoxClient, TlsMode};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Options, ROOMY, TestApp, new_tenant, vm_body};

/// Tenant A's resources that a route's `{id}` can name.
#[derive(Clone, Copy, Debug)]
enum Fixture {
    Instance,
    Job,
    ApiKey,
    User,
    Tenant,
    Schedule,
    Invoice,
    Plan,
    Webhook,
    Notification,
}

/// A JSON body built from the fixtures (so that a route that wrongly let the call through
/// would change something the snapshot sees).
type Body = fn(&World) -> Value;

/// How a route is checked; which kind a route needs follows from its catalogue entry.
#[derive(Clone, Copy)]
enum Case {
    /// No credential needed: only checked not to demand one.
    Public,
    /// A tenant route without an id (lists, creates): 401 anonymously; a GET answered to
    /// tenant B contains none of tenant A's ids.
    Collection { body: Option<Body> },
    /// A tenant route naming a resource: B with A's id answers like a missing id.
    ById { id: Fixture, body: Option<Body> },
    /// An operator route (across tenants by design): only administrators get past it.
    Operator { id: Option<Fixture>, body: Option<Body> },
}

/// Every route of the catalogue, and how to check it.
const CASES: &[(&str, &str, Case)] = &[
    ("GET", "/healthz", Case::Public),
    ("GET", "/readyz", Case::Public),
    ("GET", "/v1/openapi.json", Case::Public),
    ("GET", "/v1/docs", Case::Public),
    ("GET", "/auth/login", Case::Public),
    ("GET", "/auth/callback", Case::Public),
    ("POST", "/auth/logout", Case::Public),
    ("GET", "/v1/me", Case::Collection { body: None }),
    ("GET", "/v1/webhooks/event-types", Case::Collection { body: None }),
    ("GET", "/v1/webhooks", Case::Collection { body: None }),
    ("POST", "/v1/webhooks", Case::Collection { body: Some(|_| json!({"url": "http://127.0.0.1:9/in"})) }),
    ("GET", "/v1/webhooks/{id}", Case::ById { id: Fixture::Webhook, body: None }),
    ("PATCH", "/v1/webhooks/{id}", Case::ById { id: Fixture::Webhook, body: Some(|_| json!({"enabled": false})) }),
    ("DELETE", "/v1/webhooks/{id}", Case::ById { id: Fixture::Webhook, body: None }),
    ("POST", "/v1/webhooks/{id}/secret/rotate", Case::ById { id: Fixture::Webhook, body: None }),
    ("POST", "/v1/webhooks/{id}/test", Case::ById { id: Fixture::Webhook, body: None }),
    ("GET", "/v1/webhooks/{id}/deliveries", Case::ById { id: Fixture::Webhook, body: None }),
    ("GET", "/v1/webhooks/{id}/deliveries/{delivery}", Case::ById { id: Fixture::Webhook, body: None }),
    ("POST", "/v1/webhooks/{id}/deliveries/{delivery}/replay", Case::ById { id: Fixture::Webhook, body: None }),
    (
        "POST",
        "/v1/webhooks/{id}/recover",
        Case::ById { id: Fixture::Webhook, body: Some(|_| json!({"since": "2026-01-01T00:00:00Z"})) },
    ),
    ("GET", "/v1/admin/webhooks", Case::Operator { id: None, body: None }),
    ("GET", "/v1/notifications", Case::Collection { body: None }),
    ("POST", "/v1/notifications/read-all", Case::Collection { body: None }),
    ("GET", "/v1/notifications/stream", Case::Collection { body: None }),
    ("POST", "/v1/notifications/{id}/read", Case::ById { id: Fixture::Notification, body: None }),
    ("GET", "/v1/me/notifications", Case::Collection { body: None }),
    (
        "PUT",
        "/v1/me/notifications",
        Case::Collection {
            body: Some(|_| json!({"preferences": [{"type": "job.failed", "email": false, "inApp": false}]})),
        },
    ),
    ("GET", "/v1/auth/apikeys", Case::Collection { body: None }),
    ("POST", "/v1/auth/apikeys", Case::Collection { body: Some(|_| json!({"name": "probe", "scopes": ["read"]})) }),
    ("DELETE", "/v1/auth/apikeys/{id}", Case::ById { id: Fixture::ApiKey, body: None }),
    ("GET", "/v1/vms", Case::Collection { body: None }),
    ("POST", "/v1/vms", Case::Collection { body: Some(|_| vm_body("probe")) }),
    ("GET", "/v1/vms/{id}", Case::ById { id: Fixture::Instance, body: None }),
    ("DELETE", "/v1/vms/{id}", Case::ById { id: Fixture::Instance, body: None }),
    ("POST", "/v1/vms/{id}/actions/{action}", Case::ById { id: Fixture::Instance, body: Some(|_| json!({})) }),
    ("GET", "/v1/vms/{id}/snapshots", Case::ById { id: Fixture::Instance, body: None }),
    ("POST", "/v1/vms/{id}/snapshots", Case::ById { id: Fixture::Instance, body: Some(|_| json!({"name": "probe"})) }),
    ("DELETE", "/v1/vms/{id}/snapshots/{name}", Case::ById { id: Fixture::Instance, body: None }),
    ("POST", "/v1/vms/{id}/snapshots/{name}/rollback", Case::ById { id: Fixture::Instance, body: None }),
    ("GET", "/v1/vms/{id}/events", Case::ById { id: Fixture::Instance, body: None }),
    ("GET", "/v1/vms/{id}/backups", Case::ById { id: Fixture::Instance, body: None }),
    ("POST", "/v1/vms/{id}/backups", Case::ById { id: Fixture::Instance, body: Some(|_| json!({"note": "x"})) }),
    ("DELETE", "/v1/vms/{id}/backups/{backup}", Case::ById { id: Fixture::Instance, body: None }),
    (
        "POST",
        "/v1/vms/{id}/backups/{backup}/protect",
        Case::ById { id: Fixture::Instance, body: Some(|_| json!({"protected": true})) },
    ),
    (
        "POST",
        "/v1/vms/{id}/backups/{backup}/restore",
        Case::ById { id: Fixture::Instance, body: Some(|_| json!({"confirm": "probe"})) },
    ),
    ("GET", "/v1/vms/{id}/backup-policy", Case::ById { id: Fixture::Instance, body: None }),
    (
        "PUT",
        "/v1/vms/{id}/backup-policy",
        Case::ById {
            id: Fixture::Instance,
            body: Some(|_| json!({"schedule": "daily", "retention": {"keepLast": 1}})),
        },
    ),
    ("DELETE", "/v1/vms/{id}/backup-policy", Case::ById { id: Fixture::Instance, body: None }),
    ("GET", "/v1/vms/{id}/backup-policy/preview", Case::ById { id: Fixture::Instance, body: None }),
    ("POST", "/v1/vms/{id}/console", Case::ById { id: Fixture::Instance, body: None }),
    ("GET", "/v1/vms/{id}/console/ws", Case::Public),
    ("GET", "/v1/billing/usage", Case::Collection { body: None }),
    ("GET", "/v1/billing/invoices", Case::Collection { body: None }),
    ("GET", "/v1/billing/balance", Case::Collection { body: None }),
    ("GET", "/v1/billing/top-ups", Case::Collection { body: None }),
    ("POST", "/v1/billing/top-ups", Case::Collection { body: Some(|_| json!({"amount": "10"})) }),
    ("POST", "/v1/billing/providers/{provider}/webhook", Case::Public),
    (
        "POST",
        "/v1/admin/tenants/{id}/credit",
        Case::Operator { id: Some(Fixture::Tenant), body: Some(|_| json!({"amount": "10", "reason": "probe"})) },
    ),
    (
        "PUT",
        "/v1/admin/tenants/{id}/billing",
        Case::Operator { id: Some(Fixture::Tenant), body: Some(|_| json!({"prepaid": true, "taxRate": "0.19"})) },
    ),
    ("GET", "/v1/billing/invoices/{id}", Case::ById { id: Fixture::Invoice, body: None }),
    (
        "POST",
        "/v1/admin/tenants/{id}/suspend",
        Case::Operator { id: Some(Fixture::Tenant), body: Some(|_| json!({"reason": "probe"})) },
    ),
    ("POST", "/v1/admin/tenants/{id}/unsuspend", Case::Operator { id: Some(Fixture::Tenant), body: None }),
    (
        "POST",
        "/v1/admin/invoices/{id}/credit-notes",
        Case::Operator { id: Some(Fixture::Invoice), body: Some(|_| json!({"reason": "probe"})) },
    ),
    ("GET", "/v1/admin/billing/tenants", Case::Operator { id: None, body: None }),
    ("GET", "/v1/admin/billing/revenue", Case::Operator { id: None, body: None }),
    (
        "POST",
        "/v1/admin/plans/{id}/prices",
        Case::Operator {
            id: Some(Fixture::Plan),
            body: Some(|_| json!({"currency": "EUR", "vcpuHour": "0.01", "memoryGibHour": "0", "diskGibHour": "0"})),
        },
    ),
    (
        "POST",
        "/v1/admin/plans",
        Case::Operator {
            id: None,
            body: Some(|_| {
                json!({"name": "probe", "limits": {"maxInstances": 1, "maxVcpus": 1, "maxMemoryMib": 1024, "maxDiskGib": 10},
                       "prices": {"currency": "EUR", "vcpuHour": "0", "memoryGibHour": "0", "diskGibHour": "0"}})
            }),
        },
    ),
    (
        "PATCH",
        "/v1/admin/plans/{id}",
        Case::Operator { id: Some(Fixture::Plan), body: Some(|_| json!({"maxBackups": 3})) },
    ),
    ("POST", "/v1/admin/plans/{id}/archive", Case::Operator { id: Some(Fixture::Plan), body: None }),
    ("GET", "/v1/jobs", Case::Collection { body: None }),
    ("GET", "/v1/jobs/{id}", Case::ById { id: Fixture::Job, body: None }),
    ("GET", "/v1/jobs/{id}/events", Case::ById { id: Fixture::Job, body: None }),
    ("GET", "/v1/templates", Case::Collection { body: None }),
    ("GET", "/v1/quota", Case::Collection { body: None }),
    ("GET", "/v1/admin/jobs", Case::Operator { id: None, body: None }),
    ("POST", "/v1/admin/jobs/{id}/retry", Case::Operator { id: Some(Fixture::Job), body: None }),
    ("GET", "/v1/admin/vms", Case::Operator { id: None, body: None }),
    ("GET", "/v1/admin/queues", Case::Operator { id: None, body: None }),
    ("GET", "/v1/admin/nodes", Case::Operator { id: None, body: None }),
    ("GET", "/v1/admin/users", Case::Operator { id: None, body: None }),
    (
        "POST",
        "/v1/admin/users",
        Case::Operator { id: None, body: Some(|w| json!({"email": "new@a.test", "role": "admin", "tenantId": w.a})) },
    ),
    ("GET", "/v1/admin/users/{id}", Case::Operator { id: Some(Fixture::User), body: None }),
    (
        "PATCH",
        "/v1/admin/users/{id}",
        Case::Operator { id: Some(Fixture::User), body: Some(|_| json!({"role": "admin"})) },
    ),
    ("POST", "/v1/admin/users/{id}/deactivate", Case::Operator { id: Some(Fixture::User), body: None }),
    ("POST", "/v1/admin/users/{id}/reactivate", Case::Operator { id: Some(Fixture::User), body: None }),
    ("POST", "/v1/admin/users/{id}/impersonate", Case::Operator { id: Some(Fixture::User), body: None }),
    ("DELETE", "/v1/admin/impersonation", Case::Operator { id: None, body: None }),
    ("GET", "/v1/admin/plans", Case::Operator { id: None, body: None }),
    (
        "PUT",
        "/v1/admin/tenants/{id}/plan",
        Case::Operator { id: Some(Fixture::Tenant), body: Some(|w| json!({"planId": w.other_plan})) },
    ),
    ("GET", "/v1/admin/audit-logs", Case::Operator { id: None, body: None }),
    ("GET", "/v1/admin/schedules", Case::Operator { id: None, body: None }),
    ("POST", "/v1/admin/schedules/{id}/pause", Case::Operator { id: Some(Fixture::Schedule), body: None }),
    ("POST", "/v1/admin/schedules/{id}/resume", Case::Operator { id: Some(Fixture::Schedule), body: None }),
];

/// Two tenants with data, and callers of every kind.
struct World {
    app: TestApp,
    /// Tenant A (the app's default tenant) and its resources.
    a: TenantId,
    a_admin: String,
    a_instance: String,
    a_job: String,
    a_key: String,
    /// A plain user of A, with a full key.
    a_user: UserId,
    a_user_key: String,
    /// An administrator of A whose key lacks the `admin` scope.
    a_admin_rw_key: String,
    /// A second administrator of A, the target of impersonated requests.
    a_admin2: UserId,
    /// Tenant B's administrator (full key).
    b_admin: String,
    /// A full key of tenant A's `billing-admin`.
    a_billing_key: String,
    /// A plan no tenant is on.
    other_plan: String,
    /// A schedule of tenant A.
    a_schedule: String,
    /// An invoice of tenant A (this month's usage so far).
    a_invoice: String,
    a_webhook: String,
    a_delivery: String,
    a_notification: String,
}

impl World {
    async fn new() -> World {
        // Every route is called twice with a bad credential, from one address.
        let options = Options { auth_failures_per_minute: Some(10_000), ..Options::default() };
        let app = TestApp::with(ROOMY, options).await;
        let a = app.tenant;
        let (status, _, created) = app.create_vm(&vm_body("web-a"), &[]).await;
        assert_eq!(status, 202, "{created}");
        let a_job = created["data"]["id"].as_str().unwrap().to_owned();
        let a_instance = created["data"]["resources"][0]["id"].as_str().unwrap().to_owned();
        let a_key = api_keys::list(app.pool(), a).await.unwrap()[0].id.to_string();
        let user = |email: &str, role| {
            let pool = app.pool().clone();
            let new = NewUser { email: email.into(), display_name: None, role };
            async move { users::create(&pool, a, &new).await.unwrap() }
        };
        let a_user = user("ann@a.test", Role::User).await;
        let a_user_key = api_keys::create(app.pool(), a, a_user.id, "full", &[], None).await.unwrap().1;
        let billing = user("bill@a.test", Role::BillingAdmin).await;
        let a_billing_key = api_keys::create(app.pool(), a, billing.id, "full", &[], None).await.unwrap().1;
        let rw = user("rw@a.test", Role::Admin).await;
        let rw_scopes = ["read".to_owned(), "write".to_owned()];
        let a_admin_rw_key = api_keys::create(app.pool(), a, rw.id, "rw", &rw_scopes, None).await.unwrap().1;
        let a_admin2 = user("second@a.test", Role::Admin).await.id;
        let (_, b_admin) = new_tenant(app.pool(), ROOMY).await;
        let other_plan = plans::create(
            app.pool(),
            &plans::NewPlan {
                name: "other".into(),
                limits: PlanLimits { max_instances: 0, ..ROOMY },
                prices: plans::list(app.pool()).await.unwrap()[0].prices.clone(),
            },
        )
        .await
        .unwrap()
        .id
        .to_string();
        let a_schedule = schedules::create(
            app.pool(),
            &schedules::NewSchedule {
                tenant: Some(a),
                name: "nightly".into(),
                cron: "0 3 * * *".into(),
                job: NewJob::new(JobKind::Backup, "backup", json!({})),
                policy: MissedFirePolicy::LatestOnly,
                first_fire_at: chrono::Utc::now() + chrono::Duration::hours(1),
            },
        )
        .await
        .unwrap()
        .id
        .to_string();
        let hour = chrono::DurationRound::duration_trunc(chrono::Utc::now(), chrono::Duration::hours(1)).unwrap();
        nimbus_db::usage::meter_hour(app.pool(), hour).await.unwrap();
        let (from, to) = nimbus_db::invoices::month_of(hour);
        let mut tx = app.pool().begin().await.unwrap();
        let invoice = nimbus_db::invoices::issue(&mut tx, a, from, to).await.unwrap().expect("A has usage");
        tx.commit().await.unwrap();
        let a_invoice = invoice.id.to_string();
        let secret = nimbus_webhooks::Secret::generate().encode();
        let new = nimbus_db::webhooks::NewEndpoint {
            url: "http://127.0.0.1:9/a",
            description: "A's",
            event_types: &[],
            enabled: true,
            rate_limit: None,
            secret: &secret,
        };
        let a_webhook = nimbus_db::webhooks::create(app.pool(), a, &new).await.unwrap().id.to_string();
        let event = nimbus_db::events::NewEvent {
            kind: "job.failed",
            at: chrono::Utc::now(),
            tenant: Some(a),
            resource: None,
            data: json!({}),
        };
        let event = nimbus_db::events::record(app.pool(), &event).await.unwrap();
        nimbus_db::notifications::add_to_feeds(app.pool(), &[event], &["A's notice".to_owned()]).await.unwrap();
        let a_notification: uuid::Uuid = sqlx::query_scalar("select id from notifications where event_id = $1 limit 1")
            .bind(event)
            .fetch_one(app.pool())
            .await
            .unwrap();
        let a_notification = a_notification.to_string();
        // A delivery of the endpoint, which the delivery routes' `{delivery}` names.
        let a_delivery: uuid::Uuid = sqlx::query_scalar(
            "insert into webhook_deliveries (id, tenant_id, endpoint_id, event_id, event_type, next_attempt_at) \
             values (webhook_delivery_id($1::uuid, $3), $2, $1::uuid, $3, 'job.failed', now() + interval '1 day') \
             returning id",
        )
        .bind(&a_webhook)
        .bind(a.as_uuid())
        .bind(event)
        .fetch_one(app.pool())
        .await
        .unwrap();
        let a_delivery = a_delivery.to_string();
        World {
            a_webhook,
            a_delivery,
            a_notification,
            a_schedule,
            a_invoice,
            a_admin: app.token.clone(),
            a,
            a_instance,
            a_job,
            a_key,
            a_user: a_user.id,
            a_user_key,
            a_billing_key,
            a_admin_rw_key,
            a_admin2,
            b_admin,
            other_plan,
            app,
        }
    }

    fn id(&self, fixture: Fixture) -> String {
        match fixture {
            Fixture::Instance => self.a_instance.clone(),
            Fixture::Job => self.a_job.clone(),
            Fixture::ApiKey => self.a_key.clone(),
            Fixture::User => self.a_user.to_string(),
            Fixture::Tenant => self.a.to_string(),
            Fixture::Schedule => self.a_schedule.clone(),
            Fixture::Invoice => self.a_invoice.clone(),
            Fixture::Plan => self.other_plan.clone(),
            Fixture::Webhook => self.a_webhook.clone(),
            Fixture::Notification => self.a_notification.clone(),
        }
    }

    /// Every id of tenant A a response to another tenant must not contain.
    fn a_ids(&self) -> Vec<String> {
        vec![
            self.a.to_string(),
            self.a_instance.clone(),
            self.a_job.clone(),
            self.a_key.clone(),
            self.a_user.to_string(),
            self.a_schedule.clone(),
            self.a_invoice.clone(),
            self.a_webhook.clone(),
            self.a_delivery.clone(),
            self.a_notification.clone(),
        ]
    }
}

/// `path` with each `{param}` replaced by `id`.
fn fill(path: &str, id: &str) -> String {
    fill_with(path, id, id)
}

/// `path` with `{delivery}` replaced by `delivery` and each other `{param}` by `id`.
fn fill_with(path: &str, id: &str, delivery: &str) -> String {
    path.split('/')
        .map(|segment| match segment {
            "{delivery}" => delivery,
            s if s.starts_with('{') && s.ends_with('}') => id,
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Option<Value>,
}

/// One call; the body is read unless the answer is a stream (SSE) or not JSON.
async fn call(
    world: &World,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Body>,
    headers: &[(&str, String)],
) -> Answer {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut req = http.request(Method::from_bytes(method.as_bytes()).unwrap(), world.app.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body(world));
    }
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let json =
        headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    let body = if json {
        Some(tokio::time::timeout(Duration::from_secs(5), r.json()).await.expect("body in time").unwrap())
    } else {
        None
    };
    Answer { status, headers, body }
}

/// Every row of every table but the audit log, as text (an API key's `last_used_at` aside: a
/// caller's own key records its use).
async fn snapshot(world: &World) -> HashMap<String, String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "select tablename::text from pg_tables where schemaname = 'public' \
         and tablename not in ('_sqlx_migrations', 'audit_log') order by 1",
    )
    .fetch_all(world.app.pool())
    .await
    .unwrap();
    let mut out = HashMap::new();
    for table in tables {
        let rows: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select string_agg(r, E'\\n' order by r) from \
             (select (to_jsonb(t) - 'last_used_at')::text as r from {table} t) s"
        )))
        .fetch_one(world.app.pool())
        .await
        .unwrap();
        out.insert(table, rows.unwrap_or_default());
    }
    out
}

fn assert_unchanged(before: &HashMap<String, String>, after: &HashMap<String, String>, route: &str) {
    for (table, rows) in before {
        assert_eq!(after.get(table), Some(rows), "{route} changed table {table}");
    }
}

/// The body without its `meta` (request id and time differ between any two answers).
fn without_meta(body: &Option<Value>) -> Value {
    let mut body = body.clone().unwrap_or(Value::Null);
    if let Some(o) = body.as_object_mut() {
        o.remove("meta");
    }
    body
}

fn case_of(spec: &RouteSpec) -> Option<Case> {
    CASES.iter().find(|(m, p, _)| *m == spec.method && *p == spec.path).map(|(_, _, c)| *c)
}

/// Whether `case` is the kind of check the route's access and shape call for.
fn case_fits(spec: &RouteSpec, case: &Case) -> bool {
    match (spec.access, case) {
        (Access::Public, Case::Public) => true,
        (Access::Tenant, Case::Collection { .. }) => !spec.takes_id(),
        (Access::Tenant, Case::ById { .. }) => spec.takes_id(),
        (Access::Operator | Access::BillingOperator, Case::Operator { id, .. }) => id.is_some() == spec.takes_id(),
        _ => false,
    }
}

/// The routes the router serves: its paths (from its `Debug` form, the only enumeration axum
/// offers; checked not to come back empty), each with the methods its 405 `Allow` lists.
async fn served_routes(world: &World) -> BTreeSet<(String, String)> {
    let sim = &world.app.sim;
    let tls = TlsMode::Fingerprint(sim.fingerprint().unwrap().to_owned());
    let pve =
        ProxmoxClient::new(ClientConfig::new(sim.base_url(), ApiToken::parse(sim.token()).unwrap(), tls)).unwrap();
    let state =
        AppState::new(world.app.pool().clone(), world.app.redis.url(), "isolation:", pve, Settings::default()).unwrap();
    let debug = format!("{:?}", nimbus_api::router(state));
    // The fallback (the portal's assets, axum's 404) has a router of its own: not routes.
    let start = debug.find("path_router:").expect("the router's Debug form changed");
    let end = debug.find("fallback_router:").expect("the router's Debug form changed");
    let debug = &debug[start..end];
    let mut paths = BTreeSet::new();
    for (at, _) in debug.match_indices("RouteId(") {
        let rest = &debug[at..];
        let Some(close) = rest.find(')') else { continue };
        if let Some(quoted) = rest[close + 1..].strip_prefix(": \"") {
            let path = &quoted[..quoted.find('"').unwrap()];
            // axum's own catch-alls for fallbacks and nesting are not routes.
            if !path.contains("__private__axum") {
                paths.insert(path.to_owned());
            }
        }
    }
    assert!(paths.contains("/v1/vms") && paths.len() > 10, "the router's Debug form changed: {paths:?}");

    let mut routes = BTreeSet::new();
    for path in paths {
        let a = call(world, "PROBE", &fill(&path, &UserId::new().to_string()), None, None, &[]).await;
        assert_eq!(a.status, 405, "PROBE {path} should be 405 with Allow");
        let allow = a.headers.get("allow").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        for method in allow.split(',').map(str::trim).filter(|m| !m.is_empty() && *m != "HEAD") {
            routes.insert((method.to_owned(), path.clone()));
        }
    }
    routes
}

#[tokio::test]
async fn the_catalogue_is_exactly_the_routers_routes() {
    let world = World::new().await;
    let served = served_routes(&world).await;
    let catalogued: BTreeSet<(String, String)> =
        catalog().iter().map(|r| (r.method.to_owned(), r.path.to_owned())).collect();
    let missing: Vec<String> = served.difference(&catalogued).map(|(m, p)| format!("{m} {p}")).collect();
    let stale: Vec<String> = catalogued.difference(&served).map(|(m, p)| format!("{m} {p}")).collect();
    assert!(
        missing.is_empty(),
        "routes served but not in the catalogue (add them to api/src/routes/catalog.rs with who may call them): {missing:?}"
    );
    assert!(stale.is_empty(), "routes in api/src/routes/catalog.rs that the router does not serve: {stale:?}");
}

#[tokio::test]
async fn every_catalogued_route_has_an_isolation_case_of_the_right_kind() {
    let mut problems = Vec::new();
    for spec in catalog() {
        match case_of(spec) {
            None => problems.push(format!(
                "{} {} ({:?}) has no case in CASES of api/tests/api/isolation.rs",
                spec.method, spec.path, spec.access
            )),
            Some(case) if !case_fits(spec, &case) => problems.push(format!(
                "{} {} ({:?}) has a case of the wrong kind in api/tests/api/isolation.rs",
                spec.method, spec.path, spec.access
            )),
            Some(_) => {}
        }
    }
    for (method, path, _) in CASES {
        if !catalog().iter().any(|r| r.method == *method && r.path == *path) {
            problems.push(format!("{method} {path} has a case but is not in the catalogue"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test]
async fn every_route_refuses_the_wrong_callers_and_another_tenants_ids_look_missing() {
    let world = World::new().await;
    let impersonate = [("nimbus-impersonate", world.a_admin2.to_string())];
    for spec in catalog() {
        let route = format!("{} {}", spec.method, spec.path);
        let case = case_of(spec).unwrap_or_else(|| panic!("{route} has no case (see the meta-test)"));
        let (fixture, body) = match case {
            Case::Public => (None, None),
            Case::Collection { body } => (None, body),
            Case::ById { id, body } | Case::Operator { id: Some(id), body } => (Some(id), body),
            Case::Operator { id: None, body } => (None, body),
        };
        let own_path = fixture
            .map(|f| fill_with(spec.path, &world.id(f), &world.a_delivery))
            .unwrap_or_else(|| spec.path.to_owned());
        let before = snapshot(&world).await;

        if let Case::Public = case {
            let a = call(&world, spec.method, spec.path, None, None, &[]).await;
            assert!(![401, 403].contains(&a.status.as_u16()), "{route} is public but answered {}", a.status);
            continue;
        }

        // Anonymous, and with a credential that is no key: 401 in the envelope.
        for token in [None, Some("nmb_not_a_key")] {
            let a = call(&world, spec.method, &own_path, token, body, &[]).await;
            assert_eq!(a.status, 401, "{route} as {token:?}");
            assert_eq!(a.body.as_ref().unwrap()["error"]["code"], "UNAUTHENTICATED", "{route}");
        }

        if matches!(spec.access, Access::Operator | Access::BillingOperator) {
            let mut refused = vec![
                ("a plain user", world.a_user_key.as_str(), &[][..]),
                ("an admin key without the admin scope", world.a_admin_rw_key.as_str(), &[][..]),
            ];
            // A billing admin reaches the billing operators' routes only.
            if spec.access == Access::Operator {
                refused.push(("a billing admin", world.a_billing_key.as_str(), &[][..]));
            } else if spec.method == "GET" {
                let a = call(&world, "GET", &own_path, Some(&world.a_billing_key), None, &[]).await;
                assert!(a.status.is_success(), "{route} as a billing admin: {}", a.status);
            }
            // The way out of a session's impersonation answers a bearer request with 400 instead.
            if spec.path != "/v1/admin/impersonation" {
                refused.push(("an impersonated admin", world.a_admin.as_str(), &impersonate[..]));
            }
            for (who, token, headers) in refused {
                let a = call(&world, spec.method, &own_path, Some(token), body, headers).await;
                assert_eq!(a.status, 403, "{route} as {who}: {:?}", a.body);
                assert_eq!(a.body.as_ref().unwrap()["error"]["code"], "FORBIDDEN", "{route}");
            }
        }

        match case {
            Case::ById { id, .. } => {
                // The fixture is real: its owner reaches it (safe methods only).
                if spec.method == "GET" {
                    let a = call(&world, "GET", &own_path, Some(&world.a_admin), None, &[]).await;
                    assert!(a.status.is_success(), "{route} as its owner: {}", a.status);
                }
                let foreign = call(&world, spec.method, &own_path, Some(&world.b_admin), body, &[]).await;
                let missing_path = fill(spec.path, &uuid::Uuid::now_v7().to_string());
                let missing = call(&world, spec.method, &missing_path, Some(&world.b_admin), body, &[]).await;
                assert_eq!(missing.status, 404, "{route} with a missing id");
                assert_eq!(foreign.status, 404, "{route} with another tenant's {id:?}: {:?}", foreign.body);
                assert_eq!(without_meta(&foreign.body), without_meta(&missing.body), "{route}: foreign vs missing");
                let header_names = |h: &reqwest::header::HeaderMap| {
                    let mut names: Vec<String> = h.keys().map(|k| k.to_string()).collect();
                    names.sort();
                    names
                };
                assert_eq!(header_names(&foreign.headers), header_names(&missing.headers), "{route}: headers");
            }
            Case::Collection { .. } if spec.method == "GET" => {
                let a = call(&world, "GET", spec.path, Some(&world.b_admin), None, &[]).await;
                assert!(a.status.is_success(), "{route} as tenant B: {}", a.status);
                let text = a.body.map(|b| b.to_string()).unwrap_or_default();
                for id in world.a_ids() {
                    assert!(!text.contains(&id), "{route} shows tenant A's {id} to tenant B");
                }
            }
            _ => {}
        }
        assert_unchanged(&before, &snapshot(&world).await, &route);
    }
}
