//! Restoring backups against pve-sim with real worker processes: `kill -9` of the worker in the
//! middle of a restore into a new instance, and another finishes it with exactly one new guest
//! (the instance's name, tag and a new MAC, running); then a restore over the source's own guest
//! keeps one guest under its VMID.

use std::collections::HashMap;
use std::time::Duration;

use nimbus_db::instances::NewInstance;
use nimbus_domain::{InstanceStatus, JobStatus};
use nimbus_jobs::{BackupInstance, ProvisionVm};
use nimbus_proxmox::ContentQuery;
use nimbus_worker::provision_vm::ownership_tag;
use pve_sim::SimConfig;

use crate::support::{Harness, NODE, Workers, wait_until};

fn slow_restore_sim() -> SimConfig {
    let ms = Duration::from_millis;
    SimConfig {
        time_scale: 1.0,
        task_durations: HashMap::from([
            ("qmclone".to_owned(), ms(200)),
            ("qmconfig".to_owned(), ms(100)),
            ("resize".to_owned(), ms(100)),
            ("qmstart".to_owned(), ms(200)),
            ("vzdump".to_owned(), ms(300)),
            ("qmrestore".to_owned(), ms(3000)),
            ("qmdestroy".to_owned(), ms(300)),
        ]),
        guest_boot_time: ms(500),
        ..SimConfig::for_tests()
    }
}

/// The MAC of a guest's `net0`.
fn mac(h: &Harness, vmid: u32) -> String {
    let st = h.sim.sim().read();
    let net0 = st.guests[&vmid].config.get("net0").cloned().unwrap_or_default();
    net0.split(',')
        .find_map(|p| p.split_once('=').filter(|(k, _)| *k == "virtio").map(|(_, v)| v.to_owned()))
        .unwrap_or(net0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_killed_mid_way_resumes_with_one_new_guest_and_restores_in_place() {
    let h = Harness::with_sim(slow_restore_sim()).await;
    let mut workers = Workers::default();
    workers.spawn(&h, "worker-a");
    let (source, provision) = h.accept("rs-source", 5).await;
    h.push(&provision).await;
    assert_eq!(h.final_job(provision.job.id, Duration::from_secs(60)).await.status, JobStatus::Succeeded);
    let source = h.instance(source.id).await;
    let source_vmid = source.vmid.unwrap() as u32;

    let mut tx = h.db.pool().begin().await.unwrap();
    let backup = BackupInstance::default().new_job();
    let backup = nimbus_db::operations::enqueue(&mut tx, h.tenant, source.id, backup).await.unwrap();
    tx.commit().await.unwrap();
    h.push(&backup).await;
    assert_eq!(h.final_job(backup.job.id, Duration::from_secs(30)).await.status, JobStatus::Succeeded);
    let archive = h.pve().node(NODE).storage("local").content(&ContentQuery::backups_of(source_vmid)).await.unwrap();
    let volume = archive[0].volid.clone();

    // Restore as new, as `POST /v1/vms {fromBackup}` writes it.
    let new = NewInstance {
        name: "rs-copy".into(),
        kind: source.kind,
        template: source.template.clone(),
        cores: source.cores,
        memory_mib: source.memory_mib,
        disk_gib: source.disk_gib,
        ssh_keys: source.ssh_keys.clone(),
        node: Some(NODE.into()),
    };
    let restore = ProvisionVm {
        template: source.template.clone(),
        template_vmid: 0,
        node: NODE.into(),
        kind: source.kind,
        vmid: None,
        from_backup: Some(volume.clone()),
    };
    let (copy, enqueued) = h.accept_job(&new, &restore.restore_as_new_job()).await;
    h.push(&enqueued).await;
    let job_id = enqueued.job.id;
    let mid_restore = wait_until(Duration::from_secs(30), || async {
        let job = h.job(job_id).await;
        let restoring = h
            .sim
            .sim()
            .read()
            .guests
            .values()
            .any(|g| g.vmid != source_vmid && !g.is_template() && g.lock() == Some("create"));
        job.locked_by.as_deref() == Some("worker-a") && job.step.as_deref() == Some("vmid_reserved") && restoring
    })
    .await;
    assert!(mid_restore, "worker A never reached the restore: {:?}", h.job(job_id).await);
    workers.kill("worker-a");
    workers.spawn(&h, "worker-b");
    let job = h.final_job(job_id, Duration::from_secs(60)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    assert_eq!(job.kind, nimbus_domain::JobKind::Restore);

    let copy = h.instance(copy.id).await;
    assert_eq!(copy.status, InstanceStatus::Running);
    let copy_vmid = copy.vmid.unwrap() as u32;
    assert_ne!(copy_vmid, source_vmid);
    let vms = h.vms();
    assert_eq!(vms.len(), 2, "the source and one restored guest, no stray: {vms:?}");
    let restored = vms.iter().find(|v| v.0 == copy_vmid).expect("the copy's guest");
    assert!(restored.2.contains(&ownership_tag(copy.id)), "the copy's own tag: {}", restored.2);
    assert_ne!(mac(&h, copy_vmid), mac(&h, source_vmid), "a new MAC");
    assert_eq!(h.sim.sim().read().guests[&copy_vmid].name(), "rs-copy");

    // In place: the source's guest is replaced under its VMID.
    let in_place = ProvisionVm { vmid: Some(source_vmid), ..restore }.restore_in_place_job();
    let mut tx = h.db.pool().begin().await.unwrap();
    let live = [InstanceStatus::Running, InstanceStatus::Stopped];
    nimbus_db::operations::lock(&mut tx, h.tenant, source.id, &live).await.unwrap();
    let enqueued = nimbus_db::operations::enqueue(&mut tx, h.tenant, source.id, in_place).await.unwrap();
    tx.commit().await.unwrap();
    h.push(&enqueued).await;
    let job = h.final_job(enqueued.job.id, Duration::from_secs(60)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    let vms = h.vms();
    assert_eq!(vms.len(), 2, "still one guest each: {vms:?}");
    let own = vms.iter().find(|v| v.0 == source_vmid).expect("the source keeps its VMID");
    assert!(own.2.contains(&ownership_tag(source.id)));
    assert_eq!(h.instance(source.id).await.status, InstanceStatus::Running);
    workers.assert_alive("worker-b");
    drop(workers);
}
