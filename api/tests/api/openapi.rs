//! The OpenAPI document (`GET /v1/openapi.json`) against the route catalogue and the live API:
//! every catalogued route is an operation and nothing else is, each with its security, errors and
//! examples; the reference page is served under its CSP; and PyPI `schemathesis` (from the venv
//! `make test` installs) calls every operation with an operator's API key and with a portal
//! session, failing on any 5xx and on any answer the document does not allow.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use nimbus_api::routes::{Access, catalog};
use reqwest::StatusCode;
use serde_json::Value;

use nimbus_api::payments::stripe::StripeConfig;

use crate::oidc;
use crate::payments::{LocalStripe, SECRET_KEY, WEBHOOK_SECRET};
use crate::support::{Options, TestApp, Worker, split};

async fn document(app: &TestApp) -> Value {
    let r = app.http.get(app.url("/v1/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

/// `(METHOD, path)` of every operation of `doc`.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options", "trace"].contains(&method.as_str()) {
                found.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

/// Every `$ref` in `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r);
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_has_every_catalogued_route_and_nothing_else() {
    let app = TestApp::new().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc, nimbus_api::openapi::document(), "the served document is the generated one");

    let documented = operations(&doc);
    let catalogued: BTreeSet<(String, String)> =
        catalog().iter().map(|r| (r.method.to_owned(), r.path.to_owned())).collect();
    let missing: Vec<_> = catalogued.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&catalogued).collect();
    assert!(missing.is_empty(), "catalogued routes missing from the OpenAPI document: {missing:?}");
    assert!(extra.is_empty(), "operations in the OpenAPI document that the catalogue does not list: {extra:?}");

    let mut ids = HashSet::new();
    for route in catalog() {
        let op = &doc["paths"][route.path][route.method.to_lowercase()];
        let name = format!("{} {}", route.method, route.path);
        let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{name}: no operationId"));
        assert!(ids.insert(id.to_owned()), "{name}: operationId {id} is used twice");
        let tag = op["tags"][0].as_str().unwrap_or_else(|| panic!("{name}: no tag"));
        assert!(
            doc["tags"].as_array().unwrap().iter().any(|t| t["name"] == tag),
            "{name}: tag {tag} is not among the document's tags (which set their order and descriptions)"
        );
        assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()), "{name}: no summary");

        // Auth: public routes need nothing, the others a bearer credential or the session.
        let security = op["security"].as_array().unwrap_or_else(|| panic!("{name}: no security"));
        if route.access == Access::Public {
            assert!(security.is_empty(), "{name}: public, but asks for {security:?}");
        } else {
            let schemes: Vec<&str> =
                security.iter().flat_map(|s| s.as_object().unwrap().keys()).map(String::as_str).collect();
            assert_eq!(schemes, ["bearer", "session"], "{name}");
        }

        // Path parameters: each one of the template, described.
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        for p in route.params() {
            assert!(
                params.iter().any(|d| d["in"] == "path" && d["name"] == p && d["required"] == true),
                "{name}: path parameter {p} is not described"
            );
        }

        // Answers: a success, the errors its access can meet, and an example for each JSON one.
        let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{name}: no responses"));
        assert!(
            responses.keys().any(|s| s.starts_with('2') || s.starts_with('3') || s == "101"),
            "{name}: no success answer in {:?}",
            responses.keys().collect::<Vec<_>>()
        );
        let mut expected_errors = Vec::new();
        if route.access != Access::Public {
            expected_errors.extend(["401", "403"]);
        }
        if route.takes_id() {
            expected_errors.extend(["400", "404"]);
        }
        if route.path.starts_with("/v1/") {
            expected_errors.push("429");
        }
        for status in expected_errors {
            assert!(responses.contains_key(status), "{name}: no {status} answer");
        }
        for (status, response) in responses {
            assert!(response["description"].as_str().is_some_and(|d| !d.is_empty()), "{name} {status}: no description");
            for (media, content) in response["content"].as_object().into_iter().flatten() {
                assert!(
                    content.get("example").is_some() || content.get("examples").is_some(),
                    "{name} {status} {media}: no example"
                );
                if (status.starts_with('4') || status.starts_with('5')) && media.contains("json") {
                    let code = content["example"]["error"]["code"].as_str().unwrap_or_default();
                    assert!(code.parse::<nimbus_domain::ErrorCode>().is_ok(), "{name} {status}: example code {code:?}");
                }
            }
        }
        if let Some(body) = op.get("requestBody") {
            for (media, content) in body["content"].as_object().unwrap() {
                assert!(content.get("example").is_some(), "{name} request {media}: no example");
            }
        }
    }

    // Every reference resolves.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("external $ref {r}"));
        assert!(doc.pointer(pointer).is_some(), "$ref {r} does not resolve");
    }
}

#[tokio::test]
async fn the_reference_page_renders_the_document_from_our_own_origin() {
    let dist = tempdir();
    std::fs::write(dist.join("index.html"), "<!doctype html><title>portal</title>").unwrap();
    std::fs::write(
        dist.join(nimbus_api::routes::reference::REFERENCE_PAGE),
        "<!doctype html><redoc spec-url=\"/v1/openapi.json\"></redoc>",
    )
    .unwrap();
    let app =
        TestApp::with(crate::support::ROOMY, Options { web_dist: Some(dist.clone()), ..Options::default() }).await;
    let r = app.http.get(app.url("/v1/docs")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(!csp.contains("unsafe-eval") && !csp.contains("http"), "{csp}");
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("/v1/openapi.json"));

    // Without the built portal there is no page: the envelope's 404, not a panic.
    let bare = TestApp::new().await;
    let (status, _, body) = split(bare.http.get(bare.url("/v1/docs")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "NOT_FOUND");
    let _ = std::fs::remove_dir_all(dist);
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nimbus-reference-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The venv's `schemathesis`, beside `NIMBUS_PYTHON`.
fn schemathesis() -> PathBuf {
    let python = std::env::var("NIMBUS_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| {
        panic!("NIMBUS_PYTHON is not set: run `make test`, which points it at the venv with schemathesis")
    });
    PathBuf::from(python).with_file_name("schemathesis")
}

/// schemathesis's settings: an event stream's first event is enough to check its answer (the
/// streams never end by themselves), and the ids of `known` (a path pattern and the id of a real
/// resource there) are used for those paths' `{id}`, so the operations reach a resource rather
/// than only 404.
fn schemathesis_config(known: &[(&str, String)]) -> String {
    let mut config = String::from("max-stream-events = 1\n");
    for (path_regex, id) in known {
        config.push_str(&format!(
            "\n[[operations]]\ninclude-path-regex = '{path_regex}'\nparameters = {{ \"path.id\" = \"{id}\" }}\n"
        ));
    }
    config
}

/// How a schemathesis pass authenticates.
enum Credential {
    /// `Authorization: Bearer` with this API key on every request.
    ApiKey(String),
    /// A portal session of this provider user (email, password), signed in by
    /// `api/tests/schemathesis_session.py` and signed in again when the run ends it.
    Session(&'static str, &'static str),
}

/// Runs schemathesis over every operation of `app`'s document as `credential`; panics with its
/// report unless it found nothing.
async fn run_schemathesis(app: &TestApp, label: &str, credential: Credential, known: &[(&str, String)]) {
    let config = std::env::temp_dir().join(format!("nimbus-schemathesis-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&config, schemathesis_config(known)).unwrap();
    let mut command = tokio::process::Command::new(schemathesis());
    command
        .args(["--no-color", "--config-file"])
        .arg(&config)
        .arg("run")
        .arg(app.url("/v1/openapi.json"))
        .args(["--url", &app.base])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,\
             response_schema_conformance",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        // One worker: with two threads, Hypothesis's parse of its own lambdas (Python's `ast`)
        // sometimes fails inside schemathesis, a fault of the tool and not of the API.
        .args(["--max-examples", "12", "--seed", "20261206", "--workers", "1", "--request-timeout", "30"])
        .args(["--suppress-health-check", "all"])
        // Its cache (`.schemathesis/`) is written to the working directory: not the checkout's.
        .current_dir(std::env::temp_dir())
        .kill_on_drop(true);
    match credential {
        Credential::ApiKey(key) => {
            command.args(["-H", &format!("Authorization: Bearer {key}")]);
        }
        Credential::Session(email, password) => {
            command
                .env("SCHEMATHESIS_HOOKS", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis_session.py"))
                .env("NIMBUS_ST_BASE", &app.base)
                .env("NIMBUS_ST_EMAIL", email)
                .env("NIMBUS_ST_PASSWORD", password);
        }
    }
    let output = tokio::time::timeout(Duration::from_secs(600), command.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis ({label}) ran over 10 minutes"))
        .expect("schemathesis runs (installed by infra/scripts/install-deps.sh)");
    let _ = std::fs::remove_file(&config);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "schemathesis ({label}) found problems:\n{stdout}\n{stderr}");
    println!("schemathesis ({label}):\n{stdout}");
    // It did test: the summary counts the operations it called.
    assert!(
        stdout.contains("passed") && !stdout.contains("No operations"),
        "schemathesis ({label}) ran nothing:\n{stdout}"
    );
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    // A deployment with every part configured: the OIDC provider, and payments through localstripe
    // (without a provider, top-ups answer 501 PAYMENTS_NOT_CONFIGURED by design), and the portal's
    // build with the reference page. The rate limit
    // and the failed-authentication limit are tested elsewhere; here they would only answer 429 in
    // place of the operations.
    let stripe = LocalStripe::start().await;
    let stripe_config = StripeConfig {
        api_base: stripe.base.clone(),
        secret_key: SECRET_KEY.into(),
        webhook_secret: WEBHOOK_SECRET.into(),
    };
    let dist = tempdir();
    std::fs::write(dist.join("index.html"), "<!doctype html><title>portal</title>").unwrap();
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/api-reference.html"), dist.join("api-reference.html"))
        .unwrap();
    let app = oidc::app_with_options(Options {
        oidc_issuer: Some(oidc::issuer()),
        stripe: Some(stripe_config),
        web_dist: Some(dist.clone()),
        requests_per_minute: Some(1_000_000),
        auth_failures_per_minute: Some(1_000_000),
        ..Options::default()
    })
    .await;
    let webhook = app.url("/v1/billing/providers/stripe/webhook");
    stripe.post("/_config/webhooks/nimbus", &[("url", &webhook), ("secret", WEBHOOK_SECRET)]).await;
    // A worker runs the jobs the calls start. Real resources for the operations that take an id:
    // a running instance with the job that made it, the tenant and its plan.
    let worker = Worker::start(&app, Duration::from_secs(5)).await;
    let (status, _, created) = app.create_vm(&crate::support::vm_body("contract-1"), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let job = created["data"]["id"].as_str().unwrap().to_owned();
    let instance = created["data"]["resources"][0]["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, _, handle) = app.get(&format!("/v1/jobs/{job}")).await;
        if handle["data"]["status"] == "succeeded" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the instance was not made: {handle}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let known = [
        ("^/v1/vms/\\{id\\}", instance),
        ("^/v1/(admin/)?jobs/\\{id\\}", job),
        ("^/v1/admin/tenants/\\{id\\}", app.tenant.to_string()),
        ("^/v1/admin/plans/\\{id\\}", app.plan_id().await.to_string()),
    ];

    // An operator's API key (the tenant's first user is an administrator).
    run_schemathesis(&app, "API key", Credential::ApiKey(app.token.clone()), &known).await;

    // A portal session of the provider's administrator.
    let browser = oidc::sign_in(&app, "admin@nimbus.test", "admin-pass").await;
    let (status, me) = oidc::me(&app, &browser).await;
    assert_eq!(status, StatusCode::OK, "the provider's administrator signs in: {me}");
    run_schemathesis(&app, "session", Credential::Session("admin@nimbus.test", "admin-pass"), &known).await;
    worker.stop().await;
    let _ = std::fs::remove_dir_all(dist);
}
