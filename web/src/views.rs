//! The shapes of API answers the portal reads that `nimbus-domain` does not define (they live
//! in the API's route modules). Only the fields the pages show; unknown fields are ignored.

use chrono::{DateTime, Utc};
use nimbus_domain::{InstanceId, InstanceKind, InstanceStatus, PlanLimits, PlanPrices, ResourceUsage};
use serde::{Deserialize, Serialize};

/// `GET /v1/vms` items.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub id: InstanceId,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: InstanceKind,
    pub template: String,
    pub cores: i32,
    /// MiB.
    pub memory: i64,
    /// GiB.
    pub disk: i64,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    pub node: Option<String>,
    pub vmid: Option<i32>,
    pub status: InstanceStatus,
    #[serde(default)]
    pub ip_addresses: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `GET /v1/templates` items.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: InstanceKind,
    #[serde(default)]
    pub nodes: Vec<String>,
    /// GiB.
    pub min_disk: Option<u64>,
}

/// `GET /v1/quota`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    pub plan: PlanRef,
    pub limits: PlanLimits,
    pub used: ResourceUsage,
    pub remaining: ResourceUsage,
    /// Present once the API reports the plan's prices.
    #[serde(default)]
    pub prices: Option<PlanPrices>,
}

/// The plan of `GET /v1/quota`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct PlanRef {
    pub name: String,
}

/// The body of `POST /v1/vms`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateVm {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: InstanceKind,
    pub template: String,
    pub cores: u32,
    pub memory: u64,
    pub disk: u64,
    pub ssh_keys: Vec<String>,
}

/// `GET /v1/admin/jobs` items: the handle plus the ledger's fields.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminJob {
    #[serde(flatten)]
    pub handle: nimbus_domain::JobHandle,
    pub queue: String,
    pub max_attempts: i32,
    pub request_id: Option<String>,
}

/// The data of an SSE `progress` event of `GET /v1/jobs/{id}/events`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressEvent {
    pub status: nimbus_domain::JobStatus,
    pub progress: i16,
    pub step: Option<String>,
    pub message: Option<String>,
}

/// `GET /v1/auth/apikeys` items.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `active`, `expired` or `revoked`.
    pub status: String,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// The answer of `POST /v1/auth/apikeys`: the key and its token, shown this once.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: ApiKeyView,
    pub token: String,
}

/// The body of `POST /v1/auth/apikeys`.
#[derive(Clone, Debug, Serialize)]
pub struct CreateKey {
    pub name: String,
    pub scopes: Vec<String>,
}
