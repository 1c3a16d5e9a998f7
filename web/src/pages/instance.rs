//! An instance's page: state, addresses, specs, its power actions and the jobs that acted on it.

use nimbus_domain::{InstanceStatus, InstanceView, JobHandle};
use sycamore::futures::spawn_local_scoped;
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{Badge, CopyId, ErrorBanner, Loading};
use crate::format;
use crate::pages::dashboard::JobTable;

#[component(inline_props)]
pub fn InstanceDetail(id: String) -> View {
    let instance = create_signal(None::<InstanceView>);
    let jobs = create_signal(None::<Vec<JobHandle>>);
    let failure = create_signal(None::<Failure>);
    {
        let id = id.clone();
        spawn_local_scoped(async move {
            loop {
                match api::get::<InstanceView>(&format!("/v1/vms/{id}")).await {
                    Ok(i) => instance.set(Some(i)),
                    Err(f) => {
                        let stop = f.status == 404 || f.status == 400;
                        failure.set(Some(f));
                        if stop {
                            return;
                        }
                    }
                }
                if let Ok((mine, _)) = api::list::<JobHandle>(&format!("/v1/jobs?instance={id}&perPage=100")).await {
                    jobs.set(Some(mine));
                }
                // Faster while an operation runs on it.
                let settled = instance.with_untracked(|i| i.as_ref().is_some_and(|i| i.operation.is_none()));
                gloo_timers::future::TimeoutFuture::new(if settled { 10_000 } else { 2000 }).await;
            }
        });
    }
    view! {
        section {
            ErrorBanner(failure=failure)
            (move || match instance.get_clone() {
                None => view! { Loading(label="Loading instance…") },
                Some(i) => {
                    let ips = i.ip_addresses.iter().map(|a| view! { li { CopyId(id=a.clone()) } }).collect::<Vec<_>>();
                    let keys = i.ssh_keys.len();
                    let ip_view = if ips.is_empty() {
                        view! { p(class="muted") { "Assigned once the guest has booted." } }
                    } else {
                        view! { ul(class="plain", data-testid="ips") { (ips) } }
                    };
                    let (name, status) = (i.name.clone(), format::instance_status(i.status).to_owned());
                    let id = i.id.to_string();
                    let kind = i.kind.as_str();
                    let template = i.template.clone();
                    let node = i.node.clone().unwrap_or_else(|| "not placed yet".into());
                    let vmid = i.vmid.map(|v| v.to_string()).unwrap_or_else(|| "—".into());
                    let created = format::time(&i.created_at);
                    let cores = i.cores;
                    let memory = format::mib(i.memory);
                    let disk = format!("{} GiB", i.disk);
                    let actions = power_actions(&i, instance, failure);
                    view! {
                        div(class="page-head") {
                            h1 { (name) " " Badge(status=status) }
                            (actions)
                        }
                        div(class="grid") {
                            div(class="card") {
                                h2 { "Instance" }
                                dl {
                                    dt { "Id" } dd { CopyId(id=id) }
                                    dt { "Type" } dd { (kind) }
                                    dt { "Template" } dd { (template) }
                                    dt { "Node" } dd { (node) }
                                    dt { "VMID" } dd { (vmid) }
                                    dt { "Created" } dd { (created) }
                                }
                            }
                            div(class="card") {
                                h2 { "Specs" }
                                dl {
                                    dt { "vCPUs" } dd { (cores) }
                                    dt { "Memory" } dd { (memory) }
                                    dt { "Disk" } dd { (disk) }
                                    dt { "SSH keys" } dd { (keys) }
                                }
                            }
                            div(class="card") {
                                h2 { "IP addresses" }
                                (ip_view)
                            }
                        }
                    }
                }
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

/// The power actions that make sense in the instance's status, disabled while an operation runs
/// on it; each is accepted as a job, and the page follows the instance until it ends.
fn power_actions(i: &InstanceView, instance: Signal<Option<InstanceView>>, failure: Signal<Option<Failure>>) -> View {
    let offered: &[(&str, &str)] = match i.status {
        InstanceStatus::Running => &[("stop", "Stop"), ("shutdown", "Shut down"), ("reboot", "Reboot")],
        InstanceStatus::Stopped => &[("start", "Start")],
        _ => &[],
    };
    let busy = i.operation.is_some();
    let buttons = offered
        .iter()
        .map(|(action, label)| {
            let (action, label, id) = (*action, *label, i.id.to_string());
            let act = move |_| {
                let id = id.clone();
                spawn_local_scoped(async move {
                    let path = format!("/v1/vms/{id}/actions/{action}");
                    match api::post::<serde_json::Value, JobHandle>(&path, Some(&serde_json::json!({})), &[]).await {
                        Ok(_) => {
                            if let Ok(now) = api::get::<InstanceView>(&format!("/v1/vms/{id}")).await {
                                instance.set(Some(now));
                            }
                        }
                        Err(f) => failure.set(Some(f)),
                    }
                });
            };
            let testid = format!("action-{action}");
            view! { button(class="small", r#type="button", data-testid=testid, disabled=busy, on:click=act) { (label) } }
        })
        .collect::<Vec<_>>();
    view! { div(class="actions", data-testid="power-actions") { (buttons) } }
}
