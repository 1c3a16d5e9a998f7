//! Backup retention: `GET /nodes/{node}/storage/{storage}/prunebackups` (the dry run) and
//! `DELETE` of the same path (task `prunebackups`, removes what the dry run marks `remove`), with
//! PVE's rules (pve-storage `PVE::Storage::prune_mark_backup_group`):
//!
//! * Backups are grouped by guest type and VMID; only archives named the standard way
//!   (`vzdump-<type>-<vmid>-<date>-<time>.<ext>`) take part.
//! * Protected backups are marked `protected`: never removed, and counted by no option.
//! * `keep-all=1`, or no positive option, keeps everything.
//! * Otherwise, newest first, each option in turn (`keep-last`, `keep-hourly`, `keep-daily`,
//!   `keep-weekly`, `keep-monthly`, `keep-yearly`) keeps the newest backup of each of its next N
//!   periods (hour, day, ISO week, month, year in the node's local time; `keep-last`: each
//!   backup) that no earlier option kept a backup in; the older backups of a period it keeps are
//!   marked `remove`. What no option kept is removed.
//!
//! Without `prune-backups` the storage's own retention applies; the simulator's storages have
//! none, which keeps everything (as PVE does).

use std::collections::{HashMap, HashSet};

use chrono::{Datelike, Local, TimeZone, Timelike};
use serde_json::{Value, json};

use crate::error::{PveError, PveResult};
use crate::model::Cluster;
use crate::params::{P, Params};
use crate::router::Routes;
use crate::sim::Ctx;

/// The retention options (`prune-backups`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    pub keep_all: bool,
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
}

impl Retention {
    /// Parses `keep-last=3,keep-daily=7,...`.
    pub fn parse(text: &str) -> Result<Retention, String> {
        let mut r = Retention::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| format!("invalid format - {part}"))?;
            let n: u32 = value.trim().parse().map_err(|_| format!("invalid format - value '{value}' for {key}"))?;
            match key.trim() {
                "keep-all" if n <= 1 => r.keep_all = n == 1,
                "keep-last" => r.last = n,
                "keep-hourly" => r.hourly = n,
                "keep-daily" => r.daily = n,
                "keep-weekly" => r.weekly = n,
                "keep-monthly" => r.monthly = n,
                "keep-yearly" => r.yearly = n,
                other => return Err(format!("invalid format - unknown option '{other}'")),
            }
        }
        if r.keep_all && (r.last + r.hourly + r.daily + r.weekly + r.monthly + r.yearly) > 0 {
            return Err("keep-all cannot be set together with other options".into());
        }
        Ok(r)
    }
}

/// What the dry run says of a backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Keep,
    Remove,
    Protected,
}

impl Mark {
    fn as_str(self) -> &'static str {
        match self {
            Mark::Keep => "keep",
            Mark::Remove => "remove",
            Mark::Protected => "protected",
        }
    }
}

/// The marks of one group's backups, given as `(ctime, protected)` in any order; the answer is
/// in the same order.
pub fn mark_group(backups: &[(i64, bool)], keep: &Retention) -> Vec<Mark> {
    let mut marks: Vec<Option<Mark>> = backups.iter().map(|(_, p)| p.then_some(Mark::Protected)).collect();
    let counts = [keep.last, keep.hourly, keep.daily, keep.weekly, keep.monthly, keep.yearly];
    if keep.keep_all || counts.iter().all(|n| *n == 0) {
        return marks.into_iter().map(|m| m.unwrap_or(Mark::Keep)).collect();
    }
    // Newest first.
    let mut order: Vec<usize> = (0..backups.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(backups[*i].0));
    let local =
        |ctime: i64| Local.timestamp_opt(ctime, 0).single().unwrap_or_else(|| Local.timestamp_opt(0, 0).unwrap());
    let ids: [&dyn Fn(i64) -> String; 6] = [
        &|t| t.to_string(),
        &|t| {
            let d = local(t);
            format!("{}/{}/{}/{}", d.year(), d.month(), d.day(), d.hour())
        },
        &|t| {
            let d = local(t);
            format!("{}/{}/{}", d.year(), d.month(), d.day())
        },
        &|t| {
            let w = local(t).iso_week();
            format!("{}/{}", w.year(), w.week())
        },
        &|t| {
            let d = local(t);
            format!("{}/{}", d.year(), d.month())
        },
        &|t| local(t).year().to_string(),
    ];
    for (count, id) in counts.iter().zip(ids) {
        if *count == 0 {
            continue;
        }
        let already: HashSet<String> =
            order.iter().filter(|i| marks[**i] == Some(Mark::Keep)).map(|i| id(backups[*i].0)).collect();
        let mut newly: HashSet<String> = HashSet::new();
        for &i in &order {
            let period = id(backups[i].0);
            if marks[i].is_some() || already.contains(&period) {
                continue;
            }
            if newly.contains(&period) {
                marks[i] = Some(Mark::Remove);
            } else {
                if newly.len() >= *count as usize {
                    break;
                }
                newly.insert(period);
                marks[i] = Some(Mark::Keep);
            }
        }
    }
    marks.into_iter().map(|m| m.unwrap_or(Mark::Remove)).collect()
}

/// `vzdump-<type>-<vmid>-...`: the group of a standard archive name.
fn group_of(volid: &str) -> Option<(&str, u32)> {
    let name = volid.rsplit('/').next()?;
    let rest = name.strip_prefix("vzdump-")?;
    let (kind, rest) = rest.split_once('-')?;
    let (vmid, _) = rest.split_once('-')?;
    matches!(kind, "qemu" | "lxc").then_some(())?;
    Some((kind, vmid.parse().ok()?))
}

/// A backup with its mark, as the dry run lists it.
struct Marked {
    volid: String,
    ctime: i64,
    mark: Mark,
    kind: String,
    vmid: u32,
}

/// The backups of one group: `(volid, ctime, protected)`.
type Group = Vec<(String, i64, bool)>;

/// The dry run: every standard backup of the storage (of `vmid`, of `kind`) with its mark.
fn dry_run(st: &Cluster, node: &str, storage: &str, p: &Params) -> PveResult<Vec<Marked>> {
    let keep = match p.opt_str("prune-backups") {
        Some(text) => Retention::parse(text).map_err(|e| PveError::param("prune-backups", e))?,
        None => Retention { keep_all: true, ..Retention::default() },
    };
    let vmid = p.opt_u32("vmid");
    let kind = p.opt_str("type");
    let s = st.storage(node, storage)?;
    let mut groups: HashMap<(String, u32), Group> = HashMap::new();
    for v in s.volumes.values().filter(|v| v.content == "backup") {
        let Some((k, id)) = group_of(&v.volid) else { continue };
        if vmid.is_some_and(|want| want != id) || kind.is_some_and(|want| want != k) {
            continue;
        }
        groups.entry((k.to_owned(), id)).or_default().push((v.volid.clone(), v.ctime, v.protected));
    }
    let mut out = Vec::new();
    for ((k, id), list) in groups {
        let marks = mark_group(&list.iter().map(|(_, c, p)| (*c, *p)).collect::<Vec<_>>(), &keep);
        for ((volid, ctime, _), mark) in list.into_iter().zip(marks) {
            out.push(Marked { volid, ctime, mark, kind: k.clone(), vmid: id });
        }
    }
    out.sort_by(|a, b| b.ctime.cmp(&a.ctime).then(a.volid.cmp(&b.volid)));
    Ok(out)
}

fn params() -> Vec<P> {
    vec![
        P::node(),
        P::storage(),
        P::str("prune-backups").opt(),
        P::str("type").opt().en(&["qemu", "lxc"]),
        P::vmid().opt(),
    ]
}

/// Registers the routes.
pub fn register(r: &mut Routes) {
    r.get("/nodes/{node}/storage/{storage}/prunebackups", params(), |cx, p| {
        let st = cx.read();
        let list = dry_run(&st, p.node()?, p.str("storage")?, p)?;
        let items: Vec<Value> = list
            .into_iter()
            .map(|m| json!({"volid": m.volid, "ctime": m.ctime, "mark": m.mark.as_str(), "type": m.kind, "vmid": m.vmid}))
            .collect();
        Ok(json!(items))
    });
    r.delete("/nodes/{node}/storage/{storage}/prunebackups", params(), prune);
}

fn prune(cx: &Ctx, p: &Params) -> PveResult<Value> {
    let node = p.node()?.to_string();
    let storage = p.str("storage")?.to_string();
    let mut st = cx.write();
    let doomed: Vec<String> =
        dry_run(&st, &node, &storage, p)?.into_iter().filter(|m| m.mark == Mark::Remove).map(|m| m.volid).collect();
    let id = match p.opt_u32("vmid") {
        Some(vmid) => format!("{vmid}@{storage}"),
        None => storage.clone(),
    };
    let spec = cx.task(&node, "prunebackups", id);
    let upid = cx.spawn_task(&mut st, spec, move |st: &mut Cluster, log| {
        for volid in &doomed {
            // Protected meanwhile, or gone: left alone.
            if st.volume(&node, volid).is_some_and(|v| !v.protected) {
                st.remove_volume(&node, volid);
                log.line(format!("removed '{volid}'"));
            }
        }
        Ok(())
    })?;
    Ok(json!(upid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
            .unwrap()
            .and_local_timezone(Local)
            .unwrap()
            .timestamp()
    }

    /// `(ctime, protected)` of `times`, and the marks as `k`/`r`/`p` letters, same order.
    fn run(times: &[(&str, bool)], keep: &str) -> String {
        let backups: Vec<(i64, bool)> = times.iter().map(|(t, p)| (at(t), *p)).collect();
        mark_group(&backups, &Retention::parse(keep).unwrap())
            .iter()
            .map(|m| match m {
                Mark::Keep => 'k',
                Mark::Remove => 'r',
                Mark::Protected => 'p',
            })
            .collect()
    }

    #[test]
    fn options_parse_as_pve_writes_them() {
        let r = Retention::parse("keep-last=3, keep-daily=7,keep-weekly=4").unwrap();
        assert_eq!((r.last, r.daily, r.weekly, r.keep_all), (3, 7, 4, false));
        assert!(Retention::parse("keep-all=1").unwrap().keep_all);
        assert!(Retention::parse("keep-all=1,keep-last=2").is_err());
        assert!(Retention::parse("keep-forever=1").is_err());
        assert!(Retention::parse("keep-last=x").is_err());
    }

    #[test]
    fn worked_examples() {
        // Newest first in each table; `k` keep, `r` remove, `p` protected.
        let daily = [
            ("2026-12-06 03:00", false),
            ("2026-12-05 15:00", false),
            ("2026-12-05 03:00", false),
            ("2026-12-04 03:00", false),
            ("2026-12-03 03:00", false),
            ("2026-12-02 03:00", false),
        ];
        // Nothing set: everything is kept.
        assert_eq!(run(&daily, ""), "kkkkkk");
        // The two newest.
        assert_eq!(run(&daily, "keep-last=2"), "kkrrrr");
        // One per day for three days: the 5th's older backup goes.
        assert_eq!(run(&daily, "keep-daily=3"), "kkrkrr");
        // keep-last first, then days not yet covered: the 6th and the 5th (15:00) are kept by
        // keep-last, so keep-daily=2 takes the 4th and the 3rd; the 5th at 03:00 is a second of
        // a day already kept.
        assert_eq!(run(&daily, "keep-last=2,keep-daily=2"), "kkrkkr");
        // A protected backup counts for nothing and is never removed.
        let with_protected = [
            ("2026-12-06 03:00", true),
            ("2026-12-05 03:00", false),
            ("2026-12-04 03:00", false),
            ("2026-12-03 03:00", false),
        ];
        assert_eq!(run(&with_protected, "keep-last=2"), "pkkr");
        assert_eq!(run(&with_protected, "keep-all=1"), "pkkk");
        // Weeks are ISO weeks (Monday to Sunday): 2026-12-06 is a Sunday, 12-07 a Monday.
        let weeks = [
            ("2026-12-08 03:00", false), // week 50
            ("2026-12-07 03:00", false), // week 50
            ("2026-12-06 03:00", false), // week 49
            ("2026-11-30 03:00", false), // week 49
            ("2026-11-29 03:00", false), // week 48
            ("2026-11-20 03:00", false), // week 47
        ];
        assert_eq!(run(&weeks, "keep-weekly=3"), "krkrkr");
        // Monthly and yearly over a new year.
        let months = [
            ("2027-01-15 03:00", false),
            ("2027-01-01 03:00", false),
            ("2026-12-31 03:00", false),
            ("2026-12-01 03:00", false),
            ("2026-11-30 03:00", false),
            ("2025-06-01 03:00", false),
        ];
        assert_eq!(run(&months, "keep-monthly=2"), "krkrrr");
        assert_eq!(run(&months, "keep-monthly=1,keep-yearly=3"), "krkrrk");
        // Hourly: one per hour for the two newest hours.
        let hours = [
            ("2026-12-06 03:50", false),
            ("2026-12-06 03:10", false),
            ("2026-12-06 02:30", false),
            ("2026-12-06 01:00", false),
        ];
        assert_eq!(run(&hours, "keep-hourly=2"), "krkr");
    }

    #[test]
    fn only_standard_archive_names_form_groups() {
        assert_eq!(group_of("local:backup/vzdump-qemu-100-2026_12_06-03_00_00.vma.zst"), Some(("qemu", 100)));
        assert_eq!(group_of("local:backup/vzdump-lxc-101-2026_12_06-03_00_00.tar.zst"), Some(("lxc", 101)));
        assert_eq!(group_of("local:backup/my-own-copy.vma.zst"), None);
    }
}
