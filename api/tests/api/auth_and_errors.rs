//! Authentication, request ids and the envelope of answers axum would otherwise give in plain
//! text.

use crate::support::{TestApp, assert_error, split};

#[tokio::test]
async fn requests_without_a_valid_key_are_401_in_the_envelope() {
    let app = TestApp::new().await;
    let (status, headers, body) = split(app.http.get(app.url("/v1/vms")).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_error(&body, "UNAUTHENTICATED");

    let fake = format!("nmb_{}_{}", "a".repeat(12), "b".repeat(40));
    for token in ["garbage", fake.as_str()] {
        let (status, _, body) = app.get_as(token, "/v1/jobs").await;
        assert_eq!(status, 401, "{token}");
        assert_error(&body, "UNAUTHENTICATED");
    }
    // Basic auth is not a bearer token.
    let r = app.http.get(app.url("/v1/quota")).basic_auth("u", Some("p")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn request_ids_are_generated_or_echoed() {
    let app = TestApp::new().await;
    let (_, headers, body) = app.get("/v1/vms").await;
    let generated = headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    assert_eq!(body["meta"]["requestId"], generated.as_str());

    let r = app
        .http
        .get(app.url("/v1/vms"))
        .bearer_auth(&app.token)
        .header("x-request-id", "abc.123")
        .send()
        .await
        .unwrap();
    // The client's id is its correlation id: echoed beside the server's, never instead of it.
    assert_eq!(r.headers()["x-correlation-id"], "abc.123");
    assert_ne!(r.headers()["x-request-id"], "abc.123");
    // Two clients sending the same id get different request ids.
    let again = app
        .http
        .get(app.url("/v1/vms"))
        .bearer_auth(&app.token)
        .header("x-request-id", "abc.123")
        .send()
        .await
        .unwrap();
    assert_ne!(again.headers()["x-request-id"], r.headers()["x-request-id"]);
    // An unsafe one (spaces, markup, too long) is not echoed at all.
    for bad in ["a b", "<script>", &"x".repeat(129)] {
        let r =
            app.http.get(app.url("/v1/vms")).bearer_auth(&app.token).header("x-request-id", bad).send().await.unwrap();
        assert!(r.headers().get("x-correlation-id").is_none(), "{bad}");
        assert_ne!(r.headers()["x-request-id"], bad);
    }
}

#[tokio::test]
async fn axums_own_errors_are_enveloped_too() {
    let app = TestApp::new().await;
    let r = app.http.get(app.url("/v1/nothing-here")).header("x-request-id", "r-404").send().await.unwrap();
    let (status, headers, body) = split(r).await;
    assert_eq!(status, 404);
    assert_error(&body, "NOT_FOUND");
    assert_eq!(body["meta"]["requestId"], headers["x-request-id"].to_str().unwrap());

    let r = app.http.delete(app.url("/v1/quota")).send().await.unwrap();
    let (status, headers, body) = split(r).await;
    assert_eq!(status, 405);
    assert!(headers.contains_key("allow"));
    assert_error(&body, "METHOD_NOT_ALLOWED");

    let huge = format!("{{\"name\": \"{}\"}}", "a".repeat(nimbus_api::MAX_BODY_BYTES));
    let (status, _, body) = app.post_raw(&huge).await;
    assert_eq!(status, 413);
    assert_error(&body, "VALIDATION_FAILED");
}
