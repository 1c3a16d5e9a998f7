//! What travels between the API and the workers.
//!
//! The Redis message is [`Dispatch`]: exactly the JSON nimbus-db writes to the outbox
//! (`{"jobId", "kind", "queue"}`), so the API's fast path and the relay push the same bytes.
//! Each kind's input lives in the ledger row's `payload`; [`ProvisionVm`] is the provision job's.

use nimbus_db::jobs::NewJob;
use nimbus_domain::{InstanceKind, JobId, JobKind};
use serde::{Deserialize, Serialize};

use crate::queues;

/// The Redis message: "ledger job `job_id` may be due".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dispatch {
    /// The ledger job.
    pub job_id: JobId,
    /// Its kind (lets a worker route without a database round trip).
    pub kind: JobKind,
    /// Its queue.
    pub queue: String,
}

/// The ledger payload of a `provision` job. The instance itself (name, sizes, SSH keys) is read
/// from its row, the job's first resource; this holds what placement decided and, once reserved,
/// the VMID (merged in by the step machine so a retry reuses it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionVm {
    /// Template name, as `GET /v1/templates` lists it.
    pub template: String,
    /// The template guest's VMID on `node`.
    pub template_vmid: u32,
    /// The Proxmox node the guest is created on.
    pub node: String,
    /// `qemu` or `lxc`.
    #[serde(rename = "type")]
    pub kind: InstanceKind,
    /// The VMID reserved for the guest, once the first step has run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmid: Option<u32>,
    /// A restore (job kind `restore`): the backup's Proxmox volume the guest is restored from,
    /// instead of cloning `template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_backup: Option<String>,
}

impl ProvisionVm {
    /// A ledger job for this payload on [`queues::PROVISION`] (resources, request id and
    /// idempotency key are the caller's to add).
    pub fn new_job(&self) -> NewJob {
        let payload = serde_json::to_value(self).unwrap_or_default();
        NewJob::new(JobKind::Provision, queues::PROVISION, payload)
    }

    /// A ledger job restoring `from_backup` into a new instance: kind `restore` on
    /// [`queues::PROVISION`] (the provision's steps, restoring instead of cloning).
    pub fn restore_as_new_job(&self) -> NewJob {
        let payload = serde_json::to_value(self).unwrap_or_default();
        NewJob::new(JobKind::Restore, queues::PROVISION, payload)
    }

    /// A ledger job restoring `from_backup` over the instance's own guest: kind `restore` on
    /// [`queues::REBUILD`] (a rebuild's steps, restoring instead of cloning).
    pub fn restore_in_place_job(&self) -> NewJob {
        let payload = serde_json::to_value(self).unwrap_or_default();
        NewJob::new(JobKind::Restore, queues::REBUILD, payload)
    }
}

/// The payload of a `meter` or `invoice` job: the schedule's fire time (the scheduler adds it),
/// which says what to bill: `meter` the hour that ended then, `invoice` the month that ended then.
/// Without it, the hour or month that ended last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillingRun {
    /// When the schedule fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fire_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl BillingRun {
    /// A ledger job of `kind` (`meter` or `invoice`) on [`queues::BILLING`].
    pub fn new_job(&self, kind: JobKind) -> NewJob {
        NewJob::new(kind, queues::BILLING, serde_json::to_value(self).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn provision_payload_matches_what_the_api_writes() {
        let written = json!({"template": "debian-12-cloudinit", "templateVmid": 9010, "node": "pve2", "type": "qemu"});
        let p: ProvisionVm = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(p.template_vmid, 9010);
        assert_eq!(p.vmid, None);
        assert_eq!(serde_json::to_value(&p).unwrap(), written);
        let job = p.new_job();
        assert_eq!((job.kind, job.queue.as_str()), (JobKind::Provision, "provision"));
        // The step machine merges `{"vmid": N}` into the ledger payload (`payload || patch`).
        let mut patched = written;
        patched["vmid"] = json!(104);
        let resumed: ProvisionVm = serde_json::from_value(patched).unwrap();
        assert_eq!((resumed.vmid, resumed.node.as_str()), (Some(104), "pve2"));
    }

    #[test]
    fn dispatch_is_the_outbox_message() {
        let id = JobId::from_uuid(uuid::Uuid::nil());
        let msg = Dispatch { job_id: id, kind: JobKind::Provision, queue: "provision".into() };
        let v = serde_json::to_value(&msg).unwrap();
        assert_eq!(
            v,
            json!({"jobId": "00000000-0000-0000-0000-000000000000", "kind": "provision", "queue": "provision"})
        );
        assert_eq!(serde_json::from_value::<Dispatch>(v).unwrap(), msg);
    }
}
