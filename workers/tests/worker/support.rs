//! The harness: services, a worker environment, instances with their provision jobs, waits.

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nimbus_db::instances::{self, Instance, NewInstance};
use nimbus_db::jobs::{self, Enqueued, Job};
use nimbus_domain::{InstanceId, InstanceKind, JobId, TenantId};
use nimbus_jobs::{ProvisionVm, Queues};
use nimbus_proxmox::{ApiToken, ClientConfig, PollBackoff, ProxmoxClient, TlsMode};
use nimbus_testkit::{TestDb, TestRedis};
use nimbus_worker::node_caps::NodeCaps;
use nimbus_worker::relay::RelayConfig;
use nimbus_worker::retry::{Backoff, RetryPolicy};
use nimbus_worker::runtime::{self, RuntimeOptions};
use nimbus_worker::{Env, Settings};
use pve_sim::{RunningSim, SimConfig};
use tokio_util::sync::CancellationToken;

pub const NODE: &str = "pve1";
pub const TEMPLATE_VMID: u32 = 9000;

pub struct Harness {
    pub db: TestDb,
    pub redis: TestRedis,
    pub sim: RunningSim,
    pub tenant: TenantId,
}

/// A running worker runtime (pool + relay + recovery).
pub struct Running {
    pub env: Arc<Env>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Signals shutdown and waits for the runtime to stop.
    pub async fn stop(self) {
        self.env.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("the worker stops within 15 s")
            .unwrap()
            .unwrap();
    }
}

impl Harness {
    pub async fn new() -> Harness {
        Harness::with_sim(SimConfig::for_tests()).await
    }

    /// A harness whose simulator runs with `config`.
    pub async fn with_sim(config: SimConfig) -> Harness {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
            .try_init();
        let db = TestDb::new().await;
        let redis = TestRedis::new().await;
        let sim = pve_sim::start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let tenant = nimbus_db::seed::seed_demo(db.pool()).await.unwrap().tenant.id;
        Harness { db, redis, sim, tenant }
    }

    pub fn key_prefix(&self) -> String {
        self.redis.key("nimbus:")
    }

    pub fn queues(&self) -> Queues {
        Queues::with_client(self.redis.client().clone(), self.key_prefix())
    }

    pub fn pve(&self) -> ProxmoxClient {
        ProxmoxClient::new(self.pve_config()).unwrap()
    }

    /// The configuration of [`Harness::pve`].
    pub fn pve_config(&self) -> ClientConfig {
        let token = ApiToken::parse(self.sim.token()).unwrap();
        let tls = TlsMode::Fingerprint(self.sim.fingerprint().unwrap().to_owned());
        let poll = PollBackoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
            factor: 1.5,
            jitter: 0.1,
        };
        ClientConfig::new(self.sim.base_url(), token, tls).task_poll(poll)
    }

    /// Settings for tests: short leases, fast retries and polls.
    pub fn settings() -> Settings {
        Settings {
            lease: Duration::from_secs(3),
            retry: RetryPolicy {
                backoff: Backoff { base: Duration::from_millis(100), max: Duration::from_millis(400), jitter: true },
            },
            task_timeout: Duration::from_secs(20),
            ip_timeout: Duration::from_secs(10),
            ip_poll: Duration::from_millis(20),
            ..Settings::default()
        }
    }

    /// A worker environment named `worker` with node cap `cap`.
    pub async fn env(&self, worker: &str, cap: u32) -> Arc<Env> {
        let settings = Self::settings();
        let settings_lease = settings.lease;
        let caps = NodeCaps::new(self.redis.client(), &self.key_prefix(), cap, settings.lease).await.unwrap();
        let backup_lanes = Env::backup_lanes(self.redis.client(), &self.key_prefix(), settings.lease).await.unwrap();
        Arc::new(Env {
            backup_lanes,
            // The worker runs as the runtime role, as in production; fixtures use the superuser's pool.
            db: self.db.app_pool().clone(),
            pve: self.pve(),
            caps,
            settings,
            worker_id: worker.to_owned(),
            shutdown: CancellationToken::new(),
            events: nimbus_jobs::JobEventPublisher::new(self.redis.client().clone(), &self.key_prefix()),
            ledger: Env::ledger_writer(self.db.app_pool(), worker, settings_lease),
            mail: None,
            metrics: nimbus_worker::metrics::WorkerMetrics::unserved(),
        })
    }

    /// Starts a worker runtime named `worker`.
    pub async fn start(&self, worker: &str, concurrency: usize) -> Running {
        self.start_with(worker, concurrency, |_| {}).await
    }

    /// Starts a worker runtime named `worker`, its options changed by `adjust`.
    pub async fn start_with(
        &self,
        worker: &str,
        concurrency: usize,
        adjust: impl FnOnce(&mut RuntimeOptions),
    ) -> Running {
        let env = self.env(worker, 4).await;
        self.run(env, concurrency, adjust)
    }

    /// Runs the worker runtime over `env`, with the tests' options changed by `adjust`.
    fn run(&self, env: Arc<Env>, concurrency: usize, adjust: impl FnOnce(&mut RuntimeOptions)) -> Running {
        let mut options = RuntimeOptions {
            concurrency,
            relay: RelayConfig { idle: Duration::from_millis(20), ..RelayConfig::default() },
            recovery_every: Duration::from_millis(200),
            ..RuntimeOptions::default()
        };
        adjust(&mut options);
        let handle = tokio::spawn(runtime::run(env.clone(), self.queues(), options));
        Running { env, handle }
    }

    /// Starts a worker runtime named `worker` with node cap 1 whose metrics (and Proxmox calls)
    /// are registered in `registry`, its options changed by `adjust`.
    pub async fn start_measured(
        &self,
        worker: &str,
        concurrency: usize,
        registry: &mut nimbus_telemetry::Registry,
        adjust: impl FnOnce(&mut RuntimeOptions),
    ) -> Running {
        let mut env = (*self.env(worker, 1).await).clone();
        env.pve =
            ProxmoxClient::new(self.pve_config().observer(nimbus_telemetry::ProxmoxCalls::register(registry))).unwrap();
        env.metrics = nimbus_worker::metrics::WorkerMetrics::register(registry);
        self.run(Arc::new(env), concurrency, adjust)
    }

    /// Writes an instance with its provision job, as the API does, and owes it an outbox row, as
    /// the API does when its push fails: the relay (or the test, with [`Harness::push`]) pushes.
    pub async fn accept(&self, name: &str, max_attempts: i32) -> (Instance, Enqueued) {
        self.accept_from(name, max_attempts, InstanceKind::Qemu, "debian-12-cloudinit", TEMPLATE_VMID).await
    }

    /// [`Harness::accept`] for an LXC container from the `vztmpl` archive named `template`.
    pub async fn accept_lxc(&self, name: &str, template: &str) -> (Instance, Enqueued) {
        self.accept_from(name, 5, InstanceKind::Lxc, template, 0).await
    }

    async fn accept_from(
        &self,
        name: &str,
        max_attempts: i32,
        kind: InstanceKind,
        template: &str,
        template_vmid: u32,
    ) -> (Instance, Enqueued) {
        let new = NewInstance {
            name: name.into(),
            kind,
            template: template.into(),
            cores: 2,
            memory_mib: 2048,
            disk_gib: 10,
            ssh_keys: vec![
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlx2uMl6O7otZxx5t83ZWNSS+gqAj3/2gOtI6dRPT+R t@h".into(),
            ],
            node: Some(NODE.into()),
        };
        let payload = ProvisionVm {
            template: template.into(),
            template_vmid,
            node: NODE.into(),
            kind,
            vmid: None,
            from_backup: None,
        };
        let mut job = payload.new_job();
        job.max_attempts = max_attempts;
        self.accept_job(&new, &job).await
    }

    /// Writes a new instance with the job that makes its guest (a provision, a restore), as the
    /// API does, with an outbox row; [`Harness::push`] sends it.
    pub async fn accept_job(&self, new: &NewInstance, job: &nimbus_db::jobs::NewJob) -> (Instance, Enqueued) {
        let mut created = instances::create(self.db.pool(), self.tenant, new, job).await.unwrap();
        assert_eq!(nimbus_db::outbox::owe(self.db.pool(), &[created.enqueued.job.id]).await.unwrap(), 1);
        let row: i64 = sqlx::query_scalar("select id from outbox where job_id = $1")
            .bind(created.enqueued.job.id.as_uuid())
            .fetch_one(self.db.pool())
            .await
            .unwrap();
        created.enqueued.outbox_id = Some(row);
        (created.instance, created.enqueued)
    }

    /// Pushes an accepted job's outbox row to Redis and marks it, as the API's fast path does.
    pub async fn push(&self, enqueued: &Enqueued) {
        let id = enqueued.outbox_id.expect("accepted by the harness, with an outbox row");
        let rows = vec![nimbus_db::outbox::OutboxEntry {
            id,
            job_id: enqueued.job.id,
            queue: enqueued.job.queue.clone(),
            payload: enqueued.dispatch.clone(),
            available_at: enqueued.job.run_after,
            created_at: enqueued.job.created_at,
        }];
        self.queues().push_outbox(&rows).await.unwrap();
        nimbus_db::outbox::mark_pushed(self.db.pool(), &[id]).await.unwrap();
    }

    pub async fn job(&self, id: JobId) -> Job {
        jobs::get(self.db.pool(), id).await.unwrap()
    }

    pub async fn instance(&self, id: InstanceId) -> Instance {
        instances::get_any(self.db.pool(), id).await.unwrap()
    }

    /// Waits until job `id` is final.
    pub async fn final_job(&self, id: JobId, limit: Duration) -> Job {
        let deadline = Instant::now() + limit;
        loop {
            let job = self.job(id).await;
            if job.status.is_final() {
                return job;
            }
            assert!(Instant::now() < deadline, "job did not finish within {limit:?}: {job:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Guests that are not templates, as (vmid, node, description).
    pub fn vms(&self) -> Vec<(u32, String, String)> {
        self.sim
            .sim()
            .read()
            .guests
            .values()
            .filter(|g| !g.is_template())
            .map(|g| (g.vmid, g.node.clone(), g.config.get("description").cloned().unwrap_or_default()))
            .collect()
    }
}

pub async fn wait_until<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The ledger lease the worker processes are started with. Without it the binary keeps its
/// 30 s default lease, and a dead worker's job cannot be taken over before that.
pub const LEASE_ENV: (&str, &str) = ("JOB_LEASE_SECS", "3");

/// `nimbus-worker` processes (the package's binary), configured through the environment as in
/// production; killed (SIGKILL) and reaped when dropped, also when the test panics.
#[derive(Default)]
pub struct Workers {
    children: Vec<(String, Child)>,
}

impl Workers {
    pub fn spawn(&mut self, h: &Harness, name: &str) {
        let fingerprint = h.sim.fingerprint().expect("the simulator serves TLS").to_owned();
        let child = Command::new(env!("CARGO_BIN_EXE_nimbus-worker"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DATABASE_URL", h.db.app_url())
            .env("DATABASE_MAX_CONNECTIONS", "6")
            .env("REDIS_URL", h.redis.url())
            .env("REDIS_KEY_PREFIX", h.key_prefix())
            .env("PVE_URL", h.sim.base_url())
            .env("PVE_TOKEN", h.sim.token())
            .env("PVE_FINGERPRINT", fingerprint)
            .env("WORKER_NAME", name)
            .env("WORKER_CONCURRENCY", "2")
            // Webhook receivers in tests listen on loopback.
            .env("WEBHOOK_ALLOW_NETWORKS", "127.0.0.1/32")
            .env("JOB_MAX_WAIT_IP_SECS", "30")
            .env(LEASE_ENV.0, LEASE_ENV.1)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nimbus-worker starts");
        self.children.push((name.to_owned(), child));
    }

    /// SIGKILLs worker `name` and reaps it.
    pub fn kill(&mut self, name: &str) {
        let (_, child) = self.children.iter_mut().find(|(n, _)| n == name).expect("a worker of that name");
        child.kill().expect("SIGKILL is delivered");
        let status = child.wait().expect("the killed worker is reaped");
        assert!(!status.success(), "{name} was killed, not stopped: {status}");
    }

    /// Fails if worker `name` has exited.
    pub fn assert_alive(&mut self, name: &str) {
        let (_, child) = self.children.iter_mut().find(|(n, _)| n == name).expect("a worker of that name");
        assert_eq!(child.try_wait().unwrap(), None, "worker {name} exited early");
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A second tenant on the harness tenant's plan; returns its id and name.
pub async fn another_tenant(h: &Harness) -> (TenantId, String) {
    let plan = nimbus_db::plans::for_tenant(h.db.pool(), h.tenant).await.unwrap();
    let name = format!("other-{}", uuid::Uuid::new_v4().simple());
    let tenant = nimbus_db::tenants::create(h.db.pool(), &name, plan.id).await.unwrap();
    (tenant.id, name)
}
