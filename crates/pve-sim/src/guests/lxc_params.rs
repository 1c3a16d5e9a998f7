//! The parameter declarations of LXC's config-taking endpoints (`POST /nodes/{node}/lxc` and
//! `PUT .../lxc/{vmid}/config`), written from the PVE 8.4 schema.

use crate::params::guest_formats as gf;
use crate::params::{Format, P, f};

use super::formats as xf;

/// LXC's `lock` values.
pub const LXC_LOCKS: &[&str] = &[
    "backup",
    "create",
    "destroyed",
    "disk",
    "fstrim",
    "migrate",
    "mounted",
    "rollback",
    "snapshot",
    "snapshot-delete",
];

/// The LXC OS types.
pub const LXC_OSTYPES: &[&str] = &[
    "debian",
    "devuan",
    "ubuntu",
    "centos",
    "fedora",
    "opensuse",
    "archlinux",
    "alpine",
    "gentoo",
    "nixos",
    "unmanaged",
];

/// Which endpoint the list is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LxcParamSet {
    /// `POST /nodes/{node}/lxc`.
    Create,
    /// `PUT .../lxc/{vmid}/config`.
    PutConfig,
}

/// The parameters of one LXC config endpoint (path parameters included).
pub fn lxc_config_params(set: LxcParamSet) -> Vec<P> {
    let mut v = vec![
        P::node(),
        P::vmid(),
        P::str("arch").opt().en(&["amd64", "i386", "arm64", "armhf", "riscv32", "riscv64"]),
        P::str("cmode").opt().en(&["shell", "console", "tty"]),
        P::bool("console").opt(),
        P::int("cores").opt().range(1, 8192),
        P::num("cpulimit").opt().minf(0.0).maxf(8192.0),
        P::int("cpuunits").opt().range(0, 500_000),
        P::bool("debug").opt(),
        P::str("description").opt().max_len(8192),
        P::str("dev").indexed(0, 255).prop(&xf::LXC_DEV),
        P::str("features").opt().prop(&gf::LXC_FEATURES),
        P::str("hookscript").opt().fmt(f::VOLUME_ID),
        P::str("hostname").opt().max_len(255).fmt(f::DNS_NAME),
        P::str("lock").opt().en(LXC_LOCKS),
        P::int("memory").opt().min(16),
        P::str("mp").indexed(0, 255).prop(&gf::LXC_MP),
        P::str("nameserver").opt().fmt(Format::List(xf::ip_with_iface)),
        P::str("net").indexed(0, 31).prop(&gf::LXC_NET),
        P::bool("onboot").opt(),
        P::str("ostype").opt().en(LXC_OSTYPES),
        P::bool("protection").opt(),
        P::str("rootfs").opt().prop(&gf::LXC_ROOTFS),
        P::str("searchdomain").opt().fmt(f::DNS_NAME_LIST),
        P::str("startup").opt().prop(&xf::STARTUP),
        P::int("swap").opt().min(0),
        P::str("tags").opt().fmt(f::TAG_LIST),
        P::bool("template").opt(),
        P::str("timezone").opt().fmt(Format::Check(xf::timezone)),
        P::int("tty").opt().range(0, 6),
        P::bool("unprivileged").opt(),
        P::str("unused").indexed(0, 255).prop(&gf::LXC_UNUSED),
    ];
    match set {
        LxcParamSet::Create => v.extend([
            P::num("bwlimit").opt().minf(0.0),
            P::bool("force").opt(),
            P::bool("ignore-unpack-errors").opt(),
            P::str("ostemplate").max_len(255),
            P::str("password").opt().min_len(5),
            P::str("pool").opt().fmt(f::POOLID),
            P::bool("restore").opt(),
            P::str("ssh-public-keys").opt(),
            P::bool("start").opt(),
            P::str("storage").opt().fmt(f::STORAGE_ID),
            P::bool("unique").opt().requires("restore"),
        ]),
        LxcParamSet::PutConfig => v.extend([
            P::str("delete").opt().fmt(f::CONFIGID_LIST),
            P::str("digest").opt().max_len(40),
            P::str("revert").opt().fmt(f::CONFIGID_LIST),
        ]),
    }
    v
}

/// Whether `key` is an LXC config option (what `delete` and `revert` accept).
pub fn lxc_option_exists(key: &str) -> bool {
    static SCHEMA: std::sync::LazyLock<crate::params::Schema> =
        std::sync::LazyLock::new(|| crate::params::Schema::new(lxc_config_params(LxcParamSet::PutConfig)));
    const NOT_OPTIONS: &[&str] = &["node", "vmid", "delete", "digest", "revert"];
    SCHEMA.has(key) && !NOT_OPTIONS.contains(&key)
}
