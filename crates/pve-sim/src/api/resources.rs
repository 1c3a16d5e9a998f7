//! Resource rows shared by `/cluster/resources`, `/nodes` and pool members: guests, nodes and
//! storages with their live figures, serialised straight from structs (fast for 10,000 guests).

use serde::Serialize;

use crate::model::{Cluster, Guest, GuestKind, Node, PowerState, Storage};
use crate::sim::Sim;

/// A guest row (`id` = `qemu/100`).
#[derive(Serialize)]
pub struct GuestRow<'a> {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub node: &'a str,
    pub vmid: u32,
    pub name: String,
    pub status: &'static str,
    pub maxcpu: f64,
    pub cpu: f64,
    pub maxmem: u64,
    pub mem: u64,
    pub maxdisk: u64,
    pub disk: u64,
    pub netin: u64,
    pub netout: u64,
    pub diskread: u64,
    pub diskwrite: u64,
    pub uptime: u64,
    pub template: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<&'a str>,
}

/// The row of a guest at `now_ms`; `online` is false when its node is down (status unknown).
pub fn guest_row<'a>(seed: u64, g: &'a Guest, now_ms: i64, online: bool) -> GuestRow<'a> {
    let u = g.usage(seed, now_ms);
    GuestRow {
        id: format!("{}/{}", g.kind.as_str(), g.vmid),
        kind: g.kind.as_str(),
        node: &g.node,
        vmid: g.vmid,
        name: g.name(),
        status: if online { g.state.status() } else { "unknown" },
        maxcpu: u.maxcpu,
        cpu: u.cpu,
        maxmem: u.maxmem,
        mem: u.mem,
        maxdisk: u.maxdisk,
        disk: u.disk,
        netin: u.counters.netin,
        netout: u.counters.netout,
        diskread: u.counters.diskread,
        diskwrite: u.counters.diskwrite,
        uptime: u.uptime,
        template: u8::from(g.is_template()),
        lock: g.lock(),
        tags: g.config.get("tags").map(String::as_str),
        pool: g.pool.as_deref(),
    }
}

/// A node row (`id` = `node/pve1`).
#[derive(Serialize)]
pub struct NodeRow<'a> {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub node: &'a str,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxcpu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxmem: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxdisk: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime: Option<u64>,
    pub level: &'static str,
    #[serde(rename = "cgroup-mode", skip_serializing_if = "Option::is_none")]
    pub cgroup_mode: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_fingerprint: Option<&'a str>,
}

/// Memory a node uses: a base for the host plus its running guests.
pub fn node_mem_used(st: &Cluster, node: &str, now_ms: i64) -> u64 {
    let guests: u64 = st
        .guests
        .values()
        .filter(|g| g.node == node && g.state != PowerState::Stopped)
        .map(|g| g.usage(st.seed, now_ms).mem)
        .fold(0, u64::saturating_add);
    let n = st.nodes.get(node).map(|n| n.maxmem).unwrap_or(u64::MAX);
    guests.saturating_add(2_684_354_560).min(n)
}

/// A node's CPU load: a small base plus the running guests' share.
pub fn node_cpu(st: &Cluster, n: &Node, now_ms: i64) -> f64 {
    let guests: f64 = st
        .guests
        .values()
        .filter(|g| g.node == n.name && g.state == PowerState::Running)
        .map(|g| {
            let u = g.usage(st.seed, now_ms);
            u.cpu * u.maxcpu
        })
        .sum();
    let base =
        0.01 + 0.02 * crate::util::unit(st.seed, &[b"nodecpu", n.name.as_bytes(), &(now_ms / 60_000).to_be_bytes()]);
    ((base + guests / n.maxcpu as f64).min(1.0) * 10_000.0).round() / 10_000.0
}

/// The row of a node.
pub fn node_row<'a>(sim: &Sim, st: &Cluster, n: &'a Node, now_ms: i64, fingerprint: Option<&'a str>) -> NodeRow<'a> {
    let online = sim.node_online(&n.name);
    let uptime = (now_ms / 1000 - n.boot_time).max(0) as u64;
    let rootused = root_used(n);
    NodeRow {
        id: format!("node/{}", n.name),
        kind: "node",
        node: &n.name,
        status: if online { "online" } else { "offline" },
        cpu: online.then(|| node_cpu(st, n, now_ms)),
        maxcpu: online.then_some(n.maxcpu),
        mem: online.then(|| node_mem_used(st, &n.name, now_ms)),
        maxmem: online.then_some(n.maxmem),
        disk: online.then_some(rootused),
        maxdisk: online.then_some(n.rootfs_total),
        uptime: online.then_some(uptime),
        level: "",
        cgroup_mode: online.then_some(2),
        ssl_fingerprint: fingerprint,
    }
}

/// Root filesystem usage: system files plus what `local` (a dir on the root fs) holds.
pub fn root_used(n: &Node) -> u64 {
    let local = n.storages.get("local").map(Storage::used).unwrap_or(0);
    (3_221_225_472 + local).min(n.rootfs_total)
}

/// The `content` list of a storage as PVE prints it (sorted, comma separated).
pub fn content_list(s: &Storage) -> String {
    let mut c: Vec<&str> = s.content.iter().map(String::as_str).collect();
    c.sort_unstable();
    c.join(",")
}

/// A storage row (`id` = `storage/pve1/local`).
#[derive(Serialize)]
pub struct StorageRow<'a> {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub node: &'a str,
    pub storage: &'a str,
    pub status: &'static str,
    pub plugintype: &'a str,
    pub content: String,
    pub shared: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxdisk: Option<u64>,
}

/// The row of a storage.
pub fn storage_row<'a>(node: &'a str, s: &'a Storage, online: bool) -> StorageRow<'a> {
    StorageRow {
        id: format!("storage/{node}/{}", s.id),
        kind: "storage",
        node,
        storage: &s.id,
        status: if online { "available" } else { "unknown" },
        plugintype: &s.kind,
        content: content_list(s),
        shared: u8::from(s.shared),
        disk: online.then(|| s.used()),
        maxdisk: online.then_some(s.total),
    }
}

/// Whether a guest kind matches a pool/resource `type` filter.
pub fn kind_matches(kind: GuestKind, filter: Option<&str>) -> bool {
    match filter {
        None | Some("vm") => true,
        Some(f) => f == kind.as_str(),
    }
}
