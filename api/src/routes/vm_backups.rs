//! An instance's backups: `GET /v1/vms/{id}/backups` lists the backups of its guest on its plan's
//! backup storage, read from Proxmox (newest first): those Nimbus made, with the job that made
//! them (named in the archive's notes), and those made on the Proxmox side (`origin: proxmox`),
//! which count as the customer's too. `POST /v1/vms/{id}/backups` (`{note?, protected?}`) takes
//! one: `202` with the job's handle; the instance is busy while it runs.
//! `DELETE /v1/vms/{id}/backups/{backup}` deletes one (a job too; a protected one is `409`), and
//! `POST /v1/vms/{id}/backups/{backup}/protect` (`{protected}`) sets its protection at once.
//! A backup's id is its archive's file name. Only archives taken since the instance was created
//! are its own: a VMID freed by a deleted instance may be reserved again, and the archives
//! of the guest that had it are not the new instance's. Backups count toward the plan's
//! `max_backups` per instance whoever made them: a backup past it is refused (`BACKUP_LIMIT`).
//! Restoring is `vm_restore.rs`; the schedule and retention are `vm_backup_policy.rs`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use nimbus_db::instances::Instance;
use nimbus_db::plans;
use nimbus_domain::{ApiError as ApiErrorBody, ApiResponse, ErrorCode, InstanceId, InstanceStatus, JobHandle, JobId};
use nimbus_jobs::operations::read_backup_notes;
use nimbus_jobs::{BackupInstance, BackupOp};
use nimbus_proxmox::{ContentQuery, VolumeUpdate};
use serde::{Deserialize, Serialize};

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::{IdempotencyKey, IdempotencyKeyHeader, decode};
use crate::middleware::RequestId;
use crate::routes::vm_actions::{Fingerprint, Request, accept};
use crate::routes::vms::tenant_instance;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/vms/{id}/backups", get(list).post(create))
        .route("/v1/vms/{id}/backups/{backup}", delete(remove))
        .route("/v1/vms/{id}/backups/{backup}/protect", post(protect))
}

/// Statuses in which a guest exists and can be backed up.
const LIVE: &[InstanceStatus] = &[InstanceStatus::Running, InstanceStatus::Stopped];

/// The longest note.
const MAX_NOTE: usize = 200;

/// Who made a backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = BackupOrigin)]
pub enum Origin {
    /// A backup job of Nimbus (asked for or scheduled).
    Nimbus,
    /// Made on the Proxmox side (it counts as the customer's too).
    Proxmox,
}

/// A backup as the customer sees it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupView {
    /// Its id: the archive's file name (`vzdump-qemu-104-2026_12_06-03_00_00.vma.zst`).
    #[schema(example = "vzdump-qemu-104-2026_12_06-03_00_00.vma.zst")]
    pub id: String,
    /// The Proxmox volume (`local:backup/vzdump-qemu-104-2026_12_06-03_00_00.vma.zst`).
    #[schema(example = "local:backup/vzdump-qemu-104-2026_12_06-03_00_00.vma.zst")]
    pub volume: String,
    /// Archive size, bytes.
    #[schema(example = 1288490188)]
    pub size: Option<u64>,
    /// When it was taken.
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The note.
    #[schema(example = "before the upgrade")]
    pub note: Option<String>,
    /// Protected from deletion and retention.
    pub protected: bool,
    /// The job that made it (Nimbus's backups).
    pub job_id: Option<JobId>,
    /// `nimbus`, or `proxmox` for a backup made on the Proxmox side.
    pub origin: Origin,
}

/// The body of `POST /v1/vms/{id}/backups` (optional: none takes a backup without a note).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateVmBackup)]
struct CreateBody {
    /// A note (trimmed; at most 200 characters, no control characters, no `{{` or `}}`).
    #[schema(max_length = 200, example = "before the upgrade")]
    note: Option<String>,
    /// Protect it from deletion and retention.
    #[serde(default)]
    protected: bool,
}

/// A backup's id: the file name of its volume (`local:backup/<file>`).
pub(crate) fn archive_id(volid: &str) -> &str {
    volid.rsplit('/').next().unwrap_or(volid)
}

/// Whether an archive of the instance's VMID taken at `ctime` (Unix seconds) is the instance's.
pub(crate) fn belongs_to(i: &Instance, ctime: Option<i64>) -> bool {
    nimbus_domain::backup::archive_taken_since(i.created_at, ctime)
}

/// The guest's backups on the plan's backup storage, newest first.
pub(crate) async fn read(state: &AppState, i: &Instance) -> Result<Vec<BackupView>, ApiError> {
    let storage = plans::backup_settings_for_tenant(state.db(), i.tenant_id).await?.storage;
    read_on(state, i, &storage).await
}

/// [`read`] with the plan's backup storage already known.
async fn read_on(state: &AppState, i: &Instance, storage: &str) -> Result<Vec<BackupView>, ApiError> {
    let (Some(node), Some(vmid)) = (i.node.as_deref(), i.vmid) else { return Ok(Vec::new()) };
    let listed = state
        .inventory()
        .client()
        .node(node)
        .storage(storage)
        .content(&ContentQuery::backups_of(vmid as u32))
        .await
        .map_err(|e| ApiError::ProxmoxUnavailable(format!("backups of {node}/{vmid} on {storage}: {e}")))?;
    let mut views: Vec<BackupView> = listed
        .into_iter()
        .filter(|b| belongs_to(i, b.ctime))
        .map(|b| {
            let (note, job_id) = b.notes.as_deref().map(read_backup_notes).unwrap_or((None, None));
            BackupView {
                created_at: b.ctime.and_then(|t| chrono::DateTime::from_timestamp(t, 0)),
                id: archive_id(&b.volid).to_owned(),
                volume: b.volid,
                size: b.size,
                note,
                protected: b.protected.unwrap_or(false),
                origin: if job_id.is_some() { Origin::Nimbus } else { Origin::Proxmox },
                job_id,
            }
        })
        .collect();
    views.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    Ok(views)
}

/// The instance's backups, newest first: Nimbus's and those made on the Proxmox side.
#[utoipa::path(
    get, path = "/v1/vms/{id}/backups", operation_id = "listVmBackups", tag = "Backups",
    params(("id" = InstanceId, Path, description = "The instance's id.")),
    responses(
        (status = 200, description = "The instance's backups, newest first.", body = ApiResponse<Vec<BackupView>>),
    )
)]
async fn list(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let i = tenant_instance(&state, &auth, &id).await?;
    Ok(super::data(&rid, read(&state, &i).await?).into_response())
}

/// Takes a backup of the instance (a job on the instance, like its other operations).
#[utoipa::path(
    post, path = "/v1/vms/{id}/backups", operation_id = "createVmBackup", tag = "Backups",
    params(("id" = InstanceId, Path, description = "The instance's id."), IdempotencyKeyHeader),
    request_body(content = CreateBody, description = "Optional: none takes a backup without a note."),
    responses(
        (status = 202, description = "Accepted: the backup job's handle; `Location` is the job.",
            body = ApiResponse<JobHandle>, headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 409, description = "`INSTANCE_BUSY`: another operation is in progress on the instance (or \
            `INVALID_INSTANCE_STATE`: it is neither running nor stopped; `IDEMPOTENCY_KEY_IN_PROGRESS`).",
            body = ApiErrorBody),
        (status = 422, description = "`BACKUP_LIMIT`: the plan's backups per instance are reached, counting those \
            made on the Proxmox side (or `IDEMPOTENCY_KEY_REUSED`).", body = ApiErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    IdempotencyKey(key): IdempotencyKey,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let i = tenant_instance(&state, &auth, &id).await?;
    // An empty body takes a backup without a note.
    let body = if bytes.is_empty() { decode::<CreateBody>(b"{}")? } else { decode::<CreateBody>(&bytes)? };
    let CreateBody { note, protected } = body.value;
    let note = note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if let Some(n) = &note {
        if n.chars().count() > MAX_NOTE {
            return Err(ApiError::field("note", format!("at most {MAX_NOTE} characters")));
        }
        crate::validation::display_text(n).map_err(|m| ApiError::field("note", m))?;
        // Proxmox expands `{{...}}` in a notes template.
        if n.contains("{{") || n.contains("}}") {
            return Err(ApiError::field("note", "must not contain {{ or }}"));
        }
    }
    let plan = plans::backup_settings_for_tenant(state.db(), auth.tenant()).await?;
    let (limit, held) = (plan.max_backups, read_on(&state, &i, &plan.storage).await?.len());
    if held >= limit.max(0) as usize {
        return Err(ApiError::Refused {
            code: ErrorCode::BackupLimit,
            message: format!("the plan allows {limit} backups per instance; delete one first"),
            details: serde_json::json!({ "limit": limit, "used": held }),
        });
    }
    let job = BackupInstance { note, protected, ..BackupInstance::default() }.new_job();
    let fingerprint = Fingerprint { method: "POST", path: format!("/v1/vms/{}/backups", i.id), body: &body.raw };
    accept(&state, &auth, &rid, key, fingerprint, i.id, Request { allowed: LIVE, job, resize: None }).await
}

/// The instance's backup `backup` (by archive name), or 404.
pub(crate) async fn find(state: &AppState, i: &Instance, backup: &str) -> Result<BackupView, ApiError> {
    read(state, i).await?.into_iter().find(|b| b.id == backup).ok_or(ApiError::NotFound("backup"))
}

/// Deletes one of the instance's backups (a job); a protected one must be unprotected first.
#[utoipa::path(
    delete, path = "/v1/vms/{id}/backups/{backup}", operation_id = "deleteVmBackup", tag = "Backups",
    params(
        ("id" = InstanceId, Path, description = "The instance's id."),
        ("backup" = String, Path, description = "The backup's id (its archive's file name).",
            example = "vzdump-qemu-104-2026_12_06-03_00_00.vma.zst"),
        IdempotencyKeyHeader,
    ),
    responses(
        (status = 202, description = "Accepted: the backup job's handle; `Location` is the job.",
            body = ApiResponse<JobHandle>, headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 409, description = "`CONFLICT`: the backup is protected (or `INSTANCE_BUSY`, \
            `INVALID_INSTANCE_STATE`, `IDEMPOTENCY_KEY_IN_PROGRESS`).", body = ApiErrorBody),
        (status = 422, description = "`IDEMPOTENCY_KEY_REUSED`: the key was used with another request.",
            body = ApiErrorBody),
    )
)]
async fn remove(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    IdempotencyKey(key): IdempotencyKey,
    Path((id, backup)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let i = tenant_instance(&state, &auth, &id).await?;
    let found = find(&state, &i, &backup).await?;
    if found.protected {
        return Err(ApiError::ConflictWith {
            message: "the backup is protected; remove its protection first".into(),
            details: serde_json::json!({ "backup": found.id }),
        });
    }
    let job = BackupInstance { op: BackupOp::Delete, archive: Some(found.id), ..BackupInstance::default() }.new_job();
    let path = format!("/v1/vms/{}/backups/{backup}", i.id);
    let fingerprint = Fingerprint { method: "DELETE", path, body: &serde_json::Value::Null };
    accept(&state, &auth, &rid, key, fingerprint, i.id, Request { allowed: LIVE, job, resize: None }).await
}

/// The body of `POST /v1/vms/{id}/backups/{backup}/protect`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ProtectVmBackup)]
struct ProtectBody {
    /// Protected from deletion and retention, or not.
    protected: bool,
}

/// Protects one of the instance's backups from deletion and retention, or lifts it (at once).
#[utoipa::path(
    post, path = "/v1/vms/{id}/backups/{backup}/protect", operation_id = "protectVmBackup", tag = "Backups",
    params(
        ("id" = InstanceId, Path, description = "The instance's id."),
        ("backup" = String, Path, description = "The backup's id (its archive's file name).",
            example = "vzdump-qemu-104-2026_12_06-03_00_00.vma.zst"),
    ),
    request_body = ProtectBody,
    responses((status = 200, description = "The backup, with its protection as set.", body = ApiResponse<BackupView>))
)]
async fn protect(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    Path((id, backup)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let i = tenant_instance(&state, &auth, &id).await?;
    let body = decode::<ProtectBody>(&bytes)?;
    let mut found = find(&state, &i, &backup).await?;
    let (Some(node), Some(storage)) = (i.node.as_deref(), found.volume.split(':').next()) else {
        return Err(ApiError::NotFound("backup"));
    };
    let update = VolumeUpdate { protected: Some(body.value.protected), notes: None };
    state
        .inventory()
        .client()
        .node(node)
        .storage(storage)
        .update_volume(&found.volume, &update)
        .await
        .map_err(|e| ApiError::ProxmoxUnavailable(format!("protecting {}: {e}", found.volume)))?;
    tracing::info!(vm.id = %i.id, backup = %found.id, protected = body.value.protected, "backup protection set");
    // Proxmox answers the update with nothing; the listing it would give now differs only here.
    found.protected = body.value.protected;
    Ok(super::data(&rid, found).into_response())
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, create, remove, protect), modifiers(&OPTIONAL_BODY))]
pub struct ApiDoc;

/// The body may be left out.
const OPTIONAL_BODY: crate::openapi::OptionalBody = crate::openapi::OptionalBody("/v1/vms/{id}/backups");
