//! Consoles: `vncproxy` / `termproxy` tickets and the `vncwebsocket` connection.
//!
//! The flow (FACTS §6.27): POST `vncproxy` (with `websocket=1`) or `termproxy` returns a
//! port and a short-lived ticket; within ~40 s the client opens
//! `wss://host/api2/json/nodes/{node}/{qemu|lxc}/{vmid}/vncwebsocket?port=..&vncticket=..`
//! with the same API token and the `binary` websocket subprotocol, which pveproxy
//! requires. For VNC the stream then carries RFB; for `termproxy` the client's first
//! message is `user:ticket\n`.

use std::fmt;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use url::Url;

use crate::api::guest::{Guest, GuestKind};
use crate::client::api_error;
use crate::de;
use crate::error::{PveError, Result};
use crate::params::Params;

/// An open console websocket.
pub type ConsoleStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Options of `POST .../vncproxy`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VncProxyOptions {
    /// Prepare for a websocket connection (needed for `vncwebsocket`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub websocket: Option<bool>,
    /// Generate a VNC password (qemu only).
    #[serde(rename = "generate-password", skip_serializing_if = "Option::is_none")]
    pub generate_password: Option<bool>,
}

impl VncProxyOptions {
    /// `websocket=1`.
    pub fn websocket() -> Self {
        Self { websocket: Some(true), generate_password: None }
    }
}

/// `POST .../vncproxy` answer (`Debug` hides the ticket and password).
#[derive(Clone, Deserialize, Serialize, PartialEq)]
pub struct VncTicket {
    /// The user the ticket is for.
    pub user: String,
    /// `PVEVNC:...` ticket (prefixed `<pw>:` when a password was generated).
    pub ticket: String,
    /// Port to pass to `vncwebsocket` (5900-5999).
    #[serde(deserialize_with = "de::int")]
    pub port: u16,
    /// The `vncproxy` task.
    pub upid: String,
    /// The node's certificate (PEM).
    #[serde(default)]
    pub cert: Option<String>,
    /// VNC password, when `generate-password=1` (qemu).
    #[serde(default)]
    pub password: Option<String>,
}

/// `POST .../termproxy` answer (`Debug` hides the ticket).
#[derive(Clone, Deserialize, Serialize, PartialEq)]
pub struct TermProxyTicket {
    /// The user the ticket is for.
    pub user: String,
    /// The ticket.
    pub ticket: String,
    /// Port to pass to `vncwebsocket`.
    #[serde(deserialize_with = "de::int")]
    pub port: u16,
    /// The `vncproxy` task.
    pub upid: String,
}

impl fmt::Debug for VncTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VncTicket")
            .field("user", &self.user)
            .field("ticket", &"<redacted>")
            .field("port", &self.port)
            .field("upid", &self.upid)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for TermProxyTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TermProxyTicket")
            .field("user", &self.user)
            .field("ticket", &"<redacted>")
            .field("port", &self.port)
            .field("upid", &self.upid)
            .finish()
    }
}

impl<K: GuestKind> Guest<K> {
    /// `POST .../vncproxy`.
    pub async fn vncproxy(&self, options: &VncProxyOptions) -> Result<VncTicket> {
        self.client.call_with(Method::POST, &self.path("/vncproxy"), options).await
    }

    /// `POST .../termproxy` (a serial/xterm.js console; the usual one for LXC).
    pub async fn termproxy(&self) -> Result<TermProxyTicket> {
        self.client.call(Method::POST, &self.path("/termproxy"), &Params::new()).await
    }

    /// The `wss://` (or `ws://`) URL of `vncwebsocket` for a ticket.
    pub fn vnc_websocket_url(&self, port: u16, ticket: &str) -> Result<Url> {
        let mut url = Url::parse(&self.client.url(&self.path("/vncwebsocket")))
            .map_err(|e| PveError::InvalidRequest(format!("websocket URL: {e}")))?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme).map_err(|_| PveError::InvalidRequest("websocket scheme".into()))?;
        url.query_pairs_mut().append_pair("port", &port.to_string()).append_pair("vncticket", ticket);
        Ok(url)
    }

    /// Opens `vncwebsocket` for a ticket, with the client's token and TLS settings and
    /// the `binary` subprotocol. HTTP errors before the upgrade map to [`PveError::Api`].
    pub async fn connect_console(&self, port: u16, ticket: &str) -> Result<ConsoleStream> {
        let url = self.vnc_websocket_url(port, ticket)?;
        let path = self.path("/vncwebsocket");
        let ws_err = |message: String| PveError::WebSocket { path: path.clone(), message };
        let mut request = url.as_str().into_client_request().map_err(|e| ws_err(e.to_string()))?;
        let inner = &self.client.inner;
        let headers = request.headers_mut();
        let mut auth = HeaderValue::from_bytes(inner.auth.as_bytes()).map_err(|e| ws_err(e.to_string()))?;
        auth.set_sensitive(true);
        headers.insert("authorization", auth);
        headers.insert("sec-websocket-protocol", HeaderValue::from_static("binary"));
        if let Ok(ua) = HeaderValue::from_str(&inner.user_agent) {
            headers.insert("user-agent", ua);
        }
        let connector = Connector::Rustls(inner.tls.clone());
        self.client.pass_gate().await;
        let connect = tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector));
        let result = tokio::time::timeout(inner.timeout, connect).await.map_err(|_| PveError::Timeout {
            method: "GET".into(),
            path: path.clone(),
            after: inner.timeout,
        })?;
        match result {
            Ok((stream, _response)) => Ok(stream),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let status = reqwest::StatusCode::from_u16(resp.status().as_u16())
                    .unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR);
                let body = resp.body().clone().unwrap_or_default();
                Err(api_error(&Method::GET, &path, status, None, &body))
            }
            Err(e) => {
                let source: &(dyn std::error::Error + 'static) = &e;
                if let Some(message) = crate::tls::find_tls_error(source) {
                    return Err(PveError::Tls { method: "GET".into(), path, message });
                }
                Err(ws_err(e.to_string()))
            }
        }
    }
}
