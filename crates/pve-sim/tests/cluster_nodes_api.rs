//! Cluster and node endpoints: resources (shapes, ids, filters), nextid, status, nodes, node
//! status and rrddata (PVE 8 point counts), pools.

mod common;

use common::Api;
use serde_json::Value;

#[tokio::test]
async fn cluster_resources_shapes() {
    let api = Api::start().await;
    let all = api.get("/cluster/resources").await;
    let rows = all.data().as_array().unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    for id in ["qemu/9000", "qemu/9021", "node/pve1", "node/pve3", "storage/pve1/local", "storage/pve2/local-lvm"] {
        assert!(ids.contains(&id), "{id} missing");
    }
    let vm = rows.iter().find(|r| r["id"] == "qemu/9000").unwrap();
    for field in [
        "node",
        "status",
        "name",
        "vmid",
        "maxcpu",
        "cpu",
        "maxmem",
        "mem",
        "maxdisk",
        "disk",
        "netin",
        "netout",
        "diskread",
        "diskwrite",
        "uptime",
        "template",
        "type",
    ] {
        assert!(vm.get(field).is_some(), "guest field {field}");
    }
    assert_eq!(vm["template"], 1);
    assert_eq!(vm["type"], "qemu");
    assert_eq!(vm["name"], "debian-12-cloudinit");
    assert_eq!(vm["maxdisk"], 3u64 << 30);
    let st = rows.iter().find(|r| r["id"] == "storage/pve1/local").unwrap();
    assert_eq!(st["plugintype"], "dir");
    assert_eq!(st["status"], "available");
    let vms = api.get_q("/cluster/resources", &[("type", "vm")]).await;
    assert!(vms.data().as_array().unwrap().iter().all(|r| r["type"] == "qemu" || r["type"] == "lxc"));
    let nodes = api.get_q("/cluster/resources", &[("type", "node")]).await;
    assert_eq!(nodes.data().as_array().unwrap().len(), 3);
    // Pools appear with a leading slash.
    api.post("/pools", &[("poolid", "tenant-a")]).await;
    let all = api.get("/cluster/resources").await;
    assert!(all.data().as_array().unwrap().iter().any(|r| r["id"] == "/pool/tenant-a" && r["type"] == "pool"));
}

#[tokio::test]
async fn nextid_range_and_checks() {
    let api = Api::start().await;
    assert_eq!(api.get("/cluster/nextid").await.data(), "100");
    assert_eq!(api.get_q("/cluster/nextid", &[("vmid", "12345")]).await.data(), "12345");
    let r = api.get_q("/cluster/nextid", &[("vmid", "9001")]).await;
    assert_eq!(r.error("vmid"), "VM 9001 already exists");
}

#[tokio::test]
async fn nodes_and_node_status() {
    let api = Api::start().await;
    let r = api.get("/nodes").await;
    let nodes = r.data().as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    let n = &nodes[0];
    assert_eq!(n["node"], "pve1");
    assert_eq!(n["status"], "online");
    assert_eq!(n["ssl_fingerprint"], api.sim.fingerprint().unwrap());
    assert!(n["maxmem"].as_u64().unwrap() > n["mem"].as_u64().unwrap());
    let s = api.get("/nodes/pve2/status").await;
    let d = s.data();
    assert_eq!(d["cpuinfo"]["cpus"], 16);
    assert!(d["pveversion"].as_str().unwrap().starts_with("pve-manager/8.4"));
    assert_eq!(d["loadavg"].as_array().unwrap().len(), 3);
    assert!(d["loadavg"][0].is_string());
    assert!(d["memory"]["total"].as_u64().unwrap() >= d["memory"]["used"].as_u64().unwrap());
    assert!(d["rootfs"]["avail"].is_u64());
    assert_eq!(d["current-kernel"]["sysname"], "Linux");
    let r = api.get("/cluster/status").await;
    assert_eq!(r.data()[0]["type"], "cluster");
    assert_eq!(r.data()[0]["quorate"], 1);
}

#[tokio::test]
async fn node_rrddata_has_pve8_layout() {
    let api = Api::start().await;
    for (tf, step) in [("hour", 60), ("day", 1800), ("week", 10800), ("month", 43200), ("year", 604800)] {
        let r = api.get_q("/nodes/pve1/rrddata", &[("timeframe", tf)]).await;
        let rows = r.data().as_array().unwrap();
        assert_eq!(rows.len(), 70, "{tf}");
        let t0 = rows[0]["time"].as_i64().unwrap();
        assert_eq!(rows[1]["time"].as_i64().unwrap() - t0, step);
        for ds in [
            "loadavg",
            "maxcpu",
            "cpu",
            "iowait",
            "memtotal",
            "memused",
            "swaptotal",
            "swapused",
            "roottotal",
            "rootused",
            "netin",
            "netout",
        ] {
            assert!(rows[69].get(ds).is_some(), "{ds}");
        }
    }
    let avg = api.get_q("/nodes/pve1/rrddata", &[("timeframe", "day"), ("cf", "AVERAGE")]).await;
    let again = api.get_q("/nodes/pve1/rrddata", &[("timeframe", "day")]).await;
    assert_eq!(avg.data(), again.data(), "deterministic");
    let max = api.get_q("/nodes/pve1/rrddata", &[("timeframe", "day"), ("cf", "MAX")]).await;
    let sum = |v: &Value| v.as_array().unwrap().iter().map(|r| r["cpu"].as_f64().unwrap()).sum::<f64>();
    assert!(sum(max.data()) >= sum(avg.data()));
    let r = api.get_q("/nodes/pve1/rrddata", &[("timeframe", "decade")]).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn pools_lifecycle() {
    let api = Api::start().await;
    assert_eq!(api.post("/pools", &[("poolid", "team1"), ("comment", "first")]).await.status, 200);
    let r = api.post("/pools", &[("poolid", "team1")]).await;
    assert_eq!(r.message(), "pool 'team1' already exists\n");
    let r = api.post("/pools", &[("poolid", "bad id")]).await;
    assert_eq!(r.error("poolid"), "invalid format - invalid pool ID 'bad id'\n");
    assert_eq!(api.put("/pools", &[("poolid", "team1"), ("vms", "9000,9001"), ("storage", "local")]).await.status, 200);
    let r = api.get_q("/pools", &[("poolid", "team1")]).await;
    let members = r.data()[0]["members"].as_array().unwrap();
    assert!(members.iter().any(|m| m["id"] == "qemu/9000" && m["vmid"] == 9000));
    assert!(members.iter().any(|m| m["type"] == "storage" && m["storage"] == "local"));
    let r = api.get_q("/pools", &[("poolid", "team1"), ("type", "storage")]).await;
    assert!(r.data()[0]["members"].as_array().unwrap().iter().all(|m| m["type"] == "storage"));
    let r = api.get("/pools").await;
    assert_eq!(r.data()[0]["poolid"], "team1");
    assert_eq!(r.data()[0]["comment"], "first");
    let r = api.get_q("/cluster/resources", &[("type", "vm")]).await;
    assert!(r.data().as_array().unwrap().iter().any(|g| g["vmid"] == 9000 && g["pool"] == "team1"));
    // Moving to another pool needs allow-move.
    api.post("/pools", &[("poolid", "team2")]).await;
    let r = api.put("/pools/team2", &[("vms", "9000")]).await;
    assert_eq!(r.status, 500);
    assert_eq!(api.put("/pools/team2", &[("vms", "9000"), ("allow-move", "1")]).await.status, 200);
    let r = api.get("/pools/team2").await;
    assert_eq!(r.data()["members"][0]["vmid"], 9000);
    let r = api.delete("/pools", &[("poolid", "team1")]).await;
    assert_eq!(r.message(), "pool 'team1' is not empty\n");
    api.put("/pools", &[("poolid", "team1"), ("vms", "9001"), ("storage", "local"), ("delete", "1")]).await;
    assert_eq!(api.delete("/pools", &[("poolid", "team1")]).await.status, 200);
    assert_eq!(api.get("/pools/team1").await.message(), "pool 'team1' does not exist\n");
}
