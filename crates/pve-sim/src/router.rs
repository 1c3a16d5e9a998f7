//! Routes of `/api2/json`: declaration, parameter schemas and fast matching (a segment trie,
//! static segments before `{param}` ones).
//!
//! # Adding an endpoint
//!
//! 1. **Register** it in a `register(r: &mut Routes)` function of your module (guest routes go in
//!    `guests::register` in `src/guests/mod.rs`, which `api::routes()` calls):
//!    ```ignore
//!    r.get("/nodes/{node}/qemu/{vmid}/status/current", vec![P::node(), P::vmid()], status_current);
//!    r.post("/nodes/{node}/qemu/{vmid}/clone", vec![
//!        P::node(), P::vmid(),
//!        P::int("newid").fmt(f::VMID).range(100, 999_999_999),
//!        P::str("name").opt().fmt(f::DNS_NAME),
//!        P::bool("full").opt(),
//!        P::str("scsi").indexed(0, 30).prop(&guest_formats::SCSI), // scsi0..scsi30
//!    ], clone_vm);
//!    ```
//!    Paths use `{param}`; `{+param}` takes the rest of the path (volume ids with `/`).
//!    Path parameters must be declared too (PVE validates them; `P::node()`, `P::vmid()`).
//!    Options on the returned endpoint: `.no_token()` (PVE `allowtoken: 0` → 403 for tokens),
//!    `.no_auth()`, `.local()` (schema has no `proxyto: node`: no 595 when the node is down),
//!    `.upload()` (multipart body parsed and streamed by the dispatcher into `cx.upload`).
//! 2. **Parameters** (`crate::params`): `P::str/int/num/bool/array(name)` then `.opt()`,
//!    `.min(n)/.max(n)/.range(lo, hi)`, `.en(&[..])`, `.pattern(r"..")` (PVE's regex, anchored),
//!    `.fmt(f::VMID | f::NODE | f::CONFIGID | f::STORAGE_ID | f::URLENCODED | ...)`,
//!    `.prop(&guest_formats::QEMU_NET)` for property strings, `.max_len(n)`, `.requires("x")`,
//!    `.indexed(lo, hi)` for `name[n]` families. Unknown, missing, mistyped and malformed
//!    parameters are answered with PVE's 400 texts before the handler runs.
//! 3. **Handlers**: `fn(&Ctx, &Params) -> PveResult<serde_json::Value>` (sync; the value is the
//!    `data` of the envelope; `cx.set_total(n)` adds `total`), or `r.get_async(path, params,
//!    |cx: Ctx, p: Params| async move { ... Ok(Reply::from(value)) })` for handlers that await
//!    (e.g. websockets via `cx.take_upgrade()`). Big lists: `r.get_reply(path, params, |cx, p|
//!    Reply::json(&rows))` serialises structs directly (10,000 guests in a few ms). Typed access: `p.node()?`, `p.vmid()?`,
//!    `p.str("x")?`, `p.opt_str("x")`, `p.u32("x")?`, `p.opt_u64("x")`, `p.bool("full")`,
//!    `p.bool_or("x", true)`, `p.indexed("net")` → `[(0, "virtio,...")]`, `p.list("vmid")`.
//! 4. **State**: `let st = cx.read();` / `let mut st = cx.write();` (one `parking_lot` lock for
//!    the whole `model::Cluster`; never hold it across `.await`). Lookups with PVE errors:
//!    `st.guest_on(node, GuestKind::Qemu, vmid)?` (`Configuration file 'nodes/pve1/qemu-server/
//!    999.conf' does not exist`), `st.storage(node, "local-lvm")?`, `st.check_vmid_unused(id)`.
//!    Guest config is `guest.config: BTreeMap<String, String>` exactly as PVE stores it
//!    (`lock`, `template`, `scsi0: local-lvm:vm-100-disk-0,size=32G`...). Storage allocation:
//!    `storage.alloc_image(vmid, bytes, "images", "raw")` (capacity checked, PVE-like error).
//!    The state file is written automatically after any `write()`.
//! 5. **Tasks**: `let upid = cx.spawn_task(&mut st, cx.task(node, "qmclone", vmid).lock(newid,
//!    "clone"), move |st, log| { log.line("..."); /* mutate st */ Ok(()) })?;` then
//!    `Ok(json!(upid))`. The body runs under the write lock when the duration
//!    (`SimConfig::task_durations` or `.duration(d)` or the type default, × `time_scale`)
//!    has passed; `Err(msg)` ends the task `TASK ERROR: msg`. `fail_next_task` faults and
//!    `DELETE /tasks/{upid}` are handled for you. A node-wide lock that only one task may hold
//!    at a time: `.global_lock(cx.sim.global_lock(node, "/var/run/vzdump.lock", lockwait))`
//!    (vzdump); checks and guest locks that must happen when such a delayed task really
//!    starts: `.on_start(|st, log| locks)`.
//! 6. **Locks**: check with `guest.check_lock()?` (→ 500 `VM is locked (backup)`) before
//!    starting; `TaskSpec::lock(vmid, "clone")` sets `lock: clone` in the guest config at
//!    spawn and removes it when the task ends (if still the same lock).
//! 7. **Errors**: `Err(PveError::handler("VM 100 not running"))` → 500 with that message
//!    (reason phrase + body); `PveError::param("vmid", "VM 100 already exists")` → 400;
//!    `PveError::Status(code, msg)`, `PveError::perm(path, privs)` → 403. `String`/`&str`
//!    convert into a 500 with `?`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::Method;
use serde_json::Value;

use crate::error::PveResult;
use crate::params::{P, Params, Schema};
use crate::sim::Ctx;

/// What an async handler returns.
pub enum Reply {
    /// `{"data": ...}` (plus `total` when set).
    Data { data: Value, total: Option<u64> },
    /// Already serialised `data` (fast path for big lists: serialise structs directly).
    Json { json: Vec<u8>, total: Option<u64> },
    /// A response sent as is (websocket upgrades, downloads).
    Raw(http::Response<axum::body::Body>),
}

impl Reply {
    /// `data` serialised straight from a `Serialize` value (no intermediate `Value`).
    pub fn json<T: serde::Serialize>(data: &T) -> PveResult<Reply> {
        let json = serde_json::to_vec(data).map_err(|e| crate::error::PveError::handler(e.to_string()))?;
        Ok(Reply::Json { json, total: None })
    }
}

impl From<Value> for Reply {
    fn from(data: Value) -> Reply {
        Reply::Data { data, total: None }
    }
}

/// A boxed handler future.
pub type BoxFut = Pin<Box<dyn Future<Output = PveResult<Reply>> + Send>>;

type SyncFn = dyn Fn(&Ctx, &Params) -> PveResult<Value> + Send + Sync;
type SyncReplyFn = dyn Fn(&Ctx, &Params) -> PveResult<Reply> + Send + Sync;
type AsyncFn = dyn Fn(Ctx, Params) -> BoxFut + Send + Sync;

/// A handler.
#[derive(Clone)]
pub enum Handler {
    Sync(Arc<SyncFn>),
    SyncReply(Arc<SyncReplyFn>),
    Async(Arc<AsyncFn>),
}

/// One API method.
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub schema: Schema,
    pub handler: Handler,
    /// PVE `allowtoken` (false → tokens get 403).
    pub allowtoken: bool,
    /// Needs authentication (false for `/access/ticket`).
    pub auth: bool,
    /// Forwarded to `{node}` (schema `proxyto: node`): 595 when that node is down.
    pub proxy: bool,
    /// Multipart upload endpoint.
    pub upload: bool,
}

impl Endpoint {
    /// Tokens are refused (PVE `allowtoken: 0`).
    pub fn no_token(&mut self) -> &mut Self {
        self.allowtoken = false;
        self
    }
    /// No authentication needed.
    pub fn no_auth(&mut self) -> &mut Self {
        self.auth = false;
        self
    }
    /// Runs on the node that received the request (no `proxyto`).
    pub fn local(&mut self) -> &mut Self {
        self.proxy = false;
        self
    }
    /// A multipart upload (body streamed by the dispatcher).
    pub fn upload(&mut self) -> &mut Self {
        self.upload = true;
        self
    }
}

#[derive(Default)]
struct TrieNode {
    statics: HashMap<String, TrieNode>,
    param: Option<(String, Box<TrieNode>)>,
    rest: Option<(String, Box<TrieNode>)>,
    endpoints: Vec<(Method, usize)>,
}

/// The route table.
#[derive(Default)]
pub struct Routes {
    root: TrieNode,
    endpoints: Vec<Endpoint>,
}

/// A matched route.
pub struct Matched<'a> {
    pub endpoint: &'a Endpoint,
    pub params: Vec<(String, String)>,
}

impl Routes {
    /// Registers a sync handler.
    pub fn add<F>(&mut self, method: Method, path: &'static str, params: Vec<P>, f: F) -> &mut Endpoint
    where
        F: Fn(&Ctx, &Params) -> PveResult<Value> + Send + Sync + 'static,
    {
        self.insert(method, path, params, Handler::Sync(Arc::new(f)))
    }

    /// Registers an async handler.
    pub fn add_async<F, Fut>(&mut self, method: Method, path: &'static str, params: Vec<P>, f: F) -> &mut Endpoint
    where
        F: Fn(Ctx, Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = PveResult<Reply>> + Send + 'static,
    {
        self.insert(method, path, params, Handler::Async(Arc::new(move |cx, p| Box::pin(f(cx, p)))))
    }

    /// A sync handler returning a [`Reply`] (e.g. `Reply::json(&rows)` for big lists).
    pub fn add_reply<F>(&mut self, method: Method, path: &'static str, params: Vec<P>, f: F) -> &mut Endpoint
    where
        F: Fn(&Ctx, &Params) -> PveResult<Reply> + Send + Sync + 'static,
    {
        self.insert(method, path, params, Handler::SyncReply(Arc::new(f)))
    }

    /// `GET` with a sync handler returning a [`Reply`].
    pub fn get_reply<F>(&mut self, path: &'static str, params: Vec<P>, f: F) -> &mut Endpoint
    where
        F: Fn(&Ctx, &Params) -> PveResult<Reply> + Send + Sync + 'static,
    {
        self.add_reply(Method::GET, path, params, f)
    }

    /// `GET` with a sync handler.
    pub fn get<F>(&mut self, path: &'static str, params: Vec<P>, f: F) -> &mut Endpoint
    where
        F: Fn(&Ctx, &Params) -> PveResult<Value> + Send + Sync + 'static,
    {
        self.add(Method::GET, path, params, f)
    }
    /// `POST` with a sync handler.
    pub fn post<F>(&mut self, path: &'static str, params: Vec<P>, f: F) -> &mut Endpoint
    where
        F: Fn(&Ctx, &Params) -> PveResult<Value> + Send + Sync + 'static,
    {
        self.add(Method::POST, path, params, f)
    }
    /// `PUT` with a sync handler.
    pub fn put<F>(&mut self, path: &'static str, params: Vec<P>, f: F) -> &mut Endpoint
    where
        F: Fn(&Ctx, &Params) -> PveResult<Value> + Send + Sync + 'static,
    {
        self.add(Method::PUT, path, params, f)
    }
    /// `DELETE` with a sync handler.
    pub fn delete<F>(&mut self, path: &'static str, params: Vec<P>, f: F) -> &mut Endpoint
    where
        F: Fn(&Ctx, &Params) -> PveResult<Value> + Send + Sync + 'static,
    {
        self.add(Method::DELETE, path, params, f)
    }
    /// `GET` with an async handler.
    pub fn get_async<F, Fut>(&mut self, path: &'static str, params: Vec<P>, f: F) -> &mut Endpoint
    where
        F: Fn(Ctx, Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = PveResult<Reply>> + Send + 'static,
    {
        self.add_async(Method::GET, path, params, f)
    }
    /// `POST` with an async handler.
    pub fn post_async<F, Fut>(&mut self, path: &'static str, params: Vec<P>, f: F) -> &mut Endpoint
    where
        F: Fn(Ctx, Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = PveResult<Reply>> + Send + 'static,
    {
        self.add_async(Method::POST, path, params, f)
    }

    fn insert(&mut self, method: Method, path: &'static str, mut params: Vec<P>, handler: Handler) -> &mut Endpoint {
        let segments: Vec<&'static str> = path.split('/').filter(|s| !s.is_empty()).collect();
        // Path parameters are part of the schema; declare any the caller left out as strings.
        for seg in &segments {
            if let Some(name) = param_name(seg)
                && !params.iter().any(|p| p.name == name)
            {
                params.push(P::str(name));
            }
        }
        let mut node = &mut self.root;
        for seg in &segments {
            node = if let Some(name) = seg.strip_prefix("{+").and_then(|s| s.strip_suffix('}')) {
                &mut node.rest.get_or_insert_with(|| (name.to_string(), Box::default())).1
            } else if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let slot = node.param.get_or_insert_with(|| (name.to_string(), Box::default()));
                assert_eq!(slot.0, name, "conflicting parameter names at the same position in {path}");
                &mut slot.1
            } else {
                node.statics.entry(seg.to_string()).or_default()
            };
        }
        assert!(!node.endpoints.iter().any(|(m, _)| *m == method), "duplicate route {method} {path}");
        let idx = self.endpoints.len();
        node.endpoints.push((method.clone(), idx));
        let proxy = path.starts_with("/nodes/{node}");
        self.endpoints.push(Endpoint {
            method,
            path,
            schema: Schema::new(params),
            handler,
            allowtoken: true,
            auth: true,
            proxy,
            upload: false,
        });
        &mut self.endpoints[idx]
    }

    /// Finds the endpoint for a method and an unescaped path below `/api2/json`.
    pub fn find(&self, method: &Method, path: &str) -> Option<Matched<'_>> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut params = Vec::new();
        let idx = find_in(&self.root, method, &segments, &mut params)?;
        Some(Matched { endpoint: &self.endpoints[idx], params })
    }

    /// All endpoints (for listings and tests).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }
}

fn param_name(seg: &'static str) -> Option<&'static str> {
    seg.strip_prefix("{+").or_else(|| seg.strip_prefix('{'))?.strip_suffix('}')
}

fn find_in(node: &TrieNode, method: &Method, segs: &[&str], params: &mut Vec<(String, String)>) -> Option<usize> {
    let Some((first, rest)) = segs.split_first() else {
        return node.endpoints.iter().find(|(m, _)| m == method).map(|(_, i)| *i);
    };
    if let Some(child) = node.statics.get(*first)
        && let Some(i) = find_in(child, method, rest, params)
    {
        return Some(i);
    }
    if let Some((name, child)) = &node.param {
        params.push((name.clone(), (*first).to_string()));
        if let Some(i) = find_in(child, method, rest, params) {
            return Some(i);
        }
        params.pop();
    }
    if let Some((name, child)) = &node.rest
        && let Some(i) = child.endpoints.iter().find(|(m, _)| m == method).map(|(_, i)| *i)
    {
        params.push((name.clone(), segs.join("/")));
        return Some(i);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn static_segments_win_and_params_are_captured() {
        let mut r = Routes::default();
        r.get("/nodes/{node}/qemu/{vmid}", vec![], |_, _| Ok(json!("vm")));
        r.get("/nodes/{node}/qemu/{vmid}/status/current", vec![], |_, _| Ok(json!("cur")));
        r.get("/nodes/{node}/tasks/{upid}/status", vec![], |_, _| Ok(json!("t")));
        r.get("/nodes/{node}/storage/{storage}/content/{+volume}", vec![], |_, _| Ok(json!("vol")));
        r.get("/cluster/nextid", vec![], |_, _| Ok(json!(1)));
        let m = r.find(&Method::GET, "/nodes/pve1/qemu/100/status/current").unwrap();
        assert_eq!(m.endpoint.path, "/nodes/{node}/qemu/{vmid}/status/current");
        assert_eq!(m.params, vec![("node".into(), "pve1".into()), ("vmid".into(), "100".into())]);
        let m = r.find(&Method::GET, "/nodes/pve1/storage/local/content/local:iso/a.iso").unwrap();
        assert_eq!(m.params[2], ("volume".into(), "local:iso/a.iso".into()));
        assert!(r.find(&Method::POST, "/cluster/nextid").is_none());
        assert!(r.find(&Method::GET, "/cluster/nextid/x").is_none());
        assert!(r.find(&Method::GET, "//cluster//nextid/").is_some());
        assert!(m.endpoint.schema.has("volume"));
    }
}
