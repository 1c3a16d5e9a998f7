//! Proxmox calls several jobs share on an instance's existing guest, for either guest type:
//! finding it, telling ours from a foreign guest, power actions that wait for their task, and
//! removal. Every call is idempotent: stopping a stopped guest or removing a missing one is done.

use nimbus_domain::{InstanceId, InstanceKind};
use nimbus_proxmox::{DeleteOptions, Guest, GuestKind, PveError, ResourceType, ShutdownOptions, Upid};

use crate::env::Env;
use crate::step_machine::{StepError, StepInfo};

/// The description tag that marks a guest as an instance's (what adoption and removal check).
pub fn ownership_tag(instance: InstanceId) -> String {
    format!("nimbus-instance={instance}")
}

/// Where a guest lives and whether it carries the instance's tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Its node now (a migrated guest is found where it went).
    pub node: String,
    /// Whether its type matches and its description carries the instance's tag.
    pub ours: bool,
}

/// Finds VMID `vmid` in the cluster (one `/cluster/resources` call) and reads whether it is the
/// `kind` guest of `instance`. `None`: no guest has the VMID.
pub async fn find<S: StepInfo>(
    env: &Env,
    step: S,
    vmid: u32,
    kind: InstanceKind,
    instance: InstanceId,
) -> Result<Option<Found>, StepError> {
    let resources = env.pve.cluster_resources(Some(ResourceType::Vm)).await.map_err(StepError::pve(step))?;
    let Some((found_kind, node)) =
        resources.into_iter().find(|r| r.vmid == Some(vmid)).and_then(|r| Some((r.kind, r.node?)))
    else {
        return Ok(None);
    };
    // A guest of the other type under our VMID is not ours, whatever its description says.
    if found_kind != kind.as_str() {
        return Ok(Some(Found { node, ours: false }));
    }
    let api = env.pve.node(&node);
    let description = match kind {
        InstanceKind::Lxc => api.lxc(vmid).config().await.map_err(StepError::pve(step))?.description,
        InstanceKind::Qemu => api.qemu(vmid).config().await.map_err(StepError::pve(step))?.description,
    };
    let ours = description.as_deref().is_some_and(|d| d.contains(&ownership_tag(instance)));
    Ok(Some(Found { node, ours }))
}

/// Waits for task `upid` within the task timeout.
pub async fn wait<S: StepInfo>(env: &Env, step: S, upid: &Upid) -> Result<(), StepError> {
    env.pve.wait_task(upid, env.settings.task_timeout).await.map_err(StepError::pve(step))?;
    Ok(())
}

/// Whether the guest runs now.
pub async fn is_running<K: GuestKind, S: StepInfo>(guest: &Guest<K>, step: S) -> Result<bool, StepError> {
    Ok(guest.status().await.map_err(StepError::pve(step))?.is_running())
}

/// Starts the guest unless it runs.
pub async fn start<K: GuestKind, S: StepInfo>(env: &Env, guest: &Guest<K>, step: S) -> Result<(), StepError> {
    if is_running(guest, step).await? {
        return Ok(());
    }
    let upid = guest.start().await.map_err(StepError::pve(step))?;
    wait(env, step, &upid).await
}

/// Stops the guest hard unless it is stopped.
pub async fn stop<K: GuestKind, S: StepInfo>(env: &Env, guest: &Guest<K>, step: S) -> Result<(), StepError> {
    if !is_running(guest, step).await? {
        return Ok(());
    }
    let upid = guest.stop().await.map_err(StepError::pve(step))?;
    wait(env, step, &upid).await
}

/// Asks the guest to power off (ACPI for VMs, `poweroff` in containers) and waits up to
/// `timeout_secs`; with `force`, Proxmox stops it hard when the time is up. Without `force`, a
/// guest still running then fails the step with `TIMEOUT`, and keeps running.
pub async fn shutdown<K: GuestKind, S: StepInfo>(
    env: &Env,
    guest: &Guest<K>,
    step: S,
    timeout_secs: u32,
    force: bool,
) -> Result<(), StepError> {
    if !is_running(guest, step).await? {
        return Ok(());
    }
    let options = ShutdownOptions { timeout: Some(timeout_secs), force_stop: Some(force) };
    let upid = guest.shutdown(&options).await.map_err(StepError::pve(step))?;
    match wait(env, step, &upid).await {
        Err(StepError::Pve { error, .. }) if !force && matches!(*error, PveError::TaskFailed { .. }) => {
            Err(StepError::permanent(
                nimbus_domain::ErrorCode::Timeout,
                format!("the guest did not shut down within {timeout_secs} s; send the shutdown with force to stop it"),
                Some(error.to_string()),
            ))
        }
        other => other,
    }
}

/// Reboots the guest (it must be running).
pub async fn reboot<K: GuestKind, S: StepInfo>(env: &Env, guest: &Guest<K>, step: S) -> Result<(), StepError> {
    let upid = guest.reboot().await.map_err(StepError::pve(step))?;
    wait(env, step, &upid).await
}

/// Removes the guest and every disk it has (`purge`, unreferenced disks too). A guest that is
/// already gone is done.
pub async fn destroy<K: GuestKind, S: StepInfo>(env: &Env, guest: &Guest<K>, step: S) -> Result<(), StepError> {
    match guest.delete(&DeleteOptions::purge_all()).await {
        Ok(upid) => wait(env, step, &upid).await,
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(StepError::pve(step)(e)),
    }
}

/// Stops and removes the instance's guest under `vmid`, wherever it lives, if it is ours. A
/// foreign guest under the VMID is left alone (it is not the instance's: the instance never got
/// a guest there). Returns whether a guest was removed.
pub async fn remove<S: StepInfo>(
    env: &Env,
    step: S,
    vmid: u32,
    kind: InstanceKind,
    instance: InstanceId,
) -> Result<bool, StepError> {
    let Some(found) = find(env, step, vmid, kind, instance).await? else { return Ok(false) };
    if !found.ours {
        tracing::warn!(vm.id = %instance, vm.vmid = vmid, pve.node = %found.node, "the guest under the VMID is not the instance's; left alone");
        return Ok(false);
    }
    let api = env.pve.node(&found.node);
    match kind {
        InstanceKind::Qemu => {
            let guest = api.qemu(vmid);
            stop(env, &guest, step).await?;
            destroy(env, &guest, step).await?;
        }
        InstanceKind::Lxc => {
            let guest = api.lxc(vmid);
            stop(env, &guest, step).await?;
            destroy(env, &guest, step).await?;
        }
    }
    Ok(true)
}

/// The instance a job acts on, with where its guest is.
#[derive(Clone, Debug)]
pub struct Target {
    /// The instance row, as loaded.
    pub instance: nimbus_db::instances::Instance,
    /// Its node (`None`: it never got one).
    pub node: Option<String>,
    /// Its reserved VMID (`None`: none reserved, so no guest).
    pub vmid: Option<u32>,
}

impl Target {
    /// Reads the job's instance and its VMID reservation (the reservation is the truth about the
    /// VMID).
    pub async fn load(run: &crate::step_machine::Run) -> Result<Target, StepError> {
        let id = run.instance_id()?;
        let instance = nimbus_db::instances::get_any(run.db(), id).await?;
        let vmid = nimbus_db::instances::reservation(run.db(), id).await?.map(|r| r.vmid as u32);
        Ok(Target { node: instance.node.clone(), vmid, instance })
    }

    /// The node and VMID, which an operation on the guest needs.
    pub fn placed(&self) -> Result<(&str, u32), StepError> {
        match (self.node.as_deref(), self.vmid) {
            (Some(node), Some(vmid)) => Ok((node, vmid)),
            _ => Err(StepError::permanent(
                nimbus_domain::ErrorCode::Conflict,
                "the instance has no guest",
                Some(format!("instance {}: node {:?}, VMID {:?}", self.instance.id, self.node, self.vmid)),
            )),
        }
    }

    /// The node for the permit of the node cap (`-` when it has none: nothing runs there).
    pub fn node_or_none(&self) -> &str {
        self.node.as_deref().unwrap_or("-")
    }
}

/// Grows the guest's boot disk (VMs: the first disk of `boot: order=…`, else the first disk that
/// is not a CD-ROM; containers: `rootfs`) to `gib`. A disk already that large (a retry, or a
/// template at least as large) is left alone: disks never shrink.
pub async fn grow_disk<S: StepInfo>(
    env: &Env,
    step: S,
    kind: InstanceKind,
    node: &str,
    vmid: u32,
    gib: i64,
) -> Result<(), StepError> {
    let api = env.pve.node(node);
    let want = (gib.max(1) as u64) << 30;
    let size = format!("{}G", gib.max(1));
    let upid = match kind {
        InstanceKind::Qemu => {
            let guest = api.qemu(vmid);
            let config = guest.config().await.map_err(StepError::pve(step))?;
            let disks = config.disks();
            let boot = config
                .boot
                .as_deref()
                .and_then(|b| b.strip_prefix("order="))
                .and_then(|order| order.split(';').find(|d| disks.contains_key(*d)).map(str::to_owned))
                .or_else(|| disks.keys().find(|k| !disks[*k].contains("media=cdrom")).cloned())
                .ok_or_else(|| {
                    StepError::permanent(
                        nimbus_domain::ErrorCode::ProxmoxRejected,
                        "the guest has no disk to grow",
                        config.boot.clone().map(|b| format!("boot: {b}")),
                    )
                })?;
            let have = nimbus_proxmox::propstring::disk_size_bytes(&disks[&boot]).unwrap_or(0);
            if have >= want {
                return Ok(());
            }
            guest.resize(&boot, &size).await.map_err(StepError::pve(step))?
        }
        InstanceKind::Lxc => {
            let guest = api.lxc(vmid);
            let config = guest.config().await.map_err(StepError::pve(step))?;
            let have = config.rootfs.as_deref().and_then(nimbus_proxmox::propstring::disk_size_bytes).unwrap_or(0);
            if have >= want {
                return Ok(());
            }
            guest.resize("rootfs", &size).await.map_err(StepError::pve(step))?
        }
    };
    wait(env, step, &upid).await
}
