//! Tenants never see infrastructure: Proxmox failures whose text names a storage host, its
//! address, a device path and an API path reach a tenant only as a code, our own message and the
//! request id (job views, the event stream, the instance, API error envelopes); operators see
//! Proxmox's text in `GET /v1/admin/jobs`. A real worker provisions against pve-sim with faults
//! injected.

use std::time::Duration;

use nimbus_db::api_keys;
use nimbus_db::users::{self, NewUser};
use nimbus_domain::Role;
use serde_json::Value;

use crate::support::{TestApp, Worker, split, vm_body};

/// What Proxmox says when a clone fails on a real cluster's shared storage.
const LEAKY: &str = "clone failed: storage-7.dc1.example.net (10.20.30.40): cannot open \
                     /dev/mapper/pve-vm--100--disk--0 (POST /api2/json/nodes/pve1/qemu/100/clone)";

/// Nothing a tenant sees may contain these: Proxmox's text, hosts, addresses, device and API paths.
const NEVER_SHOWN: [&str; 6] = [
    "clone failed",
    "10.20.30.40",
    "storage-7.dc1.example.net",
    "/dev/mapper/pve-vm--100--disk--0",
    "/api2/json",
    "/nodes/",
];

/// The client timeout of the worker's Proxmox calls.
const PVE_TIMEOUT: Duration = Duration::from_secs(1);

fn assert_clean(what: &str, text: &str) {
    for secret in NEVER_SHOWN {
        assert!(!text.contains(secret), "{what} shows the tenant {secret:?}: {text}");
    }
}

/// A key of a plain user of the app's tenant: the tenant's view, no operator rights.
async fn tenant_key(app: &TestApp) -> String {
    let user = users::create(
        app.pool(),
        app.tenant,
        &NewUser { email: "customer@acme.test".into(), display_name: None, role: Role::User },
    )
    .await
    .unwrap();
    api_keys::create(app.pool(), app.tenant, user.id, "customer", &[], None).await.unwrap().1
}

/// Everything a tenant can read about a failed create, with what operators read about it.
struct Seen {
    /// `GET /v1/jobs/{id}`'s data.
    job: Value,
    /// `GET /v1/admin/jobs`'s item for the job.
    admin: Value,
}

/// Creates a VM as a tenant with request id `rid`, follows its job's event stream to the end,
/// and checks that nothing the tenant can read about it names infrastructure.
async fn create_and_fail(app: &TestApp, rid: &str) -> Seen {
    let key = tenant_key(app).await;
    let r = app
        .http
        .post(app.url("/v1/vms"))
        .bearer_auth(&key)
        .header("x-request-id", rid)
        .json(&vm_body("leaky"))
        .send()
        .await
        .unwrap();
    let (status, headers, body) = split(r).await;
    assert_eq!(status, 202, "{body}");
    let job = body["data"]["id"].as_str().unwrap().to_owned();
    let instance = body["data"]["resources"][0]["id"].as_str().unwrap().to_owned();
    // The server's request id (the client's own is only echoed as its correlation id).
    assert_eq!(headers["x-correlation-id"], rid);
    let request_id = headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(body["data"]["requestId"], request_id.as_str(), "the handle names the request that started the job");

    // The stream ends with the final state; every event it sent is a tenant-visible field.
    let stream = app.http.get(app.url(&format!("/v1/jobs/{job}/events"))).bearer_auth(&key).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let events =
        tokio::time::timeout(Duration::from_secs(60), stream.text()).await.expect("the job ends within 60 s").unwrap();
    assert!(events.contains("event: end"), "{events}");
    assert!(events.contains("\"status\":\"failed\""), "{events}");
    assert_clean("the event stream", &events);

    let (status, _, shown) = app.get_as(&key, &format!("/v1/jobs/{job}")).await;
    assert_eq!(status, 200);
    assert_clean("GET /v1/jobs/{id}", &shown.to_string());
    let (_, _, list) = app.get_as(&key, "/v1/jobs").await;
    assert_clean("GET /v1/jobs", &list.to_string());
    let (status, _, vm) = app.get_as(&key, &format!("/v1/vms/{instance}")).await;
    assert_eq!((status.as_u16(), vm["data"]["status"].as_str()), (200, Some("failed")), "{vm}");
    assert_clean("GET /v1/vms/{id}", &vm.to_string());
    let (_, _, vms) = app.get_as(&key, "/v1/vms").await;
    assert_clean("GET /v1/vms", &vms.to_string());

    let job_view = shown["data"].clone();
    assert_eq!(job_view["status"], "failed");
    assert_eq!(job_view["requestId"], request_id.as_str(), "the failure names the request to quote");
    assert!(job_view.get("errorDetail").is_none(), "{job_view}");
    let error = &job_view["error"];
    assert!(error["code"].is_string() && error["message"].is_string(), "{error}");

    // The operators' view of the same job has Proxmox's own account, and it is theirs alone.
    let (status, _, denied) = app.get_as(&key, "/v1/admin/jobs?status=failed").await;
    assert_eq!(status, 403, "{denied}");
    assert_clean("GET /v1/admin/jobs as a tenant", &denied.to_string());
    let (status, _, admin) = app.get("/v1/admin/jobs?status=failed").await;
    assert_eq!(status, 200, "{admin}");
    let admin = admin["data"].as_array().unwrap().iter().find(|j| j["id"] == job.as_str()).expect("listed").clone();
    assert_eq!(admin["error"], *error, "operators see what the tenant sees, and more");
    assert_eq!(admin["requestId"], request_id.as_str());
    Seen { job: job_view, admin }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_clone_task_shows_the_tenant_our_words_and_operators_proxmoxs() {
    let app = TestApp::new().await;
    let worker = Worker::start(&app, PVE_TIMEOUT).await;
    app.sim.faults().fail_next_task("qmclone", LEAKY);

    let seen = create_and_fail(&app, "req-clone-task").await;
    let error = &seen.job["error"];
    assert_eq!(error["code"], "PROXMOX_REJECTED");
    assert_eq!(error["message"], "Proxmox could not clone the template");
    assert_eq!(error["retryable"], false);
    let detail = seen.admin["errorDetail"].as_str().expect("operators get the detail");
    for proxmox in ["clone template", "UPID:", "storage-7.dc1.example.net", "10.20.30.40", "/dev/mapper/pve-vm--100"] {
        assert!(detail.contains(proxmox), "{proxmox:?} missing from {detail}");
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_proxmox_call_shows_the_tenant_our_words_and_operators_proxmoxs() {
    let app = TestApp::new().await;
    let worker = Worker::start(&app, PVE_TIMEOUT).await;
    app.sim.faults().add_error("^POST .*/clone$", 1.0, 500, LEAKY);

    let seen = create_and_fail(&app, "req-clone-call").await;
    let error = &seen.job["error"];
    assert_eq!(error["code"], "PROXMOX_REJECTED");
    assert_eq!(error["message"], "Proxmox could not clone the template");
    let detail = seen.admin["errorDetail"].as_str().expect("operators get the detail");
    for proxmox in ["HTTP 500", "/nodes/", "/clone", "storage-7.dc1.example.net", "10.20.30.40", "/dev/mapper/"] {
        assert!(detail.contains(proxmox), "{proxmox:?} missing from {detail}");
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxmox_timeout_shows_the_tenant_neither_path_nor_node_api() {
    let app = TestApp::new().await;
    let worker = Worker::start(&app, PVE_TIMEOUT).await;
    // Far beyond the worker's client timeout: every attempt's clone times out.
    app.sim.faults().add_latency("^POST .*/clone$", Duration::from_secs(300));

    let seen = create_and_fail(&app, "req-clone-timeout").await;
    let error = &seen.job["error"];
    assert_eq!(error["code"], "ATTEMPTS_EXHAUSTED", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("Proxmox did not answer in time and could not clone the template"), "{message}");
    let detail = seen.admin["errorDetail"].as_str().expect("operators get the detail");
    for proxmox in ["POST /nodes/", "/clone", "timed out"] {
        assert!(detail.contains(proxmox), "{proxmox:?} missing from {detail}");
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_from_proxmox_carry_a_code_a_message_and_the_request_id_only() {
    let app = TestApp::new().await;
    app.sim.faults().add_error("^GET .*/cluster/resources", 1.0, 500, LEAKY);
    let key = tenant_key(&app).await;

    let create = app
        .http
        .post(app.url("/v1/vms"))
        .bearer_auth(&key)
        .header("x-request-id", "req-inventory")
        .json(&vm_body("never"))
        .send()
        .await
        .unwrap();
    let templates =
        app.http.get(app.url("/v1/templates")).bearer_auth(&key).header("x-request-id", "req-templates").send();
    for (r, rid) in [(create, "req-inventory"), (templates.await.unwrap(), "req-templates")] {
        let (status, headers, body) = split(r).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "PROXMOX_UNAVAILABLE");
        assert_eq!(headers["x-correlation-id"], rid);
        assert_eq!(body["meta"]["requestId"], headers["x-request-id"].to_str().unwrap());
        assert!(body["error"]["details"].is_null(), "{body}");
        assert_clean("the error envelope", &body.to_string());
    }
    assert_eq!(app.count("jobs").await, 0, "nothing was accepted");
}
