//! `POST .../qemu/{vmid}/clone` (task `qmclone`) and `POST .../lxc/{vmid}/clone` (task
//! `vzclone`), both with the source vmid as task id. Linked clones (the default from a
//! template) get a thin volume on the base (`base-9000-disk-0/vm-101-disk-0`), full clones a
//! copy of every disk; the target is locked (`clone` for qemu, `create` for LXC, which also
//! locks the source with `disk`) while the task runs. Snapshots, the template flag and the
//! MAC addresses are never copied.

use serde_json::{Value, json};

use crate::error::{PveError, PveResult};
use crate::model::storage::split_volid;
use crate::model::{Cluster, Config, Guest, GuestKind, seed};
use crate::params::guest_formats as gf;
use crate::params::{P, Params, f};
use crate::router::Routes;
use crate::sim::Ctx;
use crate::tasks::TaskLog;
use crate::util;

use super::common::{
    guest, is_cdrom, is_cloudinit, is_volume_key, parse_volume_line, print_volume_line, volid_of, volume_key,
};
use super::disks::{CLOUDINIT_SIZE, check_image_storage, free_all};

/// Registers both clone endpoints.
pub fn register(r: &mut Routes) {
    r.post(
        "/nodes/{node}/qemu/{vmid}/clone",
        vec![
            P::node(),
            P::vmid(),
            P::int("bwlimit").opt().min(0),
            P::str("description").opt(),
            P::str("format").opt().en(&["raw", "qcow2", "vmdk"]),
            P::bool("full").opt(),
            P::str("name").opt().fmt(f::DNS_NAME),
            P::int("newid").fmt(f::VMID).range(100, 999_999_999),
            P::str("pool").opt().fmt(f::POOLID),
            P::str("snapname").opt().fmt(f::CONFIGID).max_len(40),
            P::str("storage").opt().fmt(f::STORAGE_ID),
            P::str("target").opt().fmt(f::NODE),
        ],
        |cx, p| clone(cx, p, GuestKind::Qemu),
    );
    r.post(
        "/nodes/{node}/lxc/{vmid}/clone",
        vec![
            P::node(),
            P::vmid(),
            P::num("bwlimit").opt().minf(0.0),
            P::str("description").opt(),
            P::bool("full").opt(),
            P::str("hostname").opt().fmt(f::DNS_NAME),
            P::int("newid").fmt(f::VMID).range(100, 999_999_999),
            P::str("pool").opt().fmt(f::POOLID),
            P::str("snapname").opt().fmt(f::CONFIGID).max_len(40),
            P::str("storage").opt().fmt(f::STORAGE_ID),
            P::str("target").opt().fmt(f::NODE),
        ],
        |cx, p| clone(cx, p, GuestKind::Lxc),
    );
}

/// How one volume of the source is cloned.
#[derive(Debug, Clone)]
enum VolClone {
    /// A thin volume on a base volume.
    Linked { volid: String },
    /// A full copy of `bytes` on a storage.
    Full { storage: String, bytes: u64 },
    /// A fresh cloud-init drive.
    CloudInit { storage: String },
}

struct Job {
    kind: GuestKind,
    node: String,
    target: Option<String>,
    vmid: u32,
    newid: u32,
    source: Config,
    volumes: Vec<(String, VolClone)>,
    name: Option<String>,
    description: Option<String>,
    pool: Option<String>,
}

fn clone(cx: &Ctx, p: &Params, kind: GuestKind) -> PveResult<Value> {
    let node = p.node()?.to_string();
    let newid = p.u32("newid")?;
    let mut st = cx.write();
    let target = p.opt_str("target").filter(|t| *t != node).map(str::to_string);
    if let Some(t) = &target {
        st.node(t)?;
    }
    if let Some(pool) = p.opt_str("pool")
        && !st.pools.contains_key(pool)
    {
        return Err(PveError::handler(format!("pool '{pool}' does not exist")));
    }
    let storage = p.opt_str("storage").map(str::to_string);
    if let Some(s) = &storage {
        check_image_storage(&st, &node, s, kind)?;
        if target.is_some() && !st.storage(&node, s)?.shared {
            return Err(PveError::handler(format!("can't clone to non-shared storage '{s}'")));
        }
    }
    let g = guest(&st, p, kind)?;
    let vmid = g.vmid;
    g.check_lock()?;
    let snapname = p.opt_str("snapname");
    let snapshot = match snapname {
        Some(name) => Some(
            g.snapshots
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| PveError::handler(format!("snapshot '{name}' does not exist")))?,
        ),
        None => None,
    };
    let full = p.opt_bool("full").unwrap_or(!g.is_template());
    if storage.is_some() && !full {
        return Err(PveError::handler("parameter 'storage' not allowed for linked clones"));
    }
    if p.has("format") && !full {
        return Err(PveError::handler("parameter 'format' not allowed for linked clones"));
    }
    let source: Config = snapshot.map(|s| s.config.clone()).unwrap_or_else(|| g.config.clone());
    let label = kind.label();
    if kind == GuestKind::Qemu && st.guests.contains_key(&newid) {
        return Err(PveError::handler(format!("unable to create VM {newid}: config file already exists")));
    }

    let mut volumes = Vec::new();
    let mut shared = true;
    for (key, value) in &source {
        if !is_volume_key(kind, key) || key.starts_with("unused") {
            continue;
        }
        let Some(volid) = volid_of(kind, key, value) else { continue };
        let cloudinit = kind == GuestKind::Qemu && is_cloudinit(&volid);
        if kind == GuestKind::Qemu && is_cdrom(value) && !cloudinit {
            continue;
        }
        let (sid, name) =
            split_volid(&volid).ok_or_else(|| PveError::handler(format!("unable to parse volume ID '{volid}'")))?;
        let src = st.storage(&node, sid)?;
        shared &= src.shared;
        let dest = storage.clone().unwrap_or_else(|| sid.to_string());
        let plan = if cloudinit {
            VolClone::CloudInit { storage: dest }
        } else if full || key == "tpmstate0" {
            let bytes = src.volumes.get(&volid).map(|v| v.size).unwrap_or(0);
            VolClone::Full { storage: dest, bytes }
        } else {
            let is_base = name.rsplit('/').next().is_some_and(|n| n.starts_with("base-"));
            if !is_base && snapname.is_none() {
                return Err(PveError::handler(match kind {
                    GuestKind::Qemu => format!("Linked clone feature is not supported for '{volid}' ({key})"),
                    GuestKind::Lxc => format!("Linked clone feature for '{volid}' is not available"),
                }));
            }
            VolClone::Linked { volid: volid.clone() }
        };
        volumes.push((key.clone(), plan));
    }
    if let Some(t) = &target
        && !shared
    {
        return Err(PveError::handler(format!("can't clone {label} to node '{t}' ({label} uses local storage)")));
    }
    // The target config is created (and locked) before the worker starts.
    let target_lock = match kind {
        GuestKind::Qemu => "clone",
        GuestKind::Lxc => {
            st.check_vmid_unused(newid).map_err(PveError::handler)?;
            "create"
        }
    };
    let mut tmp = Config::new();
    tmp.insert("lock".into(), target_lock.into());
    st.guests.insert(newid, Guest::new(newid, kind, &node, tmp));
    let mut spec =
        cx.task(&node, if kind == GuestKind::Qemu { "qmclone" } else { "vzclone" }, vmid).lock(newid, target_lock);
    if kind == GuestKind::Lxc {
        spec = spec.lock(vmid, "disk");
    }
    let job = Job {
        kind,
        node,
        target,
        vmid,
        newid,
        source,
        volumes,
        name: p.opt_str(if kind == GuestKind::Qemu { "name" } else { "hostname" }).map(str::to_string),
        description: p.opt_str("description").map(str::to_string),
        pool: p.opt_str("pool").map(str::to_string),
    };
    let upid = cx.spawn_task(&mut st, spec, move |st: &mut Cluster, log: &mut TaskLog| {
        let mut created = Vec::new();
        match build_clone(st, &job, &mut created, log) {
            Ok(()) => Ok(()),
            Err(e) => {
                free_all(st, &job.node, &created);
                st.guests.remove(&job.newid);
                Err(format!("clone failed: {e}"))
            }
        }
    })?;
    Ok(json!(upid))
}

fn clone_volume(
    st: &mut Cluster,
    node: &str,
    newid: u32,
    kind: GuestKind,
    plan: &VolClone,
    created: &mut Vec<String>,
) -> Result<(String, u64), String> {
    let content = if kind == GuestKind::Qemu { "images" } else { "rootdir" };
    let (volid, size) = match plan {
        VolClone::Linked { volid } => {
            let (sid, base_name) = split_volid(volid).ok_or("bad volume id")?;
            let base_name = base_name.rsplit('/').next().unwrap_or(base_name).to_string();
            let size =
                st.volume(node, volid).map(|v| v.size).ok_or_else(|| format!("volume '{volid}' does not exist"))?;
            let s = st.storage_mut(node, sid).map_err(|e| e.message())?;
            let name = format!("{base_name}/{}", s.next_disk_name(newid, "vm"));
            // A thin snapshot of the base: it only holds the blocks the clone changes.
            let used = size / 100;
            let id = s.add_volume(&name, content, "raw", size, used, Some(newid), Some(volid.clone()))?;
            (id, size)
        }
        VolClone::Full { storage, bytes } => {
            let s = st.storage_mut(node, storage).map_err(|e| e.message())?;
            (s.alloc_image(newid, *bytes, content, "raw")?, *bytes)
        }
        VolClone::CloudInit { storage } => {
            let s = st.storage_mut(node, storage).map_err(|e| e.message())?;
            let id = s.add_volume(
                &format!("vm-{newid}-cloudinit"),
                "images",
                "raw",
                CLOUDINIT_SIZE,
                CLOUDINIT_SIZE,
                Some(newid),
                None,
            )?;
            (id, CLOUDINIT_SIZE)
        }
    };
    created.push(volid.clone());
    Ok((volid, size))
}

fn build_clone(st: &mut Cluster, job: &Job, created: &mut Vec<String>, log: &mut TaskLog) -> Result<(), String> {
    if !st.guests.contains_key(&job.vmid) {
        return Err(format!(
            "Configuration file '{}' does not exist",
            crate::model::config_path(&job.node, job.kind, job.vmid)
        ));
    }
    let seed_v = st.seed;
    let id = job.newid.to_be_bytes();
    let stamp = util::now_ms().to_be_bytes();
    let mut conf = Config::new();
    for (k, v) in &job.source {
        if matches!(
            k.as_str(),
            "snapshots"
                | "parent"
                | "snaptime"
                | "vmstate"
                | "snapstate"
                | "runningcpu"
                | "runningmachine"
                | "lock"
                | "template"
        ) || k.starts_with("unused")
        {
            continue;
        }
        if let Some(idx) = k.strip_prefix("net").and_then(|n| n.parse::<u32>().ok()) {
            let mac = seed::guest_mac(seed_v, job.newid, idx);
            let line = match job.kind {
                GuestKind::Qemu => gf::QEMU_NET.parse(v).map(|mut m| {
                    m.set("macaddr", mac);
                    gf::QEMU_NET.print(&m)
                }),
                GuestKind::Lxc => gf::LXC_NET.parse(v).map(|mut m| {
                    m.set("hwaddr", mac);
                    gf::LXC_NET.print(&m)
                }),
            }
            .unwrap_or_else(|_| v.clone());
            conf.insert(k.clone(), line);
            continue;
        }
        conf.insert(k.clone(), v.clone());
    }
    for (key, plan) in &job.volumes {
        let vkey = volume_key(job.kind);
        let what = match plan {
            VolClone::Linked { volid } => format!("create linked clone of drive {key} ({volid})"),
            _ => format!(
                "create full clone of drive {key} ({})",
                volid_of(job.kind, key, &job.source[key]).unwrap_or_default()
            ),
        };
        log.line(what);
        let (volid, size) = clone_volume(st, &job.node, job.newid, job.kind, plan, created)?;
        let mut map = parse_volume_line(job.kind, key, &job.source[key])
            .ok_or_else(|| format!("unable to parse drive options for '{key}'"))?;
        map.set(vkey, volid);
        if matches!(plan, VolClone::CloudInit { .. }) {
            map.remove("size");
        } else {
            map.set("size", util::format_size(size));
        }
        conf.insert(key.clone(), print_volume_line(job.kind, key, &map));
    }
    match job.kind {
        GuestKind::Qemu => {
            let uuid = seed::uuid(seed_v, &[b"smbios", &id, &stamp]);
            let smbios = conf
                .get("smbios1")
                .and_then(|s| super::formats::SMBIOS1.parse(s).ok())
                .map(|mut m| {
                    m.set("uuid", uuid.clone());
                    super::formats::SMBIOS1.print(&m)
                })
                .unwrap_or_else(|| format!("uuid={uuid}"));
            conf.insert("smbios1".into(), smbios);
            if conf.contains_key("vmgenid") {
                conf.insert("vmgenid".into(), seed::uuid(seed_v, &[b"vmgenid", &id, &stamp]));
            }
            let name = job.name.clone().unwrap_or_else(|| {
                format!("Copy-of-VM-{}", job.source.get("name").cloned().unwrap_or_else(|| job.vmid.to_string()))
            });
            conf.insert("name".into(), name);
            conf.insert("lock".into(), "clone".into());
        }
        GuestKind::Lxc => {
            if let Some(h) = &job.name {
                conf.insert("hostname".into(), h.clone());
            }
            conf.insert("lock".into(), "create".into());
        }
    }
    if let Some(d) = &job.description {
        conf.insert("description".into(), d.clone());
    }
    let g = st.guests.get_mut(&job.newid).ok_or("clone target config vanished")?;
    g.config = conf;
    if let Some(t) = &job.target {
        g.node = t.clone();
    }
    if let Some(pool) = &job.pool {
        g.pool = Some(pool.clone());
        if let Some(pl) = st.pools.get_mut(pool) {
            pl.vms.insert(job.newid);
        }
    }
    Ok(())
}
