//! An instance's page: its state followed live (`instance_live`), the operations its state
//! allows (`instance_manage`), and tabs for its overview, snapshots (`instance_snapshots`),
//! backups (`instance_backups`) and console (`instance_console`), with the jobs that acted on it.

use nimbus_domain::{InstanceStatus, InstanceView, JobHandle};
use sycamore::prelude::*;

use crate::api;
use crate::components::{Badge, CopyId, ErrorBanner, Loading};
use crate::format;
use crate::instance_live::{self, LiveInstance};
use crate::pages::dashboard::JobTable;
use crate::pages::instance_backups::BackupsTab;
use crate::pages::instance_console::ConsoleTab;
use crate::pages::instance_manage::{Manage, PowerActions};
use crate::pages::instance_snapshots::SnapshotsTab;

/// The page's tabs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tab {
    Overview,
    Snapshots,
    Backups,
    Console,
}

impl Tab {
    const ALL: [(Tab, &'static str, &'static str); 4] = [
        (Tab::Overview, "Overview", "tab-overview"),
        (Tab::Snapshots, "Snapshots", "tab-snapshots"),
        (Tab::Backups, "Backups", "tab-backups"),
        (Tab::Console, "Console", "tab-console"),
    ];
}

#[component(inline_props)]
pub fn InstanceDetail(id: String) -> View {
    let live = instance_live::follow(id.clone());
    let jobs = create_signal(None::<Vec<JobHandle>>);
    let tab = create_signal(Tab::Overview);
    // The job history is read again whenever the operation in progress changes.
    let operation = create_selector(move || {
        live.instance.with(|i| i.as_ref().map(|i| (i.operation.as_ref().map(|o| (o.id, o.status)), i.status)))
    });
    {
        let id = id.clone();
        create_effect(move || {
            operation.track();
            let id = id.clone();
            crate::task::spawn(async move {
                if let Ok((mine, _)) = api::list::<JobHandle>(&format!("/v1/jobs?instance={id}&perPage=100")).await {
                    jobs.set(Some(mine));
                }
            });
        });
    }
    // Parts that depend only on whether the instance is loaded, so typing in a tab's form is
    // not undone by each live update.
    let loaded = create_selector(move || live.instance.with(Option::is_some));
    view! {
        section {
            ErrorBanner(failure=live.failure)
            (move || if loaded.get() {
                view! {
                    Head(live=live)
                    (tab_bar(tab))
                    (move || match tab.get() {
                        Tab::Overview => view! { Overview(live=live) Manage(live=live) },
                        Tab::Snapshots => view! { SnapshotsTab(live=live) },
                        Tab::Backups => view! { BackupsTab(live=live) },
                        Tab::Console => view! { ConsoleTab(live=live) },
                    })
                }
            } else {
                view! { Loading(label="Loading instance…") }
            })
            h2 { "Job history" }
            (move || match jobs.get_clone() {
                None => view! { Loading(label="Loading jobs…") },
                Some(list) if list.is_empty() => view! { p(class="empty") { "No jobs for this instance yet." } },
                Some(list) => view! { JobTable(jobs=list) },
            })
        }
    }
}

/// The tab buttons.
fn tab_bar(tab: Signal<Tab>) -> View {
    let buttons = Tab::ALL
        .iter()
        .map(|(t, label, testid)| {
            let (t, label, testid) = (*t, *label, *testid);
            let class = move || if tab.get() == t { "tab active" } else { "tab" };
            let selected = move || (tab.get() == t).to_string();
            view! {
                button(class=class, r#type="button", role="tab", aria-selected=selected, data-testid=testid,
                       on:click=move |_| tab.set(t)) { (label) }
            }
        })
        .collect::<Vec<_>>();
    view! { div(class="tabs", role="tablist") { (buttons) } }
}

/// Name, status, the operation in progress (linked to its job) and the power actions.
#[component(inline_props)]
fn Head(live: LiveInstance) -> View {
    view! {
        (move || live.instance.get_clone().map(|i| {
            let name = i.name.clone();
            let status = format::instance_status(i.status).to_owned();
            let operation = i.operation.clone().map(|o| {
                let href = format!("/jobs/{}", o.id);
                let label = format!("{} {} · {}%", o.kind, format::job_status(o.status), o.progress);
                let step = o.step.clone().unwrap_or_default();
                view! { a(class="operation", href=href, data-testid="operation", title=step) { (label) } }
            });
            view! {
                div(class="page-head") {
                    h1 { (name) " " Badge(status=status) " " (operation) }
                    PowerActions(live=live)
                }
            }
        }))
    }
}

/// The instance's facts.
#[component(inline_props)]
fn Overview(live: LiveInstance) -> View {
    view! {
        (move || live.instance.get_clone().map(|i: InstanceView| {
            let ips = i.ip_addresses.iter().map(|a| view! { li { CopyId(id=a.clone()) } }).collect::<Vec<_>>();
            let ip_view = if ips.is_empty() {
                view! { p(class="muted") { "Assigned once the guest has booted." } }
            } else {
                view! { ul(class="plain", data-testid="ips") { (ips) } }
            };
            let id = i.id.to_string();
            let kind = i.kind.as_str();
            let template = i.template.clone();
            let node = i.node.clone().unwrap_or_else(|| "not placed yet".into());
            let vmid = i.vmid.map(|v| v.to_string()).unwrap_or_else(|| "—".into());
            let created = format::time(&i.created_at);
            let uptime = match (i.status, i.uptime) {
                (InstanceStatus::Running, Some(s)) => format::duration(s),
                _ => "—".to_owned(),
            };
            let (cores, memory, disk, keys) = (i.cores, format::mib(i.memory), format!("{} GiB", i.disk), i.ssh_keys.len());
            view! {
                div(class="grid") {
                    div(class="card") {
                        h2 { "Instance" }
                        dl {
                            dt { "Id" } dd { CopyId(id=id) }
                            dt { "Type" } dd { (kind) }
                            dt { "Template" } dd(data-testid="template") { (template) }
                            dt { "Node" } dd { (node) }
                            dt { "VMID" } dd { (vmid) }
                            dt { "Created" } dd { (created) }
                            dt { "Uptime" } dd(data-testid="uptime") { (uptime) }
                        }
                    }
                    div(class="card") {
                        h2 { "Specs" }
                        dl(data-testid="specs") {
                            dt { "vCPUs" } dd(data-testid="cores") { (cores) }
                            dt { "Memory" } dd(data-testid="memory") { (memory) }
                            dt { "Disk" } dd(data-testid="disk") { (disk) }
                            dt { "SSH keys" } dd { (keys) }
                        }
                    }
                    div(class="card") {
                        h2 { "IP addresses" }
                        (ip_view)
                    }
                }
            }
        }))
    }
}
