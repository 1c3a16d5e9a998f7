//! `GET /v1/templates`: what can be provisioned, read from Proxmox (qemu guests marked as
//! templates, LXC `vztmpl` archives), without Proxmox internals such as VMIDs or volume ids.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_domain::{ListResponse, TemplateView};

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::middleware::RequestId;
use crate::routes::PageQuery;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/templates", get(list))
}

/// What can be provisioned: the templates of VMs and containers, with the nodes each is on.
#[utoipa::path(
    get, path = "/v1/templates", operation_id = "listTemplates", tag = "Templates", params(PageQuery),
    responses((status = 200, description = "A page of the templates.", body = ListResponse<TemplateView>))
)]
async fn list(
    State(state): State<AppState>,
    _auth: AuthUser,
    rid: RequestId,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Response, ApiError> {
    let request = q.request()?;
    let snapshot = state.inventory().snapshot().await?;
    let all: Vec<TemplateView> = snapshot
        .templates
        .iter()
        .map(|t| TemplateView {
            name: t.name.clone(),
            kind: t.kind,
            nodes: t.locations.iter().map(|l| l.node.clone()).collect(),
            min_disk: t.disk_bytes.map(|b| b.div_ceil(1 << 30)),
        })
        .collect();
    let total = all.len() as i64;
    let items = all.into_iter().skip(request.offset() as usize).take(request.limit() as usize).collect();
    Ok(super::page(&rid, items, request, total).into_response())
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list))]
pub struct ApiDoc;
