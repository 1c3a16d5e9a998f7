//! The routes, grouped by domain (one module each), and the response helpers they share.

pub mod admin;
pub mod admin_audit;
pub mod admin_billing;
pub mod admin_nodes;
pub mod admin_plans;
pub mod admin_queues;
pub mod admin_schedules;
pub mod admin_users;
pub mod admin_vms;
pub mod admin_webhooks;
pub mod apikeys;
pub mod auth;
pub mod billing;
pub mod catalog;
pub mod health;
pub mod jobs;
pub mod notifications;
pub mod payments;
pub mod quota;
pub mod reference;
pub mod stream_auth;
pub mod templates;
pub mod vm_actions;
pub mod vm_backup_policy;
pub mod vm_backups;
pub mod vm_console;
pub mod vm_events;
pub mod vm_restore;
pub mod vm_snapshots;
pub mod vms;
pub mod web;
pub mod webhooks;

pub use catalog::{Access, RouteSpec, catalog};

/// Each module's part of the OpenAPI document (`crate::openapi`).
pub fn openapi_parts() -> Vec<utoipa::openapi::OpenApi> {
    use utoipa::OpenApi;
    vec![
        reference::ApiDoc::openapi(),
        health::ApiDoc::openapi(),
        auth::ApiDoc::openapi(),
        vms::ApiDoc::openapi(),
        vm_actions::ApiDoc::openapi(),
        vm_snapshots::ApiDoc::openapi(),
        vm_console::ApiDoc::openapi(),
        vm_events::ApiDoc::openapi(),
        vm_backups::ApiDoc::openapi(),
        vm_restore::ApiDoc::openapi(),
        vm_backup_policy::ApiDoc::openapi(),
        jobs::ApiDoc::openapi(),
        templates::ApiDoc::openapi(),
        quota::ApiDoc::openapi(),
        apikeys::ApiDoc::openapi(),
        webhooks::ApiDoc::openapi(),
        admin_webhooks::ApiDoc::openapi(),
        notifications::ApiDoc::openapi(),
        billing::ApiDoc::openapi(),
        payments::ApiDoc::openapi(),
        admin_billing::ApiDoc::openapi(),
        admin_plans::ApiDoc::openapi(),
        admin::ApiDoc::openapi(),
        admin_vms::ApiDoc::openapi(),
        admin_schedules::ApiDoc::openapi(),
        admin_queues::ApiDoc::openapi(),
        admin_nodes::ApiDoc::openapi(),
        admin_users::ApiDoc::openapi(),
        admin_audit::ApiDoc::openapi(),
    ]
}

use axum::Json;
use nimbus_domain::{ApiResponse, ListResponse, PageRequest, Pagination};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, FieldError};
use crate::middleware::RequestId;

/// `{data, meta}`.
pub fn data<T: Serialize>(rid: &RequestId, data: T) -> Json<ApiResponse<T>> {
    Json(ApiResponse { data, meta: rid.meta() })
}

/// `{data, meta, pagination}`.
pub fn page<T: Serialize>(rid: &RequestId, items: Vec<T>, request: PageRequest, total: i64) -> Json<ListResponse<T>> {
    Json(ListResponse { data: items, meta: rid.meta(), pagination: Pagination::new(request, total.max(0) as u64) })
}

/// `?page=&perPage=` as sent; [`PageQuery::request`] checks the bounds.
#[derive(Clone, Copy, Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1-based page (default 1).
    #[param(minimum = 1)]
    pub page: Option<u32>,
    /// Items per page (default 25, at most 100).
    #[param(minimum = 1, maximum = 100)]
    pub per_page: Option<u32>,
}

impl PageQuery {
    /// The page asked for; out-of-range values are 400 rather than silently changed.
    pub fn request(self) -> Result<PageRequest, ApiError> {
        let mut errors = Vec::new();
        let page = self.page.unwrap_or(1);
        let per_page = self.per_page.unwrap_or(PageRequest::DEFAULT_PER_PAGE);
        if page == 0 {
            errors.push(FieldError::new("page", "must be at least 1"));
        }
        if !(1..=PageRequest::MAX_PER_PAGE).contains(&per_page) {
            errors.push(FieldError::new("perPage", format!("must be between 1 and {}", PageRequest::MAX_PER_PAGE)));
        }
        if errors.is_empty() { Ok(PageRequest { page, per_page }) } else { Err(ApiError::Validation(errors)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_bounds_are_checked() {
        assert_eq!(PageQuery::default().request().unwrap(), PageRequest { page: 1, per_page: 25 });
        assert!(PageQuery { page: Some(0), per_page: None }.request().is_err());
        assert!(PageQuery { page: None, per_page: Some(101) }.request().is_err());
        assert_eq!(
            PageQuery { page: Some(3), per_page: Some(100) }.request().unwrap(),
            PageRequest { page: 3, per_page: 100 }
        );
    }
}
