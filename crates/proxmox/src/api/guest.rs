//! Calls shared by qemu VMs and LXC containers (`/nodes/{node}/{qemu|lxc}/{vmid}/...`).
//!
//! [`Guest<K>`] is one guest; `K` is [`Qemu`] or [`Lxc`], which fixes the path and the
//! kind-specific request and response types (config, clone). Everything both kinds
//! share lives here: power actions, config, delete, clone, resize, snapshots, rrddata
//! and firewall rules. Kind-specific calls are in `api::qemu` and `api::lxc`.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::rrd::{Cf, RrdPoint, Timeframe, rrd_query};
use crate::client::{ProxmoxClient, path_segment};
use crate::de;
use crate::error::Result;
use crate::params::Params;
use crate::upid::Upid;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Qemu {}
    impl Sealed for super::Lxc {}
}

/// The kind of guest: fixes the API path and the kind-specific types.
pub trait GuestKind: sealed::Sealed + Send + Sync + 'static {
    /// Path component: `qemu` or `lxc`.
    const PATH: &'static str;
    /// GET config response.
    type Config: DeserializeOwned + Send;
    /// PUT config request.
    type ConfigUpdate: Serialize + Sync;
    /// Clone request.
    type CloneParams: Serialize + Sync;
}

/// qemu virtual machines.
#[derive(Debug)]
pub enum Qemu {}

/// LXC containers.
#[derive(Debug)]
pub enum Lxc {}

/// One guest on one node.
pub struct Guest<K> {
    pub(crate) client: ProxmoxClient,
    pub(crate) node: String,
    pub(crate) vmid: u32,
    pub(crate) kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Guest<K> {
    fn clone(&self) -> Self {
        Self { client: self.client.clone(), node: self.node.clone(), vmid: self.vmid, kind: PhantomData }
    }
}

impl<K: GuestKind> fmt::Debug for Guest<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guest({}/{}/{})", self.node, K::PATH, self.vmid)
    }
}

/// `GET .../status/current`, and the items of `GET /nodes/{node}/{qemu|lxc}`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct GuestStatus {
    /// Guest id (a string in LXC lists).
    #[serde(deserialize_with = "de::int")]
    pub vmid: u32,
    /// `running` or `stopped`.
    pub status: String,
    /// qemu's finer state: `running`, `paused`, `prelaunch`, ...
    #[serde(default)]
    pub qmpstatus: Option<String>,
    /// Name (qemu) or hostname (lxc).
    #[serde(default)]
    pub name: Option<String>,
    /// CPU usage (fraction of `cpus`).
    #[serde(default, deserialize_with = "de::opt_float")]
    pub cpu: Option<f64>,
    /// Virtual CPUs.
    #[serde(default, deserialize_with = "de::opt_float")]
    pub cpus: Option<f64>,
    /// Memory used, bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub mem: Option<u64>,
    /// Memory size, bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub maxmem: Option<u64>,
    /// Disk used, bytes (LXC; 0 for qemu).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub disk: Option<u64>,
    /// Root disk size, bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub maxdisk: Option<u64>,
    /// Swap size, bytes (LXC).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub maxswap: Option<u64>,
    /// Uptime, seconds.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub uptime: Option<u64>,
    /// Process id (`null` for templates and stopped guests).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub pid: Option<u32>,
    /// Network in since start, bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub netin: Option<u64>,
    /// Network out since start, bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub netout: Option<u64>,
    /// Disk read since start, bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub diskread: Option<u64>,
    /// Disk written since start, bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub diskwrite: Option<u64>,
    /// Guest agent enabled (qemu).
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub agent: Option<bool>,
    /// Current lock.
    #[serde(default)]
    pub lock: Option<String>,
    /// Is a template.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub template: Option<bool>,
    /// Tags, `;`-separated.
    #[serde(default)]
    pub tags: Option<String>,
    /// HA state object.
    #[serde(default)]
    pub ha: Option<Value>,
}

impl GuestStatus {
    /// `status == "running"` (a paused qemu VM is also `running`; see `qmpstatus`).
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }
    /// qemu reports `qmpstatus: paused` (or `suspended`).
    pub fn is_paused(&self) -> bool {
        matches!(self.qmpstatus.as_deref(), Some("paused" | "suspended"))
    }
}

/// Options of `POST .../status/shutdown` valid for both kinds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShutdownOptions {
    /// Seconds to wait for a clean shutdown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    /// Stop the guest if it has not shut down after `timeout`.
    #[serde(rename = "forceStop", skip_serializing_if = "Option::is_none")]
    pub force_stop: Option<bool>,
}

/// Query parameters of `DELETE .../{vmid}`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeleteOptions {
    /// Also remove the guest from backup jobs, replication, HA and ACLs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purge: Option<bool>,
    /// Also destroy disks not referenced in the config.
    #[serde(rename = "destroy-unreferenced-disks", skip_serializing_if = "Option::is_none")]
    pub destroy_unreferenced_disks: Option<bool>,
}

impl DeleteOptions {
    /// `purge=1&destroy-unreferenced-disks=1`: leave nothing behind.
    pub fn purge_all() -> Self {
        Self { purge: Some(true), destroy_unreferenced_disks: Some(true) }
    }
}

/// Parameters of `PUT .../config` (and qemu's async `POST .../config`): the options to
/// set (`O` is [`crate::QemuOptions`] or [`crate::LxcOptions`]) plus the keys to remove.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ConfigUpdate<O> {
    /// Options to set.
    #[serde(flatten)]
    pub options: O,
    /// Options to remove, comma-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete: Option<String>,
    /// Pending changes to revert, comma-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revert: Option<String>,
    /// Refuse the update if the config changed since this digest was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl<O> ConfigUpdate<O> {
    /// An update setting `options`.
    pub fn new(options: O) -> Self {
        Self { options, delete: None, revert: None, digest: None }
    }

    /// Removes these options.
    pub fn delete_keys(mut self, keys: &[&str]) -> Self {
        self.delete = Some(keys.join(","));
        self
    }

    setters! {
        /// Sets `digest`.
        digest: String;
    }
}

/// An entry of `GET .../snapshot`; the last one is always the `current` pseudo-entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Snapshot {
    /// Snapshot name (`current` for the pseudo-entry).
    pub name: String,
    /// Description (`You are here!` for `current`).
    #[serde(default)]
    pub description: Option<String>,
    /// Creation time, epoch seconds.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub snaptime: Option<i64>,
    /// Parent snapshot.
    #[serde(default)]
    pub parent: Option<String>,
    /// Includes RAM (qemu).
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub vmstate: Option<bool>,
    /// Guest running (the `current` entry only).
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub running: Option<bool>,
}

impl Snapshot {
    /// The `current` pseudo-entry.
    pub fn is_current(&self) -> bool {
        self.name == "current"
    }
}

/// Parameters of `POST .../snapshot`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SnapshotCreate {
    /// Name (pve-configid, at most 40 characters, not `current` or `pending`).
    pub snapname: String,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Save RAM too (qemu only: LXC rejects the parameter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmstate: Option<bool>,
}

impl SnapshotCreate {
    /// A snapshot called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { snapname: name.into(), ..Default::default() }
    }
    /// Sets the description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }
}

/// A firewall rule (`GET .../firewall/rules[/{pos}]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct FirewallRule {
    /// Position.
    #[serde(deserialize_with = "de::int")]
    pub pos: u32,
    /// `in`, `out`, `forward` or `group`.
    #[serde(rename = "type", default)]
    pub rule_type: String,
    /// `ACCEPT`, `DROP`, `REJECT` or a security group.
    #[serde(default)]
    pub action: String,
    /// Enabled (PVE returns an integer).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub enable: Option<u32>,
    /// Comment.
    #[serde(default)]
    pub comment: Option<String>,
    /// Source address spec.
    #[serde(default)]
    pub source: Option<String>,
    /// Destination address spec.
    #[serde(default)]
    pub dest: Option<String>,
    /// Protocol.
    #[serde(default)]
    pub proto: Option<String>,
    /// Destination ports.
    #[serde(default)]
    pub dport: Option<String>,
    /// Source ports.
    #[serde(default)]
    pub sport: Option<String>,
    /// Macro (`SSH`, `HTTP`, ...).
    #[serde(default, rename = "macro")]
    pub macro_name: Option<String>,
    /// Interface (`net0`).
    #[serde(default)]
    pub iface: Option<String>,
    /// Log level.
    #[serde(default)]
    pub log: Option<String>,
    /// ICMP type.
    #[serde(default, rename = "icmp-type")]
    pub icmp_type: Option<String>,
    /// IP version the rule applies to.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub ipversion: Option<u8>,
}

/// Parameters of `POST .../firewall/rules`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FirewallRuleCreate {
    /// `in`, `out`, `forward` or `group`.
    #[serde(rename = "type")]
    pub rule_type: String,
    /// `ACCEPT`, `DROP`, `REJECT` or a security group name.
    pub action: String,
    /// 1 = enabled (an integer in PVE's schema).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable: Option<u32>,
    /// Insert at this position (default: top).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pos: Option<u32>,
    /// Comment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Source address spec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Destination address spec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest: Option<String>,
    /// Protocol (`tcp`, `udp`, `icmp`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// Destination ports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<String>,
    /// Source ports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<String>,
    /// Macro.
    #[serde(rename = "macro", skip_serializing_if = "Option::is_none")]
    pub macro_name: Option<String>,
    /// Interface.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    /// Log level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// ICMP type.
    #[serde(rename = "icmp-type", skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<String>,
    /// Config digest, to refuse concurrent modifications.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl FirewallRuleCreate {
    /// An enabled rule.
    pub fn new(rule_type: impl Into<String>, action: impl Into<String>) -> Self {
        Self { rule_type: rule_type.into(), action: action.into(), enable: Some(1), ..Default::default() }
    }
}

impl<K: GuestKind> Guest<K> {
    /// Guest id.
    pub fn vmid(&self) -> u32 {
        self.vmid
    }

    /// Node name.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub(crate) fn path(&self, rest: &str) -> String {
        format!("/nodes/{}/{}/{}{}", path_segment(&self.node), K::PATH, self.vmid, rest)
    }

    async fn upid(&self, method: Method, rest: &str, params: &Params) -> Result<Upid> {
        self.client.call(method, &self.path(rest), params).await
    }

    /// `GET .../status/current`.
    pub async fn status(&self) -> Result<GuestStatus> {
        self.client.call(Method::GET, &self.path("/status/current"), &Params::new()).await
    }

    /// `POST .../status/{action}` with any parameters (e.g. qemu `suspend` with `todisk`).
    pub async fn status_action(&self, action: &str, params: &Params) -> Result<Upid> {
        self.upid(Method::POST, &format!("/status/{}", path_segment(action)), params).await
    }

    /// Start; tasks `qmstart` / `vzstart`.
    pub async fn start(&self) -> Result<Upid> {
        self.status_action("start", &Params::new()).await
    }

    /// Hard stop; tasks `qmstop` / `vzstop`.
    pub async fn stop(&self) -> Result<Upid> {
        self.status_action("stop", &Params::new()).await
    }

    /// Clean shutdown; tasks `qmshutdown` / `vzshutdown`. A stopped guest gives 500
    /// `VM <id> not running`.
    pub async fn shutdown(&self, options: &ShutdownOptions) -> Result<Upid> {
        self.status_action("shutdown", &Params::from_serialize(options)?).await
    }

    /// Reboot; tasks `qmreboot` / `vzreboot`.
    pub async fn reboot(&self) -> Result<Upid> {
        self.status_action("reboot", &Params::new()).await
    }

    /// Suspend (qemu: pause; lxc: freeze); tasks `qmpause` / `vzsuspend`.
    pub async fn suspend(&self) -> Result<Upid> {
        self.status_action("suspend", &Params::new()).await
    }

    /// Resume; tasks `qmresume` / `vzresume`.
    pub async fn resume(&self) -> Result<Upid> {
        self.status_action("resume", &Params::new()).await
    }

    /// `GET .../config`.
    pub async fn config(&self) -> Result<K::Config> {
        self.client.call(Method::GET, &self.path("/config"), &Params::new()).await
    }

    /// `PUT .../config`: synchronous update (returns when applied).
    pub async fn update_config(&self, update: &K::ConfigUpdate) -> Result<()> {
        let _: Value = self.client.call_with(Method::PUT, &self.path("/config"), update).await?;
        Ok(())
    }

    /// `DELETE .../{vmid}` (parameters in the query string); tasks `qmdestroy` / `vzdestroy`.
    pub async fn delete(&self, options: &DeleteOptions) -> Result<Upid> {
        self.upid(Method::DELETE, "", &Params::from_serialize(options)?).await
    }

    /// `POST .../clone`; tasks `qmclone` / `vzclone`.
    pub async fn clone_to(&self, params: &K::CloneParams) -> Result<Upid> {
        self.client.call_with(Method::POST, &self.path("/clone"), params).await
    }

    /// `PUT .../resize`: `size` is absolute (`32G`) or relative (`+8G`); grow only;
    /// task `resize`.
    pub async fn resize(&self, disk: &str, size: &str) -> Result<Upid> {
        let params = Params::new().with("disk", disk).with("size", size);
        self.upid(Method::PUT, "/resize", &params).await
    }

    /// `GET .../snapshot` (ends with the `current` pseudo-entry).
    pub async fn snapshots(&self) -> Result<Vec<Snapshot>> {
        self.client.call(Method::GET, &self.path("/snapshot"), &Params::new()).await
    }

    /// `POST .../snapshot`; tasks `qmsnapshot` / `vzsnapshot`.
    pub async fn create_snapshot(&self, params: &SnapshotCreate) -> Result<Upid> {
        self.upid(Method::POST, "/snapshot", &Params::from_serialize(params)?).await
    }

    /// `DELETE .../snapshot/{name}[?force=1]`; tasks `qmdelsnapshot` / `vzdelsnapshot`.
    pub async fn delete_snapshot(&self, name: &str, force: bool) -> Result<Upid> {
        let params = if force { Params::new().with_bool("force", true) } else { Params::new() };
        self.upid(Method::DELETE, &format!("/snapshot/{}", path_segment(name)), &params).await
    }

    /// `POST .../snapshot/{name}/rollback[?start=1]`; tasks `qmrollback` / `vzrollback`.
    pub async fn rollback(&self, name: &str, start: bool) -> Result<Upid> {
        let params = if start { Params::new().with_bool("start", true) } else { Params::new() };
        self.upid(Method::POST, &format!("/snapshot/{}/rollback", path_segment(name)), &params).await
    }

    /// `GET .../rrddata`.
    pub async fn rrddata(&self, timeframe: Timeframe, cf: Option<Cf>) -> Result<Vec<RrdPoint>> {
        self.client.call(Method::GET, &self.path("/rrddata"), &rrd_query(timeframe, cf)).await
    }

    /// `GET .../firewall/rules`.
    pub async fn firewall_rules(&self) -> Result<Vec<FirewallRule>> {
        self.client.call(Method::GET, &self.path("/firewall/rules"), &Params::new()).await
    }

    /// `GET .../firewall/rules/{pos}`.
    pub async fn firewall_rule(&self, pos: u32) -> Result<FirewallRule> {
        self.client.call(Method::GET, &self.path(&format!("/firewall/rules/{pos}")), &Params::new()).await
    }

    /// `POST .../firewall/rules`.
    pub async fn create_firewall_rule(&self, rule: &FirewallRuleCreate) -> Result<()> {
        let _: Value = self.client.call_with(Method::POST, &self.path("/firewall/rules"), rule).await?;
        Ok(())
    }

    /// `DELETE .../firewall/rules/{pos}[?digest=]`.
    pub async fn delete_firewall_rule(&self, pos: u32, digest: Option<&str>) -> Result<()> {
        let params = Params::new().with_opt("digest", digest);
        let _: Value = self.client.call(Method::DELETE, &self.path(&format!("/firewall/rules/{pos}")), &params).await?;
        Ok(())
    }
}

/// Keys of a config object that are indexed slots (`net0`, `scsi1`, `mp3`, ...), with
/// their index, for a given prefix.
pub(crate) fn indexed<'a>(
    extra: &'a BTreeMap<String, Value>,
    prefix: &'a str,
) -> impl Iterator<Item = (u32, &'a str)> + 'a {
    extra.iter().filter_map(move |(k, v)| {
        let idx = k.strip_prefix(prefix)?.parse::<u32>().ok()?;
        Some((idx, v.as_str()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lxc_list_item_with_string_vmid() {
        let s: GuestStatus = serde_json::from_str(
            r#"{"vmid":"200","status":"running","name":"ct1","cpus":1,"maxmem":536870912,"maxswap":536870912,"disk":"123","type":"lxc"}"#,
        )
        .unwrap();
        assert_eq!(s.vmid, 200);
        assert_eq!(s.disk, Some(123));
        assert!(s.is_running());
    }

    #[test]
    fn qemu_template_with_null_pid() {
        let s: GuestStatus = serde_json::from_str(
            r#"{"vmid":9000,"status":"stopped","template":1,"pid":null,"qmpstatus":"stopped","agent":1}"#,
        )
        .unwrap();
        assert_eq!(s.pid, None);
        assert_eq!(s.template, Some(true));
        assert_eq!(s.agent, Some(true));
        assert!(!s.is_paused());
    }

    #[test]
    fn snapshot_list_with_current() {
        let list: Vec<Snapshot> = serde_json::from_str(
            r#"[{"name":"s1","description":"","snaptime":1700000000,"vmstate":0},{"name":"current","description":"You are here!","parent":"s1","running":1,"digest":"abc"}]"#,
        )
        .unwrap();
        assert!(list.last().unwrap().is_current());
        assert_eq!(list[1].running, Some(true));
        assert_eq!(list[1].parent.as_deref(), Some("s1"));
    }

    #[test]
    fn option_structs_encode_pve_names() {
        let p = Params::from_serialize(&DeleteOptions::purge_all()).unwrap();
        assert_eq!(p.get("purge"), Some("1"));
        assert_eq!(p.get("destroy-unreferenced-disks"), Some("1"));
        let p = Params::from_serialize(&ShutdownOptions { timeout: Some(30), force_stop: Some(true) }).unwrap();
        assert_eq!(p.get("forceStop"), Some("1"));
        assert_eq!(p.get("timeout"), Some("30"));
        let mut rule = FirewallRuleCreate::new("in", "ACCEPT");
        rule.proto = Some("tcp".into());
        rule.dport = Some("22".into());
        rule.macro_name = None;
        let p = Params::from_serialize(&rule).unwrap();
        assert_eq!(p.get("type"), Some("in"));
        assert_eq!(p.get("enable"), Some("1"));
        assert_eq!(p.get("macro"), None);
    }
}
