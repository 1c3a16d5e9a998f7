//! Guest lists and status: `GET /nodes/{node}/qemu` and `/lxc` (serialised straight from
//! structs: fast for 10,000 guests), `GET .../status/current`, and the directory indexes
//! `GET .../{vmid}` and `GET .../{vmid}/status`.

use serde::Serialize;
use serde_json::{Value, json};

use crate::model::{Guest, GuestKind, PowerState};
use crate::params::{P, Params};
use crate::router::{Reply, Routes};
use crate::sim::Ctx;
use crate::util;

use super::common::guest;

/// A row of `GET /nodes/{node}/qemu` (qemu-server's `vmstatus`).
#[derive(Serialize)]
pub struct QemuRow<'a> {
    pub vmid: u32,
    pub name: String,
    pub status: &'static str,
    #[serde(serialize_with = "whole_as_int")]
    pub cpus: f64,
    pub cpu: f64,
    pub maxmem: u64,
    pub mem: u64,
    pub maxdisk: u64,
    pub disk: u64,
    pub netin: u64,
    pub netout: u64,
    pub uptime: u64,
    /// Present while running; `null` for templates (as some PVE versions answer).
    #[serde(skip_serializing_if = "Pid::is_absent")]
    pub pid: Pid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qmpstatus: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diskread: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diskwrite: Option<u64>,
    #[serde(rename = "running-machine", skip_serializing_if = "Option::is_none")]
    pub running_machine: Option<&'static str>,
    #[serde(rename = "running-qemu", skip_serializing_if = "Option::is_none")]
    pub running_qemu: Option<&'static str>,
}

/// A `pid` field: absent, `null`, or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pid {
    Absent,
    Null,
    Some(u32),
}

impl Pid {
    fn is_absent(&self) -> bool {
        *self == Pid::Absent
    }
}

impl Serialize for Pid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Pid::Some(p) => s.serialize_u32(*p),
            _ => s.serialize_none(),
        }
    }
}

/// Perl prints whole numbers without a fraction (`"cpus":2`, not `2.0`).
fn whole_as_int<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 { s.serialize_i64(*v as i64) } else { s.serialize_f64(*v) }
}

/// The machine type and QEMU version a running VM reports.
pub const RUNNING_MACHINE: &str = "pc-i440fx-9.2+pve1";
pub const RUNNING_QEMU: &str = "9.2.0";

fn has_serial(g: &Guest) -> bool {
    ["serial0", "serial1", "serial2", "serial3"].iter().any(|k| g.config.contains_key(*k))
}

/// The qemu status row; `full` adds qmpstatus, disk I/O and the running machine.
pub fn qemu_row(seed: u64, g: &Guest, now_ms: i64, full: bool) -> QemuRow<'_> {
    let u = g.usage(seed, now_ms);
    let running = g.state != PowerState::Stopped;
    QemuRow {
        vmid: g.vmid,
        name: g.name(),
        status: g.state.status(),
        cpus: u.maxcpu,
        cpu: u.cpu,
        maxmem: u.maxmem,
        mem: u.mem,
        maxdisk: u.maxdisk,
        disk: 0,
        netin: u.counters.netin,
        netout: u.counters.netout,
        uptime: u.uptime,
        pid: match g.pid {
            Some(p) if running => Pid::Some(p),
            _ if g.is_template() => Pid::Null,
            _ => Pid::Absent,
        },
        template: g.is_template().then_some(1),
        serial: has_serial(g).then_some(1),
        lock: g.lock(),
        tags: g.config.get("tags").map(String::as_str),
        qmpstatus: full.then(|| g.state.qmpstatus()),
        diskread: full.then_some(u.counters.diskread),
        diskwrite: full.then_some(u.counters.diskwrite),
        running_machine: (full && running).then_some(RUNNING_MACHINE),
        running_qemu: (full && running).then_some(RUNNING_QEMU),
    }
}

/// A row of `GET /nodes/{node}/lxc` (pve-container's `vmstatus`; `vmid` is a string there).
#[derive(Serialize)]
pub struct LxcRow<'a, V: Serialize> {
    pub vmid: V,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: String,
    pub status: &'static str,
    #[serde(serialize_with = "whole_as_int")]
    pub cpus: f64,
    pub cpu: f64,
    pub maxmem: u64,
    pub mem: u64,
    pub maxswap: u64,
    pub swap: u64,
    pub maxdisk: u64,
    pub disk: u64,
    pub netin: u64,
    pub netout: u64,
    pub diskread: u64,
    pub diskwrite: u64,
    pub uptime: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<&'a str>,
}

/// The LXC status row with `vmid` of type `V` (a string in lists, a number in status).
pub fn lxc_row<V: Serialize>(seed: u64, g: &Guest, now_ms: i64, vmid: V) -> LxcRow<'_, V> {
    let u = g.usage(seed, now_ms);
    let running = g.state != PowerState::Stopped;
    let maxswap = g.config.get("swap").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0).saturating_mul(util::MIB);
    let swap =
        if running { (maxswap as f64 * 0.02 * util::unit(seed, &[b"swap", &g.vmid.to_be_bytes()])) as u64 } else { 0 };
    let maxdisk = if u.maxdisk > 0 { u.maxdisk } else { 4 * util::GIB };
    LxcRow {
        vmid,
        kind: "lxc",
        name: g.name().chars().filter(|c| !c.is_whitespace()).collect(),
        status: g.state.status(),
        cpus: u.maxcpu,
        cpu: u.cpu,
        maxmem: u.maxmem,
        mem: u.mem,
        maxswap,
        swap,
        maxdisk,
        disk: u.disk,
        netin: u.counters.netin,
        netout: u.counters.netout,
        diskread: u.counters.diskread,
        diskwrite: u.counters.diskwrite,
        uptime: u.uptime,
        pid: if running { g.pid } else { None },
        template: g.is_template().then_some(1),
        lock: g.lock(),
        tags: g.config.get("tags").map(String::as_str),
    }
}

fn status_current(cx: &Ctx, p: &Params, kind: GuestKind) -> crate::error::PveResult<Value> {
    let st = cx.read();
    let g = guest(&st, p, kind)?;
    let now_ms = util::now_ms();
    let mut v = match kind {
        GuestKind::Qemu => {
            let mut v = serde_json::to_value(qemu_row(st.seed, g, now_ms, true)).unwrap_or(Value::Null);
            if g.agent_enabled() {
                v["agent"] = json!(1);
            }
            if let Some(vga) = g.config.get("vga").and_then(|s| crate::params::guest_formats::VGA.parse(s).ok()) {
                if vga.get("type").is_some_and(|t| t.starts_with("virtio") || t.starts_with("qxl")) {
                    v["spice"] = json!(1);
                }
                if let Some(c) = vga.get("clipboard") {
                    v["clipboard"] = json!(c);
                }
            }
            if g.state != PowerState::Stopped {
                v["proxmox-support"] = json!({"backup-max-workers": true, "pbs-dirty-bitmap": true, "pbs-library-version": "1.5.2", "query-bitmap-info": true});
            }
            v
        }
        GuestKind::Lxc => serde_json::to_value(lxc_row(st.seed, g, now_ms, g.vmid)).unwrap_or(Value::Null),
    };
    v["ha"] = json!({"managed": 0});
    Ok(v)
}

/// Registers the lists, status/current and the indexes.
pub fn register(r: &mut Routes) {
    r.get_reply("/nodes/{node}/qemu", vec![P::node(), P::bool("full").opt()], |cx: &Ctx, p: &Params| {
        let st = cx.read();
        let node = p.node()?;
        st.node(node)?;
        let full = p.bool("full");
        let now_ms = util::now_ms();
        let rows: Vec<QemuRow> = st
            .guests
            .values()
            .filter(|g| g.kind == GuestKind::Qemu && g.node == node)
            .map(|g| qemu_row(st.seed, g, now_ms, full))
            .collect();
        Reply::json(&rows)
    });
    r.get_reply("/nodes/{node}/lxc", vec![P::node()], |cx: &Ctx, p: &Params| {
        let st = cx.read();
        let node = p.node()?;
        st.node(node)?;
        let now_ms = util::now_ms();
        let rows: Vec<LxcRow<String>> = st
            .guests
            .values()
            .filter(|g| g.kind == GuestKind::Lxc && g.node == node)
            .map(|g| lxc_row(st.seed, g, now_ms, g.vmid.to_string()))
            .collect();
        Reply::json(&rows)
    });
    for kind in [GuestKind::Qemu, GuestKind::Lxc] {
        let (cur, idx, status_idx): (&'static str, &'static str, &'static str) = match kind {
            GuestKind::Qemu => (
                "/nodes/{node}/qemu/{vmid}/status/current",
                "/nodes/{node}/qemu/{vmid}",
                "/nodes/{node}/qemu/{vmid}/status",
            ),
            GuestKind::Lxc => (
                "/nodes/{node}/lxc/{vmid}/status/current",
                "/nodes/{node}/lxc/{vmid}",
                "/nodes/{node}/lxc/{vmid}/status",
            ),
        };
        r.get(cur, vec![P::node(), P::vmid()], move |cx: &Ctx, p: &Params| status_current(cx, p, kind));
        r.get(idx, vec![P::node(), P::vmid()], move |cx: &Ctx, p: &Params| {
            // PVE answers the index without loading the config.
            let _ = (cx, p);
            let subdirs: &[&str] = match kind {
                GuestKind::Qemu => &[
                    "config",
                    "cloudinit",
                    "pending",
                    "status",
                    "unlink",
                    "vncproxy",
                    "termproxy",
                    "migrate",
                    "resize",
                    "move",
                    "rrd",
                    "rrddata",
                    "monitor",
                    "agent",
                    "snapshot",
                    "spiceproxy",
                    "sendkey",
                    "firewall",
                    "mtunnel",
                    "remote_migrate",
                ],
                GuestKind::Lxc => &[
                    "config",
                    "status",
                    "vncproxy",
                    "termproxy",
                    "vncwebsocket",
                    "spiceproxy",
                    "migrate",
                    "clone",
                    "rrd",
                    "rrddata",
                    "firewall",
                    "snapshot",
                    "resize",
                    "interfaces",
                ],
            };
            Ok(Value::Array(subdirs.iter().map(|s| json!({"subdir": s})).collect()))
        });
        r.get(status_idx, vec![P::node(), P::vmid()], move |cx: &Ctx, p: &Params| {
            let st = cx.read();
            guest(&st, p, kind)?;
            let cmds: &[&str] = match kind {
                GuestKind::Qemu => &["current", "start", "stop", "reset", "shutdown", "suspend", "reboot"],
                GuestKind::Lxc => &["current", "start", "stop", "shutdown", "migrate"],
            };
            Ok(Value::Array(cmds.iter().map(|s| json!({"subdir": s})).collect()))
        });
    }
}
