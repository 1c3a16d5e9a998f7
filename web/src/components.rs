//! Small pieces every page uses: the error banner (the API's message, code and request id),
//! loading and empty states, status badges, copyable ids and progress bars; and boxed helpers
//! for dynamic parts, handlers, buttons and fields, which keep the first load small (sycamore
//! compiles its dynamic-view and listener code once per closure type).

use sycamore::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::api::Failure;

/// The API's error as the user sees it; nothing when `failure` is `None`.
#[component(inline_props)]
pub fn ErrorBanner(failure: Signal<Option<Failure>>) -> View {
    dynamic(Box::new(move || match failure.get_clone() {
        None => view! {},
        Some(f) => {
            let Failure { code, message, request_id, fields, .. } = f;
            let code_attr = code.clone();
            let fields = fields.into_iter().map(|m| view! { li { (m) } }).collect::<Vec<_>>();
            let rid = match request_id {
                Some(rid) => view! { " · request " CopyId(id=rid) },
                None => view! {},
            };
            let dismiss = dismiss(Box::new(move || failure.set(None)));
            view! {
                div(class="banner error", role="alert", data-code=code_attr) {
                    div(class="banner-text") {
                        strong { (message) }
                        ul(class="fields") { (fields) }
                        span(class="muted") { (code) }
                        (rid)
                    }
                    (dismiss)
                }
            }
        }
    }))
}

/// The × that closes a banner.
fn dismiss(act: Box<dyn Fn()>) -> View {
    view! { button(class="ghost", r#type="button", aria-label="Dismiss", on:click=on_click(act)) { "×" } }
}

/// A success message that can be dismissed.
#[component(inline_props)]
pub fn Notice(message: Signal<Option<String>>) -> View {
    dynamic(Box::new(move || match message.get_clone() {
        None => view! {},
        Some(m) => {
            let dismiss = dismiss(Box::new(move || message.set(None)));
            view! {
                div(class="banner ok", role="status") {
                    div(class="banner-text") { (m) }
                    (dismiss)
                }
            }
        }
    }))
}

/// A spinner with a label.
#[component(inline_props)]
pub fn Loading(label: &'static str) -> View {
    view! { div(class="loading", aria-busy="true") { span(class="spinner") " " (label) } }
}

/// An id in monospace with a button that copies it.
#[component(inline_props)]
pub fn CopyId(id: String) -> View {
    let copied = create_signal(false);
    let text = id.clone();
    let title = id.clone();
    let copy = move |_| {
        let text = text.clone();
        crate::task::spawn(async move {
            if let Some(w) = web_sys::window() {
                let promise = w.navigator().clipboard().write_text(&text);
                if JsFuture::from(promise).await.is_ok() {
                    copied.set(true);
                    gloo_timers::future::TimeoutFuture::new(1500).await;
                    copied.set(false);
                }
            }
        });
    };
    view! {
        span(class="copy-id") {
            code(title=title) { (id) }
            button(class="ghost small", r#type="button", title="Copy", aria-label="Copy id", on:click=copy) {
                (move || if copied.get() { "copied" } else { "copy" })
            }
        }
    }
}

/// A coloured status label (`running`, `failed`, ...).
#[component(inline_props)]
pub fn Badge(status: String) -> View {
    let class = format!("badge status-{status}");
    let attr = status.clone();
    view! { span(class=class, data-status=attr) { (status) } }
}

/// The operation in progress on an instance, linked to its job (a dash when there is none).
pub fn operation_cell(operation: Option<nimbus_domain::JobHandle>) -> View {
    operation_link(operation.map(|o| {
        let label = format!("{} · {} {}%", o.kind, crate::format::job_status(o.status), o.progress);
        (o.id.to_string(), label, o.step.unwrap_or_default())
    }))
}

/// [`operation_cell`] of an operation read as a JSON value (`null`: none).
pub fn operation_cell_json(o: &serde_json::Value) -> View {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    operation_link(o.is_object().then(|| {
        let label = format!("{} · {} {}%", text(&o["kind"]), text(&o["status"]), o["progress"]);
        (text(&o["id"]), label, text(&o["step"]))
    }))
}

/// The link to an operation's job: its id, label and current step.
fn operation_link(operation: Option<(String, String, String)>) -> View {
    match operation {
        None => view! { span(class="muted") { "—" } },
        Some((id, label, step)) => {
            let href = format!("/jobs/{id}");
            view! { a(class="operation", href=href, title=step, data-testid="row-operation") { (label) } }
        }
    }
}

/// A horizontal bar, `value` in percent.
#[component(inline_props)]
pub fn Bar(value: f64, label: String) -> View {
    let pct = crate::format::whole(value.clamp(0.0, 100.0));
    let width = format!("width: {pct}%");
    let class = if value >= 90.0 { "bar hot" } else { "bar" };
    view! {
        div(class="meter", role="progressbar", aria-valuenow=pct.to_string(), aria-valuemin="0", aria-valuemax="100", aria-label=label.clone()) {
            div(class=class, style=width) {}
        }
    }
}

/// What a [`ConfirmByName`] dialog asks about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destructive {
    /// Id of the thing acted on.
    pub id: String,
    /// The name the user must type.
    pub name: String,
}

/// A confirmation that asks for the thing's name to be typed before a destructive action.
/// Shown while `pending` holds something; Escape or Cancel closes it; `on_confirm` gets the id.
/// `warning`, when given, says what is lost.
#[component(inline_props)]
pub fn ConfirmByName(
    pending: Signal<Option<Destructive>>,
    verb: &'static str,
    on_confirm: std::rc::Rc<dyn Fn(String)>,
    #[prop(default)] warning: &'static str,
) -> View {
    dynamic(Box::new(move || match pending.get_clone() {
        None => view! {},
        Some(target) => {
            let typed = create_signal(String::new());
            // The dialog takes the focus, so it can be answered from the keyboard.
            let focus = create_node_ref();
            on_mount(move || {
                if let Some(el) = focus.get().dyn_ref::<web_sys::HtmlElement>() {
                    let _ = el.focus();
                }
            });
            let name = target.name.clone();
            let matches = move || typed.with(|t| t.trim() == name);
            let on_confirm = on_confirm.clone();
            let id = target.id.clone();
            let expected = target.name.clone();
            let submit = on_submit(Box::new(move || {
                if typed.with(|t| t.trim() == expected) {
                    pending.set(None);
                    on_confirm(id.clone());
                }
            }));
            let cancel = on_click(Box::new(move || pending.set(None)));
            let escape = move |e: web_sys::KeyboardEvent| {
                if e.key() == "Escape" {
                    pending.set(None);
                }
            };
            let title = format!("{verb} {}?", target.name);
            let hint = target.name.clone();
            let button = format!("{verb} {}", target.name);
            let warning = (!warning.is_empty()).then(|| view! { p(class="warn") { (warning) } });
            view! {
                div(class="backdrop") {
                    form(class="dialog card", role="dialog", aria-modal="true", aria-labelledby="confirm-title",
                         on:submit=submit, on:keydown=escape) {
                        h2(id="confirm-title") { (title) }
                        (warning)
                        p { "This cannot be undone. Type " strong { (hint) } " to confirm." }
                        label(r#for="confirm-name") { "Name" }
                        input(id="confirm-name", r#type="text", autocomplete="off", bind:value=typed, r#ref=focus)
                        div(class="actions") {
                            button(r#type="button", on:click=cancel) { "Cancel" }
                            button(class="danger", r#type="submit", data-testid="confirm", disabled=move || !matches()) { (button) }
                        }
                    }
                }
            }
        }
    }))
}

/// A part of a view drawn again whenever the signals `draw` reads change. Boxed: every such part
/// then shares one copy of sycamore's dynamic view in the wasm, instead of one per closure.
pub fn dynamic(draw: Box<dyn Fn() -> View>) -> View {
    View::from(draw)
}

/// A click handler, boxed for the same reason (one copy of the listener glue for all of them).
pub fn on_click(act: Box<dyn Fn()>) -> impl FnMut(web_sys::MouseEvent) {
    move |_| act()
}

/// A form's submit handler that keeps the browser from loading the page, boxed likewise.
pub fn on_submit(act: Box<dyn Fn()>) -> impl FnMut(web_sys::SubmitEvent) {
    move |e| {
        e.prevent_default();
        act()
    }
}

/// A button that runs `act`.
pub fn button(label: &'static str, class: &'static str, act: Box<dyn Fn()>) -> View {
    view! { button(class=class, r#type="button", on:click=on_click(act)) { (label) } }
}

/// A labelled input of type `kind` bound to `value`.
pub fn field(id: &'static str, label: &'static str, kind: &'static str, value: Signal<String>) -> View {
    view! { div { label(r#for=id) { (label) } input(id=id, r#type=kind, bind:value=value) } }
}
