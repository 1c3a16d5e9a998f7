//! LXC containers against a running simulator: create (vzcreate), the list's string vmids,
//! config, power actions, clone (source locked `disk`), resize, snapshots, destroy, and
//! restore from a vzdump backup (vzrestore).

mod common;

use common::{Api, ok_task, task_error};
use serde_json::Value;

const TEMPLATE: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";
const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlx2uMl6O7otZxx5t83ZWNSS+gqAj3/2gOtI6dRPT+R test@host";

async fn create_ct(api: &Api, vmid: &str) {
    let r = api
        .post(
            "/nodes/pve1/lxc",
            &[
                ("vmid", vmid),
                ("ostemplate", TEMPLATE),
                ("hostname", "ct1"),
                ("rootfs", "local-lvm:2"),
                ("memory", "256"),
                ("net0", "name=eth0,bridge=vmbr0,ip=dhcp"),
                ("unprivileged", "1"),
                ("ssh-public-keys", KEY),
                ("password", "secret1"),
            ],
        )
        .await;
    let st = ok_task(api, &r).await;
    assert_eq!(st["type"], "vzcreate");
}

#[tokio::test]
async fn create_list_and_config() {
    let api = Api::start().await;
    create_ct(&api, "400").await;
    let c = api.get("/nodes/pve1/lxc/400/config").await;
    let c = c.data();
    assert_eq!(c["rootfs"], "local-lvm:vm-400-disk-0,size=2G");
    assert_eq!(
        (c["hostname"].as_str(), c["ostype"].as_str(), c["arch"].as_str()),
        (Some("ct1"), Some("debian"), Some("amd64"))
    );
    assert_eq!((c["memory"].as_i64(), c["swap"].as_i64(), c["unprivileged"].as_i64()), (Some(256), Some(512), Some(1)));
    let net = c["net0"].as_str().unwrap();
    assert!(net.contains("hwaddr=BC:24:11:") && net.contains("name=eth0"), "{net}");
    // The list reports vmid as a string (pve-container's config_list).
    let list = api.get("/nodes/pve1/lxc").await;
    let row = list.data().as_array().unwrap().iter().find(|r| r["vmid"] == "400").expect("string vmid").clone();
    assert_eq!(
        (row["type"].as_str(), row["name"].as_str(), row["status"].as_str()),
        (Some("lxc"), Some("ct1"), Some("stopped"))
    );
    assert_eq!(row["maxmem"], 256u64 << 20);
    assert_eq!(api.get("/nodes/pve1/lxc/400/status/current").await.data()["vmid"], 400);
    // Errors of create.
    let r = api.post("/nodes/pve1/lxc", &[("vmid", "400"), ("ostemplate", TEMPLATE)]).await;
    assert_eq!(r.message(), "CT 400 already exists on node 'pve1'\n");
    let r = api.post("/nodes/pve1/lxc", &[("vmid", "401"), ("ostemplate", TEMPLATE)]).await;
    assert_eq!(r.error("storage"), "storage 'local' does not support container directories", "{}", r.text);
    let r =
        api.post("/nodes/pve1/lxc", &[("vmid", "401"), ("ostemplate", TEMPLATE), ("ssh-public-keys", "nope")]).await;
    assert_eq!(r.message(), "SSH public key validation error\n");
    let r = api
        .post(
            "/nodes/pve1/lxc",
            &[("vmid", "401"), ("ostemplate", "local:vztmpl/nope.tar.zst"), ("rootfs", "local-lvm:1")],
        )
        .await;
    assert_eq!(
        task_error(&api, &r).await,
        "unable to create CT 401 - volume 'local:vztmpl/nope.tar.zst' does not exist"
    );
    assert!(!api.sim.sim().read().guests.contains_key(&401));
    // Config update (synchronous), digest and delete.
    let digest = api.get("/nodes/pve1/lxc/400/config").await.data()["digest"].as_str().unwrap().to_string();
    let r = api
        .put("/nodes/pve1/lxc/400/config", &[("cores", "2"), ("mp0", "local-lvm:1,mp=/data"), ("digest", &digest)])
        .await;
    assert_eq!((r.status, r.data().clone()), (200, Value::Null), "{}", r.text);
    let c = api.get("/nodes/pve1/lxc/400/config").await;
    assert_eq!(c.data()["mp0"], "local-lvm:vm-400-disk-1,mp=/data,size=1G");
    let r = api.put("/nodes/pve1/lxc/400/config", &[("cores", "3"), ("digest", &digest)]).await;
    assert_eq!(r.message(), "detected modified configuration - file changed by other user? Try again.\n");
    api.put("/nodes/pve1/lxc/400/config", &[("delete", "mp0")]).await;
    assert_eq!(api.get("/nodes/pve1/lxc/400/config").await.data()["unused0"], "local-lvm:vm-400-disk-1");
    let r = api.put("/nodes/pve1/lxc/400/config", &[("delete", "rootfs")]).await;
    assert_eq!(r.error("delete"), "unable to delete required option 'rootfs'");
}

#[tokio::test]
async fn power_actions_and_destroy() {
    let api = Api::start().await;
    create_ct(&api, "410").await;
    let base = "/nodes/pve1/lxc/410/status";
    for (action, msg) in
        [("stop", "CT 410 not running\n"), ("shutdown", "CT 410 not running\n"), ("reboot", "VM 410 not running\n")]
    {
        let r = api.post(&format!("{base}/{action}"), &[]).await;
        assert_eq!(r.message(), msg, "{action}");
    }
    let st = ok_task(&api, &api.post(&format!("{base}/start"), &[]).await).await;
    assert_eq!(st["type"], "vzstart");
    let r = api.post(&format!("{base}/start"), &[]).await;
    assert_eq!(r.message(), "CT 410 already running\n");
    let cur = api.get(&format!("{base}/current")).await;
    assert_eq!((cur.data()["status"].as_str(), cur.data()["type"].as_str()), (Some("running"), Some("lxc")));
    let r = api.delete("/nodes/pve1/lxc/410", &[]).await;
    assert_eq!(r.message(), "unable to destroy CT 410 - container is running\n");
    ok_task(&api, &api.post(&format!("{base}/reboot"), &[]).await).await;
    // Suspend checkpoints and stops; resume restores.
    ok_task(&api, &api.post(&format!("{base}/suspend"), &[]).await).await;
    assert_eq!(api.get(&format!("{base}/current")).await.data()["status"], "stopped");
    ok_task(&api, &api.post(&format!("{base}/resume"), &[]).await).await;
    assert_eq!(api.get(&format!("{base}/current")).await.data()["status"], "running");
    let err = task_error(&api, &{
        ok_task(&api, &api.post(&format!("{base}/stop"), &[]).await).await;
        api.post(&format!("{base}/resume"), &[]).await
    })
    .await;
    assert!(err.starts_with("command 'lxc-checkpoint -n 410 -r"), "{err}");
    ok_task(&api, &api.post(&format!("{base}/start"), &[]).await).await;
    let st = ok_task(&api, &api.delete("/nodes/pve1/lxc/410", &[("force", "1"), ("purge", "1")]).await).await;
    assert_eq!(st["type"], "vzdestroy");
    assert!(!api.sim.sim().read().guests.contains_key(&410));
    assert!(!api.sim.sim().read().nodes["pve1"].storages["local-lvm"].volumes.contains_key("local-lvm:vm-410-disk-0"));
}

#[tokio::test]
async fn clone_resize_and_snapshots() {
    let mut cfg = pve_sim::SimConfig::for_tests();
    cfg.time_scale = 1.0;
    cfg.task_durations.insert("vzclone".into(), std::time::Duration::from_millis(500));
    for fast in ["vzcreate", "resize", "vzsnapshot", "vzrollback", "vzstart", "vztemplate"] {
        cfg.task_durations.insert(fast.into(), std::time::Duration::ZERO);
    }
    let api = Api::with(cfg).await;
    create_ct(&api, "420").await;
    let r = api.post("/nodes/pve1/lxc/420/clone", &[("newid", "421"), ("hostname", "ct2")]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let upid = r.data().as_str().unwrap().to_string();
    assert!(upid.contains(":vzclone:420:"));
    // During the clone the source carries lock `disk`, the target `create`.
    assert_eq!(api.get("/nodes/pve1/lxc/420/config").await.data()["lock"], "disk");
    assert_eq!(api.get("/nodes/pve1/lxc/421/config").await.data()["lock"], "create");
    let r = api.post("/nodes/pve1/lxc/420/clone", &[("newid", "422")]).await;
    assert_eq!(r.message(), "CT is locked (disk)\n");
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "OK");
    let c = api.get("/nodes/pve1/lxc/421/config").await;
    assert_eq!(
        (c.data()["hostname"].as_str(), c.data()["rootfs"].as_str()),
        (Some("ct2"), Some("local-lvm:vm-421-disk-0,size=2G"))
    );
    assert!(c.data().get("lock").is_none());
    assert!(api.get("/nodes/pve1/lxc/420/config").await.data().get("lock").is_none());
    let r = api.post("/nodes/pve1/lxc/420/clone", &[("newid", "422"), ("full", "0")]).await;
    assert_eq!(r.message(), "Linked clone feature for 'local-lvm:vm-420-disk-0' is not available\n");
    // Resize: LXC checks before forking.
    let r = api.put("/nodes/pve1/lxc/421/resize", &[("disk", "rootfs"), ("size", "1G")]).await;
    assert_eq!(r.message(), "unable to shrink disk size\n");
    let r = api.put("/nodes/pve1/lxc/421/resize", &[("disk", "rootfs"), ("size", "2G")]).await;
    assert_eq!(r.message(), "disk is already at specified size\n");
    ok_task(&api, &api.put("/nodes/pve1/lxc/421/resize", &[("disk", "rootfs"), ("size", "+1G")]).await).await;
    assert_eq!(api.get("/nodes/pve1/lxc/421/config").await.data()["rootfs"], "local-lvm:vm-421-disk-0,size=3G");
    // Snapshots.
    let r = api.post("/nodes/pve1/lxc/421/snapshot", &[("snapname", "vzdump")]).await;
    assert_eq!(r.message(), "unable to use snapshot name 'vzdump' (reserved name)\n");
    let st = ok_task(&api, &api.post("/nodes/pve1/lxc/421/snapshot", &[("snapname", "s1")]).await).await;
    assert_eq!(st["type"], "vzsnapshot");
    api.put("/nodes/pve1/lxc/421/config", &[("memory", "1024")]).await;
    ok_task(&api, &api.post("/nodes/pve1/lxc/421/snapshot/s1/rollback", &[("start", "1")]).await).await;
    assert_eq!(api.get("/nodes/pve1/lxc/421/config").await.data()["memory"], 256);
    assert_eq!(api.get("/nodes/pve1/lxc/421/status/current").await.data()["status"], "running");
    let list = api.get("/nodes/pve1/lxc/421/snapshot").await;
    assert_eq!(list.data().as_array().unwrap().last().unwrap()["name"], "current");
    // Template (synchronous answer) and a linked clone of it.
    let r = api.post("/nodes/pve1/lxc/420/template", &[]).await;
    assert_eq!((r.status, r.data().clone()), (200, Value::Null), "{}", r.text);
    api.wait_until_config(420, "template").await;
    let r = api.post("/nodes/pve1/lxc/420/clone", &[("newid", "423")]).await;
    ok_task(&api, &r).await;
    assert_eq!(
        api.get("/nodes/pve1/lxc/423/config").await.data()["rootfs"],
        "local-lvm:base-420-disk-0/vm-423-disk-0,size=2G"
    );
}

#[tokio::test]
async fn backup_and_restore() {
    let api = Api::start().await;
    create_ct(&api, "430").await;
    ok_task(&api, &api.post("/nodes/pve1/vzdump", &[("vmid", "430"), ("storage", "local")]).await).await;
    let content = api.get_q("/nodes/pve1/storage/local/content", &[("content", "backup"), ("vmid", "430")]).await;
    let volid = content.data()[0]["volid"].as_str().expect("a backup").to_string();
    let r = api
        .post("/nodes/pve1/lxc", &[("vmid", "431"), ("ostemplate", &volid), ("restore", "1"), ("storage", "local-lvm")])
        .await;
    let st = ok_task(&api, &r).await;
    assert_eq!(st["type"], "vzrestore");
    let c = api.get("/nodes/pve1/lxc/431/config").await;
    assert_eq!(
        (c.data()["hostname"].as_str(), c.data()["rootfs"].as_str()),
        (Some("ct1"), Some("local-lvm:vm-431-disk-0,size=2G"))
    );
    let orig = api.get("/nodes/pve1/lxc/430/config").await;
    assert_eq!(c.data()["net0"], orig.data()["net0"], "MACs kept without unique");
    // unique=1 gives new MACs; force=1 overwrites an existing stopped container.
    let r = api
        .post("/nodes/pve1/lxc", &[("vmid", "431"), ("ostemplate", &volid), ("restore", "1"), ("storage", "local-lvm")])
        .await;
    assert_eq!(r.message(), "CT 431 already exists on node 'pve1'\n");
    let r = api
        .post(
            "/nodes/pve1/lxc",
            &[
                ("vmid", "431"),
                ("ostemplate", &volid),
                ("restore", "1"),
                ("storage", "local-lvm"),
                ("force", "1"),
                ("unique", "1"),
            ],
        )
        .await;
    ok_task(&api, &r).await;
    let c = api.get("/nodes/pve1/lxc/431/config").await;
    assert_ne!(c.data()["net0"], orig.data()["net0"]);
    let st = api.sim.sim().read();
    let lvm = &st.nodes["pve1"].storages["local-lvm"];
    // Like pve-container, the new disks are allocated before the old ones are destroyed.
    assert_eq!(c.data()["rootfs"], "local-lvm:vm-431-disk-1,size=2G");
    assert!(lvm.volumes.contains_key("local-lvm:vm-431-disk-1"));
    assert!(!lvm.volumes.contains_key("local-lvm:vm-431-disk-0"), "the overwritten volume was freed");
}

trait WaitConfig {
    async fn wait_until_config(&self, vmid: u32, key: &str);
}

impl WaitConfig for Api {
    /// LXC template conversion answers null and works in a background task.
    async fn wait_until_config(&self, vmid: u32, key: &str) {
        for _ in 0..500 {
            if self.get(&format!("/nodes/pve1/lxc/{vmid}/config")).await.data().get(key).is_some() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{key} never appeared in CT {vmid}");
    }
}

#[tokio::test]
async fn huge_memory_and_swap_values_are_answered_not_panicked_on() {
    let api = Api::start().await;
    create_ct(&api, "240").await;
    let huge = "18446744073709551615";
    let r = api.put("/nodes/pve1/lxc/240/config", &[("memory", huge), ("swap", huge)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    ok_task(&api, &api.post("/nodes/pve1/lxc/240/status/start", &[]).await).await;
    for path in ["/nodes/pve1/lxc", "/nodes/pve1/lxc/240/status/current", "/cluster/resources", "/nodes"] {
        let r = api.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
    }
    let r = api.put("/nodes/pve1/lxc/240/resize", &[("disk", "rootfs"), ("size", "+99999999999999999999T")]).await;
    let exit = task_error(&api, &r).await;
    assert!(exit.contains("Insufficient free space"), "{exit}");
}
