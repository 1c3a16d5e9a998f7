//! The `provision` job: create an instance's guest on Proxmox, as a step machine whose progress
//! is persisted in the ledger so a retry resumes where the last attempt stopped.
//!
//! ```text
//!  message {jobId} ─► claim (lease) ─► None: duplicate or not due → ack, no effect
//!                        │
//!                        ▼   resume at the first step not recorded as done
//!  reserve VMID ──► clone ──► configure ──► grow disk ──► start ──► wait for IP ──► running
//!   (Postgres)      └──────── under a node permit (Redis) ────────┘
//!        each step: do it idempotently (adopt what exists) → record_progress(step, %)
//! ```
//!
//! LXC instances take the same steps: "clone" creates the container from the node's `vztmpl`
//! archive named like the template (`POST /nodes/{node}/lxc` with hostname, cores, memory, the
//! root filesystem at its full size, DHCP on `vmbr0`, SSH keys and the tag in the description),
//! so configure and grow disk have nothing left to do; the address comes from the container's
//! `interfaces`.
//!
//! Idempotence: the VMID is reserved in Postgres before Proxmox is called, so every attempt uses
//! the same one; a guest found under it is adopted when its description carries the instance's
//! tag (`nimbus-instance=<id>`), and a VMID taken by a foreign guest is given up and reserved
//! anew. Configuration and resize are absolute, start skips a running guest.
//!
//! Failures: transient Proxmox errors (classified by `PveError::class`) and an unreachable
//! database put the job back in the ledger with exponential backoff and jitter until its attempts
//! are spent (`ATTEMPTS_EXHAUSTED`); permanent ones fail it at once (`PROXMOX_REJECTED`, …). A
//! job that ends failed marks its instance failed in the same transaction, which releases its
//! quota. The ledger keeps each failure twice ([`StepError::failure`]): for the tenant, a code and
//! a message of our own naming the step in plain words; for operators (`error_detail`), Proxmox's
//! own text and the failing request, which can name storage hosts, addresses, device paths and
//! nodes. On shutdown a job stops at the next step boundary and goes back to the queue without
//! spending its attempt (`jobs::release`).

use nimbus_jobs::vztmpl_name;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{BoxDynError, Data};
use nimbus_db::instances::{self, Instance};
use nimbus_db::jobs::{self, Job, Progress};
use nimbus_db::{DbError, PgPool};
use nimbus_domain::{ErrorCode, InstanceId, InstanceKind, InstanceStatus, JobError, JobId, JobStatus};
use nimbus_jobs::{Dispatch, ProvisionVm};
use nimbus_proxmox::{
    ConfigUpdate, ContentQuery, Guest, GuestKind, IpConfig, LxcApi, LxcCreate, LxcNet, LxcOptions, LxcVolume, PveError,
    QemuApi, QemuClone, QemuOptions, ResourceType, StorageListQuery,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::env::Env;
use crate::node_caps::Permit;

/// The storage of an LXC container's root filesystem.
pub const LXC_ROOTFS_STORAGE: &str = "local-lvm";
/// The bridge of an LXC container's `eth0`.
pub const LXC_BRIDGE: &str = "vmbr0";

/// The steps, in order. Each is recorded in the ledger (`step`) once done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Reserve a VMID in Postgres (adopting the instance's existing reservation).
    ReserveVmid,
    /// Clone the template into the VMID (adopting a guest already there with our tag).
    Clone,
    /// cloud-init user, SSH keys, DHCP; cores and memory.
    Configure,
    /// Grow the boot disk to the instance's size.
    ResizeDisk,
    /// Power on.
    Start,
    /// Wait until the guest agent reports an address.
    WaitForIp,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 6] =
        [Step::ReserveVmid, Step::Clone, Step::Configure, Step::ResizeDisk, Step::Start, Step::WaitForIp];

    /// The ledger's `step` once this step is done.
    pub const fn done_name(self) -> &'static str {
        match self {
            Step::ReserveVmid => "vmid_reserved",
            Step::Clone => "cloned",
            Step::Configure => "configured",
            Step::ResizeDisk => "disk_resized",
            Step::Start => "started",
            Step::WaitForIp => "ip_assigned",
        }
    }

    /// The job's progress once this step is done.
    pub const fn progress(self) -> u8 {
        match self {
            Step::ReserveVmid => 10,
            Step::Clone => 40,
            Step::Configure => 55,
            Step::ResizeDisk => 65,
            Step::Start => 80,
            Step::WaitForIp => 95,
        }
    }

    /// Whether the step loads the Proxmox node (and so runs under a node permit).
    pub const fn needs_node_permit(self) -> bool {
        matches!(self, Step::Clone | Step::Configure | Step::ResizeDisk | Step::Start)
    }

    /// The first step not yet done after the ledger recorded `done` (`None`: start at the
    /// beginning; an unknown name is treated like none, so nothing is skipped by mistake).
    pub fn resume_after(done: Option<&str>) -> Option<Step> {
        let Some(done) = done else { return Some(Step::ReserveVmid) };
        match Step::ALL.iter().position(|s| s.done_name() == done) {
            Some(i) => Step::ALL.get(i + 1).copied(),
            None => Some(Step::ReserveVmid),
        }
    }

    /// What the step does, in plain words for tenants ("Proxmox could not …").
    pub const fn plain_action(self) -> &'static str {
        match self {
            Step::ReserveVmid => "reserve an ID for the guest",
            Step::Clone => "clone the template",
            Step::Configure => "configure the guest",
            Step::ResizeDisk => "grow the disk",
            Step::Start => "start the guest",
            Step::WaitForIp => "report the guest's address",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Step::ReserveVmid => "reserve VMID",
            Step::Clone => "clone template",
            Step::Configure => "configure cloud-init",
            Step::ResizeDisk => "grow disk",
            Step::Start => "start",
            Step::WaitForIp => "wait for IP",
        };
        f.write_str(s)
    }
}

/// Why a step (or the whole run) stopped.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Proxmox refused or could not be reached.
    #[error("{step}: {error}")]
    Pve {
        /// The step.
        step: Step,
        /// The client's error (its class decides retry or not).
        error: PveError,
    },
    /// The database failed.
    #[error(transparent)]
    Db(DbError),
    /// A condition retrying cannot change.
    #[error("{message}{}", fmt_detail(.detail))]
    Permanent {
        /// Stable code.
        code: ErrorCode,
        /// For the tenant: plain words, no internals.
        message: String,
        /// For operators only (ids, nodes, the underlying error).
        detail: Option<String>,
    },
    /// A condition that may pass.
    #[error("{message}{}", fmt_detail(.detail))]
    Transient {
        /// Stable code.
        code: ErrorCode,
        /// For the tenant: plain words, no internals.
        message: String,
        /// For operators only (ids, nodes, the underlying error).
        detail: Option<String>,
    },
    /// The job's lease was lost: another worker may own it now, so touch nothing more.
    #[error("lease lost")]
    LeaseLost,
    /// The worker is shutting down; the job goes back to the queue.
    #[error("worker shutting down")]
    ShuttingDown,
}

fn fmt_detail(detail: &Option<String>) -> String {
    detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
}

/// A failure as the ledger records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What the job's tenant sees.
    pub error: JobError,
    /// What only operators see (`error_detail`).
    pub detail: Option<String>,
}

impl From<DbError> for StepError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::LeaseLost(_) => StepError::LeaseLost,
            e => StepError::Db(e),
        }
    }
}

impl StepError {
    fn pve(step: Step) -> impl FnOnce(PveError) -> StepError {
        move |error| StepError::Pve { step, error }
    }

    /// Whether another attempt may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            StepError::Pve { error, .. } => error.is_transient(),
            StepError::Db(e) => e.is_unavailable(),
            StepError::Transient { .. } | StepError::LeaseLost | StepError::ShuttingDown => true,
            StepError::Permanent { .. } => false,
        }
    }

    /// The error the tenant sees: [`StepError::failure`] without the operators' detail.
    pub fn job_error(&self) -> JobError {
        self.failure().error
    }

    /// The failure as the ledger records it. The tenant's message is ours and names the step in
    /// plain words; Proxmox's text, the request's method and path (which name the node and the
    /// guest), per-parameter errors, task logs and database errors go to the detail only: they
    /// can hold storage hosts, addresses and device paths.
    pub fn failure(&self) -> Failure {
        let retryable = self.is_transient();
        let (code, message, detail) = match self {
            StepError::Pve { step, error } => {
                let action = step.plain_action();
                let (code, message) = match error {
                    PveError::Timeout { .. } | PveError::TaskTimeout { .. } => {
                        (ErrorCode::Timeout, format!("Proxmox did not answer in time and could not {action}"))
                    }
                    e if e.is_transient() => {
                        (ErrorCode::ProxmoxUnavailable, format!("Proxmox was unavailable and could not {action}"))
                    }
                    _ => (ErrorCode::ProxmoxRejected, format!("Proxmox could not {action}")),
                };
                (code, message, Some(pve_detail(*step, error)))
            }
            StepError::Db(e) if e.is_unavailable() => {
                (ErrorCode::ServiceUnavailable, "the database was unavailable".to_owned(), Some(e.to_string()))
            }
            StepError::Db(e) => (ErrorCode::Internal, "internal error".to_owned(), Some(e.to_string())),
            StepError::Permanent { code, message, detail } | StepError::Transient { code, message, detail } => {
                (*code, message.clone(), detail.clone())
            }
            StepError::LeaseLost => (ErrorCode::LeaseExpired, "the worker lost the job's lease".to_owned(), None),
            StepError::ShuttingDown => {
                (ErrorCode::ServiceUnavailable, "the worker shut down; the job resumes elsewhere".to_owned(), None)
            }
        };
        Failure { error: JobError { code, message, retryable }, detail }
    }
}

/// The operators' account of a Proxmox failure: the step, the client's error (method, API path,
/// status, Proxmox's message, per-parameter errors; a task's UPID and exit status) and the end of
/// a failed task's log.
fn pve_detail(step: Step, error: &PveError) -> String {
    let mut detail = format!("{step}: {error}");
    if let PveError::TaskFailed { log_tail, .. } = error
        && !log_tail.is_empty()
    {
        detail.push_str("; task log: ");
        detail.push_str(&log_tail.join(" | "));
    }
    detail
}

/// What handling one message did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The job was not claimable (running elsewhere, final, or not due): nothing done.
    NotClaimed,
    /// The instance is running.
    Succeeded,
    /// A transient failure; the ledger re-queues the job after this delay.
    RetryScheduled(Duration),
    /// The job failed for good with this error; the instance is failed.
    Failed(JobError),
    /// Shutdown: the job went back to the queue at its current step.
    Released,
    /// The lease was lost mid-run; whoever holds the job now finishes it.
    LeaseLost,
}

/// The apalis handler of the provision queue. Errors are returned only when the job could not
/// be claimed or settled because Postgres was unreachable: the queue then redelivers the
/// message later. Everything else is acknowledged, the ledger having recorded the result.
pub async fn handle(message: Dispatch, env: Data<Arc<Env>>) -> Result<(), BoxDynError> {
    let job_id = message.job_id;
    match run(&env, job_id).await {
        Ok(outcome) => {
            tracing::debug!(job.id = %job_id, ?outcome, "provision message handled");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(job.id = %job_id, error = %e, "provision could not reach the ledger; redelivering");
            Err(Box::new(e))
        }
    }
}

/// Claims job `job_id` and runs it to an outcome, keeping the lease alive meanwhile.
pub async fn run(env: &Env, job_id: JobId) -> Result<Outcome, DbError> {
    // Claims of jobs delivered together share a statement (`nimbus_jobs::ledger`).
    let claimed = env.ledger.claim(job_id).await.map_err(|e| {
        // Keep "the database could not be reached" recognisable (`DbError::is_unavailable`).
        DbError::Sqlx(if e.unavailable { sqlx::Error::PoolTimedOut } else { sqlx::Error::Protocol(e.to_string()) })
    })?;
    let Some(job) = claimed else {
        return Ok(Outcome::NotClaimed);
    };
    tracing::info!(job.id = %job_id, job.attempt = job.attempts, job.step = job.step.as_deref().unwrap_or("-"), "provision claimed");
    env.events.publish(job_id).await;
    let lease_lost = CancellationToken::new();
    let keeper = tokio::spawn(keep_lease(env.clone(), job_id, lease_lost.clone()));
    let result = match Provision::load(env, job.clone(), lease_lost.clone()).await {
        Ok(mut p) => p.run().await.map(|()| p),
        Err(e) => Err(e),
    };
    keeper.abort();
    let outcome = settle(env, &job, result).await;
    env.events.publish(job_id).await;
    outcome
}

/// Renews the job's lease every third of its length; fires `lost` when it can no longer.
async fn keep_lease(env: Env, job: JobId, lost: CancellationToken) {
    let every = env.settings.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        match jobs::extend_lease(&env.db, job, &env.worker_id, env.settings.lease).await {
            Ok(_) => {}
            Err(DbError::LeaseLost(_)) => {
                tracing::warn!(job.id = %job, "lease lost; stopping");
                lost.cancel();
                return;
            }
            // The lease may still be valid; the next tick tries again.
            Err(e) => tracing::warn!(job.id = %job, error = %e, "lease renewal failed"),
        }
    }
}

/// Records the run's end in the ledger (and the instance), in one transaction.
async fn settle(env: &Env, job: &Job, result: Result<Provision, StepError>) -> Result<Outcome, DbError> {
    let worker = env.worker_id.as_str();
    match result {
        Ok(p) => {
            let mut tx = env.db.begin().await?;
            instances::set_ip_addresses(&mut *tx, p.instance.id, &p.ips).await?;
            instances::set_status(&mut *tx, p.instance.id, InstanceStatus::Running).await?;
            match jobs::complete(&mut *tx, job.id, worker, None).await {
                Ok(_) => {}
                Err(DbError::LeaseLost(_)) => return Ok(Outcome::LeaseLost),
                Err(e) => return Err(e),
            }
            tx.commit().await?;
            tracing::info!(job.id = %job.id, vm.id = %p.instance.id, vm.ips = ?p.ips, "provisioned");
            Ok(Outcome::Succeeded)
        }
        Err(StepError::LeaseLost) => Ok(Outcome::LeaseLost),
        Err(StepError::ShuttingDown) => {
            // Not the job's fault: back to the queue without spending the attempt; whoever takes
            // it next resumes at the step recorded.
            match jobs::release(&env.db, job.id, worker, "released by a worker shutting down").await {
                Ok(_) => Ok(Outcome::Released),
                Err(DbError::LeaseLost(_)) => Ok(Outcome::LeaseLost),
                Err(e) => Err(e),
            }
        }
        Err(e) => {
            let last_attempt = job.attempts >= job.max_attempts;
            let Failure { mut error, detail } = e.failure();
            if error.retryable && last_attempt {
                error = JobError {
                    code: ErrorCode::AttemptsExhausted,
                    message: format!("gave up after {} attempts; last error: {}", job.attempts, error.message),
                    retryable: true,
                };
            }
            let retry_in = env.settings.retry.next_retry_in(job.attempts.max(1) as u32);
            // The request id is what a tenant quotes; the log holds what they were not shown.
            let rid = job.request_id.as_deref().unwrap_or("-");
            if let StepError::Db(db) = &e {
                tracing::error!(job.id = %job.id, request.id = rid, error = %db, "provision step failed on the database");
            } else {
                tracing::warn!(job.id = %job.id, request.id = rid, code = error.code.as_str(), error = %e, "provision attempt failed");
            }
            let mut tx = env.db.begin().await?;
            let failed =
                match jobs::fail_with_detail(&mut *tx, job.id, worker, &error, detail.as_deref(), retry_in).await {
                    Ok(j) => j,
                    Err(DbError::LeaseLost(_)) => return Ok(Outcome::LeaseLost),
                    Err(e) => return Err(e),
                };
            if failed.status == JobStatus::Failed
                && let Some(instance) = instance_of(job)
            {
                instances::set_status(&mut *tx, instance, InstanceStatus::Failed).await?;
            }
            tx.commit().await?;
            Ok(match failed.status {
                JobStatus::Failed => Outcome::Failed(error),
                _ => Outcome::RetryScheduled(retry_in),
            })
        }
    }
}

/// The instance a provision job acts on (its first `instance` resource).
pub fn instance_of(job: &Job) -> Option<InstanceId> {
    job.resources.iter().find(|r| r.kind == "instance").and_then(|r| r.id.parse().ok())
}

/// The description tag that marks a guest as the instance's (what adoption checks).
pub fn ownership_tag(instance: InstanceId) -> String {
    format!("nimbus-instance={instance}")
}

/// One provision attempt in progress.
pub struct Provision {
    env: Env,
    job: Job,
    payload: ProvisionVm,
    instance: Instance,
    vmid: Option<u32>,
    lease_lost: CancellationToken,
    ips: Vec<String>,
}

impl std::fmt::Debug for Provision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provision").field("job", &self.job.id).field("step", &self.job.step).finish()
    }
}

impl Provision {
    /// Reads the claimed job's payload, instance and existing VMID reservation.
    pub async fn load(env: &Env, job: Job, lease_lost: CancellationToken) -> Result<Provision, StepError> {
        let payload: ProvisionVm = serde_json::from_value(job.payload.clone()).map_err(|e| StepError::Permanent {
            code: ErrorCode::Internal,
            message: "the job's input could not be read".to_owned(),
            detail: Some(format!("the payload is not a provision payload: {e}")),
        })?;
        let id = instance_of(&job).ok_or_else(|| StepError::Permanent {
            code: ErrorCode::Internal,
            message: "the job names no instance".to_owned(),
            detail: None,
        })?;
        let instance = instances::get_any(&env.db, id).await?;
        if instance.kind != payload.kind {
            return Err(StepError::Permanent {
                code: ErrorCode::Internal,
                message: format!("the job is for a {} guest but the instance is {}", payload.kind, instance.kind),
                detail: None,
            });
        }
        // The reservation is the truth about the VMID (the payload copy is for display).
        let vmid = instances::reservation(&env.db, id).await?.map(|r| r.vmid as u32);
        Ok(Provision { env: env.clone(), job, payload, instance, vmid, lease_lost, ips: Vec::new() })
    }

    /// The instance.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The reserved VMID, once known.
    pub fn vmid(&self) -> Option<u32> {
        self.vmid
    }

    /// The guest's addresses, once the last step ran.
    pub fn ips(&self) -> &[String] {
        &self.ips
    }

    /// The step to run next (`None`: all done). Without a reservation, the VMID comes first
    /// whatever was recorded (it was given up because a foreign guest took it).
    pub fn next_step(&self) -> Option<Step> {
        if self.vmid.is_none() {
            return Some(Step::ReserveVmid);
        }
        Step::resume_after(self.job.step.as_deref())
    }

    /// Runs the remaining steps, recording each, holding a node permit around those that load
    /// the node.
    pub async fn run(&mut self) -> Result<(), StepError> {
        let mut permit: Option<Permit> = None;
        let result = async {
            let Some(first) = self.next_step() else { return Ok(()) };
            let start = Step::ALL.iter().position(|s| *s == first).unwrap_or(0);
            for step in Step::ALL[start..].iter().copied() {
                self.check_stop()?;
                if step.needs_node_permit() && permit.is_none() {
                    permit = Some(self.node_permit().await?);
                } else if !step.needs_node_permit()
                    && let Some(p) = permit.take()
                {
                    p.release().await;
                }
                self.execute(step).await?;
                // The last step is recorded by completion itself, together with the IPs: a
                // retry after a crash here asks the agent again rather than trusting a record
                // without them.
                if step != Step::WaitForIp {
                    self.record(step).await?;
                }
            }
            Ok(())
        }
        .await;
        if let Some(p) = permit {
            p.release().await;
        }
        result
    }

    fn check_stop(&self) -> Result<(), StepError> {
        if self.lease_lost.is_cancelled() {
            return Err(StepError::LeaseLost);
        }
        if self.env.shutdown.is_cancelled() {
            return Err(StepError::ShuttingDown);
        }
        Ok(())
    }

    async fn node_permit(&self) -> Result<Permit, StepError> {
        let holder = format!("{}:{}", self.env.worker_id, self.job.id);
        let stop = self.stop_token();
        let acquired = self.env.caps.acquire(&self.payload.node, &holder, &stop).await;
        stop.cancel();
        match acquired {
            Ok(Some(p)) => Ok(p),
            Ok(None) => Err(self.check_stop().err().unwrap_or(StepError::ShuttingDown)),
            Err(e) => Err(StepError::Transient {
                code: ErrorCode::ServiceUnavailable,
                message: "the node's concurrency limit could not be checked".to_owned(),
                detail: Some(format!("node {}: {e}", self.payload.node)),
            }),
        }
    }

    /// Fires when [`Provision::check_stop`] would stop the run (lease loss or shutdown), for
    /// waits inside a step. Cancel it when done waiting.
    fn stop_token(&self) -> CancellationToken {
        let token = CancellationToken::new();
        let lost = self.lease_lost.clone();
        let shutdown = self.env.shutdown.clone();
        let t = token.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = lost.cancelled() => t.cancel(),
                _ = shutdown.cancelled() => t.cancel(),
                _ = t.cancelled() => {}
            }
        });
        token
    }

    /// Records `step` as done in the ledger (fenced by the lease).
    pub async fn record(&mut self, step: Step) -> Result<(), StepError> {
        let patch = (step == Step::ReserveVmid).then(|| json!({ "vmid": self.vmid }));
        let job = jobs::record_progress(
            &self.env.db,
            self.job.id,
            &self.env.worker_id,
            Progress { progress: step.progress(), step: Some(step.done_name()), message: None, payload_patch: patch },
        )
        .await?;
        self.job = job;
        self.env.events.publish(self.job.id).await;
        Ok(())
    }

    /// Does `step`'s work without recording it; safe to repeat.
    pub async fn execute(&mut self, step: Step) -> Result<(), StepError> {
        match step {
            Step::ReserveVmid => self.reserve_vmid().await,
            Step::Clone => self.clone_template().await,
            Step::Configure => self.configure().await,
            Step::ResizeDisk => self.resize_disk().await,
            Step::Start => self.start().await,
            Step::WaitForIp => self.wait_for_ip().await,
        }
    }

    fn db(&self) -> &PgPool {
        &self.env.db
    }

    fn reserved_vmid(&self) -> Result<u32, StepError> {
        self.vmid.ok_or(StepError::Permanent {
            code: ErrorCode::Internal,
            message: "no guest ID is reserved".to_owned(),
            detail: None,
        })
    }

    fn guest(&self) -> Result<QemuApi, StepError> {
        Ok(self.env.pve.node(&self.payload.node).qemu(self.reserved_vmid()?))
    }

    fn container(&self) -> Result<LxcApi, StepError> {
        Ok(self.env.pve.node(&self.payload.node).lxc(self.reserved_vmid()?))
    }

    fn is_lxc(&self) -> bool {
        self.payload.kind == InstanceKind::Lxc
    }

    async fn reserve_vmid(&mut self) -> Result<(), StepError> {
        let settings = &self.env.settings;
        let node = self.payload.node.clone();
        let reservation = match instances::reservation(self.db(), self.instance.id).await? {
            Some(r) => r,
            None => {
                let mut from = settings.first_vmid as i32;
                let mut found = None;
                for _ in 0..1000 {
                    let candidate = instances::next_free_vmid(self.db(), &settings.cluster, from).await?;
                    // Proxmox may hold guests Nimbus does not manage: skip their ids.
                    match self.env.pve.next_id(Some(candidate as u32)).await {
                        Ok(_) => {}
                        Err(e) if e.is_already_exists() || e.param_errors().is_some_and(|p| p.contains_key("vmid")) => {
                            from = candidate + 1;
                            continue;
                        }
                        Err(e) => return Err(StepError::Pve { step: Step::ReserveVmid, error: e }),
                    }
                    match instances::reserve_vmid(
                        self.db(),
                        &settings.cluster,
                        self.instance.id,
                        Some(&node),
                        candidate,
                    )
                    .await
                    {
                        Ok(r) => {
                            found = Some(r);
                            break;
                        }
                        // Another instance reserved it meanwhile.
                        Err(DbError::Conflict { constraint }) if constraint == "vmid_reservations_pkey" => {
                            from = candidate + 1;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                found.ok_or_else(|| StepError::Transient {
                    code: ErrorCode::Conflict,
                    message: "no free guest ID was found".to_owned(),
                    detail: Some(format!("no free VMID from {} up to {from}", settings.first_vmid)),
                })?
            }
        };
        instances::set_placement(self.db(), self.instance.id, &node, reservation.vmid).await?;
        self.vmid = Some(reservation.vmid as u32);
        Ok(())
    }

    /// Where a guest with our VMID lives, and whether it is ours.
    async fn existing_guest(&self, vmid: u32) -> Result<Option<(String, bool)>, StepError> {
        let resources =
            self.env.pve.cluster_resources(Some(ResourceType::Vm)).await.map_err(StepError::pve(Step::Clone))?;
        let Some((kind, node)) =
            resources.into_iter().find(|r| r.vmid == Some(vmid)).and_then(|r| Some((r.kind, r.node?)))
        else {
            return Ok(None);
        };
        // A guest of the other kind under our VMID is not ours, whatever its description says.
        if kind != self.payload.kind.as_str() {
            return Ok(Some((node, false)));
        }
        let api = self.env.pve.node(&node);
        let description = if self.is_lxc() {
            api.lxc(vmid).config().await.map_err(StepError::pve(Step::Clone))?.description
        } else {
            api.qemu(vmid).config().await.map_err(StepError::pve(Step::Clone))?.description
        };
        let tag = ownership_tag(self.instance.id);
        let ours = description.as_deref().is_some_and(|d| d.contains(&tag));
        Ok(Some((node, ours)))
    }

    /// Adopts an existing guest under our VMID, or gives the VMID up when it is foreign.
    async fn adopt_or_release(&mut self, vmid: u32) -> Result<bool, StepError> {
        match self.existing_guest(vmid).await? {
            None => Ok(false),
            Some((node, true)) if node == self.payload.node => {
                tracing::info!(job.id = %self.job.id, vm.vmid = vmid, "adopting the guest an earlier attempt cloned");
                self.wait_unlocked().await?;
                Ok(true)
            }
            Some((node, true)) => Err(StepError::Permanent {
                code: ErrorCode::Conflict,
                message: "the instance's guest is on another node than the one it was placed on".to_owned(),
                detail: Some(format!("guest {vmid} is on node {node}, not {}", self.payload.node)),
            }),
            Some((_, false)) => {
                instances::release_vmid(self.db(), self.instance.id).await?;
                self.vmid = None;
                Err(StepError::Transient {
                    code: ErrorCode::Conflict,
                    message: "the guest's ID was taken by a guest Nimbus does not manage; another is reserved"
                        .to_owned(),
                    detail: Some(format!("VMID {vmid} on node {} is foreign", self.payload.node)),
                })
            }
        }
    }

    /// Waits while a task (e.g. an earlier attempt's clone) holds the guest's lock.
    async fn wait_unlocked(&self) -> Result<(), StepError> {
        let vmid = self.reserved_vmid()?;
        let deadline = tokio::time::Instant::now() + self.env.settings.task_timeout;
        loop {
            let lock = if self.is_lxc() {
                self.container()?.config().await.map_err(StepError::pve(Step::Clone))?.lock
            } else {
                self.guest()?.config().await.map_err(StepError::pve(Step::Clone))?.lock
            };
            let Some(lock) = lock else { return Ok(()) };
            if tokio::time::Instant::now() >= deadline {
                return Err(StepError::Transient {
                    code: ErrorCode::Timeout,
                    message: "the guest stayed locked by another Proxmox task".to_owned(),
                    detail: Some(format!("guest {vmid} on node {} is still locked ({lock})", self.payload.node)),
                });
            }
            self.check_stop()?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn clone_template(&mut self) -> Result<(), StepError> {
        let vmid = self.guest()?.vmid();
        if self.adopt_or_release(vmid).await? {
            return Ok(());
        }
        let created = if self.is_lxc() {
            let params = self.lxc_create(vmid).await?;
            self.env.pve.node(&self.payload.node).create_lxc(&params).await
        } else {
            let template = self.env.pve.node(&self.payload.node).qemu(self.payload.template_vmid);
            let params =
                QemuClone::new(vmid).name(self.instance.name.clone()).description(ownership_tag(self.instance.id));
            template.clone_to(&params).await
        };
        let upid = match created {
            Ok(upid) => upid,
            // A concurrent or earlier attempt created it between our check and the clone.
            Err(e) if e.is_already_exists() => {
                return if self.adopt_or_release(vmid).await? {
                    Ok(())
                } else {
                    Err(StepError::Pve { step: Step::Clone, error: e })
                };
            }
            Err(e) => return Err(StepError::Pve { step: Step::Clone, error: e }),
        };
        self.env.pve.wait_task(&upid, self.env.settings.task_timeout).await.map_err(StepError::pve(Step::Clone))?;
        Ok(())
    }

    /// The volume id of the node's `vztmpl` archive named like the instance's template.
    async fn ostemplate(&self) -> Result<String, StepError> {
        let api = self.env.pve.node(&self.payload.node);
        let query = StorageListQuery { content: Some("vztmpl".into()), ..Default::default() };
        for storage in api.storage_list(&query).await.map_err(StepError::pve(Step::Clone))? {
            let content = api
                .storage(&storage.storage)
                .content(&ContentQuery::content("vztmpl"))
                .await
                .map_err(StepError::pve(Step::Clone))?;
            if let Some(item) =
                content.into_iter().find(|c| vztmpl_name(&c.volid).is_some_and(|n| n == self.payload.template))
            {
                return Ok(item.volid);
            }
        }
        Err(StepError::Permanent {
            code: ErrorCode::UnknownTemplate,
            message: format!(
                "the container template '{}' is not available where the instance was placed",
                self.payload.template
            ),
            detail: Some(format!("node {} has no vztmpl archive named '{}'", self.payload.node, self.payload.template)),
        })
    }

    /// The create call of the instance's container: everything the qemu path configures later.
    async fn lxc_create(&self, vmid: u32) -> Result<LxcCreate, StepError> {
        let i = &self.instance;
        let options = LxcOptions::new()
            .hostname(i.name.clone())
            .cores(i.cores.max(1) as u32)
            .memory(i.memory_mib.max(1) as u64)
            .swap(0)
            .rootfs_volume(LxcVolume::new(LXC_ROOTFS_STORAGE, i.disk_gib.max(1) as u64))
            .net(0, LxcNet::new("eth0", LXC_BRIDGE).dhcp())
            .unprivileged(true)
            .description(ownership_tag(i.id));
        let mut params = LxcCreate::new(vmid, self.ostemplate().await?, options);
        if !i.ssh_keys.is_empty() {
            params = params.ssh_keys(&i.ssh_keys);
        }
        Ok(params)
    }

    async fn configure(&mut self) -> Result<(), StepError> {
        if self.is_lxc() {
            // Set when the container was created.
            return Ok(());
        }
        let i = &self.instance;
        let mut options = QemuOptions::new()
            .cores(i.cores.max(1) as u32)
            .memory(i.memory_mib.max(1) as u64)
            .ciuser(self.env.settings.ciuser.clone())
            .ipconfig(0, IpConfig::dhcp());
        if !i.ssh_keys.is_empty() {
            options = options.ssh_keys(&i.ssh_keys);
        }
        self.guest()?.update_config(&ConfigUpdate::new(options)).await.map_err(StepError::pve(Step::Configure))
    }

    async fn resize_disk(&mut self) -> Result<(), StepError> {
        if self.is_lxc() {
            // The root filesystem was created at the instance's size.
            return Ok(());
        }
        let guest = self.guest()?;
        let config = guest.config().await.map_err(StepError::pve(Step::ResizeDisk))?;
        let disks = config.disks();
        // The boot disk: the first disk of `boot: order=…`, else the first disk slot.
        let boot = config
            .boot
            .as_deref()
            .and_then(|b| b.strip_prefix("order="))
            .and_then(|order| order.split(';').find(|d| disks.contains_key(*d)).map(str::to_owned))
            .or_else(|| disks.keys().find(|k| !disks[*k].contains("media=cdrom")).cloned())
            .ok_or_else(|| StepError::Permanent {
                code: ErrorCode::ProxmoxRejected,
                message: "the template has no disk to grow".to_owned(),
                detail: config.boot.clone().map(|b| format!("boot: {b}")),
            })?;
        let want = (self.instance.disk_gib.max(1) as u64) << 30;
        let have = nimbus_proxmox::propstring::disk_size_bytes(&disks[&boot]).unwrap_or(0);
        if have >= want {
            // Already grown (a retry), or the template is at least as large: never shrink.
            return Ok(());
        }
        let upid = guest
            .resize(&boot, &format!("{}G", self.instance.disk_gib))
            .await
            .map_err(StepError::pve(Step::ResizeDisk))?;
        self.env
            .pve
            .wait_task(&upid, self.env.settings.task_timeout)
            .await
            .map_err(StepError::pve(Step::ResizeDisk))?;
        Ok(())
    }

    async fn start(&mut self) -> Result<(), StepError> {
        if self.is_lxc() {
            let container = self.container()?;
            self.start_guest(&container).await
        } else {
            let guest = self.guest()?;
            self.start_guest(&guest).await
        }
    }

    async fn start_guest<K: GuestKind>(&self, guest: &Guest<K>) -> Result<(), StepError> {
        if guest.status().await.map_err(StepError::pve(Step::Start))?.is_running() {
            return Ok(());
        }
        let upid = guest.start().await.map_err(StepError::pve(Step::Start))?;
        self.env.pve.wait_task(&upid, self.env.settings.task_timeout).await.map_err(StepError::pve(Step::Start))?;
        Ok(())
    }

    async fn wait_for_ip(&mut self) -> Result<(), StepError> {
        let lxc = self.is_lxc();
        let guest = self.guest()?;
        let container = self.container()?;
        let settings = &self.env.settings;
        let deadline = tokio::time::Instant::now() + settings.ip_timeout;
        let stop = self.stop_token();
        let result = loop {
            let reported = if lxc {
                container.interfaces().await.map(|i| container_addresses(&i))
            } else {
                guest.agent_network_interfaces().await.map(|i| guest_addresses(&i))
            };
            match reported {
                Ok(ips) => {
                    if ips.iter().any(|ip| !ip.contains(':')) {
                        break Ok(ips);
                    }
                }
                // The agent answers only once the guest has booted (containers answer at once).
                Err(e) if e.is_transient() => {}
                Err(e) => break Err(StepError::Pve { step: Step::WaitForIp, error: e }),
            }
            if tokio::time::Instant::now() >= deadline {
                break Err(StepError::Transient {
                    code: ErrorCode::Timeout,
                    message: format!("the guest reported no IPv4 address within {:?}", settings.ip_timeout),
                    detail: None,
                });
            }
            tokio::select! {
                _ = stop.cancelled() => break Err(self.check_stop().err().unwrap_or(StepError::ShuttingDown)),
                _ = tokio::time::sleep(settings.ip_poll) => {}
            }
        };
        stop.cancel();
        self.ips = result?;
        Ok(())
    }
}

/// The addresses worth showing: global IPv4 and IPv6, no loopback or link-local.
pub fn guest_addresses(interfaces: &[nimbus_proxmox::AgentInterface]) -> Vec<String> {
    global_addresses(interfaces.iter().map(|i| (i.name.as_str(), &i.ip_addresses)))
}

/// [`guest_addresses`] for a container's `interfaces`.
pub fn container_addresses(interfaces: &[nimbus_proxmox::LxcInterface]) -> Vec<String> {
    global_addresses(interfaces.iter().map(|i| (i.name.as_str(), &i.ip_addresses)))
}

fn global_addresses<'a>(
    interfaces: impl Iterator<Item = (&'a str, &'a Vec<nimbus_proxmox::AgentIpAddress>)>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (_, addresses) in interfaces.filter(|(name, _)| *name != "lo") {
        for a in addresses {
            let ip = a.ip_address.as_str();
            let Ok(parsed) = ip.parse::<std::net::IpAddr>() else { continue };
            let skip = match parsed {
                std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
                std::net::IpAddr::V6(v6) => {
                    v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
                }
            };
            if !skip && !out.iter().any(|o| o == ip) {
                out.push(ip.to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_proxmox::{AgentInterface, AgentIpAddress};

    #[test]
    fn resumes_after_the_recorded_step() {
        assert_eq!(Step::resume_after(None), Some(Step::ReserveVmid));
        assert_eq!(Step::resume_after(Some("vmid_reserved")), Some(Step::Clone));
        assert_eq!(Step::resume_after(Some("cloned")), Some(Step::Configure));
        assert_eq!(Step::resume_after(Some("started")), Some(Step::WaitForIp));
        assert_eq!(Step::resume_after(Some("ip_assigned")), None);
        assert_eq!(Step::resume_after(Some("something else")), Some(Step::ReserveVmid));
        let progress: Vec<u8> = Step::ALL.iter().map(|s| s.progress()).collect();
        assert!(progress.windows(2).all(|w| w[0] < w[1]) && progress[5] < 100);
    }

    #[test]
    fn only_global_addresses_are_kept() {
        let addr = |ip: &str| AgentIpAddress { ip_address: ip.into(), ip_address_type: None, prefix: None };
        let ifaces = vec![
            AgentInterface {
                name: "lo".into(),
                hardware_address: None,
                ip_addresses: vec![addr("127.0.0.1"), addr("::1")],
                statistics: None,
            },
            AgentInterface {
                name: "eth0".into(),
                hardware_address: None,
                ip_addresses: vec![addr("10.10.3.7"), addr("fe80::1"), addr("fd00::7"), addr("10.10.3.7")],
                statistics: None,
            },
        ];
        assert_eq!(guest_addresses(&ifaces), vec!["10.10.3.7".to_owned(), "fd00::7".to_owned()]);
    }

    #[test]
    fn errors_carry_codes_and_retryability() {
        let e = StepError::Permanent { code: ErrorCode::ProxmoxRejected, message: "no".into(), detail: None };
        assert_eq!(
            e.job_error(),
            JobError { code: ErrorCode::ProxmoxRejected, message: "no".into(), retryable: false }
        );
        assert!(StepError::ShuttingDown.is_transient());
        assert_eq!(StepError::from(DbError::LeaseLost(JobId::from_uuid(uuid::Uuid::nil()))).to_string(), "lease lost");
    }

    /// What a storage failure on a real cluster says: a host, its address, a device path and an
    /// API path.
    const LEAKY: &str = "storage-7.dc1.example.net (10.20.30.40): cannot open /dev/mapper/pve-vm--100--disk--0 \
                         (POST /api2/json/nodes/pve1/qemu/100/clone)";
    const SECRETS: [&str; 5] =
        ["10.20.30.40", "storage-7.dc1.example.net", "/dev/mapper/", "/api2/json", "/nodes/pve1/qemu/100"];

    fn api_error(status: u16, message: &str, errors: &[(&str, &str)]) -> PveError {
        PveError::Api {
            method: "POST".into(),
            path: "/nodes/pve1/qemu/100/clone".into(),
            status,
            message: message.into(),
            errors: errors.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn tenants_get_our_words_and_operators_get_proxmoxs() {
        let upid =
            nimbus_proxmox::upid::Upid::parse("UPID:pve1:000FF1FD:10F9374C:630D702C:qmclone:100:root@pam:").unwrap();
        let cases = [
            (
                StepError::Pve { step: Step::Clone, error: api_error(500, LEAKY, &[]) },
                ErrorCode::ProxmoxRejected,
                "Proxmox could not clone the template",
                false,
            ),
            (
                StepError::Pve {
                    step: Step::Configure,
                    error: api_error(400, "Parameter verification failed.", &[("sshkeys", LEAKY)]),
                },
                ErrorCode::ProxmoxRejected,
                "Proxmox could not configure the guest",
                false,
            ),
            (
                StepError::Pve { step: Step::Start, error: api_error(595, LEAKY, &[]) },
                ErrorCode::ProxmoxUnavailable,
                "Proxmox was unavailable and could not start the guest",
                true,
            ),
            (
                StepError::Pve {
                    step: Step::Clone,
                    error: PveError::Timeout {
                        method: "POST".into(),
                        path: "/nodes/pve1/qemu/100/clone".into(),
                        after: Duration::from_secs(30),
                    },
                },
                ErrorCode::Timeout,
                "Proxmox did not answer in time and could not clone the template",
                true,
            ),
            (
                StepError::Pve {
                    step: Step::Clone,
                    error: PveError::TaskFailed {
                        upid: upid.clone(),
                        exitstatus: LEAKY.into(),
                        log_tail: vec!["create full clone of drive scsi0 (storage-7.dc1.example.net)".into()],
                    },
                },
                ErrorCode::ProxmoxRejected,
                "Proxmox could not clone the template",
                false,
            ),
            (
                StepError::Pve {
                    step: Step::ResizeDisk,
                    error: PveError::TaskTimeout {
                        upid,
                        waited: Duration::from_secs(20),
                        last_error: Some(LEAKY.into()),
                    },
                },
                ErrorCode::Timeout,
                "Proxmox did not answer in time and could not grow the disk",
                true,
            ),
        ];
        for (e, code, message, retryable) in cases {
            let Failure { error, detail } = e.failure();
            assert_eq!(error, JobError { code, message: message.into(), retryable }, "{e}");
            let shown = serde_json::to_string(&error).unwrap();
            for secret in SECRETS {
                assert!(!shown.contains(secret), "{secret} reaches the tenant: {shown}");
            }
            // Operators get the step, the request and Proxmox's own text.
            let detail = detail.expect("a Proxmox failure has a detail");
            assert!(detail.starts_with(&e.to_string()), "{detail}");
            assert!(detail.contains("/nodes/pve1") || detail.contains("UPID:pve1"), "{detail}");
            if !matches!(e, StepError::Pve { error: PveError::Timeout { .. }, .. }) {
                assert!(detail.contains("storage-7.dc1.example.net") && detail.contains("10.20.30.40"), "{detail}");
            }
        }
    }

    #[test]
    fn a_failed_tasks_log_reaches_operators_only() {
        let upid =
            nimbus_proxmox::upid::Upid::parse("UPID:pve1:000FF1FD:10F9374C:630D702C:qmclone:100:root@pam:").unwrap();
        let e = StepError::Pve {
            step: Step::Clone,
            error: PveError::TaskFailed {
                upid,
                exitstatus: "clone failed".into(),
                log_tail: vec!["lvcreate '/dev/mapper/pve-vm--100--disk--0' failed".into()],
            },
        };
        let failure = e.failure();
        assert!(failure.detail.unwrap().contains("task log: lvcreate '/dev/mapper/pve-vm--100--disk--0'"));
        assert!(!failure.error.message.contains("/dev/mapper"));
    }

    #[test]
    fn our_own_failures_keep_ids_and_nodes_for_operators() {
        let e = StepError::Transient {
            code: ErrorCode::Conflict,
            message: "the guest's ID was taken".into(),
            detail: Some("VMID 1000 on node pve1 is foreign".into()),
        };
        let failure = e.failure();
        assert_eq!(failure.error.message, "the guest's ID was taken");
        assert!(failure.error.retryable);
        assert_eq!(failure.detail.as_deref(), Some("VMID 1000 on node pve1 is foreign"));
        // The log line (the error's Display) has both.
        assert_eq!(e.to_string(), "the guest's ID was taken (VMID 1000 on node pve1 is foreign)");
        let db = StepError::Db(DbError::Sqlx(sqlx::Error::Protocol("connection to 10.20.30.40 reset".into())));
        let failure = db.failure();
        assert_eq!((failure.error.code, failure.error.message.as_str()), (ErrorCode::Internal, "internal error"));
        assert!(failure.detail.unwrap().contains("10.20.30.40"));
    }
}
