//! The job handle (DESIGN §2): what `POST` answers with 202 and what `GET /v1/jobs/{id}` shows,
//! modelled on Hetzner Cloud's actions plus attempts, step and retryability.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::ids::JobId;
use crate::status::{JobKind, JobStatus};

/// A resource a job acts on, e.g. `{"type": "instance", "id": "…"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResourceRef {
    /// The resource type (`instance`, `snapshot`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its id.
    pub id: String,
}

impl ResourceRef {
    /// A reference to an instance.
    pub fn instance(id: crate::ids::InstanceId) -> Self {
        ResourceRef { kind: "instance".into(), id: id.to_string() }
    }
}

/// Why a job failed (its last error while it is being retried), as the job's tenant sees it.
/// What operators need beyond it (Proxmox's own text, the failing request) is kept apart, in
/// the ledger's `error_detail`, and shown only in the operators' views.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobError {
    /// Stable code.
    pub code: ErrorCode,
    /// Plain words written by Nimbus: what could not be done. Never Proxmox's text, hosts,
    /// addresses, paths or other internals.
    pub message: String,
    /// Whether another attempt might succeed.
    pub retryable: bool,
}

/// Links from a job handle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobLinks {
    /// `/v1/jobs/{id}`.
    #[serde(rename = "self")]
    #[cfg_attr(feature = "openapi", schema(example = "/v1/jobs/0193a5c4-7e1f-7b3a-9c2d-5e8f1a2b3c4d"))]
    pub self_: String,
    /// `/v1/jobs/{id}/events` (Server-Sent Events).
    #[cfg_attr(feature = "openapi", schema(example = "/v1/jobs/0193a5c4-7e1f-7b3a-9c2d-5e8f1a2b3c4d/events"))]
    pub events: String,
}

impl JobLinks {
    /// The canonical links of a job.
    pub fn for_job(id: JobId) -> Self {
        JobLinks { self_: format!("/v1/jobs/{id}"), events: format!("/v1/jobs/{id}/events") }
    }
}

/// The job handle DTO (camelCase JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobHandle {
    /// Job id.
    pub id: JobId,
    /// What it does.
    pub kind: JobKind,
    /// Where it is.
    pub status: JobStatus,
    /// 0-100.
    pub progress: u8,
    /// The step of its step machine it reached (e.g. `clone`), if any.
    #[cfg_attr(feature = "openapi", schema(example = "clone"))]
    pub step: Option<String>,
    /// What it acts on.
    pub resources: Vec<ResourceRef>,
    /// The (last) error, or `null`.
    pub error: Option<JobError>,
    /// Attempts started so far.
    pub attempts: u32,
    /// Accepted at.
    pub created_at: DateTime<Utc>,
    /// First attempt started at.
    pub started_at: Option<DateTime<Utc>>,
    /// Reached a final status at.
    pub finished_at: Option<DateTime<Utc>>,
    /// The `X-Request-ID` of the request that started the job: what to quote to support about
    /// it (the logs of the job and of its request carry it).
    #[serde(default)]
    pub request_id: Option<String>,
    /// While `queued`: what it waits for before it can run (e.g. the node's one backup slot),
    /// in plain words; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// `self` and `events`.
    pub links: JobLinks,
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn handle_serialises_in_the_documented_shape() {
        let id = JobId::from(Uuid::nil());
        let created = DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z").unwrap().with_timezone(&Utc);
        let handle = JobHandle {
            id,
            kind: JobKind::Provision,
            status: JobStatus::Failed,
            progress: 40,
            step: Some("clone".into()),
            resources: vec![ResourceRef { kind: "instance".into(), id: "i-1".into() }],
            error: Some(JobError { code: ErrorCode::ProxmoxUnavailable, message: "down".into(), retryable: true }),
            attempts: 3,
            created_at: created,
            started_at: None,
            finished_at: None,
            request_id: Some("req-1".into()),
            waiting_for: None,
            links: JobLinks::for_job(id),
        };
        let json = serde_json::to_value(&handle).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "00000000-0000-0000-0000-000000000000",
                "kind": "provision",
                "status": "failed",
                "progress": 40,
                "step": "clone",
                "resources": [{"type": "instance", "id": "i-1"}],
                "error": {"code": "PROXMOX_UNAVAILABLE", "message": "down", "retryable": true},
                "attempts": 3,
                "createdAt": "2026-11-26T10:00:00Z",
                "startedAt": null,
                "finishedAt": null,
                "requestId": "req-1",
                "links": {
                    "self": "/v1/jobs/00000000-0000-0000-0000-000000000000",
                    "events": "/v1/jobs/00000000-0000-0000-0000-000000000000/events"
                }
            })
        );
        let back: JobHandle = serde_json::from_value(json).unwrap();
        assert_eq!(back, handle);
    }
}
