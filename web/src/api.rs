//! The client of the API (`/v1`, same origin): every answer is unwrapped from the envelope of
//! DESIGN §6, every failure becomes a [`Failure`] carrying the API's code, message and request
//! id, so pages can show exactly what the API said. A 401 marks the session expired.

use gloo_net::http::{Request, RequestBuilder};
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
        "PATCH" => Request::patch(path),
        _ => Request::get(path),
    };
    let b = b.header("Accept", "application/json");
    session.authorize(b, method != "GET")
}

/// A response read to its end: the status, the body and the `X-Request-ID` header.
struct Answer {
    status: u16,
    text: String,
    request_id: Option<String>,
}

/// Sends a request and reads its answer. Not generic, so each type a page reads adds only its
/// own decoding to the wasm, not another copy of the request path.
async fn send(
    method: &'static str,
    path: &str,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> Result<Answer, Failure> {
    let mut b = builder(method, path);
    for (k, v) in headers {
        b = b.header(k, v);
    }
    let request = match body {
        Some(body) => b.header("Content-Type", "application/json").body(body).map_err(Failure::network)?,
        None => b.build().map_err(Failure::network)?,
    };
    let response = request.send().await.map_err(Failure::network)?;
    let status = response.status();
    let request_id = response.headers().get("x-request-id");
    if status == 401 {
        Session::get().expire();
    }
    let text = response.text().await.map_err(Failure::network)?;
    Ok(Answer { status, text, request_id })
}

/// The failure an unsuccessful answer describes. The error is read as a JSON value: a code this
/// portal does not know yet is shown as the API wrote it.
fn failure(answer: Answer) -> Failure {
    let Answer { status, text, request_id } = answer;
    let e = serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default();
    let Some(message) = e["error"]["message"].as_str() else {
        return Failure {
            status,
            code: format!("HTTP_{status}"),
            message: format!("the API answered {status}"),
            request_id,
            fields: Vec::new(),
        };
    };
    let fields = e["error"]["details"]["fields"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| format!("{}: {}", f["field"].as_str().unwrap_or("?"), f["message"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    Failure {
        status,
        code: e["error"]["code"].as_str().unwrap_or("ERROR").to_owned(),
        message: message.to_owned(),
        request_id: e["meta"]["requestId"].as_str().map(str::to_owned).or(request_id),
        fields,
    }
}

/// Decodes a successful answer as `T`, or describes the failure.
fn decode<T: DeserializeOwned>(answer: Answer) -> Result<T, Failure> {
    if !(200..300).contains(&answer.status) {
        return Err(failure(answer));
    }
    serde_json::from_str(&answer.text).map_err(|e| Failure {
        status: answer.status,
        code: "UNEXPECTED_ANSWER".into(),
        message: format!("the API's answer could not be read: {e}"),
        request_id: answer.request_id,
        fields: Vec::new(),
    })
}

/// `GET path` → `data`.
pub async fn get<T: DeserializeOwned>(path: &str) -> Result<T, Failure> {
    decode::<ApiResponse<T>>(send("GET", path, None, &[]).await?).map(|r| r.data)
}

/// `GET path` → the list's `data` and its total.
pub async fn list<T: DeserializeOwned>(path: &str) -> Result<(Vec<T>, u64), Failure> {
    decode::<ListResponse<T>>(send("GET", path, None, &[]).await?).map(|r| (r.data, r.pagination.total))
}

/// `POST path` with a JSON body (or none) → `data`.
pub async fn post<B: Serialize, T: DeserializeOwned>(
    path: &str,
    body: Option<&B>,
    headers: &[(&str, &str)],
) -> Result<T, Failure> {
    let body = body.map(serde_json::to_string).transpose().map_err(Failure::network)?;
    decode::<ApiResponse<T>>(send("POST", path, body, headers).await?).map(|r| r.data)
}

/// `PUT path` with a JSON body → `data`.
pub async fn put<T: DeserializeOwned>(path: &str, body: &serde_json::Value) -> Result<T, Failure> {
    let body = serde_json::to_string(body).map_err(Failure::network)?;
    decode::<ApiResponse<T>>(send("PUT", path, Some(body), &[]).await?).map(|r| r.data)
}

/// `DELETE path`, answered `204 No Content`.
pub async fn delete(path: &str) -> Result<(), Failure> {
    let answer = send("DELETE", path, None, &[]).await?;
    if answer.status == 204 { Ok(()) } else { decode::<serde_json::Value>(answer).map(|_| ()) }
}

/// `DELETE path` answered with a body (`202` and a job handle) → `data`.
pub async fn delete_accepted<T: DeserializeOwned>(path: &str) -> Result<T, Failure> {
    decode::<ApiResponse<T>>(send("DELETE", path, None, &[]).await?).map(|r| r.data)
}

/// `method path` with an optional JSON body, for actions whose answer may have no body (`204`)
/// → `data`, or `null` without one. Not generic: the webhook and notification pages send every
/// change through it.
pub async fn act(
    method: &'static str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<serde_json::Value, Failure> {
    let answer = send(method, path, body.map(|b| serde_json::to_string(b).unwrap_or_default()), &[]).await?;
    if (200..300).contains(&answer.status) && answer.text.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    decode::<ApiResponse<serde_json::Value>>(answer).map(|r| r.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, text: &str) -> Answer {
        Answer { status, text: text.to_owned(), request_id: Some("header-rid".into()) }
    }

    #[test]
    fn a_failure_says_what_the_api_said() {
        let f = failure(answer(
            400,
            r#"{"error": {"code": "VALIDATION_FAILED", "message": "The request is invalid.",
                "details": {"fields": [{"field": "url", "message": "must be an http(s) URL"}]}},
                "meta": {"requestId": "rid-1", "timestamp": "2026-12-06T10:00:00Z"}}"#,
        ));
        assert_eq!(
            (f.status, f.code.as_str(), f.message.as_str()),
            (400, "VALIDATION_FAILED", "The request is invalid.")
        );
        assert_eq!(f.request_id.as_deref(), Some("rid-1"));
        assert_eq!(f.fields, ["url: must be an http(s) URL"]);
        let unknown = failure(answer(409, r#"{"error": {"code": "SOMETHING_NEW", "message": "no", "details": null}}"#));
        assert_eq!((unknown.code.as_str(), unknown.request_id.as_deref()), ("SOMETHING_NEW", Some("header-rid")));
        let bare = failure(answer(502, "Bad Gateway"));
        assert_eq!((bare.code.as_str(), bare.message.as_str()), ("HTTP_502", "the API answered 502"));
    }
}
