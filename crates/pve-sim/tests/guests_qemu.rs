//! qemu guests against a running simulator: create (disks, cloud-init drive, MACs, sshkeys and
//! cipassword handling), lists, config reads and updates, power actions with PVE's errors,
//! destroy, and capacity accounting.

mod common;

use common::Api;
use serde_json::Value;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlx2uMl6O7otZxx5t83ZWNSS+gqAj3/2gOtI6dRPT+R test@host";

/// PVE's double encoding: percent-encoded before the form encoding, space as %20.
fn sshkeys(keys: &str) -> String {
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    percent_encoding::utf8_percent_encode(keys, SET).to_string()
}

/// [`common::ok_task`], also checking the UPID's shape.
async fn ok_task(api: &Api, r: &common::Resp) -> Value {
    let upid = r.data().as_str().unwrap_or_default();
    assert!(common::upid_re().is_match(upid), "{upid} {}", r.text);
    common::ok_task(api, r).await
}

async fn failed_task(api: &Api, r: &common::Resp) -> String {
    let exit = common::task_error(api, r).await;
    assert_ne!(exit, "OK");
    exit
}

async fn create_vm(api: &Api, vmid: &str, extra: &[(&str, &str)]) {
    let mut form = vec![("vmid", vmid), ("name", "web1"), ("scsi0", "local-lvm:4"), ("memory", "1024"), ("cores", "2")];
    form.extend_from_slice(extra);
    let r = api.post("/nodes/pve1/qemu", &form).await;
    ok_task(api, &r).await;
}

fn local_lvm_used(api: &Api, node: &str) -> u64 {
    api.sim.sim().read().nodes[node].storages["local-lvm"].used()
}

#[tokio::test]
async fn create_writes_a_pve_like_config() {
    let api = Api::start().await;
    let keys = sshkeys(&format!("{KEY}\n{KEY}"));
    let r = api
        .post(
            "/nodes/pve1/qemu",
            &[
                ("vmid", "120"),
                ("name", "web1"),
                ("memory", "2048"),
                ("scsi0", "local-lvm:8,discard=on,ssd=1"),
                ("ide2", "local-lvm:cloudinit"),
                ("net0", "virtio,bridge=vmbr0,firewall=1"),
                ("ipconfig0", "ip=10.0.10.123/24,gw=10.0.10.1"),
                ("ciuser", "ubuntu"),
                ("cipassword", "hunter22"),
                ("sshkeys", &keys),
                ("agent", "1"),
            ],
        )
        .await;
    let st = ok_task(&api, &r).await;
    assert_eq!(st["type"], "qmcreate");
    assert_eq!(st["id"], "120");
    let c = api.get("/nodes/pve1/qemu/120/config").await;
    let c = c.data();
    assert_eq!(c["scsi0"], "local-lvm:vm-120-disk-0,discard=on,size=8G,ssd=1");
    assert_eq!(c["ide2"], "local-lvm:vm-120-cloudinit,media=cdrom");
    let net = c["net0"].as_str().unwrap();
    assert!(net.starts_with("virtio=BC:24:11:") && net.ends_with(",bridge=vmbr0,firewall=1"), "{net}");
    assert_eq!(c["cipassword"], "**********");
    assert_eq!(c["sshkeys"], keys.as_str(), "sshkeys stay encoded");
    assert_eq!(c["boot"], "order=scsi0;net0");
    assert!(c["smbios1"].as_str().unwrap().starts_with("uuid="));
    assert!(c["digest"].as_str().unwrap().len() == 40);
    assert!(c.get("lock").is_none(), "create lock released: {c}");
    // The password is stored hashed.
    let stored = api.sim.sim().read().guests[&120].config["cipassword"].clone();
    assert!(stored.starts_with("$5$") && !stored.contains("hunter22"), "{stored}");
    // The volumes exist on the storage.
    let st = api.sim.sim().read();
    let lvm = &st.nodes["pve1"].storages["local-lvm"];
    assert_eq!(lvm.volumes["local-lvm:vm-120-disk-0"].size, 8 << 30);
    assert!(lvm.volumes.contains_key("local-lvm:vm-120-cloudinit"));
}

#[tokio::test]
async fn create_refusals_follow_pve() {
    let api = Api::start().await;
    create_vm(&api, "121", &[]).await;
    let r = api.post("/nodes/pve1/qemu", &[("vmid", "121")]).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.message(), "unable to create VM 121 - VM 121 already exists on node 'pve1'\n");
    let r = api.post("/nodes/pve2/qemu", &[("vmid", "9000")]).await;
    assert_eq!(r.message(), "unable to create VM 9000 - VM 9000 already exists on node 'pve1'\n");
    // sshkeys must be url-encoded (schema) and real keys (validation).
    let r = api.post("/nodes/pve1/qemu", &[("vmid", "122"), ("sshkeys", "ssh-ed25519 AAAA")]).await;
    assert_eq!(r.status, 400);
    assert!(r.error("sshkeys").starts_with("invalid format - invalid urlencoded string"), "{}", r.text);
    let r = api.post("/nodes/pve1/qemu", &[("vmid", "122"), ("sshkeys", "ssh-ed25519%20AAAA")]).await;
    assert_eq!((r.status, r.message()), (500, "SSH public key validation error\n"));
    // A storage without images and an ISO without media=cdrom.
    let r = api.post("/nodes/pve1/qemu", &[("vmid", "122"), ("scsi0", "local:4")]).await;
    assert_eq!(r.error("storage"), "storage 'local' does not support vm images", "{}", r.text);
    let r =
        api.post("/nodes/pve1/qemu", &[("vmid", "122"), ("ide2", "local:iso/debian-12.9.0-amd64-netinst.iso")]).await;
    assert_eq!(r.error("ide2"), "explicit 'media=cdrom' is required for iso images");
    let r = api.post("/nodes/pve1/qemu", &[("vmid", "122"), ("pool", "nope")]).await;
    assert_eq!(r.message(), "pool 'nope' does not exist\n");
    assert!(!api.sim.sim().read().guests.contains_key(&122));
}

#[tokio::test]
async fn a_full_storage_fails_the_create_task_and_cleans_up() {
    let api = Api::start().await;
    let before = local_lvm_used(&api, "pve1");
    let r =
        api.post("/nodes/pve1/qemu", &[("vmid", "130"), ("scsi0", "local-lvm:1"), ("scsi1", "local-lvm:5000")]).await;
    let err = failed_task(&api, &r).await;
    assert!(err.starts_with("unable to create VM 130 - lvcreate 'pve/vm-130-disk-1' error:"), "{err}");
    assert!(err.contains("Insufficient free space"), "{err}");
    assert!(!api.sim.sim().read().guests.contains_key(&130), "failed create leaves no VM");
    assert_eq!(local_lvm_used(&api, "pve1"), before, "allocated disks are freed again");
}

#[tokio::test]
async fn lists_carry_pve_types() {
    let api = Api::start().await;
    create_vm(&api, "140", &[("tags", "b;a")]).await;
    let r = api.get("/nodes/pve1/qemu").await;
    let rows = r.data().as_array().unwrap();
    let t = rows.iter().find(|v| v["vmid"] == 9000).unwrap();
    assert_eq!(t["template"], 1);
    assert!(t["pid"].is_null() && t.get("pid").is_some(), "templates carry pid null: {t}");
    let v = rows.iter().find(|v| v["vmid"] == 140).unwrap();
    assert_eq!(v["status"], "stopped");
    assert_eq!(v["maxmem"], 1024u64 << 20);
    assert_eq!(v["maxdisk"], 4u64 << 30);
    assert_eq!(v["tags"], "a;b");
    assert_eq!(v["cpus"].as_u64(), Some(2), "whole numbers without a fraction");
    assert!(v.get("pid").is_none());
    assert!(rows.iter().all(|v| v["vmid"] != 9010), "only this node's guests");
    let full = api.get_q("/nodes/pve1/qemu", &[("full", "1")]).await;
    assert!(full.data()[0].get("qmpstatus").is_some());
    let r = api.get("/nodes/pve9/qemu").await;
    assert_eq!(r.message(), "no such cluster node 'pve9'\n");
}

#[tokio::test]
async fn config_updates_sync_and_async() {
    let api = Api::start().await;
    create_vm(&api, "150", &[]).await;
    let cfg = api.get("/nodes/pve1/qemu/150/config").await;
    let digest = cfg.data()["digest"].as_str().unwrap().to_string();
    // PUT is synchronous and answers null.
    let r = api.put("/nodes/pve1/qemu/150/config", &[("cores", "4"), ("digest", &digest)]).await;
    assert_eq!((r.status, r.data().clone()), (200, Value::Null), "{}", r.text);
    assert_eq!(api.get("/nodes/pve1/qemu/150/config").await.data()["cores"], 4);
    // The old digest no longer matches.
    let r = api.put("/nodes/pve1/qemu/150/config", &[("cores", "2"), ("digest", &digest)]).await;
    assert_eq!(r.message(), "checksum mismatch (file change by other user?)\n");
    // POST runs a qmconfig task; a new disk is allocated there.
    let r = api.post("/nodes/pve1/qemu/150/config", &[("scsi1", "local-lvm:2"), ("name", "db1")]).await;
    let st = ok_task(&api, &r).await;
    assert_eq!(st["type"], "qmconfig");
    let c = api.get("/nodes/pve1/qemu/150/config").await;
    assert_eq!(c.data()["scsi1"], "local-lvm:vm-150-disk-1,size=2G");
    assert_eq!(c.data()["name"], "db1");
    // Deleting a disk detaches it as unused; deleting unused frees the volume.
    let r = api.put("/nodes/pve1/qemu/150/config", &[("delete", "scsi1")]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let c = api.get("/nodes/pve1/qemu/150/config").await;
    assert_eq!(c.data()["unused0"], "local-lvm:vm-150-disk-1");
    assert!(c.data().get("scsi1").is_none());
    api.put("/nodes/pve1/qemu/150/config", &[("delete", "unused0")]).await;
    assert!(!api.sim.sim().read().nodes["pve1"].storages["local-lvm"].volumes.contains_key("local-lvm:vm-150-disk-1"));
    // Parameter rules.
    let r = api.put("/nodes/pve1/qemu/150/config", &[]).await;
    assert_eq!(r.message(), "no options specified\n");
    let r = api.put("/nodes/pve1/qemu/150/config", &[("delete", "bogus")]).await;
    assert_eq!(r.error("delete"), "unknown option 'bogus'");
    let r = api.put("/nodes/pve1/qemu/150/config", &[("cores", "2"), ("delete", "cores")]).await;
    assert_eq!(r.error("delete"), "you can't use '-cores' and -delete cores' at the same time");
    let r = api.put("/nodes/pve1/qemu/150/config", &[("cores", "2"), ("skiplock", "1")]).await;
    assert_eq!(r.error("skiplock"), "Only root may use this option.");
    let r = api.put("/nodes/pve1/qemu/150/config", &[("sshkeys", "ssh-rsa%20AAAA")]).await;
    assert_eq!(r.message(), "SSH public key validation error\n");
    let r = api.put("/nodes/pve1/qemu/150/config", &[("cipassword", "x")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(api.get("/nodes/pve1/qemu/150/config").await.data()["cipassword"], "**********");
    let r = api.get_q("/nodes/pve1/qemu/150/config", &[("current", "1"), ("snapshot", "snap1")]).await;
    assert_eq!(r.error("current"), "cannot use 'snapshot' parameter with 'current'");
    let r = api.get("/nodes/pve1/qemu/999/config").await;
    assert_eq!(r.message(), "Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist\n");
}

#[tokio::test]
async fn running_vm_keeps_non_hotplug_changes_pending() {
    let api = Api::start().await;
    create_vm(&api, "155", &[]).await;
    ok_task(&api, &api.post("/nodes/pve1/qemu/155/status/start", &[]).await).await;
    api.put("/nodes/pve1/qemu/155/config", &[("cores", "8"), ("description", "hello")]).await;
    let pending = api.get("/nodes/pve1/qemu/155/pending").await;
    let rows = pending.data().as_array().unwrap();
    let cores = rows.iter().find(|r| r["key"] == "cores").unwrap();
    assert_eq!((cores["value"].as_str(), cores["pending"].as_str()), (Some("2"), Some("8")));
    let desc = rows.iter().find(|r| r["key"] == "description").unwrap();
    assert!(desc.get("pending").is_none(), "description is hot-pluggable: {desc}");
    assert_eq!(api.get("/nodes/pve1/qemu/155/config").await.data()["cores"], 8, "pending values shown by default");
    assert_eq!(api.get_q("/nodes/pve1/qemu/155/config", &[("current", "1")]).await.data()["cores"], 2);
    ok_task(&api, &api.post("/nodes/pve1/qemu/155/status/stop", &[]).await).await;
    let pending = api.get("/nodes/pve1/qemu/155/pending").await;
    assert!(pending.data().as_array().unwrap().iter().all(|r| r.get("pending").is_none()));
    assert_eq!(api.get_q("/nodes/pve1/qemu/155/config", &[("current", "1")]).await.data()["cores"], 8);
}

#[tokio::test]
async fn power_actions_and_their_errors() {
    let api = Api::start().await;
    create_vm(&api, "160", &[]).await;
    let base = "/nodes/pve1/qemu/160/status";
    // Stopped: shutdown and stop are no-ops in the task, reboot/suspend/resume refuse at once.
    for action in ["reboot", "suspend", "resume"] {
        let r = api.post(&format!("{base}/{action}"), &[]).await;
        assert_eq!((r.status, r.message()), (500, "VM 160 not running\n"), "{action}");
    }
    ok_task(&api, &api.post(&format!("{base}/stop"), &[]).await).await;
    let st = ok_task(&api, &api.post(&format!("{base}/start"), &[]).await).await;
    assert_eq!(st["type"], "qmstart");
    let cur = api.get(&format!("{base}/current")).await;
    let cur = cur.data();
    assert_eq!((cur["status"].as_str(), cur["qmpstatus"].as_str()), (Some("running"), Some("running")));
    assert!(cur["pid"].as_u64().is_some());
    assert_eq!(cur["ha"]["managed"], 0);
    assert_eq!(cur["vmid"], 160);
    // Start of a running VM fails inside the task.
    let err = failed_task(&api, &api.post(&format!("{base}/start"), &[]).await).await;
    assert_eq!(err, "VM 160 already running");
    // Suspend pauses; shutdown of a paused VM is refused; resume continues.
    let st = ok_task(&api, &api.post(&format!("{base}/suspend"), &[]).await).await;
    assert_eq!(st["type"], "qmpause");
    assert_eq!(api.get(&format!("{base}/current")).await.data()["qmpstatus"], "paused");
    let r = api.post(&format!("{base}/shutdown"), &[]).await;
    assert_eq!(r.message(), "VM is paused - cannot shutdown\n");
    ok_task(&api, &api.post(&format!("{base}/resume"), &[]).await).await;
    assert_eq!(api.get(&format!("{base}/current")).await.data()["qmpstatus"], "running");
    // Destroy refuses a running VM.
    let r = api.delete("/nodes/pve1/qemu/160", &[]).await;
    assert_eq!(r.message(), "VM 160 is running - destroy failed\n");
    let st = ok_task(&api, &api.post(&format!("{base}/reboot"), &[]).await).await;
    assert_eq!(st["type"], "qmreboot");
    ok_task(&api, &api.post(&format!("{base}/shutdown"), &[]).await).await;
    assert_eq!(api.get(&format!("{base}/current")).await.data()["status"], "stopped");
    // Suspend to disk: stopped with lock suspended and a state volume; resume starts it.
    ok_task(&api, &api.post(&format!("{base}/start"), &[]).await).await;
    let st = ok_task(&api, &api.post(&format!("{base}/suspend"), &[("todisk", "1")]).await).await;
    assert_eq!(st["type"], "qmsuspend");
    let cfg = api.get("/nodes/pve1/qemu/160/config").await;
    assert_eq!(cfg.data()["lock"], "suspended");
    assert!(cfg.data()["vmstate"].as_str().unwrap().starts_with("local-lvm:vm-160-state-suspend-"));
    ok_task(&api, &api.post(&format!("{base}/resume"), &[]).await).await;
    let cfg = api.get("/nodes/pve1/qemu/160/config").await;
    assert!(cfg.data().get("lock").is_none() && cfg.data().get("vmstate").is_none(), "{}", cfg.text);
    assert_eq!(api.get(&format!("{base}/current")).await.data()["status"], "running");
    // Templates do not start.
    let err = failed_task(&api, &api.post("/nodes/pve1/qemu/9000/status/start", &[]).await).await;
    assert_eq!(err, "you can't start a vm if it's a template");
}

#[tokio::test]
async fn destroy_frees_storage_and_honours_protection() {
    let api = Api::start().await;
    let before = local_lvm_used(&api, "pve1");
    create_vm(&api, "170", &[("protection", "1")]).await;
    assert!(local_lvm_used(&api, "pve1") > before);
    let r = api.delete("/nodes/pve1/qemu/170", &[]).await;
    assert_eq!(r.message(), "can't remove VM 170 - protection mode enabled\n");
    api.put("/nodes/pve1/qemu/170/config", &[("delete", "protection")]).await;
    // Parameters of DELETE travel in the query string.
    let r = api.delete("/nodes/pve1/qemu/170", &[("purge", "1"), ("destroy-unreferenced-disks", "1")]).await;
    let st = ok_task(&api, &r).await;
    assert_eq!(st["type"], "qmdestroy");
    assert_eq!(local_lvm_used(&api, "pve1"), before);
    let r = api.get("/nodes/pve1/qemu/170/status/current").await;
    assert_eq!(r.status, 500);
    // A template whose base volume linked clones use cannot go.
    ok_task(&api, &api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "171")]).await).await;
    let err = failed_task(&api, &api.delete("/nodes/pve1/qemu/9000", &[]).await).await;
    assert_eq!(err, "base volume 'local-lvm:base-9000-disk-0' is still in use by linked cloned");
    assert!(api.sim.sim().read().guests.contains_key(&9000));
}

#[tokio::test]
async fn locks_during_a_slow_task_refuse_other_operations() {
    let mut cfg = pve_sim::SimConfig::for_tests();
    cfg.time_scale = 1.0;
    cfg.task_durations.insert("qmsnapshot".into(), std::time::Duration::from_millis(700));
    for fast in ["qmcreate", "qmconfig", "qmdestroy", "qmstart", "resize"] {
        cfg.task_durations.insert(fast.into(), std::time::Duration::ZERO);
    }
    let api = Api::with(cfg).await;
    create_vm(&api, "180", &[]).await;
    // A snapshot task holds lock `snapshot` for its whole duration.
    let r = api.post("/nodes/pve1/qemu/180/snapshot", &[("snapname", "before")]).await;
    let upid = r.data().as_str().unwrap().to_string();
    assert_eq!(api.get("/nodes/pve1/qemu/180/config").await.data()["lock"], "snapshot");
    let r = api.put("/nodes/pve1/qemu/180/config", &[("cores", "3")]).await;
    assert_eq!((r.status, r.message()), (500, "VM is locked (snapshot)\n"));
    let err = failed_task(&api, &api.post("/nodes/pve1/qemu/180/status/start", &[]).await).await;
    assert_eq!(err, "VM is locked (snapshot)");
    let err = failed_task(&api, &api.delete("/nodes/pve1/qemu/180", &[]).await).await;
    assert_eq!(err, "VM is locked (snapshot)");
    let list = api.get("/nodes/pve1/qemu").await;
    let row = list.data().as_array().unwrap().iter().find(|v| v["vmid"] == 180).unwrap().clone();
    assert_eq!(row["lock"], "snapshot");
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "OK");
    assert!(api.get("/nodes/pve1/qemu/180/config").await.data().get("lock").is_none());
    let r = api.put("/nodes/pve1/qemu/180/config", &[("cores", "3")]).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn import_from_and_cdrom_alias() {
    let api = Api::start().await;
    let r = api
        .post(
            "/nodes/pve1/qemu",
            &[
                ("vmid", "190"),
                ("scsi0", "local-lvm:0,import-from=local-lvm:base-9000-disk-0,discard=on"),
                ("cdrom", "local:iso/debian-12.9.0-amd64-netinst.iso"),
                ("efidisk0", "local-lvm:1,efitype=4m"),
            ],
        )
        .await;
    ok_task(&api, &r).await;
    // Drives are created in sorted key order, like qemu-server does: efidisk0 first.
    let c = api.get("/nodes/pve1/qemu/190/config").await;
    assert_eq!(c.data()["scsi0"], "local-lvm:vm-190-disk-1,discard=on,size=3G", "size of the imported image");
    assert_eq!(c.data()["ide2"], "local:iso/debian-12.9.0-amd64-netinst.iso,media=cdrom");
    assert_eq!(c.data()["efidisk0"], "local-lvm:vm-190-disk-0,efitype=4m,size=4M");
    assert_eq!(c.data()["boot"], "order=scsi0;ide2");
    let r = api
        .post("/nodes/pve1/qemu", &[("vmid", "191"), ("scsi0", "local-lvm:4,import-from=local-lvm:base-9000-disk-0")])
        .await;
    assert_eq!(r.error("scsi0"), "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>");
    let r = api
        .post(
            "/nodes/pve1/qemu",
            &[("vmid", "191"), ("scsi0", "local-lvm:0,import-from=local:iso/debian-12.9.0-amd64-netinst.iso")],
        )
        .await;
    assert_eq!(
        r.error("scsi0"),
        "local:iso/debian-12.9.0-amd64-netinst.iso has wrong type 'iso' - needs to be 'images' or 'import'"
    );
}
