//! Billing for operators over real services: credit notes, holds and the read-only API of a
//! suspended tenant, what a `billing-admin` may reach, revenue and the tenants needing attention.

use chrono::{DurationRound, Utc};
use nimbus_db::users::{self, NewUser};
use nimbus_db::{api_keys, events};
use nimbus_domain::Role;
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::str::FromStr;

use crate::support::{ROOMY, TestApp, assert_error, new_tenant, split, vm_body};

fn amount(v: &Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap_or_else(|| panic!("an amount as a string: {v}"))).unwrap()
}

async fn call(app: &TestApp, method: Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = app.http.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let (status, _, body) = split(req.send().await.unwrap()).await;
    (status.as_u16(), body)
}

/// Prices the app's plan at 1 per vCPU-hour from this hour, creates an instance, meters the hour
/// and issues this month's invoice so far (2 vCPUs: 2.00, taxed 19 %: 2.38).
async fn invoiced(app: &TestApp) -> (String, String) {
    let hour = Utc::now().duration_trunc(chrono::Duration::hours(1)).unwrap();
    let prices = format!("/v1/admin/plans/{}/prices", app.plan_id().await);
    let price =
        json!({"validFrom": hour, "currency": "EUR", "vcpuHour": "1", "memoryGibHour": "0", "diskGibHour": "0"});
    assert_eq!(call(app, Method::POST, &prices, &app.token, Some(price)).await.0, 201);
    let terms = format!("/v1/admin/tenants/{}/billing", app.tenant);
    let (status, set) =
        call(app, Method::PUT, &terms, &app.token, Some(json!({"prepaid": false, "taxRate": "0.19"}))).await;
    assert_eq!(status, 200, "{set}");
    let (status, _, created) = app.create_vm(&vm_body("billed"), &[]).await;
    assert_eq!(status, 202, "{created}");
    nimbus_db::usage::meter_hour(app.pool(), hour).await.unwrap();
    let (from, to) = nimbus_db::invoices::month_of(hour);
    let mut tx = app.pool().begin().await.unwrap();
    let invoice = nimbus_db::invoices::issue(&mut tx, app.tenant, from, to).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    assert_eq!(invoice.total.normalize(), Decimal::from_str("2.38").unwrap());
    (invoice.id.to_string(), invoice.number)
}

#[tokio::test]
async fn credit_notes_correct_an_invoice_up_to_its_total_and_credit_the_balance() {
    let app = TestApp::new().await;
    let (invoice, number) = invoiced(&app).await;
    let notes = format!("/v1/admin/invoices/{invoice}/credit-notes");

    let (status, refused) =
        call(&app, Method::POST, &notes, &app.token, Some(json!({"amount": "2.01", "reason": "outage"}))).await;
    assert_eq!(status, 400, "more than the invoice: {refused}");
    let (status, refused) = call(&app, Method::POST, &notes, &app.token, Some(json!({"amount": "1"}))).await;
    assert_eq!(status, 400, "a reason is required: {refused}");
    let missing = format!("/v1/admin/invoices/{}/credit-notes", uuid::Uuid::now_v7());
    assert_eq!(call(&app, Method::POST, &missing, &app.token, Some(json!({"reason": "x"}))).await.0, 404);

    // Part of it: 0.50 net, taxed at the invoice's 19 % (0.095 rounds half to even: 0.10).
    let (status, part) =
        call(&app, Method::POST, &notes, &app.token, Some(json!({"amount": "0.5", "reason": "outage on the 3rd"})))
            .await;
    assert_eq!(status, 201, "{part}");
    let part = &part["data"];
    assert_eq!((part["kind"].as_str(), part["corrects"].as_str()), (Some("credit_note"), Some(invoice.as_str())));
    assert_eq!(
        (amount(&part["subtotal"]), amount(&part["tax"])),
        (Decimal::from_str("0.5").unwrap(), Decimal::from_str("0.10").unwrap())
    );
    assert_eq!(part["lines"][0]["description"], format!("Credit for {number}: outage on the 3rd"));
    assert_ne!(part["number"], number.as_str(), "a number of its own");

    // The rest: exactly what is left, its tax included (2.38 - 0.60 = 1.78).
    let (status, rest) = call(&app, Method::POST, &notes, &app.token, Some(json!({"reason": "goodwill"}))).await;
    assert_eq!(status, 201, "{rest}");
    assert_eq!(amount(&rest["data"]["total"]), Decimal::from_str("1.78").unwrap());
    let (status, refused) =
        call(&app, Method::POST, &notes, &app.token, Some(json!({"amount": "0.01", "reason": "more"}))).await;
    assert_eq!(status, 400, "fully credited: {refused}");

    // The customer sees both, and its ledger is even again (-2.38 + 0.60 + 1.78).
    let (_, _, listed) = app.get("/v1/billing/invoices").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 3, "{listed}");
    let (_, _, balance) = app.get("/v1/billing/balance").await;
    assert_eq!(amount(&balance["data"]["balance"]), Decimal::ZERO, "{balance}");
    let kinds: Vec<String> = billing_events(&app, app.tenant).await;
    assert_eq!(kinds, ["invoice.issued", "credit_note.issued", "credit_note.issued"]);
    // Issued documents stay immutable, credit notes included.
    let changed = sqlx::query("update invoices set total = 0 where kind = 'credit_note'").execute(app.pool()).await;
    assert!(changed.is_err());
}

#[tokio::test]
async fn a_suspended_tenant_reads_and_pays_but_changes_nothing_until_it_is_lifted() {
    let app = TestApp::new().await;
    let (tenant, customer) = new_tenant(app.pool(), ROOMY).await;
    let (status, _, created) = {
        let req = app.http.post(app.url("/v1/vms")).bearer_auth(&customer).json(&vm_body("kept"));
        split(req.send().await.unwrap()).await
    };
    assert_eq!(status, 202, "{created}");
    let instance = created["data"]["resources"][0]["id"].as_str().unwrap().to_owned();

    let suspend = format!("/v1/admin/tenants/{tenant}/suspend");
    let (status, refused) = call(&app, Method::POST, &suspend, &app.token, Some(json!({"reason": ""}))).await;
    assert_eq!(status, 400, "{refused}");
    let (status, held) =
        call(&app, Method::POST, &suspend, &app.token, Some(json!({"reason": "chargeback under review"}))).await;
    assert_eq!(status, 200, "{held}");
    assert_eq!(
        (held["data"]["state"].as_str(), held["data"]["suspensionReason"].as_str()),
        (Some("suspended"), Some("chargeback under review"))
    );

    // Writes are refused, reads, billing and deletes are not.
    let (status, refused) = call(&app, Method::POST, "/v1/vms", &customer, Some(vm_body("more"))).await;
    assert_eq!(status, 402, "{refused}");
    assert_error(&refused, "TENANT_SUSPENDED");
    assert_eq!(refused["error"]["details"]["reason"], "chargeback under review");
    let action = format!("/v1/vms/{instance}/actions/reboot");
    assert_eq!(call(&app, Method::POST, &action, &customer, None).await.0, 402);
    assert_eq!(call(&app, Method::GET, &format!("/v1/vms/{instance}"), &customer, None).await.0, 200);
    let (status, balance) = call(&app, Method::GET, "/v1/billing/balance", &customer, None).await;
    assert_eq!((status, balance["data"]["standing"]["state"].as_str()), (200, Some("suspended")), "{balance}");
    // A top-up does not lift an operator's hold.
    let credit = format!("/v1/admin/tenants/{tenant}/credit");
    assert_eq!(call(&app, Method::POST, &credit, &app.token, Some(json!({"amount": "50"}))).await.0, 201);
    assert_eq!(call(&app, Method::POST, "/v1/vms", &customer, Some(vm_body("more"))).await.0, 402);

    let unsuspend = format!("/v1/admin/tenants/{tenant}/unsuspend");
    let (status, lifted) = call(&app, Method::POST, &unsuspend, &app.token, None).await;
    assert_eq!((status, lifted["data"]["state"].as_str()), (200, Some("ok")), "{lifted}");
    assert_eq!(call(&app, Method::POST, "/v1/vms", &customer, Some(vm_body("more"))).await.0, 202);
    let kinds: Vec<String> = billing_events(&app, tenant).await;
    assert_eq!(kinds, ["tenant.suspended", "tenant.resumed"]);
    let unknown = format!("/v1/admin/tenants/{}/suspend", uuid::Uuid::now_v7());
    assert_eq!(call(&app, Method::POST, &unknown, &app.token, Some(json!({"reason": "x"}))).await.0, 404);
}

#[tokio::test]
async fn billing_admins_see_revenue_and_balances_but_not_user_administration() {
    let app = TestApp::new().await;
    invoiced(&app).await;
    let user = |email: &str, role| {
        let pool = app.pool().clone();
        let tenant = app.tenant;
        let email = email.to_owned();
        async move {
            let new = NewUser { email, display_name: None, role };
            let user = users::create(&pool, tenant, &new).await.unwrap();
            api_keys::create(&pool, tenant, user.id, "key", &[], None).await.unwrap().1
        }
    };
    let billing = user("bill@acme.test", Role::BillingAdmin).await;
    let plain = user("ann@acme.test", Role::User).await;

    let (status, revenue) = call(&app, Method::GET, "/v1/admin/billing/revenue", &billing, None).await;
    assert_eq!(status, 200, "{revenue}");
    let month = &revenue["data"]["months"][0];
    assert_eq!(
        (month["invoices"].as_i64(), amount(&month["invoiced"]), amount(&month["tax"])),
        (Some(1), Decimal::from(2), Decimal::from_str("0.38").unwrap())
    );
    let plan = &revenue["data"]["plans"][0];
    assert_eq!((plan["instances"].as_i64(), amount(&plan["invoiced"])), (Some(1), Decimal::from(2)), "{revenue}");
    assert_eq!(plan["planId"], app.plan_id().await.to_string());
    assert_eq!(call(&app, Method::GET, "/v1/admin/billing/revenue?months=0", &billing, None).await.0, 400);

    // The tenant owes its invoice: it needs attention.
    let (status, attention) = call(&app, Method::GET, "/v1/admin/billing/tenants?attention=true", &billing, None).await;
    assert_eq!(status, 200, "{attention}");
    let listed = attention["data"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{attention}");
    assert_eq!(
        (listed[0]["id"].as_str(), amount(&listed[0]["balance"])),
        (Some(app.tenant.to_string().as_str()), Decimal::from_str("-2.38").unwrap())
    );
    assert!(listed[0]["unpaidSince"].is_string(), "{attention}");
    // A billing admin credits; the payment settles it.
    let credit = format!("/v1/admin/tenants/{}/credit", app.tenant);
    assert_eq!(call(&app, Method::POST, &credit, &billing, Some(json!({"amount": "2.38"}))).await.0, 201);
    let (_, attention) = call(&app, Method::GET, "/v1/admin/billing/tenants?attention=true", &billing, None).await;
    assert_eq!(attention["data"], json!([]));

    // Not user administration, nor other operator routes.
    for path in ["/v1/admin/users", "/v1/admin/jobs", "/v1/admin/nodes"] {
        let (status, body) = call(&app, Method::GET, path, &billing, None).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    // And a plain user none of it.
    for path in ["/v1/admin/billing/revenue", "/v1/admin/billing/tenants"] {
        assert_eq!(call(&app, Method::GET, path, &plain, None).await.0, 403, "{path}");
    }
}

#[tokio::test]
async fn price_versions_take_backup_storage_and_size_tiers() {
    let app = TestApp::new().await;
    let prices = format!("/v1/admin/plans/{}/prices", app.plan_id().await);
    let body = |tiers: Value| {
        json!({"validFrom": Utc::now() + chrono::Duration::hours(2), "currency": "EUR", "vcpuHour": "0.01",
               "memoryGibHour": "0", "diskGibHour": "0.0001", "backupGibHour": "0.00005", "tiers": tiers})
    };
    let small =
        json!({"name": "S", "cores": 2, "memory": 2048, "disk": 20, "hourPrice": "0.006", "monthlyCap": "3.79"});
    let twin = json!({"name": "S2", "cores": 2, "memory": 2048, "disk": 20, "hourPrice": "0.007"});
    let bad = json!({"name": "", "cores": 0, "memory": 2048, "disk": 20, "hourPrice": "-1"});
    let (status, refused) = call(&app, Method::POST, &prices, &app.token, Some(body(json!([small, twin, bad])))).await;
    assert_eq!(status, 400, "{refused}");
    let fields: Vec<&str> =
        refused["error"]["details"]["fields"].as_array().unwrap().iter().filter_map(|f| f["field"].as_str()).collect();
    assert_eq!(fields, ["tiers[1].cores", "tiers[2].name", "tiers[2].cores", "tiers[2].hourPrice"], "{refused}");

    let (status, added) = call(&app, Method::POST, &prices, &app.token, Some(body(json!([small])))).await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["data"]["backupGibHour"], "0.00005");
    assert_eq!(
        added["data"]["tiers"],
        json!([{"name": "S", "cores": 2, "memory": 2048, "disk": 20, "hourPrice": "0.006", "monthlyCap": "3.79"}])
    );
}

#[tokio::test]
async fn concurrent_credits_to_one_tenant_all_land() {
    let app = TestApp::new().await;
    let terms = format!("/v1/admin/tenants/{}/billing", app.tenant);
    assert_eq!(
        call(&app, Method::PUT, &terms, &app.token, Some(json!({"prepaid": true, "taxRate": "0"}))).await.0,
        200
    );
    // Each credit inserts its entry and then moves the tenant along the ladder in one
    // transaction: they must queue on the tenant, not deadlock.
    let credit = format!("/v1/admin/tenants/{}/credit", app.tenant);
    let calls = (0..12).map(|_| call(&app, Method::POST, &credit, &app.token, Some(json!({"amount": "1"}))));
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, 201, "{body}");
    }
    // Past what the ledger keeps: a clear 400, not the database's overflow.
    let (status, refused) = call(&app, Method::POST, &credit, &app.token, Some(json!({"amount": "1000000001"}))).await;
    assert_eq!(status, 400, "{refused}");
    let (_, balance) = call(&app, Method::GET, "/v1/billing/balance", &app.token, None).await;
    assert_eq!(amount(&balance["data"]["balance"]), Decimal::from(12), "{balance}");
    assert_eq!(balance["data"]["standing"]["state"], "ok");
}

/// The tenant's billing events, oldest first (instances and keys record events of their own).
async fn billing_events(app: &TestApp, tenant: nimbus_domain::TenantId) -> Vec<String> {
    let all = events::for_tenant(app.pool(), tenant, None).await.unwrap();
    all.into_iter().map(|e| e.kind).filter(|k| events::types::BILLING.contains(&k.as_str())).collect()
}
