//! Property-string formats of guest configuration keys (qemu drives, NICs, ipconfig, memory,
//! agent, vga; LXC rootfs/mount points/NICs/features), declared by hand from the PVE 8.4 schema.

use std::sync::{Arc, LazyLock};

use super::{P, PropFormat, f};

const DRIVE_FORMATS: &[&str] = &["raw", "qcow", "qed", "qcow2", "vmdk", "cloop"];

/// Keys every qemu drive bus shares (the `ide[n]` format minus `model`).
fn drive_common() -> Vec<P> {
    let mut keys = vec![
        P::str("file").default_key().fmt(f::VOLUME_OR_PATH),
        P::alias("volume", "file"),
        P::str("aio").opt().en(&["native", "threads", "io_uring"]),
        P::bool("backup").opt(),
        P::str("cache").opt().en(&["none", "writethrough", "writeback", "unsafe", "directsync"]),
        P::int("cyls").opt(),
        P::bool("detect_zeroes").opt(),
        P::str("discard").opt().en(&["ignore", "on"]),
        P::str("format").opt().en(DRIVE_FORMATS),
        P::int("heads").opt(),
        P::str("import-from").opt().fmt(f::VOLUME_OR_PATH),
        P::str("media").opt().en(&["cdrom", "disk"]),
        P::bool("replicate").opt(),
        P::str("rerror").opt().en(&["ignore", "report", "stop"]),
        P::int("secs").opt(),
        P::str("serial").opt().fmt(f::URLENCODED).max_len(60),
        P::bool("shared").opt(),
        P::str("size").opt().fmt(f::DISK_SIZE),
        P::bool("snapshot").opt(),
        P::str("trans").opt().en(&["none", "lba", "auto"]),
        P::str("werror").opt().en(&["enospc", "ignore", "report", "stop"]),
    ];
    for k in ["bps", "bps_rd", "bps_wr", "iops", "iops_max", "iops_rd", "iops_rd_max", "iops_wr", "iops_wr_max"] {
        keys.push(P::int(k).opt());
    }
    for k in [
        "bps_max_length",
        "bps_rd_max_length",
        "bps_wr_max_length",
        "iops_max_length",
        "iops_rd_max_length",
        "iops_wr_max_length",
    ] {
        keys.push(P::int(k).opt().min(1));
    }
    keys.push(P::alias("bps_rd_length", "bps_rd_max_length"));
    keys.push(P::alias("bps_wr_length", "bps_wr_max_length"));
    keys.push(P::alias("iops_rd_length", "iops_rd_max_length"));
    keys.push(P::alias("iops_wr_length", "iops_wr_max_length"));
    for k in ["mbps", "mbps_max", "mbps_rd", "mbps_rd_max", "mbps_wr", "mbps_wr_max"] {
        keys.push(P::num(k).opt());
    }
    keys
}

const WWN: &str = r"(?^:^(0x)[0-9a-fA-F]{16})";

/// `ide[n]`.
pub static IDE: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    let mut k = drive_common();
    k.push(P::str("model").opt().fmt(f::URLENCODED).max_len(120));
    k.push(P::bool("ssd").opt());
    k.push(P::str("wwn").opt().pattern(WWN));
    Arc::new(PropFormat::new(k))
});

/// `sata[n]`.
pub static SATA: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    let mut k = drive_common();
    k.push(P::bool("ssd").opt());
    k.push(P::str("wwn").opt().pattern(WWN));
    Arc::new(PropFormat::new(k))
});

/// `scsi[n]`.
pub static SCSI: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    let mut k = drive_common();
    k.push(P::bool("ssd").opt());
    k.push(P::str("wwn").opt().pattern(WWN));
    k.push(P::bool("iothread").opt());
    k.push(P::str("product").opt().pattern(r"[A-Za-z0-9\-_\s]{,16}"));
    k.push(P::int("queues").opt().min(2));
    k.push(P::bool("ro").opt());
    k.push(P::bool("scsiblock").opt());
    k.push(P::str("vendor").opt().pattern(r"[A-Za-z0-9\-_\s]{,8}"));
    Arc::new(PropFormat::new(k))
});

/// `virtio[n]`.
pub static VIRTIO: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    let mut k = drive_common();
    k.push(P::bool("iothread").opt());
    k.push(P::bool("ro").opt());
    Arc::new(PropFormat::new(k))
});

/// A generic drive format (the scsi one), handy for parsing any stored disk line.
pub static DISK: LazyLock<Arc<PropFormat>> = LazyLock::new(|| SCSI.clone());

/// `efidisk0`.
pub static EFIDISK: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::str("file").default_key().fmt(f::VOLUME_OR_PATH),
        P::alias("volume", "file"),
        P::str("efitype").opt().en(&["2m", "4m"]),
        P::str("format").opt().en(DRIVE_FORMATS),
        P::str("import-from").opt().fmt(f::VOLUME_OR_PATH),
        P::str("ms-cert").opt().en(&["2011", "2023", "2023w", "2023k"]),
        P::bool("pre-enrolled-keys").opt(),
        P::str("size").opt().fmt(f::DISK_SIZE),
    ]))
});

/// `tpmstate0`.
pub static TPMSTATE: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::str("file").default_key().fmt(f::VOLUME_OR_PATH),
        P::alias("volume", "file"),
        P::str("import-from").opt().fmt(f::VOLUME_OR_PATH),
        P::str("size").opt().fmt(f::DISK_SIZE),
        P::str("version").opt().en(&["v1.2", "v2.0"]),
    ]))
});

/// qemu `unused[n]`.
pub static QEMU_UNUSED: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![P::str("file").default_key().fmt(f::VOLUME_ID), P::alias("volume", "file")]))
});

/// The qemu NIC models (also usable as `<model>=<mac>` keys).
pub const NIC_MODELS: &[&str] = &[
    "e1000",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
    "rtl8139",
    "virtio",
    "vmxnet3",
];

/// qemu `net[n]`.
pub static QEMU_NET: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    let mut k = vec![
        P::str("model").default_key().en(NIC_MODELS),
        P::str("bridge").opt().fmt(f::BRIDGE),
        P::bool("firewall").opt(),
        P::bool("link_down").opt(),
        P::str("macaddr").opt().fmt(f::MAC),
        P::int("mtu").opt().range(1, 65520),
        P::int("queues").opt().range(0, 64),
        P::num("rate").opt().min(0),
        P::int("tag").opt().range(1, 4094),
        P::str("trunks").opt().pattern(r"(?^:\d+(?:-\d+)?(?:;\d+(?:-\d+)?)*)"),
    ];
    for m in NIC_MODELS {
        k.push(P::key_alias(m, "macaddr", "model"));
    }
    Arc::new(PropFormat::new(k))
});

fn ipv4_config(v: &str) -> Result<(), String> {
    if matches!(v, "dhcp" | "manual") || super::formats::cidrv4(v).is_ok() {
        return Ok(());
    }
    Err("value does not look like a valid ipv4 network configuration".into())
}

fn ipv6_config(v: &str) -> Result<(), String> {
    if matches!(v, "auto" | "dhcp" | "manual") || super::formats::cidrv6(v).is_ok() {
        return Ok(());
    }
    Err("value does not look like a valid ipv6 network configuration".into())
}

/// qemu `ipconfig[n]` (pve-qm-ipconfig).
pub static IPCONFIG: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::str("gw").opt().fmt(f::IPV4),
        P::str("gw6").opt().fmt(f::IPV6),
        P::str("ip").opt().fmt(super::Format::Check(ipv4_config)),
        P::str("ip6").opt().fmt(super::Format::Check(ipv6_config)),
    ]))
});

/// qemu `memory` (a property string since 8.x: `[current=]<MiB>`).
pub static MEMORY: LazyLock<Arc<PropFormat>> =
    LazyLock::new(|| Arc::new(PropFormat::new(vec![P::int("current").default_key().min(16)])));

/// qemu `agent`.
pub static AGENT: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::bool("enabled").default_key(),
        P::bool("freeze-fs-on-backup").opt(),
        P::bool("fstrim_cloned_disks").opt(),
        P::str("type").opt().en(&["virtio", "isa"]),
    ]))
});

/// qemu `vga`.
pub static VGA: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::str("type").opt().default_key().en(&[
            "cirrus",
            "qxl",
            "qxl2",
            "qxl3",
            "qxl4",
            "none",
            "serial0",
            "serial1",
            "serial2",
            "serial3",
            "std",
            "virtio",
            "virtio-gl",
            "vmware",
        ]),
        P::str("clipboard").opt().en(&["vnc"]),
        P::int("memory").opt().range(4, 512),
    ]))
});

const MOUNT_OPTIONS: &str =
    r"(?^:(?^:(discard|lazytime|noatime|nodev|noexec|nosuid))(;(?^:(discard|lazytime|noatime|nodev|noexec|nosuid)))*)";

fn lxc_volume_keys() -> Vec<P> {
    vec![
        P::str("volume").default_key().fmt(f::VOLUME_OR_PATH),
        P::bool("acl").opt(),
        P::str("mountoptions").opt().pattern(MOUNT_OPTIONS),
        P::bool("quota").opt(),
        P::bool("replicate").opt(),
        P::bool("ro").opt(),
        P::bool("shared").opt(),
        P::str("size").opt().fmt(f::DISK_SIZE),
    ]
}

/// LXC `rootfs`.
pub static LXC_ROOTFS: LazyLock<Arc<PropFormat>> = LazyLock::new(|| Arc::new(PropFormat::new(lxc_volume_keys())));

/// LXC `mp[n]`.
pub static LXC_MP: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    let mut k = lxc_volume_keys();
    k.push(P::str("mp").fmt(f::VOLUME_OR_PATH));
    k.push(P::bool("backup").opt());
    Arc::new(PropFormat::new(k))
});

/// LXC `unused[n]`.
pub static LXC_UNUSED: LazyLock<Arc<PropFormat>> =
    LazyLock::new(|| Arc::new(PropFormat::new(vec![P::str("volume").default_key().fmt(f::VOLUME_ID)])));

/// LXC `net[n]`.
pub static LXC_NET: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::str("name").pattern(r"[-_.\w\d]+"),
        P::str("bridge").opt().pattern(r"[-_.\w\d]+"),
        P::bool("firewall").opt(),
        P::str("gw").opt().fmt(f::IPV4),
        P::str("gw6").opt().fmt(f::IPV6),
        P::str("hwaddr").opt().fmt(f::MAC),
        P::str("ip").opt().fmt(super::Format::Check(ipv4_config)),
        P::str("ip6").opt().fmt(super::Format::Check(ipv6_config)),
        P::bool("link_down").opt(),
        P::int("mtu").opt().range(64, 65535),
        P::num("rate").opt(),
        P::int("tag").opt().range(1, 4094),
        P::str("trunks").opt().pattern(r"(?^:\d+(?:;\d+)*)"),
        P::str("type").opt().en(&["veth"]),
    ]))
});

/// LXC `features`.
pub static LXC_FEATURES: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::bool("force_rw_sys").opt(),
        P::bool("fuse").opt(),
        P::bool("keyctl").opt(),
        P::bool("mknod").opt(),
        P::str("mount").opt().pattern(r"(?^:[a-zA-Z0-9_; ]+)"),
        P::bool("nesting").opt(),
    ]))
});
