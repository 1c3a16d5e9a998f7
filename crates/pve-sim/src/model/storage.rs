//! Storages and volumes: per-node `local` (dir: iso, vztmpl, backup) and `local-lvm`
//! (lvmthin: images, rootdir), with capacity accounting and PVE's volume naming.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::util::{self, GIB};

/// One storage of one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Storage {
    pub id: String,
    /// `dir`, `lvmthin`, ...
    pub kind: String,
    /// Content types, e.g. `["iso", "vztmpl", "backup"]`.
    pub content: Vec<String>,
    pub total: u64,
    pub shared: bool,
    pub enabled: bool,
    /// Volumes keyed by volid (`local-lvm:vm-100-disk-0`).
    pub volumes: BTreeMap<String, Volume>,
}

/// One volume on a storage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Volume {
    pub volid: String,
    /// `images`, `rootdir`, `iso`, `vztmpl`, `backup`, `import`.
    pub content: String,
    /// `raw`, `qcow2`, `iso`, `tzst`, `vma.zst`, `tar.zst`, `subvol`...
    pub format: String,
    pub size: u64,
    /// Bytes it occupies on the storage (thin volumes and linked clones use less than `size`).
    pub used: u64,
    pub ctime: i64,
    pub vmid: Option<u32>,
    /// Linked clones: the base volume.
    pub parent: Option<String>,
    pub notes: Option<String>,
    pub protected: bool,
    /// Backup archives: what was backed up (for restore and `vzdump/extractconfig`).
    #[serde(default)]
    pub backup: Option<BackupMeta>,
}

/// The content of a vzdump archive.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackupMeta {
    pub kind: crate::model::GuestKind,
    pub vmid: u32,
    /// The guest config at backup time (sorted, as PVE stores it).
    pub config: BTreeMap<String, String>,
    /// Sizes of the backed-up volumes by config key (for restore allocation).
    pub disks: Vec<(String, u64)>,
}

impl Storage {
    /// A dir storage like PVE's default `local`.
    pub fn local(total: u64) -> Storage {
        Storage {
            id: "local".into(),
            kind: "dir".into(),
            content: vec!["iso".into(), "vztmpl".into(), "backup".into(), "import".into()],
            total,
            shared: false,
            enabled: true,
            volumes: BTreeMap::new(),
        }
    }

    /// An lvmthin storage like PVE's default `local-lvm`.
    pub fn local_lvm(total: u64) -> Storage {
        Storage {
            id: "local-lvm".into(),
            kind: "lvmthin".into(),
            content: vec!["images".into(), "rootdir".into()],
            total,
            shared: false,
            enabled: true,
            volumes: BTreeMap::new(),
        }
    }

    /// Bytes in use.
    pub fn used(&self) -> u64 {
        self.volumes.values().map(|v| v.used).sum()
    }

    /// Bytes free.
    pub fn avail(&self) -> u64 {
        self.total.saturating_sub(self.used())
    }

    /// Whether the storage holds this content type.
    pub fn supports(&self, content: &str) -> bool {
        self.content.iter().any(|c| c == content)
    }

    /// Checks that `bytes` more fit, with the error text the storage backend would print.
    pub fn check_space(&self, name: &str, bytes: u64) -> Result<(), String> {
        if bytes <= self.avail() {
            return Ok(());
        }
        Err(match self.kind.as_str() {
            "lvmthin" => format!(
                "lvcreate 'pve/{name}' error:   Insufficient free space: {} extents needed, but only {} available",
                bytes.div_ceil(4 * 1024 * 1024),
                self.avail() / (4 * 1024 * 1024)
            ),
            _ => format!("write to '{name}' failed: No space left on device"),
        })
    }

    /// The first free `vm-<vmid>-disk-<n>` name (also not used as `base-<vmid>-disk-<n>`).
    pub fn next_disk_name(&self, vmid: u32, prefix: &str) -> String {
        for n in 0.. {
            let vm = format!("vm-{vmid}-disk-{n}");
            let base = format!("base-{vmid}-disk-{n}");
            let taken = self.volumes.keys().any(|k| {
                let name = k.split_once(':').map(|(_, n)| n).unwrap_or(k);
                let name = name.rsplit('/').next().unwrap_or(name);
                name == vm || name == base
            });
            if !taken {
                return if prefix == "base" { base } else { vm };
            }
        }
        unreachable!("the disk counter is unbounded")
    }

    /// Allocates a guest image (`images`/`rootdir`) of `size` bytes; returns the volid.
    pub fn alloc_image(&mut self, vmid: u32, size: u64, content: &str, format: &str) -> Result<String, String> {
        let name = self.next_disk_name(vmid, "vm");
        let name = if format == "qcow2" && self.kind == "dir" { format!("{vmid}/{name}.qcow2") } else { name };
        self.add_volume(&name, content, format, size, size, Some(vmid), None)
    }

    /// Adds a volume after a capacity check; returns the volid.
    #[allow(clippy::too_many_arguments)]
    pub fn add_volume(
        &mut self,
        name: &str,
        content: &str,
        format: &str,
        size: u64,
        used: u64,
        vmid: Option<u32>,
        parent: Option<String>,
    ) -> Result<String, String> {
        let volid = format!("{}:{}", self.id, name);
        if self.volumes.contains_key(&volid) {
            return Err(format!("volume '{volid}' already exists"));
        }
        self.check_space(name, used)?;
        self.volumes.insert(
            volid.clone(),
            Volume {
                volid: volid.clone(),
                content: content.into(),
                format: format.into(),
                size,
                used,
                ctime: util::now(),
                vmid,
                parent,
                notes: None,
                protected: false,
                backup: None,
            },
        );
        Ok(volid)
    }
}

/// Default capacities.
pub const LOCAL_TOTAL: u64 = 100 * GIB;
pub const LOCAL_LVM_TOTAL: u64 = 1024 * GIB;

/// Splits `storage:name` into its parts.
pub fn split_volid(volid: &str) -> Option<(&str, &str)> {
    let (s, n) = volid.split_once(':')?;
    if s.is_empty() || n.is_empty() { None } else { Some((s, n)) }
}

/// The vmid owning a volume name (`vm-100-disk-0`, `base-9000-disk-0/vm-101-disk-0`,
/// `vzdump-qemu-100-...`, `100/vm-100-disk-0.qcow2`).
pub fn volume_owner(name: &str) -> Option<u32> {
    let last = name.rsplit('/').next().unwrap_or(name);
    for prefix in ["vm-", "base-", "subvol-"] {
        if let Some(rest) = last.strip_prefix(prefix) {
            return rest.split('-').next()?.parse().ok();
        }
    }
    if let Some(rest) = last.strip_prefix("vzdump-") {
        return rest.split('-').nth(1)?.parse().ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_names_and_capacity() {
        let mut s = Storage::local_lvm(10 * GIB);
        let a = s.alloc_image(100, 4 * GIB, "images", "raw").unwrap();
        let b = s.alloc_image(100, 4 * GIB, "images", "raw").unwrap();
        assert_eq!(a, "local-lvm:vm-100-disk-0");
        assert_eq!(b, "local-lvm:vm-100-disk-1");
        let err = s.alloc_image(100, 4 * GIB, "images", "raw").unwrap_err();
        assert!(err.contains("Insufficient free space"), "{err}");
        assert_eq!(s.used(), 8 * GIB);
    }

    #[test]
    fn owners_are_parsed_from_names() {
        assert_eq!(volume_owner("vm-100-disk-0"), Some(100));
        assert_eq!(volume_owner("base-9000-disk-0/vm-101-disk-0"), Some(101));
        assert_eq!(volume_owner("dump/vzdump-qemu-100-2025_01_01-00_00_00.vma.zst"), Some(100));
        assert_eq!(volume_owner("iso/debian.iso"), None);
    }
}
