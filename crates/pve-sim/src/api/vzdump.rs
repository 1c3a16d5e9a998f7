//! Backups: `POST /nodes/{node}/vzdump` (task `vzdump`, guest lock `backup`, archive volumes on
//! the target storage with capacity accounting), `GET .../vzdump/defaults` and
//! `GET .../vzdump/extractconfig`.
//!
//! One vzdump at a time per node, as PVE's `getlock` does with a `flock` on
//! `/var/run/vzdump.lock`: a vzdump started while another runs on the node logs
//! `INFO: trying to get global lock - waiting...` and waits (up to `lockwait` minutes, default
//! 180, scaled like task durations; with time scale 0 until the holder ends), then logs
//! `INFO: got global lock` and starts. Only then does the backup job start (`starting new
//! backup job`), are its guests checked and locked (`lock: backup`; a waiting job's guests
//! stay unlocked) and does its duration run. When the lock cannot be had the worker exits
//! without a `TASK ...` line, so the status is `unexpected status` and the reason is the last
//! log line: `ERROR: can't acquire lock '/var/run/vzdump.lock' (wait = 0)` (`lockwait=0`),
//! `... - got timeout`, or `... - interrupted by signal` (task stopped while waiting).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::error::{PveError, PveResult};
use crate::model::{BackupMeta, Cluster, GuestKind, PowerState};
use crate::params::{P, Params, f, split_list};
use crate::router::Routes;
use crate::sim::Ctx;
use crate::tasks::TaskLog;
use crate::util::MIB;

/// Registers the routes.
pub fn register(r: &mut Routes) {
    r.post("/nodes/{node}/vzdump", params(), vzdump);
    r.get("/nodes/{node}/vzdump/defaults", vec![P::node(), P::storage().opt()], |cx, p| {
        let st = cx.read();
        let node = p.node()?;
        st.node(node)?;
        let mut out = json!({"mode": "snapshot", "compress": "0", "prune-backups": "keep-all=1", "node": node});
        if let Some(s) = p.opt_str("storage") {
            st.storage(node, s)?;
            out["storage"] = json!(s);
        }
        Ok(out)
    });
    r.get("/nodes/{node}/vzdump/extractconfig", vec![P::node(), P::str("volume")], |cx, p| {
        let st = cx.read();
        let volid = p.str("volume")?;
        let v =
            st.volume(p.node()?, volid).ok_or_else(|| PveError::handler(format!("volume '{volid}' does not exist")))?;
        let meta =
            v.backup.as_ref().ok_or_else(|| PveError::handler(format!("cannot extract config from '{volid}'")))?;
        let mut text = String::new();
        for (k, val) in &meta.config {
            text.push_str(&format!("{k}: {val}\n"));
        }
        if meta.kind == GuestKind::Qemu {
            for (key, _) in &meta.disks {
                text.push_str(&format!("#qmdump#map:{key}:drive-{key}:local-lvm:raw:\n"));
            }
        }
        Ok(json!(text))
    });
}

/// The vzdump parameter list of PVE 8.4.
fn params() -> Vec<P> {
    vec![
        P::node(),
        P::bool("all").opt(),
        P::int("bwlimit").opt().min(0),
        P::str("compress").opt().en(&["0", "1", "gzip", "lzo", "zstd"]),
        P::str("dumpdir").opt(),
        P::str("exclude").opt().fmt(f::VMID_LIST),
        P::array("exclude-path").opt(),
        P::str("fleecing").opt(),
        P::int("ionice").opt().range(0, 8),
        P::str("job-id").opt().max_len(50).pattern(r"\S+"),
        P::int("lockwait").opt().min(0),
        P::str("mailnotification").opt().en(&["always", "failure"]),
        P::str("mailto").opt().fmt(f::EMAIL_OR_USERNAME_LIST),
        P::int("maxfiles").opt().min(1),
        P::str("mode").opt().en(&["snapshot", "suspend", "stop"]),
        P::str("notes-template").opt().max_len(1024).requires("storage"),
        P::str("notification-mode").opt().en(&["auto", "legacy-sendmail", "notification-system"]),
        P::str("notification-policy").opt().en(&["always", "failure", "never"]),
        P::str("notification-target").opt().fmt(f::CONFIGID),
        P::str("pbs-change-detection-mode").opt().en(&["legacy", "data", "metadata"]),
        P::str("performance").opt(),
        P::int("pigz").opt(),
        P::str("pool").opt(),
        P::bool("protected").opt().requires("storage"),
        P::str("prune-backups").opt(),
        P::bool("quiet").opt(),
        P::bool("remove").opt(),
        P::str("script").opt(),
        P::bool("stdexcludes").opt(),
        P::bool("stdout").opt(),
        P::bool("stop").opt(),
        P::int("stopwait").opt().min(0),
        P::storage().opt(),
        P::str("tmpdir").opt(),
        P::str("vmid").opt().fmt(f::VMID_LIST),
        P::int("zstd").opt(),
    ]
}

/// vzdump's node-wide lock file (pve-manager `PVE/VZDump.pm`).
const LOCK_FILE: &str = "/var/run/vzdump.lock";

/// vzdump's default `lockwait` (minutes).
const DEFAULT_LOCKWAIT: u64 = 180;

/// What one guest's backup needs.
struct Job {
    vmid: u32,
    kind: GuestKind,
    name: String,
    archive: String,
    size: u64,
    meta: BackupMeta,
    notes: Option<String>,
}

fn archive_ext(kind: GuestKind, compress: &str) -> String {
    let base = if kind == GuestKind::Qemu { "vma" } else { "tar" };
    match compress {
        "zstd" => format!("{base}.zst"),
        "gzip" | "1" => format!("{base}.gz"),
        "lzo" => format!("{base}.lzo"),
        _ => base.to_string(),
    }
}

fn vzdump(cx: &Ctx, p: &Params) -> PveResult<Value> {
    let node = p.node()?.to_string();
    let storage = p.opt_str("storage").unwrap_or("local").to_string();
    let compress = p.opt_str("compress").unwrap_or("0").to_string();
    let mode = p.opt_str("mode").unwrap_or("snapshot").to_string();
    let all = p.bool("all");
    let mut st = cx.write();
    let s = st.storage(&node, &storage)?;
    if !s.supports("backup") {
        return Err(PveError::handler(format!("storage '{storage}' does not support backups")));
    }
    let requested: Vec<u32> =
        split_list(p.opt_str("vmid").unwrap_or("")).into_iter().filter_map(|v| v.parse().ok()).collect();
    let pool_members: Vec<u32> = match p.opt_str("pool") {
        Some(pool) => st.pools.get(pool).map(|p| p.vms.iter().copied().collect()).unwrap_or_default(),
        None => Vec::new(),
    };
    if !all && requested.is_empty() && p.opt_str("pool").is_none() {
        return Err(PveError::handler("you need to specify either 'vmid', 'all' or 'pool'"));
    }
    let excluded: Vec<u32> =
        split_list(p.opt_str("exclude").unwrap_or("")).into_iter().filter_map(|v| v.parse().ok()).collect();
    let mut wanted: Vec<u32> = if all {
        st.guests.values().filter(|g| g.node == node).map(|g| g.vmid).collect()
    } else {
        requested.iter().chain(&pool_members).copied().collect()
    };
    wanted.sort_unstable();
    wanted.dedup();
    wanted.retain(|v| !excluded.contains(v));
    let (local, external): (Vec<u32>, Vec<u32>) =
        wanted.iter().partition(|v| st.guests.get(v).is_none_or(|g| g.node == node));

    let id = if wanted.len() == 1 { wanted[0].to_string() } else { String::new() };
    let mut spec = cx.task(&node, "vzdump", id).log(format!(
        "INFO: starting new backup job: vzdump {} --storage {storage} --mode {mode} --compress {compress} --node {node}",
        if all { "--all 1".to_string() } else { wanted.iter().map(u32::to_string).collect::<Vec<_>>().join(" ") }
    ));
    if !external.is_empty() {
        spec = spec.log(format!(
            "INFO: skip external VMs: {}",
            external.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
        ));
    }
    // The guests are checked, locked and read when the job starts, which is later than now
    // when another vzdump holds the node's lock; the body gets what the start prepared.
    let prepared: Arc<parking_lot::Mutex<Option<Prepared>>> = Arc::default();
    let template = p.opt_str("notes-template").map(str::to_string);
    let lockwait = p.opt_u64("lockwait").unwrap_or(DEFAULT_LOCKWAIT);
    let spec = spec.global_lock(cx.sim.global_lock(&node, LOCK_FILE, lockwait)).on_start({
        let (node, compress, prepared) = (node.clone(), compress.clone(), prepared.clone());
        move |st: &mut Cluster, log: &mut TaskLog| {
            let job = prepare(st, &node, &local, &compress, template.as_deref(), log);
            let locks = job.jobs.iter().map(|j| (j.vmid, "backup".to_string())).collect();
            *prepared.lock() = Some(job);
            locks
        }
    });
    let protect = p.bool("protected");
    let path = super::storage::volume_path(s, &format!("{storage}:backup/x")).trim_end_matches("/x").to_string();
    let upid = cx.spawn_task(&mut st, spec, move |st: &mut Cluster, log| {
        let Prepared { jobs, failed } = prepared.lock().take().unwrap_or_default();
        let mut errors = failed;
        for j in jobs {
            let label = if j.kind == GuestKind::Qemu { "qemu" } else { "lxc" };
            log.line(format!("INFO: Starting Backup of VM {} ({label})", j.vmid));
            log.line(format!("INFO: Backup started at {}", chrono::Local::now().format("%F %T")));
            let state = st.guests.get(&j.vmid).map(|g| g.state);
            log.line(format!(
                "INFO: status = {}",
                if state == Some(PowerState::Stopped) { "stopped" } else { "running" }
            ));
            log.line(format!("INFO: VM Name: {}", j.name));
            let file = j.archive.trim_start_matches("backup/");
            log.line(format!("INFO: creating vzdump archive '{path}/{file}'"));
            let Ok(s) = st.storage_mut(&node, &storage) else {
                errors = true;
                continue;
            };
            match s.add_volume(
                &j.archive,
                "backup",
                &archive_ext(j.kind, &compress),
                j.size,
                j.size,
                Some(j.vmid),
                None,
            ) {
                Ok(volid) => {
                    if let Some(v) = s.volumes.get_mut(&volid) {
                        v.backup = Some(j.meta);
                        v.notes = j.notes;
                        v.protected = protect;
                    }
                    log.line(format!("INFO: archive file size: {}", human(j.size)));
                    log.line(format!("INFO: Finished Backup of VM {} (00:00:10)", j.vmid));
                }
                Err(e) => {
                    log.line(format!("ERROR: Backup of VM {} failed - vma_queue_write: write error - {e}", j.vmid));
                    errors = true;
                }
            }
        }
        if errors {
            return Err("job errors".into());
        }
        log.line("INFO: Backup job finished successfully");
        Ok(())
    })?;
    Ok(json!(upid))
}

/// The guests of a backup job as it starts: the backups to make, and whether some guest failed.
#[derive(Default)]
struct Prepared {
    jobs: Vec<Job>,
    failed: bool,
}

/// Checks and reads the job's guests of `node` when it starts, logging each that fails
/// (missing or locked).
fn prepare(
    st: &Cluster,
    node: &str,
    local: &[u32],
    compress: &str,
    template: Option<&str>,
    log: &mut TaskLog,
) -> Prepared {
    let now = chrono::Local::now();
    let mut out = Prepared::default();
    for &vmid in local {
        let Some(g) = st.guests.get(&vmid) else {
            log.line(format!(
                "ERROR: Backup of VM {vmid} failed - unable to find configuration file for VM {vmid} on node '{node}'"
            ));
            out.failed = true;
            continue;
        };
        if let Err(e) = g.check_lock() {
            log.line(format!("ERROR: Backup of VM {vmid} failed - {e}"));
            out.failed = true;
            continue;
        }
        let disks = g.disk_sizes();
        let used: u64 = g
            .config
            .iter()
            .filter(|(k, _)| disks.iter().any(|(dk, _)| dk == *k))
            .filter_map(|(_, v)| st.volume(node, v.split(',').next().unwrap_or("")))
            .map(|v| v.used)
            .sum();
        let ratio = if compress == "0" { 1.0 } else { 0.45 };
        let size = (used as f64 * ratio) as u64 + MIB;
        let mut config = g.config.clone();
        config.remove("lock");
        let name = g.name();
        let notes = template.map(|t| {
            t.replace("{{guestname}}", &name)
                .replace("{{vmid}}", &vmid.to_string())
                .replace("{{node}}", node)
                .replace("{{cluster}}", &st.cluster_name)
        });
        out.jobs.push(Job {
            vmid,
            kind: g.kind,
            archive: format!("backup/{}", archive_name(g.kind, vmid, now, compress)),
            size,
            meta: BackupMeta { kind: g.kind, vmid, config, disks },
            name,
            notes,
        });
    }
    out
}

fn human(bytes: u64) -> String {
    let gib = bytes as f64 / (1024.0 * 1024.0 * 1024.0);
    if gib >= 1.0 { format!("{gib:.2}GB") } else { format!("{:.0}MB", bytes as f64 / MIB as f64) }
}

/// `vzdump-<qemu|lxc>-<vmid>-YYYY_MM_DD-HH_MM_SS.<vma|tar>[.zst|.gz|.lzo]` (local time).
pub fn archive_name(kind: GuestKind, vmid: u32, when: chrono::DateTime<chrono::Local>, compress: &str) -> String {
    format!("vzdump-{}-{vmid}-{}.{}", kind.as_str(), when.format("%Y_%m_%d-%H_%M_%S"), archive_ext(kind, compress))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_follow_pve() {
        let when = chrono::TimeZone::with_ymd_and_hms(&chrono::Local, 2025, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(archive_name(GuestKind::Qemu, 100, when, "zstd"), "vzdump-qemu-100-2025_01_02-03_04_05.vma.zst");
        assert_eq!(archive_name(GuestKind::Lxc, 200, when, "0"), "vzdump-lxc-200-2025_01_02-03_04_05.tar");
        assert_eq!(archive_name(GuestKind::Lxc, 200, when, "gzip"), "vzdump-lxc-200-2025_01_02-03_04_05.tar.gz");
    }
}
