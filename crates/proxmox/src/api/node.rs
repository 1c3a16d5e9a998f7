//! Node calls (`/nodes/{node}/...`): status, metrics, guest lists and creation, backups,
//! storages and tasks.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::guest::{Guest, GuestStatus, Lxc, Qemu};
use crate::api::lxc::LxcCreate;
use crate::api::qemu::QemuCreate;
use crate::api::rrd::{Cf, RrdPoint, Timeframe, rrd_query};
use crate::api::storage::{StorageApi, StorageListQuery, StorageStatus};
use crate::client::{ProxmoxClient, path_segment};
use crate::de;
use crate::error::Result;
use crate::params::Params;
use crate::task::{TaskListEntry, TaskListQuery};
use crate::upid::Upid;

/// Calls on one node.
#[derive(Debug, Clone)]
pub struct NodeApi {
    pub(crate) client: ProxmoxClient,
    pub(crate) name: String,
}

/// Memory or disk usage in `/nodes/{node}/status`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct Usage {
    /// Total bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub total: Option<u64>,
    /// Used bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub used: Option<u64>,
    /// Free bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub free: Option<u64>,
    /// Available bytes (rootfs).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub avail: Option<u64>,
}

/// CPU description in `/nodes/{node}/status`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct CpuInfo {
    /// Physical cores.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub cores: Option<u32>,
    /// Logical threads.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub cpus: Option<u32>,
    /// Sockets.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub sockets: Option<u32>,
    /// Model name.
    #[serde(default)]
    pub model: Option<String>,
}

/// `GET /nodes/{node}/status`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct NodeStatus {
    /// CPU usage (0..1).
    #[serde(default, deserialize_with = "de::opt_float")]
    pub cpu: Option<f64>,
    /// Load averages (1, 5, 15 min) as PVE's strings.
    #[serde(default)]
    pub loadavg: Vec<String>,
    /// Memory.
    #[serde(default)]
    pub memory: Usage,
    /// Root filesystem.
    #[serde(default)]
    pub rootfs: Usage,
    /// Swap.
    #[serde(default)]
    pub swap: Option<Usage>,
    /// CPU description.
    #[serde(default)]
    pub cpuinfo: CpuInfo,
    /// Uptime, seconds.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub uptime: Option<u64>,
    /// `pve-manager/8.4.1/...`.
    #[serde(default)]
    pub pveversion: Option<String>,
    /// Everything else (`boot-info`, `current-kernel`, `ksm`, ...).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Parameters of `POST /nodes/{node}/vzdump` (the commonly used subset; `extra` for the rest).
#[derive(Debug, Clone, Default, Serialize)]
pub struct VzdumpParams {
    /// Guest ids, comma-separated (`100` or `100,101`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmid: Option<String>,
    /// Back up every guest on the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
    /// Target storage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// `snapshot`, `suspend` or `stop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `0`, `1`, `gzip`, `lzo` or `zstd`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress: Option<String>,
    /// Prune old backups per the storage's retention.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remove: Option<bool>,
    /// Notes template (`{{guestname}}`, ...).
    #[serde(rename = "notes-template", skip_serializing_if = "Option::is_none")]
    pub notes_template: Option<String>,
    /// Mark the backup protected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protected: Option<bool>,
    /// Bandwidth limit, KiB/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bwlimit: Option<u64>,
    /// Anything else, by PVE name.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl VzdumpParams {
    /// A backup of one guest to `storage`, zstd-compressed, in snapshot mode.
    pub fn guest(vmid: u32, storage: impl Into<String>) -> Self {
        Self {
            vmid: Some(vmid.to_string()),
            storage: Some(storage.into()),
            mode: Some("snapshot".into()),
            compress: Some("zstd".into()),
            ..Default::default()
        }
    }
}

impl ProxmoxClient {
    /// Calls on node `name`.
    pub fn node(&self, name: impl Into<String>) -> NodeApi {
        NodeApi { client: self.clone(), name: name.into() }
    }
}

impl NodeApi {
    /// The node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn path(&self, rest: &str) -> String {
        format!("/nodes/{}{}", path_segment(&self.name), rest)
    }

    /// A qemu guest on this node.
    pub fn qemu(&self, vmid: u32) -> Guest<Qemu> {
        self.guest(vmid)
    }

    /// An LXC container on this node.
    pub fn lxc(&self, vmid: u32) -> Guest<Lxc> {
        self.guest(vmid)
    }

    fn guest<K>(&self, vmid: u32) -> Guest<K> {
        Guest { client: self.client.clone(), node: self.name.clone(), vmid, kind: PhantomData }
    }

    /// Storage `storage` on this node.
    pub fn storage(&self, storage: impl Into<String>) -> StorageApi {
        StorageApi { client: self.client.clone(), node: self.name.clone(), storage: storage.into() }
    }

    /// `GET /nodes/{node}/status`.
    pub async fn status(&self) -> Result<NodeStatus> {
        self.client.call(Method::GET, &self.path("/status"), &Params::new()).await
    }

    /// `GET /nodes/{node}/rrddata`.
    pub async fn rrddata(&self, timeframe: Timeframe, cf: Option<Cf>) -> Result<Vec<RrdPoint>> {
        self.client.call(Method::GET, &self.path("/rrddata"), &rrd_query(timeframe, cf)).await
    }

    /// `GET /nodes/{node}/qemu`.
    pub async fn qemu_list(&self) -> Result<Vec<GuestStatus>> {
        self.client.call(Method::GET, &self.path("/qemu"), &Params::new()).await
    }

    /// `GET /nodes/{node}/lxc`.
    pub async fn lxc_list(&self) -> Result<Vec<GuestStatus>> {
        self.client.call(Method::GET, &self.path("/lxc"), &Params::new()).await
    }

    /// `POST /nodes/{node}/qemu`: create (or restore, with `archive`) a VM; task `qmcreate`
    /// (`qmrestore`).
    pub async fn create_qemu(&self, params: &QemuCreate) -> Result<Upid> {
        self.client.call_with(Method::POST, &self.path("/qemu"), params).await
    }

    /// `POST /nodes/{node}/lxc`: create (or restore, with `restore=1`) a container; task
    /// `vzcreate` (`vzrestore`).
    pub async fn create_lxc(&self, params: &LxcCreate) -> Result<Upid> {
        self.client.call_with(Method::POST, &self.path("/lxc"), params).await
    }

    /// Restores a qemu backup (`archive` = the backup's volume id) as guest `vmid`.
    pub async fn restore_qemu(&self, vmid: u32, archive: &str, storage: Option<&str>) -> Result<Upid> {
        let mut p = QemuCreate::restore(vmid, archive);
        p.storage = storage.map(str::to_string);
        self.create_qemu(&p).await
    }

    /// Restores an LXC backup (`archive` = the backup's volume id) as container `vmid`.
    pub async fn restore_lxc(&self, vmid: u32, archive: &str, storage: Option<&str>) -> Result<Upid> {
        let mut p = LxcCreate::restore(vmid, archive);
        p.storage = storage.map(str::to_string);
        self.create_lxc(&p).await
    }

    /// `POST /nodes/{node}/vzdump`; task `vzdump`.
    pub async fn vzdump(&self, params: &VzdumpParams) -> Result<Upid> {
        self.client.call_with(Method::POST, &self.path("/vzdump"), params).await
    }

    /// `GET /nodes/{node}/storage`.
    pub async fn storage_list(&self, query: &StorageListQuery) -> Result<Vec<StorageStatus>> {
        self.client.call_with(Method::GET, &self.path("/storage"), query).await
    }

    /// `GET /nodes/{node}/tasks`.
    pub async fn tasks(&self, query: &TaskListQuery) -> Result<Vec<TaskListEntry>> {
        self.client.node_tasks(&self.name, query).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vzdump_params_encode() {
        let p = Params::from_serialize(&VzdumpParams {
            remove: Some(false),
            notes_template: Some("{{guestname}}".into()),
            ..VzdumpParams::guest(100, "local")
        })
        .unwrap();
        assert_eq!(p.get("vmid"), Some("100"));
        assert_eq!(p.get("storage"), Some("local"));
        assert_eq!(p.get("mode"), Some("snapshot"));
        assert_eq!(p.get("compress"), Some("zstd"));
        assert_eq!(p.get("remove"), Some("0"));
        assert_eq!(p.get("notes-template"), Some("{{guestname}}"));
        assert_eq!(p.get("all"), None);
    }

    #[test]
    fn node_status_decodes() {
        let s: NodeStatus = serde_json::from_str(
            r#"{"cpu":0.02,"loadavg":["0.10","0.20","0.30"],"memory":{"total":"68719476736","used":1,"free":2},"rootfs":{"total":100,"used":10,"avail":90,"free":90},"cpuinfo":{"cores":8,"cpus":16,"sockets":1,"model":"X"},"uptime":1000,"pveversion":"pve-manager/8.4.1/abc","boot-info":{"mode":"efi"}}"#,
        )
        .unwrap();
        assert_eq!(s.memory.total, Some(68_719_476_736));
        assert_eq!(s.cpuinfo.cpus, Some(16));
        assert!(s.extra.contains_key("boot-info"));
    }
}
