//! vzdump's node-wide lock (`/var/run/vzdump.lock`, pve-manager `PVE::VZDump::getlock`): one
//! vzdump at a time per node; the others wait (`lockwait`) with their guests unlocked, time out,
//! or fail at once with `lockwait=0`.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Api, enc};
use pve_sim::SimConfig;

const WAITING: &str = "INFO: trying to get global lock - waiting...";
const GOT: &str = "INFO: got global lock";

/// A simulator whose vzdump tasks take `vzdump` (realistic) at time scale `scale`.
async fn sim(vzdump: Duration, scale: f64) -> Api {
    let d = HashMap::from([("vzdump".to_string(), vzdump)]);
    Api::with(SimConfig { time_scale: scale, task_durations: d, ..SimConfig::for_tests() }).await
}

/// Starts a vzdump of `vmid` on `node` with extra parameters; returns the UPID.
async fn vzdump(api: &Api, node: &str, vmid: &str, extra: &[(&str, &str)]) -> String {
    let mut form = vec![("vmid", vmid), ("storage", "local")];
    form.extend_from_slice(extra);
    let r = api.post(&format!("/nodes/{node}/vzdump"), &form).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.data().as_str().expect("a UPID").to_string()
}

/// The `lock` of a guest's config as `GET .../config` shows it.
async fn config_lock(api: &Api, node: &str, vmid: u32) -> Option<String> {
    let r = api.get(&format!("/nodes/{node}/qemu/{vmid}/config")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.data().get("lock").map(|l| l.as_str().unwrap().to_string())
}

async fn status(api: &Api, upid: &str) -> String {
    let node = upid.split(':').nth(1).unwrap();
    let r = api.get(&format!("/nodes/{node}/tasks/{}/status", enc(upid))).await;
    r.data()["status"].as_str().unwrap().to_string()
}

async fn stop(api: &Api, upid: &str) {
    let node = upid.split(':').nth(1).unwrap();
    assert_eq!(api.delete(&format!("/nodes/{node}/tasks/{}", enc(upid)), &[]).await.status, 200);
}

fn position(log: &[String], pred: impl Fn(&str) -> bool) -> usize {
    log.iter().position(|l| pred(l)).unwrap_or_else(|| panic!("no such line in {log:?}"))
}

#[tokio::test]
async fn a_second_vzdump_on_the_node_waits_for_the_first_with_its_guest_unlocked() {
    let api = sim(Duration::from_millis(500), 1.0).await;
    let first = vzdump(&api, "pve1", "9000", &[]).await;
    let second = vzdump(&api, "pve1", "9001", &[]).await;
    // The first holds the node lock and its guest; the second waits, its guest untouched.
    assert_eq!(config_lock(&api, "pve1", 9000).await.as_deref(), Some("backup"));
    assert_eq!(config_lock(&api, "pve1", 9001).await, None);
    assert_eq!(status(&api, &second).await, "running");
    assert_eq!(api.task_log(&second).await, [WAITING]);

    assert_eq!(api.wait_task(&first).await["exitstatus"], "OK");
    let first_ended = Instant::now();
    assert!(!api.task_log(&first).await.iter().any(|l| l == WAITING));
    assert_eq!(api.wait_task(&second).await["exitstatus"], "OK");
    // Its 500 ms ran from the lock on, not from its request (then it would end with the first).
    assert!(first_ended.elapsed() >= Duration::from_millis(400), "{:?}", first_ended.elapsed());
    let log = api.task_log(&second).await;
    let got = position(&log, |l| l == GOT);
    assert_eq!(log[..got], [WAITING]);
    assert!(log[got + 1].starts_with("INFO: starting new backup job: vzdump 9001"), "{log:?}");
    position(&log, |l| l == "INFO: Finished Backup of VM 9001 (00:00:10)");
    assert_eq!(log.last().unwrap(), "TASK OK");
    assert_eq!(config_lock(&api, "pve1", 9001).await, None);
}

#[tokio::test]
async fn lockwait_0_fails_at_once_while_another_vzdump_runs() {
    let api = sim(Duration::from_secs(30), 1.0).await;
    let holder = vzdump(&api, "pve1", "9000", &[]).await;
    let started = Instant::now();
    let refused = vzdump(&api, "pve1", "9001", &[("lockwait", "0")]).await;
    let st = api.wait_task(&refused).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    // The worker exits without a `TASK ...` line, so PVE reads `unexpected status`; the
    // reason is the last log line.
    assert_eq!(st["exitstatus"], "unexpected status");
    assert_eq!(api.task_log(&refused).await, ["ERROR: can't acquire lock '/var/run/vzdump.lock' (wait = 0)"]);
    assert_eq!(config_lock(&api, "pve1", 9001).await, None);
    let r = api.get_q("/nodes/pve1/tasks", &[("errors", "1")]).await;
    assert!(r.data().as_array().unwrap().iter().any(|t| t["upid"] == refused.as_str()), "{}", r.text);
    assert_eq!(status(&api, &holder).await, "running");
    stop(&api, &holder).await;
    api.wait_task(&holder).await;
    // Free again: lockwait=0 takes the lock like any other.
    let free = vzdump(&api, "pve1", "9001", &[("lockwait", "0")]).await;
    assert_eq!(api.task_log(&free).await.first().map(|l| l.starts_with("INFO: starting new backup job")), Some(true));
    stop(&api, &free).await;
    api.wait_task(&free).await;
}

#[tokio::test]
async fn a_waiter_times_out_after_its_scaled_lockwait() {
    // Scale 1/200: the holder's 600 s take 3 s, lockwait=1 (60 s) takes 300 ms.
    let api = sim(Duration::from_secs(600), 0.005).await;
    let holder = vzdump(&api, "pve1", "9000", &[]).await;
    let started = Instant::now();
    let waiter = vzdump(&api, "pve1", "9001", &[("lockwait", "1")]).await;
    let st = api.wait_task(&waiter).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    assert_eq!(st["exitstatus"], "unexpected status");
    assert_eq!(
        api.task_log(&waiter).await,
        [WAITING, "ERROR: can't acquire lock '/var/run/vzdump.lock' - got timeout"]
    );
    assert_eq!(config_lock(&api, "pve1", 9001).await, None);
    assert_eq!(status(&api, &holder).await, "running");
    stop(&api, &holder).await;
    api.wait_task(&holder).await;
}

#[tokio::test]
async fn vzdumps_on_different_nodes_do_not_wait_for_each_other() {
    let api = sim(Duration::from_millis(500), 1.0).await;
    let on_pve1 = vzdump(&api, "pve1", "9000", &[]).await;
    let on_pve2 = vzdump(&api, "pve2", "9010", &[]).await;
    // Both back up at the same time.
    assert_eq!(status(&api, &on_pve1).await, "running");
    assert_eq!(config_lock(&api, "pve1", 9000).await.as_deref(), Some("backup"));
    assert_eq!(config_lock(&api, "pve2", 9010).await.as_deref(), Some("backup"));
    for upid in [&on_pve1, &on_pve2] {
        assert_eq!(api.wait_task(upid).await["exitstatus"], "OK");
        let log = api.task_log(upid).await;
        assert!(log[0].starts_with("INFO: starting new backup job"), "{log:?}");
        assert!(!log.iter().any(|l| l == WAITING), "{log:?}");
    }
}

#[tokio::test]
async fn stopping_a_waiting_vzdump_ends_it_and_leaves_the_lock_to_the_next() {
    let api = sim(Duration::from_secs(30), 1.0).await;
    let holder = vzdump(&api, "pve1", "9000", &[]).await;
    let waiter = vzdump(&api, "pve1", "9001", &[]).await;
    assert_eq!(api.task_log(&waiter).await, [WAITING]);
    stop(&api, &waiter).await;
    // SIGTERM interrupts the flock; the worker exits like on a timeout.
    assert_eq!(api.wait_task(&waiter).await["exitstatus"], "unexpected status");
    assert_eq!(
        api.task_log(&waiter).await,
        [WAITING, "ERROR: can't acquire lock '/var/run/vzdump.lock' - interrupted by signal"]
    );
    assert_eq!(config_lock(&api, "pve1", 9001).await, None);
    // The holder is unaffected; stopped, it releases the lock and the next vzdump runs at once.
    assert_eq!(status(&api, &holder).await, "running");
    stop(&api, &holder).await;
    assert_eq!(api.wait_task(&holder).await["exitstatus"], "received interrupt");
    let next = vzdump(&api, "pve1", "9001", &[]).await;
    let log = api.task_log(&next).await;
    assert!(log[0].starts_with("INFO: starting new backup job: vzdump 9001"), "{log:?}");
    assert_eq!(config_lock(&api, "pve1", 9001).await.as_deref(), Some("backup"));
    stop(&api, &next).await;
    api.wait_task(&next).await;
}

#[tokio::test]
async fn a_failed_holder_releases_the_lock() {
    let api = sim(Duration::from_millis(500), 1.0).await;
    api.sim.faults().fail_next_task("vzdump", "storage exploded");
    let holder = vzdump(&api, "pve1", "9000", &[]).await;
    let waiter = vzdump(&api, "pve1", "9001", &[]).await;
    assert_eq!(api.wait_task(&holder).await["exitstatus"], "storage exploded");
    assert_eq!(api.wait_task(&waiter).await["exitstatus"], "OK");
    assert_eq!(api.task_log(&waiter).await[..2], [WAITING, GOT]);
}

#[tokio::test]
async fn with_time_scale_0_a_waiter_waits_for_the_holder_instead_of_timing_out() {
    // Scale 0 makes every wait zero; the waiter must still wait for the holder to end. The
    // holder here is a vzdump outside the API (the node's cron or shell).
    let api = Api::start().await;
    let guard = api.sim.sim().global_lock("pve1", "/var/run/vzdump.lock", 180).try_hold().expect("free");
    let waiter = vzdump(&api, "pve1", "9001", &[]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status(&api, &waiter).await, "running");
    assert_eq!(api.task_log(&waiter).await, [WAITING]);
    drop(guard);
    assert_eq!(api.wait_task(&waiter).await["exitstatus"], "OK");
    assert_eq!(api.task_log(&waiter).await[..2], [WAITING, GOT]);
}

#[tokio::test]
async fn a_guest_locked_by_another_operation_fails_inside_the_job() {
    let api = Api::start().await;
    api.sim.sim().write().guests.get_mut(&9001).unwrap().config.insert("lock".into(), "snapshot".into());
    let upid = vzdump(&api, "pve1", "9000,9001", &[]).await;
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "job errors");
    let log = api.task_log(&upid).await;
    assert!(log.iter().any(|l| l == "ERROR: Backup of VM 9001 failed - VM is locked (snapshot)"), "{log:?}");
    position(&log, |l| l == "INFO: Finished Backup of VM 9000 (00:00:10)");
    assert_eq!(config_lock(&api, "pve1", 9001).await.as_deref(), Some("snapshot"));
}
