//! The HTTP layer against PVE's behaviour: envelope and headers, reason phrases, 400/401/403/501
//! texts, body rules, formats, ticket and CSRF login.

mod common;

use std::time::{Duration, Instant};

use common::{Api, raw_http};
use pve_sim::SimConfig;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn success_envelope_and_headers() {
    let api = Api::start().await;
    let r = api.get("/version").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json;charset=UTF-8");
    assert_eq!(r.headers["server"], "pve-api-daemon/3.0");
    assert_eq!(r.data()["release"], "8.4");
    assert_eq!(r.body.as_object().unwrap().len(), 1, "only data: {}", r.text);
    let r = api.get("/cluster/nextid").await;
    assert_eq!(r.data(), &json!("100"), "nextid is a string");
}

#[tokio::test]
async fn reason_phrase_carries_the_message() {
    let api = Api::with(SimConfig { tls: false, ..SimConfig::for_tests() }).await;
    let req = format!(
        "GET /api2/json/nodes/pve1/storage/nosuch/status HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        api.auth
    );
    let (line, rest) = raw_http(api.sim.addr(), &req).await;
    assert_eq!(line, "HTTP/1.1 500 storage 'nosuch' does not exist");
    assert!(rest.contains(r#"{"data":null,"message":"storage 'nosuch' does not exist\n"}"#), "{rest}");

    let req = format!(
        "GET /api2/json/cluster/nextid?vmid=9000 HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        api.auth
    );
    let (line, rest) = raw_http(api.sim.addr(), &req).await;
    assert_eq!(line, "HTTP/1.1 400 Parameter verification failed.");
    assert!(rest.contains(r#""errors":{"vmid":"VM 9000 already exists"}"#), "{rest}");

    let (line, _) =
        raw_http(api.sim.addr(), "GET /api2/json/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(line, "HTTP/1.1 401 No ticket");
}

#[tokio::test]
async fn authentication_failures() {
    let api = Api::start().await;
    let r = api.req_as(Method::GET, "/version", &[], None).await;
    assert_eq!((r.status, r.text.as_str()), (401, ""));
    for bad in ["PVEAPIToken=root@pam!nimbus=wrong", "PVEAPIToken=root@pam!other=x", "PVEAPIToken=garbage", "Bearer x"]
    {
        let r = api.req_as(Method::GET, "/version", &[], Some(bad)).await;
        assert_eq!(r.status, 401, "{bad}");
    }
    // The token may be URL-escaped and separated by a space, like PVE's extraction regex allows.
    let escaped = api.auth.replace("PVEAPIToken=", "PVEAPIToken ").replace('@', "%40");
    assert_eq!(api.req_as(Method::GET, "/version", &[], Some(&escaped)).await.status, 200);
    // 401 before 501: unknown paths need authentication first.
    assert_eq!(api.req_as(Method::GET, "/nosuch", &[], None).await.status, 401);
}

#[tokio::test]
async fn failed_logins_are_delayed() {
    let api = Api::with(SimConfig { auth_failure_delay: Duration::from_millis(300), ..SimConfig::for_tests() }).await;
    let t = Instant::now();
    assert_eq!(api.req_as(Method::GET, "/version", &[], Some("PVEAPIToken=root@pam!nimbus=x")).await.status, 401);
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(api.get("/version").await.status, 200);
    assert!(t.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn not_implemented_cases() {
    let api = Api::start().await;
    let r = api.get("/nodes/pve1/nosuch").await;
    assert_eq!(r.status, 501);
    assert_eq!(r.message(), "Method 'GET /nodes/pve1/nosuch' not implemented");
    let r = api.req(Method::PUT, "/version", &[]).await;
    assert_eq!((r.status, r.message()), (501, "Method 'PUT /version' not implemented"));
    let r = api.http.head(format!("{}/version", api.base)).header("Authorization", &api.auth).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 501);
    let r = api
        .http
        .delete(format!("{}/pools", api.base))
        .header("Authorization", &api.auth)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("poolid=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 501);
    assert_eq!(r.text().await.unwrap(), "Unexpected content for method 'DELETE'");
    let r = api
        .http
        .get(format!("{}/api2/xml/version", api.sim.base_url()))
        .header("Authorization", &api.auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 501);
    let r =
        api.http.get(format!("{}/api2/", api.sim.base_url())).header("Authorization", &api.auth).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 501);
    assert_eq!(r.text().await.unwrap(), "no such uri");
}

#[tokio::test]
async fn parameter_verification_texts() {
    let api = Api::start().await;
    let r = api.get_q("/cluster/nextid", &[("vmid", "abc")]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.message(), "Parameter verification failed.\n");
    assert_eq!(r.error("vmid"), "type check ('integer') failed - got 'abc'");
    let r = api.get_q("/cluster/nextid", &[("vmid", "99")]).await;
    assert_eq!(r.error("vmid"), "invalid format - value does not look like a valid VM ID\n");
    let r = api.get_q("/cluster/nextid", &[("bogus", "1")]).await;
    assert_eq!(
        r.error("bogus"),
        "property is not defined in schema and the schema does not allow additional properties"
    );
    let r = api.get_q("/cluster/resources", &[("type", "vms")]).await;
    assert_eq!(r.error("type"), "value 'vms' does not have a value in the enumeration 'vm, storage, node, sdn'");
    let r = api.get("/nodes/pve1/rrddata").await;
    assert_eq!(r.error("timeframe"), "property is missing and it is not optional");
    let r = api.get_q("/nodes/pve1/storage", &[("enabled", "true")]).await;
    assert_eq!(r.error("enabled"), "type check ('boolean') failed - got 'true'");
    let r = api.get_q("/nodes/pve1/tasks", &[("limit", "-1")]).await;
    assert_eq!(r.error("limit"), "value must have a minimum value of 0");
    // A body parameter conflicting with the path.
    let r = api.post("/nodes/pve1/storage/local/content", &[("node", "pve2")]).await;
    assert_eq!(r.error("node"), "duplicate parameter (already defined in URI) with conflicting values!");
    // JSON bodies take JSON booleans.
    let r = api
        .http
        .post(format!("{}/pools", api.base))
        .header("Authorization", &api.auth)
        .json(&json!({"poolid": "p1", "comment": "c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = api
        .http
        .put(format!("{}/pools", api.base))
        .header("Authorization", &api.auth)
        .json(&json!({"poolid": "p1", "delete": "true"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = api
        .http
        .put(format!("{}/pools", api.base))
        .header("Authorization", &api.auth)
        .json(&json!({"poolid": "p1", "delete": true, "vms": "9000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn extjs_format_answers_200_with_success_flag() {
    let api = Api::start().await;
    let r = api
        .http
        .get(format!("{}/api2/extjs/cluster/nextid?vmid=9000", api.sim.base_url()))
        .header("Authorization", &api.auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["success"], 0);
    assert_eq!(body["status"], 400);
    assert_eq!(body["errors"]["vmid"], "VM 9000 already exists");
}

#[tokio::test]
async fn tickets_cookies_and_csrf() {
    let api = Api::start().await;
    // Tokens may not log in (allowtoken 0).
    let r = api.post("/access/ticket", &[("username", "root@pam"), ("password", "pve-sim")]).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.message(),
        "Permission check failed (URI '/access/ticket' not available with API token, need proper ticket.)\n"
    );
    let r = api.req_as(Method::POST, "/access/ticket", &[("username", "root@pam"), ("password", "nope")], None).await;
    assert_eq!((r.status, r.message()), (401, "authentication failure\n"));
    let r = api
        .req_as(
            Method::POST,
            "/access/ticket",
            &[("username", "root"), ("realm", "pam"), ("password", "pve-sim")],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ticket = r.data()["ticket"].as_str().unwrap().to_string();
    let csrf = r.data()["CSRFPreventionToken"].as_str().unwrap().to_string();
    assert!(ticket.starts_with("PVE:root@pam:") && ticket.contains("::"), "{ticket}");
    assert_eq!(r.data()["username"], "root@pam");
    let cookie = format!("PVEAuthCookie={}", common::enc(&ticket));
    let r = api.http.get(format!("{}/version", api.base)).header("Cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Non-GET with a cookie needs the CSRF token.
    let r = api
        .http
        .post(format!("{}/pools", api.base))
        .header("Cookie", &cookie)
        .form(&[("poolid", "x1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = api
        .http
        .post(format!("{}/pools", api.base))
        .header("Cookie", &cookie)
        .header("CSRFPreventionToken", &csrf)
        .form(&[("poolid", "x1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // A ticket renews itself as password.
    let r = api.req_as(Method::POST, "/access/ticket", &[("username", "root@pam"), ("password", &ticket)], None).await;
    assert_eq!(r.status, 200);
    // Tasks started with a ticket carry the plain user.
    let r = api
        .http
        .post(format!("{}/nodes/pve1/vzdump", api.base))
        .header("Cookie", &cookie)
        .header("CSRFPreventionToken", &csrf)
        .form(&[("vmid", "9000")])
        .send()
        .await
        .unwrap();
    let upid = r.json::<serde_json::Value>().await.unwrap()["data"].as_str().unwrap().to_string();
    assert!(upid.ends_with(":vzdump:9000:root@pam:"), "{upid}");
}

#[tokio::test]
async fn api_tokens_can_be_managed_and_used() {
    let api = Api::start().await;
    let r = api.post("/access/users/root@pam/token/ci", &[("comment", "for ci"), ("privsep", "0")]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["full-tokenid"], "root@pam!ci");
    let secret = r.data()["value"].as_str().unwrap().to_string();
    let header = format!("PVEAPIToken=root@pam!ci={secret}");
    assert_eq!(api.req_as(Method::GET, "/version", &[], Some(&header)).await.status, 200);
    let r = api.post("/access/users/root@pam/token/ci", &[]).await;
    assert_eq!((r.status, r.message()), (500, "Token already exists.\n"));
    let r = api.get("/access/users/root@pam/token/ci").await;
    assert_eq!(r.data()["comment"], "for ci");
    assert_eq!(api.delete("/access/users/root@pam/token/ci", &[]).await.status, 200);
    assert_eq!(api.req_as(Method::GET, "/version", &[], Some(&header)).await.status, 401);
    let r = api.get("/access/users/root@pam/token/ci").await;
    assert_eq!(r.message(), "no such token 'ci' for user 'root@pam'\n");
}
