//! The create wizard: template, size (within what the plan has left, with the estimated hourly
//! price), SSH key and name; then `POST /v1/vms` with an `Idempotency-Key` and on to the job's
//! live progress. The API has the last word: a request the plan cannot hold is still sent, and
//! the API's own message is shown.

use nimbus_domain::{CreateVm, InstanceKind, JobHandle, QuotaResource, QuotaView, ResourceRequest, TemplateView};
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{ErrorBanner, Loading};
use crate::format;

/// Size presets: (label, cores, memory MiB, disk GiB).
const PRESETS: [(&str, u32, u64, u64); 4] =
    [("Small", 1, 1024, 10), ("Medium", 2, 2048, 20), ("Large", 4, 8192, 80), ("X-Large", 8, 16384, 160)];

/// A fresh `Idempotency-Key` for one submission.
pub(crate) fn idempotency_key() -> String {
    web_sys::window()
        .and_then(|w| w.crypto().ok())
        .map(|c| c.random_uuid())
        .unwrap_or_else(|| format!("{}", js_sys::Date::now()))
}

fn parse(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

#[component]
pub fn Create() -> View {
    let templates = create_signal(None::<Vec<TemplateView>>);
    let quota = create_signal(None::<QuotaView>);
    let failure = create_signal(None::<Failure>);
    let template = create_signal(String::new());
    let cores = create_signal("1".to_owned());
    let memory = create_signal("1024".to_owned());
    let disk = create_signal("10".to_owned());
    let ssh_key = create_signal(String::new());
    let name = create_signal(String::new());
    let busy = create_signal(false);
    let loaded = create_signal(false);

    crate::task::spawn(async move {
        match api::list::<TemplateView>("/v1/templates?perPage=100").await {
            Ok((items, _)) => {
                if let Some(first) = items.first() {
                    template.set(first.name.clone());
                }
                templates.set(Some(items));
            }
            Err(f) => failure.set(Some(f)),
        }
        match api::get::<QuotaView>("/v1/quota").await {
            Ok(q) => quota.set(Some(q)),
            Err(f) => failure.set(Some(f)),
        }
        loaded.set(true);
    });

    let chosen = create_memo(move || {
        templates.with(|ts| ts.as_ref().and_then(|ts| ts.iter().find(|t| t.name == template.get_clone()).cloned()))
    });
    let request = create_memo(move || ResourceRequest {
        vcpus: parse(&cores.get_clone()).unwrap_or(0) as i64,
        memory_mib: parse(&memory.get_clone()).unwrap_or(0) as i64,
        disk_gib: parse(&disk.get_clone()).unwrap_or(0) as i64,
    });
    // What the plan would refuse, said before the request is sent.
    let over = create_memo(move || {
        quota.with(|q| {
            q.as_ref().and_then(|q| q.limits.check(&q.used, &request.get()).err()).map(|e| {
                let what = match e.resource {
                    QuotaResource::Instances => "instances",
                    QuotaResource::Vcpus => "vCPUs",
                    QuotaResource::MemoryMib => "memory (MiB)",
                    QuotaResource::DiskGib => "disk (GiB)",
                };
                format!(
                    "This exceeds what your plan has left: {} {what} left, {} requested.",
                    e.limit - e.used,
                    e.requested
                )
            })
        })
    });
    let price = create_memo(move || {
        quota.with(|q| {
            q.as_ref().map(|q| &q.prices).map(|p| {
                let r = request.get();
                let hourly = p.hourly(r.vcpus as i32, r.memory_mib, r.disk_gib);
                format!("{} {}/hour", hourly.0.round_dp(4).normalize(), p.currency)
            })
        })
    });

    let submit = move |e: web_sys::SubmitEvent| {
        e.prevent_default();
        if busy.get() {
            return;
        }
        let Some(t) = chosen.get_clone() else {
            failure.set(Some(Failure {
                status: 0,
                code: "VALIDATION_FAILED".into(),
                message: "Choose a template.".into(),
                request_id: None,
                fields: Vec::new(),
            }));
            return;
        };
        let body = CreateVm {
            name: name.get_clone().trim().to_owned(),
            kind: t.kind,
            template: t.name.clone(),
            cores: parse(&cores.get_clone()).unwrap_or(0) as u32,
            memory: parse(&memory.get_clone()).unwrap_or(0),
            disk: parse(&disk.get_clone()).unwrap_or(0),
            ssh_keys: ssh_key.get_clone().lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect(),
            node: None,
        };
        busy.set(true);
        failure.set(None);
        crate::task::spawn(async move {
            let key = idempotency_key();
            match api::post::<CreateVm, JobHandle>("/v1/vms", Some(&body), &[("Idempotency-Key", &key)]).await {
                Ok(job) => sycamore_router::navigate(&format!("/jobs/{}", job.id)),
                Err(f) => {
                    failure.set(Some(f));
                    busy.set(false);
                }
            }
        });
    };

    view! {
        section {
            h1 { "Create an instance" }
            ErrorBanner(failure=failure)
            (move || match loaded.get() {
                false => view! { Loading(label="Loading templates and quota…") },
                true => {
                    let (templates_now, quota_now) = (templates.get_clone_untracked(), quota.get_clone_untracked());
                    let options = templates_now.unwrap_or_default().into_iter().map(|t| {
                        let id = format!("tpl-{}", t.name);
                        let value = t.name.clone();
                        let kind = match t.kind { InstanceKind::Qemu => "virtual machine", InstanceKind::Lxc => "container" };
                        let min = t.min_disk.map(|d| format!(", disk ≥ {d} GiB")).unwrap_or_default();
                        let checked = template.get_clone_untracked() == t.name;
                        let (for_id, value_attr, name) = (id.clone(), value.clone(), t.name.clone());
                        let detail = format!(" {kind}{min}");
                        view! {
                            label(class="choice", r#for=for_id) {
                                input(id=id, r#type="radio", name="template", value=value_attr, checked=checked,
                                      on:change=move |_| template.set(value.clone()))
                                span { strong { (name) } span(class="muted") { (detail) } }
                            }
                        }
                    }).collect::<Vec<_>>();
                    let presets = PRESETS.iter().map(|(label, c, m, d)| {
                        let (c, m, d) = (*c, *m, *d);
                        let text = format!("{label} · {c} vCPU · {} · {d} GiB", format::mib(m as i64));
                        view! {
                            button(r#type="button", class="chip", on:click=move |_| {
                                cores.set(c.to_string()); memory.set(m.to_string()); disk.set(d.to_string());
                            }) { (text) }
                        }
                    }).collect::<Vec<_>>();
                    let remaining = quota_now.map(|q| {
                        let r = q.remaining;
                        format!("Plan {}: {} instances, {} vCPUs, {} memory, {} GiB disk left", q.plan.name, r.instances, r.vcpus, format::mib(r.memory_mib), r.disk_gib)
                    }).unwrap_or_default();
                    view! {
                        form(class="wizard", on:submit=submit) {
                            fieldset {
                                legend { "1. Template" }
                                div(class="choices", role="radiogroup") { (options) }
                            }
                            fieldset {
                                legend { "2. Size" }
                                p(class="muted", data-testid="remaining") { (remaining) }
                                div(class="chips") { (presets) }
                                div(class="row") {
                                    div { label(r#for="cores") { "vCPUs" } input(id="cores", r#type="number", min="1", max="64", required=true, bind:value=cores) }
                                    div { label(r#for="memory") { "Memory (MiB)" } input(id="memory", r#type="number", min="256", step="256", required=true, bind:value=memory) }
                                    div { label(r#for="disk") { "Disk (GiB)" } input(id="disk", r#type="number", min="1", required=true, bind:value=disk) }
                                }
                                (move || over.get_clone().map(|m| view! { p(class="warn", data-testid="over-quota") { (m) } }).unwrap_or_default())
                                p(class="price", data-testid="price") {
                                    "Estimated price: "
                                    strong { (move || price.get_clone().unwrap_or_else(|| "not available for this plan".into())) }
                                }
                            }
                            fieldset {
                                legend { "3. SSH key" }
                                label(r#for="ssh") { "Public key (optional, one per line)" }
                                textarea(id="ssh", rows="3", placeholder="ssh-ed25519 AAAA… you@laptop", bind:value=ssh_key) {}
                            }
                            fieldset {
                                legend { "4. Name" }
                                label(r#for="name") { "Name (lowercase letters, digits and '-')" }
                                input(id="name", r#type="text", required=true, autocomplete="off", placeholder="web-1", pattern="[a-z0-9]([a-z0-9-]*[a-z0-9])?", bind:value=name)
                            }
                            div(class="actions") {
                                a(class="button", href="/instances") { "Cancel" }
                                button(class="primary", r#type="submit", disabled=move || busy.get()) {
                                    (move || if busy.get() { "Creating…" } else { "Create instance" })
                                }
                            }
                        }
                    }
                }
            })
        }
    }
}
