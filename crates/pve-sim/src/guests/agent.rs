//! What a booted guest reports about itself: the QEMU guest agent endpoints
//! (`GET .../agent/network-get-interfaces`, `POST .../agent/ping`, `GET/POST .../agent`) and
//! LXC's `GET .../lxc/{vmid}/interfaces`. Addresses are deterministic for seed, guest and NIC:
//! a static `ipconfig[n]`/`ip=` is honoured, DHCP leases come from 10.10.0.0/16, IPv6
//! link-local (and SLAAC for `ip6=auto`) addresses are derived from the MAC. The agent only
//! answers once the guest has booted (`guest_boot_time` × `time_scale` after start).

use serde_json::{Value, json};

use crate::error::{PveError, PveResult};
use crate::model::{Guest, GuestKind, PowerState};
use crate::params::guest_formats as gf;
use crate::params::{P, Params};
use crate::router::Routes;
use crate::sim::Ctx;
use crate::util;

use super::common::guest;

/// One interface as the guest sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestNic {
    pub name: String,
    /// Lowercase MAC.
    pub mac: String,
    /// (address, prefix, "ipv4"/"ipv6").
    pub addrs: Vec<(String, u8, &'static str)>,
}

/// The EUI-64 interface identifier of a MAC (`bc:24:11:aa:bb:cc` → `be24:11ff:feaa:bbcc`).
fn eui64(mac: &str) -> Option<String> {
    let b: Vec<u8> = mac.split(':').map(|x| u8::from_str_radix(x, 16)).collect::<Result<_, _>>().ok()?;
    if b.len() != 6 {
        return None;
    }
    Some(format!(
        "{:x}:{:x}:{:x}:{:x}",
        u16::from_be_bytes([b[0] ^ 2, b[1]]),
        u16::from_be_bytes([b[2], 0xff]),
        u16::from_be_bytes([0xfe, b[3]]),
        u16::from_be_bytes([b[4], b[5]])
    ))
}

/// The DHCP lease of NIC `idx` of `vmid` (deterministic for the seed).
pub fn dhcp_address(seed: u64, vmid: u32, idx: u32) -> String {
    let h = util::hash_parts(seed, &[b"dhcp", &vmid.to_be_bytes(), &idx.to_be_bytes()]);
    format!("10.10.{}.{}", 16 + (h % 240), 2 + ((h >> 16) % 253))
}

fn split_cidr(cidr: &str) -> Option<(String, u8)> {
    let (a, p) = cidr.split_once('/')?;
    Some((a.to_string(), p.parse().ok()?))
}

fn addresses(
    seed: u64,
    vmid: u32,
    idx: u32,
    mac: &str,
    ip: Option<&str>,
    ip6: Option<&str>,
) -> Vec<(String, u8, &'static str)> {
    let mut out = Vec::new();
    match ip {
        Some("manual") => {}
        Some(cidr) if cidr.contains('/') => {
            if let Some((a, p)) = split_cidr(cidr) {
                out.push((a, p, "ipv4"));
            }
        }
        _ => out.push((dhcp_address(seed, vmid, idx), 16, "ipv4")),
    }
    let eui = eui64(mac);
    match ip6 {
        Some("auto") | Some("dhcp") => {
            if let Some(e) = &eui {
                out.push((format!("fd00:10:10:0:{e}"), 64, "ipv6"));
            }
        }
        Some(cidr) if cidr.contains('/') => {
            if let Some((a, p)) = split_cidr(cidr) {
                out.push((a, p, "ipv6"));
            }
        }
        _ => {}
    }
    if let Some(e) = eui {
        out.push((format!("fe80::{e}"), 64, "ipv6"));
    }
    out
}

fn nic_index(key: &str) -> Option<u32> {
    key.strip_prefix("net")?.parse().ok()
}

/// The NICs of a guest with their addresses.
pub fn guest_nics(seed: u64, g: &Guest) -> Vec<GuestNic> {
    let mut out = Vec::new();
    for (k, v) in &g.config {
        let Some(idx) = nic_index(k) else { continue };
        match g.kind {
            GuestKind::Qemu => {
                let Ok(m) = gf::QEMU_NET.parse(v) else { continue };
                let Some(mac) = m.get("macaddr").map(str::to_ascii_lowercase) else { continue };
                let ipc = g.config.get(&format!("ipconfig{idx}")).and_then(|s| gf::IPCONFIG.parse(s).ok());
                let ip = ipc.as_ref().and_then(|c| c.get("ip").map(str::to_string));
                let ip6 = ipc.as_ref().and_then(|c| c.get("ip6").map(str::to_string));
                let addrs = addresses(seed, g.vmid, idx, &mac, ip.as_deref(), ip6.as_deref());
                out.push(GuestNic { name: format!("eth{idx}"), mac, addrs });
            }
            GuestKind::Lxc => {
                let Ok(m) = gf::LXC_NET.parse(v) else { continue };
                let Some(mac) = m.get("hwaddr").map(str::to_ascii_lowercase) else { continue };
                let name = m.get("name").unwrap_or("eth0").to_string();
                let addrs = addresses(seed, g.vmid, idx, &mac, m.get("ip"), m.get("ip6"));
                out.push(GuestNic { name, mac, addrs });
            }
        }
    }
    out.sort_by_key(|n| n.name.clone());
    out
}

fn statistics(seed: u64, g: &Guest, nic: &str, share: f64) -> Value {
    let u = g.usage(seed, util::now_ms());
    let rx = (u.counters.netin as f64 * share) as u64;
    let tx = (u.counters.netout as f64 * share) as u64;
    let salt = util::hash_parts(seed, &[b"stat", nic.as_bytes(), &g.vmid.to_be_bytes()]);
    json!({
        "rx-bytes": rx, "rx-packets": rx / 900 + salt % 7, "rx-errs": 0, "rx-dropped": salt % 3,
        "tx-bytes": tx, "tx-packets": tx / 700 + salt % 5, "tx-errs": 0, "tx-dropped": 0,
    })
}

/// The QGA `guest-network-get-interfaces` result.
pub fn qga_interfaces(seed: u64, g: &Guest) -> Value {
    let nics = guest_nics(seed, g);
    let mut out = vec![json!({
        "name": "lo",
        "hardware-address": "00:00:00:00:00:00",
        "ip-addresses": [
            {"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8},
            {"ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128},
        ],
        "statistics": {"rx-bytes": 5120, "rx-packets": 64, "rx-errs": 0, "rx-dropped": 0, "tx-bytes": 5120, "tx-packets": 64, "tx-errs": 0, "tx-dropped": 0},
    })];
    let share = 1.0 / nics.len().max(1) as f64;
    for n in &nics {
        let addrs: Vec<Value> =
            n.addrs.iter().map(|(a, p, t)| json!({"ip-address": a, "ip-address-type": t, "prefix": p})).collect();
        out.push(json!({
            "name": n.name,
            "hardware-address": n.mac,
            "ip-addresses": addrs,
            "statistics": statistics(seed, g, &n.name, share),
        }));
    }
    Value::Array(out)
}

/// qemu-server's `agent_available`.
fn agent_available(g: &Guest, now_ms: i64) -> PveResult<()> {
    if !g.config.contains_key("agent") {
        return Err(PveError::handler("No QEMU guest agent configured"));
    }
    if g.state == PowerState::Stopped {
        return Err(PveError::handler(format!("VM {} is not running", g.vmid)));
    }
    if !g.agent_enabled() || !g.agent_running(now_ms) || g.state == PowerState::Paused {
        return Err(PveError::handler("QEMU guest agent is not running"));
    }
    Ok(())
}

const COMMANDS: &[&str] = &[
    "fsfreeze-freeze",
    "fsfreeze-status",
    "fsfreeze-thaw",
    "fstrim",
    "get-fsinfo",
    "get-host-name",
    "get-memory-block-info",
    "get-memory-blocks",
    "get-osinfo",
    "get-time",
    "get-timezone",
    "get-users",
    "get-vcpus",
    "info",
    "network-get-interfaces",
    "ping",
    "shutdown",
    "suspend-disk",
    "suspend-hybrid",
    "suspend-ram",
];

fn os_info(g: &Guest) -> Value {
    let name = g.name().to_ascii_lowercase();
    let (id, pretty, version, vid) = if name.contains("ubuntu") {
        ("ubuntu", "Ubuntu 24.04.2 LTS", "24.04.2 LTS (Noble Numbat)", "24.04")
    } else {
        ("debian", "Debian GNU/Linux 12 (bookworm)", "12 (bookworm)", "12")
    };
    json!({
        "id": id, "name": if id == "ubuntu" { "Ubuntu" } else { "Debian GNU/Linux" }, "pretty-name": pretty,
        "version": version, "version-id": vid, "kernel-release": "6.1.0-31-cloud-amd64",
        "kernel-version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.128-1 (2025-02-07)", "machine": "x86_64",
    })
}

/// Runs one agent command (the agent is available).
fn run_command(st: &mut crate::model::Cluster, vmid: u32, cmd: &str) -> PveResult<Value> {
    let seed = st.seed;
    let g = st.guests.get_mut(&vmid).ok_or_else(|| PveError::handler(format!("VM {vmid} does not exist")))?;
    let frozen = g.ext.get("fsfrozen").and_then(Value::as_bool).unwrap_or(false);
    let result = match cmd {
        "ping" => json!({}),
        "network-get-interfaces" => qga_interfaces(seed, g),
        "get-host-name" => json!({"host-name": g.name()}),
        "get-osinfo" => os_info(g),
        "info" => json!({
            "version": "7.2.15",
            "supported_commands": COMMANDS.iter().map(|c| json!({"name": format!("guest-{c}"), "enabled": true, "success-response": true})).collect::<Vec<_>>(),
        }),
        "get-time" => json!(util::now_ms() * 1_000_000),
        "get-timezone" => json!({"zone": "UTC", "offset": 0}),
        "get-users" => json!([]),
        "get-vcpus" => json!(
            (0..g.maxcpu()).map(|i| json!({"logical-id": i, "online": true, "can-offline": i > 0})).collect::<Vec<_>>()
        ),
        "get-fsinfo" => {
            let total = g.maxdisk().saturating_sub(util::MIB * 200);
            let used = (total as f64 * (0.15 + 0.3 * util::unit(seed, &[b"fs", &vmid.to_be_bytes()]))) as u64;
            json!([{
                "name": "sda1", "mountpoint": "/", "type": "ext4", "total-bytes": total, "used-bytes": used,
                "disk": [{"bus-type": "scsi", "bus": 0, "unit": 0, "target": 0, "serial": "0QEMU_QEMU_HARDDISK_drive-scsi0",
                          "dev": "/dev/sda1", "pci-controller": {"bus": 0, "slot": 5, "domain": 0, "function": 0}}],
            }])
        }
        "get-memory-blocks" => {
            let blocks = g.maxmem() / (128 * util::MIB);
            json!(
                (0..blocks).map(|i| json!({"phys-index": i, "online": true, "can-offline": i > 0})).collect::<Vec<_>>()
            )
        }
        "get-memory-block-info" => json!({"size": 128 * util::MIB}),
        "fsfreeze-status" => json!(if frozen { "frozen" } else { "thawed" }),
        "fsfreeze-freeze" => {
            g.ext.insert("fsfrozen".into(), json!(true));
            json!(1)
        }
        "fsfreeze-thaw" => {
            g.ext.remove("fsfrozen");
            json!(if frozen { 1 } else { 0 })
        }
        "fstrim" => json!({"paths": [{"path": "/", "trimmed": 0, "minimum": 0}]}),
        "shutdown" => {
            g.set_stopped(seed, util::now_ms());
            json!({})
        }
        "suspend-ram" | "suspend-disk" | "suspend-hybrid" => {
            g.state = PowerState::Paused;
            json!({})
        }
        other => return Err(PveError::handler(format!("Agent error: The command guest-{other} has not been found"))),
    };
    Ok(json!({ "result": result }))
}

fn agent_call(cx: &Ctx, p: &Params, cmd: &str) -> PveResult<Value> {
    let mut st = cx.write();
    let g = guest(&st, p, GuestKind::Qemu)?;
    agent_available(g, util::now_ms())?;
    let vmid = g.vmid;
    run_command(&mut st, vmid, cmd)
}

/// LXC `interfaces` (`ip --json a` inside the container); null while it is not running.
fn lxc_interfaces(seed: u64, g: &Guest) -> Value {
    if g.state == PowerState::Stopped {
        return Value::Null;
    }
    let booted = g.agent_ready_ms.is_none_or(|t| util::now_ms() >= t);
    let mut out = vec![json!({
        "name": "lo", "hwaddr": "00:00:00:00:00:00", "hardware-address": "00:00:00:00:00:00",
        "inet": "127.0.0.1/8", "inet6": "::1/128",
        "ip-addresses": [
            {"ip-address-type": "inet", "ip-address": "127.0.0.1", "prefix": 8},
            {"ip-address-type": "inet6", "ip-address": "::1", "prefix": 128},
        ],
    })];
    for n in guest_nics(seed, g) {
        let mut item = json!({"name": n.name, "hwaddr": n.mac, "hardware-address": n.mac});
        let mut list = Vec::new();
        for (a, p, t) in &n.addrs {
            // A DHCP lease or SLAAC address only exists once the container has booted.
            let link_local = a.starts_with("fe80:");
            if !booted && !link_local {
                continue;
            }
            let family = if *t == "ipv4" { "inet" } else { "inet6" };
            item[family] = json!(format!("{a}/{p}"));
            list.push(json!({"ip-address-type": family, "ip-address": a, "prefix": p}));
        }
        item["ip-addresses"] = Value::Array(list);
        out.push(item);
    }
    Value::Array(out)
}

/// Registers the agent endpoints and LXC interfaces.
pub fn register(r: &mut Routes) {
    r.get("/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces", vec![P::node(), P::vmid()], |cx, p| {
        agent_call(cx, p, "network-get-interfaces")
    });
    r.post("/nodes/{node}/qemu/{vmid}/agent/ping", vec![P::node(), P::vmid()], |cx, p| agent_call(cx, p, "ping"));
    r.get("/nodes/{node}/qemu/{vmid}/agent", vec![P::node(), P::vmid()], |cx, p| {
        let st = cx.read();
        guest(&st, p, GuestKind::Qemu)?;
        Ok(Value::Array(COMMANDS.iter().map(|c| json!({"name": c})).collect()))
    });
    r.post("/nodes/{node}/qemu/{vmid}/agent", vec![P::node(), P::vmid(), P::str("command").en(COMMANDS)], |cx, p| {
        agent_call(cx, p, p.str("command")?)
    });
    r.get("/nodes/{node}/lxc/{vmid}/interfaces", vec![P::node(), P::vmid()], |cx, p| {
        let st = cx.read();
        let g = guest(&st, p, GuestKind::Lxc)?;
        Ok(lxc_interfaces(st.seed, g))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_config_and_mac() {
        assert_eq!(eui64("bc:24:11:aa:bb:cc").as_deref(), Some("be24:11ff:feaa:bbcc"));
        let a = addresses(1, 100, 0, "bc:24:11:aa:bb:cc", Some("192.0.2.10/24"), None);
        assert_eq!(a[0], ("192.0.2.10".to_string(), 24, "ipv4"));
        assert_eq!(a[1].0, "fe80::be24:11ff:feaa:bbcc");
        let d = addresses(1, 100, 0, "bc:24:11:aa:bb:cc", Some("dhcp"), Some("auto"));
        assert_eq!(d[0].0, dhcp_address(1, 100, 0));
        assert_eq!(d[1].0, "fd00:10:10:0:be24:11ff:feaa:bbcc");
        assert_ne!(dhcp_address(1, 100, 0), dhcp_address(1, 101, 0));
        assert_eq!(dhcp_address(7, 100, 0), dhcp_address(7, 100, 0));
    }
}
