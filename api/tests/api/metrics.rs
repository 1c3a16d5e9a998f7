//! The API's metrics on their own listener: requests by route template and status, open
//! streams, and the Proxmox calls the API makes, by path template.

use std::time::Duration;

use reqwest::StatusCode;

use crate::support::{TestApp, split, vm_body};

async fn scrape(app: &TestApp) -> String {
    let answer = app.http.get(format!("{}/metrics", app.metrics_base)).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(answer.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    answer.text().await.unwrap()
}

/// The value of the series `name{labels}` (0 when absent).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn requests_are_counted_by_route_template_and_streams_while_open() {
    let app = TestApp::new().await;
    let get = |path: String| app.http.get(app.url(&path)).bearer_auth(&app.token).send();
    for _ in 0..3 {
        assert_eq!(get(format!("/v1/vms/{}", uuid::Uuid::now_v7())).await.unwrap().status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(get("/v1/quota".into()).await.unwrap().status(), StatusCode::OK);
    assert_eq!(get("/v1/no-such-thing".into()).await.unwrap().status(), StatusCode::NOT_FOUND);
    let created = app.http.post(app.url("/v1/vms")).bearer_auth(&app.token).json(&vm_body("m1")).send().await.unwrap();
    let (status, _, body) = split(created).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = body["data"]["id"].as_str().unwrap().to_owned();

    let text = scrape(&app).await;
    let requests = |route: &str, method: &str, status: u16| {
        value(
            &text,
            &format!("nimbus_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"),
        )
    };
    // One series per route whatever the ids: the template, never the path.
    assert_eq!(requests("/v1/vms/{id}", "GET", 404), 3.0, "{text}");
    assert_eq!(requests("/v1/quota", "GET", 200), 1.0, "{text}");
    assert_eq!(requests("unmatched", "GET", 404), 1.0, "{text}");
    assert_eq!(requests("/v1/vms", "POST", 202), 1.0, "{text}");
    assert!(!text.contains("/v1/vms/0"), "an id became a label: {text}");
    assert_eq!(
        value(&text, "nimbus_http_request_duration_seconds_count{route=\"/v1/vms/{id}\",method=\"GET\"}"),
        3.0,
        "{text}"
    );
    // The create read the cluster's inventory from Proxmox.
    assert!(
        value(&text, "nimbus_proxmox_requests_total{method=\"GET\",path=\"/cluster/resources\",status=\"200\"}") >= 1.0,
        "{text}"
    );
    assert_eq!(value(&text, "nimbus_http_requests_in_flight"), 0.0, "nothing is in flight between requests: {text}");

    // A job's event stream is open while its client reads it.
    let stream = app.http.get(app.url(&format!("/v1/jobs/{job}/events"))).bearer_auth(&app.token).send().await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let open = "nimbus_sse_streams_open{stream=\"jobs\"}";
    assert_eq!(value(&scrape(&app).await, open), 1.0);
    drop(stream);
    let mut closed = false;
    for _ in 0..100 {
        if value(&scrape(&app).await, open) == 0.0 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed, "the stream's gauge did not drop when its client left");

    // The public listener does not serve metrics.
    let public = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
}

/// The metric names a process exposes, as Prometheus stores them (counters with `_total`).
fn exposed(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            if kind == "counter" { format!("{name}_total") } else { name.to_owned() }
        })
        .collect()
}

#[tokio::test]
async fn the_readmes_table_and_the_dashboard_name_exactly_the_metrics_served() {
    // Families print only once they have a series: give each one.
    let app = TestApp::new().await;
    let created = app.http.post(app.url("/v1/vms")).bearer_auth(&app.token).json(&vm_body("t1")).send().await.unwrap();
    let (_, _, body) = split(created).await;
    let job = body["data"]["id"].as_str().unwrap().to_owned();
    let stream = app.http.get(app.url(&format!("/v1/jobs/{job}/events"))).bearer_auth(&app.token).send().await.unwrap();
    let mut served = exposed(&scrape(&app).await);
    drop(stream);
    let mut registry = nimbus_telemetry::Registry::default();
    let worker = nimbus_worker::metrics::WorkerMetrics::register(&mut registry);
    worker.job_ended("provision", &nimbus_worker::step_machine::Outcome::Succeeded, Duration::from_secs(1));
    worker.node_cap_waited("pve1", Duration::from_millis(10));
    worker.schedules_fired(1);
    worker.webhook_attempt("delivered");
    let queues = nimbus_jobs::Queues::with_client(app.redis.client().clone(), app.redis.key("nimbus:"));
    worker.sample_queues(&queues, nimbus_jobs::queues::ALL).await;
    served.extend(exposed(&nimbus_telemetry::encode(&registry)));
    assert!(served.len() >= 17, "{served:?}");

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme.split("\n### Metrics\n").nth(1).expect("README has a Metrics section");
    let section = section.split("\n### ").next().unwrap();
    let documented: std::collections::BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `nimbus_"))
        .map(|rest| format!("nimbus_{}", rest.split('`').next().unwrap()))
        .collect();
    assert_eq!(documented, served, "README's metrics table and the metrics served differ");

    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("infra/grafana/nimbus.json")).unwrap()).unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (at, _) in expr.match_indices("nimbus_") {
                let series: String = expr[at..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                let series = series.as_str();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| series.strip_suffix(s).filter(|f| served.contains(*f)))
                    .unwrap_or(series);
                assert!(served.contains(family), "panel {:?} queries {series}, which nothing serves", panel["title"]);
                queried.insert(family.to_owned());
            }
        }
    }
    let unused: Vec<_> = served.difference(&queried).collect();
    assert!(unused.is_empty(), "metrics no dashboard panel shows: {unused:?}");
}
