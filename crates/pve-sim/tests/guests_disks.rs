//! Clones (linked from templates, full otherwise), templates, disk resize and snapshots of
//! qemu guests against a running simulator.

mod common;

use common::{Api, ok_task, task_error};
use serde_json::Value;

fn volume(api: &Api, volid: &str) -> Option<pve_sim::model::Volume> {
    let st = api.sim.sim().read();
    st.nodes["pve1"].storages["local-lvm"].volumes.get(volid).cloned()
}

async fn config(api: &Api, vmid: u32) -> Value {
    api.get(&format!("/nodes/pve1/qemu/{vmid}/config")).await.data().clone()
}

#[tokio::test]
async fn linked_clone_from_a_template() {
    let api = Api::start().await;
    let r = api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "200"), ("name", "web1")]).await;
    let st = ok_task(&api, &r).await;
    assert_eq!((st["type"].as_str(), st["id"].as_str()), (Some("qmclone"), Some("9000")), "task id is the source");
    let c = config(&api, 200).await;
    assert_eq!(c["scsi0"], "local-lvm:base-9000-disk-0/vm-200-disk-0,size=3G");
    assert_eq!(c["ide2"], "local-lvm:vm-200-cloudinit,media=cdrom");
    assert_eq!(c["name"], "web1");
    assert!(c.get("template").is_none(), "the template flag is not copied");
    let t = config(&api, 9000).await;
    assert_ne!(c["net0"], t["net0"], "new MAC");
    assert!(c["net0"].as_str().unwrap().starts_with("virtio=BC:24:11:"));
    assert_ne!(c["smbios1"], t["smbios1"]);
    let v = volume(&api, "local-lvm:base-9000-disk-0/vm-200-disk-0").expect("linked volume");
    assert_eq!(v.parent.as_deref(), Some("local-lvm:base-9000-disk-0"));
    assert!(v.used < v.size / 10, "a linked clone uses little space");
    // Storage and format are refused for linked clones; a target node needs shared storage.
    let r = api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "201"), ("storage", "local-lvm")]).await;
    assert_eq!(r.message(), "parameter 'storage' not allowed for linked clones\n");
    let r = api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "201"), ("format", "qcow2")]).await;
    assert_eq!(r.message(), "parameter 'format' not allowed for linked clones\n");
    let r = api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "201"), ("target", "pve2")]).await;
    assert_eq!(r.message(), "can't clone VM to node 'pve2' (VM uses local storage)\n");
    let r = api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "200")]).await;
    assert_eq!(r.message(), "unable to create VM 200: config file already exists\n");
    let r = api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "201"), ("name", "Copy_of")]).await;
    assert_eq!(r.status, 400, "{}", r.text);
}

#[tokio::test]
async fn full_clone_copies_disks_but_not_snapshots() {
    let api = Api::start().await;
    ok_task(&api, &api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "210")]).await).await;
    ok_task(&api, &api.post("/nodes/pve1/qemu/210/snapshot", &[("snapname", "s1")]).await).await;
    // A normal VM cannot be linked-cloned, and is fully copied by default.
    let r = api.post("/nodes/pve1/qemu/210/clone", &[("newid", "211"), ("full", "0")]).await;
    assert_eq!(
        r.message(),
        "Linked clone feature is not supported for 'local-lvm:base-9000-disk-0/vm-210-disk-0' (scsi0)\n"
    );
    let used_before = api.sim.sim().read().nodes["pve1"].storages["local-lvm"].used();
    ok_task(&api, &api.post("/nodes/pve1/qemu/210/clone", &[("newid", "211")]).await).await;
    let c = config(&api, 211).await;
    assert_eq!(c["scsi0"], "local-lvm:vm-211-disk-0,size=3G");
    assert_eq!(c["name"], "Copy-of-VM-Copy-of-VM-debian-12-cloudinit");
    assert!(c.get("parent").is_none());
    let snaps = api.get("/nodes/pve1/qemu/211/snapshot").await;
    assert_eq!(snaps.data().as_array().unwrap().len(), 1, "only 'current': {}", snaps.text);
    let used_after = api.sim.sim().read().nodes["pve1"].storages["local-lvm"].used();
    assert!(used_after - used_before >= 3 << 30, "a full copy takes the disk's size");
    // A full clone of the template on an explicit storage.
    ok_task(
        &api,
        &api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "212"), ("full", "1"), ("storage", "local-lvm")]).await,
    )
    .await;
    assert_eq!(config(&api, 212).await["scsi0"], "local-lvm:vm-212-disk-0,size=3G");
}

#[tokio::test]
async fn the_clone_target_is_locked_while_the_task_runs() {
    let mut cfg = pve_sim::SimConfig::for_tests();
    cfg.time_scale = 1.0;
    cfg.task_durations.insert("qmclone".into(), std::time::Duration::from_millis(600));
    let api = Api::with(cfg).await;
    let r = api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "220")]).await;
    let upid = r.data().as_str().unwrap().to_string();
    let c = config(&api, 220).await;
    assert_eq!(c["lock"], "clone", "{c}");
    let r = api.put("/nodes/pve1/qemu/220/config", &[("memory", "4096")]).await;
    assert_eq!(r.message(), "VM is locked (clone)\n");
    let r = api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "220")]).await;
    assert_eq!(r.message(), "unable to create VM 220: config file already exists\n");
    // Another clone of the same template may run at the same time.
    let r2 = api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "221")]).await;
    assert_eq!(r2.status, 200, "{}", r2.text);
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "OK");
    assert!(config(&api, 220).await.get("lock").is_none());
    assert_eq!(api.wait_task(r2.data().as_str().unwrap()).await["exitstatus"], "OK");
}

#[tokio::test]
async fn resize_grows_only() {
    let api = Api::start().await;
    ok_task(
        &api,
        &api.post("/nodes/pve1/qemu", &[("vmid", "230"), ("scsi0", "local-lvm:4"), ("ide2", "none,media=cdrom")]).await,
    )
    .await;
    let st = ok_task(&api, &api.put("/nodes/pve1/qemu/230/resize", &[("disk", "scsi0"), ("size", "+2G")]).await).await;
    assert_eq!(st["type"], "resize");
    assert_eq!(config(&api, 230).await["scsi0"], "local-lvm:vm-230-disk-0,size=6G");
    ok_task(&api, &api.put("/nodes/pve1/qemu/230/resize", &[("disk", "scsi0"), ("size", "6656M")]).await).await;
    assert_eq!(config(&api, 230).await["scsi0"], "local-lvm:vm-230-disk-0,size=6656M");
    assert_eq!(volume(&api, "local-lvm:vm-230-disk-0").unwrap().size, 6656 << 20);
    // Shrinking fails in the task (PVE 8 checks inside the worker); same size is a no-op.
    let err =
        task_error(&api, &api.put("/nodes/pve1/qemu/230/resize", &[("disk", "scsi0"), ("size", "1G")]).await).await;
    assert_eq!(err, "shrinking disks is not supported");
    ok_task(&api, &api.put("/nodes/pve1/qemu/230/resize", &[("disk", "scsi0"), ("size", "6656M")]).await).await;
    let err =
        task_error(&api, &api.put("/nodes/pve1/qemu/230/resize", &[("disk", "ide2"), ("size", "+1G")]).await).await;
    assert_eq!(err, "you can't resize a cdrom");
    let err =
        task_error(&api, &api.put("/nodes/pve1/qemu/230/resize", &[("disk", "scsi5"), ("size", "+1G")]).await).await;
    assert_eq!(err, "disk 'scsi5' does not exist");
    let err =
        task_error(&api, &api.put("/nodes/pve1/qemu/230/resize", &[("disk", "scsi0"), ("size", "+5000G")]).await).await;
    assert!(err.contains("Insufficient free space"), "{err}");
    let r = api.put("/nodes/pve1/qemu/230/resize", &[("disk", "scsi0"), ("size", "-1G")]).await;
    assert_eq!(r.error("size"), "value does not match the regex pattern");
    let r = api.put("/nodes/pve1/qemu/230/resize", &[("disk", "hda"), ("size", "1G")]).await;
    assert!(r.error("disk").starts_with("value 'hda' does not have a value in the enumeration"), "{}", r.text);
}

#[tokio::test]
async fn template_conversion_makes_base_volumes() {
    let api = Api::start().await;
    ok_task(&api, &api.post("/nodes/pve1/qemu", &[("vmid", "240"), ("scsi0", "local-lvm:1")]).await).await;
    let st = ok_task(&api, &api.post("/nodes/pve1/qemu/240/template", &[]).await).await;
    assert_eq!(st["type"], "qmtemplate");
    let c = config(&api, 240).await;
    assert_eq!((c["template"].as_i64(), c["scsi0"].as_str()), (Some(1), Some("local-lvm:base-240-disk-0,size=1G")));
    let r = api.post("/nodes/pve1/qemu/240/template", &[]).await;
    assert_eq!(r.message(), "you can't convert a template to a template\n");
    ok_task(&api, &api.post("/nodes/pve1/qemu/240/clone", &[("newid", "241")]).await).await;
    assert_eq!(config(&api, 241).await["scsi0"], "local-lvm:base-240-disk-0/vm-241-disk-0,size=1G");
    ok_task(&api, &api.post("/nodes/pve1/qemu/241/snapshot", &[("snapname", "s1")]).await).await;
    let r = api.post("/nodes/pve1/qemu/241/template", &[]).await;
    assert_eq!(r.message(), "unable to create template, because VM contains snapshots\n");
}

#[tokio::test]
async fn snapshots_follow_pve_rules() {
    let api = Api::start().await;
    ok_task(&api, &api.post("/nodes/pve1/qemu", &[("vmid", "250"), ("scsi0", "local-lvm:1"), ("memory", "512")]).await)
        .await;
    let base = "/nodes/pve1/qemu/250/snapshot";
    for (name, msg) in [
        ("current", "unable to use snapshot name 'current' (reserved name)\n"),
        ("pending", "unable to use snapshot name 'pending' (reserved name)\n"),
    ] {
        let r = api.post(base, &[("snapname", name)]).await;
        assert_eq!((r.status, r.message()), (500, msg));
    }
    let r = api.post(base, &[("snapname", "1bad")]).await;
    assert_eq!(r.error("snapname"), "invalid format - invalid configuration ID '1bad'\n");
    let long = "s".repeat(41);
    let r = api.post(base, &[("snapname", long.as_str())]).await;
    assert_eq!(r.error("snapname"), "value may only be 40 characters long");
    let st = ok_task(&api, &api.post(base, &[("snapname", "first"), ("description", "clean")]).await).await;
    assert_eq!(st["type"], "qmsnapshot");
    let err = task_error(&api, &api.post(base, &[("snapname", "first")]).await).await;
    assert_eq!(err, "snapshot name 'first' already used");
    api.put("/nodes/pve1/qemu/250/config", &[("cores", "4")]).await;
    ok_task(&api, &api.post("/nodes/pve1/qemu/250/status/start", &[]).await).await;
    ok_task(&api, &api.post(base, &[("snapname", "second"), ("vmstate", "1")]).await).await;
    let list = api.get(base).await;
    let items = list.data().as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["name"], "first");
    assert_eq!(items[0]["description"], "clean");
    assert_eq!(
        (items[1]["name"].as_str(), items[1]["parent"].as_str(), items[1]["vmstate"].as_i64()),
        (Some("second"), Some("first"), Some(1))
    );
    let cur = &items[2];
    assert_eq!((cur["name"].as_str(), cur["description"].as_str()), (Some("current"), Some("You are here!")));
    assert_eq!((cur["running"].as_i64(), cur["parent"].as_str()), (Some(1), Some("second")));
    assert!(cur["digest"].is_string());
    assert!(volume(&api, "local-lvm:vm-250-state-second").is_some(), "RAM state saved");
    // Snapshot config and its description.
    let sc = api.get(&format!("{base}/first/config")).await;
    assert!(sc.data().get("cores").is_none() && sc.data()["scsi0"].is_string(), "{}", sc.text);
    assert_eq!(sc.data()["description"], "clean");
    api.put(&format!("{base}/first/config"), &[("description", "renamed")]).await;
    assert_eq!(api.get(&format!("{base}/first/config")).await.data()["description"], "renamed");
    assert_eq!(api.get_q("/nodes/pve1/qemu/250/config", &[("snapshot", "first")]).await.data().get("cores"), None);
    // Rollback stops the VM, restores the config, and `start` boots it again.
    let st = ok_task(&api, &api.post(&format!("{base}/first/rollback"), &[]).await).await;
    assert_eq!(st["type"], "qmrollback");
    let c = config(&api, 250).await;
    assert_eq!((c.get("cores"), c["parent"].as_str()), (None, Some("first")));
    assert_eq!(api.get("/nodes/pve1/qemu/250/status/current").await.data()["status"], "stopped");
    ok_task(&api, &api.post(&format!("{base}/second/rollback"), &[("start", "1")]).await).await;
    assert_eq!(config(&api, 250).await["cores"], 4);
    assert_eq!(api.get("/nodes/pve1/qemu/250/status/current").await.data()["status"], "running");
    let err = task_error(&api, &api.post(&format!("{base}/nope/rollback"), &[]).await).await;
    assert_eq!(err, "snapshot 'nope' does not exist");
    // Delete: children get the parent of the deleted snapshot; the state volume is freed.
    let st = ok_task(&api, &api.delete(&format!("{base}/first"), &[("force", "0")]).await).await;
    assert_eq!(st["type"], "qmdelsnapshot");
    let list = api.get(base).await;
    let second = list.data().as_array().unwrap().iter().find(|s| s["name"] == "second").unwrap().clone();
    assert!(second.get("parent").is_none(), "{second}");
    ok_task(&api, &api.delete(&format!("{base}/second"), &[]).await).await;
    assert!(volume(&api, "local-lvm:vm-250-state-second").is_none());
    let err = task_error(&api, &api.delete(&format!("{base}/second"), &[]).await).await;
    assert_eq!(err, "snapshot 'second' does not exist");
    let err = task_error(&api, &api.post("/nodes/pve1/qemu/9000/snapshot", &[("snapname", "t1")]).await).await;
    assert_eq!(err, "you can't take a snapshot if it's a template");
}
