//! Templates: `POST /nodes/{node}/qemu/{vmid}/template` (task `qmtemplate`) and
//! `POST /nodes/{node}/lxc/{vmid}/template` (answers null, works in a `vztemplate` task).
//! Converting renames each disk `vm-<id>-disk-<n>` to the base volume `base-<id>-disk-<n>`
//! that linked clones are made from.

use serde_json::{Value, json};

use crate::error::{PveError, PveResult};
use crate::model::{Cluster, Config, GuestKind, PowerState};
use crate::params::P;
use crate::router::Routes;

use super::common::{
    guest, is_cdrom, is_cloudinit, is_volume_key, parse_volume_line, print_volume_line, volid_of, volume_key,
};
use super::qemu_params::drive_slot_enum;

/// Renames the disk volumes of a config to base volumes (all, or only `only`).
pub fn make_base_volumes(
    st: &mut Cluster,
    node: &str,
    vmid: u32,
    kind: GuestKind,
    config: &mut Config,
) -> Result<(), String> {
    convert(st, node, vmid, kind, config, None)
}

fn convert(
    st: &mut Cluster,
    node: &str,
    vmid: u32,
    kind: GuestKind,
    config: &mut Config,
    only: Option<&str>,
) -> Result<(), String> {
    let keys: Vec<String> = config
        .keys()
        .filter(|k| is_volume_key(kind, k) && !k.starts_with("unused") && only.is_none_or(|o| o == k.as_str()))
        .cloned()
        .collect();
    for key in keys {
        let line = config[&key].clone();
        if kind == GuestKind::Qemu && is_cdrom(&line) {
            continue;
        }
        let Some(volid) = volid_of(kind, &key, &line) else { continue };
        if is_cloudinit(&volid) {
            continue;
        }
        let Some((sid, name)) = volid.split_once(':') else { continue };
        let (prefix, last) = match name.rsplit_once('/') {
            Some((pre, last)) => (format!("{pre}/"), last),
            None => (String::new(), name),
        };
        let Some(rest) = last.strip_prefix("vm-") else { continue };
        let new_name = format!("base-{rest}");
        let new_volid = format!("{sid}:{prefix}{new_name}");
        let s = st.storage_mut(node, sid).map_err(|e| e.message())?;
        let Some(mut vol) = s.volumes.remove(&volid) else { continue };
        vol.volid = new_volid.clone();
        s.volumes.insert(new_volid.clone(), vol);
        let mut map = parse_volume_line(kind, &key, &line).ok_or_else(|| format!("unable to parse '{key}'"))?;
        map.set(volume_key(kind), new_volid);
        let line = print_volume_line(kind, &key, &map);
        config.insert(key, line);
    }
    let _ = vmid;
    Ok(())
}

/// Registers both template endpoints.
pub fn register(r: &mut Routes) {
    r.post(
        "/nodes/{node}/qemu/{vmid}/template",
        vec![P::node(), P::vmid(), P::str("disk").opt().en(drive_slot_enum())],
        |cx, p| {
            let mut st = cx.write();
            let disk = p.opt_str("disk").map(str::to_string);
            let g = guest(&st, p, GuestKind::Qemu)?;
            check(g, disk.is_some())?;
            let (node, vmid) = (g.node.clone(), g.vmid);
            let upid = cx.spawn_task(&mut st, cx.task(&node, "qmtemplate", vmid), move |st, _log| {
                let g = st.guests.get(&vmid).ok_or_else(|| format!("VM {vmid} does not exist"))?;
                check(g, disk.is_some()).map_err(|e| e.message())?;
                let mut config = g.config.clone();
                config.insert("template".into(), "1".into());
                convert(st, &node, vmid, GuestKind::Qemu, &mut config, disk.as_deref())?;
                if let Some(g) = st.guests.get_mut(&vmid) {
                    g.config = config;
                }
                Ok(())
            })?;
            Ok(json!(upid))
        },
    );
    r.post("/nodes/{node}/lxc/{vmid}/template", vec![P::node(), P::vmid()], |cx, p| {
        let mut st = cx.write();
        let g = guest(&st, p, GuestKind::Lxc)?;
        check(g, false)?;
        let (node, vmid) = (g.node.clone(), g.vmid);
        cx.spawn_task(&mut st, cx.task(&node, "vztemplate", vmid), move |st, _log| {
            let g = st.guests.get(&vmid).ok_or_else(|| format!("CT {vmid} does not exist"))?;
            let mut config = g.config.clone();
            convert(st, &node, vmid, GuestKind::Lxc, &mut config, None)?;
            config.insert("template".into(), "1".into());
            if let Some(g) = st.guests.get_mut(&vmid) {
                g.config = config;
            }
            Ok(())
        })?;
        Ok(Value::Null)
    });
}

fn check(g: &crate::model::Guest, with_disk: bool) -> PveResult<()> {
    let label = g.kind.label();
    g.check_lock()?;
    if !g.snapshots.is_empty() {
        return Err(PveError::handler(format!("unable to create template, because {label} contains snapshots")));
    }
    if g.is_template() && !(with_disk && g.kind == GuestKind::Qemu) {
        return Err(PveError::handler("you can't convert a template to a template"));
    }
    if g.state != PowerState::Stopped {
        return Err(PveError::handler(match g.kind {
            GuestKind::Qemu => "you can't convert a VM to template if VM is running",
            GuestKind::Lxc => "you can't convert a CT to template if the CT is running",
        }));
    }
    Ok(())
}
