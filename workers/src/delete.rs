//! The `delete` job: stop the instance's guest, purge it and its disks, release the VMID
//! reservation, and mark the instance deleted (its quota and its name are free again). The same
//! job with `cleanup: true` follows a provision that failed for good: the guest (if one was
//! created and carries the instance's tag) and the reservation go, the instance stays `failed`.
//!
//! ```text
//!  remove guest (stop → purge; ours only, wherever it lives) ──► release VMID + status, at completion
//! ```
//!
//! Idempotent: a guest already gone is done; a foreign guest under the VMID (never the
//! instance's) is left alone. An instance that never got a VMID has nothing on Proxmox. A delete
//! that fails for good leaves the instance `deleting`, still holding its quota (its guest may
//! still exist): the tenant or an operator may delete it again.

use nimbus_db::DbError;
use nimbus_db::instances;
use nimbus_domain::InstanceStatus;
use nimbus_jobs::DeleteInstance;
use sqlx::PgConnection;

use crate::guest_ops::{self, Target};
use crate::step_machine::{self, Operation, Run, StepError, StepInfo};

/// The delete job's step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Stop and purge the guest.
    RemoveGuest,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl StepInfo for Step {
    fn name(self) -> &'static str {
        "remove guest"
    }

    fn done_name(self) -> &'static str {
        "guest_removed"
    }

    fn progress(self) -> u8 {
        90
    }

    fn needs_node_permit(self) -> bool {
        true
    }

    fn plain_action(self) -> &'static str {
        "remove the guest"
    }
}

/// One delete (or cleanup) in progress.
#[derive(Debug)]
pub struct Delete {
    run: Run,
    request: DeleteInstance,
    target: Target,
}

impl Operation for Delete {
    type Step = Step;
    const NAME: &'static str = "delete";

    async fn load(run: Run) -> Result<Delete, StepError> {
        let request: DeleteInstance = run.payload()?;
        let target = Target::load(&run).await?;
        Ok(Delete { run, request, target })
    }

    fn run(&self) -> &Run {
        &self.run
    }

    fn run_mut(&mut self) -> &mut Run {
        &mut self.run
    }

    fn steps(&self) -> &'static [Step] {
        &[Step::RemoveGuest]
    }

    fn node(&self) -> &str {
        self.target.node_or_none()
    }

    /// Without a VMID there is no guest: nothing to do on Proxmox.
    fn next_step(&self) -> Option<Step> {
        self.target.vmid?;
        step_machine::resume_after(self.steps(), self.run.job.step.as_deref())
    }

    async fn execute(&mut self, step: Step) -> Result<(), StepError> {
        let Some(vmid) = self.target.vmid else { return Ok(()) };
        let i = &self.target.instance;
        let removed = guest_ops::remove(&self.run.env, step, vmid, i.kind, i.id).await?;
        tracing::info!(job.id = %self.run.job.id, vm.id = %i.id, vm.vmid = vmid, removed, cleanup = self.request.cleanup, "guest removed");
        Ok(())
    }

    async fn succeeded(&self, tx: &mut PgConnection) -> Result<(), DbError> {
        let id = self.target.instance.id;
        instances::release_vmid(&mut *tx, id).await?;
        if !self.request.cleanup {
            instances::set_status(&mut *tx, id, InstanceStatus::Deleted).await?;
            // No more scheduled backups of a guest that is gone.
            nimbus_db::backup_policies::remove_for_deleted(&mut *tx, id).await?;
        }
        Ok(())
    }
}
