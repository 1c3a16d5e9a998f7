//! `GET /v1/admin/vms`: the provider's operators (`AdminUser`) see every tenant's instances,
//! filtered by `tenant`, `node` and `status` (without `status`: all but `deleted`), newest
//! first, each with its tenant and the operation in progress on it. Operators act on an
//! instance as its tenant would, through impersonation (`Nimbus-Impersonate`), so every action
//! keeps the tenant's quota, busy and state checks and is audited under both names.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_db::instances::{self, InstanceFilter};
use nimbus_domain::{AdminInstanceView, InstanceStatus, ListResponse, TenantId};
use serde::Deserialize;

use crate::auth::AdminUser;
use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::middleware::RequestId;
use crate::routes::PageQuery;
use crate::routes::vms::{view, with_operations};
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/vms", get(list))
}

/// `?tenant=&node=&status=&page=&perPage=`.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this tenant's instances.
    tenant: Option<TenantId>,
    /// Only the instances on this Proxmox node.
    #[param(example = "pve1")]
    node: Option<String>,
    /// Only instances with this status (without it: every status but `deleted`).
    status: Option<InstanceStatus>,
    /// 1-based page (default 1).
    #[param(minimum = 1)]
    page: Option<u32>,
    /// Items per page (default 25, at most 100).
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<u32>,
}

/// Lists every tenant's instances.
///
/// Newest first, filtered by tenant, node and status (without `status`: all but `deleted`), each
/// with its tenant and the operation in progress on it.
#[utoipa::path(
    get, path = "/v1/admin/vms", operation_id = "listAdminVms", tag = "Administration", params(ListQuery),
    responses((status = 200, description = "A page of instances across tenants.", body = ListResponse<AdminInstanceView>))
)]
async fn list(
    State(state): State<AppState>,
    _admin: AdminUser,
    rid: RequestId,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Response, ApiError> {
    let request = PageQuery { page: q.page, per_page: q.per_page }.request()?;
    let filter = InstanceFilter { tenant: q.tenant, node: q.node, status: q.status };
    let (items, total) = instances::list_all(state.db(), &filter, request).await?;
    let items: Vec<AdminInstanceView> = with_operations(state.db(), items)
        .await?
        .into_iter()
        .map(|(i, operation)| {
            let tenant_id = i.tenant_id;
            AdminInstanceView { instance: view(i, operation), tenant_id }
        })
        .collect();
    Ok(super::page(&rid, items, request, total).into_response())
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list))]
pub struct ApiDoc;
