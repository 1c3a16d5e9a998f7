//! qemu restore: `POST /nodes/{node}/qemu` with `archive=<backup volid>` (task `qmrestore`).
//! Disks of the backup are allocated anew (on `storage` or their original storage), the
//! backed-up config is written with the request's options merged over it, `unique=1` gives
//! new MACs, `force=1` overwrites an existing stopped VM, and a backed-up template comes back
//! as a template.

use serde_json::{Value, json};

use crate::error::{PveError, PveResult};
use crate::model::{BackupMeta, Cluster, Config, Guest, GuestKind, PowerState};
use crate::params::Params;
use crate::params::guest_formats as gf;
use crate::sim::Ctx;
use crate::tasks::TaskLog;

use super::common::{is_cloudinit, is_volume_key, parse_volume_line, referenced_volumes, volid_of};
use super::create_qemu::{NOT_CONFIG, config_options, nic_with_mac, prepare_qemu_options};
use super::disks::{DiskPlan, PlannedDisk, free_all, free_volume, realize_disk};

/// The restore branch of `create_vm` (called with the state locked).
pub fn restore_qemu(cx: &Ctx, st: &mut Cluster, p: &Params) -> PveResult<Value> {
    let node = p.node()?.to_string();
    let vmid = p.vmid()?;
    let archive = p.str("archive")?.to_string();
    let opts = config_options(p, NOT_CONFIG);
    if let Some((k, _)) = opts.iter().find(|(k, _)| is_volume_key(GuestKind::Qemu, k) && !k.starts_with("unused")) {
        return Err(PveError::param(k.clone(), "option conflicts with option 'archive'"));
    }
    if archive == "-" {
        return Err(PveError::handler("pipe requires cli environment"));
    }
    let force = p.bool("force");
    let emsg = format!("unable to restore VM {vmid} -");
    let existed = match st.guests.get(&vmid) {
        Some(g) if force && g.node == node && g.kind == GuestKind::Qemu => {
            g.check_lock().map_err(|e| PveError::handler(format!("{emsg} {e}")))?;
            true
        }
        Some(_) => {
            let e = st.check_vmid_unused(vmid).err().unwrap_or_default();
            return Err(PveError::handler(format!("{emsg} {e}")));
        }
        None => false,
    };
    if p.bool("live-restore") {
        return Err(PveError::handler(
            "live-restore is only compatible with backup images from a Proxmox Backup Server",
        ));
    }
    let prepared = prepare_qemu_options(st, &node, vmid, &opts, None, None)?;
    if existed {
        if let Some(g) = st.guests.get_mut(&vmid) {
            g.config.insert("lock".into(), "create".into());
        }
    } else {
        let mut c = Config::new();
        c.insert("lock".into(), "create".into());
        st.guests.insert(vmid, Guest::new(vmid, GuestKind::Qemu, &node, c));
    }
    let storage = p.opt_str("storage").map(str::to_string);
    let unique = p.bool("unique");
    let pool = p.opt_str("pool").map(str::to_string);
    let start = p.bool("start");
    let boot_ms = cx.sim.boot_ms();
    let spec = cx.task(&node, "qmrestore", vmid).lock(vmid, "create");
    let upid = cx.spawn_task(st, spec, move |st: &mut Cluster, log: &mut TaskLog| {
        let g = st.guests.get(&vmid).ok_or_else(|| format!("{emsg} VM {vmid} vanished"))?;
        if g.config.get("protection").is_some_and(|v| v == "1") {
            return Err(format!("{emsg} - protection mode enabled"));
        }
        if g.state != PowerState::Stopped {
            return Err(format!("{emsg} vm is running"));
        }
        let mut created = Vec::new();
        let result = restore_body(st, &node, vmid, &archive, storage.as_deref(), unique, &prepared.values, &mut created, log);
        if let Err(e) = result {
            free_all(st, &node, &created);
            if let Some(g) = st.guests.get_mut(&vmid) {
                g.config.remove("lock");
            }
            log.line("error before or during data restore, some or all disks were not completely restored. VM state is NOT cleaned up.");
            return Err(e);
        }
        if let Some(pool) = &pool {
            if let Some(pl) = st.pools.get_mut(pool) {
                pl.vms.insert(vmid);
            }
            if let Some(g) = st.guests.get_mut(&vmid) {
                g.pool = Some(pool.clone());
            }
        }
        if start {
            log.line("Execute autostart");
            super::power::start_now(st, vmid, boot_ms, log);
        }
        Ok(())
    })?;
    Ok(json!(upid))
}

#[allow(clippy::too_many_arguments)]
fn restore_body(
    st: &mut Cluster,
    node: &str,
    vmid: u32,
    archive: &str,
    storage: Option<&str>,
    unique: bool,
    overrides: &[(String, String)],
    created: &mut Vec<String>,
    log: &mut TaskLog,
) -> Result<(), String> {
    let meta: BackupMeta = {
        let v = st.volume(node, archive).ok_or_else(|| format!("volume '{archive}' does not exist"))?;
        match &v.backup {
            Some(m) if m.kind == GuestKind::Qemu => m.clone(),
            Some(_) => return Err(format!("archive '{archive}' is not a qemu backup")),
            None => return Err(format!("unable to read backup '{archive}' - not a vzdump archive")),
        }
    };
    log.line(format!("restore vma archive: zstd -q -d -c {archive}"));
    let mut config = Config::new();
    let mut disks = Vec::new();
    for (k, v) in &meta.config {
        if matches!(k.as_str(), "lock" | "parent" | "snapstate" | "vmstate") {
            continue;
        }
        if is_volume_key(GuestKind::Qemu, k) {
            if k.starts_with("unused") {
                continue;
            }
            let volid = volid_of(GuestKind::Qemu, k, v);
            let size = meta.disks.iter().find(|(dk, _)| dk == k).map(|(_, s)| *s);
            let Some(mut map) = parse_volume_line(GuestKind::Qemu, k, v) else { continue };
            match (volid, size) {
                (Some(id), _) if is_cloudinit(&id) => {
                    let sid = storage
                        .map(str::to_string)
                        .unwrap_or_else(|| id.split(':').next().unwrap_or("local-lvm").into());
                    map.remove("size");
                    disks.push(PlannedDisk { key: k.clone(), map, plan: DiskPlan::CloudInit { storage: sid } });
                }
                (Some(id), Some(bytes)) => {
                    let sid = storage
                        .map(str::to_string)
                        .unwrap_or_else(|| id.split(':').next().unwrap_or("local-lvm").into());
                    if st.storage(node, &sid).is_err() {
                        return Err(format!("storage '{sid}' does not exist"));
                    }
                    map.remove("size");
                    disks.push(PlannedDisk {
                        key: k.clone(),
                        map,
                        plan: DiskPlan::New { storage: sid, bytes, import_from: None },
                    });
                }
                _ => {
                    config.insert(k.clone(), v.clone());
                }
            }
            continue;
        }
        if let (true, Some(idx)) = (unique, k.strip_prefix("net").and_then(|n| n.parse::<u32>().ok())) {
            let mut m = gf::QEMU_NET.parse(v).map_err(|e| e.trim_end().to_string())?;
            m.remove("macaddr");
            config.insert(
                k.clone(),
                nic_with_mac(&gf::QEMU_NET.print(&m), st.seed, vmid, idx, None).map_err(|e| e.message())?,
            );
            continue;
        }
        config.insert(k.clone(), v.clone());
    }
    let was_template = config.remove("template").is_some_and(|t| t == "1");
    // qemu-server destroys an overwritten VM's volumes (keeping its config) before restoring.
    let old = st.guests.get(&vmid).map(|g| referenced_volumes(GuestKind::Qemu, &g.config)).unwrap_or_default();
    for (_, volid) in old {
        let _ = free_volume(st, node, &volid);
    }
    for d in &disks {
        let line = realize_disk(st, node, vmid, GuestKind::Qemu, d, false, created)?;
        log.line(format!("new volume ID is '{}'", volid_of(GuestKind::Qemu, &d.key, &line).unwrap_or_default()));
        config.insert(d.key.clone(), line);
    }
    for (k, v) in overrides {
        config.insert(k.clone(), v.clone());
    }
    if was_template {
        log.line("Convert to template.");
        super::template::make_base_volumes(st, node, vmid, GuestKind::Qemu, &mut config)?;
        config.insert("template".into(), "1".into());
    }
    config.insert("lock".into(), "create".into());
    let g = st.guests.get_mut(&vmid).ok_or("VM config vanished during restore")?;
    g.replace_config(config);
    created.clear();
    log.line("rescan volumes...");
    Ok(())
}
