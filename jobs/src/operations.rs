//! The ledger payloads of the operations on existing instances. The instance itself (node,
//! VMID, kind, sizes) is read from its row, the job's first resource; a payload holds only what
//! the request asked for, plus what the step machine persists to resume.

use nimbus_db::jobs::NewJob;
use nimbus_domain::JobKind;
use serde::{Deserialize, Serialize};

use crate::queues;

/// A power action: the job's kind says which (`start`, `stop`, `shutdown`, `reboot`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PowerAction {
    /// `shutdown` only: seconds the guest has to power off after the ACPI request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
    /// `shutdown` only: stop the guest hard when the timeout passes (otherwise the job fails
    /// with `TIMEOUT` and the guest keeps running).
    #[serde(default)]
    pub force: bool,
}

impl PowerAction {
    /// The seconds a shutdown waits when the request names none.
    pub const DEFAULT_SHUTDOWN_SECS: u32 = 60;

    /// The jobs the prepaid ladder enqueues: on suspension a shutdown that forces the guest off
    /// after the default wait, and a start when the suspension is lifted.
    pub fn ladder_jobs() -> nimbus_db::ladder::PowerJobs {
        let stop = PowerAction { timeout_secs: Some(Self::DEFAULT_SHUTDOWN_SECS), force: true };
        nimbus_db::ladder::PowerJobs {
            stop: stop.new_job(JobKind::Shutdown),
            start: PowerAction::default().new_job(JobKind::Start),
        }
    }

    /// A ledger job of `kind` (one of the power kinds) on [`queues::POWER`].
    pub fn new_job(&self, kind: JobKind) -> NewJob {
        NewJob::new(kind, queues::POWER, serde_json::to_value(self).unwrap_or_default())
    }
}

/// Sizes of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sizes {
    /// vCPUs.
    pub cores: i32,
    /// MiB.
    pub memory: i64,
    /// GiB.
    pub disk: i64,
}

/// A resize: the instance's sizes before and after. The API sets the instance to `to` when it
/// accepts (the quota is held from then); a resize that fails for good puts back what it did not
/// apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResizeInstance {
    /// Before.
    pub from: Sizes,
    /// After.
    pub to: Sizes,
}

impl ResizeInstance {
    /// A ledger job on [`queues::RESIZE`].
    pub fn new_job(&self) -> NewJob {
        NewJob::new(JobKind::Resize, queues::RESIZE, serde_json::to_value(self).unwrap_or_default())
    }
}

/// A rebuild: the guest is recreated from `template` under the same VMID, on the same node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RebuildInstance {
    /// Template name, as `GET /v1/templates` lists it.
    pub template: String,
    /// The template guest's VMID on the instance's node (0 for containers: they are created from
    /// a `vztmpl` archive).
    pub template_vmid: u32,
    /// SSH keys for the new guest (`None`: keep the instance's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_keys: Option<Vec<String>>,
}

impl RebuildInstance {
    /// A ledger job on [`queues::REBUILD`].
    pub fn new_job(&self) -> NewJob {
        NewJob::new(JobKind::Rebuild, queues::REBUILD, serde_json::to_value(self).unwrap_or_default())
    }
}

/// A delete, or the cleanup of a failed provision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteInstance {
    /// `true` for the cleanup after a provision failed for good: the guest (if it is ours) and
    /// the VMID reservation go, the instance stays `failed` so an operator can retry or delete it.
    #[serde(default)]
    pub cleanup: bool,
}

impl DeleteInstance {
    /// A ledger job on [`queues::DELETE`].
    pub fn new_job(&self) -> NewJob {
        NewJob::new(JobKind::Delete, queues::DELETE, serde_json::to_value(self).unwrap_or_default())
    }
}

/// What a snapshot job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotOp {
    /// Take a snapshot (job kind `snapshot`).
    Create,
    /// Delete one (job kind `snapshot`).
    Delete,
    /// Roll the guest back to one (job kind `restore`).
    Rollback,
}

/// A snapshot operation on the instance's guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotAction {
    /// What to do.
    pub op: SnapshotOp,
    /// The snapshot's name (Proxmox's rules: a letter, then letters, digits, `-`, `_`).
    pub name: String,
    /// `create` only: a description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl SnapshotAction {
    /// A ledger job on [`queues::SNAPSHOT`], of kind `restore` for a rollback, else `snapshot`.
    pub fn new_job(&self) -> NewJob {
        let kind = if self.op == SnapshotOp::Rollback { JobKind::Restore } else { JobKind::Snapshot };
        NewJob::new(kind, queues::SNAPSHOT, serde_json::to_value(self).unwrap_or_default())
    }
}

/// A backup operation on the instance's guest: take one (vzdump, snapshot mode, zstd, to its
/// plan's backup storage), or delete one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupInstance {
    /// What to do (default: take one).
    #[serde(default, skip_serializing_if = "BackupOp::is_create")]
    pub op: BackupOp,
    /// `create`: the customer's note, kept with the backup on Proxmox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// `create`: protected from deletion and from retention.
    #[serde(default)]
    pub protected: bool,
    /// `delete`: the archive's file name (`vzdump-qemu-104-2026_12_06-03_00_00.vma.zst`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// Set by the scheduler on the backups of a customer's policy: the policy's retention runs
    /// after the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<nimbus_domain::ScheduleId>,
}

/// What a backup job does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupOp {
    /// Take a backup.
    #[default]
    Create,
    /// Delete a backup (never a protected one).
    Delete,
}

impl BackupOp {
    fn is_create(&self) -> bool {
        *self == BackupOp::Create
    }
}

impl BackupInstance {
    /// A ledger job on [`queues::BACKUP`].
    pub fn new_job(&self) -> NewJob {
        NewJob::new(JobKind::Backup, queues::BACKUP, serde_json::to_value(self).unwrap_or_default())
    }

    /// The notes Proxmox keeps with the archive: the customer's note and the job that made it,
    /// which is how a listing tells Nimbus's backups from those made on the Proxmox side.
    pub fn notes(&self, job: nimbus_domain::JobId) -> String {
        match self.note.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            Some(note) => format!("{note} {}{job}]", BACKUP_MARK),
            None => format!("{}{job}]", BACKUP_MARK),
        }
    }
}

/// What opens the job marker at the end of a backup's notes: `[nimbus job <id>]`.
pub const BACKUP_MARK: &str = "[nimbus job ";

/// The customer's note and the job of a backup's notes (`None` job: not made by Nimbus).
pub fn read_backup_notes(notes: &str) -> (Option<String>, Option<nimbus_domain::JobId>) {
    let notes = notes.trim();
    if let Some(start) = notes.rfind(BACKUP_MARK)
        && let Some(id) = notes[start + BACKUP_MARK.len()..].strip_suffix(']')
        && let Ok(job) = id.parse()
    {
        let note = notes[..start].trim();
        return ((!note.is_empty()).then(|| note.to_owned()), Some(job));
    }
    ((!notes.is_empty()).then(|| notes.to_owned()), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn backup_notes_carry_the_job_and_read_back() {
        let job = nimbus_domain::JobId::from_uuid(uuid::Uuid::nil());
        let b = BackupInstance { note: Some(" before upgrade ".into()), protected: true, ..Default::default() };
        let notes = b.notes(job);
        assert_eq!(notes, format!("before upgrade [nimbus job {job}]"));
        assert_eq!(read_backup_notes(&notes), (Some("before upgrade".into()), Some(job)));
        assert_eq!(read_backup_notes(&BackupInstance::default().notes(job)), (None, Some(job)));
        assert_eq!(read_backup_notes("made by hand"), (Some("made by hand".into()), None));
        assert_eq!(read_backup_notes("[nimbus job not-an-id]"), (Some("[nimbus job not-an-id]".into()), None));
        assert_eq!(read_backup_notes(""), (None, None));
        assert_eq!((b.new_job().kind, b.new_job().queue.as_str()), (JobKind::Backup, "backup"));
        assert_eq!(
            b.new_job().payload,
            json!({"note": " before upgrade ", "protected": true}),
            "create is the default"
        );
        let d = BackupInstance {
            op: BackupOp::Delete,
            archive: Some("vzdump-qemu-100-x.vma.zst".into()),
            ..Default::default()
        };
        assert_eq!(serde_json::from_value::<BackupInstance>(d.new_job().payload).unwrap(), d);
    }

    #[test]
    fn payloads_round_trip_in_camel_case() {
        let p = PowerAction { timeout_secs: Some(30), force: true };
        let job = p.new_job(JobKind::Shutdown);
        assert_eq!(job.payload, json!({"timeoutSecs": 30, "force": true}));
        assert_eq!((job.kind, job.queue.as_str()), (JobKind::Shutdown, "power"));
        assert_eq!(serde_json::from_value::<PowerAction>(json!({})).unwrap(), PowerAction::default());

        let s = SnapshotAction { op: SnapshotOp::Rollback, name: "before".into(), description: None };
        let job = s.new_job();
        assert_eq!((job.kind, job.queue.as_str()), (JobKind::Restore, "snapshot"));
        assert_eq!(job.payload, json!({"op": "rollback", "name": "before"}));

        let r = ResizeInstance {
            from: Sizes { cores: 1, memory: 512, disk: 10 },
            to: Sizes { cores: 2, memory: 1024, disk: 10 },
        };
        assert_eq!(serde_json::from_value::<ResizeInstance>(r.new_job().payload).unwrap(), r);
        assert_eq!(DeleteInstance { cleanup: true }.new_job().payload, json!({"cleanup": true}));
    }
}
