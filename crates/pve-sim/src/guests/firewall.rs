//! Guest firewall: `.../firewall/rules` (list, create at the top, get, update or move, delete;
//! each rule carries `pos` and the list `digest`) and `.../firewall/options`, for qemu and
//! LXC, checked like pve-firewall's `verify_rule`.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::error::{PveError, PveResult};
use crate::model::{Guest, GuestKind};
use crate::params::{Format, P, Params, f};
use crate::router::Routes;
use crate::sim::Ctx;

use super::common::{LXC_DIGEST_MISMATCH, guest, guest_mut};
use super::formats as xf;

const LOG_LEVELS: &[&str] = &["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug", "nolog"];
const RULE_FIELDS: &[&str] = &[
    "type",
    "action",
    "macro",
    "iface",
    "source",
    "dest",
    "proto",
    "dport",
    "sport",
    "icmp-type",
    "log",
    "comment",
    "enable",
];
/// Macros of pve-firewall that guests commonly use.
const MACROS: &[&str] = &[
    "Amanda",
    "Auth",
    "BGP",
    "BitTorrent",
    "BitTorrent32",
    "CVS",
    "Ceph",
    "Citrix",
    "DAAP",
    "DCC",
    "DHCPfwd",
    "DHCPv6",
    "DNS",
    "Distcc",
    "FTP",
    "Finger",
    "GNUnet",
    "GRE",
    "Git",
    "HKP",
    "HTTP",
    "HTTPS",
    "ICPV2",
    "ICQ",
    "IMAP",
    "IMAPS",
    "IPIP",
    "IPsec",
    "IPsecah",
    "IPsecnat",
    "IRC",
    "Jetdirect",
    "L2TP",
    "LDAP",
    "LDAPS",
    "MDNS",
    "MSNP",
    "MSSQL",
    "Mail",
    "Munin",
    "MySQL",
    "NNTP",
    "NNTPS",
    "NTP",
    "NeighborDiscovery",
    "OSPF",
    "OpenVPN",
    "PCA",
    "PMG",
    "POP3",
    "POP3S",
    "PPtP",
    "Ping",
    "PostgreSQL",
    "Printer",
    "RDP",
    "RIP",
    "RNDC",
    "Razor",
    "Rdate",
    "Rsync",
    "SANE",
    "SMB",
    "SMBswat",
    "SMTP",
    "SMTPS",
    "SNMP",
    "SPAMD",
    "SPICEproxy",
    "SSH",
    "SVN",
    "SixXS",
    "Squid",
    "Submission",
    "Syslog",
    "TFTP",
    "Telnet",
    "Telnets",
    "Time",
    "Trcrt",
    "VNC",
    "VNCL",
    "Web",
    "Webcache",
    "Webmin",
    "Whois",
];

fn rule_params(update: bool) -> Vec<P> {
    let mut v = vec![
        P::node(),
        P::vmid(),
        P::str("comment").opt(),
        P::str("dest").opt().max_len(512).fmt(Format::Check(xf::fw_addr)),
        P::str("digest").opt().max_len(64),
        P::str("dport").opt().fmt(Format::Check(xf::fw_port)),
        P::int("enable").opt().min(0),
        P::str("icmp-type").opt().fmt(Format::Check(xf::fw_icmp)),
        P::str("iface").opt().min_len(2).max_len(20).fmt(f::IFACE),
        P::str("log").opt().en(LOG_LEVELS),
        P::str("macro").opt().max_len(128),
        P::int("pos").opt().min(0),
        P::str("proto").opt().fmt(Format::Check(xf::fw_proto)),
        P::str("source").opt().max_len(512).fmt(Format::Check(xf::fw_addr)),
        P::str("sport").opt().fmt(Format::Check(xf::fw_port)),
    ];
    if update {
        v.push(P::str("action").opt().min_len(2).max_len(20).pattern(r"[A-Za-z][A-Za-z0-9\-\_]+"));
        v.push(P::str("type").opt().en(&["in", "out", "forward", "group"]));
        v.push(P::str("delete").opt().fmt(f::CONFIGID_LIST));
        v.push(P::int("moveto").opt().min(0));
    } else {
        v.push(P::str("action").min_len(2).max_len(20).pattern(r"[A-Za-z][A-Za-z0-9\-\_]+"));
        v.push(P::str("type").en(&["in", "out", "forward", "group"]));
    }
    v
}

type Rule = Map<String, Value>;

fn rules(g: &Guest) -> Vec<Rule> {
    g.ext
        .get("fw_rules")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|r| r.as_object().cloned()).collect())
        .unwrap_or_default()
}

fn digest_of(v: &Value) -> String {
    hex::encode(Sha256::digest(v.to_string().as_bytes()))[..40].to_string()
}

fn rules_digest(list: &[Rule]) -> String {
    digest_of(&json!(list))
}

fn store_rules(g: &mut Guest, list: Vec<Rule>) {
    g.ext.insert("fw_rules".into(), Value::Array(list.into_iter().map(Value::Object).collect()));
}

fn check_digest(expected: &str, p: &Params) -> PveResult<()> {
    match p.opt_str("digest") {
        Some(d) if !d.is_empty() && d != expected => Err(PveError::handler(LXC_DIGEST_MISMATCH)),
        _ => Ok(()),
    }
}

/// `verify_rule`: action, macro and port/protocol rules; errors per field (400).
fn verify(rule: &Rule) -> PveResult<()> {
    let mut errors = BTreeMap::new();
    let s = |k: &str| rule.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let ty = s("type");
    let action = s("action");
    if ty == "group" {
        errors.insert("action".to_string(), format!("security group '{action}' does not exist"));
    } else if !matches!(action.as_str(), "ACCEPT" | "DROP" | "REJECT") {
        errors.insert("action".to_string(), format!("unknown action '{action}'"));
    }
    let mac = s("macro");
    if !mac.is_empty() && !MACROS.iter().any(|m| m.eq_ignore_ascii_case(&mac)) {
        errors.insert("macro".to_string(), format!("unknown macro '{mac}'"));
    }
    for port in ["dport", "sport"] {
        if !s(port).is_empty() && s("proto").is_empty() && mac.is_empty() {
            errors.insert("proto".to_string(), format!("missing property - '{port}' requires this property"));
        }
    }
    if !s("icmp-type").is_empty() && !matches!(s("proto").as_str(), "icmp" | "icmpv6" | "ipv6-icmp") {
        errors.insert("proto".to_string(), "missing property - 'icmp-type' requires this property".to_string());
    }
    if errors.is_empty() { Ok(()) } else { Err(PveError::Param(errors)) }
}

fn with_ipversion(mut r: Rule) -> Rule {
    let addr =
        [r.get("source"), r.get("dest")].into_iter().flatten().filter_map(Value::as_str).next().map(str::to_string);
    if let Some(a) = addr {
        if a.contains(':') {
            r.insert("ipversion".into(), json!(6));
        } else if a.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            r.insert("ipversion".into(), json!(4));
        }
    }
    r
}

fn rule_from_params(p: &Params, base: Rule) -> Rule {
    let mut r = base;
    for k in RULE_FIELDS {
        if let Some(v) = p.opt_str(k) {
            if *k == "enable" {
                r.insert((*k).into(), json!(v.parse::<i64>().unwrap_or(0)));
            } else {
                r.insert((*k).into(), json!(v));
            }
        }
    }
    r.remove("ipversion");
    with_ipversion(r)
}

fn at(list: &[Rule], pos: usize) -> PveResult<&Rule> {
    list.get(pos).ok_or_else(|| PveError::handler(format!("no rule at position {pos}")))
}

fn option_params() -> Vec<P> {
    vec![
        P::node(),
        P::vmid(),
        P::str("delete").opt().fmt(f::CONFIGID_LIST),
        P::bool("dhcp").opt(),
        P::str("digest").opt().max_len(64),
        P::bool("enable").opt(),
        P::bool("ipfilter").opt(),
        P::str("log_level_in").opt().en(LOG_LEVELS),
        P::str("log_level_out").opt().en(LOG_LEVELS),
        P::bool("macfilter").opt(),
        P::bool("ndp").opt(),
        P::str("policy_in").opt().en(&["ACCEPT", "REJECT", "DROP"]),
        P::str("policy_out").opt().en(&["ACCEPT", "REJECT", "DROP"]),
        P::bool("radv").opt(),
    ]
}

const OPTION_KEYS: &[&str] = &[
    "dhcp",
    "enable",
    "ipfilter",
    "log_level_in",
    "log_level_out",
    "macfilter",
    "ndp",
    "policy_in",
    "policy_out",
    "radv",
];

fn options(g: &Guest) -> Map<String, Value> {
    g.ext.get("fw_options").and_then(Value::as_object).cloned().unwrap_or_default()
}

/// Registers the firewall endpoints of both guest kinds.
pub fn register(r: &mut Routes) {
    for kind in [GuestKind::Qemu, GuestKind::Lxc] {
        let (rules_path, rule_path, opts_path): (&'static str, &'static str, &'static str) = match kind {
            GuestKind::Qemu => (
                "/nodes/{node}/qemu/{vmid}/firewall/rules",
                "/nodes/{node}/qemu/{vmid}/firewall/rules/{pos}",
                "/nodes/{node}/qemu/{vmid}/firewall/options",
            ),
            GuestKind::Lxc => (
                "/nodes/{node}/lxc/{vmid}/firewall/rules",
                "/nodes/{node}/lxc/{vmid}/firewall/rules/{pos}",
                "/nodes/{node}/lxc/{vmid}/firewall/options",
            ),
        };
        r.get(rules_path, vec![P::node(), P::vmid()], move |cx, p| {
            let st = cx.read();
            let list = rules(guest(&st, p, kind)?);
            let digest = rules_digest(&list);
            Ok(Value::Array(
                list.into_iter()
                    .enumerate()
                    .map(|(i, mut r)| {
                        r.insert("pos".into(), json!(i));
                        r.insert("digest".into(), json!(digest));
                        Value::Object(r)
                    })
                    .collect(),
            ))
        })
        .local();
        r.post(rules_path, rule_params(false), move |cx, p| {
            let mut st = cx.write();
            let g = guest_mut(&mut st, p, kind)?;
            let mut list = rules(g);
            check_digest(&rules_digest(&list), p)?;
            let mut rule = rule_from_params(p, Rule::new());
            verify(&rule)?;
            if !p.has("enable") {
                rule.insert("enable".into(), json!(0));
            }
            list.insert(0, rule);
            store_rules(g, list);
            Ok(Value::Null)
        })
        .local();
        r.get(rule_path, vec![P::node(), P::vmid(), P::int("pos").opt().min(0)], move |cx, p| {
            let st = cx.read();
            let list = rules(guest(&st, p, kind)?);
            let pos = p.opt_u64("pos").unwrap_or(0) as usize;
            let mut rule = at(&list, pos)?.clone();
            rule.insert("pos".into(), json!(pos));
            Ok(Value::Object(rule))
        })
        .local();
        r.put(rule_path, rule_params(true), move |cx, p| {
            let mut st = cx.write();
            let g = guest_mut(&mut st, p, kind)?;
            let mut list = rules(g);
            check_digest(&rules_digest(&list), p)?;
            let pos = p.opt_u64("pos").unwrap_or(0) as usize;
            at(&list, pos)?;
            if let Some(to) = p.opt_u64("moveto") {
                let rule = list.remove(pos);
                let to = (to as usize).min(list.len());
                list.insert(to, rule);
            } else {
                let mut rule = rule_from_params(p, list[pos].clone());
                for k in p.list("delete") {
                    rule.remove(k);
                }
                verify(&rule)?;
                list[pos] = with_ipversion(rule);
            }
            store_rules(g, list);
            Ok(Value::Null)
        })
        .local();
        r.delete(
            rule_path,
            vec![P::node(), P::vmid(), P::str("digest").opt().max_len(64), P::int("pos").opt().min(0)],
            move |cx, p| {
                let mut st = cx.write();
                let g = guest_mut(&mut st, p, kind)?;
                let mut list = rules(g);
                check_digest(&rules_digest(&list), p)?;
                let pos = p.opt_u64("pos").unwrap_or(0) as usize;
                at(&list, pos)?;
                list.remove(pos);
                store_rules(g, list);
                Ok(Value::Null)
            },
        )
        .local();
        r.get(opts_path, vec![P::node(), P::vmid()], move |cx, p| {
            let st = cx.read();
            let opts = options(guest(&st, p, kind)?);
            let mut out = opts.clone();
            out.insert("digest".into(), json!(digest_of(&Value::Object(opts))));
            Ok(Value::Object(out))
        });
        r.put(opts_path, option_params(), move |cx: &Ctx, p: &Params| {
            let mut st = cx.write();
            let g = guest_mut(&mut st, p, kind)?;
            let mut opts = options(g);
            check_digest(&digest_of(&Value::Object(opts.clone())), p)?;
            for k in p.list("delete") {
                if !OPTION_KEYS.contains(&k) {
                    return Err(PveError::param("delete", format!("no such option '{k}'")));
                }
                opts.remove(k);
            }
            for k in OPTION_KEYS {
                if let Some(v) = p.opt_str(k) {
                    let value = if v == "0" || v == "1" { json!(v.parse::<i64>().unwrap_or(0)) } else { json!(v) };
                    opts.insert((*k).into(), value);
                }
            }
            g.ext.insert("fw_options".into(), Value::Object(opts));
            Ok(Value::Null)
        });
    }
}
