//! The `resize` job: grow the disk, then set cores and memory, for VMs and containers.
//!
//! ```text
//!  grow disk (only when asked: disks never shrink) ──► cores + memory ──► done
//! ```
//!
//! The API set the instance to its new sizes when it accepted the job (the quota is held from
//! then). Containers take cores and memory live. A running VM takes them when Proxmox can
//! hotplug them; otherwise Proxmox keeps them pending until the next stop and start, and the
//! step's event says so. A resize that fails for good puts the instance's sizes back to what
//! it did not apply (the disk stays grown once that step is recorded).

use nimbus_db::DbError;
use nimbus_db::instances;
use nimbus_db::jobs::Job;
use nimbus_domain::InstanceKind;
use nimbus_jobs::ResizeInstance;
use nimbus_proxmox::{ConfigUpdate, LxcOptions, Params, QemuOptions};
use serde_json::Value;
use sqlx::PgConnection;

use crate::guest_ops::{self, Target};
use crate::step_machine::{Operation, Run, StepError, StepInfo};

/// The resize job's steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Grow the boot disk.
    GrowDisk,
    /// Set cores and memory.
    SetCpuMemory,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl StepInfo for Step {
    fn name(self) -> &'static str {
        match self {
            Step::GrowDisk => "grow disk",
            Step::SetCpuMemory => "set cores and memory",
        }
    }

    fn done_name(self) -> &'static str {
        match self {
            Step::GrowDisk => "disk_grown",
            Step::SetCpuMemory => "cpu_memory_set",
        }
    }

    fn progress(self) -> u8 {
        match self {
            Step::GrowDisk => 50,
            Step::SetCpuMemory => 90,
        }
    }

    fn needs_node_permit(self) -> bool {
        true
    }

    fn plain_action(self) -> &'static str {
        match self {
            Step::GrowDisk => "grow the disk",
            Step::SetCpuMemory => "change cores and memory",
        }
    }
}

/// The note of a change Proxmox keeps pending until the next stop and start.
pub const PENDING_NOTE: &str = "cores and memory take effect at the next stop and start";

/// One resize in progress.
#[derive(Debug)]
pub struct Resize {
    run: Run,
    request: ResizeInstance,
    target: Target,
    /// Set when Proxmox kept cores or memory pending.
    pending: bool,
}

impl Operation for Resize {
    type Step = Step;
    const NAME: &'static str = "resize";

    async fn load(run: Run) -> Result<Resize, StepError> {
        let request: ResizeInstance = run.payload()?;
        let target = Target::load(&run).await?;
        Ok(Resize { run, request, target, pending: false })
    }

    fn run(&self) -> &Run {
        &self.run
    }

    fn run_mut(&mut self) -> &mut Run {
        &mut self.run
    }

    fn steps(&self) -> &'static [Step] {
        &[Step::GrowDisk, Step::SetCpuMemory]
    }

    fn node(&self) -> &str {
        self.target.node_or_none()
    }

    async fn execute(&mut self, step: Step) -> Result<(), StepError> {
        let (node, vmid) = self.target.placed()?;
        let (to, kind) = (self.request.to, self.target.instance.kind);
        let env = &self.run.env;
        match step {
            Step::GrowDisk if to.disk > self.request.from.disk => {
                guest_ops::grow_disk(env, step, kind, node, vmid, to.disk).await
            }
            Step::GrowDisk => Ok(()),
            Step::SetCpuMemory => {
                let (cores, memory) = (to.cores.max(1) as u32, to.memory.max(1) as u64);
                let api = env.pve.node(node);
                match kind {
                    InstanceKind::Qemu => {
                        let update = ConfigUpdate::new(QemuOptions::new().cores(cores).memory(memory));
                        api.qemu(vmid).update_config(&update).await.map_err(StepError::pve(step))?;
                        self.pending = cpu_or_memory_pending(env, node, vmid).await;
                    }
                    InstanceKind::Lxc => {
                        let update = ConfigUpdate::new(LxcOptions::new().cores(cores).memory(memory));
                        api.lxc(vmid).update_config(&update).await.map_err(StepError::pve(step))?;
                    }
                }
                Ok(())
            }
        }
    }

    fn note(&self, step: Step) -> Option<String> {
        (step == Step::SetCpuMemory && self.pending).then(|| PENDING_NOTE.to_owned())
    }

    /// The sizes were set when the resize was accepted.
    async fn succeeded(&self, _tx: &mut PgConnection) -> Result<(), DbError> {
        Ok(())
    }

    /// Gives back what was not applied: cores and memory always (their step is the last), the
    /// disk unless its growth was recorded.
    async fn failed(job: &Job, tx: &mut PgConnection) -> Result<(), DbError> {
        let (Some(instance), Ok(request)) =
            (job.instance(), serde_json::from_value::<ResizeInstance>(job.payload.clone()))
        else {
            return Ok(());
        };
        let disk_grown = job.step.as_deref() == Some(Step::GrowDisk.done_name());
        let disk = if disk_grown { request.to.disk } else { request.from.disk };
        instances::set_sizes(&mut *tx, instance, request.from.cores, request.from.memory, disk).await?;
        Ok(())
    }
}

/// Whether Proxmox holds a cores or memory change of the VM pending (`GET …/pending` lists the
/// key with a `pending` value). Unknown (the call failed) counts as not pending: the change was
/// accepted either way.
async fn cpu_or_memory_pending(env: &crate::env::Env, node: &str, vmid: u32) -> bool {
    let path = format!("/nodes/{node}/qemu/{vmid}/pending");
    match env.pve.get_json(&path, &Params::new()).await {
        Ok(Value::Array(items)) => items.iter().any(|i| {
            matches!(i.get("key").and_then(Value::as_str), Some("cores" | "memory")) && i.get("pending").is_some()
        }),
        _ => false,
    }
}
