//! Volume lines of guest configs as PVE's `create_disks` treats them: checks done before the
//! worker forks (storage exists and holds images / container dirs, `import-from` source,
//! `media=cdrom` for ISOs), then allocation inside the task with capacity accounting
//! (`STORAGE:SIZE`, `STORAGE:0,import-from=...`, `STORAGE:cloudinit`), and freeing volumes
//! (refused for base volumes linked clones still use).

use crate::error::{PveError, PveResult};
use crate::model::storage::split_volid;
use crate::model::{Cluster, GuestKind};
use crate::params::PropMap;
use crate::util::{self, MIB};

use super::common::{is_cdrom, new_disk_spec, parse_volume_line, print_volume_line, volume_key};

/// The size of a new cloud-init drive (PVE: 4 MiB).
pub const CLOUDINIT_SIZE: u64 = 4 * MIB;
/// The size of a TPM state volume (PVE: 4 MiB).
pub const TPMSTATE_SIZE: u64 = 4 * MIB;
/// The size of an EFI vars volume (PVE: 528 KiB for 4m, rounded up by LVM to 4 MiB).
pub const EFIDISK_SIZE: u64 = 4 * MIB;

/// What a volume line asks for.
#[derive(Debug, Clone)]
pub enum DiskPlan {
    /// Nothing to allocate (`none`, `cdrom`, an ISO image, a path): stored as printed.
    Keep,
    /// A new cloud-init drive on a storage.
    CloudInit { storage: String },
    /// A new volume of `bytes` on a storage, optionally a copy of another volume.
    New { storage: String, bytes: u64, import_from: Option<String> },
    /// An existing volume (its size is looked up when the line is written).
    Existing { volid: String },
}

/// A parsed, checked volume line and its plan.
#[derive(Debug, Clone)]
pub struct PlannedDisk {
    pub key: String,
    pub map: PropMap,
    pub plan: DiskPlan,
}

fn content_for(kind: GuestKind) -> &'static str {
    match kind {
        GuestKind::Qemu => "images",
        GuestKind::Lxc => "rootdir",
    }
}

/// Checks that `sid` exists on `node` and holds guest volumes (PVE raises this on `storage`).
pub fn check_image_storage(st: &Cluster, node: &str, sid: &str, kind: GuestKind) -> PveResult<()> {
    let s = st.storage(node, sid)?;
    if !s.enabled {
        return Err(PveError::handler(format!("storage '{sid}' is not available on node '{node}'")));
    }
    if !s.supports(content_for(kind)) {
        let what = match kind {
            GuestKind::Qemu => "vm images",
            GuestKind::Lxc => "container directories",
        };
        return Err(PveError::param("storage", format!("storage '{sid}' does not support {what}")));
    }
    Ok(())
}

/// The sync checks of one volume line (`$check_drive_param` + `$check_storage_access`).
pub fn plan_disk(
    st: &Cluster,
    node: &str,
    kind: GuestKind,
    key: &str,
    value: &str,
    default_storage: Option<&str>,
) -> PveResult<PlannedDisk> {
    let map =
        parse_volume_line(kind, key, value).ok_or_else(|| PveError::param(key, "unable to parse drive options"))?;
    let file = map.get(volume_key(kind)).unwrap_or("").to_string();
    let import_from = map.get("import-from").map(str::to_string);
    let cdrom = kind == GuestKind::Qemu && is_cdrom(value);
    let plan = if file.is_empty() || file == "none" || file == "cdrom" || file.starts_with('/') {
        DiskPlan::Keep
    } else if file == "cloudinit" || file.ends_with(":cloudinit") {
        let sid = file
            .strip_suffix(":cloudinit")
            .or(default_storage)
            .ok_or_else(|| PveError::handler("no storage ID specified (and no default storage)"))?;
        check_image_storage(st, node, sid, kind)?;
        DiskPlan::CloudInit { storage: sid.to_string() }
    } else if let (false, Some((sid, bytes))) = (cdrom, new_disk_spec(&file)) {
        let sid = sid
            .or(default_storage)
            .ok_or_else(|| PveError::handler("no storage ID specified (and no default storage)"))?;
        check_image_storage(st, node, sid, kind)?;
        if let Some(src) = &import_from {
            if bytes != 0 {
                return Err(PveError::param(
                    key,
                    "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>",
                ));
            }
            check_import_source(st, node, key, src)?;
        }
        DiskPlan::New { storage: sid.to_string(), bytes, import_from }
    } else {
        if import_from.is_some() {
            return Err(PveError::param(
                key,
                "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>",
            ));
        }
        let vol = st.volume(node, &file);
        if let Some(v) = vol {
            if v.content == "iso" && !cdrom {
                return Err(PveError::param(key, "explicit 'media=cdrom' is required for iso images"));
            }
            if !matches!(v.content.as_str(), "images" | "iso" | "rootdir") {
                return Err(PveError::param(key, "content type needs to be 'images' or 'iso'"));
            }
        }
        if cdrom { DiskPlan::Keep } else { DiskPlan::Existing { volid: file } }
    };
    Ok(PlannedDisk { key: key.to_string(), map, plan })
}

fn check_import_source(st: &Cluster, node: &str, key: &str, src: &str) -> PveResult<()> {
    if src.starts_with('/') {
        return Ok(());
    }
    if let Some(v) = st.volume(node, src)
        && v.content != "images"
        && v.content != "import"
    {
        return Err(PveError::param(
            key,
            format!("{src} has wrong type '{}' - needs to be 'images' or 'import'", v.content),
        ));
    }
    Ok(())
}

/// Allocates a volume for `vmid` (a `base-` volume for templates); returns the volid.
pub fn alloc_volume(
    st: &mut Cluster,
    node: &str,
    sid: &str,
    vmid: u32,
    kind: GuestKind,
    bytes: u64,
    template: bool,
) -> Result<String, String> {
    let s = st.storage_mut(node, sid).map_err(|e| e.message())?;
    if template {
        let name = s.next_disk_name(vmid, "base");
        s.add_volume(&name, content_for(kind), "raw", bytes, bytes, Some(vmid), None)
    } else {
        s.alloc_image(vmid, bytes, content_for(kind), "raw")
    }
}

/// Writes a planned line inside a task: allocates what it needs (recording new volids in
/// `created`) and returns the printed config value.
pub fn realize_disk(
    st: &mut Cluster,
    node: &str,
    vmid: u32,
    kind: GuestKind,
    disk: &PlannedDisk,
    template: bool,
    created: &mut Vec<String>,
) -> Result<String, String> {
    let mut map = disk.map.clone();
    let vkey = volume_key(kind);
    match &disk.plan {
        DiskPlan::Keep => {
            map.remove("size");
        }
        DiskPlan::CloudInit { storage } => {
            let s = st.storage_mut(node, storage).map_err(|e| e.message())?;
            let name = format!("vm-{vmid}-cloudinit");
            let volid = s.add_volume(&name, "images", "raw", CLOUDINIT_SIZE, CLOUDINIT_SIZE, Some(vmid), None)?;
            created.push(volid.clone());
            map.set(vkey, volid);
            map.set("media", "cdrom");
            map.remove("format");
            map.remove("size");
        }
        DiskPlan::New { storage, bytes, import_from } => {
            let bytes = match (import_from, disk.key.as_str()) {
                (Some(src), _) => source_size(st, node, src)?,
                (None, "tpmstate0") => TPMSTATE_SIZE,
                (None, "efidisk0") => EFIDISK_SIZE,
                (None, _) => *bytes,
            };
            let volid = alloc_volume(st, node, storage, vmid, kind, bytes, template)?;
            created.push(volid.clone());
            map.set(vkey, volid);
            map.remove("import-from");
            map.remove("format");
            map.set("size", util::format_size(bytes));
        }
        DiskPlan::Existing { volid } => {
            let size =
                st.volume(node, volid).map(|v| v.size).ok_or_else(|| format!("volume {volid} does not exist"))?;
            map.set("size", util::format_size(size));
        }
    }
    Ok(print_volume_line(kind, &disk.key, &map))
}

fn source_size(st: &Cluster, node: &str, src: &str) -> Result<u64, String> {
    if src.starts_with('/') {
        return Err(format!("could not get file size of {src}"));
    }
    let v =
        st.volume(node, src).ok_or_else(|| format!("cannot import from '{src}' - volume '{src}' does not exist"))?;
    if is_cloudinit_name(&v.volid) {
        return Err("cannot import from cloudinit disk".into());
    }
    Ok(v.size)
}

fn is_cloudinit_name(volid: &str) -> bool {
    super::common::is_cloudinit(volid)
}

/// Frees a volume; base volumes still used by linked clones are refused like PVE does.
pub fn free_volume(st: &mut Cluster, node: &str, volid: &str) -> Result<(), String> {
    if let Some((sid, _)) = split_volid(volid)
        && let Some(s) = st.nodes.get(node).and_then(|n| n.storages.get(sid))
        && s.volumes.values().any(|v| v.parent.as_deref() == Some(volid))
    {
        return Err(format!("base volume '{volid}' is still in use by linked cloned"));
    }
    st.remove_volume(node, volid);
    Ok(())
}

/// Frees volumes created by a failed task (best effort, like PVE's cleanup).
pub fn free_all(st: &mut Cluster, node: &str, volids: &[String]) {
    for v in volids {
        let _ = free_volume(st, node, v);
    }
}

/// Grows a volume's recorded size (and its space use) to `bytes`.
pub fn grow_volume(st: &mut Cluster, node: &str, volid: &str, bytes: u64) -> Result<(), String> {
    let (sid, name) = split_volid(volid).ok_or_else(|| format!("unable to parse volume ID '{volid}'"))?;
    let s = st.storage_mut(node, sid).map_err(|e| e.message())?;
    let vol = s.volumes.get(volid).ok_or_else(|| format!("volume '{volid}' does not exist"))?;
    let extra = bytes.saturating_sub(vol.size);
    // Linked clones share the base's blocks: only the new space is counted.
    let name = name.to_string();
    s.check_space(&name, extra)?;
    let vol = s.volumes.get_mut(volid).expect("checked above");
    vol.size = bytes;
    vol.used += extra;
    Ok(())
}
