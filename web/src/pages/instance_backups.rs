//! The Backups tab: the instance's backups (`GET /v1/vms/{id}/backups`, newest first) with their
//! size, note, origin and protection; backing up now, protecting, deleting, restoring one in
//! place (the instance's name typed: its disks are replaced) and restoring one as a new instance
//! (on to that job's page, like the create wizard); then the schedule and retention editor
//! (`instance_backup_policy`). A backup or restore job shows here live, with what it waits for
//! while queued; the list is read again whenever an operation on the instance ends. Backups are
//! read as JSON values (`{id, size, createdAt, note, protected, origin, …}`): a typed answer would
//! add its own decoder to the first load.

use std::rc::Rc;

use nimbus_domain::{JobHandle, JobKind};
use serde_json::{Value, json};
use sycamore::prelude::*;
use wasm_bindgen::JsCast;

use crate::api::{self, Failure};
use crate::components::{Badge, ConfirmByName, Destructive, ErrorBanner, Loading};
use crate::format;
use crate::instance_live::LiveInstance;
use crate::pages::instance_backup_policy::BackupPolicy;
use crate::progress::{self, WaitingFor};

/// Starts a job (`POST` with `body`, or `DELETE` without), then reads the instance again so its
/// operation shows at once.
fn start(live: LiveInstance, id: String, path: String, body: Option<Value>, failure: Signal<Option<Failure>>) {
    crate::task::spawn(async move {
        let accepted = match body {
            Some(body) => api::post::<Value, JobHandle>(&path, Some(&body), &[]).await,
            None => api::delete_accepted::<JobHandle>(&path).await,
        };
        match accepted {
            Ok(_) => live.reload(&id).await,
            Err(f) => failure.set(Some(f)),
        }
    });
}

#[component(inline_props)]
pub fn BackupsTab(live: LiveInstance) -> View {
    let Some(id) = live.instance.with_untracked(|i| i.as_ref().map(|i| i.id.to_string())) else { return view! {} };
    let list = create_signal(None::<Vec<Value>>);
    let failure = create_signal(None::<Failure>);
    let note = create_signal(String::new());
    let keep = create_signal(false);
    let restoring = create_signal(None::<Destructive>);
    let deleting = create_signal(None::<Destructive>);
    let copying = create_signal(None::<String>);
    // Read again each time the instance settles (a backup, restore or delete job ended).
    let (settled, usable) = (live.settled(), live.usable());
    {
        let id = id.clone();
        create_effect(move || {
            if settled.get() != Some(true) {
                return;
            }
            let id = id.clone();
            crate::task::spawn(async move {
                match api::get::<Value>(&format!("/v1/vms/{id}/backups")).await {
                    Ok(Value::Array(items)) => list.set(Some(items)),
                    Ok(_) => list.set(Some(Vec::new())),
                    Err(f) => failure.set(Some(f)),
                }
            });
        });
    }
    let take = {
        let id = id.clone();
        move |e: web_sys::SubmitEvent| {
            e.prevent_default();
            let text = note.get_clone_untracked();
            let text = Some(text.trim()).filter(|t| !t.is_empty());
            let body = json!({ "protected": keep.get_untracked(), "note": text });
            note.set(String::new());
            keep.set(false);
            start(live, id.clone(), format!("/v1/vms/{id}/backups"), Some(body), failure);
        }
    };
    let on_restore: Rc<dyn Fn(String)> = {
        let id = id.clone();
        Rc::new(move |backup: String| {
            let Some(name) = live.instance.with_untracked(|i| i.as_ref().map(|i| i.name.clone())) else { return };
            let path = format!("/v1/vms/{id}/backups/{backup}/restore");
            start(live, id.clone(), path, Some(json!({ "confirm": name })), failure);
        })
    };
    let on_delete: Rc<dyn Fn(String)> = {
        let id = id.clone();
        Rc::new(move |backup: String| start(live, id.clone(), format!("/v1/vms/{id}/backups/{backup}"), None, failure))
    };
    let policy_id = id.clone();
    // What a row's buttons do; one handler for all of them keeps the wasm small.
    let act: Rc<dyn Fn(Act, String)> = Rc::new(move |what: Act, backup: String| match what {
        // Protection is set at once; the row shows the backup the API answers with.
        Act::Protect(protected) => {
            let path = format!("/v1/vms/{id}/backups/{backup}/protect");
            crate::task::spawn(async move {
                match api::post::<Value, Value>(&path, Some(&json!({ "protected": protected })), &[]).await {
                    Ok(b) => list.update(|l| {
                        if let Some(row) = l.iter_mut().flatten().find(|r| r["id"] == b["id"]) {
                            *row = b;
                        }
                    }),
                    Err(f) => failure.set(Some(f)),
                }
            });
        }
        Act::Restore => {
            if let Some(name) = live.instance.with_untracked(|i| i.as_ref().map(|i| i.name.clone())) {
                restoring.set(Some(Destructive { id: backup, name }));
            }
        }
        Act::RestoreAsNew => copying.set(Some(backup)),
        Act::Delete => deleting.set(Some(Destructive { id: backup.clone(), name: backup })),
    });
    let unusable = move || !usable.get();
    // The table is built again when the list changes or the instance becomes busy or idle.
    let table = move || {
        let idle = usable.get();
        // Cloned out: views are not built while a signal is borrowed.
        let items = list.get_clone()?;
        if items.is_empty() {
            return Some(view! { p(class="empty") { "No backups yet." } });
        }
        let rows = items
            .iter()
            .map(|b| {
                let id = b["id"].as_str().unwrap_or_default().to_owned();
                let taken = b["createdAt"].as_str().map(format::time_str).unwrap_or_default();
                let size = b["size"].as_u64().map(format::bytes).unwrap_or_else(|| "—".into());
                let note = b["note"].as_str().unwrap_or_default().to_owned();
                let origin = if b["origin"] == "proxmox" { "made on Proxmox" } else { "Nimbus" };
                let protected = b["protected"] == true;
                let shield = protected.then(|| {
                    view! { " " span(class="badge tag status-protected", data-testid="protected") { "protected" } }
                });
                let buttons = [
                    if protected {
                        (
                            Act::Protect(false),
                            "Unprotect",
                            "small",
                            "Allow deleting it and removing it by retention",
                            false,
                        )
                    } else {
                        (Act::Protect(true), "Protect", "small", "Keep it from deletion and from retention", false)
                    },
                    (Act::Restore, "Restore", "small", "Replace this instance's disks with this backup", !idle),
                    (Act::RestoreAsNew, "Restore as new", "small", "Create a new instance from this backup", false),
                    if protected {
                        (
                            Act::Delete,
                            "Delete",
                            "small danger-outline",
                            "Protected: unprotect it before deleting it",
                            true,
                        )
                    } else {
                        (Act::Delete, "Delete", "small danger-outline", "Delete this backup", !idle)
                    },
                ]
                .into_iter()
                .map(|(what, label, class, title, disabled)| {
                    let (act, backup) = (act.clone(), id.clone());
                    view! {
                        button(class=class, r#type="button", title=title, disabled=disabled,
                               on:click=move |_| act(what, backup.clone())) { (label) }
                    }
                })
                .collect::<Vec<_>>();
                let (row, title) = (id.clone(), id);
                view! {
                    tr(data-backup=row, data-testid="backup-row") {
                        td(title=title) { (taken) }
                        td { (size) }
                        td { (note) }
                        td { span(class="badge tag") { (origin) } (shield) }
                        td(class="row-actions") { (buttons) }
                    }
                }
            })
            .collect::<Vec<_>>();
        Some(view! {
            div(class="table-wrap") {
                table {
                    thead { tr { th { "Taken" } th { "Size" } th { "Note" } th { "Origin" } th {} } }
                    tbody { (rows) }
                }
            }
        })
    };
    // The backup or restore job on the instance, followed live with it, and why it waits.
    let job = create_selector(move || {
        live.instance.with(|i| {
            i.as_ref()
                .and_then(|i| i.operation.clone())
                .filter(|o| matches!(o.kind, JobKind::Backup | JobKind::Restore))
        })
    });
    let job_line = move || {
        job.get_clone().map(|j| {
            let status = format::job_status(j.status).to_owned();
            let href = format!("/jobs/{}", j.id);
            let text = format!("{} · {}%", j.kind, j.progress);
            let step = j.step.clone().unwrap_or_default();
            // While it is queued, what it waits for.
            let waiting = progress::waiting_for(&j).map(|why| view! { WaitingFor(why=why) });
            view! {
                p(class="job-line", data-testid="backup-job") { Badge(status=status) " " a(href=href) { (text) } " " span(class="muted") { (step) } }
                (waiting)
            }
        })
    };
    view! {
        div(class="card", data-testid="backups") {
            h2 { "Backups" }
            ErrorBanner(failure=failure)
            form(class="inline-form", on:submit=take) {
                label(r#for="backup-note") { "Note" }
                input(id="backup-note", r#type="text", maxlength="200", placeholder="optional", bind:value=note)
                label(class="check", r#for="backup-protected") {
                    input(id="backup-protected", r#type="checkbox", bind:checked=keep) "Protected"
                }
                button(class="primary", r#type="submit", data-testid="back-up-now", disabled=unusable) { "Back up now" }
            }
            (job_line)
            (move || table().unwrap_or_else(|| view! { Loading(label="Loading backups…") }))
        }
        BackupPolicy(id=policy_id)
        ConfirmByName(pending=restoring, verb="Restore", on_confirm=on_restore,
                      warning="Its current disks are replaced by the backup's: everything written since the backup was taken is lost.")
        ConfirmByName(pending=deleting, verb="Delete backup", on_confirm=on_delete)
        RestoreAsNew(copying=copying)
    }
}

/// What a row's button asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    /// Set the protection to this.
    Protect(bool),
    Restore,
    RestoreAsNew,
    Delete,
}

/// Asks for the new instance's name, then `POST /v1/vms` with `fromBackup` and on to the job.
#[component(inline_props)]
fn RestoreAsNew(copying: Signal<Option<String>>) -> View {
    view! {
        (move || copying.get_clone().map(|backup| {
            let name = create_signal(String::new());
            let failure = create_signal(None::<Failure>);
            let busy = create_signal(false);
            let focus = create_node_ref();
            on_mount(move || {
                if let Some(el) = focus.get().dyn_ref::<web_sys::HtmlElement>() {
                    let _ = el.focus();
                }
            });
            let shown = backup.clone();
            let submit = move |e: web_sys::SubmitEvent| {
                e.prevent_default();
                if busy.get_untracked() {
                    return;
                }
                busy.set(true);
                let body = json!({ "name": name.get_clone_untracked().trim(), "fromBackup": backup });
                crate::task::spawn(async move {
                    let key = crate::pages::create::idempotency_key();
                    match api::post::<Value, JobHandle>("/v1/vms", Some(&body), &[("Idempotency-Key", &key)]).await {
                        Ok(job) => sycamore_router::navigate(&format!("/jobs/{}", job.id)),
                        Err(f) => {
                            failure.set(Some(f));
                            busy.set(false);
                        }
                    }
                });
            };
            let escape = move |e: web_sys::KeyboardEvent| {
                if e.key() == "Escape" {
                    copying.set(None);
                }
            };
            view! {
                div(class="backdrop") {
                    form(class="dialog card", role="dialog", aria-modal="true", aria-labelledby="restore-new-title",
                         on:submit=submit, on:keydown=escape) {
                        h2(id="restore-new-title") { "Restore as a new instance" }
                        p { "A new instance is made from " code { (shown) } ", with the type, sizes and template of the instance it was taken of. This instance stays as it is." }
                        ErrorBanner(failure=failure)
                        label(r#for="restore-new-name") { "New instance name" }
                        input(id="restore-new-name", r#type="text", required=true, autocomplete="off", placeholder="web-2",
                              pattern="[a-z0-9]([a-z0-9\\-]*[a-z0-9])?", bind:value=name, r#ref=focus)
                        div(class="actions") {
                            button(r#type="button", on:click=move |_| copying.set(None)) { "Cancel" }
                            button(class="primary", r#type="submit") { "Restore to new instance" }
                        }
                    }
                }
            }
        }))
    }
}
