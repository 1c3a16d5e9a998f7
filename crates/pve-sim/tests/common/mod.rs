//! Shared helpers of the simulator's integration tests: start a simulator on a free port and
//! talk to it with reqwest (accepting its self-signed certificate: these tests only ever talk
//! to the simulator).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use pve_sim::{RunningSim, SimConfig};
use serde_json::Value;

/// A started simulator and a client for it.
pub struct Api {
    pub sim: RunningSim,
    pub http: reqwest::Client,
    pub base: String,
    pub auth: String,
}

/// A response: status, parsed body (Null when not JSON) and raw text.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    /// `body["data"]`.
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
    /// `body["errors"][name]` as str.
    pub fn error(&self, name: &str) -> &str {
        self.body["errors"][name].as_str().unwrap_or("")
    }
    /// `body["message"]` as str.
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
}

/// A reqwest client that accepts the simulator's self-signed certificate.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().danger_accept_invalid_certs(true).build().expect("client")
}

impl Api {
    /// A simulator with `SimConfig::for_tests()`.
    pub async fn start() -> Api {
        Api::with(SimConfig::for_tests()).await
    }

    /// A simulator with the given config.
    pub async fn with(config: SimConfig) -> Api {
        let sim = pve_sim::start(config, "127.0.0.1:0".parse().unwrap()).await.expect("simulator starts");
        let base = format!("{}/api2/json", sim.base_url());
        let auth = sim.auth_header();
        Api { sim, http: client(), base, auth }
    }

    /// Sends a request with the default token; `form` goes in the body for POST/PUT and in
    /// the query string otherwise.
    pub async fn req(&self, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> Resp {
        self.req_as(method, path, form, Some(&self.auth)).await
    }

    /// Like `req` with an explicit Authorization header (None: no header).
    pub async fn req_as(&self, method: reqwest::Method, path: &str, form: &[(&str, &str)], auth: Option<&str>) -> Resp {
        let url = format!("{}{}", self.base, path);
        let mut rb = self.http.request(method.clone(), &url);
        if let Some(a) = auth {
            rb = rb.header("Authorization", a);
        }
        rb = if method == reqwest::Method::POST || method == reqwest::Method::PUT {
            rb.form(form)
        } else {
            rb.query(form)
        };
        into_resp(rb.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.req(reqwest::Method::GET, path, &[]).await
    }
    pub async fn get_q(&self, path: &str, q: &[(&str, &str)]) -> Resp {
        self.req(reqwest::Method::GET, path, q).await
    }
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Resp {
        self.req(reqwest::Method::POST, path, form).await
    }
    pub async fn put(&self, path: &str, form: &[(&str, &str)]) -> Resp {
        self.req(reqwest::Method::PUT, path, form).await
    }
    pub async fn delete(&self, path: &str, q: &[(&str, &str)]) -> Resp {
        self.req(reqwest::Method::DELETE, path, q).await
    }

    /// Sends a multipart POST (storage uploads) with the default token.
    pub async fn multipart(&self, path: &str, form: reqwest::multipart::Form) -> Resp {
        let url = format!("{}{}", self.base, path);
        let rb = self.http.post(url).header("Authorization", &self.auth).multipart(form);
        into_resp(rb.send().await.expect("request sent")).await
    }

    /// Polls a task until it stopped; returns its final status object.
    pub async fn wait_task(&self, upid: &str) -> Value {
        let node = upid.split(':').nth(1).expect("upid node").to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.get(&format!("/nodes/{node}/tasks/{}/status", enc(upid))).await;
            assert_eq!(r.status, 200, "task status: {}", r.text);
            if r.data()["status"] == "stopped" {
                return r.data().clone();
            }
            assert!(Instant::now() < deadline, "task {upid} did not finish");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The task log lines.
    pub async fn task_log(&self, upid: &str) -> Vec<String> {
        let node = upid.split(':').nth(1).expect("upid node");
        let r = self.get_q(&format!("/nodes/{node}/tasks/{}/log", enc(upid)), &[("limit", "0")]).await;
        r.data().as_array().unwrap().iter().map(|l| l["t"].as_str().unwrap().to_string()).collect()
    }
}

/// Waits for the task a response started and asserts it ended `OK`; returns its status.
pub async fn ok_task(api: &Api, r: &Resp) -> Value {
    assert_eq!(r.status, 200, "{}", r.text);
    let upid = r.data().as_str().expect("a UPID").to_string();
    let st = api.wait_task(&upid).await;
    assert_eq!(st["exitstatus"], "OK", "{st} {:?}", api.task_log(&upid).await);
    st
}

/// Waits for the task a response started; returns its exit status.
pub async fn task_error(api: &Api, r: &Resp) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    let st = api.wait_task(r.data().as_str().expect("a UPID")).await;
    st["exitstatus"].as_str().expect("an exit status").to_string()
}

/// Percent-encodes a path segment (UPIDs and volids contain `:`, `!`, `/`, `@`).
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub async fn into_resp(resp: reqwest::Response) -> Resp {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp { status, body, text, headers }
}

/// A raw HTTP/1.1 exchange over plain TCP: returns (status line, headers+body text).
pub async fn raw_http(addr: std::net::SocketAddr, request: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (line, rest) = text.split_once("\r\n").unwrap_or((&text, ""));
    (line.to_string(), rest.to_string())
}

/// The UPID regex of pve-common.
pub fn upid_re() -> regex::Regex {
    regex::Regex::new(
        r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$",
    )
    .unwrap()
}
