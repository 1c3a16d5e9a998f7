//! Tasks: UPID format, status/exitstatus semantics, logs, lists and filters, stopping,
//! injected failures and per-token visibility.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Api, enc, upid_re};
use pve_sim::SimConfig;
use reqwest::Method;
use serde_json::json;

async fn backup(api: &Api, vmid: &str) -> String {
    let r = api.post("/nodes/pve1/vzdump", &[("vmid", vmid), ("storage", "local"), ("compress", "zstd")]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.data().as_str().unwrap().to_string()
}

#[tokio::test]
async fn upid_status_and_log() {
    let api = Api::start().await;
    let upid = backup(&api, "9000").await;
    let c = upid_re().captures(&upid).expect("PVE UPID format");
    assert_eq!(&c[1], "pve1");
    assert_eq!(&c[6], "vzdump");
    assert_eq!(&c[7], "9000");
    assert_eq!(&c[8], "root@pam!nimbus");
    let status = api.wait_task(&upid).await;
    assert_eq!(status["exitstatus"], "OK");
    assert_eq!(status["user"], "root@pam");
    assert_eq!(status["tokenid"], "nimbus");
    assert_eq!(status["type"], "vzdump");
    assert_eq!(status["upid"], upid.as_str());
    assert!(status.get("endtime").is_none());
    let pid = u64::from_str_radix(&c[3], 16).unwrap();
    assert_eq!(status["pid"], pid);
    let log = api.task_log(&upid).await;
    assert_eq!(log.last().unwrap(), "TASK OK");
    assert!(log[0].starts_with("INFO: starting new backup job: vzdump 9000"), "{log:?}");
    // Paging: n is 1-based, total counts all lines.
    let r = api.get_q(&format!("/nodes/pve1/tasks/{}/log", enc(&upid)), &[("start", "1"), ("limit", "2")]).await;
    assert_eq!(r.body["total"], log.len());
    assert_eq!(r.data().as_array().unwrap().len(), 2);
    assert_eq!(r.data()[0]["n"], 2);
    let r = api.get(&format!("/nodes/pve1/tasks/{}", enc(&upid))).await;
    assert_eq!(r.data(), &json!([{"name": "log"}, {"name": "status"}]));
}

#[tokio::test]
async fn bad_and_unknown_upids() {
    let api = Api::start().await;
    let r = api.get("/nodes/pve1/tasks/UPID:nope/status").await;
    assert_eq!((r.status, r.error("upid")), (400, "unable to parse worker upid"));
    let r = api
        .get(&format!("/nodes/pve1/tasks/{}/status", enc("UPID:pve1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam:")))
        .await;
    assert_eq!((r.status, r.error("upid")), (400, "no such task"));
    // The UPID must belong to the node of the path.
    let upid = backup(&api, "9000").await;
    let r = api.get(&format!("/nodes/pve2/tasks/{}/status", enc(&upid))).await;
    assert_eq!(r.error("upid"), "no such task");
}

#[tokio::test]
async fn running_tasks_hold_locks_and_can_be_stopped() {
    let mut durations = HashMap::new();
    durations.insert("vzdump".to_string(), Duration::from_secs(30));
    let api = Api::with(SimConfig { time_scale: 1.0, task_durations: durations, ..SimConfig::for_tests() }).await;
    let upid = backup(&api, "9000").await;
    let r = api.get(&format!("/nodes/pve1/tasks/{}/status", enc(&upid))).await;
    assert_eq!(r.data()["status"], "running");
    assert!(r.data().get("exitstatus").is_none());
    assert_eq!(api.sim.sim().read().guests[&9000].lock(), Some("backup"));
    // A second backup of the same guest waits for the node's vzdump lock (the guest is
    // checked only when it starts).
    let second = backup(&api, "9000").await;
    assert_eq!(api.task_log(&second).await, ["INFO: trying to get global lock - waiting..."]);
    // The running task is listed by source=active with status RUNNING.
    let r = api.get_q("/nodes/pve1/tasks", &[("source", "active")]).await;
    assert!(r.data().as_array().unwrap().iter().any(|t| t["upid"] == upid.as_str() && t["status"] == "RUNNING"));
    let r = api.delete(&format!("/nodes/pve1/tasks/{}", enc(&upid)), &[]).await;
    assert_eq!(r.status, 200);
    let status = api.wait_task(&upid).await;
    assert_eq!(status["exitstatus"], "received interrupt");
    assert_eq!(api.task_log(&upid).await.last().unwrap(), "TASK ERROR: received interrupt");
    // The stopped task released the guest and the node lock: the second backs the guest up.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !api.task_log(&second).await.iter().any(|l| l == "INFO: got global lock") {
        assert!(std::time::Instant::now() < deadline, "the second backup never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(api.sim.sim().read().guests[&9000].lock(), Some("backup"));
    api.delete(&format!("/nodes/pve1/tasks/{}", enc(&second)), &[]).await;
    api.wait_task(&second).await;
    assert_eq!(api.sim.sim().read().guests[&9000].lock(), None);
}

#[tokio::test]
async fn injected_task_failures() {
    let api = Api::start().await;
    api.sim.faults().fail_next_task("vzdump", "storage exploded");
    let upid = backup(&api, "9000").await;
    let status = api.wait_task(&upid).await;
    assert_eq!(status["exitstatus"], "storage exploded");
    assert_eq!(api.task_log(&upid).await.last().unwrap(), "TASK ERROR: storage exploded");
    let upid = backup(&api, "9000").await;
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "OK");
}

#[tokio::test]
async fn task_lists_filter_like_pve() {
    let api = Api::start().await;
    let ok = backup(&api, "9000").await;
    api.wait_task(&ok).await;
    api.sim.faults().fail_next_task("vzdump", "boom");
    let bad = backup(&api, "9001").await;
    api.wait_task(&bad).await;
    let r = api.get("/nodes/pve1/tasks").await;
    let rows = r.data().as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(r.body["total"], 2);
    assert!(rows.iter().all(|t| t["endtime"].is_u64() && t["status"].is_string()));
    assert!(rows.iter().any(|t| t["upid"] == bad.as_str() && t["status"] == "boom"));
    let r = api.get_q("/nodes/pve1/tasks", &[("errors", "1")]).await;
    assert_eq!(r.data().as_array().unwrap().len(), 1);
    assert_eq!(r.data()[0]["upid"], bad.as_str());
    let r = api.get_q("/nodes/pve1/tasks", &[("vmid", "9000")]).await;
    assert_eq!(r.data()[0]["upid"], ok.as_str());
    let r = api.get_q("/nodes/pve1/tasks", &[("statusfilter", "ok")]).await;
    assert_eq!(r.data().as_array().unwrap().len(), 1);
    let r = api.get_q("/nodes/pve1/tasks", &[("typefilter", "qmstart")]).await;
    assert!(r.data().as_array().unwrap().is_empty());
    let r = api.get_q("/nodes/pve1/tasks", &[("start", "1"), ("limit", "1")]).await;
    assert_eq!(r.data().as_array().unwrap().len(), 1);
    assert_eq!(r.body["total"], 2);
    assert!(api.get("/nodes/pve2/tasks").await.data().as_array().unwrap().is_empty());
    let r = api.get("/cluster/tasks").await;
    assert_eq!(r.data().as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_token_sees_only_its_own_tasks() {
    let api = Api::start().await;
    let upid = backup(&api, "9000").await;
    api.wait_task(&upid).await;
    let r = api.post("/access/users/root@pam/token/other", &[]).await;
    let other = format!("PVEAPIToken=root@pam!other={}", r.data()["value"].as_str().unwrap());
    let r = api.req_as(Method::GET, &format!("/nodes/pve1/tasks/{}/status", enc(&upid)), &[], Some(&other)).await;
    assert_eq!((r.status, r.message()), (403, "Permission check failed (/nodes/pve1, Sys.Audit)\n"));
    let r = api.req_as(Method::GET, "/nodes/pve1/tasks", &[], Some(&other)).await;
    assert!(r.data().as_array().unwrap().is_empty());
    let r = api.req_as(Method::GET, "/cluster/tasks", &[], Some(&other)).await;
    assert!(r.data().as_array().unwrap().is_empty());
}

#[tokio::test]
async fn an_injected_creation_failure_leaves_no_target_behind() {
    let api = Api::start().await;
    api.sim.faults().fail_next_task("qmclone", "clone exploded");
    let upid = api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "300")]).await.data().as_str().unwrap().to_string();
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "clone exploded");
    assert_eq!(api.get("/nodes/pve1/qemu/300/config").await.status, 500, "PVE removes a failed clone's target");
    // The VMID is free again, and the source template is untouched.
    let upid = api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "300")]).await.data().as_str().unwrap().to_string();
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "OK");
    assert_eq!(api.get("/nodes/pve1/qemu/9000/config").await.data()["template"], 1);
}
