//! `POST /nodes/{node}/qemu`: create a VM (task `qmcreate`) or, with `archive`, restore one
//! from a vzdump backup (task `qmrestore`, see `restore`). Checks that PVE makes before the
//! worker forks are answered synchronously; disk allocation (and a full storage) fails the
//! task, which then removes the half-created VM.

use serde_json::{Value, json};

use crate::error::{PveError, PveResult};
use crate::model::{Cluster, Config, Guest, GuestKind, seed};
use crate::params::Params;
use crate::params::guest_formats as gf;
use crate::router::Routes;
use crate::sim::Ctx;
use crate::tasks::TaskLog;
use crate::util;

use super::cloudinit::{hash_password, validate_encoded_sshkeys};
use super::common::{is_volume_key, volid_of};
use super::disks::{PlannedDisk, free_all, plan_disk, realize_disk};
use super::qemu_params::{QemuParamSet, qemu_config_params};

/// Parameters of the create (and restore) call that are not config options.
pub(super) const NOT_CONFIG: &[&str] = &[
    "node",
    "vmid",
    "archive",
    "bwlimit",
    "force",
    "import-working-storage",
    "live-restore",
    "pool",
    "start",
    "storage",
    "unique",
];

/// Registers `POST /nodes/{node}/qemu`.
pub fn register(r: &mut Routes) {
    r.post("/nodes/{node}/qemu", qemu_config_params(QemuParamSet::Create), create_vm);
}

/// The config options of a request (`cdrom` resolved to `ide2`, like `$resolve_cdrom_alias`).
pub fn config_options(p: &Params, skip: &[&str]) -> Vec<(String, String)> {
    let mut opts: Vec<(String, String)> =
        p.iter().filter(|(k, _)| !skip.contains(k)).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    if let Some(i) = opts.iter().position(|(k, _)| k == "cdrom") {
        let (_, mut v) = opts.remove(i);
        if !v.contains("media=") {
            v.push_str(",media=cdrom");
        }
        opts.retain(|(k, _)| k != "ide2");
        opts.push(("ide2".into(), v));
    }
    opts.sort();
    opts
}

/// A NIC line with its MAC: the given one, else `keep` (the NIC's current MAC), else a new
/// one from the seed (Proxmox OUI `BC:24:11`).
pub fn nic_with_mac(value: &str, seed_v: u64, vmid: u32, idx: u32, keep: Option<&str>) -> PveResult<String> {
    let mut m =
        gf::QEMU_NET.parse(value).map_err(|e| PveError::param(format!("net{idx}"), e.trim_end().to_string()))?;
    if !m.has("macaddr") {
        let mac = keep.map(str::to_string).unwrap_or_else(|| seed::guest_mac(seed_v, vmid, idx));
        m.set("macaddr", mac);
    }
    Ok(gf::QEMU_NET.print(&m))
}

/// The MAC of a stored NIC line.
pub fn nic_mac(value: &str) -> Option<String> {
    gf::QEMU_NET.parse(value).ok()?.get("macaddr").map(str::to_string)
}

/// Normalises one non-volume option the way qemu-server stores it.
pub fn normalise_option(key: &str, value: &str, salt: u64) -> String {
    match key {
        "memory" => gf::MEMORY.parse(value).map(|m| gf::MEMORY.print(&m)).unwrap_or_else(|_| value.to_string()),
        "cipassword" => hash_password(value, salt),
        "tags" => {
            let mut tags: Vec<&str> = crate::params::split_list(value);
            tags.sort_unstable();
            tags.dedup();
            tags.join(";")
        }
        _ => value.to_string(),
    }
}

/// `get_default_bootdevices`: first disk, first CD-ROM (not cloud-init), first NIC.
pub fn default_boot(config: &Config) -> Option<String> {
    let mut devs = Vec::new();
    let order = super::qemu_params::drive_slots();
    let is_ci = |k: &str, v: &str| volid_of(GuestKind::Qemu, k, v).is_some_and(|id| super::common::is_cloudinit(&id));
    let first = |cdrom: bool| {
        order.iter().find(|k| {
            config.get(k.as_str()).is_some_and(|v| {
                !k.starts_with("efidisk")
                    && !k.starts_with("tpmstate")
                    && super::common::is_cdrom(v) == cdrom
                    && !is_ci(k, v)
            })
        })
    };
    if let Some(d) = first(false) {
        devs.push(d.clone());
    }
    if let Some(d) = first(true) {
        devs.push(d.clone());
    }
    if let Some((k, _)) = config.iter().find(|(k, _)| k.strip_prefix("net").is_some_and(|n| n.parse::<u32>().is_ok())) {
        devs.push(k.clone());
    }
    (!devs.is_empty()).then(|| format!("order={}", devs.join(";")))
}

/// Sync part shared by create and config updates: plans the volume lines and normalises the
/// other options of a qemu config change.
pub struct PreparedConfig {
    pub disks: Vec<PlannedDisk>,
    pub values: Vec<(String, String)>,
}

/// Checks and normalises qemu config options for `vmid` on `node`.
pub fn prepare_qemu_options(
    st: &Cluster,
    node: &str,
    vmid: u32,
    opts: &[(String, String)],
    default_storage: Option<&str>,
    existing: Option<&Guest>,
) -> PveResult<PreparedConfig> {
    let mut disks = Vec::new();
    let mut values = Vec::new();
    let salt = util::hash_parts(st.seed, &[b"salt", &vmid.to_be_bytes(), &util::now_ms().to_be_bytes()]);
    for (k, v) in opts {
        if is_volume_key(GuestKind::Qemu, k) && !k.starts_with("unused") {
            disks.push(plan_disk(st, node, GuestKind::Qemu, k, v, default_storage)?);
        } else if let Some(idx) = k.strip_prefix("net").and_then(|n| n.parse::<u32>().ok()) {
            let keep = existing.and_then(|g| g.pending.get(k).or_else(|| g.config.get(k))).and_then(|old| nic_mac(old));
            values.push((k.clone(), nic_with_mac(v, st.seed, vmid, idx, keep.as_deref())?));
        } else if k == "vmgenid" && v == "1" {
            values.push((k.clone(), seed::uuid(st.seed, &[b"vmgenid", &vmid.to_be_bytes(), &salt.to_be_bytes()])));
        } else {
            values.push((k.clone(), normalise_option(k, v, salt)));
        }
    }
    Ok(PreparedConfig { disks, values })
}

fn create_vm(cx: &Ctx, p: &Params) -> PveResult<Value> {
    let node = p.node()?.to_string();
    let vmid = p.vmid()?;
    if let Some(keys) = p.opt_str("sshkeys") {
        validate_encoded_sshkeys(keys)?;
    }
    let mut st = cx.write();
    if let Some(pool) = p.opt_str("pool")
        && !st.pools.contains_key(pool)
    {
        return Err(PveError::handler(format!("pool '{pool}' does not exist")));
    }
    if let Some(s) = p.opt_str("storage") {
        st.storage(&node, s)?;
    }
    if p.has("archive") {
        return super::restore::restore_qemu(cx, &mut st, p);
    }
    let opts = config_options(p, NOT_CONFIG);
    let prepared = prepare_qemu_options(&st, &node, vmid, &opts, p.opt_str("storage"), None)?;
    let emsg = format!("unable to create VM {vmid} -");
    st.check_vmid_unused(vmid).map_err(|e| PveError::handler(format!("{emsg} {e}")))?;
    let mut placeholder = Config::new();
    placeholder.insert("lock".into(), "create".into());
    st.guests.insert(vmid, Guest::new(vmid, GuestKind::Qemu, &node, placeholder));

    let pool = p.opt_str("pool").map(str::to_string);
    let start = p.bool("start");
    let boot_ms = cx.sim.boot_ms();
    let spec = cx.task(&node, "qmcreate", vmid).lock(vmid, "create");
    let upid = cx.spawn_task(&mut st, spec, move |st: &mut Cluster, log: &mut TaskLog| {
        match build_new_vm(st, &node, vmid, &prepared, log) {
            Ok(()) => {}
            Err((created, err)) => {
                free_all(st, &node, &created);
                st.guests.remove(&vmid);
                return Err(format!("{emsg} {err}"));
            }
        }
        if let Some(pool) = pool {
            if let Some(pl) = st.pools.get_mut(&pool) {
                pl.vms.insert(vmid);
            }
            if let Some(g) = st.guests.get_mut(&vmid) {
                g.pool = Some(pool);
            }
        }
        if start {
            log.line("Execute autostart");
            super::power::start_now(st, vmid, boot_ms, log);
        }
        Ok(())
    })?;
    Ok(json!(upid))
}

/// The worker of `qmcreate`: allocates the disks and writes the config.
fn build_new_vm(
    st: &mut Cluster,
    node: &str,
    vmid: u32,
    prepared: &PreparedConfig,
    log: &mut TaskLog,
) -> Result<(), (Vec<String>, String)> {
    let mut created = Vec::new();
    let mut config = Config::new();
    for (k, v) in &prepared.values {
        config.insert(k.clone(), v.clone());
    }
    let template = config.get("template").is_some_and(|t| t == "1");
    for d in &prepared.disks {
        match realize_disk(st, node, vmid, GuestKind::Qemu, d, template, &mut created) {
            Ok(line) => {
                log.line(format!("{}: successfully created disk '{line}'", d.key));
                config.insert(d.key.clone(), line);
            }
            Err(e) => return Err((created, e)),
        }
    }
    let seed_v = st.seed;
    let stamp = util::now_ms().to_be_bytes();
    let id = vmid.to_be_bytes();
    config.insert("meta".into(), format!("creation-qemu=9.2.0,ctime={}", util::now()));
    if !config.contains_key("boot")
        && let Some(b) = default_boot(&config)
    {
        config.insert("boot".into(), b);
    }
    config.entry("smbios1".into()).or_insert_with(|| format!("uuid={}", seed::uuid(seed_v, &[b"smbios", &id, &stamp])));
    if config.get("vmgenid").is_none_or(|v| v == "1") && config.get("arch").is_none_or(|a| a != "aarch64") {
        config.insert("vmgenid".into(), seed::uuid(seed_v, &[b"vmgenid", &id, &stamp]));
    }
    match st.guests.get_mut(&vmid) {
        Some(g) => {
            config.insert("lock".into(), "create".into());
            g.config = config;
            Ok(())
        }
        None => Err((created, "VM config vanished during create".into())),
    }
}
