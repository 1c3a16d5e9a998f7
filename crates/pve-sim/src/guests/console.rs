//! Consoles: `POST .../vncproxy` and `.../termproxy` (qemu and LXC) open a console session on
//! a port 5900-5999 and answer a short-lived `PVEVNC` ticket bound to user, `/vms/<vmid>` and
//! port (prefixed with an 8-character VNC password where qemu-server generates one), with a
//! `vncproxy` task; `GET .../vncwebsocket` checks port and ticket, then upgrades to a
//! websocket speaking RFB (VNC) or the termproxy protocol (see `rfb`).

use base64::Engine;
use serde_json::{Value, json};

use crate::auth::hmac_sha256;
use crate::error::{PveError, PveResult};
use crate::model::{Cluster, GuestKind};
use crate::params::{P, Params};
use crate::router::{Reply, Routes};
use crate::sim::Ctx;
use crate::util;

use super::common::guest;

/// The ticket age window of pve-access-control's short-lived tickets (-20..40 s).
const TICKET_MIN_AGE: i64 = -20;
const TICKET_MAX_AGE: i64 = 40;
/// How long an unused console port stays reserved.
const SESSION_TTL: i64 = 40;

/// What a console session speaks on its websocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleKind {
    /// RFB with VNC authentication.
    Vnc,
    /// termproxy's line protocol (`user:ticket\n`, `0:len:data`, `1:cols:rows:`, `2`).
    Term,
}

/// A console session (kept in the guest's `ext` under `console`).
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub port: u16,
    pub kind: ConsoleKind,
    /// The VNC password (the first 8 characters count for VNC authentication).
    pub password: String,
    pub user: String,
    pub expires: i64,
}

impl Session {
    fn to_json(&self) -> Value {
        json!({
            "port": self.port,
            "kind": if self.kind == ConsoleKind::Vnc { "vnc" } else { "term" },
            "password": self.password,
            "user": self.user,
            "expires": self.expires,
        })
    }
    fn from_json(v: &Value) -> Option<Session> {
        Some(Session {
            port: u16::try_from(v.get("port")?.as_u64()?).ok()?,
            kind: if v.get("kind")?.as_str()? == "vnc" { ConsoleKind::Vnc } else { ConsoleKind::Term },
            password: v.get("password")?.as_str()?.to_string(),
            user: v.get("user")?.as_str()?.to_string(),
            expires: v.get("expires")?.as_i64()?,
        })
    }
}

/// The console sessions of a guest.
pub fn sessions(g: &crate::model::Guest) -> Vec<Session> {
    g.ext
        .get("console")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Session::from_json).collect())
        .unwrap_or_default()
}

fn store_sessions(g: &mut crate::model::Guest, list: &[Session]) {
    if list.is_empty() {
        g.ext.remove("console");
    } else {
        g.ext.insert("console".into(), Value::Array(list.iter().map(Session::to_json).collect()));
    }
}

/// `PVE::Tools::next_vnc_port`: the lowest port of 5900-5999 no live session on the node uses.
fn next_port(st: &Cluster, node: &str, now: i64) -> PveResult<u16> {
    let used: Vec<u16> = st
        .guests
        .values()
        .filter(|g| g.node == node)
        .flat_map(sessions)
        .filter(|s| s.expires > now)
        .map(|s| s.port)
        .collect();
    (5900..=5999).find(|p| !used.contains(p)).ok_or_else(|| PveError::handler("unable to find free port (5900-5999)"))
}

fn ticket_data(time: i64, user: &str, path: &str, port: u16) -> (String, String) {
    let plain = format!("PVEVNC:{time:08X}");
    let secret = format!("{user}:{path}:{port}");
    (plain, secret)
}

/// `assemble_vnc_ticket`: `PVEVNC:<hex time>::<signature>`, bound to user, path and port.
pub fn assemble_ticket(key: &str, user: &str, path: &str, port: u16, now: i64) -> String {
    let (plain, secret) = ticket_data(now, user, path, port);
    let sig = hmac_sha256(key.as_bytes(), format!("{plain}:{secret}").as_bytes());
    format!("{plain}::{}", base64::engine::general_purpose::STANDARD.encode(sig))
}

/// `verify_vnc_ticket` (a leading `<8 chars>:` password is dropped first).
pub fn verify_ticket(key: &str, ticket: &str, user: &str, path: &str, port: u16, now: i64) -> PveResult<()> {
    let invalid = || PveError::Status(401, "permission denied - invalid PVEVNC ticket".into());
    let ticket = match ticket.get(9..) {
        Some(rest) if ticket.as_bytes().get(8) == Some(&b':') && rest.starts_with("PVEVNC:") => rest,
        _ => ticket,
    };
    let (plain, _sig) = ticket.split_once("::").ok_or_else(invalid)?;
    let time = plain.strip_prefix("PVEVNC:").and_then(|t| i64::from_str_radix(t, 16).ok()).ok_or_else(invalid)?;
    let age = now - time;
    if age <= TICKET_MIN_AGE || age >= TICKET_MAX_AGE {
        return Err(invalid());
    }
    if assemble_ticket(key, user, path, port, time) != ticket {
        return Err(invalid());
    }
    Ok(())
}

/// `PVE::Ticket::generate_vnc_password`: 8 printable ASCII characters.
fn vnc_password() -> String {
    (0..8).map(|_| char::from(rand::random_range(b'!'..=b'~'))).collect()
}

fn serial_console(g: &crate::model::Guest) -> bool {
    g.config
        .get("vga")
        .is_some_and(|v| v.split(',').next().is_some_and(|t| t.trim_start_matches("type=").starts_with("serial")))
}

fn open_session(cx: &Ctx, p: &Params, kind: GuestKind, console: ConsoleKind) -> PveResult<Value> {
    let websocket = p.bool("websocket");
    let mut st = cx.write();
    let g = guest(&st, p, kind)?;
    let (node, vmid) = (g.node.clone(), g.vmid);
    let serial = kind == GuestKind::Qemu && serial_console(g);
    let now = util::now();
    let port = next_port(&st, &node, now)?;
    let user = cx.user();
    let path = format!("/vms/{vmid}");
    let mut ticket = assemble_ticket(&st.auth_key, &user, &path, port, now);
    let mut password = None;
    if console == ConsoleKind::Vnc && kind == GuestKind::Qemu && (p.bool("generate-password") || !serial || websocket) {
        let pw = vnc_password();
        ticket = format!("{pw}:{ticket}");
        password = Some(pw);
    }
    // Without a generated password, VNC authentication uses the ticket itself (8 chars count).
    let session_pw = password.clone().unwrap_or_else(|| ticket.clone());
    let g = st.guests.get_mut(&vmid).expect("looked up above");
    let mut list: Vec<Session> = sessions(g).into_iter().filter(|s| s.expires > now).collect();
    list.push(Session { port, kind: console, password: session_pw, user: user.clone(), expires: now + SESSION_TTL });
    store_sessions(g, &list);
    let spec = cx
        .task(&node, "vncproxy", vmid)
        .duration(std::time::Duration::from_secs(10))
        .log(format!("starting {} proxy on port {port}", if console == ConsoleKind::Vnc { "vnc" } else { "term" }));
    let upid = cx.spawn_task(&mut st, spec, |_, _| Ok(()))?;
    let mut out = json!({"user": user, "ticket": ticket, "port": port, "upid": upid});
    if console == ConsoleKind::Vnc {
        let cert = cx.sim.cert.as_ref().map(|c| c.cert_pem.clone()).unwrap_or_default();
        out["cert"] = json!(cert);
    }
    if let Some(pw) = password {
        out["password"] = json!(pw);
    }
    Ok(out)
}

/// Registers vncproxy, termproxy and vncwebsocket for both guest kinds.
pub fn register(r: &mut Routes) {
    r.post(
        "/nodes/{node}/qemu/{vmid}/vncproxy",
        vec![P::node(), P::vmid(), P::bool("generate-password").opt(), P::bool("websocket").opt()],
        |cx, p| open_session(cx, p, GuestKind::Qemu, ConsoleKind::Vnc),
    )
    .local();
    r.post(
        "/nodes/{node}/lxc/{vmid}/vncproxy",
        vec![
            P::node(),
            P::vmid(),
            P::int("height").opt().range(16, 2160),
            P::bool("websocket").opt(),
            P::int("width").opt().range(16, 4096),
        ],
        |cx, p| open_session(cx, p, GuestKind::Lxc, ConsoleKind::Vnc),
    )
    .local();
    r.post(
        "/nodes/{node}/qemu/{vmid}/termproxy",
        vec![P::node(), P::vmid(), P::str("serial").opt().en(&["serial0", "serial1", "serial2", "serial3"])],
        |cx, p| open_session(cx, p, GuestKind::Qemu, ConsoleKind::Term),
    )
    .local();
    r.post("/nodes/{node}/lxc/{vmid}/termproxy", vec![P::node(), P::vmid()], |cx, p| {
        open_session(cx, p, GuestKind::Lxc, ConsoleKind::Term)
    })
    .local();
    for kind in [GuestKind::Qemu, GuestKind::Lxc] {
        let path = match kind {
            GuestKind::Qemu => "/nodes/{node}/qemu/{vmid}/vncwebsocket",
            GuestKind::Lxc => "/nodes/{node}/lxc/{vmid}/vncwebsocket",
        };
        r.get_async(
            path,
            vec![P::node(), P::vmid(), P::int("port").range(5900, 5999), P::str("vncticket").max_len(512)],
            move |cx: Ctx, p: Params| async move { websocket(cx, p, kind) },
        )
        .local();
    }
}

fn websocket(cx: Ctx, p: Params, kind: GuestKind) -> PveResult<Reply> {
    let port = u16::try_from(p.u32("port")?)
        .map_err(|_| PveError::param("port", "value must have a maximum value of 5999"))?;
    let (session, name) = {
        let st = cx.read();
        let user = cx.user();
        let vmid = p.vmid()?;
        verify_ticket(&st.auth_key, p.str("vncticket")?, &user, &format!("/vms/{vmid}"), port, util::now())?;
        let g = guest(&st, &p, kind)?;
        let now = util::now();
        let session = sessions(g).into_iter().find(|s| s.port == port && s.expires > now);
        (session, g.name())
    };
    let Some(upgrade) = cx.take_upgrade() else {
        return Ok(Reply::from(json!({"port": port.to_string()})));
    };
    let session = session.ok_or_else(|| {
        PveError::handler(format!("unable to connect to VNC proxy on port {port} - Connection refused"))
    })?;
    let key = cx
        .headers
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| PveError::Status(400, "missing Sec-WebSocket-Key".into()))?;
    if cx.headers.get("sec-websocket-version").and_then(|v| v.to_str().ok()) != Some("13") {
        return Err(PveError::Status(400, "unsupported websocket version".into()));
    }
    let protocols: Vec<String> = cx
        .headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(',').map(|p| p.trim().to_string()).collect())
        .unwrap_or_default();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = http::Response::builder()
        .status(101)
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Accept", accept);
    if protocols.iter().any(|p| p == "binary") {
        resp = resp.header("Sec-WebSocket-Protocol", "binary");
    }
    let resp = resp.body(axum::body::Body::empty()).map_err(|e| PveError::handler(e.to_string()))?;
    // The port is taken once the proxy is connected.
    {
        let mut st = cx.write();
        if let Ok(g) = guest_mut_by(&mut st, &p, kind) {
            let rest: Vec<Session> = sessions(g).into_iter().filter(|s| s.port != port).collect();
            store_sessions(g, &rest);
        }
    }
    let path = format!("/vms/{}", p.vmid()?);
    let sim = cx.sim.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            io,
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        let result = match session.kind {
            ConsoleKind::Vnc => super::rfb::serve_vnc(ws, &session.password, &name).await,
            ConsoleKind::Term => {
                let key = sim.read().auth_key.clone();
                let check = move |line: &str| {
                    let (user, ticket) = line.trim_end().split_once(':')?;
                    verify_ticket(&key, ticket, user, &path, port, util::now()).ok()
                };
                super::rfb::serve_term(ws, check, &name, kind).await
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "console session ended");
        }
    });
    Ok(Reply::Raw(resp))
}

fn guest_mut_by<'a>(st: &'a mut Cluster, p: &Params, kind: GuestKind) -> PveResult<&'a mut crate::model::Guest> {
    super::common::guest_mut(st, p, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_bind_user_path_port_and_expire() {
        let t = assemble_ticket("k", "root@pam!ci", "/vms/100", 5900, 1_700_000_000);
        assert!(t.starts_with("PVEVNC:6553F100::"), "{t}");
        assert!(verify_ticket("k", &t, "root@pam!ci", "/vms/100", 5900, 1_700_000_010).is_ok());
        assert!(verify_ticket("k", &format!("abcdefgh:{t}"), "root@pam!ci", "/vms/100", 5900, 1_700_000_010).is_ok());
        assert!(verify_ticket("k", &t, "root@pam!ci", "/vms/100", 5901, 1_700_000_010).is_err());
        assert!(verify_ticket("k", &t, "root@pam!ci", "/vms/101", 5900, 1_700_000_010).is_err());
        assert!(verify_ticket("k", &t, "bob@pve", "/vms/100", 5900, 1_700_000_010).is_err());
        let e = verify_ticket("k", &t, "root@pam!ci", "/vms/100", 5900, 1_700_000_041).unwrap_err();
        assert_eq!((e.status(), e.message().as_str()), (401, "permission denied - invalid PVEVNC ticket"));
    }
}
