//! The audit log over a real Postgres: what is recorded (state changes, denials, admin actions,
//! impersonation), that the database keeps it append-only, the group-commit writer, and
//! `GET /v1/admin/audit-logs` with its filters, pagination and CSV export.

use std::time::Duration;

use futures::future::join_all;
use nimbus_db::users::{self, NewUser};
use nimbus_db::{api_keys, instances, jobs};
use nimbus_domain::{ErrorCode, InstanceStatus, JobError, JobId, Role, TenantId, UserId};
use serde_json::Value;

use crate::support::{ROOMY, TestApp, assert_error, new_tenant, split, vm_body};

/// One row of `audit_log`, as the tests look at it.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    actor_id: Option<uuid::Uuid>,
    impersonator_id: Option<uuid::Uuid>,
    tenant_id: Option<uuid::Uuid>,
    action: String,
    resource_type: Option<String>,
    resource_id: Option<String>,
    request_id: String,
    client_ip: Option<String>,
    outcome: String,
    http_status: i16,
    details: Value,
}

async fn rows(app: &TestApp) -> Vec<Row> {
    sqlx::query_as(
        "select actor_id, impersonator_id, tenant_id, action, resource_type, resource_id, request_id, \
         host(client_ip) as client_ip, outcome, http_status, details from audit_log order by id",
    )
    .fetch_all(app.pool())
    .await
    .unwrap()
}

/// The row of the request the client called `request_id` (its `X-Request-ID`, kept in the
/// details beside the server's id).
async fn row_for(app: &TestApp, request_id: &str) -> Row {
    let mut found: Vec<Row> =
        rows(app).await.into_iter().filter(|r| r.details["clientRequestId"] == request_id).collect();
    assert_eq!(found.len(), 1, "one row for request {request_id}: {found:?}");
    found.remove(0)
}

/// The admin user of `tenant` (the one `new_tenant` created).
async fn admin_of(app: &TestApp, tenant: TenantId) -> UserId {
    let id: uuid::Uuid = sqlx::query_scalar("select id from users where tenant_id = $1 and role = 'admin'")
        .bind(tenant.as_uuid())
        .fetch_one(app.pool())
        .await
        .unwrap();
    UserId::from_uuid(id)
}

/// A user with `role` in the default tenant, and a key of theirs.
async fn user_with_key(app: &TestApp, email: &str, role: Role) -> (UserId, String) {
    let user = users::create(app.pool(), app.tenant, &NewUser { email: email.into(), display_name: None, role })
        .await
        .unwrap();
    let (_, token) = api_keys::create(app.pool(), app.tenant, user.id, "test", &[], None).await.unwrap();
    (user.id, token)
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, String) {
    let mut req = app.http.request(method, app.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.text().await.unwrap())
}

#[tokio::test]
async fn a_create_is_recorded_with_actor_tenant_request_id_resource_and_outcome_before_the_answer() {
    let app = TestApp::new().await;
    let admin = admin_of(&app, app.tenant).await;
    let (status, headers, body) = app.create_vm(&vm_body("web-1"), &[("x-request-id", "req-audit-1")]).await;
    assert_eq!(status, 202, "{body}");
    let job = body["data"]["id"].as_str().unwrap();
    let instance = body["data"]["resources"][0]["id"].as_str().unwrap();

    // No waiting: the answer left only once the row was durable.
    let row = row_for(&app, "req-audit-1").await;
    assert_eq!(row.request_id, headers["x-request-id"].to_str().unwrap(), "the server's id, not the client's");
    assert_eq!(row.actor_id, Some(admin.as_uuid()));
    assert_eq!(row.impersonator_id, None);
    assert_eq!(row.tenant_id, Some(app.tenant.as_uuid()));
    assert_eq!(row.action, "POST /v1/vms");
    // A create names what it created, and where its job is.
    assert_eq!((row.resource_type.as_deref(), row.resource_id.as_deref()), (Some("vms"), Some(instance)));
    assert_eq!(row.details["location"], format!("/v1/jobs/{job}"));
    assert_eq!(row.client_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!((row.outcome.as_str(), row.http_status), ("success", 202));
    assert_eq!(row.details["method"], "POST");
    assert_eq!(row.details["path"], "/v1/vms");

    // A refused create is a failure, with its error code.
    let (status, _, _) = app.create_vm(&serde_json::json!({"name": "x"}), &[("x-request-id", "req-audit-2")]).await;
    assert_eq!(status, 400);
    let row = row_for(&app, "req-audit-2").await;
    assert_eq!((row.outcome.as_str(), row.http_status), ("failure", 400));
    assert_eq!(row.details["errorCode"], "VALIDATION_FAILED");

    // Reads of one's own resources are not audited.
    let before = rows(&app).await.len();
    assert_eq!(app.get("/v1/vms").await.0, 200);
    assert_eq!(app.get(&format!("/v1/jobs/{job}")).await.0, 200);
    assert_eq!(rows(&app).await.len(), before);
}

#[tokio::test]
async fn denied_requests_are_recorded_with_or_without_an_actor() {
    let app = TestApp::new().await;
    let post = reqwest::Method::POST;
    // An invalid key: refused by the authentication layer, no actor.
    let (status, _, _) =
        send(&app, post.clone(), "/v1/vms", Some("nmb_forged"), &[("x-request-id", "req-denied-1")]).await;
    assert_eq!(status, 401);
    let row = row_for(&app, "req-denied-1").await;
    assert_eq!((row.actor_id, row.tenant_id), (None, None));
    assert_eq!((row.action.as_str(), row.outcome.as_str(), row.http_status), ("POST /v1/vms", "denied", 401));
    assert_eq!(row.client_ip.as_deref(), Some("127.0.0.1"));

    // No credential at all, even on a read.
    let (status, _, _) = send(&app, reqwest::Method::GET, "/v1/vms", None, &[("x-request-id", "req-denied-2")]).await;
    assert_eq!(status, 401);
    let row = row_for(&app, "req-denied-2").await;
    assert_eq!((row.actor_id, row.outcome.as_str()), (None, "denied"));

    // A signed-in user on an admin route: denied, with the actor.
    let (user, token) = user_with_key(&app, "dev@acme.test", Role::User).await;
    let id = JobId::new().to_string();
    let path = format!("/v1/admin/jobs/{id}/retry");
    let (status, _, _) = send(&app, post, &path, Some(&token), &[("x-request-id", "req-denied-3")]).await;
    assert_eq!(status, 403);
    let row = row_for(&app, "req-denied-3").await;
    assert_eq!(row.actor_id, Some(user.as_uuid()));
    assert_eq!(row.tenant_id, Some(app.tenant.as_uuid()));
    assert_eq!(row.action, "POST /v1/admin/jobs/{id}/retry");
    assert_eq!((row.resource_type.as_deref(), row.resource_id.as_deref()), (Some("jobs"), Some(id.as_str())));
    assert_eq!((row.outcome.as_str(), row.http_status), ("denied", 403));
    assert_eq!(row.details["errorCode"], "FORBIDDEN");

    // Unknown routes name nothing and are not recorded.
    let before = rows(&app).await.len();
    assert_eq!(send(&app, reqwest::Method::POST, "/v1/nothing", None, &[]).await.0, 404);
    assert_eq!(rows(&app).await.len(), before);
}

#[tokio::test]
async fn an_admin_retry_and_admin_reads_are_recorded() {
    let app = TestApp::new().await;
    let admin = admin_of(&app, app.tenant).await;
    let (_, _, body) = app.create_vm(&vm_body("web-1"), &[]).await;
    let job: JobId = body["data"]["id"].as_str().unwrap().parse().unwrap();
    let instance = body["data"]["resources"][0]["id"].as_str().unwrap().parse().unwrap();
    jobs::claim(app.pool(), job, "worker-1", Duration::from_secs(30)).await.unwrap().expect("claimed");
    let error = JobError { code: ErrorCode::ProxmoxRejected, message: "clone refused".into(), retryable: false };
    jobs::fail(app.pool(), job, "worker-1", &error, Duration::ZERO).await.unwrap();
    instances::set_status(app.pool(), instance, InstanceStatus::Failed).await.unwrap();

    let path = format!("/v1/admin/jobs/{job}/retry");
    let (status, _, body) =
        send(&app, reqwest::Method::POST, &path, Some(&app.token), &[("x-request-id", "req-retry")]).await;
    assert_eq!(status, 202, "{body}");
    let row = row_for(&app, "req-retry").await;
    assert_eq!(row.actor_id, Some(admin.as_uuid()));
    assert_eq!(row.action, "POST /v1/admin/jobs/{id}/retry");
    assert_eq!(row.resource_type.as_deref(), Some("jobs"));
    assert_eq!(row.resource_id, Some(job.to_string()));
    assert_eq!((row.outcome.as_str(), row.http_status), ("success", 202));

    // An admin read is an admin action too.
    let (status, _, _) =
        send(&app, reqwest::Method::GET, "/v1/admin/jobs", Some(&app.token), &[("x-request-id", "req-admin-read")])
            .await;
    assert_eq!(status, 200);
    assert_eq!(row_for(&app, "req-admin-read").await.action, "GET /v1/admin/jobs");
}

#[tokio::test]
async fn impersonated_requests_name_both_the_user_and_the_admin() {
    let app = TestApp::new().await;
    let admin = admin_of(&app, app.tenant).await;
    let (user, _) = user_with_key(&app, "dev@acme.test", Role::User).await;
    let (status, headers, body) = send(
        &app,
        reqwest::Method::GET,
        "/v1/vms",
        Some(&app.token),
        &[("nimbus-impersonate", &user.to_string()), ("x-request-id", "req-imp")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["nimbus-impersonated-by"], admin.to_string().as_str());
    let row = row_for(&app, "req-imp").await;
    assert_eq!(row.actor_id, Some(user.as_uuid()));
    assert_eq!(row.impersonator_id, Some(admin.as_uuid()));
    assert_eq!((row.action.as_str(), row.outcome.as_str()), ("GET /v1/vms", "success"));
    assert_eq!(row.details["impersonate"], user.to_string());

    // Asking to impersonate without being an admin is refused, and recorded.
    let (_, token) = user_with_key(&app, "other@acme.test", Role::User).await;
    let (status, _, _) = send(
        &app,
        reqwest::Method::GET,
        "/v1/vms",
        Some(&token),
        &[("nimbus-impersonate", &admin.to_string()), ("x-request-id", "req-imp-denied")],
    )
    .await;
    assert_eq!(status, 403);
    let row = row_for(&app, "req-imp-denied").await;
    assert_eq!((row.outcome.as_str(), row.impersonator_id), ("denied", None));
    assert_eq!(row.details["impersonate"], admin.to_string());
}

#[tokio::test]
async fn the_database_refuses_to_change_or_remove_audit_rows() {
    let app = TestApp::new().await;
    app.create_vm(&vm_body("web-1"), &[("x-request-id", "req-keep")]).await;
    for sql in [
        "update audit_log set outcome = 'failure'",
        "update audit_log set action = 'x' where id = -1",
        "delete from audit_log",
        "delete from audit_log where id = -1",
        "truncate audit_log",
    ] {
        let e = sqlx::query(sql).execute(app.pool()).await.expect_err(sql);
        assert!(e.to_string().contains("append-only"), "{sql}: {e}");
    }
    let row = row_for(&app, "req-keep").await;
    assert_eq!(row.outcome, "success");
}

#[tokio::test]
async fn concurrent_requests_share_inserts_and_each_waits_for_its_own_row() {
    let app = TestApp::new().await;
    let n = 120;
    let answers = join_all((0..n).map(|i| {
        let app = &app;
        async move {
            let rid = format!("req-burst-{i}");
            let (status, _, _) =
                send(app, reqwest::Method::POST, "/v1/vms", Some("nmb_forged"), &[("x-request-id", &rid)]).await;
            assert_eq!(status, 401);
            // Its own row exists the moment its answer arrived.
            let found: i64 =
                sqlx::query_scalar("select count(*) from audit_log where details->>'clientRequestId' = $1")
                    .bind(&rid)
                    .fetch_one(app.pool())
                    .await
                    .unwrap();
            found
        }
    }))
    .await;
    assert!(answers.iter().all(|found| *found == 1), "{answers:?}");
    // Rows written by one INSERT share its transaction id.
    let (rows, inserts): (i64, i64) = sqlx::query_as("select count(*), count(distinct xmin::text) from audit_log")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(rows, n);
    assert!(inserts < rows, "{rows} rows in {inserts} inserts: entries were not batched");
}

#[tokio::test]
async fn an_audit_failure_is_logged_and_never_turns_the_answer_into_an_error() {
    let app = TestApp::new().await;
    // Only this test's database: make every audit insert fail.
    sqlx::query(
        "create function refuse_audit() returns trigger language plpgsql as \
         $$ begin raise exception 'audit storage broken'; end; $$",
    )
    .execute(app.pool())
    .await
    .unwrap();
    sqlx::query(
        "create trigger refuse_audit before insert on audit_log for each statement execute function refuse_audit()",
    )
    .execute(app.pool())
    .await
    .unwrap();
    let (status, _, body) = app.create_vm(&vm_body("web-1"), &[]).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(app.count("instances").await, 1);
    assert_eq!(app.count("audit_log").await, 0);
}

/// Parses RFC 4180 CSV (quoted fields, doubled quotes, CRLF) into records.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(!quoted && field.is_empty() && record.is_empty(), "the export ends with a complete line");
    records
}

async fn list(app: &TestApp, query: &str) -> Value {
    let (status, _, body) = app.get(&format!("/v1/admin/audit-logs{query}")).await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

#[tokio::test]
async fn the_admin_view_filters_pages_and_exports_csv() {
    let app = TestApp::new().await;
    let admin = admin_of(&app, app.tenant).await;
    let (other_tenant, other_token) = new_tenant(app.pool(), ROOMY).await;
    let other_admin = admin_of(&app, other_tenant).await;
    let started = chrono::Utc::now();

    for i in 0..3 {
        app.create_vm(&vm_body(&format!("web-{i}")), &[("x-request-id", &format!("req-create-{i}"))]).await;
    }
    // A request id with a comma, to be quoted in the CSV.
    send(&app, reqwest::Method::POST, "/v1/vms", Some("nmb_forged"), &[("x-request-id", "forged,key")]).await;
    let r = app
        .http
        .post(app.url("/v1/vms"))
        .bearer_auth(&other_token)
        .header("x-request-id", "req-other")
        .json(&vm_body("db-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // All tenants, newest first; the list's own reads are audited after they answer.
    let body = list(&app, "?action=POST%20/v1/vms").await;
    assert_eq!(body["pagination"]["total"], 5, "{body}");
    let client_ids: Vec<&str> =
        body["data"].as_array().unwrap().iter().map(|e| e["details"]["clientRequestId"].as_str().unwrap()).collect();
    assert_eq!(client_ids, ["req-other", "forged,key", "req-create-2", "req-create-1", "req-create-0"]);
    let ids: Vec<&str> = body["data"].as_array().unwrap().iter().map(|e| e["requestId"].as_str().unwrap()).collect();
    let first = &body["data"][0];
    assert_eq!(first["actorId"], other_admin.to_string());
    assert_eq!(first["tenantId"], other_tenant.to_string());
    assert_eq!(first["outcome"], "success");
    assert_eq!(first["httpStatus"], 202);
    assert_eq!(first["clientIp"], "127.0.0.1");
    assert_eq!(first["resourceType"], "vms");
    assert!(first["id"].is_i64() && first["at"].is_string(), "{first}");

    // Filters.
    let total = |b: &Value| b["pagination"]["total"].as_i64().unwrap();
    assert_eq!(total(&list(&app, &format!("?tenant={other_tenant}")).await), 1);
    assert_eq!(total(&list(&app, &format!("?actor={admin}&action=POST%20/v1/vms")).await), 3);
    let denied = list(&app, "?outcome=denied").await;
    assert_eq!(total(&denied), 1);
    assert_eq!(denied["data"][0]["actorId"], Value::Null);
    let vm = first["resourceId"].as_str().unwrap();
    let by_resource = list(&app, &format!("?resourceType=vms&resourceId={vm}")).await;
    assert_eq!(total(&by_resource), 1);
    assert_eq!(by_resource["data"][0]["requestId"], ids[0]);
    let since = urlencode(&started.to_rfc3339());
    let until = urlencode(&(started - chrono::Duration::seconds(1)).to_rfc3339());
    assert_eq!(total(&list(&app, &format!("?action=POST%20/v1/vms&from={since}")).await), 5);
    assert_eq!(total(&list(&app, &format!("?action=POST%20/v1/vms&to={since}")).await), 0);
    assert_eq!(total(&list(&app, &format!("?from={until}&to={since}")).await), 0);

    // Pages of two, newest first, no row twice.
    let p1 = list(&app, "?action=POST%20/v1/vms&perPage=2&page=1").await;
    let p3 = list(&app, "?action=POST%20/v1/vms&perPage=2&page=3").await;
    assert_eq!(p1["pagination"]["totalPages"], 3, "{p1}");
    assert_eq!(p1["data"][0]["requestId"], ids[0]);
    assert_eq!(p3["data"].as_array().unwrap().len(), 1);
    assert_eq!(p3["data"][0]["requestId"], ids[4]);

    // CSV: every filtered row (not a page), with a header, parsed back to the same values.
    let (status, headers, text) = send(
        &app,
        reqwest::Method::GET,
        "/v1/admin/audit-logs?action=POST%20/v1/vms&perPage=1&format=csv",
        Some(&app.token),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert!(headers["content-disposition"].to_str().unwrap().contains("attachment"));
    let records = parse_csv(&text);
    assert_eq!(records[0][..4], ["id", "at", "actorId", "impersonatorId"]);
    assert_eq!(records[0].len(), 13);
    assert_eq!(records.len(), 1 + 5);
    let column = |name: &str| records[0].iter().position(|c| c == name).unwrap();
    let request_ids: Vec<&str> = records[1..].iter().map(|r| r[column("requestId")].as_str()).collect();
    assert_eq!(request_ids, ids);
    let forged = &records[2];
    assert_eq!(forged[column("outcome")], "denied");
    assert_eq!(forged[column("actorId")], "");
    assert_eq!(forged[column("httpStatus")], "401");
    let details: Value = serde_json::from_str(&forged[column("details")]).unwrap();
    assert_eq!(details["path"], "/v1/vms");
    assert_eq!(details["clientRequestId"], "forged,key");
    assert_eq!(records[1][column("tenantId")], other_tenant.to_string());

    // Accept: text/csv works too, and filters apply.
    let (status, _, text) = send(
        &app,
        reqwest::Method::GET,
        "/v1/admin/audit-logs?outcome=denied",
        Some(&app.token),
        &[("accept", "text/csv")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(parse_csv(&text).len(), 2);
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn the_admin_view_is_for_admins_and_names_bad_filters() {
    let app = TestApp::new().await;
    let (_, token) = user_with_key(&app, "dev@acme.test", Role::User).await;
    let (status, _, body) = app.get_as(&token, "/v1/admin/audit-logs").await;
    assert_eq!(status, 403, "{body}");
    assert_error(&body, "FORBIDDEN");
    let (status, _, body) = split(app.http.get(app.url("/v1/admin/audit-logs")).send().await.unwrap()).await;
    assert_eq!(status, 401, "{body}");

    for (query, field) in [
        ("?actor=someone", "actor"),
        ("?tenant=1", "tenant"),
        ("?outcome=ok", "outcome"),
        ("?from=yesterday", "from"),
        ("?from=2026-11-26T12:00:00Z&to=2026-11-26T11:00:00Z", "to"),
        ("?format=xml", "format"),
        ("?perPage=1000", "perPage"),
    ] {
        let (status, _, body) = app.get(&format!("/v1/admin/audit-logs{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_error(&body, "VALIDATION_FAILED");
        let fields = crate::support::fields(&body);
        assert!(fields.contains(&Some(field.to_owned())), "{query}: {fields:?}");
    }
    // A misspelt filter is refused rather than ignored (it would widen the result).
    let (status, _, body) = app.get("/v1/admin/audit-logs?actorr=x").await;
    assert_eq!(status, 400, "{body}");
}
