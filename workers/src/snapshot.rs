//! The `snapshot` queue's jobs: take a snapshot (`snapshot`), delete one (`snapshot`) and roll the
//! guest back to one (`restore`), for VMs and containers. One step under a node permit.
//!
//! Idempotent: a snapshot found under the requested name when a retry starts is the one an
//! earlier attempt took; deleting a missing one is done; a rollback repeated rolls back again to
//! the same state. A rollback restarts a guest that was running (Proxmox leaves it stopped).
//! Proxmox's refusal on storage that cannot snapshot (raw files, plain LVM) fails at once with
//! words the tenant can act on.

use nimbus_db::DbError;
use nimbus_db::instances;
use nimbus_domain::{ErrorCode, InstanceKind, InstanceStatus};
use nimbus_jobs::{SnapshotAction, SnapshotOp};
use nimbus_proxmox::{Guest, GuestKind, PveError, SnapshotCreate};
use sqlx::PgConnection;

use crate::guest_ops::{self, Target};
use crate::step_machine::{Operation, Run, StepError, StepInfo};

/// The one step of each snapshot job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Take it.
    Create,
    /// Delete it.
    Delete,
    /// Roll back to it.
    Rollback,
}

impl Step {
    fn of(op: SnapshotOp) -> &'static [Step] {
        match op {
            SnapshotOp::Create => &[Step::Create],
            SnapshotOp::Delete => &[Step::Delete],
            SnapshotOp::Rollback => &[Step::Rollback],
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl StepInfo for Step {
    fn name(self) -> &'static str {
        match self {
            Step::Create => "create snapshot",
            Step::Delete => "delete snapshot",
            Step::Rollback => "roll back",
        }
    }

    fn done_name(self) -> &'static str {
        match self {
            Step::Create => "snapshot_created",
            Step::Delete => "snapshot_deleted",
            Step::Rollback => "rolled_back",
        }
    }

    fn progress(self) -> u8 {
        90
    }

    fn needs_node_permit(self) -> bool {
        true
    }

    fn plain_action(self) -> &'static str {
        match self {
            Step::Create => "take the snapshot",
            Step::Delete => "delete the snapshot",
            Step::Rollback => "roll the guest back to the snapshot",
        }
    }
}

/// One snapshot job in progress.
#[derive(Debug)]
pub struct Snapshot {
    run: Run,
    request: SnapshotAction,
    target: Target,
    /// After a rollback: whether the guest runs.
    running_after: Option<bool>,
}

impl Operation for Snapshot {
    type Step = Step;
    const NAME: &'static str = "snapshot";

    async fn load(run: Run) -> Result<Snapshot, StepError> {
        let request: SnapshotAction = run.payload()?;
        let target = Target::load(&run).await?;
        Ok(Snapshot { run, request, target, running_after: None })
    }

    fn run(&self) -> &Run {
        &self.run
    }

    fn run_mut(&mut self) -> &mut Run {
        &mut self.run
    }

    fn steps(&self) -> &'static [Step] {
        Step::of(self.request.op)
    }

    fn node(&self) -> &str {
        self.target.node_or_none()
    }

    async fn execute(&mut self, step: Step) -> Result<(), StepError> {
        let (node, vmid) = self.target.placed()?;
        let api = self.run.env.pve.node(node);
        match self.target.instance.kind {
            InstanceKind::Qemu => self.act(&api.qemu(vmid), step).await,
            InstanceKind::Lxc => self.act(&api.lxc(vmid), step).await,
        }
    }

    async fn succeeded(&self, tx: &mut PgConnection) -> Result<(), DbError> {
        if let Some(running) = self.running_after {
            let status = if running { InstanceStatus::Running } else { InstanceStatus::Stopped };
            instances::set_status(&mut *tx, self.target.instance.id, status).await?;
        }
        Ok(())
    }
}

impl Snapshot {
    async fn act<K: GuestKind>(&mut self, guest: &Guest<K>, step: Step) -> Result<(), StepError> {
        let env = &self.run.env;
        let name = self.request.name.as_str();
        let exists = guest.snapshots().await.map_err(StepError::pve(step))?.iter().any(|s| s.name == name);
        let upid = match step {
            Step::Create if exists => return Ok(()),
            Step::Create => {
                let params = SnapshotCreate {
                    snapname: name.to_owned(),
                    description: self.request.description.clone(),
                    vmstate: None,
                };
                guest.create_snapshot(&params).await.map_err(|e| refusal(step, e))?
            }
            Step::Delete if !exists => return Ok(()),
            Step::Delete => guest.delete_snapshot(name, false).await.map_err(|e| refusal(step, e))?,
            Step::Rollback if !exists => {
                return Err(StepError::permanent(
                    ErrorCode::NotFound,
                    format!("the snapshot '{name}' does not exist"),
                    None,
                ));
            }
            Step::Rollback => {
                let was_running = guest_ops::is_running(guest, step).await?;
                let upid = guest.rollback(name, was_running).await.map_err(|e| refusal(step, e))?;
                guest_ops::wait(env, step, &upid).await.map_err(|e| task_refusal(step, e))?;
                self.running_after = Some(guest_ops::is_running(guest, step).await?);
                return Ok(());
            }
        };
        guest_ops::wait(env, step, &upid).await.map_err(|e| task_refusal(step, e))
    }
}

/// Proxmox's refusal of a snapshot on storage that cannot take one, in words the tenant can act
/// on; other errors as usual.
fn refusal(step: Step, error: PveError) -> StepError {
    let text = error.pve_message().unwrap_or_default().to_ascii_lowercase();
    if text.contains("snapshot feature is not available") {
        return StepError::permanent(
            ErrorCode::ProxmoxRejected,
            "the instance's storage does not support snapshots",
            Some(error.to_string()),
        );
    }
    StepError::pve(step)(error)
}

/// [`refusal`] for a task's failure.
fn task_refusal(step: Step, error: StepError) -> StepError {
    match error {
        StepError::Pve { error, .. } => refusal(step, *error),
        e => e,
    }
}
