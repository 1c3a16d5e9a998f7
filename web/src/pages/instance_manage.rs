//! What a customer can do to an instance: the power actions its status allows, resize, rebuild
//! and delete (the two that lose data ask for the instance's name). Each is accepted as a job;
//! the page follows it live to its end, and a refusal shows the API's message.

use std::rc::Rc;

use nimbus_domain::{InstanceStatus, InstanceView, JobHandle, TemplateView};
use serde_json::{Value, json};
use sycamore::prelude::*;

use crate::api::{self, Failure};
use crate::components::{ConfirmByName, Destructive, ErrorBanner};
use crate::instance_live::LiveInstance;

/// Posts `body` to `path`, then reads the instance again (its operation shows at once).
fn act(live: LiveInstance, id: String, path: String, body: Value, failure: Signal<Option<Failure>>) {
    crate::task::spawn(async move {
        match api::post::<Value, JobHandle>(&path, Some(&body), &[]).await {
            Ok(_) => live.reload(&id).await,
            Err(f) => failure.set(Some(f)),
        }
    });
}

/// The power actions that make sense in the instance's status, disabled while an operation runs.
#[component(inline_props)]
pub fn PowerActions(live: LiveInstance) -> View {
    let failure = live.failure;
    view! {
        (move || live.instance.get_clone().map(|i| {
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
                    let path = format!("/v1/vms/{id}/actions/{action}");
                    let run = move |_| act(live, id.clone(), path.clone(), json!({}), failure);
                    let testid = format!("action-{action}");
                    view! { button(class="small", r#type="button", data-testid=testid, disabled=busy, on:click=run) { (label) } }
                })
                .collect::<Vec<_>>();
            view! { div(class="actions", data-testid="power-actions") { (buttons) } }
        }))
    }
}

/// Which dialog is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    Resize,
    Rebuild,
}

/// The "Manage" card: resize, rebuild, delete.
#[component(inline_props)]
pub fn Manage(live: LiveInstance) -> View {
    let open = create_signal(None::<Open>);
    let deleting = create_signal(None::<Destructive>);
    let failure = create_signal(None::<Failure>);
    let on_delete: Rc<dyn Fn(String)> = Rc::new(move |id: String| {
        crate::task::spawn(async move {
            match api::delete_accepted::<JobHandle>(&format!("/v1/vms/{id}")).await {
                Ok(_) => live.reload(&id).await,
                Err(f) => failure.set(Some(f)),
            }
        });
    });
    let usable = live.usable();
    let deletable = create_selector(move || {
        live.instance.with(|i| {
            i.as_ref().is_some_and(|i| {
                i.operation.is_none()
                    && matches!(
                        i.status,
                        InstanceStatus::Running
                            | InstanceStatus::Stopped
                            | InstanceStatus::Missing
                            | InstanceStatus::Failed
                    )
            })
        })
    });
    let ask_delete = move |_| {
        if let Some(i) = live.instance.get_clone() {
            deleting.set(Some(Destructive { id: i.id.to_string(), name: i.name }));
        }
    };
    view! {
        div(class="card manage") {
            h2 { "Manage" }
            ErrorBanner(failure=failure)
            div(class="manage-row") {
                div {
                    strong { "Resize" }
                    p(class="muted") { "More vCPUs or memory, a bigger disk (disks only grow)." }
                }
                button(r#type="button", data-testid="open-resize", disabled=move || !usable.get(),
                       on:click=move |_| open.set(Some(Open::Resize))) { "Resize" }
            }
            div(class="manage-row") {
                div {
                    strong { "Rebuild" }
                    p(class="muted") { "Recreate the guest from a template: same name, id and node; its data is lost." }
                }
                button(class="danger-outline", r#type="button", data-testid="open-rebuild", disabled=move || !usable.get(),
                       on:click=move |_| open.set(Some(Open::Rebuild))) { "Rebuild" }
            }
            div(class="manage-row") {
                div {
                    strong { "Delete" }
                    p(class="muted") { "Stop the guest and remove it with its disks." }
                }
                button(class="danger", r#type="button", data-testid="open-delete", disabled=move || !deletable.get(),
                       on:click=ask_delete) { "Delete" }
            }
        }
        (move || match open.get() {
            Some(Open::Resize) => view! { ResizeDialog(live=live, open=open, failure=failure) },
            Some(Open::Rebuild) => view! { RebuildDialog(live=live, open=open, failure=failure) },
            None => view! {},
        })
        ConfirmByName(pending=deleting, verb="Delete", on_confirm=on_delete)
    }
}

/// A modal form: Escape or Cancel closes it.
fn dialog(open: Signal<Option<Open>>, title: &'static str, body: View, submit: impl Fn() + 'static, ok: View) -> View {
    let on_submit = move |e: web_sys::SubmitEvent| {
        e.prevent_default();
        submit();
    };
    let escape = move |e: web_sys::KeyboardEvent| {
        if e.key() == "Escape" {
            open.set(None);
        }
    };
    view! {
        div(class="backdrop") {
            form(class="dialog card", role="dialog", aria-modal="true", aria-label=title, on:submit=on_submit, on:keydown=escape) {
                h2 { (title) }
                (body)
                div(class="actions") {
                    button(r#type="button", on:click=move |_| open.set(None)) { "Cancel" }
                    (ok)
                }
            }
        }
    }
}

/// A number typed in a number field: `[+-]digits[.digits][e[+-]digits]`. Read here, not with
/// `str::parse::<f64>`, whose float parser would add kilobytes to the first load.
fn decimal(typed: &str) -> Option<f64> {
    let typed = typed.trim();
    let (mantissa, exponent) = typed.split_once(['e', 'E']).unwrap_or((typed, "0"));
    let exponent = exponent.parse::<i32>().ok()?;
    let (negative, unsigned) = match mantissa.as_bytes().first()? {
        b'-' => (true, &mantissa[1..]),
        b'+' => (false, &mantissa[1..]),
        _ => (false, mantissa),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if int.is_empty() && frac.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value = |digits: &str| digits.bytes().fold(0.0, |n, b| n * 10.0 + f64::from(b - b'0'));
    let magnitude = (value(int) + value(frac) / 10f64.powi(frac.len() as i32)) * 10f64.powi(exponent);
    Some(if negative { -magnitude } else { magnitude })
}

/// `{cores?, memory?, disk?}`: only what changed is sent.
fn resize_body(i: &InstanceView, cores: &str, memory_gib: &str, disk: &str) -> Result<Value, String> {
    let number = |what: &str, v: &str| decimal(v).ok_or_else(|| format!("{what} must be a number"));
    let (cores, memory, disk) = (number("vCPUs", cores)?, number("Memory", memory_gib)?, number("Disk", disk)?);
    let mut body = serde_json::Map::new();
    if cores as i32 != i.cores {
        body.insert("cores".into(), json!(cores as i64));
    }
    let memory_mib = (memory * 1024.0).round() as i64;
    if memory_mib != i.memory {
        body.insert("memory".into(), json!(memory_mib));
    }
    if disk as i64 != i.disk {
        body.insert("disk".into(), json!(disk as i64));
    }
    if body.is_empty() {
        return Err("Change at least one size.".into());
    }
    Ok(Value::Object(body))
}

#[component(inline_props)]
fn ResizeDialog(live: LiveInstance, open: Signal<Option<Open>>, failure: Signal<Option<Failure>>) -> View {
    let Some(i) = live.instance.get_clone_untracked() else { return view! {} };
    let cores = create_signal(i.cores.to_string());
    let memory = create_signal(format!("{}", i.memory as f64 / 1024.0));
    let disk = create_signal(i.disk.to_string());
    let problem = create_signal(None::<String>);
    let note = if i.status == InstanceStatus::Running {
        "A running instance takes new vCPUs and memory at once where its guest allows it; otherwise they apply at its next stop and start."
    } else {
        "The new sizes apply when it next starts."
    };
    let min_disk = i.disk.to_string();
    let body = view! {
        p(class="muted") { (note) }
        label(r#for="resize-cores") { "vCPUs" }
        input(id="resize-cores", r#type="number", min="1", max="64", required=true, bind:value=cores)
        label(r#for="resize-memory") { "Memory (GiB)" }
        input(id="resize-memory", r#type="number", min="0.5", step="0.5", required=true, bind:value=memory)
        label(r#for="resize-disk") { "Disk (GiB, grows only)" }
        input(id="resize-disk", r#type="number", min=min_disk, required=true, bind:value=disk)
        (move || problem.get_clone().map(|p| view! { p(class="field-error", role="alert") { (p) } }))
    };
    let submit = move || {
        let Some(now) = live.instance.get_clone_untracked() else { return };
        match resize_body(
            &now,
            &cores.get_clone_untracked(),
            &memory.get_clone_untracked(),
            &disk.get_clone_untracked(),
        ) {
            Ok(body) => {
                open.set(None);
                act(live, now.id.to_string(), format!("/v1/vms/{}/actions/resize", now.id), body, failure);
            }
            Err(p) => problem.set(Some(p)),
        }
    };
    let ok = view! { button(class="primary", r#type="submit", data-testid="confirm-resize") { "Resize" } };
    dialog(open, "Resize instance", body, submit, ok)
}

#[component(inline_props)]
fn RebuildDialog(live: LiveInstance, open: Signal<Option<Open>>, failure: Signal<Option<Failure>>) -> View {
    let Some(i) = live.instance.get_clone_untracked() else { return view! {} };
    let templates = create_signal(Vec::<String>::new());
    let template = create_signal(i.template.clone());
    let typed = create_signal(String::new());
    let kind = i.kind;
    crate::task::spawn(async move {
        match api::list::<TemplateView>("/v1/templates?perPage=100").await {
            Ok((items, _)) => templates.set(items.into_iter().filter(|t| t.kind == kind).map(|t| t.name).collect()),
            Err(f) => failure.set(Some(f)),
        }
    });
    let name = i.name.clone();
    let expected = i.name.clone();
    let matches = move || typed.with(|t| t.trim() == expected);
    let options = move || {
        templates
            .get_clone()
            .into_iter()
            .map(|t| {
                let value = t.clone();
                view! { option(value=value) { (t) } }
            })
            .collect::<Vec<_>>()
    };
    let body = view! {
        p { "The guest is recreated from the template. " strong { "Everything on its disks is lost." } }
        label(r#for="rebuild-template") { "Template" }
        select(id="rebuild-template", bind:value=template) { (options) }
        label(r#for="rebuild-name") { "Type " strong { (name) } " to confirm" }
        input(id="rebuild-name", r#type="text", autocomplete="off", bind:value=typed)
    };
    let submit = move || {
        let Some(now) = live.instance.get_clone_untracked() else { return };
        if typed.with_untracked(|t| t.trim() != now.name) {
            return;
        }
        open.set(None);
        let body = json!({ "template": template.get_clone_untracked(), "confirm": now.name });
        act(live, now.id.to_string(), format!("/v1/vms/{}/actions/rebuild", now.id), body, failure);
    };
    let ok = view! {
        button(class="danger", r#type="submit", data-testid="confirm-rebuild", disabled=move || !matches()) { "Rebuild" }
    };
    dialog(open, "Rebuild instance", body, submit, ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance() -> InstanceView {
        serde_json::from_value(json!({
            "id": "01a217b7-cec9-7448-8945-442910b55deb", "name": "web-1", "type": "qemu",
            "template": "debian-12-cloudinit", "cores": 2, "memory": 2048, "disk": 20, "sshKeys": [],
            "node": "pve1", "vmid": 100, "status": "running", "ipAddresses": [],
            "createdAt": "2026-11-26T10:00:00Z", "updatedAt": "2026-11-26T10:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn a_resize_sends_only_what_changed() {
        let i = instance();
        assert_eq!(resize_body(&i, "4", "2", "20").unwrap(), json!({"cores": 4}));
        assert_eq!(resize_body(&i, "2", "3.5", "30").unwrap(), json!({"memory": 3584, "disk": 30}));
        assert!(resize_body(&i, "2", "2", "20").is_err(), "nothing changed");
        assert!(resize_body(&i, "two", "2", "20").unwrap_err().contains("vCPUs"));
    }

    #[test]
    fn sizes_are_read_like_the_number_fields() {
        let read = ["4", " 2.5 ", "+3", "-1", ".5", "1e1", "2.5E-1"].map(decimal);
        assert_eq!(read, [Some(4.0), Some(2.5), Some(3.0), Some(-1.0), Some(0.5), Some(10.0), Some(0.25)]);
        assert_eq!(["", ".", "1.2.3", "1e", "x"].map(decimal), [None; 5]);
    }
}
