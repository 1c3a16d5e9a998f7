//! What the Proxmox cluster offers, as the API needs it: templates, nodes with their free
//! capacity, and placement of a new guest. qemu templates are guests with `template=1` in
//! `GET /cluster/resources`; LXC templates are the `vztmpl` archives on each online node's
//! storages (`local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst` is listed as
//! `debian-12-standard`). One reading (`/cluster/resources`, then the storages' `vztmpl` content of
//! each online node) is cached for a few seconds, so a burst of requests costs Proxmox one round.

use nimbus_jobs::vztmpl_name;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nimbus_domain::InstanceKind;
use nimbus_proxmox::{ClusterResource, ContentQuery, ProxmoxClient, StorageContent, StorageListQuery};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Mutex, RwLock};

use crate::error::ApiError;

/// A template as clients see it: one name and type, present on one or more nodes.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    /// The name clients pass as `template` (the template guest's name in Proxmox).
    pub name: String,
    /// `qemu` or `lxc`.
    #[serde(rename = "type")]
    pub kind: InstanceKind,
    /// Where it can be created from: node and the template's VMID (qemu) or archive (lxc) there.
    pub locations: Vec<TemplateLocation>,
    /// Its disk size, bytes (the smallest disk a clone can have), when Proxmox reports it.
    pub disk_bytes: Option<u64>,
}

/// One copy of a template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateLocation {
    /// Node.
    pub node: String,
    /// The template guest's VMID on that node (0 for an LXC archive).
    pub vmid: u32,
    /// The archive's volume id on that node (LXC only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volid: Option<String>,
}

/// A node and what it has free.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Name.
    pub name: String,
    /// Whether Proxmox reports it online.
    pub online: bool,
    /// Memory not in use, bytes.
    pub free_memory: u64,
    /// CPUs not in use (`maxcpu × (1 − cpu)`).
    pub free_cpu: f64,
}

/// One reading of the cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Templates by (type, name).
    pub templates: Vec<Template>,
    /// Nodes by name.
    pub nodes: Vec<Node>,
    /// Online nodes whose `vztmpl` archives could not be listed (and had no earlier listing to
    /// keep): their LXC templates are unknown, not absent.
    pub lxc_unlisted: Vec<String>,
}

/// Where a new guest goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The node it is created on.
    pub node: String,
    /// The VMID of the template it is cloned from, on that node (0 for LXC, which is created
    /// from the archive the worker finds by the template's name).
    pub template_vmid: u32,
}

impl Snapshot {
    /// Builds a snapshot from the items of `/cluster/resources`.
    pub fn from_resources(items: &[ClusterResource]) -> Snapshot {
        let mut nodes = Vec::new();
        let mut templates: BTreeMap<(&'static str, String), Template> = BTreeMap::new();
        for item in items {
            match item.kind.as_str() {
                "node" => {
                    let Some(name) = item.node.clone() else { continue };
                    let max_mem = item.maxmem.unwrap_or(0);
                    let max_cpu = item.maxcpu.unwrap_or(0.0);
                    nodes.push(Node {
                        name,
                        online: item.status.as_deref() == Some("online"),
                        free_memory: max_mem.saturating_sub(item.mem.unwrap_or(0)),
                        free_cpu: (max_cpu * (1.0 - item.cpu.unwrap_or(0.0))).max(0.0),
                    });
                }
                kind @ ("qemu" | "lxc") if item.template == Some(true) => {
                    let (Some(name), Some(node), Some(vmid)) = (item.name.clone(), item.node.clone(), item.vmid) else {
                        continue;
                    };
                    let kind = if kind == "qemu" { InstanceKind::Qemu } else { InstanceKind::Lxc };
                    let entry = templates.entry((kind.as_str(), name.clone())).or_insert_with(|| Template {
                        name,
                        kind,
                        locations: Vec::new(),
                        disk_bytes: item.maxdisk,
                    });
                    entry.locations.push(TemplateLocation { node, vmid, volid: None });
                }
                _ => {}
            }
        }
        let mut templates: Vec<Template> = templates.into_values().collect();
        for t in &mut templates {
            t.locations.sort_by(|a, b| a.node.cmp(&b.node));
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Snapshot { templates, nodes, lxc_unlisted: Vec::new() }
    }

    /// Adds the LXC templates of `node`'s `vztmpl` archives (`content` as its storages list it).
    pub fn add_lxc_templates(&mut self, node: &str, content: &[StorageContent]) {
        for item in content {
            if item.content.as_deref().is_some_and(|c| c != "vztmpl") {
                continue;
            }
            let Some(name) = vztmpl_name(&item.volid) else { continue };
            let location = TemplateLocation { node: node.to_owned(), vmid: 0, volid: Some(item.volid.clone()) };
            self.add_lxc_location(name, location);
        }
        self.templates.sort_by(|a, b| (a.kind.as_str(), &a.name).cmp(&(b.kind.as_str(), &b.name)));
    }

    fn add_lxc_location(&mut self, name: String, location: TemplateLocation) {
        match self.templates.iter_mut().find(|t| t.kind == InstanceKind::Lxc && t.name == name) {
            // One archive per node and name (the first storage listing it wins).
            Some(t) if t.locations.iter().any(|l| l.node == location.node) => {}
            Some(t) => {
                t.locations.push(location);
                t.locations.sort_by(|a, b| a.node.cmp(&b.node));
            }
            None => {
                self.templates.push(Template {
                    name,
                    kind: InstanceKind::Lxc,
                    locations: vec![location],
                    disk_bytes: None,
                });
            }
        }
    }

    /// Stands in for `node`'s `vztmpl` listing that failed: keeps the LXC templates `previous`
    /// listed there, or, when it has no listing of that node, records the node as unlisted so
    /// [`Snapshot::place`] answers 503 rather than "no such template".
    pub fn keep_lxc_templates(&mut self, node: &str, previous: Option<&Snapshot>) {
        let listed = previous.filter(|p| {
            p.nodes.iter().any(|n| n.name == node && n.online) && !p.lxc_unlisted.iter().any(|n| n == node)
        });
        let Some(previous) = listed else {
            self.lxc_unlisted.push(node.to_owned());
            return;
        };
        for t in previous.templates.iter().filter(|t| t.kind == InstanceKind::Lxc) {
            for loc in t.locations.iter().filter(|l| l.node == node) {
                self.add_lxc_location(t.name.clone(), loc.clone());
            }
        }
        self.templates.sort_by(|a, b| (a.kind.as_str(), &a.name).cmp(&(b.kind.as_str(), &b.name)));
    }

    /// Chooses the node for a new guest of `kind` from `template`: the requested node when given
    /// (it must exist and hold the template), otherwise the online node holding the template with
    /// the most free memory (then free CPU, then name, so the choice is deterministic).
    pub fn place(&self, kind: InstanceKind, template: &str, node: Option<&str>) -> Result<Placement, ApiError> {
        self.place_besides(kind, template, node, &HashMap::new())
    }

    /// [`Snapshot::place`], counting `placed` (bytes of memory per node given to guests since
    /// this reading) as used.
    pub fn place_besides(
        &self,
        kind: InstanceKind,
        template: &str,
        node: Option<&str>,
        placed: &HashMap<String, u64>,
    ) -> Result<Placement, ApiError> {
        // An LXC template may sit on a node whose archives could not be listed: unknown is 503.
        let unlisted = |on: Option<&str>| {
            (kind == InstanceKind::Lxc)
                .then(|| self.lxc_unlisted.iter().find(|n| on.is_none_or(|on| on == n.as_str())))
                .flatten()
        };
        let unknown_template = |message: String| match unlisted(node) {
            Some(n) => {
                ApiError::ProxmoxUnavailable(format!("the LXC template archives of node {n} could not be listed"))
            }
            None => ApiError::UnknownTemplate {
                message,
                details: json!({ "template": template, "type": kind, "node": node }),
            },
        };
        let tpl = self
            .templates
            .iter()
            .find(|t| t.kind == kind && t.name == template)
            .ok_or_else(|| unknown_template(format!("there is no {kind} template named '{template}'")))?;
        if let Some(wanted) = node {
            let n = self.nodes.iter().find(|n| n.name == wanted).ok_or_else(|| ApiError::UnknownNode(wanted.into()))?;
            if !n.online {
                return Err(ApiError::ProxmoxUnavailable(format!("node {wanted} is offline")));
            }
            let loc = tpl.locations.iter().find(|l| l.node == wanted).ok_or_else(|| {
                unknown_template(format!("template '{template}' is not available on node '{wanted}'"))
            })?;
            return Ok(Placement { node: loc.node.clone(), template_vmid: loc.vmid });
        }
        tpl.locations
            .iter()
            .filter_map(|loc| self.nodes.iter().find(|n| n.name == loc.node && n.online).map(|n| (loc, n)))
            .max_by(|(_, a), (_, b)| {
                let free = |n: &Node| n.free_memory.saturating_sub(placed.get(&n.name).copied().unwrap_or(0));
                free(a).cmp(&free(b)).then(a.free_cpu.total_cmp(&b.free_cpu)).then(b.name.cmp(&a.name))
            })
            .map(|(loc, _)| Placement { node: loc.node.clone(), template_vmid: loc.vmid })
            .ok_or_else(|| ApiError::ProxmoxUnavailable(format!("no online node holds template {template}")))
    }
}

/// The cached view of the cluster.
pub struct Inventory {
    pve: ProxmoxClient,
    ttl: Duration,
    cached: RwLock<Option<(Instant, Arc<Snapshot>)>>,
    // One refresh at a time: concurrent misses wait for it instead of each calling Proxmox.
    refreshing: Mutex<()>,
    placed: parking_lot::Mutex<Placed>,
}

/// What this API process has placed since a reading: a burst of creates within the reading's
/// TTL would otherwise all go to the node that had the most free memory when it was taken.
#[derive(Debug, Default)]
pub struct Placed {
    /// The reading these count against (a new reading starts from nothing, as Proxmox's own
    /// figures then include what was created).
    reading: Option<Arc<Snapshot>>,
    /// Bytes of memory per node.
    by_node: HashMap<String, u64>,
}

impl Placed {
    /// Places a guest with `memory` bytes by `reading`, counting it for the next placements.
    pub fn place(
        &mut self,
        reading: &Arc<Snapshot>,
        kind: InstanceKind,
        template: &str,
        node: Option<&str>,
        memory: u64,
    ) -> Result<Placement, ApiError> {
        if !self.reading.as_ref().is_some_and(|r| Arc::ptr_eq(r, reading)) {
            *self = Placed { reading: Some(reading.clone()), by_node: HashMap::new() };
        }
        let placement = reading.place_besides(kind, template, node, &self.by_node)?;
        *self.by_node.entry(placement.node.clone()).or_default() += memory;
        Ok(placement)
    }
}

impl Inventory {
    /// How long a reading is reused by default.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

    /// An inventory reading through `pve`.
    pub fn new(pve: ProxmoxClient, ttl: Duration) -> Self {
        Inventory { pve, ttl, cached: RwLock::new(None), refreshing: Mutex::new(()), placed: Default::default() }
    }

    /// Chooses the node of a new guest with `memory` bytes (see [`Snapshot::place`]) by the
    /// current reading, counting the guests this process placed since it was taken.
    pub async fn place(
        &self,
        kind: InstanceKind,
        template: &str,
        node: Option<&str>,
        memory: u64,
    ) -> Result<Placement, ApiError> {
        let reading = self.snapshot().await?;
        self.placed.lock().place(&reading, kind, template, node, memory)
    }

    /// The Proxmox client, for readings the snapshot does not keep (the nodes overview).
    pub fn client(&self) -> &ProxmoxClient {
        &self.pve
    }

    /// A reading no older than the TTL. Proxmox failures are 503 `PROXMOX_UNAVAILABLE`.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, ApiError> {
        if let Some(s) = self.fresh().await {
            return Ok(s);
        }
        let _guard = self.refreshing.lock().await;
        if let Some(s) = self.fresh().await {
            return Ok(s);
        }
        let items = self
            .pve
            .cluster_resources(None)
            .await
            .map_err(|e| ApiError::ProxmoxUnavailable(format!("GET /cluster/resources: {e}")))?;
        let mut snapshot = Snapshot::from_resources(&items);
        let previous = self.cached.read().await.as_ref().map(|(_, s)| s.clone());
        let online: Vec<String> = snapshot.nodes.iter().filter(|n| n.online).map(|n| n.name.clone()).collect();
        let archives = futures::future::join_all(online.iter().map(|node| self.vztmpl_content(node))).await;
        for (node, content) in online.iter().zip(archives) {
            match content {
                Ok(content) => snapshot.add_lxc_templates(node, &content),
                // The rest of the reading holds; that node's containers are its last listing, or
                // unknown (503), never cached as "no templates" (422) for the TTL.
                Err(e) => {
                    tracing::warn!(pve.node = %node, error = %e, "listing vztmpl archives failed");
                    snapshot.keep_lxc_templates(node, previous.as_deref());
                }
            }
        }
        let snapshot = Arc::new(snapshot);
        *self.cached.write().await = Some((Instant::now(), snapshot.clone()));
        Ok(snapshot)
    }

    /// The `vztmpl` archives on `node`'s storages.
    async fn vztmpl_content(&self, node: &str) -> Result<Vec<StorageContent>, nimbus_proxmox::PveError> {
        let api = self.pve.node(node);
        let query = StorageListQuery { content: Some("vztmpl".into()), ..Default::default() };
        let mut out = Vec::new();
        for storage in api.storage_list(&query).await? {
            if storage.active == Some(false) || storage.enabled == Some(false) {
                continue;
            }
            out.extend(api.storage(&storage.storage).content(&ContentQuery::content("vztmpl")).await?);
        }
        Ok(out)
    }

    async fn fresh(&self) -> Option<Arc<Snapshot>> {
        match &*self.cached.read().await {
            Some((at, s)) if at.elapsed() < self.ttl => Some(s.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, online: bool, maxmem: u64, mem: u64) -> ClusterResource {
        ClusterResource {
            id: format!("node/{name}"),
            kind: "node".into(),
            node: Some(name.into()),
            status: Some(if online { "online" } else { "offline" }.into()),
            maxmem: Some(maxmem),
            mem: Some(mem),
            maxcpu: Some(8.0),
            cpu: Some(0.5),
            ..Default::default()
        }
    }

    fn template(node: &str, vmid: u32, name: &str) -> ClusterResource {
        ClusterResource {
            id: format!("qemu/{vmid}"),
            kind: "qemu".into(),
            node: Some(node.into()),
            name: Some(name.into()),
            vmid: Some(vmid),
            template: Some(true),
            maxdisk: Some(3 << 30),
            ..Default::default()
        }
    }

    fn cluster() -> Snapshot {
        let mut guest = template("pve1", 100, "web");
        guest.template = Some(false);
        Snapshot::from_resources(&[
            node("pve1", true, 64 << 30, 60 << 30),
            node("pve2", true, 64 << 30, 10 << 30),
            node("pve3", false, 64 << 30, 0),
            template("pve1", 9000, "debian-12"),
            template("pve2", 9010, "debian-12"),
            template("pve3", 9020, "debian-12"),
            template("pve1", 9001, "only-on-pve1"),
            guest,
        ])
    }

    #[test]
    fn templates_group_by_name_and_skip_ordinary_guests() {
        let s = cluster();
        let names: Vec<&str> = s.templates.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["debian-12", "only-on-pve1"]);
        assert_eq!(s.templates[0].locations.len(), 3);
        assert_eq!(s.templates[0].disk_bytes, Some(3 << 30));
    }

    #[test]
    fn placement_picks_the_online_node_with_most_free_memory() {
        let s = cluster();
        // pve3 has the most free memory but is offline.
        let p = s.place(InstanceKind::Qemu, "debian-12", None).unwrap();
        assert_eq!(p, Placement { node: "pve2".into(), template_vmid: 9010 });
        let p = s.place(InstanceKind::Qemu, "only-on-pve1", None).unwrap();
        assert_eq!(p.node, "pve1");
    }

    #[test]
    fn a_burst_within_one_reading_spreads_over_the_nodes() {
        let reading = Arc::new(Snapshot::from_resources(&[
            node("pve1", true, 64 << 30, 32 << 30),
            node("pve2", true, 64 << 30, 32 << 30),
            node("pve3", true, 64 << 30, 33 << 30),
            template("pve1", 9000, "debian-12"),
            template("pve2", 9010, "debian-12"),
            template("pve3", 9020, "debian-12"),
        ]));
        let mut placed = Placed::default();
        let mut per_node: HashMap<String, usize> = HashMap::new();
        for _ in 0..9 {
            let p = placed.place(&reading, InstanceKind::Qemu, "debian-12", None, 1 << 30).unwrap();
            *per_node.entry(p.node).or_default() += 1;
        }
        // Without counting them, all nine would have gone to pve1 (most free memory, first name).
        assert!(per_node.values().all(|n| (2..=4).contains(n)), "{per_node:?}");
        // A requested node counts too, and a new reading starts from nothing.
        placed.place(&reading, InstanceKind::Qemu, "debian-12", Some("pve3"), 8 << 30).unwrap();
        assert_ne!(placed.place(&reading, InstanceKind::Qemu, "debian-12", None, 1 << 30).unwrap().node, "pve3");
        let fresh = Arc::new((*reading).clone());
        assert_eq!(placed.place(&fresh, InstanceKind::Qemu, "debian-12", None, 1 << 30).unwrap().node, "pve1");
    }

    #[test]
    fn requested_nodes_and_templates_are_checked() {
        let s = cluster();
        assert_eq!(s.place(InstanceKind::Qemu, "debian-12", Some("pve1")).unwrap().template_vmid, 9000);
        assert!(matches!(s.place(InstanceKind::Qemu, "nope", None), Err(ApiError::UnknownTemplate { .. })));
        assert!(matches!(s.place(InstanceKind::Lxc, "debian-12", None), Err(ApiError::UnknownTemplate { .. })));
        assert!(matches!(s.place(InstanceKind::Qemu, "debian-12", Some("pve9")), Err(ApiError::UnknownNode(_))));
        assert!(matches!(
            s.place(InstanceKind::Qemu, "only-on-pve1", Some("pve2")),
            Err(ApiError::UnknownTemplate { .. })
        ));
        assert!(matches!(s.place(InstanceKind::Qemu, "debian-12", Some("pve3")), Err(ApiError::ProxmoxUnavailable(_))));
    }

    fn archive(volid: &str) -> StorageContent {
        serde_json::from_value(json!({ "volid": volid, "format": "tzst", "content": "vztmpl", "size": 1 })).unwrap()
    }

    #[test]
    fn lxc_templates_come_from_archives_and_place_like_qemu() {
        let mut s = cluster();
        let debian = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";
        s.add_lxc_templates(
            "pve1",
            &[archive(debian), archive("local:vztmpl/alpine-3.20-default_20240908_amd64.tar.xz")],
        );
        s.add_lxc_templates("pve2", &[archive(debian), archive("nfs:vztmpl/debian-12-standard_12.2-1_amd64.tar.zst")]);
        let lxc: Vec<(&str, usize)> = s
            .templates
            .iter()
            .filter(|t| t.kind == InstanceKind::Lxc)
            .map(|t| (t.name.as_str(), t.locations.len()))
            .collect();
        assert_eq!(lxc, [("alpine-3.20-default", 1), ("debian-12-standard", 2)]);
        let t = s.templates.iter().find(|t| t.name == "debian-12-standard").unwrap();
        assert_eq!(t.locations[1], TemplateLocation { node: "pve2".into(), vmid: 0, volid: Some(debian.into()) });
        // pve2 has more free memory than pve1.
        assert_eq!(s.place(InstanceKind::Lxc, "debian-12-standard", None).unwrap().node, "pve2");
        assert_eq!(s.place(InstanceKind::Lxc, "alpine-3.20-default", None).unwrap().node, "pve1");
        assert!(matches!(
            s.place(InstanceKind::Qemu, "debian-12-standard", None),
            Err(ApiError::UnknownTemplate { .. })
        ));
        assert!(matches!(
            s.place(InstanceKind::Lxc, "alpine-3.20-default", Some("pve2")),
            Err(ApiError::UnknownTemplate { .. })
        ));
    }

    #[test]
    fn a_failed_archive_listing_keeps_the_last_one_or_is_unavailable_not_unknown() {
        let debian = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";
        // No earlier listing of pve1: its templates are unknown, so LXC placement is a 503.
        let mut s = cluster();
        s.add_lxc_templates("pve2", &[]);
        s.keep_lxc_templates("pve1", None);
        assert_eq!(s.lxc_unlisted, ["pve1"]);
        assert!(matches!(s.place(InstanceKind::Lxc, "debian-12-standard", None), Err(ApiError::ProxmoxUnavailable(_))));
        assert!(matches!(
            s.place(InstanceKind::Lxc, "debian-12-standard", Some("pve1")),
            Err(ApiError::ProxmoxUnavailable(_))
        ));
        // A node that was listed still answers for itself; QEMU templates are unaffected.
        assert!(matches!(
            s.place(InstanceKind::Lxc, "debian-12-standard", Some("pve2")),
            Err(ApiError::UnknownTemplate { .. })
        ));
        assert!(matches!(s.place(InstanceKind::Qemu, "nope", None), Err(ApiError::UnknownTemplate { .. })));

        // With an earlier listing, the node keeps its archives.
        let mut before = cluster();
        before.add_lxc_templates("pve1", &[archive(debian)]);
        let mut s = cluster();
        s.keep_lxc_templates("pve1", Some(&before));
        assert!(s.lxc_unlisted.is_empty());
        let p = s.place(InstanceKind::Lxc, "debian-12-standard", None).unwrap();
        assert_eq!(p, Placement { node: "pve1".into(), template_vmid: 0 });
        // An earlier reading that had not listed the node either is no listing.
        let mut s = cluster();
        s.keep_lxc_templates("pve1", Some(&cluster_unlisted("pve1")));
        assert_eq!(s.lxc_unlisted, ["pve1"]);
    }

    fn cluster_unlisted(node: &str) -> Snapshot {
        let mut s = cluster();
        s.keep_lxc_templates(node, None);
        s
    }
}
