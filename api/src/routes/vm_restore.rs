//! Restoring backups. In place: `POST /v1/vms/{id}/backups/{backup}/restore` (`{confirm}`, the
//! instance's name: its disks are replaced) → 202 with a `restore` job on the rebuild queue,
//! which removes the guest and restores the archive under the same VMID. As a new instance:
//! `POST /v1/vms` with `{name, fromBackup, sshKeys?}` (`vms.rs` routes it here) → the same 202
//! as a create, with a `restore` job on the provision queue: a new VMID, new MACs, the instance's
//! own name; type, template and sizes are the source instance's, and the quota is checked as for
//! any create. The backup must be one the tenant's instance lists (`vm_backups.rs`), which also
//! decides the node: the archive is on that node's backup storage.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::post;
use nimbus_db::instances::{self, NewInstance};
use nimbus_domain::{ApiError as ApiErrorBody, ApiResponse, InstanceId, InstanceStatus, JobHandle};
use nimbus_jobs::ProvisionVm;
use serde::Deserialize;

use crate::auth::AuthUser;
use crate::error::{ApiError, FieldError};
use crate::extract::{IdempotencyKey, IdempotencyKeyHeader, decode};
use crate::middleware::RequestId;
use crate::routes::vm_actions::{Fingerprint, Request, accept};
use crate::routes::vm_backups::find;
use crate::routes::vms::{Creation, not_found, tenant_instance};
use crate::state::AppState;
use crate::validation::{self, MAX_SSH_KEYS};

/// The routes of this module (restore as new is `POST /v1/vms`).
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/vms/{id}/backups/{backup}/restore", post(restore_in_place))
}

/// Statuses in which an instance's guest can be replaced by a backup.
const RESTORABLE: &[InstanceStatus] = &[InstanceStatus::Running, InstanceStatus::Stopped];

/// The body of `POST /v1/vms/{id}/backups/{backup}/restore`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RestoreInPlace)]
struct InPlaceBody {
    /// The instance's name, typed by the customer: its disks are replaced by the backup.
    #[schema(example = "web-1")]
    confirm: String,
}

/// Restores one of the instance's backups in place, replacing its disks.
///
/// A job replaces the guest by the archive, under the same VMID. To restore as a new instance,
/// `POST /v1/vms` with `fromBackup`.
#[utoipa::path(
    post, path = "/v1/vms/{id}/backups/{backup}/restore", operation_id = "restoreVmBackup", tag = "Backups",
    params(
        ("id" = InstanceId, Path, description = "The instance's id."),
        ("backup" = String, Path, description = "The backup's id (its archive's file name).",
            example = "vzdump-qemu-104-2026_12_06-03_00_00.vma.zst"),
        IdempotencyKeyHeader,
    ),
    request_body = InPlaceBody,
    responses(
        (status = 202, description = "Accepted: the restore job's handle; `Location` is the job.",
            body = ApiResponse<JobHandle>, headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 409, description = "`INSTANCE_BUSY`: another operation is in progress on the instance (or \
            `INVALID_INSTANCE_STATE`: it is neither running nor stopped; `IDEMPOTENCY_KEY_IN_PROGRESS`).",
            body = ApiErrorBody),
        (status = 422, description = "`IDEMPOTENCY_KEY_REUSED`: the key was used with another request.",
            body = ApiErrorBody),
    )
)]
async fn restore_in_place(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    IdempotencyKey(key): IdempotencyKey,
    Path((id, backup)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let i = tenant_instance(&state, &auth, &id).await?;
    let body = decode::<InPlaceBody>(&bytes)?;
    if body.value.confirm != i.name {
        return Err(ApiError::field("confirm", "type the instance's name: its disks are replaced by the backup"));
    }
    let found = find(&state, &i, &backup).await?;
    let node = i.node.clone().ok_or(ApiError::NotFound("backup"))?;
    let job = ProvisionVm {
        template: i.template.clone(),
        template_vmid: 0,
        node,
        kind: i.kind,
        vmid: i.vmid.map(|v| v as u32),
        from_backup: Some(found.volume),
    }
    .restore_in_place_job();
    let path = format!("/v1/vms/{}/backups/{backup}/restore", i.id);
    let fingerprint = Fingerprint { method: "POST", path, body: &body.raw };
    accept(&state, &auth, &rid, key, fingerprint, i.id, Request { allowed: RESTORABLE, job, resize: None }).await
}

/// `POST /v1/vms` with `fromBackup`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreAsNew {
    /// The new instance's name (unique in the tenant).
    pub name: String,
    /// The backup's id (its archive's file name).
    pub from_backup: String,
    /// SSH keys for the new instance (default: the source instance's).
    #[serde(default)]
    pub ssh_keys: Option<Vec<String>>,
}

/// Every problem with a restore-as-new body's values.
pub fn validate(req: &RestoreAsNew) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if let Err(m) = validation::dns_label(&req.name) {
        errors.push(FieldError::new("name", m));
    }
    if archive_vmid(&req.from_backup).is_none() {
        errors.push(FieldError::new("fromBackup", "must be a backup id as GET /v1/vms/{id}/backups lists it"));
    }
    let keys = req.ssh_keys.as_deref().unwrap_or_default();
    if keys.len() > MAX_SSH_KEYS {
        errors.push(FieldError::new("sshKeys", format!("at most {MAX_SSH_KEYS} keys")));
    }
    for (i, key) in keys.iter().enumerate() {
        if let Err(m) = validation::ssh_public_key(key) {
            errors.push(FieldError::new(format!("sshKeys[{i}]"), m));
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(ApiError::Validation(errors)) }
}

/// The VMID in a vzdump archive's name (`vzdump-qemu-104-2026_12_06-03_00_00.vma.zst`).
pub fn archive_vmid(archive: &str) -> Option<u32> {
    let rest = archive.strip_prefix("vzdump-")?;
    let (kind, rest) = rest.split_once('-')?;
    if kind != "qemu" && kind != "lxc" {
        return None;
    }
    let (vmid, rest) = rest.split_once('-')?;
    let stamp_ok = rest.len() > 20
        && rest[..19].chars().enumerate().all(|(i, c)| match i {
            4 | 7 | 13 | 16 => c == '_',
            10 => c == '-',
            _ => c.is_ascii_digit(),
        });
    let ext = &rest[19.min(rest.len())..];
    let ext_ok = [".vma", ".tar"]
        .iter()
        .any(|e| ext.strip_prefix(e).is_some_and(|c| c.is_empty() || [".zst", ".gz", ".lzo"].contains(&c)));
    (stamp_ok && ext_ok && vmid.chars().all(|c| c.is_ascii_digit())).then(|| vmid.parse().ok()).flatten()
}

/// The new instance and its restore job: the backup must be one of the tenant's instances'.
pub(crate) async fn as_new(state: &AppState, auth: &AuthUser, req: RestoreAsNew) -> Result<Creation, ApiError> {
    let vmid = archive_vmid(&req.from_backup).ok_or(ApiError::NotFound("backup"))?;
    let source = instances::get_by_vmid(state.db(), auth.tenant(), vmid).await.map_err(|e| not_found(e, "backup"))?;
    let found = find(state, &source, &req.from_backup).await?;
    let node = source.node.clone().ok_or(ApiError::NotFound("backup"))?;
    let instance = NewInstance {
        name: req.name,
        kind: source.kind,
        template: source.template.clone(),
        cores: source.cores,
        memory_mib: source.memory_mib,
        disk_gib: source.disk_gib,
        ssh_keys: req.ssh_keys.unwrap_or_else(|| source.ssh_keys.clone()),
        node: Some(node.clone()),
    };
    let job = ProvisionVm {
        template: source.template,
        template_vmid: 0,
        node: node.clone(),
        kind: source.kind,
        vmid: None,
        from_backup: Some(found.volume),
    }
    .restore_as_new_job();
    Ok(Creation { instance, job, node })
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(restore_in_place))]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::archive_vmid;

    #[test]
    fn backup_ids_name_their_guest() {
        assert_eq!(archive_vmid("vzdump-qemu-104-2026_12_06-03_00_00.vma.zst"), Some(104));
        assert_eq!(archive_vmid("vzdump-lxc-2001-2026_01_31-23_59_59.tar"), Some(2001));
        assert_eq!(archive_vmid("vzdump-lxc-2001-2026_01_31-23_59_59.tar.gz"), Some(2001));
        for bad in [
            "",
            "vzdump-qemu-104.vma.zst",
            "vzdump-openvz-104-2026_12_06-03_00_00.tar",
            "vzdump-qemu-1x4-2026_12_06-03_00_00.vma.zst",
            "vzdump-qemu-104-2026_12_06-03_00_00.vma.exe",
            "vzdump-qemu-104-2026-12-06T03_00_00.vma.zst",
            "../vzdump-qemu-104-2026_12_06-03_00_00.vma.zst",
        ] {
            assert_eq!(archive_vmid(bad), None, "{bad}");
        }
    }
}
