//! An instance's backups: `GET /v1/vms/{id}/backups` lists the backups of its guest on its plan's
//! backup storage, read from Proxmox (newest first): those Nimbus made, with the job that made
//! them (named in the archive's notes), and those made on the Proxmox side (`origin: proxmox`),
//! which count as the customer's too. `POST /v1/vms/{id}/backups` (`{note?, protected?}`) takes
//! one: `202` with the job's handle; the instance is busy while it runs.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_db::instances::{self, Instance};
use nimbus_db::plans;
use nimbus_domain::{InstanceId, InstanceStatus, JobId};
use nimbus_jobs::BackupInstance;
use nimbus_jobs::operations::read_backup_notes;
use nimbus_proxmox::ContentQuery;
use serde::{Deserialize, Serialize};

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::{IdempotencyKey, decode, parse_id};
use crate::middleware::RequestId;
use crate::routes::vm_actions::{Fingerprint, Request, accept};
use crate::routes::vms::not_found;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/vms/{id}/backups", get(list).post(create))
}

/// Statuses in which a guest exists and can be backed up.
const LIVE: &[InstanceStatus] = &[InstanceStatus::Running, InstanceStatus::Stopped];

/// The longest note.
const MAX_NOTE: usize = 200;

/// A backup as the customer sees it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupView {
    /// Its id: the Proxmox volume (`local:backup/vzdump-qemu-104-2026_12_06-03_00_00.vma.zst`).
    pub id: String,
    /// Archive size, bytes.
    pub size: Option<u64>,
    /// When it was taken.
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The note.
    pub note: Option<String>,
    /// Protected from deletion and retention.
    pub protected: bool,
    /// The job that made it (Nimbus's backups).
    pub job_id: Option<JobId>,
    /// `nimbus`, or `proxmox` for a backup made on the Proxmox side.
    pub origin: &'static str,
}

/// The body of `POST /v1/vms/{id}/backups`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    note: Option<String>,
    #[serde(default)]
    protected: bool,
}

async fn instance(state: &AppState, auth: &AuthUser, id: &str) -> Result<Instance, ApiError> {
    let id: InstanceId = parse_id(id, "vm")?;
    instances::get(state.db(), auth.tenant(), id).await.map_err(|e| not_found(e, "vm"))
}

/// The guest's backups on the plan's backup storage, newest first.
async fn read(state: &AppState, i: &Instance) -> Result<Vec<BackupView>, ApiError> {
    let (Some(node), Some(vmid)) = (i.node.as_deref(), i.vmid) else { return Ok(Vec::new()) };
    let storage = plans::backup_storage_for_tenant(state.db(), i.tenant_id).await?;
    let listed = state
        .inventory()
        .client()
        .node(node)
        .storage(&storage)
        .content(&ContentQuery::backups_of(vmid as u32))
        .await
        .map_err(|e| ApiError::ProxmoxUnavailable(format!("backups of {node}/{vmid} on {storage}: {e}")))?;
    let mut views: Vec<BackupView> = listed
        .into_iter()
        .map(|b| {
            let (note, job_id) = b.notes.as_deref().map(read_backup_notes).unwrap_or((None, None));
            BackupView {
                created_at: b.ctime.and_then(|t| chrono::DateTime::from_timestamp(t, 0)),
                id: b.volid,
                size: b.size,
                note,
                protected: b.protected.unwrap_or(false),
                origin: if job_id.is_some() { "nimbus" } else { "proxmox" },
                job_id,
            }
        })
        .collect();
    views.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    Ok(views)
}

async fn list(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let i = instance(&state, &auth, &id).await?;
    Ok(super::data(&rid, read(&state, &i).await?).into_response())
}

async fn create(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    IdempotencyKey(key): IdempotencyKey,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let i = instance(&state, &auth, &id).await?;
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
    let job = BackupInstance { note, protected }.new_job();
    let fingerprint = Fingerprint { method: "POST", path: format!("/v1/vms/{}/backups", i.id), body: &body.raw };
    accept(&state, &auth, &rid, key, fingerprint, i.id, Request { allowed: LIVE, job, resize: None }).await
}
