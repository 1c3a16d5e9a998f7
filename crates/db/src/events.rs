//! Domain events (DESIGN §11): a row per state change users care about, written in the
//! transaction of the change itself, so an event exists exactly when its change committed.
//! Relays and feeds read them in `seq` order.

use chrono::{DateTime, Utc};
use nimbus_domain::TenantId;
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::Result;

/// Event types this system records. Kept in one place so emitters and readers agree.
pub mod types {
    /// A monthly invoice was issued.
    pub const INVOICE_ISSUED: &str = "invoice.issued";
    /// A credit note corrected an invoice.
    pub const CREDIT_NOTE_ISSUED: &str = "credit_note.issued";
    /// A prepaid tenant's available balance fell below its threshold.
    pub const BALANCE_LOW: &str = "balance.low";
    /// A prepaid tenant's available balance reached zero: creates are refused.
    pub const BALANCE_EXHAUSTED: &str = "balance.exhausted";
    /// The tenant was suspended (its grace period ended, or an operator's hold).
    pub const TENANT_SUSPENDED: &str = "tenant.suspended";
    /// The tenant's suspension was lifted.
    pub const TENANT_RESUMED: &str = "tenant.resumed";
    /// A webhook endpoint was disabled by the system (its receiver is gone, or it kept failing).
    pub const WEBHOOK_ENDPOINT_DISABLED: &str = "webhook.endpoint_disabled";
    /// "Send test event" for one webhook endpoint.
    pub const WEBHOOK_TEST: &str = nimbus_domain::events::WEBHOOK_TEST;

    /// The types billing records.
    pub const BILLING: &[&str] =
        &[INVOICE_ISSUED, CREDIT_NOTE_ISSUED, BALANCE_LOW, BALANCE_EXHAUSTED, TENANT_SUSPENDED, TENANT_RESUMED];
}

/// An event to record.
#[derive(Clone, Debug)]
pub struct NewEvent<'a> {
    /// Dotted type, such as `invoice.issued`.
    pub kind: &'a str,
    /// When the change happened (the injected time of the job or request that made it).
    pub at: DateTime<Utc>,
    /// The tenant it concerns (none for system-wide events).
    pub tenant: Option<TenantId>,
    /// The resource it is about: its type (`invoice`, `tenant`, …) and id.
    pub resource: Option<(&'a str, String)>,
    /// What a reader needs without another lookup.
    pub data: Value,
}

/// A recorded event.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct Event {
    /// Its id (the idempotency key for every sink).
    pub id: Uuid,
    /// Its place in the order of events.
    pub seq: i64,
    /// Dotted type.
    #[sqlx(rename = "type")]
    pub kind: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The tenant it concerns.
    pub tenant_id: Option<Uuid>,
    /// The resource's type.
    pub resource_type: Option<String>,
    /// The resource's id.
    pub resource_id: Option<String>,
    /// Its data.
    pub data: Value,
}

/// Records `event` (call inside the transaction of the change it reports).
pub async fn record(ex: impl PgExecutor<'_>, event: &NewEvent<'_>) -> Result<Uuid> {
    let id = Uuid::now_v7();
    let (resource_type, resource_id) = match &event.resource {
        Some((t, id)) => (Some(*t), Some(id.as_str())),
        None => (None, None),
    };
    sqlx::query(
        "insert into events (id, type, occurred_at, tenant_id, resource_type, resource_id, data) \
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(event.kind)
    .bind(event.at)
    .bind(event.tenant.map(|t| t.as_uuid()))
    .bind(resource_type)
    .bind(resource_id)
    .bind(&event.data)
    .execute(ex)
    .await?;
    Ok(id)
}

/// `tenant`'s events of type `kind` (all types when `None`), oldest first.
pub async fn for_tenant(ex: impl PgExecutor<'_>, tenant: TenantId, kind: Option<&str>) -> Result<Vec<Event>> {
    Ok(sqlx::query_as(
        "select id, seq, type, occurred_at, tenant_id, resource_type, resource_id, data from events \
         where tenant_id = $1 and ($2::text is null or type = $2) order by seq",
    )
    .bind(tenant.as_uuid())
    .bind(kind)
    .fetch_all(ex)
    .await?)
}

/// The events `ids`, in `seq` order.
pub async fn by_ids(ex: impl PgExecutor<'_>, ids: &[Uuid]) -> Result<Vec<Event>> {
    Ok(sqlx::query_as(
        "select id, seq, type, occurred_at, tenant_id, resource_type, resource_id, data from events \
         where id = any($1) order by seq",
    )
    .bind(ids)
    .fetch_all(ex)
    .await?)
}

/// One event.
pub async fn get(ex: impl PgExecutor<'_>, id: Uuid) -> Result<Event> {
    Ok(sqlx::query_as(
        "select id, seq, type, occurred_at, tenant_id, resource_type, resource_id, data from events where id = $1",
    )
    .bind(id)
    .fetch_one(ex)
    .await?)
}

/// Takes up to `limit` events not relayed yet, oldest first, locked (`SKIP LOCKED`) until the
/// transaction ends, so relays in several processes share the work.
pub async fn fetch_unrelayed(tx: &mut sqlx::PgConnection, limit: i64) -> Result<Vec<Event>> {
    Ok(sqlx::query_as(
        "select id, seq, type, occurred_at, tenant_id, resource_type, resource_id, data from events \
         where relayed_at is null order by seq limit $1 for update skip locked",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?)
}

/// Marks events relayed.
pub async fn mark_relayed(ex: impl PgExecutor<'_>, ids: &[Uuid]) -> Result<u64> {
    Ok(sqlx::query("update events set relayed_at = now() where id = any($1)")
        .bind(ids)
        .execute(ex)
        .await?
        .rows_affected())
}
