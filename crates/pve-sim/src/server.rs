//! The HTTP(S) front end: accepts connections (TLS via tokio-rustls, or plain), and dispatches
//! `/api2/<format>/...` requests in pveproxy's order: method and transfer-encoding checks,
//! authentication (401 after the configured delay), body rules (501), route lookup (501),
//! URI parameter conflicts (400), token restrictions (403), node proxying (595), parameter
//! validation (400), the handler, and the response envelope with the reason phrase.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::auth::{self, AuthUser};
use crate::error::PveError;
use crate::params::RawValue;
use crate::router::{Handler, Reply};
use crate::sim::{Ctx, Sim};
use crate::upload::read_multipart;
use crate::util;

/// PVE's limit for non-upload request bodies.
const MAX_POST: usize = 512 * 1024;

pub use crate::upload::UploadInfo;

/// Accepts connections until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    sim: Arc<Sim>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (stream, _peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let sim = sim.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let sim = sim.clone();
                async move { Ok::<_, Infallible>(handle(sim, req).await) }
            });
            let builder = hyper::server::conn::http1::Builder::new();
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => builder.serve_connection(TokioIo::new(s), svc).with_upgrades().await,
                    Err(e) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => builder.serve_connection(TokioIo::new(stream), svc).with_upgrades().await,
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    conns.abort_all();
}

/// Base response with PVE's headers and the message as reason phrase.
fn response(status: u16, reason: Option<&str>, content_type: Option<&str>, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(header::SERVER, HeaderValue::from_static("pve-api-daemon/3.0"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=0"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if let Some(ct) = content_type
        && let Ok(v) = HeaderValue::from_str(ct)
    {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Some(reason) = reason {
        let first = reason.lines().next().unwrap_or("");
        if !first.is_empty()
            && let Ok(rp) = hyper::ext::ReasonPhrase::try_from(first.as_bytes().to_vec())
        {
            resp.extensions_mut().insert(rp);
        }
    }
    resp
}

const JSON_CT: &str = "application/json;charset=UTF-8";

/// A success envelope.
fn ok_response(format: Format, data: Value, total: Option<u64>) -> Response<Body> {
    let mut env = serde_json::Map::with_capacity(3);
    env.insert("data".into(), data);
    if let Some(t) = total.filter(|t| *t > 0) {
        env.insert("total".into(), json!(t));
    }
    if format == Format::Extjs {
        env.insert("success".into(), json!(1));
    }
    let body = serde_json::to_vec(&Value::Object(env)).unwrap_or_default();
    response(200, None, Some(JSON_CT), Body::from(body))
}

/// A success envelope around already serialised data.
fn ok_serialized(format: Format, json: Vec<u8>, total: Option<u64>) -> Response<Body> {
    let mut body = Vec::with_capacity(json.len() + 48);
    body.extend_from_slice(b"{\"data\":");
    body.extend_from_slice(&json);
    if let Some(t) = total.filter(|t| *t > 0) {
        body.extend_from_slice(format!(",\"total\":{t}").as_bytes());
    }
    if format == Format::Extjs {
        body.extend_from_slice(b",\"success\":1");
    }
    body.push(b'}');
    response(200, None, Some(JSON_CT), Body::from(body))
}

/// An error as the JSON formatter renders it (reason phrase + `{"data":null,"message":..}`).
fn error_response(format: Format, err: &PveError) -> Response<Body> {
    let status = err.status();
    let message = err.message();
    match err {
        PveError::Proxy(..) | PveError::Unauthorized(_) => {
            return response(status, Some(&message), None, Body::empty());
        }
        _ => {}
    }
    // rest_handler's own 501 message has no trailing newline; die/raise texts do.
    let body_msg = if matches!(err, PveError::NotImplemented(_)) { message.clone() } else { format!("{message}\n") };
    let mut env = serde_json::Map::new();
    env.insert("data".into(), Value::Null);
    if let Some(errors) = err.errors() {
        env.insert("errors".into(), json!(errors));
    }
    env.insert("message".into(), json!(body_msg));
    if format == Format::Extjs {
        env.insert("success".into(), json!(0));
        env.insert("status".into(), json!(status));
        let body = serde_json::to_vec(&Value::Object(env)).unwrap_or_default();
        return response(200, None, Some(JSON_CT), Body::from(body));
    }
    let body = serde_json::to_vec(&Value::Object(env)).unwrap_or_default();
    response(status, Some(&message), Some(JSON_CT), Body::from(body))
}

/// pve-http-server's `error()`: reason phrase and the message as plain body.
fn plain_error(status: u16, message: &str) -> Response<Body> {
    response(status, Some(message), None, Body::from(message.to_string()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Extjs,
}

/// `decode_urlencoded`: `&`/`;` separated, only the first `=` piece pair, `+` is space,
/// repeated keys become arrays, keys without `=` are undefined (dropped here).
pub fn decode_urlencoded(data: &str) -> Vec<(String, RawValue)> {
    let mut out: Vec<(String, RawValue)> = Vec::new();
    for kv in data.split(['&', ';']) {
        if kv.is_empty() {
            continue;
        }
        let mut pieces = kv.split('=');
        let k = unescape_form(pieces.next().unwrap_or(""));
        let Some(v) = pieces.next() else { continue };
        let v = unescape_form(v);
        match out.iter_mut().find(|(key, _)| *key == k) {
            Some((_, existing)) => {
                let old = std::mem::replace(existing, RawValue::Str(String::new()));
                let mut items = match old {
                    RawValue::Json(Value::Array(a)) => a,
                    other => vec![Value::String(other.as_string())],
                };
                items.push(Value::String(v));
                *existing = RawValue::Json(Value::Array(items));
            }
            None => out.push((k, RawValue::Str(v))),
        }
    }
    out
}

fn unescape_form(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s).decode_utf8_lossy().into_owned()
}

fn header_str<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Handles one request.
pub async fn handle(sim: Arc<Sim>, mut req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = percent_encoding::percent_decode_str(req.uri().path()).decode_utf8_lossy().into_owned();
    if !matches!(method, Method::GET | Method::POST | Method::PUT | Method::DELETE) {
        return response(501, Some(&format!("method '{method}' not available")), None, Body::empty());
    }
    if let Some(te) = header_str(&req, "transfer-encoding") {
        let msg = if te.eq_ignore_ascii_case("chunked") {
            "chunked transfer encoding not supported".to_string()
        } else {
            format!("Unknown transfer encoding '{te}'")
        };
        return plain_error(501, &msg);
    }
    if path == "/_sim/faults" {
        return crate::api::sim_faults::handle(&sim, req).await;
    }
    let Some((format_name, rel)) = split_abs_uri(&path) else {
        return plain_error(501, "no such uri");
    };

    // Authentication (pve-http-server: cookie ticket, then Authorization cookie, then token).
    let cookie_ticket = header_str(&req, "cookie").and_then(|c| auth::extract_auth_value(c, "PVEAuthCookie"));
    let authz = header_str(&req, "authorization").unwrap_or("");
    let ticket = cookie_ticket.or_else(|| auth::extract_auth_value(authz, "PVEAuthCookie"));
    let api_token = if ticket.is_none() { auth::extract_auth_value(authz, "PVEAPIToken") } else { None };
    let require_auth = !((rel == "/access/domains" && method == Method::GET)
        || (rel == "/access/ticket" && (method == Method::GET || method == Method::POST))
        || (rel == "/access/vncticket" && method == Method::POST));
    let is_upload = method == Method::POST && is_upload_path(&rel);
    let now = util::now();
    let mut auth_user: Option<AuthUser> = None;
    if require_auth {
        let result = authenticate(&sim, &req, ticket.as_deref(), api_token.as_deref(), is_upload, now);
        match result {
            Ok(u) => auth_user = Some(u),
            Err(msg) => {
                let delay = sim.config.auth_failure_delay;
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                tracing::info!(path = %rel, reason = %msg, "authentication failure");
                return error_response(Format::Json, &PveError::Unauthorized(msg));
            }
        }
    }

    let content_length: usize = header_str(&req, "content-length").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    if content_length > 0 && !(method == Method::PUT || method == Method::POST) {
        return plain_error(501, &format!("Unexpected content for method '{method}'"));
    }
    let ctype = header_str(&req, "content-type").unwrap_or("").to_string();
    if is_upload && !ctype.to_ascii_lowercase().starts_with("multipart/form-data") {
        return plain_error(500, &format!("upload 'Content-Type '{ctype}' not implemented"));
    }
    if !is_upload && content_length > MAX_POST {
        return plain_error(501, "for data too large");
    }

    let format = match format_name.as_str() {
        "json" => Format::Json,
        "extjs" => Format::Extjs,
        other => return plain_error(501, &format!("no formatter for uri {rel}, {other}")),
    };

    sim.count_request();
    let (latency, injected) = sim.faults.on_request(&format!("{method} {path}"));
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(e) = injected {
        let err = if e.status == 595 || e.status == 596 {
            PveError::Proxy(e.status, e.message)
        } else {
            PveError::Status(e.status, e.message)
        };
        return error_response(format, &err);
    }

    let upgrade = if method == Method::GET && req.headers().contains_key(header::UPGRADE) {
        Some(hyper::upgrade::on(&mut req))
    } else {
        None
    };
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().clone();

    // Parameters: body (form or JSON), then the query string over it.
    let mut raw: HashMap<String, RawValue> = HashMap::new();
    let mut upload = None;
    if is_upload {
        let q = decode_urlencoded(&query);
        if q.iter().any(|(k, _)| k == "tmpfilename") {
            return error_response(
                format,
                &PveError::handler("'tmpfilename' query parameter is not allowed for file uploads"),
            );
        }
        raw.extend(q);
        match read_multipart(req.into_body(), &ctype, &mut raw).await {
            Ok(info) => upload = Some(info),
            Err(msg) => return error_response(format, &PveError::handler(msg)),
        }
    } else {
        if method == Method::POST || method == Method::PUT {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::new(),
            };
            if !body.is_empty() {
                if ctype.to_ascii_lowercase().starts_with("application/json") {
                    match serde_json::from_slice::<Value>(&body) {
                        Ok(Value::Object(m)) => raw.extend(m.into_iter().map(|(k, v)| (k, RawValue::Json(v)))),
                        Ok(_) => {}
                        Err(e) => {
                            return error_response(format, &PveError::handler(format!("malformed JSON string: {e}")));
                        }
                    }
                } else {
                    raw.extend(decode_urlencoded(&String::from_utf8_lossy(&body)));
                }
            }
        }
        raw.extend(decode_urlencoded(&query));
    }
    raw.remove("_dc");

    let Some(matched) = sim.routes.find(&method, &rel) else {
        return error_response(format, &PveError::NotImplemented(format!("Method '{method} {rel}' not implemented")));
    };
    let endpoint = matched.endpoint;
    let mut conflicts = std::collections::BTreeMap::new();
    for (name, value) in &matched.params {
        if let Some(given) = raw.get(name)
            && given.as_string() != *value
        {
            conflicts.insert(
                name.clone(),
                "duplicate parameter (already defined in URI) with conflicting values!".to_string(),
            );
        }
    }
    if !conflicts.is_empty() {
        return error_response(format, &PveError::Param(conflicts));
    }
    for (name, value) in &matched.params {
        raw.insert(name.clone(), RawValue::Str(value.clone()));
    }
    if let Some(u) = &auth_user {
        if u.tokenid.is_some() && !endpoint.allowtoken && api_token.is_some() {
            return error_response(
                format,
                &PveError::Forbidden(format!("URI '{rel}' not available with API token, need proper ticket.")),
            );
        }
    } else if api_token.is_some() && !endpoint.allowtoken {
        return error_response(
            format,
            &PveError::Forbidden(format!("URI '{rel}' not available with API token, need proper ticket.")),
        );
    }
    if endpoint.proxy
        && let Some((_, node)) = matched.params.iter().find(|(n, _)| n == "node")
        && node != "localhost"
    {
        if !sim.read().nodes.contains_key(node.as_str()) {
            return error_response(format, &PveError::handler(format!("no such cluster node '{node}'")));
        }
        if sim.faults.is_node_down(node) {
            return error_response(format, &PveError::node_unreachable());
        }
    }
    let params = match endpoint.schema.validate(raw) {
        Ok(p) => p,
        Err(e) => return error_response(format, &e),
    };
    let cx = Ctx {
        sim: sim.clone(),
        auth: auth_user,
        method: method.clone(),
        rel_path: rel.clone(),
        headers,
        total: Default::default(),
        upgrade: parking_lot::Mutex::new(upgrade),
        upload,
    };
    let result = match &endpoint.handler {
        Handler::Sync(f) => {
            let r = f(&cx, &params);
            let total = *cx.total.lock();
            r.map(|data| Reply::Data { data, total })
        }
        Handler::SyncReply(f) => {
            let r = f(&cx, &params);
            let total = *cx.total.lock();
            r.map(|reply| match reply {
                Reply::Data { data, total: t } => Reply::Data { data, total: t.or(total) },
                Reply::Json { json, total: t } => Reply::Json { json, total: t.or(total) },
                other => other,
            })
        }
        Handler::Async(f) => f(cx, params).await,
    };
    match result {
        Ok(Reply::Data { data, total }) => ok_response(format, data, total),
        Ok(Reply::Json { json, total }) => ok_serialized(format, json, total),
        Ok(Reply::Raw(resp)) => resp,
        Err(e) => {
            if e.status() == 401 && !sim.config.auth_failure_delay.is_zero() {
                tokio::time::sleep(sim.config.auth_failure_delay).await;
            }
            if e.status() >= 500 {
                tracing::debug!(%method, path = %rel, error = %e.message(), "handler error");
            }
            error_response(format, &e)
        }
    }
}

fn is_upload_path(rel: &str) -> bool {
    let segs: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
    segs.len() == 5 && segs[0] == "nodes" && segs[2] == "storage" && segs[4] == "upload"
}

/// `^/api2/+([a-z][a-z0-9]+)(/.*)?$` → (format, rel_uri).
fn split_abs_uri(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/api2/")?;
    let rest = rest.trim_start_matches('/');
    let (format, rel) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut chars = format.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !first_ok || format.len() < 2 || !format.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return None;
    }
    Some((format.to_string(), rel.to_string()))
}

fn authenticate(
    sim: &Sim,
    req: &Request<Incoming>,
    ticket: Option<&str>,
    api_token: Option<&str>,
    is_upload: bool,
    now: i64,
) -> Result<AuthUser, String> {
    let st = sim.read();
    if let Some(token) = api_token {
        return auth::verify_token(&st, token, now).ok_or_else(|| "Authentication failed!".to_string());
    }
    let Some(ticket) = ticket else { return Err("No ticket".into()) };
    let userid = auth::verify_ticket(&st.auth_key, ticket, now).ok_or("Authentication failed!")?;
    match st.users.get(&userid) {
        Some(u) if u.enable => {}
        _ => return Err("Authentication failed!".into()),
    }
    if req.method() != Method::GET && !is_upload {
        let csrf = header_str(req, "csrfpreventiontoken").unwrap_or("");
        if !auth::verify_csrf(&st.auth_key, &userid, csrf, now) {
            return Err("Permission denied - invalid csrf token".into());
        }
    }
    Ok(AuthUser { userid, tokenid: None, ticket: true })
}

/// Collects a request body up to `limit` bytes (for the control API).
pub(crate) async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, String> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if buf.len() + chunk.len() > limit {
            return Err("body too large".into());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// JSON helpers for non-API answers (the fault control endpoint).
pub(crate) fn json_ok(data: Value) -> Response<Body> {
    ok_response(Format::Json, data, None)
}

pub(crate) fn json_err(err: &PveError) -> Response<Body> {
    error_response(Format::Json, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoded_decoding_follows_pve() {
        let d = decode_urlencoded("a=1&b=x+y;c=%41%3D&a=2&flag&e=p=q");
        let get = |k: &str| d.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("a"), Some(RawValue::Json(json!(["1", "2"]))));
        assert_eq!(get("b"), Some(RawValue::Str("x y".into())));
        assert_eq!(get("c"), Some(RawValue::Str("A=".into())));
        assert_eq!(get("flag"), None);
        assert_eq!(get("e"), Some(RawValue::Str("p".into())));
    }

    #[test]
    fn abs_uri_split() {
        assert_eq!(split_abs_uri("/api2/json/version"), Some(("json".into(), "/version".into())));
        assert_eq!(split_abs_uri("/api2/json"), Some(("json".into(), "/".into())));
        assert_eq!(split_abs_uri("/api2//extjs/nodes"), Some(("extjs".into(), "/nodes".into())));
        assert_eq!(split_abs_uri("/api2/"), None);
        assert_eq!(split_abs_uri("/foo"), None);
        assert!(is_upload_path("/nodes/pve1/storage/local/upload"));
        assert!(!is_upload_path("/nodes/pve1/storage/local/content"));
    }
}
