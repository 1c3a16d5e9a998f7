//! Top-ups paid through Stripe, against PyPI `localstripe` (a stateful fake of Stripe's API that
//! signs its webhooks as Stripe does): a suspended prepaid tenant starts a top-up, the payment is
//! confirmed as Stripe.js would, localstripe's `payment_intent.succeeded` reaches the API's
//! webhook, the balance is credited once and the suspension lifted; a notification sent again
//! credits nothing, a forged one is refused.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nimbus_api::payments::stripe::{StripeConfig, sign};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::str::FromStr;

use crate::support::{Options, ROOMY, TestApp, closed_port, split};

pub const SECRET_KEY: &str = "sk_test_nimbus";
pub const WEBHOOK_SECRET: &str = "whsec_nimbus_test";

/// localstripe on a free port, stopped when dropped.
pub struct LocalStripe {
    child: Child,
    pub base: String,
}

impl LocalStripe {
    pub async fn start() -> LocalStripe {
        let python = std::env::var("NIMBUS_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| {
            panic!("NIMBUS_PYTHON is not set: run `make test`, which points it at the venv with localstripe")
        });
        let port = closed_port();
        let child = Command::new(python)
            .args(["-m", "localstripe", "--port", &port.to_string(), "--from-scratch"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("localstripe starts");
        let base = format!("http://127.0.0.1:{port}");
        let stripe = LocalStripe { child, base };
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = reqwest::Client::new();
        loop {
            let up = http.get(format!("{}/v1/customers", stripe.base)).bearer_auth(SECRET_KEY).send().await;
            if up.is_ok_and(|r| r.status().is_success()) {
                return stripe;
            }
            assert!(Instant::now() < deadline, "localstripe did not answer within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A form POST to localstripe as the shop's server (or Stripe.js) would make it.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .bearer_auth(SECRET_KEY)
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "localstripe {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn call(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = app.http.request(method, app.url(path)).bearer_auth(&app.token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let (status, _, body) = split(req.send().await.unwrap()).await;
    (status.as_u16(), body)
}

fn amount(v: &Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap_or_else(|| panic!("an amount: {v}"))).unwrap()
}

#[tokio::test]
async fn a_stripe_payment_credits_the_balance_once_and_lifts_the_suspension() {
    let stripe = LocalStripe::start().await;
    let config = StripeConfig {
        api_base: stripe.base.clone(),
        secret_key: SECRET_KEY.into(),
        webhook_secret: WEBHOOK_SECRET.into(),
    };
    let app = TestApp::with(ROOMY, Options { stripe: Some(config), ..Options::default() }).await;
    let webhook = app.url("/v1/billing/providers/stripe/webhook");
    stripe.post("/_config/webhooks/nimbus", &[("url", &webhook), ("secret", WEBHOOK_SECRET)]).await;

    // Prepaid with nothing left and no grace: suspended.
    let terms = format!("/v1/admin/tenants/{}/billing", app.tenant);
    let (status, _) =
        call(&app, Method::PUT, &terms, Some(json!({"prepaid": true, "taxRate": "0", "gracePeriodHours": 0}))).await;
    assert_eq!(status, 200);
    let (_, balance) = call(&app, Method::GET, "/v1/billing/balance", None).await;
    assert_eq!(balance["data"]["standing"]["state"], "suspended", "{balance}");

    // Bad amounts are refused before Stripe is asked.
    for bad in ["0", "-5", "10.001", "1000000"] {
        let (status, body) = call(&app, Method::POST, "/v1/billing/top-ups", Some(json!({"amount": bad}))).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, started) = call(&app, Method::POST, "/v1/billing/top-ups", Some(json!({"amount": "25"}))).await;
    assert_eq!(status, 201, "{started}");
    let started = &started["data"];
    let reference = started["reference"].as_str().unwrap().to_owned();
    assert!(reference.starts_with("pi_"), "{started}");
    assert!(started["clientSecret"].as_str().unwrap().starts_with(&format!("{reference}_secret_")));
    assert_eq!((started["status"].as_str(), started["currency"].as_str()), (Some("pending"), Some("EUR")));

    // The customer's browser confirms it with a card, as Stripe.js would.
    let card = stripe
        .post(
            "/v1/payment_methods",
            &[
                ("type", "card"),
                ("card[number]", "4242424242424242"),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2030"),
                ("card[cvc]", "123"),
            ],
        )
        .await;
    let intent = format!("/v1/payment_intents/{reference}");
    let pm = card["id"].as_str().unwrap();
    assert_eq!(stripe.post(&intent, &[("payment_method", pm)]).await["amount"], 2500);
    assert_eq!(stripe.post(&format!("{intent}/confirm"), &[]).await["status"], "succeeded");

    // localstripe's signed webhook settles it: credited, the suspension lifted.
    let deadline = Instant::now() + Duration::from_secs(20);
    let balance = loop {
        let (_, balance) = call(&app, Method::GET, "/v1/billing/balance", None).await;
        if balance["data"]["standing"]["state"] != "suspended" {
            break balance;
        }
        assert!(Instant::now() < deadline, "the payment was not settled: {balance}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(amount(&balance["data"]["balance"]), Decimal::from(25), "{balance}");
    assert_eq!(balance["data"]["standing"]["state"], "ok");
    assert_eq!(balance["data"]["entries"][0]["reason"], format!("paid through stripe ({reference})"));
    let (_, listed) = call(&app, Method::GET, "/v1/billing/top-ups", None).await;
    assert_eq!(listed["data"][0]["status"], "succeeded", "{listed}");

    // The same notification again (Stripe retries): nothing more credited.
    let event = json!({"id": "evt_again", "type": "payment_intent.succeeded",
                       "data": {"object": {"id": reference, "amount": 2500, "currency": "eur"}}})
    .to_string();
    let now = chrono::Utc::now().timestamp();
    let deliver = |signature: String| {
        let req = app.http.post(&webhook).header("stripe-signature", signature).body(event.clone());
        async move { split(req.send().await.unwrap()).await }
    };
    let (status, _, again) = deliver(sign(WEBHOOK_SECRET, now, event.as_bytes())).await;
    assert_eq!((status.as_u16(), again["data"]["outcome"].as_str()), (200, Some("already settled")), "{again}");
    // Forged, or signed too long ago: refused, nothing credited.
    let (status, _, _) = deliver(sign("whsec_forged", now, event.as_bytes())).await;
    assert_eq!(status, 400);
    let (status, _, _) = deliver(sign(WEBHOOK_SECRET, now - 600, event.as_bytes())).await;
    assert_eq!(status, 400);
    let (_, balance) = call(&app, Method::GET, "/v1/billing/balance", None).await;
    assert_eq!(amount(&balance["data"]["balance"]), Decimal::from(25));
    let top_ups: i64 = sqlx::query_scalar("select count(*) from balance_entries where payment_id is not null")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(top_ups, 1);
}

#[tokio::test]
async fn without_a_provider_top_ups_are_not_offered_to_any_member() {
    let app = TestApp::new().await;
    let (status, body) = call(&app, Method::POST, "/v1/billing/top-ups", Some(json!({"amount": "10"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (501, Some("PAYMENTS_NOT_CONFIGURED")), "{body}");
    let unknown = app.http.post(app.url("/v1/billing/providers/stripe/webhook")).body("{}").send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    // A customer's plain user may pay too; here there is nothing to pay with.
    let user = nimbus_db::users::create(
        app.pool(),
        app.tenant,
        &nimbus_db::users::NewUser {
            email: "ann@acme.test".into(),
            display_name: None,
            role: nimbus_domain::Role::User,
        },
    )
    .await
    .unwrap();
    let key = nimbus_db::api_keys::create(app.pool(), app.tenant, user.id, "k", &[], None).await.unwrap().1;
    let r = app.http.post(app.url("/v1/billing/top-ups")).bearer_auth(key).json(&json!({"amount": "10"})).send().await;
    assert_eq!(r.unwrap().status(), 501);
    assert_eq!(app.count("payments").await, 0, "nothing recorded");
}
