//! Fault injection through the library API and `/_sim/faults`: error rates, latency, nodes
//! that are down (595), task failures.

mod common;

use std::time::{Duration, Instant};

use common::Api;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn injected_errors_and_latency() {
    let api = Api::start().await;
    api.sim.faults().add_error("^GET /api2/json/cluster/nextid$", 1.0, 503, "injected overload");
    let r = api.get("/cluster/nextid").await;
    assert_eq!((r.status, r.message()), (503, "injected overload\n"));
    assert_eq!(api.get("/version").await.status, 200);
    api.sim.faults().add_latency("version", Duration::from_millis(150));
    let t = Instant::now();
    assert_eq!(api.get("/version").await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));
    api.sim.faults().clear();
    assert_eq!(api.get("/cluster/nextid").await.status, 200);
}

#[tokio::test]
async fn a_down_node_answers_595_with_an_empty_body() {
    let api = Api::start().await;
    api.sim.faults().set_node_down("pve2", true);
    let r = api.get("/nodes/pve2/status").await;
    assert_eq!((r.status, r.text.as_str()), (595, ""));
    assert_eq!(api.get("/nodes/pve1/status").await.status, 200);
    // Not proxied: node rrddata is answered from the local cache.
    assert_eq!(api.get_q("/nodes/pve2/rrddata", &[("timeframe", "hour")]).await.status, 200);
    let r = api.get_q("/cluster/resources", &[("type", "node")]).await;
    let pve2 = r.data().as_array().unwrap().iter().find(|n| n["node"] == "pve2").unwrap().clone();
    assert_eq!(pve2["status"], "offline");
    let r = api.get("/nodes").await;
    assert!(r.data().as_array().unwrap().iter().any(|n| n["node"] == "pve2" && n["status"] == "offline"));
    let r = api.get_q("/cluster/resources", &[("type", "vm")]).await;
    assert!(r.data().as_array().unwrap().iter().filter(|g| g["node"] == "pve2").all(|g| g["status"] == "unknown"));
    api.sim.faults().set_node_down("pve2", false);
    assert_eq!(api.get("/nodes/pve2/status").await.status, 200);
    // An unknown node.
    let r = api.get("/nodes/pve9/status").await;
    assert_eq!((r.status, r.message()), (500, "no such cluster node 'pve9'\n"));
}

#[tokio::test]
async fn the_control_api_manages_faults() {
    let api = Api::start().await;
    let url = format!("{}/_sim/faults", api.sim.base_url());
    let r = api.http.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let post = |body: serde_json::Value| api.http.post(&url).header("Authorization", &api.auth).json(&body).send();
    assert_eq!(
        post(json!({"type": "error", "pattern": "nextid", "rate": 1.0, "status": 500, "message": "chaos"}))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(post(json!({"type": "node_down", "node": "pve3"})).await.unwrap().status().as_u16(), 200);
    assert_eq!(
        post(json!({"type": "fail_next_task", "task_type": "vzdump", "message": "nope"}))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(post(json!({"type": "latency", "pattern": "x", "latency_ms": 1})).await.unwrap().status().as_u16(), 200);
    assert_eq!(post(json!({"type": "bogus"})).await.unwrap().status().as_u16(), 400);
    let listed: serde_json::Value =
        api.http.get(&url).header("Authorization", &api.auth).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["data"]["nodes_down"], json!(["pve3"]));
    assert_eq!(listed["data"]["errors"][0]["message"], "chaos");
    assert_eq!(api.get("/cluster/nextid").await.message(), "chaos\n");
    assert_eq!(api.get("/nodes/pve3/status").await.status, 595);
    let upid = api.post("/nodes/pve1/vzdump", &[("vmid", "9000")]).await.data().as_str().unwrap().to_string();
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "nope");
    let r = api.http.delete(&url).header("Authorization", &api.auth).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(api.get("/cluster/nextid").await.status, 200);
    assert_eq!(api.req(Method::GET, "/nodes/pve3/status", &[]).await.status, 200);
}
