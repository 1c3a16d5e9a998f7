//! Operations on existing instances, end to end: the API accepts them as jobs, a real worker
//! runs them against pve-sim, and the simulator's guests show the result. Also: one operation at
//! a time per instance, the states and bodies that are refused, and the cleanup after a
//! provision fails for good.

use std::time::Duration;

use pve_sim::model::PowerState;
use serde_json::{Value, json};

use crate::support::{Options, ROOMY, TestApp, Worker, new_tenant, split, vm_body};

const PVE_TIMEOUT: Duration = Duration::from_secs(5);

/// `method path` with `body` as the app's tenant.
async fn call(app: &TestApp, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = app.http.request(method, app.url(path)).bearer_auth(&app.token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let (status, _, body) = split(req.send().await.unwrap()).await;
    (status.as_u16(), body)
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    call(app, reqwest::Method::POST, path, Some(body)).await
}

/// Waits until job `id` is final; returns its handle.
async fn finished(app: &TestApp, id: &str) -> Value {
    for _ in 0..600 {
        let (_, body) = call(app, reqwest::Method::GET, &format!("/v1/jobs/{id}"), None).await;
        if ["succeeded", "failed", "cancelled"].contains(&body["data"]["status"].as_str().unwrap_or_default()) {
            return body["data"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} did not finish");
}

/// Accepts `path` with `body` (202) and waits for its job to succeed.
async fn run(app: &TestApp, path: &str, body: Value) -> Value {
    let (status, accepted) = post(app, path, body).await;
    assert_eq!(status, 202, "{path}: {accepted}");
    let job = finished(app, accepted["data"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{path}: {job}");
    job
}

/// A running instance; returns its id and VMID.
async fn running_instance(app: &TestApp, name: &str) -> (String, u32) {
    let (status, _, accepted) = app.create_vm(&vm_body(name), &[]).await;
    assert_eq!(status, 202, "{accepted}");
    let job = finished(app, accepted["data"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let id = job["resources"][0]["id"].as_str().unwrap().to_owned();
    let vm = instance(app, &id).await;
    (id, vm["vmid"].as_u64().unwrap() as u32)
}

async fn instance(app: &TestApp, id: &str) -> Value {
    call(app, reqwest::Method::GET, &format!("/v1/vms/{id}"), None).await.1["data"].clone()
}

fn guest_state(app: &TestApp, vmid: u32) -> Option<(PowerState, String, String)> {
    let cluster = app.sim.sim().read();
    cluster.guests.get(&vmid).map(|g| {
        let get = |k: &str| g.config.get(k).cloned().unwrap_or_default();
        (g.state, get("cores"), get("memory"))
    })
}

#[tokio::test]
async fn power_resize_snapshots_and_delete_run_to_the_end() {
    let app = TestApp::new().await;
    let worker = Worker::start(&app, PVE_TIMEOUT).await;
    let (id, vmid) = running_instance(&app, "ops-1").await;
    let actions = |a: &str| format!("/v1/vms/{id}/actions/{a}");

    run(&app, &actions("stop"), json!({})).await;
    assert_eq!(instance(&app, &id).await["status"], "stopped");
    assert_eq!(guest_state(&app, vmid).unwrap().0, PowerState::Stopped);
    // Stopping a stopped guest is done at once, as Proxmox does.
    run(&app, &actions("stop"), json!({})).await;
    run(&app, &actions("start"), json!({})).await;
    assert_eq!(instance(&app, &id).await["status"], "running");
    assert_eq!(guest_state(&app, vmid).unwrap().0, PowerState::Running);
    run(&app, &actions("reboot"), json!({})).await;
    run(&app, &actions("shutdown"), json!({"timeoutSecs": 30})).await;
    assert_eq!(guest_state(&app, vmid).unwrap().0, PowerState::Stopped);
    run(&app, &actions("start"), json!({})).await;

    run(&app, &actions("resize"), json!({"cores": 4, "memory": 4096, "disk": 30})).await;
    let vm = instance(&app, &id).await;
    assert_eq!((vm["cores"].as_i64(), vm["memory"].as_i64(), vm["disk"].as_i64()), (Some(4), Some(4096), Some(30)));
    let (_, quota) = call(&app, reqwest::Method::GET, "/v1/quota", None).await;
    assert_eq!(quota["data"]["used"]["vcpus"], 4, "{quota}");
    {
        let cluster = app.sim.sim().read();
        let g = &cluster.guests[&vmid];
        // A running VM without CPU hotplug keeps the change pending until its next start.
        let cores = g.pending.get("cores").or_else(|| g.config.get("cores")).cloned();
        assert_eq!(cores.as_deref(), Some("4"), "{:?} {:?}", g.config, g.pending);
        assert!(g.config.values().any(|v| v.contains("size=30G")), "{:?}", g.config);
    }

    let snapshots = format!("/v1/vms/{id}/snapshots");
    run(&app, &snapshots, json!({"name": "before-upgrade", "description": "known good"})).await;
    let (status, listed) = call(&app, reqwest::Method::GET, &snapshots, None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"][0]["name"], "before-upgrade", "{listed}");
    assert_eq!(listed["data"][0]["description"], "known good");
    let (status, dup) = post(&app, &snapshots, json!({"name": "before-upgrade"})).await;
    assert_eq!((status, dup["error"]["code"].as_str()), (409, Some("CONFLICT")));
    run(&app, &format!("{snapshots}/before-upgrade/rollback"), json!({})).await;
    assert_eq!(instance(&app, &id).await["status"], "running", "a rollback restarts a running guest");
    let (status, accepted) = call(&app, reqwest::Method::DELETE, &format!("{snapshots}/before-upgrade"), None).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(finished(&app, accepted["data"]["id"].as_str().unwrap()).await["status"], "succeeded");
    assert_eq!(call(&app, reqwest::Method::GET, &snapshots, None).await.1["data"], json!([]));
    let (status, _) = call(&app, reqwest::Method::DELETE, &format!("{snapshots}/nope"), None).await;
    assert_eq!(status, 404);

    // The instance's jobs, newest first: the provision and every operation above.
    let (_, jobs) = call(&app, reqwest::Method::GET, &format!("/v1/jobs?instance={id}&perPage=100"), None).await;
    let kinds: Vec<&str> = jobs["data"].as_array().unwrap().iter().map(|j| j["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 11, "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"provision"));
    assert!(kinds.contains(&"restore") && kinds.contains(&"resize") && kinds.contains(&"shutdown"));

    let (status, accepted) = call(&app, reqwest::Method::DELETE, &format!("/v1/vms/{id}"), None).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(instance(&app, &id).await["status"], "deleting");
    assert_eq!(finished(&app, accepted["data"]["id"].as_str().unwrap()).await["status"], "succeeded");
    assert_eq!(instance(&app, &id).await["status"], "deleted");
    assert!(guest_state(&app, vmid).is_none(), "the guest is purged");
    let reservations: i64 = sqlx::query_scalar("select count(*) from vmid_reservations where vmid = $1")
        .bind(vmid as i32)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(reservations, 0, "the VMID is released");
    let (_, quota) = call(&app, reqwest::Method::GET, "/v1/quota", None).await;
    assert_eq!(quota["data"]["used"]["instances"], 0, "{quota}");
    // The name is free again.
    let (status, _, _) = app.create_vm(&vm_body("ops-1"), &[]).await;
    assert_eq!(status, 202);
    worker.stop().await;
}

#[tokio::test]
async fn one_operation_at_a_time_and_refused_states() {
    let app = TestApp::new().await;
    let worker = Worker::start(&app, PVE_TIMEOUT).await;
    let (id, _) = running_instance(&app, "busy-1").await;
    worker.stop().await;
    let actions = |a: &str| format!("/v1/vms/{id}/actions/{a}");

    // With no worker running, the first operation stays queued; two more at once both meet it.
    let (status, first) = post(&app, &actions("stop"), json!({})).await;
    assert_eq!(status, 202, "{first}");
    let first_id = first["data"]["id"].as_str().unwrap().to_owned();
    let (reboot, start) = (actions("reboot"), actions("start"));
    let (a, b) = tokio::join!(post(&app, &reboot, json!({})), post(&app, &start, json!({})));
    for (status, body) in [a, b] {
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "INSTANCE_BUSY");
        assert_eq!(body["error"]["details"]["job"]["id"], first_id.as_str());
    }
    let (status, body) = call(&app, reqwest::Method::DELETE, &format!("/v1/vms/{id}"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("INSTANCE_BUSY")));
    assert_eq!(instance(&app, &id).await["operation"]["id"], first_id.as_str());

    // Concurrent requests on an idle instance: exactly one is accepted.
    let worker = Worker::start(&app, PVE_TIMEOUT).await;
    assert_eq!(finished(&app, &first_id).await["status"], "succeeded");
    assert!(instance(&app, &id).await["operation"].is_null());
    let start = actions("start");
    let (a, b) = tokio::join!(post(&app, &start, json!({})), post(&app, &start, json!({})));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [202, 409], "{} {}", a.1, b.1);
    let accepted = if a.0 == 202 { a.1 } else { b.1 };
    assert_eq!(finished(&app, accepted["data"]["id"].as_str().unwrap()).await["status"], "succeeded");

    // States and bodies.
    run(&app, &actions("stop"), json!({})).await;
    let (status, body) = post(&app, &actions("reboot"), json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("INVALID_INSTANCE_STATE")), "{body}");
    assert_eq!(body["error"]["details"]["status"], "stopped");
    let (status, body) = post(&app, &actions("resize"), json!({"disk": 10})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("INVALID_RESIZE")), "{body}");
    let (status, body) = post(&app, &actions("resize"), json!({"cores": 500})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("VALIDATION_FAILED")), "{body}");
    let (status, body) =
        post(&app, &actions("rebuild"), json!({"template": "debian-12-cloudinit", "confirm": "x"})).await;
    assert_eq!((status, body["error"]["details"]["fields"][0]["field"].as_str()), (400, Some("confirm")), "{body}");
    let (status, body) = post(&app, &actions("hibernate"), json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("VALIDATION_FAILED")), "{body}");
    let (status, _) = post(&app, &actions("stop"), json!({"force": true})).await;
    assert_eq!(status, 400, "stop takes no options");
    // The plan's snapshot limit.
    sqlx::query("update plans set max_snapshots_per_instance = 1").execute(app.pool()).await.unwrap();
    run(&app, &format!("/v1/vms/{id}/snapshots"), json!({"name": "one"})).await;
    let (status, body) = post(&app, &format!("/v1/vms/{id}/snapshots"), json!({"name": "two"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("SNAPSHOT_LIMIT")), "{body}");
    // A resize beyond the plan.
    sqlx::query("update plans set max_vcpus = 3").execute(app.pool()).await.unwrap();
    let (status, body) = post(&app, &actions("resize"), json!({"cores": 4})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("QUOTA_EXCEEDED")), "{body}");
    assert_eq!(instance(&app, &id).await["cores"], 2, "a refused resize changes nothing");
    worker.stop().await;
}

#[tokio::test]
async fn idempotent_operations_replay_their_answer() {
    let app = TestApp::new().await;
    let worker = Worker::start(&app, PVE_TIMEOUT).await;
    let (id, _) = running_instance(&app, "idem-1").await;
    let path = app.url(&format!("/v1/vms/{id}/actions/stop"));
    let send = || app.http.post(&path).bearer_auth(&app.token).header("Idempotency-Key", "stop-1").json(&json!({}));
    let (s1, _, first) = split(send().send().await.unwrap()).await;
    let (s2, headers, second) = split(send().send().await.unwrap()).await;
    assert_eq!((s1.as_u16(), s2.as_u16()), (202, 202));
    assert_eq!(first["data"]["id"], second["data"]["id"]);
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(finished(&app, first["data"]["id"].as_str().unwrap()).await["status"], "succeeded");
    worker.stop().await;
}

#[tokio::test]
async fn a_rebuild_recreates_the_guest_under_the_same_vmid() {
    let app = TestApp::new().await;
    let worker = Worker::start(&app, PVE_TIMEOUT).await;
    let (id, vmid) = running_instance(&app, "rebuild-1").await;
    run(&app, &format!("/v1/vms/{id}/snapshots"), json!({"name": "old"})).await;
    let before = app.sim.sim().read().guests[&vmid].config.get("scsi0").cloned();
    run(
        &app,
        &format!("/v1/vms/{id}/actions/rebuild"),
        json!({"template": "debian-12-cloudinit", "confirm": "rebuild-1"}),
    )
    .await;
    let vm = instance(&app, &id).await;
    assert_eq!((vm["vmid"].as_u64(), vm["status"].as_str()), (Some(vmid as u64), Some("running")));
    {
        let cluster = app.sim.sim().read();
        let guest = &cluster.guests[&vmid];
        assert!(guest.snapshots.is_empty(), "the old guest, with its snapshot, is gone");
        assert_eq!(guest.config.get("name").map(String::as_str), Some("rebuild-1"));
        assert!(guest.config.contains_key("scsi0") && before.is_some());
    }
    worker.stop().await;
}

#[tokio::test]
async fn a_provision_that_fails_for_good_is_cleaned_up() {
    let app = TestApp::new().await;
    let worker = Worker::start(&app, PVE_TIMEOUT).await;
    // The guest is cloned, then its start fails for a reason retrying will not fix.
    app.sim.faults().fail_next_task("qmstart", "start failed: no such bridge");
    let (status, _, accepted) = app.create_vm(&vm_body("doomed-1"), &[]).await;
    assert_eq!(status, 202);
    let job = finished(&app, accepted["data"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "failed", "{job}");
    let id = job["resources"][0]["id"].as_str().unwrap().to_owned();
    let vmid = instance(&app, &id).await["vmid"].as_u64().unwrap() as u32;
    // The cleanup is the instance's next job: it removes the guest and the VMID reservation.
    let mut cleaned = false;
    for _ in 0..400 {
        let (_, jobs) = call(&app, reqwest::Method::GET, &format!("/v1/jobs?instance={id}"), None).await;
        let items = jobs["data"].as_array().unwrap().clone();
        if items.iter().any(|j| j["kind"] == "delete" && j["status"] == "succeeded") {
            cleaned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cleaned, "the cleanup ran");
    assert!(guest_state(&app, vmid).is_none(), "nothing is left on the node");
    let reservations: i64 = sqlx::query_scalar("select count(*) from vmid_reservations where vmid = $1")
        .bind(vmid as i32)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(reservations, 0);
    assert_eq!(instance(&app, &id).await["status"], "failed", "the instance stays failed for an operator");
    // The tenant may delete it now.
    let (status, accepted) = call(&app, reqwest::Method::DELETE, &format!("/v1/vms/{id}"), None).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(finished(&app, accepted["data"]["id"].as_str().unwrap()).await["status"], "succeeded");
    assert_eq!(instance(&app, &id).await["status"], "deleted");
    worker.stop().await;
}

/// Waits until instance `id` has `status`.
async fn status_becomes(app: &TestApp, id: &str, status: &str) {
    for _ in 0..200 {
        if instance(app, id).await["status"] == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("instance {id} never became {status}: {}", instance(app, id).await);
}

#[tokio::test]
async fn statuses_follow_what_proxmox_reports() {
    let app = TestApp::new().await;
    let worker = Worker::start(&app, PVE_TIMEOUT).await;
    let (id, vmid) = running_instance(&app, "live-1").await;
    // The guest's uptime, from Proxmox.
    let mut uptime = None;
    for _ in 0..100 {
        uptime = instance(&app, &id).await["uptime"].as_i64();
        if uptime.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(uptime.is_some_and(|u| (0..60).contains(&u)), "{uptime:?}");
    // Shut down from inside the guest: Proxmox reports it stopped.
    app.sim.sim().write().guests.get_mut(&vmid).unwrap().state = PowerState::Stopped;
    status_becomes(&app, &id, "stopped").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(instance(&app, &id).await["uptime"].is_null(), "a stopped guest has no uptime");
    // Started from the Proxmox console.
    app.sim.sim().write().guests.get_mut(&vmid).unwrap().state = PowerState::Running;
    status_becomes(&app, &id, "running").await;
    // Removed behind Nimbus's back.
    app.sim.sim().write().guests.remove(&vmid);
    status_becomes(&app, &id, "missing").await;
    let (status, body) = post(&app, &format!("/v1/vms/{id}/actions/start"), json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("INVALID_INSTANCE_STATE")));
    let (_, quota) = call(&app, reqwest::Method::GET, "/v1/quota", None).await;
    assert_eq!(quota["data"]["used"]["instances"], 1, "a missing instance holds its quota");
    // A delete wins over the reconciler: the instance ends deleted, not missing again.
    let (status, accepted) = call(&app, reqwest::Method::DELETE, &format!("/v1/vms/{id}"), None).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(finished(&app, accepted["data"]["id"].as_str().unwrap()).await["status"], "succeeded");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(instance(&app, &id).await["status"], "deleted");
    worker.stop().await;
}

#[tokio::test]
async fn operators_list_every_tenants_instances_with_filters() {
    let app = TestApp::new().await;
    let (other, other_token) = crate::support::new_tenant(app.pool(), crate::support::ROOMY).await;
    let (status, _, _) = app.create_vm(&vm_body("mine-1"), &[]).await;
    assert_eq!(status, 202);
    let r =
        app.http.post(app.url("/v1/vms")).bearer_auth(&other_token).json(&vm_body("theirs-1")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let names = |body: &Value| -> Vec<String> {
        let mut n: Vec<String> =
            body["data"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_owned()).collect();
        n.sort();
        n
    };
    let (status, _, all) = app.get("/v1/admin/vms").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(names(&all), ["mine-1", "theirs-1"]);
    assert!(all["data"].as_array().unwrap().iter().all(|i| i["operation"]["kind"] == "provision"), "{all}");
    let (_, _, theirs) = app.get(&format!("/v1/admin/vms?tenant={other}")).await;
    assert_eq!(names(&theirs), ["theirs-1"]);
    assert_eq!(theirs["data"][0]["tenantId"], other.to_string());
    let (_, _, none) = app.get("/v1/admin/vms?status=running").await;
    assert_eq!(none["pagination"]["total"], 0, "{none}");
}

#[tokio::test]
async fn the_console_is_proxied_with_a_single_use_ticket() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let app = TestApp::new().await;
    let worker = Worker::start(&app, PVE_TIMEOUT).await;
    let (id, _) = running_instance(&app, "console-1").await;
    let (status, opened) = post(&app, &format!("/v1/vms/{id}/console"), json!({})).await;
    assert_eq!(status, 201, "{opened}");
    let data = &opened["data"];
    assert_eq!(data["protocol"], "vnc");
    assert_eq!(data["password"].as_str().map(str::len), Some(8), "the session's VNC password: {data}");
    let text = opened.to_string();
    assert!(!text.contains("PVEVNC") && !text.contains("127.0.0.1"), "no Proxmox ticket or address: {text}");
    let ws_url = format!("{}{}", app.base.replacen("http", "ws", 1), data["url"].as_str().unwrap());

    // The RFB handshake comes through the proxy.
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.expect("the console opens");
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.into_data().as_ref(), b"RFB 003.008\n");
    ws.send(Message::Binary(b"RFB 003.008\n".to_vec().into())).await.unwrap();
    let security = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(security.into_data().as_ref(), [1, 2], "one security type: VNC authentication");
    drop(ws);

    // The ticket is spent; another instance's ticket does not open this one.
    let replay = tokio_tungstenite::connect_async(&ws_url).await;
    assert!(replay.is_err(), "a replayed ticket is refused");
    let (other, _) = running_instance(&app, "console-2").await;
    let (status, foreign) = post(&app, &format!("/v1/vms/{other}/console"), json!({})).await;
    assert_eq!(status, 201, "{foreign}");
    let stolen = format!(
        "{}/v1/vms/{id}/console/ws?ticket={}",
        app.base.replacen("http", "ws", 1),
        foreign["data"]["ticket"].as_str().unwrap()
    );
    assert!(tokio_tungstenite::connect_async(&stolen).await.is_err(), "a ticket opens only its instance");

    // A container's terminal: the API does termproxy's login, the browser gets the terminal.
    let mut body = vm_body("console-ct");
    body["type"] = json!("lxc");
    body["template"] = json!("debian-12-standard");
    let (status, _, accepted) = app.create_vm(&body, &[]).await;
    assert_eq!(status, 202, "{accepted}");
    let job = finished(&app, accepted["data"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let ct = job["resources"][0]["id"].as_str().unwrap().to_owned();
    let (status, opened) = post(&app, &format!("/v1/vms/{ct}/console"), json!({})).await;
    assert_eq!((status, opened["data"]["protocol"].as_str()), (201, Some("terminal")), "{opened}");
    assert!(opened["data"]["password"].is_null(), "{opened}");
    let ws_url = format!("{}{}", app.base.replacen("http", "ws", 1), opened["data"]["url"].as_str().unwrap());
    let (mut term, _) = tokio_tungstenite::connect_async(&ws_url).await.expect("the terminal opens");
    term.send(Message::Binary(b"0:6:uptime".to_vec().into())).await.unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("uptime") {
        let frame = tokio::time::timeout(Duration::from_secs(5), term.next()).await.expect("terminal output");
        seen.extend_from_slice(&frame.unwrap().unwrap().into_data());
    }
    let seen = String::from_utf8_lossy(&seen).into_owned();
    assert!(!seen.starts_with("OK"), "the login answer stays with the API: {seen:?}");
    assert!(seen.contains("login: ") && !seen.contains("PVE") && !seen.contains("root@pam"), "{seen:?}");
    drop(term);

    // A stopped instance has no console.
    run(&app, &format!("/v1/vms/{id}/actions/stop"), json!({})).await;
    let (status, body) = post(&app, &format!("/v1/vms/{id}/console"), json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("INVALID_INSTANCE_STATE")));
    worker.stop().await;
}

/// The events of an SSE response, one at a time.
struct Events {
    bytes: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl Events {
    fn new(response: reqwest::Response) -> Events {
        Events { bytes: Box::pin(response.bytes_stream()), buffer: String::new() }
    }

    /// The next `(event, data)`, or `None` when the server ended the stream.
    async fn next(&mut self) -> Option<(String, Value)> {
        use futures::StreamExt;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if !data.is_empty() {
                    return Some((event, serde_json::from_str(&data).unwrap()));
                }
                continue;
            }
            let chunk =
                tokio::time::timeout(Duration::from_secs(20), self.bytes.next()).await.expect("an event in time");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk?.unwrap()));
        }
    }

    /// Reads `instance` events until one satisfies `done`.
    async fn until(&mut self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        loop {
            let (event, data) = self.next().await.unwrap_or_else(|| panic!("the stream ended before {what}"));
            assert!(event == "instance" || event == "end", "unexpected {event}: {data}");
            if done(&data) {
                return data;
            }
        }
    }
}

#[tokio::test]
async fn an_open_page_follows_its_instance_without_polling() {
    // Streams read Postgres only when woken (their fallback poll is a minute away).
    let minute = Some(Duration::from_secs(60));
    let app = TestApp::with(ROOMY, Options { sse_poll: minute, stream_auth_check: minute, ..Options::default() }).await;
    let worker = Worker::start(&app, PVE_TIMEOUT).await;
    let (id, vmid) = running_instance(&app, "followed-1").await;
    let open = || app.http.get(app.url(&format!("/v1/vms/{id}/events"))).bearer_auth(&app.token).send();
    let response = open().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut events = Events::new(response);
    let (event, first) = events.next().await.unwrap();
    assert_eq!((event.as_str(), first["status"].as_str()), ("instance", Some("running")), "{first}");
    assert!(first["operation"].is_null(), "{first}");

    // An operation shows from its start to its end.
    let (status, accepted) = post(&app, &format!("/v1/vms/{id}/actions/stop"), json!({})).await;
    assert_eq!(status, 202, "{accepted}");
    let busy = events.until("the operation", |v| !v["operation"].is_null()).await;
    assert_eq!(busy["operation"]["id"], accepted["data"]["id"], "{busy}");
    let stopped = events.until("the stop", |v| v["status"] == "stopped" && v["operation"].is_null()).await;
    assert!(stopped["uptime"].is_null(), "{stopped}");

    // A change made on the Proxmox side arrives through the reconciler.
    app.sim.sim().write().guests.get_mut(&vmid).unwrap().state = PowerState::Running;
    events.until("the reconciled start", |v| v["status"] == "running").await;

    // A deleted instance's last view ends the stream.
    let (status, _) = call(&app, reqwest::Method::DELETE, &format!("/v1/vms/{id}"), None).await;
    assert_eq!(status, 202);
    let last = loop {
        match events.next().await {
            Some((event, data)) if event == "end" => break data,
            Some(_) => continue,
            None => panic!("the stream ended without an end event"),
        }
    };
    assert_eq!(last["status"], "deleted", "{last}");
    assert!(events.next().await.is_none(), "nothing follows the end");

    // Another tenant's instance has no stream.
    let (_, other_key) = new_tenant(app.pool(), ROOMY).await;
    let foreign = app.http.get(app.url(&format!("/v1/vms/{id}/events"))).bearer_auth(other_key).send().await.unwrap();
    assert_eq!(foreign.status(), 404);
    worker.stop().await;
}

#[tokio::test]
async fn backups_are_taken_and_listed_with_their_origin() {
    let app = TestApp::new().await;
    let worker = Worker::start(&app, PVE_TIMEOUT).await;
    let (id, vmid) = running_instance(&app, "backed-1").await;
    let path = format!("/v1/vms/{id}/backups");
    let (_, empty) = call(&app, reqwest::Method::GET, &path, None).await;
    assert_eq!(empty["data"], json!([]), "{empty}");

    let job = run(&app, &path, json!({"note": "before upgrade", "protected": true})).await;
    let (_, listed) = call(&app, reqwest::Method::GET, &path, None).await;
    let ours = &listed["data"][0];
    assert_eq!(ours["origin"], "nimbus", "{listed}");
    assert_eq!(ours["jobId"], job["id"]);
    assert_eq!((ours["note"].as_str(), ours["protected"].as_bool()), (Some("before upgrade"), Some(true)));
    assert!(ours["size"].as_u64().is_some_and(|s| s > 0), "{ours}");
    let volid = ours["volume"].as_str().unwrap().to_owned();
    assert_eq!(Some(ours["id"].as_str().unwrap()), volid.rsplit('/').next(), "the id is the archive name");
    assert!(volid.starts_with(&format!("local:backup/vzdump-qemu-{vmid}-")), "the plan's storage: {volid}");
    assert_eq!(instance(&app, &id).await["status"], "running", "a snapshot-mode backup keeps the guest running");

    // One made on the Proxmox side, a day older, is the customer's too.
    {
        let mut cluster = app.sim.sim().write();
        let node = cluster.guests[&vmid].node.clone();
        let local = cluster.nodes.get_mut(&node).unwrap().storages.get_mut("local").unwrap();
        let mut theirs = local.volumes[&volid].clone();
        // Older than ours, younger than the instance: archives from before it existed are not its.
        theirs.ctime -= 20;
        theirs.volid = format!("local:backup/vzdump-qemu-{vmid}-2026_01_01-00_00_00.vma.zst");
        theirs.notes = Some("taken by the provider".into());
        theirs.protected = false;
        local.volumes.insert(theirs.volid.clone(), theirs);
    }
    let (_, listed) = call(&app, reqwest::Method::GET, &path, None).await;
    let origins: Vec<(&str, &str)> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["origin"].as_str().unwrap(), b["note"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(origins, [("nimbus", "before upgrade"), ("proxmox", "taken by the provider")], "newest first");
    assert!(listed["data"][1]["jobId"].is_null());

    // Protected: not deletable until its protection is removed; then deleted by a job.
    let ours_id = listed["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(listed["data"][0]["volume"], volid);
    let one = format!("{path}/{ours_id}");
    let (status, refused) = call(&app, reqwest::Method::DELETE, &one, None).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("CONFLICT")), "{refused}");
    let (status, unprotected) = post(&app, &format!("{one}/protect"), json!({"protected": false})).await;
    assert_eq!((status, unprotected["data"]["protected"].as_bool()), (200, Some(false)), "{unprotected}");
    let (status, accepted) = call(&app, reqwest::Method::DELETE, &one, None).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(finished(&app, accepted["data"]["id"].as_str().unwrap()).await["status"], "succeeded");
    let (_, listed) = call(&app, reqwest::Method::GET, &path, None).await;
    let left: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|b| b["origin"].as_str().unwrap()).collect();
    assert_eq!(left, ["proxmox"], "{listed}");
    let (status, _) = call(&app, reqwest::Method::DELETE, &one, None).await;
    assert_eq!(status, 404, "a deleted backup is gone");

    // Notes Proxmox would template, or too long, are refused before anything runs.
    for bad in [json!({"note": "{{guestname}}"}), json!({"note": "x".repeat(201)}), json!({"keep": true})] {
        let (status, body) = post(&app, &path, bad.clone()).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("VALIDATION_FAILED")), "{bad}: {body}");
    }
    worker.stop().await;
}

#[tokio::test]
async fn backup_policies_limits_and_restores_run_end_to_end() {
    let app = TestApp::new().await;
    let plan = app.plan_id().await;
    sqlx::query("update plans set max_backups = 3, min_backup_interval_minutes = 60 where id = $1")
        .bind(plan)
        .execute(app.pool())
        .await
        .unwrap();
    let worker = Worker::start(&app, PVE_TIMEOUT).await;
    let (id, _) = running_instance(&app, "policy-1").await;
    let policy = format!("/v1/vms/{id}/backup-policy");

    // None yet: the plan's limits and a default retention.
    let (status, none) = call(&app, reqwest::Method::GET, &policy, None).await;
    assert_eq!(status, 200, "{none}");
    assert!(none["data"]["schedule"].is_null());
    assert_eq!(none["data"]["limits"], json!({"maxBackups": 3, "minIntervalMinutes": 60}));

    // Bad schedules and retentions name their field.
    for (bad, field) in [
        (json!({"schedule": "*/5 * * * *", "retention": {"keepLast": 2}}), "schedule"),
        (json!({"schedule": "at noon", "retention": {"keepLast": 2}}), "schedule"),
        (json!({"schedule": "daily", "retention": {"keepLast": 2, "keepDaily": 2}}), "retention"),
        (json!({"schedule": "daily", "retention": {}}), "retention"),
        (json!({"schedule": "daily", "retention": {"keepYearly": 1}}), "retention.keepYearly"),
    ] {
        let (status, body) = call(&app, reqwest::Method::PUT, &policy, Some(bad.clone())).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("VALIDATION_FAILED")), "{bad}: {body}");
        assert!(crate::support::fields(&body).contains(&Some(field.to_owned())), "{bad}: {body}");
    }
    let (status, set) =
        call(&app, reqwest::Method::PUT, &policy, Some(json!({"schedule": "0 3 * * *", "retention": {"keepLast": 2}})))
            .await;
    assert_eq!(status, 200, "{set}");
    let next: chrono::DateTime<chrono::Utc> = set["data"]["nextRunAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(next.format("%H:%M").to_string(), "03:00");
    assert!(next > chrono::Utc::now() && next <= chrono::Utc::now() + chrono::Duration::days(1));
    let (_, _, schedules) = app.get("/v1/admin/schedules").await;
    let listed = schedules["data"].as_array().cloned().unwrap_or_default();
    assert!(
        listed.iter().any(|s| s["cron"] == "0 3 * * *" && s["missedFirePolicy"] == "latest_only"),
        "operators see the customer's schedule: {schedules}"
    );

    // Two backups, the second protected; the preview of keepLast 1 removes the older.
    let backups = format!("/v1/vms/{id}/backups");
    run(&app, &backups, json!({"note": "one"})).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    run(&app, &backups, json!({"note": "two", "protected": true})).await;
    let (status, preview) = call(&app, reqwest::Method::GET, &format!("{policy}/preview?keepLast=1"), None).await;
    assert_eq!(status, 200, "{preview}");
    let marks: Vec<&str> =
        preview["data"]["backups"].as_array().unwrap().iter().map(|b| b["mark"].as_str().unwrap()).collect();
    assert_eq!(marks, ["protected", "keep"], "the protected one counts for no option: {preview}");
    let (_, preview) =
        call(&app, reqwest::Method::GET, &format!("{policy}/preview?keepLast=0&keepDaily=0"), None).await;
    assert_eq!(preview["error"]["code"], "VALIDATION_FAILED", "{preview}");

    // A third is the plan's last; a fourth is refused.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    run(&app, &backups, json!({})).await;
    let (status, refused) = post(&app, &backups, json!({})).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (422, Some("BACKUP_LIMIT")), "{refused}");

    // Restore in place needs the instance's name.
    let (_, listed) = call(&app, reqwest::Method::GET, &backups, None).await;
    let oldest = listed["data"].as_array().unwrap().last().unwrap()["id"].as_str().unwrap().to_owned();
    let restore = format!("{backups}/{oldest}/restore");
    let (status, wrong) = post(&app, &restore, json!({"confirm": "policy-2"})).await;
    assert_eq!((status, wrong["error"]["code"].as_str()), (400, Some("VALIDATION_FAILED")), "{wrong}");
    let job = run(&app, &restore, json!({"confirm": "policy-1"})).await;
    assert_eq!(job["kind"], "restore");
    assert_eq!(instance(&app, &id).await["status"], "running");

    // Restore as new: a second instance with its own name; another tenant cannot use the backup.
    let (_, other_key) = new_tenant(app.pool(), ROOMY).await;
    let (status, _, not_theirs) = split(
        app.http
            .post(app.url("/v1/vms"))
            .bearer_auth(&other_key)
            .json(&json!({"name": "stolen", "fromBackup": oldest}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status.as_u16(), 404, "{not_theirs}");
    let (status, bad) = post(&app, "/v1/vms", json!({"name": "copy-1", "fromBackup": "../etc/passwd"})).await;
    assert_eq!((status, bad["error"]["code"].as_str()), (400, Some("VALIDATION_FAILED")), "{bad}");
    let (status, accepted) = post(&app, "/v1/vms", json!({"name": "copy-1", "fromBackup": oldest})).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["data"]["kind"], "restore");
    let copy = accepted["data"]["resources"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(finished(&app, accepted["data"]["id"].as_str().unwrap()).await["status"], "succeeded");
    let copied = instance(&app, &copy).await;
    assert_eq!((copied["name"].as_str(), copied["status"].as_str()), (Some("copy-1"), Some("running")), "{copied}");
    assert_ne!(copied["vmid"], instance(&app, &id).await["vmid"]);
    let (_, quota) = call(&app, reqwest::Method::GET, "/v1/quota", None).await;
    assert_eq!(quota["data"]["used"]["instances"], 2, "the copy counts toward the quota: {quota}");

    // Turning the policy off removes its schedule.
    let removed = app.http.delete(app.url(&policy)).bearer_auth(&app.token).send().await.unwrap();
    assert_eq!(removed.status().as_u16(), 204);
    assert!(call(&app, reqwest::Method::GET, &policy, None).await.1["data"]["schedule"].is_null());
    let (_, _, schedules) = app.get("/v1/admin/schedules").await;
    assert!(!schedules["data"].as_array().unwrap().iter().any(|s| s["cron"] == "0 3 * * *"), "{schedules}");
    let (status, _) = call(&app, reqwest::Method::DELETE, &policy, None).await;
    assert_eq!(status, 404);
    worker.stop().await;
}
