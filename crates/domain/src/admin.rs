//! What the operator pages show: the health of each job queue (`GET /v1/admin/queues`) and of
//! each Proxmox node (`GET /v1/admin/nodes`).

use serde::{Deserialize, Serialize};

/// One queue, read from the job ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    /// Queue name (`provision`, ...).
    pub queue: String,
    /// Jobs waiting for a worker, including those waiting out a retry's backoff.
    pub depth: i64,
    /// Of `depth`, jobs that already failed an attempt and wait to be retried.
    pub retrying: i64,
    /// Jobs a worker holds now.
    pub running: i64,
    /// Jobs that ended `failed` (an admin may retry them).
    pub failed: i64,
    /// Of `failed`, those that used up all their attempts (the dead letters).
    pub dead: i64,
    /// Jobs that finished (succeeded or failed) in the last hour.
    pub finished_last_hour: i64,
    /// Of those, the failed ones.
    pub failed_last_hour: i64,
    /// Finished jobs per 5-minute slot over the last hour, oldest first (12 slots).
    pub throughput: Vec<i64>,
}

/// One Proxmox node, read from `/cluster/resources`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// Node name.
    pub node: String,
    /// `online`, `offline` or `unknown`.
    pub status: String,
    /// CPU use, 0-1 of `cpus`.
    pub cpu: f64,
    /// CPUs.
    pub cpus: u32,
    /// Memory used and size, bytes.
    pub memory_used: u64,
    /// Memory size, bytes.
    pub memory_total: u64,
    /// Disk used over the node's storages, bytes.
    pub disk_used: u64,
    /// Disk size over the node's storages, bytes.
    pub disk_total: u64,
    /// Guests (VMs and containers, templates excluded).
    pub guests: u32,
    /// Of `guests`, those running.
    pub guests_running: u32,
    /// Uptime, seconds.
    pub uptime: u64,
}
