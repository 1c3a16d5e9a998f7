//! The response envelope of the API (DESIGN §6): `{data, meta:{requestId, timestamp}}`, lists add
//! `pagination:{page, perPage, total, totalPages}`, errors are `{error:{code, message, details},
//! meta}`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;

/// Request metadata echoed in every response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// The `X-Request-ID` (accepted or generated).
    #[cfg_attr(feature = "openapi", schema(example = "0193a5c4-8b2e-7d41-a6f0-3c9e2b7d5a18"))]
    pub request_id: String,
    /// When the response was produced.
    pub timestamp: DateTime<Utc>,
}

/// A single-resource response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiResponse<T> {
    /// The resource.
    pub data: T,
    /// Request metadata.
    pub meta: Meta,
}

/// A page of a list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListResponse<T> {
    /// The items of this page.
    pub data: Vec<T>,
    /// Request metadata.
    pub meta: Meta,
    /// Where this page is.
    pub pagination: Pagination,
}

/// Page position of a list response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    /// 1-based page number.
    #[cfg_attr(feature = "openapi", schema(example = 1))]
    pub page: u32,
    /// Items per page.
    #[cfg_attr(feature = "openapi", schema(example = 25))]
    pub per_page: u32,
    /// Items in the whole list.
    #[cfg_attr(feature = "openapi", schema(example = 1))]
    pub total: u64,
    /// Pages in the whole list (0 for an empty list).
    #[cfg_attr(feature = "openapi", schema(example = 1))]
    pub total_pages: u64,
}

impl Pagination {
    /// The pagination of `request` over `total` items.
    pub fn new(request: PageRequest, total: u64) -> Self {
        let per_page = u64::from(request.per_page.max(1));
        Pagination { page: request.page, per_page: request.per_page, total, total_pages: total.div_ceil(per_page) }
    }
}

/// `?page=&perPage=` with defaults and bounds applied by [`PageRequest::clamped`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", default)]
pub struct PageRequest {
    /// 1-based page number.
    pub page: u32,
    /// Items per page.
    pub per_page: u32,
}

impl PageRequest {
    /// Items per page when none is asked for.
    pub const DEFAULT_PER_PAGE: u32 = 25;
    /// The most items per page a client may ask for.
    pub const MAX_PER_PAGE: u32 = 100;

    /// Page ≥ 1 and 1 ≤ perPage ≤ 100.
    pub fn clamped(self) -> Self {
        PageRequest { page: self.page.max(1), per_page: self.per_page.clamp(1, Self::MAX_PER_PAGE) }
    }

    /// The SQL `LIMIT`.
    pub fn limit(self) -> i64 {
        i64::from(self.clamped().per_page)
    }

    /// The SQL `OFFSET`.
    pub fn offset(self) -> i64 {
        let c = self.clamped();
        i64::from(c.page - 1) * i64::from(c.per_page)
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest { page: 1, per_page: Self::DEFAULT_PER_PAGE }
    }
}

/// The body of an error response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    /// What went wrong.
    pub error: ErrorBody,
    /// Request metadata.
    pub meta: Meta,
}

/// `{code, message, details}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable message.
    pub message: String,
    /// Structured details: per-field errors for validation, the broken limit for quota, or
    /// `null`.
    #[serde(default)]
    pub details: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            request_id: "req-1".into(),
            timestamp: DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z").unwrap().with_timezone(&Utc),
        }
    }

    #[test]
    fn envelopes_have_the_documented_shape() {
        let list = ListResponse {
            data: vec![1, 2],
            meta: meta(),
            pagination: Pagination::new(PageRequest { page: 2, per_page: 2 }, 5),
        };
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            serde_json::json!({
                "data": [1, 2],
                "meta": {"requestId": "req-1", "timestamp": "2026-11-26T10:00:00Z"},
                "pagination": {"page": 2, "perPage": 2, "total": 5, "totalPages": 3}
            })
        );
        let err = ApiError {
            error: ErrorBody {
                code: ErrorCode::NotFound,
                message: "no such job".into(),
                details: serde_json::Value::Null,
            },
            meta: meta(),
        };
        assert_eq!(
            serde_json::to_value(&err).unwrap()["error"],
            serde_json::json!({"code": "NOT_FOUND", "message": "no such job", "details": null})
        );
    }

    #[test]
    fn page_requests_are_clamped() {
        let p: PageRequest = serde_json::from_str(r#"{"perPage": 1000}"#).unwrap();
        assert_eq!(p.clamped(), PageRequest { page: 1, per_page: 100 });
        assert_eq!(PageRequest { page: 0, per_page: 0 }.offset(), 0);
        assert_eq!(PageRequest { page: 3, per_page: 10 }.offset(), 20);
        assert_eq!(Pagination::new(PageRequest::default(), 0).total_pages, 0);
    }
}
