//! Webhook endpoints, their deliveries and every attempt (DESIGN §11).
//!
//! * Endpoints belong to a tenant; every query here is scoped by it but the workers' and the
//!   operators' (named so).
//! * A delivery is one per (endpoint, event): its id is derived from the pair ([`delivery_id`],
//!   `webhook_delivery_id` in SQL), so a consumer that handles an event twice sends nothing twice.
//! * [`owed`] says which deliveries new events owe, writing nothing: the worker attempts them at
//!   once and writes each with the outcome of its first attempt ([`settle`]), or as due for the
//!   poll ([`defer`]) when it cannot attempt it in time. Until then the events stream holds the
//!   event, unacknowledged, so a crashed worker's events are fanned out again by another.
//! * A recorded delivery is `pending` until an attempt succeeds or its schedule runs out; a
//!   worker holds it while sending (`locked_until`, from [`claim`], so a crashed worker's delivery
//!   is taken again after the lease). [`settle`] also logs every attempt in the delivery's row
//!   (the latest in `last_*` columns, those before it in `attempt_log`), tracks the endpoint's
//!   failing streak and disables it (`gone` on 410, `failing` after five days of failures, with a
//!   `webhook.endpoint_disabled` event in the same transaction).
//! * A delivery's body is built from its event whenever it is sent or shown, never stored.

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

/// Every attempt of delivery `d`, oldest first by `x.n`: those in `attempt_log`, then the latest
/// from its `last_*` columns. A lateral subquery of `d`'s row.
macro_rules! every_attempt {
    () => {
        "lateral (select l.* from rows from (jsonb_to_recordset(d.attempt_log) \
             as (at timestamptz, \"statusCode\" int, error text, \"latencyMs\" int, body text, succeeded bool)) \
             with ordinality as l \
           union all select d.last_attempt_at, d.last_status_code, d.last_error, d.last_latency_ms, \
             d.last_response_body, d.last_succeeded, jsonb_array_length(d.attempt_log) + 1 \
           where d.last_attempt_at is not null) \
         as x(at, status_code, error, latency_ms, response_body, succeeded, n)"
    };
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
    Ok(sqlx::query_as(concat!(
        "select w.id, w.tenant_id, w.url, w.description, w.event_types, w.enabled, w.disabled_reason, w.secret, \
         w.previous_secret, w.previous_secret_expires_at, w.rate_limit, w.failing_since, w.created_at, w.updated_at, \
         t.name as tenant_name, coalesce(a.attempts, 0) as attempts_24h, coalesce(a.succeeded, 0) as succeeded_24h, \
         (select count(*) from webhook_deliveries d where d.endpoint_id = w.id and d.status = 'pending') as pending, \
         a.last_attempt_at \
         from webhook_endpoints w join tenants t on t.id = w.tenant_id \
         left join lateral (select count(*) as attempts, count(*) filter (where x.succeeded) as succeeded, \
             max(x.at) as last_attempt_at from webhook_deliveries d, ",
        every_attempt!(),
        " where d.endpoint_id = w.id and d.updated_at > $1 - interval '1 day' \
               and x.at > $1 - interval '1 day') a on true \
         order by w.enabled, w.failing_since nulls last, t.name, w.created_at"
    ))
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

/// The id of the delivery of `event` to `endpoint`: the same for every writer, so the primary
/// key keeps one delivery per pair. SQL computes it as `webhook_delivery_id(endpoint, event)`:
/// the MD5 of both ids as text, read as a UUID.
pub fn delivery_id(endpoint: Uuid, event: Uuid) -> Uuid {
    use md5::Digest;
    let mut hasher = md5::Md5::new();
    hasher.update(endpoint.hyphenated().encode_lower(&mut Uuid::encode_buffer()).as_bytes());
    hasher.update(event.hyphenated().encode_lower(&mut Uuid::encode_buffer()).as_bytes());
    Uuid::from_bytes(hasher.finalize().into())
}

/// An event as [`owed`] fans it out.
#[derive(sqlx::FromRow)]
struct OwedEvent {
    id: Uuid,
    tenant_id: Uuid,
    r#type: String,
    resource_id: Option<String>,
    payload: String,
}

/// An enabled endpoint as [`owed`] matches it to events.
#[derive(sqlx::FromRow)]
struct Subscriber {
    id: Uuid,
    tenant_id: Uuid,
    url: String,
    secret: String,
    previous_secret: Option<String>,
    rate_limit: Option<i32>,
    event_types: Vec<String>,
}

impl Subscriber {
    /// Whether this endpoint is sent `event`: the test event only to the endpoint it names.
    fn wants(&self, event: &OwedEvent) -> bool {
        if event.r#type == events::types::WEBHOOK_TEST {
            return event.resource_id.as_deref().and_then(|r| r.parse::<Uuid>().ok()) == Some(self.id);
        }
        self.event_types.is_empty() || self.event_types.contains(&event.r#type)
    }
}

/// The deliveries `events` owe that are not recorded yet: one per enabled endpoint of the
/// event's tenant subscribed to its type (the test event only to the endpoint it names). Nothing
/// is written: the caller attempts them at once and records each with the outcome of its first
/// attempt ([`settle`]), or as due when it cannot attempt it ([`defer`]); until then the events
/// stream holds the event. They are the caller's until `now + hold` (their `locked_until`): an
/// attempt that could not end by then is not started.
///
/// Three reads, none per pair: the events (each body built once), their tenants' enabled
/// endpoints, and which of the pairs' derived ids are recorded already.
pub async fn owed(db: &crate::PgPool, events: &[Uuid], now: DateTime<Utc>, hold: Duration) -> Result<Vec<Claimed>> {
    let events: Vec<OwedEvent> = sqlx::query_as(concat!(
        "select e.id, e.tenant_id, e.type, e.resource_id, ",
        delivery_payload!(),
        "::text as payload from events e where e.id = any($1) and e.tenant_id is not null"
    ))
    .bind(events)
    .fetch_all(db)
    .await?;
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut tenants: Vec<Uuid> = events.iter().map(|e| e.tenant_id).collect();
    tenants.sort_unstable();
    tenants.dedup();
    let subscribers: Vec<Subscriber> = sqlx::query_as(
        "select id, tenant_id, url, secret, case when previous_secret_expires_at > $2 then previous_secret end \
           as previous_secret, rate_limit, event_types \
         from webhook_endpoints where tenant_id = any($1) and enabled",
    )
    .bind(&tenants)
    .bind(now)
    .fetch_all(db)
    .await?;
    let pairs: Vec<(&OwedEvent, &Subscriber, Uuid)> = events
        .iter()
        .flat_map(|e| {
            subscribers
                .iter()
                .filter(move |w| w.tenant_id == e.tenant_id && w.wants(e))
                .map(move |w| (e, w, delivery_id(w.id, e.id)))
        })
        .collect();
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let recorded: std::collections::HashSet<Uuid> =
        sqlx::query_scalar::<_, Uuid>("select id from webhook_deliveries where id = any($1)")
            .bind(pairs.iter().map(|(_, _, id)| *id).collect::<Vec<_>>())
            .fetch_all(db)
            .await?
            .into_iter()
            .collect();
    Ok(pairs
        .into_iter()
        .filter(|(_, _, id)| !recorded.contains(id))
        .map(|(e, w, id)| Claimed {
            id,
            tenant_id: e.tenant_id,
            endpoint_id: w.id,
            event_id: e.id,
            event_type: e.r#type.clone(),
            payload: e.payload.clone(),
            attempts: 0,
            locked_until: now + hold,
            url: w.url.clone(),
            secret: w.secret.clone(),
            previous_secret: w.previous_secret.clone(),
            rate_limit: w.rate_limit,
            recorded: false,
        })
        .collect())
}

/// Records `deliveries` as due at `at`, unheld, without counting an attempt: the poll ([`claim`])
/// sends them then. Unrecorded ones are written (unless a delivery of the pair exists already);
/// recorded ones are put back.
pub async fn defer(conn: &mut PgConnection, deliveries: &[&Claimed], at: DateTime<Utc>) -> Result<()> {
    use sqlx::Acquire;
    let mut tx = conn.begin().await?;
    let conn = &mut *tx;
    let (recorded, fresh): (Vec<&Claimed>, Vec<&Claimed>) = deliveries.iter().copied().partition(|d| d.recorded);
    let live = lock_endpoints(conn, fresh.iter().map(|d| d.endpoint_id)).await?;
    let fresh: Vec<&Claimed> = fresh.into_iter().filter(|d| live.contains(&(d.endpoint_id, d.tenant_id))).collect();
    if !fresh.is_empty() {
        sqlx::query(
            "insert into webhook_deliveries (id, tenant_id, endpoint_id, event_id, event_type, next_attempt_at) \
             select u.id, u.tenant, u.endpoint, u.event, u.type, $6 \
             from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[]) as u(id, tenant, endpoint, event, type) \
             on conflict (id) do nothing",
        )
        .bind(fresh.iter().map(|d| d.id).collect::<Vec<_>>())
        .bind(fresh.iter().map(|d| d.tenant_id).collect::<Vec<_>>())
        .bind(fresh.iter().map(|d| d.endpoint_id).collect::<Vec<_>>())
        .bind(fresh.iter().map(|d| d.event_id).collect::<Vec<_>>())
        .bind(fresh.iter().map(|d| d.event_type.as_str()).collect::<Vec<_>>())
        .bind(at)
        .execute(&mut *conn)
        .await?;
    }
    if !recorded.is_empty() {
        sqlx::query(
            "update webhook_deliveries set next_attempt_at = $2, locked_until = null \
             where id = any($1) and status = 'pending'",
        )
        .bind(recorded.iter().map(|d| d.id).collect::<Vec<_>>())
        .bind(at)
        .execute(&mut *conn)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Locks `endpoints` against deletion until the transaction ends (what a foreign key would do
/// for each delivery written, once for a batch) and returns those that exist, with their tenant:
/// deliveries are written only for these. Deleting an endpoint then waits for the batch, and its
/// trigger deletes what the batch wrote.
async fn lock_endpoints(
    conn: &mut PgConnection,
    endpoints: impl Iterator<Item = Uuid>,
) -> Result<std::collections::HashSet<(Uuid, Uuid)>> {
    let mut endpoints: Vec<Uuid> = endpoints.collect();
    if endpoints.is_empty() {
        return Ok(Default::default());
    }
    endpoints.sort_unstable();
    endpoints.dedup();
    let live: Vec<(Uuid, Uuid)> =
        sqlx::query_as("select id, tenant_id from webhook_endpoints where id = any($1) order by id for key share")
            .bind(&endpoints)
            .fetch_all(&mut *conn)
            .await?;
    Ok(live.into_iter().collect())
}

/// The latest attempt of delivery `d`, from its `last_*` columns, as `attempt_log` keeps the
/// attempts before it.
macro_rules! last_attempt_entry {
    () => {
        "jsonb_build_object('at', d.last_attempt_at, 'statusCode', d.last_status_code, 'error', d.last_error, \
         'latencyMs', d.last_latency_ms, 'body', d.last_response_body, 'succeeded', d.last_succeeded)"
    };
}

/// A delivery as the log shows it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Delivery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_status_code: Option<i32>,
}

macro_rules! delivery_columns {
    () => {
        "d.id, d.endpoint_id, d.event_id, d.event_type, d.status, d.attempts, d.next_attempt_at, d.created_at, \
         d.updated_at, d.last_status_code"
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

/// The body one delivery of the endpoint sends, built from its event.
pub async fn payload(ex: impl PgExecutor<'_>, tenant: TenantId, endpoint: Uuid, id: Uuid) -> Result<Value> {
    Ok(sqlx::query_scalar(concat!(
        "select ",
        delivery_payload!(),
        " from webhook_deliveries d join events e on e.id = d.event_id \
         where d.tenant_id = $1 and d.endpoint_id = $2 and d.id = $3"
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
    Ok(sqlx::query_as(concat!(
        "select x.at as attempted_at, x.status_code, x.error, x.latency_ms, x.response_body, x.succeeded \
         from webhook_deliveries d, ",
        every_attempt!(),
        " where d.id = $1 order by x.n"
    ))
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
/// deliveries are sent again. Returns how many deliveries are due now. Call inside a transaction:
/// the endpoint stays locked against deletion while its deliveries are written.
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
           and e.type <> 'webhook.test' and (cardinality(w.event_types) = 0 or e.type = any(w.event_types)) \
         for key share of w",
    )
    .bind(tenant.as_uuid())
    .bind(endpoint)
    .bind(since)
    .bind(until)
    .fetch_all(&mut *conn)
    .await?;
    let created = sqlx::query(
        "insert into webhook_deliveries (id, tenant_id, endpoint_id, event_id, event_type, next_attempt_at) \
         select webhook_delivery_id($2, e.id), e.tenant_id, $2, e.id, e.type, $4 \
         from events e where e.id = any($3) and e.tenant_id = $1 \
         on conflict (id) do nothing",
    )
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
    /// The body, built from the event (immutable, so every attempt sends the same), sent as it is.
    pub payload: String,
    pub attempts: i32,
    /// Until when this worker holds it: an attempt must be over (and settled) by then.
    pub locked_until: DateTime<Utc>,
    pub url: String,
    pub secret: String,
    /// The previous secret while it still signs.
    pub previous_secret: Option<String>,
    pub rate_limit: Option<i32>,
    /// Whether the delivery has its row: false for one [`owed`] returned, until it is settled or
    /// deferred.
    pub recorded: bool,
}

/// Takes, for `lease`, up to `limit` due deliveries of enabled endpoints, the longest due first,
/// so that no other worker sends them meanwhile.
pub async fn claim(ex: impl PgExecutor<'_>, limit: i64, now: DateTime<Utc>, lease: Duration) -> Result<Vec<Claimed>> {
    Ok(sqlx::query_as(concat!(
        "with due as (select d.id from webhook_deliveries d join webhook_endpoints w on w.id = d.endpoint_id \
             where d.status = 'pending' and d.next_attempt_at <= $2 and w.enabled \
               and (d.locked_until is null or d.locked_until <= $2) \
             order by d.next_attempt_at limit $1 for update of d skip locked) \
         update webhook_deliveries d set locked_until = $2 + $3 from due, webhook_endpoints w, events e \
         where d.id = due.id and w.id = d.endpoint_id and e.id = d.event_id \
         returning d.id, d.tenant_id, d.endpoint_id, d.event_id, d.event_type, ",
        delivery_payload!(),
        "::text as payload, d.attempts, d.locked_until, w.url, w.secret, \
           case when w.previous_secret_expires_at > $2 then w.previous_secret end as previous_secret, w.rate_limit, \
           true as recorded"
    ))
    .bind(limit)
    .bind(now)
    .bind(lease)
    .fetch_all(ex)
    .await?)
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

/// Attempts as columns, for `unnest`.
struct AttemptColumns<'a> {
    ids: Vec<Uuid>,
    status: Vec<&'static str>,
    next: Vec<Option<DateTime<Utc>>>,
    at: Vec<DateTime<Utc>>,
    codes: Vec<Option<i32>>,
    errors: Vec<Option<&'a str>>,
    latency: Vec<i32>,
    bodies: Vec<&'a str>,
    succeeded: Vec<bool>,
}

impl<'a> AttemptColumns<'a> {
    /// Binds the outcome columns, in this order: status, next, at, code, error, latency, body, ok.
    fn bind_outcomes<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(&self.status)
            .bind(&self.next)
            .bind(&self.at)
            .bind(&self.codes)
            .bind(&self.errors)
            .bind(&self.latency)
            .bind(&self.bodies)
            .bind(&self.succeeded)
    }

    fn of(items: &[&'a (Claimed, AttemptResult)]) -> Self {
        let (status, next) = items
            .iter()
            .map(|(_, r)| match (r.succeeded, r.retry_at) {
                (true, _) => ("succeeded", None),
                (false, Some(at)) if !r.gone => ("pending", Some(at)),
                _ => ("failed", None),
            })
            .unzip();
        AttemptColumns {
            ids: items.iter().map(|(d, _)| d.id).collect(),
            status,
            next,
            at: items.iter().map(|(_, r)| r.at).collect(),
            codes: items.iter().map(|(_, r)| r.status_code).collect(),
            errors: items.iter().map(|(_, r)| r.error.as_deref()).collect(),
            latency: items.iter().map(|(_, r)| r.latency_ms).collect(),
            bodies: items.iter().map(|(_, r)| r.response_body.as_str()).collect(),
            succeeded: items.iter().map(|(_, r)| r.succeeded).collect(),
        }
    }
}

/// Logs each attempt of `settled` (deliveries and what their attempt got) and settles its
/// delivery: succeeded, pending until `retry_at`, or failed. A fresh delivery (not recorded) is
/// written now, with its attempt; a recorded one is updated. Then tracks each endpoint's failing
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
    let (recorded, fresh): (Vec<_>, Vec<_>) = settled.iter().partition(|(d, _)| d.recorded);
    let mut to_update = recorded;
    // A fresh delivery of an endpoint deleted meanwhile has nothing to record.
    let live = lock_endpoints(conn, fresh.iter().map(|(d, _)| d.endpoint_id)).await?;
    let fresh: Vec<_> = fresh.into_iter().filter(|(d, _)| live.contains(&(d.endpoint_id, d.tenant_id))).collect();
    if !fresh.is_empty() {
        let c = AttemptColumns::of(&fresh);
        let insert = sqlx::query(
            "insert into webhook_deliveries (id, tenant_id, endpoint_id, event_id, event_type, status, attempts, \
               next_attempt_at, updated_at, last_attempt_at, last_status_code, last_error, last_latency_ms, \
               last_response_body, last_succeeded) \
             select u.id, u.tenant, u.endpoint, u.event, u.type, u.status, 1, u.next, u.at, \
               u.at, u.code, u.error, u.latency, u.body, u.ok \
             from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], \
               $7::timestamptz[], $8::timestamptz[], $9::int[], $10::text[], $11::int[], $12::text[], $13::bool[]) \
               as u(id, tenant, endpoint, event, type, status, next, at, code, error, latency, body, ok) \
             on conflict (id) do nothing returning id",
        )
        .bind(&c.ids)
        .bind(fresh.iter().map(|(d, _)| d.tenant_id).collect::<Vec<_>>())
        .bind(fresh.iter().map(|(d, _)| d.endpoint_id).collect::<Vec<_>>())
        .bind(fresh.iter().map(|(d, _)| d.event_id).collect::<Vec<_>>())
        .bind(fresh.iter().map(|(d, _)| d.event_type.as_str()).collect::<Vec<_>>());
        let made: std::collections::HashSet<Uuid> = c
            .bind_outcomes(insert)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| sqlx::Row::try_get::<Uuid, _>(row, 0))
            .collect::<std::result::Result<_, _>>()?;
        // A pair another writer recorded meanwhile (a recovery) is settled as a recorded one.
        to_update.extend(fresh.into_iter().filter(|(d, _)| !made.contains(&d.id)));
    }
    if !to_update.is_empty() {
        let c = AttemptColumns::of(&to_update);
        // The attempt takes the latest's place; the latest joins the log.
        let update = sqlx::query(concat!(
            "update webhook_deliveries d set status = u.status, attempts = d.attempts + 1, next_attempt_at = u.next, \
               locked_until = null, updated_at = u.at, \
               attempt_log = case when d.last_attempt_at is null then d.attempt_log \
                 else d.attempt_log || jsonb_build_array(",
            last_attempt_entry!(),
            ") end, \
               last_attempt_at = u.at, last_status_code = u.code, last_error = u.error, last_latency_ms = u.latency, \
               last_response_body = u.body, last_succeeded = u.ok \
             from unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::int[], $6::text[], \
               $7::int[], $8::text[], $9::bool[]) as u(id, status, next, at, code, error, latency, body, ok) \
             where d.id = u.id"
        ))
        .bind(&c.ids);
        c.bind_outcomes(update).execute(&mut *conn).await?;
    }

    // Each endpoint's last outcome in the batch decides its streak.
    let mut last: std::collections::BTreeMap<Uuid, &(Claimed, AttemptResult)> = Default::default();
    for item in settled {
        let entry = last.entry(item.0.endpoint_id).or_insert(item);
        if item.1.at >= entry.1.at {
            *entry = item;
        }
    }
    let (recovered, recovered_at): (Vec<Uuid>, Vec<DateTime<Utc>>) =
        last.values().filter(|(_, r)| r.succeeded).map(|(d, r)| (d.endpoint_id, r.at)).unzip();
    if !recovered.is_empty() {
        // Batches settle concurrently: a success ends only a streak that began before it.
        sqlx::query(
            "update webhook_endpoints w set failing_since = null \
             from unnest($1::uuid[], $2::timestamptz[]) as u(id, at) where w.id = u.id and w.failing_since <= u.at",
        )
        .bind(&recovered)
        .bind(&recovered_at)
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
