//! Guest configuration formats the framework's `guest_formats` does not declare: qemu `boot`,
//! `cpu`, `hostpci`, `smbios1`, `startup`, `watchdog`, `rng0`, `cicustom`, `audio0`, `ivshmem`,
//! `machine`, `numa[n]`, `usb[n]`, `virtiofs[n]`, `spice_enhancements`, `amd-sev`, `hotplug`,
//! `affinity`; LXC `dev[n]`, `timezone`, `nameserver`; migration storage maps; firewall rule
//! fields. Declared by hand from the PVE 8.4 schema (qemu-server, pve-container, pve-firewall).

use std::sync::{Arc, LazyLock};

use regex::Regex;

use crate::params::{Format, P, PropFormat, f, formats};

macro_rules! re {
    ($name:ident, $pat:expr) => {
        static $name: LazyLock<Regex> = LazyLock::new(|| Regex::new($pat).expect("static regex"));
    };
}

re!(BOOTDEV_RE, r"^(ide|sata|scsi|virtio|net|usb|hostpci)\d+$");
re!(CPUSET_RE, r"^\d+(-\d+)?(,\d+(-\d+)?)*$");
re!(CPUTYPE_RE, r"^[a-zA-Z0-9_.\-]+$");
re!(TZ_RE, r"^[A-Za-z0-9_+\-/]+$");
re!(FW_PORT_RE, r"^(\d+(:\d+)?|[a-zA-Z][a-zA-Z0-9\-_]*)(,(\d+(:\d+)?|[a-zA-Z][a-zA-Z0-9\-_]*))*$");
re!(FW_PROTO_RE, r"^([a-zA-Z][a-zA-Z0-9\-_]*|\d{1,3})$");
re!(FW_ICMP_RE, r"^[a-zA-Z0-9\-/]+$");
re!(FW_ADDR_NAME_RE, r"^[+]?(dc/|guest/)?[A-Za-z][A-Za-z0-9\-_]+$");

/// `pve-qm-bootdev`: a device that can be in the boot order.
fn bootdev(v: &str) -> Result<(), String> {
    if BOOTDEV_RE.is_match(v) { Ok(()) } else { Err(format!("invalid boot device '{v}'")) }
}

fn bootdev_list(v: &str) -> Result<(), String> {
    for dev in formats::split_list(v) {
        bootdev(dev)?;
    }
    Ok(())
}

/// `pve-qm-boot`: `[[legacy=]cdn] [,order=<dev;dev>]`.
pub static BOOT: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::str("legacy").opt().default_key().pattern("[acdn]{1,4}"),
        P::str("order").opt().fmt(Format::Check(bootdev_list)),
    ]))
});

/// `pve-vm-cpu-conf`.
pub static CPU: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::str("cputype").opt().default_key().fmt(Format::Check(cputype)),
        P::str("flags").opt().pattern(r"[+-][a-zA-Z0-9\-_\.]+(;[+-][a-zA-Z0-9\-_\.]+)*"),
        P::bool("hidden").opt(),
        P::str("hv-vendor-id").opt().pattern("[a-zA-Z0-9]{1,12}"),
        P::str("phys-bits").opt().pattern(r"([1-5]?[0-9]|6[0-4]|host)"),
        P::str("reported-model").opt(),
    ]))
});

fn cputype(v: &str) -> Result<(), String> {
    if CPUTYPE_RE.is_match(v) {
        Ok(())
    } else {
        Err(format!("Built-in cputype '{v}' is not defined (missing 'custom-' prefix?)"))
    }
}

/// `pve-qm-hostpci`.
pub static HOSTPCI: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::str("host").opt().default_key().pattern(r"(?:[a-f0-9]{4,}:)?[a-f0-9]{2}:[a-f0-9]{2}(?:\.[a-f0-9])?(;(?:[a-f0-9]{4,}:)?[a-f0-9]{2}:[a-f0-9]{2}(?:\.[a-f0-9])?)*"),
        P::str("mapping").opt().fmt(f::CONFIGID),
        P::bool("legacy-igd").opt(),
        P::str("mdev").opt(),
        P::bool("pcie").opt(),
        P::bool("rombar").opt(),
        P::str("romfile").opt(),
        P::bool("x-vga").opt(),
        P::str("device-id").opt().pattern("(?:0x)?[a-f0-9]{4}"),
        P::str("vendor-id").opt().pattern("(?:0x)?[a-f0-9]{4}"),
        P::str("sub-device-id").opt().pattern("(?:0x)?[a-f0-9]{4}"),
        P::str("sub-vendor-id").opt().pattern("(?:0x)?[a-f0-9]{4}"),
    ]))
});

const B64: &str = r"[A-Za-z0-9+/]+={0,2}";

/// `pve-qm-smbios1`.
pub static SMBIOS1: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::bool("base64").opt(),
        P::str("family").opt().pattern(B64),
        P::str("manufacturer").opt().pattern(B64),
        P::str("product").opt().pattern(B64),
        P::str("serial").opt().pattern(B64),
        P::str("sku").opt().pattern(B64),
        P::str("uuid").opt().pattern("[a-fA-F0-9]{8}(?:-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}"),
        P::str("version").opt().pattern(B64),
    ]))
});

/// `pve-startup-order`: `[[order=]\d+] [,up=\d+] [,down=\d+]`.
pub static STARTUP: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::int("order").opt().default_key().min(0),
        P::int("up").opt().min(0),
        P::int("down").opt().min(0),
    ]))
});

/// `pve-qm-watchdog`.
pub static WATCHDOG: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::str("model").opt().default_key().en(&["i6300esb", "ib700"]),
        P::str("action").opt().en(&["reset", "shutdown", "poweroff", "pause", "debug", "none"]),
    ]))
});

/// `pve-qm-rng`.
pub static RNG: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::str("source").opt().default_key().en(&["/dev/urandom", "/dev/random", "/dev/hwrng"]),
        P::str("mapping").opt().fmt(f::CONFIGID),
        P::int("max_bytes").opt().min(0),
        P::int("period").opt().min(0),
    ]))
});

/// `pve-qm-cicustom`.
pub static CICUSTOM: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::str("meta").opt().fmt(f::VOLUME_ID),
        P::str("network").opt().fmt(f::VOLUME_ID),
        P::str("user").opt().fmt(f::VOLUME_ID),
        P::str("vendor").opt().fmt(f::VOLUME_ID),
    ]))
});

/// `pve-qemu-sev-fmt`.
pub static SEV: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::str("type").default_key().en(&["std", "es", "snp"]),
        P::bool("allow-smt").opt(),
        P::bool("kernel-hashes").opt(),
        P::bool("no-debug").opt(),
        P::bool("no-key-sharing").opt(),
    ]))
});

/// qemu `audio0`.
pub static AUDIO: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::str("device").en(&["ich9-intel-hda", "intel-hda", "AC97"]),
        P::str("driver").opt().en(&["spice", "none"]),
    ]))
});

/// qemu `ivshmem`.
pub static IVSHMEM: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![P::str("name").opt().pattern(r"[a-zA-Z0-9\-]+"), P::int("size").min(1)]))
});

/// qemu `machine`.
pub static MACHINE: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::str("type").opt().default_key().pattern(
            r"(pc|pc(-i440fx)?-\d+(\.\d+)+(\+pve\d+)?(\.pxe)?|q35|pc-q35-\d+(\.\d+)+(\+pve\d+)?(\.pxe)?|virt(?:-\d+(\.\d+)+)?(\+pve\d+)?)",
        ),
        P::bool("enable-s3").opt(),
        P::bool("enable-s4").opt(),
        P::str("viommu").opt().en(&["intel", "virtio"]),
    ]))
});

const ID_RANGES: &str = r"(?^:\d+(?:-\d+)?(?:;\d+(?:-\d+)?)*)";

/// qemu `numa[n]`.
pub static NUMA: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::str("cpus").pattern(ID_RANGES),
        P::str("hostnodes").opt().pattern(ID_RANGES),
        P::num("memory").opt(),
        P::str("policy").opt().en(&["preferred", "bind", "interleave"]),
    ]))
});

/// qemu `spice_enhancements`.
pub static SPICE: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::bool("foldersharing").opt(),
        P::str("videostreaming").opt().en(&["off", "all", "filter"]),
    ]))
});

/// qemu `usb[n]`.
pub static USB: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::str("host").opt().default_key().pattern(
            r"(?^:(?:(?:(?^:(0x)?([0-9A-Fa-f]{4}):(0x)?([0-9A-Fa-f]{4})))|(?:(?^:(\d+)\-(\d+(\.\d+)*)))|[Ss][Pp][Ii][Cc][Ee]))",
        ),
        P::str("mapping").opt().fmt(f::CONFIGID),
        P::bool("usb3").opt(),
    ]))
});

/// qemu `virtiofs[n]`.
pub static VIRTIOFS: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::str("dirid").default_key().fmt(f::CONFIGID),
        P::str("cache").opt().en(&["auto", "always", "metadata", "never"]),
        P::bool("direct-io").opt(),
        P::bool("expose-acl").opt(),
        P::bool("expose-xattr").opt(),
    ]))
});

/// LXC `dev[n]`.
pub static LXC_DEV: LazyLock<Arc<PropFormat>> = LazyLock::new(|| {
    Arc::new(PropFormat::new(vec![
        P::str("path").opt().default_key().pattern(r"/dev/.+"),
        P::bool("deny-write").opt(),
        P::int("gid").opt().min(0),
        P::int("uid").opt().min(0),
        P::str("mode").opt().pattern("0[0-7]{3}"),
    ]))
});

/// `pve-hotplug-features`: `0`, `1`, or a list of disk, network, usb, memory, cpu, cloudinit.
pub fn hotplug(v: &str) -> Result<(), String> {
    if v == "0" || v == "1" {
        return Ok(());
    }
    let ok = v.split(',').all(|f| matches!(f, "disk" | "network" | "usb" | "memory" | "cpu" | "cloudinit"));
    if ok { Ok(()) } else { Err("unable to parse hotplug option".into()) }
}

/// `pve-cpuset`.
pub fn cpuset(v: &str) -> Result<(), String> {
    if CPUSET_RE.is_match(v) { Ok(()) } else { Err("unable to parse cpuset option".into()) }
}

/// `pve-ct-timezone`: `host` or a zoneinfo name.
pub fn timezone(v: &str) -> Result<(), String> {
    if v == "host" || (TZ_RE.is_match(v) && !v.contains("..")) {
        Ok(())
    } else {
        Err(format!("invalid time zone '{v}'"))
    }
}

/// `lxc-ip-with-ll-iface` (an IP, link-local ones with `%iface`).
pub fn ip_with_iface(v: &str) -> Result<(), String> {
    let addr = v.split_once('%').map(|(a, _)| a).unwrap_or(v);
    formats::ip(addr)
}

/// `storage-pair`: `<storage>` or `<source>:<target>`, or `1` (map to the same id).
pub fn storage_pair(v: &str) -> Result<(), String> {
    if v == "1" {
        return Ok(());
    }
    match v.split_once(':') {
        Some((a, b)) => formats::storage_id(a).and_then(|_| formats::storage_id(b)),
        None => formats::storage_id(v),
    }
}

/// `pve-fw-addr-spec`: a list of IPs, CIDRs, ranges, or an alias/ipset name.
pub fn fw_addr(v: &str) -> Result<(), String> {
    if FW_ADDR_NAME_RE.is_match(v) {
        return Ok(());
    }
    for item in v.split(',') {
        let ok = match item.split_once('-') {
            Some((a, b)) => formats::ip(a).is_ok() && formats::ip(b).is_ok(),
            None => formats::ip(item).is_ok() || formats::cidr(item).is_ok(),
        };
        if !ok {
            return Err(format!("invalid IP address: {item}"));
        }
    }
    Ok(())
}

/// `pve-fw-dport-spec` / `pve-fw-sport-spec`: ports, ranges `a:b` or service names.
pub fn fw_port(v: &str) -> Result<(), String> {
    if FW_PORT_RE.is_match(v) { Ok(()) } else { Err(format!("invalid port '{v}'")) }
}

/// `pve-fw-protocol-spec`.
pub fn fw_proto(v: &str) -> Result<(), String> {
    if FW_PROTO_RE.is_match(v) { Ok(()) } else { Err(format!("unknown protocol '{v}'")) }
}

/// `pve-fw-icmp-type-spec`.
pub fn fw_icmp(v: &str) -> Result<(), String> {
    if FW_ICMP_RE.is_match(v) { Ok(()) } else { Err(format!("invalid icmp-type '{v}'")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_formats_accept_pve_values_and_refuse_garbage() {
        assert!(BOOT.parse("order=scsi0;ide2;net0").is_ok());
        assert!(BOOT.parse("cdn").is_ok());
        assert!(BOOT.parse("order=floppy0").unwrap_err().contains("invalid boot device"));
        assert_eq!(CPU.parse("x86-64-v2-AES,flags=+aes").unwrap().get("cputype"), Some("x86-64-v2-AES"));
        assert!(STARTUP.parse("order=1,up=30").is_ok());
        assert!(STARTUP.parse("2").is_ok());
        assert!(SMBIOS1.parse("uuid=6e2b5c2e-9d7a-4d3b-8a8d-0c6a1c2f1e11").is_ok());
        assert!(hotplug("disk,network,usb").is_ok());
        assert!(hotplug("disk,floppy").is_err());
        assert!(cpuset("0-3,8").is_ok() && cpuset("a").is_err());
        assert!(storage_pair("local-lvm:ceph").is_ok());
        assert!(fw_addr("10.0.0.0/8,192.168.1.1").is_ok() && fw_addr("10.0.0.0/99").is_err());
        assert!(fw_port("22,80:90,http").is_ok());
    }
}
