//! Browser sign-in against the real OIDC provider of infra/oidc (started by `make test`, issuer in
//! `NIMBUS_TEST_OIDC_ISSUER`): a cookie-keeping client plays the browser through the provider's
//! login form. Also the helpers `jwt.rs` uses to obtain real provider tokens.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nimbus_db::plans::{self, NewPlan};
use nimbus_domain::PlanPrices;
use redis::AsyncCommands;
use reqwest::StatusCode;
use reqwest::cookie::CookieStore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use nimbus_api::auth::oidc::RedisHandle;
use nimbus_api::auth::session::{Session, SessionStore};
use nimbus_domain::{TenantId, UserId};

use crate::support::{Options, ROOMY, TestApp, assert_error, split, vm_body};

pub const ISSUER_VAR: &str = "NIMBUS_TEST_OIDC_ISSUER";

/// The issuer of the provider `make test` started.
pub fn issuer() -> String {
    match std::env::var(ISSUER_VAR) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{ISSUER_VAR} is not set. Run `make test`, or start the provider yourself: \
             `eval \"$(infra/scripts/oidc.sh start /tmp/nimbus-oidc 9400)\"`"
        ),
    }
}

/// A TestApp with OIDC against `issuer` and the `default` plan that first sign-ins use.
pub async fn app_with(issuer: &str) -> TestApp {
    app_with_options(Options { oidc_issuer: Some(issuer.to_owned()), ..Options::default() }).await
}

/// [`app_with`] for any options (which should name an issuer).
pub async fn app_with_options(options: Options) -> TestApp {
    let app = TestApp::with(ROOMY, options).await;
    plans::create(app.pool(), &NewPlan { name: "default".into(), limits: ROOMY, prices: PlanPrices::free("EUR") })
        .await
        .unwrap();
    app
}

pub async fn app() -> TestApp {
    app_with(&issuer()).await
}

/// A browser: keeps cookies, does not follow redirects (each step is checked).
pub struct Browser {
    pub http: reqwest::Client,
    pub jar: Arc<reqwest::cookie::Jar>,
}

impl Browser {
    pub fn new() -> Browser {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let http = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Browser { http, jar }
    }

    /// The session cookie's value for `app`.
    pub fn session_cookie(&self, app: &TestApp) -> Option<String> {
        let cookies = self.jar.cookies(&app.base.parse().unwrap())?;
        cookies.to_str().unwrap().split("; ").find_map(|c| c.strip_prefix("__Host-nimbus_session=")).map(str::to_owned)
    }
}

fn location(r: &reqwest::Response) -> String {
    r.headers().get("location").unwrap_or_else(|| panic!("no Location in {}", r.status())).to_str().unwrap().to_owned()
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") { location.to_owned() } else { format!("{}{location}", base.trim_end_matches('/')) }
}

fn origin_of(url: &str) -> String {
    let u = url::Url::parse(url).unwrap();
    u.origin().ascii_serialization()
}

/// Walks the provider from `authorize_url` through its login form as `email`/`password` and
/// returns the redirect back to the client (with `code` and `state`).
pub async fn through_provider(b: &Browser, authorize_url: &str, email: &str, password: &str) -> String {
    let mut url = authorize_url.to_owned();
    let provider = origin_of(authorize_url);
    for _ in 0..10 {
        let r = b.http.get(&url).send().await.unwrap();
        if r.status().is_redirection() {
            let next = absolute(&provider, &location(&r));
            if !next.starts_with(&provider) {
                return next;
            }
            url = next;
            continue;
        }
        assert_eq!(r.status(), StatusCode::OK, "provider page {url}");
        let html = r.text().await.unwrap();
        let action = html.split("action=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        let form: Vec<(&str, &str)> = if html.contains("name=\"login\"") {
            vec![("prompt", "login"), ("login", email), ("password", password)]
        } else {
            // Public (native) clients get a consent screen for every authorization.
            assert!(html.contains("value=\"consent\""), "expected the login or consent form: {html}");
            vec![("prompt", "consent")]
        };
        let r = b.http.post(absolute(&provider, &action)).form(&form).send().await.unwrap();
        assert!(r.status().is_redirection(), "login refused: {}", r.status());
        url = absolute(&provider, &location(&r));
    }
    panic!("the provider never redirected back");
}

/// Starts a sign-in at the API and walks the provider; returns the callback URL (not called).
pub async fn to_callback(app: &TestApp, b: &Browser, email: &str, password: &str) -> String {
    let r = b.http.get(app.url("/auth/login?returnTo=/vms")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let authorize = location(&r);
    assert!(authorize.contains("code_challenge_method=S256"), "{authorize}");
    assert!(authorize.contains("nonce="), "{authorize}");
    let back = through_provider(b, &authorize, email, password).await;
    assert!(back.starts_with(&app.url("/auth/callback")), "{back}");
    back
}

/// A full sign-in; returns the browser holding the session cookie.
pub async fn sign_in(app: &TestApp, email: &str, password: &str) -> Browser {
    let b = Browser::new();
    let callback = to_callback(app, &b, email, password).await;
    let r = b.http.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
    assert_eq!(location(&r), "/vms");
    b
}

/// `GET /v1/me` as the browser.
pub async fn me(app: &TestApp, b: &Browser) -> (StatusCode, Value) {
    let (s, _, body) = split(b.http.get(app.url("/v1/me")).send().await.unwrap()).await;
    (s, body)
}

/// A code flow of the public client `nimbus-cli` (what a script does): the provider's tokens.
pub async fn cli_tokens(issuer: &str, email: &str, password: &str) -> Value {
    let b = Browser::new();
    let verifier = URL_SAFE_NO_PAD.encode(rand_bytes());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let redirect = "http://127.0.0.1:9/callback";
    let mut authorize = url::Url::parse(&format!("{issuer}/auth")).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("client_id", "nimbus-cli")
        .append_pair("response_type", "code")
        .append_pair("scope", "openid email profile")
        .append_pair("redirect_uri", redirect)
        .append_pair("state", "cli-state")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let back = through_provider(&b, authorize.as_str(), email, password).await;
    let back = url::Url::parse(&back).unwrap();
    let code = back.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let r = b
        .http
        .post(format!("{issuer}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "nimbus-cli"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

fn rand_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    for (i, x) in uuid::Uuid::new_v4().as_bytes().iter().chain(uuid::Uuid::new_v4().as_bytes()).enumerate() {
        b[i] = *x;
    }
    b
}

/// The Redis key of a session cookie.
pub fn session_key(app: &TestApp, cookie: &str) -> String {
    format!("{}nimbus:session:{}", app.redis.prefix(), hex::encode(Sha256::digest(cookie.as_bytes())))
}

pub async fn redis(app: &TestApp) -> redis::aio::MultiplexedConnection {
    redis::Client::open(app.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

pub async fn edit_session(app: &TestApp, cookie: &str, edit: impl FnOnce(&mut Value)) {
    let mut conn = redis(app).await;
    let key = session_key(app, cookie);
    let raw: String = conn.get(&key).await.unwrap();
    let mut v: Value = serde_json::from_str(&raw).unwrap();
    edit(&mut v);
    let _: () = conn.set_ex(&key, v.to_string(), 600).await.unwrap();
}

pub async fn session_record(app: &TestApp, cookie: &str) -> Option<Value> {
    let raw: Option<String> = redis(app).await.get(session_key(app, cookie)).await.unwrap();
    raw.map(|r| serde_json::from_str(&r).unwrap())
}

/// A client without a cookie jar sending exactly `cookie`.
async fn me_with_cookie(app: &TestApp, cookie: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .get(app.url("/v1/me"))
        .header("cookie", format!("__Host-nimbus_session={cookie}"))
        .send()
        .await
        .unwrap();
    let (s, _, body) = split(r).await;
    (s, body)
}

#[tokio::test]
async fn code_flow_signs_in_creates_user_and_tenant_and_me_answers() {
    let app = app().await;
    let alice = sign_in(&app, "alice@acme.test", "alice-pass").await;
    let (s, body) = me(&app, &alice).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let me_alice = &body["data"];
    assert_eq!(me_alice["user"]["email"], "alice@acme.test");
    assert_eq!(me_alice["user"]["name"], "Alice Acme");
    assert_eq!(me_alice["role"], "user");
    assert_eq!(me_alice["authMethod"], "session");
    assert!(me_alice["csrfToken"].as_str().is_some_and(|t| t.len() >= 32), "{body}");
    assert!(me_alice.get("impersonator").is_none());

    // The cookie is __Host-, HttpOnly, Secure, SameSite=Lax; Redis holds its hash, not it.
    let cookie = alice.session_cookie(&app).expect("session cookie");
    assert!(session_record(&app, &cookie).await.is_some());
    let raw_key_exists: bool =
        redis(&app).await.exists(format!("{}nimbus:session:{cookie}", app.redis.prefix())).await.unwrap();
    assert!(!raw_key_exists);

    // Signing in again finds the same user, and the role follows the provider's claim at each
    // sign-in (a role changed here is set back); the admin gets the admin role; bob his own tenant.
    let alice_id: uuid::Uuid = me_alice["user"]["id"].as_str().unwrap().parse().unwrap();
    sqlx::query("update users set role = 'billing-admin' where id = $1")
        .bind(alice_id)
        .execute(app.pool())
        .await
        .unwrap();
    let again = sign_in(&app, "alice@acme.test", "alice-pass").await;
    let (_, body2) = me(&app, &again).await;
    // Signing in again in the same browser replaces its session.
    let old_cookie = again.session_cookie(&app).unwrap();
    let callback = to_callback(&app, &again, "alice@acme.test", "alice-pass").await;
    assert_eq!(again.http.get(&callback).send().await.unwrap().status(), StatusCode::SEE_OTHER);
    assert_ne!(again.session_cookie(&app).unwrap(), old_cookie);
    assert!(session_record(&app, &old_cookie).await.is_none());
    assert_eq!(body2["data"]["user"]["id"], me_alice["user"]["id"]);
    assert_eq!(body2["data"]["role"], "user");
    let admin = sign_in(&app, "admin@nimbus.test", "admin-pass").await;
    assert_eq!(me(&app, &admin).await.1["data"]["role"], "admin");
    let bob = sign_in(&app, "bob@globex.test", "bob-pass").await;
    let (_, bob_me) = me(&app, &bob).await;
    assert_ne!(bob_me["data"]["tenant"]["id"], me_alice["tenant"]["id"]);
    let identities: i64 =
        sqlx::query_scalar("select count(*) from user_identities").fetch_one(app.pool()).await.unwrap();
    assert_eq!(identities, 3);
}

#[tokio::test]
async fn the_session_cookie_has_the_host_prefix_attributes() {
    let app = app().await;
    let b = Browser::new();
    let callback = to_callback(&app, &b, "alice@acme.test", "alice-pass").await;
    let r = b.http.get(&callback).send().await.unwrap();
    let set: Vec<String> = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    let session = set.iter().find(|c| c.starts_with("__Host-nimbus_session=")).expect("session cookie");
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(attr), "{session}");
    }
    assert!(!session.contains("Domain"), "{session}");
}

#[tokio::test]
async fn a_wrong_or_replayed_state_is_refused() {
    let app = app().await;
    let b = Browser::new();
    let callback = to_callback(&app, &b, "alice@acme.test", "alice-pass").await;
    let forged = url::Url::parse(&callback).unwrap();
    let pairs: Vec<(String, String)> = forged
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" { format!("{v}x") } else { v.into_owned() };
            (k.into_owned(), v)
        })
        .collect();
    let mut forged = forged.clone();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    let r = b.http.get(forged.as_str()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let html = r.text().await.unwrap();
    assert!(html.contains("Invalid sign-in link") && html.contains(&rid), "{html}");

    // The genuine callback works once; replayed (same state and code) it is refused.
    let ok = b.http.get(&callback).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let replay = b.http.get(&callback).send().await.unwrap();
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    // Another browser (no login cookie) presenting a valid-looking callback is refused too.
    let other = Browser::new();
    assert_eq!(other.http.get(&callback).send().await.unwrap().status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn tampered_and_expired_session_cookies_are_401() {
    let app = app().await;
    let b = sign_in(&app, "alice@acme.test", "alice-pass").await;
    let cookie = b.session_cookie(&app).unwrap();
    assert_eq!(me_with_cookie(&app, &cookie).await.0, StatusCode::OK);

    let mut tampered = cookie.clone().into_bytes();
    tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
    let (s, body) = me_with_cookie(&app, &String::from_utf8(tampered).unwrap()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&body, "UNAUTHENTICATED");
    assert_eq!(me_with_cookie(&app, "not-a-session").await.0, StatusCode::UNAUTHORIZED);

    // Past the absolute lifetime (sign-in long ago): refused, and the record is gone.
    edit_session(&app, &cookie, |s| s["createdAt"] = json!("2020-01-01T00:00:00Z")).await;
    assert_eq!(me_with_cookie(&app, &cookie).await.0, StatusCode::UNAUTHORIZED);
    assert!(session_record(&app, &cookie).await.is_none());

    // Idle expiry: Redis expires the key.
    let b2 = sign_in(&app, "alice@acme.test", "alice-pass").await;
    let cookie2 = b2.session_cookie(&app).unwrap();
    let _: bool = redis(&app).await.pexpire(session_key(&app, &cookie2), 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(me_with_cookie(&app, &cookie2).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn state_changing_requests_need_the_csrf_token_and_the_origin() {
    let app = app().await;
    let b = sign_in(&app, "alice@acme.test", "alice-pass").await;
    let (_, body) = me(&app, &b).await;
    let token = body["data"]["csrfToken"].as_str().unwrap().to_owned();
    let post = |name: &str| b.http.post(app.url("/v1/vms")).json(&vm_body(name));

    let (s, _, body) = split(post("a1").header("origin", &app.base).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert_error(&body, "FORBIDDEN");
    let (s, _, body) =
        split(post("a2").header("x-csrf-token", "wrong").header("origin", &app.base).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, _, body) =
        split(post("a3").header("x-csrf-token", &token).header("origin", "https://evil.example").send().await.unwrap())
            .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, _, _) = split(post("a4").header("x-csrf-token", &token).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no Origin nor Referer");
    assert_eq!(app.count("instances").await, 0, "nothing refused had an effect");
    // Each refusal is audited in the name of the session's user and tenant.
    let alice = me(&app, &b).await.1["data"]["user"]["id"].as_str().unwrap().to_owned();
    let refused: Vec<(Option<uuid::Uuid>, Option<uuid::Uuid>)> =
        sqlx::query_as("select actor_id, tenant_id from audit_log where http_status = 403 order by id")
            .fetch_all(app.pool())
            .await
            .unwrap();
    assert_eq!(refused.len(), 4, "{refused:?}");
    for (actor, tenant) in &refused {
        assert_eq!(actor.map(|a| a.to_string()).as_deref(), Some(alice.as_str()));
        assert!(tenant.is_some());
    }

    let (s, _, body) =
        split(post("a5").header("x-csrf-token", &token).header("origin", &app.base).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    let referer = format!("{}/vms/new", app.base);
    let (s, _, body) =
        split(post("a6").header("x-csrf-token", &token).header("referer", referer).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test]
async fn logout_ends_the_session_and_goes_to_the_provider() {
    let app = app().await;
    let b = sign_in(&app, "alice@acme.test", "alice-pass").await;
    let cookie = b.session_cookie(&app).unwrap();
    let token = me(&app, &b).await.1["data"]["csrfToken"].as_str().unwrap().to_owned();

    // Without the token or from another origin: refused, the session lives on.
    let r = b.http.post(app.url("/auth/logout")).header("origin", &app.base).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = b
        .http
        .post(app.url("/auth/logout"))
        .header("origin", "https://evil.example")
        .form(&[("csrfToken", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(me_with_cookie(&app, &cookie).await.0, StatusCode::OK);

    // A form post of the SPA (token as a field, same origin).
    let r = b
        .http
        .post(app.url("/auth/logout"))
        .header("origin", &app.base)
        .form(&[("csrfToken", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = location(&r);
    assert!(to.starts_with(&format!("{}/session/end?", issuer())), "{to}");
    assert!(to.contains("id_token_hint=") && to.contains("post_logout_redirect_uri="), "{to}");
    assert_eq!(me_with_cookie(&app, &cookie).await.0, StatusCode::UNAUTHORIZED);
    assert!(session_record(&app, &cookie).await.is_none());
}

#[tokio::test]
async fn an_expired_access_token_is_renewed_and_a_refused_refresh_ends_the_session() {
    let app = app().await;
    let b = sign_in(&app, "alice@acme.test", "alice-pass").await;
    let cookie = b.session_cookie(&app).unwrap();
    let before = session_record(&app, &cookie).await.unwrap();
    assert!(before["refreshToken"].is_string(), "{before}");

    edit_session(&app, &cookie, |s| s["accessExpiresAt"] = json!("2020-01-01T00:00:00Z")).await;
    assert_eq!(me(&app, &b).await.0, StatusCode::OK);
    let after = session_record(&app, &cookie).await.unwrap();
    assert_ne!(after["accessToken"], before["accessToken"], "a new access token");
    let expires: chrono::DateTime<chrono::Utc> = serde_json::from_value(after["accessExpiresAt"].clone()).unwrap();
    assert!(expires > chrono::Utc::now());

    edit_session(&app, &cookie, |s| {
        s["accessExpiresAt"] = json!("2020-01-01T00:00:00Z");
        s["refreshToken"] = json!("revoked-or-forged");
    })
    .await;
    let (s, body) = me(&app, &b).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert!(session_record(&app, &cookie).await.is_none());
}

#[tokio::test]
async fn a_deactivated_user_is_stopped_at_the_next_request() {
    let app = app().await;
    let b = sign_in(&app, "bob@globex.test", "bob-pass").await;
    let (_, body) = me(&app, &b).await;
    let user: uuid::Uuid = body["data"]["user"]["id"].as_str().unwrap().parse().unwrap();
    sqlx::query("update users set active = false where id = $1").bind(user).execute(app.pool()).await.unwrap();
    assert_eq!(me(&app, &b).await.0, StatusCode::UNAUTHORIZED);
    // And signing in again is refused with a page.
    let b2 = Browser::new();
    let callback = to_callback(&app, &b2, "bob@globex.test", "bob-pass").await;
    let r = b2.http.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("deactivated"));
}

#[tokio::test]
async fn login_checks_return_to_and_needs_configuration() {
    let app = app().await;
    // Non-ASCII cannot become a Location header: refused here rather than lost at the callback.
    for bad in ["https://evil.example/", "//evil.example/x", "/\\evil.example", "/vms/ü"] {
        let r = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(app.url("/auth/login"))
            .query(&[("returnTo", bad)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    }

    let plain = TestApp::new().await;
    let r = reqwest::get(plain.url("/auth/login")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().await.unwrap().contains("Sign-in is not configured"));
    // API keys keep working without OIDC, and a session cookie is simply ignored there.
    let (s, _, _) = plain.get("/v1/me").await;
    assert_eq!(s, StatusCode::OK);
}

/// The provider's login form for a sign-in started at the API: the browser (holding the
/// provider's interaction cookie) and the form's absolute action URL.
async fn login_form(app: &TestApp) -> (Browser, String) {
    let b = Browser::new();
    let r = b.http.get(app.url("/auth/login")).send().await.unwrap();
    let mut url = location(&r);
    let provider = origin_of(&url);
    loop {
        let r = b.http.get(&url).send().await.unwrap();
        if r.status().is_redirection() {
            url = absolute(&provider, &location(&r));
            continue;
        }
        let html = r.text().await.unwrap();
        assert!(html.contains("name=\"login\""), "expected the login form: {html}");
        let action = html.split("action=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        return (b, absolute(&provider, &action));
    }
}

#[tokio::test]
async fn the_providers_password_check_holds_whatever_the_path_spelling() {
    let app = app().await;
    let (b, action) = login_form(&app).await;
    let path = url::Url::parse(&action).unwrap().path().to_owned();
    assert!(path.starts_with("/interaction/"), "{action}");
    // oidc-provider routes these two to the same handler as the form's own action.
    let upper = action.replace("/interaction/", "/INTERACTION/");
    let slash = format!("{action}/");
    // A demo account's `sub` as the login with a wrong password: refused on every spelling, and
    // with the account's email too.
    for (target, login) in [
        (&upper, "b6f1c1e0-0000-4000-8000-0000000a11ce"),
        (&slash, "b6f1c1e0-0000-4000-8000-0000000a11ce"),
        (&action, "b6f1c1e0-0000-4000-8000-0000000a11ce"),
        (&upper, "alice@acme.test"),
    ] {
        let form = [("prompt", "login"), ("login", login), ("password", "wrong")];
        let r = b.http.post(target).form(&form).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{target} as {login} was not refused");
    }
    // A repeated prompt cannot slip past the check either.
    let r = b
        .http
        .post(&upper)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("prompt=login&prompt=login&login=b6f1c1e0-0000-4000-8000-0000000a11ce&password=x")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error() && !r.status().is_redirection(), "{}", r.status());
    // The control: the right password on the odd spelling passes, so the refusals above are
    // about the password.
    let form = [("prompt", "login"), ("login", "alice@acme.test"), ("password", "alice-pass")];
    let r = b.http.post(&slash).form(&form).send().await.unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
}

/// A session store on the app's Redis keys, as the API has it.
fn store(app: &TestApp) -> SessionStore {
    let redis = RedisHandle::new(app.redis.url()).unwrap();
    let prefix = format!("{}nimbus:", app.redis.prefix());
    SessionStore::new(redis, &prefix, Duration::from_secs(600), Duration::from_secs(3600))
}

fn a_session() -> Session {
    Session {
        user_id: UserId::new(),
        tenant_id: TenantId::new(),
        issuer: "http://idp.test".into(),
        subject: "sub".into(),
        csrf_token: "csrf".into(),
        id_token: None,
        access_token: Some("old-access".into()),
        refresh_token: Some("old-refresh".into()),
        access_expires_at: None,
        created_at: chrono::Utc::now(),
        impersonating: None,
        version: 0,
    }
}

#[tokio::test]
async fn a_stale_session_write_neither_revives_an_ended_session_nor_overwrites_a_newer_one() {
    let app = TestApp::new().await;
    let store = store(&app);
    let refreshed = |s: &mut Session| s.access_token = Some("new-access".into());

    // A refresh read the session; the user signs out during its call to the provider.
    let (_, id) = store.create(&a_session()).await.unwrap();
    let read_before_logout = store.load(&id).await.unwrap().unwrap();
    store.delete(&id).await.unwrap();
    let mut late = read_before_logout.clone();
    refreshed(&mut late);
    assert_eq!(store.replace(&id, &late).await.unwrap(), None, "the stale copy is refused");
    assert_eq!(store.update(&id, refreshed).await.unwrap(), None);
    assert!(store.load(&id).await.unwrap().is_none(), "a signed-out session stays signed out");

    // An administrator starts impersonating while a refresh is in flight: both changes survive.
    let (_, id) = store.create(&a_session()).await.unwrap();
    let read_before = store.load(&id).await.unwrap().unwrap();
    let target = UserId::new();
    assert!(store.set_impersonating(&id, Some(target)).await.unwrap());
    let mut late = read_before.clone();
    refreshed(&mut late);
    assert_eq!(store.replace(&id, &late).await.unwrap(), None, "written from an old version");
    assert_eq!(store.load(&id).await.unwrap().unwrap().impersonating, Some(target), "not overwritten");
    let merged = store.update(&id, refreshed).await.unwrap().unwrap();
    assert_eq!(merged.impersonating, Some(target));
    assert_eq!(merged.access_token.as_deref(), Some("new-access"));
    assert_eq!(store.load(&id).await.unwrap().unwrap(), merged);
    // Each write moves the version on: the copy just written is current, the one before is not.
    assert!(merged.version > read_before.version);
    assert!(store.replace(&id, &merged).await.unwrap().is_some());
    assert_eq!(store.replace(&id, &merged).await.unwrap(), None);
}

#[tokio::test]
async fn concurrent_requests_refresh_once_and_the_session_survives() {
    let app = app().await;
    let b = sign_in(&app, "alice@acme.test", "alice-pass").await;
    let cookie = b.session_cookie(&app).unwrap();
    edit_session(&app, &cookie, |s| s["accessExpiresAt"] = json!("2020-01-01T00:00:00Z")).await;
    let before = session_record(&app, &cookie).await.unwrap();
    let answers = futures::future::join_all((0..6).map(|_| me(&app, &b))).await;
    for (s, body) in &answers {
        assert_eq!(*s, StatusCode::OK, "{body}");
    }
    let after = session_record(&app, &cookie).await.unwrap();
    assert_ne!(after["accessToken"], before["accessToken"]);
    // One refresh wrote (the lock holder), the others read it or went on with the old copy.
    assert_eq!(after["version"].as_u64().unwrap(), before["version"].as_u64().unwrap() + 1, "{after}");
    // The session's refresh token still works: a second forced refresh succeeds.
    edit_session(&app, &cookie, |s| s["accessExpiresAt"] = json!("2020-01-01T00:00:00Z")).await;
    assert_eq!(me(&app, &b).await.0, StatusCode::OK);
    let again = session_record(&app, &cookie).await.unwrap();
    assert_ne!(again["accessToken"], after["accessToken"]);
}

#[tokio::test]
async fn a_refresh_re_syncs_the_role_from_the_new_id_token() {
    let app = app().await;
    let b = sign_in(&app, "alice@acme.test", "alice-pass").await;
    let cookie = b.session_cookie(&app).unwrap();
    let (_, body) = me(&app, &b).await;
    let alice: uuid::Uuid = body["data"]["user"]["id"].as_str().unwrap().parse().unwrap();
    sqlx::query("update users set role = 'billing-admin' where id = $1").bind(alice).execute(app.pool()).await.unwrap();
    assert_eq!(me(&app, &b).await.1["data"]["role"], "billing-admin", "no refresh yet, no change");
    edit_session(&app, &cookie, |s| s["accessExpiresAt"] = json!("2020-01-01T00:00:00Z")).await;
    let (s, body) = me(&app, &b).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["role"], "user", "the provider says user: {body}");
}

#[tokio::test]
async fn an_impersonation_no_longer_allowed_fails_the_request_and_ends() {
    let app = app().await;
    let bob = sign_in(&app, "bob@globex.test", "bob-pass").await;
    let bob_id = me(&app, &bob).await.1["data"]["user"]["id"].as_str().unwrap().to_owned();
    let admin = sign_in(&app, "admin@nimbus.test", "admin-pass").await;
    let admin_id = me(&app, &admin).await.1["data"]["user"]["id"].as_str().unwrap().to_owned();
    let cookie = admin.session_cookie(&app).unwrap();
    edit_session(&app, &cookie, |s| s["impersonating"] = json!(bob_id)).await;
    let (s, body) = me(&app, &admin).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["user"]["id"], bob_id.as_str());
    assert_eq!(body["data"]["impersonator"]["id"], admin_id.as_str());

    // Bob is deactivated: the request is not run as the administrator, it fails with a reason.
    sqlx::query("update users set active = false where id = $1")
        .bind(bob_id.parse::<uuid::Uuid>().unwrap())
        .execute(app.pool())
        .await
        .unwrap();
    let (s, body) = me(&app, &admin).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_error(&body, "CONFLICT");
    assert_eq!(body["error"]["details"]["impersonationEnded"], bob_id.as_str());
    assert!(session_record(&app, &cookie).await.unwrap()["impersonating"].is_null());
    // The next request is the administrator's own.
    let (s, body) = me(&app, &admin).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["user"]["id"], admin_id.as_str());
    assert!(body["data"].get("impersonator").is_none());
}
