//! Snapshots of qemu and LXC guests: list (ending with the `current` pseudo-entry), create
//! (`qmsnapshot`/`vzsnapshot`, lock `snapshot`, `vmstate` saves RAM of a running VM), delete
//! (`qmdelsnapshot`/`vzdelsnapshot`, lock `snapshot-delete`), rollback
//! (`qmrollback`/`vzrollback`, lock `rollback`, stops the guest first, `start`), and the
//! snapshot's config (GET, and PUT of its description). Name rules are checked before the
//! worker forks; the rest inside it, like pve-guest-common's `AbstractConfig`.

use serde_json::{Map, Value, json};

use crate::error::{PveError, PveResult};
use crate::model::{Cluster, Config, GuestKind, PowerState, Snapshot};
use crate::params::{P, Params, f};
use crate::router::Routes;
use crate::tasks::TaskLog;
use crate::util::{self, MIB};

use super::common::{guest, guest_mut, referenced_volumes};
use super::disks::free_volume;

fn paths(kind: GuestKind) -> [&'static str; 4] {
    match kind {
        GuestKind::Qemu => [
            "/nodes/{node}/qemu/{vmid}/snapshot",
            "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}",
            "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback",
            "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/config",
        ],
        GuestKind::Lxc => [
            "/nodes/{node}/lxc/{vmid}/snapshot",
            "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}",
            "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/rollback",
            "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/config",
        ],
    }
}

fn snapname() -> P {
    P::str("snapname").fmt(f::CONFIGID).max_len(40)
}

fn task_type(kind: GuestKind, what: &str) -> String {
    format!("{}{what}", if kind == GuestKind::Qemu { "qm" } else { "vz" })
}

/// The config copied into a snapshot (`__snapshot_copy_config`).
fn copy_config(src: &Config) -> Config {
    src.iter()
        .filter(|(k, _)| {
            !matches!(k.as_str(), "snapstate" | "snaptime" | "vmstate" | "lock" | "digest" | "description" | "parent")
                && !k.starts_with("unused")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Registers the snapshot endpoints of both guest kinds.
pub fn register(r: &mut Routes) {
    for kind in [GuestKind::Qemu, GuestKind::Lxc] {
        let [list, one, rollback, config] = paths(kind);
        r.get(list, vec![P::node(), P::vmid()], move |cx, p| {
            let st = cx.read();
            let g = guest(&st, p, kind)?;
            let mut snaps: Vec<&Snapshot> = g.snapshots.iter().collect();
            snaps.sort_by_key(|s| s.snaptime);
            let mut out: Vec<Value> = snaps
                .into_iter()
                .map(|s| {
                    let mut item = json!({"name": s.name, "snaptime": s.snaptime, "description": s.description});
                    if kind == GuestKind::Qemu {
                        item["vmstate"] = json!(u8::from(s.vmstate));
                    }
                    if let Some(parent) = &s.parent {
                        item["parent"] = json!(parent);
                    }
                    if let Some(state) = &s.snapstate {
                        item["snapstate"] = json!(state);
                    }
                    item
                })
                .collect();
            let mut current = json!({
                "name": "current",
                "digest": g.digest(),
                "running": u8::from(g.state != PowerState::Stopped),
                "description": "You are here!",
            });
            if let Some(parent) = g.config.get("parent") {
                current["parent"] = json!(parent);
            }
            out.push(current);
            Ok(Value::Array(out))
        });

        let mut create_params = vec![P::node(), P::vmid(), snapname(), P::str("description").opt()];
        if kind == GuestKind::Qemu {
            create_params.push(P::bool("vmstate").opt());
        }
        r.post(list, create_params, move |cx, p| create(cx, p, kind));

        r.get(one, vec![P::node(), P::vmid(), snapname()], |_cx, _p| {
            Ok(json!([{"cmd": "rollback"}, {"cmd": "config"}]))
        })
        .local();

        r.delete(one, vec![P::node(), P::vmid(), snapname(), P::bool("force").opt()], move |cx, p| delete(cx, p, kind));

        r.post(rollback, vec![P::node(), P::vmid(), snapname(), P::bool("start").opt()], move |cx, p| {
            rollback_api(cx, p, kind)
        });

        r.get(config, vec![P::node(), P::vmid(), snapname()], move |cx, p| {
            let st = cx.read();
            let g = guest(&st, p, kind)?;
            let name = p.str("snapname")?;
            let s = g
                .snapshots
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| PveError::handler(format!("snapshot '{name}' does not exist")))?;
            let mut out = Map::new();
            for (k, v) in &s.config {
                out.insert(k.clone(), super::config::config_value(kind, k, v));
            }
            out.insert("description".into(), json!(s.description));
            out.insert("snaptime".into(), json!(s.snaptime));
            if let Some(parent) = &s.parent {
                out.insert("parent".into(), json!(parent));
            }
            if s.vmstate {
                out.insert("vmstate".into(), json!(s.config.get("vmstate").cloned().unwrap_or_default()));
            }
            if let Some(state) = &s.snapstate {
                out.insert("snapstate".into(), json!(state));
            }
            Ok(Value::Object(out))
        });

        r.put(config, vec![P::node(), P::vmid(), snapname(), P::str("description").opt()], move |cx, p| {
            let Some(desc) = p.opt_str("description") else { return Ok(Value::Null) };
            let mut st = cx.write();
            let g = guest_mut(&mut st, p, kind)?;
            let name = p.str("snapname")?;
            let s = g
                .snapshots
                .iter_mut()
                .find(|s| s.name == name)
                .ok_or_else(|| PveError::handler(format!("snapshot '{name}' does not exist")))?;
            s.description = desc.to_string();
            Ok(Value::Null)
        });
    }
}

fn create(cx: &crate::sim::Ctx, p: &Params, kind: GuestKind) -> PveResult<Value> {
    let name = p.str("snapname")?.to_string();
    if name == "current" {
        return Err(PveError::handler("unable to use snapshot name 'current' (reserved name)"));
    }
    match kind {
        GuestKind::Qemu if name.eq_ignore_ascii_case("pending") => {
            return Err(PveError::handler("unable to use snapshot name 'pending' (reserved name)"));
        }
        GuestKind::Lxc if name == "vzdump" => {
            return Err(PveError::handler("unable to use snapshot name 'vzdump' (reserved name)"));
        }
        _ => {}
    }
    let mut st = cx.write();
    let g = guest(&st, p, kind)?;
    let (node, vmid) = (g.node.clone(), g.vmid);
    // __snapshot_prepare runs first thing in the worker: its refusals end the task.
    let pre = if g.is_template() {
        Some("you can't take a snapshot if it's a template".to_string())
    } else if let Err(e) = g.check_lock() {
        Some(e)
    } else if g.snapshots.iter().any(|s| s.name == name) {
        Some(format!("snapshot name '{name}' already used"))
    } else {
        None
    };
    let vmstate = kind == GuestKind::Qemu && p.bool("vmstate") && g.state != PowerState::Stopped;
    let description = p.opt_str("description").unwrap_or("").to_string();
    let mut spec = cx.task(&node, &task_type(kind, "snapshot"), vmid);
    if pre.is_none() {
        spec = spec.lock(vmid, "snapshot");
        let g = guest_mut(&mut st, p, kind)?;
        let parent = g.config.get("parent").cloned();
        g.snapshots.push(Snapshot {
            name: name.clone(),
            description: description.clone(),
            snaptime: util::now(),
            parent,
            vmstate,
            config: copy_config(&g.config),
            snapstate: Some("prepare".into()),
        });
    }
    let upid = cx.spawn_task(&mut st, spec, move |st: &mut Cluster, log: &mut TaskLog| {
        if let Some(e) = pre {
            return Err(e);
        }
        let result = commit(st, &node, vmid, &name, vmstate, log);
        if result.is_err()
            && let Some(g) = st.guests.get_mut(&vmid)
        {
            g.snapshots.retain(|s| s.name != name);
        }
        result
    })?;
    Ok(json!(upid))
}

fn commit(st: &mut Cluster, node: &str, vmid: u32, name: &str, vmstate: bool, log: &mut TaskLog) -> Result<(), String> {
    let g = st.guests.get(&vmid).ok_or_else(|| format!("VM {vmid} does not exist"))?;
    if !g.snapshots.iter().any(|s| s.name == name) {
        return Err(format!("snapshot '{name}' does not exist"));
    }
    let state_vol = if vmstate {
        let sid = g
            .config
            .get("vmstatestorage")
            .cloned()
            .or_else(|| {
                referenced_volumes(g.kind, &g.config)
                    .into_iter()
                    .find(|(k, v)| k != "vmstate" && !super::common::is_cloudinit(v))
                    .and_then(|(_, v)| v.split_once(':').map(|(s, _)| s.to_string()))
            })
            .unwrap_or_else(|| "local-lvm".into());
        let size = g.maxmem() * 2 + 500 * MIB;
        log.line(format!("saving VM state and RAM using storage '{sid}'"));
        let s = st.storage_mut(node, &sid).map_err(|e| e.message())?;
        Some(s.add_volume(&format!("vm-{vmid}-state-{name}"), "images", "raw", size, size, Some(vmid), None)?)
    } else {
        None
    };
    let g = st.guests.get_mut(&vmid).ok_or_else(|| format!("VM {vmid} does not exist"))?;
    if let Some(s) = g.snapshots.iter_mut().find(|s| s.name == name) {
        s.snapstate = None;
        if let Some(v) = state_vol {
            s.config.insert("vmstate".into(), v);
        }
    }
    g.config.insert("parent".into(), name.to_string());
    Ok(())
}

fn delete(cx: &crate::sim::Ctx, p: &Params, kind: GuestKind) -> PveResult<Value> {
    let name = p.str("snapname")?.to_string();
    let mut st = cx.write();
    let g = guest(&st, p, kind)?;
    let (node, vmid) = (g.node.clone(), g.vmid);
    let pre = if !g.snapshots.iter().any(|s| s.name == name) {
        Some(format!("snapshot '{name}' does not exist"))
    } else {
        g.check_lock().err()
    };
    let mut spec = cx.task(&node, &task_type(kind, "delsnapshot"), vmid);
    if pre.is_none() {
        spec = spec.lock(vmid, "snapshot-delete");
        if let Some(s) = guest_mut(&mut st, p, kind)?.snapshots.iter_mut().find(|s| s.name == name) {
            s.snapstate = Some("delete".into());
        }
    }
    let upid = cx.spawn_task(&mut st, spec, move |st: &mut Cluster, _log| {
        if let Some(e) = pre {
            return Err(e);
        }
        let g = st.guests.get_mut(&vmid).ok_or_else(|| format!("VM {vmid} does not exist"))?;
        let Some(pos) = g.snapshots.iter().position(|s| s.name == name) else {
            return Err(format!("snapshot '{name}' does not exist"));
        };
        let snap = g.snapshots.remove(pos);
        for s in g.snapshots.iter_mut() {
            if s.parent.as_deref() == Some(name.as_str()) {
                s.parent = snap.parent.clone();
            }
        }
        if g.config.get("parent") == Some(&name) {
            match &snap.parent {
                Some(pp) => g.config.insert("parent".into(), pp.clone()),
                None => g.config.remove("parent"),
            };
        }
        if let Some(v) = snap.config.get("vmstate") {
            let v = v.clone();
            free_volume(st, &node, &v)?;
        }
        Ok(())
    })?;
    Ok(json!(upid))
}

fn rollback_api(cx: &crate::sim::Ctx, p: &Params, kind: GuestKind) -> PveResult<Value> {
    let name = p.str("snapname")?.to_string();
    let start = p.bool("start");
    let mut st = cx.write();
    let g = guest(&st, p, kind)?;
    let (node, vmid) = (g.node.clone(), g.vmid);
    let snap = g.snapshots.iter().find(|s| s.name == name);
    let pre = if g.is_template() {
        Some(format!("you can't rollback if {} is a template", if kind == GuestKind::Qemu { "vm" } else { "ct" }))
    } else if snap.is_none() {
        Some(format!("snapshot '{name}' does not exist"))
    } else if let Some(state) = snap.and_then(|s| s.snapstate.as_deref()) {
        Some(format!("unable to rollback to incomplete snapshot (snapstate = {state})"))
    } else {
        g.check_lock().err()
    };
    let mut spec = cx.task(&node, &task_type(kind, "rollback"), vmid);
    if pre.is_none() {
        spec = spec.lock(vmid, "rollback");
    }
    let boot_ms = cx.sim.boot_ms();
    let upid = cx.spawn_task(&mut st, spec, move |st: &mut Cluster, log: &mut TaskLog| {
        if let Some(e) = pre {
            return Err(e);
        }
        let running = st.guests.get(&vmid).is_some_and(|g| g.state != PowerState::Stopped);
        if running {
            super::power::stop_now(st, vmid);
        }
        let g = st.guests.get_mut(&vmid).ok_or_else(|| format!("VM {vmid} does not exist"))?;
        let snap = g
            .snapshots
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .ok_or_else(|| format!("snapshot '{name}' does not exist"))?;
        let kind = g.kind;
        let mut conf: Config = g
            .config
            .iter()
            .filter(|(k, _)| k.starts_with("unused") || *k == "description")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in &snap.config {
            if k != "vmstate" {
                conf.insert(k.clone(), v.clone());
            }
        }
        conf.insert("parent".into(), name.clone());
        // Volumes added after the snapshot stay on the storage: keep them reachable as unused.
        let in_snap: Vec<String> = referenced_volumes(kind, &conf).into_iter().map(|(_, v)| v).collect();
        let dropped: Vec<String> = referenced_volumes(kind, &g.config)
            .into_iter()
            .filter(|(k, v)| k != "vmstate" && !in_snap.contains(v))
            .map(|(_, v)| v)
            .collect();
        if let Some(l) = g.config.get("lock") {
            conf.insert("lock".into(), l.clone());
        }
        g.config = conf;
        g.pending.clear();
        g.pending_delete.clear();
        for v in dropped {
            let k = super::common::next_unused_key(g);
            g.config.insert(k, v);
        }
        if snap.vmstate && kind == GuestKind::Qemu {
            log.line(format!("resuming VM {vmid} from the snapshot's RAM state"));
            start_kept_state(st, vmid, boot_ms);
        } else if start {
            super::power::start_now(st, vmid, boot_ms, log);
        }
        Ok(())
    })?;
    Ok(json!(upid))
}

/// Starts a VM from a snapshot's saved RAM (the guest agent answers at once: it never
/// stopped from the guest's point of view).
fn start_kept_state(st: &mut Cluster, vmid: u32, boot_ms: i64) {
    let pid = st.next_pid();
    if let Some(g) = st.guests.get_mut(&vmid) {
        g.set_running(util::now_ms(), boot_ms.min(0), pid);
    }
}
