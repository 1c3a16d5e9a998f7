//! The console of a running instance, through the API: `POST /v1/vms/{id}/console` opens a
//! Proxmox console session (`vncproxy` with a generated VNC password for VMs, `termproxy` for
//! containers) and answers a single-use ticket of ours (30 s), the websocket URL and, for VMs,
//! the session's one-time VNC password (noVNC's credentials); the browser opens
//! `GET /v1/vms/{id}/console/ws?ticket=…` (a browser's websocket sends no `Authorization`, so the
//! ticket is the credential), and the API proxies the socket to Proxmox's `vncwebsocket`: VNC
//! (RFB, for noVNC) for VMs, the terminal (`termproxy`, for xterm.js: `0:<len>:<data>` input,
//! `1:<cols>:<rows>:` resize, `2` ping; its login step is done by the API) for containers. Proxmox's
//! own ticket, address and token never reach the browser. Opening a console is audited (the
//! `POST`); a stopped instance is `409`.

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{SinkExt, StreamExt};
use nimbus_db::instances;
use nimbus_domain::{ErrorCode, InstanceId, InstanceKind, InstanceStatus};
use nimbus_proxmox::{ConsoleStream, VncProxyOptions};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as Upstream;

use crate::auth::AuthUser;
use crate::console::{Grant, TICKET_TTL};
use crate::error::ApiError;
use crate::extract::{QueryParams, parse_id};
use crate::middleware::RequestId;
use crate::routes::vms::{not_found, tenant_instance};
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/vms/{id}/console", post(open)).route("/v1/vms/{id}/console/ws", get(socket))
}

/// What `POST /v1/vms/{id}/console` answers.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleView {
    /// `vnc` (RFB, for noVNC) or `terminal` (for xterm.js).
    pub protocol: &'static str,
    /// The single-use ticket.
    pub ticket: String,
    /// Where to open the websocket (relative to the API).
    pub url: String,
    /// Seconds the ticket stays valid.
    pub expires_in: u64,
    /// `vnc` only: the session's one-time VNC password (not Proxmox's ticket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

async fn open(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let vm = tenant_instance(&state, &auth, &id).await?;
    let id = vm.id;
    if vm.status != InstanceStatus::Running {
        return Err(ApiError::Refused {
            code: ErrorCode::InvalidInstanceState,
            message: format!("the instance is {}; its console opens when it runs", vm.status),
            details: json!({ "status": vm.status }),
        });
    }
    let (Some(node), Some(vmid)) = (vm.node.clone(), vm.vmid) else {
        return Err(ApiError::Internal(format!("running instance {id} has no node or VMID")));
    };
    let api = state.inventory().client().node(&node);
    let unavailable =
        |e: nimbus_proxmox::PveError| ApiError::ProxmoxUnavailable(format!("console of {node}/{vmid}: {e}"));
    let (protocol, port, pve_ticket, pve_user, password) = match vm.kind {
        InstanceKind::Qemu => {
            let options = VncProxyOptions { websocket: Some(true), generate_password: Some(true) };
            let t = api.qemu(vmid as u32).vncproxy(&options).await.map_err(unavailable)?;
            ("vnc", t.port, t.ticket, t.user, t.password)
        }
        InstanceKind::Lxc => {
            let t = api.lxc(vmid as u32).termproxy().await.map_err(unavailable)?;
            ("terminal", t.port, t.ticket, t.user, None)
        }
    };
    let grant = Grant { user: auth.user.id, tenant: auth.tenant(), instance: id, port, pve_ticket, pve_user };
    let ticket = state.console_tickets().issue(&grant).await?;
    let url = format!("/v1/vms/{id}/console/ws?ticket={ticket}");
    let view = ConsoleView { protocol, ticket, url, expires_in: TICKET_TTL.as_secs(), password };
    Ok((axum::http::StatusCode::CREATED, super::data(&rid, view)).into_response())
}

/// `?ticket=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SocketQuery {
    ticket: String,
}

/// Redeems the ticket (for this instance only), opens Proxmox's console and proxies the
/// websocket. An unknown, used, expired or foreign ticket is `404`, like a missing instance.
async fn socket(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<SocketQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let id: InstanceId = parse_id(&id, "vm")?;
    let grant = state.console_tickets().redeem(&q.ticket).await?.filter(|g| g.instance == id);
    let Some(grant) = grant else { return Err(ApiError::NotFound("console session")) };
    let vm = instances::get(state.db(), grant.tenant, id).await.map_err(|e| not_found(e, "console session"))?;
    let (Some(node), Some(vmid)) = (vm.node.clone(), vm.vmid) else {
        return Err(ApiError::NotFound("console session"));
    };
    let api = state.inventory().client().node(&node);
    let unavailable =
        |e: nimbus_proxmox::PveError| ApiError::ProxmoxUnavailable(format!("console of {node}/{vmid}: {e}"));
    let upstream = match vm.kind {
        InstanceKind::Qemu => api.qemu(vmid as u32).connect_console(grant.port, &grant.pve_ticket).await,
        InstanceKind::Lxc => api.lxc(vmid as u32).connect_console(grant.port, &grant.pve_ticket).await,
    };
    let mut upstream = upstream.map_err(unavailable)?;
    if vm.kind == InstanceKind::Lxc {
        // The terminal protocol opens with `user:ticket\n`, answered `OK`; both stay here: the
        // browser never has the ticket, and its first frame is already the terminal's output.
        let hello = format!("{}:{}\n", grant.pve_user, grant.pve_ticket);
        let refused = |why: String| ApiError::ProxmoxUnavailable(format!("console of {node}/{vmid}: {why}"));
        upstream.send(Upstream::Binary(hello.into_bytes().into())).await.map_err(|e| refused(e.to_string()))?;
        match upstream.next().await {
            Some(Ok(Upstream::Binary(b))) if b.starts_with(b"OK") => {}
            Some(Ok(Upstream::Text(t))) if t.starts_with("OK") => {}
            other => return Err(refused(format!("the terminal refused the session ({other:?})"))),
        }
    }
    tracing::info!(vm.id = %id, user.id = %grant.user, pve.node = %node, "console session opened");
    Ok(upgrade.protocols(["binary"]).on_upgrade(move |browser| proxy(browser, upstream)).into_response())
}

/// Copies frames both ways until either side closes.
async fn proxy(browser: WebSocket, upstream: ConsoleStream) {
    let (mut to_browser, mut from_browser) = browser.split();
    let (mut to_pve, mut from_pve) = upstream.split();
    let up = async {
        while let Some(Ok(m)) = from_browser.next().await {
            let m = match m {
                Message::Binary(b) => Upstream::Binary(b),
                Message::Text(t) => Upstream::Text(t.as_str().into()),
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if to_pve.send(m).await.is_err() {
                break;
            }
        }
        let _ = to_pve.close().await;
    };
    let down = async {
        while let Some(Ok(m)) = from_pve.next().await {
            let m = match m {
                Upstream::Binary(b) => Message::Binary(b),
                Upstream::Text(t) => Message::Text(t.as_str().into()),
                Upstream::Close(_) => break,
                _ => continue,
            };
            if to_browser.send(m).await.is_err() {
                break;
            }
        }
        let _ = to_browser.close().await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths())]
pub struct ApiDoc;
