//! The client of the API (`/v1`, same origin): every answer is unwrapped from the envelope of
//! DESIGN §6, every failure becomes a [`Failure`] carrying the API's code, message and request
//! id, so pages can show exactly what the API said. A 401 marks the session expired.

use gloo_net::http::{Request, RequestBuilder, Response};
use nimbus_domain::{ApiResponse, ListResponse};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::session::Session;

/// A request that did not succeed, as the user is told about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// HTTP status (0 when the API could not be reached).
    pub status: u16,
    /// The API's stable error code (`QUOTA_EXCEEDED`, ...).
    pub code: String,
    /// The API's message.
    pub message: String,
    /// `meta.requestId` (or the `X-Request-ID` header), for support.
    pub request_id: Option<String>,
    /// Per-field problems of a 400 (`details.fields`), `field: message`.
    pub fields: Vec<String>,
}

impl Failure {
    fn network(e: impl std::fmt::Display) -> Failure {
        Failure {
            status: 0,
            code: "NETWORK".into(),
            message: format!("the API could not be reached ({e})"),
            request_id: None,
            fields: Vec::new(),
        }
    }
}

fn builder(method: &str, path: &str) -> RequestBuilder {
    let session = Session::get();
    let b = match method {
        "POST" => Request::post(path),
        "DELETE" => Request::delete(path),
        "PUT" => Request::put(path),
        _ => Request::get(path),
    };
    let b = b.header("Accept", "application/json");
    session.authorize(b, method != "GET")
}

async fn read<T: DeserializeOwned>(response: Response) -> Result<T, Failure> {
    let status = response.status();
    let header_rid = response.headers().get("x-request-id");
    if status == 401 {
        Session::get().expire();
    }
    let text = response.text().await.map_err(Failure::network)?;
    if (200..300).contains(&status) {
        return serde_json::from_str(&text).map_err(|e| Failure {
            status,
            code: "UNEXPECTED_ANSWER".into(),
            message: format!("the API's answer could not be read: {e}"),
            request_id: header_rid,
            fields: Vec::new(),
        });
    }
    match serde_json::from_str::<nimbus_domain::ApiError>(&text) {
        Ok(e) => {
            let code = serde_json::to_value(e.error.code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "ERROR".into());
            let fields = e.error.details["fields"]
                .as_array()
                .map(|fs| {
                    fs.iter()
                        .map(|f| {
                            format!("{}: {}", f["field"].as_str().unwrap_or("?"), f["message"].as_str().unwrap_or(""))
                        })
                        .collect()
                })
                .unwrap_or_default();
            Err(Failure { status, code, message: e.error.message, request_id: Some(e.meta.request_id), fields })
        }
        Err(_) => Err(Failure {
            status,
            code: format!("HTTP_{status}"),
            message: format!("the API answered {status}"),
            request_id: header_rid,
            fields: Vec::new(),
        }),
    }
}

/// `GET path` → `data`.
pub async fn get<T: DeserializeOwned>(path: &str) -> Result<T, Failure> {
    let response = builder("GET", path).send().await.map_err(Failure::network)?;
    read::<ApiResponse<T>>(response).await.map(|r| r.data)
}

/// `GET path` → the list's `data` and its total.
pub async fn list<T: DeserializeOwned>(path: &str) -> Result<(Vec<T>, u64), Failure> {
    let response = builder("GET", path).send().await.map_err(Failure::network)?;
    read::<ListResponse<T>>(response).await.map(|r| (r.data, r.pagination.total))
}

/// `POST path` with a JSON body (or none) → `data`.
pub async fn post<B: Serialize, T: DeserializeOwned>(
    path: &str,
    body: Option<&B>,
    headers: &[(&str, &str)],
) -> Result<T, Failure> {
    let mut b = builder("POST", path);
    for (k, v) in headers {
        b = b.header(k, v);
    }
    let request = match body {
        Some(body) => b.json(body).map_err(Failure::network)?,
        None => b.build().map_err(Failure::network)?,
    };
    let response = request.send().await.map_err(Failure::network)?;
    read::<ApiResponse<T>>(response).await.map(|r| r.data)
}

/// `DELETE path`, answered `204 No Content`.
pub async fn delete(path: &str) -> Result<(), Failure> {
    let response = builder("DELETE", path).send().await.map_err(Failure::network)?;
    if response.status() == 204 { Ok(()) } else { read::<serde_json::Value>(response).await.map(|_| ()) }
}
