//! Webhook endpoints and the in-app feed through the API: the secret shown once and rotated,
//! validation, the test event, the delivery log's routes, recovery; the feed, read marks and
//! notification settings. Deliveries themselves are the workers' tests (`workers/tests`).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_error, split};

async fn call(app: &TestApp, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = app.http.request(method, app.url(path)).bearer_auth(&app.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    if response.status() == StatusCode::NO_CONTENT {
        return (StatusCode::NO_CONTENT, Value::Null);
    }
    let (status, _, body) = split(response).await;
    (status, body)
}

#[tokio::test]
async fn an_endpoint_shows_its_secret_once_rotates_it_and_keeps_a_delivery_log() {
    let app = TestApp::new().await;
    // Port 9 on loopback: refused by the guard in any worker, never reached.
    let body = json!({"url": "http://127.0.0.1:9/hook", "description": "billing", "eventTypes": ["invoice.issued", "job.failed"]});
    let (status, created) = call(&app, reqwest::Method::POST, "/v1/webhooks", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["data"]["secret"].as_str().unwrap().to_owned();
    assert!(nimbus_webhooks::Secret::parse(&secret).is_ok(), "{secret}");
    let id = created["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["data"]["eventTypes"], json!(["invoice.issued", "job.failed"]));

    let (_, shown) = call(&app, reqwest::Method::GET, &format!("/v1/webhooks/{id}"), None).await;
    assert!(shown["data"].get("secret").is_none() && !shown.to_string().contains(&secret), "never shown again");
    let (_, listed) = call(&app, reqwest::Method::GET, "/v1/webhooks", None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains(&secret));

    let (status, rotated) = call(&app, reqwest::Method::POST, &format!("/v1/webhooks/{id}/secret/rotate"), None).await;
    assert_eq!(status, 200);
    let new_secret = rotated["data"]["secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    assert!(rotated["data"]["previousSecretExpiresAt"].is_string());
    let stored: (String, Option<String>) =
        sqlx::query_as("select secret, previous_secret from webhook_endpoints where id = $1::uuid")
            .bind(&id)
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(stored, (new_secret.to_owned(), Some(secret.clone())), "the old secret signs during the window");

    let (status, patched) = call(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/webhooks/{id}"),
        Some(json!({"enabled": false, "rateLimit": 5})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!((patched["data"]["enabled"].clone(), patched["data"]["rateLimit"].clone()), (json!(false), json!(5)));
    let (_, patched) =
        call(&app, reqwest::Method::PATCH, &format!("/v1/webhooks/{id}"), Some(json!({"rateLimit": null}))).await;
    assert_eq!(patched["data"]["rateLimit"], Value::Null, "null removes the cap");

    let (status, tested) = call(&app, reqwest::Method::POST, &format!("/v1/webhooks/{id}/test"), None).await;
    assert_eq!(status, 202);
    let event_id = tested["data"]["eventId"].as_str().unwrap();
    let kind: String = sqlx::query_scalar("select type from events where id = $1::uuid")
        .bind(event_id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(kind, "webhook.test");

    // The log's routes, with a delivery as a worker records one it defers.
    let fan_out = || async {
        let events = [event_id.parse().unwrap()];
        let owed = nimbus_db::webhooks::owed(app.pool(), &events, chrono::Utc::now(), chrono::Duration::seconds(30))
            .await
            .unwrap();
        let mut conn = app.pool().acquire().await.unwrap();
        nimbus_db::webhooks::defer(&mut conn, &owed.iter().collect::<Vec<_>>(), chrono::Utc::now()).await.unwrap();
    };
    fan_out().await;
    let (_, deliveries) = call(&app, reqwest::Method::GET, &format!("/v1/webhooks/{id}/deliveries"), None).await;
    assert_eq!(deliveries["data"].as_array().unwrap().len(), 0, "a disabled endpoint gets no deliveries");
    call(&app, reqwest::Method::PATCH, &format!("/v1/webhooks/{id}"), Some(json!({"enabled": true}))).await;
    fan_out().await;
    let (_, deliveries) =
        call(&app, reqwest::Method::GET, &format!("/v1/webhooks/{id}/deliveries?status=pending"), None).await;
    let delivery = deliveries["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(deliveries["pagination"]["total"], 1);
    let (status, one) =
        call(&app, reqwest::Method::GET, &format!("/v1/webhooks/{id}/deliveries/{delivery}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(one["data"]["payload"]["type"], "webhook.test");
    assert_eq!(one["data"]["attempts"], json!([]));
    let (status, _) =
        call(&app, reqwest::Method::POST, &format!("/v1/webhooks/{id}/deliveries/{delivery}/replay"), None).await;
    assert_eq!(status, 202);
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let (status, recovered) =
        call(&app, reqwest::Method::POST, &format!("/v1/webhooks/{id}/recover"), Some(json!({"since": since}))).await;
    assert_eq!(status, 202, "{recovered}");
    assert!(recovered["data"]["deliveries"].is_u64());
    let (status, bad) = call(
        &app,
        reqwest::Method::POST,
        &format!("/v1/webhooks/{id}/recover"),
        Some(json!({"since": "2020-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(status, 400, "{bad}");

    let (status, _) = call(&app, reqwest::Method::DELETE, &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(status, 204);
    let (status, _) = call(&app, reqwest::Method::GET, &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(status, 404);
    let left = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from webhook_deliveries where endpoint_id = $1::uuid")
            .bind(&id)
            .fetch_one(app.pool())
            .await
            .unwrap()
    };
    assert_eq!(left().await, 0, "an endpoint's deliveries go with it");
    // A worker's batch for the deleted endpoint records nothing.
    let mut conn = app.pool().acquire().await.unwrap();
    let owed = nimbus_db::webhooks::owed(
        app.pool(),
        &[event_id.parse().unwrap()],
        chrono::Utc::now(),
        chrono::Duration::seconds(30),
    )
    .await
    .unwrap();
    assert!(owed.is_empty(), "a deleted endpoint is owed nothing");
    let gone = nimbus_db::webhooks::Claimed {
        id: uuid::Uuid::nil(),
        tenant_id: app.tenant.as_uuid(),
        endpoint_id: id.parse().unwrap(),
        event_id: event_id.parse().unwrap(),
        event_type: "webhook.test".into(),
        payload: "{}".into(),
        attempts: 0,
        locked_until: chrono::Utc::now(),
        url: "http://127.0.0.1/".into(),
        secret: String::new(),
        previous_secret: None,
        rate_limit: None,
        recorded: false,
    };
    nimbus_db::webhooks::defer(&mut conn, &[&gone], chrono::Utc::now()).await.unwrap();
    assert_eq!(left().await, 0, "no delivery of a deleted endpoint is written");
}

#[tokio::test]
async fn bad_endpoints_are_refused_with_every_problem_named() {
    let app = TestApp::new().await;
    for (body, field) in [
        (json!({"url": "ftp://example.com/x"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (json!({"url": "https://user:pw@example.com/"}), "url"),
        (json!({"url": "https://example.com/", "eventTypes": ["vm.exploded"]}), "eventTypes[0]"),
        (json!({"url": "https://example.com/", "rateLimit": 0}), "rateLimit"),
        (json!({"url": "https://example.com/", "description": "x".repeat(501)}), "description"),
    ] {
        let (status, answer) = call(&app, reqwest::Method::POST, "/v1/webhooks", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_error(&answer, "VALIDATION_FAILED");
        assert!(answer.to_string().contains(field), "{body} names {field}: {answer}");
    }
    let (_, types) = call(&app, reqwest::Method::GET, "/v1/webhooks/event-types", None).await;
    let names: Vec<&str> = types["data"].as_array().unwrap().iter().map(|t| t["type"].as_str().unwrap()).collect();
    for required in [
        "instance.created",
        "job.failed",
        "backup.completed",
        "invoice.issued",
        "balance.low",
        "apikey.created",
        "webhook.endpoint_disabled",
    ] {
        assert!(names.contains(&required), "{required}");
    }
}

#[tokio::test]
async fn the_feed_lists_unread_first_marks_read_and_settings_choose_per_type() {
    let app = TestApp::new().await;
    let user: uuid::Uuid =
        sqlx::query_scalar("select user_id from api_keys limit 1").fetch_one(app.pool()).await.unwrap();
    let tenant = app.tenant;
    let mut events = Vec::new();
    for kind in ["job.failed", "invoice.issued", "balance.low"] {
        let e = nimbus_db::events::NewEvent {
            kind,
            at: chrono::Utc::now(),
            tenant: Some(tenant),
            resource: None,
            data: json!({"number": "2026-000001"}),
        };
        events.push(nimbus_db::events::record(app.pool(), &e).await.unwrap());
    }
    let titles: Vec<String> =
        ["A job failed", "Invoice 2026-000001 was issued", "Your prepaid balance is low"].map(String::from).to_vec();
    let users = nimbus_db::notifications::add_to_feeds(app.pool(), &events, &titles).await.unwrap();
    assert!(users.contains(&user));
    let again = nimbus_db::notifications::add_to_feeds(app.pool(), &events, &titles).await.unwrap();
    assert!(again.is_empty(), "an event handled twice notifies nobody twice");

    let (_, feed) = call(&app, reqwest::Method::GET, "/v1/notifications", None).await;
    assert_eq!(feed["meta"]["unread"], 3, "{feed}");
    let first = feed["data"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = call(&app, reqwest::Method::POST, &format!("/v1/notifications/{first}/read"), None).await;
    assert_eq!(status, 204);
    let (_, feed) = call(&app, reqwest::Method::GET, "/v1/notifications", None).await;
    assert_eq!(feed["meta"]["unread"], 2);
    assert!(feed["data"][2]["readAt"].is_string(), "the read one sorts last: {feed}");
    let (_, unread) = call(&app, reqwest::Method::GET, "/v1/notifications?unread=true", None).await;
    assert_eq!(unread["data"].as_array().unwrap().len(), 2);
    let (status, _) = call(&app, reqwest::Method::POST, "/v1/notifications/read-all", None).await;
    assert_eq!(status, 204);
    let (_, feed) = call(&app, reqwest::Method::GET, "/v1/notifications", None).await;
    assert_eq!(feed["meta"]["unread"], 0);
    let (status, _) =
        call(&app, reqwest::Method::POST, &format!("/v1/notifications/{}/read", uuid::Uuid::new_v4()), None).await;
    assert_eq!(status, 404);

    let (_, settings) = call(&app, reqwest::Method::GET, "/v1/me/notifications", None).await;
    let job_failed = settings["data"].as_array().unwrap().iter().find(|p| p["type"] == "job.failed").unwrap().clone();
    assert_eq!((job_failed["email"].clone(), job_failed["inApp"].clone()), (json!(true), json!(true)), "the defaults");
    let body = json!({"preferences": [{"type": "job.failed", "email": false, "inApp": false}]});
    let (status, settings) = call(&app, reqwest::Method::PUT, "/v1/me/notifications", Some(body)).await;
    assert_eq!(status, 200);
    let job_failed = settings["data"].as_array().unwrap().iter().find(|p| p["type"] == "job.failed").unwrap().clone();
    assert_eq!((job_failed["email"].clone(), job_failed["inApp"].clone()), (json!(false), json!(false)));
    // The choice holds for the next event of that type: no feed entry, no email owed.
    let e = nimbus_db::events::NewEvent {
        kind: "job.failed",
        at: chrono::Utc::now(),
        tenant: Some(tenant),
        resource: None,
        data: json!({}),
    };
    let e = nimbus_db::events::record(app.pool(), &e).await.unwrap();
    let fed = nimbus_db::notifications::add_to_feeds(app.pool(), &[e], &["x".into()]).await.unwrap();
    assert!(!fed.contains(&user));
    let owed = nimbus_db::notifications::owe_emails(app.pool(), &[e], &["job.failed"]).await.unwrap();
    assert!(owed.iter().all(|o| o.user_id != user));
    let (status, bad) = call(
        &app,
        reqwest::Method::PUT,
        "/v1/me/notifications",
        Some(json!({"preferences": [{"type": "nope.nope", "email": true, "inApp": true}]})),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    // A type listed twice is the caller's mistake, named, not the database's.
    let twice = json!({"type": "job.failed", "email": true, "inApp": true});
    let (status, bad) =
        call(&app, reqwest::Method::PUT, "/v1/me/notifications", Some(json!({"preferences": [twice, twice]}))).await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["error"]["details"]["fields"][0]["field"], "preferences[1].type", "{bad}");
}
