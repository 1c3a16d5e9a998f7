//! Cluster-wide calls: version, resources, nextid and the node list.

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::client::ProxmoxClient;
use crate::de;
use crate::error::Result;
use crate::params::Params;

/// `GET /version`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct VersionInfo {
    /// Full pve-manager version, e.g. `8.4.1`.
    pub version: String,
    /// Point release, e.g. `8.4`.
    pub release: String,
    /// Short git revision.
    pub repoid: String,
    /// Default console viewer.
    #[serde(default)]
    pub console: Option<String>,
}

/// The `type` filter of `/cluster/resources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceType {
    /// qemu and lxc guests.
    Vm,
    /// Storages (one per node).
    Storage,
    /// Nodes.
    Node,
    /// SDN zones.
    Sdn,
}

/// An item of `GET /cluster/resources`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct ClusterResource {
    /// `qemu/100`, `lxc/101`, `node/pve1`, `storage/pve1/local`, `/pool/x`, `sdn/pve1/zone`.
    pub id: String,
    /// `qemu`, `lxc`, `node`, `storage`, `pool`, `sdn`, `openvz`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Node the resource lives on.
    #[serde(default)]
    pub node: Option<String>,
    /// Guest, node or storage status (`running`, `online`, `offline`, `available`, ...).
    #[serde(default)]
    pub status: Option<String>,
    /// Guest or node name.
    #[serde(default)]
    pub name: Option<String>,
    /// Guest id.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub vmid: Option<u32>,
    /// CPUs.
    #[serde(default, deserialize_with = "de::opt_float")]
    pub maxcpu: Option<f64>,
    /// CPU usage (fraction of `maxcpu`).
    #[serde(default, deserialize_with = "de::opt_float")]
    pub cpu: Option<f64>,
    /// Memory size, bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub maxmem: Option<u64>,
    /// Memory used, bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub mem: Option<u64>,
    /// Disk or storage size, bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub maxdisk: Option<u64>,
    /// Disk or storage used, bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub disk: Option<u64>,
    /// Network in, cumulative bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub netin: Option<u64>,
    /// Network out, cumulative bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub netout: Option<u64>,
    /// Disk read, cumulative bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub diskread: Option<u64>,
    /// Disk written, cumulative bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub diskwrite: Option<u64>,
    /// Uptime, seconds.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub uptime: Option<u64>,
    /// Guest is a template.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub template: Option<bool>,
    /// Guest lock (`backup`, `clone`, ...).
    #[serde(default)]
    pub lock: Option<String>,
    /// Guest tags, `;`-separated.
    #[serde(default)]
    pub tags: Option<String>,
    /// Pool the resource belongs to.
    #[serde(default)]
    pub pool: Option<String>,
    /// HA state.
    #[serde(default)]
    pub hastate: Option<String>,
    /// Storage id (storage items).
    #[serde(default)]
    pub storage: Option<String>,
    /// Storage content types (storage items).
    #[serde(default)]
    pub content: Option<String>,
    /// Storage plugin type (storage items).
    #[serde(default)]
    pub plugintype: Option<String>,
}

/// An item of `GET /nodes`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct NodeListEntry {
    /// Node name.
    pub node: String,
    /// `online`, `offline` or `unknown`.
    pub status: String,
    /// CPU usage.
    #[serde(default, deserialize_with = "de::opt_float")]
    pub cpu: Option<f64>,
    /// CPUs.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub maxcpu: Option<u32>,
    /// Memory used, bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub mem: Option<u64>,
    /// Memory size, bytes.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub maxmem: Option<u64>,
    /// Uptime, seconds.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub uptime: Option<u64>,
    /// The node certificate's SHA-256 fingerprint.
    #[serde(default)]
    pub ssl_fingerprint: Option<String>,
    /// Support level.
    #[serde(default)]
    pub level: Option<String>,
}

#[derive(Deserialize)]
struct LooseU32(#[serde(deserialize_with = "de::int")] u32);

impl ProxmoxClient {
    /// `GET /version`.
    pub async fn version(&self) -> Result<VersionInfo> {
        self.call(Method::GET, "/version", &Params::new()).await
    }

    /// `GET /cluster/resources[?type=]`.
    pub async fn cluster_resources(&self, kind: Option<ResourceType>) -> Result<Vec<ClusterResource>> {
        let params = match kind {
            Some(k) => Params::from_serialize(&serde_json::json!({ "type": k }))?,
            None => Params::new(),
        };
        self.call(Method::GET, "/cluster/resources", &params).await
    }

    /// `GET /cluster/nextid[?vmid=]`: the lowest free id, or `vmid` if it is free (a used
    /// one gives 400 with `errors.vmid`). The id is not reserved: create can still race.
    pub async fn next_id(&self, vmid: Option<u32>) -> Result<u32> {
        let params = Params::new().with_opt("vmid", vmid);
        let id: LooseU32 = self.call(Method::GET, "/cluster/nextid", &params).await?;
        Ok(id.0)
    }

    /// `GET /nodes`.
    pub async fn nodes(&self) -> Result<Vec<NodeListEntry>> {
        self.call(Method::GET, "/nodes", &Params::new()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_items_decode_loosely() {
        let items: Vec<ClusterResource> = serde_json::from_str(
            r#"[{"id":"qemu/100","type":"qemu","node":"pve1","vmid":"100","status":"running","template":0,"maxmem":2147483648,"cpu":0.01,"maxcpu":2},
                {"id":"storage/pve1/local","type":"storage","node":"pve1","storage":"local","status":"available","disk":"1000","maxdisk":2000,"content":"iso,vztmpl,backup"},
                {"id":"/pool/web","type":"pool"}]"#,
        )
        .unwrap();
        assert_eq!(items[0].vmid, Some(100));
        assert_eq!(items[0].template, Some(false));
        assert_eq!(items[1].disk, Some(1000));
        assert_eq!(items[2].kind, "pool");
    }

    #[test]
    fn nextid_accepts_string() {
        let id: LooseU32 = serde_json::from_str(r#""100""#).unwrap();
        assert_eq!(id.0, 100);
    }
}
