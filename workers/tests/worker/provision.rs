//! The provision job end to end: success, retries on transient faults, clean failures,
//! duplicate deliveries, resuming after a crash.

use std::time::Duration;

use nimbus_db::instances;
use nimbus_db::jobs;
use nimbus_domain::{ErrorCode, InstanceStatus, JobStatus};
use nimbus_worker::provision_vm::{self, Outcome, Provision, Step, ownership_tag};
use nimbus_worker::step_machine::StepInfo;
use tokio_util::sync::CancellationToken;

use crate::support::{Harness, NODE, wait_until};

const LOCK_TIMEOUT: &str = "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provision_job_ends_with_a_running_instance_and_one_vm() {
    let h = Harness::new().await;
    let (instance, enqueued) = h.accept("web-1", 5).await;
    h.push(&enqueued).await;
    let worker = h.start("w1", 4).await;

    let job = h.final_job(enqueued.job.id, Duration::from_secs(30)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    assert_eq!((job.progress, job.attempts), (100, 1));
    let done = h.instance(instance.id).await;
    assert_eq!(done.status, InstanceStatus::Running);
    assert_eq!(done.node.as_deref(), Some(NODE));
    assert!(done.ip_addresses.iter().any(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok()), "{:?}", done.ip_addresses);

    let vms = h.vms();
    assert_eq!(vms.len(), 1, "{vms:?}");
    let (vmid, node, description) = &vms[0];
    assert_eq!(Some(*vmid as i32), done.vmid);
    assert_eq!(node, NODE);
    assert!(description.contains(&ownership_tag(instance.id)));
    // The guest got what the instance asked for.
    let cfg = h.sim.sim().read().guests[vmid].config.clone();
    assert_eq!((cfg["cores"].as_str(), cfg["memory"].as_str()), ("2", "2048"));
    assert_eq!(cfg["ciuser"], "nimbus");
    assert_eq!(cfg["ipconfig0"], "ip=dhcp");
    assert!(cfg["sshkeys"].contains("ssh-ed25519"));
    assert!(cfg["scsi0"].contains("size=10G"), "{}", cfg["scsi0"]);
    assert_eq!(jobs::get(h.db.pool(), job.id).await.unwrap().payload["vmid"], *vmid);

    // Every step left an event, in order (completion repeats the last step).
    let mut steps: Vec<String> =
        jobs::events_after(h.db.pool(), job.id, 0, 100).await.unwrap().into_iter().filter_map(|e| e.step).collect();
    steps.dedup();
    let expected: Vec<&str> = Step::ALL[..5].iter().map(|s| s.done_name()).collect();
    assert_eq!(steps, expected);
    worker.stop().await;
    assert_eq!(h.queues().queue("provision").await.unwrap().stats().await.unwrap(), Default::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_fault_is_retried_and_the_job_then_succeeds() {
    let h = Harness::new().await;
    h.sim.faults().add_error("POST /api2/json/nodes/pve1/qemu/9000/clone", 1.0, 500, LOCK_TIMEOUT);
    let (instance, enqueued) = h.accept("retry-me", 5).await;
    h.push(&enqueued).await;
    let worker = h.start("w1", 2).await;

    // The first attempt fails on the lock and is scheduled again with the error recorded.
    let failed_once = wait_until(Duration::from_secs(10), || async {
        let j = h.job(enqueued.job.id).await;
        j.attempts >= 1 && j.error.as_ref().is_some_and(|e| e.code == ErrorCode::ProxmoxUnavailable && e.retryable)
    })
    .await;
    assert!(failed_once, "{:?}", h.job(enqueued.job.id).await);
    h.sim.faults().clear();

    let job = h.final_job(enqueued.job.id, Duration::from_secs(30)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    assert!(job.attempts >= 2, "attempts {}", job.attempts);
    assert_eq!(job.error, None, "success clears the last error");
    assert_eq!(h.instance(instance.id).await.status, InstanceStatus::Running);
    assert_eq!(h.vms().len(), 1);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stays_down_exhausts_the_attempts_and_fails_cleanly() {
    let h = Harness::new().await;
    h.sim.faults().set_node_down(NODE, true);
    let (instance, enqueued) = h.accept("down-node", 3).await;
    h.push(&enqueued).await;
    let worker = h.start("w1", 2).await;

    let job = h.final_job(enqueued.job.id, Duration::from_secs(30)).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.attempts, 3);
    let error = job.error.unwrap();
    assert_eq!(error.code, ErrorCode::AttemptsExhausted);
    assert!(error.message.contains("3 attempts"), "{}", error.message);
    let failed = h.instance(instance.id).await;
    assert_eq!(failed.status, InstanceStatus::Failed);
    assert_eq!(instances::usage(h.db.pool(), h.tenant).await.unwrap().instances, 0, "quota released");
    assert!(h.vms().is_empty());
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_fault_fails_at_once_and_releases_the_quota() {
    let h = Harness::new().await;
    h.sim.faults().add_error(
        "POST /api2/json/nodes/pve1/qemu/9000/clone",
        1.0,
        500,
        "storage 'local-lvm' does not exist",
    );
    let (instance, enqueued) = h.accept("doomed", 5).await;
    assert_eq!(instances::usage(h.db.pool(), h.tenant).await.unwrap().instances, 1);
    h.push(&enqueued).await;
    let worker = h.start("w1", 2).await;

    let job = h.final_job(enqueued.job.id, Duration::from_secs(20)).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.attempts, 1, "no retry of a permanent error");
    let error = job.error.unwrap();
    assert_eq!(error.code, ErrorCode::ProxmoxRejected);
    assert!(!error.retryable);
    // The tenant gets our words; Proxmox's own text is kept for operators.
    assert_eq!(error.message, "Proxmox could not clone the template");
    let detail = job.error_detail.as_deref().unwrap_or_default();
    assert!(detail.contains("clone template") && detail.contains("storage 'local-lvm' does not exist"), "{detail}");
    assert_eq!(h.instance(instance.id).await.status, InstanceStatus::Failed);
    assert_eq!(instances::usage(h.db.pool(), h.tenant).await.unwrap().instances, 0, "quota released");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_job_delivered_twice_has_one_effect() {
    let h = Harness::new().await;
    let (instance, enqueued) = h.accept("twice", 5).await;
    // Two messages for one job (the API's push and a relay push after a crash, say), consumed
    // by two worker processes at once.
    h.push(&enqueued).await;
    h.push(&enqueued).await;
    let (a, b) = tokio::join!(h.start("w1", 4), h.start("w2", 4));

    let job = h.final_job(enqueued.job.id, Duration::from_secs(30)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    assert_eq!(job.attempts, 1, "claimed once");
    assert_eq!(h.vms().len(), 1);
    // A late third delivery is a no-op too.
    assert_eq!(provision_vm::run(&a.env, job.id).await.unwrap(), Outcome::NotClaimed);
    assert_eq!(h.vms().len(), 1);
    assert_eq!(h.instance(instance.id).await.status, InstanceStatus::Running);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_crash_adopts_the_clone() {
    let h = Harness::new().await;
    let (instance, enqueued) = h.accept("crashy", 5).await;
    // A worker claims the job with a short lease, reserves the VMID (recorded), clones the
    // template, and dies before recording the clone.
    let crashed = h.env("crashed", 4).await;
    let job = jobs::claim(h.db.pool(), enqueued.job.id, "crashed", Duration::from_millis(500)).await.unwrap().unwrap();
    let mut p = Provision::load(&crashed, job, CancellationToken::new()).await.unwrap();
    p.execute(Step::ReserveVmid).await.unwrap();
    p.record(Step::ReserveVmid).await.unwrap();
    p.execute(Step::Clone).await.unwrap();
    let vmid = p.vmid().unwrap();
    drop(p);
    assert_eq!(h.vms().len(), 1);
    assert_eq!(h.job(enqueued.job.id).await.step.as_deref(), Some("vmid_reserved"));

    // Another worker: lease recovery re-queues the job, the relay pushes it, the pool runs it.
    let worker = h.start("w2", 2).await;
    let job = h.final_job(enqueued.job.id, Duration::from_secs(30)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    assert_eq!(job.attempts, 2);
    let vms = h.vms();
    assert_eq!(vms.len(), 1, "the clone was adopted, not repeated: {vms:?}");
    assert_eq!(vms[0].0, vmid);
    assert_eq!(h.instance(instance.id).await.vmid, Some(vmid as i32));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmid_taken_by_a_foreign_guest_is_replaced_not_adopted() {
    let h = Harness::new().await;
    let (instance, enqueued) = h.accept("foreign", 5).await;
    let env = h.env("w0", 4).await;
    let job = jobs::claim(h.db.pool(), enqueued.job.id, "w0", Duration::from_secs(30)).await.unwrap().unwrap();
    let mut p = Provision::load(&env, job, CancellationToken::new()).await.unwrap();
    p.execute(Step::ReserveVmid).await.unwrap();
    let vmid = p.vmid().unwrap();
    // Someone creates a guest under that VMID outside Nimbus.
    let upid =
        env.pve.node(NODE).qemu(9000).clone_to(&nimbus_proxmox::QemuClone::new(vmid).name("intruder")).await.unwrap();
    env.pve.wait_task(&upid, Duration::from_secs(10)).await.unwrap();

    let err = p.execute(Step::Clone).await.unwrap_err();
    assert!(err.is_transient());
    assert_eq!(err.job_error().code, ErrorCode::Conflict);
    assert_eq!(p.next_step(), Some(Step::ReserveVmid), "the VMID is given up");
    assert_eq!(instances::reservation(h.db.pool(), instance.id).await.unwrap(), None);
    p.execute(Step::ReserveVmid).await.unwrap();
    assert_ne!(p.vmid(), Some(vmid));
    p.execute(Step::Clone).await.unwrap();
    assert_eq!(h.vms().len(), 2, "the intruder and ours");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_a_running_job_and_another_worker_finishes_it() {
    // Tasks are instant but a started guest takes 2 s to report its IP.
    let mut config = pve_sim::SimConfig::for_tests();
    config.time_scale = 1.0;
    config.guest_boot_time = Duration::from_secs(2);
    for task in ["qmclone", "qmconfig", "resize", "qmstart"] {
        config.task_durations.insert(task.into(), Duration::ZERO);
    }
    let h = Harness::with_sim(config).await;
    // One attempt only: a release must not spend it.
    let (instance, enqueued) = h.accept("graceful", 1).await;
    h.push(&enqueued).await;
    let first = h.start("w1", 2).await;
    let waiting = wait_until(Duration::from_secs(10), || async {
        h.job(enqueued.job.id).await.step.as_deref() == Some("started")
    })
    .await;
    assert!(waiting, "{:?}", h.job(enqueued.job.id).await);

    // SIGTERM: the job stops waiting and goes back to the queue at its step, at once, with its
    // attempt given back.
    first.stop().await;
    let released = h.job(enqueued.job.id).await;
    assert_eq!(released.status, JobStatus::Queued);
    assert_eq!(released.step.as_deref(), Some("started"));
    assert_eq!(released.locked_by, None);
    assert_eq!(released.attempts, 0);
    assert_eq!(released.error, None, "a release is not a failure");

    let second = h.start("w2", 2).await;
    let job = h.final_job(enqueued.job.id, Duration::from_secs(30)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    assert_eq!(job.attempts, 1, "the release did not count");
    assert_eq!(h.vms().len(), 1);
    assert_eq!(h.instance(instance.id).await.status, InstanceStatus::Running);
    second.stop().await;
}
