//! `POST /v1/vms` and the VM reads: the 202 handle, the rows it writes, the push to Redis and
//! its absence, validation, templates and nodes, quota, idempotency, tenant isolation.

use nimbus_domain::PlanLimits;
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::support::{Options, ROOMY, TEMPLATE, TestApp, assert_error, fields, new_tenant, vm_body};

#[tokio::test]
async fn create_answers_202_with_the_job_handle_and_location() {
    let app = TestApp::new().await;
    let (status, headers, body) = app.create_vm(&vm_body("web-1"), &[("x-request-id", "req-abc-1")]).await;
    assert_eq!(status, 202, "{body}");
    let job = &body["data"];
    let id = job["id"].as_str().unwrap();
    assert_eq!(headers["location"], format!("/v1/jobs/{id}").as_str());
    // The request id is the server's; the client's own is echoed as its correlation id.
    let request_id = headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&request_id).is_ok(), "{request_id}");
    assert_eq!(headers["x-correlation-id"], "req-abc-1");
    assert_eq!(body["meta"]["requestId"], request_id.as_str());
    assert_eq!(job["kind"], "provision");
    assert_eq!(job["status"], "queued");
    assert_eq!(job["progress"], 0);
    assert_eq!(job["attempts"], 0);
    assert_eq!(job["error"], Value::Null);
    assert_eq!(job["resources"][0]["type"], "instance");
    assert_eq!(job["links"], json!({"self": format!("/v1/jobs/{id}"), "events": format!("/v1/jobs/{id}/events")}));

    // Ledger: the job carries the request id and the placement; the instance is provisioning
    // on a node that holds the template.
    let (job_request_id, payload): (Option<String>, Value) =
        sqlx::query_as("select request_id, payload from jobs where id = $1::uuid")
            .bind(id)
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(job_request_id.as_deref(), Some(request_id.as_str()));
    assert_eq!(payload["template"], TEMPLATE);
    let (node, status, tenant): (Option<String>, String, uuid::Uuid) =
        sqlx::query_as("select node, status, tenant_id from instances").fetch_one(app.pool()).await.unwrap();
    assert_eq!(status, "provisioning");
    assert_eq!(tenant, app.tenant.as_uuid());
    assert_eq!(node.as_deref(), payload["node"].as_str());
    assert!(node.unwrap().starts_with("pve"));
    let vmid = payload["templateVmid"].as_u64().unwrap();
    assert!((9000..9100).contains(&vmid), "{payload}");

    // With Redis up the job is pushed at once, and no outbox row is owed; the stream holds it.
    assert_eq!(app.count("outbox").await, 0);
    let mut conn = app.redis.connection().await;
    let stream = app.redis.key("nimbus:q:{provision}");
    let entries: redis::streams::StreamRangeReply = conn.xrange_all(&stream).await.unwrap();
    assert_eq!(entries.ids.len(), 1);
    let job_field: String = entries.ids[0].get("j").unwrap();
    assert_eq!(job_field, id);

    // Readable through the API.
    let (status, _, shown) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(shown["data"]["id"], id);
    let vm_id = job["resources"][0]["id"].as_str().unwrap();
    let (status, _, vm) = app.get(&format!("/v1/vms/{vm_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(vm["data"]["name"], "web-1");
    assert_eq!(vm["data"]["type"], "qemu");
    assert_eq!(vm["data"]["memory"], 2048);
    assert_eq!(vm["data"]["status"], "provisioning");
}

#[tokio::test]
async fn with_redis_down_the_post_still_answers_202_and_owes_the_job_an_outbox_row() {
    let app = TestApp::with(ROOMY, Options { redis_down: true, ..Options::default() }).await;
    let started = std::time::Instant::now();
    let (status, _, body) = app.create_vm(&vm_body("web-1"), &[]).await;
    assert_eq!(status, 202, "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "the push is bounded by its timeout");
    let unpushed: i64 =
        sqlx::query_scalar("select count(*) from outbox where pushed_at is null").fetch_one(app.pool()).await.unwrap();
    assert_eq!(unpushed, 1, "the relay owns the dispatch now");
    assert_eq!(app.count("jobs").await, 1);
}

#[tokio::test]
async fn malformed_json_unknown_fields_and_wrong_types_are_400_with_details() {
    let app = TestApp::new().await;

    let (status, _, body) = app.post_raw(r#"{"name": "web-1", "#).await;
    assert_eq!(status, 400);
    assert_error(&body, "VALIDATION_FAILED");
    assert_eq!(fields(&body), [None]);

    let mut unknown = vm_body("web-1");
    unknown["colour"] = json!("red");
    let (status, _, body) = app.create_vm(&unknown, &[]).await;
    assert_eq!(status, 400);
    assert_error(&body, "VALIDATION_FAILED");
    assert_eq!(fields(&body), [Some("colour".to_owned())]);

    let mut mistyped = vm_body("web-1");
    mistyped["cores"] = json!("two");
    let (status, _, body) = app.create_vm(&mistyped, &[]).await;
    assert_eq!(status, 400);
    assert_eq!(fields(&body), [Some("cores".to_owned())]);

    let mut bad_kind = vm_body("web-1");
    bad_kind["type"] = json!("docker");
    let (status, _, body) = app.create_vm(&bad_kind, &[]).await;
    assert_eq!(status, 400);
    assert_eq!(fields(&body), [Some("type".to_owned())]);

    let mut missing = vm_body("web-1");
    missing.as_object_mut().unwrap().remove("template");
    let (status, _, body) = app.create_vm(&missing, &[]).await;
    assert_eq!(status, 400);
    assert_eq!(fields(&body), [Some("template".to_owned())]);

    let r =
        app.http.post(app.url("/v1/vms")).bearer_auth(&app.token).body(vm_body("x").to_string()).send().await.unwrap();
    let (status, _, body) = crate::support::split(r).await;
    assert_eq!(status, 400, "no Content-Type");
    assert_eq!(fields(&body), [Some("Content-Type".to_owned())]);

    assert_eq!(app.count("jobs").await, 0);
}

#[tokio::test]
async fn out_of_range_values_are_400_listing_every_field() {
    let app = TestApp::new().await;
    let body = json!({
        "name": "Not_A_Label",
        "type": "qemu",
        "template": TEMPLATE,
        "cores": 0,
        "memory": 64,
        "disk": 100000,
        "sshKeys": ["ssh-rsa not-base64!"],
    });
    let (status, _, body) = app.create_vm(&body, &[]).await;
    assert_eq!(status, 400);
    assert_error(&body, "VALIDATION_FAILED");
    let got: Vec<String> = fields(&body).into_iter().flatten().collect();
    assert_eq!(got, ["name", "cores", "memory", "disk", "sshKeys[0]"]);
    assert_eq!(app.count("instances").await, 0);
}

#[tokio::test]
async fn unknown_template_and_unknown_node_are_422() {
    let app = TestApp::new().await;
    let mut body = vm_body("web-1");
    body["template"] = json!("windows-95");
    let (status, _, err) = app.create_vm(&body, &[]).await;
    assert_eq!(status, 422);
    assert_error(&err, "UNKNOWN_TEMPLATE");
    assert_eq!(err["error"]["details"]["template"], "windows-95");

    // The qemu template exists, but not as a container.
    let mut body = vm_body("web-1");
    body["type"] = json!("lxc");
    let (status, _, err) = app.create_vm(&body, &[]).await;
    assert_eq!(status, 422);
    assert_error(&err, "UNKNOWN_TEMPLATE");

    let mut body = vm_body("web-1");
    body["node"] = json!("pve42");
    let (status, _, err) = app.create_vm(&body, &[]).await;
    assert_eq!(status, 422);
    assert_error(&err, "UNKNOWN_NODE");
    assert_eq!(err["error"]["details"]["node"], "pve42");

    let mut body = vm_body("web-1");
    body["node"] = json!("pve2");
    let (status, _, ok) = app.create_vm(&body, &[]).await;
    assert_eq!(status, 202, "{ok}");
    let node: Option<String> = sqlx::query_scalar("select node from instances").fetch_one(app.pool()).await.unwrap();
    assert_eq!(node.as_deref(), Some("pve2"));
    assert_eq!(app.count("jobs").await, 1);
}

#[tokio::test]
async fn over_quota_is_422_quota_exceeded_and_writes_nothing() {
    let limits = PlanLimits { max_instances: 5, max_vcpus: 3, max_memory_mib: 1 << 20, max_disk_gib: 1000 };
    let app = TestApp::with(limits, Options::default()).await;
    let (status, _, _) = app.create_vm(&vm_body("web-1"), &[]).await;
    assert_eq!(status, 202);
    let (status, _, err) = app.create_vm(&vm_body("web-2"), &[]).await;
    assert_eq!(status, 422);
    assert_error(&err, "QUOTA_EXCEEDED");
    assert_eq!(err["error"]["details"], json!({"resource": "vcpus", "limit": 3, "used": 2, "requested": 2}));
    assert_eq!(app.count("instances").await, 1);
    assert_eq!(app.count("jobs").await, 1);

    let (status, _, quota) = app.get("/v1/quota").await;
    assert_eq!(status, 200);
    assert_eq!(quota["data"]["limits"]["maxVcpus"], 3);
    assert_eq!(quota["data"]["used"]["vcpus"], 2);
    assert_eq!(quota["data"]["used"]["instances"], 1);
    assert_eq!(quota["data"]["remaining"]["vcpus"], 1);
    assert_eq!(quota["data"]["remaining"]["instances"], 4);
}

#[tokio::test]
async fn a_taken_name_is_409_name_taken() {
    let app = TestApp::new().await;
    assert_eq!(app.create_vm(&vm_body("web-1"), &[]).await.0, 202);
    let (status, _, err) = app.create_vm(&vm_body("web-1"), &[]).await;
    assert_eq!(status, 409);
    assert_error(&err, "NAME_TAKEN");
}

#[tokio::test]
async fn idempotent_replay_returns_the_same_job_and_another_body_is_422() {
    let app = TestApp::new().await;
    let key = [("idempotency-key", "create-web-1")];
    let (s1, h1, first) = app.create_vm(&vm_body("web-1"), &key).await;
    assert_eq!(s1, 202);
    // Same document, keys in another order: the same request.
    let reordered: Value = serde_json::from_str(&format!(
        r#"{{"sshKeys": ["{}"], "disk": 20, "memory": 2048, "cores": 2, "template": "{TEMPLATE}", "type": "qemu", "name": "web-1"}}"#,
        crate::support::SSH_KEY
    ))
    .unwrap();
    let (s2, h2, second) = app.create_vm(&reordered, &key).await;
    assert_eq!(s2, 202, "{second}");
    assert_eq!(second["data"]["id"], first["data"]["id"]);
    assert_eq!(h2["location"], h1["location"]);
    assert_eq!(h2["idempotent-replayed"], "true");
    assert_eq!(app.count("jobs").await, 1);
    assert_eq!(app.count("instances").await, 1);

    let (s3, _, err) = app.create_vm(&vm_body("web-2"), &key).await;
    assert_eq!(s3, 422);
    assert_error(&err, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.count("jobs").await, 1);

    // Another tenant's identical key is its own.
    let (_, other_token) = new_tenant(app.pool(), ROOMY).await;
    let r = app
        .http
        .post(app.url("/v1/vms"))
        .bearer_auth(&other_token)
        .header("idempotency-key", "create-web-1")
        .json(&vm_body("web-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(app.count("jobs").await, 2);
}

#[tokio::test]
async fn a_failed_request_releases_its_idempotency_key() {
    let app = TestApp::new().await;
    let key = [("idempotency-key", "k-1")];
    let mut body = vm_body("web-1");
    body["template"] = json!("missing");
    assert_eq!(app.create_vm(&body, &key).await.0, 422);
    // Fixed and resent with the same key: accepted.
    let (status, _, ok) = app.create_vm(&vm_body("web-1"), &key).await;
    assert_eq!(status, 202, "{ok}");
}

#[tokio::test]
async fn another_tenants_vm_and_job_answer_exactly_like_missing_ones() {
    let app = TestApp::new().await;
    let (_, _, created) = app.create_vm(&vm_body("web-1"), &[]).await;
    let job_id = created["data"]["id"].as_str().unwrap().to_owned();
    let vm_id = created["data"]["resources"][0]["id"].as_str().unwrap().to_owned();
    let (_, intruder) = new_tenant(app.pool(), ROOMY).await;

    for (path, missing) in [
        (format!("/v1/vms/{vm_id}"), format!("/v1/vms/{}", uuid::Uuid::now_v7())),
        (format!("/v1/jobs/{job_id}"), format!("/v1/jobs/{}", uuid::Uuid::now_v7())),
        (format!("/v1/jobs/{job_id}/events"), format!("/v1/jobs/{}/events", uuid::Uuid::now_v7())),
    ] {
        let (s_foreign, _, foreign) = app.get_as(&intruder, &path).await;
        let (s_missing, _, missing) = app.get_as(&intruder, &missing).await;
        assert_eq!(s_foreign, 404, "{path}: {foreign}");
        assert_eq!(s_missing, 404);
        assert_eq!(foreign["error"], missing["error"], "{path}");
        assert_error(&foreign, "NOT_FOUND");
    }
    // A malformed id is missing too.
    let (status, _, body) = app.get("/v1/vms/not-a-uuid").await;
    assert_eq!(status, 404);
    assert_error(&body, "NOT_FOUND");

    // Lists are scoped as well.
    let (_, _, list) = app.get_as(&intruder, "/v1/vms").await;
    assert_eq!(list["data"], json!([]));
    assert_eq!(list["pagination"]["total"], 0);
    let (_, _, list) = app.get_as(&intruder, "/v1/jobs").await;
    assert_eq!(list["pagination"]["total"], 0);
}

#[tokio::test]
async fn lists_are_paginated() {
    let app = TestApp::new().await;
    for i in 0..3 {
        assert_eq!(app.create_vm(&vm_body(&format!("web-{i}")), &[]).await.0, 202);
    }
    let (status, _, page) = app.get("/v1/vms?page=2&perPage=2").await;
    assert_eq!(status, 200);
    assert_eq!(page["pagination"], json!({"page": 2, "perPage": 2, "total": 3, "totalPages": 2}));
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    // Newest first: the last page holds the first one created.
    assert_eq!(page["data"][0]["name"], "web-0");

    let (_, _, jobs) = app.get("/v1/jobs?status=queued&perPage=100").await;
    assert_eq!(jobs["pagination"]["total"], 3);
    let (_, _, none) = app.get("/v1/jobs?status=succeeded").await;
    assert_eq!(none["pagination"]["total"], 0);

    let (status, _, err) = app.get("/v1/jobs?status=bogus").await;
    assert_eq!(status, 400);
    assert_error(&err, "VALIDATION_FAILED");
    let (status, _, err) = app.get("/v1/vms?perPage=1000").await;
    assert_eq!(status, 400);
    assert_eq!(fields(&err), [Some("perPage".to_owned())]);
}

#[tokio::test]
async fn templates_come_from_proxmox() {
    let app = TestApp::new().await;
    let (status, _, body) = app.get("/v1/templates").await;
    assert_eq!(status, 200, "{body}");
    let templates = body["data"].as_array().unwrap();
    let debian = templates.iter().find(|t| t["name"] == TEMPLATE).unwrap_or_else(|| panic!("{body}"));
    assert_eq!(debian["type"], "qemu");
    assert_eq!(debian["nodes"], json!(["pve1", "pve2", "pve3"]));
    assert_eq!(debian["minDisk"], 3);
    assert!(debian.get("vmid").is_none() && !debian.to_string().contains("9000"), "no Proxmox internals");
    assert_eq!(body["pagination"]["total"], templates.len());
}

#[tokio::test]
async fn proxmox_failing_is_503_and_offline_nodes_are_not_chosen() {
    let app = TestApp::new().await;
    app.sim.faults().set_node_down("pve1", true);
    app.sim.faults().set_node_down("pve3", true);
    let (status, _, body) = app.create_vm(&vm_body("web-1"), &[]).await;
    assert_eq!(status, 202, "{body}");
    let node: Option<String> = sqlx::query_scalar("select node from instances").fetch_one(app.pool()).await.unwrap();
    assert_eq!(node.as_deref(), Some("pve2"), "the only online node");
    let mut on_down = vm_body("web-2");
    on_down["node"] = json!("pve1");
    let (status, _, err) = app.create_vm(&on_down, &[]).await;
    assert_eq!(status, 503);
    assert_error(&err, "PROXMOX_UNAVAILABLE");

    // A fresh API (empty inventory cache) in front of a failing Proxmox.
    let app = TestApp::new().await;
    app.sim.faults().add_error("GET /api2/json/cluster/resources", 1.0, 500, "internal error");
    let (status, _, err) = app.create_vm(&vm_body("web-1"), &[]).await;
    assert_eq!(status, 503);
    assert_error(&err, "PROXMOX_UNAVAILABLE");
    assert!(!err.to_string().contains("cluster/resources"), "no internals: {err}");
    let (status, _, err) = app.get("/v1/templates").await;
    assert_eq!(status, 503);
    assert_error(&err, "PROXMOX_UNAVAILABLE");
    assert_eq!(app.count("jobs").await, 0);
}

#[tokio::test]
async fn a_duplicate_while_the_first_is_in_flight_is_409() {
    let app = TestApp::new().await;
    let body = vm_body("web-1");
    // The first request holds the key (as if it were still between `begin` and its commit).
    let hash = nimbus_db::idempotency::request_hash(
        "POST",
        "/v1/vms",
        nimbus_api::routes::vms::canonical_json(&body).as_bytes(),
    );
    let begun =
        nimbus_db::idempotency::begin(app.pool(), app.tenant, "k-busy", &hash, std::time::Duration::from_secs(60))
            .await
            .unwrap();
    assert_eq!(begun, nimbus_db::idempotency::Begin::Started);
    let (status, _, err) = app.create_vm(&body, &[("idempotency-key", "k-busy")]).await;
    assert_eq!(status, 409);
    assert_error(&err, "IDEMPOTENCY_KEY_IN_PROGRESS");
    assert_eq!(app.count("jobs").await, 0);
}

#[tokio::test]
async fn lxc_templates_are_the_nodes_archives_and_an_lxc_request_is_accepted() {
    let app = TestApp::new().await;
    let (status, _, body) = app.get("/v1/templates?perPage=100").await;
    assert_eq!(status, 200, "{body}");
    let templates = body["data"].as_array().unwrap();
    let debian = templates
        .iter()
        .find(|t| t["name"] == "debian-12-standard" && t["type"] == "lxc")
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(debian["nodes"], json!(["pve1", "pve2", "pve3"]));
    assert_eq!(debian["minDisk"], Value::Null);
    assert!(!debian.to_string().contains("vztmpl"), "no Proxmox internals: {debian}");
    assert!(templates.iter().any(|t| t["name"] == "ubuntu-24.04-standard" && t["type"] == "lxc"), "{body}");

    let mut request = vm_body("ct-1");
    request["type"] = json!("lxc");
    request["template"] = json!("debian-12-standard");
    request["node"] = json!("pve2");
    let (status, _, body) = app.create_vm(&request, &[]).await;
    assert_eq!(status, 202, "{body}");
    let payload: Value = sqlx::query_scalar("select payload from jobs").fetch_one(app.pool()).await.unwrap();
    assert_eq!(payload["type"], "lxc");
    assert_eq!(payload["template"], "debian-12-standard");
    assert_eq!(payload["node"], "pve2");
    let kind: String = sqlx::query_scalar("select kind from instances").fetch_one(app.pool()).await.unwrap();
    assert_eq!(kind, "lxc");

    // A qemu template name is not an lxc template, and the reverse.
    let mut wrong = vm_body("ct-2");
    wrong["type"] = json!("lxc");
    let (status, _, err) = app.create_vm(&wrong, &[]).await;
    assert_eq!(status, 422, "{err}");
    assert_error(&err, "UNKNOWN_TEMPLATE");
    let mut wrong = vm_body("ct-3");
    wrong["template"] = json!("debian-12-standard");
    let (status, _, err) = app.create_vm(&wrong, &[]).await;
    assert_eq!(status, 422, "{err}");
    assert_error(&err, "UNKNOWN_TEMPLATE");
}

/// `count` creates sent at once (they share statements and pushes); the answers in order.
async fn create_at_once(app: &TestApp, names: &[String]) -> Vec<(reqwest::StatusCode, Value)> {
    let sends = names.iter().map(|name| async move {
        let (status, _, body) = app.create_vm(&vm_body(name), &[]).await;
        (status, body)
    });
    futures::future::join_all(sends).await
}

#[tokio::test]
async fn creates_sent_together_are_each_answered_as_if_sent_alone() {
    let app = TestApp::new().await;
    let mut names: Vec<String> = (0..30).map(|i| format!("vm-{i}")).collect();
    names.extend(["twice".to_owned(), "twice".to_owned()]);
    let answers = create_at_once(&app, &names).await;

    let accepted: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 202).map(|(_, b)| b).collect();
    let taken: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 409).map(|(_, b)| b).collect();
    assert_eq!((accepted.len(), taken.len()), (31, 1), "{answers:?}");
    assert_error(taken[0], "NAME_TAKEN");
    // Every accepted job is in the ledger under its own id and in Redis once; nothing is owed.
    let mut ids: Vec<String> = accepted.iter().map(|b| b["data"]["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 31);
    assert_eq!((app.count("instances").await, app.count("jobs").await, app.count("outbox").await), (31, 31, 0));
    let mut conn = app.redis.connection().await;
    let entries: redis::streams::StreamRangeReply =
        conn.xrange_all(app.redis.key("nimbus:q:{provision}")).await.unwrap();
    let mut pushed: Vec<String> = entries.ids.iter().map(|e| e.get::<String>("j").unwrap()).collect();
    pushed.sort();
    assert_eq!(pushed, ids);
}

#[tokio::test]
async fn creates_sent_together_never_overshoot_the_quota() {
    let app = TestApp::with(PlanLimits { max_instances: 5, ..ROOMY }, Options::default()).await;
    let names: Vec<String> = (0..20).map(|i| format!("vm-{i}")).collect();
    let answers = create_at_once(&app, &names).await;
    let accepted = answers.iter().filter(|(s, _)| *s == 202).count();
    assert_eq!(accepted, 5, "{answers:?}");
    for (status, body) in answers.iter().filter(|(s, _)| *s != 202) {
        assert_eq!(*status, 422, "{body}");
        assert_error(body, "QUOTA_EXCEEDED");
        assert_eq!(body["error"]["details"], json!({"resource": "instances", "limit": 5, "used": 5, "requested": 1}));
    }
    assert_eq!((app.count("instances").await, app.count("jobs").await), (5, 5));
    let (_, _, quota) = app.get("/v1/quota").await;
    assert_eq!(quota["data"]["used"]["instances"], 5);
}

#[tokio::test]
async fn a_tenant_at_its_limit_does_not_hold_back_the_creates_sent_with_its_own() {
    let app = TestApp::with(PlanLimits { max_instances: 2, ..ROOMY }, Options::default()).await;
    let (other, other_token) = new_tenant(app.pool(), ROOMY).await;
    let send = |token: String, name: String| {
        let (http, url) = (app.http.clone(), app.url("/v1/vms"));
        async move {
            let r = http.post(url).bearer_auth(token).json(&vm_body(&name)).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let sends = (0..12)
        .flat_map(|i| [send(app.token.clone(), format!("full-{i}")), send(other_token.clone(), format!("roomy-{i}"))]);
    let answers = futures::future::join_all(sends).await;
    let (full, roomy): (Vec<_>, Vec<_>) = answers.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    assert_eq!(full.iter().filter(|(_, (s, _))| *s == 202).count(), 2, "{full:?}");
    for (_, (status, body)) in full.iter().filter(|(_, (s, _))| *s != 202) {
        assert_eq!(*status, 422, "{body}");
        assert_error(body, "QUOTA_EXCEEDED");
    }
    assert!(roomy.iter().all(|(_, (s, _))| *s == 202), "{roomy:?}");
    let count = |tenant: nimbus_domain::TenantId| {
        let pool = app.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from instances where tenant_id = $1")
                .bind(tenant.as_uuid())
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!((count(app.tenant).await, count(other).await), (2, 12));
}
