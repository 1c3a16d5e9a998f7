//! Migration between nodes: `GET .../qemu/{vmid}/migrate` (preconditions) and
//! `POST .../qemu/{vmid}/migrate` / `.../lxc/{vmid}/migrate` (tasks `qmigrate`/`vzmigrate`,
//! lock `migrate`). Local volumes are copied to the same storage id on the target (or the
//! `targetstorage` mapping); linked clones and snapshots on local storage refuse to move like
//! PVE's volume scan does.

use serde_json::{Value, json};

use crate::error::{PveError, PveResult};
use crate::model::storage::split_volid;
use crate::model::{Cluster, GuestKind, PowerState};
use crate::params::{Format, P, Params, f};
use crate::router::Routes;
use crate::sim::Ctx;
use crate::tasks::TaskLog;

use super::common::{
    guest, is_cdrom, is_cloudinit, parse_volume_line, print_volume_line, referenced_volumes, volid_of, volume_key,
};
use super::formats as xf;

/// Registers the migration endpoints.
pub fn register(r: &mut Routes) {
    r.get("/nodes/{node}/qemu/{vmid}/migrate", vec![P::node(), P::vmid(), P::str("target").opt().fmt(f::NODE)], |cx, p| {
        let st = cx.read();
        let g = guest(&st, p, GuestKind::Qemu)?;
        let mut allowed = Vec::new();
        let mut not_allowed = serde_json::Map::new();
        let sids: Vec<String> = referenced_volumes(GuestKind::Qemu, &g.config)
            .into_iter()
            .filter_map(|(_, v)| split_volid(&v).map(|(s, _)| s.to_string()))
            .collect();
        for (name, n) in &st.nodes {
            if *name == g.node {
                continue;
            }
            let missing: Vec<&String> = sids.iter().filter(|s| !n.storages.contains_key(s.as_str())).collect();
            if missing.is_empty() && cx.sim.node_online(name) {
                allowed.push(json!(name));
            } else {
                not_allowed.insert(name.clone(), json!({"unavailable_storages": missing}));
            }
        }
        let local_disks: Vec<Value> = g
            .config
            .iter()
            .filter_map(|(k, v)| {
                let volid = volid_of(GuestKind::Qemu, k, v)?;
                let s = st.storage(&g.node, split_volid(&volid)?.0).ok()?;
                if s.shared {
                    return None;
                }
                let size = s.volumes.get(&volid).map(|x| x.size).unwrap_or(0);
                Some(json!({"volid": volid, "size": size, "cdrom": u8::from(is_cdrom(v) && !is_cloudinit(&volid)), "is_unused": u8::from(k.starts_with("unused")), "drivename": k}))
            })
            .collect();
        Ok(json!({
            "running": u8::from(g.state != PowerState::Stopped),
            "allowed_nodes": allowed,
            "not_allowed_nodes": not_allowed,
            "local_disks": local_disks,
            "local_resources": [],
            "mapped-resources": [],
            "mapped-resource-info": {},
        }))
    });
    r.post(
        "/nodes/{node}/qemu/{vmid}/migrate",
        vec![
            P::node(),
            P::vmid(),
            P::int("bwlimit").opt().min(0),
            P::bool("force").opt(),
            P::str("migration_network").opt().fmt(f::CIDR),
            P::str("migration_type").opt().en(&["secure", "insecure"]),
            P::bool("online").opt(),
            P::str("target").fmt(f::NODE),
            P::str("targetstorage").opt().fmt(Format::List(xf::storage_pair)),
            P::bool("with-local-disks").opt(),
        ],
        |cx, p| migrate(cx, p, GuestKind::Qemu),
    );
    r.post(
        "/nodes/{node}/lxc/{vmid}/migrate",
        vec![
            P::node(),
            P::vmid(),
            P::num("bwlimit").opt().minf(0.0),
            P::bool("online").opt(),
            P::bool("restart").opt(),
            P::str("target").fmt(f::NODE),
            P::str("target-storage").opt().fmt(Format::List(xf::storage_pair)),
            P::int("timeout").opt(),
        ],
        |cx, p| migrate(cx, p, GuestKind::Lxc),
    );
}

/// `source:target` pairs (a bare id maps everything there).
fn storage_map(list: Vec<&str>) -> Vec<(Option<String>, String)> {
    list.into_iter()
        .filter(|s| *s != "1")
        .map(|s| match s.split_once(':') {
            Some((a, b)) => (Some(a.to_string()), b.to_string()),
            None => (None, s.to_string()),
        })
        .collect()
}

fn migrate(cx: &Ctx, p: &Params, kind: GuestKind) -> PveResult<Value> {
    let node = p.node()?.to_string();
    let target = p.str("target")?.to_string();
    if target == node {
        return Err(PveError::param("target", "target is local node."));
    }
    if kind == GuestKind::Qemu {
        for n in ["force", "migration_type", "migration_network"] {
            if p.has(n) && !cx.is_root() {
                return Err(PveError::param(n, "Only root may use this option."));
            }
        }
    }
    let mut st = cx.write();
    st.node(&target)?;
    if !cx.sim.node_online(&target) {
        return Err(PveError::handler(format!("target node '{target}' not online")));
    }
    let g = guest(&st, p, kind)?;
    let vmid = g.vmid;
    let running = g.state != PowerState::Stopped;
    let online = p.bool("online");
    let restart = p.bool("restart");
    match kind {
        GuestKind::Qemu if running && !online => {
            return Err(PveError::handler("can't migrate running VM without --online"));
        }
        GuestKind::Lxc if running && !online && !restart => {
            return Err(PveError::handler("can't migrate running container without --online or --restart"));
        }
        _ => {}
    }
    let map_param = if kind == GuestKind::Qemu { "targetstorage" } else { "target-storage" };
    let map = storage_map(p.list(map_param));
    let pre = g.check_lock().err();
    let mut spec = cx.task(&node, if kind == GuestKind::Qemu { "qmigrate" } else { "vzmigrate" }, vmid);
    if pre.is_none() {
        spec = spec.lock(vmid, "migrate");
    }
    let boot_ms = cx.sim.boot_ms();
    let started = chrono::Local::now();
    let upid = cx.spawn_task(&mut st, spec, move |st: &mut Cluster, log: &mut TaskLog| {
        if let Some(e) = pre {
            return Err(e);
        }
        log.line(format!("starting migration of {} {vmid} to node '{target}'", kind.label()));
        let res = move_guest(st, &node, &target, vmid, kind, &map, online, restart, boot_ms, log);
        res.map_err(|e| {
            let secs = (chrono::Local::now() - started).num_seconds().max(0);
            format!("migration aborted (duration {:02}:{:02}:{:02}): {e}", secs / 3600, secs / 60 % 60, secs % 60)
        })
    })?;
    Ok(json!(upid))
}

#[allow(clippy::too_many_arguments)]
fn move_guest(
    st: &mut Cluster,
    node: &str,
    target: &str,
    vmid: u32,
    kind: GuestKind,
    map: &[(Option<String>, String)],
    online: bool,
    restart: bool,
    boot_ms: i64,
    log: &mut TaskLog,
) -> Result<(), String> {
    let g = st.guests.get(&vmid).ok_or_else(|| format!("{} {vmid} does not exist", kind.label()))?;
    if kind == GuestKind::Lxc && online && g.state != PowerState::Stopped {
        return Err("lxc live migration is currently not implemented".into());
    }
    let was_running = g.state != PowerState::Stopped;
    let mut moves = Vec::new();
    for (key, volid) in referenced_volumes(kind, &g.config) {
        let (sid, name) = split_volid(&volid).ok_or("bad volume id")?;
        let src = st.storage(node, sid).map_err(|e| e.message())?;
        if src.shared {
            continue;
        }
        let vol = src.volumes.get(&volid).ok_or_else(|| format!("volume '{volid}' does not exist"))?.clone();
        if let Some(parent) = &vol.parent {
            let base = split_volid(parent).map(|(_, b)| b).unwrap_or(parent);
            return Err(format!(
                "Problem found while scanning volumes - can't migrate '{volid}' as it's a clone of '{base}'"
            ));
        }
        if src.volumes.values().any(|v| v.parent.as_deref() == Some(volid.as_str())) {
            return Err(format!("Problem found while scanning volumes - {volid}: referenced by linked clone(s)"));
        }
        if !g.snapshots.is_empty() {
            return Err(format!("Problem found while scanning volumes - {volid}: non-migratable snapshot exists"));
        }
        let dest = map
            .iter()
            .find(|(from, _)| from.as_deref() == Some(sid))
            .or_else(|| map.iter().find(|(from, _)| from.is_none()))
            .map(|(_, to)| to.clone())
            .unwrap_or_else(|| sid.to_string());
        moves.push((key, volid.clone(), dest, name.to_string(), vol));
    }
    if was_running && kind == GuestKind::Lxc && restart {
        log.line(format!("shutdown CT {vmid}"));
        super::power::stop_now(st, vmid);
    }
    let mut new_lines = Vec::new();
    for (key, volid, dest, name, vol) in &moves {
        let t = st.storage_mut(target, dest).map_err(|e| e.message())?;
        let new_id = t.add_volume(name, &vol.content, &vol.format, vol.size, vol.used, vol.vmid, None)?;
        log.line(format!("copying local disk '{volid}' to '{new_id}'"));
        new_lines.push((key.clone(), volid.clone(), new_id));
    }
    for (_, volid, _) in &new_lines {
        st.remove_volume(node, volid);
    }
    let g = st.guests.get_mut(&vmid).ok_or("guest vanished during migration")?;
    for (key, _, new_id) in new_lines {
        if key == "vmstate" {
            g.config.insert(key, new_id);
            continue;
        }
        if let Some(mut m) = g.config.get(&key).and_then(|l| parse_volume_line(kind, &key, l)) {
            m.set(volume_key(kind), new_id);
            g.config.insert(key.clone(), print_volume_line(kind, &key, &m));
        }
    }
    g.node = target.to_string();
    log.line(format!("migration finished successfully (duration 00:00:{:02})", 1 + moves.len()));
    if was_running && kind == GuestKind::Lxc && restart {
        super::power::start_now(st, vmid, boot_ms, log);
    }
    Ok(())
}
