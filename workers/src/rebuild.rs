//! The `rebuild` job: the instance's guest is recreated from a template under the same VMID, on
//! the same node, keeping the instance's id, name and sizes. Data on the old guest is lost (the
//! API made the tenant confirm by name).
//!
//! ```text
//!  remove old guest ──► clone ──► configure ──► grow disk ──► start ──► wait for IP ──► running
//!  (stop, purge; ours only)  └──── the provision job's steps (provision_vm.rs) ────┘
//! ```
//!
//! It runs on the provision job's step machine ([`crate::provision_vm::Provision`] with
//! [`crate::provision_vm::Step::REBUILD`]): this file holds what differs, the payload and the
//! first step. Once the old guest is recorded as removed, a retry never removes again: the clone
//! step adopts the new guest if an earlier attempt made it.

use nimbus_db::instances::Instance;
use nimbus_domain::ErrorCode;
use nimbus_jobs::{ProvisionVm, RebuildInstance};

use crate::guest_ops;
use crate::provision_vm::{Provision, Step};
use crate::step_machine::{Operation, StepError};

/// The provision payload a rebuild of `instance` runs with: its node and type, the new template.
pub fn as_provision(rebuild: &RebuildInstance, instance: &Instance) -> Result<ProvisionVm, StepError> {
    let node = instance.node.clone().ok_or_else(|| {
        StepError::permanent(ErrorCode::Conflict, "the instance has no guest to rebuild", Some("no node".into()))
    })?;
    Ok(ProvisionVm {
        template: rebuild.template.clone(),
        template_vmid: rebuild.template_vmid,
        node,
        kind: instance.kind,
        vmid: instance.vmid.map(|v| v as u32),
        from_backup: None,
    })
}

/// The first step: stop and remove the old guest (if it is the instance's) and its disks.
pub async fn remove_old_guest(p: &mut Provision) -> Result<(), StepError> {
    let vmid = p.vmid().ok_or_else(|| {
        StepError::permanent(
            ErrorCode::Conflict,
            "the instance has no guest to rebuild",
            Some("no VMID reserved".into()),
        )
    })?;
    let instance = p.instance();
    let run = Operation::run(p);
    let removed = guest_ops::remove(&run.env, Step::Destroy, vmid, instance.kind, instance.id).await?;
    tracing::info!(job.id = %run.job.id, vm.vmid = vmid, pve.node = Operation::node(p), removed, "old guest removed for the rebuild");
    Ok(())
}
