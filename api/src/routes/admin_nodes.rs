//! `GET /v1/admin/nodes`: each Proxmox node's CPU, memory and disk use and its guest counts,
//! from one `GET /cluster/resources`, for the portal's nodes overview.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_domain::{ApiError as ApiErrorBody, ApiResponse, NodeStats};
use nimbus_proxmox::ClusterResource;

use crate::auth::AdminUser;
use crate::error::ApiError;
use crate::middleware::RequestId;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/nodes", get(list))
}

/// Shows each Proxmox node's load and guests.
///
/// Status, CPU, memory and disk use (over the node's storages) and guest counts, by node name, from
/// one read of the cluster's resources.
#[utoipa::path(
    get, path = "/v1/admin/nodes", operation_id = "listAdminNodes", tag = "Administration",
    responses(
        (status = 200, description = "One entry per node of the cluster, by name.", body = ApiResponse<Vec<NodeStats>>),
        (status = 503, description = "`PROXMOX_UNAVAILABLE`: the cluster could not be read (or `SERVICE_UNAVAILABLE`: PostgreSQL or Redis is down).",
            body = ApiErrorBody),
    )
)]
async fn list(State(state): State<AppState>, _admin: AdminUser, rid: RequestId) -> Result<Response, ApiError> {
    let items = state
        .inventory()
        .client()
        .cluster_resources(None)
        .await
        .map_err(|e| ApiError::ProxmoxUnavailable(format!("GET /cluster/resources: {e}")))?;
    Ok(super::data(&rid, summarise(&items)).into_response())
}

/// Nodes by name, with their storages' space and their guests (templates are not guests).
pub fn summarise(items: &[ClusterResource]) -> Vec<NodeStats> {
    let mut nodes: BTreeMap<String, NodeStats> = BTreeMap::new();
    for r in items.iter().filter(|r| r.kind == "node") {
        let Some(name) = r.node.clone().or_else(|| r.name.clone()) else { continue };
        nodes.insert(
            name.clone(),
            NodeStats {
                node: name,
                status: r.status.clone().unwrap_or_else(|| "unknown".into()),
                cpu: r.cpu.unwrap_or(0.0),
                cpus: r.maxcpu.unwrap_or(0.0) as u32,
                memory_used: r.mem.unwrap_or(0),
                memory_total: r.maxmem.unwrap_or(0),
                disk_used: 0,
                disk_total: 0,
                guests: 0,
                guests_running: 0,
                uptime: r.uptime.unwrap_or(0),
            },
        );
    }
    for r in items {
        let Some(n) = r.node.as_ref().and_then(|n| nodes.get_mut(n)) else { continue };
        match r.kind.as_str() {
            "storage" => {
                n.disk_used += r.disk.unwrap_or(0);
                n.disk_total += r.maxdisk.unwrap_or(0);
            }
            "qemu" | "lxc" if r.template != Some(true) => {
                n.guests += 1;
                if r.status.as_deref() == Some("running") {
                    n.guests_running += 1;
                }
            }
            _ => {}
        }
    }
    nodes.into_values().collect()
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list))]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: &str, node: &str) -> ClusterResource {
        ClusterResource {
            id: format!("{kind}/{node}"),
            kind: kind.into(),
            node: Some(node.into()),
            ..Default::default()
        }
    }

    #[test]
    fn storages_add_up_and_templates_are_not_guests() {
        let items = vec![
            ClusterResource {
                status: Some("online".into()),
                cpu: Some(0.25),
                maxcpu: Some(8.0),
                mem: Some(2),
                maxmem: Some(8),
                ..item("node", "pve1")
            },
            ClusterResource { disk: Some(10), maxdisk: Some(100), ..item("storage", "pve1") },
            ClusterResource { disk: Some(5), maxdisk: Some(50), ..item("storage", "pve1") },
            ClusterResource { status: Some("running".into()), ..item("qemu", "pve1") },
            ClusterResource { status: Some("stopped".into()), ..item("lxc", "pve1") },
            ClusterResource { template: Some(true), status: Some("stopped".into()), ..item("qemu", "pve1") },
            // A guest on a node the list does not have is ignored rather than invented.
            ClusterResource { status: Some("running".into()), ..item("qemu", "pve9") },
        ];
        let nodes = summarise(&items);
        assert_eq!(nodes.len(), 1);
        let n = &nodes[0];
        assert_eq!((n.node.as_str(), n.status.as_str(), n.cpus), ("pve1", "online", 8));
        assert_eq!((n.disk_used, n.disk_total), (15, 150));
        assert_eq!((n.guests, n.guests_running), (2, 1));
    }
}
