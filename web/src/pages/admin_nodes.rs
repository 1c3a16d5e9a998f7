//! The operator's view of the Proxmox nodes: CPU, memory and disk use and guest counts
//! (`GET /v1/admin/nodes`).

use nimbus_domain::NodeStats;
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{Badge, Bar, ErrorBanner, Loading};
use crate::format;

#[component]
pub fn Nodes() -> View {
    let nodes = create_signal(None::<Vec<NodeStats>>);
    let failure = create_signal(None::<Failure>);
    crate::task::spawn(async move {
        loop {
            match api::get::<Vec<NodeStats>>("/v1/admin/nodes").await {
                Ok(n) => {
                    nodes.set(Some(n));
                    failure.set(None);
                }
                Err(f) => failure.set(Some(f)),
            }
            gloo_timers::future::TimeoutFuture::new(10_000).await;
        }
    });
    view! {
        section {
            h1 { "Nodes" }
            ErrorBanner(failure=failure)
            (move || match nodes.get_clone() {
                None => view! { Loading(label="Loading nodes…") },
                Some(list) if list.is_empty() => view! { p(class="empty") { "The cluster reports no nodes." } },
                Some(list) => {
                    let cards = list.into_iter().map(|n| {
                        let cpu = n.cpu * 100.0;
                        let mem = format::percent(n.memory_used as f64, n.memory_total as f64);
                        let disk = format::percent(n.disk_used as f64, n.disk_total as f64);
                        let (node_attr, node, status) = (n.node.clone(), n.node.clone(), n.status.clone());
                        let cpu_text = format!("{}% of {} cores", format::whole(cpu), n.cpus);
                        let mem_text = format!("{} of {}", format::bytes(n.memory_used), format::bytes(n.memory_total));
                        let disk_text = format!("{} of {}", format::bytes(n.disk_used), format::bytes(n.disk_total));
                        let guests = format!("{} ({} running)", n.guests, n.guests_running);
                        view! {
                            div(class="card node", data-node=node_attr) {
                                div(class="page-head") { h2 { (node) } Badge(status=status) }
                                dl(class="meters") {
                                    dt { "CPU" } dd { Bar(value=cpu, label="CPU".to_owned()) span { (cpu_text) } }
                                    dt { "Memory" } dd { Bar(value=mem, label="Memory".to_owned()) span { (mem_text) } }
                                    dt { "Disk" } dd { Bar(value=disk, label="Disk".to_owned()) span { (disk_text) } }
                                    dt { "Guests" } dd(data-testid="guests") { (guests) }
                                }
                            }
                        }
                    }).collect::<Vec<_>>();
                    view! { div(class="grid") { (cards) } }
                }
            })
        }
    }
}
