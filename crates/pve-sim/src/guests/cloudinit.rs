//! qemu cloud-init: `sshkeys` validation (PVE un-escapes the value and checks every key like
//! `ssh-keygen -l`), `cipassword` hashing, the record of changes made while the VM runs, and
//! the endpoints `GET/PUT .../cloudinit` and `GET .../cloudinit/dump`.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::{PveError, PveResult};
use crate::model::{Guest, GuestKind, PowerState};
use crate::params::guest_formats as gf;
use crate::params::{P, Params};
use crate::router::Routes;
use crate::sim::Ctx;

use super::common::{guest, guest_mut, is_cloudinit, volid_of};

/// The options that make up the cloud-init drive (qemu-server's `$confdesc_cloudinit` plus
/// `ipconfig[n]`).
pub fn is_cloudinit_option(key: &str) -> bool {
    matches!(
        key,
        "cicustom" | "cipassword" | "citype" | "ciupgrade" | "ciuser" | "nameserver" | "searchdomain" | "sshkeys"
    ) || key.strip_prefix("ipconfig").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Options whose changes on a running VM are tracked until the drive is regenerated.
fn is_tracked(key: &str) -> bool {
    is_cloudinit_option(key)
        || key == "name"
        || key.strip_prefix("net").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

const KEY_TYPES: &[&str] = &[
    "ssh-rsa",
    "ssh-dss",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

fn valid_key_type(t: &str) -> bool {
    KEY_TYPES.contains(&t) || t.strip_suffix("-cert-v01@openssh.com").is_some_and(|b| KEY_TYPES.contains(&b))
}

/// One `authorized_keys` line: `[options] <type> <base64 blob> [comment]`, where the blob
/// must start with the length-prefixed key type.
fn valid_key_line(line: &str) -> bool {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let Some(pos) = tokens.iter().position(|t| valid_key_type(t)) else { return false };
    let Some(blob) = tokens.get(pos + 1) else { return false };
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(blob) else { return false };
    if bytes.len() < 4 {
        return false;
    }
    let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    bytes.len() >= 4 + len && &bytes[4..4 + len] == tokens[pos].as_bytes() && bytes.len() > 4 + len
}

/// `PVE::Tools::validate_ssh_public_keys`: every non-empty, non-comment line is a public key.
pub fn validate_ssh_keys(keys: &str) -> PveResult<()> {
    for line in keys.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !valid_key_line(line) {
            return Err(PveError::handler("SSH public key validation error"));
        }
    }
    Ok(())
}

/// Validates the url-encoded qemu `sshkeys` value (it stays encoded in the config).
pub fn validate_encoded_sshkeys(encoded: &str) -> PveResult<()> {
    let decoded = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
    validate_ssh_keys(&decoded)
}

const CRYPT_ALPHABET: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `PVE::Tools::encrypt_pw` shape: `$5$<salt>$<hash>` (kept as given when already hashed).
pub fn hash_password(password: &str, salt_seed: u64) -> String {
    let already = password.len() > 3
        && password.starts_with('$')
        && (password[1..].starts_with("1$")
            || password[1..].starts_with("5$")
            || password[1..].starts_with("6$")
            || password[1..].starts_with("2a$")
            || password[1..].starts_with("2y$"))
        && password.matches('$').count() >= 3;
    if already {
        return password.to_string();
    }
    let salt: String = (0..16)
        .map(|i| CRYPT_ALPHABET[(crate::util::hash_parts(salt_seed, &[b"salt", &[i]]) % 64) as usize] as char)
        .collect();
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(password.as_bytes());
    let digest = h.finalize();
    let mut out = String::with_capacity(43);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in digest.iter() {
        acc |= u32::from(*b) << bits;
        bits += 8;
        while bits >= 6 && out.len() < 43 {
            out.push(CRYPT_ALPHABET[(acc & 63) as usize] as char);
            acc >>= 6;
            bits -= 6;
        }
    }
    while out.len() < 43 {
        out.push(CRYPT_ALPHABET[(acc & 63) as usize] as char);
        acc >>= 6;
    }
    format!("$5${salt}${out}")
}

const RECORD: &str = "cloudinit";

fn record(g: &Guest) -> BTreeMap<String, String> {
    g.ext.get(RECORD).and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default()
}

fn store_record(g: &mut Guest, rec: BTreeMap<String, String>) {
    if rec.is_empty() {
        g.ext.remove(RECORD);
    } else {
        g.ext.insert(RECORD.into(), json!(rec));
    }
}

/// Records a change of a cloud-init relevant option on a running VM (qemu-server's
/// `cloudinit_record_changed`): the value the drive was generated with is kept until the
/// drive is regenerated.
pub fn record_change(g: &mut Guest, key: &str, old: Option<&str>, new: Option<&str>) {
    if !is_tracked(key) || g.state == PowerState::Stopped {
        return;
    }
    let mut rec = record(g);
    let mut added: Vec<String> = rec
        .remove("added")
        .map(|a| a.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    let recorded = rec.get(key).cloned();
    let is_added = added.iter().any(|a| a == key);
    match (old, new) {
        (Some(old), Some(new)) => match recorded {
            Some(r) if r == new => {
                rec.remove(key);
                added.retain(|a| a != key);
            }
            Some(_) => {}
            None if is_added => {}
            None => {
                rec.insert(key.into(), old.into());
            }
        },
        (None, Some(new)) => match recorded {
            Some(r) if r == new => {
                rec.remove(key);
            }
            _ if !is_added => added.push(key.into()),
            _ => {}
        },
        (Some(old), None) => {
            if is_added {
                added.retain(|a| a != key);
            } else if recorded.is_none() {
                rec.insert(key.into(), old.into());
            }
        }
        (None, None) => {}
    }
    if !added.is_empty() {
        rec.insert("added".into(), added.join(","));
    }
    store_record(g, rec);
}

/// The drive is (re)generated: nothing is pending any more (start, `PUT .../cloudinit`).
pub fn regenerated(g: &mut Guest) {
    g.ext.remove(RECORD);
}

fn has_cloudinit_drive(g: &Guest) -> bool {
    g.config.iter().any(|(k, v)| volid_of(GuestKind::Qemu, k, v).is_some_and(|id| is_cloudinit(&id)))
}

/// `GET .../cloudinit`.
fn pending_list(g: &Guest) -> Value {
    let mut rec = record(g);
    let mask = |k: &str, v: &str| if k == "cipassword" { "**********".to_string() } else { v.to_string() };
    let added: Vec<String> = rec
        .remove("added")
        .map(|a| a.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for key in &added {
        if let Some(v) = g.config.get(key) {
            out.push(json!({"key": key, "pending": mask(key, v)}));
        }
    }
    for (k, v) in &g.config {
        if !is_cloudinit_option(k) || added.contains(k) {
            continue;
        }
        match rec.get(k) {
            Some(old) => out.push(json!({"key": k, "value": mask(k, old), "pending": mask(k, v)})),
            None => out.push(json!({"key": k, "value": mask(k, v)})),
        }
    }
    for k in rec.keys() {
        if !g.config.contains_key(k) {
            out.push(json!({"key": k, "delete": 1}));
        }
    }
    Value::Array(out)
}

fn nic_names(g: &Guest) -> Vec<(u32, String)> {
    g.config
        .iter()
        .filter_map(|(k, v)| {
            let idx: u32 = k.strip_prefix("net")?.parse().ok()?;
            let mac = gf::QEMU_NET.parse(v).ok()?.get("macaddr")?.to_ascii_lowercase();
            Some((idx, mac))
        })
        .collect()
}

/// The generated NoCloud documents (`GET .../cloudinit/dump?type=`).
fn dump(g: &Guest, ty: &str) -> String {
    let name = g.name();
    match ty {
        "user" => {
            let mut s = format!("#cloud-config\nhostname: {name}\nmanage_etc_hosts: true\nfqdn: {name}\n");
            if let Some(u) = g.config.get("ciuser") {
                s.push_str(&format!("user: {u}\n"));
            }
            if let Some(p) = g.config.get("cipassword") {
                s.push_str(&format!("password: {p}\n"));
            }
            if let Some(keys) = g.config.get("sshkeys") {
                s.push_str("ssh_authorized_keys:\n");
                let decoded = percent_encoding::percent_decode_str(keys).decode_utf8_lossy().to_string();
                for k in decoded.lines().filter(|l| !l.trim().is_empty()) {
                    s.push_str(&format!("  - {k}\n"));
                }
            }
            s.push_str("chpasswd:\n  expire: False\nusers:\n  - default\n");
            let upgrade = g.config.get("ciupgrade").map(|v| v != "0").unwrap_or(true);
            s.push_str(&format!("package_upgrade: {upgrade}\n"));
            s
        }
        "network" => {
            let mut s = String::from("version: 1\nconfig:\n");
            for (idx, mac) in nic_names(g) {
                s.push_str(&format!(
                    "    - type: physical\n      name: eth{idx}\n      mac_address: '{mac}'\n      subnets:\n"
                ));
                let ipc = g.config.get(&format!("ipconfig{idx}")).and_then(|v| gf::IPCONFIG.parse(v).ok());
                match ipc.as_ref().and_then(|m| m.get("ip")) {
                    Some("dhcp") | None => s.push_str("      - type: dhcp4\n"),
                    Some(cidr) => {
                        s.push_str(&format!("      - type: static\n        address: '{cidr}'\n"));
                        if let Some(gw) = ipc.as_ref().and_then(|m| m.get("gw")) {
                            s.push_str(&format!("        gateway: '{gw}'\n"));
                        }
                    }
                }
            }
            if let Some(ns) = g.config.get("nameserver") {
                s.push_str("    - type: nameserver\n      address:\n");
                for a in crate::params::split_list(ns) {
                    s.push_str(&format!("      - '{a}'\n"));
                }
            }
            s
        }
        _ => {
            let mut h = sha2::Sha256::new();
            for (k, v) in &g.config {
                h.update(format!("{k}: {v}\n").as_bytes());
            }
            format!("instance-id: {}\n", &hex::encode(h.finalize())[..40])
        }
    }
}

/// Registers the cloud-init endpoints.
pub fn register(r: &mut Routes) {
    r.get("/nodes/{node}/qemu/{vmid}/cloudinit", vec![P::node(), P::vmid()], |cx: &Ctx, p: &Params| {
        let st = cx.read();
        Ok(pending_list(guest(&st, p, GuestKind::Qemu)?))
    });
    r.put("/nodes/{node}/qemu/{vmid}/cloudinit", vec![P::node(), P::vmid()], |cx: &Ctx, p: &Params| {
        let mut st = cx.write();
        let g = guest_mut(&mut st, p, GuestKind::Qemu)?;
        g.check_lock()?;
        if has_cloudinit_drive(g) {
            regenerated(g);
        }
        Ok(Value::Null)
    });
    r.get(
        "/nodes/{node}/qemu/{vmid}/cloudinit/dump",
        vec![P::node(), P::vmid(), P::str("type").en(&["user", "network", "meta"])],
        |cx: &Ctx, p: &Params| {
            let st = cx.read();
            let g = guest(&st, p, GuestKind::Qemu)?;
            Ok(json!(dump(g, p.str("type")?)))
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlx2uMl6O7otZxx5t83ZWNSS+gqAj3/2gOtI6dRPT+R test@host";

    #[test]
    fn ssh_keys_are_checked_like_ssh_keygen() {
        assert!(validate_ssh_keys(KEY).is_ok());
        assert!(validate_ssh_keys(&format!("# comment\n{KEY}\n\n")).is_ok());
        assert!(validate_ssh_keys("ssh-ed25519 AAAA test").is_err());
        assert!(validate_ssh_keys("not a key").is_err());
        // A blob of another type than announced.
        assert!(
            validate_ssh_keys("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIBlx2uMl6O7otZxx5t83ZWNSS+gqAj3/2gOtI6dRPT+R").is_err()
        );
        let encoded =
            "ssh-ed25519%20AAAAC3NzaC1lZDI1NTE5AAAAIBlx2uMl6O7otZxx5t83ZWNSS%2BgqAj3%2F2gOtI6dRPT%2BR%20test%40host";
        assert!(validate_encoded_sshkeys(encoded).is_ok());
        let e = validate_encoded_sshkeys("ssh-ed25519%20AAAA").unwrap_err();
        assert_eq!(e.message(), "SSH public key validation error");
    }

    #[test]
    fn passwords_are_hashed_once() {
        let h = hash_password("secret", 7);
        assert!(h.starts_with("$5$") && h.len() == 3 + 16 + 1 + 43, "{h}");
        assert_eq!(hash_password(&h, 9), h);
        assert_ne!(hash_password("secret", 8), h);
    }
}
