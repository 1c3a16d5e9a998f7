//! The simulated cluster's state: nodes, storages with volumes, guests, pools, users and
//! tokens, and the task registry. One `Cluster` value lives behind one `RwLock` in `Sim`
//! and is what the state file holds.

pub mod guest;
pub mod seed;
pub mod storage;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use guest::{Config, Counters, Guest, GuestKind, PowerState, Snapshot, Usage};
pub use storage::{BackupMeta, Storage, Volume};

use crate::error::{PveError, PveResult};
use crate::tasks::TaskList;

/// One cluster node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub nodeid: u32,
    pub ip: String,
    pub maxcpu: u32,
    pub maxmem: u64,
    pub swap_total: u64,
    pub rootfs_total: u64,
    pub cpu_model: String,
    /// Unix seconds of the (simulated) boot.
    pub boot_time: i64,
    pub storages: BTreeMap<String, Storage>,
    /// Interfaces of `GET /nodes/{node}/network` (and pending changes).
    #[serde(default)]
    pub network: Vec<serde_json::Value>,
}

/// A resource pool.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pool {
    pub comment: Option<String>,
    pub vms: BTreeSet<u32>,
    pub storage: BTreeSet<String>,
}

/// A user of the access-control layer (`Debug` hides the password).
#[derive(Clone, Serialize, Deserialize)]
pub struct User {
    pub enable: bool,
    pub expire: i64,
    pub password: String,
}

/// An API token (`user@realm!name`; `Debug` hides the secret).
#[derive(Clone, Serialize, Deserialize)]
pub struct ApiToken {
    pub secret: String,
    pub comment: Option<String>,
    pub expire: i64,
    pub privsep: bool,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("enable", &self.enable)
            .field("expire", &self.expire)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("secret", &"<redacted>")
            .field("comment", &self.comment)
            .field("expire", &self.expire)
            .field("privsep", &self.privsep)
            .finish()
    }
}

/// The whole simulated cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cluster {
    pub cluster_name: String,
    pub seed: u64,
    pub nodes: BTreeMap<String, Node>,
    pub guests: BTreeMap<u32, Guest>,
    #[serde(default)]
    pub pools: BTreeMap<String, Pool>,
    #[serde(default)]
    pub users: BTreeMap<String, User>,
    /// Tokens keyed by full token id.
    #[serde(default)]
    pub tokens: BTreeMap<String, ApiToken>,
    /// Key of ticket and CSRF signatures.
    pub auth_key: String,
    #[serde(default)]
    pub tasks: TaskList,
    /// Last emulated process id (task workers and guest processes).
    pub last_pid: u32,
}

/// The config path PVE names in "does not exist" errors.
pub fn config_path(node: &str, kind: GuestKind, vmid: u32) -> String {
    match kind {
        GuestKind::Qemu => format!("nodes/{node}/qemu-server/{vmid}.conf"),
        GuestKind::Lxc => format!("nodes/{node}/lxc/{vmid}.conf"),
    }
}

impl Cluster {
    /// A node, or PVE's error for an unknown one.
    pub fn node(&self, name: &str) -> PveResult<&Node> {
        self.nodes.get(name).ok_or_else(|| PveError::handler(format!("no such cluster node '{name}'")))
    }

    /// A mutable node.
    pub fn node_mut(&mut self, name: &str) -> PveResult<&mut Node> {
        self.nodes.get_mut(name).ok_or_else(|| PveError::handler(format!("no such cluster node '{name}'")))
    }

    /// The guest `vmid` of `kind` on `node`, or `Configuration file '...' does not exist`.
    pub fn guest_on(&self, node: &str, kind: GuestKind, vmid: u32) -> PveResult<&Guest> {
        match self.guests.get(&vmid) {
            Some(g) if g.node == node && g.kind == kind => Ok(g),
            _ => {
                Err(PveError::handler(format!("Configuration file '{}' does not exist", config_path(node, kind, vmid))))
            }
        }
    }

    /// Mutable variant of [`guest_on`](Self::guest_on).
    pub fn guest_on_mut(&mut self, node: &str, kind: GuestKind, vmid: u32) -> PveResult<&mut Guest> {
        match self.guests.get_mut(&vmid) {
            Some(g) if g.node == node && g.kind == kind => Ok(g),
            _ => {
                Err(PveError::handler(format!("Configuration file '{}' does not exist", config_path(node, kind, vmid))))
            }
        }
    }

    /// A storage of a node, or `storage '<id>' does not exist`.
    pub fn storage(&self, node: &str, id: &str) -> PveResult<&Storage> {
        self.node(node)?.storages.get(id).ok_or_else(|| PveError::handler(format!("storage '{id}' does not exist")))
    }

    /// A mutable storage of a node.
    pub fn storage_mut(&mut self, node: &str, id: &str) -> PveResult<&mut Storage> {
        self.node_mut(node)?
            .storages
            .get_mut(id)
            .ok_or_else(|| PveError::handler(format!("storage '{id}' does not exist")))
    }

    /// Finds a volume by volid on a node.
    pub fn volume(&self, node: &str, volid: &str) -> Option<&Volume> {
        let (sid, _) = storage::split_volid(volid)?;
        self.nodes.get(node)?.storages.get(sid)?.volumes.get(volid)
    }

    /// Removes a volume by volid on a node; returns it.
    pub fn remove_volume(&mut self, node: &str, volid: &str) -> Option<Volume> {
        let (sid, _) = storage::split_volid(volid)?;
        self.nodes.get_mut(node)?.storages.get_mut(sid)?.volumes.remove(volid)
    }

    /// The next emulated pid.
    pub fn next_pid(&mut self) -> u32 {
        self.last_pid = if self.last_pid >= 4_000_000 { 1000 } else { self.last_pid + 1 };
        self.last_pid
    }

    /// PVE's `check_vmid_unused` text when the id is taken:
    /// `VM 100 already exists on node 'pve1'` (or `CT 100 ...`).
    pub fn check_vmid_unused(&self, vmid: u32) -> Result<(), String> {
        match self.guests.get(&vmid) {
            Some(g) => Err(format!("{} {vmid} already exists on node '{}'", g.kind.label(), g.node)),
            None => Ok(()),
        }
    }

    /// The pool of each guest, for list endpoints.
    pub fn pool_of(&self, vmid: u32) -> Option<&str> {
        self.guests.get(&vmid).and_then(|g| g.pool.as_deref())
    }
}
