//! Live state: every few seconds one `/cluster/resources` call reads every guest of the cluster,
//! and the instances whose status follows their guest (`running`, `stopped`, `missing`, with no
//! operation queued or running) take what Proxmox reports: a guest shut down from inside shows
//! `stopped`, one started outside Nimbus `running`, one that vanished `missing`.
//!
//! An operation owns its instance's status while it runs, so instances with a job queued or
//! running are skipped, and the write re-checks that under the row's lock: a delete or a start
//! accepted between the read and the write wins. Every replica may reconcile; the writes are
//! idempotent. A failed read (Proxmox or the database down) skips the tick: a guest is never
//! called missing because the cluster could not be read.

use std::collections::HashMap;
use std::time::Duration;

use nimbus_db::operations;
use nimbus_domain::InstanceStatus;
use nimbus_proxmox::ResourceType;
use tokio_util::sync::CancellationToken;

use crate::env::Env;

/// What one tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Instances compared with their guest.
    pub observed: usize,
    /// Instances whose status changed.
    pub changed: usize,
}

/// The status a guest's Proxmox state gives its instance (`None`: the guest is not there).
pub fn status_of(pve_status: Option<&str>) -> InstanceStatus {
    match pve_status {
        None => InstanceStatus::Missing,
        Some("running") => InstanceStatus::Running,
        // `stopped`, and anything PVE may add for a guest that is not running.
        Some(_) => InstanceStatus::Stopped,
    }
}

/// When a guest started, from its uptime (`None` unless it runs).
pub fn started_at(
    now: chrono::DateTime<chrono::Utc>,
    status: InstanceStatus,
    uptime: Option<u64>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let uptime = uptime.filter(|_| status == InstanceStatus::Running)?;
    Some(now - chrono::Duration::seconds(uptime as i64))
}

/// Whether a recorded start time is worth rewriting: uptime is reported in whole seconds and
/// read at slightly different moments, so only a start more than 5 s away (a restart) counts.
fn moved(recorded: Option<chrono::DateTime<chrono::Utc>>, now: Option<chrono::DateTime<chrono::Utc>>) -> bool {
    match (recorded, now) {
        (Some(a), Some(b)) => (a - b).num_seconds().abs() > 5,
        (None, None) => false,
        _ => true,
    }
}

/// Reconciles once.
pub async fn tick(env: &Env) -> anyhow::Result<Tick> {
    let observed = operations::observable(&env.db, &env.settings.cluster).await?;
    if observed.is_empty() {
        return Ok(Tick::default());
    }
    let resources = env.pve.cluster_resources(Some(ResourceType::Vm)).await?;
    let by_vmid: HashMap<u32, (&str, Option<u64>)> = resources
        .iter()
        .filter_map(|r| Some((r.vmid?, (r.status.as_deref().unwrap_or("unknown"), r.uptime))))
        .collect();
    let now = chrono::Utc::now();
    let mut changes = Vec::new();
    let mut seen = Vec::new();
    let mut started = Vec::new();
    for o in &observed {
        let reported = by_vmid.get(&(o.vmid as u32)).copied();
        if reported.is_some() {
            seen.push(o.id);
        }
        let status = status_of(reported.map(|(s, _)| s));
        if status != o.status {
            changes.push((o.id, status));
        }
        let at = started_at(now, status, reported.and_then(|(_, uptime)| uptime));
        if moved(o.guest_started_at, at) {
            started.push((o.id, at));
        }
    }
    let changed = operations::record_observed(&env.db, &changes, &seen).await?;
    if !started.is_empty() {
        operations::record_started(&env.db, &started).await?;
    }
    for id in &changed {
        let status = changes.iter().find(|(i, _)| i == id).map(|(_, s)| *s);
        tracing::info!(vm.id = %id, vm.status = ?status, "instance status follows its guest");
        // Open pages of the instance show the change.
        env.events.publish(*id).await;
    }
    Ok(Tick { observed: observed.len(), changed: changed.len() })
}

/// Reconciles every `every` until `shutdown`.
pub async fn run(env: Env, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = tick(&env).await {
            tracing::warn!(error = %e, "reconcile skipped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxmox_states_map_to_statuses() {
        assert_eq!(status_of(Some("running")), InstanceStatus::Running);
        assert_eq!(status_of(Some("stopped")), InstanceStatus::Stopped);
        assert_eq!(status_of(None), InstanceStatus::Missing);
    }

    #[test]
    fn start_times_follow_restarts_not_jitter() {
        let now = chrono::Utc::now();
        let at = started_at(now, InstanceStatus::Running, Some(60)).unwrap();
        assert_eq!((now - at).num_seconds(), 60);
        assert_eq!(started_at(now, InstanceStatus::Stopped, Some(60)), None);
        assert!(!moved(Some(at), Some(at + chrono::Duration::seconds(2))));
        assert!(moved(Some(at), Some(at + chrono::Duration::seconds(30))));
        assert!(moved(Some(at), None) && moved(None, Some(at)) && !moved(None, None));
    }
}
