//! The prepaid ladder (DESIGN §10): where a tenant stands with what it owes, and what follows.
//!
//! The *available balance* is the ledger's sum less what the tenant used and was not invoiced
//! for yet (each month's lines capped and rounded, with tax, as its invoice will be). From it:
//!
//! | state       | when                                             | what it does                         |
//! |-------------|--------------------------------------------------|--------------------------------------|
//! | `ok`        | available ≥ the tenant's threshold               | nothing                              |
//! | `low`       | 0 < available < threshold                        | `balance.low`                        |
//! | `exhausted` | available ≤ 0                                    | `balance.exhausted`; creates refused |
//! | `suspended` | exhausted for the grace period, or an operator's hold | `tenant.suspended`; running instances stopped, the API read-only but billing |
//!
//! Leaving `suspended` records `tenant.resumed` and starts again the instances the suspension
//! stopped. Only prepaid tenants climb the ladder; an operator's hold applies to any tenant.
//! [`evaluate`] is idempotent: it runs each hour after metering (every prepaid tenant) and
//! after every change to a tenant's ledger or terms, and redoes what is still owed (an instance
//! that was busy when it should have stopped is stopped by the next run).

use chrono::{DateTime, Duration, Utc};
use nimbus_domain::{InstanceId, InstanceStatus, Money, TenantId};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::events::{self, NewEvent, types};
use crate::jobs::{self, Enqueued, NewJob};
use crate::{DbError, Result, invoices, operations};

/// A tenant's step on the ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Nothing owed beyond the threshold.
    Ok,
    /// Below the threshold.
    Low,
    /// Used up: creates refused.
    Exhausted,
    /// Instances stopped, the API read-only but billing.
    Suspended,
}

impl State {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Low => "low",
            State::Exhausted => "exhausted",
            State::Suspended => "suspended",
        }
    }

    fn parse(s: &str) -> State {
        match s {
            "low" => State::Low,
            "exhausted" => State::Exhausted,
            "suspended" => State::Suspended,
            _ => State::Ok,
        }
    }
}

/// Where a tenant stands.
#[derive(Clone, Debug, PartialEq)]
pub struct Standing {
    /// Whether it is prepaid (only prepaid tenants climb the ladder).
    pub prepaid: bool,
    /// Its recorded state.
    pub state: State,
    /// Since when.
    pub since: DateTime<Utc>,
    /// `balance.low` below this.
    pub threshold: Money,
    /// Hours from `exhausted` to `suspended`.
    pub grace_hours: i32,
    /// An operator's hold, if any.
    pub hold: Option<String>,
    /// The ledger's sum.
    pub ledger: Money,
    /// Used and not invoiced yet (with tax).
    pub unbilled: Money,
}

impl Standing {
    /// The ledger less what is not invoiced yet.
    pub fn available(&self) -> Money {
        self.ledger - self.unbilled
    }

    /// When an exhausted tenant is suspended.
    pub fn suspends_at(&self) -> Option<DateTime<Utc>> {
        (self.state == State::Exhausted).then(|| self.since + Duration::hours(i64::from(self.grace_hours)))
    }

    /// The state this standing calls for at `now`.
    pub fn next_state(&self, now: DateTime<Utc>) -> State {
        if self.hold.is_some() {
            return State::Suspended;
        }
        if !self.prepaid {
            return State::Ok;
        }
        let available = self.available();
        if available <= Money::ZERO {
            match self.state {
                State::Suspended => State::Suspended,
                State::Exhausted if self.suspends_at().is_some_and(|at| now >= at) => State::Suspended,
                State::Exhausted => State::Exhausted,
                _ if self.grace_hours == 0 => State::Suspended,
                _ => State::Exhausted,
            }
        } else if available < self.threshold {
            State::Low
        } else {
            State::Ok
        }
    }
}

/// The power jobs the ladder enqueues (built by the caller, which knows their payloads).
#[derive(Clone, Debug)]
pub struct PowerJobs {
    /// Stops a running instance (a graceful shutdown that forces).
    pub stop: NewJob,
    /// Starts a stopped one.
    pub start: NewJob,
}

/// What one evaluation did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The state before and after, when it changed.
    pub changed: Option<(State, State)>,
    /// Power jobs enqueued (their outbox rows too): push them after the commit.
    pub enqueued: Vec<Enqueued>,
}

/// The columns a standing reads from the tenant's row.
macro_rules! standing_columns {
    () => {
        "select prepaid, billing_state, billing_state_since, low_balance_threshold, grace_period_hours, \
                suspension_reason, tax_rate, tax_reverse_charge from tenants where id = $1"
    };
}

/// Reads `tenant`'s standing.
pub async fn standing(conn: &mut PgConnection, tenant: TenantId) -> Result<Standing> {
    read_standing(conn, tenant, standing_columns!()).await
}

/// Reads `tenant`'s standing, its row locked until the transaction ends. `no key update`: it
/// serialises evaluations of one tenant, yet lets the same transactions first insert rows that
/// reference the tenant (a ledger entry, an invoice), whose foreign-key checks take `key share`;
/// with `for update` two such transactions would each wait for the other.
pub async fn standing_for_update(conn: &mut PgConnection, tenant: TenantId) -> Result<Standing> {
    read_standing(conn, tenant, concat!(standing_columns!(), " for no key update")).await
}

async fn read_standing(conn: &mut PgConnection, tenant: TenantId, query: &'static str) -> Result<Standing> {
    type Row = (bool, String, DateTime<Utc>, Decimal, i32, Option<String>, Decimal, bool);
    let row: Option<Row> = sqlx::query_as(query).bind(tenant.as_uuid()).fetch_optional(&mut *conn).await?;
    let (prepaid, state, since, threshold, grace_hours, hold, tax_rate, reverse_charge) =
        row.ok_or(DbError::NotFound)?;
    let ledger: Decimal =
        sqlx::query_scalar("select coalesce(sum(amount), 0) from balance_entries where tenant_id = $1")
            .bind(tenant.as_uuid())
            .fetch_one(&mut *conn)
            .await?;
    let unbilled = unbilled(conn, tenant, tax_rate, reverse_charge).await?;
    Ok(Standing {
        prepaid,
        state: State::parse(&state),
        since,
        threshold: Money(threshold),
        grace_hours,
        hold,
        ledger: Money(ledger),
        unbilled,
    })
}

/// What `tenant` used and was not invoiced for: each month since its last invoiced period, as
/// that month's invoice would charge it (capped, rounded lines, with tax).
async fn unbilled(conn: &mut PgConnection, tenant: TenantId, tax_rate: Decimal, reverse_charge: bool) -> Result<Money> {
    let span: (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = sqlx::query_as(
        "select min(hour), max(hour) from usage_records where tenant_id = $1 and hour >= coalesce( \
           (select max(period_end) from invoices where tenant_id = $1 and kind = 'invoice'), 'epoch'::timestamptz)",
    )
    .bind(tenant.as_uuid())
    .fetch_one(&mut *conn)
    .await?;
    let (Some(first), Some(last)) = span else { return Ok(Money::ZERO) };
    let mut total = Money::ZERO;
    let (mut from, mut to) = invoices::month_of(first);
    while from <= last {
        if let Some((currency, lines)) = invoices::month_lines(&mut *conn, tenant, from, to).await? {
            total = total + invoices::totals(&lines, tax_rate, reverse_charge, &currency).2;
        }
        (from, to) = invoices::month_of(to);
    }
    Ok(total)
}

/// Moves `tenant` to the state its standing calls for at `now`, records the step's events and
/// stops or starts its instances as that state requires. Call in a transaction; push
/// [`Outcome::enqueued`] after the commit.
pub async fn evaluate(
    conn: &mut PgConnection,
    tenant: TenantId,
    now: DateTime<Utc>,
    jobs: &PowerJobs,
) -> Result<Outcome> {
    let standing = standing_for_update(conn, tenant).await?;
    let next = standing.next_state(now);
    let mut outcome = Outcome::default();
    if next != standing.state {
        sqlx::query("update tenants set billing_state = $2, billing_state_since = $3 where id = $1")
            .bind(tenant.as_uuid())
            .bind(next.as_str())
            .bind(now)
            .execute(&mut *conn)
            .await?;
        record_step(conn, tenant, &standing, next, now).await?;
        outcome.changed = Some((standing.state, next));
    }
    outcome.enqueued = if next == State::Suspended {
        stop_running(conn, tenant, now, &jobs.stop).await?
    } else {
        start_stopped(conn, tenant, &jobs.start).await?
    };
    Ok(outcome)
}

/// The events of a step from `standing.state` to `next`.
async fn record_step(
    conn: &mut PgConnection,
    tenant: TenantId,
    standing: &Standing,
    next: State,
    now: DateTime<Utc>,
) -> Result<()> {
    let from = standing.state;
    let mut data = json!({
        "from": from.as_str(),
        "to": next.as_str(),
        "available": exact(standing.available()),
        "ledger": exact(standing.ledger),
        "unbilled": exact(standing.unbilled),
        "threshold": exact(standing.threshold),
    });
    let mut kinds = Vec::new();
    match next {
        State::Low => kinds.push(types::BALANCE_LOW),
        State::Exhausted => {
            data["suspendsAt"] = json!(now + Duration::hours(i64::from(standing.grace_hours)));
            kinds.push(types::BALANCE_EXHAUSTED);
        }
        State::Suspended => {
            if standing.hold.is_none() && matches!(from, State::Ok | State::Low) {
                kinds.push(types::BALANCE_EXHAUSTED);
            }
            data["reason"] = json!(standing.hold.as_deref().unwrap_or("balance exhausted past the grace period"));
            kinds.push(types::TENANT_SUSPENDED);
        }
        State::Ok => {}
    }
    if from == State::Suspended {
        kinds.push(types::TENANT_RESUMED);
    }
    for kind in kinds {
        let event = NewEvent {
            kind,
            at: now,
            tenant: Some(tenant),
            resource: Some(("tenant", tenant.to_string())),
            data: data.clone(),
        };
        events::record(&mut *conn, &event).await?;
    }
    Ok(())
}

/// An amount as a string without trailing zeros (`-10`, `2.5`).
fn exact(m: Money) -> String {
    m.0.normalize().to_string()
}

/// Records each running instance of a suspended `tenant` and stops those not busy with another
/// operation (a busy one is stopped by a later evaluation).
async fn stop_running(
    conn: &mut PgConnection,
    tenant: TenantId,
    now: DateTime<Utc>,
    stop: &NewJob,
) -> Result<Vec<Enqueued>> {
    let running: Vec<Uuid> = sqlx::query_scalar(
        "select id from instances where tenant_id = $1 and status = 'running' and deleted_at is null order by id",
    )
    .bind(tenant.as_uuid())
    .fetch_all(&mut *conn)
    .await?;
    let mut enqueued = Vec::new();
    for id in running {
        sqlx::query(
            "insert into suspended_instances (instance_id, tenant_id, recorded_at) values ($1, $2, $3) \
             on conflict (instance_id) do nothing",
        )
        .bind(id)
        .bind(tenant.as_uuid())
        .bind(now)
        .execute(&mut *conn)
        .await?;
        if let Some(job) = try_operation(conn, tenant, id.into(), InstanceStatus::Running, stop).await? {
            sqlx::query("update suspended_instances set stop_job = $2 where instance_id = $1")
                .bind(id)
                .bind(job.job.id.as_uuid())
                .execute(&mut *conn)
                .await?;
            enqueued.push(job);
        }
    }
    Ok(enqueued)
}

/// Starts again the instances a lifted suspension stopped. The suspension's stop still queued is
/// cancelled instead (the instance never stopped); one busy otherwise (its stop running) stays
/// recorded for a later evaluation; one running, failed or gone is forgotten.
async fn start_stopped(conn: &mut PgConnection, tenant: TenantId, start: &NewJob) -> Result<Vec<Enqueued>> {
    let queued_stops: Vec<Uuid> = sqlx::query_scalar(
        "select s.stop_job from suspended_instances s join jobs j on j.id = s.stop_job \
         where s.tenant_id = $1 and j.status = 'queued'",
    )
    .bind(tenant.as_uuid())
    .fetch_all(&mut *conn)
    .await?;
    for stop in queued_stops {
        jobs::cancel_if_queued(&mut *conn, stop.into(), Some(tenant)).await?;
    }
    let recorded: Vec<(Uuid, String)> = sqlx::query_as(
        "select s.instance_id, i.status from suspended_instances s join instances i on i.id = s.instance_id \
         where s.tenant_id = $1 order by s.instance_id",
    )
    .bind(tenant.as_uuid())
    .fetch_all(&mut *conn)
    .await?;
    let mut enqueued = Vec::new();
    for (id, status) in recorded {
        let keep = if status == InstanceStatus::Stopped.as_str() {
            match try_operation(conn, tenant, id.into(), InstanceStatus::Stopped, start).await? {
                Some(job) => {
                    enqueued.push(job);
                    false
                }
                None => true,
            }
        } else {
            operations::active(&mut *conn, id.into()).await?.is_some()
        };
        if !keep {
            sqlx::query("delete from suspended_instances where instance_id = $1").bind(id).execute(&mut *conn).await?;
        }
    }
    Ok(enqueued)
}

/// Enqueues `job` on `instance` if it has `status` and no operation holds it; `None` otherwise.
async fn try_operation(
    conn: &mut PgConnection,
    tenant: TenantId,
    instance: InstanceId,
    status: InstanceStatus,
    job: &NewJob,
) -> Result<Option<Enqueued>> {
    match operations::lock(&mut *conn, tenant, instance, &[status]).await {
        Ok(_) => {}
        Err(DbError::InstanceBusy(_) | DbError::InvalidInstanceState { .. }) => return Ok(None),
        Err(e) => return Err(e),
    }
    match operations::enqueue(&mut *conn, tenant, instance, job.clone()).await {
        Ok(enqueued) => Ok(Some(enqueued)),
        Err(DbError::InstanceBusy(_) | DbError::Conflict { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The tenants [`evaluate_all`] looks at: prepaid ones, and any not `ok` or with instances a
/// suspension stopped.
pub async fn tenants_to_evaluate(pool: &sqlx::PgPool) -> Result<Vec<TenantId>> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "select id from tenants where prepaid or billing_state <> 'ok' \
         union select tenant_id from suspended_instances order by 1",
    )
    .fetch_all(pool)
    .await?;
    Ok(ids.into_iter().map(Into::into).collect())
}

/// What [`evaluate_all`] did.
#[derive(Debug, Default)]
pub struct Evaluated {
    /// Each tenant evaluated, with its outcome.
    pub outcomes: Vec<(TenantId, Outcome)>,
    /// The tenants whose evaluation failed (rolled back; the next run tries again).
    pub failed: Vec<(TenantId, DbError)>,
}

/// Evaluates every tenant on the ladder at `now`, each in its own transaction: one that fails
/// does not hold up the others. The jobs enqueued have their outbox rows committed: the relay
/// pushes them. Only a database that cannot be reached at all is an error.
pub async fn evaluate_all(pool: &sqlx::PgPool, now: DateTime<Utc>, jobs: &PowerJobs) -> Result<Evaluated> {
    let mut evaluated = Evaluated::default();
    for tenant in tenants_to_evaluate(pool).await? {
        let mut tx = pool.begin().await?;
        match evaluate(&mut tx, tenant, now, jobs).await {
            Ok(outcome) => {
                tx.commit().await?;
                evaluated.outcomes.push((tenant, outcome));
            }
            Err(e) if e.is_unavailable() => return Err(e),
            Err(e) => evaluated.failed.push((tenant, e)),
        }
    }
    Ok(evaluated)
}

/// An operator's hold: suspends `tenant` whatever its balance, until [`release`].
pub async fn hold(
    conn: &mut PgConnection,
    tenant: TenantId,
    reason: &str,
    now: DateTime<Utc>,
    jobs: &PowerJobs,
) -> Result<Outcome> {
    let standing = standing_for_update(conn, tenant).await?;
    sqlx::query(
        "update tenants set billing_state = 'suspended', suspension_reason = $2, billing_state_since = \
         case when billing_state = 'suspended' then billing_state_since else $3 end where id = $1",
    )
    .bind(tenant.as_uuid())
    .bind(reason)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let mut outcome = Outcome::default();
    if standing.state != State::Suspended {
        let held = Standing { hold: Some(reason.to_owned()), ..standing.clone() };
        record_step(conn, tenant, &held, State::Suspended, now).await?;
        outcome.changed = Some((standing.state, State::Suspended));
    }
    outcome.enqueued = stop_running(conn, tenant, now, &jobs.stop).await?;
    Ok(outcome)
}

/// Lifts an operator's hold and lets the balance decide again.
pub async fn release(
    conn: &mut PgConnection,
    tenant: TenantId,
    now: DateTime<Utc>,
    jobs: &PowerJobs,
) -> Result<Outcome> {
    sqlx::query("update tenants set suspension_reason = null where id = $1")
        .bind(tenant.as_uuid())
        .execute(&mut *conn)
        .await?;
    evaluate(conn, tenant, now, jobs).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(state: State, ledger: i64, unbilled: i64) -> Standing {
        Standing {
            prepaid: true,
            state,
            since: DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
            threshold: Money(Decimal::from(10)),
            grace_hours: 24,
            hold: None,
            ledger: Money(Decimal::from(ledger)),
            unbilled: Money(Decimal::from(unbilled)),
        }
    }

    #[test]
    fn the_available_balance_sets_the_step() {
        let now = standing(State::Ok, 0, 0).since;
        assert_eq!(standing(State::Ok, 50, 20).next_state(now), State::Ok);
        assert_eq!(standing(State::Ok, 50, 41).next_state(now), State::Low);
        assert_eq!(standing(State::Low, 50, 50).next_state(now), State::Exhausted);
        assert_eq!(standing(State::Exhausted, 60, 50).next_state(now), State::Ok);
        assert_eq!(standing(State::Suspended, 55, 50).next_state(now), State::Low);
    }

    #[test]
    fn suspension_waits_for_the_grace_period_unless_there_is_none() {
        let exhausted = standing(State::Exhausted, 0, 5);
        let since = exhausted.since;
        assert_eq!(exhausted.next_state(since + Duration::hours(23)), State::Exhausted);
        assert_eq!(exhausted.next_state(since + Duration::hours(24)), State::Suspended);
        let no_grace = Standing { grace_hours: 0, ..standing(State::Low, 0, 5) };
        assert_eq!(no_grace.next_state(since), State::Suspended);
        assert_eq!(standing(State::Suspended, 0, 5).next_state(since), State::Suspended);
    }

    #[test]
    fn only_prepaid_tenants_climb_and_a_hold_overrides_the_balance() {
        let postpaid = Standing { prepaid: false, ..standing(State::Ok, -500, 100) };
        assert_eq!(postpaid.next_state(postpaid.since), State::Ok);
        let held = Standing { hold: Some("fraud review".into()), ..standing(State::Ok, 500, 0) };
        assert_eq!(held.next_state(held.since), State::Suspended);
    }
}
