//! Webhook endpoints, their deliveries and every attempt (DESIGN §11).
//!
//! * Endpoints belong to a tenant; every query here is scoped by it but the workers' and the
//!   operators' (named so).
//! * [`fan_out`] makes one delivery per (subscribed endpoint, event), unique, so a consumer that
//!   handles an event twice sends nothing twice.
//! * A delivery is `pending` until an attempt succeeds or its schedule runs out; a worker holds it
//!   while sending (`locked_until`, so a crashed worker's delivery is taken again after the lease:
//!   a fresh one from [`fan_out`] on, a due one from [`claim`]) and settles it with [`settle`], which also logs the attempt, tracks the endpoint's
//!   failing streak and disables it (`gone` on 410, `failing` after five days of failures, with a
//!   `webhook.endpoint_disabled` event in the same transaction).

use chrono::{DateTime, Duration, Utc};
use nimbus_domain::TenantId;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::events::{self, NewEvent};
use crate::{DbError, Result};

/// An endpoint failing for this long without a success is disabled.
pub const FAILING_DISABLES_AFTER: Duration = Duration::days(5);

/// An endpoint.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Endpoint {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub rate_limit: Option<i32>,
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What an owner sets on an endpoint.
#[derive(Clone, Debug, Default)]
pub struct EndpointFields {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
    /// `Some(None)` removes the cap.
    pub rate_limit: Option<Option<i32>>,
}

macro_rules! endpoint_columns {
    () => {
        "id, tenant_id, url, description, event_types, enabled, disabled_reason, secret, previous_secret, \
         previous_secret_expires_at, rate_limit, failing_since, created_at, updated_at"
    };
}

/// A new endpoint.
#[derive(Clone, Debug)]
pub struct NewEndpoint<'a> {
    pub url: &'a str,
    pub description: &'a str,
    /// Empty: every type.
    pub event_types: &'a [String],
    pub enabled: bool,
    pub rate_limit: Option<i32>,
    /// `whsec_…`.
    pub secret: &'a str,
}

/// Creates an endpoint.
pub async fn create(ex: impl PgExecutor<'_>, tenant: TenantId, new: &NewEndpoint<'_>) -> Result<Endpoint> {
    Ok(sqlx::query_as(concat!(
        "insert into webhook_endpoints (id, tenant_id, url, description, event_types, enabled, rate_limit, secret) \
         values ($1, $2, $3, $4, $5, $6, $7, $8) returning ",
        endpoint_columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(tenant.as_uuid())
    .bind(new.url)
    .bind(new.description)
    .bind(new.event_types)
    .bind(new.enabled)
    .bind(new.rate_limit)
    .bind(new.secret)
    .fetch_one(ex)
    .await?)
}

/// The tenant's endpoints, oldest first.
pub async fn list(ex: impl PgExecutor<'_>, tenant: TenantId) -> Result<Vec<Endpoint>> {
    Ok(sqlx::query_as(concat!(
        "select ",
        endpoint_columns!(),
        " from webhook_endpoints where tenant_id = $1 order by created_at, id"
    ))
    .bind(tenant.as_uuid())
    .fetch_all(ex)
    .await?)
}

/// How many endpoints the tenant has.
pub async fn count(ex: impl PgExecutor<'_>, tenant: TenantId) -> Result<i64> {
    Ok(sqlx::query_scalar("select count(*) from webhook_endpoints where tenant_id = $1")
        .bind(tenant.as_uuid())
        .fetch_one(ex)
        .await?)
}

/// One of the tenant's endpoints.
pub async fn get(ex: impl PgExecutor<'_>, tenant: TenantId, id: Uuid) -> Result<Endpoint> {
    Ok(sqlx::query_as(concat!(
        "select ",
        endpoint_columns!(),
        " from webhook_endpoints where tenant_id = $1 and id = $2"
    ))
    .bind(tenant.as_uuid())
    .bind(id)
    .fetch_one(ex)
    .await?)
}

/// Changes what `fields` sets. Enabling clears the reason the system disabled it and its
/// failing streak, so it gets a fresh five days.
pub async fn update(ex: impl PgExecutor<'_>, tenant: TenantId, id: Uuid, fields: &EndpointFields) -> Result<Endpoint> {
    Ok(sqlx::query_as(concat!(
        "update webhook_endpoints set url = coalesce($3, url), description = coalesce($4, description), \
         event_types = coalesce($5, event_types), enabled = coalesce($6, enabled), \
         rate_limit = case when $7 then $8 else rate_limit end, \
         disabled_reason = case when $6 then null else disabled_reason end, \
         failing_since = case when $6 and not enabled then null else failing_since end, \
         updated_at = now() where tenant_id = $1 and id = $2 returning ",
        endpoint_columns!()
    ))
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(&fields.url)
    .bind(&fields.description)
    .bind(&fields.event_types)
    .bind(fields.enabled)
    .bind(fields.rate_limit.is_some())
    .bind(fields.rate_limit.flatten())
    .fetch_one(ex)
    .await?)
}

/// Deletes an endpoint and its log.
pub async fn delete(ex: impl PgExecutor<'_>, tenant: TenantId, id: Uuid) -> Result<()> {
    let done = sqlx::query("delete from webhook_endpoints where tenant_id = $1 and id = $2")
        .bind(tenant.as_uuid())
        .bind(id)
        .execute(ex)
        .await?;
    if done.rows_affected() == 0 { Err(DbError::NotFound) } else { Ok(()) }
}

/// Replaces the secret with `secret`; the current one keeps signing until `previous_until`.
pub async fn rotate_secret(
    ex: impl PgExecutor<'_>,
    tenant: TenantId,
    id: Uuid,
    secret: &str,
    previous_until: DateTime<Utc>,
) -> Result<Endpoint> {
    Ok(sqlx::query_as(concat!(
        "update webhook_endpoints set previous_secret = secret, previous_secret_expires_at = $4, secret = $3, \
         updated_at = now() where tenant_id = $1 and id = $2 returning ",
        endpoint_columns!()
    ))
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(secret)
    .bind(previous_until)
    .fetch_one(ex)
    .await?)
}

/// An endpoint with its health, as operators see it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct EndpointHealth {
    #[sqlx(flatten)]
    pub endpoint: Endpoint,
    pub tenant_name: String,
    /// Attempts in the last 24 hours, and how many of them succeeded.
    pub attempts_24h: i64,
    pub succeeded_24h: i64,
    /// Deliveries waiting to be sent.
    pub pending: i64,
    pub last_attempt_at: Option<DateTime<Utc>>,
}

/// Every tenant's endpoints with their health, the unhealthy first (operators).
pub async fn all_with_health(ex: impl PgExecutor<'_>, now: DateTime<Utc>) -> Result<Vec<EndpointHealth>> {
    Ok(sqlx::query_as(
        "select w.id, w.tenant_id, w.url, w.description, w.event_types, w.enabled, w.disabled_reason, w.secret, \
         w.previous_secret, w.previous_secret_expires_at, w.rate_limit, w.failing_since, w.created_at, w.updated_at, \
         t.name as tenant_name, coalesce(a.attempts, 0) as attempts_24h, coalesce(a.succeeded, 0) as succeeded_24h, \
         (select count(*) from webhook_deliveries d where d.endpoint_id = w.id and d.status = 'pending') as pending, \
         a.last_attempt_at \
         from webhook_endpoints w join tenants t on t.id = w.tenant_id \
         left join lateral (select count(*) as attempts, count(*) filter (where x.succeeded) as succeeded, \
             max(x.attempted_at) as last_attempt_at from webhook_deliveries d \
             join webhook_attempts x on x.delivery_id = d.id \
             where d.endpoint_id = w.id and x.attempted_at > $1 - interval '1 day') a on true \
         order by w.enabled, w.failing_since nulls last, t.name, w.created_at",
    )
    .bind(now)
    .fetch_all(ex)
    .await?)
}

/// The body a delivery of event `e` sends: `{id, type, timestamp, tenantId, resource, data}`.
macro_rules! delivery_payload {
    () => {
        "jsonb_build_object('id', e.id, 'type', e.type, 'timestamp', e.occurred_at, 'tenantId', e.tenant_id, \
         'resource', case when e.resource_type is null then null \
           else jsonb_build_object('type', e.resource_type, 'id', e.resource_id) end, 'data', e.data)"
    };
}

/// Makes the deliveries `events` owe: one per enabled endpoint of the event's tenant subscribed
/// to its type (the test event only to the endpoint it names), due at `now` and already held for
/// `lease` by the caller, who attempts them at once (no separate claim: one write less per
/// delivery). Returns the new deliveries; those that existed already are left alone (a worker or
/// the poll has them).
pub async fn fan_out(
    ex: impl PgExecutor<'_>,
    events: &[Uuid],
    now: DateTime<Utc>,
    lease: Duration,
) -> Result<Vec<Claimed>> {
    Ok(sqlx::query_as(concat!(
        // The payload is built once per event, not once per endpoint.
        "with e as materialized (select e.id, e.tenant_id, e.type, e.resource_id, ",
        delivery_payload!(),
        " as payload from events e where e.id = any($1)), \
         made as (insert into webhook_deliveries \
             (id, tenant_id, endpoint_id, event_id, event_type, payload, next_attempt_at, locked_until) \
           select gen_random_uuid(), e.tenant_id, w.id, e.id, e.type, e.payload, $2, $2 + $3 \
           from e join webhook_endpoints w on w.tenant_id = e.tenant_id \
           where w.enabled and case when e.type = 'webhook.test' then w.id::text = e.resource_id \
               else cardinality(w.event_types) = 0 or e.type = any(w.event_types) end \
           on conflict (endpoint_id, event_id) do nothing \
           returning id, tenant_id, endpoint_id, event_id, event_type, payload, attempts, locked_until) \
         select d.id, d.tenant_id, d.endpoint_id, d.event_id, d.event_type, d.payload::text as payload, d.attempts, \
           d.locked_until, w.url, w.secret, \
           case when w.previous_secret_expires_at > $2 then w.previous_secret end as previous_secret, w.rate_limit \
         from made d join webhook_endpoints w on w.id = d.endpoint_id"
    ))
    .bind(events)
    .bind(now)
    .bind(lease)
    .fetch_all(ex)
    .await?)
}

/// A delivery as the log shows it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Delivery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub payload: Value,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_status_code: Option<i32>,
}

macro_rules! delivery_columns {
    () => {
        "d.id, d.endpoint_id, d.event_id, d.event_type, d.payload, d.status, d.attempts, d.next_attempt_at, \
         d.created_at, d.updated_at, (select x.status_code from webhook_attempts x where x.delivery_id = d.id \
         order by x.id desc limit 1) as last_status_code"
    };
}

/// The endpoint's deliveries, newest first, optionally of one status; with the total.
pub async fn deliveries(
    ex: &mut PgConnection,
    tenant: TenantId,
    endpoint: Uuid,
    status: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Delivery>, i64)> {
    let rows = sqlx::query_as(concat!(
        "select ",
        delivery_columns!(),
        " from webhook_deliveries d where d.tenant_id = $1 and d.endpoint_id = $2 \
         and ($3::text is null or d.status = $3) order by d.created_at desc, d.id desc limit $4 offset $5"
    ))
    .bind(tenant.as_uuid())
    .bind(endpoint)
    .bind(status)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *ex)
    .await?;
    let total = sqlx::query_scalar(
        "select count(*) from webhook_deliveries where tenant_id = $1 and endpoint_id = $2 \
         and ($3::text is null or status = $3)",
    )
    .bind(tenant.as_uuid())
    .bind(endpoint)
    .bind(status)
    .fetch_one(&mut *ex)
    .await?;
    Ok((rows, total))
}

/// One delivery of the endpoint.
pub async fn delivery(ex: impl PgExecutor<'_>, tenant: TenantId, endpoint: Uuid, id: Uuid) -> Result<Delivery> {
    Ok(sqlx::query_as(concat!(
        "select ",
        delivery_columns!(),
        " from webhook_deliveries d where d.tenant_id = $1 and d.endpoint_id = $2 and d.id = $3"
    ))
    .bind(tenant.as_uuid())
    .bind(endpoint)
    .bind(id)
    .fetch_one(ex)
    .await?)
}

/// One attempt.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Attempt {
    pub attempted_at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub latency_ms: i32,
    pub response_body: String,
    pub succeeded: bool,
}

/// A delivery's attempts, oldest first.
pub async fn attempts(ex: impl PgExecutor<'_>, delivery: Uuid) -> Result<Vec<Attempt>> {
    Ok(sqlx::query_as(
        "select attempted_at, status_code, error, latency_ms, response_body, succeeded from webhook_attempts \
         where delivery_id = $1 order by id",
    )
    .bind(delivery)
    .fetch_all(ex)
    .await?)
}

/// Sends a delivery again at `now` with a fresh schedule, whatever became of it.
pub async fn replay(
    ex: impl PgExecutor<'_>,
    tenant: TenantId,
    endpoint: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<()> {
    let done = sqlx::query(
        "update webhook_deliveries set status = 'pending', attempts = 0, next_attempt_at = $4, locked_until = null, \
         updated_at = now() where tenant_id = $1 and endpoint_id = $2 and id = $3",
    )
    .bind(tenant.as_uuid())
    .bind(endpoint)
    .bind(id)
    .bind(now)
    .execute(ex)
    .await?;
    if done.rows_affected() == 0 { Err(DbError::NotFound) } else { Ok(()) }
}

/// Recovers the endpoint's deliveries of events from `since` to `until`: events it is subscribed
/// to but has no delivery of (it was disabled, or did not exist yet) get one, and failed
/// deliveries are sent again. Returns how many deliveries are due now.
pub async fn recover(
    conn: &mut PgConnection,
    tenant: TenantId,
    endpoint: Uuid,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64> {
    let events: Vec<Uuid> = sqlx::query_scalar(
        "select e.id from events e join webhook_endpoints w on w.tenant_id = e.tenant_id \
         where w.tenant_id = $1 and w.id = $2 and e.occurred_at >= $3 and e.occurred_at < $4 \
           and e.type <> 'webhook.test' and (cardinality(w.event_types) = 0 or e.type = any(w.event_types))",
    )
    .bind(tenant.as_uuid())
    .bind(endpoint)
    .bind(since)
    .bind(until)
    .fetch_all(&mut *conn)
    .await?;
    let created = sqlx::query(concat!(
        "insert into webhook_deliveries (id, tenant_id, endpoint_id, event_id, event_type, payload, next_attempt_at) \
         select gen_random_uuid(), e.tenant_id, $2, e.id, e.type, ",
        delivery_payload!(),
        ", $4 from events e where e.id = any($3) and e.tenant_id = $1 \
         on conflict (endpoint_id, event_id) do nothing"
    ))
    .bind(tenant.as_uuid())
    .bind(endpoint)
    .bind(&events)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let retried = sqlx::query(
        "update webhook_deliveries set status = 'pending', attempts = 0, next_attempt_at = $4, locked_until = null, \
         updated_at = now() where tenant_id = $1 and endpoint_id = $2 and event_id = any($3) and status = 'failed'",
    )
    .bind(tenant.as_uuid())
    .bind(endpoint)
    .bind(&events)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(created.rows_affected() + retried.rows_affected())
}

/// A delivery a worker holds, with what sending it needs.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    /// The body, as stored (sent as it is: it is never parsed again).
    pub payload: String,
    pub attempts: i32,
    /// Until when this worker holds it: an attempt must be over (and settled) by then.
    pub locked_until: DateTime<Utc>,
    pub url: String,
    pub secret: String,
    /// The previous secret while it still signs.
    pub previous_secret: Option<String>,
    pub rate_limit: Option<i32>,
}

/// Takes, for `lease`, up to `limit` due deliveries of enabled endpoints, the longest due first,
/// so that no other worker sends them meanwhile.
pub async fn claim(ex: impl PgExecutor<'_>, limit: i64, now: DateTime<Utc>, lease: Duration) -> Result<Vec<Claimed>> {
    Ok(sqlx::query_as(
        "with due as (select d.id from webhook_deliveries d join webhook_endpoints w on w.id = d.endpoint_id \
             where d.status = 'pending' and d.next_attempt_at <= $2 and w.enabled \
               and (d.locked_until is null or d.locked_until <= $2) \
             order by d.next_attempt_at limit $1 for update of d skip locked) \
         update webhook_deliveries d set locked_until = $2 + $3 from due, webhook_endpoints w \
         where d.id = due.id and w.id = d.endpoint_id \
         returning d.id, d.tenant_id, d.endpoint_id, d.event_id, d.event_type, d.payload::text as payload, d.attempts, \
           d.locked_until, w.url, w.secret, \
           case when w.previous_secret_expires_at > $2 then w.previous_secret end as previous_secret, w.rate_limit",
    )
    .bind(limit)
    .bind(now)
    .bind(lease)
    .fetch_all(ex)
    .await?)
}

/// Puts a held delivery back, due at `at`, without counting an attempt (its endpoint's rate cap
/// was reached).
pub async fn postpone(ex: impl PgExecutor<'_>, id: Uuid, at: DateTime<Utc>) -> Result<()> {
    sqlx::query(
        "update webhook_deliveries set next_attempt_at = $2, locked_until = null where id = $1 and status = 'pending'",
    )
    .bind(id)
    .bind(at)
    .execute(ex)
    .await?;
    Ok(())
}

/// What one attempt got.
#[derive(Clone, Debug)]
pub struct AttemptResult {
    pub at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub latency_ms: i32,
    pub response_body: String,
    /// 2xx.
    pub succeeded: bool,
    /// 410: the receiver asks for no more.
    pub gone: bool,
    /// When to try again after a failure; `None` when the schedule has run out.
    pub retry_at: Option<DateTime<Utc>>,
}

/// What settling an attempt did to the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointChange {
    /// Nothing.
    None,
    /// Disabled: the receiver answered 410.
    DisabledGone,
    /// Disabled: failing for five days.
    DisabledFailing,
}

/// Logs each attempt of `settled` (held deliveries and what their attempt got) and settles its
/// delivery: succeeded, pending until `retry_at`, or failed; then tracks each endpoint's failing
/// streak (ended by a success, started by a failure) and disables an endpoint whose receiver is
/// gone or that has failed for [`FAILING_DISABLES_AFTER`], recording `webhook.endpoint_disabled`.
/// Call inside one transaction: a batch is settled together (one commit for many attempts).
/// Returns the endpoints it disabled and why.
pub async fn settle(
    conn: &mut PgConnection,
    settled: &[(Claimed, AttemptResult)],
) -> Result<Vec<(Uuid, EndpointChange)>> {
    if settled.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = settled.iter().map(|(d, _)| d.id).collect();
    let at: Vec<DateTime<Utc>> = settled.iter().map(|(_, r)| r.at).collect();
    let codes: Vec<Option<i32>> = settled.iter().map(|(_, r)| r.status_code).collect();
    let errors: Vec<Option<String>> = settled.iter().map(|(_, r)| r.error.clone()).collect();
    let latency: Vec<i32> = settled.iter().map(|(_, r)| r.latency_ms).collect();
    let bodies: Vec<&str> = settled.iter().map(|(_, r)| r.response_body.as_str()).collect();
    let succeeded: Vec<bool> = settled.iter().map(|(_, r)| r.succeeded).collect();
    let (status, next): (Vec<&str>, Vec<Option<DateTime<Utc>>>) = settled
        .iter()
        .map(|(_, r)| match (r.succeeded, r.retry_at) {
            (true, _) => ("succeeded", None),
            (false, Some(at)) if !r.gone => ("pending", Some(at)),
            _ => ("failed", None),
        })
        .unzip();
    sqlx::query(
        "insert into webhook_attempts (delivery_id, attempted_at, status_code, error, latency_ms, response_body, succeeded) \
         select * from unnest($1::uuid[], $2::timestamptz[], $3::int[], $4::text[], $5::int[], $6::text[], $7::bool[])",
    )
    .bind(&ids)
    .bind(&at)
    .bind(&codes)
    .bind(&errors)
    .bind(&latency)
    .bind(&bodies)
    .bind(&succeeded)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "update webhook_deliveries d set status = u.status, attempts = d.attempts + 1, next_attempt_at = u.next, \
         locked_until = null, updated_at = u.at \
         from unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[]) as u(id, status, next, at) \
         where d.id = u.id",
    )
    .bind(&ids)
    .bind(&status)
    .bind(&next)
    .bind(&at)
    .execute(&mut *conn)
    .await?;

    // Each endpoint's last outcome in the batch decides its streak.
    let mut last: std::collections::BTreeMap<Uuid, &(Claimed, AttemptResult)> = Default::default();
    for item in settled {
        let entry = last.entry(item.0.endpoint_id).or_insert(item);
        if item.1.at >= entry.1.at {
            *entry = item;
        }
    }
    let recovered: Vec<Uuid> = last.values().filter(|(_, r)| r.succeeded).map(|(d, _)| d.endpoint_id).collect();
    if !recovered.is_empty() {
        sqlx::query(
            "update webhook_endpoints set failing_since = null where id = any($1) and failing_since is not null",
        )
        .bind(&recovered)
        .execute(&mut *conn)
        .await?;
    }
    let mut changes = Vec::new();
    for (d, r) in last.values().filter(|(_, r)| !r.succeeded) {
        let change = track_failure(conn, d, r).await?;
        if change != EndpointChange::None {
            changes.push((d.endpoint_id, change));
        }
    }
    Ok(changes)
}

/// A failure of `d`'s endpoint: starts its failing streak, and disables it when the receiver is
/// gone or the streak reached [`FAILING_DISABLES_AFTER`].
async fn track_failure(conn: &mut PgConnection, d: &Claimed, result: &AttemptResult) -> Result<EndpointChange> {
    let failing_since: Option<DateTime<Utc>> = sqlx::query_scalar(
        "update webhook_endpoints set failing_since = coalesce(failing_since, $2) where id = $1 returning failing_since",
    )
    .bind(d.endpoint_id)
    .bind(result.at)
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    let change = if result.gone {
        EndpointChange::DisabledGone
    } else if failing_since.is_some_and(|since| result.at - since >= FAILING_DISABLES_AFTER) {
        EndpointChange::DisabledFailing
    } else {
        return Ok(EndpointChange::None);
    };
    let reason = if change == EndpointChange::DisabledGone { "gone" } else { "failing" };
    let url: Option<String> = sqlx::query_scalar(
        "update webhook_endpoints set enabled = false, disabled_reason = $2, updated_at = now() \
         where id = $1 and enabled returning url",
    )
    .bind(d.endpoint_id)
    .bind(reason)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(url) = url {
        let event = NewEvent {
            kind: events::types::WEBHOOK_ENDPOINT_DISABLED,
            at: result.at,
            tenant: Some(d.tenant_id.into()),
            resource: Some(("webhook_endpoint", d.endpoint_id.to_string())),
            data: serde_json::json!({
                "id": d.endpoint_id, "url": url, "reason": reason, "failingSince": failing_since,
                "lastStatusCode": result.status_code, "lastError": result.error,
            }),
        };
        events::record(&mut *conn, &event).await?;
    }
    Ok(change)
}
