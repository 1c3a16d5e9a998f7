//! Helpers shared by the guest endpoints: guest lookup with PVE's errors, the `skiplock` and
//! `digest` rules, task-time lock checks, and the property-string view of volume lines
//! (qemu drives and LXC mount points).

use std::sync::Arc;

use crate::error::{PveError, PveResult};
use crate::model::guest::{is_lxc_volume_key, is_qemu_drive_key};
use crate::model::{Cluster, Guest, GuestKind};
use crate::params::guest_formats as gf;
use crate::params::{Params, PropFormat, PropMap};
use crate::sim::Ctx;

/// `qemu` or `lxc` in a path.
pub fn kind_path(kind: GuestKind) -> &'static str {
    kind.as_str()
}

/// PVE's `skiplock` rule: only `root@pam` itself may skip locks (400 otherwise).
pub fn skiplock(cx: &Ctx, p: &Params) -> PveResult<bool> {
    let skip = p.bool("skiplock");
    if skip && !cx.is_root() {
        return Err(PveError::param("skiplock", "Only root may use this option."));
    }
    Ok(skip)
}

/// The guest of the request (`{node}`, `{vmid}`), or `Configuration file '...' does not exist`.
pub fn guest<'a>(st: &'a Cluster, p: &Params, kind: GuestKind) -> PveResult<&'a Guest> {
    st.guest_on(p.node()?, kind, p.vmid()?)
}

/// Mutable variant of [`guest`].
pub fn guest_mut<'a>(st: &'a mut Cluster, p: &Params, kind: GuestKind) -> PveResult<&'a mut Guest> {
    let (node, vmid) = (p.node()?.to_string(), p.vmid()?);
    st.guest_on_mut(&node, kind, vmid)
}

/// qemu's digest check text (`$update_vm_api`, `resize_vm`).
pub const QEMU_DIGEST_MISMATCH: &str = "checksum mismatch (file change by other user?)";
/// `PVE::Tools::assert_if_modified` (LXC config and resize).
pub const LXC_DIGEST_MISMATCH: &str = "detected modified configuration - file changed by other user? Try again.";

/// Checks an optional `digest` against the guest's config digest.
pub fn check_digest(g: &Guest, p: &Params) -> Result<(), String> {
    match p.opt_str("digest") {
        Some(d) if !d.is_empty() && d != g.digest() => Err(match g.kind {
            GuestKind::Qemu => QEMU_DIGEST_MISMATCH.to_string(),
            GuestKind::Lxc => LXC_DIGEST_MISMATCH.to_string(),
        }),
        _ => Ok(()),
    }
}

/// For operations whose lock check happens inside the worker: the error the worker would hit
/// (None when the guest may be locked by the task).
pub fn lock_error(g: &Guest, skip: bool) -> Option<String> {
    if skip { None } else { g.check_lock().err() }
}

/// The property-string format of a volume key (`scsi0`, `efidisk0`, `unused3`, `rootfs`, `mp0`).
pub fn volume_format(kind: GuestKind, key: &str) -> Option<&'static Arc<PropFormat>> {
    let digits =
        |prefix: &str| key.strip_prefix(prefix).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    match kind {
        GuestKind::Qemu => Some(match () {
            _ if digits("ide") => &*gf::IDE,
            _ if digits("sata") => &*gf::SATA,
            _ if digits("scsi") => &*gf::SCSI,
            _ if digits("virtio") => &*gf::VIRTIO,
            _ if key == "efidisk0" => &*gf::EFIDISK,
            _ if key == "tpmstate0" => &*gf::TPMSTATE,
            _ if digits("unused") => &*gf::QEMU_UNUSED,
            _ => return None,
        }),
        GuestKind::Lxc => Some(match () {
            _ if key == "rootfs" => &*gf::LXC_ROOTFS,
            _ if digits("mp") => &*gf::LXC_MP,
            _ if digits("unused") => &*gf::LXC_UNUSED,
            _ => return None,
        }),
    }
}

/// The key holding the volume in a parsed volume line (`file` for qemu, `volume` for LXC).
pub fn volume_key(kind: GuestKind) -> &'static str {
    match kind {
        GuestKind::Qemu => "file",
        GuestKind::Lxc => "volume",
    }
}

/// Whether a config key holds a volume (drives, mount points, unused).
pub fn is_volume_key(kind: GuestKind, key: &str) -> bool {
    let unused = key.strip_prefix("unused").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    unused
        || match kind {
            GuestKind::Qemu => is_qemu_drive_key(key),
            GuestKind::Lxc => is_lxc_volume_key(key),
        }
}

/// A parsed volume line.
pub fn parse_volume_line(kind: GuestKind, key: &str, value: &str) -> Option<PropMap> {
    volume_format(kind, key)?.parse(value).ok()
}

/// Prints a volume line back in PVE's order.
pub fn print_volume_line(kind: GuestKind, key: &str, map: &PropMap) -> String {
    match volume_format(kind, key) {
        Some(f) => f.print(map),
        None => map.0.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
    }
}

/// The volume id of a config line (None for `none`, `cdrom`, paths).
pub fn volid_of(kind: GuestKind, key: &str, value: &str) -> Option<String> {
    let map = parse_volume_line(kind, key, value)?;
    let v = map.get(volume_key(kind))?;
    (v.contains(':') && !v.starts_with('/')).then(|| v.to_string())
}

/// Whether a qemu drive line is a CD-ROM (`media=cdrom`), cloud-init drives included.
pub fn is_cdrom(value: &str) -> bool {
    value.split(',').any(|p| p == "media=cdrom") || value == "none" || value.starts_with("cdrom")
}

/// PVE's `drive_is_cloudinit`: the volume name is `vm-<id>-cloudinit` (or `cloudinit`).
pub fn is_cloudinit(volid: &str) -> bool {
    let name = volid.rsplit([':', '/']).next().unwrap_or(volid);
    let name = name.split('.').next().unwrap_or(name);
    name == "cloudinit"
        || name
            .strip_prefix("vm-")
            .and_then(|r| r.strip_suffix("-cloudinit"))
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

/// Volumes a guest config references (drive and mount point lines plus `unused[n]` and
/// `vmstate`), without CD-ROM images: (config key, volid).
pub fn referenced_volumes(kind: GuestKind, config: &crate::model::Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in config {
        if k == "vmstate" {
            out.push((k.clone(), v.clone()));
            continue;
        }
        if !is_volume_key(kind, k) {
            continue;
        }
        if kind == GuestKind::Qemu && is_cdrom(v) && !volid_of(kind, k, v).is_some_and(|id| is_cloudinit(&id)) {
            continue;
        }
        if let Some(volid) = volid_of(kind, k, v) {
            out.push((k.clone(), volid));
        }
    }
    out
}

/// The first free `unused[n]` key.
pub fn next_unused_key(g: &Guest) -> String {
    (0..)
        .map(|i| format!("unused{i}"))
        .find(|k| !g.config.contains_key(k) && !g.pending.contains_key(k))
        .expect("unbounded")
}

/// Splits `STORAGE:SIZE` (PVE's `NEW_DISK_RE`, size in GiB) into (storage, bytes).
pub fn new_disk_spec(file: &str) -> Option<(Option<&str>, u64)> {
    let (sid, size) = match file.rsplit_once(':') {
        Some((s, n)) => (Some(s), n),
        None => (None, file),
    };
    if sid.is_some_and(|s| s.is_empty() || s.contains(['/', ' '])) {
        return None;
    }
    let ok = !size.is_empty()
        && size.split('.').count() <= 2
        && size.split('.').all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    if !ok {
        return None;
    }
    let gib: f64 = size.parse().ok()?;
    Some((sid, (gib * crate::util::GIB as f64) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_lines_are_classified() {
        assert_eq!(new_disk_spec("local-lvm:32"), Some((Some("local-lvm"), 32 * crate::util::GIB)));
        assert_eq!(new_disk_spec("local-lvm:0.5"), Some((Some("local-lvm"), crate::util::GIB / 2)));
        assert_eq!(new_disk_spec("local-lvm:vm-100-disk-0"), None);
        assert!(is_cloudinit("local-lvm:vm-100-cloudinit"));
        assert!(is_cloudinit("local:100/vm-100-cloudinit.qcow2"));
        assert!(!is_cloudinit("local-lvm:vm-100-disk-0"));
        assert_eq!(
            volid_of(GuestKind::Qemu, "scsi0", "local-lvm:vm-1-disk-0,size=4G").as_deref(),
            Some("local-lvm:vm-1-disk-0")
        );
        assert_eq!(volid_of(GuestKind::Qemu, "ide2", "none,media=cdrom"), None);
        assert_eq!(
            volid_of(GuestKind::Lxc, "mp0", "local-lvm:vm-1-disk-1,mp=/data,size=8G").as_deref(),
            Some("local-lvm:vm-1-disk-1")
        );
        let mut c = crate::model::Config::new();
        c.insert("ide2".into(), "local:iso/a.iso,media=cdrom".into());
        c.insert("ide0".into(), "local-lvm:vm-1-cloudinit,media=cdrom".into());
        c.insert("scsi0".into(), "local-lvm:vm-1-disk-0,size=4G".into());
        c.insert("unused0".into(), "local-lvm:vm-1-disk-1".into());
        let vols: Vec<String> = referenced_volumes(GuestKind::Qemu, &c).into_iter().map(|(_, v)| v).collect();
        assert_eq!(vols, vec!["local-lvm:vm-1-cloudinit", "local-lvm:vm-1-disk-0", "local-lvm:vm-1-disk-1"]);
    }
}
