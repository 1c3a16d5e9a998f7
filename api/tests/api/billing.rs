//! Billing routes over real services: the month to date and its forecast, invoices as JSON and
//! CSV and only the caller's, and price versions that only operators add and that cannot reach
//! back into metered hours.

use chrono::{DurationRound, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::str::FromStr;

use crate::support::{ROOMY, TestApp, new_tenant, split, vm_body};

fn amount(v: &Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap_or_else(|| panic!("an amount as a string: {v}"))).unwrap()
}

#[tokio::test]
async fn customers_see_usage_forecasts_and_only_their_invoices() {
    let app = TestApp::new().await;
    let plan = app.plan_id().await;
    let (status, _, created) = app.create_vm(&vm_body("billed-1"), &[]).await;
    assert_eq!(status, 202, "{created}");
    let instance = created["data"]["resources"][0]["id"].as_str().unwrap().to_owned();

    // Operators price the plan from now: 0.01 per vCPU-hour (the instance has 2), capped at 5.
    let prices = format!("/v1/admin/plans/{plan}/prices");
    let post = |path: String, token: String, body: Value| {
        let req = app.http.post(app.url(&path)).bearer_auth(token).json(&body);
        async move { split(req.send().await.unwrap()).await }
    };
    let past = (Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    let body = |from: &str| {
        json!({"validFrom": from, "currency": "EUR", "vcpuHour": "0.01", "memoryGibHour": "0",
               "diskGibHour": "0", "monthlyCap": "5"})
    };
    let (status, _, refused) = post(prices.clone(), app.token.clone(), body(&past)).await;
    assert_eq!(status, 400, "a metered hour keeps its price: {refused}");
    let hour = Utc::now().duration_trunc(chrono::Duration::hours(1)).unwrap();
    let (status, _, added) = post(prices.clone(), app.token.clone(), body(&hour.to_rfc3339())).await;
    assert_eq!(status, 201, "{added}");
    let (status, _, twice) = post(prices.clone(), app.token.clone(), body(&hour.to_rfc3339())).await;
    assert_eq!(status, 400, "one version per time: {twice}");
    let (_, b_admin) = new_tenant(app.pool(), ROOMY).await;

    nimbus_db::usage::meter_hour(app.pool(), hour).await.unwrap();
    let (status, _, usage) = app.get("/v1/billing/usage").await;
    assert_eq!(status, 200, "{usage}");
    let line = &usage["data"]["instances"][0];
    assert_eq!(line["instanceId"], instance.as_str());
    assert_eq!((line["hours"].as_i64(), amount(&line["amount"])), (Some(1), Decimal::from_str("0.02").unwrap()));
    assert_eq!(amount(&usage["data"]["total"]), Decimal::from_str("0.02").unwrap());
    let forecast = amount(&usage["data"]["forecast"]);
    let period_end: chrono::DateTime<Utc> = usage["data"]["periodEnd"].as_str().unwrap().parse().unwrap();
    let hours_left = Decimal::from((period_end - hour).num_hours());
    let expected = (Decimal::from_str("0.02").unwrap() * hours_left).min(Decimal::from(5));
    assert_eq!(forecast, expected, "the rest of the month at the current rate, capped: {usage}");
    let (_, _, b_usage) = app.get_as(&b_admin, "/v1/billing/usage").await;
    assert_eq!(b_usage["data"]["instances"], json!([]), "{b_usage}");

    // This month's invoice so far, issued as the monthly run would.
    let (from, to) = nimbus_db::invoices::month_of(hour);
    let mut tx = app.pool().begin().await.unwrap();
    let issued = nimbus_db::invoices::issue(&mut tx, app.tenant, from, to).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    let (_, _, listed) = app.get("/v1/billing/invoices").await;
    assert_eq!(listed["data"][0]["number"], issued.number.as_str(), "{listed}");
    let one = format!("/v1/billing/invoices/{}", issued.id);
    let (status, _, shown) = app.get(&one).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["data"]["lines"][0]["amount"], "0.02", "{shown}");
    assert_eq!(amount(&shown["data"]["total"]), Decimal::from_str("0.02").unwrap());
    let csv = app.http.get(app.url(&format!("{one}.csv"))).bearer_auth(&app.token).send().await.unwrap();
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    assert!(text.starts_with("invoice,position,description,hours,amount,currency\r\n"), "{text}");
    assert!(text.contains(&format!("{},1,billed-1 (1 h),1,0.02,EUR", issued.number)), "{text}");
    assert!(text.contains(&format!("{},,total,,0.02,EUR", issued.number)), "{text}");
    let html = app.http.get(app.url(&one)).bearer_auth(&app.token).header("accept", "text/html").send().await.unwrap();
    assert_eq!(html.status(), 200);
    assert!(html.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    let page = html.text().await.unwrap();
    assert!(page.contains(&format!("Invoice {}", issued.number)) && page.contains("billed-1 (1 h)"), "{page}");
    let printable = app.http.get(app.url(&format!("{one}.html"))).bearer_auth(&app.token).send().await.unwrap();
    assert!(printable.text().await.unwrap().contains("0.02 EUR"));
    for path in [one.clone(), format!("{one}.csv"), format!("{one}.html")] {
        let (status, _, body) = app.get_as(&b_admin, &path).await;
        assert_eq!(status, 404, "another tenant's invoice is missing: {body}");
    }
    let (_, _, b_list) = app.get_as(&b_admin, "/v1/billing/invoices").await;
    assert_eq!(b_list["data"], json!([]));

    // The prepaid balance: the invoice debited it; an operator's top-up and adjustment credit it.
    let (_, _, balance) = app.get("/v1/billing/balance").await;
    assert_eq!(amount(&balance["data"]["balance"]), Decimal::from_str("-0.02").unwrap(), "{balance}");
    assert_eq!(balance["data"]["entries"][0]["kind"], "invoice");
    assert_eq!(balance["data"]["entries"][0]["invoiceId"], issued.id.to_string());
    let credit = format!("/v1/admin/tenants/{}/credit", app.tenant);
    for (bad, field) in [
        (json!({"amount": "-5"}), "amount"),
        (json!({"amount": "0"}), "amount"),
        (json!({"kind": "adjustment", "amount": "-1"}), "reason"),
        (json!({"kind": "gift", "amount": "1"}), "kind"),
    ] {
        let (status, _, body) = post(credit.clone(), app.token.clone(), bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(crate::support::fields(&body).contains(&Some(field.to_owned())), "{bad}: {body}");
    }
    let (status, _, topped) = post(credit.clone(), app.token.clone(), json!({"amount": "10"})).await;
    assert_eq!(status, 201, "{topped}");
    let (status, _, _) = post(
        credit.clone(),
        app.token.clone(),
        json!({"kind": "adjustment", "amount": "-0.5", "reason": "goodwill reversed"}),
    )
    .await;
    assert_eq!(status, 201);
    let (_, _, balance) = app.get("/v1/billing/balance").await;
    assert_eq!(amount(&balance["data"]["balance"]), Decimal::from_str("9.48").unwrap(), "{balance}");
    let kinds: Vec<&str> =
        balance["data"]["entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["adjustment", "top_up", "invoice"], "newest first");
    let (_, _, b_balance) = app.get_as(&b_admin, "/v1/billing/balance").await;
    assert_eq!((amount(&b_balance["data"]["balance"]), &b_balance["data"]["entries"]), (Decimal::ZERO, &json!([])));
    let refused = sqlx::query("update balance_entries set amount = 1000").execute(app.pool()).await;
    assert!(refused.is_err(), "the ledger is append-only");
}

#[tokio::test]
async fn a_prepaid_tenant_with_no_balance_left_cannot_create_until_it_is_topped_up() {
    let app = TestApp::new().await;
    let put = |path: String, body: Value| {
        let req = app.http.put(app.url(&path)).bearer_auth(&app.token).json(&body);
        async move { split(req.send().await.unwrap()).await }
    };
    let terms = format!("/v1/admin/tenants/{}/billing", app.tenant);
    let (status, _, bad) = put(terms.clone(), json!({"prepaid": true, "taxRate": "1.5"})).await;
    assert_eq!(status, 400, "{bad}");
    let (status, _, set) = put(terms.clone(), json!({"prepaid": true, "taxRate": "0.19", "taxId": "DE123"})).await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(
        set["data"],
        json!({"prepaid": true, "taxRate": "0.19", "taxReverseCharge": false, "taxId": "DE123",
               "lowBalanceThreshold": "0", "gracePeriodHours": 72})
    );

    // Nothing on the balance: refused, nothing written.
    let (status, _, refused) = app.create_vm(&vm_body("unpaid-1"), &[]).await;
    assert_eq!((status.as_u16(), refused["error"]["code"].as_str()), (402, Some("PAYMENT_REQUIRED")), "{refused}");
    assert_eq!(app.count("instances").await, 0);

    // Topped up: creates go through again.
    let credit = format!("/v1/admin/tenants/{}/credit", app.tenant);
    let req = app.http.post(app.url(&credit)).bearer_auth(&app.token).json(&json!({"amount": "5"}));
    assert_eq!(split(req.send().await.unwrap()).await.0, 201);
    let (status, _, accepted) = app.create_vm(&vm_body("paid-1"), &[]).await;
    assert_eq!(status, 202, "{accepted}");

    // Another tenant, not prepaid, is never asked.
    let (_, other) = new_tenant(app.pool(), ROOMY).await;
    let req = app.http.post(app.url("/v1/vms")).bearer_auth(&other).json(&vm_body("postpaid-1"));
    assert_eq!(split(req.send().await.unwrap()).await.0, 202);

    // Its invoice used up the balance and more: refused again.
    let hour = Utc::now().duration_trunc(chrono::Duration::hours(1)).unwrap();
    let plan = app.plan_id().await;
    sqlx::query("update plan_prices set vcpu_hour = 10 where plan_id = $1")
        .bind(plan)
        .execute(app.pool())
        .await
        .unwrap();
    nimbus_db::usage::meter_hour(app.pool(), hour).await.unwrap();
    let (from, to) = nimbus_db::invoices::month_of(hour);
    let mut tx = app.pool().begin().await.unwrap();
    let invoice = nimbus_db::invoices::issue(&mut tx, app.tenant, from, to).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    assert_eq!(invoice.tax_rate.normalize(), Decimal::from_str("0.19").unwrap(), "the terms reach the invoice");
    assert_eq!(invoice.tax_id.as_deref(), Some("DE123"));
    let (status, _, refused) = app.create_vm(&vm_body("unpaid-2"), &[]).await;
    assert_eq!(status.as_u16(), 402, "{refused}");
}

#[tokio::test]
async fn operators_create_change_and_archive_plans() {
    let app = TestApp::new().await;
    let send = |method: reqwest::Method, path: String, body: Option<Value>| {
        let mut req = app.http.request(method, app.url(&path)).bearer_auth(&app.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move { split(req.send().await.unwrap()).await }
    };
    let body = json!({
        "name": "small", "maxBackups": 3, "minBackupIntervalMinutes": 120,
        "limits": {"maxInstances": 2, "maxVcpus": 4, "maxMemoryMib": 4096, "maxDiskGib": 50},
        "prices": {"currency": "EUR", "vcpuHour": "0.005", "memoryGibHour": "0.002", "diskGibHour": "0.0001"}
    });
    let (status, _, created) = send(reqwest::Method::POST, "/v1/admin/plans".into(), Some(body.clone())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(amount(&created["data"]["prices"]["vcpuHour"]), Decimal::from_str("0.005").unwrap());
    let id = created["data"]["id"].as_str().unwrap().to_owned();
    let (status, _, taken) = send(reqwest::Method::POST, "/v1/admin/plans".into(), Some(body.clone())).await;
    assert_eq!(status, 400, "the name is taken: {taken}");
    let mut negative = body.clone();
    negative["name"] = json!("other");
    negative["limits"]["maxVcpus"] = json!(-1);
    let (status, _, _) = send(reqwest::Method::POST, "/v1/admin/plans".into(), Some(negative)).await;
    assert_eq!(status, 400);
    // Its first price version is the prices it was created with.
    let versions: i64 = sqlx::query_scalar("select count(*) from plan_prices where plan_id = $1::uuid")
        .bind(&id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(versions, 1);
    let (max_backups, interval): (i32, i32) =
        sqlx::query_as("select max_backups, min_backup_interval_minutes from plans where id = $1::uuid")
            .bind(&id)
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!((max_backups, interval), (3, 120));

    let (status, _, changed) = send(
        reqwest::Method::PATCH,
        format!("/v1/admin/plans/{id}"),
        Some(json!({"limits": {"maxInstances": 5, "maxVcpus": 8, "maxMemoryMib": 8192, "maxDiskGib": 100}})),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        (changed["data"]["limits"]["maxInstances"].as_i64(), changed["data"]["name"].as_str()),
        (Some(5), Some("small"))
    );

    // Archived: kept, listed as such, and no tenant moves onto it.
    let (status, _, archived) = send(reqwest::Method::POST, format!("/v1/admin/plans/{id}/archive"), None).await;
    assert_eq!(status, 200, "{archived}");
    assert!(archived["data"]["archivedAt"].is_string());
    let (status, _, refused) =
        send(reqwest::Method::PUT, format!("/v1/admin/tenants/{}/plan", app.tenant), Some(json!({"planId": id}))).await;
    assert_eq!(status, 400, "{refused}");
    let (_, _, listed) = app.get("/v1/admin/plans").await;
    let small = listed["data"].as_array().unwrap().iter().find(|p| p["id"] == id.as_str()).cloned().unwrap();
    assert!(small["archivedAt"].is_string(), "{small}");
}
