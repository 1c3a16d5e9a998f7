//! The operators' routes: users across tenants (list, search, create, update, deactivate),
//! plans and their assignment, and impersonation with `Nimbus-Impersonate`.

use nimbus_db::users::{self, NewUser};
use nimbus_db::{api_keys, plans, tenants};
use nimbus_domain::{PlanLimits, Role, TenantId, UserId};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::support::{ROOMY, TestApp, assert_error, fields, new_tenant, split, vm_body};

type Answer = (StatusCode, HeaderMap, Value);

async fn send(app: &TestApp, method: &str, token: &str, path: &str, body: Option<Value>) -> Answer {
    let mut req = app.http.request(method.parse().unwrap(), app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    split(req.send().await.unwrap()).await
}

/// A user with `role` in `tenant` and a key of theirs with `scopes`.
async fn user_with_key(app: &TestApp, tenant: TenantId, email: &str, role: Role, scopes: &[&str]) -> (UserId, String) {
    let user =
        users::create(app.pool(), tenant, &NewUser { email: email.into(), display_name: Some(email.into()), role })
            .await
            .unwrap();
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    (user.id, api_keys::create(app.pool(), tenant, user.id, "fixture", &scopes, None).await.unwrap().1)
}

async fn tenant_of_token(app: &TestApp, token: &str) -> TenantId {
    let prefix = token.split('_').nth(1).unwrap();
    let id: uuid::Uuid = sqlx::query_scalar("select tenant_id from api_keys where prefix = $1")
        .bind(prefix)
        .fetch_one(app.pool())
        .await
        .unwrap();
    id.into()
}

#[tokio::test]
async fn operators_list_and_search_users_of_every_tenant() {
    let app = TestApp::new().await;
    let (globex, _) = new_tenant(app.pool(), ROOMY).await;
    user_with_key(&app, app.tenant, "ann@acme.test", Role::User, &[]).await;
    let (bob, _) = user_with_key(&app, globex, "bob@globex.test", Role::BillingAdmin, &[]).await;
    users::set_active(app.pool(), globex, bob, false).await.unwrap();

    let (status, _, all) = app.get("/v1/admin/users").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["pagination"]["total"], 4, "two admins and two users in two tenants: {all}");
    let first = &all["data"][0];
    assert_eq!(first["email"], "bob@globex.test", "newest first");
    assert_eq!(first["tenantId"], globex.to_string());
    assert_eq!(first["role"], "billing-admin");
    assert_eq!(first["active"], false);
    assert!(first["createdAt"].is_string() && first["displayName"].is_string());

    for (query, expected) in [
        ("?q=ANN", vec!["ann@acme.test"]),
        ("?q=globex", vec!["bob@globex.test"]),
        (&format!("?tenant={globex}") as &str, vec!["bob@globex.test", "ops@acme.test"]),
        ("?role=billing-admin", vec!["bob@globex.test"]),
        ("?active=false", vec!["bob@globex.test"]),
        ("?role=user&active=true", vec!["ann@acme.test"]),
        ("?q=%25", vec![]),
    ] {
        let (status, _, body) = app.get(&format!("/v1/admin/users{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        let emails: Vec<&str> = body["data"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap()).collect();
        assert_eq!(emails, expected, "{query}");
    }
    let (_, _, page) = app.get("/v1/admin/users?perPage=3&page=2").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["pagination"]["totalPages"], 2);
    for bad in ["?role=root", "?active=maybe", "?tenant=acme", "?perPage=0"] {
        let (status, _, body) = app.get(&format!("/v1/admin/users{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_error(&body, "VALIDATION_FAILED");
    }

    let (status, _, one) = app.get(&format!("/v1/admin/users/{bob}")).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["data"]["email"], "bob@globex.test");
    let (status, _, body) = app.get(&format!("/v1/admin/users/{}", UserId::new())).await;
    assert_eq!(status, 404, "{body}");
    assert_error(&body, "NOT_FOUND");
}

#[tokio::test]
async fn operators_create_users_in_existing_or_new_tenants() {
    let app = TestApp::new().await;
    let (status, headers, body) = send(
        &app,
        "POST",
        &app.token,
        "/v1/admin/users",
        Some(json!({"email": "ann@acme.test", "displayName": "Ann", "role": "user", "tenantId": app.tenant})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let ann = body["data"]["id"].as_str().unwrap();
    assert_eq!(headers["location"], format!("/v1/admin/users/{ann}").as_str());
    assert_eq!(body["data"]["tenantId"], app.tenant.to_string());
    assert_eq!(body["data"]["displayName"], "Ann");

    let plan = plans::list(app.pool()).await.unwrap().remove(0);
    let (status, _, body) = send(
        &app,
        "POST",
        &app.token,
        "/v1/admin/users",
        Some(
            json!({"email": "eve@initech.test", "role": "admin", "newTenant": {"name": "Initech", "planId": plan.id}}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let tenant: TenantId = body["data"]["tenantId"].as_str().unwrap().parse().unwrap();
    let created = tenants::get(app.pool(), tenant).await.unwrap();
    assert_eq!((created.name.as_str(), created.plan_id), ("Initech", plan.id));

    let tenants_before = app.count("tenants").await;
    let users_before = app.count("users").await;
    for (body, status, field) in [
        (json!({"email": "ann@acme.test", "role": "user", "tenantId": app.tenant}), 409, "email"),
        (json!({"email": "not-an-email", "role": "user", "tenantId": app.tenant}), 400, "email"),
        (json!({"email": "x@acme.test", "role": "root", "tenantId": app.tenant}), 400, "role"),
        (json!({"email": "x@acme.test", "role": "user"}), 400, "tenantId"),
        (
            json!({"email": "x@acme.test", "role": "user", "tenantId": app.tenant,
                   "newTenant": {"name": "Both", "planId": plan.id}}),
            400,
            "tenantId",
        ),
        (json!({"email": "x@acme.test", "role": "user", "tenantId": TenantId::new()}), 400, "tenantId"),
        (
            json!({"email": "x@acme.test", "role": "user", "newTenant": {"name": "N", "planId": TenantId::new()}}),
            400,
            "newTenant.planId",
        ),
        (
            json!({"email": "x@acme.test", "role": "user", "newTenant": {"name": " ", "planId": plan.id}}),
            400,
            "newTenant.name",
        ),
    ] {
        let (got, _, answer) = send(&app, "POST", &app.token, "/v1/admin/users", Some(body.clone())).await;
        assert_eq!(got.as_u16(), status, "{body} → {answer}");
        assert_eq!(fields(&answer), vec![Some(field.to_owned())], "{body} → {answer}");
    }
    assert_eq!(app.count("tenants").await, tenants_before, "a refused create leaves no tenant behind");
    assert_eq!(app.count("users").await, users_before);
}

#[tokio::test]
async fn operators_update_users_but_not_their_own_standing() {
    let app = TestApp::new().await;
    let (ann, _) = user_with_key(&app, app.tenant, "ann@acme.test", Role::User, &[]).await;
    let path = format!("/v1/admin/users/{ann}");
    let (status, _, body) =
        send(&app, "PATCH", &app.token, &path, Some(json!({"role": "billing-admin", "displayName": "Ann B."}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["data"]["role"].as_str(), body["data"]["displayName"].as_str()),
        (Some("billing-admin"), Some("Ann B."))
    );
    let (_, _, body) = send(&app, "PATCH", &app.token, &path, Some(json!({"displayName": null}))).await;
    assert_eq!(body["data"]["displayName"], Value::Null);
    assert_eq!(body["data"]["role"], "billing-admin", "an absent field is left as it is");

    let (status, _, body) = send(&app, "PATCH", &app.token, &path, Some(json!({}))).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = send(&app, "PATCH", &app.token, &path, Some(json!({"role": "owner"}))).await;
    assert_eq!((status.as_u16(), fields(&body)), (400, vec![Some("role".into())]), "{body}");

    let me: uuid::Uuid =
        sqlx::query_scalar("select id from users where email = 'ops@acme.test'").fetch_one(app.pool()).await.unwrap();
    let (status, _, body) =
        send(&app, "PATCH", &app.token, &format!("/v1/admin/users/{me}"), Some(json!({"role": "user"}))).await;
    assert_eq!(status, 409, "{body}");
    assert_error(&body, "CONFLICT");
    let (status, _, _) = send(&app, "POST", &app.token, &format!("/v1/admin/users/{me}/deactivate"), None).await;
    assert_eq!(status, 409);
    let (status, _, body) =
        send(&app, "PATCH", &app.token, &format!("/v1/admin/users/{me}"), Some(json!({"displayName": "Ops"}))).await;
    assert_eq!(status, 200, "a name is not standing: {body}");
}

#[tokio::test]
async fn a_deactivated_users_keys_stop_at_once_and_come_back_on_reactivation() {
    let app = TestApp::new().await;
    let (globex, _) = new_tenant(app.pool(), ROOMY).await;
    let (bob, bobs_key) = user_with_key(&app, globex, "bob@globex.test", Role::User, &[]).await;
    assert_eq!(app.get_as(&bobs_key, "/v1/vms").await.0, 200);

    let (status, _, body) = send(&app, "POST", &app.token, &format!("/v1/admin/users/{bob}/deactivate"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["active"], false);
    let (status, _, body) = app.get_as(&bobs_key, "/v1/vms").await;
    assert_eq!(status, 401, "{body}");
    assert_error(&body, "UNAUTHENTICATED");

    let (status, _, body) = send(&app, "POST", &app.token, &format!("/v1/admin/users/{bob}/reactivate"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["active"], true);
    assert_eq!(app.get_as(&bobs_key, "/v1/vms").await.0, 200);

    let (status, _, _) =
        send(&app, "POST", &app.token, &format!("/v1/admin/users/{}/deactivate", UserId::new()), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn only_operators_with_the_admin_scope_reach_these_routes() {
    let app = TestApp::new().await;
    let (ann, user) = user_with_key(&app, app.tenant, "ann@acme.test", Role::User, &[]).await;
    let (_, billing) = user_with_key(&app, app.tenant, "bill@acme.test", Role::BillingAdmin, &[]).await;
    let (_, admin_rw) = user_with_key(&app, app.tenant, "root@acme.test", Role::Admin, &["read", "write"]).await;
    for token in [&user, &billing, &admin_rw] {
        for (method, path, body) in [
            ("GET", "/v1/admin/users".to_owned(), None),
            ("POST", format!("/v1/admin/users/{ann}/deactivate"), None),
            ("PATCH", format!("/v1/admin/users/{ann}"), Some(json!({"role": "admin"}))),
            ("GET", "/v1/admin/plans".to_owned(), None),
        ] {
            let (status, _, answer) = send(&app, method, token, &path, body).await;
            assert_eq!(status, 403, "{method} {path}: {answer}");
            assert_error(&answer, "FORBIDDEN");
        }
    }
    let row: (String, bool) = sqlx::query_as("select role, active from users where id = $1")
        .bind(ann.as_uuid())
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(row, ("user".to_owned(), true));
}

#[tokio::test]
async fn a_plan_below_current_usage_is_refused_unless_forced() {
    let app = TestApp::new().await;
    for name in ["web-1", "web-2"] {
        assert_eq!(app.create_vm(&vm_body(name), &[]).await.0, 202);
    }
    let (status, _, listed) = app.get("/v1/admin/plans").await;
    assert_eq!(status, 200, "{listed}");
    assert!(listed["data"][0]["limits"]["maxInstances"].is_number(), "{listed}");
    assert!(listed["data"][0]["prices"]["currency"].is_string(), "{listed}");

    let small = new_plan(&app, PlanLimits { max_instances: 1, max_vcpus: 2, ..ROOMY }).await;
    let path = format!("/v1/admin/tenants/{}/plan", app.tenant);
    let (status, _, body) = send(&app, "PUT", &app.token, &path, Some(json!({"planId": small}))).await;
    assert_eq!(status, 409, "{body}");
    assert_error(&body, "CONFLICT");
    let over = &body["error"]["details"]["overLimits"];
    assert_eq!(over[0], json!({"resource": "instances", "limit": 1, "used": 2}), "{body}");
    assert_eq!(over[1], json!({"resource": "vcpus", "limit": 2, "used": 4}), "{body}");
    let before = tenants::get(app.pool(), app.tenant).await.unwrap().plan_id;
    assert_ne!(before.to_string(), small, "refused: the plan is unchanged");

    let (status, _, body) =
        send(&app, "PUT", &app.token, &format!("{path}?force=true"), Some(json!({"planId": small}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["plan"]["id"], small.as_str());
    assert_eq!(body["data"]["overLimits"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"]["used"]["instances"], 2);
    assert_eq!(tenants::get(app.pool(), app.tenant).await.unwrap().plan_id.to_string(), small);
    // Over its limits now, the tenant cannot create more.
    assert_eq!(app.create_vm(&vm_body("web-3"), &[]).await.0, 422);

    let roomy = new_plan(&app, ROOMY).await;
    let (status, _, body) = send(&app, "PUT", &app.token, &path, Some(json!({"planId": roomy}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["overLimits"], json!([]));

    let (status, _, body) = send(&app, "PUT", &app.token, &path, Some(json!({"planId": TenantId::new()}))).await;
    assert_eq!((status.as_u16(), fields(&body)), (400, vec![Some("planId".into())]), "{body}");
    let (status, _, body) = send(
        &app,
        "PUT",
        &app.token,
        &format!("/v1/admin/tenants/{}/plan", TenantId::new()),
        Some(json!({"planId": roomy})),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, _, _) =
        send(&app, "PUT", &app.token, &format!("{path}?force=perhaps"), Some(json!({"planId": roomy}))).await;
    assert_eq!(status, 400);
}

async fn new_plan(app: &TestApp, limits: PlanLimits) -> String {
    let plan = plans::create(
        app.pool(),
        &plans::NewPlan {
            name: format!("plan-{}", uuid::Uuid::new_v4().simple()),
            limits,
            prices: plans::get(app.pool(), tenants::get(app.pool(), app.tenant).await.unwrap().plan_id)
                .await
                .unwrap()
                .prices,
        },
    )
    .await
    .unwrap();
    plan.id.to_string()
}

#[tokio::test]
async fn an_admin_acts_as_a_user_with_the_impersonation_header() {
    let app = TestApp::new().await;
    let (_, globex_admin_key) = new_tenant(app.pool(), ROOMY).await;
    let globex = tenant_of_token(&app, &globex_admin_key).await;
    let (bob, bobs_key) = user_with_key(&app, globex, "bob@globex.test", Role::User, &[]).await;
    let (status, _, created) =
        split(app.http.post(app.url("/v1/vms")).bearer_auth(&bobs_key).json(&vm_body("bobs-vm")).send().await.unwrap())
            .await;
    assert_eq!(status, 202, "{created}");
    let admin: uuid::Uuid = sqlx::query_scalar("select id from users where tenant_id = $1 and email = 'ops@acme.test'")
        .bind(app.tenant.as_uuid())
        .fetch_one(app.pool())
        .await
        .unwrap();

    let as_bob = |method: &str, path: &str| {
        app.http
            .request(method.parse().unwrap(), app.url(path))
            .bearer_auth(&app.token)
            .header("nimbus-impersonate", bob.to_string())
    };
    // The admin sees Bob's tenant, and the answer says who is behind it.
    let r = as_bob("GET", "/v1/vms").send().await.unwrap();
    let (status, headers, body) = split(r).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["nimbus-impersonated-by"], admin.to_string().as_str());
    assert_eq!(body["data"][0]["name"], "bobs-vm");
    // Errors carry the header too.
    let (status, headers, _) = split(as_bob("GET", "/v1/vms/not-a-vm").send().await.unwrap()).await;
    assert_eq!(status, 404);
    assert!(headers.contains_key("nimbus-impersonated-by"));
    // Without the header, the admin is themselves again.
    let (_, headers, body) = app.get("/v1/vms").await;
    assert!(!headers.contains_key("nimbus-impersonated-by"));
    assert_eq!(body["data"], json!([]));

    // The admin routes are closed to an impersonated request, even when the target is an admin.
    let (status, _, body) = split(as_bob("GET", "/v1/admin/users").send().await.unwrap()).await;
    assert_eq!(status, 403, "{body}");
    assert_error(&body, "FORBIDDEN");
    let globex_admin: uuid::Uuid = sqlx::query_scalar("select id from users where tenant_id = $1 and role = 'admin'")
        .bind(globex.as_uuid())
        .fetch_one(app.pool())
        .await
        .unwrap();
    let r = app
        .http
        .get(app.url("/v1/admin/jobs"))
        .bearer_auth(&app.token)
        .header("nimbus-impersonate", globex_admin.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // No keys are minted in the user's name.
    let (status, _, body) =
        split(as_bob("POST", "/v1/auth/apikeys").json(&json!({"name": "x", "scopes": ["read"]})).send().await.unwrap())
            .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(app.count("api_keys").await, 3);

    // Who may impersonate whom.
    let impersonate = |token: String, target: String| {
        let app = &app;
        async move {
            split(
                app.http
                    .get(app.url("/v1/vms"))
                    .bearer_auth(token)
                    .header("nimbus-impersonate", target)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let (status, _, body) = impersonate(bobs_key.clone(), admin.to_string()).await;
    assert_eq!(status, 403, "a user cannot impersonate: {body}");
    let (status, _, body) = impersonate(app.token.clone(), UserId::new().to_string()).await;
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = impersonate(app.token.clone(), "bob".into()).await;
    assert_eq!((status.as_u16(), fields(&body)), (400, vec![Some("Nimbus-Impersonate".into())]));
    let (status, _, _) = impersonate(app.token.clone(), admin.to_string()).await;
    assert_eq!(status, 400, "not oneself");
    let r = app.http.get(app.url("/v1/vms")).header("nimbus-impersonate", bob.to_string()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    users::set_active(app.pool(), globex, bob, false).await.unwrap();
    let (status, _, body) = impersonate(app.token.clone(), bob.to_string()).await;
    assert_eq!(status, 403, "a deactivated user cannot be impersonated: {body}");
}

/// Browser sessions keep the impersonation in the session (real provider, scripted sign-in).
#[tokio::test]
async fn an_admin_session_starts_and_stops_impersonating() {
    use crate::oidc::{app, me, sign_in};
    let app = app().await;
    let alice = sign_in(&app, "alice@acme.test", "alice-pass").await;
    let (_, alice_me) = me(&app, &alice).await;
    let alice_id = alice_me["data"]["user"]["id"].as_str().unwrap().to_owned();
    let admin = sign_in(&app, "admin@nimbus.test", "admin-pass").await;
    let (_, admin_me) = me(&app, &admin).await;
    let admin_id = admin_me["data"]["user"]["id"].as_str().unwrap().to_owned();
    let csrf = admin_me["data"]["csrfToken"].as_str().unwrap().to_owned();
    let with_csrf = |r: reqwest::RequestBuilder| r.header("x-csrf-token", &csrf).header("origin", &app.base);

    let start = format!("/v1/admin/users/{alice_id}/impersonate");
    let (status, _, body) = split(with_csrf(admin.http.post(app.url(&start))).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["impersonating"]["email"], "alice@acme.test");

    // The session now acts as Alice, says so on every answer, and cannot reach admin routes.
    let (status, headers, body) = split(admin.http.get(app.url("/v1/me")).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["user"]["id"], alice_id.as_str());
    assert_eq!(body["data"]["impersonator"]["id"], admin_id.as_str());
    assert_eq!(headers["nimbus-impersonated-by"], admin_id.as_str());
    let (status, _, body) = split(admin.http.get(app.url("/v1/admin/users")).send().await.unwrap()).await;
    assert_eq!(status, 403, "{body}");
    // Alice's own session is untouched.
    let (_, body) = me(&app, &alice).await;
    assert_eq!(body["data"]["impersonator"], Value::Null);

    // The way back is open to the impersonated session.
    let r = with_csrf(admin.http.delete(app.url("/v1/admin/impersonation"))).send().await.unwrap();
    let (status, headers, body) = split(r).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["impersonating"], Value::Null);
    assert!(headers.contains_key("nimbus-impersonated-by"), "the request that ends it was still impersonated");
    let (status, headers, body) = split(admin.http.get(app.url("/v1/me")).send().await.unwrap()).await;
    assert_eq!((status.as_u16(), body["data"]["user"]["id"].as_str()), (200, Some(admin_id.as_str())));
    assert!(!headers.contains_key("nimbus-impersonated-by"));
    assert_eq!(split(admin.http.get(app.url("/v1/admin/users")).send().await.unwrap()).await.0, 200);

    // A user's session cannot start one.
    let (_, body) = me(&app, &alice).await;
    let alice_csrf = body["data"]["csrfToken"].as_str().unwrap().to_owned();
    let r = alice
        .http
        .post(app.url(&format!("/v1/admin/users/{admin_id}/impersonate")))
        .header("x-csrf-token", alice_csrf)
        .header("origin", &app.base)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Bearer callers are pointed at the header.
    let (status, _, body) = send(&app, "POST", &app.token, &start, None).await;
    assert_eq!((status.as_u16(), fields(&body)), (400, vec![Some("Authorization".into())]), "{body}");
}
