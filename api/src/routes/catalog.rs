//! The catalogue of every route the API serves and who may call it (issue #4, item 5).
//!
//! The router is built by the route modules; this table says, for each method and path
//! template, which [`Access`] the handler's extractor enforces. The integration test
//! `api/tests/api/isolation.rs` holds the two together: it enumerates the router's routes and
//! fails on any route missing here (or listed here but not served), then calls every route as
//! the wrong caller — anonymous (401), non-administrator (403), another tenant (404 exactly like
//! a missing id, nothing changed). Adding a route therefore means adding a line here and a case
//! there; the test's message names the route that lacks either.

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Anyone, without a credential: health checks, the sign-in pages, the portal's assets.
    Public,
    /// Any signed-in caller (`AuthUser`), within their own tenant: another tenant's ids answer
    /// 404 like missing ones.
    Tenant,
    /// The provider's operators (`AdminUser`): deliberately across tenants.
    Operator,
    /// The provider's operators of billing (`BillingOperator`: role `admin` or `billing-admin`),
    /// across tenants; a `billing-admin` reaches nothing else under `/v1/admin`.
    BillingOperator,
}

/// One route: a method on a path template (axum syntax, `{id}` for a parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    /// `GET`, `POST`, ... (`HEAD` is implied by `GET`).
    pub method: &'static str,
    /// The template, as given to `Router::route`.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
}

impl RouteSpec {
    /// The names of the path's parameters, in order.
    pub fn params(&self) -> Vec<&'static str> {
        self.path.split('/').filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect()
    }

    /// Whether the route names a resource by id.
    pub fn takes_id(&self) -> bool {
        !self.params().is_empty()
    }
}

const fn route(method: &'static str, path: &'static str, access: Access) -> RouteSpec {
    RouteSpec { method, path, access }
}

use Access::{BillingOperator, Operator, Public, Tenant};

/// Every route, grouped as the modules are.
pub const CATALOG: &[RouteSpec] = &[
    // health.rs
    route("GET", "/healthz", Public),
    route("GET", "/readyz", Public),
    // reference.rs: the API's contract and its reference page.
    route("GET", "/v1/openapi.json", Public),
    route("GET", "/v1/docs", Public),
    // auth.rs: the sign-in pages read their cookie themselves.
    route("GET", "/auth/login", Public),
    route("GET", "/auth/callback", Public),
    route("POST", "/auth/logout", Public),
    route("GET", "/v1/me", Tenant),
    // webhooks.rs
    route("GET", "/v1/webhooks/event-types", Tenant),
    route("GET", "/v1/webhooks", Tenant),
    route("POST", "/v1/webhooks", Tenant),
    route("GET", "/v1/webhooks/{id}", Tenant),
    route("PATCH", "/v1/webhooks/{id}", Tenant),
    route("DELETE", "/v1/webhooks/{id}", Tenant),
    route("POST", "/v1/webhooks/{id}/secret/rotate", Tenant),
    route("POST", "/v1/webhooks/{id}/test", Tenant),
    route("GET", "/v1/webhooks/{id}/deliveries", Tenant),
    route("GET", "/v1/webhooks/{id}/deliveries/{delivery}", Tenant),
    route("POST", "/v1/webhooks/{id}/deliveries/{delivery}/replay", Tenant),
    route("POST", "/v1/webhooks/{id}/recover", Tenant),
    // admin_webhooks.rs
    route("GET", "/v1/admin/webhooks", Operator),
    // notifications.rs
    route("GET", "/v1/notifications", Tenant),
    route("POST", "/v1/notifications/read-all", Tenant),
    route("GET", "/v1/notifications/stream", Tenant),
    route("POST", "/v1/notifications/{id}/read", Tenant),
    route("GET", "/v1/me/notifications", Tenant),
    route("PUT", "/v1/me/notifications", Tenant),
    // apikeys.rs
    route("GET", "/v1/auth/apikeys", Tenant),
    route("POST", "/v1/auth/apikeys", Tenant),
    route("DELETE", "/v1/auth/apikeys/{id}", Tenant),
    // vms.rs
    route("GET", "/v1/vms", Tenant),
    route("POST", "/v1/vms", Tenant),
    route("GET", "/v1/vms/{id}", Tenant),
    route("DELETE", "/v1/vms/{id}", Tenant),
    // vm_events.rs
    route("GET", "/v1/vms/{id}/events", Tenant),
    // vm_actions.rs, vm_snapshots.rs
    route("POST", "/v1/vms/{id}/actions/{action}", Tenant),
    route("GET", "/v1/vms/{id}/snapshots", Tenant),
    route("POST", "/v1/vms/{id}/snapshots", Tenant),
    route("DELETE", "/v1/vms/{id}/snapshots/{name}", Tenant),
    route("POST", "/v1/vms/{id}/snapshots/{name}/rollback", Tenant),
    route("POST", "/v1/vms/{id}/console", Tenant),
    // vm_backups.rs
    route("GET", "/v1/vms/{id}/backups", Tenant),
    route("POST", "/v1/vms/{id}/backups", Tenant),
    route("DELETE", "/v1/vms/{id}/backups/{backup}", Tenant),
    route("POST", "/v1/vms/{id}/backups/{backup}/protect", Tenant),
    // vm_restore.rs (restore as new is POST /v1/vms with fromBackup)
    route("POST", "/v1/vms/{id}/backups/{backup}/restore", Tenant),
    // vm_backup_policy.rs
    route("GET", "/v1/vms/{id}/backup-policy", Tenant),
    route("PUT", "/v1/vms/{id}/backup-policy", Tenant),
    route("DELETE", "/v1/vms/{id}/backup-policy", Tenant),
    route("GET", "/v1/vms/{id}/backup-policy/preview", Tenant),
    // The console's websocket: its single-use ticket (from the POST) is the credential.
    route("GET", "/v1/vms/{id}/console/ws", Public),
    // billing.rs
    route("GET", "/v1/billing/usage", Tenant),
    route("GET", "/v1/billing/invoices", Tenant),
    route("GET", "/v1/billing/invoices/{id}", Tenant),
    route("GET", "/v1/billing/balance", Tenant),
    // payments.rs: the webhook is authenticated by the provider's signature.
    route("GET", "/v1/billing/top-ups", Tenant),
    route("POST", "/v1/billing/top-ups", Tenant),
    route("POST", "/v1/billing/providers/{provider}/webhook", Public),
    // admin_billing.rs
    route("POST", "/v1/admin/plans/{id}/prices", BillingOperator),
    route("POST", "/v1/admin/tenants/{id}/credit", BillingOperator),
    route("PUT", "/v1/admin/tenants/{id}/billing", BillingOperator),
    route("POST", "/v1/admin/tenants/{id}/suspend", BillingOperator),
    route("POST", "/v1/admin/tenants/{id}/unsuspend", BillingOperator),
    route("POST", "/v1/admin/invoices/{id}/credit-notes", BillingOperator),
    route("GET", "/v1/admin/billing/tenants", BillingOperator),
    route("GET", "/v1/admin/billing/revenue", BillingOperator),
    // jobs.rs
    route("GET", "/v1/jobs", Tenant),
    route("GET", "/v1/jobs/{id}", Tenant),
    route("GET", "/v1/jobs/{id}/events", Tenant),
    // templates.rs, quota.rs
    route("GET", "/v1/templates", Tenant),
    route("GET", "/v1/quota", Tenant),
    // admin.rs: jobs of every tenant.
    route("GET", "/v1/admin/jobs", Operator),
    // admin_vms.rs: every tenant's instances.
    route("GET", "/v1/admin/vms", Operator),
    // admin_schedules.rs
    route("GET", "/v1/admin/schedules", Operator),
    route("POST", "/v1/admin/schedules/{id}/pause", Operator),
    route("POST", "/v1/admin/schedules/{id}/resume", Operator),
    route("POST", "/v1/admin/jobs/{id}/retry", Operator),
    // admin_queues.rs: every tenant's jobs; admin_nodes.rs: the cluster itself.
    route("GET", "/v1/admin/queues", Operator),
    route("GET", "/v1/admin/nodes", Operator),
    // admin_users.rs: across tenants.
    route("GET", "/v1/admin/users", Operator),
    route("POST", "/v1/admin/users", Operator),
    route("GET", "/v1/admin/users/{id}", Operator),
    route("PATCH", "/v1/admin/users/{id}", Operator),
    route("POST", "/v1/admin/users/{id}/deactivate", Operator),
    route("POST", "/v1/admin/users/{id}/reactivate", Operator),
    route("POST", "/v1/admin/users/{id}/impersonate", Operator),
    // Also reached by the impersonated session it ends (see admin_users.rs).
    route("DELETE", "/v1/admin/impersonation", Operator),
    route("GET", "/v1/admin/plans", Operator),
    // admin_plans.rs
    route("POST", "/v1/admin/plans", Operator),
    route("PATCH", "/v1/admin/plans/{id}", Operator),
    route("POST", "/v1/admin/plans/{id}/archive", Operator),
    route("PUT", "/v1/admin/tenants/{id}/plan", Operator),
    // admin_audit.rs
    route("GET", "/v1/admin/audit-logs", Operator),
];

/// Every route the API serves, with who may call it.
pub fn catalog() -> &'static [RouteSpec] {
    CATALOG
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn each_route_is_listed_once_with_a_known_method() {
        let mut seen = HashSet::new();
        for r in catalog() {
            assert!(seen.insert((r.method, r.path)), "{} {} is listed twice", r.method, r.path);
            assert!(["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&r.method), "{} {}", r.method, r.path);
            assert!(r.path.starts_with('/'), "{}", r.path);
        }
    }

    #[test]
    fn admin_paths_need_an_operator_and_only_billing_is_open_to_billing_admins() {
        for r in catalog() {
            if r.path.starts_with("/v1/admin/") {
                assert!(matches!(r.access, Access::Operator | Access::BillingOperator), "{} {}", r.method, r.path);
            }
            if r.access == Access::BillingOperator {
                let billing = r.path.starts_with("/v1/admin/billing/")
                    || r.path.starts_with("/v1/admin/invoices/")
                    || r.path.ends_with("/prices")
                    || ["/credit", "/billing", "/suspend", "/unsuspend"].iter().any(|end| r.path.ends_with(end));
                assert!(billing, "{} {} is open to billing admins", r.method, r.path);
            }
        }
    }

    #[test]
    fn params_are_read_from_the_template() {
        assert_eq!(route("GET", "/v1/jobs/{id}/events", Tenant).params(), vec!["id"]);
        assert!(!route("GET", "/v1/jobs", Tenant).takes_id());
    }
}
