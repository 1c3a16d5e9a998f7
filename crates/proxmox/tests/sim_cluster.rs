//! The client against `pve-sim`: cluster, node, task, pool and storage calls.

mod common;

use std::collections::HashSet;

use common::{WAIT, clone_vm, start, wait_ok};
use nimbus_proxmox::{
    Cf, Checksum, ContentQuery, DownloadUrl, ErrorClass, Params, PoolQuery, PoolUpdate, ResourceType, StorageListQuery,
    TaskListQuery, Timeframe, Upid, UploadContent,
};

#[tokio::test]
async fn version_nodes_and_node_status() {
    let s = start().await;
    let v = s.client.version().await.unwrap();
    assert!(v.release.starts_with("8."), "release {}", v.release);
    assert!(v.version.starts_with(&v.release), "{} / {}", v.version, v.release);
    assert!(!v.repoid.is_empty());

    let nodes = s.client.nodes().await.unwrap();
    let names: HashSet<_> = nodes.iter().map(|n| n.node.as_str()).collect();
    assert_eq!(names, HashSet::from(["pve1", "pve2", "pve3"]));
    assert!(nodes.iter().all(|n| n.status == "online"));
    assert!(nodes.iter().all(|n| n.maxmem.unwrap_or(0) > 0));

    let st = s.client.node("pve1").status().await.unwrap();
    assert!(st.memory.total.unwrap() > st.memory.used.unwrap());
    assert_eq!(st.loadavg.len(), 3);
    assert!(st.cpuinfo.cpus.unwrap() >= 1);
    assert!(st.pveversion.unwrap().starts_with("pve-manager/8."));
}

#[tokio::test]
async fn node_rrddata_has_pve8_point_counts() {
    let s = start().await;
    let node = s.client.node("pve1");
    for (tf, step) in [(Timeframe::Hour, 60), (Timeframe::Day, 1800), (Timeframe::Week, 3 * 3600)] {
        let pts = node.rrddata(tf, Some(Cf::Average)).await.unwrap();
        assert_eq!(pts.len(), 70, "{tf:?}");
        assert!(pts.windows(2).all(|w| w[1].time - w[0].time == step), "{tf:?} step");
        assert!(pts.iter().any(|p| p.get("cpu").is_some()));
        assert!(pts.iter().any(|p| p.get("memtotal").is_some()));
    }
    // Deterministic for a node and time: buckets present in both reads are equal.
    let a = node.rrddata(Timeframe::Day, None).await.unwrap();
    let b = node.rrddata(Timeframe::Day, None).await.unwrap();
    let same = a
        .iter()
        .filter_map(|p| b.iter().find(|q| q.time == p.time).map(|q| (p, q)))
        .filter(|(p, q)| p.time < b.last().unwrap().time && p == q)
        .count();
    assert!(same >= 60, "{same} equal buckets");
}

#[tokio::test]
async fn cluster_resources_and_nextid() {
    let s = start().await;
    let all = s.client.cluster_resources(None).await.unwrap();
    assert!(all.iter().any(|r| r.id == "node/pve1" && r.kind == "node"));
    assert!(all.iter().any(|r| r.id == "storage/pve1/local" && r.kind == "storage"));
    let vms = s.client.cluster_resources(Some(ResourceType::Vm)).await.unwrap();
    assert!(!vms.is_empty());
    assert!(vms.iter().all(|r| r.kind == "qemu" || r.kind == "lxc"));
    let templates: Vec<_> = vms.iter().filter(|r| r.template == Some(true)).collect();
    assert!(templates.len() >= 2 * 3, "templates on every node");
    for t in &templates {
        assert_eq!(t.id, format!("qemu/{}", t.vmid.unwrap()));
    }
    let storages = s.client.cluster_resources(Some(ResourceType::Storage)).await.unwrap();
    assert!(storages.iter().all(|r| r.kind == "storage"));

    let used: HashSet<u32> = vms.iter().filter_map(|r| r.vmid).collect();
    let next = s.client.next_id(None).await.unwrap();
    assert!(next >= 100);
    assert!(!used.contains(&next));
    assert_eq!(s.client.next_id(Some(next)).await.unwrap(), next);
    // nextid does not reserve: asking twice gives the same id.
    assert_eq!(s.client.next_id(None).await.unwrap(), next);
}

#[tokio::test]
async fn tasks_status_log_and_lists() {
    let s = start().await;
    let vmid = clone_vm(&s.client, "pve1", "task-list").await;
    let upid = s.client.node("pve1").qemu(vmid).start().await.unwrap();
    // Token requests run as the token: the UPID carries the full token id.
    assert_eq!(upid.user(), s.client.token_id());
    assert_eq!(upid.node(), "pve1");
    assert_eq!(upid.task_type(), "qmstart");
    assert_eq!(upid.id(), vmid.to_string());
    let outcome = wait_ok(&s.client, &upid).await;
    assert_eq!(outcome.exitstatus, "OK");
    assert_eq!(outcome.warnings, 0);

    let st = s.client.task_status(&upid).await.unwrap();
    assert_eq!(st.upid, upid.as_str());
    assert_eq!(st.status, "stopped");
    assert_eq!(st.exitstatus.as_deref(), Some("OK"));
    assert_eq!(st.task_type, "qmstart");
    // The status splits the token id into `user` and `tokenid` (pve-manager Tasks.pm).
    let (user, token_name) = s.client.token_id().split_once('!').unwrap();
    assert_eq!(st.user, user);
    assert_eq!(st.tokenid.as_deref(), Some(token_name));
    assert_eq!(st.succeeded(), Some(true));

    let log = s.client.task_log(&upid, 0, 50).await.unwrap();
    assert!(!log.lines.is_empty());
    assert_eq!(log.lines[0].n, 1);
    assert_eq!(log.lines.last().unwrap().t, "TASK OK");
    assert_eq!(log.total, Some(log.lines.len() as u64));
    let tail = s.client.task_log_tail(&upid, 1).await.unwrap();
    assert_eq!(tail, vec!["TASK OK".to_string()]);

    let node_tasks =
        s.client.node("pve1").tasks(&TaskListQuery { vmid: Some(vmid), ..Default::default() }).await.unwrap();
    assert!(node_tasks.iter().any(|t| t.upid == upid.as_str()));
    assert!(node_tasks.iter().all(|t| t.id.as_deref() == Some(&vmid.to_string())));
    let cluster_tasks = s.client.cluster_tasks().await.unwrap();
    assert!(cluster_tasks.iter().any(|t| t.upid == upid.as_str()));

    // A well-formed UPID of a task that never ran.
    let unknown = Upid::parse("UPID:pve1:00001234:00ABCDEF:65000000:qmstart:100:root@pam:").unwrap();
    let err = s.client.task_status(&unknown).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(err.param_errors().unwrap()["upid"].contains("no such task"));
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn pools_lifecycle() {
    let s = start().await;
    let vmid = clone_vm(&s.client, "pve1", "pooled").await;
    s.client.create_pool("nimbus-test", Some("integration")).await.unwrap();
    let pools = s.client.pools(&PoolQuery::default()).await.unwrap();
    let p = pools.iter().find(|p| p.poolid == "nimbus-test").unwrap();
    assert_eq!(p.comment.as_deref(), Some("integration"));

    s.client.update_pool(&PoolUpdate::add_vms("nimbus-test", &[vmid])).await.unwrap();
    let details = s.client.pool("nimbus-test").await.unwrap();
    assert!(details.members.iter().any(|m| m.vmid == Some(vmid)));
    let filtered = s
        .client
        .pools(&PoolQuery { poolid: Some("nimbus-test".into()), member_type: Some("qemu".into()) })
        .await
        .unwrap();
    assert!(filtered[0].members.iter().any(|m| m.id == format!("qemu/{vmid}")));
    let res = s.client.cluster_resources(Some(ResourceType::Vm)).await.unwrap();
    let r = res.iter().find(|r| r.vmid == Some(vmid)).unwrap();
    assert_eq!(r.pool.as_deref(), Some("nimbus-test"));

    s.client.update_pool(&PoolUpdate::remove_vms("nimbus-test", &[vmid])).await.unwrap();
    assert!(s.client.pool("nimbus-test").await.unwrap().members.is_empty());
    s.client.delete_pool("nimbus-test").await.unwrap();
    let pools = s.client.pools(&PoolQuery::default()).await.unwrap();
    assert!(pools.iter().all(|p| p.poolid != "nimbus-test"));
    let err = s.client.pool("nimbus-test").await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    let dup = s.client.create_pool("dup", None).await;
    assert!(dup.is_ok());
    let err = s.client.create_pool("dup", None).await.unwrap_err();
    assert!(err.is_already_exists(), "{err}");
}

#[tokio::test]
async fn storage_list_and_content() {
    let s = start().await;
    let node = s.client.node("pve1");
    let list = node.storage_list(&StorageListQuery::default()).await.unwrap();
    let local = list.iter().find(|st| st.storage == "local").unwrap();
    let lvm = list.iter().find(|st| st.storage == "local-lvm").unwrap();
    assert!(local.content.contains("iso") && local.content.contains("backup"));
    assert!(lvm.content.contains("images"));
    assert!(local.total.unwrap() >= local.used.unwrap());
    let iso_capable =
        node.storage_list(&StorageListQuery { content: Some("iso".into()), ..Default::default() }).await.unwrap();
    assert!(iso_capable.iter().all(|st| st.content.contains("iso")));
    assert!(iso_capable.iter().any(|st| st.storage == "local"));

    let isos = node.storage("local").content(&ContentQuery::content("iso")).await.unwrap();
    assert!(!isos.is_empty());
    assert!(isos.iter().all(|c| c.volid.starts_with("local:iso/")));
    assert!(isos.iter().all(|c| c.size.unwrap_or(0) > 0));
    let tmpl = node.storage("local").content(&ContentQuery::content("vztmpl")).await.unwrap();
    assert!(tmpl.iter().all(|c| c.volid.starts_with("local:vztmpl/")));
    assert!(!tmpl.is_empty());
}

#[tokio::test]
async fn upload_file_and_reader_then_delete() {
    let s = start().await;
    let storage = s.client.node("pve1").storage("local");

    let dir = std::env::temp_dir().join(format!("nimbus-proxmox-upload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("nimbus-test.iso");
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();

    let upid = storage.upload_file(UploadContent::Iso, &path, None).await.unwrap();
    assert_eq!(upid.task_type(), "imgcopy");
    assert_eq!(upid.id(), "");
    wait_ok(&s.client, &upid).await;
    let isos = storage.content(&ContentQuery::content("iso")).await.unwrap();
    let up = isos.iter().find(|c| c.volid == "local:iso/nimbus-test.iso").expect("uploaded ISO listed");
    assert_eq!(up.size, Some(data.len() as u64));

    // From an AsyncRead of known length, with a checksum PVE verifies.
    let payload = b"container template bytes".repeat(1000);
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&payload))
    };
    let len = payload.len() as u64;
    let upid = storage
        .upload_reader(
            UploadContent::Vztmpl,
            "nimbus-test.tar.zst",
            std::io::Cursor::new(payload),
            len,
            Some(&Checksum { algorithm: "sha256".into(), value: sha }),
        )
        .await
        .unwrap();
    wait_ok(&s.client, &upid).await;
    let tmpl = storage.content(&ContentQuery::content("vztmpl")).await.unwrap();
    let t = tmpl.iter().find(|c| c.volid == "local:vztmpl/nimbus-test.tar.zst").expect("uploaded template listed");
    assert_eq!(t.size, Some(len));

    let del = storage.delete_volume("local:iso/nimbus-test.iso").await.unwrap();
    assert_eq!(del.task_type(), "imgdel");
    wait_ok(&s.client, &del).await;
    let isos = storage.content(&ContentQuery::content("iso")).await.unwrap();
    assert!(isos.iter().all(|c| c.volid != "local:iso/nimbus-test.iso"));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn download_url_runs_a_download_task() {
    let s = start().await;
    let storage = s.client.node("pve1").storage("local");
    let upid = storage
        .download_url(&DownloadUrl::new(
            UploadContent::Iso,
            "fetched.iso",
            "https://example.invalid/images/fetched.iso",
        ))
        .await
        .unwrap();
    assert_eq!(upid.task_type(), "download");
    // Whatever the simulator does with the URL, the task ends within the deadline.
    match s.client.wait_task(&upid, WAIT).await {
        Ok(_) => {}
        Err(nimbus_proxmox::PveError::TaskFailed { log_tail, .. }) => assert!(!log_tail.is_empty()),
        Err(e) => panic!("unexpected error {e}"),
    }
    // A URL that is not http(s) fails the schema pattern.
    let err = storage
        .download_url(&DownloadUrl::new(UploadContent::Iso, "x.iso", "ftp://example.invalid/x.iso"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(err.param_errors().unwrap().contains_key("url"));
}

#[tokio::test]
async fn escape_hatch_reaches_unmodelled_endpoints() {
    let s = start().await;
    let v = s.client.get_json("/cluster/status", &Params::new()).await.unwrap();
    assert!(v.as_array().is_some_and(|a| !a.is_empty()));
    let defaults = s.client.get_json("nodes/pve1/vzdump/defaults", &Params::new()).await.unwrap();
    assert!(defaults.is_object());
}

#[tokio::test]
async fn loose_json_shapes_that_the_typed_client_absorbs() {
    let s = start().await;
    // nextid is a JSON string (Perl stringification); next_id() decodes it.
    let raw = s.client.get_json("/cluster/nextid", &Params::new()).await.unwrap();
    assert!(raw.is_string(), "{raw}");
    assert_eq!(raw.as_str().unwrap().parse::<u32>().unwrap(), s.client.next_id(None).await.unwrap());
    // Booleans are 0/1 and a template's pid is null or absent.
    let list = s.client.get_json("/nodes/pve1/qemu", &Params::new()).await.unwrap();
    let template = list.as_array().unwrap().iter().find(|g| g["template"] == 1).expect("a template, flagged 1");
    assert!(template.get("pid").is_none_or(|p| p.is_null()), "{template}");
    let typed = s.client.node("pve1").qemu_list().await.unwrap();
    let t = typed.iter().find(|g| g.template == Some(true)).unwrap();
    assert_eq!(t.pid, None);
}
