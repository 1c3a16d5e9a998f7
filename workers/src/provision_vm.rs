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
//! Rebuild (`rebuild.rs`) runs the same machine under the same VMID: it first removes the old
//! guest, then clones, configures, grows, starts and waits as a provision does.
//!
//! Restoring a backup runs the same machine too (job kind `restore`), restoring the archive
//! (`POST /nodes/{node}/qemu` with `archive`, or `/lxc` with `restore=1`: new MACs, the
//! instance's name and tag) where a provision clones: into a new instance on the provision
//! queue (a new VMID, [`Step::RESTORE_AS_NEW`]), or over the instance's own guest on the rebuild
//! queue (old guest removed first, as a rebuild does, [`Step::RESTORE_IN_PLACE`]). Either way the
//! restored guest carries the instance's tag, so a retry after a crash adopts it instead of
//! restoring a second one, and configure, grow disk and start bring it to the instance's sizes.
//!
//! A provision that fails for good marks its instance failed (which releases its quota) and, in
//! the same transaction, enqueues the cleanup (`delete` with `cleanup: true`), which removes the
//! guest if one was created and is ours, and the VMID reservation.
//!
//! Retries, failures and shutdown are the step machine's (`step_machine.rs`).

use nimbus_jobs::vztmpl_name;
use std::time::Duration;

use nimbus_db::instances::{self, Instance};
use nimbus_db::jobs::{self, Job};
use nimbus_db::{DbError, PgPool};
use nimbus_domain::{ErrorCode, InstanceKind, InstanceStatus, JobId};
use nimbus_jobs::{DeleteInstance, ProvisionVm, RebuildInstance};
use nimbus_proxmox::{
    ConfigUpdate, ContentQuery, Guest, GuestKind, IpConfig, LxcApi, LxcCreate, LxcNet, LxcOptions, LxcVolume, QemuApi,
    QemuClone, QemuCreate, QemuOptions, StorageListQuery,
};
use serde_json::{Value, json};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

use crate::env::Env;
use crate::guest_ops;
use crate::step_machine::{self, Operation, Run, StepInfo};
pub use crate::step_machine::{Failure, Outcome, StepError};

/// The storage of an LXC container's root filesystem.
pub const LXC_ROOTFS_STORAGE: &str = "local-lvm";
/// The bridge of an LXC container's `eth0`.
pub const LXC_BRIDGE: &str = "vmbr0";

/// The steps, in order. Each is recorded in the ledger (`step`) once done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Rebuild only: stop and remove the old guest (and its disks) under the VMID.
    Destroy,
    /// Reserve a VMID in Postgres (adopting the instance's existing reservation).
    ReserveVmid,
    /// Clone the template into the VMID (adopting a guest already there with our tag).
    Clone,
    /// Restore the backup into the VMID (adopting a guest already there with our tag).
    Restore,
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
    /// A provision's steps, in order.
    pub const ALL: [Step; 6] =
        [Step::ReserveVmid, Step::Clone, Step::Configure, Step::ResizeDisk, Step::Start, Step::WaitForIp];

    /// A rebuild's steps, in order: the VMID stays reserved, the old guest goes first.
    pub const REBUILD: [Step; 6] =
        [Step::Destroy, Step::Clone, Step::Configure, Step::ResizeDisk, Step::Start, Step::WaitForIp];

    /// Restoring a backup into a new instance: a provision that restores instead of cloning.
    pub const RESTORE_AS_NEW: [Step; 6] =
        [Step::ReserveVmid, Step::Restore, Step::Configure, Step::ResizeDisk, Step::Start, Step::WaitForIp];

    /// Restoring a backup over the instance's guest: a rebuild that restores instead of cloning.
    pub const RESTORE_IN_PLACE: [Step; 6] =
        [Step::Destroy, Step::Restore, Step::Configure, Step::ResizeDisk, Step::Start, Step::WaitForIp];

    /// The first provision step not yet done after the ledger recorded `done`.
    pub fn resume_after(done: Option<&str>) -> Option<Step> {
        step_machine::resume_after(&Step::ALL, done)
    }
}

impl StepInfo for Step {
    fn name(self) -> &'static str {
        match self {
            Step::Destroy => "remove old guest",
            Step::ReserveVmid => "reserve VMID",
            Step::Clone => "clone template",
            Step::Restore => "restore backup",
            Step::Configure => "configure cloud-init",
            Step::ResizeDisk => "grow disk",
            Step::Start => "start",
            Step::WaitForIp => "wait for IP",
        }
    }

    fn done_name(self) -> &'static str {
        match self {
            Step::Destroy => "old_guest_removed",
            Step::ReserveVmid => "vmid_reserved",
            Step::Clone => "cloned",
            Step::Restore => "restored",
            Step::Configure => "configured",
            Step::ResizeDisk => "disk_resized",
            Step::Start => "started",
            Step::WaitForIp => "ip_assigned",
        }
    }

    fn progress(self) -> u8 {
        match self {
            Step::Destroy => 20,
            Step::ReserveVmid => 10,
            Step::Clone | Step::Restore => 40,
            Step::Configure => 55,
            Step::ResizeDisk => 65,
            Step::Start => 80,
            Step::WaitForIp => 95,
        }
    }

    fn needs_node_permit(self) -> bool {
        matches!(self, Step::Destroy | Step::Clone | Step::Restore | Step::Configure | Step::ResizeDisk | Step::Start)
    }

    fn plain_action(self) -> &'static str {
        match self {
            Step::Destroy => "remove the old guest",
            Step::ReserveVmid => "reserve an ID for the guest",
            Step::Clone => "clone the template",
            Step::Restore => "restore the backup",
            Step::Configure => "configure the guest",
            Step::ResizeDisk => "grow the disk",
            Step::Start => "start the guest",
            Step::WaitForIp => "report the guest's address",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Claims provision (or rebuild) job `job_id` and runs it to an outcome.
pub async fn run(env: &Env, job_id: JobId) -> Result<Outcome, DbError> {
    step_machine::run::<Provision>(env, job_id).await
}

pub use crate::guest_ops::ownership_tag;

/// What a run of the machine does, from the job's kind and queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Provision,
    Rebuild,
    RestoreAsNew,
    RestoreInPlace,
}

impl Mode {
    fn of(job: &Job) -> Mode {
        match (job.kind, job.queue.as_str()) {
            (nimbus_domain::JobKind::Rebuild, _) => Mode::Rebuild,
            (nimbus_domain::JobKind::Restore, nimbus_jobs::queues::REBUILD) => Mode::RestoreInPlace,
            (nimbus_domain::JobKind::Restore, _) => Mode::RestoreAsNew,
            _ => Mode::Provision,
        }
    }

    /// Whether the instance keeps the VMID it has (its guest is replaced under it).
    fn keeps_vmid(self) -> bool {
        matches!(self, Mode::Rebuild | Mode::RestoreInPlace)
    }
}

/// One provision (or rebuild) attempt in progress.
pub struct Provision {
    run: Run,
    payload: ProvisionVm,
    /// `Some` for a rebuild: what the request asked for.
    rebuild: Option<RebuildInstance>,
    /// Which of the machine's runs this is.
    mode: Mode,
    instance: Instance,
    vmid: Option<u32>,
    ips: Vec<String>,
}

impl std::fmt::Debug for Provision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provision").field("run", &self.run).finish()
    }
}

impl Operation for Provision {
    type Step = Step;
    const NAME: &'static str = "provision";

    /// Reads the claimed job's payload, instance and existing VMID reservation.
    async fn load(run: Run) -> Result<Provision, StepError> {
        let id = run.instance_id()?;
        let instance = instances::get_any(run.db(), id).await?;
        let mode = Mode::of(&run.job);
        let (payload, rebuild) = if mode == Mode::Rebuild {
            let rebuild: RebuildInstance = run.payload()?;
            (crate::rebuild::as_provision(&rebuild, &instance)?, Some(rebuild))
        } else {
            (run.payload::<ProvisionVm>()?, None)
        };
        if instance.kind != payload.kind {
            return Err(StepError::permanent(
                ErrorCode::Internal,
                format!("the job is for a {} guest but the instance is {}", payload.kind, instance.kind),
                None,
            ));
        }
        let mut instance = instance;
        if let Some(keys) = rebuild.as_ref().and_then(|r| r.ssh_keys.clone()) {
            instance.ssh_keys = keys;
        }
        // The reservation is the truth about the VMID (the payload copy is for display).
        let vmid = instances::reservation(run.db(), id).await?.map(|r| r.vmid as u32);
        Ok(Provision { run, payload, rebuild, mode, instance, vmid, ips: Vec::new() })
    }

    fn run(&self) -> &Run {
        &self.run
    }

    fn run_mut(&mut self) -> &mut Run {
        &mut self.run
    }

    fn steps(&self) -> &'static [Step] {
        match self.mode {
            Mode::Provision => &Step::ALL,
            Mode::Rebuild => &Step::REBUILD,
            Mode::RestoreAsNew => &Step::RESTORE_AS_NEW,
            Mode::RestoreInPlace => &Step::RESTORE_IN_PLACE,
        }
    }

    fn node(&self) -> &str {
        &self.payload.node
    }

    /// Without a reservation, the VMID comes first whatever was recorded (it was given up
    /// because a foreign guest took it). A rebuild keeps its reservation.
    fn next_step(&self) -> Option<Step> {
        if self.vmid.is_none() && !self.mode.keeps_vmid() {
            return Some(Step::ReserveVmid);
        }
        step_machine::resume_after(self.steps(), self.run.job.step.as_deref())
    }

    async fn execute(&mut self, step: Step) -> Result<(), StepError> {
        match step {
            Step::Destroy => crate::rebuild::remove_old_guest(self).await,
            Step::ReserveVmid => self.reserve_vmid().await,
            Step::Clone => self.clone_template().await,
            Step::Restore => self.restore_backup().await,
            Step::Configure => self.configure().await,
            Step::ResizeDisk => self.resize_disk().await,
            Step::Start => self.start().await,
            Step::WaitForIp => self.wait_for_ip().await,
        }
    }

    fn patch(&self, step: Step) -> Option<Value> {
        (step == Step::ReserveVmid).then(|| json!({ "vmid": self.vmid }))
    }

    async fn succeeded(&self, tx: &mut PgConnection) -> Result<(), DbError> {
        let id = self.instance.id;
        instances::set_ip_addresses(&mut *tx, id, &self.ips).await?;
        instances::set_status(&mut *tx, id, InstanceStatus::Running).await?;
        if let Some(rebuild) = &self.rebuild {
            instances::set_template(&mut *tx, id, &rebuild.template).await?;
            if rebuild.ssh_keys.is_some() {
                instances::set_ssh_keys(&mut *tx, id, &self.instance.ssh_keys).await?;
            }
        }
        tracing::info!(job.id = %self.run.job.id, vm.id = %id, vm.ips = ?self.ips, "guest ready");
        Ok(())
    }

    /// A provision that failed for good: the instance is failed (its quota released) and its
    /// cleanup is enqueued. A rebuild that failed for good leaves the instance failed too: its
    /// old guest may be gone, so it is not what the tenant had; they may rebuild or delete it.
    async fn failed(job: &Job, tx: &mut PgConnection) -> Result<(), DbError> {
        let Some(instance) = job.instance() else { return Ok(()) };
        instances::set_status(&mut *tx, instance, InstanceStatus::Failed).await?;
        // A guest made for a new instance (provision, restore as new) is cleaned up.
        if job.queue == nimbus_jobs::queues::PROVISION {
            let mut cleanup = DeleteInstance { cleanup: true }.new_job();
            cleanup.resources = job.resources.clone();
            cleanup.request_id = job.request_id.clone();
            jobs::enqueue(&mut *tx, job.tenant_id, &cleanup).await?;
        }
        Ok(())
    }
}

impl Provision {
    /// Reads the claimed job's payload, instance and existing VMID reservation (a run outside
    /// the queue, e.g. a test stepping through it).
    pub async fn load(env: &Env, job: Job, lease_lost: CancellationToken) -> Result<Provision, StepError> {
        <Provision as Operation>::load(Run::new(env.clone(), job, lease_lost)).await
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

    /// The step to run next (`None`: all done).
    pub fn next_step(&self) -> Option<Step> {
        <Provision as Operation>::next_step(self)
    }

    /// Runs the remaining steps, recording each.
    pub async fn run(&mut self) -> Result<(), StepError> {
        step_machine::drive(self).await
    }

    /// Records `step` as done in the ledger (fenced by the lease).
    pub async fn record(&mut self, step: Step) -> Result<(), StepError> {
        let patch = <Provision as Operation>::patch(self, step);
        self.run.record(step, patch, None).await
    }

    /// Does `step`'s work without recording it; safe to repeat.
    pub async fn execute(&mut self, step: Step) -> Result<(), StepError> {
        <Provision as Operation>::execute(self, step).await
    }

    fn db(&self) -> &PgPool {
        &self.run.env.db
    }

    fn reserved_vmid(&self) -> Result<u32, StepError> {
        self.vmid.ok_or(StepError::Permanent {
            code: ErrorCode::Internal,
            message: "no guest ID is reserved".to_owned(),
            detail: None,
        })
    }

    fn guest(&self) -> Result<QemuApi, StepError> {
        Ok(self.run.env.pve.node(&self.payload.node).qemu(self.reserved_vmid()?))
    }

    fn container(&self) -> Result<LxcApi, StepError> {
        Ok(self.run.env.pve.node(&self.payload.node).lxc(self.reserved_vmid()?))
    }

    fn is_lxc(&self) -> bool {
        self.payload.kind == InstanceKind::Lxc
    }

    async fn reserve_vmid(&mut self) -> Result<(), StepError> {
        let settings = &self.run.env.settings;
        let node = self.payload.node.clone();
        let reservation = match instances::reservation(self.db(), self.instance.id).await? {
            Some(r) => r,
            None => {
                let mut from = settings.first_vmid as i32;
                let mut found = None;
                for _ in 0..1000 {
                    let candidate = instances::next_free_vmid(self.db(), &settings.cluster, from).await?;
                    // Proxmox may hold guests Nimbus does not manage: skip their ids.
                    match self.run.env.pve.next_id(Some(candidate as u32)).await {
                        Ok(_) => {}
                        Err(e) if e.is_already_exists() || e.param_errors().is_some_and(|p| p.contains_key("vmid")) => {
                            from = candidate + 1;
                            continue;
                        }
                        Err(e) => return Err(StepError::pve(Step::ReserveVmid)(e)),
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
        let found = guest_ops::find(&self.run.env, Step::Clone, vmid, self.payload.kind, self.instance.id).await?;
        Ok(found.map(|f| (f.node, f.ours)))
    }

    /// Adopts an existing guest under our VMID, or gives the VMID up when it is foreign.
    async fn adopt_or_release(&mut self, vmid: u32) -> Result<bool, StepError> {
        match self.existing_guest(vmid).await? {
            None => Ok(false),
            Some((node, true)) if node == self.payload.node => {
                tracing::info!(job.id = %self.run.job.id, vm.vmid = vmid, "adopting the guest an earlier attempt cloned");
                self.wait_unlocked().await?;
                Ok(true)
            }
            Some((node, true)) => Err(StepError::Permanent {
                code: ErrorCode::Conflict,
                message: "the instance's guest is on another node than the one it was placed on".to_owned(),
                detail: Some(format!("guest {vmid} is on node {node}, not {}", self.payload.node)),
            }),
            Some((node, false)) => {
                // An earlier attempt's clone may still run: Proxmox writes the tag (the
                // description) when it ends, so a guest locked for creation is waited for first.
                if node == self.payload.node && self.locked_for_creation().await? {
                    self.wait_unlocked().await?;
                    match self.existing_guest(vmid).await? {
                        None => return Ok(false),
                        Some((n, true)) if n == self.payload.node => return Ok(true),
                        Some(_) => {}
                    }
                }
                self.give_up_vmid(vmid).await
            }
        }
    }

    /// Whether the guest under the reserved VMID is locked by a clone or a create.
    async fn locked_for_creation(&self) -> Result<bool, StepError> {
        let lock = if self.is_lxc() {
            self.container()?.config().await.map_err(StepError::pve(Step::Clone))?.lock
        } else {
            self.guest()?.config().await.map_err(StepError::pve(Step::Clone))?.lock
        };
        Ok(matches!(lock.as_deref(), Some("clone" | "create")))
    }

    /// A foreign guest holds the VMID. A provision gives the VMID up and reserves another on its
    /// next attempt; a rebuild cannot (the instance keeps its VMID) and fails.
    async fn give_up_vmid(&mut self, vmid: u32) -> Result<bool, StepError> {
        let detail = Some(format!("VMID {vmid} on node {} is foreign", self.payload.node));
        if self.mode.keeps_vmid() {
            return Err(StepError::permanent(
                ErrorCode::Conflict,
                "the instance's guest ID is held by a guest Nimbus does not manage",
                detail,
            ));
        }
        instances::release_vmid(self.db(), self.instance.id).await?;
        self.vmid = None;
        Err(StepError::Transient {
            code: ErrorCode::Conflict,
            message: "the guest's ID was taken by a guest Nimbus does not manage; another is reserved".to_owned(),
            detail,
        })
    }

    /// Waits while a task (e.g. an earlier attempt's clone) holds the guest's lock.
    async fn wait_unlocked(&self) -> Result<(), StepError> {
        let vmid = self.reserved_vmid()?;
        let deadline = tokio::time::Instant::now() + self.run.env.settings.task_timeout;
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
            self.run.check_stop()?;
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
            self.run.env.pve.node(&self.payload.node).create_lxc(&params).await
        } else {
            let template = self.run.env.pve.node(&self.payload.node).qemu(self.payload.template_vmid);
            let params =
                QemuClone::new(vmid).name(self.instance.name.clone()).description(ownership_tag(self.instance.id));
            template.clone_to(&params).await
        };
        self.await_creation(Step::Clone, vmid, created).await
    }

    /// Waits for the task that creates the guest (a clone, a create, a restore). A guest
    /// already there is a concurrent or earlier attempt's, made between our check and the call:
    /// adopted if ours.
    async fn await_creation(
        &mut self,
        step: Step,
        vmid: u32,
        created: Result<nimbus_proxmox::Upid, nimbus_proxmox::PveError>,
    ) -> Result<(), StepError> {
        let upid = match created {
            Ok(upid) => upid,
            Err(e) if e.is_already_exists() => {
                return if self.adopt_or_release(vmid).await? { Ok(()) } else { Err(StepError::pve(step)(e)) };
            }
            Err(e) => return Err(StepError::pve(step)(e)),
        };
        let timeout = self.run.env.settings.task_timeout;
        self.run.env.pve.wait_task(&upid, timeout).await.map_err(StepError::pve(step))?;
        Ok(())
    }

    async fn restore_backup(&mut self) -> Result<(), StepError> {
        let vmid = self.reserved_vmid()?;
        if self.adopt_or_release(vmid).await? {
            return Ok(());
        }
        let archive = self.payload.from_backup.clone().ok_or_else(|| {
            StepError::permanent(ErrorCode::Internal, "the restore names no backup", Some("no fromBackup".into()))
        })?;
        let api = self.run.env.pve.node(&self.payload.node);
        let (name, tag) = (self.instance.name.clone(), ownership_tag(self.instance.id));
        // New MACs, the instance's own name and tag: the guest is the instance's, not the
        // backup's source.
        let created = if self.is_lxc() {
            let mut params = LxcCreate::restore(vmid, archive).unique(true).storage(LXC_ROOTFS_STORAGE.to_owned());
            params.options = LxcOptions::new().hostname(name).description(tag);
            api.create_lxc(&params).await
        } else {
            let mut params = QemuCreate::restore(vmid, archive).unique(true);
            params.options = QemuOptions::new().name(name).description(tag);
            api.create_qemu(&params).await
        };
        self.await_creation(Step::Restore, vmid, created).await
    }

    /// The volume id of the node's `vztmpl` archive named like the instance's template.
    async fn ostemplate(&self) -> Result<String, StepError> {
        let api = self.run.env.pve.node(&self.payload.node);
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
        let i = &self.instance;
        if self.is_lxc() {
            if self.payload.from_backup.is_none() {
                // Set when the container was created.
                return Ok(());
            }
            // A restored container has the backup's sizes; the instance's are what it holds.
            let options = LxcOptions::new().cores(i.cores.max(1) as u32).memory(i.memory_mib.max(1) as u64);
            return self
                .container()?
                .update_config(&ConfigUpdate::new(options))
                .await
                .map_err(StepError::pve(Step::Configure));
        }
        let mut options = QemuOptions::new()
            .cores(i.cores.max(1) as u32)
            .memory(i.memory_mib.max(1) as u64)
            .ciuser(self.run.env.settings.ciuser.clone())
            .ipconfig(0, IpConfig::dhcp());
        if !i.ssh_keys.is_empty() {
            options = options.ssh_keys(&i.ssh_keys);
        }
        self.guest()?.update_config(&ConfigUpdate::new(options)).await.map_err(StepError::pve(Step::Configure))
    }

    async fn resize_disk(&mut self) -> Result<(), StepError> {
        if self.is_lxc() && self.payload.from_backup.is_none() {
            // The root filesystem was created at the instance's size.
            return Ok(());
        }
        let vmid = self.reserved_vmid()?;
        let (kind, gib) = (self.payload.kind, self.instance.disk_gib);
        guest_ops::grow_disk(&self.run.env, Step::ResizeDisk, kind, &self.payload.node, vmid, gib).await
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
        guest_ops::start(&self.run.env, guest, Step::Start).await
    }

    async fn wait_for_ip(&mut self) -> Result<(), StepError> {
        let lxc = self.is_lxc();
        let guest = self.guest()?;
        let container = self.container()?;
        let settings = &self.run.env.settings;
        let deadline = tokio::time::Instant::now() + settings.ip_timeout;
        let stop = self.run.stop_token();
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
                Err(e) => break Err(StepError::pve(Step::WaitForIp)(e)),
            }
            if tokio::time::Instant::now() >= deadline {
                break Err(StepError::Transient {
                    code: ErrorCode::Timeout,
                    message: format!("the guest reported no IPv4 address within {:?}", settings.ip_timeout),
                    detail: None,
                });
            }
            tokio::select! {
                _ = stop.cancelled() => break Err(self.run.check_stop().err().unwrap_or(StepError::ShuttingDown)),
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
    use nimbus_domain::JobError;
    use nimbus_proxmox::{AgentInterface, AgentIpAddress, PveError};

    #[test]
    fn resumes_after_the_recorded_step() {
        assert_eq!(step_machine::resume_after(&Step::REBUILD, Some("old_guest_removed")), Some(Step::Clone));
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
                StepError::Pve { step: Step::Clone.label(), error: Box::new(api_error(500, LEAKY, &[])) },
                ErrorCode::ProxmoxRejected,
                "Proxmox could not clone the template",
                false,
            ),
            (
                StepError::Pve {
                    step: Step::Configure.label(),
                    error: Box::new(api_error(400, "Parameter verification failed.", &[("sshkeys", LEAKY)])),
                },
                ErrorCode::ProxmoxRejected,
                "Proxmox could not configure the guest",
                false,
            ),
            (
                StepError::Pve { step: Step::Start.label(), error: Box::new(api_error(595, LEAKY, &[])) },
                ErrorCode::ProxmoxUnavailable,
                "Proxmox was unavailable and could not start the guest",
                true,
            ),
            (
                StepError::Pve {
                    step: Step::Clone.label(),
                    error: Box::new(PveError::Timeout {
                        method: "POST".into(),
                        path: "/nodes/pve1/qemu/100/clone".into(),
                        after: Duration::from_secs(30),
                    }),
                },
                ErrorCode::Timeout,
                "Proxmox did not answer in time and could not clone the template",
                true,
            ),
            (
                StepError::Pve {
                    step: Step::Clone.label(),
                    error: Box::new(PveError::TaskFailed {
                        upid: upid.clone(),
                        exitstatus: LEAKY.into(),
                        log_tail: vec!["create full clone of drive scsi0 (storage-7.dc1.example.net)".into()],
                    }),
                },
                ErrorCode::ProxmoxRejected,
                "Proxmox could not clone the template",
                false,
            ),
            (
                StepError::Pve {
                    step: Step::ResizeDisk.label(),
                    error: Box::new(PveError::TaskTimeout {
                        upid,
                        waited: Duration::from_secs(20),
                        last_error: Some(LEAKY.into()),
                    }),
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
            if !matches!(&e, StepError::Pve { error, .. } if matches!(**error, PveError::Timeout { .. })) {
                assert!(detail.contains("storage-7.dc1.example.net") && detail.contains("10.20.30.40"), "{detail}");
            }
        }
    }

    #[test]
    fn a_failed_tasks_log_reaches_operators_only() {
        let upid =
            nimbus_proxmox::upid::Upid::parse("UPID:pve1:000FF1FD:10F9374C:630D702C:qmclone:100:root@pam:").unwrap();
        let e = StepError::Pve {
            step: Step::Clone.label(),
            error: Box::new(PveError::TaskFailed {
                upid,
                exitstatus: "clone failed".into(),
                log_tail: vec!["lvcreate '/dev/mapper/pve-vm--100--disk--0' failed".into()],
            }),
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
