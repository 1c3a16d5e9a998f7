//! `PUT .../qemu/{vmid}/resize` and `PUT .../lxc/{vmid}/resize` (task `resize`): grow only,
//! `+` for relative sizes, K/M/G/T in powers of 1024. qemu-server makes every check inside
//! the worker (`shrinking disks is not supported`); pve-container makes them before forking
//! (`unable to shrink disk size`, `disk is already at specified size`).

use serde_json::json;

use crate::error::{PveError, PveResult};
use crate::model::{Cluster, GuestKind};
use crate::params::{P, Params};
use crate::router::Routes;
use crate::sim::Ctx;
use crate::util::{self, GIB, KIB, MIB, TIB};

use super::common::{check_digest, guest, is_cdrom, parse_volume_line, print_volume_line, skiplock, volid_of};
use super::disks::grow_volume;
use super::qemu_params::drive_slot_enum;

const SIZE_RE: &str = r"\+?\d+(\.\d+)?[KMGT]?";

fn lxc_disk_enum() -> &'static [&'static str] {
    static E: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
        std::iter::once("rootfs".to_string())
            .chain((0..256).map(|i| format!("mp{i}")))
            .map(|s| &*Box::leak(s.into_boxed_str()))
            .collect()
    });
    E.as_slice()
}

/// Registers both resize endpoints.
pub fn register(r: &mut Routes) {
    r.put(
        "/nodes/{node}/qemu/{vmid}/resize",
        vec![
            P::node(),
            P::vmid(),
            P::str("digest").opt().max_len(40),
            P::str("disk").en(drive_slot_enum()),
            P::str("size").pattern(SIZE_RE),
            P::bool("skiplock").opt(),
        ],
        resize_qemu,
    );
    r.put(
        "/nodes/{node}/lxc/{vmid}/resize",
        vec![
            P::node(),
            P::vmid(),
            P::str("digest").opt().max_len(40),
            P::str("disk").en(lxc_disk_enum()),
            P::str("size").pattern(SIZE_RE),
        ],
        resize_lxc,
    );
}

/// A size string: (relative, bytes).
pub fn parse_size_request(s: &str) -> Option<(bool, u64)> {
    let (rel, rest) = match s.strip_prefix('+') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (num, mult) = match rest.chars().last()? {
        'K' => (&rest[..rest.len() - 1], KIB),
        'M' => (&rest[..rest.len() - 1], MIB),
        'G' => (&rest[..rest.len() - 1], GIB),
        'T' => (&rest[..rest.len() - 1], TIB),
        _ => (rest, 1),
    };
    let n: f64 = num.parse().ok()?;
    Some((rel, (n * mult as f64) as u64))
}

/// The checks and the resize itself; returns the line to write or None for "no change".
fn compute(
    st: &Cluster,
    node: &str,
    vmid: u32,
    kind: GuestKind,
    disk: &str,
    size: &str,
) -> Result<Option<(String, String, u64)>, String> {
    let g = st.guests.get(&vmid).ok_or_else(|| format!("{} {vmid} does not exist", kind.label()))?;
    let line = g.config.get(disk).ok_or_else(|| format!("disk '{disk}' does not exist"))?;
    if kind == GuestKind::Qemu && is_cdrom(line) {
        return Err("you can't resize a cdrom".into());
    }
    let volid = volid_of(kind, disk, line).ok_or_else(|| format!("disk '{disk}' has no associated volume"))?;
    if kind == GuestKind::Lxc {
        let owner = volid.split_once(':').and_then(|(_, n)| crate::model::storage::volume_owner(n));
        if owner != Some(vmid) {
            return Err(format!("can't resize mount point owned by another container ({})", owner.unwrap_or(0)));
        }
    }
    let cur = st
        .volume(node, &volid)
        .map(|v| v.size)
        .ok_or_else(|| format!("Could not determine current size of volume '{volid}'"))?;
    let (rel, bytes) = parse_size_request(size).ok_or("internal error")?;
    let new = if rel { cur.saturating_add(bytes) } else { bytes };
    if new < cur {
        return Err(match kind {
            GuestKind::Qemu => "shrinking disks is not supported".into(),
            GuestKind::Lxc => "unable to shrink disk size".into(),
        });
    }
    if new == cur {
        return match kind {
            GuestKind::Qemu => Ok(None),
            GuestKind::Lxc => Err("disk is already at specified size".into()),
        };
    }
    let mut map = parse_volume_line(kind, disk, line).ok_or("unable to parse drive")?;
    map.set("size", util::format_size(new));
    Ok(Some((volid, print_volume_line(kind, disk, &map), new)))
}

fn apply(
    st: &mut Cluster,
    node: &str,
    vmid: u32,
    disk: &str,
    volid: &str,
    line: String,
    new: u64,
) -> Result<(), String> {
    grow_volume(st, node, volid, new)?;
    if let Some(g) = st.guests.get_mut(&vmid) {
        g.config.insert(disk.to_string(), line);
    }
    Ok(())
}

fn resize_qemu(cx: &Ctx, p: &Params) -> PveResult<serde_json::Value> {
    let skip = skiplock(cx, p)?;
    let mut st = cx.write();
    let g = guest(&st, p, GuestKind::Qemu)?;
    let (node, vmid) = (g.node.clone(), g.vmid);
    // Every check of qemu-server's resize happens in the worker.
    let digest_err = check_digest(g, p).err();
    let lock_err = super::common::lock_error(g, skip);
    let disk = p.str("disk")?.to_string();
    let size = p.str("size")?.to_string();
    let upid = cx.spawn_task(&mut st, cx.task(&node, "resize", vmid), move |st, log| {
        if let Some(e) = digest_err.or(lock_err) {
            return Err(e);
        }
        let Some((volid, line, new)) = compute(st, &node, vmid, GuestKind::Qemu, &disk, &size)? else {
            return Ok(());
        };
        log.line(format!(
            "  Size of logical volume pve/{} changed to {}.",
            volid.split(':').nth(1).unwrap_or(""),
            util::format_size(new)
        ));
        apply(st, &node, vmid, &disk, &volid, line, new)
    })?;
    Ok(json!(upid))
}

fn resize_lxc(cx: &Ctx, p: &Params) -> PveResult<serde_json::Value> {
    let mut st = cx.write();
    let g = guest(&st, p, GuestKind::Lxc)?;
    let (node, vmid) = (g.node.clone(), g.vmid);
    g.check_lock()?;
    check_digest(g, p)?;
    let disk = p.str("disk")?.to_string();
    let size = p.str("size")?.to_string();
    compute(&st, &node, vmid, GuestKind::Lxc, &disk, &size).map_err(PveError::handler)?;
    let upid = cx.spawn_task(&mut st, cx.task(&node, "resize", vmid), move |st, _log| {
        let g = st.guests.get(&vmid).ok_or_else(|| format!("CT {vmid} does not exist"))?;
        g.check_lock()?;
        let Some((volid, line, new)) = compute(st, &node, vmid, GuestKind::Lxc, &disk, &size)? else { return Ok(()) };
        apply(st, &node, vmid, &disk, &volid, line, new)
    })?;
    Ok(json!(upid))
}
