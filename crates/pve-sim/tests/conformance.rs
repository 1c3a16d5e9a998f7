//! Conformance of the simulator with the real PVE 8.4 API schema.
//!
//! The schema is read from `../shared/pve/pve-api-subset.json` beside the checkout (or the folder named by
//! `PVE_SCHEMA_DIR`); it is reference data and never copied into this repository. Where it is absent (a
//! user's clone), the test says so and skips.
//!
//! For every endpoint of the reseller subset that the simulator implements:
//! - every parameter the schema declares is declared by the simulator too: a request carrying it is never
//!   answered "property is not defined in schema", and a schema-valid value passes validation;
//! - every required parameter is enforced ("property is missing and it is not optional");
//! - a parameter the schema does not know is refused, as PVE refuses it;
//! - a baseline call with valid parameters answers with data of the shape the schema's `returns` declares
//!   (type, required properties, property types, enums).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};

/// Texts of PVE's schema validator (pve-common `JSONSchema.pm`): a schema-valid value must trigger none.
const VALIDATOR_TEXTS: &[&str] = &[
    "property is not defined in schema",
    "type check",
    "invalid format",
    "does not have a value in the enumeration",
    "value must have a minimum value",
    "value may only be",
    "does not match the regex pattern",
    "value must be at most",
    "value length",
];

/// Endpoints the simulator must implement: everything the Nimbus client calls.
const REQUIRED: &[&str] = &[
    "GET /version",
    "GET /cluster/resources",
    "GET /cluster/nextid",
    "GET /cluster/tasks",
    "GET /nodes",
    "GET /nodes/{node}/status",
    "GET /nodes/{node}/rrddata",
    "GET /nodes/{node}/qemu",
    "POST /nodes/{node}/qemu",
    "DELETE /nodes/{node}/qemu/{vmid}",
    "GET /nodes/{node}/qemu/{vmid}/config",
    "POST /nodes/{node}/qemu/{vmid}/config",
    "PUT /nodes/{node}/qemu/{vmid}/config",
    "GET /nodes/{node}/qemu/{vmid}/status/current",
    "POST /nodes/{node}/qemu/{vmid}/status/start",
    "POST /nodes/{node}/qemu/{vmid}/status/stop",
    "POST /nodes/{node}/qemu/{vmid}/status/shutdown",
    "POST /nodes/{node}/qemu/{vmid}/status/reboot",
    "POST /nodes/{node}/qemu/{vmid}/status/suspend",
    "POST /nodes/{node}/qemu/{vmid}/status/resume",
    "POST /nodes/{node}/qemu/{vmid}/clone",
    "PUT /nodes/{node}/qemu/{vmid}/resize",
    "GET /nodes/{node}/qemu/{vmid}/snapshot",
    "POST /nodes/{node}/qemu/{vmid}/snapshot",
    "DELETE /nodes/{node}/qemu/{vmid}/snapshot/{snapname}",
    "POST /nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback",
    "GET /nodes/{node}/qemu/{vmid}/rrddata",
    "POST /nodes/{node}/qemu/{vmid}/vncproxy",
    "GET /nodes/{node}/qemu/{vmid}/firewall/rules",
    "POST /nodes/{node}/qemu/{vmid}/firewall/rules",
    "DELETE /nodes/{node}/qemu/{vmid}/firewall/rules/{pos}",
    "GET /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
    "GET /nodes/{node}/lxc",
    "POST /nodes/{node}/lxc",
    "DELETE /nodes/{node}/lxc/{vmid}",
    "GET /nodes/{node}/lxc/{vmid}/config",
    "PUT /nodes/{node}/lxc/{vmid}/config",
    "GET /nodes/{node}/lxc/{vmid}/status/current",
    "POST /nodes/{node}/lxc/{vmid}/status/start",
    "POST /nodes/{node}/lxc/{vmid}/status/stop",
    "POST /nodes/{node}/lxc/{vmid}/status/shutdown",
    "POST /nodes/{node}/lxc/{vmid}/status/reboot",
    "POST /nodes/{node}/lxc/{vmid}/status/suspend",
    "POST /nodes/{node}/lxc/{vmid}/status/resume",
    "POST /nodes/{node}/lxc/{vmid}/clone",
    "PUT /nodes/{node}/lxc/{vmid}/resize",
    "GET /nodes/{node}/lxc/{vmid}/snapshot",
    "POST /nodes/{node}/lxc/{vmid}/snapshot",
    "DELETE /nodes/{node}/lxc/{vmid}/snapshot/{snapname}",
    "POST /nodes/{node}/lxc/{vmid}/snapshot/{snapname}/rollback",
    "GET /nodes/{node}/lxc/{vmid}/rrddata",
    "POST /nodes/{node}/lxc/{vmid}/termproxy",
    "GET /nodes/{node}/lxc/{vmid}/interfaces",
    "POST /nodes/{node}/vzdump",
    "GET /nodes/{node}/storage",
    "GET /nodes/{node}/storage/{storage}/content",
    "DELETE /nodes/{node}/storage/{storage}/content/{volume}",
    "POST /nodes/{node}/storage/{storage}/upload",
    "POST /nodes/{node}/storage/{storage}/download-url",
    "GET /nodes/{node}/tasks",
    "GET /nodes/{node}/tasks/{upid}/status",
    "GET /nodes/{node}/tasks/{upid}/log",
    "GET /pools",
    "POST /pools",
];

fn schema_file() -> Option<PathBuf> {
    let dir = std::env::var_os("PVE_SCHEMA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/pve"));
    let file = dir.join("pve-api-subset.json");
    file.is_file().then_some(file)
}

struct Endpoint {
    method: String,
    path: String,
    params: Vec<Value>,
    additional_properties: bool,
    returns: Value,
}

impl Endpoint {
    fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
    fn non_path_params(&self) -> impl Iterator<Item = &Value> {
        self.params.iter().filter(|p| p["in"] != "path")
    }
}

fn load_endpoints(file: &PathBuf) -> Vec<Endpoint> {
    let doc: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    doc["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| Endpoint {
            method: e["method"].as_str().unwrap().to_string(),
            path: e["path"].as_str().unwrap().to_string(),
            params: e["parameters"].as_array().cloned().unwrap_or_default(),
            additional_properties: e["parameters_additionalProperties"].as_i64() == Some(1),
            returns: e["returns"].clone(),
        })
        .collect()
}

/// A thin HTTP helper: form-encoded requests with the simulator's token, answers as (status, body).
struct Api {
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl Api {
    async fn call(&self, method: &str, path: &str, params: &[(String, String)]) -> (u16, Value) {
        let url = format!("{}/api2/json{}", self.base, path);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let req = self.http.request(method.clone(), &url).header("Authorization", &self.auth);
        let req = if method == reqwest::Method::GET || method == reqwest::Method::DELETE {
            req.query(params)
        } else if path.ends_with("/upload") {
            // Uploads are multipart (FACTS §1.8): the file travels as the part named `filename`.
            let mut form = reqwest::multipart::Form::new();
            for (name, value) in params {
                form = if name == "filename" {
                    let file = reqwest::multipart::Part::bytes(b"conformance".to_vec()).file_name(value.clone());
                    form.part("filename", file)
                } else {
                    form.text(name.clone(), value.clone())
                };
            }
            req.multipart(form)
        } else {
            req.form(params)
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn ok(&self, method: &str, path: &str, params: &[(&str, &str)]) -> Value {
        let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (status, body) = self.call(method, path, &params).await;
        assert_eq!(status, 200, "{method} {path} {params:?}: {body}");
        body["data"].clone()
    }
}

/// Fresh objects the path parameters of one endpoint refer to.
struct Fixtures {
    next_vmid: u32,
    next_snap: u32,
    /// A finished node-level task (a backup of the first template), for `{upid}` outside guest paths.
    node_task: Option<String>,
}

impl Fixtures {
    fn vmid(&mut self) -> u32 {
        self.next_vmid += 1;
        self.next_vmid
    }

    /// Values for `{node}`, `{vmid}`, `{snapname}`, ... in `path`, creating a fresh guest (with a snapshot and
    /// a firewall rule) and a task when the path needs them, so destructive endpoints never share fixtures.
    async fn path_values(&mut self, api: &Api, method: &str, path: &str) -> BTreeMap<&'static str, String> {
        let mut values = BTreeMap::new();
        values.insert("node", "pve1".to_string());
        values.insert("storage", "local".to_string());
        values.insert("volume", "local:iso/debian-12.9.0-amd64-netinst.iso".to_string());
        values.insert("userid", "root@pam".to_string());
        if path.contains("{tokenid}") {
            // Never the token this test authenticates with: DELETE would lock the test out.
            self.next_snap += 1;
            let token = format!("probe{}", self.next_snap);
            if method != "POST" {
                api.ok("POST", &format!("/access/users/root@pam/token/{token}"), &[("privsep", "0")]).await;
            }
            values.insert("tokenid", token);
        }
        values.insert("pos", "0".to_string());
        if path.contains("{vmid}") {
            let kind = if path.contains("/lxc/") { "lxc" } else { "qemu" };
            let vmid = self.vmid();
            let vmid_s = vmid.to_string();
            let upid = if kind == "qemu" {
                api.ok(
                    "POST",
                    "/nodes/pve1/qemu",
                    &[("vmid", &vmid_s), ("name", "conf"), ("scsi0", "local-lvm:1"), ("agent", "1")],
                )
                .await
            } else {
                api.ok(
                    "POST",
                    "/nodes/pve1/lxc",
                    &[
                        ("vmid", &vmid_s),
                        ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
                        ("rootfs", "local-lvm:1"),
                    ],
                )
                .await
            };
            wait_task(api, upid.as_str().unwrap()).await;
            self.next_snap += 1;
            let snap = format!("snap{}", self.next_snap);
            let upid = api.ok("POST", &format!("/nodes/pve1/{kind}/{vmid}/snapshot"), &[("snapname", &snap)]).await;
            wait_task(api, upid.as_str().unwrap()).await;
            api.ok(
                "POST",
                &format!("/nodes/pve1/{kind}/{vmid}/firewall/rules"),
                &[("action", "ACCEPT"), ("type", "in")],
            )
            .await;
            if path.contains("/agent") || path.contains("/interfaces") {
                // The guest agent and container interfaces only answer for a running guest.
                let upid = api.ok("POST", &format!("/nodes/pve1/{kind}/{vmid}/status/start"), &[]).await;
                wait_task(api, upid.as_str().unwrap()).await;
            }
            values.insert("vmid", vmid_s);
            values.insert("snapname", snap);
            values.insert("upid", upid.as_str().unwrap().to_string());
        } else {
            if self.node_task.is_none() {
                let upid = api.ok("POST", "/nodes/pve1/vzdump", &[("vmid", "9000"), ("storage", "local")]).await;
                wait_task(api, upid.as_str().unwrap()).await;
                self.node_task = upid.as_str().map(str::to_string);
            }
            values.insert("upid", self.node_task.clone().unwrap());
        }
        values.insert("poolid", "conformance".to_string());
        values
    }
}

async fn wait_task(api: &Api, upid: &str) {
    let node = upid.split(':').nth(1).unwrap();
    for _ in 0..500 {
        let status = api.ok("GET", &format!("/nodes/{node}/tasks/{upid}/status"), &[]).await;
        if status["status"] == "stopped" {
            assert_eq!(status["exitstatus"], "OK", "fixture task {upid} failed: {status}");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("fixture task {upid} did not finish");
}

fn fill_path(path: &str, values: &BTreeMap<&'static str, String>) -> String {
    let mut out = path.to_string();
    for (name, value) in values {
        let encoded: String = url_escape(value);
        out = out.replace(&format!("{{{name}}}"), &encoded);
    }
    out
}

fn url_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'@' | b'!' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A schema-valid example for one parameter. Property strings and PVE formats that a generic generator
/// cannot build get hand-written examples, keyed by the parameter's name.
fn example_value(param: &Value, fresh_vmid: u32) -> Option<String> {
    let name = param["name"].as_str().unwrap();
    let by_name = match name.trim_end_matches("[n]") {
        "vmid" | "newid" => Some(fresh_vmid.to_string()),
        "node" | "target" | "target-node" => Some("pve1".into()),
        "storage" | "target-storage" | "statestorage" | "dumpdir" => Some("local-lvm".into()),
        "scsi" | "virtio" | "sata" | "ide" | "rootfs" | "efidisk0" | "tpmstate0" => Some("local-lvm:1".into()),
        "mp" => Some("local-lvm:1,mp=/data".into()),
        "unused" => Some("local-lvm:vm-999-disk-9".into()),
        "net" if name == "net[n]" && param["format"]["bridge"].is_object() && param["format"]["name"].is_object() => {
            Some("name=eth0,bridge=vmbr0,ip=dhcp".into())
        }
        "net" => Some("virtio,bridge=vmbr0".into()),
        "ipconfig" => Some("ip=dhcp".into()),
        "sshkeys" => Some(
            "ssh-ed25519%20AAAAC3NzaC1lZDI1NTE5AAAAIBlx2uMl6O7otZxx5t83ZWNSS%2BgqAj3%2F2gOtI6dRPT%2BR%20test%40host"
                .into(),
        ),
        "ssh-public-keys" => {
            Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlx2uMl6O7otZxx5t83ZWNSS+gqAj3/2gOtI6dRPT+R test@host".into())
        }
        "ostemplate" | "archive" => Some("local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into()),
        "snapname" => Some("probe".into()),
        "disk" => Some(
            if param["enum"].as_array().is_some_and(|e| e.iter().any(|v| v == "rootfs")) { "rootfs" } else { "scsi0" }
                .into(),
        ),
        // Resize takes a relative size; storage allocation only an absolute one.
        "size" if param["pattern"].as_str().is_some_and(|p| p.starts_with("\\+?")) => Some("+1G".into()),
        "size" => Some("1G".into()),
        "action" => Some("ACCEPT".into()),
        "memory" => Some("1024".into()),
        "hostname" | "name" => Some("probe".into()),
        "description" | "comment" | "notes-template" => Some("probe".into()),
        "poolid" | "pool" => Some("probe".into()),
        "cpu" => Some("x86-64-v2-AES".into()),
        "boot" => Some("order=scsi0".into()),
        "agent" => Some("1".into()),
        "upid" => None,
        "url" => Some("https://example.invalid/image.iso".into()),
        "filename" => Some("probe.iso".into()),
        "content" => Some(if param["type"] == "string" && param["enum"].is_array() {
            param["enum"][0].as_str().unwrap().to_string()
        } else {
            "iso".into()
        }),
        _ => None,
    };
    if by_name.is_some() {
        return by_name;
    }
    if let Some(first) = param["enum"].as_array().and_then(|e| e.first()) {
        return Some(first.as_str().map(str::to_string).unwrap_or_else(|| first.to_string()));
    }
    let number = |key: &str| param[key].as_f64().or_else(|| param[key].as_str().and_then(|s| s.parse().ok()));
    match param["type"].as_str() {
        Some("boolean") => Some("1".into()),
        Some("integer") => Some((number("minimum").unwrap_or(1.0) as i64).to_string()),
        Some("number") => Some(number("minimum").unwrap_or(1.0).to_string()),
        Some("string") if param.get("format").is_none() && param.get("pattern").is_none() => Some("probe".into()),
        _ => None,
    }
}

/// The concrete name of a parameter: `net[n]` is sent as `net0`.
fn concrete_name(param: &Value) -> String {
    param["name"].as_str().unwrap().replace("[n]", "0")
}

fn validator_errors_for(body: &Value, name: &str) -> Option<String> {
    let text = body["errors"][name].as_str()?;
    VALIDATOR_TEXTS.iter().any(|t| text.contains(t)).then(|| text.to_string())
}

/// Checks `data` against a `returns` schema; collects mismatches as "path: problem".
fn check_shape(schema: &Value, data: &Value, at: &str, problems: &mut Vec<String>) {
    let Some(ty) = schema["type"].as_str() else { return };
    if data.is_null() {
        if ty != "null" && schema["optional"] != 1 {
            problems.push(format!("{at}: null where the schema says {ty}"));
        }
        return;
    }
    let ok = match ty {
        "null" => false,
        "object" => data.is_object(),
        "array" => data.is_array(),
        // PVE answers 0/1 for booleans (FACTS §1.9).
        "boolean" => data.is_boolean() || data.as_i64().is_some_and(|v| v == 0 || v == 1),
        // Numbers may arrive as strings from Perl (FACTS §1.9: nextid, lxc vmid, storage content size).
        "integer" => data.is_i64() || data.is_u64() || data.as_str().is_some_and(|s| s.parse::<i64>().is_ok()),
        "number" => data.is_number() || data.as_str().is_some_and(|s| s.parse::<f64>().is_ok()),
        "string" => data.is_string() || data.is_number(),
        "any" => true,
        _ => true,
    };
    if !ok {
        problems.push(format!("{at}: {data} is not of type {ty}"));
        return;
    }
    if let (Some(allowed), Some(s)) = (schema["enum"].as_array(), data.as_str())
        && !allowed.iter().any(|a| a == s)
    {
        problems.push(format!("{at}: '{s}' is not in the enum {allowed:?}"));
    }
    if ty == "object"
        && let Some(props) = schema["properties"].as_object()
    {
        for (name, prop) in props {
            match data.get(name) {
                None if prop["optional"] != 1 => problems.push(format!("{at}.{name}: required property missing")),
                None => {}
                Some(v) => check_shape(prop, v, &format!("{at}.{name}"), problems),
            }
        }
    }
    if ty == "array"
        && let Some(items) = schema.get("items")
    {
        for (i, item) in data.as_array().unwrap().iter().enumerate().take(50) {
            check_shape(items, item, &format!("{at}[{i}]"), problems);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_conforms_to_the_pve_schema() {
    let Some(file) = schema_file() else {
        println!("conformance: ../shared/pve/pve-api-subset.json not found (set PVE_SCHEMA_DIR); skipping");
        return;
    };
    let endpoints = load_endpoints(&file);
    let sim = pve_sim::start(pve_sim::SimConfig::for_tests(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let api = Api {
        http: reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap(),
        base: sim.base_url(),
        auth: sim.auth_header(),
    };
    api.ok("POST", "/pools", &[("poolid", "conformance")]).await;
    let mut fixtures = Fixtures { next_vmid: 5000, next_snap: 0, node_task: None };

    let mut problems: Vec<String> = Vec::new();
    let mut implemented = Vec::new();
    let mut not_implemented = Vec::new();
    let mut shapes_checked = Vec::new();

    for ep in &endpoints {
        if ep.path.starts_with("/access/ticket") {
            continue; // login takes username/password, not the token: covered by the auth tests
        }
        let values = fixtures.path_values(&api, &ep.method, &ep.path).await;
        let path = fill_path(&ep.path, &values);
        let fresh = fixtures.vmid();

        // Baseline: required parameters only, with valid values.
        let required: Vec<(String, String)> = ep
            .non_path_params()
            .filter(|p| p["optional"] != 1)
            .filter_map(|p| example_value(p, fresh).map(|v| (concrete_name(p), v)))
            .collect();
        let (status, body) = api.call(&ep.method, &path, &required).await;
        if status == 501 {
            not_implemented.push(ep.key());
            continue;
        }
        implemented.push(ep.key());
        if status == 200 {
            let before = problems.len();
            check_shape(&ep.returns, &body["data"], &format!("{} data", ep.key()), &mut problems);
            if problems.len() == before {
                shapes_checked.push(ep.key());
            }
        } else if status == 400 {
            for (name, _) in &required {
                if let Some(text) = validator_errors_for(&body, name) {
                    problems.push(format!("{}: valid required {name} refused: {text}", ep.key()));
                }
            }
        }

        // Every schema parameter is known to the simulator, and valid examples pass validation.
        for param in ep.non_path_params() {
            let name = concrete_name(param);
            let example = example_value(param, fixtures.vmid());
            let value = example.clone().unwrap_or_else(|| "x".into());
            let mut params: Vec<(String, String)> = required.iter().filter(|(n, _)| *n != name).cloned().collect();
            params.push((name.clone(), value));
            let (_, body) = api.call(&ep.method, &path, &params).await;
            let text = body["errors"][&name].as_str().unwrap_or_default();
            if text.contains("property is not defined in schema") {
                problems.push(format!("{}: parameter {name} is not declared", ep.key()));
            } else if example.is_some()
                && let Some(text) = validator_errors_for(&body, &name)
            {
                problems.push(format!("{}: valid {name}={:?} refused: {text}", ep.key(), example.unwrap()));
            }
        }

        // Required parameters are enforced.
        for (name, _) in &required {
            let params: Vec<(String, String)> = required.iter().filter(|(n, _)| n != name).cloned().collect();
            let (status, body) = api.call(&ep.method, &path, &params).await;
            let text = body["errors"][name].as_str().unwrap_or_default();
            if status != 400 || !text.contains("property is missing and it is not optional") {
                problems.push(format!("{}: missing {name} not refused ({status} {body})", ep.key()));
            }
        }

        // Unknown parameters are refused, unless the schema allows additional properties.
        if !ep.additional_properties {
            let mut params = required.clone();
            params.push(("nimbus-unknown".into(), "1".into()));
            let (status, body) = api.call(&ep.method, &path, &params).await;
            let text = body["errors"]["nimbus-unknown"].as_str().unwrap_or_default();
            if status != 400 || !text.contains("property is not defined in schema") {
                problems.push(format!("{}: unknown parameter not refused ({status} {body})", ep.key()));
            }
        }
    }

    println!("conformance: {} endpoints in the schema, {} implemented", endpoints.len(), implemented.len());
    println!("conformance: return shapes checked on {} endpoints", shapes_checked.len());
    println!("conformance: not implemented (501): {not_implemented:#?}");
    let missing_required: Vec<&&str> = REQUIRED.iter().filter(|k| !implemented.iter().any(|i| i == *k)).collect();
    assert!(missing_required.is_empty(), "required endpoints not implemented: {missing_required:#?}");
    assert!(
        shapes_checked.len() >= 40,
        "only {} endpoints answered a baseline call with a checkable shape: {shapes_checked:#?}",
        shapes_checked.len()
    );
    assert!(problems.is_empty(), "{} conformance problems:\n{}", problems.len(), problems.join("\n"));
    sim.shutdown().await;
}

#[test]
fn shape_checker_catches_mismatches() {
    let schema = json!({"type": "object", "properties": {
        "status": {"type": "string", "enum": ["running", "stopped"]},
        "cpus": {"type": "number", "optional": 1},
        "template": {"type": "boolean", "optional": 1},
    }});
    let mut problems = Vec::new();
    check_shape(&schema, &json!({"status": "running", "cpus": 2, "template": 1}), "ok", &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    check_shape(&schema, &json!({"cpus": "x", "template": 2}), "bad", &mut problems);
    assert_eq!(problems.len(), 3, "{problems:?}");
    check_shape(&schema, &json!({"status": "exploded"}), "enum", &mut problems);
    assert_eq!(problems.len(), 4, "{problems:?}");
}
