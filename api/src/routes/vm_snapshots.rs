//! An instance's snapshots: `GET /v1/vms/{id}/snapshots` (read from Proxmox, newest first),
//! `POST` to take one, `POST …/{name}/rollback` and `DELETE …/{name}`. The writes are jobs on
//! the `snapshot` queue, accepted like every operation on an instance (`vm_actions::accept`: one
//! at a time, `Idempotency-Key`, 202). The plan caps snapshots per instance (422
//! `SNAPSHOT_LIMIT`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use nimbus_db::instances::Instance;
use nimbus_db::operations;
use nimbus_domain::{
    ApiError as ApiErrorBody, ApiResponse, ErrorCode, InstanceId, InstanceKind, InstanceStatus, JobHandle,
};
use nimbus_jobs::{SnapshotAction, SnapshotOp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

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
        .route("/v1/vms/{id}/snapshots", get(list).post(create))
        .route("/v1/vms/{id}/snapshots/{name}", delete(remove))
        .route("/v1/vms/{id}/snapshots/{name}/rollback", post(rollback))
}

const LIVE: &[InstanceStatus] = &[InstanceStatus::Running, InstanceStatus::Stopped];

/// A snapshot as clients see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotView {
    /// Its name.
    #[schema(example = "before-upgrade")]
    pub name: String,
    /// Its description.
    #[schema(example = "Before the PostgreSQL 17 upgrade")]
    pub description: Option<String>,
    /// When it was taken.
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The snapshot it was taken after.
    #[schema(example = "initial")]
    pub parent: Option<String>,
}

/// The body of `POST /v1/vms/{id}/snapshots`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateVmSnapshot)]
struct CreateBody {
    /// 2-40 letters, digits, `-` and `_`, starting with a letter; unique on the instance
    /// (`current`, `pending` and `vzdump` are Proxmox's).
    #[schema(min_length = 2, max_length = 40, pattern = "^[A-Za-z][A-Za-z0-9_-]{1,39}$", example = "before-upgrade")]
    name: String,
    /// At most 500 characters, no control characters.
    #[schema(max_length = 500, example = "Before the PostgreSQL 17 upgrade")]
    description: Option<String>,
}

/// Proxmox's rule for snapshot names (`pve-configid`, at most 40 characters), without the names
/// it reserves.
fn valid_name(name: &str) -> Result<(), &'static str> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !starts_with_letter || name.len() < 2 || name.len() > 40 {
        return Err("must be 2-40 characters and start with a letter");
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err("may hold only letters, digits, '-' and '_'");
    }
    if name == "current" || name == "pending" || name == "vzdump" {
        return Err("is a name Proxmox reserves");
    }
    Ok(())
}

/// The instance's snapshots on Proxmox (none when it has no guest).
async fn read(state: &AppState, i: &Instance) -> Result<Vec<SnapshotView>, ApiError> {
    let (Some(node), Some(vmid)) = (i.node.as_deref(), i.vmid) else { return Ok(Vec::new()) };
    if !LIVE.contains(&i.status) {
        return Ok(Vec::new());
    }
    let api = state.inventory().client().node(node);
    let listed = match i.kind {
        InstanceKind::Qemu => api.qemu(vmid as u32).snapshots().await,
        InstanceKind::Lxc => api.lxc(vmid as u32).snapshots().await,
    }
    .map_err(|e| ApiError::ProxmoxUnavailable(format!("snapshots of {node}/{vmid}: {e}")))?;
    let mut views: Vec<SnapshotView> = listed
        .into_iter()
        .filter(|s| s.name != "current")
        .map(|s| SnapshotView {
            created_at: s.snaptime.and_then(|t| chrono::DateTime::from_timestamp(t, 0)),
            name: s.name,
            description: s.description.filter(|d| !d.is_empty()),
            parent: s.parent.filter(|p| p != "current"),
        })
        .collect();
    views.sort_by_key(|v| std::cmp::Reverse(v.created_at));
    Ok(views)
}

/// The instance's snapshots, newest first (none while it has no guest).
#[utoipa::path(
    get, path = "/v1/vms/{id}/snapshots", operation_id = "listVmSnapshots", tag = "Snapshots",
    params(("id" = InstanceId, Path, description = "The instance's id.")),
    responses(
        (status = 200, description = "The instance's snapshots, newest first.", body = ApiResponse<Vec<SnapshotView>>),
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

/// Takes a snapshot of the instance (a job on the instance, like its other operations).
#[utoipa::path(
    post, path = "/v1/vms/{id}/snapshots", operation_id = "createVmSnapshot", tag = "Snapshots",
    params(("id" = InstanceId, Path, description = "The instance's id."), IdempotencyKeyHeader),
    request_body = CreateBody,
    responses(
        (status = 202, description = "Accepted: the snapshot job's handle; `Location` is the job.",
            body = ApiResponse<JobHandle>, headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 409, description = "`CONFLICT`: the instance has a snapshot of that name (or `INSTANCE_BUSY`: \
            another operation is in progress on it; `INVALID_INSTANCE_STATE`: it is neither running nor stopped; \
            `IDEMPOTENCY_KEY_IN_PROGRESS`).", body = ApiErrorBody),
        (status = 422, description = "`SNAPSHOT_LIMIT`: the plan's snapshots per instance are reached (or \
            `IDEMPOTENCY_KEY_REUSED`).", body = ApiErrorBody),
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
    let body = decode::<CreateBody>(&bytes)?;
    let CreateBody { name, description } = body.value;
    if let Err(m) = valid_name(&name) {
        return Err(ApiError::field("name", m));
    }
    if description.as_ref().is_some_and(|d| d.chars().count() > 500) {
        return Err(ApiError::field("description", "at most 500 characters"));
    }
    if let Some(d) = &description
        && let Err(m) = crate::validation::display_text(d)
    {
        return Err(ApiError::field("description", m));
    }
    let existing = read(&state, &i).await?;
    if existing.iter().any(|s| s.name == name) {
        return Err(ApiError::ConflictWith {
            message: format!("the instance already has a snapshot named '{name}'"),
            details: json!({ "fields": [crate::error::FieldError::new("name", "already used on this instance")] }),
        });
    }
    let limit = operations::snapshot_limit(state.db(), auth.tenant()).await?;
    if existing.len() >= limit.max(0) as usize {
        return Err(ApiError::Refused {
            code: ErrorCode::SnapshotLimit,
            message: format!("the plan allows {limit} snapshots per instance; delete one first"),
            details: json!({ "limit": limit, "used": existing.len() }),
        });
    }
    let job = SnapshotAction { op: SnapshotOp::Create, name, description }.new_job();
    let fingerprint = Fingerprint { method: "POST", path: format!("/v1/vms/{}/snapshots", i.id), body: &body.raw };
    accept(&state, &auth, &rid, key, fingerprint, i.id, Request { allowed: LIVE, job, resize: None }).await
}

/// Deletes one of the instance's snapshots (a job).
#[utoipa::path(
    delete, path = "/v1/vms/{id}/snapshots/{name}", operation_id = "deleteVmSnapshot", tag = "Snapshots",
    params(
        ("id" = InstanceId, Path, description = "The instance's id."),
        ("name" = String, Path, description = "The snapshot's name.", example = "before-upgrade"),
        IdempotencyKeyHeader,
    ),
    responses(
        (status = 202, description = "Accepted: the snapshot job's handle; `Location` is the job.",
            body = ApiResponse<JobHandle>, headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 409, description = "`INSTANCE_BUSY`: another operation is in progress on the instance (or \
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
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    named(state, auth, rid, key, id, name, SnapshotOp::Delete).await
}

/// Rolls the instance back to one of its snapshots (a job): what changed since is lost.
#[utoipa::path(
    post, path = "/v1/vms/{id}/snapshots/{name}/rollback", operation_id = "rollbackVmSnapshot", tag = "Snapshots",
    params(
        ("id" = InstanceId, Path, description = "The instance's id."),
        ("name" = String, Path, description = "The snapshot's name.", example = "before-upgrade"),
        IdempotencyKeyHeader,
    ),
    responses(
        (status = 202, description = "Accepted: the rollback job's handle; `Location` is the job.",
            body = ApiResponse<JobHandle>, headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 409, description = "`INSTANCE_BUSY`: another operation is in progress on the instance (or \
            `INVALID_INSTANCE_STATE`, `IDEMPOTENCY_KEY_IN_PROGRESS`).", body = ApiErrorBody),
        (status = 422, description = "`IDEMPOTENCY_KEY_REUSED`: the key was used with another request.",
            body = ApiErrorBody),
    )
)]
async fn rollback(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    IdempotencyKey(key): IdempotencyKey,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    named(state, auth, rid, key, id, name, SnapshotOp::Rollback).await
}

/// Delete or roll back to snapshot `name`, which must exist.
async fn named(
    state: AppState,
    auth: AuthUser,
    rid: RequestId,
    key: Option<String>,
    id: String,
    name: String,
    op: SnapshotOp,
) -> Result<Response, ApiError> {
    let i = tenant_instance(&state, &auth, &id).await?;
    if !read(&state, &i).await?.iter().any(|s| s.name == name) {
        return Err(ApiError::NotFound("snapshot"));
    }
    let job = SnapshotAction { op, name: name.clone(), description: None }.new_job();
    let fingerprint = match op {
        SnapshotOp::Rollback => Fingerprint {
            method: "POST",
            path: format!("/v1/vms/{}/snapshots/{name}/rollback", i.id),
            body: &Value::Null,
        },
        _ => Fingerprint { method: "DELETE", path: format!("/v1/vms/{}/snapshots/{name}", i.id), body: &Value::Null },
    };
    accept(&state, &auth, &rid, key, fingerprint, i.id, Request { allowed: LIVE, job, resize: None }).await
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, create, remove, rollback))]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_follow_proxmox() {
        assert!(valid_name("before-upgrade_2").is_ok());
        assert!(valid_name("1st").is_err());
        assert!(valid_name("a").is_err());
        assert!(valid_name("has space").is_err());
        assert!(valid_name("current").is_err());
        assert!(valid_name(&"a".repeat(41)).is_err());
    }
}
