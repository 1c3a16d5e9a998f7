//! Backups against pve-sim: two instances on one node backed up at once run one after the other
//! (one backup lane per node: vzdump takes a node-wide lock), each archive carries its job in
//! its notes, and a retry adopts the archive an earlier attempt made instead of making another.

use std::collections::HashMap;
use std::time::Duration;

use nimbus_db::jobs::Enqueued;
use nimbus_db::operations;
use nimbus_domain::{InstanceId, JobStatus};
use nimbus_jobs::BackupInstance;
use nimbus_jobs::operations::read_backup_notes;
use nimbus_proxmox::ContentQuery;
use pve_sim::SimConfig;

use crate::support::{Harness, NODE};

/// Enqueues a backup of `instance` as the API does, and pushes it.
async fn back_up(h: &Harness, instance: InstanceId, note: &str) -> Enqueued {
    let mut tx = h.db.pool().begin().await.unwrap();
    let job = BackupInstance { note: Some(note.into()), ..BackupInstance::default() }.new_job();
    let enqueued = operations::enqueue(&mut tx, h.tenant, instance, job).await.unwrap();
    tx.commit().await.unwrap();
    h.push(&enqueued).await;
    enqueued
}

#[tokio::test]
async fn backups_on_one_node_take_turns_and_name_their_jobs() {
    // Real time for backups (600 ms each), next to nothing for the rest.
    let ms = Duration::from_millis;
    let durations = HashMap::from(
        [("qmclone", 20), ("qmconfig", 10), ("resize", 10), ("qmstart", 10), ("vzdump", 600)]
            .map(|(t, d)| (t.to_owned(), ms(d))),
    );
    let config = SimConfig { time_scale: 1.0, task_durations: durations, ..SimConfig::for_tests() };
    let h = Harness::with_sim(config).await;
    let worker = h.start("backup-w1", 4).await;
    let mut instances = Vec::new();
    for name in ["bk-1", "bk-2"] {
        let (instance, provision) = h.accept(name, 3).await;
        h.push(&provision).await;
        assert_eq!(h.final_job(provision.job.id, Duration::from_secs(60)).await.status, JobStatus::Succeeded);
        instances.push(h.instance(instance.id).await);
    }
    let jobs = [back_up(&h, instances[0].id, "first").await, back_up(&h, instances[1].id, "second").await];

    // While they run, at most one guest of the node holds Proxmox's backup lock.
    let mut most = 0;
    let mut seen_both_jobs_running = false;
    while !(h.job(jobs[0].job.id).await.status.is_final() && h.job(jobs[1].job.id).await.status.is_final()) {
        let locked =
            h.sim.sim().read().guests.values().filter(|g| g.node == NODE && g.lock() == Some("backup")).count();
        most = most.max(locked);
        let running = [h.job(jobs[0].job.id).await.status, h.job(jobs[1].job.id).await.status];
        seen_both_jobs_running |= running.iter().all(|s| *s == JobStatus::Running);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for job in &jobs {
        let j = h.job(job.job.id).await;
        assert_eq!(j.status, JobStatus::Succeeded, "{j:?}");
    }
    assert_eq!(most, 1, "one backup at a time on the node");
    assert!(seen_both_jobs_running, "both were claimed at once; one waited for the node's lane");
    for (job, note) in jobs.iter().zip(["first", "second"]) {
        assert_eq!(h.job(job.job.id).await.status, JobStatus::Succeeded);
        let vmid = instances.iter().find(|i| Some(i.id) == job.job.instance()).unwrap().vmid.unwrap() as u32;
        let archives = h.pve().node(NODE).storage("local").content(&ContentQuery::backups_of(vmid)).await.unwrap();
        assert_eq!(archives.len(), 1, "{archives:?}");
        let notes = archives[0].notes.as_deref().unwrap_or_default();
        assert_eq!(read_backup_notes(notes), (Some(note.to_owned()), Some(job.job.id)));
    }

    // A retry of a backup whose archive exists adopts it.
    let again = back_up(&h, instances[0].id, "first").await;
    let vmid = instances[0].vmid.unwrap() as u32;
    let before = h.pve().node(NODE).storage("local").content(&ContentQuery::backups_of(vmid)).await.unwrap();
    let first_again = h.final_job(again.job.id, Duration::from_secs(30)).await;
    assert_eq!(first_again.status, JobStatus::Succeeded, "{first_again:?}");
    let after = h.pve().node(NODE).storage("local").content(&ContentQuery::backups_of(vmid)).await.unwrap();
    assert_eq!(after.len(), before.len() + 1, "a new job makes a new archive");
    sqlx::query("update jobs set status = 'queued', attempts = 1, finished_at = null, step = null where id = $1")
        .bind(again.job.id.as_uuid())
        .execute(h.db.pool())
        .await
        .unwrap();
    h.push(&again).await;
    assert_eq!(h.final_job(again.job.id, Duration::from_secs(30)).await.status, JobStatus::Succeeded);
    let adopted = h.pve().node(NODE).storage("local").content(&ContentQuery::backups_of(vmid)).await.unwrap();
    assert_eq!(adopted.len(), after.len(), "the retry found its archive and made none");
    worker.stop().await;
}
