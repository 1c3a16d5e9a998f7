//! LXC containers: create/restore, config (GET and the synchronous PUT; LXC has no
//! async POST), clone, template and the container's network interfaces.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::guest::{ConfigUpdate, Guest, GuestKind, Lxc, indexed};
use crate::api::qemu::AgentIpAddress;
use crate::de;
use crate::error::Result;
use crate::params::Params;
use crate::propstring::{LxcNet, LxcVolume};

impl GuestKind for Lxc {
    const PATH: &'static str = "lxc";
    type Config = LxcConfig;
    type ConfigUpdate = LxcConfigUpdate;
    type CloneParams = LxcClone;
}

/// Container options shared by create and config updates.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LxcOptions {
    /// Hostname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Memory, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Swap, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap: Option<u64>,
    /// CPU cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// CPU limit (0 = none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpulimit: Option<f64>,
    /// CPU weight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuunits: Option<u32>,
    /// OS type (`debian`, `ubuntu`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ostype: Option<String>,
    /// Architecture.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Root filesystem property string; see [`LxcOptions::rootfs_volume`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<String>,
    /// Unprivileged container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unprivileged: Option<bool>,
    /// Features property string (`nesting=1,keyctl=1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<String>,
    /// DNS servers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nameserver: Option<String>,
    /// DNS search domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub searchdomain: Option<String>,
    /// Start at node boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onboot: Option<bool>,
    /// Protect against removal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protection: Option<bool>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tags, `;`-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    /// Time zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Indexed slots (`net0`, `mp0`) and any other option, by PVE name.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl LxcOptions {
    /// No options.
    pub fn new() -> Self {
        Self::default()
    }

    setters! {
        /// Sets `hostname`.
        hostname: String;
        /// Sets `memory` (MiB).
        memory: u64;
        /// Sets `swap` (MiB).
        swap: u64;
        /// Sets `cores`.
        cores: u32;
        /// Sets `cpulimit`.
        cpulimit: f64;
        /// Sets `cpuunits`.
        cpuunits: u32;
        /// Sets `ostype`.
        ostype: String;
        /// Sets `arch`.
        arch: String;
        /// Sets `rootfs` (a property string).
        rootfs: String;
        /// Sets `unprivileged`.
        unprivileged: bool;
        /// Sets `features`.
        features: String;
        /// Sets `nameserver`.
        nameserver: String;
        /// Sets `searchdomain`.
        searchdomain: String;
        /// Sets `onboot`.
        onboot: bool;
        /// Sets `protection`.
        protection: bool;
        /// Sets `description`.
        description: String;
        /// Sets `tags`.
        tags: String;
        /// Sets `timezone`.
        timezone: String;
    }

    /// Sets `rootfs` from a volume builder.
    pub fn rootfs_volume(self, volume: LxcVolume) -> Self {
        self.rootfs(volume.to_string())
    }

    /// Sets NIC `net{index}`.
    pub fn net(self, index: u32, net: LxcNet) -> Self {
        self.set(format!("net{index}"), net.to_string())
    }

    /// Sets mount point `mp{index}`.
    pub fn mount_point(self, index: u32, volume: LxcVolume) -> Self {
        self.set(format!("mp{index}"), volume.to_string())
    }

    /// Sets any option by its PVE name.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }
}

/// Parameters of `POST /nodes/{node}/lxc` (create, or restore with `restore=1`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LxcCreate {
    /// The new container's id.
    pub vmid: u32,
    /// Template volume id (`local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst`), or
    /// the backup volume id when restoring.
    pub ostemplate: String,
    /// Container options.
    #[serde(flatten)]
    pub options: LxcOptions,
    /// Root password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// SSH public keys, one per line (not URL-encoded, unlike qemu `sshkeys`).
    #[serde(rename = "ssh-public-keys", skip_serializing_if = "Option::is_none")]
    pub ssh_public_keys: Option<String>,
    /// Default storage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Add the container to this pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Start once created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<bool>,
    /// Restore: `ostemplate` is a backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<bool>,
    /// Overwrite an existing container (restore).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// Assign new unique MACs (restore).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique: Option<bool>,
}

impl LxcCreate {
    /// Create container `vmid` from template `ostemplate` with `options`.
    pub fn new(vmid: u32, ostemplate: impl Into<String>, options: LxcOptions) -> Self {
        Self { vmid, ostemplate: ostemplate.into(), options, ..Default::default() }
    }

    /// Restore backup `archive` (a volume id) as container `vmid`.
    pub fn restore(vmid: u32, archive: impl Into<String>) -> Self {
        Self { vmid, ostemplate: archive.into(), restore: Some(true), ..Default::default() }
    }

    /// Sets the SSH public keys (joined by newlines).
    pub fn ssh_keys<S: AsRef<str>>(mut self, keys: &[S]) -> Self {
        let joined: Vec<&str> = keys.iter().map(|k| k.as_ref().trim()).collect();
        self.ssh_public_keys = Some(joined.join("\n"));
        self
    }

    setters! {
        /// Sets `password`.
        password: String;
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

/// Parameters of `PUT .../lxc/{vmid}/config`.
pub type LxcConfigUpdate = ConfigUpdate<LxcOptions>;

/// Parameters of `POST .../lxc/{vmid}/clone`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LxcClone {
    /// The clone's id.
    pub newid: u32,
    /// The clone's hostname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Target node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Full copy (linked is the default for templates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full: Option<bool>,
    /// Target storage (full clones only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
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
    pub bwlimit: Option<f64>,
}

impl LxcClone {
    /// A clone with id `newid`.
    pub fn new(newid: u32) -> Self {
        Self { newid, ..Default::default() }
    }

    setters! {
        /// Sets `hostname`.
        hostname: String;
        /// Sets `target`.
        target: String;
        /// Sets `full`.
        full: bool;
        /// Sets `storage`.
        storage: String;
        /// Sets `pool`.
        pool: String;
        /// Sets `snapname`.
        snapname: String;
        /// Sets `description`.
        description: String;
    }
}

/// `GET .../lxc/{vmid}/config`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct LxcConfig {
    /// Config digest.
    #[serde(default)]
    pub digest: String,
    /// Hostname.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Memory, MiB.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub memory: Option<u64>,
    /// Swap, MiB.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub swap: Option<u64>,
    /// Cores.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub cores: Option<u32>,
    /// OS type.
    #[serde(default)]
    pub ostype: Option<String>,
    /// Architecture.
    #[serde(default)]
    pub arch: Option<String>,
    /// Root filesystem property string.
    #[serde(default)]
    pub rootfs: Option<String>,
    /// Unprivileged.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub unprivileged: Option<bool>,
    /// Features.
    #[serde(default)]
    pub features: Option<String>,
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
    /// Every other key (`net0`, `mp0`, `unused0`, ...).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl LxcConfig {
    /// NICs by index.
    pub fn nets(&self) -> BTreeMap<u32, LxcNet> {
        indexed(&self.extra, "net").map(|(i, v)| (i, LxcNet::parse(v))).collect()
    }

    /// Mount points (`mpN`) by index, as property strings.
    pub fn mount_points(&self) -> BTreeMap<u32, String> {
        indexed(&self.extra, "mp").map(|(i, v)| (i, v.to_string())).collect()
    }
}

/// An entry of `GET .../lxc/{vmid}/interfaces`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct LxcInterface {
    /// Interface name.
    pub name: String,
    /// MAC address.
    #[serde(default)]
    pub hwaddr: Option<String>,
    /// MAC address (newer field name).
    #[serde(rename = "hardware-address", default)]
    pub hardware_address: Option<String>,
    /// IPv4 address with prefix (`10.0.0.5/24`).
    #[serde(default)]
    pub inet: Option<String>,
    /// IPv6 address with prefix.
    #[serde(default)]
    pub inet6: Option<String>,
    /// All addresses.
    #[serde(rename = "ip-addresses", default)]
    pub ip_addresses: Vec<AgentIpAddress>,
}

impl Guest<Lxc> {
    /// `GET .../interfaces` (running containers).
    pub async fn interfaces(&self) -> Result<Vec<LxcInterface>> {
        self.client.call(Method::GET, &self.path("/interfaces"), &Params::new()).await
    }

    /// `POST .../template`: converts the container into a template (synchronous in PVE).
    pub async fn convert_to_template(&self) -> Result<()> {
        let _: Value = self.client.call(Method::POST, &self.path("/template"), &Params::new()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_like_facts_example() {
        let opts = LxcOptions::new()
            .hostname("ct1")
            .rootfs_volume(LxcVolume::new("local-lvm", 8))
            .memory(512)
            .swap(512)
            .cores(1)
            .net(0, LxcNet::new("eth0", "vmbr0").dhcp())
            .unprivileged(true);
        let c = LxcCreate::new(200, "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", opts)
            .ssh_keys(&["ssh-ed25519 AAAA+/= a@b", "ssh-rsa BBB c@d"])
            .password("pw");
        let p = Params::from_serialize(&c).unwrap();
        assert_eq!(p.get("vmid"), Some("200"));
        assert_eq!(p.get("rootfs"), Some("local-lvm:8"));
        assert_eq!(p.get("net0"), Some("name=eth0,bridge=vmbr0,ip=dhcp"));
        assert_eq!(p.get("unprivileged"), Some("1"));
        // Not pre-encoded: only the form encoding applies.
        assert_eq!(p.get("ssh-public-keys"), Some("ssh-ed25519 AAAA+/= a@b\nssh-rsa BBB c@d"));
        assert!(p.to_form().contains("ssh-public-keys=ssh-ed25519+AAAA%2B%2F%3D+a%40b%0Assh-rsa"));
        assert_eq!(p.get("restore"), None);
    }

    #[test]
    fn restore_sets_flag_and_archive() {
        let p = Params::from_serialize(
            &LxcCreate::restore(201, "local:backup/vzdump-lxc-200-2024_01_01-00_00_00.tar.zst").storage("local-lvm"),
        )
        .unwrap();
        assert_eq!(p.get("restore"), Some("1"));
        assert_eq!(p.get("ostemplate"), Some("local:backup/vzdump-lxc-200-2024_01_01-00_00_00.tar.zst"));
    }

    #[test]
    fn config_and_interfaces_decode() {
        let c: LxcConfig = serde_json::from_value(serde_json::json!({
            "digest":"d","hostname":"ct1","memory":"512","swap":512,"cores":1,
            "rootfs":"local-lvm:vm-200-disk-0,size=8G","unprivileged":1,
            "net0":"name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:02,ip=dhcp,type=veth",
            "mp0":"local-lvm:vm-200-disk-1,mp=/data,size=4G"
        }))
        .unwrap();
        assert_eq!(c.memory, Some(512));
        assert_eq!(c.unprivileged, Some(true));
        assert_eq!(c.nets()[&0].hwaddr.as_deref(), Some("BC:24:11:00:00:02"));
        assert!(c.mount_points()[&0].contains("mp=/data"));
        let ifs: Vec<LxcInterface> = serde_json::from_str(
            r#"[{"name":"lo","hwaddr":"00:00:00:00:00:00","hardware-address":"00:00:00:00:00:00","inet":"127.0.0.1/8","ip-addresses":[{"ip-address":"127.0.0.1","ip-address-type":"inet","prefix":8}]},{"name":"eth0","hwaddr":"bc:24:11:00:00:02","hardware-address":"bc:24:11:00:00:02","inet":"10.0.0.20/24","ip-addresses":[]}]"#,
        )
        .unwrap();
        assert_eq!(ifs[1].inet.as_deref(), Some("10.0.0.20/24"));
    }
}
