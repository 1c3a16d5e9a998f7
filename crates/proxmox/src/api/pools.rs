//! Resource pools (`/pools`), in PVE 8's current form: `PUT /pools` and
//! `DELETE /pools?poolid=` (the `/pools/{poolid}` variants are deprecated; only its GET
//! is used here, to read one pool).

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::{ProxmoxClient, path_segment};
use crate::de;
use crate::error::Result;
use crate::params::Params;

/// A pool member.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct PoolMember {
    /// `qemu/100`, `storage/pve1/local`, ...
    pub id: String,
    /// `qemu`, `lxc`, `openvz` or `storage`.
    #[serde(rename = "type")]
    pub member_type: String,
    /// Node.
    #[serde(default)]
    pub node: Option<String>,
    /// Guest id.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub vmid: Option<u32>,
    /// Storage id.
    #[serde(default)]
    pub storage: Option<String>,
    /// The resource's other fields (status, name, usage, ...).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// An item of `GET /pools`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Pool {
    /// Pool id.
    pub poolid: String,
    /// Comment.
    #[serde(default)]
    pub comment: Option<String>,
    /// Members (present when asking for one pool).
    #[serde(default)]
    pub members: Vec<PoolMember>,
}

/// `GET /pools/{poolid}`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct PoolDetails {
    /// Comment.
    #[serde(default)]
    pub comment: Option<String>,
    /// Members.
    #[serde(default)]
    pub members: Vec<PoolMember>,
}

/// Filters of `GET /pools`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PoolQuery {
    /// Only this pool (then `members` is filled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poolid: Option<String>,
    /// Only members of this type (`qemu`, `lxc`, `storage`).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub member_type: Option<String>,
}

/// Parameters of `PUT /pools`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PoolUpdate {
    /// Pool id.
    pub poolid: String,
    /// New comment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Guest ids to add (or remove, with `delete`), comma-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vms: Option<String>,
    /// Storage ids to add (or remove), comma-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Remove the listed members instead of adding them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete: Option<bool>,
    /// Move guests that are already in another pool.
    #[serde(rename = "allow-move", skip_serializing_if = "Option::is_none")]
    pub allow_move: Option<bool>,
}

impl PoolUpdate {
    /// Adds guests to `poolid`.
    pub fn add_vms(poolid: impl Into<String>, vmids: &[u32]) -> Self {
        Self { poolid: poolid.into(), vms: Some(join_ids(vmids)), ..Default::default() }
    }
    /// Removes guests from `poolid`.
    pub fn remove_vms(poolid: impl Into<String>, vmids: &[u32]) -> Self {
        Self { delete: Some(true), ..Self::add_vms(poolid, vmids) }
    }
}

fn join_ids(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

impl ProxmoxClient {
    /// `GET /pools`.
    pub async fn pools(&self, query: &PoolQuery) -> Result<Vec<Pool>> {
        self.call_with(Method::GET, "/pools", query).await
    }

    /// `GET /pools/{poolid}`.
    pub async fn pool(&self, poolid: &str) -> Result<PoolDetails> {
        self.call(Method::GET, &format!("/pools/{}", path_segment(poolid)), &Params::new()).await
    }

    /// `POST /pools`.
    pub async fn create_pool(&self, poolid: &str, comment: Option<&str>) -> Result<()> {
        let params = Params::new().with("poolid", poolid).with_opt("comment", comment);
        let _: Value = self.call(Method::POST, "/pools", &params).await?;
        Ok(())
    }

    /// `PUT /pools`.
    pub async fn update_pool(&self, update: &PoolUpdate) -> Result<()> {
        let _: Value = self.call_with(Method::PUT, "/pools", update).await?;
        Ok(())
    }

    /// `DELETE /pools?poolid=` (the pool must be empty).
    pub async fn delete_pool(&self, poolid: &str) -> Result<()> {
        let params = Params::new().with("poolid", poolid);
        let _: Value = self.call(Method::DELETE, "/pools", &params).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_update_encoding() {
        let p = Params::from_serialize(&PoolUpdate::remove_vms("web", &[100, 101])).unwrap();
        assert_eq!(p.get("poolid"), Some("web"));
        assert_eq!(p.get("vms"), Some("100,101"));
        assert_eq!(p.get("delete"), Some("1"));
        assert_eq!(p.get("allow-move"), None);
    }

    #[test]
    fn pools_decode() {
        let pools: Vec<Pool> = serde_json::from_str(
            r#"[{"poolid":"web","comment":"c","members":[{"id":"qemu/100","type":"qemu","node":"pve1","vmid":100,"status":"running"}]},{"poolid":"empty"}]"#,
        )
        .unwrap();
        assert_eq!(pools[0].members[0].vmid, Some(100));
        assert!(pools[0].members[0].extra.contains_key("status"));
        assert!(pools[1].members.is_empty());
    }
}
