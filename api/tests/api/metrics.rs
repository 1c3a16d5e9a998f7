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
