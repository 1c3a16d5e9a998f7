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
use nimbus_domain::{ApiError as ApiErrorBody, ApiResponse, ErrorCode, InstanceId, InstanceKind, InstanceStatus};
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

/// What a console session speaks over its websocket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = ConsoleProtocol)]
pub enum Protocol {
    /// RFB (VNC), for noVNC: a VM's screen.
    Vnc,
    /// Proxmox's terminal protocol, for xterm.js: a container's shell.
    Terminal,
}

/// What `POST /v1/vms/{id}/console` answers.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ConsoleSession)]
pub struct ConsoleView {
    /// `vnc` (RFB, for noVNC) or `terminal` (for xterm.js).
    pub protocol: Protocol,
    /// The single-use ticket.
    #[schema(example = "4f1c2a9e7b3d5f60a8e1c4b7d2f9a6e3c5b8d1f4a7e0c3b6d9f2a5e8c1b4d7f0")]
    pub ticket: String,
    /// Where to open the websocket (relative to the API).
    #[schema(
        example = "/v1/vms/0193a5c4-7e1f-7b3a-9c2d-5e8f1a2b3c4d/console/ws?ticket=4f1c2a9e7b3d5f60a8e1c4b7d2f9a6e3c5b8d1f4a7e0c3b6d9f2a5e8c1b4d7f0"
    )]
    pub url: String,
    /// Seconds the ticket stays valid.
    #[schema(example = 30)]
    pub expires_in: u64,
    /// `vnc` only: the session's one-time VNC password (not Proxmox's ticket).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "x7Kq2mPz")]
    pub password: Option<String>,
}

/// Opens a console session on a running instance.
///
/// Answers a single-use ticket (valid 30 s), the websocket URL to open with it and, for VMs, the
/// session's one-time VNC password (noVNC's credentials).
#[utoipa::path(
    post, path = "/v1/vms/{id}/console", operation_id = "openVmConsole", tag = "Console",
    params(("id" = InstanceId, Path, description = "The instance's id.")),
    responses(
        (status = 201, description = "The console session: open `url` as a websocket within `expiresIn` seconds.",
            body = ApiResponse<ConsoleView>),
        (status = 409, description = "`INVALID_INSTANCE_STATE`: the instance is not running (`details.status`).",
            body = ApiErrorBody),
    )
)]
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
            (Protocol::Vnc, t.port, t.ticket, t.user, t.password)
        }
        InstanceKind::Lxc => {
            let t = api.lxc(vmid as u32).termproxy().await.map_err(unavailable)?;
            (Protocol::Terminal, t.port, t.ticket, t.user, None)
        }
    };
    let grant = Grant { user: auth.user.id, tenant: auth.tenant(), instance: id, port, pve_ticket, pve_user };
    let ticket = state.console_tickets().issue(&grant).await?;
    let url = format!("/v1/vms/{id}/console/ws?ticket={ticket}");
    let view = ConsoleView { protocol, ticket, url, expires_in: TICKET_TTL.as_secs(), password };
    Ok((axum::http::StatusCode::CREATED, super::data(&rid, view)).into_response())
}

/// `?ticket=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SocketQuery {
    /// The single-use ticket `POST /v1/vms/{id}/console` answered (valid 30 s): the credential.
    #[param(example = "4f1c2a9e7b3d5f60a8e1c4b7d2f9a6e3c5b8d1f4a7e0c3b6d9f2a5e8c1b4d7f0")]
    ticket: String,
}

/// The headers of a websocket upgrade (RFC 6455), as the OpenAPI document describes them.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Describes the headers; axum's `WebSocketUpgrade` reads them.
struct UpgradeHeaders {
    /// Must name `upgrade` (case-insensitive).
    #[param(rename = "Connection", pattern = "^[Uu]pgrade$", example = "Upgrade")]
    connection: String,
    /// `websocket` (case-insensitive).
    #[param(rename = "Upgrade", pattern = "^websocket$", example = "websocket")]
    upgrade: String,
    /// `13`.
    #[param(rename = "Sec-WebSocket-Version", pattern = "^13$", example = "13")]
    sec_websocket_version: String,
    /// The client's nonce (RFC 6455).
    #[param(rename = "Sec-WebSocket-Key", example = "dGhlIHNhbXBsZSBub25jZQ==")]
    sec_websocket_key: String,
}

/// Connects a console session's websocket.
///
/// Redeems the ticket (single-use, for this instance only; it is the credential, a browser's
/// websocket sends no `Authorization`) and proxies the websocket to the guest's console: VNC
/// (RFB) for a VM, the terminal for a container. An unknown, used, expired or foreign ticket is
/// `404`, like a missing instance.
#[utoipa::path(
    get, path = "/v1/vms/{id}/console/ws", operation_id = "connectVmConsole", tag = "Console",
    params(("id" = InstanceId, Path, description = "The instance's id."), SocketQuery, UpgradeHeaders),
    responses(
        (status = 101, description = "Switching Protocols: the websocket is open (subprotocol `binary`).",
            headers(
                ("Upgrade" = String, description = "`websocket`"),
                ("Connection" = String, description = "`upgrade`"),
                ("Sec-WebSocket-Accept" = String, description = "The answer to `Sec-WebSocket-Key`."))),
        (status = 404, description = "`NOT_FOUND`: the ticket is unknown, used, expired or for another instance \
            (like a missing instance), or its session has ended on Proxmox (the guest stopped).", body = ApiErrorBody),
        (status = 503, description = "`PROXMOX_UNAVAILABLE`: Proxmox could not be reached.", body = ApiErrorBody),
        (status = 426, description = "`VALIDATION_FAILED`: the connection cannot be upgraded (e.g. HTTP/1.0).",
            body = ApiErrorBody),
    )
)]
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
    let mut upstream = upstream.map_err(|e| match e {
        // Proxmox answered but refused the session: it has ended there (its port closed when the
        // guest stopped, or it expired). The ticket is spent; the client opens a new session.
        nimbus_proxmox::PveError::Api { status: 400..=500, ref message, .. } => {
            tracing::info!(vm.id = %id, pve.node = %node, error = %message, "console session ended on Proxmox");
            ApiError::NotFound("console session")
        }
        e => unavailable(e),
    })?;
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
#[openapi(paths(open, socket))]
pub struct ApiDoc;
