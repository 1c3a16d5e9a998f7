//! `/healthz` and `/readyz`, and the 503 envelope when a dependency is down.

use serde_json::json;

use crate::support::{Options, ROOMY, TestApp, assert_error, split};

#[tokio::test]
async fn healthz_and_readyz_answer_when_everything_is_up() {
    let app = TestApp::new().await;
    let (status, _, body) = split(app.http.get(app.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["status"], "ok");
    let (status, _, body) = split(app.http.get(app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], json!({"postgres": "ok", "redis": "ok"}));
}

#[tokio::test]
async fn readyz_is_503_when_redis_is_unreachable() {
    let app = TestApp::with(ROOMY, Options { redis_down: true, ..Options::default() }).await;
    let (status, _, body) = split(app.http.get(app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(status, 503);
    assert_error(&body, "SERVICE_UNAVAILABLE");
    assert_eq!(body["error"]["details"], json!({"postgres": "ok", "redis": "unavailable"}));
    assert!(!body.to_string().contains("refused"), "causes are logged, not sent: {body}");
}

#[tokio::test]
async fn postgres_down_is_503_in_the_envelope_not_500() {
    let app = TestApp::with(ROOMY, Options { postgres_down: true, ..Options::default() }).await;
    let (status, _, body) = app.get("/v1/vms").await;
    assert_eq!(status, 503, "{body}");
    assert_error(&body, "SERVICE_UNAVAILABLE");
    assert_eq!(body["error"]["details"], serde_json::Value::Null);
    let (status, _, body) = split(app.http.get(app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["details"], json!({"postgres": "unavailable", "redis": "ok"}));
    // And a POST is refused the same way, with nothing half-done.
    let (status, _, body) = app.create_vm(&crate::support::vm_body("web-1"), &[]).await;
    assert_eq!(status, 503, "{body}");
}
