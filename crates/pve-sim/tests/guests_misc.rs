//! The remaining guest endpoints against a running simulator: qemu restore from a vzdump
//! backup, firewall rules and options, rrddata, cloud-init, migration, pools, indexes and the
//! node-down answer.

mod common;

use common::{Api, ok_task, task_error};
use serde_json::Value;

#[tokio::test]
async fn qemu_backup_restores_to_a_new_vm() {
    let api = Api::start().await;
    ok_task(&api, &api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "500"), ("full", "1")]).await).await;
    ok_task(&api, &api.post("/nodes/pve1/vzdump", &[("vmid", "500"), ("storage", "local")]).await).await;
    let content = api.get_q("/nodes/pve1/storage/local/content", &[("content", "backup"), ("vmid", "500")]).await;
    let volid = content.data()[0]["volid"].as_str().expect("a backup").to_string();
    let r = api.post("/nodes/pve1/qemu", &[("vmid", "501"), ("archive", &volid), ("scsi0", "local-lvm:1")]).await;
    assert_eq!(r.error("scsi0"), "option conflicts with option 'archive'");
    let r = api
        .post("/nodes/pve1/qemu", &[("vmid", "501"), ("archive", &volid), ("name", "restored"), ("unique", "1")])
        .await;
    let st = ok_task(&api, &r).await;
    assert_eq!(st["type"], "qmrestore");
    let c = api.get("/nodes/pve1/qemu/501/config").await;
    let orig = api.get("/nodes/pve1/qemu/500/config").await;
    assert_eq!(c.data()["scsi0"], "local-lvm:vm-501-disk-0,size=3G");
    assert_eq!(c.data()["ide2"], "local-lvm:vm-501-cloudinit,media=cdrom");
    assert_eq!(c.data()["name"], "restored", "request options override the backup");
    assert_eq!(c.data()["memory"], orig.data()["memory"]);
    assert_ne!(c.data()["net0"], orig.data()["net0"], "unique=1 gives new MACs");
    let r = api.post("/nodes/pve1/qemu", &[("vmid", "500"), ("archive", &volid)]).await;
    assert_eq!(r.message(), "unable to restore VM 500 - VM 500 already exists on node 'pve1'\n");
    // force=1 overwrites a stopped VM.
    ok_task(&api, &api.post("/nodes/pve1/qemu", &[("vmid", "500"), ("archive", &volid), ("force", "1")]).await).await;
    assert_eq!(api.get("/nodes/pve1/qemu/500/config").await.data()["scsi0"], "local-lvm:vm-500-disk-0,size=3G");
    let err = task_error(
        &api,
        &api.post("/nodes/pve1/qemu", &[("vmid", "502"), ("archive", "local:backup/nope.vma.zst")]).await,
    )
    .await;
    assert_eq!(err, "volume 'local:backup/nope.vma.zst' does not exist");
}

#[tokio::test]
async fn firewall_rules_and_options() {
    let api = Api::start().await;
    let base = "/nodes/pve1/qemu/9000/firewall";
    assert_eq!(api.get(&format!("{base}/rules")).await.data(), &Value::Array(vec![]));
    let r = api
        .post(&format!("{base}/rules"), &[("type", "in"), ("action", "ACCEPT"), ("proto", "tcp"), ("dport", "22")])
        .await;
    assert_eq!((r.status, r.data().clone()), (200, Value::Null), "{}", r.text);
    let r = api
        .post(
            &format!("{base}/rules"),
            &[("type", "in"), ("action", "DROP"), ("source", "10.0.0.0/8"), ("enable", "1")],
        )
        .await;
    assert_eq!(r.status, 200);
    let list = api.get(&format!("{base}/rules")).await;
    let rules = list.data().as_array().unwrap().clone();
    assert_eq!(rules.len(), 2);
    assert_eq!(
        (rules[0]["pos"].as_i64(), rules[0]["action"].as_str()),
        (Some(0), Some("DROP")),
        "new rules go to the top"
    );
    assert_eq!((rules[0]["ipversion"].as_i64(), rules[0]["enable"].as_i64()), (Some(4), Some(1)));
    assert_eq!(rules[1]["enable"], 0);
    let digest = rules[0]["digest"].as_str().unwrap().to_string();
    let r = api.put(&format!("{base}/rules/1"), &[("moveto", "0"), ("digest", &digest)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(api.get(&format!("{base}/rules/0")).await.data()["action"], "ACCEPT");
    let r = api.delete(&format!("{base}/rules/0"), &[("digest", &digest)]).await;
    assert_eq!(r.message(), "detected modified configuration - file changed by other user? Try again.\n");
    api.delete(&format!("{base}/rules/0"), &[]).await;
    assert_eq!(api.get(&format!("{base}/rules")).await.data().as_array().unwrap().len(), 1);
    assert_eq!(api.get(&format!("{base}/rules/5")).await.message(), "no rule at position 5\n");
    let r = api.post(&format!("{base}/rules"), &[("type", "in"), ("action", "ALLOW")]).await;
    assert_eq!(r.error("action"), "unknown action 'ALLOW'");
    let r = api.post(&format!("{base}/rules"), &[("type", "in"), ("action", "ACCEPT"), ("dport", "80")]).await;
    assert_eq!(r.error("proto"), "missing property - 'dport' requires this property");
    let r = api.post(&format!("{base}/rules"), &[("type", "in"), ("action", "ACCEPT"), ("macro", "SSH")]).await;
    assert_eq!(r.status, 200);
    // Options.
    api.put(&format!("{base}/options"), &[("enable", "1"), ("policy_in", "DROP")]).await;
    let o = api.get(&format!("{base}/options")).await;
    assert_eq!((o.data()["enable"].as_i64(), o.data()["policy_in"].as_str()), (Some(1), Some("DROP")));
    api.put(&format!("{base}/options"), &[("delete", "policy_in")]).await;
    assert!(api.get(&format!("{base}/options")).await.data().get("policy_in").is_none());
}

#[tokio::test]
async fn rrddata_has_pve8_layout() {
    let api = Api::start().await;
    for (tf, step) in [("hour", 60), ("day", 1800), ("week", 10800), ("month", 43200), ("year", 604_800)] {
        let r = api.get_q("/nodes/pve1/qemu/9000/rrddata", &[("timeframe", tf)]).await;
        let rows = r.data().as_array().unwrap();
        assert_eq!(rows.len(), 70, "{tf}");
        assert_eq!(rows[1]["time"].as_i64().unwrap() - rows[0]["time"].as_i64().unwrap(), step);
        for ds in ["maxcpu", "cpu", "maxmem", "mem", "maxdisk", "disk", "netin", "netout", "diskread", "diskwrite"] {
            assert!(rows[0].get(ds).is_some(), "{tf} {ds}");
        }
    }
    let a = api.get_q("/nodes/pve1/qemu/9000/rrddata", &[("timeframe", "day"), ("cf", "MAX")]).await;
    let b = api.get_q("/nodes/pve1/qemu/9000/rrddata", &[("timeframe", "day"), ("cf", "MAX")]).await;
    assert_eq!(a.data(), b.data(), "deterministic");
    let r = api.get_q("/nodes/pve1/qemu/9000/rrddata", &[("timeframe", "decade")]).await;
    assert_eq!(r.status, 400);
    let r = api.get_q("/nodes/pve1/qemu/777/rrddata", &[("timeframe", "hour")]).await;
    assert_eq!(r.message(), "RRD error: opening '/var/lib/rrdcached/db/pve2-vm/777': No such file or directory\n");
}

#[tokio::test]
async fn cloudinit_pending_and_dump() {
    let api = Api::start().await;
    ok_task(&api, &api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "510"), ("name", "ci1")]).await).await;
    api.put("/nodes/pve1/qemu/510/config", &[("ciuser", "debian"), ("ipconfig0", "ip=192.0.2.9/24,gw=192.0.2.1")])
        .await;
    let user = api.get_q("/nodes/pve1/qemu/510/cloudinit/dump", &[("type", "user")]).await;
    let text = user.data().as_str().unwrap();
    assert!(
        text.starts_with("#cloud-config\n") && text.contains("user: debian") && text.contains("hostname: ci1"),
        "{text}"
    );
    let net = api.get_q("/nodes/pve1/qemu/510/cloudinit/dump", &[("type", "network")]).await;
    assert!(net.data().as_str().unwrap().contains("address: '192.0.2.9/24'"));
    // Changes on a running VM are tracked until the drive is regenerated.
    ok_task(&api, &api.post("/nodes/pve1/qemu/510/status/start", &[]).await).await;
    api.put("/nodes/pve1/qemu/510/config", &[("ciuser", "admin")]).await;
    let ci = api.get("/nodes/pve1/qemu/510/cloudinit").await;
    let row = ci.data().as_array().unwrap().iter().find(|r| r["key"] == "ciuser").unwrap().clone();
    assert_eq!((row["value"].as_str(), row["pending"].as_str()), (Some("debian"), Some("admin")));
    api.put("/nodes/pve1/qemu/510/cloudinit", &[]).await;
    let ci = api.get("/nodes/pve1/qemu/510/cloudinit").await;
    let row = ci.data().as_array().unwrap().iter().find(|r| r["key"] == "ciuser").unwrap().clone();
    assert_eq!((row["value"].as_str(), row.get("pending")), (Some("admin"), None));
}

#[tokio::test]
async fn migration_moves_guest_and_volumes() {
    let api = Api::start().await;
    ok_task(&api, &api.post("/nodes/pve1/qemu", &[("vmid", "520"), ("scsi0", "local-lvm:1")]).await).await;
    let pre = api.get_q("/nodes/pve1/qemu/520/migrate", &[]).await;
    assert_eq!(pre.data()["running"], 0);
    assert_eq!(pre.data()["allowed_nodes"], serde_json::json!(["pve2", "pve3"]));
    assert_eq!(pre.data()["local_disks"][0]["volid"], "local-lvm:vm-520-disk-0");
    let r = api.post("/nodes/pve1/qemu/520/migrate", &[("target", "pve1")]).await;
    assert_eq!(r.error("target"), "target is local node.");
    let st = ok_task(&api, &api.post("/nodes/pve1/qemu/520/migrate", &[("target", "pve2")]).await).await;
    assert_eq!(st["type"], "qmigrate");
    assert_eq!(api.get("/nodes/pve2/qemu/520/config").await.data()["scsi0"], "local-lvm:vm-520-disk-0,size=1G");
    assert_eq!(api.get("/nodes/pve1/qemu/520/config").await.status, 500);
    {
        let s = api.sim.sim().read();
        assert!(s.nodes["pve2"].storages["local-lvm"].volumes.contains_key("local-lvm:vm-520-disk-0"));
        assert!(!s.nodes["pve1"].storages["local-lvm"].volumes.contains_key("local-lvm:vm-520-disk-0"));
    }
    ok_task(&api, &api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "521")]).await).await;
    let err = task_error(&api, &api.post("/nodes/pve1/qemu/521/migrate", &[("target", "pve3")]).await).await;
    assert!(
        err.contains("can't migrate 'local-lvm:base-9000-disk-0/vm-521-disk-0' as it's a clone of 'base-9000-disk-0'"),
        "{err}"
    );
    ok_task(&api, &api.post("/nodes/pve1/qemu/521/status/start", &[]).await).await;
    let r = api.post("/nodes/pve1/qemu/521/migrate", &[("target", "pve3")]).await;
    assert_eq!(r.message(), "can't migrate running VM without --online\n");
}

#[tokio::test]
async fn pools_indexes_and_node_down() {
    let api = Api::start().await;
    ok_task(&api, &api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "530")]).await).await;
    api.post("/pools", &[("poolid", "tenant1")]).await;
    ok_task(&api, &api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "531"), ("pool", "tenant1")]).await).await;
    assert!(api.sim.sim().read().pools["tenant1"].vms.contains(&531));
    let list = api.get("/nodes/pve1/qemu").await;
    assert!(list.data().as_array().unwrap().iter().any(|v| v["vmid"] == 531));
    ok_task(&api, &api.delete("/nodes/pve1/qemu/531", &[]).await).await;
    assert!(!api.sim.sim().read().pools["tenant1"].vms.contains(&531), "destroy leaves the pool");
    let r = api
        .post("/nodes/pve1/qemu", &[("vmid", "532"), ("pool", "tenant1"), ("start", "1"), ("scsi0", "local-lvm:1")])
        .await;
    ok_task(&api, &r).await;
    assert_eq!(api.get("/nodes/pve1/qemu/532/status/current").await.data()["status"], "running", "start=1 boots it");
    assert!(api.sim.sim().read().pools["tenant1"].vms.contains(&532));
    let idx = api.get("/nodes/pve1/qemu/530").await;
    assert!(idx.data().as_array().unwrap().iter().any(|s| s["subdir"] == "config"));
    let idx = api.get("/nodes/pve1/qemu/530/status").await;
    assert!(idx.data().as_array().unwrap().iter().any(|s| s["subdir"] == "current"));
    let idx = api.get("/nodes/pve1/qemu/530/snapshot/x1").await;
    assert_eq!(idx.data()[0]["cmd"], "rollback");
    // A node that is down answers 595; the local rrddata still answers.
    api.sim.faults().set_node_down("pve1", true);
    let r = api.get("/nodes/pve1/qemu/530/status/current").await;
    assert_eq!(r.status, 595);
    let r = api.get_q("/nodes/pve1/qemu/530/rrddata", &[("timeframe", "hour")]).await;
    assert_eq!(r.status, 200);
    api.sim.faults().set_node_down("pve1", false);
    // A failing qmconfig task reports its error in the task.
    api.sim.faults().fail_next_task("qmconfig", "injected failure");
    let err = task_error(&api, &api.post("/nodes/pve1/qemu/530/config", &[("cores", "2")]).await).await;
    assert_eq!(err, "injected failure");
}
