//! `ProxmoxClient`: one HTTPS connection pool per cluster, PVE's envelope and errors.
//!
//! Every call goes to `<base>/api2/json<path>` with `Authorization: PVEAPIToken=...`.
//! GET and DELETE carry their parameters in the query string (PVE refuses a body on
//! them), POST and PUT in a form body. A 2xx answer is `{"data": ..., "total"?: N}`;
//! anything else becomes [`PveError::Api`] with PVE's message taken from the body's
//! `message` (PVE ≥ 8.3), else from the HTTP reason phrase (older PVE and pveproxy's
//! 595/596, which have an empty body), else the standard reason. A 404 with neither PVE's
//! envelope nor a reason phrase of its own did not come from PVE and becomes
//! [`PveError::NotProxmox`].
//!
//! The base URL must be `https://`: the token is a bearer secret. `http://` is refused
//! unless [`ClientConfig::allow_http`] is set for a lab, and then logged as a warning.
//!
//! With a [`RequestGate`] configured, every request waits for it just before it is sent
//! ([`crate::gate`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::Instrument;
use url::Url;

use crate::config::{ClientConfig, PollBackoff};
use crate::error::{PveError, Result};
use crate::gate::RequestGate;
use crate::observe::{CallObserver, ObservedCall, path_template};
use crate::params::Params;
use crate::tls;

/// Bytes escaped in a path segment: everything but unreserved characters, `:` and `@`
/// (which appear in volume ids and UPIDs and are legal in a segment). `/` is escaped so
/// that a volume id like `local:iso/x.iso` stays one segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'|')
    .add(b'\\')
    .add(b'^')
    .add(b'[')
    .add(b']')
    .add(b'!')
    .add(b'$')
    .add(b'&')
    .add(b'\'')
    .add(b'(')
    .add(b')')
    .add(b'*')
    .add(b'+')
    .add(b',')
    .add(b';')
    .add(b'=');

/// Percent-encodes one path segment (node, storage, volume id, UPID, snapshot name).
pub fn path_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// How much of an undecodable body is kept in the error.
const BODY_SNIPPET: usize = 512;

/// A typed client for one PVE cluster. Cheap to clone (an `Arc` inside); share one per
/// cluster so that connections are reused.
#[derive(Clone)]
pub struct ProxmoxClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    /// `https://host:port/api2/json` without a trailing slash.
    pub(crate) api_base: String,
    pub(crate) origin: Url,
    pub(crate) auth: HeaderValue,
    pub(crate) token_id: String,
    pub(crate) timeout: Duration,
    pub(crate) upload_timeout: Option<Duration>,
    pub(crate) task_poll: PollBackoff,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) user_agent: String,
    pub(crate) gate: Option<Arc<dyn RequestGate>>,
    pub(crate) observer: Option<Arc<dyn CallObserver>>,
}

impl std::fmt::Debug for ProxmoxClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxmoxClient")
            .field("api_base", &self.inner.api_base)
            .field("token_id", &self.inner.token_id)
            .finish_non_exhaustive()
    }
}

/// PVE's success envelope.
#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
    #[serde(default, deserialize_with = "crate::de::opt_int")]
    total: Option<u64>,
}

/// PVE's error body (`{"data":null,"message":"...\n","errors":{...}}`). `data` is kept
/// to tell PVE's envelope from another server's JSON (`{"message":"no Route matched"}`).
#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default, deserialize_with = "present")]
    data: bool,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Option<BTreeMap<String, Value>>,
}

/// True whenever the field is there, `null` included (`Option<Value>` would read `null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

impl ProxmoxClient {
    /// Builds a client. Fails on an invalid URL, fingerprint or CA, and on an `http://`
    /// URL unless [`ClientConfig::allow_http`] is set; logs a warning when TLS
    /// verification is disabled or plain HTTP is used.
    pub fn new(config: ClientConfig) -> Result<Self> {
        let origin = parse_base_url(&config.base_url, config.allow_http)?;
        if origin.scheme() == "http" {
            tracing::warn!(
                base_url = %origin,
                token_id = config.token.token_id(),
                "Proxmox is reached over plain HTTP: the API token travels in clear (allowed for labs only)"
            );
        }
        let tls_config = Arc::new(tls::client_config(&config.tls)?);
        let mut auth = HeaderValue::from_str(&config.token.header_value())
            .map_err(|_| PveError::Config("API token contains invalid header bytes".into()))?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth.clone());
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls_config).clone())
            .default_headers(headers)
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.connect_timeout)
            // PVE speaks HTTP/1.1 only; pveproxy also closes after errors.
            .http1_only()
            .build()
            .map_err(|e| PveError::Config(format!("HTTP client: {e}")))?;
        let api_base = format!("{}api2/json", origin.as_str());
        tracing::debug!(%api_base, token_id = config.token.token_id(), tls = ?config.tls, "proxmox client created");
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                api_base,
                origin,
                auth,
                token_id: config.token.token_id().to_string(),
                timeout: config.timeout,
                upload_timeout: config.upload_timeout,
                task_poll: config.task_poll,
                tls: tls_config,
                user_agent: config.user_agent,
                gate: config.request_gate,
                observer: config.observer,
            }),
        })
    }

    /// The cluster's origin, `https://host:port/`.
    pub fn base_url(&self) -> &Url {
        &self.inner.origin
    }

    /// The API token id the client authenticates as (`user@realm!name`).
    pub fn token_id(&self) -> &str {
        &self.inner.token_id
    }

    /// `GET path` with `params` in the query string; returns `data`. `path` is relative
    /// to `/api2/json`; segments holding reserved characters must be encoded with
    /// [`path_segment`].
    pub async fn get_json(&self, path: &str, params: &Params) -> Result<Value> {
        self.call(Method::GET, path, params).await
    }

    /// `POST path` with `params` as a form body; returns `data`.
    pub async fn post_json(&self, path: &str, params: &Params) -> Result<Value> {
        self.call(Method::POST, path, params).await
    }

    /// `PUT path` with `params` as a form body; returns `data`.
    pub async fn put_json(&self, path: &str, params: &Params) -> Result<Value> {
        self.call(Method::PUT, path, params).await
    }

    /// `DELETE path` with `params` in the query string; returns `data`.
    pub async fn delete_json(&self, path: &str, params: &Params) -> Result<Value> {
        self.call(Method::DELETE, path, params).await
    }

    /// Calls `method path` and decodes `data` as `T`.
    pub async fn call<T: DeserializeOwned>(&self, method: Method, path: &str, params: &Params) -> Result<T> {
        Ok(self.call_with_total(method, path, params).await?.0)
    }

    /// Like [`ProxmoxClient::call`] with a request struct encoded by [`Params::from_serialize`].
    pub async fn call_with<T: DeserializeOwned, P: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        params: &P,
    ) -> Result<T> {
        let params = Params::from_serialize(params)?;
        self.call(method, path, &params).await
    }

    /// Calls and also returns the envelope's `total` (task logs count their lines).
    pub(crate) async fn call_with_total<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        params: &Params,
    ) -> Result<(T, Option<u64>)> {
        let path = normalize_path(path);
        let mut url = format!("{}{}", self.inner.api_base, path);
        let body_method = method == Method::POST || method == Method::PUT;
        if !body_method && !params.is_empty() {
            url.push('?');
            url.push_str(&params.to_form());
        }
        let mut req = self.inner.http.request(method.clone(), &url).timeout(self.inner.timeout);
        if body_method {
            req = req.header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(params.to_form());
        }
        self.pass_gate().await;
        let (sent, started) = self.send_observed(&method, &path, req).await;
        let resp = sent.map_err(|e| self.send_error(&method, &path, e, self.inner.timeout))?;
        self.decode(&method, &path, resp, started, self.inner.timeout).await
    }

    /// Sends a prepared request (multipart uploads) and decodes the envelope.
    pub(crate) async fn send_prepared<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        req: reqwest::RequestBuilder,
        timeout: Option<Duration>,
    ) -> Result<T> {
        self.pass_gate().await;
        let limit = timeout.unwrap_or(Duration::MAX);
        let (sent, started) = self.send_observed(&method, path, req).await;
        let resp = sent.map_err(|e| self.send_error(&method, path, e, limit))?;
        Ok(self.decode(&method, path, resp, started, limit).await?.0)
    }

    /// Waits for the request gate, if any; called right before each request is sent.
    pub(crate) async fn pass_gate(&self) {
        if let Some(gate) = &self.inner.gate {
            gate.acquire().await;
        }
    }

    /// Sends `req` in a span of its own (a trace's Proxmox call, named by method and path
    /// template) and tells the observer, if any, what came of it; the answer (or why none) and
    /// when it was sent.
    async fn send_observed(
        &self,
        method: &Method,
        path: &str,
        req: reqwest::RequestBuilder,
    ) -> (reqwest::Result<reqwest::Response>, Instant) {
        let template = path_template(path);
        let span = tracing::info_span!(
            "proxmox",
            otel.name = %format_args!("{method} {template}"),
            otel.kind = "client",
            http.request.method = %method,
            url.path = %template,
        );
        let started = Instant::now();
        let sent = req.send().instrument(span).await;
        if let Some(observer) = &self.inner.observer {
            let status = sent.as_ref().ok().map(|r| r.status().as_u16());
            observer.observe(&ObservedCall { method, path: &template, status, elapsed: started.elapsed() });
        }
        (sent, started)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.inner.api_base, normalize_path(path))
    }

    fn send_error(&self, method: &Method, path: &str, e: reqwest::Error, timeout: Duration) -> PveError {
        tracing::debug!(%method, path, error = %e, "proxmox request failed");
        if let Some(message) = tls::find_tls_error(&e) {
            return PveError::Tls { method: method.to_string(), path: path.to_string(), message };
        }
        if e.is_timeout() {
            return PveError::Timeout { method: method.to_string(), path: path.to_string(), after: timeout };
        }
        PveError::Transport { method: method.to_string(), path: path.to_string(), source: e }
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        method: &Method,
        path: &str,
        resp: reqwest::Response,
        started: Instant,
        timeout: Duration,
    ) -> Result<(T, Option<u64>)> {
        let status = resp.status();
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
        let body = resp.bytes().await.map_err(|e| self.send_error(method, path, e, timeout))?;
        tracing::debug!(
            %method,
            path,
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "proxmox request"
        );
        if status.is_success() {
            let env: Envelope<T> = serde_json::from_slice(&body).map_err(|e| PveError::Decode {
                method: method.to_string(),
                path: path.to_string(),
                message: e.to_string(),
                body: snippet(&body),
            })?;
            return Ok((env.data, env.total));
        }
        Err(api_error(method, path, status, reason, &body))
    }
}

/// Builds [`PveError::Api`] (or [`PveError::NotProxmox`]) from an error response.
pub(crate) fn api_error(
    method: &Method,
    path: &str,
    status: StatusCode,
    reason: Option<String>,
    body: &[u8],
) -> PveError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let body_message = parsed.message.map(|m| m.trim().to_string()).filter(|m| !m.is_empty());
    let reason = reason.map(|r| r.trim().to_string()).filter(|r| !r.is_empty());
    let errors: BTreeMap<String, String> = parsed
        .errors
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.trim().to_string(),
                other => other.to_string(),
            };
            (k, text)
        })
        .collect();
    // PVE never answers 404 itself, so a 404 is PVE's only if it says so in PVE's words;
    // otherwise a caller could take a misrouted request for a vanished guest.
    if status == StatusCode::NOT_FOUND {
        let envelope = parsed.data && (body_message.is_some() || !errors.is_empty());
        let own_reason =
            reason.as_deref().is_some_and(|r| !status.canonical_reason().is_some_and(|c| c.eq_ignore_ascii_case(r)));
        if !envelope && !own_reason {
            return PveError::NotProxmox {
                method: method.to_string(),
                path: path.to_string(),
                status: status.as_u16(),
                body: snippet(body),
            };
        }
    }
    let message = body_message.or(reason).or_else(|| status.canonical_reason().map(str::to_string)).unwrap_or_default();
    PveError::Api { method: method.to_string(), path: path.to_string(), status: status.as_u16(), message, errors }
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    match s.char_indices().nth(BODY_SNIPPET) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.into_owned(),
    }
}

fn normalize_path(path: &str) -> String {
    if path.starts_with('/') { path.to_string() } else { format!("/{path}") }
}

/// Accepts `https://host:8006`, with or without a trailing `/` or `/api2/json`;
/// `http://` only when `allow_http`.
fn parse_base_url(base: &str, allow_http: bool) -> Result<Url> {
    let trimmed = base.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/api2/json").unwrap_or(trimmed);
    let url = Url::parse(trimmed).map_err(|e| PveError::Config(format!("base URL '{base}': {e}")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err(PveError::Config(format!("base URL '{base}' must be https://host[:port]")));
    }
    if url.scheme() == "http" && !allow_http {
        return Err(PveError::Config(format!(
            "base URL '{base}' is plain http:// and would send the API token in clear; use https:// \
             (or, in a lab, allow plain HTTP explicitly: PVE_ALLOW_HTTP=true)"
        )));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(PveError::Config(format!("base URL '{base}' must not have a path other than /api2/json")));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_keep_upids_and_escape_slashes() {
        assert_eq!(
            path_segment("UPID:pve1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam!ci:"),
            "UPID:pve1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam%21ci:"
        );
        assert_eq!(
            path_segment("local:backup/vzdump-qemu-100-2024_01_01-00_00_00.vma.zst"),
            "local:backup%2Fvzdump-qemu-100-2024_01_01-00_00_00.vma.zst"
        );
        assert_eq!(path_segment("a b?c#d"), "a%20b%3Fc%23d");
    }

    #[test]
    fn base_urls() {
        for ok in [
            "https://pve.example.com:8006",
            "https://pve.example.com:8006/",
            "https://pve.example.com:8006/api2/json",
            "https://pve.example.com:8006/api2/json/",
        ] {
            assert_eq!(parse_base_url(ok, false).unwrap().path(), "/", "{ok}");
        }
        for bad in ["pve:8006", "ftp://pve", "https://pve:8006/foo", "https://"] {
            assert!(parse_base_url(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_http_only_when_allowed() {
        match parse_base_url("http://127.0.0.1:8006", false) {
            Err(PveError::Config(m)) => assert!(m.contains("PVE_ALLOW_HTTP"), "{m}"),
            other => panic!("expected a config error, got {other:?}"),
        }
        assert_eq!(parse_base_url("http://127.0.0.1:8006", true).unwrap().scheme(), "http");
        assert_eq!(parse_base_url("HTTPS://pve:8006", false).unwrap().scheme(), "https");
    }

    #[test]
    fn a_404_without_pve_message_is_not_proxmox() {
        let get = Method::GET;
        let path = "/nodes/pve1/qemu/100/status/current";
        for (reason, body) in [
            (None, &b"<html><body>404 Not Found</body></html>"[..]),
            (None, b""),
            // A gateway's own JSON (Kong) has no `data` key.
            (None, br#"{"message":"no Route matched with those values"}"#),
            (Some("Not Found".to_string()), br#"{"data":null}"#),
        ] {
            let e = api_error(&get, path, StatusCode::NOT_FOUND, reason, body);
            assert!(matches!(e, PveError::NotProxmox { status: 404, .. }), "{e:?}");
            assert!(!e.is_not_found());
        }
        // PVE's envelope, or its message in the reason phrase, is PVE speaking.
        let pve = br#"{"data":null,"message":"Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist\n"}"#;
        let e = api_error(&get, path, StatusCode::NOT_FOUND, None, pve);
        assert!(e.is_not_found(), "{e:?}");
        assert_eq!(e.status(), Some(404));
        let reason = "Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist".to_string();
        let e = api_error(&get, path, StatusCode::NOT_FOUND, Some(reason), b"");
        assert!(e.is_not_found(), "{e:?}");
        // Other statuses keep their classification.
        let e = api_error(&get, path, StatusCode::BAD_GATEWAY, None, b"<html>bad gateway</html>");
        assert!(matches!(e, PveError::Api { status: 502, .. }) && e.is_transient());
    }

    #[test]
    fn error_message_prefers_body_then_reason() {
        let m = Method::POST;
        let e = api_error(
            &m,
            "/x",
            StatusCode::INTERNAL_SERVER_ERROR,
            Some("VM 100 not running".into()),
            br#"{"data":null,"message":"VM 100 not running\n"}"#,
        );
        assert_eq!(e.pve_message(), Some("VM 100 not running"));

        let e = api_error(
            &m,
            "/x",
            StatusCode::from_u16(595).unwrap(),
            Some("Errors during connection establishment, proxy handshake: Connection refused".into()),
            b"",
        );
        assert_eq!(e.status(), Some(595));
        assert!(e.pve_message().unwrap().starts_with("Errors during connection"));
        assert!(e.is_transient());

        let e = api_error(&m, "/x", StatusCode::FORBIDDEN, None, b"");
        assert_eq!(e.pve_message(), Some("Forbidden"));
    }

    #[test]
    fn error_param_errors() {
        let e = api_error(
            &Method::GET,
            "/cluster/nextid",
            StatusCode::BAD_REQUEST,
            Some("Parameter verification failed.".into()),
            br#"{"data":null,"errors":{"vmid":"type check ('integer') failed - got 'abc'\n","n":5},"message":"Parameter verification failed.\n"}"#,
        );
        let errs = e.param_errors().unwrap();
        assert_eq!(errs["vmid"], "type check ('integer') failed - got 'abc'");
        assert_eq!(errs["n"], "5");
        assert_eq!(e.pve_message(), Some("Parameter verification failed."));
        assert!(!e.is_transient());
    }
}
