//! The parameter declarations of qemu's config-taking endpoints (`POST /nodes/{node}/qemu`,
//! `POST` and `PUT .../qemu/{vmid}/config`), written from the PVE 8.4 schema: every config key
//! with its type, range, enumeration and format, plus each endpoint's own extras.

use crate::params::guest_formats as gf;
use crate::params::{Format, P, f};

use super::formats as xf;

/// Which endpoint the list is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuParamSet {
    /// `POST /nodes/{node}/qemu` (create or restore).
    Create,
    /// `POST .../config` (async, task `qmconfig`).
    PostConfig,
    /// `PUT .../config` (sync).
    PutConfig,
}

/// qemu's `lock` values.
pub const QEMU_LOCKS: &[&str] =
    &["backup", "clone", "create", "migrate", "rollback", "snapshot", "snapshot-delete", "suspending", "suspended"];

/// The qemu OS types.
pub const OSTYPES: &[&str] =
    &["other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11", "l24", "l26", "solaris"];

const KEYBOARDS: &[&str] = &[
    "de", "de-ch", "da", "en-gb", "en-us", "es", "fi", "fr", "fr-be", "fr-ca", "fr-ch", "hu", "is", "it", "ja", "lt",
    "mk", "nl", "no", "pl", "pt", "pt-br", "sv", "sl", "tr",
];

/// Every drive slot of a qemu config, in PVE's order (the `disk` enum of resize and template).
pub fn drive_slots() -> Vec<String> {
    let mut out = Vec::new();
    for (bus, n) in [("ide", 4), ("scsi", 31), ("virtio", 16), ("sata", 6)] {
        for i in 0..n {
            out.push(format!("{bus}{i}"));
        }
    }
    out.push("efidisk0".into());
    out.push("tpmstate0".into());
    out
}

/// The drive slot names as a static list (for `P::en`).
pub fn drive_slot_enum() -> &'static [&'static str] {
    static SLOTS: std::sync::LazyLock<Vec<&'static str>> =
        std::sync::LazyLock::new(|| drive_slots().into_iter().map(|s| &*Box::leak(s.into_boxed_str())).collect());
    SLOTS.as_slice()
}

/// The parameters of one qemu config endpoint (path parameters included).
pub fn qemu_config_params(set: QemuParamSet) -> Vec<P> {
    let mut v = vec![
        P::node(),
        P::vmid(),
        P::bool("acpi").opt(),
        P::str("affinity").opt().fmt(Format::Check(xf::cpuset)),
        P::str("agent").opt().prop(&gf::AGENT),
        P::str("amd-sev").opt().prop(&xf::SEV),
        P::str("arch").opt().en(&["x86_64", "aarch64"]),
        P::str("args").opt(),
        P::str("audio0").opt().prop(&xf::AUDIO),
        P::bool("autostart").opt(),
        P::int("balloon").opt().min(0),
        P::str("bios").opt().en(&["seabios", "ovmf"]),
        P::str("boot").opt().prop(&xf::BOOT),
        P::str("bootdisk").opt().pattern(r"(ide|sata|scsi|virtio)\d+"),
        P::str("cdrom").opt().prop(&gf::IDE),
        P::str("cicustom").opt().prop(&xf::CICUSTOM),
        P::str("cipassword").opt(),
        P::str("citype").opt().en(&["configdrive2", "nocloud", "opennebula"]),
        P::bool("ciupgrade").opt(),
        P::str("ciuser").opt(),
        P::int("cores").opt().min(1),
        P::str("cpu").opt().prop(&xf::CPU),
        P::num("cpulimit").opt().minf(0.0).maxf(128.0),
        P::int("cpuunits").opt().range(1, 262_144),
        P::str("description").opt().max_len(8192),
        P::str("efidisk0").opt().prop(&gf::EFIDISK),
        P::bool("freeze").opt(),
        P::str("hookscript").opt().fmt(f::VOLUME_ID),
        P::str("hostpci").indexed(0, 15).prop(&xf::HOSTPCI),
        P::str("hotplug").opt().fmt(Format::Check(xf::hotplug)),
        P::str("hugepages").opt().en(&["any", "2", "1024"]),
        P::str("ide").indexed(0, 3).prop(&gf::IDE),
        P::str("ipconfig").indexed(0, 31).prop(&gf::IPCONFIG),
        P::str("ivshmem").opt().prop(&xf::IVSHMEM),
        P::bool("keephugepages").opt(),
        P::str("keyboard").opt().en(KEYBOARDS),
        P::bool("kvm").opt(),
        P::bool("localtime").opt(),
        P::str("lock").opt().en(QEMU_LOCKS),
        P::str("machine").opt().prop(&xf::MACHINE),
        P::str("memory").opt().prop(&gf::MEMORY),
        P::num("migrate_downtime").opt().minf(0.0),
        P::int("migrate_speed").opt().min(0),
        P::str("name").opt().fmt(f::DNS_NAME),
        P::str("nameserver").opt().fmt(f::ADDRESS_LIST),
        P::str("net").indexed(0, 31).prop(&gf::QEMU_NET),
        P::bool("numa").opt(),
        P::str("numa").indexed(0, 7).prop(&xf::NUMA),
        P::bool("onboot").opt(),
        P::str("ostype").opt().en(OSTYPES),
        P::str("parallel").indexed(0, 2).pattern(r"/dev/parport\d+|/dev/usb/lp\d+"),
        P::bool("protection").opt(),
        P::bool("reboot").opt(),
        P::str("rng0").opt().prop(&xf::RNG),
        P::str("sata").indexed(0, 5).prop(&gf::SATA),
        P::str("scsi").indexed(0, 30).prop(&gf::SCSI),
        P::str("scsihw").opt().en(&["lsi", "lsi53c810", "virtio-scsi-pci", "virtio-scsi-single", "megasas", "pvscsi"]),
        P::str("searchdomain").opt(),
        P::str("serial").indexed(0, 3).pattern(r"(/dev/.+|socket)"),
        P::int("shares").opt().range(0, 50_000),
        P::str("smbios1").opt().max_len(512).prop(&xf::SMBIOS1),
        P::int("smp").opt().min(1),
        P::int("sockets").opt().min(1),
        P::str("spice_enhancements").opt().prop(&xf::SPICE),
        P::str("sshkeys").opt().fmt(f::URLENCODED),
        P::str("startdate").opt().pattern(r"(now|\d{4}-\d{1,2}-\d{1,2}(T\d{1,2}:\d{1,2}:\d{1,2})?)"),
        P::str("startup").opt().prop(&xf::STARTUP),
        P::bool("tablet").opt(),
        P::str("tags").opt().fmt(f::TAG_LIST),
        P::bool("tdf").opt(),
        P::bool("template").opt(),
        P::str("tpmstate0").opt().prop(&gf::TPMSTATE),
        P::str("unused").indexed(0, 255).prop(&gf::QEMU_UNUSED),
        P::str("usb").indexed(0, 13).prop(&xf::USB),
        P::int("vcpus").opt().min(1),
        P::str("vga").opt().prop(&gf::VGA),
        P::str("virtio").indexed(0, 15).prop(&gf::VIRTIO),
        P::str("virtiofs").indexed(0, 9).prop(&xf::VIRTIOFS),
        P::str("vmgenid").opt().pattern(r"(?:[a-fA-F0-9]{8}(?:-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}|[01])"),
        P::str("vmstatestorage").opt().fmt(f::STORAGE_ID),
        P::str("watchdog").opt().prop(&xf::WATCHDOG),
    ];
    match set {
        QemuParamSet::Create => v.extend([
            P::str("archive").opt().max_len(255),
            P::int("bwlimit").opt().min(0),
            P::bool("force").opt().requires("archive"),
            P::str("import-working-storage").opt().fmt(f::STORAGE_ID),
            P::bool("live-restore").opt(),
            P::str("pool").opt().fmt(f::POOLID),
            P::bool("start").opt(),
            P::str("storage").opt().fmt(f::STORAGE_ID),
            P::bool("unique").opt().requires("archive"),
        ]),
        QemuParamSet::PostConfig | QemuParamSet::PutConfig => {
            v.extend([
                P::str("delete").opt().fmt(f::CONFIGID_LIST),
                P::str("digest").opt().max_len(40),
                P::bool("force").opt().requires("delete"),
                P::str("revert").opt().fmt(f::CONFIGID_LIST),
                P::bool("skiplock").opt(),
            ]);
            if set == QemuParamSet::PostConfig {
                v.push(P::int("background_delay").opt().range(1, 30));
                v.push(P::str("import-working-storage").opt().fmt(f::STORAGE_ID));
            }
        }
    }
    v
}

/// Whether `key` is a qemu config option (what `delete` and `revert` accept).
pub fn qemu_option_exists(key: &str) -> bool {
    static SCHEMA: std::sync::LazyLock<crate::params::Schema> =
        std::sync::LazyLock::new(|| crate::params::Schema::new(qemu_config_params(QemuParamSet::PutConfig)));
    const NOT_OPTIONS: &[&str] = &["node", "vmid", "delete", "digest", "force", "revert", "skiplock"];
    (SCHEMA.has(key) && !NOT_OPTIONS.contains(&key)) || key == "vmstate"
}
