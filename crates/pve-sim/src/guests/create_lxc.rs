//! `POST /nodes/{node}/lxc`: create a container from a template archive (task `vzcreate`) or
//! restore one from a vzdump backup with `restore=1` (task `vzrestore`), following
//! pve-container's order of checks; root file system and mount points are allocated in the
//! task, where a full storage fails it like PVE.

use serde_json::{Value, json};

use crate::error::{PveError, PveResult};
use crate::model::{BackupMeta, Cluster, Config, Guest, GuestKind, PowerState};
use crate::params::Params;
use crate::params::guest_formats as gf;
use crate::router::Routes;
use crate::sim::Ctx;
use crate::tasks::TaskLog;
use crate::util::GIB;

use super::cloudinit::validate_ssh_keys;
use super::common::{is_volume_key, referenced_volumes};
use super::config::lxc_nic;
use super::disks::{DiskPlan, PlannedDisk, check_image_storage, free_all, free_volume, plan_disk, realize_disk};
use super::lxc_params::{LxcParamSet, lxc_config_params};

/// Registers `POST /nodes/{node}/lxc`.
pub fn register(r: &mut Routes) {
    r.post("/nodes/{node}/lxc", lxc_config_params(LxcParamSet::Create), create_ct);
}

/// Parameters of the create call that are not config options.
const NOT_CONFIG: &[&str] = &[
    "node",
    "vmid",
    "bwlimit",
    "force",
    "ignore-unpack-errors",
    "ostemplate",
    "password",
    "pool",
    "restore",
    "ssh-public-keys",
    "start",
    "storage",
    "unique",
    "unprivileged",
];

/// The OS type pve-container detects from a template archive name.
pub fn ostype_of(template: &str) -> &'static str {
    let name = template.rsplit('/').next().unwrap_or(template);
    for os in ["debian", "devuan", "ubuntu", "centos", "fedora", "opensuse", "archlinux", "alpine", "gentoo", "nixos"] {
        if name.starts_with(os) {
            return os;
        }
    }
    if name.starts_with("rockylinux") || name.starts_with("almalinux") {
        return "centos";
    }
    "unmanaged"
}

struct CreateJob {
    node: String,
    vmid: u32,
    restore: bool,
    archive: String,
    storage: String,
    disks: Vec<PlannedDisk>,
    values: Vec<(String, String)>,
    unprivileged: Option<bool>,
    unique: bool,
    pool: Option<String>,
    start: bool,
    existed: bool,
    emsg: String,
}

fn create_ct(cx: &Ctx, p: &Params) -> PveResult<Value> {
    let node = p.node()?.to_string();
    let vmid = p.vmid()?;
    let restore = p.bool("restore");
    let force = p.bool("force");
    let mut st = cx.write();
    st.node(&node)?;
    let existed = st.guests.get(&vmid).is_some_and(|g| g.node == node && g.kind == GuestKind::Lxc);
    if !(existed && restore && force) {
        st.check_vmid_unused(vmid).map_err(PveError::handler)?;
    } else {
        let g = &st.guests[&vmid];
        if g.state != PowerState::Stopped {
            return Err(PveError::handler("can't overwrite running container"));
        }
        if g.config.get("protection").is_some_and(|v| v == "1") {
            return Err(PveError::handler(format!("unable to restore CT {vmid} - protection mode enabled")));
        }
    }
    if let Some(keys) = p.opt_str("ssh-public-keys") {
        validate_ssh_keys(keys)?;
    }
    if let Some(pool) = p.opt_str("pool")
        && !st.pools.contains_key(pool)
    {
        return Err(PveError::handler(format!("pool '{pool}' does not exist")));
    }
    let archive = p.str("ostemplate")?.to_string();
    let storage = p.opt_str("storage").unwrap_or("local").to_string();

    let mut disks = Vec::new();
    let mut values = Vec::new();
    for (k, v) in p.iter().filter(|(k, _)| !NOT_CONFIG.contains(k)) {
        if k.starts_with("unused") {
            continue; // "ignoring 'unusedN', cannot create/restore with unused volume"
        }
        if is_volume_key(GuestKind::Lxc, k) {
            disks.push(plan_disk(&st, &node, GuestKind::Lxc, k, v, Some(&storage))?);
        } else if let Some(idx) = k.strip_prefix("net").and_then(|n| n.parse::<u32>().ok()) {
            values.push((k.to_string(), lxc_nic(v, st.seed, vmid, idx, None)?));
        } else {
            values.push((k.to_string(), v.to_string()));
        }
    }
    values.sort();
    disks.sort_by(|a, b| a.key.cmp(&b.key));
    let storage_only = disks.is_empty();
    if !storage_only && !disks.iter().any(|d| d.key == "rootfs") {
        return Err(PveError::handler("mount points configured, but 'rootfs' not set - aborting"));
    }
    if storage_only {
        check_image_storage(&st, &node, &storage, GuestKind::Lxc)?;
    }

    let emsg = if restore { format!("unable to restore CT {vmid} -") } else { format!("unable to create CT {vmid} -") };
    if existed {
        let g = &st.guests[&vmid];
        g.check_lock().map_err(|e| PveError::handler(format!("{emsg} {e}")))?;
    } else {
        let mut placeholder = Config::new();
        placeholder.insert("lock".into(), "create".into());
        st.guests.insert(vmid, Guest::new(vmid, GuestKind::Lxc, &node, placeholder));
    }
    let job = CreateJob {
        node: node.clone(),
        vmid,
        restore,
        archive,
        storage,
        disks,
        values,
        unprivileged: p.opt_bool("unprivileged"),
        unique: p.bool("unique"),
        pool: p.opt_str("pool").map(str::to_string),
        start: p.bool("start"),
        existed,
        emsg,
    };
    let boot_ms = cx.sim.boot_ms();
    let ty = if restore { "vzrestore" } else { "vzcreate" };
    let spec = cx.task(&node, ty, vmid).lock(vmid, "create");
    let upid = cx.spawn_task(&mut st, spec, move |st: &mut Cluster, log: &mut TaskLog| {
        let mut created = Vec::new();
        if let Err(e) = build_ct(st, &job, &mut created, log) {
            free_all(st, &job.node, &created);
            if job.existed {
                if let Some(g) = st.guests.get_mut(&job.vmid)
                    && g.lock() == Some("create")
                {
                    g.config.remove("lock");
                }
            } else {
                st.guests.remove(&job.vmid);
            }
            return Err(format!("{} {e}", job.emsg));
        }
        if let Some(pool) = &job.pool {
            if let Some(pl) = st.pools.get_mut(pool) {
                pl.vms.insert(job.vmid);
            }
            if let Some(g) = st.guests.get_mut(&job.vmid) {
                g.pool = Some(pool.clone());
            }
        }
        if job.start {
            super::power::start_now(st, job.vmid, boot_ms, log);
        }
        Ok(())
    })?;
    Ok(json!(upid))
}

fn backup_meta(st: &Cluster, node: &str, volid: &str, kind: GuestKind) -> Result<BackupMeta, String> {
    let v = st.volume(node, volid).ok_or_else(|| format!("volume '{volid}' does not exist"))?;
    match &v.backup {
        Some(m) if m.kind == kind => Ok(m.clone()),
        Some(_) => Err(format!("archive '{volid}' is not a {} backup", kind.as_str())),
        None => Err(format!("unable to read backup '{volid}' - not a vzdump archive")),
    }
}

fn build_ct(st: &mut Cluster, job: &CreateJob, created: &mut Vec<String>, log: &mut TaskLog) -> Result<(), String> {
    let (node, vmid) = (job.node.as_str(), job.vmid);
    let mut config = Config::new();
    let mut disks = job.disks.clone();
    let mut was_template = false;
    if job.restore {
        let meta = backup_meta(st, node, &job.archive, GuestKind::Lxc)?;
        log.line(format!("recovering backed-up configuration from '{}'", job.archive));
        for (k, v) in &meta.config {
            if is_volume_key(GuestKind::Lxc, k) || k == "template" || k == "lock" || k == "parent" {
                continue;
            }
            if let (true, Some(idx)) = (job.unique, k.strip_prefix("net").and_then(|n| n.parse::<u32>().ok())) {
                let mut m = gf::LXC_NET.parse(v).map_err(|e| e.trim_end().to_string())?;
                m.remove("hwaddr");
                config.insert(
                    k.clone(),
                    lxc_nic(&gf::LXC_NET.print(&m), st.seed, vmid, idx, None).map_err(|e| e.message())?,
                );
            } else {
                config.insert(k.clone(), v.clone());
            }
        }
        was_template = meta.config.get("template").is_some_and(|t| t == "1");
        if disks.is_empty() {
            for (key, size) in &meta.disks {
                let line = meta.config.get(key).ok_or_else(|| {
                    "rootfs configuration could not be recovered, please check and specify manually!".to_string()
                })?;
                let mut map = gf::LXC_MP
                    .parse(line)
                    .or_else(|_| gf::LXC_ROOTFS.parse(line))
                    .map_err(|e| e.trim_end().to_string())?;
                map.remove("size");
                disks.push(PlannedDisk {
                    key: key.clone(),
                    map,
                    plan: DiskPlan::New { storage: job.storage.clone(), bytes: *size, import_from: None },
                });
            }
            if !disks.iter().any(|d| d.key == "rootfs") {
                return Err("rootfs configuration could not be recovered, please check and specify manually!".into());
            }
        }
        log.line(format!("restoring '{}' now..", job.archive));
    } else {
        let tmpl = st.volume(node, &job.archive).ok_or_else(|| format!("volume '{}' does not exist", job.archive))?;
        if tmpl.content != "vztmpl" {
            return Err(format!("volume '{}' is not a container template", job.archive));
        }
        config.insert("ostype".into(), ostype_of(&job.archive).into());
        config.insert("arch".into(), "amd64".into());
        if disks.is_empty() {
            let map = gf::LXC_ROOTFS.parse(&format!("{}:4", job.storage)).map_err(|e| e.trim_end().to_string())?;
            disks.push(PlannedDisk {
                key: "rootfs".into(),
                map,
                plan: DiskPlan::New { storage: job.storage.clone(), bytes: 4 * GIB, import_from: None },
            });
        }
        log.line(format!("extracting archive '{}'", job.archive));
    }
    for (k, v) in &job.values {
        config.insert(k.clone(), v.clone());
    }
    if let Some(u) = job.unprivileged {
        if u {
            config.insert("unprivileged".into(), "1".into());
        } else {
            config.remove("unprivileged");
        }
    }
    for d in &disks {
        let line = realize_disk(st, node, vmid, GuestKind::Lxc, d, false, created)?;
        log.line(format!("{}: allocated volume '{line}'", d.key));
        config.insert(d.key.clone(), line);
    }
    if job.existed {
        // Restore over an existing container: its old volumes go away.
        let old = st.guests.get(&vmid).map(|g| referenced_volumes(GuestKind::Lxc, &g.config)).unwrap_or_default();
        for (_, volid) in old {
            if !created.contains(&volid) {
                let _ = free_volume(st, node, &volid);
            }
        }
    }
    config.entry("hostname".into()).or_insert_with(|| format!("CT{vmid}"));
    config.entry("memory".into()).or_insert_with(|| "512".into());
    config.entry("swap".into()).or_insert_with(|| "512".into());
    if was_template {
        log.line("Convert restored container to template...");
        super::template::make_base_volumes(st, node, vmid, GuestKind::Lxc, &mut config)?;
        config.insert("template".into(), "1".into());
    }
    config.insert("lock".into(), "create".into());
    let g = st.guests.get_mut(&vmid).ok_or("container config vanished during create")?;
    g.replace_config(config);
    created.clear();
    Ok(())
}
