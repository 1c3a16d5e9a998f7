//! Backups against pve-sim: two instances on one node backed up at once run one after the other
//! (one backup lane per node: vzdump takes a node-wide lock; the one waiting shows `queued` with
//! why), each archive carries its job in its notes, and a retry adopts the archive an earlier
//! attempt made instead of making another. Scheduled backups run their policy's retention
//! (never removing a protected backup), and the plan's backup limit counts every archive.

use std::collections::HashMap;
use std::time::Duration;

use nimbus_db::backup_policies;
use nimbus_db::jobs::Enqueued;
use nimbus_db::operations;
use nimbus_db::schedules::NewSchedule;
use nimbus_domain::{InstanceId, JobStatus, MissedFirePolicy, Retention, ScheduleId};
use nimbus_jobs::BackupInstance;
use nimbus_jobs::operations::read_backup_notes;
use nimbus_proxmox::ContentQuery;
use pve_sim::SimConfig;

use nimbus_worker::backup::WAITING_FOR_LANE;

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

    // While they run, at most one guest of the node holds Proxmox's backup lock, and the job
    // that waits for the node's lane is queued, saying so.
    let mut most = 0;
    let mut seen_waiting = false;
    while !(h.job(jobs[0].job.id).await.status.is_final() && h.job(jobs[1].job.id).await.status.is_final()) {
        let locked =
            h.sim.sim().read().guests.values().filter(|g| g.node == NODE && g.lock() == Some("backup")).count();
        most = most.max(locked);
        for job in &jobs {
            let handle = h.job(job.job.id).await.handle();
            if handle.status == JobStatus::Queued && handle.waiting_for.as_deref() == Some(WAITING_FOR_LANE) {
                seen_waiting = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for job in &jobs {
        let j = h.job(job.job.id).await;
        assert_eq!(j.status, JobStatus::Succeeded, "{j:?}");
    }
    assert_eq!(most, 1, "one backup at a time on the node");
    assert!(seen_waiting, "one job waited for the node's lane, queued with the reason");
    let attempts: Vec<i32> = [h.job(jobs[0].job.id).await.attempts, h.job(jobs[1].job.id).await.attempts].into();
    assert_eq!(attempts, [1, 1], "waiting spends no attempt");
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
    // Each backup job that ended recorded `backup.completed` about its instance, in its own
    // transaction (the retried one twice: it ended twice).
    let completed: Vec<(String, String)> = sqlx::query_as(
        "select resource_id, data->>'id' from events where type = 'backup.completed' and tenant_id = $1 order by seq",
    )
    .bind(h.tenant.as_uuid())
    .fetch_all(h.db.pool())
    .await
    .unwrap();
    assert!(
        completed.iter().all(|(instance, _)| instances.iter().any(|i| i.id.to_string() == *instance)),
        "{completed:?}"
    );
    let for_again = completed.iter().filter(|(_, job)| *job == again.job.id.to_string()).count();
    assert_eq!(for_again, 2, "{completed:?}");
    worker.stop().await;
}

/// Enqueues a backup the way a policy's schedule fires it (its id in the payload).
async fn scheduled_backup(h: &Harness, instance: InstanceId, schedule: ScheduleId) -> Enqueued {
    let mut tx = h.db.pool().begin().await.unwrap();
    let job = BackupInstance { schedule_id: Some(schedule), ..BackupInstance::default() }.new_job();
    let enqueued = operations::enqueue(&mut tx, h.tenant, instance, job).await.unwrap();
    tx.commit().await.unwrap();
    h.push(&enqueued).await;
    enqueued
}

#[tokio::test]
async fn scheduled_backups_apply_the_retention_and_the_plan_limit_counts_every_backup() {
    // Backups a second apart at least: archive names have a one-second resolution.
    let durations = HashMap::from([("vzdump".to_owned(), Duration::from_millis(1100))]);
    let config = SimConfig { time_scale: 1.0, task_durations: durations, ..SimConfig::for_tests() };
    let h = Harness::with_sim(config).await;
    let plan = nimbus_db::plans::for_tenant(h.db.pool(), h.tenant).await.unwrap();
    nimbus_db::plans::set_backup_limits(h.db.pool(), plan.id, 2, 60).await.unwrap();
    let worker = h.start("backup-w2", 2).await;
    let (instance, provision) = h.accept("bk-ret", 3).await;
    h.push(&provision).await;
    assert_eq!(h.final_job(provision.job.id, Duration::from_secs(60)).await.status, JobStatus::Succeeded);
    let vmid = h.instance(instance.id).await.vmid.unwrap() as u32;
    let archives = || async {
        let mut listed = h.pve().node(NODE).storage("local").content(&ContentQuery::backups_of(vmid)).await.unwrap();
        listed.sort_by_key(|b| b.ctime);
        listed
    };

    // The policy: keep the last one.
    let mut job = BackupInstance::default().new_job();
    job.resources = vec![nimbus_domain::ResourceRef::instance(instance.id)];
    let schedule = NewSchedule {
        tenant: Some(h.tenant),
        name: "backups of bk-ret".into(),
        cron: "daily".into(),
        job,
        policy: MissedFirePolicy::LatestOnly,
        first_fire_at: chrono::Utc::now() + chrono::Duration::days(1),
    };
    let keep_last = Retention { keep_last: 1, ..Retention::default() };
    let mut tx = h.db.pool().begin().await.unwrap();
    let policy = backup_policies::put(&mut tx, h.tenant, instance.id, &schedule, keep_last).await.unwrap();
    tx.commit().await.unwrap();

    // A protected backup by hand, then two scheduled ones.
    let mut tx = h.db.pool().begin().await.unwrap();
    let protected = BackupInstance { protected: true, ..BackupInstance::default() }.new_job();
    let first = operations::enqueue(&mut tx, h.tenant, instance.id, protected).await.unwrap();
    tx.commit().await.unwrap();
    h.push(&first).await;
    assert_eq!(h.final_job(first.job.id, Duration::from_secs(30)).await.status, JobStatus::Succeeded);
    let second = scheduled_backup(&h, instance.id, policy.schedule_id).await;
    assert_eq!(h.final_job(second.job.id, Duration::from_secs(30)).await.status, JobStatus::Succeeded);
    assert_eq!(archives().await.len(), 2, "the protected one and the newest");

    // At the plan's limit (2), a scheduled backup still runs: its retention frees a place.
    let third = scheduled_backup(&h, instance.id, policy.schedule_id).await;
    let done = h.final_job(third.job.id, Duration::from_secs(30)).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    let kept = archives().await;
    let jobs: Vec<_> = kept.iter().map(|b| read_backup_notes(b.notes.as_deref().unwrap_or_default()).1).collect();
    assert_eq!(jobs, [Some(first.job.id), Some(third.job.id)], "the protected one and the newest: {kept:?}");
    assert_eq!(kept[0].protected, Some(true));

    // A backup by hand at the limit has no retention to free a place: refused, nothing made.
    let mut tx = h.db.pool().begin().await.unwrap();
    let manual =
        operations::enqueue(&mut tx, h.tenant, instance.id, BackupInstance::default().new_job()).await.unwrap();
    tx.commit().await.unwrap();
    h.push(&manual).await;
    let refused = h.final_job(manual.job.id, Duration::from_secs(30)).await;
    assert_eq!(refused.status, JobStatus::Failed);
    assert_eq!(refused.error.map(|e| e.code), Some(nimbus_domain::ErrorCode::BackupLimit));
    assert_eq!(archives().await.len(), 2);
    worker.stop().await;
}
