//! Property strings (`local-lvm:32,discard=on,ssd=1`): parsing and printing like pve-common's
//! `parse_property_string` / `print_property_string`, with the same error texts.

use std::collections::{BTreeMap, HashMap};

use super::{P, Rule, Ty, add_error, check_scalar};

/// The keys of one property-string format.
#[derive(Debug)]
pub struct PropFormat {
    rules: Vec<Rule>,
    by_name: HashMap<&'static str, usize>,
    default_key: Option<usize>,
}

/// A parsed property string: canonical keys in the order they were written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropMap(pub Vec<(String, String)>);

impl PropMap {
    /// The value of a key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    /// Sets a key (keeps its position when it exists).
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }
    /// Removes a key.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }
    /// Whether a key is set.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

/// PVE's `parse_boolean` (used inside property strings only).
pub fn parse_boolean(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

impl PropFormat {
    /// Builds a format from key declarations (`P::str("file").default_key()`, `P::alias(..)`).
    pub fn new(keys: Vec<P>) -> PropFormat {
        let mut by_name = HashMap::new();
        let mut default_key = None;
        let mut rules = Vec::with_capacity(keys.len());
        for (i, k) in keys.into_iter().enumerate() {
            by_name.insert(k.name, i);
            if k.default_key {
                default_key = Some(i);
            }
            rules.push(Rule::new(k));
        }
        PropFormat { rules, by_name, default_key }
    }

    /// Parses and validates a value; the error is the full text PVE reports after
    /// `invalid format - ` (trailing newline included).
    pub fn parse(&self, data: &str) -> Result<PropMap, String> {
        self.parse_at(data, "")
    }

    /// Like [`parse`](Self::parse) with the parameter name used as error path prefix.
    pub fn parse_at(&self, data: &str, path: &str) -> Result<PropMap, String> {
        let mut res = PropMap::default();
        let mut used_default = false;
        for part in data.split(',') {
            if part.trim().is_empty() {
                continue;
            }
            match part.split_once('=') {
                Some((k, v)) if !k.is_empty() && !v.is_empty() => {
                    let mut key = k.to_string();
                    if res.has(&key) {
                        return Err(format!("duplicate key in comma-separated list property: {key}\n"));
                    }
                    let mut rule = self.by_name.get(key.as_str()).map(|&i| &self.rules[i]);
                    if let Some(alias) = rule.and_then(|r| r.spec.alias) {
                        if let Some(ka) = rule.and_then(|r| r.spec.key_alias) {
                            if res.has(ka) {
                                return Err(format!("key alias '{ka}' is already defined\n"));
                            }
                            res.set(ka, key.clone());
                        }
                        key = alias.to_string();
                        rule = self.by_name.get(alias).map(|&i| &self.rules[i]);
                        if res.has(&key) {
                            return Err(format!("key '{key}' is already defined (via alias)\n"));
                        }
                    }
                    let Some(rule) = rule else {
                        return Err(format!("invalid key in comma-separated list property: {key}\n"));
                    };
                    let value = normalise_bool(rule, v);
                    res.set(&key, value);
                }
                None => {
                    let Some(di) = self.default_key else {
                        return Err("value without key, but schema does not define a default key\n".into());
                    };
                    let dk = self.rules[di].spec.name;
                    if used_default || res.has(dk) {
                        return Err(format!("duplicate key in comma-separated list property: {dk}\n"));
                    }
                    used_default = true;
                    res.set(dk, normalise_bool(&self.rules[di], part));
                }
                Some(_) => return Err("missing key in comma-separated list property\n".into()),
            }
        }
        let mut errors = BTreeMap::new();
        for rule in &self.rules {
            if rule.spec.alias.is_some() {
                continue;
            }
            let sub = if path.is_empty() { rule.spec.name.to_string() } else { format!("{path}.{}", rule.spec.name) };
            match res.get(rule.spec.name) {
                None if !rule.spec.optional => {
                    add_error(&mut errors, &sub, "property is missing and it is not optional")
                }
                None => {}
                Some(v) => {
                    check_scalar(&sub, rule, v, &mut errors);
                    if let Some(req) = rule.spec.requires
                        && !res.has(req)
                    {
                        let rp = if path.is_empty() { req.to_string() } else { format!("{path}.{req}") };
                        add_error(&mut errors, &rp, &format!("missing property required by '{sub}'"));
                    }
                }
            }
        }
        if errors.is_empty() {
            return Ok(res);
        }
        let mut msg = String::from("format error\n");
        for (k, m) in errors {
            msg.push_str(&format!("{k}: {m}\n"));
        }
        Err(msg)
    }

    /// `print_property_string`: default key bare first, then required keys, then the rest, sorted.
    pub fn print(&self, data: &PropMap) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut done: Vec<&str> = Vec::new();
        if let Some(di) = self.default_key {
            let dk = self.rules[di].spec.name;
            if let Some(v) = data.get(dk) {
                let combined = self.rules.iter().find(|r| r.spec.key_alias == Some(dk)).and_then(|r| r.spec.alias);
                match combined.and_then(|target| data.get(target).map(|mac| (target, mac))) {
                    Some((target, mac)) => {
                        parts.push(format!("{v}={mac}"));
                        done.push(target);
                    }
                    None => parts.push(v.to_string()),
                }
                done.push(dk);
            }
        }
        let mut keys: Vec<&(String, String)> = data.0.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        for required_pass in [true, false] {
            for (k, v) in &keys {
                if done.contains(&k.as_str()) {
                    continue;
                }
                let optional = self.by_name.get(k.as_str()).map(|&i| self.rules[i].spec.optional).unwrap_or(true);
                if required_pass && optional {
                    continue;
                }
                // `model=mac` keys print as `<model>=<mac>`.
                let combined = self.rules.iter().find(|r| r.spec.key_alias == Some(k.as_str()));
                if let Some(target) = combined.and_then(|r| r.spec.alias)
                    && let Some(mac) = data.get(target)
                {
                    parts.push(format!("{v}={mac}"));
                    done.push(k.as_str());
                    done.push(target);
                    continue;
                }
                parts.push(format!("{k}={v}"));
                done.push(k.as_str());
            }
        }
        parts.join(",")
    }
}

fn normalise_bool(rule: &Rule, v: &str) -> String {
    if rule.spec.ty == Ty::Boolean
        && let Some(b) = parse_boolean(v)
    {
        return if b { "1" } else { "0" }.to_string();
    }
    v.to_string()
}

#[cfg(test)]
mod tests {

    use crate::params::guest_formats::{DISK, QEMU_NET};

    #[test]
    fn disk_strings_parse_with_default_key_and_booleans() {
        let m = DISK.parse("local-lvm:32,discard=on,ssd=yes").unwrap();
        assert_eq!(m.get("file"), Some("local-lvm:32"));
        assert_eq!(m.get("ssd"), Some("1"));
        let m = DISK.parse("volume=local-lvm:vm-100-disk-0,size=32G").unwrap();
        assert_eq!(m.get("file"), Some("local-lvm:vm-100-disk-0"));
    }

    #[test]
    fn disk_errors_match_pve() {
        assert_eq!(
            DISK.parse_at("local-lvm:32,foo=1", "scsi0").unwrap_err(),
            "invalid key in comma-separated list property: foo\n"
        );
        assert_eq!(
            DISK.parse_at("local-lvm:32,cache=bogus", "scsi0").unwrap_err(),
            "format error\nscsi0.cache: value 'bogus' does not have a value in the enumeration 'none, writethrough, writeback, unsafe, directsync'\n"
        );
        assert_eq!(DISK.parse("a:1,b:2").unwrap_err(), "duplicate key in comma-separated list property: file\n");
        assert_eq!(
            DISK.parse("cache=none").unwrap_err(),
            "format error\nfile: property is missing and it is not optional\n"
        );
    }

    #[test]
    fn net_key_alias_and_print() {
        let m = QEMU_NET.parse("virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1").unwrap();
        assert_eq!(m.get("model"), Some("virtio"));
        assert_eq!(m.get("macaddr"), Some("BC:24:11:00:00:01"));
        assert_eq!(QEMU_NET.print(&m), "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1");
        let m = QEMU_NET.parse("model=virtio,bridge=vmbr0").unwrap();
        assert_eq!(QEMU_NET.print(&m), "virtio,bridge=vmbr0");
    }
}
