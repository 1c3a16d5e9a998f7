//! `/_sim/faults`: the fault-injection control API outside PVE's namespace
//! (`GET` lists, `POST` adds one fault, `DELETE` clears), authenticated with an API token.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use crate::auth;
use crate::error::PveError;
use crate::server::{json_err, json_ok, read_body};
use crate::sim::Sim;

/// A fault to add, as `POST /_sim/faults` takes it.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FaultRequest {
    /// `{"type":"error","pattern":"...","rate":0.5,"status":500,"message":"..."}`
    Error { pattern: String, rate: f64, status: Option<u16>, message: Option<String> },
    /// `{"type":"latency","pattern":"...","latency_ms":200}`
    Latency { pattern: String, latency_ms: u64 },
    /// `{"type":"node_down","node":"pve2","down":true}`
    NodeDown { node: String, down: Option<bool> },
    /// `{"type":"fail_next_task","task_type":"qmclone","message":"..."}`
    FailNextTask { task_type: String, message: Option<String> },
}

/// Handles a control request.
pub async fn handle(sim: &Arc<Sim>, req: Request<Incoming>) -> Response<Body> {
    let authz = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let ok = auth::extract_auth_value(authz, "PVEAPIToken")
        .is_some_and(|t| auth::verify_token(&sim.read(), &t, crate::util::now()).is_some());
    if !ok {
        if !sim.config.auth_failure_delay.is_zero() {
            tokio::time::sleep(sim.config.auth_failure_delay).await;
        }
        return json_err(&PveError::Unauthorized("No ticket".into()));
    }
    let faults = &sim.faults;
    match *req.method() {
        Method::GET => json_ok(json!(faults.snapshot())),
        Method::DELETE => {
            faults.clear();
            json_ok(json!(null))
        }
        Method::POST => {
            let body = match read_body(req.into_body(), 64 * 1024).await {
                Ok(b) => b,
                Err(e) => return json_err(&PveError::Status(400, e)),
            };
            let fault: FaultRequest = match serde_json::from_slice(&body) {
                Ok(f) => f,
                Err(e) => return json_err(&PveError::Status(400, format!("invalid fault: {e}"))),
            };
            match fault {
                FaultRequest::Error { pattern, rate, status, message } => {
                    let status = status.unwrap_or(500);
                    let message = message.unwrap_or_else(|| "injected failure".into());
                    faults.add_error(&pattern, rate, status, &message);
                }
                FaultRequest::Latency { pattern, latency_ms } => {
                    faults.add_latency(&pattern, Duration::from_millis(latency_ms));
                }
                FaultRequest::NodeDown { node, down } => faults.set_node_down(&node, down.unwrap_or(true)),
                FaultRequest::FailNextTask { task_type, message } => {
                    faults.fail_next_task(&task_type, message.as_deref().unwrap_or("injected task failure"));
                }
            }
            json_ok(json!(faults.snapshot()))
        }
        _ => json_err(&PveError::NotImplemented(format!("Method '{} /_sim/faults' not implemented", req.method()))),
    }
}
