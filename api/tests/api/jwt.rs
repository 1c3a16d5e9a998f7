//! Bearer JWTs of the real OIDC provider: real access tokens pass; forged ones (alg none, HS256
//! keyed with the public key, unknown kid, wrong iss or aud, expired, not yet valid) are 401;
//! with the provider stopped, cached keys still validate and sign-in shows its error page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{Value, json};

use crate::oidc::{self, app, app_with, cli_tokens, issuer, sign_in};
use crate::support::{Options, TestApp, assert_error, closed_port};

const KID: &str = "nimbus-dev-rs256";

fn dev_key_pem() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/oidc/dev-signing-key.pem")).unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims like the provider's access tokens, for `issuer`.
fn claims(issuer: &str) -> Value {
    json!({
        "iss": issuer,
        "aud": "nimbus-api",
        "sub": "b6f1c1e0-0000-4000-8000-0000000a11ce",
        "email": "alice@acme.test",
        "email_verified": true,
        "name": "Alice Acme",
        "realm_access": {"roles": ["user"]},
        "iat": now(),
        "exp": now() + 300,
    })
}

/// Signs `claims` with the provider's own (dev) key under `kid`.
fn sign(claims: &Value, kid: &str) -> String {
    sign_typed(claims, kid, "JWT")
}

/// [`sign`] with the header `typ`.
fn sign_typed(claims: &Value, kid: &str, typ: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    header.typ = Some(typ.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(dev_key_pem().as_bytes()).unwrap()).unwrap()
}

async fn me_with(app: &TestApp, token: &str) -> (StatusCode, Value) {
    let (s, _, body) = app.get_as(token, "/v1/me").await;
    (s, body)
}

#[tokio::test]
async fn a_real_provider_access_token_is_accepted() {
    let app = app().await;
    let tokens = cli_tokens(&issuer(), "alice@acme.test", "alice-pass").await;
    let access = tokens["access_token"].as_str().unwrap();
    let (s, body) = me_with(&app, access).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["authMethod"], "jwt");
    assert_eq!(body["data"]["user"]["email"], "alice@acme.test");
    assert_eq!(body["data"]["role"], "user");
    // Bearer requests are exempt from CSRF: a POST without token or Origin is judged on its own.
    let r = reqwest::Client::new().post(app.url("/v1/vms")).bearer_auth(access).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "validation, not 403");
    // The ID token is not an access token for this API (wrong audience).
    let (s, _) = me_with(&app, tokens["id_token"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forged_tokens_are_each_refused() {
    let app = app().await;
    let iss = issuer();
    // The control: the same construction with honest claims passes, so each refusal below is
    // about the one thing changed.
    let (s, body) = me_with(&app, &sign(&claims(&iss), KID)).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": KID}).to_string()),
        URL_SAFE_NO_PAD.encode(claims(&iss).to_string())
    );
    let public_pem = rsa::RsaPrivateKey::from_pkcs8_pem(&dev_key_pem())
        .unwrap()
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(KID.into());
    let hs256 =
        jsonwebtoken::encode(&hs_header, &claims(&iss), &EncodingKey::from_secret(public_pem.as_bytes())).unwrap();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims(&iss);
        edit(&mut c);
        sign(&c, KID)
    };
    let forged = [
        ("alg none", none),
        ("HS256 keyed with the public key", hs256),
        ("unknown kid", sign(&claims(&iss), "rotated-away")),
        ("wrong iss", with(&|c| c["iss"] = json!("https://evil.example"))),
        ("wrong aud", with(&|c| c["aud"] = json!("another-api"))),
        ("expired", with(&|c| c["exp"] = json!(now() - 120))),
        ("not yet valid", with(&|c| c["nbf"] = json!(now() + 120))),
        (
            "no sub",
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
        ),
        ("garbage", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln".to_owned()),
        // ID tokens, even with the API's audience, are not access tokens.
        ("an ID token (nonce)", with(&|c| c["nonce"] = json!("n-0S6_WzA2Mj"))),
        ("a Keycloak ID token (typ ID)", with(&|c| c["typ"] = json!("ID"))),
        ("an ID token's header typ", sign_typed(&claims(&iss), KID, "id_token+jwt")),
    ];
    for (what, token) in forged {
        let (s, body) = me_with(&app, &token).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_error(&body, "UNAUTHENTICATED");
    }
    // Leeway: 20 s past `exp` is still accepted (clock skew), as documented.
    let (s, _) = me_with(&app, &with(&|c| c["exp"] = json!(now() - 20))).await;
    assert_eq!(s, StatusCode::OK);
    // RFC 9068's header typ is an access token's.
    assert_eq!(me_with(&app, &sign_typed(&claims(&iss), KID, "at+jwt")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn only_a_verified_email_creates_an_account_from_a_bearer_token() {
    let app = app().await;
    let unknown = |sub: &str, verified: Value| {
        let mut c = claims(&issuer());
        c["sub"] = json!(sub);
        c["email"] = json!(format!("{sub}@example.test"));
        c["email_verified"] = verified;
        sign(&c, KID)
    };
    for (sub, verified) in [("new-1", json!(false)), ("new-2", Value::Null), ("new-3", json!("no"))] {
        let (s, body) = me_with(&app, &unknown(sub, verified)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{sub}: {body}");
        assert_error(&body, "UNAUTHENTICATED");
    }
    assert_eq!(app.count("user_identities").await, 0);
    let (s, body) = me_with(&app, &unknown("new-4", json!(true))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(app.count("user_identities").await, 1);
    // A known account is found by its sub whatever its token says about the email.
    let (s, _) = me_with(&app, &unknown("new-4", json!(false))).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn a_provider_trusted_for_emails_creates_accounts_without_email_verified() {
    let options = Options { oidc_issuer: Some(issuer()), oidc_trust_email: true, ..Options::default() };
    let app = oidc::app_with_options(options).await;
    let unknown = |sub: &str, verified: Option<Value>| {
        let mut c = claims(&issuer());
        c["sub"] = json!(sub);
        c["email"] = json!(format!("{sub}@example.test"));
        match verified {
            Some(v) => c["email_verified"] = v,
            None => {
                c.as_object_mut().unwrap().remove("email_verified");
            }
        }
        sign(&c, KID)
    };
    // What Entra ID sends: no email_verified at all.
    let (s, body) = me_with(&app, &unknown("entra-1", None)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // A provider that says the email is not verified is still refused.
    let (s, body) = me_with(&app, &unknown("entra-2", Some(json!(false)))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(app.count("user_identities").await, 1);
}

#[tokio::test]
async fn claims_the_schema_cannot_hold_are_refused_not_500() {
    let app = app().await;
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims(&issuer());
        c["sub"] = json!("someone-else");
        edit(&mut c);
        sign(&c, KID)
    };
    let users_before = app.count("users").await;
    for (what, token) in [
        ("sub over 255", with(&|c| c["sub"] = json!("s".repeat(256)))),
        ("sub with NUL", with(&|c| c["sub"] = json!("a\u{0}b"))),
        ("email without @", with(&|c| c["email"] = json!("not-an-email"))),
        ("email with a space", with(&|c| c["email"] = json!("a b@example.test"))),
        ("email over 254", with(&|c| c["email"] = json!(format!("{}@example.test", "a".repeat(250))))),
    ] {
        let (s, body) = me_with(&app, &token).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{what}: {body}");
    }
    assert_eq!(app.count("users").await, users_before, "no user was created");
    // A blank name is no name: the tenant is named after the email.
    let (s, body) = me_with(&app, &with(&|c| c["name"] = json!("   "))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["tenant"]["name"], "alice@acme.test");
    assert!(body["data"]["user"]["name"].is_null(), "{body}");
}

#[tokio::test]
async fn a_token_without_the_role_claim_leaves_the_role_alone() {
    let app = app().await;
    let iss = issuer();
    let (s, body) = me_with(&app, &sign(&claims(&iss), KID)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let alice: uuid::Uuid = body["data"]["user"]["id"].as_str().unwrap().parse().unwrap();
    sqlx::query("update users set role = 'admin' where id = $1").bind(alice).execute(app.pool()).await.unwrap();
    let mut no_roles = claims(&iss);
    no_roles.as_object_mut().unwrap().remove("realm_access");
    assert_eq!(me_with(&app, &sign(&no_roles, KID)).await.1["data"]["role"], "admin");
    // A claim that is present and names no role of ours is the provider's word: user.
    let mut none = claims(&iss);
    none["realm_access"] = json!({"roles": []});
    assert_eq!(me_with(&app, &sign(&none, KID)).await.1["data"]["role"], "user");
}

#[tokio::test]
async fn a_token_without_email_for_an_unknown_account_is_refused() {
    let app = app().await;
    let mut c = claims(&issuer());
    c["sub"] = json!("someone-new");
    c.as_object_mut().unwrap().remove("email");
    let (s, _) = me_with(&app, &sign(&c, KID)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(app.count("user_identities").await, 0);
}

/// A provider of this test's own (infra/scripts/oidc.sh), stopped when dropped.
struct PrivateProvider {
    dir: std::path::PathBuf,
    issuer: String,
}

impl PrivateProvider {
    fn start() -> PrivateProvider {
        let dir = std::env::temp_dir().join(format!("nimbus-oidc-{}", uuid::Uuid::new_v4().simple()));
        let port = closed_port();
        let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/scripts/oidc.sh"))
            .args(["start", dir.to_str().unwrap(), &port.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        PrivateProvider { dir, issuer: format!("http://127.0.0.1:{port}") }
    }

    fn stop(&self) {
        let status = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/scripts/oidc.sh"))
            .args(["stop", self.dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for PrivateProvider {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

#[tokio::test]
async fn with_the_provider_down_cached_keys_validate_and_sign_in_shows_an_error_page() {
    let provider = PrivateProvider::start();
    let app = app_with(&provider.issuer).await;
    let tokens = cli_tokens(&provider.issuer, "bob@globex.test", "bob-pass").await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(me_with(&app, access).await.0, StatusCode::OK);
    // A browser signed in before the outage, and an API that has started a sign-in before it.
    let browser = sign_in(&app, "alice@acme.test", "alice-pass").await;
    let cookie = browser.session_cookie(&app).unwrap();
    let signed_in_before = app_with(&provider.issuer).await;
    assert_eq!(
        no_redirects().get(signed_in_before.url("/auth/login")).send().await.unwrap().status(),
        StatusCode::SEE_OTHER
    );

    provider.stop();

    // Anonymous sign-in starts use the cached discovery document: no round trip to the provider.
    let r = no_redirects().get(signed_in_before.url("/auth/login")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()["location"].to_str().unwrap().starts_with(&provider.issuer));

    // The session's access token expires during the outage: requests go on, the session keeps
    // its tokens, and refreshes pause (30 s) instead of asking the provider at every request.
    oidc::edit_session(&app, &cookie, |s| s["accessExpiresAt"] = json!("2020-01-01T00:00:00Z")).await;
    let before = oidc::session_record(&app, &cookie).await.unwrap();
    let (s, body) = oidc::me(&app, &browser).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let backoff = format!("{}nimbus:oidc:refresh-backoff", app.redis.prefix());
    let ttl: i64 = redis::cmd("PTTL").arg(&backoff).query_async(&mut oidc::redis(&app).await).await.unwrap();
    assert!((1..=30_000).contains(&ttl), "backoff TTL {ttl}");
    let started = std::time::Instant::now();
    assert_eq!(oidc::me(&app, &browser).await.0, StatusCode::OK);
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "no provider call while backed off");
    assert_eq!(oidc::session_record(&app, &cookie).await.unwrap()["refreshToken"], before["refreshToken"]);
    assert!(reqwest::get(format!("{}/jwks", provider.issuer)).await.is_err(), "the provider is down");
    let (s, body) = me_with(&app, access).await;
    assert_eq!(s, StatusCode::OK, "cached keys: {body}");
    // An unknown kid cannot be checked against a provider that is down: refused, not 500.
    let mut c = claims(&provider.issuer);
    c["sub"] = json!("b6f1c1e0-0000-4000-8000-000000000b0b");
    assert_eq!(me_with(&app, &sign(&c, "rotated-away")).await.0, StatusCode::UNAUTHORIZED);

    // An API that never reached the provider says so on its sign-in page.
    let r = no_redirects().get(app.url("/auth/login")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let html = r.text().await.unwrap();
    assert!(html.contains("Sign-in is unavailable right now"), "{html}");
    assert!(html.contains(&rid), "the page names the request id");
}

#[test]
fn stopping_the_provider_never_kills_another_process_behind_a_stale_pid_file() {
    let dir = std::env::temp_dir().join(format!("nimbus-oidc-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    // A pid file left behind, its pid since reused by an unrelated process.
    let mut other = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(dir.join("oidc.pid"), other.id().to_string()).unwrap();
    let status = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/scripts/oidc.sh"))
        .args(["stop", dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let alive = other.try_wait().unwrap().is_none();
    let _ = other.kill();
    let _ = other.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(alive, "oidc.sh stop killed a process that is not the provider");
    assert!(!dir.join("oidc.pid").exists());
}
