//! `nimbus-domain`: the types every Nimbus component agrees on, free of I/O so the SPA can use
//! them in wasm: typed ids ([`ids`]), statuses and kinds ([`status`]), money and plan limits
//! ([`money`], [`quota`]), the job handle ([`job`]), the API envelope ([`envelope`]), the
//! stable error codes ([`error`]), the operator views ([`admin`]) and the `/v1` answers and bodies
//! the API and the portal share ([`views`]).

pub mod admin;
pub mod backup;
pub mod envelope;
pub mod error;
pub mod events;
pub mod ids;
pub mod job;
pub mod money;
pub mod quota;
pub mod status;
pub mod views;

pub use admin::{NodeStats, QueueStats};
pub use backup::Retention;
pub use envelope::{ApiError, ApiResponse, ErrorBody, ListResponse, Meta, PageRequest, Pagination};
pub use error::ErrorCode;
pub use ids::{ApiKeyId, InstanceId, JobId, PlanId, ScheduleId, TenantId, UserId};
pub use job::{JobError, JobHandle, JobLinks, ResourceRef};
pub use money::Money;
pub use quota::{PlanLimits, PlanPrices, QuotaExceeded, QuotaResource, ResourceRequest, ResourceUsage};
pub use status::{InstanceKind, InstanceStatus, JobKind, JobStatus, MissedFirePolicy, ParseEnumError, Role};
pub use views::{
    AdminInstanceView, AdminJobView, ApiKeyView, CreateKey, CreateVm, CreatedKey, InstanceView, MeView, PlanRef,
    ProgressEvent, QuotaView, TemplateView, TenantView, UserView,
};
