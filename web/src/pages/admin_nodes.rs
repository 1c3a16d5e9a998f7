//! The operator's view of the Proxmox nodes: CPU, memory and disk use and guest counts
//! (`GET /v1/admin/nodes`).

use serde_json::Value;
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{Badge, Bar, ErrorBanner, Loading};
use crate::format;
use crate::pages::billing::text;

#[component]
pub fn Nodes() -> View {
    // Read as JSON values: a typed answer would add its own decoder to the first load.
    let nodes = create_signal(None::<Vec<Value>>);
    let failure = create_signal(None::<Failure>);
    crate::task::spawn(async move {
        loop {
            match api::get::<Vec<Value>>("/v1/admin/nodes").await {
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
                        let count = |field: &str| n[field].as_u64().unwrap_or_default();
                        let (memory_used, memory_total) = (count("memoryUsed"), count("memoryTotal"));
                        let (disk_used, disk_total) = (count("diskUsed"), count("diskTotal"));
                        let cpu = n["cpu"].as_f64().unwrap_or_default() * 100.0;
                        let mem = format::percent(memory_used as f64, memory_total as f64);
                        let disk = format::percent(disk_used as f64, disk_total as f64);
                        let (node_attr, node, status) = (text(&n["node"]), text(&n["node"]), text(&n["status"]));
                        let cpu_text = format!("{}% of {} cores", format::whole(cpu), count("cpus"));
                        let mem_text = format!("{} of {}", format::bytes(memory_used), format::bytes(memory_total));
                        let disk_text = format!("{} of {}", format::bytes(disk_used), format::bytes(disk_total));
                        let guests = format!("{} ({} running)", count("guests"), count("guestsRunning"));
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
