//! Shared helpers of the integration tests: start a `pve-sim`, build clients for it,
//! find seeded templates, and wait for tasks.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use nimbus_proxmox::{
    ApiToken, ClientConfig, ContentQuery, PollBackoff, ProxmoxClient, PveError, ResourceType, TaskOutcome, TlsMode,
    Upid,
};
use pve_sim::{RunningSim, SimConfig};

/// How long any task may take in tests (the simulator runs them instantly).
pub const WAIT: Duration = Duration::from_secs(30);

/// A valid public key exercising every `sshkeys` escape (`+`, `/`, space, `@`).
pub const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlx2uMl6O7otZxx5t83ZWNSS+gqAj3/2gOtI6dRPT+R test@host";

/// A running simulator and a client pinned to its certificate.
pub struct Sim {
    pub sim: RunningSim,
    pub client: ProxmoxClient,
}

/// Starts `SimConfig::for_tests()` on a free port.
pub async fn start() -> Sim {
    start_with(SimConfig::for_tests()).await
}

/// Starts a simulator with `config` and a fingerprint-pinned client.
pub async fn start_with(config: SimConfig) -> Sim {
    let sim = pve_sim::start(config, "127.0.0.1:0".parse().unwrap()).await.expect("simulator starts");
    let fp = sim.fingerprint().expect("the test simulator serves TLS").to_string();
    let client = client_for(&sim, TlsMode::Fingerprint(fp));
    Sim { sim, client }
}

/// A client for `sim` with the given TLS mode and fast task polling.
pub fn client_for(sim: &RunningSim, tls: TlsMode) -> ProxmoxClient {
    try_client_for(sim, tls).expect("client builds")
}

/// Like [`client_for`], returning construction errors.
pub fn try_client_for(sim: &RunningSim, tls: TlsMode) -> Result<ProxmoxClient, PveError> {
    let token = ApiToken::parse(sim.token())?;
    let config =
        ClientConfig::new(sim.base_url(), token, tls).timeout(Duration::from_secs(20)).task_poll(PollBackoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(200),
            factor: 2.0,
            jitter: 0.1,
        });
    ProxmoxClient::new(config)
}

/// Waits for a task that must succeed.
pub async fn wait_ok(client: &ProxmoxClient, upid: &Upid) -> TaskOutcome {
    match client.wait_task(upid, WAIT).await {
        Ok(outcome) => outcome,
        Err(e) => panic!("task {upid} should succeed: {e}"),
    }
}

/// Runs an async call that must fail, either synchronously (HTTP error) or in its task
/// (PVE checks some conditions before forking the worker and others inside it).
pub async fn expect_failure<F>(client: &ProxmoxClient, call: F) -> PveError
where
    F: Future<Output = Result<Upid, PveError>>,
{
    match call.await {
        Err(e) => e,
        Ok(upid) => match client.wait_task(&upid, WAIT).await {
            Err(e) => e,
            Ok(o) => panic!("task {} should have failed, ended {}", upid, o.exitstatus),
        },
    }
}

/// Runs an async call that PVE refuses before forking a worker (a synchronous HTTP error).
pub async fn expect_sync_error<F>(call: F) -> PveError
where
    F: Future<Output = Result<Upid, PveError>>,
{
    match call.await {
        Err(e) => e,
        Ok(upid) => panic!("expected a synchronous error, PVE would not have started task {upid}"),
    }
}

/// Runs an async call whose worker must fail (PVE checks the condition inside the task).
pub async fn expect_task_error<F>(client: &ProxmoxClient, call: F) -> PveError
where
    F: Future<Output = Result<Upid, PveError>>,
{
    let upid = match call.await {
        Ok(upid) => upid,
        Err(e) => panic!("expected a task that fails, got a synchronous error: {e}"),
    };
    match client.wait_task(&upid, WAIT).await {
        Err(e @ PveError::TaskFailed { .. }) => e,
        Err(e) => panic!("task {upid}: unexpected error {e}"),
        Ok(o) => panic!("task {upid} should have failed, ended {}", o.exitstatus),
    }
}

/// The seeded Debian cloud-init template on `node`: its vmid.
pub async fn debian_template(client: &ProxmoxClient, node: &str) -> u32 {
    let resources = client.cluster_resources(Some(ResourceType::Vm)).await.expect("cluster resources");
    resources
        .iter()
        .filter(|r| r.kind == "qemu" && r.template == Some(true))
        .filter(|r| r.node.as_deref() == Some(node))
        .find(|r| r.name.as_deref().is_some_and(|n| n.contains("debian")))
        .and_then(|r| r.vmid)
        .expect("a seeded Debian template on the node")
}

/// The seeded Debian LXC template volume on `node`.
pub async fn debian_ct_template(client: &ProxmoxClient, node: &str) -> String {
    client
        .node(node)
        .storage("local")
        .content(&ContentQuery::content("vztmpl"))
        .await
        .expect("vztmpl content")
        .into_iter()
        .map(|c| c.volid)
        .find(|v| v.contains("debian"))
        .expect("a seeded Debian container template")
}

/// A linked clone of the Debian template on `node`, ready (stopped).
pub async fn clone_vm(client: &ProxmoxClient, node: &str, name: &str) -> u32 {
    let template = debian_template(client, node).await;
    let newid = client.next_id(None).await.expect("nextid");
    let upid = client
        .node(node)
        .qemu(template)
        .clone_to(&nimbus_proxmox::QemuClone::new(newid).name(name))
        .await
        .expect("clone accepted");
    assert_eq!(upid.task_type(), "qmclone");
    wait_ok(client, &upid).await;
    newid
}

/// Polls `f` until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if std::time::Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
