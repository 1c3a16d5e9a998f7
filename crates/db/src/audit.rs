//! The audit log (`audit_log`, migration `20261126120200_audit_log.sql`): appending batches of
//! entries in one statement, and searching them across tenants for the platform's operators.
//!
//! The table is append-only (triggers refuse UPDATE, DELETE and TRUNCATE), so this module has
//! no function that changes or removes a row.

use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use nimbus_domain::{PageRequest, TenantId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgExecutor, Postgres, QueryBuilder, Row};

use crate::{Result, rows};

/// How a request ended, from its HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = AuditOutcome))]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// 1xx-3xx.
    Success,
    /// 4xx other than 401/403, and 5xx.
    Failure,
    /// 401 or 403: the caller was not allowed.
    Denied,
}

impl Outcome {
    /// The outcome of a response with `status`.
    pub fn from_status(status: u16) -> Outcome {
        match status {
            401 | 403 => Outcome::Denied,
            s if s >= 400 => Outcome::Failure,
            _ => Outcome::Success,
        }
    }

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }
}

/// An unknown outcome name.
#[derive(Debug, thiserror::Error)]
#[error("unknown outcome '{0}' (expected success, failure or denied)")]
pub struct ParseOutcomeError(String);

impl FromStr for Outcome {
    type Err = ParseOutcomeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "success" => Ok(Outcome::Success),
            "failure" => Ok(Outcome::Failure),
            "denied" => Ok(Outcome::Denied),
            other => Err(ParseOutcomeError(other.to_owned())),
        }
    }
}

/// An entry to append.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEntry {
    /// When the request was answered.
    pub at: DateTime<Utc>,
    /// The effective user; `None` for anonymous requests.
    pub actor_id: Option<UserId>,
    /// The admin acting as `actor_id`.
    pub impersonator_id: Option<UserId>,
    /// The effective user's tenant.
    pub tenant_id: Option<TenantId>,
    /// `METHOD /route/{template}`.
    pub action: String,
    /// What kind of resource the request named (`vms`, `jobs`, ...).
    pub resource_type: Option<String>,
    /// The id of that resource.
    pub resource_id: Option<String>,
    /// The request's `X-Request-ID`.
    pub request_id: String,
    /// The client's address.
    pub client_ip: Option<IpAddr>,
    /// How it ended.
    pub outcome: Outcome,
    /// The HTTP status answered.
    pub http_status: u16,
    /// More about it (a JSON object).
    pub details: Value,
}

/// A stored entry: one request (`GET /v1/admin/audit-logs` answers with these as they are).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = AuditEntry))]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Position in the log (entries are listed newest first by it).
    pub id: i64,
    /// When the request was answered.
    pub at: DateTime<Utc>,
    /// The effective user (under impersonation: the user acted as); `null` when anonymous.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub actor_id: Option<UserId>,
    /// The administrator acting as `actorId`, when impersonating.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub impersonator_id: Option<UserId>,
    /// The tenant.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub tenant_id: Option<TenantId>,
    /// `METHOD /route/{template}`.
    #[cfg_attr(feature = "openapi", schema(example = "POST /v1/vms"))]
    pub action: String,
    /// The type of resource acted on.
    #[cfg_attr(feature = "openapi", schema(required = true, example = "vms"))]
    pub resource_type: Option<String>,
    /// The resource acted on.
    #[cfg_attr(feature = "openapi", schema(required = true, example = "0193a5c4-7e1f-7b3a-9c2d-5e8f1a2b3c4d"))]
    pub resource_id: Option<String>,
    /// The request's id (`X-Request-ID`).
    #[cfg_attr(feature = "openapi", schema(example = "req_01JF3J6X9Q2M8V4T7C5B1N0K2D"))]
    pub request_id: String,
    /// The client's address.
    #[cfg_attr(feature = "openapi", schema(required = true, example = "203.0.113.7"))]
    pub client_ip: Option<String>,
    /// How the request ended.
    pub outcome: Outcome,
    /// The answer's HTTP status.
    #[cfg_attr(feature = "openapi", schema(minimum = 100, maximum = 599, example = 202))]
    pub http_status: u16,
    /// What else was recorded about it.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: Value,
}

impl<'r> FromRow<'r, PgRow> for Entry {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(Entry {
            id: row.try_get("id")?,
            at: row.try_get("at")?,
            actor_id: rows::opt_id(row, "actor_id")?,
            impersonator_id: rows::opt_id(row, "impersonator_id")?,
            tenant_id: rows::opt_id(row, "tenant_id")?,
            action: row.try_get("action")?,
            resource_type: row.try_get("resource_type")?,
            resource_id: row.try_get("resource_id")?,
            request_id: row.try_get("request_id")?,
            client_ip: row.try_get("client_ip")?,
            outcome: rows::enumeration(row, "outcome")?,
            http_status: u16::try_from(row.try_get::<i16, _>("http_status")?).unwrap_or(0),
            details: row.try_get("details")?,
        })
    }
}

/// The columns of [`Entry`] (`host()` drops the `/32` an `inet` would print).
const COLUMNS: &str = "id, at, actor_id, impersonator_id, tenant_id, action, resource_type, resource_id, \
                       request_id, host(client_ip) as client_ip, outcome, http_status, details";

/// Text as PostgreSQL can store it: `text` and `jsonb` refuse NUL, so NUL is written `\0` and
/// a backslash `\\`. Reversible, so the log keeps exactly what the request carried; text
/// without either character (nearly all of it) is stored as it is.
pub fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['\0', '\\']) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\0' => out.push_str("\\0"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// [`storable`] applied to every string and object key of a JSON document.
fn storable_json(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(storable(s).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(storable_json).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (storable(k).into_owned(), storable_json(v))).collect())
        }
        other => other.clone(),
    }
}

/// Appends `entries` with one statement (one round trip, one transaction, however many rows).
/// Free text is escaped by [`storable`], so no request can make its own entry, or the others
/// of its batch, unstorable.
pub async fn append_many(ex: impl PgExecutor<'_>, entries: &[NewEntry]) -> Result<u64> {
    if entries.is_empty() {
        return Ok(0);
    }
    let n = entries.len();
    let mut at = Vec::with_capacity(n);
    let mut actor = Vec::with_capacity(n);
    let mut impersonator = Vec::with_capacity(n);
    let mut tenant = Vec::with_capacity(n);
    let mut action = Vec::with_capacity(n);
    let mut resource_type = Vec::with_capacity(n);
    let mut resource_id = Vec::with_capacity(n);
    let mut request_id = Vec::with_capacity(n);
    let mut client_ip = Vec::with_capacity(n);
    let mut outcome = Vec::with_capacity(n);
    let mut http_status = Vec::with_capacity(n);
    let mut details = Vec::with_capacity(n);
    for e in entries {
        at.push(e.at);
        actor.push(e.actor_id.map(|u| u.as_uuid()));
        impersonator.push(e.impersonator_id.map(|u| u.as_uuid()));
        tenant.push(e.tenant_id.map(|t| t.as_uuid()));
        action.push(storable(&e.action).into_owned());
        resource_type.push(e.resource_type.as_deref().map(|t| storable(t).into_owned()));
        resource_id.push(e.resource_id.as_deref().map(|t| storable(t).into_owned()));
        request_id.push(storable(&e.request_id).into_owned());
        client_ip.push(e.client_ip.map(|ip| ip.to_string()));
        outcome.push(e.outcome.as_str());
        http_status.push(i16::try_from(e.http_status).unwrap_or(0));
        details.push(storable_json(&e.details).to_string());
    }
    let done = sqlx::query(
        "insert into audit_log (at, actor_id, impersonator_id, tenant_id, action, resource_type, resource_id, \
         request_id, client_ip, outcome, http_status, details) \
         select at, actor_id, impersonator_id, tenant_id, action, resource_type, resource_id, request_id, \
         client_ip::inet, outcome, http_status, details::jsonb \
         from unnest($1::timestamptz[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], \
         $8::text[], $9::text[], $10::text[], $11::int2[], $12::text[]) \
         as t(at, actor_id, impersonator_id, tenant_id, action, resource_type, resource_id, request_id, \
         client_ip, outcome, http_status, details)",
    )
    .bind(at)
    .bind(actor)
    .bind(impersonator)
    .bind(tenant)
    .bind(action)
    .bind(resource_type)
    .bind(resource_id)
    .bind(request_id)
    .bind(client_ip)
    .bind(outcome)
    .bind(http_status)
    .bind(details)
    .execute(ex)
    .await?;
    Ok(done.rows_affected())
}

/// What [`search_all_tenants`] and [`scan_all_tenants`] keep; `None` fields match everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// The effective user.
    pub actor: Option<UserId>,
    /// The tenant.
    pub tenant: Option<TenantId>,
    /// The exact action, e.g. `POST /v1/vms`.
    pub action: Option<String>,
    /// The resource type.
    pub resource_type: Option<String>,
    /// The resource id.
    pub resource_id: Option<String>,
    /// The outcome.
    pub outcome: Option<Outcome>,
    /// At or after.
    pub from: Option<DateTime<Utc>>,
    /// Strictly before.
    pub to: Option<DateTime<Utc>>,
}

impl Filter {
    /// Appends ` where …` (always at least `true`, so callers may add `and …`).
    fn push_where(&self, q: &mut QueryBuilder<Postgres>) {
        q.push(" where true");
        if let Some(actor) = self.actor {
            q.push(" and actor_id = ").push_bind(actor.as_uuid());
        }
        if let Some(tenant) = self.tenant {
            q.push(" and tenant_id = ").push_bind(tenant.as_uuid());
        }
        if let Some(action) = &self.action {
            q.push(" and action = ").push_bind(action.clone());
        }
        if let Some(t) = &self.resource_type {
            q.push(" and resource_type = ").push_bind(t.clone());
        }
        if let Some(id) = &self.resource_id {
            q.push(" and resource_id = ").push_bind(id.clone());
        }
        if let Some(outcome) = self.outcome {
            q.push(" and outcome = ").push_bind(outcome.as_str());
        }
        if let Some(from) = self.from {
            q.push(" and at >= ").push_bind(from);
        }
        if let Some(to) = self.to {
            q.push(" and at < ").push_bind(to);
        }
    }
}

/// One page of the entries matching `filter` in every tenant, newest first, and how many match
/// in all. Reserved to the platform's operators (`/v1/admin/audit-logs`).
pub async fn search_all_tenants(
    ex: impl PgExecutor<'_> + Copy,
    filter: &Filter,
    page: PageRequest,
) -> Result<(Vec<Entry>, i64)> {
    let mut count = QueryBuilder::<Postgres>::new("select count(*) from audit_log");
    filter.push_where(&mut count);
    let total: i64 = count.build_query_scalar().fetch_one(ex).await?;

    let mut q = QueryBuilder::<Postgres>::new(format!("select {COLUMNS} from audit_log"));
    filter.push_where(&mut q);
    q.push(" order by id desc limit ").push_bind(page.limit()).push(" offset ").push_bind(page.offset());
    let entries = q.build_query_as::<Entry>().fetch_all(ex).await?;
    Ok((entries, total))
}

/// Up to `limit` entries matching `filter` with an id below `before` (all when `None`), newest
/// first: keyset pages for exporting everything a filter matches without holding a connection
/// for the whole export.
pub async fn scan_all_tenants(
    ex: impl PgExecutor<'_>,
    filter: &Filter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Entry>> {
    let mut q = QueryBuilder::<Postgres>::new(format!("select {COLUMNS} from audit_log"));
    filter.push_where(&mut q);
    if let Some(before) = before {
        q.push(" and id < ").push_bind(before);
    }
    q.push(" order by id desc limit ").push_bind(limit);
    Ok(q.build_query_as::<Entry>().fetch_all(ex).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_the_status() {
        assert_eq!(Outcome::from_status(200), Outcome::Success);
        assert_eq!(Outcome::from_status(202), Outcome::Success);
        assert_eq!(Outcome::from_status(302), Outcome::Success);
        assert_eq!(Outcome::from_status(401), Outcome::Denied);
        assert_eq!(Outcome::from_status(403), Outcome::Denied);
        assert_eq!(Outcome::from_status(404), Outcome::Failure);
        assert_eq!(Outcome::from_status(422), Outcome::Failure);
        assert_eq!(Outcome::from_status(503), Outcome::Failure);
        for o in [Outcome::Success, Outcome::Failure, Outcome::Denied] {
            assert_eq!(o.as_str().parse::<Outcome>().unwrap(), o);
        }
        assert!("ok".parse::<Outcome>().is_err());
    }

    #[test]
    fn unstorable_text_is_escaped_reversibly() {
        assert!(matches!(storable("GET /v1/vms/{id}"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(storable("a\0b"), "a\\0b");
        // A literal backslash-zero stays distinguishable from a NUL.
        assert_eq!(storable("a\\0b"), "a\\\\0b");
        let doc = serde_json::json!({"path": "/v1/vms/\0", "k\0": ["x\0"]});
        let stored = storable_json(&doc);
        assert!(!stored.to_string().contains("\\u0000"), "{stored}");
        assert_eq!(stored["path"], "/v1/vms/\\0");
        assert_eq!(stored["k\\0"][0], "x\\0");
    }
}
