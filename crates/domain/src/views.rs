//! The shapes of the `/v1` answers and request bodies that the API and the portal both speak:
//! the API builds its answers from them and decodes its bodies into them, the SPA reads and
//! sends the same types, so the two cannot drift apart. Values only; validation stays in the
//! API. Request bodies refuse unknown fields, as the API always has.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    ApiKeyId, InstanceId, InstanceKind, InstanceStatus, JobHandle, JobId, JobStatus, PlanId, PlanLimits, PlanPrices,
    ResourceUsage, Role, TenantId, UserId,
};

/// An instance as clients see it (`GET /v1/vms`, `GET /v1/vms/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    /// Id.
    pub id: InstanceId,
    /// Name.
    #[cfg_attr(feature = "openapi", schema(example = "web-1"))]
    pub name: String,
    /// `qemu` or `lxc`.
    #[serde(rename = "type")]
    pub kind: InstanceKind,
    /// Template.
    #[cfg_attr(feature = "openapi", schema(example = "debian-12"))]
    pub template: String,
    /// Cores.
    #[cfg_attr(feature = "openapi", schema(example = 2))]
    pub cores: i32,
    /// Memory, MiB.
    #[cfg_attr(feature = "openapi", schema(example = 2048))]
    pub memory: i64,
    /// Disk, GiB.
    #[cfg_attr(feature = "openapi", schema(example = 20))]
    pub disk: i64,
    /// SSH keys.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// Node, once placed.
    #[cfg_attr(feature = "openapi", schema(example = "pve1"))]
    pub node: Option<String>,
    /// Proxmox VMID, once reserved.
    #[cfg_attr(feature = "openapi", schema(example = 104))]
    pub vmid: Option<i32>,
    /// Status.
    pub status: InstanceStatus,
    /// Addresses, once known.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = json!(["10.20.0.14"])))]
    pub ip_addresses: Vec<String>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The operation queued or running on it (provision, power, resize, …), if any: follow it
    /// through its `links`.
    #[serde(default)]
    pub operation: Option<crate::job::JobHandle>,
    /// Seconds since its guest started, as Proxmox reports (running instances).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = 3600))]
    pub uptime: Option<i64>,
}

/// An instance as the provider's operators see it: with its tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AdminInstanceView {
    /// The instance, as its tenant sees it.
    #[serde(flatten)]
    pub instance: InstanceView,
    /// Its tenant.
    pub tenant_id: crate::ids::TenantId,
}

/// The body of `POST /v1/vms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateVm {
    /// DNS label, unique in the tenant.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "web-1", min_length = 1, max_length = 63, pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    )]
    pub name: String,
    /// `qemu` or `lxc`.
    #[serde(rename = "type")]
    pub kind: InstanceKind,
    /// Template name (see `GET /v1/templates`).
    #[cfg_attr(feature = "openapi", schema(example = "debian-12", min_length = 1, max_length = 200))]
    pub template: String,
    /// Cores.
    #[cfg_attr(feature = "openapi", schema(example = 2, minimum = 1, maximum = 64))]
    pub cores: u32,
    /// Memory, MiB.
    #[cfg_attr(feature = "openapi", schema(example = 2048, minimum = 256, maximum = 262144))]
    pub memory: u64,
    /// Disk, GiB.
    #[cfg_attr(feature = "openapi", schema(example = 20, minimum = 1, maximum = 4096))]
    pub disk: u64,
    /// OpenSSH public keys.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = json!(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlx2uMl6O7otZxx5t83ZWNSS+gqAj3/2gOtI6dRPT+R ada@laptop"]), max_items = 20))]
    pub ssh_keys: Vec<String>,
    /// Node; placement chooses when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = "pve1"))]
    pub node: Option<String>,
}

/// A template as clients see it (`GET /v1/templates`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TemplateView {
    /// Pass this as `template` to `POST /v1/vms`.
    #[cfg_attr(feature = "openapi", schema(example = "debian-12"))]
    pub name: String,
    /// Pass this as `type`.
    #[serde(rename = "type")]
    pub kind: InstanceKind,
    /// Nodes it can be placed on.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = json!(["pve1", "pve2"])))]
    pub nodes: Vec<String>,
    /// The smallest disk a guest from it can have, GiB (rounded up); absent for LXC archives.
    #[cfg_attr(feature = "openapi", schema(example = 8))]
    pub min_disk: Option<u64>,
}

/// `GET /v1/quota`: the plan's limits, what the tenant uses and what remains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct QuotaView {
    /// The tenant's plan.
    pub plan: PlanRef,
    /// Its limits.
    pub limits: PlanLimits,
    /// What the tenant's instances take.
    pub used: ResourceUsage,
    /// `limits - used`.
    pub remaining: ResourceUsage,
    /// Hourly prices of the plan (the portal's price estimate).
    pub prices: PlanPrices,
}

/// A plan named in an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanRef {
    /// Id.
    pub id: PlanId,
    /// Name.
    pub name: String,
}

/// A job as the admin queue view shows it (`GET /v1/admin/jobs`): the public handle plus the
/// ledger's operational fields. Operators only: `errorDetail` may name hosts, addresses, paths
/// and nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AdminJobView {
    /// The handle clients see.
    #[serde(flatten)]
    pub handle: JobHandle,
    /// The tenant, for jobs that belong to one.
    pub tenant_id: Option<TenantId>,
    /// The queue it runs on.
    pub queue: String,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// What went wrong beyond the tenant's `error`: Proxmox's own text, the failing request,
    /// the node.
    pub error_detail: Option<String>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// The data of an SSE `progress` event of `GET /v1/jobs/{id}/events`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ProgressEvent {
    /// The job.
    pub job_id: JobId,
    /// Its status at this event.
    pub status: JobStatus,
    /// 0-100.
    pub progress: i16,
    /// The step it reached.
    #[cfg_attr(feature = "openapi", schema(example = "clone"))]
    pub step: Option<String>,
    /// What happened.
    #[cfg_attr(feature = "openapi", schema(example = "cloning template 9000 to 104"))]
    pub message: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// An API key as its owner sees it (`GET /v1/auth/apikeys`); never the token or its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    /// Id.
    pub id: ApiKeyId,
    /// Name, unique among the user's live keys.
    pub name: String,
    /// The public part of the token (`nmb_<prefix>_…`).
    pub prefix: String,
    /// Empty for keys made before scopes existed: they carry their owner's full role.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `active`, `expired` or `revoked`.
    pub status: String,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last authenticated request.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Created at.
    pub created_at: DateTime<Utc>,
}

/// The answer of `POST /v1/auth/apikeys`: the key and, once, its token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    /// The key.
    #[serde(flatten)]
    pub key: ApiKeyView,
    /// `Authorization: Bearer <token>`. Shown only in this response.
    pub token: String,
}

/// The body of `POST /v1/auth/apikeys`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKey {
    /// Name.
    #[cfg_attr(feature = "openapi", schema(example = "ci-deploy", min_length = 1, max_length = 100))]
    pub name: String,
    /// `read`, `write`, `admin`.
    #[cfg_attr(feature = "openapi", schema(example = json!(["read", "write"])))]
    pub scopes: Vec<String>,
    /// When it stops working; never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// `GET /v1/me`: who the credential belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MeView {
    /// The user.
    pub user: UserView,
    /// Their tenant.
    pub tenant: TenantView,
    /// The role the request acts with.
    pub role: Role,
    /// How the caller authenticated: `session`, `jwt` or `apiKey`.
    pub auth_method: String,
    /// The token to send in `X-CSRF-Token` (sessions only).
    pub csrf_token: Option<String>,
    /// The administrator acting as this user, if the request is impersonated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonator: Option<UserView>,
}

/// A user named in an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    /// Id.
    pub id: UserId,
    /// Email.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// Role.
    pub role: Role,
}

/// A tenant named in an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantView {
    /// Id.
    pub id: TenantId,
    /// Name.
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_bodies_refuse_unknown_fields() {
        let vm = json!({"name": "a", "type": "qemu", "template": "t", "cores": 1, "memory": 512, "disk": 10,
            "extra": 1});
        assert!(serde_json::from_value::<CreateVm>(vm).is_err());
        let key = json!({"name": "ci", "scopes": ["read"], "owner": "x"});
        assert!(serde_json::from_value::<CreateKey>(key).is_err());
    }

    #[test]
    fn a_created_key_is_the_key_with_its_token_beside_it() {
        let v = json!({"id": "01a217b7-cec9-7448-8945-442910b55deb", "name": "ci", "prefix": "abc",
            "scopes": ["read"], "status": "active", "expiresAt": null, "lastUsedAt": null, "revokedAt": null,
            "createdAt": "2026-11-26T10:00:00Z", "token": "nmb_abc_secret"});
        let created: CreatedKey = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(created.key.name, "ci");
        assert_eq!(serde_json::to_value(&created).unwrap(), v);
    }

    #[test]
    fn optional_request_fields_are_left_out_when_absent() {
        let body = CreateVm {
            name: "a".into(),
            kind: InstanceKind::Lxc,
            template: "t".into(),
            cores: 1,
            memory: 512,
            disk: 10,
            ssh_keys: vec![],
            node: None,
        };
        let v = serde_json::to_value(&body).unwrap();
        assert!(v.get("node").is_none());
        assert_eq!(v["type"], "lxc");
        assert_eq!(serde_json::from_value::<CreateVm>(v).unwrap(), body);
    }
}
