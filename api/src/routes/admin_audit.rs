//! `GET /v1/admin/audit-logs`: the audit log for the platform's operators ([`AdminUser`]),
//! across tenants (`nimbus_db::audit::search_all_tenants`), newest first.
//!
//! Filters (all optional, combined with AND): `actor` (user id), `tenant` (tenant id), `action`
//! (exact, e.g. `POST /v1/vms`), `resourceType`, `resourceId`, `outcome`
//! (`success|failure|denied`), `from` (inclusive) and `to` (exclusive) as RFC 3339 times.
//! Unknown parameters and malformed values are 400 `VALIDATION_FAILED` naming the parameter, so
//! a typo never silently widens an export.
//!
//! JSON by default, paginated like the other lists (`page`, `perPage`). With `?format=csv` or
//! `Accept: text/csv` every matching row is exported as CSV (RFC 4180: a header row, CRLF line
//! ends, fields with commas, quotes or line breaks quoted), streamed in keyset pages so neither
//! the API nor a connection holds the whole export. Cells that a spreadsheet would take for a
//! formula (starting with `=`, `+`, `-`, `@`, tab or CR) are prefixed with `'` (OWASP CSV
//! injection).

use std::borrow::Cow;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, SecondsFormat, Utc};
use nimbus_db::audit::{self, Entry, Filter, Outcome};
use nimbus_db::{DbError, PgPool};
use nimbus_domain::{ListResponse, TenantId, UserId};
use serde::Deserialize;

use crate::auth::AdminUser;
use crate::error::{ApiError, FieldError};
use crate::extract::QueryParams;
use crate::middleware::RequestId;
use crate::routes::PageQuery;
use crate::state::AppState;

/// Rows per query of a CSV export.
const CSV_BATCH: i64 = 500;

/// The CSV columns, in order.
const CSV_HEADER: &str = "id,at,actorId,impersonatorId,tenantId,action,resourceType,resourceId,requestId,clientIp,\
                          outcome,httpStatus,details\r\n";

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/audit-logs", get(list))
}

/// The query as sent; [`AuditQuery::parse`] checks it.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Only the requests of this user (the effective one, under impersonation the user acted
    /// as).
    #[param(value_type = Option<UserId>)]
    actor: Option<String>,
    /// Only this tenant's entries.
    #[param(value_type = Option<TenantId>)]
    tenant: Option<String>,
    /// Only this action, exactly: `METHOD /route/{template}`.
    #[param(max_length = 300, example = "POST /v1/vms")]
    action: Option<String>,
    /// Only entries about this type of resource.
    #[param(max_length = 300, example = "vms")]
    resource_type: Option<String>,
    /// Only entries about this resource.
    #[param(max_length = 300)]
    resource_id: Option<String>,
    /// Only entries with this outcome.
    #[param(inline, value_type = Option<Outcome>)]
    outcome: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-26T12:00:00Z")]
    from: Option<String>,
    /// Only entries before this time (RFC 3339; after `from`).
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-27T12:00:00Z")]
    to: Option<String>,
    /// 1-based page (default 1; JSON only).
    #[param(minimum = 1)]
    page: Option<u32>,
    /// Items per page (default 25, at most 100; JSON only).
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<u32>,
    /// `csv` exports every matching entry as CSV; without it, `Accept: text/csv` does the
    /// same, otherwise the answer is a JSON page.
    #[param(inline, value_type = Option<ExportFormat>)]
    format: Option<String>,
}

// The values of `?format=`, for the OpenAPI document.
/// The answer's format.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Describes the parameter; `AuditQuery::parse` reads it.
enum ExportFormat {
    /// A JSON page.
    Json,
    /// Every matching entry, as CSV.
    Csv,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

impl AuditQuery {
    /// The filter and the format; every malformed parameter is named.
    fn parse(self, headers: &HeaderMap) -> Result<(Filter, Format), ApiError> {
        let mut errors = Vec::new();
        let mut typed = |field: &str, raw: Option<String>, what: &str| -> Option<String> {
            let v = raw.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
            if v.as_ref().is_some_and(|v| v.len() > 300) {
                errors.push(FieldError::new(field, format!("{what} is too long")));
                return None;
            }
            v
        };
        let actor = typed("actor", self.actor, "actor");
        let tenant = typed("tenant", self.tenant, "tenant");
        let action = typed("action", self.action, "action");
        let resource_type = typed("resourceType", self.resource_type, "resourceType");
        let resource_id = typed("resourceId", self.resource_id, "resourceId");
        let outcome = typed("outcome", self.outcome, "outcome");
        let from = typed("from", self.from, "from");
        let to = typed("to", self.to, "to");
        let format = typed("format", self.format, "format");

        const TIME: &str = "an RFC 3339 time, e.g. 2026-11-26T12:00:00Z";
        let time = |v: &str| DateTime::parse_from_rfc3339(v).ok().map(|t| t.with_timezone(&Utc));
        let actor = checked(&mut errors, "actor", actor, "a user id", |v| v.parse::<UserId>().ok());
        let tenant = checked(&mut errors, "tenant", tenant, "a tenant id", |v| v.parse::<TenantId>().ok());
        let outcome =
            checked(&mut errors, "outcome", outcome, "one of success, failure, denied", |v| v.parse::<Outcome>().ok());
        let from = checked(&mut errors, "from", from, TIME, time);
        let to = checked(&mut errors, "to", to, TIME, time);
        if let (Some(from), Some(to)) = (from, to)
            && to <= from
        {
            errors.push(FieldError::new("to", "must be after from"));
        }
        let accepts_csv = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|m| m.split(';').next().unwrap_or("").trim() == "text/csv"));
        let format = match format.as_deref() {
            None if accepts_csv => Format::Csv,
            None | Some("json") => Format::Json,
            Some("csv") => Format::Csv,
            Some(_) => {
                errors.push(FieldError::new("format", "must be json or csv"));
                Format::Json
            }
        };
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok((Filter { actor, tenant, action, resource_type, resource_id, outcome, from, to }, format))
    }
}

/// `raw` parsed by `parse`, or a field error saying what was `expected`.
fn checked<T>(
    errors: &mut Vec<FieldError>,
    field: &str,
    raw: Option<String>,
    expected: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Option<T> {
    let raw = raw?;
    let parsed = parse(&raw);
    if parsed.is_none() {
        errors.push(FieldError::new(field, format!("must be {expected}")));
    }
    parsed
}

/// Lists the audit log of every tenant.
///
/// Newest first, filtered (the filters combine). A JSON page by default; with `format=csv` (or
/// `Accept: text/csv`) every matching entry is exported as CSV.
#[utoipa::path(
    get, path = "/v1/admin/audit-logs", operation_id = "listAuditLogs", tag = "Administration",
    params(AuditQuery),
    responses(
        (status = 200, description = "A JSON page of entries, or with `format=csv` (or `Accept: text/csv`) every matching entry as CSV (RFC 4180: a header row, CRLF line ends; cells a spreadsheet would take for a formula are prefixed with `'`), as the attachment `audit-log.csv`.",
            headers(("Content-Disposition" = String, description = "CSV only: `attachment; filename=\"audit-log.csv\"`")),
            content(
                (ListResponse<Entry> = "application/json"),
                (String = "text/csv", example = "id,at,actorId,impersonatorId,tenantId,action,resourceType,resourceId,requestId,clientIp,outcome,httpStatus,details\r\n42,2026-12-01T09:30:00.000000Z,0193a5c4-7e1f-7b3a-9c2d-5e8f1a2b3c4d,,0193a5c4-7e1f-7b3a-9c2d-5e8f1a2b3c4e,POST /v1/vms,vms,0193a5c4-7e1f-7b3a-9c2d-5e8f1a2b3c4f,req_01JF3J6X9Q2M8V4T7C5B1N0K2D,203.0.113.7,success,202,{}\r\n"),
            )),
    )
)]
async fn list(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    rid: RequestId,
    headers: HeaderMap,
    QueryParams(q): QueryParams<AuditQuery>,
) -> Result<Response, ApiError> {
    let page = PageQuery { page: q.page, per_page: q.per_page }.request()?;
    let (filter, format) = q.parse(&headers)?;
    match format {
        Format::Json => {
            let (items, total) = audit::search_all_tenants(state.db(), &filter, page).await?;
            Ok(super::page(&rid, items, page, total).into_response())
        }
        Format::Csv => export(state.db().clone(), filter).await,
    }
}

/// The CSV export. The first page is read before answering, so a database failure is still a
/// proper error; a failure later cuts the stream (the client sees a truncated transfer) and is
/// logged.
async fn export(db: PgPool, filter: Filter) -> Result<Response, ApiError> {
    let first = audit::scan_all_tenants(&db, &filter, None, CSV_BATCH).await?;
    let mut chunk = String::from(CSV_HEADER);
    let cursor = write_rows(&mut chunk, &first);

    struct Export {
        db: PgPool,
        filter: Filter,
        /// The id to continue below; `None` when done.
        cursor: Option<i64>,
        first: Option<String>,
    }
    let start = Export { db, filter, cursor, first: Some(chunk) };
    let stream = futures::stream::unfold(start, |mut st| async move {
        if let Some(chunk) = st.first.take() {
            return Some((Ok::<_, DbError>(chunk), st));
        }
        let before = st.cursor?;
        match audit::scan_all_tenants(&st.db, &st.filter, Some(before), CSV_BATCH).await {
            Ok(rows) => {
                let mut chunk = String::new();
                st.cursor = write_rows(&mut chunk, &rows);
                Some((Ok(chunk), st))
            }
            Err(e) => {
                tracing::error!(error = %e, "audit export cut short");
                st.cursor = None;
                Some((Err(e), st))
            }
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"audit-log.csv\""));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Appends `rows` as CSV lines; returns the id to continue below, `None` after a short page.
fn write_rows(out: &mut String, rows: &[Entry]) -> Option<i64> {
    for e in rows {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let cells: [Cow<'_, str>; 13] = [
            e.id.to_string().into(),
            e.at.to_rfc3339_opts(SecondsFormat::Micros, true).into(),
            e.actor_id.map(|u| u.to_string()).unwrap_or_default().into(),
            e.impersonator_id.map(|u| u.to_string()).unwrap_or_default().into(),
            e.tenant_id.map(|t| t.to_string()).unwrap_or_default().into(),
            e.action.as_str().into(),
            opt(&e.resource_type).into(),
            opt(&e.resource_id).into(),
            e.request_id.as_str().into(),
            opt(&e.client_ip).into(),
            e.outcome.as_str().into(),
            e.http_status.to_string().into(),
            e.details.to_string().into(),
        ];
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&csv_cell(cell));
        }
        out.push_str("\r\n");
    }
    if rows.len() as i64 == CSV_BATCH { rows.last().map(|e| e.id) } else { None }
}

/// One RFC 4180 field, defused against formula injection.
fn csv_cell(value: &str) -> Cow<'_, str> {
    let formula = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let value: Cow<'_, str> = if formula { format!("'{value}").into() } else { value.into() };
    if value.contains([',', '"', '\r', '\n']) { format!("\"{}\"", value.replace('"', "\"\"")).into() } else { value }
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list))]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_only_when_needed_and_formulas_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell(""), "");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_cell("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_cell("-1,2"), "\"'-1,2\"");
        assert_eq!(csv_cell("{\"a\":1}"), "\"{\"\"a\"\":1}\"");
    }

    fn parse(q: AuditQuery) -> Result<(Filter, Format), Vec<Option<String>>> {
        q.parse(&HeaderMap::new()).map_err(|e| match e {
            ApiError::Validation(f) => f.into_iter().map(|f| f.field).collect(),
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn every_bad_filter_is_named() {
        let bad = AuditQuery {
            actor: Some("nobody".into()),
            tenant: Some("x".into()),
            outcome: Some("maybe".into()),
            from: Some("yesterday".into()),
            format: Some("xml".into()),
            ..Default::default()
        };
        let fields = parse(bad).unwrap_err();
        for f in ["actor", "tenant", "outcome", "from", "format"] {
            assert!(fields.contains(&Some(f.to_owned())), "{f} in {fields:?}");
        }
        let backwards = AuditQuery {
            from: Some("2026-11-26T12:00:00Z".into()),
            to: Some("2026-11-26T11:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(parse(backwards).unwrap_err(), vec![Some("to".to_owned())]);
    }

    #[test]
    fn filters_and_format_are_read() {
        let (filter, format) = parse(AuditQuery {
            outcome: Some("denied".into()),
            action: Some(" POST /v1/vms ".into()),
            from: Some("2026-11-26T12:00:00+01:00".into()),
            format: Some("csv".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(filter.outcome, Some(Outcome::Denied));
        assert_eq!(filter.action.as_deref(), Some("POST /v1/vms"));
        assert_eq!(filter.from.unwrap().to_rfc3339(), "2026-11-26T11:00:00+00:00");
        assert_eq!(format, Format::Csv);
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html, text/csv;q=0.9"));
        assert_eq!(AuditQuery::default().parse(&h).unwrap().1, Format::Csv);
        assert_eq!(AuditQuery::default().parse(&HeaderMap::new()).unwrap().1, Format::Json);
    }
}
