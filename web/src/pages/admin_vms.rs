//! The operators' view of every tenant's instances (`GET /v1/admin/vms`), filtered by tenant,
//! node and status, each with the operation in progress on it. An operator acts on one as its
//! tenant would: "Act as tenant" starts impersonating one of the tenant's users (its first
//! administrator, else its first active user) and opens the instance's own page, with every
//! action there, audited under both names; the banner at the top ends it.

use nimbus_domain::InstanceStatus;
use serde_json::Value;
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{Badge, ErrorBanner, Loading, operation_cell_json};
use crate::format;
use crate::pages::billing::text;
use crate::session::{Me, Session};

/// How often the list is re-read.
const REFRESH_MS: u32 = 3000;

/// The statuses offered by the filter (empty: all but deleted).
const STATUSES: [InstanceStatus; 7] = [
    InstanceStatus::Provisioning,
    InstanceStatus::Running,
    InstanceStatus::Stopped,
    InstanceStatus::Failed,
    InstanceStatus::Missing,
    InstanceStatus::Deleting,
    InstanceStatus::Deleted,
];

/// The query string of the filters.
fn query(tenant: &str, node: &str, status: &str) -> String {
    let mut q = vec!["perPage=100".to_owned()];
    for (key, value) in [("tenant", tenant), ("node", node), ("status", status)] {
        let value = value.trim();
        if !value.is_empty() {
            q.push(format!("{key}={}", encode(value)));
        }
    }
    q.join("&")
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Impersonates a user of `tenant` and opens instance `id` as they see it.
async fn act_as_tenant(tenant: String, id: String) -> Result<(), Failure> {
    // Users are read as JSON values (`{id, role, …}`): a typed answer would add its own decoder.
    let (users, _) = api::list::<Value>(&format!("/v1/admin/users?tenant={tenant}&active=true&perPage=100")).await?;
    let Some(user) = users.iter().find(|u| u["role"] == "admin").or(users.first()) else {
        return Err(Failure {
            status: 0,
            code: "NO_USER".into(),
            message: "this tenant has no active user to act as".into(),
            request_id: None,
            fields: Vec::new(),
        });
    };
    let path = format!("/v1/admin/users/{}/impersonate", user["id"].as_str().unwrap_or_default());
    api::post::<Value, Value>(&path, None, &[]).await?;
    Session::get().refresh().await;
    sycamore_router::navigate(&format!("/instances/{id}"));
    Ok(())
}

#[component]
pub fn AdminVms() -> View {
    // Read as JSON values: the typed answer (a flattened instance) would add its own decoder.
    let items = create_signal(None::<(Vec<Value>, u64)>);
    let failure = create_signal(None::<Failure>);
    let tenant = create_signal(String::new());
    let node = create_signal(String::new());
    let status = create_signal(String::new());
    let filters = create_memo(move || query(&tenant.get_clone(), &node.get_clone(), &status.get_clone()));
    // Impersonation needs a browser session (API keys send `Nimbus-Impersonate` themselves).
    let can_act = Me::current().is_some_and(|me| me.csrf_token.is_some());
    crate::task::spawn(async move {
        loop {
            match api::list::<Value>(&format!("/v1/admin/vms?{}", filters.get_clone_untracked())).await {
                Ok(page) => {
                    items.set(Some(page));
                    failure.set(None);
                }
                Err(f) => failure.set(Some(f)),
            }
            // A change of filters reads again at once.
            let changed = filters.get_clone_untracked();
            for _ in 0..REFRESH_MS / 250 {
                gloo_timers::future::TimeoutFuture::new(250).await;
                if filters.get_clone_untracked() != changed {
                    break;
                }
            }
        }
    });
    let options = STATUSES
        .iter()
        .map(|s| {
            let value = s.as_str();
            view! { option(value=value) { (value) } }
        })
        .collect::<Vec<_>>();
    view! {
        section {
            h1 { "All instances" }
            ErrorBanner(failure=failure)
            div(class="toolbar") {
                label(r#for="filter-tenant") { "Tenant" }
                input(id="filter-tenant", r#type="search", placeholder="tenant id", bind:value=tenant)
                label(r#for="filter-node") { "Node" }
                input(id="filter-node", r#type="search", placeholder="pve1", bind:value=node)
                label(r#for="filter-status") { "Status" }
                select(id="filter-status", bind:value=status) {
                    option(value="") { "all but deleted" }
                    (options)
                }
            }
            (move || match items.get_clone() {
                None => view! { Loading(label="Loading instances…") },
                Some((list, _)) if list.is_empty() => view! { p(class="empty") { "No instance matches these filters." } },
                Some((list, total)) => {
                    let shown = list.len();
                    let rows = list.into_iter().map(|i| {
                        let (row_name, name) = (text(&i["name"]), text(&i["name"]));
                        let tenant_id = text(&i["tenantId"]);
                        let tenant_short = format::short_id(&tenant_id);
                        let node = i["node"].as_str().unwrap_or("—").to_owned();
                        let state = text(&i["status"]);
                        let memory = format::mib(i["memory"].as_i64().unwrap_or_default());
                        let size = format!("{} vCPU · {memory} · {} GiB", i["cores"], i["disk"]);
                        let operation = operation_cell_json(&i["operation"]);
                        let id = text(&i["id"]);
                        let act = move |_| {
                            let (tenant, id) = (tenant_id.clone(), id.clone());
                            crate::task::spawn(async move {
                                if let Err(f) = act_as_tenant(tenant, id).await {
                                    failure.set(Some(f));
                                }
                            });
                        };
                        let title = text(&i["tenantId"]);
                        view! {
                            tr(data-name=row_name) {
                                td { (name) }
                                td { code(title=title) { (tenant_short) } }
                                td { (node) }
                                td { Badge(status=state) }
                                td { (operation) }
                                td { (size) }
                                td { (if can_act {
                                    view! { button(class="small", r#type="button", data-testid="act-as-tenant", on:click=act.clone()) { "Act as tenant" } }
                                } else { view! {} }) }
                            }
                        }
                    }).collect::<Vec<_>>();
                    let count = format!("{shown} of {total}");
                    view! {
                        p(class="muted") { (count) }
                        div(class="table-wrap") {
                            table(data-testid="admin-instances") {
                                thead { tr { th { "Name" } th { "Tenant" } th { "Node" } th { "Status" } th { "Operation" } th { "Size" } th {} } }
                                tbody { (rows) }
                            }
                        }
                    }
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_the_query() {
        assert_eq!(query("", " ", ""), "perPage=100");
        assert_eq!(query("t-1", "pve2", "running"), "perPage=100&tenant=t-1&node=pve2&status=running");
        assert_eq!(query("", "a&b=c", ""), "perPage=100&node=a%26b%3Dc");
    }
}
