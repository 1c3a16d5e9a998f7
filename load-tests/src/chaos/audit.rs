//! The accounting after the drain: every request answered 202 is owed a job in a final state and,
//! for a succeeded provision, exactly one guest; no guest may exist without an instance; the
//! quota counters must equal what exists; no job may have had its effect twice.
//!
//! The ledger and the instances are read from PostgreSQL (every job of the tenant, owed or not:
//! a request that timed out may still have been committed), the guests and tasks from the
//! simulator's own state (not through its API, which a fault could still be distorting).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use sqlx::Row;

use super::faults::{FaultKind, FaultRecord};
use super::load::{KINDS, Outcome, Sent};

const FINAL: &[&str] = &["succeeded", "failed", "cancelled"];

#[derive(Debug)]
pub struct JobRow {
    pub id: String,
    /// `provision`, or `delete` for the cleanup a provision that failed for good enqueues.
    pub kind: String,
    pub status: String,
    pub attempts: i32,
    pub error_code: Option<String>,
    pub created: f64,
    pub finished: Option<f64>,
    pub instance: Option<String>,
}

#[derive(Debug)]
pub struct InstanceRow {
    pub id: String,
    pub name: String,
    pub status: String,
    pub vmid: Option<i32>,
    pub cores: i64,
    pub memory_mib: i64,
    pub disk_gib: i64,
}

#[derive(Debug, Clone)]
pub struct GuestRow {
    pub vmid: u32,
    pub node: String,
    pub name: String,
    /// The instance named by the guest's ownership tag (`nimbus-instance=<id>`).
    pub tag: Option<String>,
}

/// Everything the verdict is computed from.
pub struct Evidence {
    pub jobs: Vec<JobRow>,
    pub instances: Vec<InstanceRow>,
    /// (instances, vcpus, memory MiB, disk GiB) from `tenant_usage`.
    pub usage: (i64, i64, i64, i64),
    /// `used` of `GET /v1/quota`, when the API answered.
    pub api_usage: Option<(i64, i64, i64, i64)>,
    /// Claims per job (a `running` event after a non-running one) and lease expiries.
    pub claims: HashMap<String, i32>,
    pub lease_expiries: usize,
    pub guests: Vec<GuestRow>,
    /// Successful guest-creating tasks (clone or create) per target VMID, with their UPIDs.
    pub creations: BTreeMap<u32, Vec<String>>,
}

/// Reads the ledger, the instances and the counters of `tenant`, as one snapshot (a job still
/// moving when the drain gave up must not look inconsistent between two reads).
pub async fn read_database(pool: &sqlx::PgPool, tenant: &str) -> anyhow::Result<Evidence> {
    let mut tx = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only").execute(&mut *tx).await?;
    let jobs = sqlx::query(
        "select id::text as id, kind, status, attempts, error_code, \
         extract(epoch from created_at)::float8 as created, extract(epoch from finished_at)::float8 as finished, \
         (select r->>'id' from jsonb_array_elements(resources) r where r->>'type' = 'instance' limit 1) as instance \
         from jobs where tenant_id = $1::uuid",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|r| {
        Ok(JobRow {
            id: r.try_get("id")?,
            kind: r.try_get("kind")?,
            status: r.try_get("status")?,
            attempts: r.try_get("attempts")?,
            error_code: r.try_get("error_code")?,
            created: r.try_get("created")?,
            finished: r.try_get("finished")?,
            instance: r.try_get("instance")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let instances = sqlx::query(
        "select id::text as id, name, status, vmid, cores::int8 as cores, memory_mib, disk_gib \
         from instances where tenant_id = $1::uuid",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|r| {
        Ok(InstanceRow {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            status: r.try_get("status")?,
            vmid: r.try_get("vmid")?,
            cores: r.try_get("cores")?,
            memory_mib: r.try_get("memory_mib")?,
            disk_gib: r.try_get("disk_gib")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let usage: (i64, i64, i64, i64) =
        sqlx::query_as("select instances, vcpus, memory_mib, disk_gib from tenant_usage where tenant_id = $1::uuid")
            .bind(tenant)
            .fetch_one(&mut *tx)
            .await?;
    // A claim is the `running` event that follows a non-running one (progress events repeat
    // `running`; enqueues, retries and lease recoveries write `queued`).
    let events: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "select e.job_id::text, e.status, e.message from job_events e join jobs j on j.id = e.job_id \
         where j.tenant_id = $1::uuid order by e.job_id, e.id",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut claims: HashMap<String, i32> = HashMap::new();
    let mut lease_expiries = 0;
    let mut previous: Option<(&str, &str)> = None;
    for (job, status, message) in &events {
        let before = previous.filter(|(j, _)| *j == job.as_str()).map(|(_, s)| s);
        if status == "running" && before != Some("running") {
            *claims.entry(job.clone()).or_default() += 1;
        }
        match message.as_deref() {
            Some("lease expired") => lease_expiries += 1,
            // A job handed back by a worker shutting down gets its attempt back.
            Some(m) if m.starts_with("released") => *claims.entry(job.clone()).or_default() -= 1,
            _ => {}
        }
        previous = Some((job, status));
    }
    Ok(Evidence {
        jobs,
        instances,
        usage,
        api_usage: None,
        claims,
        lease_expiries,
        guests: Vec::new(),
        creations: BTreeMap::new(),
    })
}

/// Reads the simulator's guests (not the templates) and its successful creation tasks.
pub fn read_simulator(sim: &pve_sim::RunningSim, evidence: &mut Evidence) {
    let cluster = sim.sim().read();
    for g in cluster.guests.values().filter(|g| !g.is_template()) {
        let name = g.config.get("name").or_else(|| g.config.get("hostname")).cloned().unwrap_or_default();
        let description = g.config.get("description").map(|d| percent_decode(d)).unwrap_or_default();
        let tag = description
            .split("nimbus-instance=")
            .nth(1)
            .map(|rest| rest.chars().take_while(|c| c.is_ascii_hexdigit() || *c == '-').collect::<String>())
            .filter(|t| !t.is_empty());
        evidence.guests.push(GuestRow { vmid: g.vmid, node: g.node.clone(), name, tag });
    }
    for t in cluster.tasks.iter() {
        let target = match t.ty.as_str() {
            // A clone's UPID names the source; the target is the guest it locked.
            "qmclone" | "vzclone" => t.locks.iter().find(|(_, l)| l == "clone" || l == "create").map(|(v, _)| *v),
            "qmcreate" | "vzcreate" => t.id.parse().ok(),
            _ => None,
        };
        if let (Some(vmid), Some("OK")) = (target, t.exitstatus.as_deref()) {
            evidence.creations.entry(vmid).or_default().push(t.upid.clone());
        }
    }
}

/// PVE stores descriptions percent-encoded in some paths; the tag survives either way.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(hex), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The verdict and the figures to print.
#[derive(Debug, Default)]
pub struct Verdict {
    pub lost: Vec<String>,
    pub duplicated: Vec<String>,
    pub leaked: Vec<String>,
    /// Other broken invariants (quota, status mismatches, unowed jobs not final, ...).
    pub broken: Vec<String>,
    /// Worth knowing, not a failure.
    pub notes: Vec<String>,
    pub report: String,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.lost.is_empty() && self.duplicated.is_empty() && self.leaked.is_empty() && self.broken.is_empty()
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub fn judge(sent: &[Sent], skipped: usize, faults: &[FaultRecord], ev: &Evidence) -> Verdict {
    let mut v = Verdict::default();
    let mut r = String::new();

    // Requests.
    let mut accepted = 0;
    let (mut r5xx, mut conn, mut timeout, mut limited) = (0, 0, 0, 0);
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut unexpected: BTreeMap<String, usize> = BTreeMap::new();
    let mut owed: Vec<(&Sent, &str)> = Vec::new();
    let mut answered_instance: HashMap<&str, &str> = HashMap::new();
    for s in sent {
        match &s.outcome {
            Outcome::Accepted { job_id, instance_id } => {
                accepted += 1;
                owed.push((s, job_id));
                if let Some(i) = instance_id {
                    answered_instance.insert(job_id, i);
                }
            }
            Outcome::Refused5xx(status) => {
                r5xx += 1;
                *statuses.entry(*status).or_default() += 1;
            }
            Outcome::Connection => conn += 1,
            Outcome::Timeout => timeout += 1,
            Outcome::RateLimited => limited += 1,
            Outcome::Unexpected(status, what) => *unexpected.entry(format!("{status} {what}")).or_default() += 1,
        }
    }
    let refused = r5xx + conn + timeout + limited;
    let statuses: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    let _ = writeln!(
        r,
        "requests    sent {}   accepted (202) {accepted}   refused {refused} (5xx {r5xx} [{}], no connection {conn}, \
         timeout {timeout}, 429 {limited})   other answers {}   ticks skipped (too many in flight) {skipped}",
        sent.len(),
        statuses.join(", "),
        unexpected.values().sum::<usize>()
    );
    for k in KINDS {
        let of_kind = sent.iter().filter(|s| s.kind == k.name);
        let (n, a) =
            of_kind.fold((0, 0), |(n, a), s| (n + 1, a + matches!(s.outcome, Outcome::Accepted { .. }) as usize));
        let _ = writeln!(r, "            {:<16} sent {n}, accepted {a}", k.name);
    }
    for (what, n) in &unexpected {
        v.broken.push(format!("{n} request(s) answered {what} (neither 202 nor a refusal)"));
    }

    // Faults.
    let mut by_kind: BTreeMap<FaultKind, usize> = BTreeMap::new();
    for f in faults {
        *by_kind.entry(f.kind).or_default() += 1;
    }
    let list: Vec<String> = by_kind.iter().map(|(k, n)| format!("{} {n}", k.name())).collect();
    let _ = writeln!(r, "faults      {} injected: {}", faults.len(), list.join(", "));

    // Jobs owed.
    let jobs: HashMap<&str, &JobRow> = ev.jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    let instances: HashMap<&str, &InstanceRow> = ev.instances.iter().map(|i| (i.id.as_str(), i)).collect();
    let mut seen = HashSet::new();
    for (s, job_id) in &owed {
        if !seen.insert(*job_id) {
            v.duplicated.push(format!("job {job_id} was answered 202 to two requests (second: {})", s.name));
        }
        if let (Some(answered), Some(j)) = (answered_instance.get(job_id), jobs.get(job_id))
            && j.instance.as_deref() != Some(*answered)
        {
            v.broken.push(format!("job {job_id}: the 202 named instance {answered}, the ledger {:?}", j.instance));
        }
        match jobs.get(job_id) {
            None => v.lost.push(format!("job {job_id} ({}) answered 202 but is not in the ledger", s.name)),
            Some(j) if !FINAL.contains(&j.status.as_str()) => v.lost.push(format!(
                "job {job_id} ({}) still {} after the drain (attempts {})",
                s.name, j.status, j.attempts
            )),
            Some(_) => {}
        }
    }
    let owed_ids: HashSet<&str> = owed.iter().map(|(_, j)| *j).collect();
    // A provision that fails for good enqueues its cleanup: a job no request was answered with.
    let cleanups: Vec<&JobRow> = ev.jobs.iter().filter(|j| j.kind == "delete").collect();
    for j in cleanups.iter().filter(|j| j.status != "succeeded") {
        v.broken.push(format!("cleanup job {} of instance {:?} is {} after the drain", j.id, j.instance, j.status));
    }
    let unowed: Vec<&JobRow> =
        ev.jobs.iter().filter(|j| !owed_ids.contains(j.id.as_str()) && j.kind != "delete").collect();
    for j in unowed.iter().filter(|j| !FINAL.contains(&j.status.as_str())) {
        v.broken.push(format!("job {} (its request got no 202) still {} after the drain", j.id, j.status));
    }
    let count =
        |status: &str| ev.jobs.iter().filter(|j| owed_ids.contains(j.id.as_str()) && j.status == status).count();
    let mut codes: BTreeMap<&str, usize> = BTreeMap::new();
    for j in ev.jobs.iter().filter(|j| owed_ids.contains(j.id.as_str()) && j.status == "failed") {
        *codes.entry(j.error_code.as_deref().unwrap_or("?")).or_default() += 1;
    }
    let codes: Vec<String> = codes.iter().map(|(c, n)| format!("{c} {n}")).collect();
    let _ = writeln!(
        r,
        "cleanups    {} enqueued by failed provisions, {} succeeded",
        cleanups.len(),
        cleanups.iter().filter(|j| j.status == "succeeded").count()
    );
    let _ = writeln!(
        r,
        "jobs        {} owed: {} succeeded, {} failed ({}), {} not final; {} more in the ledger without a 202 \
         (requests that timed out or lost their answer), {} of them final",
        owed.len(),
        count("succeeded"),
        count("failed"),
        if codes.is_empty() { "none".to_owned() } else { codes.join(", ") },
        v.lost.len(),
        unowed.len(),
        unowed.iter().filter(|j| FINAL.contains(&j.status.as_str())).count()
    );

    // Guests against instances, for every job of the tenant (owed or not).
    let mut tagged: HashMap<&str, Vec<&GuestRow>> = HashMap::new();
    for g in &ev.guests {
        match g.tag.as_deref() {
            Some(t) if instances.contains_key(t) => tagged.entry(t).or_default().push(g),
            Some(t) => v.leaked.push(format!(
                "guest {} '{}' on {} is tagged for instance {t}, which does not exist",
                g.vmid, g.name, g.node
            )),
            None => v.leaked.push(format!("guest {} '{}' on {} carries no instance tag", g.vmid, g.name, g.node)),
        }
    }
    // Jobs of a kind whose effect is not a guest are left to that kind's own check. Jobs without a
    // 202 (their kind unknown to the client) are provisions: the only kind whose job has no
    // other handle.
    let kind_of: HashMap<&str, &str> = owed.iter().map(|(s, j)| (*j, s.kind)).collect();
    let creates_guest =
        |job: &str| kind_of.get(job).and_then(|k| KINDS.iter().find(|x| x.name == *k)).is_none_or(|k| k.creates_guest);
    let mut left_by_failed = Vec::new();
    let mut running_guests = 0;
    for j in ev.jobs.iter().filter(|j| j.kind != "delete" && creates_guest(&j.id)) {
        let Some(inst_id) = j.instance.as_deref() else {
            v.broken.push(format!("job {} names no instance", j.id));
            continue;
        };
        let Some(inst) = instances.get(inst_id) else {
            v.broken.push(format!("job {} names instance {inst_id}, which does not exist", j.id));
            continue;
        };
        let guests = tagged.get(inst_id).map(Vec::as_slice).unwrap_or(&[]);
        if guests.len() > 1 {
            let list: Vec<String> = guests.iter().map(|g| format!("{} on {}", g.vmid, g.node)).collect();
            v.duplicated.push(format!(
                "instance {inst_id} ('{}', job {}, {}) has {} guests: {}",
                inst.name,
                j.id,
                j.status,
                guests.len(),
                list.join(", ")
            ));
        }
        match j.status.as_str() {
            "succeeded" => {
                if inst.status != "running" {
                    v.broken.push(format!("job {} succeeded but its instance {inst_id} is {}", j.id, inst.status));
                }
                match guests.first() {
                    None => v.lost.push(format!(
                        "job {} succeeded but instance {inst_id} ('{}', VMID {:?}) has no guest",
                        j.id, inst.name, inst.vmid
                    )),
                    Some(g) => {
                        running_guests += 1;
                        if inst.vmid != Some(g.vmid as i32) || g.name != inst.name {
                            v.broken.push(format!(
                                "instance {inst_id} is '{}' VMID {:?} but its guest is '{}' VMID {}",
                                inst.name, inst.vmid, g.name, g.vmid
                            ));
                        }
                    }
                }
            }
            "failed" => {
                if inst.status != "failed" {
                    v.broken.push(format!("job {} failed but its instance {inst_id} is {}", j.id, inst.status));
                }
                if !guests.is_empty() {
                    left_by_failed.push(format!(
                        "{} (instance {inst_id}, {})",
                        guests[0].vmid,
                        j.error_code.as_deref().unwrap_or("?")
                    ));
                }
            }
            _ => {}
        }
        if let Some(vmid) = inst.vmid.map(|v| v as u32)
            && let Some(upids) = ev.creations.get(&vmid)
            && upids.len() > 1
        {
            v.duplicated.push(format!(
                "VMID {vmid} (instance {inst_id}, job {}) was created {} times: {}",
                j.id,
                upids.len(),
                upids.join(", ")
            ));
        }
        // The ledger: every claim spent an attempt, and no attempt went unclaimed.
        let claims = ev.claims.get(&j.id).copied().unwrap_or(0);
        if claims != j.attempts {
            v.broken.push(format!("job {}: {claims} claims in its events but attempts = {}", j.id, j.attempts));
        }
    }
    let _ = writeln!(
        r,
        "guests      {} in the simulator: {running_guests} of succeeded jobs, {} left by failed jobs, {} of jobs not \
         final, {} without an instance",
        ev.guests.len(),
        left_by_failed.len(),
        ev.guests.len().saturating_sub(running_guests + left_by_failed.len() + v.leaked.len()),
        v.leaked.len()
    );
    // Their cleanup removes what failed provisions created.
    for left in &left_by_failed {
        v.leaked.push(format!("guest {left} of a failed provision outlived its cleanup"));
    }
    let _ = writeln!(
        r,
        "ledger      {} claims over {} jobs, {} leases expired and taken over",
        ev.claims.values().sum::<i32>(),
        ev.jobs.len(),
        ev.lease_expiries
    );

    // Quota.
    let holding: Vec<&InstanceRow> =
        ev.instances.iter().filter(|i| i.status != "failed" && i.status != "deleted").collect();
    let exists = (
        holding.len() as i64,
        holding.iter().map(|i| i.cores).sum::<i64>(),
        holding.iter().map(|i| i.memory_mib).sum::<i64>(),
        holding.iter().map(|i| i.disk_gib).sum::<i64>(),
    );
    let show = |u: (i64, i64, i64, i64)| format!("{} instances, {} vCPUs, {} MiB, {} GiB", u.0, u.1, u.2, u.3);
    let _ = writeln!(
        r,
        "quota       counters {}; instances holding quota {}; GET /v1/quota {}",
        show(ev.usage),
        show(exists),
        ev.api_usage.map(show).unwrap_or_else(|| "not read".into())
    );
    if ev.usage != exists {
        v.broken.push(format!("tenant_usage says {} but the instances add up to {}", show(ev.usage), show(exists)));
    }
    if let Some(api) = ev.api_usage
        && api != exists
    {
        v.broken.push(format!("GET /v1/quota says {} but the instances add up to {}", show(api), show(exists)));
    }
    if exists.0 != running_guests as i64 {
        v.broken
            .push(format!("{} instances hold quota but {running_guests} guests belong to succeeded jobs", exists.0));
    }

    // Waits: a job's lifetime against the usual one, for jobs whose lifetime overlapped a fault.
    let lifetimes: Vec<(&JobRow, f64)> = ev
        .jobs
        .iter()
        .filter(|j| owed_ids.contains(j.id.as_str()))
        .filter_map(|j| j.finished.map(|f| (j, f - j.created)))
        .collect();
    let overlapping = |j: &JobRow| -> Vec<&FaultRecord> {
        let end = j.finished.unwrap_or(f64::MAX);
        faults.iter().filter(|f| j.created < f.end && end > f.start).collect()
    };
    let mut all: Vec<f64> = lifetimes.iter().map(|(_, l)| *l).collect();
    all.sort_by(f64::total_cmp);
    let mut calm: Vec<f64> = lifetimes.iter().filter(|(j, _)| overlapping(j).is_empty()).map(|(_, l)| *l).collect();
    calm.sort_by(f64::total_cmp);
    // The usual lifetime: that of the jobs done before the first fault (the stack at its normal
    // pace), else of those that overlapped no fault (which may include a backlog a fault left).
    let first_fault = faults.iter().map(|f| f.start).fold(f64::INFINITY, f64::min);
    let mut before: Vec<f64> =
        lifetimes.iter().filter(|(j, _)| j.finished.is_some_and(|f| f < first_fault)).map(|(_, l)| *l).collect();
    before.sort_by(f64::total_cmp);
    let (baseline, basis) = if before.len() >= 5 {
        (quantile(&before, 0.5), format!("the {} jobs done before the first fault", before.len()))
    } else if !calm.is_empty() {
        (quantile(&calm, 0.5), format!("the {} jobs that overlapped no fault", calm.len()))
    } else {
        (quantile(&all, 0.5), "all jobs".to_owned())
    };
    let _ = writeln!(
        r,
        "lifetime    created → final: p50 {:.2} s, p99 {:.2} s, max {:.2} s; usual (p50 of {basis}) {baseline:.2} s; \
         p50 of the {} jobs that overlapped no fault {:.2} s",
        quantile(&all, 0.5),
        quantile(&all, 0.99),
        all.last().copied().unwrap_or(f64::NAN),
        calm.len(),
        quantile(&calm, 0.5)
    );
    let mut worst: Option<(f64, &JobRow, Vec<&FaultRecord>)> = None;
    let mut per_kind: BTreeMap<FaultKind, f64> = BTreeMap::new();
    for (j, life) in &lifetimes {
        let hit = overlapping(j);
        if hit.is_empty() {
            continue;
        }
        let extra = (life - baseline).max(0.0);
        for f in &hit {
            let e = per_kind.entry(f.kind).or_default();
            *e = e.max(extra);
        }
        if worst.as_ref().is_none_or(|(w, _, _)| extra > *w) {
            worst = Some((extra, j, hit));
        }
    }
    match worst {
        Some((extra, j, hit)) => {
            let names: Vec<String> = hit.iter().map(|f| format!("{} ({})", f.kind.name(), f.detail)).collect();
            let _ = writeln!(
                r,
                "fault wait  longest {extra:.1} s beyond the usual {baseline:.2} s: job {} ({}, {} attempts), during {}",
                j.id,
                j.status,
                j.attempts,
                names.join("; ")
            );
            let kinds: Vec<String> = per_kind.iter().map(|(k, w)| format!("{} {w:.1} s", k.name())).collect();
            let _ = writeln!(r, "            longest per fault kind: {}", kinds.join(", "));
        }
        None => {
            let _ = writeln!(r, "fault wait  no finished job overlapped a fault");
        }
    }
    v.report = r;
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, status: &str, instance: &str) -> JobRow {
        let finished = (status != "queued").then_some(12.0);
        JobRow {
            id: id.into(),
            kind: "provision".into(),
            status: status.into(),
            attempts: 1,
            error_code: None,
            created: 10.0,
            finished,
            instance: Some(instance.into()),
        }
    }

    fn instance(id: &str, status: &str, vmid: i32) -> InstanceRow {
        InstanceRow {
            id: id.into(),
            name: id.into(),
            status: status.into(),
            vmid: Some(vmid),
            cores: 1,
            memory_mib: 256,
            disk_gib: 4,
        }
    }

    fn guest(vmid: u32, name: &str, tag: Option<&str>) -> GuestRow {
        GuestRow { vmid, node: "pve1".into(), name: name.into(), tag: tag.map(str::to_owned) }
    }

    #[test]
    fn lost_duplicated_and_leaked_are_told_apart() {
        let accepted = |seq: usize, job: &str| Sent {
            seq,
            kind: KINDS[0].name,
            name: format!("n{seq}"),
            outcome: Outcome::Accepted { job_id: job.into(), instance_id: None },
        };
        let sent = vec![
            accepted(0, "j1"),
            accepted(1, "j2"),
            accepted(2, "j3"),
            Sent { seq: 3, kind: KINDS[0].name, name: "n3".into(), outcome: Outcome::Refused5xx(503) },
        ];
        let ev = Evidence {
            jobs: vec![job("j1", "succeeded", "i1"), job("j2", "queued", "i2"), job("j3", "succeeded", "i3")],
            instances: vec![
                instance("i1", "running", 101),
                instance("i2", "provisioning", 102),
                instance("i3", "running", 103),
            ],
            usage: (3, 3, 768, 12),
            api_usage: None,
            claims: HashMap::from([("j1".into(), 1), ("j2".into(), 1), ("j3".into(), 1)]),
            lease_expiries: 0,
            guests: vec![
                guest(101, "i1", Some("i1")),
                guest(103, "i3", Some("i3")),
                guest(104, "i3", Some("i3")),
                guest(105, "stray", None),
            ],
            creations: BTreeMap::from([(101, vec!["u1".into()]), (103, vec!["u3".into()]), (104, vec!["u4".into()])]),
        };
        let v = judge(&sent, 0, &[], &ev);
        assert_eq!(v.lost.len(), 1, "{:?}", v.lost);
        assert!(v.lost[0].contains("j2"));
        assert_eq!(v.duplicated.len(), 1, "{:?}", v.duplicated);
        assert!(v.duplicated[0].contains("i3"));
        assert_eq!(v.leaked.len(), 1, "{:?}", v.leaked);
        assert!(v.leaked[0].contains("105"));
        assert!(!v.passed());
        assert!(v.report.contains("refused 1"));
    }

    #[test]
    fn tags_are_found_in_encoded_descriptions() {
        assert_eq!(percent_decode("nimbus-instance%3Dabc"), "nimbus-instance=abc");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
