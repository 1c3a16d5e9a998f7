//! The instances list: status badges and the operation in progress on each, refreshed by
//! themselves (faster while an operation runs), search and sort.

use nimbus_domain::InstanceView;
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{Badge, CopyId, ErrorBanner, Loading, operation_cell};
use crate::format;

/// How often the list is re-read.
const REFRESH_MS: u32 = 3000;
/// How often while an operation runs on one of them.
const BUSY_REFRESH_MS: u32 = 1000;

fn matches(i: &InstanceView, q: &str) -> bool {
    q.is_empty()
        || i.name.to_lowercase().contains(q)
        || i.id.to_string().contains(q)
        || i.template.to_lowercase().contains(q)
        || i.status.as_str().contains(q)
        || i.ip_addresses.iter().any(|a| a.contains(q))
}

fn sort(list: &mut [InstanceView], by: &str) {
    match by {
        "name" => list.sort_by(|a, b| a.name.cmp(&b.name)),
        "status" => list.sort_by(|a, b| a.status.as_str().cmp(b.status.as_str()).then(a.name.cmp(&b.name))),
        "oldest" => list.sort_by_key(|i| i.created_at),
        _ => list.sort_by_key(|i| std::cmp::Reverse(i.created_at)),
    }
}

#[component]
pub fn Instances() -> View {
    let all = create_signal(None::<Vec<InstanceView>>);
    let failure = create_signal(None::<Failure>);
    let query = create_signal(String::new());
    let sort_by = create_signal("newest".to_owned());
    crate::task::spawn(async move {
        loop {
            match api::list::<InstanceView>("/v1/vms?perPage=100").await {
                Ok((items, _)) => {
                    all.set(Some(items));
                    failure.set(None);
                }
                Err(f) => failure.set(Some(f)),
            }
            let busy = all.with_untracked(|l| l.iter().flatten().any(|i| i.operation.is_some()));
            gloo_timers::future::TimeoutFuture::new(if busy { BUSY_REFRESH_MS } else { REFRESH_MS }).await;
        }
    });
    let shown = create_memo(move || {
        all.get_clone().map(|list| {
            let q = query.get_clone().trim().to_lowercase();
            let mut v: Vec<InstanceView> = list.into_iter().filter(|i| matches(i, &q)).collect();
            sort(&mut v, &sort_by.get_clone());
            v
        })
    });
    view! {
        section {
            div(class="page-head") {
                h1 { "Instances" }
                a(class="button primary", href="/instances/new") { "Create instance" }
            }
            ErrorBanner(failure=failure)
            div(class="toolbar") {
                label(class="visually-hidden", r#for="search") { "Search" }
                input(id="search", r#type="search", placeholder="Search by name, status, IP or id", bind:value=query)
                label(r#for="sort") { "Sort" }
                select(id="sort", bind:value=sort_by) {
                    option(value="newest") { "Newest first" }
                    option(value="oldest") { "Oldest first" }
                    option(value="name") { "Name" }
                    option(value="status") { "Status" }
                }
            }
            (move || match shown.get_clone() {
                None => view! { Loading(label="Loading instances…") },
                Some(list) if list.is_empty() && all.with(|a| a.as_ref().is_some_and(Vec::is_empty)) => view! {
                    div(class="empty") {
                        p { "You have no instances yet." }
                        a(class="button primary", href="/instances/new") { "Create your first instance" }
                    }
                },
                Some(list) if list.is_empty() => view! { p(class="empty") { "No instance matches your search." } },
                Some(list) => {
                    let rows = list.into_iter().map(|i| {
                        let href = format!("/instances/{}", i.id);
                        let ips = if i.ip_addresses.is_empty() { "—".to_owned() } else { i.ip_addresses.join(", ") };
                        let (name_attr, name) = (i.name.clone(), i.name.clone());
                        let status = format::instance_status(i.status).to_owned();
                        let kind = i.kind.as_str();
                        let template = i.template.clone();
                        let size = format!("{} vCPU · {} · {} GiB", i.cores, format::mib(i.memory), i.disk);
                        let id = i.id.to_string();
                        let operation = operation_cell(i.operation.clone());
                        view! {
                            tr(data-name=name_attr) {
                                td { a(href=href) { (name) } }
                                td { Badge(status=status) }
                                td { (operation) }
                                td { (kind) }
                                td { (template) }
                                td { (size) }
                                td { (ips) }
                                td { CopyId(id=id) }
                            }
                        }
                    }).collect::<Vec<_>>();
                    view! {
                        div(class="table-wrap") {
                            table(data-testid="instances") {
                                thead { tr { th { "Name" } th { "Status" } th { "Operation" } th { "Type" } th { "Template" } th { "Size" } th { "IP addresses" } th { "Id" } } }
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

    fn instance(name: &str, status: &str, created: &str, ips: &[&str]) -> InstanceView {
        serde_json::from_value(serde_json::json!({
            "id": "01a217b7-cec9-7448-8945-442910b55deb", "name": name, "type": "qemu",
            "template": "debian-12-cloudinit", "cores": 1, "memory": 1024, "disk": 10, "sshKeys": [],
            "node": "pve1", "vmid": 100, "status": status, "ipAddresses": ips,
            "createdAt": created, "updatedAt": created
        }))
        .unwrap()
    }

    #[test]
    fn search_looks_at_name_status_and_addresses() {
        let i = instance("web-1", "running", "2026-11-26T10:00:00Z", &["10.0.0.5"]);
        assert!(matches(&i, ""));
        assert!(matches(&i, "web"));
        assert!(matches(&i, "runn"));
        assert!(matches(&i, "10.0.0"));
        assert!(!matches(&i, "db"));
    }

    #[test]
    fn sorts_by_the_chosen_key() {
        let mut list = vec![
            instance("b", "running", "2026-11-26T10:00:00Z", &[]),
            instance("a", "failed", "2026-11-26T12:00:00Z", &[]),
            instance("c", "provisioning", "2026-11-26T11:00:00Z", &[]),
        ];
        let names = |l: &[InstanceView]| l.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
        sort(&mut list, "newest");
        assert_eq!(names(&list), ["a", "c", "b"]);
        sort(&mut list, "oldest");
        assert_eq!(names(&list), ["b", "c", "a"]);
        sort(&mut list, "name");
        assert_eq!(names(&list), ["a", "b", "c"]);
        sort(&mut list, "status");
        assert_eq!(names(&list), ["a", "c", "b"]);
    }
}
