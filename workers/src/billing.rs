//! The `billing` queue's jobs (DESIGN §10), both started by system schedules
//! ([`ensure_schedules`]) with the `catch_up_all` policy, so an outage is billed hour by hour:
//!
//! * `meter` (hourly, at each hour's end): one usage row per instance for the hour that just
//!   ended (`nimbus_db::usage::meter_hour`, unique per instance and hour: a re-run, a replica or
//!   a catch-up adds nothing), each rated at the price version valid at the hour's start; then
//!   moves every prepaid tenant along the ladder (`nimbus_db::ladder`) as of the hour's end:
//!   `balance.low`, creates refused, suspension after the grace period (its running instances
//!   stopped by shutdown jobs), and back; then the hour's backup storage
//!   (`nimbus_db::usage::meter_backups`: the archives Proxmox lists on each instance's plan backup
//!   storage now, in GiB-hours, one listing per node and storage; a listing that fails is retried
//!   with the step, the others kept). The ladder reads backup storage up to the hour before.
//! * `invoice` (monthly, the 1st at 00:00 UTC): first meters the month's hours no `meter` run
//!   covered since metering began (the last hour's run fires at the same moment; hours before the
//!   first ever metered are not billed), then issues each tenant's
//!   invoice for the month in its own transaction (`nimbus_db::invoices::issue`: one per tenant
//!   and period, gapless numbers). A retry issues only the invoices still missing.
//!
//! Neither takes a node permit or an instance lock; only `meter` reads Proxmox (storage listings).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use chrono::{DateTime, Duration, DurationRound, Utc};
use nimbus_db::schedules::{self, NewSchedule};
use nimbus_db::{DbError, PgPool, invoices, ladder, usage};
use nimbus_domain::backup::archive_taken_since;
use nimbus_domain::{ErrorCode, JobKind, MissedFirePolicy};
use nimbus_jobs::schedule::CronSpec;
use nimbus_jobs::{BillingRun, PowerAction};
use nimbus_proxmox::{ContentQuery, ProxmoxClient, StorageContent};
use sqlx::PgConnection;

use crate::step_machine::{Operation, Run, StepError, StepInfo};

/// The steps of the billing jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Meter one hour (`meter`), or the month's unmetered hours (`invoice`).
    Meter,
    /// Issue the month's invoices.
    Issue,
    /// Meter the hour's backup storage (`meter`).
    Backups,
    /// Move prepaid tenants along the ladder.
    Ladder,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl StepInfo for Step {
    fn name(self) -> &'static str {
        match self {
            Step::Meter => "meter usage",
            Step::Issue => "issue invoices",
            Step::Backups => "meter backup storage",
            Step::Ladder => "check prepaid balances",
        }
    }

    fn done_name(self) -> &'static str {
        match self {
            Step::Meter => "metered",
            Step::Issue => "invoiced",
            Step::Backups => "backup storage metered",
            Step::Ladder => "balances checked",
        }
    }

    fn progress(self) -> u8 {
        match self {
            Step::Meter => 40,
            Step::Backups => 95,
            Step::Issue => 95,
            Step::Ladder => 70,
        }
    }

    fn needs_node_permit(self) -> bool {
        false
    }

    fn plain_action(self) -> &'static str {
        match self {
            Step::Meter => "meter usage",
            Step::Issue => "issue the invoices",
            Step::Backups => "meter the backup storage",
            Step::Ladder => "check the prepaid balances",
        }
    }
}

/// Tenants invoiced per transaction: one commit per batch rather than per invoice.
const INVOICES_PER_TRANSACTION: usize = 100;

/// The name of the system schedule that meters each hour.
pub const METERING: &str = "hourly metering";
/// The name of the system schedule that invoices each month.
pub const INVOICING: &str = "monthly invoicing";

/// Creates the system's billing schedules unless they exist (every worker does at start; the
/// name is unique among the system's schedules, so replicas create each once). The first fire
/// is the next hour's, or the next month's, after `now`.
pub async fn ensure_schedules(db: &PgPool, now: DateTime<Utc>) -> Result<(), DbError> {
    for (name, cron, kind) in [(METERING, "hourly", JobKind::Meter), (INVOICING, "monthly", JobKind::Invoice)] {
        let Ok(spec) = CronSpec::parse(cron) else { continue };
        let Some(first_fire_at) = spec.next_after(now) else { continue };
        let new = NewSchedule {
            tenant: None,
            name: name.to_owned(),
            cron: cron.to_owned(),
            job: BillingRun::default().new_job(kind),
            policy: MissedFirePolicy::CatchUpAll,
            first_fire_at,
        };
        schedules::create_system_unless_named(db, &new).await?;
    }
    Ok(())
}

/// One billing job in progress.
#[derive(Debug)]
pub struct Billing {
    run: Run,
    kind: JobKind,
    /// The end of what it bills: the metered hour's, or the invoiced month's.
    until: DateTime<Utc>,
}

impl Operation for Billing {
    type Step = Step;
    const NAME: &'static str = "billing";

    async fn load(run: Run) -> Result<Billing, StepError> {
        let request: BillingRun = run.payload()?;
        let kind = run.job.kind;
        // Without a fire time, what ended last: this hour's start, this month's start.
        let fired = request.fire_at.unwrap_or_else(Utc::now);
        let hour = fired.duration_trunc(Duration::hours(1)).unwrap_or(fired);
        let until = match kind {
            JobKind::Invoice => invoices::month_of(hour).0,
            _ => hour,
        };
        Ok(Billing { run, kind, until })
    }

    fn run(&self) -> &Run {
        &self.run
    }

    fn run_mut(&mut self) -> &mut Run {
        &mut self.run
    }

    fn steps(&self) -> &'static [Step] {
        match self.kind {
            JobKind::Invoice => &[Step::Meter, Step::Issue],
            // The ladder before the backup listings, which depend on every node answering.
            _ => &[Step::Meter, Step::Ladder, Step::Backups],
        }
    }

    fn node(&self) -> &str {
        ""
    }

    async fn execute(&mut self, step: Step) -> Result<(), StepError> {
        let db = self.run.db().clone();
        match (step, self.kind) {
            (Step::Meter, JobKind::Invoice) => {
                let (from, to) = self.month();
                for hour in usage::unmetered_hours(&db, from, to).await? {
                    usage::meter_hour(&db, hour).await?;
                }
            }
            (Step::Meter, _) => {
                let hour = self.until - Duration::hours(1);
                let rows = usage::meter_hour(&db, hour).await?;
                tracing::info!(job.id = %self.run.job.id, hour = %hour, rows, "hour metered");
            }
            (Step::Backups, _) => {
                let hour = self.until - Duration::hours(1);
                let sources = usage::backup_sources(&db, hour).await?;
                let (footprints, failed) = backup_footprints(&self.run.env.pve, &sources).await;
                let rows = usage::meter_backups(&db, hour, &footprints).await?;
                tracing::info!(job.id = %self.run.job.id, hour = %hour, rows, "backup storage metered");
                // What was listed is metered; the retry lists again and adds only what is missing.
                if !failed.is_empty() {
                    return Err(StepError::Transient {
                        code: ErrorCode::ProxmoxUnavailable,
                        message: "some backup storage could not be read; it is metered on the retry".into(),
                        detail: Some(failed.join("; ")),
                    });
                }
            }
            (Step::Ladder, _) => {
                let evaluated = ladder::evaluate_all(&db, self.until, &PowerAction::ladder_jobs()).await?;
                for (tenant, error) in &evaluated.failed {
                    tracing::warn!(tenant.id = %tenant, error = %error, "ladder step failed; the next run retries it");
                }
                for (tenant, outcome) in &evaluated.outcomes {
                    if let Some((from, to)) = outcome.changed {
                        tracing::info!(tenant.id = %tenant, from = from.as_str(), to = to.as_str(), "ladder step");
                    }
                    if !outcome.enqueued.is_empty() {
                        tracing::info!(tenant.id = %tenant, jobs = outcome.enqueued.len(), "ladder power jobs enqueued");
                    }
                }
            }
            (Step::Issue, _) => {
                let (from, to) = self.month();
                let issued = invoices::issue_all(&db, from, to, INVOICES_PER_TRANSACTION).await?;
                tracing::info!(job.id = %self.run.job.id, period = %from, issued, "invoices issued");
            }
        }
        Ok(())
    }

    async fn succeeded(&self, _tx: &mut PgConnection) -> Result<(), DbError> {
        Ok(())
    }
}

/// Each instance's backup archives on its plan's backup storage, as Proxmox lists them now: one
/// listing per node and storage, the archives of each instance's VMID taken since it was created.
/// A listing that fails is skipped and named in the second list (the others are still metered).
async fn backup_footprints(
    pve: &ProxmoxClient,
    sources: &[usage::BackupSource],
) -> (Vec<usage::BackupFootprint>, Vec<String>) {
    let mut listed: HashMap<(&str, &str), Option<Vec<StorageContent>>> = HashMap::new();
    let (mut footprints, mut failed) = (Vec::new(), Vec::new());
    for source in sources {
        let key = (source.node.as_str(), source.storage.as_str());
        if let Entry::Vacant(slot) = listed.entry(key) {
            let storage = pve.node(&source.node).storage(&source.storage);
            match storage.content(&ContentQuery::content("backup")).await {
                Ok(content) => slot.insert(Some(content)),
                Err(e) => {
                    failed.push(format!("{}/{}: {e}", source.node, source.storage));
                    slot.insert(None)
                }
            };
        }
        let Some(Some(content)) = listed.get(&key) else { continue };
        let archives: Vec<&StorageContent> = content
            .iter()
            .filter(|a| a.vmid == u32::try_from(source.vmid).ok())
            .filter(|a| archive_taken_since(source.created_at, a.ctime))
            .collect();
        let bytes: u64 = archives.iter().filter_map(|a| a.size).sum();
        if bytes > 0 {
            footprints.push(usage::BackupFootprint {
                instance_id: source.instance_id,
                archives: i32::try_from(archives.len()).unwrap_or(i32::MAX),
                bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
            });
        }
    }
    (footprints, failed)
}

impl Billing {
    /// The month an invoice job bills: the one that ended at `until`.
    fn month(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        invoices::month_of(self.until - Duration::hours(1))
    }
}
