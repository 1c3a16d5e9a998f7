//! What every job handler gets: the database, the Proxmox client, the node caps, the settings,
//! this worker's identity, the shutdown signal and the job event publisher. Built once per process and shared.

use std::time::Duration;

use nimbus_db::PgPool;
use nimbus_jobs::JobEventPublisher;
use nimbus_proxmox::ProxmoxClient;
use tokio_util::sync::CancellationToken;

use crate::node_caps::NodeCaps;
use crate::retry::RetryPolicy;

/// Tunables of the job handlers.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The Proxmox cluster's name in VMID reservations.
    pub cluster: String,
    /// The smallest VMID handed to guests (templates usually sit in the 9000s).
    pub first_vmid: u32,
    /// How long a claim lasts without renewal; renewed every third of it. Short, because a crashed
    /// worker's job waits this long (plus a recovery tick) before another worker may take it.
    pub lease: Duration,
    /// Retry spacing for transient failures.
    pub retry: RetryPolicy,
    /// How long one Proxmox task (clone, resize, start) may run.
    pub task_timeout: Duration,
    /// How long a started guest may take to report an IP through its agent.
    pub ip_timeout: Duration,
    /// How often the guest agent is asked for IPs.
    pub ip_poll: Duration,
    /// The cloud-init user created in VMs.
    pub ciuser: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster: "default".into(),
            first_vmid: 1000,
            lease: Duration::from_secs(6),
            retry: RetryPolicy::default(),
            task_timeout: Duration::from_secs(600),
            ip_timeout: Duration::from_secs(300),
            ip_poll: Duration::from_secs(1),
            ciuser: "nimbus".into(),
        }
    }
}

/// The shared context of a worker process.
#[derive(Clone, Debug)]
pub struct Env {
    /// The ledger and domain rows.
    pub db: PgPool,
    /// The cluster.
    pub pve: ProxmoxClient,
    /// Per-node concurrency caps, shared with every other worker process.
    pub caps: NodeCaps,
    /// One backup at a time per node (vzdump takes a node-wide lock), shared likewise.
    pub backup_lanes: NodeCaps,
    /// Tunables.
    pub settings: Settings,
    /// This process's name in ledger leases (`locked_by`) and node permits.
    pub worker_id: String,
    /// Fired on SIGTERM / Ctrl-C: running jobs stop at their next step boundary.
    pub shutdown: CancellationToken,
    /// Tells the API's job event streams that a job changed (after each ledger write).
    pub events: JobEventPublisher,
    /// Claims of concurrently delivered jobs, group-committed.
    pub ledger: nimbus_jobs::LedgerWriter,
    /// Sends notification emails (`None`: email is not configured).
    pub mail: Option<crate::notify::Mailer>,
    /// What this process measures (`crate::metrics`).
    pub metrics: std::sync::Arc<crate::metrics::WorkerMetrics>,
}

impl Env {
    /// The backup lanes under `key_prefix`: one vzdump per node at a time, permits expiring
    /// `lease` after their holder stops renewing them.
    pub async fn backup_lanes(
        client: &redis::Client,
        key_prefix: &str,
        lease: Duration,
    ) -> redis::RedisResult<NodeCaps> {
        NodeCaps::new(client, &format!("{key_prefix}backup-"), 1, lease).await
    }

    /// The group-committing ledger writer of worker `worker_id`, claiming for `lease` (at most 256
    /// transitions per statement, 2 statements at once).
    pub fn ledger_writer(db: &PgPool, worker_id: &str, lease: Duration) -> nimbus_jobs::LedgerWriter {
        nimbus_jobs::LedgerWriter::start(db.clone(), worker_id, lease, 256, 2)
    }
}
