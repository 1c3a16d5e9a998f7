//! `/v1/vms`: create a VM or container (202 + job handle), list and show them (each with the
//! operation in progress on it, if any), and delete one (`vm_actions.rs`).
//!
//! `POST /v1/vms` follows DESIGN §2: authenticate → validate → `Idempotency-Key` → template and
//! node from Proxmox (placement) → one statement writing the instance and its provision job, with
//! the quota checked under the tenant's counters' row lock (plus the idempotency record, in one
//! transaction, when there is a key) → push to Redis (best effort: when Redis is down the job is
//! given an outbox row for the relay) → 202.
//!
//! With `fromBackup` (`{name, fromBackup, sshKeys?}`), the new instance is restored from one of
//! the tenant's backups (`vm_restore.rs`): same answer, a `restore` job instead of `provision`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_db::idempotency::{self, Begin};
use nimbus_db::instances::{self, Instance, NewCreate, NewInstance};
use nimbus_db::jobs::NewJob;
use nimbus_db::operations;
use nimbus_domain::{
    ApiError as ApiErrorBody, ApiResponse, CreateVm, InstanceId, InstanceView, JobHandle, ListResponse,
};
use serde_json::Value;

use crate::auth::AuthUser;
use crate::error::{ApiError, FieldError};
use crate::extract::{IdempotencyKey, IdempotencyKeyHeader, JsonBody, QueryParams, decode_value, parse_id};
use crate::middleware::RequestId;
use crate::routes::PageQuery;
use crate::routes::vm_restore::{self, RestoreAsNew};
use crate::state::AppState;
use crate::validation::{self, CORES, DISK_GIB, MAX_SSH_KEYS, MEMORY_MIB};

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/vms", get(list).post(create))
        .route("/v1/vms/{id}", get(show).delete(super::vm_actions::delete))
}

/// Every problem with a `POST /v1/vms` body's values (types and fields are already checked).
pub fn validate(req: &CreateVm) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if let Err(m) = validation::dns_label(&req.name) {
        errors.push(FieldError::new("name", m));
    }
    if req.template.is_empty() || req.template.len() > 200 {
        errors.push(FieldError::new("template", "must be 1-200 characters"));
    }
    validation::in_range("cores", req.cores, &CORES, "", &mut errors);
    validation::in_range("memory", req.memory, &MEMORY_MIB, " MiB", &mut errors);
    validation::in_range("disk", req.disk, &DISK_GIB, " GiB", &mut errors);
    if req.ssh_keys.len() > MAX_SSH_KEYS {
        errors.push(FieldError::new("sshKeys", format!("at most {MAX_SSH_KEYS} keys")));
    }
    for (i, key) in req.ssh_keys.iter().enumerate() {
        if let Err(m) = validation::ssh_public_key(key) {
            errors.push(FieldError::new(format!("sshKeys[{i}]"), m));
        }
    }
    if let Some(node) = &req.node
        && validation::dns_label(&node.to_ascii_lowercase()).is_err()
    {
        errors.push(FieldError::new("node", "must be a node name (letters, digits, '-')"));
    }
    if errors.is_empty() { Ok(()) } else { Err(ApiError::Validation(errors)) }
}

/// An instance as clients see it, with the job queued or running on it.
pub fn view(i: Instance, operation: Option<JobHandle>) -> InstanceView {
    let uptime = i
        .guest_started_at
        .filter(|_| i.status == nimbus_domain::InstanceStatus::Running)
        .map(|at| (chrono::Utc::now() - at).num_seconds().max(0));
    InstanceView {
        id: i.id,
        name: i.name,
        kind: i.kind,
        template: i.template,
        cores: i.cores,
        memory: i.memory_mib,
        disk: i.disk_gib,
        ssh_keys: i.ssh_keys,
        node: i.node,
        vmid: i.vmid,
        status: i.status,
        ip_addresses: i.ip_addresses,
        created_at: i.created_at,
        updated_at: i.updated_at,
        operation,
        uptime,
    }
}

/// The caller's instances, newest first, each with the job queued or running on it.
#[utoipa::path(
    get, path = "/v1/vms", operation_id = "listVms", tag = "Instances", params(PageQuery),
    responses((status = 200, description = "A page of the tenant's instances.", body = ListResponse<InstanceView>))
)]
async fn list(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Response, ApiError> {
    let request = q.request()?;
    let (items, total) = instances::list(state.db(), auth.tenant(), request).await?;
    let items: Vec<InstanceView> =
        with_operations(state.db(), items).await?.into_iter().map(|(i, op)| view(i, op)).collect();
    Ok(super::page(&rid, items, request, total).into_response())
}

/// One instance, with the job queued or running on it.
#[utoipa::path(
    get, path = "/v1/vms/{id}", operation_id = "getVm", tag = "Instances",
    params(("id" = InstanceId, Path, description = "The instance's id.")),
    responses((status = 200, description = "The instance.", body = ApiResponse<InstanceView>))
)]
async fn show(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let vm = tenant_instance(&state, &auth, &id).await?;
    let id = vm.id;
    let operation = operations::active(state.db(), id).await?.map(|j| j.handle());
    Ok(super::data(&rid, view(vm, operation)).into_response())
}

/// The caller's instance `id` (as given in the path): 400 when it is no id, 404 when it is not
/// the caller's tenant's.
pub(crate) async fn tenant_instance(state: &AppState, auth: &AuthUser, id: &str) -> Result<Instance, ApiError> {
    let id: InstanceId = parse_id(id, "vm")?;
    instances::get(state.db(), auth.tenant(), id).await.map_err(|e| not_found(e, "vm"))
}

/// Each of a page of instances with the operation in progress on it (one query for the page).
pub(crate) async fn with_operations(
    db: &nimbus_db::PgPool,
    items: Vec<Instance>,
) -> Result<Vec<(Instance, Option<JobHandle>)>, ApiError> {
    let ids: Vec<InstanceId> = items.iter().map(|i| i.id).collect();
    let mut active: std::collections::HashMap<InstanceId, JobHandle> = operations::active_many(db, &ids)
        .await?
        .into_iter()
        .filter_map(|j| j.instance().map(|i| (i, j.handle())))
        .collect();
    Ok(items
        .into_iter()
        .map(|i| {
            let op = active.remove(&i.id);
            (i, op)
        })
        .collect())
}

/// `NotFound` with the resource's name; other errors unchanged.
pub(crate) fn not_found(e: nimbus_db::DbError, what: &'static str) -> ApiError {
    match e {
        nimbus_db::DbError::NotFound => ApiError::NotFound(what),
        e => e.into(),
    }
}

/// Creates a VM or container from a template, or restores one of the tenant's backups as a
/// new instance (`fromBackup`). The instance exists at once (`provisioning`); the job makes
/// its guest.
#[utoipa::path(
    post, path = "/v1/vms", operation_id = "createVm", tag = "Instances",
    params(IdempotencyKeyHeader),
    request_body = NewVmBody,
    responses(
        (status = 202, description = "Accepted: the provision (or restore) job's handle; `Location` is the job.",
            body = ApiResponse<JobHandle>, headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 409, description = "`NAME_TAKEN`: an instance of that name exists in the tenant (or `IDEMPOTENCY_KEY_IN_PROGRESS`).", body = ApiErrorBody),
        (status = 422, description = "`QUOTA_EXCEEDED`: over the plan's limits (or `UNKNOWN_TEMPLATE`, `UNKNOWN_NODE`, `IDEMPOTENCY_KEY_REUSED`).", body = ApiErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<Value>,
) -> Result<Response, ApiError> {
    let raw = body.raw;
    let source = if raw.get("fromBackup").is_some() {
        let req: RestoreAsNew = decode_value(raw.clone())?.value;
        vm_restore::validate(&req)?;
        Source::Backup(req)
    } else {
        let req: CreateVm = decode_value(raw.clone())?.value;
        validate(&req)?;
        Source::Template(req)
    };
    let tenant = auth.tenant();
    if let Some(key) = &key {
        let hash = idempotency::request_hash("POST", "/v1/vms", canonical_json(&raw).as_bytes());
        match idempotency::begin(state.db(), tenant, key, &hash, state.settings().idempotency_lease).await? {
            Begin::Started => {}
            Begin::Replay { status, body } => return Ok(replay(&rid, status, body)),
            Begin::Mismatch => return Err(ApiError::IdempotencyKeyReused),
            Begin::InProgress => return Err(ApiError::IdempotencyKeyInProgress),
        }
    }
    let accepted = accept(&state, &auth, &rid, source, key.as_deref()).await;
    if accepted.is_err()
        && let Some(key) = &key
    {
        // Nothing was created, so nothing is replayed: the client may fix and resend with the
        // same key.
        if let Err(e) = idempotency::abandon(state.db(), tenant, key).await {
            tracing::warn!(error = %e, "could not release the idempotency key");
        }
    }
    let handle = accepted?;
    let mut response = accepted_response(&rid, StatusCode::ACCEPTED, serde_json::to_value(&handle).unwrap_or_default());
    if let Some(instance) = handle.resources.iter().find(|r| r.kind == "instance") {
        crate::audit::Created::mark(&mut response, "vms", &instance.id);
    }
    Ok(response)
}

/// The body of `POST /v1/vms`: a new instance from a template, or from a backup.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Describes the body for the OpenAPI document; `create` decodes each form itself.
pub enum NewVmBody {
    /// From a template.
    Template(CreateVm),
    /// From one of the tenant's backups.
    Backup(RestoreAsNew),
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, create, show))]
pub struct ApiDoc;

/// What a new instance's guest is made from.
enum Source {
    /// A template (`provision`).
    Template(CreateVm),
    /// One of the tenant's backups (`restore`).
    Backup(RestoreAsNew),
}

/// A new instance and the job that makes its guest, ready to be written.
pub(crate) struct Creation {
    /// The instance row.
    pub instance: NewInstance,
    /// Its job (`provision`, or `restore`), without request id and key.
    pub job: NewJob,
    /// The node it goes to.
    pub node: String,
}

/// A provision from a template: placement chooses the node.
async fn from_template(state: &AppState, req: &CreateVm) -> Result<Creation, ApiError> {
    let memory = req.memory.saturating_mul(1 << 20);
    let placement = state.inventory().place(req.kind, &req.template, req.node.as_deref(), memory).await?;
    let instance = NewInstance {
        name: req.name.clone(),
        kind: req.kind,
        template: req.template.clone(),
        cores: req.cores as i32,
        memory_mib: req.memory as i64,
        disk_gib: req.disk as i64,
        ssh_keys: req.ssh_keys.clone(),
        node: Some(placement.node.clone()),
    };
    // The instance is not in the payload: its id is made in the transaction, and
    // `create_with_job` puts it first in the job's resources (`{type: "instance", id}`).
    let job = nimbus_jobs::ProvisionVm {
        template: req.template.clone(),
        template_vmid: placement.template_vmid,
        node: placement.node.clone(),
        kind: req.kind,
        vmid: None,
        from_backup: None,
    }
    .new_job();
    Ok(Creation { instance, job, node: placement.node })
}

/// Writes instance + job (+ idempotency answer) in one transaction, then pushes the job.
async fn accept(
    state: &AppState,
    auth: &AuthUser,
    rid: &RequestId,
    source: Source,
    idempotency_key: Option<&str>,
) -> Result<JobHandle, ApiError> {
    let creation = match source {
        Source::Template(req) => from_template(state, &req).await?,
        Source::Backup(req) => vm_restore::as_new(state, auth, req).await?,
    };
    let Creation { instance: new, mut job, node } = creation;
    job.request_id = Some(rid.0.clone());
    job.traceparent = nimbus_telemetry::traces::current_traceparent();
    job.idempotency_key = idempotency_key.map(str::to_owned);

    let created = match idempotency_key {
        // The common case: written together with the creates that arrive alongside it, and
        // pushed with them (`crate::accept`).
        None => {
            let created = state.acceptor().create(NewCreate { tenant: auth.tenant(), instance: new, job }).await?;
            log_accepted(&created, &node);
            return Ok(created.enqueued.job.handle());
        }
        Some(key) => {
            let mut tx = state.db().begin().await.map_err(nimbus_db::DbError::from)?;
            let created = instances::create_with_job(&mut *tx, auth.tenant(), &new, &job).await?;
            let stored =
                serde_json::to_value(created.enqueued.job.handle()).map_err(|e| ApiError::Internal(e.to_string()))?;
            idempotency::complete(&mut *tx, auth.tenant(), key, StatusCode::ACCEPTED.as_u16(), &stored).await?;
            tx.commit().await.map_err(nimbus_db::DbError::from)?;
            created
        }
    };
    log_accepted(&created, &node);
    let enqueued = created.enqueued;
    let handle = enqueued.job.handle();
    state.dispatcher().push(state.db(), &enqueued).await;
    Ok(handle)
}

fn log_accepted(created: &instances::Created, node: &str) {
    tracing::info!(job.id = %created.enqueued.job.id, vm.id = %created.instance.id, pve.node = %node, "provision accepted");
}

/// The answer stored under an `Idempotency-Key`, sent again with this request's `meta`.
pub(crate) fn replay(rid: &RequestId, status: u16, body: Option<Value>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED);
    let mut response = accepted_response(rid, status, body.unwrap_or(Value::Null));
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// `{data: handle, meta}` with `Location: /v1/jobs/{id}`.
pub(crate) fn accepted_response(rid: &RequestId, status: StatusCode, handle: Value) -> Response {
    let location = handle["links"]["self"].as_str().and_then(|l| HeaderValue::from_str(l).ok());
    let mut response = (status, super::data(rid, handle)).into_response();
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// JSON text with object keys sorted at every level: the same document always gives the same
/// fingerprint, whatever the client's key order or whitespace.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                // Collected into a fresh map: with serde_json's default (sorted) map this is the
                // order already; with `preserve_order` it is the insertion order, sorted above.
                Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sorted(v))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_domain::InstanceKind;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlx2uMl6O7otZxx5t83ZWNSS+gqAj3/2gOtI6dRPT+R test@host";

    fn vm() -> CreateVm {
        CreateVm {
            name: "web-1".into(),
            kind: InstanceKind::Qemu,
            template: "debian-12-cloudinit".into(),
            cores: 2,
            memory: 2048,
            disk: 20,
            ssh_keys: vec![KEY.into()],
            node: None,
        }
    }

    #[test]
    fn a_good_request_validates() {
        assert!(validate(&vm()).is_ok());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let bad = CreateVm {
            name: "Web_1".into(),
            cores: 0,
            memory: 1 << 40,
            ssh_keys: vec![KEY.into(), "not a key".into()],
            ..vm()
        };
        let ApiError::Validation(fields) = validate(&bad).unwrap_err() else { panic!() };
        let names: Vec<_> = fields.iter().filter_map(|f| f.field.as_deref()).collect();
        assert_eq!(names, ["name", "cores", "memory", "sshKeys[1]"]);
    }

    #[test]
    fn canonical_json_ignores_key_order_and_spacing() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":null,"y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        let c: Value = serde_json::from_str(r#"{"a":{"x":null,"y":[2,1]},"b":1}"#).unwrap();
        assert_ne!(canonical_json(&a), canonical_json(&c));
    }
}
