//! The production path's files, checked offline (Kong, Docker, kubectl and kustomize cannot run
//! here), each check then shown to refuse what it is there to refuse:
//!
//! * `kong/kong.yml` by `infra/testing/kong_check.py`: against Kong's declarative schema
//!   (`../shared/kong/`), the fields of every plugin it uses, and the API's own routes: every
//!   catalogued route reaches the API through exactly one Kong route, streams unbuffered with
//!   long timeouts, every Kong route serves something, the portal's pages reach the portal.
//! * `infra/k8s` and `infra/compose` by `infra/testing/check_deploy.py`: yamllint; every object
//!   of the base and both overlays, rendered, against Kubernetes' schemas (PyPI
//!   `kubernetes-validate`) or KEDA's and CloudNativePG's published ones; every queue in exactly
//!   one worker pool scaled on its streams; selectors, probes, non-root containers, secrets.

use std::path::{Path, PathBuf};
use std::process::Command;

use nimbus_api::routes::catalog;
use serde_json::json;

/// The API's long-lived answers: Server-Sent Events and the console's WebSocket.
const STREAMS: &[&str] =
    &["/v1/vms/{id}/events", "/v1/jobs/{id}/events", "/v1/notifications/stream", "/v1/vms/{id}/console/ws"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Kong's schema, or `None` (with a message) where `../shared` is not beside the checkout.
fn kong_schema() -> Option<PathBuf> {
    let schema = repo().join("../shared/kong/kong_json_schema.json");
    if schema.is_file() {
        Some(schema)
    } else {
        eprintln!("skipped: {} is absent (Kong's schemas live in ../shared/kong)", schema.display());
        None
    }
}

/// The portal's pages, as its router (`web/src/app.rs`) declares them.
fn portal_pages() -> Vec<String> {
    let app = std::fs::read_to_string(repo().join("web/src/app.rs")).unwrap();
    let pages: Vec<String> = app
        .lines()
        .filter_map(|l| l.trim().strip_prefix("#[to(\"").and_then(|rest| rest.split('"').next()))
        .map(str::to_owned)
        .collect();
    assert!(pages.len() >= 10, "the portal's routes were not found in web/src/app.rs: {pages:?}");
    pages
}

/// The venv's Python (with PyYAML, jsonschema, kubernetes-validate and yamllint).
fn python() -> String {
    std::env::var("NIMBUS_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| {
        panic!("NIMBUS_PYTHON is not set: run `make test`, which points it at the venv with the checkers' packages")
    })
}

/// A folder of this test's own under the system's temp dir.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nimbus-kong-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the checker on `kong_yml`; its exit status and what it printed.
fn check(kong_yml: &Path, schema: &Path) -> (bool, String) {
    for stream in STREAMS {
        assert!(catalog().iter().any(|r| r.path == *stream), "{stream} is not in the catalogue");
    }
    let api = json!({
        "routes": catalog().iter().map(|r| json!({"method": r.method, "path": r.path})).collect::<Vec<_>>(),
        "streams": STREAMS,
        "pages": portal_pages(),
        "maxBodyBytes": nimbus_api::MAX_BODY_BYTES,
    });
    let api_json = scratch().join("api.json");
    std::fs::write(&api_json, api.to_string()).unwrap();
    let out = Command::new(python())
        .arg(repo().join("infra/testing/kong_check.py"))
        .arg(kong_yml)
        .arg(schema)
        .arg(&api_json)
        .output()
        .expect("the checker runs");
    let _ = std::fs::remove_dir_all(api_json.parent().unwrap());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn kong_yml_passes_kongs_schema_and_routes_every_api_route() {
    let Some(schema) = kong_schema() else { return };
    let (ok, out) = check(&repo().join("kong/kong.yml"), &schema);
    assert!(ok, "kong/kong.yml:\n{out}");
    assert!(out.contains(&format!("{} API routes", catalog().len())), "{out}");
}

#[test]
fn the_check_refuses_a_missing_route_an_idle_route_a_misspelt_field_and_a_buffered_stream() {
    let Some(schema) = kong_schema() else { return };
    let original = std::fs::read_to_string(repo().join("kong/kong.yml")).unwrap();
    let dir = scratch();
    let changed = |from: &str, to: &str| {
        assert!(original.contains(from), "kong.yml no longer has {from:?}");
        let path = dir.join("kong.yml");
        std::fs::write(&path, original.replacen(from, to, 1)).unwrap();
        check(&path, &schema)
    };
    let cases = [
        // An API route Kong does not know.
        (
            "      - name: v1-quota\n        paths: [\"~/v1/quota$\"]\n",
            "      - name: v1-quota\n        paths: [\"~/v1/quotas$\"]\n",
            vec!["GET /v1/quota: no Kong route", "route v1-quota: GET reaches no API route"],
        ),
        // A method the API does not serve there.
        (
            "        paths: [\"~/v1/quota$\"]\n        methods: [GET, HEAD]",
            "        paths: [\"~/v1/quota$\"]\n        methods: [GET, HEAD, DELETE]",
            vec!["route v1-quota: DELETE reaches no API route"],
        ),
        // A plugin field Kong would refuse at start (the schema leaves `config` free-form).
        ("      header_name: X-Request-ID", "      header_nme: X-Request-ID", vec!["unknown field 'header_nme'"]),
        // A field Kong's own schema refuses.
        ("    retries: 2\n", "    retries: 2\n    retry: 2\n", vec!["schema: services/0"]),
        // A stream Kong would hold back.
        ("        response_buffering: false", "        response_buffering: true", vec!["buffers answers"]),
        // A limit that is not the API's.
        ("      allowed_payload_size: 256", "      allowed_payload_size: 1024", vec!["not the API's own limit"]),
        // A literal path lost to the parameterised one beside it.
        ("        regex_priority: 1\n", "", vec!["at the same regex_priority"]),
    ];
    for (from, to, expected) in cases {
        let (ok, out) = changed(from, to);
        assert!(!ok, "accepted with {to:?}:\n{out}");
        for e in expected {
            assert!(out.contains(e), "with {to:?}, expected {e:?} in:\n{out}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Copies what the deployment check reads (kong/, infra/'s deployment folders) under `to`.
fn copy_deployment_files(to: &Path) {
    fn copy(from: &Path, to: &Path) {
        if from.is_dir() {
            std::fs::create_dir_all(to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                copy(&entry.path(), &to.join(entry.file_name()));
            }
        } else {
            std::fs::copy(from, to).unwrap();
        }
    }
    for part in ["kong", "infra/k8s", "infra/compose", "infra/docker", "infra/testing", "infra/.yamllint.yaml"] {
        copy(&repo().join(part), &to.join(part));
    }
}

/// Runs the deployment check on the files under `root`; its exit status and what it printed.
fn check_deployment(root: &Path) -> (bool, String) {
    let queues = scratch();
    let queues_json = queues.join("queues.json");
    std::fs::write(&queues_json, json!({ "queues": nimbus_jobs::queues::ALL }).to_string()).unwrap();
    let out = Command::new(python())
        .arg(repo().join("infra/testing/check_deploy.py"))
        .arg(root)
        .arg(&queues_json)
        .output()
        .expect("the checker runs");
    let _ = std::fs::remove_dir_all(&queues);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn the_deployment_files_pass_their_schemas_and_hold_together() {
    let (ok, out) = check_deployment(&repo());
    assert!(ok, "infra/k8s, infra/compose:\n{out}");
    assert!(out.contains("deployment files: valid"), "{out}");
}

#[test]
fn the_deployment_check_refuses_unknown_fields_an_unscaled_queue_and_bad_yaml() {
    let cases: [(&str, &str, &str, &[&str]); 7] = [
        // A field Kubernetes refuses (strict validation).
        (
            "infra/k8s/base/api.yaml",
            "  revisionHistoryLimit: 5",
            "  revisionHistoryLimits: 5",
            &["'revisionHistoryLimits' was unexpected"],
        ),
        // A field KEDA's published schema does not have.
        (
            "infra/k8s/base/workers-keda.yaml",
            "  minReplicaCount: 0",
            "  minReplicas: 0",
            &["'minReplicas' was unexpected"],
        ),
        // A field CloudNativePG's does not have.
        (
            "infra/k8s/base/postgres.yaml",
            "      database: nimbus",
            "      databse: nimbus",
            &["'databse' was unexpected"],
        ),
        // A queue consumed by two pools, and scaled by neither's streams.
        (
            "infra/k8s/base/workers.yaml",
            "              value: billing\n",
            "              value: billing,notify\n",
            &["queue notify is consumed by", "no lagCount trigger on ('nimbus:q:notify', 'workers')"],
        ),
        // A pool that KEDA would scale away while its jobs run.
        (
            "infra/k8s/base/workers-keda.yaml",
            "        pendingEntriesCount: \"10\"",
            "        lagCount: \"10\"",
            &["no pending-entries trigger"],
        ),
        // Metrics on a port the pod does not declare.
        (
            "infra/k8s/base/workers.yaml",
            "              value: 0.0.0.0:9090",
            "              value: 0.0.0.0:9191",
            &["METRICS_LISTEN is unset or not a declared port"],
        ),
        // Duplicate keys (yamllint).
        ("kong/kong.yml", "    retries: 2\n", "    retries: 2\n    retries: 3\n", &["yamllint", "duplication of key"]),
    ];
    for (file, from, to, expected) in cases {
        let root = scratch();
        copy_deployment_files(&root);
        let path = root.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} no longer has {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        let (ok, out) = check_deployment(&root);
        let _ = std::fs::remove_dir_all(&root);
        assert!(!ok, "accepted with {to:?} in {file}:\n{out}");
        for e in expected {
            assert!(out.contains(e), "with {to:?} in {file}, expected {e:?} in:\n{out}");
        }
    }
}
