//! Operations on an existing instance: `POST /v1/vms/{id}/actions/{action}` (`start`, `stop`,
//! `shutdown`, `reboot`, `resize`, `rebuild`) and `DELETE /v1/vms/{id}`. Each answers `202` with
//! the job's handle and `Location`, honours `Idempotency-Key`, and holds the instance until the
//! job ends: a second operation meanwhile is `409 INSTANCE_BUSY` naming the job that holds it
//! (the database decides, `nimbus_db::operations`).
//!
//! Order of checks: the instance first (another tenant's or a missing one is 404, whatever the
//! action or body), then the action and its body (400), then in one transaction: lock the
//! instance, busy (409), status (409 `INVALID_INSTANCE_STATE`), the plan for a resize (422), the
//! job and its outbox row (+ the idempotency answer); then the push to Redis.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use nimbus_db::idempotency::{self, Begin};
use nimbus_db::instances::{self, Instance};
use nimbus_db::jobs::NewJob;
use nimbus_db::operations;
use nimbus_domain::{ApiError as ApiErrorBody, ApiResponse, ErrorCode, InstanceId, InstanceStatus, JobHandle, JobKind};
use nimbus_jobs::{DeleteInstance, PowerAction, RebuildInstance, ResizeInstance, Sizes};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::AuthUser;
use crate::error::{ApiError, FieldError};
use crate::extract::{IdempotencyKey, IdempotencyKeyHeader, decode};
use crate::middleware::RequestId;
use crate::routes::vms::{accepted_response, canonical_json, not_found, replay, tenant_instance};
use crate::state::AppState;
use crate::validation::{self, CORES, DISK_GIB, MAX_SSH_KEYS, MEMORY_MIB};

/// The routes of this module (`DELETE /v1/vms/{id}` is served by `vms.rs`, with `GET`).
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/vms/{id}/actions/{action}", post(action))
}

/// Statuses in which a guest exists and takes operations.
const LIVE: &[InstanceStatus] = &[InstanceStatus::Running, InstanceStatus::Stopped];

/// The operations `POST /v1/vms/{id}/actions/{action}` takes (any other is 400).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = VmAction)]
#[allow(dead_code)] // Describes the path parameter; `action` matches the string itself.
enum VmAction {
    /// Power on.
    Start,
    /// Power off hard.
    Stop,
    /// ACPI shutdown (body: `timeoutSecs`, `force`).
    Shutdown,
    /// Reboot a running instance.
    Reboot,
    /// Change cores, memory or disk (body: the new sizes).
    Resize,
    /// Reinstall from a template, erasing the disks (body: `template`, `confirm`).
    Rebuild,
}

/// The body of `start`, `stop` and `reboot`: none, or `{}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NoActionOptions)]
struct NoOptions {}

/// The body of `shutdown` (optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = ShutdownOptions)]
struct ShutdownBody {
    /// Seconds the guest has to power off (1-3600, default 60).
    #[schema(minimum = 1, maximum = 3600, example = 120)]
    timeout_secs: Option<u32>,
    /// Stop it hard when the time is up.
    #[serde(default)]
    force: bool,
}

/// The body of `resize`: what changes (at least one; the disk only grows).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = ResizeOptions)]
struct ResizeBody {
    /// Cores.
    #[schema(minimum = 1, maximum = 64, example = 4)]
    cores: Option<u32>,
    /// Memory, MiB.
    #[schema(minimum = 256, maximum = 262144, example = 4096)]
    memory: Option<u64>,
    /// Disk, GiB (not below the current size).
    #[schema(minimum = 1, maximum = 4096, example = 40)]
    disk: Option<u64>,
}

/// The body of `rebuild`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = RebuildOptions)]
struct RebuildBody {
    /// The template to reinstall from (see `GET /v1/templates`), for the instance's type and node.
    #[schema(min_length = 1, max_length = 200, example = "debian-12")]
    template: String,
    /// OpenSSH public keys for the new guest (default: the instance's).
    #[schema(max_items = 20, example = json!(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlx2uMl6O7otZxx5t83ZWNSS+gqAj3/2gOtI6dRPT+R ada@laptop"]))]
    ssh_keys: Option<Vec<String>>,
    /// The instance's name: the data on its disks is lost.
    #[schema(example = "web-1")]
    confirm: String,
}

/// The body of `POST /v1/vms/{id}/actions/{action}`, which depends on the action: none (or
/// `{}`) for `start`, `stop` and `reboot`, [`ShutdownBody`] for `shutdown`, [`ResizeBody`] for
/// `resize`, [`RebuildBody`] for `rebuild`. A body of another action's form is 400.
struct ActionBody;

impl utoipa::PartialSchema for ActionBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::AnyOfBuilder;
        use utoipa::openapi::{Ref, RefOr};
        let item = |name: std::borrow::Cow<'static, str>| RefOr::Ref(Ref::from_schema_name(name));
        AnyOfBuilder::new()
            .item(item(<NoOptions as utoipa::ToSchema>::name()))
            .item(item(<ShutdownBody as utoipa::ToSchema>::name()))
            .item(item(<ResizeBody as utoipa::ToSchema>::name()))
            .item(item(<RebuildBody as utoipa::ToSchema>::name()))
            .description(Some(
                "Depends on the action: none or `{}` for `start`, `stop` and `reboot`; `ShutdownOptions` for \
                 `shutdown`; `ResizeOptions` for `resize`; `RebuildOptions` for `rebuild`. Another action's \
                 fields are 400.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for ActionBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "VmActionBody".into()
    }

    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        use utoipa::PartialSchema;
        schemas.push((NoOptions::name().into(), NoOptions::schema()));
        schemas.push((ShutdownBody::name().into(), ShutdownBody::schema()));
        schemas.push((ResizeBody::name().into(), ResizeBody::schema()));
        schemas.push((RebuildBody::name().into(), RebuildBody::schema()));
    }
}

/// A body that may be absent (an empty request is `{}`).
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(T, Value), ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return decode::<T>(b"{}").map(|b| (b.value, b.raw));
    }
    decode::<T>(bytes).map(|b| (b.value, b.raw))
}

/// Runs an operation on an instance: start, stop, shutdown, reboot, resize or rebuild.
///
/// Each is a job, accepted at once (202); one operation at a time per instance.
#[utoipa::path(
    post, path = "/v1/vms/{id}/actions/{action}", operation_id = "runVmAction", tag = "Instances",
    params(
        ("id" = InstanceId, Path, description = "The instance's id."),
        ("action" = VmAction, Path, description = "The operation."),
        IdempotencyKeyHeader,
    ),
    request_body(content = ActionBody,
        description = "Optional; depends on the action: `start`, `stop` and `reboot` take none (or `{}`)."),
    responses(
        (status = 202, description = "Accepted: the job's handle; `Location` is the job.",
            body = ApiResponse<JobHandle>, headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 409, description = "`INSTANCE_BUSY`: another operation is queued or running on the instance \
            (`details.job`); or `INVALID_INSTANCE_STATE`: its status does not allow this action (`details.status`; \
            `reboot` needs `running`), or `IDEMPOTENCY_KEY_IN_PROGRESS`.", body = ApiErrorBody),
        (status = 422, description = "`INVALID_RESIZE`: the disk would shrink or nothing changes (or \
            `QUOTA_EXCEEDED`: a resize over the plan's limits; `UNKNOWN_TEMPLATE`, `UNKNOWN_NODE`: a rebuild's \
            template is not on the instance's node; `IDEMPOTENCY_KEY_REUSED`).", body = ApiErrorBody),
    )
)]
async fn action(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    IdempotencyKey(key): IdempotencyKey,
    Path((id, action)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let current = tenant_instance(&state, &auth, &id).await?;
    let id = current.id;
    let (request, raw) = match action.as_str() {
        "start" | "stop" | "reboot" => {
            let (_, raw) = body::<NoOptions>(&bytes)?;
            let kind = match action.as_str() {
                "start" => JobKind::Start,
                "stop" => JobKind::Stop,
                _ => JobKind::Reboot,
            };
            let allowed: &[InstanceStatus] = if kind == JobKind::Reboot { &[InstanceStatus::Running] } else { LIVE };
            (Request { allowed, job: PowerAction::default().new_job(kind), resize: None }, raw)
        }
        "shutdown" => {
            let (b, raw) = body::<ShutdownBody>(&bytes)?;
            if let Some(t) = b.timeout_secs
                && !(1..=3600).contains(&t)
            {
                return Err(ApiError::field("timeoutSecs", "must be 1-3600 seconds"));
            }
            let job = PowerAction { timeout_secs: b.timeout_secs, force: b.force }.new_job(JobKind::Shutdown);
            (Request { allowed: LIVE, job, resize: None }, raw)
        }
        "resize" => {
            let (b, raw) = body::<ResizeBody>(&bytes)?;
            let to = resize_target(&current, &b)?;
            let from = sizes(&current);
            let job = ResizeInstance { from, to }.new_job();
            (Request { allowed: LIVE, job, resize: Some(to) }, raw)
        }
        "rebuild" => {
            let (b, raw) = body::<RebuildBody>(&bytes)?;
            let job = rebuild_job(&state, &current, b).await?;
            (Request { allowed: LIVE, job, resize: None }, raw)
        }
        other => {
            return Err(ApiError::field(
                "action",
                format!("unknown action '{other}' (start, stop, shutdown, reboot, resize, rebuild)"),
            ));
        }
    };
    let fingerprint = Fingerprint { method: "POST", path: format!("/v1/vms/{id}/actions/{action}"), body: &raw };
    accept(&state, &auth, &rid, key, fingerprint, id, request).await
}

/// Deletes an instance, its guest and its disks.
///
/// A job stops the guest, purges it and its disks, and releases the VMID and the quota. A failed
/// instance may be deleted too (what its cleanup left is removed again).
#[utoipa::path(
    delete, path = "/v1/vms/{id}", operation_id = "deleteVm", tag = "Instances",
    params(("id" = InstanceId, Path, description = "The instance's id."), IdempotencyKeyHeader),
    responses(
        (status = 202, description = "Accepted: the delete job's handle; `Location` is the job. The instance is \
            `deleting` until the job ends.",
            body = ApiResponse<JobHandle>, headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 409, description = "`INSTANCE_BUSY`: another operation is queued or running on the instance \
            (`details.job`); or `INVALID_INSTANCE_STATE`: it is still provisioning or already deleted \
            (`details.status`), or `IDEMPOTENCY_KEY_IN_PROGRESS`.", body = ApiErrorBody),
        (status = 422, description = "`IDEMPOTENCY_KEY_REUSED`: the key was used with another request.",
            body = ApiErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    IdempotencyKey(key): IdempotencyKey,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = tenant_instance(&state, &auth, &id).await?.id;
    let allowed = &[
        InstanceStatus::Running,
        InstanceStatus::Stopped,
        InstanceStatus::Missing,
        InstanceStatus::Failed,
        InstanceStatus::Deleting,
    ];
    let request = Request { allowed, job: DeleteInstance::default().new_job(), resize: None };
    let fingerprint = Fingerprint { method: "DELETE", path: format!("/v1/vms/{id}"), body: &Value::Null };
    accept(&state, &auth, &rid, key, fingerprint, id, request).await
}

/// What an operation asks of the accept transaction.
pub struct Request {
    /// The statuses the instance must have.
    pub allowed: &'static [InstanceStatus],
    /// The job (its instance resource is added).
    pub job: NewJob,
    /// For a resize: the new sizes, set on the instance within the plan.
    pub resize: Option<Sizes>,
}

/// What an `Idempotency-Key` is bound to: the request's method, path and body.
pub struct Fingerprint<'a> {
    /// `POST` or `DELETE`.
    pub method: &'static str,
    /// The path, ids resolved.
    pub path: String,
    /// The JSON body as sent (`null` without one).
    pub body: &'a Value,
}

/// Runs the accept transaction of an operation on instance `id` and answers 202 (or replays the
/// answer stored under `Idempotency-Key`, which `fingerprint` binds to the request).
pub async fn accept(
    state: &AppState,
    auth: &AuthUser,
    rid: &RequestId,
    key: Option<String>,
    fingerprint: Fingerprint<'_>,
    id: InstanceId,
    mut request: Request,
) -> Result<Response, ApiError> {
    let tenant = auth.tenant();
    if let Some(key) = &key {
        let body = canonical_json(fingerprint.body);
        let hash = idempotency::request_hash(fingerprint.method, &fingerprint.path, body.as_bytes());
        match idempotency::begin(state.db(), tenant, key, &hash, state.settings().idempotency_lease).await? {
            Begin::Started => {}
            Begin::Replay { status, body } => return Ok(replay(rid, status, body)),
            Begin::Mismatch => return Err(ApiError::IdempotencyKeyReused),
            Begin::InProgress => return Err(ApiError::IdempotencyKeyInProgress),
        }
    }
    request.job.request_id = Some(rid.0.clone());
    request.job.traceparent = nimbus_telemetry::traces::current_traceparent();
    request.job.idempotency_key = key.clone();
    let result = enqueue(state, tenant, id, request, key.as_deref()).await;
    if result.is_err()
        && let Some(key) = &key
        && let Err(e) = idempotency::abandon(state.db(), tenant, key).await
    {
        tracing::warn!(error = %e, "could not release the idempotency key");
    }
    let (handle, enqueued) = result?;
    state.dispatcher().push(state.db(), &enqueued).await;
    // Open pages of the instance show the operation from its start.
    state.dispatcher().publisher().publish(id).await;
    tracing::info!(job.id = %handle.id, job.kind = %handle.kind, vm.id = %id, "operation accepted");
    Ok(accepted_response(rid, StatusCode::ACCEPTED, serde_json::to_value(&handle).unwrap_or_default()))
}

async fn enqueue(
    state: &AppState,
    tenant: nimbus_domain::TenantId,
    id: InstanceId,
    request: Request,
    key: Option<&str>,
) -> Result<(JobHandle, nimbus_db::jobs::Enqueued), ApiError> {
    let db_err = |e: nimbus_db::DbError| -> ApiError { not_found(e, "vm") };
    let mut tx = state.db().begin().await.map_err(nimbus_db::DbError::from)?;
    let locked = operations::lock(&mut tx, tenant, id, request.allowed).await.map_err(db_err)?;
    if let Some(to) = request.resize {
        operations::set_sizes_within_plan(&mut tx, tenant, &locked, to.cores, to.memory, to.disk).await?;
    }
    let is_delete = request.job.kind == JobKind::Delete;
    let enqueued = operations::enqueue(&mut tx, tenant, id, request.job).await?;
    if is_delete {
        instances::set_status(&mut *tx, id, InstanceStatus::Deleting).await?;
    }
    let handle = enqueued.job.handle();
    if let Some(key) = key {
        let stored = serde_json::to_value(&handle).map_err(|e| ApiError::Internal(e.to_string()))?;
        idempotency::complete(&mut *tx, tenant, key, StatusCode::ACCEPTED.as_u16(), &stored).await?;
    }
    tx.commit().await.map_err(nimbus_db::DbError::from)?;
    Ok((handle, enqueued))
}

fn sizes(i: &Instance) -> Sizes {
    Sizes { cores: i.cores, memory: i.memory_mib, disk: i.disk_gib }
}

/// The sizes a resize asks for, checked: within the ranges a create takes (400), the disk not
/// below the current one and something changing (422 `INVALID_RESIZE`).
fn resize_target(current: &Instance, b: &ResizeBody) -> Result<Sizes, ApiError> {
    let mut errors = Vec::new();
    if b.cores.is_none() && b.memory.is_none() && b.disk.is_none() {
        errors.push(FieldError::body("name at least one of cores, memory, disk"));
    }
    if let Some(c) = b.cores {
        validation::in_range("cores", c, &CORES, "", &mut errors);
    }
    if let Some(m) = b.memory {
        validation::in_range("memory", m, &MEMORY_MIB, " MiB", &mut errors);
    }
    if let Some(d) = b.disk {
        validation::in_range("disk", d, &DISK_GIB, " GiB", &mut errors);
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let to = Sizes {
        cores: b.cores.map_or(current.cores, |c| c as i32),
        memory: b.memory.map_or(current.memory_mib, |m| m as i64),
        disk: b.disk.map_or(current.disk_gib, |d| d as i64),
    };
    let refuse = |field: &str, message: String| ApiError::Refused {
        code: ErrorCode::InvalidResize,
        message: message.clone(),
        details: json!({ "fields": [FieldError::new(field, message)] }),
    };
    if to.disk < current.disk_gib {
        return Err(refuse("disk", format!("disks only grow: the disk is {} GiB", current.disk_gib)));
    }
    if to == sizes(current) {
        return Err(refuse("", "the instance already has these sizes".to_owned()));
    }
    Ok(to)
}

/// The rebuild job: the name confirmed, the keys valid, the template known for the instance's
/// type on its node.
async fn rebuild_job(state: &AppState, current: &Instance, b: RebuildBody) -> Result<NewJob, ApiError> {
    let mut errors = Vec::new();
    if b.confirm != current.name {
        errors.push(FieldError::new("confirm", "must be the instance's name: rebuilding erases its disks"));
    }
    if b.template.is_empty() || b.template.len() > 200 {
        errors.push(FieldError::new("template", "must be 1-200 characters"));
    }
    if let Some(keys) = &b.ssh_keys {
        if keys.len() > MAX_SSH_KEYS {
            errors.push(FieldError::new("sshKeys", format!("at most {MAX_SSH_KEYS} keys")));
        }
        for (i, key) in keys.iter().enumerate() {
            if let Err(m) = validation::ssh_public_key(key) {
                errors.push(FieldError::new(format!("sshKeys[{i}]"), m));
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let Some(node) = current.node.as_deref() else {
        return Err(ApiError::Refused {
            code: ErrorCode::InvalidInstanceState,
            message: "the instance has no guest to rebuild".into(),
            details: json!({ "status": current.status }),
        });
    };
    let inventory = state.inventory().snapshot().await?;
    let placement = inventory.place(current.kind, &b.template, Some(node))?;
    Ok(RebuildInstance { template: b.template, template_vmid: placement.template_vmid, ssh_keys: b.ssh_keys }.new_job())
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(action, delete), components(schemas(VmAction)), modifiers(&OPTIONAL_BODY))]
pub struct ApiDoc;

/// An action's body may be left out.
const OPTIONAL_BODY: crate::openapi::OptionalBody = crate::openapi::OptionalBody("/v1/vms/{id}/actions/{action}");

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_domain::InstanceKind;

    fn instance() -> Instance {
        Instance {
            id: InstanceId::new(),
            tenant_id: nimbus_domain::TenantId::new(),
            name: "web-1".into(),
            kind: InstanceKind::Qemu,
            template: "debian".into(),
            cores: 2,
            memory_mib: 2048,
            disk_gib: 20,
            ssh_keys: vec![],
            node: Some("pve1".into()),
            vmid: Some(1000),
            status: InstanceStatus::Running,
            ip_addresses: vec![],
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
            guest_started_at: None,
        }
    }

    #[test]
    fn resizes_grow_disks_and_change_something() {
        let i = instance();
        let to = resize_target(&i, &ResizeBody { cores: Some(4), memory: None, disk: Some(40) }).unwrap();
        assert_eq!(to, Sizes { cores: 4, memory: 2048, disk: 40 });
        let shrink = resize_target(&i, &ResizeBody { disk: Some(10), ..Default::default() }).unwrap_err();
        assert_eq!(shrink.code(), ErrorCode::InvalidResize);
        let same = resize_target(&i, &ResizeBody { cores: Some(2), ..Default::default() }).unwrap_err();
        assert_eq!(same.code(), ErrorCode::InvalidResize);
        let ApiError::Validation(fields) = resize_target(&i, &ResizeBody::default()).unwrap_err() else { panic!() };
        assert_eq!(fields.len(), 1);
        let ApiError::Validation(fields) =
            resize_target(&i, &ResizeBody { cores: Some(0), memory: Some(1), disk: None }).unwrap_err()
        else {
            panic!()
        };
        assert_eq!(fields.len(), 2);
    }

    #[test]
    fn an_empty_body_is_no_options() {
        assert!(body::<NoOptions>(b"").is_ok());
        assert!(body::<NoOptions>(b" \n").is_ok());
        assert!(body::<NoOptions>(br#"{"force": true}"#).is_err());
        let (b, _) = body::<ShutdownBody>(br#"{"timeoutSecs": 5, "force": true}"#).unwrap();
        assert_eq!((b.timeout_secs, b.force), (Some(5), true));
    }
}
