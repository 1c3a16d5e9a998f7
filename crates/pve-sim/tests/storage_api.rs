//! Storage endpoints: lists, content filters, allocation, upload (streamed multipart),
//! download-url, delete, and vzdump backups with capacity accounting.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Api, enc};
use pve_sim::SimConfig;

#[tokio::test]
async fn storage_lists_and_status() {
    let api = Api::start().await;
    let r = api.get("/nodes/pve1/storage").await;
    let rows = r.data().as_array().unwrap();
    let local = rows.iter().find(|s| s["storage"] == "local").unwrap();
    assert_eq!(local["type"], "dir");
    assert_eq!(local["content"], "backup,import,iso,vztmpl");
    assert_eq!(local["total"].as_u64().unwrap(), local["used"].as_u64().unwrap() + local["avail"].as_u64().unwrap());
    let r = api.get_q("/nodes/pve1/storage", &[("content", "images")]).await;
    let ids: Vec<&str> = r.data().as_array().unwrap().iter().map(|s| s["storage"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["local-lvm"]);
    let r = api.get("/nodes/pve1/storage/local-lvm/status").await;
    assert_eq!(r.data()["type"], "lvmthin");
    let r = api.get("/nodes/pve1/storage/nosuch/status").await;
    assert_eq!((r.status, r.message()), (500, "storage 'nosuch' does not exist\n"));
}

#[tokio::test]
async fn content_lists_and_filters() {
    let api = Api::start().await;
    let r = api.get_q("/nodes/pve1/storage/local/content", &[("content", "vztmpl")]).await;
    let rows = r.data().as_array().unwrap();
    assert!(rows.iter().any(|v| v["volid"] == "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"));
    assert!(rows.iter().all(|v| v["content"] == "vztmpl"));
    assert!(rows[0]["size"].is_string(), "dir storage sizes come as strings");
    let r = api.get_q("/nodes/pve1/storage/local/content", &[("content", "iso")]).await;
    assert_eq!(r.data().as_array().unwrap().len(), 2);
    let r = api.get_q("/nodes/pve1/storage/local-lvm/content", &[("vmid", "9000")]).await;
    let vols: Vec<&str> = r.data().as_array().unwrap().iter().map(|v| v["volid"].as_str().unwrap()).collect();
    assert_eq!(vols, vec!["local-lvm:base-9000-disk-0", "local-lvm:vm-9000-cloudinit"]);
    assert!(r.data()[0]["size"].is_u64());
    let r = api.get_q("/nodes/pve1/storage/local/content", &[("content", "bogus")]).await;
    assert_eq!(r.error("content"), "invalid format - invalid content type 'bogus'\n");
    let r = api
        .get(&format!("/nodes/pve1/storage/local/content/{}", enc("local:iso/debian-12.9.0-amd64-netinst.iso")))
        .await;
    assert_eq!(r.data()["path"], "/var/lib/vz/template/iso/debian-12.9.0-amd64-netinst.iso");
    assert_eq!(r.data()["format"], "iso");
    // The volume may also be given as a name on the storage of the path.
    let r = api.get("/nodes/pve1/storage/local-lvm/content/base-9000-disk-0").await;
    assert_eq!(r.data()["path"], "/dev/pve/base-9000-disk-0");
}

#[tokio::test]
async fn allocate_and_delete_volumes() {
    let api = Api::start().await;
    let r = api
        .post(
            "/nodes/pve1/storage/local-lvm/content",
            &[("vmid", "500"), ("filename", "vm-500-disk-0"), ("size", "4G")],
        )
        .await;
    assert_eq!(r.data(), "local-lvm:vm-500-disk-0");
    let r = api
        .post("/nodes/pve1/storage/local-lvm/content", &[("vmid", "500"), ("filename", "disk-1"), ("size", "4G")])
        .await;
    assert_eq!(r.message(), "illegal name 'disk-1' - should be 'vm-500-*'\n");
    let r = api
        .post(
            "/nodes/pve1/storage/local-lvm/content",
            &[("vmid", "500"), ("filename", "vm-500-disk-1"), ("size", "4T")],
        )
        .await;
    assert_eq!(r.error("size"), "value does not match the regex pattern");
    let r = api.delete(&format!("/nodes/pve1/storage/local-lvm/content/{}", enc("local-lvm:vm-500-disk-0")), &[]).await;
    let upid = r.data().as_str().unwrap().to_string();
    assert!(upid.contains(":imgdel:500@local-lvm:"), "{upid}");
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "OK");
    let r = api.get_q("/nodes/pve1/storage/local-lvm/content", &[("vmid", "500")]).await;
    assert!(r.data().as_array().unwrap().is_empty());
    // Volumes in use by a guest, and base volumes of linked clones, are refused in the task.
    let r =
        api.delete(&format!("/nodes/pve1/storage/local-lvm/content/{}", enc("local-lvm:vm-9000-cloudinit")), &[]).await;
    let upid = r.data().as_str().unwrap();
    assert_eq!(
        api.wait_task(upid).await["exitstatus"],
        "volume 'local-lvm:vm-9000-cloudinit' is still in use by VM 9000"
    );
    // With `delay`, a task that failed in time turns into the call's error.
    let r = api
        .delete(
            &format!("/nodes/pve1/storage/local-lvm/content/{}", enc("local-lvm:vm-9000-cloudinit")),
            &[("delay", "5")],
        )
        .await;
    assert_eq!((r.status, r.message()), (500, "volume 'local-lvm:vm-9000-cloudinit' is still in use by VM 9000\n"));
    // With `delay` a finished task answers null.
    api.post(
        "/nodes/pve1/storage/local-lvm/content",
        &[("vmid", "501"), ("filename", "vm-501-disk-0"), ("size", "1024")],
    )
    .await;
    let r = api.delete("/nodes/pve1/storage/local-lvm/content/vm-501-disk-0", &[("delay", "5")]).await;
    assert!(r.data().is_null(), "{}", r.text);
}

#[tokio::test]
async fn uploads_stream_and_verify_checksums() {
    use sha2::Digest;
    let api = Api::start().await;
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let digest = hex::encode(sha2::Sha256::digest(&payload));
    let form = reqwest::multipart::Form::new()
        .text("content", "iso")
        .text("checksum-algorithm", "sha256")
        .text("checksum", digest.clone())
        .part("filename", reqwest::multipart::Part::bytes(payload.clone()).file_name("tiny.iso"));
    let r = api.multipart("/nodes/pve1/storage/local/upload", form).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let upid = r.data().as_str().unwrap().to_string();
    assert!(upid.contains(":imgcopy::root@pam!nimbus:"), "{upid}");
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "OK");
    let r = api.get("/nodes/pve1/storage/local/content/iso/tiny.iso").await;
    assert_eq!(r.data()["size"], payload.len() as u64);
    // A wrong checksum fails the task.
    let form = reqwest::multipart::Form::new()
        .text("content", "iso")
        .text("checksum-algorithm", "sha256")
        .text("checksum", "00".repeat(32))
        .part("filename", reqwest::multipart::Part::bytes(payload).file_name("bad.iso"));
    let r = api.multipart("/nodes/pve1/storage/local/upload", form).await;
    let status = api.wait_task(r.data().as_str().unwrap()).await;
    assert!(status["exitstatus"].as_str().unwrap().starts_with("checksum mismatch: got '"), "{status}");
    // Wrong extension, and content the storage does not hold.
    let form = reqwest::multipart::Form::new()
        .text("content", "iso")
        .part("filename", reqwest::multipart::Part::bytes(vec![1, 2, 3]).file_name("x.qcow2"));
    let r = api.multipart("/nodes/pve1/storage/local/upload", form).await;
    assert_eq!(r.error("filename"), "wrong file extension");
    let form = reqwest::multipart::Form::new()
        .text("content", "iso")
        .part("filename", reqwest::multipart::Part::bytes(vec![1, 2, 3]).file_name("x.iso"));
    let r = api.multipart("/nodes/pve1/storage/local-lvm/upload", form).await;
    assert_eq!(r.message(), "storage 'local-lvm' does not support 'iso' content\n");
}

#[tokio::test]
async fn chunked_uploads_are_refused_like_pveproxy() {
    let api = Api::start().await;
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"abc"))]);
    let form = reqwest::multipart::Form::new()
        .text("content", "iso")
        .part("filename", reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(stream)).file_name("s.iso"));
    let r = api.multipart("/nodes/pve1/storage/local/upload", form).await;
    assert_eq!(r.status, 501);
    assert_eq!(r.text, "chunked transfer encoding not supported");
}

#[tokio::test]
async fn download_url_creates_or_fails() {
    let api = Api::start().await;
    let r = api
        .post(
            "/nodes/pve1/storage/local/download-url",
            &[("url", "https://cdimage.example.org/x.iso"), ("content", "iso"), ("filename", "x.iso")],
        )
        .await;
    let upid = r.data().as_str().unwrap().to_string();
    assert!(upid.contains(":download:x.iso:"), "{upid}");
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "OK");
    let r = api.get("/nodes/pve1/storage/local/content/iso/x.iso").await;
    assert!(r.data()["size"].as_u64().unwrap() >= 200 << 20);
    let r = api
        .post(
            "/nodes/pve1/storage/local/download-url",
            &[("url", "https://cdimage.example.org/x.iso"), ("content", "iso"), ("filename", "x.iso")],
        )
        .await;
    assert_eq!(r.message(), "refusing to override existing file '/var/lib/vz/template/iso/x.iso'\n");
    let r = api
        .post(
            "/nodes/pve1/storage/local/download-url",
            &[("url", "https://localhost:9/y.iso"), ("content", "iso"), ("filename", "y.iso")],
        )
        .await;
    let status = api.wait_task(r.data().as_str().unwrap()).await;
    assert_eq!(status["exitstatus"], "download failed: 500 Can't connect to localhost:9 (Connection refused)");
    let r = api
        .post(
            "/nodes/pve1/storage/local/download-url",
            &[("url", "ftp://x/y.iso"), ("content", "iso"), ("filename", "y.iso")],
        )
        .await;
    assert_eq!(r.error("url"), "value does not match the regex pattern");
}

#[tokio::test]
async fn vzdump_creates_backup_volumes() {
    let api = Api::start().await;
    let r = api
        .post(
            "/nodes/pve1/vzdump",
            &[
                ("vmid", "9000"),
                ("storage", "local"),
                ("compress", "zstd"),
                ("mode", "snapshot"),
                ("notes-template", "{{guestname}} on {{node}}"),
                ("protected", "1"),
            ],
        )
        .await;
    let upid = r.data().as_str().unwrap().to_string();
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "OK");
    let r = api.get_q("/nodes/pve1/storage/local/content", &[("content", "backup"), ("vmid", "9000")]).await;
    let b = &r.data()[0];
    let volid = b["volid"].as_str().unwrap();
    let re =
        regex::Regex::new(r"^local:backup/vzdump-qemu-9000-\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2}\.vma\.zst$").unwrap();
    assert!(re.is_match(volid), "{volid}");
    assert_eq!(b["format"], "vma.zst");
    assert_eq!(b["notes"], "debian-12-cloudinit on pve1");
    assert_eq!(b["protected"], 1);
    assert_eq!(b["vmid"], 9000);
    let r = api.get_q("/nodes/pve1/vzdump/extractconfig", &[("volume", volid)]).await;
    assert!(r.data().as_str().unwrap().contains("name: debian-12-cloudinit\n"));
    // Protected backups cannot be deleted.
    let r = api.delete(&format!("/nodes/pve1/storage/local/content/{}", enc(volid)), &[]).await;
    assert_eq!(api.wait_task(r.data().as_str().unwrap()).await["exitstatus"], format!("volume '{volid}' is protected"));
    // A guest on another node is skipped; storages without backup content are refused.
    let r = api.post("/nodes/pve1/vzdump", &[("vmid", "9010")]).await;
    let log = api.task_log(r.data().as_str().unwrap()).await;
    assert!(log.iter().any(|l| l == "INFO: skip external VMs: 9010"), "{log:?}");
    let r = api.post("/nodes/pve1/vzdump", &[("vmid", "9000"), ("storage", "local-lvm")]).await;
    assert_eq!(r.message(), "storage 'local-lvm' does not support backups\n");
    let r = api.post("/nodes/pve1/vzdump", &[]).await;
    assert_eq!(r.status, 500);
}

#[tokio::test]
async fn a_full_storage_fails_the_backup_task() {
    let api = Api::start().await;
    {
        let mut st = api.sim.sim().write();
        let local = st.nodes.get_mut("pve1").unwrap().storages.get_mut("local").unwrap();
        local.total = local.used() + 1024;
    }
    let r = api.post("/nodes/pve1/vzdump", &[("vmid", "9000"), ("compress", "zstd")]).await;
    let upid = r.data().as_str().unwrap().to_string();
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "job errors");
    let log = api.task_log(&upid).await;
    assert!(
        log.iter().any(|l| l.starts_with("ERROR: Backup of VM 9000 failed - vma_queue_write: write error")
            && l.contains("No space left on device")),
        "{log:?}"
    );
    let r = api.get_q("/nodes/pve1/storage/local/content", &[("content", "backup")]).await;
    assert!(r.data().as_array().unwrap().is_empty());
}

#[tokio::test]
async fn backups_lock_the_guest_while_running() {
    let mut d = HashMap::new();
    d.insert("vzdump".to_string(), Duration::from_millis(400));
    let api = Api::with(SimConfig { time_scale: 1.0, task_durations: d, ..SimConfig::for_tests() }).await;
    let r = api.post("/nodes/pve1/vzdump", &[("vmid", "9000")]).await;
    let upid = r.data().as_str().unwrap().to_string();
    let rows = api.get_q("/cluster/resources", &[("type", "vm")]).await;
    assert!(rows.data().as_array().unwrap().iter().any(|g| g["vmid"] == 9000 && g["lock"] == "backup"));
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "OK");
    let rows = api.get_q("/cluster/resources", &[("type", "vm")]).await;
    assert!(rows.data().as_array().unwrap().iter().any(|g| g["vmid"] == 9000 && g.get("lock").is_none()));
}

#[tokio::test]
async fn prunebackups_previews_and_removes_by_the_retention_rules() {
    let api = Api::start().await;
    let r = api.post("/nodes/pve1/vzdump", &[("vmid", "9000"), ("storage", "local"), ("compress", "zstd")]).await;
    let upid = r.data().as_str().unwrap().to_string();
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "OK");
    // Four more nightly archives of the same guest, a day apart, the oldest protected.
    let made = {
        let mut st = api.sim.sim().write();
        let local = st.nodes.get_mut("pve1").unwrap().storages.get_mut("local").unwrap();
        let first = local.volumes.values().find(|v| v.content == "backup").unwrap().clone();
        let mut made = vec![first.volid.clone()];
        for day in 1..=4i64 {
            let mut v = first.clone();
            v.ctime = first.ctime - day * 86_400;
            let when = chrono::DateTime::from_timestamp(v.ctime, 0).unwrap().with_timezone(&chrono::Local);
            v.volid = format!("local:backup/vzdump-qemu-9000-{}.vma.zst", when.format("%Y_%m_%d-%H_%M_%S"));
            v.protected = day == 4;
            local.volumes.insert(v.volid.clone(), v.clone());
            made.push(v.volid);
        }
        made
    };
    let q = [("vmid", "9000"), ("prune-backups", "keep-last=2")];
    let r = api.get_q("/nodes/pve1/storage/local/prunebackups", &q).await;
    let marks: Vec<(String, String)> = r
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["volid"].as_str().unwrap().to_owned(), b["mark"].as_str().unwrap().to_owned()))
        .collect();
    let expected: Vec<(String, String)> = made
        .iter()
        .zip(["keep", "keep", "remove", "remove", "protected"])
        .map(|(v, m)| (v.clone(), m.to_owned()))
        .collect();
    assert_eq!(marks, expected, "newest first, as PVE lists them");
    assert!(r.data()[0]["ctime"].is_i64() && r.data()[0]["type"] == "qemu" && r.data()[0]["vmid"] == 9000);
    // Without options: the storage's retention, none here, keeps everything.
    let r = api.get_q("/nodes/pve1/storage/local/prunebackups", &[("vmid", "9000")]).await;
    assert!(r.data().as_array().unwrap().iter().all(|b| b["mark"] != "remove"));
    let r = api.get_q("/nodes/pve1/storage/local/prunebackups", &[("prune-backups", "keep-all=1,keep-last=1")]).await;
    assert_eq!(r.status, 400, "{r:?}");

    let r = api.delete("/nodes/pve1/storage/local/prunebackups", &q).await;
    let upid = r.data().as_str().unwrap().to_string();
    assert!(upid.contains(":prunebackups:9000@local:"), "{upid}");
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "OK");
    let r = api.get_q("/nodes/pve1/storage/local/content", &[("content", "backup"), ("vmid", "9000")]).await;
    let mut left: Vec<String> =
        r.data().as_array().unwrap().iter().map(|b| b["volid"].as_str().unwrap().to_owned()).collect();
    left.sort();
    let mut kept = vec![made[0].clone(), made[1].clone(), made[4].clone()];
    kept.sort();
    assert_eq!(left, kept, "the two newest and the protected one remain");
}
