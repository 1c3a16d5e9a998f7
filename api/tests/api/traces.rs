//! Traces: one `POST /v1/vms` is one trace, from the API's request through the worker's job to
//! the Proxmox calls of the provision, exported by OTLP to a collector this test runs (OTLP over
//! HTTP, JSON bodies).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use nimbus_telemetry::traces::{Protocol, layer_to};
use serde_json::Value;
use tracing_subscriber::layer::SubscriberExt;

use crate::support::{TestApp, Worker, vm_body};

/// What the collector received: every span, with its trace, id, parent and name.
#[derive(Default)]
struct Collected(parking_lot::Mutex<Vec<(String, String, String, String)>>);

async fn collect(State(got): State<Arc<Collected>>, Json(body): Json<Value>) -> Json<Value> {
    let mut spans = got.0.lock();
    for resource in body["resourceSpans"].as_array().into_iter().flatten() {
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let field = |k: &str| span[k].as_str().unwrap_or_default().to_owned();
                spans.push((field("traceId"), field("spanId"), field("parentSpanId"), field("name")));
            }
        }
    }
    Json(serde_json::json!({}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_is_one_trace_from_the_request_to_the_proxmox_calls() {
    let got = Arc::new(Collected::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let router = axum::Router::new().route("/v1/traces", axum::routing::post(collect)).with_state(got.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    // This test's process exports everything it traces (each test runs in a process of its own).
    let (layer, exporting) = layer_to(&endpoint, Protocol::HttpJson, "nimbus-test").unwrap();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();

    let app = TestApp::new().await;
    let worker = Worker::start(&app, Duration::from_secs(5)).await;
    let (status, _, accepted) = app.create_vm(&vm_body("traced-1"), &[]).await;
    assert_eq!(status, 202, "{accepted}");
    let job = accepted["data"]["id"].as_str().unwrap().to_owned();
    let mut done = false;
    for _ in 0..600 {
        let answer = app.http.get(app.url(&format!("/v1/jobs/{job}"))).bearer_auth(&app.token).send().await.unwrap();
        let body: Value = answer.json().await.unwrap();
        if body["data"]["status"] == "succeeded" {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(done, "the provision did not succeed");
    let traceparent: Option<String> = sqlx::query_scalar("select traceparent from jobs where id = $1::uuid")
        .bind(&job)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert!(traceparent.is_some(), "the job keeps its request's trace context");
    worker.stop().await;
    exporting.shutdown().await;

    let spans = got.0.lock().clone();
    let by_id: HashMap<&str, &(String, String, String, String)> = spans.iter().map(|s| (s.1.as_str(), s)).collect();
    // The job's span, and the trace it belongs to.
    let job_span = spans.iter().find(|s| s.3 == "job").unwrap_or_else(|| panic!("no job span in {spans:#?}"));
    let trace = &job_span.0;
    // Its ancestors reach the API's request span, in the same trace.
    let mut ancestor = by_id.get(job_span.2.as_str()).copied();
    let mut reached_request = false;
    while let Some(a) = ancestor {
        assert_eq!(&a.0, trace, "an ancestor in another trace");
        if a.3 == "request" {
            reached_request = true;
            break;
        }
        ancestor = by_id.get(a.2.as_str()).copied();
    }
    assert!(reached_request, "the job's span does not descend from a request span: {spans:#?}");
    // The provision's Proxmox calls are in that trace, by path template.
    let calls: Vec<&str> =
        spans.iter().filter(|s| &s.0 == trace && s.3.contains("/nodes/")).map(|s| s.3.as_str()).collect();
    assert!(calls.contains(&"POST /nodes/{node}/qemu/{vmid}/clone"), "{calls:?}");
    assert!(calls.iter().any(|c| c.starts_with("GET /nodes/{node}/tasks/{upid}")), "{calls:?}");
    assert!(!calls.iter().any(|c| c.contains("pve1")), "{calls:?}");
}
