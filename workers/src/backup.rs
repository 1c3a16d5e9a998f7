//! The `backup` queue's jobs: taking a backup, or deleting one (never a protected one; a backup
//! already gone is done). Taking one is a vzdump of the instance's guest in snapshot mode, zstd-compressed,
//! to its plan's backup storage, with the customer's note and the job's id in the archive's
//! notes (`nimbus_jobs::operations::BackupInstance::notes`), protected if asked. One step, under
//! the node's backup lane rather than its general cap: vzdump takes a node-wide lock, so one
//! backup runs per node and the others wait for the lane (their jobs stay `running`, their step
//! `back up`); the guest keeps running. While it runs, Proxmox holds the guest's `backup`
//! lock, and Nimbus the instance (`INSTANCE_BUSY` for any other operation).
//!
//! Idempotent: a retry first looks for an archive whose notes name this job, and adopts it
//! instead of backing up again.

use nimbus_db::plans;
use nimbus_domain::ErrorCode;
use nimbus_jobs::operations::read_backup_notes;
use nimbus_jobs::{BackupInstance, BackupOp};
use nimbus_proxmox::{ContentQuery, VzdumpParams};

use crate::guest_ops::{self, Target};
use crate::step_machine::{Operation, Run, StepError, StepInfo};

/// The one step of a backup job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// vzdump the guest.
    Dump,
    /// Delete an archive.
    Remove,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl StepInfo for Step {
    fn name(self) -> &'static str {
        match self {
            Step::Dump => "back up",
            Step::Remove => "delete backup",
        }
    }

    fn done_name(self) -> &'static str {
        match self {
            Step::Dump => "backed_up",
            Step::Remove => "backup_deleted",
        }
    }

    fn progress(self) -> u8 {
        90
    }

    fn needs_node_permit(self) -> bool {
        // Its own lane instead: one backup per node (`Env::backup_lanes`), whatever else runs.
        false
    }

    fn plain_action(self) -> &'static str {
        match self {
            Step::Dump => "back up the guest",
            Step::Remove => "delete the backup",
        }
    }
}

/// One backup in progress.
#[derive(Debug)]
pub struct Backup {
    run: Run,
    request: BackupInstance,
    target: Target,
    storage: String,
}

impl Operation for Backup {
    type Step = Step;
    const NAME: &'static str = "backup";

    async fn load(run: Run) -> Result<Backup, StepError> {
        let request: BackupInstance = run.payload()?;
        let target = Target::load(&run).await?;
        let storage = plans::backup_storage_for_tenant(run.db(), target.instance.tenant_id).await?;
        Ok(Backup { run, request, target, storage })
    }

    fn run(&self) -> &Run {
        &self.run
    }

    fn run_mut(&mut self) -> &mut Run {
        &mut self.run
    }

    fn steps(&self) -> &'static [Step] {
        match self.request.op {
            BackupOp::Create => &[Step::Dump],
            BackupOp::Delete => &[Step::Remove],
        }
    }

    fn node(&self) -> &str {
        self.target.node_or_none()
    }

    async fn execute(&mut self, step: Step) -> Result<(), StepError> {
        match step {
            Step::Dump => self.dump(step).await,
            Step::Remove => self.remove(step).await,
        }
    }

    async fn succeeded(&self, _tx: &mut sqlx::PgConnection) -> Result<(), nimbus_db::DbError> {
        // The archives live on Proxmox; the listing reads them from there.
        Ok(())
    }
}

impl Backup {
    async fn dump(&self, step: Step) -> Result<(), StepError> {
        let (node, vmid) = self.target.placed()?;
        let env = &self.run.env;
        let api = env.pve.node(node);
        let job = self.run.job.id;
        // An earlier attempt's archive, if it got that far.
        let existing =
            api.storage(&self.storage).content(&ContentQuery::backups_of(vmid)).await.map_err(StepError::pve(step))?;
        if existing.iter().any(|b| b.notes.as_deref().is_some_and(|n| read_backup_notes(n).1 == Some(job))) {
            return Ok(());
        }
        let lane = self.run.permit_of(&env.backup_lanes, node).await?;
        let mut params = VzdumpParams::guest(vmid, self.storage.clone());
        params.notes_template = Some(self.request.notes(job));
        params.protected = self.request.protected.then_some(true);
        let done = match api.vzdump(&params).await.map_err(StepError::pve(step)) {
            Ok(upid) => guest_ops::wait(env, step, &upid).await,
            Err(e) => Err(e),
        };
        lane.release().await;
        done
    }

    async fn remove(&self, step: Step) -> Result<(), StepError> {
        let (node, vmid) = self.target.placed()?;
        let env = &self.run.env;
        let storage = env.pve.node(node).storage(&self.storage);
        let archive = self.request.archive.as_deref().unwrap_or_default();
        let listed = storage.content(&ContentQuery::backups_of(vmid)).await.map_err(StepError::pve(step))?;
        // Only this guest's archive of that name; gone already is done.
        let Some(found) = listed.iter().find(|b| b.volid.rsplit('/').next() == Some(archive)) else { return Ok(()) };
        if found.protected == Some(true) {
            return Err(StepError::permanent(
                ErrorCode::Conflict,
                "the backup is protected; remove its protection first",
                Some(found.volid.clone()),
            ));
        }
        let upid = storage.delete_volume(&found.volid).await.map_err(StepError::pve(step))?;
        guest_ops::wait(env, step, &upid).await
    }
}
