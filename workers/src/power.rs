//! The `power` queue's jobs: `start`, `stop` (hard), `shutdown` (ACPI, with a timeout and an
//! optional forced stop after it) and `reboot`, for VMs and containers. One step under a node
//! permit; the instance's status follows at completion.
//!
//! Idempotent: starting a running guest and stopping (or shutting down) a stopped one are done
//! at once, as Proxmox treats them; a reboot repeated after a crash reboots once more, which is
//! harmless.

use nimbus_db::DbError;
use nimbus_db::instances;
use nimbus_domain::{InstanceKind, InstanceStatus, JobKind};
use nimbus_jobs::PowerAction;
use nimbus_proxmox::{Guest, GuestKind};
use sqlx::PgConnection;

use crate::guest_ops::{self, Target};
use crate::step_machine::{Operation, Run, StepError, StepInfo};

/// The one step of each power job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Power on.
    Start,
    /// Power off hard.
    Stop,
    /// ACPI shutdown.
    Shutdown,
    /// Reboot.
    Reboot,
}

impl Step {
    fn of(kind: JobKind) -> Option<&'static [Step]> {
        Some(match kind {
            JobKind::Start => &[Step::Start],
            JobKind::Stop => &[Step::Stop],
            JobKind::Shutdown => &[Step::Shutdown],
            JobKind::Reboot => &[Step::Reboot],
            _ => return None,
        })
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
            Step::Start => "start",
            Step::Stop => "stop",
            Step::Shutdown => "shutdown",
            Step::Reboot => "reboot",
        }
    }

    fn done_name(self) -> &'static str {
        match self {
            Step::Start => "started",
            Step::Stop => "stopped",
            Step::Shutdown => "shut_down",
            Step::Reboot => "rebooted",
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
            Step::Start => "start the guest",
            Step::Stop => "stop the guest",
            Step::Shutdown => "shut the guest down",
            Step::Reboot => "reboot the guest",
        }
    }
}

/// One power job in progress.
#[derive(Debug)]
pub struct Power {
    run: Run,
    steps: &'static [Step],
    action: PowerAction,
    target: Target,
}

impl Operation for Power {
    type Step = Step;
    const NAME: &'static str = "power";

    async fn load(run: Run) -> Result<Power, StepError> {
        let steps = Step::of(run.job.kind).ok_or_else(|| {
            StepError::permanent(
                nimbus_domain::ErrorCode::Internal,
                "the job is not a power action",
                Some(format!("kind {} on the power queue", run.job.kind)),
            )
        })?;
        let action: PowerAction = run.payload()?;
        let target = Target::load(&run).await?;
        Ok(Power { run, steps, action, target })
    }

    fn run(&self) -> &Run {
        &self.run
    }

    fn run_mut(&mut self) -> &mut Run {
        &mut self.run
    }

    fn steps(&self) -> &'static [Step] {
        self.steps
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
        let status = match self.steps[0] {
            Step::Start | Step::Reboot => InstanceStatus::Running,
            Step::Stop | Step::Shutdown => InstanceStatus::Stopped,
        };
        instances::set_status(&mut *tx, self.target.instance.id, status).await?;
        Ok(())
    }
}

impl Power {
    async fn act<K: GuestKind>(&self, guest: &Guest<K>, step: Step) -> Result<(), StepError> {
        let env = &self.run.env;
        match step {
            Step::Start => guest_ops::start(env, guest, step).await,
            Step::Stop => guest_ops::stop(env, guest, step).await,
            Step::Shutdown => {
                let timeout = self.action.timeout_secs.unwrap_or(PowerAction::DEFAULT_SHUTDOWN_SECS);
                guest_ops::shutdown(env, guest, step, timeout, self.action.force).await
            }
            Step::Reboot => guest_ops::reboot(env, guest, step).await,
        }
    }
}
