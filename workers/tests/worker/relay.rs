//! The outbox relay and lease recovery.

use std::time::Duration;

use nimbus_db::outbox;
use nimbus_domain::{InstanceStatus, JobStatus};
use nimbus_jobs::Queues;
use nimbus_worker::relay::{Relay, RelayConfig};

use crate::support::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_accepted_while_redis_was_down_runs_once_it_is_back() {
    let h = Harness::new().await;
    // Accepted with Redis unreachable: the API's push failed, the outbox row stays.
    let (instance, enqueued) = h.accept("late", 5).await;
    let unreachable = Queues::new("redis://127.0.0.1:1/0", h.key_prefix()).unwrap();
    let config = RelayConfig { push_timeout: Duration::from_secs(2), ..RelayConfig::default() };
    let down = Relay::new(h.db.pool().clone(), unreachable, config.clone());
    assert!(down.tick().await.is_err());
    assert_eq!(outbox::backlog(h.db.pool()).await.unwrap(), 1, "nothing is lost while Redis is down");

    // Redis is back: one tick moves the row.
    let up = Relay::new(h.db.pool().clone(), h.queues(), config);
    assert_eq!(up.tick().await.unwrap(), 1);
    assert_eq!(outbox::backlog(h.db.pool()).await.unwrap(), 0);
    assert_eq!(up.tick().await.unwrap(), 0, "a pushed row is not pushed again");
    let queue = h.queues().queue("provision").await.unwrap();
    assert_eq!(queue.stats().await.unwrap().waiting, 1);

    let worker = h.start("w1", 2).await;
    let job = h.final_job(enqueued.job.id, Duration::from_secs(30)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    assert_eq!(h.instance(instance.id).await.status, InstanceStatus::Running);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_recovery_fails_the_instance_of_a_job_out_of_attempts() {
    let h = Harness::new().await;
    let (instance, enqueued) = h.accept("orphan", 1).await;
    // Its only attempt's worker dies without renewing.
    nimbus_db::jobs::claim(h.db.pool(), enqueued.job.id, "dead", Duration::from_millis(100)).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let recovered = nimbus_worker::recovery::tick(h.db.pool()).await.unwrap();
    assert_eq!(recovered.failed, vec![enqueued.job.id]);
    assert_eq!(h.job(enqueued.job.id).await.status, JobStatus::Failed);
    assert_eq!(h.instance(instance.id).await.status, InstanceStatus::Failed);
    assert_eq!(nimbus_db::instances::usage(h.db.pool(), h.tenant).await.unwrap().instances, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_lost_between_commit_and_push_is_found_by_the_sweep() {
    let h = Harness::new().await;
    // An earlier job waits in Redis, not consumed yet.
    let (_, waiting) = h.accept("waiting", 5).await;
    h.push(&waiting).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Then an API process commits a create and dies before its push: no message, no outbox row.
    let (lost_instance, lost) = h.accept("lost", 5).await;
    sqlx::query("delete from outbox where job_id = $1").bind(lost.job.id.as_uuid()).execute(h.db.pool()).await.unwrap();

    let config = RelayConfig { sweep_margin: Duration::ZERO, ..RelayConfig::default() };
    let relay = Relay::new(h.db.pool().clone(), h.queues(), config);
    // Redis holds a message older than the job: its own may be behind it, so it is not lost yet.
    assert_eq!(relay.sweep().await.unwrap(), 0);

    let worker = h.start("w1", 2).await;
    assert_eq!(h.final_job(waiting.job.id, Duration::from_secs(30)).await.status, JobStatus::Succeeded);
    // The stream is drained and the job is still queued: its dispatch was lost.
    assert_eq!(relay.sweep().await.unwrap(), 1);
    assert_eq!(relay.sweep().await.unwrap(), 0, "owed once");
    let job = h.final_job(lost.job.id, Duration::from_secs(30)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    assert_eq!(h.instance(lost_instance.id).await.status, InstanceStatus::Running);
    worker.stop().await;
}
