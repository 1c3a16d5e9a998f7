//! The portal's server side: the SPA served from `NIMBUS_WEB_DIST` (deep links, precompressed
//! hashed assets, cache headers, the API's JSON 404s kept), and the admin endpoints its pages
//! read (`/v1/admin/queues`, `/v1/admin/nodes`).

use std::path::Path;
use std::time::Duration;

use nimbus_db::users::{self, NewUser};
use nimbus_db::{api_keys, jobs};
use nimbus_domain::{ErrorCode, JobError, JobId, Role};
use serde_json::Value;

use crate::support::{Options, ROOMY, TestApp, assert_error, new_tenant, split, vm_body};

const INDEX: &str = "<!doctype html><title>Nimbus</title><script type=module src=/assets/app-0123456789.js></script>";
const SCRIPT: &str = "export default function init() { return 'nimbus portal'; }";

/// The stand-in for a brotli copy (the API never decodes it, so any bytes prove which was sent).
const BROTLI_MARK: &[u8] = b"brotli copy of the script";

/// A dist directory like build-web.sh writes: index.html and hashed assets, each with a .gz.
fn dist() -> tempfile_dir::TempDir {
    let dir = tempfile_dir::TempDir::new();
    std::fs::create_dir_all(dir.path().join("assets")).unwrap();
    write_with_gzip(&dir.path().join("index.html"), INDEX.as_bytes());
    write_with_gzip(&dir.path().join("assets/app-0123456789.js"), SCRIPT.as_bytes());
    write_with_gzip(&dir.path().join("assets/app-0123456789.wasm"), b"\0asm\x01\0\0\0");
    // build-web.sh writes brotli copies too; the API sends them as they are.
    std::fs::write(dir.path().join("assets/app-0123456789.js.br"), BROTLI_MARK).unwrap();
    dir
}

fn write_with_gzip(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    let status = std::process::Command::new("gzip").args(["-9", "-n", "-k", "-f"]).arg(path).status().unwrap();
    assert!(status.success());
}

/// A private temporary directory removed on drop (no extra dev-dependency for it).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> TempDir {
            let p = std::env::temp_dir().join(format!("nimbus-web-test-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn app_with_portal() -> (TestApp, tempfile_dir::TempDir) {
    let dir = dist();
    let app = TestApp::with(ROOMY, Options { web_dist: Some(dir.path().to_owned()), ..Options::default() }).await;
    (app, dir)
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn deep_links_get_the_page_revalidated_on_every_load() {
    let (app, _dir) = app_with_portal().await;
    for path in ["/", "/instances", "/instances/0199a0a0-0000-7000-8000-000000000000", "/admin/queues?x=1"] {
        let r = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(header(r.headers(), "content-type").starts_with("text/html"), "{path}");
        assert_eq!(header(r.headers(), "cache-control"), "no-cache", "{path}");
        let csp = header(r.headers(), "content-security-policy");
        assert!(
            csp.contains("script-src 'self' 'wasm-unsafe-eval'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(r.text().await.unwrap(), INDEX, "{path}");
    }
    // A browser that accepts gzip gets the precompressed page.
    let r = app.http.get(app.url("/instances")).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "content-encoding"), "gzip");
    assert!(header(r.headers(), "vary").to_ascii_lowercase().contains("accept-encoding"));
}

#[tokio::test]
async fn hashed_assets_are_cached_forever_and_sent_gzipped() {
    let (app, _dir) = app_with_portal().await;
    let r = app.http.get(app.url("/assets/app-0123456789.js")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(r.headers(), "content-type").contains("javascript"));
    assert_eq!(header(r.headers(), "cache-control"), "public, max-age=31536000, immutable");
    assert_eq!(header(r.headers(), "x-content-type-options"), "nosniff");
    assert_eq!(r.text().await.unwrap(), SCRIPT);

    let r = app.http.get(app.url("/assets/app-0123456789.js")).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(header(r.headers(), "content-encoding"), "gzip");
    let gz = r.bytes().await.unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "the gzip copy is sent as it is");

    let r =
        app.http.get(app.url("/assets/app-0123456789.js")).header("accept-encoding", "gzip, br").send().await.unwrap();
    assert_eq!(header(r.headers(), "content-encoding"), "br", "brotli is preferred when accepted");
    assert_eq!(header(r.headers(), "cache-control"), "public, max-age=31536000, immutable");
    assert_eq!(r.bytes().await.unwrap().as_ref(), BROTLI_MARK);
    // An asset without a brotli copy falls back to gzip.
    let r = app
        .http
        .get(app.url("/assets/app-0123456789.wasm"))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(header(r.headers(), "content-encoding"), "gzip");

    let r = app.http.get(app.url("/assets/app-0123456789.wasm")).send().await.unwrap();
    assert_eq!(header(r.headers(), "content-type"), "application/wasm");
}

#[tokio::test]
async fn a_missing_asset_is_a_json_404_not_the_page() {
    let (app, _dir) = app_with_portal().await;
    for path in ["/assets/app-ffffffffff.js", "/assets/..%2f..%2findex.html", "/assets/"] {
        let (status, headers, body) = split(app.http.get(app.url(path)).send().await.unwrap()).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_error(&body, "NOT_FOUND");
        assert!(headers.get("cache-control").is_none(), "{path}: a 404 is not cached forever");
    }
}

#[tokio::test]
async fn the_apis_namespaces_keep_their_json_404s() {
    let (app, _dir) = app_with_portal().await;
    for path in ["/v1/nope", "/v1", "/v1/vms/x/y/z"] {
        let (status, _, body) = split(app.http.get(app.url(path)).send().await.unwrap()).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_error(&body, "NOT_FOUND");
    }
    // Sign-in addresses are navigations: their 404 is the HTML error page, not the portal.
    let r = app.http.get(app.url("/auth/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("Page not found"));
    // The API itself still answers, and only GET/HEAD get the page.
    let (status, _, body) = split(app.http.get(app.url("/healthz")).send().await.unwrap()).await;
    assert_eq!((status.as_u16(), body["data"]["status"].as_str()), (200, Some("ok")));
    let (status, _, body) = split(app.http.post(app.url("/instances")).send().await.unwrap()).await;
    assert_eq!(status, 404, "{body}");
    assert_error(&body, "NOT_FOUND");
    let r = app.http.head(app.url("/instances")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn without_a_dist_directory_there_is_no_page() {
    let app = TestApp::new().await;
    let (status, _, body) = split(app.http.get(app.url("/instances")).send().await.unwrap()).await;
    assert_eq!(status, 404, "{body}");
    assert_error(&body, "NOT_FOUND");
}

/// A key of a `user`-role member of the default tenant.
async fn member_key(app: &TestApp) -> String {
    let user = users::create(
        app.pool(),
        app.tenant,
        &NewUser { email: "member@acme.test".into(), display_name: None, role: Role::User },
    )
    .await
    .unwrap();
    api_keys::create(app.pool(), app.tenant, user.id, "test", &[], None).await.unwrap().1
}

async fn create(app: &TestApp, token: &str, name: &str) -> JobId {
    let r = app.http.post(app.url("/v1/vms")).bearer_auth(token).json(&vm_body(name)).send().await.unwrap();
    let (status, _, body) = split(r).await;
    assert_eq!(status, 202, "{body}");
    body["data"]["id"].as_str().unwrap().parse().unwrap()
}

fn provision(body: &Value) -> &Value {
    body["data"].as_array().unwrap().iter().find(|q| q["queue"] == "provision").unwrap_or_else(|| panic!("{body}"))
}

#[tokio::test]
async fn queue_stats_count_the_ledger_of_every_tenant_or_one() {
    let app = TestApp::new().await;
    let (status, _, body) = app.get("/v1/admin/queues").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], serde_json::json!([]), "no jobs, no queues");

    let _waiting = create(&app, &app.token, "waiting").await;
    let running = create(&app, &app.token, "running").await;
    let failed = create(&app, &app.token, "failed").await;
    let dead = create(&app, &app.token, "dead").await;
    let lease = Duration::from_secs(30);
    for id in [running, failed, dead] {
        jobs::claim(app.pool(), id, "worker-1", lease).await.unwrap().expect("claimed");
    }
    let error = JobError { code: ErrorCode::ProxmoxRejected, message: "clone refused".into(), retryable: false };
    jobs::fail(app.pool(), failed, "worker-1", &error, Duration::ZERO).await.unwrap();
    // Its last attempt: what nimbus-queue would have moved to the dead stream.
    sqlx::query("update jobs set max_attempts = attempts where id = $1")
        .bind(dead.as_uuid())
        .execute(app.pool())
        .await
        .unwrap();
    jobs::fail(app.pool(), dead, "worker-1", &error, Duration::ZERO).await.unwrap();
    // Another tenant's waiting job: counted in the operator's view, not in the first tenant's.
    let (_, other) = new_tenant(app.pool(), ROOMY).await;
    create(&app, &other, "elsewhere").await;
    let (status, _, all) = app.get("/v1/admin/queues").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(provision(&all)["depth"], 2, "{all}");

    let (status, _, body) = app.get(&format!("/v1/admin/queues?tenant={}", app.tenant)).await;
    assert_eq!(status, 200, "{body}");
    let q = provision(&body);
    assert_eq!(q["depth"], 1, "{q}");
    assert_eq!(q["retrying"], 0, "{q}");
    assert_eq!(q["running"], 1, "{q}");
    assert_eq!(q["failed"], 2, "{q}");
    assert_eq!(q["dead"], 1, "{q}");
    assert_eq!(q["finishedLastHour"], 2, "{q}");
    assert_eq!(q["failedLastHour"], 2, "{q}");
    let slots: Vec<i64> = q["throughput"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(slots.len(), 12);
    assert_eq!(slots[11], 2, "both finished in the newest slot: {slots:?}");
    assert_eq!(slots.iter().sum::<i64>(), 2);

    let member = member_key(&app).await;
    let (status, _, body) = app.get_as(&member, "/v1/admin/queues").await;
    assert_eq!(status, 403, "{body}");
    assert_error(&body, "FORBIDDEN");
}

#[tokio::test]
async fn nodes_overview_reads_every_simulated_node() {
    let app = TestApp::new().await;
    let (status, _, body) = app.get("/v1/admin/nodes").await;
    assert_eq!(status, 200, "{body}");
    let nodes = body["data"].as_array().unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n["node"].as_str().unwrap()).collect();
    assert_eq!(names, ["pve1", "pve2", "pve3"], "{body}");
    for n in nodes {
        assert_eq!(n["status"], "online", "{n}");
        assert!(n["cpus"].as_u64().unwrap() > 0, "{n}");
        assert!(n["memoryTotal"].as_u64().unwrap() >= n["memoryUsed"].as_u64().unwrap(), "{n}");
        assert!(n["diskTotal"].as_u64().unwrap() > 0, "{n}");
        assert_eq!(n["guests"], 0, "the seeded templates are not guests: {n}");
    }

    let member = member_key(&app).await;
    let (status, _, body) = app.get_as(&member, "/v1/admin/nodes").await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test]
async fn quota_carries_the_plans_prices_for_the_estimate() {
    let app = TestApp::new().await;
    let (status, _, body) = app.get("/v1/quota").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["prices"]["currency"], "EUR", "{body}");
    assert!(body["data"]["prices"]["vcpuHour"].is_string(), "{body}");
}
