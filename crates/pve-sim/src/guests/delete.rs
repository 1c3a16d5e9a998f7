//! `DELETE /nodes/{node}/qemu/{vmid}` (task `qmdestroy`) and `DELETE .../lxc/{vmid}` (task
//! `vzdestroy`), parameters in the query string: refused while running (unless LXC `force`)
//! or protected; the worker checks the lock, refuses templates whose base volumes linked
//! clones still use, frees every owned volume (and, with `destroy-unreferenced-disks`, the
//! other volumes of that vmid), and removes the guest from its pool.

use serde_json::json;

use crate::error::{PveError, PveResult};
use crate::model::storage::volume_owner;
use crate::model::{Cluster, GuestKind, PowerState};
use crate::params::{P, Params};
use crate::router::Routes;
use crate::sim::Ctx;

use super::common::{guest, referenced_volumes, skiplock};
use super::disks::free_volume;

/// Registers both destroy endpoints.
pub fn register(r: &mut Routes) {
    r.delete(
        "/nodes/{node}/qemu/{vmid}",
        vec![
            P::node(),
            P::vmid(),
            P::bool("destroy-unreferenced-disks").opt(),
            P::bool("purge").opt(),
            P::bool("skiplock").opt(),
        ],
        |cx, p| destroy(cx, p, GuestKind::Qemu),
    );
    r.delete(
        "/nodes/{node}/lxc/{vmid}",
        vec![
            P::node(),
            P::vmid(),
            P::bool("destroy-unreferenced-disks").opt(),
            P::bool("force").opt(),
            P::bool("purge").opt(),
        ],
        |cx, p| destroy(cx, p, GuestKind::Lxc),
    );
}

fn destroy(cx: &Ctx, p: &Params, kind: GuestKind) -> PveResult<serde_json::Value> {
    let skip = if kind == GuestKind::Qemu { skiplock(cx, p)? } else { false };
    let force = p.bool("force");
    let unreferenced = p.bool("destroy-unreferenced-disks");
    let mut st = cx.write();
    let g = guest(&st, p, kind)?;
    let (node, vmid) = (g.node.clone(), g.vmid);
    let label = kind.label();
    if g.config.get("protection").is_some_and(|v| v == "1") {
        return Err(PveError::handler(format!("can't remove {label} {vmid} - protection mode enabled")));
    }
    let running = g.state != PowerState::Stopped;
    match kind {
        GuestKind::Qemu if running => return Err(PveError::handler(format!("VM {vmid} is running - destroy failed"))),
        GuestKind::Lxc => {
            g.check_lock()?;
            if running && !force {
                return Err(PveError::handler(format!("unable to destroy CT {vmid} - container is running")));
            }
        }
        _ => {}
    }
    let pre = super::common::lock_error(g, skip || g.lock() == Some("suspended"));
    let ty = if kind == GuestKind::Qemu { "qmdestroy" } else { "vzdestroy" };
    let mut spec = cx.task(&node, ty, vmid);
    if pre.is_none() {
        spec = spec.lock(vmid, "destroyed");
    }
    let upid = cx.spawn_task(&mut st, spec, move |st: &mut Cluster, log| {
        if let Some(e) = pre {
            return Err(e);
        }
        let Some(g) = st.guests.get(&vmid) else {
            return Err(format!(
                "Configuration file '{}' does not exist",
                crate::model::config_path(&node, kind, vmid)
            ));
        };
        if g.state != PowerState::Stopped {
            if kind == GuestKind::Lxc && force {
                log.line(format!("forced to stop CT {vmid} before destroying!"));
                super::power::stop_now(st, vmid);
            } else {
                return Err(match kind {
                    GuestKind::Qemu => format!("VM {vmid} is running - destroy failed"),
                    GuestKind::Lxc => format!("unable to destroy CT {vmid} - container is running"),
                });
            }
        }
        destroy_now(st, &node, vmid, unreferenced, log)
    })?;
    Ok(json!(upid))
}

/// Frees a guest's volumes and removes it (the body of both destroy tasks).
pub fn destroy_now(
    st: &mut Cluster,
    node: &str,
    vmid: u32,
    unreferenced: bool,
    log: &mut crate::tasks::TaskLog,
) -> Result<(), String> {
    let Some(g) = st.guests.get(&vmid) else { return Ok(()) };
    let kind = g.kind;
    let mut volids: Vec<String> = referenced_volumes(kind, &g.config).into_iter().map(|(_, v)| v).collect();
    for snap in &g.snapshots {
        volids.extend(referenced_volumes(kind, &snap.config).into_iter().map(|(_, v)| v));
    }
    volids.extend(referenced_volumes(kind, &g.pending).into_iter().map(|(_, v)| v));
    volids.sort();
    volids.dedup();
    // Only volumes this guest owns; base volumes still used by linked clones block a template.
    let owned: Vec<String> = volids
        .into_iter()
        .filter(|v| v.split_once(':').and_then(|(_, name)| volume_owner(name)) == Some(vmid))
        .collect();
    if g.is_template() {
        for v in &owned {
            let sid = v.split(':').next().unwrap_or_default();
            let in_use = st
                .nodes
                .get(node)
                .and_then(|n| n.storages.get(sid))
                .is_some_and(|s| s.volumes.values().any(|x| x.parent.as_deref() == Some(v.as_str())));
            if in_use {
                return Err(format!("base volume '{v}' is still in use by linked cloned"));
            }
        }
    }
    for v in &owned {
        if let Err(e) = free_volume(st, node, v) {
            log.line(format!("Could not remove disk '{v}', check manually: {e}"));
        } else {
            log.line(format!("  Logical volume \"{}\" successfully removed.", v.split(':').nth(1).unwrap_or(v)));
        }
    }
    if unreferenced {
        let extra: Vec<String> = st
            .nodes
            .get(node)
            .map(|n| {
                n.storages
                    .values()
                    .flat_map(|s| s.volumes.values())
                    .filter(|v| v.vmid == Some(vmid) && matches!(v.content.as_str(), "images" | "rootdir"))
                    .map(|v| v.volid.clone())
                    .collect()
            })
            .unwrap_or_default();
        for v in extra {
            let _ = free_volume(st, node, &v);
        }
    }
    if let Some(g) = st.guests.remove(&vmid)
        && let Some(pool) = g.pool
        && let Some(pl) = st.pools.get_mut(&pool)
    {
        pl.vms.remove(&vmid);
    }
    for pl in st.pools.values_mut() {
        pl.vms.remove(&vmid);
    }
    Ok(())
}
