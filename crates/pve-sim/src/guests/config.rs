//! Guest configuration: `GET .../config` (`current`, `snapshot`), `GET .../pending`, and the
//! updates: qemu's synchronous `PUT .../config` and asynchronous `POST .../config` (task
//! `qmconfig`), LXC's `PUT .../config`. Like qemu-server, changes go to the pending section
//! first, then are applied at once on a stopped guest or hot-plugged where possible on a
//! running one (the rest waits for the next start). Replaced or deleted disks become
//! `unused[n]`, deleted `unused[n]` volumes are freed.

use serde_json::{Map, Value, json};

use crate::error::{PveError, PveResult};
use crate::model::{Cluster, Config, Guest, GuestKind, PowerState, seed};
use crate::params::guest_formats as gf;
use crate::params::{P, Params, f, split_list};
use crate::router::Routes;
use crate::sim::Ctx;
use crate::tasks::TaskLog;

use super::cloudinit::{is_cloudinit_option, record_change, validate_encoded_sshkeys};
use super::common::{check_digest, guest, is_cdrom, is_cloudinit, is_volume_key, next_unused_key, skiplock, volid_of};
use super::create_qemu::{PreparedConfig, config_options, prepare_qemu_options};
use super::disks::{PlannedDisk, free_all, free_volume, plan_disk, realize_disk};
use super::lxc_params::{LxcParamSet, lxc_config_params, lxc_option_exists};
use super::qemu_params::{QemuParamSet, qemu_config_params, qemu_option_exists};

/// Registers the config endpoints.
pub fn register(r: &mut Routes) {
    for kind in [GuestKind::Qemu, GuestKind::Lxc] {
        let (cfg, pending): (&'static str, &'static str) = match kind {
            GuestKind::Qemu => ("/nodes/{node}/qemu/{vmid}/config", "/nodes/{node}/qemu/{vmid}/pending"),
            GuestKind::Lxc => ("/nodes/{node}/lxc/{vmid}/config", "/nodes/{node}/lxc/{vmid}/pending"),
        };
        r.get(
            cfg,
            vec![P::node(), P::vmid(), P::bool("current").opt(), P::str("snapshot").opt().fmt(f::CONFIGID).max_len(40)],
            move |cx, p| get_config(cx, p, kind),
        );
        r.get(pending, vec![P::node(), P::vmid()], move |cx, p| {
            let st = cx.read();
            Ok(pending_array(guest(&st, p, kind)?))
        });
    }
    r.put("/nodes/{node}/qemu/{vmid}/config", qemu_config_params(QemuParamSet::PutConfig), |cx, p| {
        let mut st = cx.write();
        let upd = prepare_qemu_update(cx, &st, p)?;
        let mut log = TaskLog::default();
        apply_qemu_update(&mut st, &upd, &mut log)?;
        Ok(Value::Null)
    });
    r.post("/nodes/{node}/qemu/{vmid}/config", qemu_config_params(QemuParamSet::PostConfig), |cx, p| {
        let mut st = cx.write();
        let upd = prepare_qemu_update(cx, &st, p)?;
        let (node, vmid) = (upd.node.clone(), upd.vmid);
        let upid = cx.spawn_task(&mut st, cx.task(&node, "qmconfig", vmid), move |st, log| {
            log.line(format!("update VM {vmid}: {}", upd.summary));
            apply_qemu_update(st, &upd, log).map_err(|e| match e {
                PveError::Param(errors) => {
                    errors.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("\n")
                }
                other => other.message(),
            })
        })?;
        Ok(json!(upid))
    });
    r.put("/nodes/{node}/lxc/{vmid}/config", lxc_config_params(LxcParamSet::PutConfig), |cx, p| {
        let mut st = cx.write();
        update_lxc(cx, &mut st, p)?;
        Ok(Value::Null)
    });
}

/// `GET .../config`: pending values applied unless `current`, or a snapshot's config.
fn get_config(cx: &Ctx, p: &Params, kind: GuestKind) -> PveResult<Value> {
    if p.bool("current") && p.has("snapshot") {
        let msg = "cannot use 'snapshot' parameter with 'current'";
        let mut e = std::collections::BTreeMap::new();
        e.insert("snapshot".to_string(), msg.to_string());
        e.insert("current".to_string(), msg.to_string());
        return Err(PveError::Param(e));
    }
    let st = cx.read();
    let g = guest(&st, p, kind)?;
    let mut out = Map::new();
    if let Some(name) = p.opt_str("snapshot") {
        let snap = g
            .snapshots
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| PveError::handler(format!("snapshot '{name}' does not exist")))?;
        for (k, v) in &snap.config {
            out.insert(k.clone(), config_value(kind, k, v));
        }
        out.insert("description".into(), json!(snap.description));
        out.insert("snaptime".into(), json!(snap.snaptime));
        if let Some(parent) = &snap.parent {
            out.insert("parent".into(), json!(parent));
        }
        if snap.vmstate {
            out.insert("vmstate".into(), json!(snap.config.get("vmstate").cloned().unwrap_or_default()));
        }
        if let Some(s) = &snap.snapstate {
            out.insert("snapstate".into(), json!(s));
        }
    } else {
        let view = if p.bool("current") { g.config.clone() } else { with_pending(g) };
        for (k, v) in &view {
            out.insert(k.clone(), config_value(kind, k, v));
        }
    }
    if let Some(v) = out.get_mut("cipassword") {
        *v = json!("**********");
    }
    out.insert("digest".into(), json!(g.digest()));
    Ok(Value::Object(out))
}

/// A config value with the JSON type PVE's config parser gives it: integers and booleans
/// (0/1) as numbers, everything else (qemu's `memory` property string included) as strings.
pub fn config_value(kind: GuestKind, key: &str, v: &str) -> Value {
    const QEMU_INT: &[&str] = &[
        "cores",
        "sockets",
        "vcpus",
        "balloon",
        "shares",
        "cpuunits",
        "migrate_speed",
        "smp",
        "template",
        "onboot",
        "protection",
        "acpi",
        "kvm",
        "tablet",
        "numa",
        "localtime",
        "freeze",
        "autostart",
        "reboot",
        "ciupgrade",
        "keephugepages",
        "tdf",
        "snaptime",
    ];
    const LXC_INT: &[&str] = &[
        "cores",
        "cpuunits",
        "memory",
        "swap",
        "tty",
        "template",
        "onboot",
        "protection",
        "unprivileged",
        "console",
        "debug",
        "snaptime",
    ];
    let ints = if kind == GuestKind::Qemu { QEMU_INT } else { LXC_INT };
    if ints.contains(&key)
        && let Ok(n) = v.parse::<i64>()
    {
        return json!(n);
    }
    if matches!(key, "cpulimit" | "migrate_downtime") {
        if let Ok(n) = v.parse::<i64>() {
            return json!(n);
        }
        if let Ok(n) = v.parse::<f64>() {
            return json!(n);
        }
    }
    json!(v)
}

/// The config with pending values applied and pending deletions removed.
pub fn with_pending(g: &Guest) -> Config {
    let mut c = g.config.clone();
    for (k, v) in &g.pending {
        c.insert(k.clone(), v.clone());
    }
    for d in &g.pending_delete {
        c.remove(d.trim_start_matches('!'));
    }
    c
}

/// `config_with_pending_array`.
fn pending_array(g: &Guest) -> Value {
    let mask = |k: &str, v: &str, pending: bool| {
        if k == "cipassword" {
            if pending { "********** ".to_string() } else { "**********".to_string() }
        } else {
            v.to_string()
        }
    };
    let del = |k: &str| -> Option<u8> {
        g.pending_delete.iter().find_map(|d| match d.strip_prefix('!') {
            Some(x) if x == k => Some(2),
            None if d == k => Some(1),
            _ => None,
        })
    };
    let mut out = Vec::new();
    let mut conf = g.config.clone();
    conf.insert("digest".into(), g.digest());
    for (k, v) in &conf {
        let mut item = json!({"key": k, "value": mask(k, v, false)});
        if let Some(pv) = g.pending.get(k) {
            item["pending"] = json!(mask(k, pv, true));
        }
        if let Some(d) = del(k) {
            item["delete"] = json!(d);
        }
        out.push(item);
    }
    for (k, v) in &g.pending {
        if conf.contains_key(k) {
            continue;
        }
        let mut item = json!({"key": k, "pending": mask(k, v, true)});
        if let Some(d) = del(k) {
            item["delete"] = json!(d);
        }
        out.push(item);
    }
    for d in &g.pending_delete {
        let k = d.trim_start_matches('!');
        if !conf.contains_key(k) && !g.pending.contains_key(k) {
            out.push(json!({"key": k, "delete": if d.starts_with('!') { 2 } else { 1 }}));
        }
    }
    Value::Array(out)
}

/// A checked qemu config change, ready to apply (in the request or in the `qmconfig` task).
pub struct QemuUpdate {
    pub node: String,
    pub vmid: u32,
    pub deletes: Vec<String>,
    pub force: bool,
    pub prepared: PreparedConfig,
    pub summary: String,
}

/// Parameters of the update calls that are not config options.
const NOT_OPTIONS: &[&str] =
    &["node", "vmid", "delete", "digest", "force", "revert", "skiplock", "background_delay", "import-working-storage"];

fn prepare_qemu_update(cx: &Ctx, st: &Cluster, p: &Params) -> PveResult<QemuUpdate> {
    let skip = skiplock(cx, p)?;
    if let Some(keys) = p.opt_str("sshkeys") {
        validate_encoded_sshkeys(keys)?;
    }
    let mut opts = config_options(p, NOT_OPTIONS);
    let delete_list: Vec<String> = p.list("delete").into_iter().map(str::to_string).collect();
    let revert_list: Vec<String> = p.list("revert").into_iter().map(str::to_string).collect();
    if delete_list.is_empty() && revert_list.is_empty() && opts.is_empty() {
        return Err(PveError::handler("no options specified"));
    }
    for opt in &revert_list {
        if !qemu_option_exists(opt) {
            return Err(PveError::param("revert", format!("unknown option '{opt}'")));
        }
        if opts.iter().any(|(k, _)| k == opt) {
            return Err(PveError::param(
                "delete",
                format!("you can't use '-{opt}' and -revert {opt}' at the same time"),
            ));
        }
    }
    let mut deletes = Vec::new();
    for opt in &delete_list {
        let opt = if opt == "cdrom" { "ide2".to_string() } else { opt.clone() };
        if opts.iter().any(|(k, _)| *k == opt) {
            return Err(PveError::param(
                "delete",
                format!("you can't use '-{opt}' and -delete {opt}' at the same time"),
            ));
        }
        if revert_list.contains(&opt) {
            return Err(PveError::param(
                "revert",
                format!("you can't use '-delete {opt}' and -revert {opt}' at the same time"),
            ));
        }
        if !qemu_option_exists(&opt) {
            return Err(PveError::param("delete", format!("unknown option '{opt}'")));
        }
        deletes.push(opt);
    }
    let g = guest(st, p, GuestKind::Qemu)?;
    check_digest(g, p)?;
    if !skip {
        g.check_lock()?;
    }
    for opt in &revert_list {
        match g.config.get(opt) {
            Some(v) => opts.push((opt.clone(), v.clone())),
            None if g.pending.contains_key(opt) => deletes.push(opt.clone()),
            None => {}
        }
    }
    if opts.iter().any(|(k, _)| k == "memory" || k == "balloon") {
        let mem = opts
            .iter()
            .find(|(k, _)| k == "memory")
            .map(|(_, v)| v.clone())
            .or_else(|| g.pending.get("memory").cloned())
            .or_else(|| g.config.get("memory").cloned())
            .and_then(|m| gf::MEMORY.parse(&m).ok()?.get("current")?.parse::<u64>().ok())
            .unwrap_or(512);
        let balloon = opts
            .iter()
            .find(|(k, _)| k == "balloon")
            .map(|(_, v)| v.clone())
            .or_else(|| g.pending.get("balloon").cloned())
            .or_else(|| g.config.get("balloon").cloned())
            .and_then(|b| b.parse::<u64>().ok())
            .unwrap_or(0);
        if balloon > mem {
            return Err(PveError::handler("balloon value too large (must be smaller than assigned memory)"));
        }
    }
    let node = g.node.clone();
    let vmid = g.vmid;
    let prepared = prepare_qemu_options(st, &node, vmid, &opts, None, Some(g))?;
    let mut summary: Vec<String> =
        opts.iter().map(|(k, v)| format!("-{k} {}", if k == "cipassword" { "<hidden>" } else { v.as_str() })).collect();
    if !deletes.is_empty() {
        summary.push(format!("-delete {}", deletes.join(",")));
    }
    Ok(QemuUpdate { node, vmid, deletes, force: p.bool("force"), prepared, summary: summary.join(" ") })
}

fn guest_mut_or(st: &mut Cluster, vmid: u32) -> PveResult<&mut Guest> {
    st.guests.get_mut(&vmid).ok_or_else(|| PveError::handler(format!("VM {vmid} does not exist")))
}

fn add_pending_delete(g: &mut Guest, opt: &str, force: bool) {
    g.pending_delete.retain(|d| d.trim_start_matches('!') != opt);
    g.pending_delete.push(if force { format!("!{opt}") } else { opt.to_string() });
}

fn remove_pending_delete(g: &mut Guest, opt: &str) {
    g.pending_delete.retain(|d| d.trim_start_matches('!') != opt);
}

/// `vmconfig_register_unused_drive`: a replaced disk volume becomes `unused[n]`; a replaced
/// cloud-init drive is freed.
fn register_unused(st: &mut Cluster, vmid: u32, key: &str, value: &str) {
    let Some(g) = st.guests.get(&vmid) else { return };
    let kind = g.kind;
    let node = g.node.clone();
    let Some(volid) = volid_of(kind, key, value) else { return };
    if kind == GuestKind::Qemu && is_cloudinit(&volid) {
        let _ = free_volume(st, &node, &volid);
        return;
    }
    if kind == GuestKind::Qemu && is_cdrom(value) {
        return;
    }
    let Some(g) = st.guests.get_mut(&vmid) else { return };
    let used_elsewhere =
        g.config.iter().any(|(k, v)| k != key && volid_of(kind, k, v).as_deref() == Some(volid.as_str()));
    if !used_elsewhere {
        let k = next_unused_key(g);
        g.config.insert(k, volid);
    }
}

fn apply_qemu_update(st: &mut Cluster, upd: &QemuUpdate, log: &mut TaskLog) -> PveResult<()> {
    let vmid = upd.vmid;
    let node = upd.node.clone();
    for opt in &upd.deletes {
        let g = guest_mut_or(st, vmid)?;
        let Some(val) = g.config.get(opt).or_else(|| g.pending.get(opt)).cloned() else {
            log.line(format!("cannot delete '{opt}' - not set in current configuration!"));
            continue;
        };
        let pending_val = g.pending.remove(opt);
        let protected = g.config.get("protection").is_some_and(|v| v == "1");
        if opt.starts_with("unused") || opt == "vmstate" {
            let volid = volid_of(GuestKind::Qemu, opt, &val).unwrap_or(val.clone());
            if protected {
                let what = if opt == "vmstate" { "vmstate" } else { "unused disk" };
                return Err(PveError::handler(format!("can't remove {what} '{volid}' - protection mode enabled")));
            }
            free_volume(st, &node, &volid).map_err(PveError::handler)?;
            guest_mut_or(st, vmid)?.config.remove(opt);
        } else if is_volume_key(GuestKind::Qemu, opt) {
            if protected {
                return Err(PveError::handler(format!("can't remove drive '{opt}' - protection mode enabled")));
            }
            if let Some(pv) = pending_val {
                register_unused(st, vmid, opt, &pv);
            }
            add_pending_delete(guest_mut_or(st, vmid)?, opt, upd.force);
        } else if opt == "tags" {
            guest_mut_or(st, vmid)?.config.remove(opt);
        } else {
            add_pending_delete(guest_mut_or(st, vmid)?, opt, upd.force);
        }
    }
    let mut created = Vec::new();
    for d in &upd.prepared.disks {
        let g = guest_mut_or(st, vmid)?;
        let template = g.is_template();
        if let Some(old_pending) = g.pending.remove(&d.key) {
            register_unused(st, vmid, &d.key, &old_pending);
        }
        match realize_disk(st, &node, vmid, GuestKind::Qemu, d, template, &mut created) {
            Ok(line) => {
                log.line(format!("{}: successfully created disk '{line}'", d.key));
                let g = guest_mut_or(st, vmid)?;
                g.pending.insert(d.key.clone(), line);
                remove_pending_delete(g, &d.key);
            }
            Err(e) => {
                free_all(st, &node, &created);
                return Err(PveError::handler(e));
            }
        }
    }
    let prepared_values = upd.prepared.values.clone();
    let g = guest_mut_or(st, vmid)?;
    for (k, v) in &prepared_values {
        if k == "cipassword" {
            // Written straight to the config, never pending (hashed unless already a crypt string).
            let old = g.config.get(k).cloned();
            g.config.insert(k.clone(), v.clone());
            record_change(g, k, old.as_deref(), Some(v));
        } else {
            if k == "boot" {
                check_boot_order(g, v, &upd.deletes, &upd.prepared)?;
            }
            g.pending.insert(k.clone(), v.clone());
        }
        remove_pending_delete(g, k);
    }
    // cleanup_pending: drop pending values equal to the current ones.
    let same: Vec<String> =
        g.pending.iter().filter(|(k, v)| g.config.get(*k) == Some(*v)).map(|(k, _)| k.clone()).collect();
    for k in same {
        g.pending.remove(&k);
    }
    g.pending_delete.retain(|d| {
        let k = d.trim_start_matches('!');
        g.config.contains_key(k) || g.pending.contains_key(k)
    });
    if g.state == PowerState::Stopped {
        apply_pending(st, vmid);
    } else {
        hotplug_pending(st, vmid);
    }
    Ok(())
}

fn check_boot_order(g: &Guest, value: &str, deletes: &[String], prepared: &PreparedConfig) -> PveResult<()> {
    let Ok(m) = super::formats::BOOT.parse(value) else { return Ok(()) };
    if let Some(order) = m.get("order") {
        for dev in split_list(order) {
            let exists = g.config.contains_key(dev)
                || g.pending.contains_key(dev)
                || prepared.disks.iter().any(|d| d.key == dev)
                || prepared.values.iter().any(|(k, _)| k == dev);
            if !exists || deletes.iter().any(|d| d == dev) {
                return Err(PveError::handler(format!("invalid bootorder: device '{dev}' does not exist'")));
            }
        }
    }
    Ok(())
}

/// The hot-plug features of a qemu config (`hotplug`, default `network,disk,usb`).
fn hotplug_features(g: &Guest) -> Vec<&'static str> {
    match g.config.get("hotplug").map(String::as_str) {
        Some("0") => vec![],
        None | Some("1") => vec!["network", "disk", "usb"],
        Some(list) => ["network", "disk", "usb", "memory", "cpu", "cloudinit"]
            .into_iter()
            .filter(|f| list.split(',').any(|x| x == *f))
            .collect(),
    }
}

/// Options qemu-server and pve-container apply to a running guest without a restart.
fn hotpluggable(g: &Guest, key: &str) -> bool {
    const FAST: &[&str] = &[
        "description",
        "hookscript",
        "lock",
        "migrate_downtime",
        "migrate_speed",
        "name",
        "onboot",
        "protection",
        "shares",
        "startup",
        "tags",
        "vmstatestorage",
    ];
    if FAST.contains(&key) {
        return true;
    }
    let digits = |p: &str| key.strip_prefix(p).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    match g.kind {
        GuestKind::Qemu => {
            let hp = hotplug_features(g);
            is_cloudinit_option(key)
                || matches!(key, "cpuunits" | "cpulimit" | "balloon")
                || (digits("net") && hp.contains(&"network"))
                || ((digits("scsi") || digits("virtio") || digits("unused")) && hp.contains(&"disk"))
                || ((digits("usb") || key == "tablet") && hp.contains(&"usb"))
                || (key == "vcpus" && hp.contains(&"cpu"))
                || (key == "memory" && hp.contains(&"memory"))
        }
        GuestKind::Lxc => {
            matches!(key, "memory" | "swap" | "cores" | "cpulimit" | "cpuunits")
                || digits("net")
                || digits("mp")
                || digits("unused")
        }
    }
}

/// Applies the pending changes a running guest can take (`vmconfig_hotplug_pending`).
fn hotplug_pending(st: &mut Cluster, vmid: u32) {
    let Some(g) = st.guests.get(&vmid) else { return };
    let deletes: Vec<String> =
        g.pending_delete.iter().filter(|d| hotpluggable(g, d.trim_start_matches('!'))).cloned().collect();
    let values: Vec<(String, String)> =
        g.pending.iter().filter(|(k, _)| hotpluggable(g, k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    for d in deletes {
        apply_delete(st, vmid, &d);
    }
    for (k, v) in values {
        apply_value(st, vmid, &k, &v);
    }
}

fn apply_delete(st: &mut Cluster, vmid: u32, entry: &str) {
    let force = entry.starts_with('!');
    let key = entry.trim_start_matches('!');
    let Some(g) = st.guests.get_mut(&vmid) else { return };
    g.pending_delete.retain(|d| d != entry);
    let Some(old) = g.config.remove(key) else { return };
    let (kind, node) = (g.kind, g.node.clone());
    record_change(g, key, Some(&old), None);
    if is_volume_key(kind, key) {
        if force {
            if let Some(volid) = volid_of(kind, key, &old) {
                let _ = free_volume(st, &node, &volid);
            }
        } else {
            register_unused(st, vmid, key, &old);
        }
    }
}

fn apply_value(st: &mut Cluster, vmid: u32, key: &str, value: &str) {
    let Some(g) = st.guests.get_mut(&vmid) else { return };
    g.pending.remove(key);
    let old = g.config.insert(key.to_string(), value.to_string());
    record_change(g, key, old.as_deref(), Some(value));
    let kind = g.kind;
    if let Some(old) = old
        && is_volume_key(kind, key)
        && volid_of(kind, key, &old) != volid_of(kind, key, value)
    {
        register_unused(st, vmid, key, &old);
    }
}

/// `vmconfig_apply_pending`: writes every pending change (stopped guest, or at start/stop).
pub fn apply_pending(st: &mut Cluster, vmid: u32) {
    let Some(g) = st.guests.get(&vmid) else { return };
    let deletes = g.pending_delete.clone();
    let values: Vec<(String, String)> = g.pending.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for d in deletes {
        apply_delete(st, vmid, &d);
    }
    for (k, v) in values {
        apply_value(st, vmid, &k, &v);
    }
    if let Some(g) = st.guests.get_mut(&vmid) {
        g.pending.clear();
        g.pending_delete.clear();
    }
}

/// LXC's synchronous `PUT .../config` (`update_pct_config` then apply or hot-plug).
fn update_lxc(cx: &Ctx, st: &mut Cluster, p: &Params) -> PveResult<()> {
    const SKIP: &[&str] = &["node", "vmid", "delete", "digest", "revert"];
    let mut opts: Vec<(String, String)> =
        p.iter().filter(|(k, _)| !SKIP.contains(k)).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    opts.sort();
    let delete_list: Vec<String> = p.list("delete").into_iter().map(str::to_string).collect();
    let revert_list: Vec<String> = p.list("revert").into_iter().map(str::to_string).collect();
    if opts.is_empty() && delete_list.is_empty() && revert_list.is_empty() {
        return Err(PveError::handler("no options specified"));
    }
    let g = guest(st, p, GuestKind::Lxc)?;
    g.check_lock()?;
    check_digest(g, p)?;
    for opt in &revert_list {
        if !lxc_option_exists(opt) {
            return Err(PveError::param("revert", format!("unknown option '{opt}'")));
        }
        if opts.iter().any(|(k, _)| k == opt) {
            return Err(PveError::param(
                "revert",
                format!("you can't use '-{opt}' and '-revert {opt}' at the same time"),
            ));
        }
    }
    for opt in &delete_list {
        if !lxc_option_exists(opt) {
            return Err(PveError::param("delete", format!("unknown option '{opt}'")));
        }
        if opts.iter().any(|(k, _)| k == opt) {
            return Err(PveError::param(
                "delete",
                format!("you can't use '-{opt}' and -delete {opt}' at the same time"),
            ));
        }
        if opt == "rootfs" || opt == "unprivileged" || opt == "ostype" || opt == "arch" {
            return Err(PveError::param("delete", format!("unable to delete required option '{opt}'")));
        }
    }
    if opts.iter().any(|(k, _)| k == "unprivileged") {
        return Err(PveError::param("unprivileged", "unable to modify read-only option: 'unprivileged'"));
    }
    let (node, vmid) = (g.node.clone(), g.vmid);
    let mut disks: Vec<PlannedDisk> = Vec::new();
    let mut values = Vec::new();
    for (k, v) in &opts {
        if is_volume_key(GuestKind::Lxc, k) && !k.starts_with("unused") {
            disks.push(plan_disk(st, &node, GuestKind::Lxc, k, v, None)?);
        } else if let Some(idx) = k.strip_prefix("net").and_then(|n| n.parse::<u32>().ok()) {
            let keep = g.config.get(k).and_then(|old| gf::LXC_NET.parse(old).ok()?.get("hwaddr").map(str::to_string));
            values.push((k.clone(), lxc_nic(v, st.seed, vmid, idx, keep.as_deref())?));
        } else {
            values.push((k.clone(), v.clone()));
        }
    }
    let mut deletes = delete_list;
    for opt in &revert_list {
        match g.config.get(opt) {
            Some(v) => values.push((opt.clone(), v.clone())),
            None => deletes.push(opt.clone()),
        }
    }
    let protected = g.config.get("protection").is_some_and(|v| v == "1");
    for opt in &deletes {
        if protected && (opt.starts_with("mp") || opt.starts_with("unused")) {
            return Err(PveError::handler(format!("can't remove CT {vmid} drive '{opt}' - protection mode enabled")));
        }
    }
    for opt in &deletes {
        let Some(g) = st.guests.get_mut(&vmid) else { break };
        g.pending.remove(opt);
        if opt.starts_with("unused") {
            if let Some(v) = g.config.remove(opt)
                && let Some(volid) = volid_of(GuestKind::Lxc, opt, &v)
            {
                free_volume(st, &node, &volid).map_err(PveError::handler)?;
            }
        } else if g.config.contains_key(opt) {
            add_pending_delete(g, opt, false);
        }
    }
    let mut created = Vec::new();
    for d in &disks {
        match realize_disk(st, &node, vmid, GuestKind::Lxc, d, false, &mut created) {
            Ok(line) => {
                if let Some(g) = st.guests.get_mut(&vmid) {
                    g.pending.insert(d.key.clone(), line);
                }
            }
            Err(e) => {
                free_all(st, &node, &created);
                return Err(PveError::handler(e));
            }
        }
    }
    if let Some(g) = st.guests.get_mut(&vmid) {
        for (k, v) in values {
            remove_pending_delete(g, &k);
            g.pending.insert(k, v);
        }
        let same: Vec<String> =
            g.pending.iter().filter(|(k, v)| g.config.get(*k) == Some(*v)).map(|(k, _)| k.clone()).collect();
        for k in same {
            g.pending.remove(&k);
        }
    }
    let running = st.guests.get(&vmid).is_some_and(|g| g.state != PowerState::Stopped);
    if running {
        hotplug_pending(st, vmid)
    } else {
        apply_pending(st, vmid)
    }
    let _ = cx;
    Ok(())
}

/// An LXC NIC line with its `hwaddr` (given, kept, or generated from the seed).
pub fn lxc_nic(value: &str, seed_v: u64, vmid: u32, idx: u32, keep: Option<&str>) -> PveResult<String> {
    let mut m = gf::LXC_NET.parse(value).map_err(|e| PveError::param(format!("net{idx}"), e.trim_end().to_string()))?;
    if !m.has("hwaddr") {
        m.set("hwaddr", keep.map(str::to_string).unwrap_or_else(|| seed::guest_mac(seed_v, vmid, idx)));
    }
    if !m.has("type") {
        m.set("type", "veth");
    }
    Ok(gf::LXC_NET.print(&m))
}
