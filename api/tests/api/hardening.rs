//! What a hostile client must not achieve: hide audit entries (NUL text, a refused row),
//! hold connections open, guess credentials at full speed, outlive a credential with a key or
//! a stream, or make names that read as something else.

use std::time::{Duration, Instant};

use futures::future::join_all;
use nimbus_api::Settings;
use nimbus_api::ratelimit::RateLimitSettings;
use nimbus_api::serve::ConnectionLimits;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestApp, assert_error, split};

async fn post_key(base: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let r = reqwest::Client::new().post(format!("{base}/v1/auth/apikeys")).bearer_auth(token).json(&body);
    let (status, _, body) = split(r.send().await.unwrap()).await;
    (status, body)
}

#[tokio::test]
async fn hostile_requests_flooding_beside_an_admin_hide_none_of_the_admins_audit_rows() {
    let app = TestApp::new().await;
    // One row the database refuses outright (a stand-in for any row a group insert cannot take):
    // its batch is retried row by row, so it loses only itself.
    sqlx::query(
        "create function refuse_poison() returns trigger language plpgsql as \
         $$ begin if new.resource_id = 'poison' then raise exception 'poisoned row'; end if; return new; end; $$",
    )
    .execute(app.pool())
    .await
    .unwrap();
    sqlx::query(
        "create trigger refuse_poison before insert on audit_log for each row execute function refuse_poison()",
    )
    .execute(app.pool())
    .await
    .unwrap();

    let hostile = async {
        let http = reqwest::Client::new();
        let mut statuses = Vec::new();
        for round in 0..15 {
            let requests = [
                http.get(app.url("/v1/vms/%00")).bearer_auth("whatever"),
                http.delete(app.url("/v1/auth/apikeys/a%00b")).bearer_auth("whatever"),
                http.delete(app.url("/v1/auth/apikeys/poison")).bearer_auth(&app.token),
                http.get(app.url("/v1/admin/audit-logs?action=a%00b")).bearer_auth(&app.token),
                http.post(app.url("/v1/auth/apikeys"))
                    .bearer_auth(&app.token)
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"name": "k{round}\u0000", "scopes": ["read"]}}"#)),
            ];
            let answers = join_all(requests.into_iter().map(|r| r.send())).await;
            statuses.extend(answers.into_iter().map(|a| a.unwrap().status().as_u16()));
        }
        statuses
    };
    let admin = async {
        let mut request_ids = Vec::new();
        for i in 0..40 {
            let r = app
                .http
                .post(app.url("/v1/auth/apikeys"))
                .bearer_auth(&app.token)
                .json(&json!({"name": format!("admin-change-{i}"), "scopes": ["read"]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            request_ids.push(r.headers()["x-request-id"].to_str().unwrap().to_owned());
        }
        request_ids
    };
    let (statuses, request_ids) = tokio::join!(hostile, admin);
    assert!(statuses.iter().all(|s| [400, 404].contains(s)), "NUL is refused, never a 500: {statuses:?}");
    assert!(statuses.contains(&400));

    let stored: Vec<String> = sqlx::query_scalar(
        "select request_id from audit_log where action = 'POST /v1/auth/apikeys' and http_status = 201",
    )
    .fetch_all(app.pool())
    .await
    .unwrap();
    for id in &request_ids {
        assert!(stored.contains(id), "the admin's change {id} has no audit row");
    }
    // The refused writes carrying NUL are recorded too, their text escaped, not lost.
    let escaped: i64 = sqlx::query_scalar("select count(*) from audit_log where resource_id = 'a\\0b'")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(escaped, 15);
}

#[tokio::test]
async fn nul_in_paths_queries_and_bodies_is_a_400_naming_where() {
    let app = TestApp::new().await;
    let (status, _, body) = app.get("/v1/admin/users?q=%00").await;
    assert_eq!(status, 400, "{body}");
    assert_error(&body, "VALIDATION_FAILED");
    assert_eq!(body["error"]["details"]["fields"][0]["field"], "query");
    let (status, _, body) = app.get("/v1/vms/%00").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["details"]["fields"][0]["field"], "path");
    let r =
        app.http.post(app.url("/v1/admin/users")).bearer_auth(&app.token).json(
            &json!({"email": "x@acme.test", "newTenant": {"name": "Evil\u{0}Corp", "planId": uuid::Uuid::nil()}}),
        );
    let (status, _, body) = split(r.send().await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["details"]["fields"][0]["field"], "newTenant.name");
}

#[tokio::test]
async fn names_refuse_bidi_controls_and_invisible_only_text() {
    let app = TestApp::new().await;
    for bad in ["deploy\u{202E}yek", "\u{200B}\u{200D}", "\u{3164}"] {
        let (status, body) = post_key(&app.base, &app.token, json!({"name": bad, "scopes": ["read"]})).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert_eq!(body["error"]["details"]["fields"][0]["field"], "name");
    }
    let r = app
        .http
        .post(app.url("/v1/admin/users"))
        .bearer_auth(&app.token)
        .json(&json!({"email": "y@acme.test", "displayName": "\u{2066}Admin\u{2069}", "role": "user", "tenantId": app.tenant}));
    let (status, _, body) = split(r.send().await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["details"]["fields"][0]["field"], "displayName");
    let (status, body) = post_key(&app.base, &app.token, json!({"name": "Zoë's CI key", "scopes": ["read"]})).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn failed_authentication_is_limited_per_address_before_any_lookup() {
    let app = TestApp::new().await;
    let settings = Settings {
        rate_limit: RateLimitSettings { auth_failures_per_minute: 5, ..Default::default() },
        ..Settings::default()
    };
    let base = app.instance_with(settings, ConnectionLimits::default()).await;
    let http = reqwest::Client::new();
    for left in (0..5).rev() {
        let r = http.get(format!("{base}/v1/quota")).bearer_auth(format!("nmb_guess{left}_x")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["ratelimit-limit"], "5");
        assert_eq!(r.headers()["ratelimit-remaining"], left.to_string().as_str());
    }
    // Spent: refused before the credential is looked at, whatever it is.
    let r = http.get(format!("{base}/v1/quota")).bearer_auth("nmb_guess_next").send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let cookie = http.get(format!("{base}/v1/quota")).header("cookie", "__Host-nimbus_session=random").send();
    assert_eq!(cookie.await.unwrap().status(), 429);
    let (status, _, body) =
        split(http.get(format!("{base}/v1/quota")).bearer_auth(&app.token).send().await.unwrap()).await;
    assert_eq!(status, 429, "the address is held, whatever it presents");
    assert_error(&body, "RATE_LIMITED");
    // Requests without a credential spend nothing of it and are not held by it.
    assert_eq!(http.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    // The 429s are not audited: a flood of them must not become a flood of inserts.
    let audited: i64 = sqlx::query_scalar("select count(*) from audit_log where http_status = 429")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(audited, 0);
}

#[tokio::test]
async fn a_refused_token_is_answered_from_memory() {
    let app = TestApp::new().await;
    let http = reqwest::Client::new();
    let user: uuid::Uuid = sqlx::query_scalar("select id from users where tenant_id = $1 limit 1")
        .bind(app.tenant.as_uuid())
        .fetch_one(app.pool())
        .await
        .unwrap();
    // The cache is used once its change listener is up (a second or so after the first lookup):
    // try fresh tokens until one was refused while it was.
    let started = Instant::now();
    for attempt in 0.. {
        assert!(started.elapsed() < Duration::from_secs(15), "refused tokens are never answered from memory");
        let prefix = format!("abcdefgh{attempt:04}");
        let token = format!("nmb_{prefix}_0123456789abcdef0123456789abcdef01234567");
        assert_eq!(http.get(app.url("/v1/quota")).bearer_auth(&token).send().await.unwrap().status(), 401);
        // Were the database asked again, it would now find a key for this very token (planted
        // without the API, so no change is announced).
        sqlx::query(
            "insert into api_keys (id, tenant_id, user_id, name, prefix, secret_sha256, scopes) \
             values (gen_random_uuid(), $1, $2, $3, $4, sha256($5::bytea), '{}')",
        )
        .bind(app.tenant.as_uuid())
        .bind(user)
        .bind(format!("planted-{attempt}"))
        .bind(&prefix)
        .bind(token.as_bytes())
        .execute(app.pool())
        .await
        .unwrap();
        if http.get(app.url("/v1/quota")).bearer_auth(&token).send().await.unwrap().status() == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_key_made_with_an_expiring_key_expires_no_later_than_it() {
    let app = TestApp::new().await;
    let soon = chrono::Utc::now() + chrono::Duration::seconds(60);
    let (status, body) =
        post_key(&app.base, &app.token, json!({"name": "short", "scopes": ["read", "write"], "expiresAt": soon})).await;
    assert_eq!(status, 201, "{body}");
    let short = body["data"]["token"].as_str().unwrap().to_owned();
    let short_expiry = body["data"]["expiresAt"].as_str().unwrap().to_owned();

    // No expiry asked: the parent's.
    let (status, body) = post_key(&app.base, &short, json!({"name": "child", "scopes": ["read"]})).await;
    assert_eq!(status, 201, "{body}");
    let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
    assert_eq!(parse(body["data"]["expiresAt"].as_str().unwrap()), parse(&short_expiry));
    // A later one: refused.
    let later = soon + chrono::Duration::days(365);
    let (status, body) =
        post_key(&app.base, &short, json!({"name": "forever", "scopes": ["read"], "expiresAt": later})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["details"]["fields"][0]["field"], "expiresAt");
}

#[tokio::test]
async fn keys_per_user_are_capped_and_share_one_budget() {
    let app = TestApp::new().await;
    let settings = Settings {
        api_keys_per_user: 3,
        rate_limit: RateLimitSettings { per_minute: 4, ..Default::default() },
        ..Settings::default()
    };
    let base = app.instance_with(settings, ConnectionLimits::default()).await;
    // The default key is the first; two more fit.
    let mut tokens = vec![app.token.clone()];
    for i in 0..2 {
        let (status, body) = post_key(&base, &app.token, json!({"name": format!("k{i}"), "scopes": ["read"]})).await;
        assert_eq!(status, 201, "{body}");
        tokens.push(body["data"]["token"].as_str().unwrap().to_owned());
    }
    let (status, body) = post_key(&base, &app.token, json!({"name": "k3", "scopes": ["read"]})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["details"]["limit"], 3);
    // The three creates spent three of the user's four requests: one is left, for any key.
    let http = reqwest::Client::new();
    assert_eq!(http.get(format!("{base}/v1/quota")).bearer_auth(&tokens[1]).send().await.unwrap().status(), 200);
    for token in &tokens {
        assert_eq!(http.get(format!("{base}/v1/quota")).bearer_auth(token).send().await.unwrap().status(), 429);
    }
}

#[tokio::test]
async fn an_event_stream_closes_soon_after_its_key_is_revoked() {
    let app = TestApp::new().await;
    let settings = Settings { stream_auth_check: Duration::from_millis(200), ..Settings::default() };
    let base = app.instance_with(settings, ConnectionLimits::default()).await;
    let (status, body) = post_key(&base, &app.token, json!({"name": "watcher", "scopes": ["read", "write"]})).await;
    assert_eq!(status, 201, "{body}");
    let watcher = body["data"]["token"].as_str().unwrap().to_owned();
    let key_id = body["data"]["id"].as_str().unwrap().to_owned();
    let (status, _, body) = app.create_vm(&crate::support::vm_body("web-1"), &[]).await;
    assert_eq!(status, 202, "{body}");
    let job = body["data"]["id"].as_str().unwrap();

    let mut stream =
        reqwest::Client::new().get(format!("{base}/v1/jobs/{job}/events")).bearer_auth(&watcher).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let first = stream.chunk().await.unwrap().unwrap();
    let first = String::from_utf8_lossy(&first).into_owned();
    assert!(first.contains("event: progress") && first.contains("id: 1"), "per-job event ids: {first}");

    let r = reqwest::Client::new().delete(format!("{base}/v1/auth/apikeys/{key_id}")).bearer_auth(&app.token).send();
    assert_eq!(r.await.unwrap().status(), 204);
    let revoked = Instant::now();
    let mut rest = String::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = stream.chunk().await.unwrap() {
            rest.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream is still open 5 s after the revocation: {rest}");
    assert!(rest.contains("event: error") && rest.contains("UNAUTHENTICATED"), "{rest}");
    assert!(revoked.elapsed() < Duration::from_secs(3), "closed after {:?}", revoked.elapsed());
}

#[tokio::test]
async fn every_auth_error_is_the_html_page() {
    let app = TestApp::new().await;
    for path in ["/auth/callback?code=a&code=b&state=s", "/auth/login?returnTo=%00", "/auth/nothing-here"] {
        let r = app.http.get(app.url(path)).send().await.unwrap();
        assert!(r.status().is_client_error(), "{path}: {}", r.status());
        let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/html"), "{path}: {content_type}");
        let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(r.text().await.unwrap().contains(&rid), "{path}: the page names the request id");
    }
}

/// Opens a connection and sends part of a request's headers, never the end.
async fn trickle(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /v1/quota HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    s
}

#[tokio::test]
async fn slow_headers_are_cut_off_and_connections_over_the_cap_answered_at_once() {
    let app = TestApp::new().await;
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(1),
        max_connections_per_client: 4,
        ..ConnectionLimits::default()
    };
    let base = app.instance_with(Settings::default(), limits).await;
    let addr = base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(trickle(&addr).await);
    }
    // A fifth from the same address is answered 429 and closed, not left hanging.
    let mut fifth = TcpStream::connect(&addr).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(2), fifth.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("RATE_LIMITED"), "{answer}");

    // The trickling ones are closed once the header timeout passes...
    let started = Instant::now();
    for mut s in held {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a connection trickling headers is still open after {:?}", started.elapsed());
    }
    // ... which frees their slots for a normal client.
    let r = reqwest::Client::new().get(format!("{base}/v1/quota")).bearer_auth(&app.token).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
