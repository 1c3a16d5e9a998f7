//! Named PVE formats (`format => 'pve-vmid'` and friends) as verifier functions returning PVE's
//! `die` texts, plus the `-list` splitting rule of `PVE::Tools::split_list`.

use std::sync::{Arc, LazyLock};

use regex::Regex;

use super::propstring::PropFormat;

/// A value format: a verifier, a list of verified items, or a property string.
#[derive(Clone)]
pub enum Format {
    /// A single value checked by a function (the error is PVE's `die` text without `\n`).
    Check(fn(&str) -> Result<(), String>),
    /// A `-list` format: `split_list` then every item checked.
    List(fn(&str) -> Result<(), String>),
    /// A property string (`key=value,...`).
    Prop(Arc<PropFormat>),
}

impl std::fmt::Debug for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Format::Check(_) => f.write_str("Format::Check"),
            Format::List(_) => f.write_str("Format::List"),
            Format::Prop(_) => f.write_str("Format::Prop"),
        }
    }
}

/// `PVE::Tools::split_list`: NUL-separated if it has NULs, else split on `,`, `;` and whitespace.
pub fn split_list(text: &str) -> Vec<&str> {
    if text.contains('\0') {
        return text.split('\0').collect();
    }
    text.split(|c: char| c == ',' || c == ';' || c.is_whitespace()).filter(|s| !s.is_empty()).collect()
}

macro_rules! re {
    ($name:ident, $pat:expr) => {
        static $name: LazyLock<Regex> = LazyLock::new(|| Regex::new($pat).expect("static regex"));
    };
}

re!(VMID_RE, r"^[1-9][0-9]{2,8}$");
re!(NODE_RE, r"^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$");
re!(CONFIGID_RE, r"(?i)^[a-z][a-z0-9_-]+$");
re!(ID_RE, r"(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$");
re!(URLENC_RE, r"^[-%a-zA-Z0-9_.!~*'()]*$");
re!(BRIDGE_RE, r"^[-_.\w\d]+$");
re!(POOLID_RE, r"^[A-Za-z0-9.\-_]+$");
re!(USERID_RE, r"^[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+$");
re!(REALM_RE, r"^[A-Za-z][A-Za-z0-9.\-_]+$");
re!(MAC_RE, r"(?i)^[a-f0-9][02468ace](?::[a-f0-9]{2}){5}$");
re!(DNS_RE, r"^(([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$");
re!(IFACE_RE, r"(?i)^[a-z][a-z0-9_]{1,20}([:.]\d+)?$");
re!(TAG_RE, r"(?i)^[a-z0-9_][a-z0-9_\-+.]*$");
re!(VOLID_RE, r"^([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$");
re!(EMAIL_RE, r"^[\w+\-~]+(\.[\w+\-~]+)*@[a-zA-Z0-9\-]+(\.[a-zA-Z0-9\-]+)*$");
re!(EMAIL_USER_RE, r"^[\w+\-~]+(\.[\w+\-~]+)*(@[A-Za-z][A-Za-z0-9.\-_]+)?$");
re!(PRIV_RE, r"^[A-Za-z.]+$");

pub fn vmid(v: &str) -> Result<(), String> {
    ok_if(VMID_RE.is_match(v), "value does not look like a valid VM ID")
}
pub fn node(v: &str) -> Result<(), String> {
    ok_if(NODE_RE.is_match(v), "value does not look like a valid node name")
}
pub fn configid(v: &str) -> Result<(), String> {
    ok_if(CONFIGID_RE.is_match(v), &format!("invalid configuration ID '{v}'"))
}
fn parse_id(v: &str, kind: &str) -> Result<(), String> {
    if v.chars().count() < 2 {
        return Err(format!("{kind} ID '{v}' cannot be shorter than 2 characters"));
    }
    ok_if(ID_RE.is_match(v), &format!("{kind} ID '{v}' contains illegal characters"))
}
pub fn storage_id(v: &str) -> Result<(), String> {
    parse_id(v, "storage")
}
pub fn urlencoded(v: &str) -> Result<(), String> {
    ok_if(URLENC_RE.is_match(v), &format!("invalid urlencoded string: {v}"))
}
pub fn bridge_id(v: &str) -> Result<(), String> {
    ok_if(BRIDGE_RE.is_match(v), &format!("invalid bridge ID '{v}'"))
}
pub fn poolid(v: &str) -> Result<(), String> {
    ok_if(POOLID_RE.is_match(v), &format!("invalid pool ID '{v}'"))
}
pub fn userid(v: &str) -> Result<(), String> {
    ok_if(USERID_RE.is_match(v) && v.len() <= 64, &format!("value '{v}' does not look like a valid user name"))
}
pub fn realm(v: &str) -> Result<(), String> {
    ok_if(REALM_RE.is_match(v), &format!("value '{v}' does not look like a valid realm"))
}
pub fn mac_addr(v: &str) -> Result<(), String> {
    ok_if(MAC_RE.is_match(v), "value does not look like a valid unicast MAC address")
}
pub fn dns_name(v: &str) -> Result<(), String> {
    ok_if(DNS_RE.is_match(v), "value does not look like a valid DNS name")
}
pub fn iface(v: &str) -> Result<(), String> {
    ok_if(IFACE_RE.is_match(v), &format!("invalid network interface name '{v}'"))
}
pub fn tag(v: &str) -> Result<(), String> {
    ok_if(TAG_RE.is_match(v), "invalid characters in tag")
}
pub fn volume_id(v: &str) -> Result<(), String> {
    ok_if(VOLID_RE.is_match(v), &format!("unable to parse volume ID '{v}'"))
}
/// `pve-volume-id-or-qm-path` / `-or-absolute-path`: a volume id, an absolute path, or a
/// special value (`none`, `cdrom`).
pub fn volume_or_path(v: &str) -> Result<(), String> {
    if v == "none" || v == "cdrom" || v.starts_with('/') || VOLID_RE.is_match(v) {
        return Ok(());
    }
    Err(format!("unable to parse volume ID '{v}'"))
}
pub fn disk_size(v: &str) -> Result<(), String> {
    ok_if(crate::util::parse_size(v).is_some(), &format!("value does not look like a valid disk size: {v}"))
}
pub fn ipv4(v: &str) -> Result<(), String> {
    ok_if(v.parse::<std::net::Ipv4Addr>().is_ok(), "value does not look like a valid IPv4 address")
}
pub fn ipv6(v: &str) -> Result<(), String> {
    ok_if(v.parse::<std::net::Ipv6Addr>().is_ok(), "value does not look like a valid IPv6 address")
}
pub fn ip(v: &str) -> Result<(), String> {
    ok_if(v.parse::<std::net::IpAddr>().is_ok(), "value does not look like a valid IP address")
}
fn cidr_parts(v: &str) -> Option<(std::net::IpAddr, u8)> {
    let (addr, len) = v.split_once('/')?;
    let addr: std::net::IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    Some((addr, len))
}
pub fn cidrv4(v: &str) -> Result<(), String> {
    let ok = matches!(cidr_parts(v), Some((std::net::IpAddr::V4(_), l)) if l <= 32);
    ok_if(ok, "value does not look like a valid IPv4 CIDR network")
}
pub fn cidrv6(v: &str) -> Result<(), String> {
    let ok = matches!(cidr_parts(v), Some((std::net::IpAddr::V6(_), l)) if l <= 128);
    ok_if(ok, "value does not look like a valid IPv6 CIDR network")
}
pub fn cidr(v: &str) -> Result<(), String> {
    ok_if(cidrv4(v).is_ok() || cidrv6(v).is_ok(), "value does not look like a valid CIDR network")
}
pub fn ipv4mask(v: &str) -> Result<(), String> {
    let ok = v.parse::<std::net::Ipv4Addr>().map(|a| {
        let bits = u32::from(a);
        bits.leading_ones() + bits.trailing_zeros() == 32
    });
    ok_if(ok.unwrap_or(false), "value does not look like a valid IP netmask")
}
pub fn storage_content(v: &str) -> Result<(), String> {
    const KNOWN: &[&str] = &["images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import", "none"];
    ok_if(KNOWN.contains(&v), &format!("invalid content type '{v}'"))
}
pub fn task_status_type(v: &str) -> Result<(), String> {
    let l = v.to_ascii_lowercase();
    ok_if(matches!(l.as_str(), "ok" | "error" | "warning" | "unknown"), &format!("invalid status '{v}'"))
}
pub fn email_or_username(v: &str) -> Result<(), String> {
    ok_if(
        EMAIL_RE.is_match(v) || EMAIL_USER_RE.is_match(v),
        "value does not look like a valid email address or user name",
    )
}
pub fn priv_name(v: &str) -> Result<(), String> {
    ok_if(PRIV_RE.is_match(v), &format!("invalid privilege name '{v}'"))
}
/// Any string (`format => 'string'`, used as `string-list`).
pub fn any(_: &str) -> Result<(), String> {
    Ok(())
}

fn ok_if(cond: bool, msg: &str) -> Result<(), String> {
    if cond { Ok(()) } else { Err(msg.to_string()) }
}

/// Shorthands for the formats of the subset.
pub mod f {
    use super::*;
    pub const VMID: Format = Format::Check(vmid);
    pub const VMID_LIST: Format = Format::List(vmid);
    pub const NODE: Format = Format::Check(node);
    pub const CONFIGID: Format = Format::Check(configid);
    pub const CONFIGID_LIST: Format = Format::List(configid);
    pub const STORAGE_ID: Format = Format::Check(storage_id);
    pub const STORAGE_ID_LIST: Format = Format::List(storage_id);
    pub const URLENCODED: Format = Format::Check(urlencoded);
    pub const BRIDGE: Format = Format::Check(bridge_id);
    pub const POOLID: Format = Format::Check(poolid);
    pub const USERID: Format = Format::Check(userid);
    pub const REALM: Format = Format::Check(realm);
    pub const MAC: Format = Format::Check(mac_addr);
    pub const DNS_NAME: Format = Format::Check(dns_name);
    pub const DNS_NAME_LIST: Format = Format::List(dns_name);
    pub const IFACE: Format = Format::Check(iface);
    pub const IFACE_LIST: Format = Format::List(iface);
    pub const TAG_LIST: Format = Format::List(tag);
    pub const VOLUME_ID: Format = Format::Check(volume_id);
    pub const VOLUME_OR_PATH: Format = Format::Check(volume_or_path);
    pub const DISK_SIZE: Format = Format::Check(disk_size);
    pub const IPV4: Format = Format::Check(ipv4);
    pub const IPV6: Format = Format::Check(ipv6);
    pub const IP: Format = Format::Check(ip);
    pub const ADDRESS_LIST: Format = Format::List(ip);
    pub const CIDR: Format = Format::Check(cidr);
    pub const CIDRV4: Format = Format::Check(cidrv4);
    pub const CIDRV6: Format = Format::Check(cidrv6);
    pub const IPV4MASK: Format = Format::Check(ipv4mask);
    pub const STORAGE_CONTENT: Format = Format::Check(storage_content);
    pub const STORAGE_CONTENT_LIST: Format = Format::List(storage_content);
    pub const TASK_STATUS_LIST: Format = Format::List(task_status_type);
    pub const EMAIL_OR_USERNAME_LIST: Format = Format::List(email_or_username);
    pub const PRIV_LIST: Format = Format::List(priv_name);
    pub const STRING_LIST: Format = Format::List(any);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_use_pve_texts() {
        assert!(vmid("100").is_ok());
        assert_eq!(vmid("99").unwrap_err(), "value does not look like a valid VM ID");
        assert!(node("pve1").is_ok());
        assert!(node("-x").is_err());
        assert_eq!(storage_id("a").unwrap_err(), "storage ID 'a' cannot be shorter than 2 characters");
        assert_eq!(storage_id("a b").unwrap_err(), "storage ID 'a b' contains illegal characters");
        assert!(urlencoded("ssh-ed25519%20AAAA%2B").is_ok());
        assert_eq!(urlencoded("a b").unwrap_err(), "invalid urlencoded string: a b");
        assert!(mac_addr("BC:24:11:00:00:01").is_ok());
        assert!(mac_addr("BD:24:11:00:00:01").is_err());
        assert!(ipv4mask("255.255.255.0").is_ok());
        assert!(ipv4mask("255.0.255.0").is_err());
        assert_eq!(split_list("100, 101;102 103"), vec!["100", "101", "102", "103"]);
    }
}
