//! LXC instances: created from the node's `vztmpl` archive, started, addressed.

use std::time::Duration;

use nimbus_db::jobs;
use nimbus_domain::{ErrorCode, InstanceStatus, JobStatus};
use nimbus_worker::provision_vm::{Provision, Step, ownership_tag};
use nimbus_worker::step_machine::StepInfo;
use tokio_util::sync::CancellationToken;

use crate::support::{Harness, NODE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lxc_job_ends_with_a_running_container_with_an_address() {
    let h = Harness::new().await;
    let (instance, enqueued) = h.accept_lxc("ct-1", "debian-12-standard").await;
    h.push(&enqueued).await;
    let worker = h.start("w1", 4).await;

    let job = h.final_job(enqueued.job.id, Duration::from_secs(30)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    assert_eq!((job.progress, job.attempts), (100, 1));
    let done = h.instance(instance.id).await;
    assert_eq!(done.status, InstanceStatus::Running);
    assert!(done.ip_addresses.iter().any(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok()), "{:?}", done.ip_addresses);

    let vms = h.vms();
    assert_eq!(vms.len(), 1, "exactly one guest: {vms:?}");
    let (vmid, node, description) = &vms[0];
    assert_eq!(Some(*vmid as i32), done.vmid);
    assert_eq!(node, NODE);
    assert!(description.contains(&ownership_tag(instance.id)));
    let (kind, cfg) = {
        let sim = h.sim.sim().read();
        let g = &sim.guests[vmid];
        (format!("{:?}", g.kind), g.config.clone())
    };
    assert_eq!(kind, "Lxc");
    assert_eq!(cfg["hostname"], "ct-1");
    assert_eq!((cfg["cores"].as_str(), cfg["memory"].as_str()), ("2", "2048"));
    assert!(cfg["rootfs"].starts_with("local-lvm:") && cfg["rootfs"].contains("size=10G"), "{}", cfg["rootfs"]);
    assert!(cfg["net0"].contains("bridge=vmbr0") && cfg["net0"].contains("ip=dhcp"), "{}", cfg["net0"]);
    assert_eq!(cfg["unprivileged"], "1");

    let mut steps: Vec<String> = nimbus_db::jobs::events_after(h.db.pool(), job.id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| e.step)
        .collect();
    steps.dedup();
    let expected: Vec<&str> = Step::ALL[..5].iter().map(|s| s.done_name()).collect();
    assert_eq!(steps, expected);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lxc_job_for_a_missing_archive_fails_without_a_container() {
    let h = Harness::new().await;
    let (instance, enqueued) = h.accept_lxc("ct-2", "no-such-template").await;
    h.push(&enqueued).await;
    let worker = h.start("w1", 2).await;

    let job = h.final_job(enqueued.job.id, Duration::from_secs(20)).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.attempts, 1);
    assert_eq!(job.error.unwrap().code, ErrorCode::UnknownTemplate);
    assert_eq!(h.instance(instance.id).await.status, InstanceStatus::Failed);
    assert!(h.vms().is_empty());
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_crash_adopts_the_container() {
    let h = Harness::new().await;
    let (instance, enqueued) = h.accept_lxc("ct-crashy", "debian-12-standard").await;
    // A worker reserves the VMID (recorded), creates the container and dies before recording it.
    let crashed = h.env("crashed", 4).await;
    let job = jobs::claim(h.db.pool(), enqueued.job.id, "crashed", Duration::from_millis(500)).await.unwrap().unwrap();
    let mut p = Provision::load(&crashed, job, CancellationToken::new()).await.unwrap();
    p.execute(Step::ReserveVmid).await.unwrap();
    p.record(Step::ReserveVmid).await.unwrap();
    p.execute(Step::Clone).await.unwrap();
    let vmid = p.vmid().unwrap();
    drop(p);
    assert_eq!(h.vms().len(), 1);

    let worker = h.start("w2", 2).await;
    let job = h.final_job(enqueued.job.id, Duration::from_secs(30)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    assert_eq!(job.attempts, 2);
    let vms = h.vms();
    assert_eq!(vms.len(), 1, "the container was adopted, not created again: {vms:?}");
    assert_eq!(vms[0].0, vmid);
    assert_eq!(h.instance(instance.id).await.status, InstanceStatus::Running);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_restored_as_a_new_instance_gets_its_name_sizes_and_a_new_mac() {
    let h = Harness::new().await;
    let worker = h.start("w-ct-restore", 4).await;
    let (source, enqueued) = h.accept_lxc("ct-src", "debian-12-standard").await;
    h.push(&enqueued).await;
    assert_eq!(h.final_job(enqueued.job.id, Duration::from_secs(30)).await.status, JobStatus::Succeeded);
    let source = h.instance(source.id).await;
    let source_vmid = source.vmid.unwrap() as u32;
    let mut tx = h.db.pool().begin().await.unwrap();
    let backup = nimbus_jobs::BackupInstance::default().new_job();
    let backup = nimbus_db::operations::enqueue(&mut tx, h.tenant, source.id, backup).await.unwrap();
    tx.commit().await.unwrap();
    h.push(&backup).await;
    assert_eq!(h.final_job(backup.job.id, Duration::from_secs(30)).await.status, JobStatus::Succeeded);
    let query = nimbus_proxmox::ContentQuery::backups_of(source_vmid);
    let archive = h.pve().node(NODE).storage("local").content(&query).await.unwrap().remove(0).volid;
    assert!(archive.contains("vzdump-lxc-"), "{archive}");

    // The copy asks for more memory than the source had: the restored container gets it.
    let new = nimbus_db::instances::NewInstance {
        name: "ct-copy".into(),
        kind: source.kind,
        template: source.template.clone(),
        cores: 1,
        memory_mib: 4096,
        disk_gib: 12,
        ssh_keys: Vec::new(),
        node: Some(NODE.into()),
    };
    let restore = nimbus_jobs::ProvisionVm {
        template: source.template.clone(),
        template_vmid: 0,
        node: NODE.into(),
        kind: source.kind,
        vmid: None,
        from_backup: Some(archive),
    };
    let (copy, enqueued) = h.accept_job(&new, &restore.restore_as_new_job()).await;
    h.push(&enqueued).await;
    let job = h.final_job(enqueued.job.id, Duration::from_secs(30)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    let copy = h.instance(copy.id).await;
    assert_eq!(copy.status, InstanceStatus::Running);
    let copy_vmid = copy.vmid.unwrap() as u32;
    {
        let sim = h.sim.sim().read();
        let (theirs, ours) = (&sim.guests[&source_vmid].config, &sim.guests[&copy_vmid].config);
        assert_eq!(ours["hostname"], "ct-copy");
        assert!(ours["description"].contains(&ownership_tag(copy.id)), "{}", ours["description"]);
        assert_eq!((ours["cores"].as_str(), ours["memory"].as_str()), ("1", "4096"));
        assert!(ours["rootfs"].contains("size=12G"), "grown to the instance's disk: {}", ours["rootfs"]);
        let hwaddr = |net: &str| net.split(',').find(|p| p.starts_with("hwaddr=")).map(str::to_owned);
        assert_ne!(hwaddr(&ours["net0"]), hwaddr(&theirs["net0"]), "a new MAC");
    }
    worker.stop().await;
}
