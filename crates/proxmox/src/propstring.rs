//! PVE property strings: small typed builders for disks, NICs and IP configs, and a parser.
//!
//! Many guest options are one string of `key=value` pairs joined by commas, where the
//! first item may omit its key (the schema's `default_key`): `scsi0=local-lvm:32,ssd=1`,
//! `net0=virtio=BC:24:11:00:00:01,bridge=vmbr0`, `ipconfig0=ip=10.0.0.5/24,gw=10.0.0.1`,
//! LXC `net0=name=eth0,bridge=vmbr0,ip=dhcp` and `rootfs=local-lvm:8`. The builders
//! `Display` as the exact string PVE expects (FACTS §4.19, §4.20).

use std::fmt;

use crate::params::pve_bool;

/// Splits a property string into `(key, value)` pairs. A leading item without `=` is
/// given `default_key` (or an empty key when there is none).
pub fn parse_property_string(s: &str, default_key: Option<&str>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, item) in s.split(',').enumerate() {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        match item.split_once('=') {
            Some((k, v)) if i > 0 || !looks_like_volume(item) => out.push((k.trim().to_string(), v.trim().to_string())),
            _ => out.push((default_key.unwrap_or("").to_string(), item.to_string())),
        }
    }
    out
}

/// A first item like `local-lvm:vm-100-disk-0` has no key; one like `virtio=BC:..` does.
/// A volume id never contains `=` before its `:`; a key never contains `:`.
fn looks_like_volume(item: &str) -> bool {
    match (item.find(':'), item.find('=')) {
        (Some(c), Some(e)) => c < e,
        (_, None) => true,
        _ => false,
    }
}

fn push_opt(parts: &mut Vec<String>, key: &str, v: &Option<impl fmt::Display>) {
    if let Some(v) = v {
        parts.push(format!("{key}={v}"));
    }
}

fn push_bool(parts: &mut Vec<String>, key: &str, v: Option<bool>) {
    if let Some(v) = v {
        parts.push(format!("{key}={}", pve_bool(v)));
    }
}

/// What a qemu disk slot (`scsiN`, `virtioN`, `sataN`, `ideN`) points at.
#[derive(Debug, Clone, PartialEq)]
pub enum DiskSource {
    /// Allocate a new volume: `STORAGE:SIZE_GiB`.
    New {
        /// Storage id, e.g. `local-lvm`.
        storage: String,
        /// Size in GiB.
        size_gib: u64,
    },
    /// An existing volume id, e.g. `local-lvm:vm-100-disk-0`.
    Volume(String),
    /// Import an image into a new volume: `STORAGE:0,import-from=SOURCE`.
    Import {
        /// Target storage.
        storage: String,
        /// Source volume id or absolute path.
        from: String,
    },
    /// The cloud-init drive: `STORAGE:cloudinit`.
    CloudInit {
        /// Storage id.
        storage: String,
    },
    /// A CD-ROM with an ISO volume, or empty (`none`).
    Cdrom(Option<String>),
}

/// A qemu disk property string.
#[derive(Debug, Clone, PartialEq)]
pub struct QemuDisk {
    /// What the slot points at.
    pub source: DiskSource,
    /// Further `key=value` options, in order.
    pub options: Vec<(String, String)>,
}

impl QemuDisk {
    /// A new volume of `size_gib` GiB on `storage`.
    pub fn new(storage: impl Into<String>, size_gib: u64) -> Self {
        Self::from_source(DiskSource::New { storage: storage.into(), size_gib })
    }
    /// An existing volume.
    pub fn volume(volid: impl Into<String>) -> Self {
        Self::from_source(DiskSource::Volume(volid.into()))
    }
    /// A new volume on `storage` imported from `from`.
    pub fn import_from(storage: impl Into<String>, from: impl Into<String>) -> Self {
        Self::from_source(DiskSource::Import { storage: storage.into(), from: from.into() })
    }
    /// The cloud-init drive on `storage`.
    pub fn cloudinit(storage: impl Into<String>) -> Self {
        Self::from_source(DiskSource::CloudInit { storage: storage.into() })
    }
    /// A CD-ROM drive holding `iso` (a volume id such as `local:iso/x.iso`), or empty.
    pub fn cdrom(iso: Option<&str>) -> Self {
        Self::from_source(DiskSource::Cdrom(iso.map(str::to_string)))
    }
    fn from_source(source: DiskSource) -> Self {
        Self { source, options: Vec::new() }
    }
    /// Adds any option.
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }
    /// `discard=on|ignore`.
    pub fn discard(self, on: bool) -> Self {
        self.option("discard", if on { "on" } else { "ignore" })
    }
    /// `ssd=1|0`.
    pub fn ssd(self, on: bool) -> Self {
        self.option("ssd", pve_bool(on))
    }
    /// `iothread=1|0`.
    pub fn iothread(self, on: bool) -> Self {
        self.option("iothread", pve_bool(on))
    }
    /// `backup=1|0`.
    pub fn backup(self, on: bool) -> Self {
        self.option("backup", pve_bool(on))
    }
    /// `cache=none|writethrough|writeback|unsafe|directsync`.
    pub fn cache(self, mode: &str) -> Self {
        self.option("cache", mode)
    }
    /// `format=raw|qcow2|...`.
    pub fn format(self, format: &str) -> Self {
        self.option("format", format)
    }
}

impl fmt::Display for QemuDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            DiskSource::New { storage, size_gib } => write!(f, "{storage}:{size_gib}")?,
            DiskSource::Volume(v) => f.write_str(v)?,
            DiskSource::Import { storage, from } => write!(f, "{storage}:0,import-from={from}")?,
            DiskSource::CloudInit { storage } => write!(f, "{storage}:cloudinit")?,
            DiskSource::Cdrom(iso) => write!(f, "{},media=cdrom", iso.as_deref().unwrap_or("none"))?,
        }
        for (k, v) in &self.options {
            write!(f, ",{k}={v}")?;
        }
        Ok(())
    }
}

/// qemu NIC models whose name may carry the MAC (`virtio=BC:24:11:..`).
const QEMU_NIC_MODELS: &[&str] = &[
    "e1000",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
    "rtl8139",
    "virtio",
    "vmxnet3",
];

/// A qemu `netN` property string.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QemuNet {
    /// NIC model (`virtio` when built with [`QemuNet::virtio`]).
    pub model: String,
    /// MAC address; PVE generates one (`BC:24:11:..`) when absent.
    pub macaddr: Option<String>,
    /// Bridge, e.g. `vmbr0`.
    pub bridge: Option<String>,
    /// Enable the PVE firewall on this NIC.
    pub firewall: Option<bool>,
    /// VLAN tag.
    pub tag: Option<u16>,
    /// Rate limit in MB/s.
    pub rate: Option<f64>,
    /// MTU.
    pub mtu: Option<u32>,
    /// Multiqueue count.
    pub queues: Option<u32>,
    /// Link disconnected.
    pub link_down: Option<bool>,
}

impl QemuNet {
    /// A virtio NIC on `bridge`.
    pub fn virtio(bridge: impl Into<String>) -> Self {
        Self { model: "virtio".into(), bridge: Some(bridge.into()), ..Default::default() }
    }
    /// Sets the MAC address.
    pub fn macaddr(mut self, mac: impl Into<String>) -> Self {
        self.macaddr = Some(mac.into());
        self
    }
    /// Enables or disables the firewall.
    pub fn firewall(mut self, on: bool) -> Self {
        self.firewall = Some(on);
        self
    }
    /// Sets the VLAN tag.
    pub fn tag(mut self, tag: u16) -> Self {
        self.tag = Some(tag);
        self
    }
    /// Sets the rate limit (MB/s).
    pub fn rate(mut self, mbps: f64) -> Self {
        self.rate = Some(mbps);
        self
    }

    /// Parses a `netN` value as GET config returns it (`virtio=BC:..,bridge=vmbr0`).
    pub fn parse(s: &str) -> Self {
        let mut net = QemuNet::default();
        for (k, v) in parse_property_string(s, Some("model")) {
            match k.as_str() {
                "model" => net.model = v,
                "macaddr" => net.macaddr = Some(v),
                "bridge" => net.bridge = Some(v),
                "firewall" => net.firewall = Some(v == "1"),
                "tag" => net.tag = v.parse().ok(),
                "rate" => net.rate = v.parse().ok(),
                "mtu" => net.mtu = v.parse().ok(),
                "queues" => net.queues = v.parse().ok(),
                "link_down" => net.link_down = Some(v == "1"),
                m if QEMU_NIC_MODELS.contains(&m) => {
                    net.model = m.to_string();
                    net.macaddr = Some(v);
                }
                _ => {}
            }
        }
        net
    }
}

impl fmt::Display for QemuNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let model = if self.model.is_empty() { "virtio" } else { &self.model };
        let mut parts = vec![match &self.macaddr {
            Some(mac) => format!("{model}={mac}"),
            None => model.to_string(),
        }];
        push_opt(&mut parts, "bridge", &self.bridge);
        push_bool(&mut parts, "firewall", self.firewall);
        push_opt(&mut parts, "tag", &self.tag);
        push_opt(&mut parts, "rate", &self.rate);
        push_opt(&mut parts, "mtu", &self.mtu);
        push_opt(&mut parts, "queues", &self.queues);
        push_bool(&mut parts, "link_down", self.link_down);
        f.write_str(&parts.join(","))
    }
}

/// A qemu cloud-init `ipconfigN` property string.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IpConfig {
    /// `CIDR` or `dhcp`.
    pub ip: Option<String>,
    /// IPv4 gateway.
    pub gw: Option<String>,
    /// `CIDR`, `auto` or `dhcp`.
    pub ip6: Option<String>,
    /// IPv6 gateway.
    pub gw6: Option<String>,
}

impl IpConfig {
    /// IPv4 by DHCP.
    pub fn dhcp() -> Self {
        Self { ip: Some("dhcp".into()), ..Default::default() }
    }
    /// A static IPv4 address (`10.0.0.5/24`) and optional gateway.
    pub fn static_v4(cidr: impl Into<String>, gw: Option<&str>) -> Self {
        Self { ip: Some(cidr.into()), gw: gw.map(str::to_string), ..Default::default() }
    }
    /// Adds IPv6 (`CIDR`, `auto` or `dhcp`) and an optional gateway.
    pub fn with_ip6(mut self, ip6: impl Into<String>, gw6: Option<&str>) -> Self {
        self.ip6 = Some(ip6.into());
        self.gw6 = gw6.map(str::to_string);
        self
    }
    /// Parses an `ipconfigN` value.
    pub fn parse(s: &str) -> Self {
        let mut c = IpConfig::default();
        for (k, v) in parse_property_string(s, None) {
            match k.as_str() {
                "ip" => c.ip = Some(v),
                "gw" => c.gw = Some(v),
                "ip6" => c.ip6 = Some(v),
                "gw6" => c.gw6 = Some(v),
                _ => {}
            }
        }
        c
    }
}

impl fmt::Display for IpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        push_opt(&mut parts, "ip", &self.ip);
        push_opt(&mut parts, "gw", &self.gw);
        push_opt(&mut parts, "ip6", &self.ip6);
        push_opt(&mut parts, "gw6", &self.gw6);
        f.write_str(&parts.join(","))
    }
}

/// An LXC `netN` property string.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LxcNet {
    /// Interface name inside the container, e.g. `eth0`.
    pub name: String,
    /// Bridge.
    pub bridge: Option<String>,
    /// `CIDR`, `dhcp` or `manual`.
    pub ip: Option<String>,
    /// IPv4 gateway.
    pub gw: Option<String>,
    /// `CIDR`, `auto`, `dhcp` or `manual`.
    pub ip6: Option<String>,
    /// IPv6 gateway.
    pub gw6: Option<String>,
    /// MAC address.
    pub hwaddr: Option<String>,
    /// Enable the PVE firewall.
    pub firewall: Option<bool>,
    /// VLAN tag.
    pub tag: Option<u16>,
    /// Rate limit in MB/s.
    pub rate: Option<f64>,
    /// MTU.
    pub mtu: Option<u32>,
}

impl LxcNet {
    /// Interface `name` on `bridge`, no address yet.
    pub fn new(name: impl Into<String>, bridge: impl Into<String>) -> Self {
        Self { name: name.into(), bridge: Some(bridge.into()), ..Default::default() }
    }
    /// IPv4 by DHCP.
    pub fn dhcp(mut self) -> Self {
        self.ip = Some("dhcp".into());
        self
    }
    /// A static IPv4 address and optional gateway.
    pub fn static_v4(mut self, cidr: impl Into<String>, gw: Option<&str>) -> Self {
        self.ip = Some(cidr.into());
        self.gw = gw.map(str::to_string);
        self
    }
    /// Enables or disables the firewall.
    pub fn firewall(mut self, on: bool) -> Self {
        self.firewall = Some(on);
        self
    }
    /// Parses a `netN` value as GET config returns it.
    pub fn parse(s: &str) -> Self {
        let mut n = LxcNet::default();
        for (k, v) in parse_property_string(s, None) {
            match k.as_str() {
                "name" => n.name = v,
                "bridge" => n.bridge = Some(v),
                "ip" => n.ip = Some(v),
                "gw" => n.gw = Some(v),
                "ip6" => n.ip6 = Some(v),
                "gw6" => n.gw6 = Some(v),
                "hwaddr" => n.hwaddr = Some(v),
                "firewall" => n.firewall = Some(v == "1"),
                "tag" => n.tag = v.parse().ok(),
                "rate" => n.rate = v.parse().ok(),
                "mtu" => n.mtu = v.parse().ok(),
                _ => {}
            }
        }
        n
    }
}

impl fmt::Display for LxcNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = vec![format!("name={}", self.name)];
        push_opt(&mut parts, "bridge", &self.bridge);
        push_opt(&mut parts, "ip", &self.ip);
        push_opt(&mut parts, "gw", &self.gw);
        push_opt(&mut parts, "ip6", &self.ip6);
        push_opt(&mut parts, "gw6", &self.gw6);
        push_opt(&mut parts, "hwaddr", &self.hwaddr);
        push_bool(&mut parts, "firewall", self.firewall);
        push_opt(&mut parts, "tag", &self.tag);
        push_opt(&mut parts, "rate", &self.rate);
        push_opt(&mut parts, "mtu", &self.mtu);
        f.write_str(&parts.join(","))
    }
}

/// An LXC `rootfs` or `mpN` property string.
#[derive(Debug, Clone, PartialEq)]
pub struct LxcVolume {
    /// `STORAGE:SIZE_GiB` to allocate, or an existing volume id.
    pub volume: String,
    /// Mount point inside the container (required for `mpN`, absent for `rootfs`).
    pub mp: Option<String>,
    /// Further `key=value` options, in order.
    pub options: Vec<(String, String)>,
}

impl LxcVolume {
    /// A new volume of `size_gib` GiB on `storage`.
    pub fn new(storage: &str, size_gib: u64) -> Self {
        Self { volume: format!("{storage}:{size_gib}"), mp: None, options: Vec::new() }
    }
    /// Mounts the volume at `path` (for `mpN`).
    pub fn mount_at(mut self, path: impl Into<String>) -> Self {
        self.mp = Some(path.into());
        self
    }
    /// Adds any option (`acl`, `quota`, `ro`, `backup`, `size`, ...).
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }
}

impl fmt::Display for LxcVolume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.volume)?;
        if let Some(mp) = &self.mp {
            write!(f, ",mp={mp}")?;
        }
        for (k, v) in &self.options {
            write!(f, ",{k}={v}")?;
        }
        Ok(())
    }
}

/// The `size=` of a disk property string in bytes (`32G`, `512M`, `8388608K`, bare bytes).
pub fn disk_size_bytes(property: &str) -> Option<u64> {
    let size = parse_property_string(property, Some("file")).into_iter().find(|(k, _)| k == "size")?.1;
    parse_size(&size)
}

/// Parses PVE's `DiskSize` (`\d+(\.\d+)?[KMGT]?`, powers of 1024, bare = bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' => (&s[..s.len() - 1], 1u64 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let v: f64 = num.parse().ok()?;
    (v >= 0.0).then(|| (v * mult as f64).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_disks() {
        assert_eq!(
            QemuDisk::new("local-lvm", 32).discard(true).ssd(true).iothread(true).to_string(),
            "local-lvm:32,discard=on,ssd=1,iothread=1"
        );
        assert_eq!(QemuDisk::cloudinit("local-lvm").to_string(), "local-lvm:cloudinit");
        assert_eq!(
            QemuDisk::import_from("local-lvm", "local:import/debian.qcow2").to_string(),
            "local-lvm:0,import-from=local:import/debian.qcow2"
        );
        assert_eq!(QemuDisk::cdrom(Some("local:iso/debian-12.iso")).to_string(), "local:iso/debian-12.iso,media=cdrom");
        assert_eq!(QemuDisk::cdrom(None).to_string(), "none,media=cdrom");
        assert_eq!(QemuDisk::volume("local-lvm:vm-100-disk-0").to_string(), "local-lvm:vm-100-disk-0");
    }

    #[test]
    fn qemu_nets() {
        assert_eq!(
            QemuNet::virtio("vmbr0").firewall(true).tag(10).to_string(),
            "virtio,bridge=vmbr0,firewall=1,tag=10"
        );
        assert_eq!(
            QemuNet::virtio("vmbr0").macaddr("BC:24:11:00:00:01").to_string(),
            "virtio=BC:24:11:00:00:01,bridge=vmbr0"
        );
        let parsed = QemuNet::parse("virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1");
        assert_eq!(parsed.model, "virtio");
        assert_eq!(parsed.macaddr.as_deref(), Some("BC:24:11:AA:BB:CC"));
        assert_eq!(parsed.bridge.as_deref(), Some("vmbr0"));
        assert_eq!(parsed.firewall, Some(true));
        let long = QemuNet::parse("model=e1000,macaddr=AA:BB:CC:DD:EE:FF,bridge=vmbr1");
        assert_eq!(long.model, "e1000");
        assert_eq!(long.macaddr.as_deref(), Some("AA:BB:CC:DD:EE:FF"));
        let bare = QemuNet::parse("virtio,bridge=vmbr0");
        assert_eq!(bare.model, "virtio");
        assert_eq!(bare.macaddr, None);
    }

    #[test]
    fn ipconfigs() {
        assert_eq!(
            IpConfig::static_v4("10.0.10.123/24", Some("10.0.10.1")).to_string(),
            "ip=10.0.10.123/24,gw=10.0.10.1"
        );
        assert_eq!(IpConfig::dhcp().to_string(), "ip=dhcp");
        assert_eq!(IpConfig::dhcp().with_ip6("auto", None).to_string(), "ip=dhcp,ip6=auto");
        let p = IpConfig::parse("ip=10.0.0.5/24,gw=10.0.0.1");
        assert_eq!(p.ip.as_deref(), Some("10.0.0.5/24"));
        assert_eq!(p.gw.as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn lxc_strings() {
        assert_eq!(LxcNet::new("eth0", "vmbr0").dhcp().to_string(), "name=eth0,bridge=vmbr0,ip=dhcp");
        assert_eq!(
            LxcNet::new("eth0", "vmbr0").static_v4("10.0.0.9/24", Some("10.0.0.1")).firewall(true).to_string(),
            "name=eth0,bridge=vmbr0,ip=10.0.0.9/24,gw=10.0.0.1,firewall=1"
        );
        let n = LxcNet::parse("name=eth0,bridge=vmbr0,hwaddr=BC:24:11:01:02:03,ip=dhcp,type=veth");
        assert_eq!(n.name, "eth0");
        assert_eq!(n.hwaddr.as_deref(), Some("BC:24:11:01:02:03"));
        assert_eq!(LxcVolume::new("local-lvm", 8).to_string(), "local-lvm:8");
        assert_eq!(
            LxcVolume::new("local-lvm", 4).mount_at("/data").option("backup", "1").to_string(),
            "local-lvm:4,mp=/data,backup=1"
        );
    }

    #[test]
    fn parser_default_keys_and_sizes() {
        assert_eq!(
            parse_property_string("local-lvm:vm-100-disk-0,size=32G", Some("file")),
            vec![("file".to_string(), "local-lvm:vm-100-disk-0".to_string()), ("size".to_string(), "32G".to_string())]
        );
        assert_eq!(
            parse_property_string("current=2048", Some("current")),
            vec![("current".to_string(), "2048".to_string())]
        );
        assert_eq!(parse_property_string("2048", Some("current")), vec![("current".to_string(), "2048".to_string())]);
        assert_eq!(disk_size_bytes("local-lvm:vm-100-disk-0,size=32G"), Some(32 << 30));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1.5K"), Some(1536));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("x"), None);
    }
}
