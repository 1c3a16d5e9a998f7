//! qemu VMs: create/restore, config (GET, sync PUT, async POST), clone, template and
//! the guest agent's network interfaces.
//!
//! Request structs hold the commonly used options as typed fields and everything else
//! (indexed slots such as `scsi0`, `net0`, `ipconfig0`, and rarer keys) in `extra`, set
//! through the property-string builders of [`crate::propstring`].

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::guest::{ConfigUpdate, Guest, GuestKind, Qemu, indexed};
use crate::de;
use crate::error::Result;
use crate::params::{Params, decode_sshkeys, encode_sshkeys};
use crate::propstring::{IpConfig, QemuDisk, QemuNet, parse_property_string};
use crate::upid::Upid;

impl GuestKind for Qemu {
    const PATH: &'static str = "qemu";
    type Config = QemuConfig;
    type ConfigUpdate = QemuConfigUpdate;
    type CloneParams = QemuClone;
}

/// VM options shared by create and config updates.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct QemuOptions {
    /// VM name (a DNS name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Memory, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Balloon target, MiB (0 disables the balloon device).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balloon: Option<u64>,
    /// Cores per socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Sockets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u32>,
    /// CPU type, e.g. `x86-64-v2-AES` or `host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// CPU limit (0 = none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpulimit: Option<f64>,
    /// OS type (`l26`, `win11`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ostype: Option<String>,
    /// Machine type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// `seabios` or `ovmf`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bios: Option<String>,
    /// SCSI controller, e.g. `virtio-scsi-pci`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scsihw: Option<String>,
    /// Boot order, e.g. `order=scsi0;ide2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot: Option<String>,
    /// Guest agent property string (`1`, `enabled=1,fstrim_cloned_disks=1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Display, e.g. `serial0` or `std`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vga: Option<String>,
    /// cloud-init user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciuser: Option<String>,
    /// cloud-init password (PVE stores it hashed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipassword: Option<String>,
    /// cloud-init SSH keys, already percent-encoded: set them with [`QemuOptions::ssh_keys`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sshkeys: Option<String>,
    /// cloud-init DNS servers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nameserver: Option<String>,
    /// cloud-init DNS search domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub searchdomain: Option<String>,
    /// cloud-init format (`nocloud`, `configdrive2`, `opennebula`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub citype: Option<String>,
    /// Upgrade packages on first boot (PVE default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciupgrade: Option<bool>,
    /// Custom cloud-init snippets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cicustom: Option<String>,
    /// Description (notes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tags, `;`-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    /// Start at node boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onboot: Option<bool>,
    /// Protect against removal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protection: Option<bool>,
    /// Indexed slots and any other option, by PVE name.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl QemuOptions {
    /// No options.
    pub fn new() -> Self {
        Self::default()
    }

    setters! {
        /// Sets `name`.
        name: String;
        /// Sets `memory` (MiB).
        memory: u64;
        /// Sets `balloon` (MiB).
        balloon: u64;
        /// Sets `cores`.
        cores: u32;
        /// Sets `sockets`.
        sockets: u32;
        /// Sets `cpu`.
        cpu: String;
        /// Sets `cpulimit`.
        cpulimit: f64;
        /// Sets `ostype`.
        ostype: String;
        /// Sets `machine`.
        machine: String;
        /// Sets `bios`.
        bios: String;
        /// Sets `scsihw`.
        scsihw: String;
        /// Sets `boot`.
        boot: String;
        /// Sets `agent`.
        agent: String;
        /// Sets `vga`.
        vga: String;
        /// Sets `ciuser`.
        ciuser: String;
        /// Sets `cipassword`.
        cipassword: String;
        /// Sets `nameserver`.
        nameserver: String;
        /// Sets `searchdomain`.
        searchdomain: String;
        /// Sets `citype`.
        citype: String;
        /// Sets `ciupgrade`.
        ciupgrade: bool;
        /// Sets `cicustom`.
        cicustom: String;
        /// Sets `description`.
        description: String;
        /// Sets `tags`.
        tags: String;
        /// Sets `onboot`.
        onboot: bool;
        /// Sets `protection`.
        protection: bool;
    }

    /// Sets cloud-init `sshkeys` from OpenSSH public keys (encoded as PVE requires).
    pub fn ssh_keys<S: AsRef<str>>(mut self, keys: &[S]) -> Self {
        self.sshkeys = Some(encode_sshkeys(keys));
        self
    }

    /// Enables (or disables) the QEMU guest agent.
    pub fn agent_enabled(self, on: bool) -> Self {
        self.agent(if on { "1" } else { "0" })
    }

    /// Sets the boot order, e.g. `["scsi0", "ide2"]` → `order=scsi0;ide2`.
    pub fn boot_order(self, devices: &[&str]) -> Self {
        self.boot(format!("order={}", devices.join(";")))
    }

    /// Sets disk slot `slot` (`scsi0`, `virtio1`, `ide2`, `efidisk0`, ...).
    pub fn disk(self, slot: &str, disk: QemuDisk) -> Self {
        self.set(slot, disk.to_string())
    }

    /// Sets NIC `net{index}`.
    pub fn net(self, index: u32, net: QemuNet) -> Self {
        self.set(format!("net{index}"), net.to_string())
    }

    /// Sets cloud-init `ipconfig{index}`.
    pub fn ipconfig(self, index: u32, config: IpConfig) -> Self {
        self.set(format!("ipconfig{index}"), config.to_string())
    }

    /// A serial port `serial{index}=socket` (needed for `vga=serial0`).
    pub fn serial_socket(self, index: u32) -> Self {
        self.set(format!("serial{index}"), "socket")
    }

    /// Sets any option by its PVE name.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }
}

/// Parameters of `POST /nodes/{node}/qemu` (create, or restore with `archive`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct QemuCreate {
    /// The new VM's id.
    pub vmid: u32,
    /// VM options.
    #[serde(flatten)]
    pub options: QemuOptions,
    /// Restore from this backup volume id (or path) instead of creating.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// Default storage for disks (restore).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Add the VM to this pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Start the VM once created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<bool>,
    /// Overwrite an existing VM (restore).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// Assign new unique MACs (restore).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique: Option<bool>,
    /// Restore bandwidth limit, KiB/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bwlimit: Option<u64>,
    /// Start the VM while restoring (PBS only).
    #[serde(rename = "live-restore", skip_serializing_if = "Option::is_none")]
    pub live_restore: Option<bool>,
}

impl QemuCreate {
    /// Create VM `vmid` with `options`.
    pub fn new(vmid: u32, options: QemuOptions) -> Self {
        Self { vmid, options, ..Default::default() }
    }

    /// Restore the backup `archive` (a volume id such as
    /// `local:backup/vzdump-qemu-100-2024_01_01-00_00_00.vma.zst`) as VM `vmid`.
    pub fn restore(vmid: u32, archive: impl Into<String>) -> Self {
        Self { vmid, archive: Some(archive.into()), ..Default::default() }
    }

    setters! {
        /// Sets `storage`.
        storage: String;
        /// Sets `pool`.
        pool: String;
        /// Sets `start`.
        start: bool;
        /// Sets `force`.
        force: bool;
        /// Sets `unique`.
        unique: bool;
    }
}

/// Parameters of `PUT`/`POST .../qemu/{vmid}/config`.
pub type QemuConfigUpdate = ConfigUpdate<QemuOptions>;

/// Parameters of `POST .../qemu/{vmid}/clone`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct QemuClone {
    /// The clone's id.
    pub newid: u32,
    /// The clone's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Target node (needs shared storage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Full copy; PVE defaults to linked for templates and full otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full: Option<bool>,
    /// Target storage (full clones only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Disk format (full clones only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Add the clone to this pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Clone from this snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapname: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Bandwidth limit, KiB/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bwlimit: Option<u64>,
}

impl QemuClone {
    /// A clone with id `newid`.
    pub fn new(newid: u32) -> Self {
        Self { newid, ..Default::default() }
    }

    setters! {
        /// Sets `name`.
        name: String;
        /// Sets `target`.
        target: String;
        /// Sets `full`.
        full: bool;
        /// Sets `storage`.
        storage: String;
        /// Sets `format`.
        format: String;
        /// Sets `pool`.
        pool: String;
        /// Sets `snapname`.
        snapname: String;
        /// Sets `description`.
        description: String;
    }
}

/// `GET .../qemu/{vmid}/config`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct QemuConfig {
    /// Config digest (pass it back as `digest` to detect concurrent changes).
    #[serde(default)]
    pub digest: String,
    /// VM name.
    #[serde(default)]
    pub name: Option<String>,
    /// Memory: a number or, in 8.x, the property string `[current=]MiB`.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub memory: Option<String>,
    /// Balloon target, MiB.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub balloon: Option<u64>,
    /// Cores.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub cores: Option<u32>,
    /// Sockets.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub sockets: Option<u32>,
    /// CPU type.
    #[serde(default)]
    pub cpu: Option<String>,
    /// OS type.
    #[serde(default)]
    pub ostype: Option<String>,
    /// Boot order.
    #[serde(default)]
    pub boot: Option<String>,
    /// Guest agent property string.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub agent: Option<String>,
    /// SCSI controller.
    #[serde(default)]
    pub scsihw: Option<String>,
    /// Display.
    #[serde(default)]
    pub vga: Option<String>,
    /// cloud-init user.
    #[serde(default)]
    pub ciuser: Option<String>,
    /// cloud-init password (hashed, or `**********`).
    #[serde(default)]
    pub cipassword: Option<String>,
    /// cloud-init SSH keys, percent-encoded as stored; see [`QemuConfig::ssh_keys`].
    #[serde(default)]
    pub sshkeys: Option<String>,
    /// DNS servers.
    #[serde(default)]
    pub nameserver: Option<String>,
    /// DNS search domain.
    #[serde(default)]
    pub searchdomain: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Option<String>,
    /// Lock held by a running task.
    #[serde(default)]
    pub lock: Option<String>,
    /// Is a template.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub template: Option<bool>,
    /// Start at boot.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub onboot: Option<bool>,
    /// Protected against removal.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub protection: Option<bool>,
    /// Every other key (`scsi0`, `net0`, `ipconfig0`, `smbios1`, `vmgenid`, ...).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Disk slot prefixes of a qemu config.
const DISK_PREFIXES: &[&str] = &["scsi", "virtio", "sata", "ide", "efidisk", "tpmstate"];

impl QemuConfig {
    /// Memory in MiB, from either form of `memory`.
    pub fn memory_mib(&self) -> Option<u64> {
        let m = self.memory.as_deref()?;
        parse_property_string(m, Some("current"))
            .into_iter()
            .find(|(k, _)| k == "current")
            .and_then(|(_, v)| v.parse().ok())
    }

    /// The cloud-init SSH keys, decoded.
    pub fn ssh_keys(&self) -> Vec<String> {
        self.sshkeys.as_deref().map(decode_sshkeys).unwrap_or_default()
    }

    /// NICs by index.
    pub fn nets(&self) -> BTreeMap<u32, QemuNet> {
        indexed(&self.extra, "net").map(|(i, v)| (i, QemuNet::parse(v))).collect()
    }

    /// cloud-init IP configs by index.
    pub fn ipconfigs(&self) -> BTreeMap<u32, IpConfig> {
        indexed(&self.extra, "ipconfig").map(|(i, v)| (i, IpConfig::parse(v))).collect()
    }

    /// Disk slots (`scsi0`, `ide2`, ...) and their property strings.
    pub fn disks(&self) -> BTreeMap<String, String> {
        self.extra
            .iter()
            .filter(|(k, _)| {
                DISK_PREFIXES
                    .iter()
                    .any(|p| k.strip_prefix(p).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
            })
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect()
    }

    /// A raw config value as a string (numbers converted).
    pub fn get(&self, key: &str) -> Option<String> {
        match self.extra.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

/// An IP address reported by the guest agent (also used by LXC `interfaces`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct AgentIpAddress {
    /// The address.
    #[serde(rename = "ip-address")]
    pub ip_address: String,
    /// `ipv4` or `ipv6`.
    #[serde(rename = "ip-address-type", default)]
    pub ip_address_type: Option<String>,
    /// Prefix length.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub prefix: Option<u8>,
}

/// An interface from `agent/network-get-interfaces`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct AgentInterface {
    /// Interface name inside the guest (`lo`, `eth0`, `ens18`).
    pub name: String,
    /// MAC address.
    #[serde(rename = "hardware-address", default)]
    pub hardware_address: Option<String>,
    /// Addresses.
    #[serde(rename = "ip-addresses", default)]
    pub ip_addresses: Vec<AgentIpAddress>,
    /// Counters, as the agent reports them.
    #[serde(default)]
    pub statistics: Option<Value>,
}

#[derive(Deserialize)]
struct AgentResult<T> {
    result: T,
}

impl Guest<Qemu> {
    /// `POST .../config`: asynchronous update; task `qmconfig`.
    pub async fn update_config_async(&self, update: &QemuConfigUpdate) -> Result<Upid> {
        self.client.call_with(Method::POST, &self.path("/config"), update).await
    }

    /// `POST .../template`: converts the VM into a template; task `qmtemplate`.
    pub async fn convert_to_template(&self) -> Result<Upid> {
        self.client.call(Method::POST, &self.path("/template"), &Params::new()).await
    }

    /// `GET .../agent/network-get-interfaces`; 500 `No QEMU guest agent configured` or
    /// `QEMU guest agent is not running` (transient) without an agent.
    pub async fn agent_network_interfaces(&self) -> Result<Vec<AgentInterface>> {
        let r: AgentResult<Vec<AgentInterface>> =
            self.client.call(Method::GET, &self.path("/agent/network-get-interfaces"), &Params::new()).await?;
        Ok(r.result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propstring::{IpConfig, QemuDisk, QemuNet};

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlx2uMl6O7otZxx5t83ZWNSS+gqAj3/2gOtI6dRPT+R test@host";

    #[test]
    fn create_body_like_facts_example() {
        let opts = QemuOptions::new()
            .name("web1")
            .memory(2048)
            .cores(2)
            .sockets(1)
            .cpu("x86-64-v2-AES")
            .ostype("l26")
            .scsihw("virtio-scsi-pci")
            .disk("scsi0", QemuDisk::new("local-lvm", 32))
            .disk("ide2", QemuDisk::cloudinit("local-lvm"))
            .boot_order(&["scsi0"])
            .net(0, QemuNet::virtio("vmbr0").firewall(true))
            .ipconfig(0, IpConfig::static_v4("10.0.10.123/24", Some("10.0.10.1")))
            .ciuser("ubuntu")
            .ssh_keys(&[KEY])
            .agent_enabled(true)
            .serial_socket(0)
            .vga("serial0");
        let p = Params::from_serialize(&QemuCreate::new(123, opts)).unwrap();
        assert_eq!(p.get("vmid"), Some("123"));
        assert_eq!(p.get("memory"), Some("2048"));
        assert_eq!(p.get("scsi0"), Some("local-lvm:32"));
        assert_eq!(p.get("ide2"), Some("local-lvm:cloudinit"));
        assert_eq!(p.get("boot"), Some("order=scsi0"));
        assert_eq!(p.get("net0"), Some("virtio,bridge=vmbr0,firewall=1"));
        assert_eq!(p.get("ipconfig0"), Some("ip=10.0.10.123/24,gw=10.0.10.1"));
        assert_eq!(p.get("agent"), Some("1"));
        assert_eq!(p.get("serial0"), Some("socket"));
        assert!(p.get("sshkeys").unwrap().starts_with("ssh-ed25519%20AAAA"));
        assert_eq!(p.get("archive"), None);
        assert!(p.to_form().contains("sshkeys=ssh-ed25519%2520AAAA"));
    }

    #[test]
    fn restore_and_update_bodies() {
        let p = Params::from_serialize(
            &QemuCreate::restore(105, "local:backup/vzdump-qemu-100-2024_01_01-00_00_00.vma.zst")
                .storage("local-lvm")
                .force(true),
        )
        .unwrap();
        assert_eq!(p.get("archive"), Some("local:backup/vzdump-qemu-100-2024_01_01-00_00_00.vma.zst"));
        assert_eq!(p.get("force"), Some("1"));
        assert_eq!(p.get("storage"), Some("local-lvm"));
        let u = QemuConfigUpdate::new(QemuOptions::new().cores(4).onboot(true))
            .delete_keys(&["ide2", "net1"])
            .digest("abc");
        let p = Params::from_serialize(&u).unwrap();
        assert_eq!(p.get("cores"), Some("4"));
        assert_eq!(p.get("onboot"), Some("1"));
        assert_eq!(p.get("delete"), Some("ide2,net1"));
        assert_eq!(p.get("digest"), Some("abc"));
        let c = Params::from_serialize(&QemuClone::new(200).name("c1").full(false)).unwrap();
        assert_eq!(c.get("newid"), Some("200"));
        assert_eq!(c.get("full"), Some("0"));
        assert_eq!(c.get("storage"), None);
    }

    #[test]
    fn config_helpers() {
        let encoded = encode_sshkeys(&[KEY]);
        let json = serde_json::json!({
            "digest": "d1", "name": "web1", "memory": "current=2048", "cores": "2",
            "agent": 1, "template": "1", "sshkeys": encoded,
            "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1",
            "ipconfig0": "ip=10.0.0.5/24,gw=10.0.0.1",
            "scsi0": "local-lvm:vm-100-disk-0,size=32G", "ide2": "local-lvm:vm-100-cloudinit,media=cdrom",
            "scsihw": "virtio-scsi-pci", "smbios1": "uuid=x", "vmgenid": "y"
        });
        let c: QemuConfig = serde_json::from_value(json).unwrap();
        assert_eq!(c.memory_mib(), Some(2048));
        assert_eq!(c.cores, Some(2));
        assert_eq!(c.agent.as_deref(), Some("1"));
        assert_eq!(c.template, Some(true));
        assert_eq!(c.ssh_keys(), vec![KEY.to_string()]);
        assert_eq!(c.nets()[&0].macaddr.as_deref(), Some("BC:24:11:00:00:01"));
        assert_eq!(c.ipconfigs()[&0].gw.as_deref(), Some("10.0.0.1"));
        let disks = c.disks();
        assert_eq!(disks.len(), 2);
        assert!(disks.contains_key("scsi0") && disks.contains_key("ide2"));
        assert_eq!(c.get("smbios1").as_deref(), Some("uuid=x"));
        let plain: QemuConfig = serde_json::from_value(serde_json::json!({"digest":"x","memory":1024})).unwrap();
        assert_eq!(plain.memory_mib(), Some(1024));
    }

    #[test]
    fn agent_interfaces_decode() {
        let r: AgentResult<Vec<AgentInterface>> = serde_json::from_str(
            r#"{"result":[{"name":"lo","hardware-address":"00:00:00:00:00:00","ip-addresses":[{"ip-address":"127.0.0.1","ip-address-type":"ipv4","prefix":8}]},{"name":"eth0","hardware-address":"bc:24:11:aa:bb:cc","ip-addresses":[{"ip-address":"10.0.0.10","ip-address-type":"ipv4","prefix":24}],"statistics":{"rx-bytes":1}}]}"#,
        )
        .unwrap();
        assert_eq!(r.result[1].ip_addresses[0].ip_address, "10.0.0.10");
        assert_eq!(r.result[1].ip_addresses[0].prefix, Some(24));
    }
}
