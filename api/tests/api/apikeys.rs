//! `/v1/auth/apikeys`: keys shown once, listed without secrets, revoked at once, scopes never
//! beyond their creator's, names unique among a user's live keys.

use nimbus_db::api_keys;
use nimbus_db::users::{self, NewUser};
use nimbus_domain::{ApiKeyId, Role};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_error, fields, split};

type Answer = (StatusCode, HeaderMap, Value);

async fn create_key(app: &TestApp, token: &str, body: &Value) -> Answer {
    split(app.http.post(app.url("/v1/auth/apikeys")).bearer_auth(token).json(body).send().await.unwrap()).await
}

async fn revoke_key(app: &TestApp, token: &str, id: &str) -> reqwest::Response {
    app.http.delete(app.url(&format!("/v1/auth/apikeys/{id}"))).bearer_auth(token).send().await.unwrap()
}

/// A user with `role` in the default tenant and a key of theirs with `scopes`.
async fn user_key(app: &TestApp, email: &str, role: Role, scopes: &[&str]) -> String {
    let user = users::create(app.pool(), app.tenant, &NewUser { email: email.into(), display_name: None, role })
        .await
        .unwrap();
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    api_keys::create(app.pool(), app.tenant, user.id, "fixture", &scopes, None).await.unwrap().1
}

#[tokio::test]
async fn a_key_is_shown_once_listed_without_secrets_and_stops_at_once_when_revoked() {
    let app = TestApp::new().await;
    let expires = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let (status, _, body) =
        create_key(&app, &app.token, &json!({"name": "ci", "scopes": ["write", "read"], "expiresAt": expires})).await;
    assert_eq!(status, 201, "{body}");
    let created = &body["data"];
    let token = created["token"].as_str().unwrap().to_owned();
    let prefix = created["prefix"].as_str().unwrap();
    assert!(token.starts_with(&format!("nmb_{prefix}_")), "{token}");
    assert_eq!(created["name"], "ci");
    assert_eq!(created["scopes"], json!(["read", "write"]));
    assert_eq!(created["status"], "active");
    assert!(created["expiresAt"].is_string());
    assert_eq!(created["lastUsedAt"], Value::Null);
    let id = created["id"].as_str().unwrap().to_owned();

    // The new key works, and its use is recorded.
    let (status, _, _) = app.get_as(&token, "/v1/vms").await;
    assert_eq!(status, 200);
    let (status, _, list) = app.get_as(&token, "/v1/auth/apikeys").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["pagination"]["total"], 2, "the fixture key and the new one: {list}");
    let listed = list["data"].as_array().unwrap().iter().find(|k| k["id"] == id.as_str()).unwrap().clone();
    assert_eq!(listed["prefix"], prefix);
    assert!(listed["lastUsedAt"].is_string(), "{listed}");
    let text = list.to_string();
    assert!(!text.contains(&token), "the token is never listed");
    assert!(!text.contains("secret") && !text.contains("sha256") && !text.contains("token"), "{text}");

    // Revoked: 204, then 401 on the very next request, and the list says so.
    let r = revoke_key(&app, &app.token, &id).await;
    assert_eq!(r.status(), 204);
    let (status, _, body) = app.get_as(&token, "/v1/vms").await;
    assert_eq!(status, 401, "{body}");
    assert_error(&body, "UNAUTHENTICATED");
    let (_, _, list) = app.get("/v1/auth/apikeys").await;
    let listed = list["data"].as_array().unwrap().iter().find(|k| k["id"] == id.as_str()).unwrap().clone();
    assert_eq!(listed["status"], "revoked");
    assert!(listed["revokedAt"].is_string());
    // Revoking again is harmless.
    assert_eq!(revoke_key(&app, &app.token, &id).await.status(), 204);
}

#[tokio::test]
async fn every_invalid_field_is_named() {
    let app = TestApp::new().await;
    let past = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let (status, _, body) =
        create_key(&app, &app.token, &json!({"name": "", "scopes": ["read", "sudo", "read"], "expiresAt": past})).await;
    assert_eq!(status, 400, "{body}");
    assert_error(&body, "VALIDATION_FAILED");
    assert_eq!(
        fields(&body),
        vec![Some("name".into()), Some("scopes[1]".into()), Some("scopes[2]".into()), Some("expiresAt".into())]
    );
    for (body, field) in [
        (json!({"name": "ci"}), "scopes"),
        (json!({"name": "ci", "scopes": []}), "scopes"),
        (json!({"name": "ci", "scopes": ["read"], "expiresAt": "tomorrow"}), "expiresAt"),
        (json!({"name": "ci", "scopes": ["read"], "owner": "me"}), "owner"),
        (json!({"name": "x".repeat(101), "scopes": ["read"]}), "name"),
    ] {
        let (status, _, answer) = create_key(&app, &app.token, &body).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(fields(&answer), vec![Some(field.to_owned())], "{body} → {answer}");
    }
    assert_eq!(app.count("api_keys").await, 1, "nothing was created");
}

#[tokio::test]
async fn scopes_never_exceed_the_creators_role_or_key() {
    let app = TestApp::new().await;
    // A user (not an admin) with a full key: read and write yes, admin no.
    let user = user_key(&app, "ann@acme.test", Role::User, &[]).await;
    let (status, _, body) = create_key(&app, &user, &json!({"name": "a", "scopes": ["admin"]})).await;
    assert_eq!(status, 403, "{body}");
    assert_error(&body, "FORBIDDEN");
    assert_eq!(body["error"]["details"]["scope"], "admin");
    let (status, _, body) = create_key(&app, &user, &json!({"name": "rw", "scopes": ["read", "write"]})).await;
    assert_eq!(status, 201, "{body}");

    // An admin's key limited to write cannot mint an admin key, even for an admin.
    let admin_write = user_key(&app, "root@acme.test", Role::Admin, &["write"]).await;
    let (status, _, body) = create_key(&app, &admin_write, &json!({"name": "a", "scopes": ["admin"]})).await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = create_key(&app, &admin_write, &json!({"name": "r", "scopes": ["read"]})).await;
    assert_eq!(status, 201, "a narrower key is fine: {body}");
    // With the admin scope it can.
    let (status, _, body) = create_key(&app, &app.token, &json!({"name": "adm", "scopes": ["admin"]})).await;
    assert_eq!(status, 201, "{body}");

    // A read-only key cannot create keys at all (POST needs write), and is read-only itself.
    let read_only = body_token(&create_key(&app, &user, &json!({"name": "ro", "scopes": ["read"]})).await);
    let (status, _, body) = create_key(&app, &read_only, &json!({"name": "x", "scopes": ["read"]})).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["details"]["requiredScope"], "write");
    assert_eq!(app.get_as(&read_only, "/v1/auth/apikeys").await.0, 200);
    assert_eq!(app.get_as(&read_only, "/v1/vms").await.0, 200);
}

fn body_token(answer: &Answer) -> String {
    assert_eq!(answer.0, 201, "{}", answer.2);
    answer.2["data"]["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn names_are_unique_among_a_users_live_keys() {
    let app = TestApp::new().await;
    let first = create_key(&app, &app.token, &json!({"name": "deploy", "scopes": ["read"]})).await;
    assert_eq!(first.0, 201);
    let (status, _, body) = create_key(&app, &app.token, &json!({"name": "Deploy", "scopes": ["read"]})).await;
    assert_eq!(status, 409, "{body}");
    assert_error(&body, "CONFLICT");
    assert_eq!(fields(&body), vec![Some("name".into())]);
    // Another user may use the name; the owner may reuse it once the first key is revoked.
    let other = user_key(&app, "ann@acme.test", Role::User, &[]).await;
    assert_eq!(create_key(&app, &other, &json!({"name": "deploy", "scopes": ["read"]})).await.0, 201);
    let id = first.2["data"]["id"].as_str().unwrap();
    assert_eq!(revoke_key(&app, &app.token, id).await.status(), 204);
    assert_eq!(create_key(&app, &app.token, &json!({"name": "deploy", "scopes": ["read"]})).await.0, 201);
}

#[tokio::test]
async fn another_users_key_answers_like_a_missing_one_and_keeps_working() {
    let app = TestApp::new().await;
    let ann = user_key(&app, "ann@acme.test", Role::User, &[]).await;
    let anns = create_key(&app, &ann, &json!({"name": "mine", "scopes": ["read"]})).await;
    let anns_token = body_token(&anns);
    let anns_id = anns.2["data"]["id"].as_str().unwrap();

    // The tenant's admin is another user: their list does not show it, and cannot revoke it.
    let (_, _, list) = app.get("/v1/auth/apikeys").await;
    assert!(list["data"].as_array().unwrap().iter().all(|k| k["id"] != anns_id), "{list}");
    let r = revoke_key(&app, &app.token, anns_id).await;
    let (status, _, foreign) = split(r).await;
    assert_eq!(status, 404, "{foreign}");
    let (_, _, missing) = split(revoke_key(&app, &app.token, &ApiKeyId::new().to_string()).await).await;
    assert_eq!(foreign["error"], missing["error"]);
    let (_, _, malformed) = split(revoke_key(&app, &app.token, "nope").await).await;
    assert_eq!(malformed["error"], missing["error"]);
    assert_eq!(app.get_as(&anns_token, "/v1/vms").await.0, 200);
}

#[tokio::test]
async fn an_expired_key_is_401() {
    let app = TestApp::new().await;
    let soon = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let created = create_key(&app, &app.token, &json!({"name": "short", "scopes": ["read"], "expiresAt": soon})).await;
    let token = body_token(&created);
    assert_eq!(app.get_as(&token, "/v1/vms").await.0, 200);
    sqlx::query("update api_keys set expires_at = now() - interval '1 second' where id = $1")
        .bind(uuid::Uuid::parse_str(created.2["data"]["id"].as_str().unwrap()).unwrap())
        .execute(app.pool())
        .await
        .unwrap();
    // Changed behind the API's back: the change notification reaches its key cache within the
    // listener's bound (3 s), usually at once.
    let changed = std::time::Instant::now();
    loop {
        let (status, _, body) = app.get_as(&token, "/v1/vms").await;
        if status == 401 {
            break;
        }
        assert!(changed.elapsed() < std::time::Duration::from_secs(3), "still {status} after 3 s: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, _, list) = app.get("/v1/auth/apikeys").await;
    assert!(
        list["data"].as_array().unwrap().iter().any(|k| k["name"] == "short" && k["status"] == "expired"),
        "{list}"
    );
}

#[tokio::test]
async fn a_change_made_anywhere_reaches_every_api_process_that_kept_the_key() {
    let app = TestApp::new().await;
    let token = user_key(&app, "kept@example.com", Role::User, &["read"]).await;
    // A second API process: it keeps what the key authenticated to.
    let other =
        app.another_instance(app.redis.url(), &format!("{}nimbus:", app.redis.prefix()), Default::default()).await;
    let me = |token: String| {
        let (http, url) = (app.http.clone(), format!("{other}/v1/me"));
        async move { split(http.get(url).bearer_auth(token).send().await.unwrap()).await }
    };
    let (status, _, body) = me(token.clone()).await;
    assert_eq!(status, 200, "{body}");
    // The first lookup starts the process's listener; answers are kept once it listens.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (_, _, body) = me(token.clone()).await;
    assert_eq!(body["data"]["user"]["name"], Value::Null);

    // A write that notifies nobody (triggers off for this session) is not seen while the answer
    // is kept: the second process answers from what it kept.
    let mut conn = app.pool().acquire().await.unwrap();
    sqlx::query("set session_replication_role = replica").execute(&mut *conn).await.unwrap();
    sqlx::query("update users set display_name = 'Unnoticed' where email = 'kept@example.com'")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("reset session_replication_role").execute(&mut *conn).await.unwrap();
    drop(conn);
    let (_, _, body) = me(token.clone()).await;
    assert_eq!(body["data"]["user"]["name"], Value::Null, "answered from the cache");

    // The key revoked by another process (here, straight in the database): the commit notifies,
    // and the second process stops accepting the key within moments.
    sqlx::query("update api_keys set revoked_at = now() where user_id = (select id from users where email = $1)")
        .bind("kept@example.com")
        .execute(app.pool())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let (status, _, body) = me(token.clone()).await;
        if status == 401 {
            assert_error(&body, "UNAUTHENTICATED");
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "the revoked key still works: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn without_its_listener_a_process_answers_from_the_database_not_the_cache() {
    let app = TestApp::new().await;
    let token = user_key(&app, "unheard@example.com", Role::User, &["read"]).await;
    let me = || {
        let (http, url, token) = (app.http.clone(), app.url("/v1/me"), token.clone());
        async move { split(http.get(url).bearer_auth(token).send().await.unwrap()).await }
    };
    assert_eq!(me().await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(me().await.0, 200, "kept from here on");

    // The listening connection dies, and a revocation that notifies nobody follows at once
    // (triggers off for its session): the process must not trust what it kept.
    sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where query ilike 'listen%' and datname = current_database()")
        .execute(app.pool())
        .await
        .unwrap();
    let mut conn = app.pool().acquire().await.unwrap();
    sqlx::query("set session_replication_role = replica").execute(&mut *conn).await.unwrap();
    sqlx::query("update api_keys set revoked_at = now() where user_id = (select id from users where email = $1)")
        .bind("unheard@example.com")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("reset session_replication_role").execute(&mut *conn).await.unwrap();
    drop(conn);
    let started = std::time::Instant::now();
    loop {
        let (status, _, body) = me().await;
        if status == 401 {
            break;
        }
        assert!(
            started.elapsed() < nimbus_api::auth::key_cache::SILENCE + std::time::Duration::from_secs(1),
            "a revoked key was served from the cache past the listener's silence bound: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
