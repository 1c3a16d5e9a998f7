//! Guests (qemu VMs and LXC containers): configuration as PVE stores it (a sorted key → string
//! map), power state, snapshots, pending changes, and the derived runtime figures
//! (uptime, CPU, memory, counters) that status and list endpoints report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::params::guest_formats;
use crate::util::{self, GIB, MIB};

/// A guest configuration: key → value, sorted like PVE writes it.
pub type Config = BTreeMap<String, String>;

/// qemu or lxc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    Qemu,
    Lxc,
}

impl GuestKind {
    /// `qemu` / `lxc` (resource ids, paths).
    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Qemu => "qemu",
            GuestKind::Lxc => "lxc",
        }
    }
    /// `VM` / `CT` (error texts like `VM is locked (backup)`).
    pub fn label(self) -> &'static str {
        match self {
            GuestKind::Qemu => "VM",
            GuestKind::Lxc => "CT",
        }
    }
}

/// Power state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    Stopped,
    Running,
    Paused,
}

impl PowerState {
    /// `status` as the API reports it (a paused VM is `running` with qmpstatus `paused`).
    pub fn status(self) -> &'static str {
        match self {
            PowerState::Stopped => "stopped",
            PowerState::Running | PowerState::Paused => "running",
        }
    }
    /// The qmpstatus.
    pub fn qmpstatus(self) -> &'static str {
        match self {
            PowerState::Stopped => "stopped",
            PowerState::Running => "running",
            PowerState::Paused => "paused",
        }
    }
}

/// One snapshot: its config copy and metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub name: String,
    pub description: String,
    pub snaptime: i64,
    pub parent: Option<String>,
    pub vmstate: bool,
    /// The guest config at snapshot time (without `parent`, `lock`, `snapshots`).
    pub config: Config,
    /// `prepare`/`delete` while a snapshot task runs; None when complete.
    pub snapstate: Option<String>,
}

/// A qemu VM or LXC container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Guest {
    pub vmid: u32,
    pub kind: GuestKind,
    pub node: String,
    pub config: Config,
    /// Pending changes (hot-plug not possible while running).
    #[serde(default)]
    pub pending: Config,
    /// Keys pending deletion.
    #[serde(default)]
    pub pending_delete: Vec<String>,
    #[serde(default)]
    pub snapshots: Vec<Snapshot>,
    pub state: PowerState,
    /// Unix ms when it was started (None when stopped).
    pub started_ms: Option<i64>,
    /// Unix ms from which the guest agent answers (boot finished).
    pub agent_ready_ms: Option<i64>,
    /// The emulated process id while running.
    pub pid: Option<u32>,
    /// Pool membership (mirrors the pool's member list).
    #[serde(default)]
    pub pool: Option<String>,
    /// Cumulative counters of earlier runs (bytes), so they only grow.
    #[serde(default)]
    pub counters_base: Counters,
    /// Free-form per-guest data of the guest endpoints (firewall rules, options, ...).
    #[serde(default)]
    pub ext: BTreeMap<String, serde_json::Value>,
}

/// Cumulative I/O counters in bytes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Counters {
    pub netin: u64,
    pub netout: u64,
    pub diskread: u64,
    pub diskwrite: u64,
}

/// Runtime figures of a guest at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub cpu: f64,
    pub maxcpu: f64,
    pub mem: u64,
    pub maxmem: u64,
    pub disk: u64,
    pub maxdisk: u64,
    pub uptime: u64,
    pub counters: Counters,
}

/// Drive keys of qemu configs, in PVE's bus order.
pub fn is_qemu_drive_key(key: &str) -> bool {
    ["ide", "sata", "scsi", "virtio"]
        .iter()
        .any(|bus| key.strip_prefix(bus).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
        || key == "efidisk0"
        || key == "tpmstate0"
}

/// Volume keys of LXC configs.
pub fn is_lxc_volume_key(key: &str) -> bool {
    key == "rootfs" || key.strip_prefix("mp").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

impl Guest {
    /// A new stopped guest with the given config.
    pub fn new(vmid: u32, kind: GuestKind, node: &str, config: Config) -> Guest {
        Guest {
            vmid,
            kind,
            node: node.to_string(),
            config,
            pending: Config::new(),
            pending_delete: Vec::new(),
            snapshots: Vec::new(),
            state: PowerState::Stopped,
            started_ms: None,
            agent_ready_ms: None,
            pid: None,
            pool: None,
            counters_base: Counters::default(),
            ext: BTreeMap::new(),
        }
    }

    /// The name (`name` for qemu, `hostname` for lxc), with PVE's fallback `VM <id>` / `CT<id>`.
    pub fn name(&self) -> String {
        let key = if self.kind == GuestKind::Qemu { "name" } else { "hostname" };
        match self.config.get(key) {
            Some(n) => n.clone(),
            None if self.kind == GuestKind::Qemu => format!("VM {}", self.vmid),
            None => format!("CT{}", self.vmid),
        }
    }

    /// The current lock, if any.
    pub fn lock(&self) -> Option<&str> {
        self.config.get("lock").map(String::as_str)
    }

    /// PVE's `check_lock`: `VM is locked (clone)`.
    pub fn check_lock(&self) -> Result<(), String> {
        match self.lock() {
            Some(l) => Err(format!("{} is locked ({l})", self.kind.label())),
            None => Ok(()),
        }
    }

    /// Replaces the whole config (a create or restore writing over the guest), dropping its
    /// snapshots and pending changes.
    pub fn replace_config(&mut self, config: Config) {
        self.config = config;
        self.snapshots.clear();
        self.pending.clear();
        self.pending_delete.clear();
    }

    /// Whether `template: 1`.
    pub fn is_template(&self) -> bool {
        self.config.get("template").is_some_and(|v| v == "1")
    }

    /// Whether the qemu guest agent is enabled in the config.
    pub fn agent_enabled(&self) -> bool {
        self.config
            .get("agent")
            .and_then(|a| guest_formats::AGENT.parse(a).ok())
            .is_some_and(|m| m.get("enabled") == Some("1"))
    }

    /// The config digest (hex SHA-256 of the serialised config, 40 characters like PVE's SHA-1).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (k, v) in &self.config {
            h.update(k.as_bytes());
            h.update(b": ");
            h.update(v.as_bytes());
            h.update(b"\n");
        }
        hex::encode(h.finalize())[..40].to_string()
    }

    /// Configured memory in bytes (`memory` is `[current=]<MiB>`; qemu default 512, lxc 512).
    pub fn maxmem(&self) -> u64 {
        let mib = self
            .config
            .get("memory")
            .and_then(|m| m.rsplit('=').next().and_then(|v| v.split(',').next()).and_then(|v| v.parse::<u64>().ok()))
            .unwrap_or(512);
        mib.saturating_mul(MIB)
    }

    /// Configured vCPUs (qemu: sockets × cores, or vcpus; lxc: cores, default 1 here).
    pub fn maxcpu(&self) -> u32 {
        let get = |k: &str| self.config.get(k).and_then(|v| v.parse::<u32>().ok());
        match self.kind {
            GuestKind::Qemu => {
                get("vcpus").unwrap_or(get("sockets").unwrap_or(1).saturating_mul(get("cores").unwrap_or(1)))
            }
            GuestKind::Lxc => get("cores").unwrap_or(1),
        }
    }

    /// The size of every volume line (`size=` option) keyed by config key.
    pub fn disk_sizes(&self) -> Vec<(String, u64)> {
        self.config
            .iter()
            .filter(|(k, _)| match self.kind {
                GuestKind::Qemu => is_qemu_drive_key(k),
                GuestKind::Lxc => is_lxc_volume_key(k),
            })
            .filter(|(_, v)| !v.contains("media=cdrom") && !v.contains("cloudinit"))
            .filter_map(|(k, v)| {
                let size = v.split(',').find_map(|p| p.strip_prefix("size="))?;
                Some((k.clone(), util::parse_size(size)?))
            })
            .collect()
    }

    /// `maxdisk`: the boot disk for qemu (first sized drive), rootfs for lxc.
    pub fn maxdisk(&self) -> u64 {
        let sizes = self.disk_sizes();
        match self.kind {
            GuestKind::Lxc => sizes.iter().find(|(k, _)| k == "rootfs").map(|(_, s)| *s).unwrap_or(0),
            GuestKind::Qemu => {
                let boot = self.config.get("boot").and_then(|b| {
                    b.strip_prefix("order=").and_then(|o| o.split([';', ',']).next()).map(str::to_string)
                });
                boot.and_then(|b| sizes.iter().find(|(k, _)| *k == b).map(|(_, s)| *s))
                    .or_else(|| sizes.first().map(|(_, s)| *s))
                    .unwrap_or(0)
            }
        }
    }

    /// Seconds since start (0 when stopped).
    pub fn uptime(&self, now_ms: i64) -> u64 {
        self.started_ms.map(|s| ((now_ms - s).max(0) / 1000) as u64).unwrap_or(0)
    }

    /// Deterministic runtime figures at `now_ms` (same seed, guest and time → same values).
    pub fn usage(&self, seed: u64, now_ms: i64) -> Usage {
        let maxmem = self.maxmem();
        let maxdisk = self.maxdisk();
        let maxcpu = self.maxcpu() as f64;
        let uptime = self.uptime(now_ms);
        let id = self.vmid.to_be_bytes();
        let running = self.state != PowerState::Stopped;
        // Activity level per guest, varying slowly (per minute) around a guest-specific base.
        let base = util::unit(seed, &[b"load", &id]);
        let minute = (now_ms / 60_000).to_be_bytes();
        let jitter = util::unit(seed, &[b"jitter", &id, &minute]);
        let cpu =
            if running && self.state == PowerState::Running { (0.02 + 0.3 * base) * (0.6 + 0.8 * jitter) } else { 0.0 };
        let mem = if running { (maxmem as f64 * (0.25 + 0.5 * base) * (0.9 + 0.2 * jitter)) as u64 } else { 0 };
        let disk = match self.kind {
            GuestKind::Qemu => 0, // qemu reports 0 without the agent's fs info
            GuestKind::Lxc if running => (maxdisk as f64 * (0.1 + 0.4 * base)) as u64,
            GuestKind::Lxc => 0,
        };
        let rate = |what: &[u8], scale: f64| -> u64 {
            let r = util::unit(seed, &[what, &id]);
            (uptime as f64 * scale * (0.2 + r)) as u64
        };
        let counters = Counters {
            netin: self.counters_base.netin + rate(b"netin", 20_000.0),
            netout: self.counters_base.netout + rate(b"netout", 8_000.0),
            diskread: self.counters_base.diskread + rate(b"diskread", 50_000.0),
            diskwrite: self.counters_base.diskwrite + rate(b"diskwrite", 30_000.0),
        };
        Usage { cpu: (cpu * 10_000.0).round() / 10_000.0, maxcpu, mem, maxmem, disk, maxdisk, uptime, counters }
    }

    /// Marks the guest running from `now_ms`; the agent answers after `boot` ms.
    pub fn set_running(&mut self, now_ms: i64, boot_ms: i64, pid: u32) {
        self.state = PowerState::Running;
        self.started_ms = Some(now_ms);
        self.agent_ready_ms = Some(now_ms + boot_ms);
        self.pid = Some(pid);
    }

    /// Marks the guest stopped, folding the counters of this run into the base.
    pub fn set_stopped(&mut self, seed: u64, now_ms: i64) {
        let u = self.usage(seed, now_ms);
        self.counters_base = u.counters;
        self.state = PowerState::Stopped;
        self.started_ms = None;
        self.agent_ready_ms = None;
        self.pid = None;
    }

    /// Whether the guest agent answers at `now_ms`.
    pub fn agent_running(&self, now_ms: i64) -> bool {
        self.state == PowerState::Running && self.agent_ready_ms.is_some_and(|t| now_ms >= t)
    }
}

/// Default qemu memory (MiB) used when a create gives none.
pub const DEFAULT_MEMORY_MIB: u64 = 512;
/// A default disk size for seeded images.
pub const SEED_DISK: u64 = 4 * GIB;

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> Guest {
        let mut c = Config::new();
        c.insert("name".into(), "web1".into());
        c.insert("memory".into(), "2048".into());
        c.insert("cores".into(), "2".into());
        c.insert("sockets".into(), "2".into());
        c.insert("scsi0".into(), "local-lvm:vm-100-disk-0,size=32G".into());
        c.insert("ide2".into(), "local-lvm:vm-100-cloudinit,media=cdrom".into());
        c.insert("boot".into(), "order=scsi0".into());
        c.insert("agent".into(), "1".into());
        Guest::new(100, GuestKind::Qemu, "pve1", c)
    }

    #[test]
    fn derived_figures_follow_config() {
        let g = vm();
        assert_eq!(g.maxmem(), 2048 * MIB);
        assert_eq!(g.maxcpu(), 4);
        assert_eq!(g.maxdisk(), 32 * GIB);
        assert!(g.agent_enabled());
        assert_eq!(g.name(), "web1");
        assert_eq!(g.digest().len(), 40);
    }

    #[test]
    fn usage_is_deterministic_and_counters_grow() {
        let mut g = vm();
        g.set_running(1_000_000, 0, 4242);
        let a = g.usage(1, 1_600_000);
        assert_eq!(a, g.usage(1, 1_600_000));
        assert_eq!(a.uptime, 600);
        let b = g.usage(1, 2_200_000);
        assert!(b.counters.netin > a.counters.netin);
        g.set_stopped(1, 2_200_000);
        assert_eq!(g.usage(1, 3_000_000).counters, b.counters);
        assert!(g.check_lock().is_ok());
        g.config.insert("lock".into(), "backup".into());
        assert_eq!(g.check_lock().unwrap_err(), "VM is locked (backup)");
    }
}
