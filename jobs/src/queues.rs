//! Queue names (stable: they name Redis keys and are stored in the ledger's `queue` column) and
//! the nimbus-queue settings every producer and consumer of a queue shares.

use std::time::Duration;

use nimbus_domain::JobKind;
use nimbus_queue::QueueConfig;

/// Provisioning: clone, configure and start guests on Proxmox.
pub const PROVISION: &str = "provision";

/// Power: start, stop, ACPI shutdown, reboot.
pub const POWER: &str = "power";

/// Resize: cores, memory, disk.
pub const RESIZE: &str = "resize";

/// Rebuild: recreate the guest from a template under the same VMID.
pub const REBUILD: &str = "rebuild";

/// Delete: stop, purge the guest and its disks, release the VMID; also the cleanup after a
/// failed provision.
pub const DELETE: &str = "delete";

/// Snapshots: create, roll back, delete.
pub const SNAPSHOT: &str = "snapshot";

/// Backups: vzdump of one guest to its plan's backup storage.
pub const BACKUP: &str = "backup";

/// Billing: hourly metering and monthly invoicing.
pub const BILLING: &str = "billing";

/// Notifications: the emails domain events owe.
pub const NOTIFY: &str = "notify";

/// Every queue a worker process consumes (unless `WORKER_QUEUES` names fewer).
pub const ALL: &[&str] = &[PROVISION, POWER, RESIZE, REBUILD, DELETE, SNAPSHOT, BACKUP, BILLING, NOTIFY];

/// The queue a job kind is dispatched on, for the kinds that have a worker.
pub fn for_kind(kind: JobKind) -> Option<&'static str> {
    match kind {
        JobKind::Provision => Some(PROVISION),
        JobKind::Start | JobKind::Stop | JobKind::Shutdown | JobKind::Reboot => Some(POWER),
        JobKind::Resize => Some(RESIZE),
        JobKind::Rebuild => Some(REBUILD),
        JobKind::Delete => Some(DELETE),
        JobKind::Snapshot | JobKind::Restore => Some(SNAPSHOT),
        JobKind::Backup => Some(BACKUP),
        JobKind::Meter | JobKind::Invoice => Some(BILLING),
        JobKind::Notify => Some(NOTIFY),
    }
}

/// The Redis-level settings of queue `name` under `key_prefix` (`nimbus:` in production).
///
/// Retries and dead-lettering belong to the ledger, so a Redis message gets few attempts: the
/// queue only retries a message whose handler could not reach Postgres to claim it. Entries of a
/// crashed worker are re-delivered after `claim_min_idle`; the ledger lease decides whether the
/// job is really abandoned.
pub fn config(name: &str, key_prefix: &str) -> QueueConfig {
    QueueConfig::new(name).key_prefix(key_prefix).max_attempts(10).claim_min_idle(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable() {
        assert_eq!(PROVISION, "provision");
        assert_eq!(for_kind(JobKind::Provision), Some("provision"));
        assert_eq!(for_kind(JobKind::Invoice), Some(BILLING));
        assert_eq!(for_kind(JobKind::Notify), Some(NOTIFY));
        assert_eq!(for_kind(JobKind::Reboot), Some(POWER));
        assert_eq!(for_kind(JobKind::Restore), Some(SNAPSHOT));
        for kind in JobKind::ALL {
            if let Some(q) = for_kind(*kind) {
                assert!(ALL.contains(&q), "{q} is not consumed");
            }
        }
        assert!(ALL.contains(&PROVISION));
        assert_eq!(config(PROVISION, "nimbus:").stream_key(), "nimbus:q:{provision}");
    }
}
