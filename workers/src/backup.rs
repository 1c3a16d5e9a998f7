//! The `backup` queue's jobs: taking a backup, or deleting one (never a protected one; a backup
//! already gone is done). Taking one is a vzdump of the instance's guest in snapshot mode, zstd-compressed,
//! to its plan's backup storage, with the customer's note and the job's id in the archive's
//! notes (`nimbus_jobs::operations::BackupInstance::notes`), protected if asked; the guest keeps
//! running. While it runs, Proxmox holds the guest's `backup` lock, and Nimbus the instance
//! (`INSTANCE_BUSY` for any other operation).
//!
//! One backup runs per node (vzdump takes a node-wide lock): the dump step takes the node's
//! backup lane (`Env::backup_lanes`, cap 1) rather than its general cap, and a job that finds the
//! lane taken goes back to the queue, `queued` with the reason on its handle, to look again
//! shortly ([`StepError::Waiting`]) — it holds no worker meanwhile.
//!
//! The plan's backup limit per instance counts every archive of the guest, Nimbus's and those
//! made on the Proxmox side. A scheduled backup (a customer's policy, `schedule_id` set) counts
//! what can remain after its retention, and runs the retention (Proxmox's `prunebackups`, which never
//! removes a protected backup) as its second step.
//!
//! Idempotent: a retry first looks for an archive whose notes name this job, and adopts it
//! instead of backing up again; pruning twice removes nothing more.

use std::time::Duration;

use nimbus_db::backup_policies;
use nimbus_db::plans::{self, BackupSettings};
use nimbus_domain::{ErrorCode, Retention};
use nimbus_jobs::operations::read_backup_notes;
use nimbus_jobs::{BackupInstance, BackupOp};
use nimbus_proxmox::{ContentQuery, PruneQuery, StorageContent, VzdumpParams};

use crate::guest_ops::{self, Target};
use crate::step_machine::{Operation, Run, StepError, StepInfo};

/// The one step of a backup job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// vzdump the guest.
    Dump,
    /// Scheduled backups: run the policy's retention.
    Prune,
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
            Step::Prune => "apply retention",
            Step::Remove => "delete backup",
        }
    }

    fn done_name(self) -> &'static str {
        match self {
            Step::Dump => "backed_up",
            Step::Prune => "retention_applied",
            Step::Remove => "backup_deleted",
        }
    }

    fn progress(self) -> u8 {
        match self {
            Step::Dump => 80,
            Step::Prune | Step::Remove => 95,
        }
    }

    fn needs_node_permit(self) -> bool {
        // Its own lane instead: one backup per node (`Env::backup_lanes`), whatever else runs.
        false
    }

    fn plain_action(self) -> &'static str {
        match self {
            Step::Dump => "back up the guest",
            Step::Prune => "remove the backups the retention does not keep",
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
    plan: BackupSettings,
}

/// What a job waiting for its node's backup lane shows.
pub const WAITING_FOR_LANE: &str =
    "another backup is running on this instance's node; one backup runs per node at a time";

/// How long a job waits before it looks at the lane again: 2-4 s, spread so that the jobs
/// waiting for one node do not all look at once.
fn lane_recheck() -> Duration {
    Duration::from_millis(2000 + rand::random::<u64>() % 2000)
}

impl Operation for Backup {
    type Step = Step;
    const NAME: &'static str = "backup";

    async fn load(run: Run) -> Result<Backup, StepError> {
        let request: BackupInstance = run.payload()?;
        let target = Target::load(&run).await?;
        let plan = plans::backup_settings_for_tenant(run.db(), target.instance.tenant_id).await?;
        Ok(Backup { run, request, target, plan })
    }

    fn run(&self) -> &Run {
        &self.run
    }

    fn run_mut(&mut self) -> &mut Run {
        &mut self.run
    }

    fn steps(&self) -> &'static [Step] {
        match self.request.op {
            BackupOp::Create if self.request.schedule_id.is_some() => &[Step::Dump, Step::Prune],
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
            Step::Prune => self.prune(step).await,
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
        let job = self.run.job.id;
        // An earlier attempt's archive, if it got that far.
        let existing = self.backups(step).await?;
        if existing.iter().any(|b| b.notes.as_deref().is_some_and(|n| read_backup_notes(n).1 == Some(job))) {
            return Ok(());
        }
        self.check_limit(&existing).await?;
        let holder = format!("{}:{}", env.worker_id, job);
        let lane = match env.backup_lanes.try_acquire(node, &holder).await {
            Ok(Some(lane)) => lane,
            Ok(None) => {
                return Err(StepError::Waiting { reason: WAITING_FOR_LANE.to_owned(), retry_in: lane_recheck() });
            }
            Err(e) => {
                return Err(StepError::Transient {
                    code: ErrorCode::ServiceUnavailable,
                    message: "the node's backup slot could not be checked".to_owned(),
                    detail: Some(format!("node {node}: {e}")),
                });
            }
        };
        let mut params = VzdumpParams::guest(vmid, self.plan.storage.clone());
        params.notes_template = Some(self.request.notes(job));
        params.protected = self.request.protected.then_some(true);
        let done = match env.pve.node(node).vzdump(&params).await.map_err(StepError::pve(step)) {
            Ok(upid) => guest_ops::wait(env, step, &upid).await,
            Err(e) => Err(e),
        };
        lane.release().await;
        done
    }

    /// The guest's archives on the plan's backup storage.
    async fn backups(&self, step: Step) -> Result<Vec<StorageContent>, StepError> {
        let (node, vmid) = self.target.placed()?;
        let storage = self.run.env.pve.node(node).storage(&self.plan.storage);
        storage.content(&ContentQuery::backups_of(vmid)).await.map_err(StepError::pve(step))
    }

    /// The plan's limit with one more backup. A scheduled backup's retention runs after it, so
    /// what counts is the most that can remain then: the protected backups, and as many others
    /// as the retention keeps (or all of them, the new one included, if fewer).
    async fn check_limit(&self, existing: &[StorageContent]) -> Result<(), StepError> {
        let max = self.plan.max_backups.max(0) as usize;
        let count = existing.len();
        if count < max {
            return Ok(());
        }
        if let Some(retention) = self.retention().await? {
            let protected = existing.iter().filter(|b| b.protected == Some(true)).count();
            let kept = usize::try_from(retention.most_kept()).unwrap_or(usize::MAX);
            if protected + kept.min(count - protected + 1) <= max {
                return Ok(());
            }
        }
        Err(StepError::permanent(
            ErrorCode::BackupLimit,
            format!("the plan allows {max} backups per instance; delete one first"),
            Some(format!("{count} backups of the guest")),
        ))
    }

    /// The retention of a scheduled backup's policy, when it keeps a bounded number.
    async fn retention(&self) -> Result<Option<Retention>, StepError> {
        if self.request.schedule_id.is_none() {
            return Ok(None);
        }
        let retention = backup_policies::retention_of(self.run.db(), self.target.instance.id).await?;
        Ok(retention.filter(|r| r.prune_backups().is_some()))
    }

    /// The prune call of the instance's policy, for a scheduled backup whose policy keeps a
    /// bounded number (`None`: nothing to prune).
    async fn retention_query(&self) -> Result<Option<PruneQuery>, StepError> {
        let (_, vmid) = self.target.placed()?;
        let Some(keep) = self.retention().await?.and_then(|r| r.prune_backups()) else { return Ok(None) };
        let guest_type = self.target.instance.kind.as_str().to_owned();
        Ok(Some(PruneQuery { prune_backups: Some(keep), guest_type: Some(guest_type), vmid: Some(vmid) }))
    }

    async fn prune(&self, step: Step) -> Result<(), StepError> {
        let Some(query) = self.retention_query().await? else { return Ok(()) };
        let (node, _) = self.target.placed()?;
        let env = &self.run.env;
        let upid = env.pve.node(node).storage(&self.plan.storage).prune(&query).await.map_err(StepError::pve(step))?;
        guest_ops::wait(env, step, &upid).await
    }

    async fn remove(&self, step: Step) -> Result<(), StepError> {
        let (node, vmid) = self.target.placed()?;
        let env = &self.run.env;
        let storage = env.pve.node(node).storage(&self.plan.storage);
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
